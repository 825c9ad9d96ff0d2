"""One writer per run folder: rank 0 takes an exclusive lock on `RUN/.lock` before any rank writes.

Two trainings in one folder (a job submitted twice is common on clusters) would interleave their
metrics, overwrite each other's checkpoints, and report a test number for weights that no longer exist.
The lock is a `flock` (`data_utils.locking`): the kernel drops it when its holder dies, so a killed run
resumes with the same command and no manual step. eval.py and generate.py only read a run folder (every
checkpoint is written to a temporary file and renamed), so they never take it.
"""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from data_utils.locking import HolderLock, describe

from .cli import is_writable
from .distributed import DistEnv, broadcast_from_main
from .errors import UserError

LOCK_NAME = ".lock"
# Files a run appends to or replaces at every start: a read-only one is refused before anything is
# written (even for root, see `cli.is_writable`).
REWRITTEN = ("train.log", "metrics.jsonl", "config.yaml")


class ReadOnlyRunDir(UserError):
    """The run folder, or a file a start rewrites, is read-only: a training cannot start there, but a
    finished run's result can still be printed (that needs no write)."""


def claim_run_dir(run_dir: Path, env: DistEnv) -> HolderLock | None:
    """Rank 0 creates `run_dir`, takes its lock and checks the files it rewrites; every rank raises the
    same one-line UserError when any of that fails (ReadOnlyRunDir when what fails is a write permission).
    Returns the held lock on rank 0, None elsewhere."""
    lock, problem = None, None
    if env.is_main:
        try:
            lock = _claim(run_dir)
        except UserError as err:
            problem = (str(err), isinstance(err, ReadOnlyRunDir))
    problem = broadcast_from_main(problem, env)
    if problem is not None:
        message, read_only = problem
        raise (ReadOnlyRunDir if read_only else UserError)(message)
    return lock


def lock_warnings(lock: HolderLock | None) -> list[str]:
    """What the user should know about a lock just taken: a filesystem that cannot lock, or a record of
    a holder on another host that never released it (on filesystems whose flock is per node, that run
    may still be writing here)."""
    if lock is None:
        return []
    out = []
    if not lock.locking:
        out.append(f"{lock.path}: this filesystem does not support locks; make sure that no other training "
                   "uses this run folder")
    previous = lock.previous
    if previous and previous.get("host") != socket.gethostname():
        out.append(f"{lock.path} names {describe(previous)} as its holder, which never released it: if that "
                   "training still runs (locks are per node on some shared filesystems), stop one of the two")
    return out


def _claim(run_dir: Path) -> HolderLock:
    _make_run_dir(run_dir)
    lock = HolderLock(run_dir / LOCK_NAME)
    try:
        taken = lock.try_acquire()
    except OSError as err:
        raise UserError(f"cannot lock the run folder {run_dir} ({lock.path}: {err.strerror}): make it "
                        "writable or use another --run-dir") from err
    if not taken:
        raise UserError(f"{run_dir} is in use by another training ({describe(lock.holder())}): wait for it "
                        "to end or stop it, or use another --run-dir (two writers would mix their "
                        "checkpoints and logs)")
    try:
        for name in REWRITTEN:
            _check_writable(run_dir / name)
    except UserError:
        lock.release()
        raise
    return lock


def _make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the run folder {run_dir}: {err.strerror}") from err
    if not is_writable(run_dir):
        raise ReadOnlyRunDir(f"the run folder {run_dir} is not writable: make it writable or use another "
                             "--run-dir")


def _check_writable(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise UserError(f"{path} cannot be read: {err.strerror}") from err
    if stat.S_ISDIR(mode):
        raise UserError(f"{path} is a folder: move it away or use another --run-dir")
    if not is_writable(path):
        raise ReadOnlyRunDir(f"{path} is read-only: make it writable (chmod u+w {path}) or use another "
                             "--run-dir")
