"""An exclusive lock on a file that names its holder, released by the kernel when the holder dies.

`fcntl.flock` is released when its process ends, however it ends (kill -9 and the OOM killer too), so
a lock never goes stale on one machine and a killed run resumes without a manual step. The locked file
also records the holder's host, PID and start time, so that a process that is refused can name who
holds the lock, and a record left by another host (some shared filesystems keep flock per node) can be
recognised. A holder that ends normally clears the record.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

# Mounts that cannot lock at all (some NFS and Lustre configurations): the record is still written.
NO_LOCKING = frozenset({errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


def this_holder() -> dict[str, Any]:
    """The record this process writes into a lock file it holds."""
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": since}


def describe(holder: dict[str, Any] | None) -> str:
    """`PID 123 on host node7, since 2025-01-01T10:00:00+00:00` (or `another process` without a record)."""
    if not holder:
        return "another process"
    return f"PID {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}"


class HolderLock:
    """An exclusive `flock` on `path` (created if missing) holding the holder's record while held."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.locking = True  # False on a filesystem that cannot lock (the record is still kept)
        self.previous: dict[str, Any] | None = None  # a record found on taking the lock: not released
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def holder(self) -> dict[str, Any] | None:
        """The record of the process holding the lock now (None if there is none or it is unreadable)."""
        try:
            return _parse(self.path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return None

    def try_acquire(self) -> bool:
        """Take the lock if it is free and write this process's record; False when it is held.

        Raises OSError when the lock file cannot be created or opened for writing.
        """
        return self._take(blocking=False)

    def acquire(self, on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> None:
        """Take the lock, waiting for its holder to end; `on_wait(holder record)` is called once first."""
        if self._take(blocking=False):
            return
        if on_wait is not None:
            on_wait(self.holder())
        self._take(blocking=True)

    def release(self) -> None:
        """Clear the record and drop the lock (idempotent). A killed holder never gets here: the kernel
        drops its lock and its record stays, which the next holder sees as `previous`."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.seek(0)
            f.truncate()
        except OSError:  # a full disk or a vanished mount must not hide why the process is ending
            pass
        finally:
            f.close()

    def _take(self, *, blocking: bool) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        f = os.fdopen(fd, "r+", encoding="utf-8", errors="replace")  # a damaged record is no error
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return False
        except OSError as err:
            if err.errno not in NO_LOCKING:
                f.close()
                raise
            self.locking = False
        try:
            self.previous = _parse(f.read())
            f.seek(0)
            f.truncate()
            f.write(json.dumps(this_holder()) + "\n")
            f.flush()
        except BaseException:
            f.close()
            raise
        self._file = f
        return True


def _parse(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
