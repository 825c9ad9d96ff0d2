"""The one error path of train.py, eval.py and scripts/generate.py.

A mistake the user can fix (a `UserError`: bad config, bad argument, missing or corrupt file, no GPU)
prints one line `error: ...` on stderr and exits with its `exit_code` (2 for bad input, 1 for a run that
failed, e.g. a full disk). Ctrl-C exits with 130 and one line; a program that only reads (eval.py,
generate.py) stops the same way on SIGTERM (143) and SIGHUP (129), and a training does during its
start-up (`stop_on_signals(STARTING)`). Anything else is a bug in this code and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import math
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from data_utils.corpus import DataError
from data_utils.startup import interruption, stop_on_signals

from .errors import DiskFullError, Stopped, UserError

LOGGER_NAME = "infiniattention"
INTERRUPTED = 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error:` line (exit 2), like every other mistake."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def is_disk_full(err: BaseException) -> bool:
    """True for "no space left on device", a quota, or the file-size limit (RLIMIT_FSIZE)."""
    return DiskFullError.matches(err)


def _log_to_files(message: str) -> None:
    """Also keep the error in train.log (the console already got the line on stderr)."""
    for handler in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(handler, logging.FileHandler):
            try:
                handler.emit(logging.makeLogRecord({"msg": message, "levelno": logging.ERROR,
                                                    "levelname": "ERROR", "name": LOGGER_NAME}))
            except Exception:  # the disk may be the very thing that failed; stderr has the line
                pass


def _fail(message: str, code: int) -> int:
    line = " ".join(f"error: {message}".split())  # one line, whatever the message holds
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass
    _log_to_files(line)
    return code


RESUME = "files on disk are complete: rerun the same command to resume"
RERUN = "nothing was left half-written: run the same command again"


def cli_entry(main: Callable[..., int] | None = None, *, on_interrupt: str = RESUME) -> Callable[..., int]:
    """Wrap a script's `main(argv)`: user errors and interrupts become one line and an exit status.
    `on_interrupt` is the advice after Ctrl-C: RESUME for a training, RERUN for a program that only
    reads (an evaluation starts again from the beginning), which also stops this way on SIGTERM and
    SIGHUP (a training's own handlers save a checkpoint first). `@cli_entry` or
    `@cli_entry(on_interrupt=...)`."""
    if main is None:
        return functools.partial(cli_entry, on_interrupt=on_interrupt)

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        signals = stop_on_signals() if on_interrupt == RERUN else contextlib.nullcontext()
        try:
            with signals:
                return main(*args, **kwargs)
        except (UserError, DataError) as err:
            return _fail(str(err), getattr(err, "exit_code", 2))
        except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM/SIGHUP (data_utils.startup.Stopped)
            what, code = interruption(err)
            if isinstance(err, Stopped) and err.when:  # its line says what to do
                return _fail(what, code)
            return _fail(f"{what}; {on_interrupt}", code)
        except OSError as err:
            if not is_disk_full(err):
                raise
            return _fail(str(DiskFullError.from_os_error(err)), DiskFullError.exit_code)

    return wrapped


STARTING = ("during start-up, before the first step: nothing was half-written; running the same command "
            "again is safe")
EVALUATING = "during the evaluation: nothing was left half-written; run the same command again"


# ------------------------------------------------------------------------------------------------
# Checks of command-line values, shared by the scripts.


def positive_int(name: str, value: int | None) -> None:
    """None (use the default) or an integer >= 1."""
    if value is not None and value < 1:
        raise UserError(f"{name} must be a positive integer, got {value}")


def is_writable(path: str | os.PathLike) -> bool:
    """Whether this process may write `path` and the file or folder carries a write permission bit: a
    read-only mark is respected even by root (who could write it anyway), as `rm` respects it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return os.access(path, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def check_out_file(name: str, path: str | None) -> None:
    """An output file whose folder exists and is writable, checked before any work is done."""
    if path is None:
        return
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise UserError(f"{name} {path} is a folder; give a file name")
    if not folder.is_dir():
        raise UserError(f"{name} {path}: folder {folder} does not exist (create it first)")
    if not is_writable(folder):
        raise UserError(f"{name} {path}: folder {folder} is not writable")
    if target.exists() and not is_writable(target):
        raise UserError(f"{name} {path} is not writable")


def check_out_dir(name: str, path: str | os.PathLike) -> None:
    """An output folder that exists and is writable, or that can be created (its nearest existing parent
    is a writable folder), checked before any work is done; it is not created here."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{name} {path} is not a folder")
    existing = next(p for p in (target, *target.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{name} {path}: {existing} is not a folder")
    if not is_writable(existing) or not os.access(existing, os.X_OK):
        what = "is not writable" if existing == target else f"cannot be created ({existing} is not writable)"
        raise UserError(f"{name} {path} {what}: choose another {name}")


def check_results_file(name: str, path: str | None) -> None:
    """A results record to be written (``--results``): not a folder, and its folder exists or can be
    created; checked before any work is done."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{name} {path} is a folder; give a file name "
                        "(e.g. results/passkey/ROW/seed-S/NAME.json)")
    check_out_dir(name, target.parent if str(target.parent) else Path("."))
    if target.exists() and not is_writable(target):
        raise UserError(f"{name} {path} is not writable")


def check_eval_args(args: argparse.Namespace) -> None:
    """eval.py: refuse values that used to fall back silently to the defaults (0, negatives)."""
    for flag in ("batch_size", "tgt_len", "max_tokens", "reset_every"):
        positive_int("--" + flag.replace("_", "-"), getattr(args, flag, None))
    check_out_file("--out", getattr(args, "out", None))


def check_sampling_args(max_new_tokens: int, temperature: float, top_k: int | None,
                        top_p: float | None) -> None:
    """scripts/generate.py: every sampling setting must define a distribution."""
    if max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be >= 0, got {max_new_tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"--temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")


def exit_with(code: int) -> None:
    """sys.exit that also survives a closed stdout (`generate.py | head`) or a terminal that is gone
    (a SIGHUP'd run whose tty now fails every write with EIO)."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.exit(code)


def check_lanes(n_tokens: int, batch_size: int, what: str) -> None:
    """`batch_size` lanes of a stream of `n_tokens` need 2 tokens each."""
    if n_tokens // batch_size < 2:
        raise UserError(f"{batch_size} lanes are too many for the {n_tokens} tokens of the {what} "
                        "(each lane needs 2 tokens): use fewer lanes (--batch-size)")
