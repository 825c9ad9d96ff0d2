"""Errors the user can fix; `cli.cli_entry` prints them as one line and exits with `exit_code`."""

from __future__ import annotations

import errno
import os

from data_utils.startup import Stopped  # noqa: F401  (SIGTERM/SIGHUP as one line; its old home)


class UserError(Exception):
    """A mistake in the input (config, arguments, files): one line, exit status 2."""

    exit_code = 2


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
