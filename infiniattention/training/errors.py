"""Errors the user can fix; `cli.cli_entry` prints them as one line and exits with `exit_code`."""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A mistake in the input (config, arguments, files): one line, exit status 2."""

    exit_code = 2


class Stopped(BaseException):
    """SIGTERM or SIGHUP outside the training loop (`cli.stop_on_signals`); `cli_entry` prints it as one
    line and exits 128 + the signal number. A BaseException, as KeyboardInterrupt is, so that no `except
    Exception` on its way mistakes it for a failure (e.g. of a checkpoint being read: it would be moved
    aside as unreadable)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class DiskFullError(UserError):
    """A write failed for lack of space (or the file-size limit): nothing older was lost."""

    exit_code = 1

    @classmethod
    def from_os_error(cls, err: OSError, intact: str | None = None,
                      advice: str = "free some space and rerun the same command to resume") -> DiskFullError:
        """The one-line message for `err`, naming what is still intact when known; `advice`: what to do
        (a training resumes; an evaluation is run again)."""
        what = os.strerror(err.errno) if err.errno else str(err)
        where = f" while writing {err.filename}" if err.filename else ""
        kept = f"; {intact}" if intact else ""
        return cls(f"no space left on device ({what}{where}){kept}: {advice}")

    @staticmethod
    def matches(err: BaseException) -> bool:
        return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
