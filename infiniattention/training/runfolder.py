"""The run folder's life: its lock, which checkpoint a start continues from, what is set aside, a
finished run, the data check, and the checkpoint files written and rotated.

`Trainer` holds the training loop and the in-memory state; this module holds everything that decides
on the files of `RUN/` (see docs/training.md, "The run folder" and "Failures and recovery"):
- One writer at a time: rank 0 locks the folder before any rank writes (`runlock.py`).
- Files of another history are never mixed in: `--resume never` in a used folder is refused unless
  `--overwrite`, which moves the earlier files into `previous-<time>/`; `--resume auto` moves unreadable
  checkpoints into `unreadable-<time>/` and falls back to the newest readable one; checkpoints and
  `best.pt` of another run id, or of a later step than the one resumed from, go into `previous-<time>/`.
- A finished run is finished: its command run again prints the test result and writes nothing.
- The data trained on is the data recorded (digests); `--allow-data-change` lets a difference through,
  logged.
- Checkpoints are written atomically (`checkpoint.save_atomic`) and carry the run id; rotation deletes
  only this run's checkpoints older than the one just written. The newest one written (or resumed from)
  is "the last good checkpoint" that error messages name.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_utils.corpus import Corpus, DataError
from data_utils.fingerprint import changed, short
from data_utils.locking import HolderLock

from . import checkpoint as ckpt_io
from .distributed import DistEnv, barrier, broadcast_from_main
from .errors import DiskFullError, UserError
from .metrics import fmt
from .runlock import ReadOnlyRunDir, claim_run_dir, lock_warnings

METRICS = "metrics.jsonl"


class RunFolder:
    """One run folder as a training sees it. Rank 0 decides and moves files; every rank gets the same
    answers (broadcast) and meets at the same barriers."""

    def __init__(self, path: str | Path, env: DistEnv, log: logging.Logger) -> None:
        self.path = Path(path)
        self.env = env
        self.log = log
        self.lock: HolderLock | None = None
        self.last_good: Path | None = None  # the newest checkpoint known finite and complete
        self.stale_best: int | None = None  # step of a best.pt newer than the resume point (`settle_best`)

    # --------------------------------------------------------------------------------------------
    # The lock.

    def claim(self) -> ReadOnlyRunDir | None:
        """Create the folder and take its lock (rank 0) before any rank writes; UserError on every rank
        when it is in use or cannot be created. A read-only folder (or file a start rewrites) is returned,
        not raised: the caller raises it unless the run is finished, whose result needs no write."""
        try:
            self.lock = claim_run_dir(self.path, self.env)
        except ReadOnlyRunDir as refusal:
            return refusal
        return None

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        if self.lock is not None:
            self.lock.release()

    def start_notes(self) -> None:
        """Warn about the lock just taken, and remove the temporaries of writes that were killed."""
        for warning in lock_warnings(self.lock):
            self.log.warning("%s", warning)
        if self.env.is_main:
            for tmp in ckpt_io.clean_temporaries(self.path):
                self.log.warning("removed %s, left by a write that was interrupted", tmp)

    # --------------------------------------------------------------------------------------------
    # Which checkpoint a start continues from.

    def select(self, resume: str, overwrite: bool) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint to continue from per `resume` ("auto", "never" or a path), or None to start
        afresh (the folder then holds no file of another history)."""
        if resume == "never" or overwrite:
            self._start_afresh(overwrite)
            return None
        if resume != "auto":
            path = Path(resume)
            return path, ckpt_io.load(path, map_location="cpu")
        found = None
        if self.env.is_main:
            found = self._newest_readable()
        barrier()
        if not self.env.is_main:
            found = ckpt_io.find_resumable(self.path, map_location="cpu")
        if found is None:
            self.set_aside(None, 0)
            return None
        return found[0], found[1]

    def _start_afresh(self, overwrite: bool) -> None:
        """`--resume never` (refused in a folder with checkpoints) or `--overwrite` (moves them aside)."""
        earlier = self.run_files()
        weights = [p for p in earlier if p.suffix == ".pt"]
        if weights and not overwrite:
            names = ", ".join(p.name for p in weights[:3]) + (", ..." if len(weights) > 3 else "")
            raise UserError(
                f"{self.path} already holds checkpoints of an earlier run ({names}): to continue it use "
                "--resume auto; to start afresh use --overwrite (moves them into a sub-folder) or another "
                "--run-dir"
            )
        barrier()
        if earlier and self.env.is_main:
            folder = ckpt_io.move_aside(self.path, earlier, "previous")
            self.log.warning("--overwrite: moved the earlier run's files into %s", folder)
        barrier()

    def _newest_readable(self) -> tuple[Path, dict[str, Any], list[Path]] | None:
        """Rank 0: the newest readable checkpoint; the unreadable ones newer than it (or all, when none
        is readable) are moved into `unreadable-<time>/`, where they can no longer outrank new ones."""
        found = ckpt_io.find_resumable(self.path, map_location="cpu")
        if found is not None and found[2]:
            folder = ckpt_io.move_aside(self.path, found[2], "unreadable")
            self.log.warning("moved %d unreadable checkpoint(s) into %s", len(found[2]), folder)
        unreadable = ckpt_io.list_checkpoints(self.path) if found is None else []
        if unreadable:
            folder = ckpt_io.move_aside(self.path, unreadable, "unreadable")
            self.log.warning("no readable checkpoint: moved %d unreadable one(s) into %s and starting afresh",
                             len(unreadable), folder)
        return found

    def check_compatible(self, ckpt: dict[str, Any], path: Path, resume: str,
                         check: Callable[[dict[str, Any], Path], None]) -> None:
        """`check(ckpt, path)` (architecture, vocabulary, ...); with `--resume auto` a refusal also says
        how to keep the run that the folder holds (e.g. runs/tiny of another dataset)."""
        try:
            check(ckpt, path)
        except ckpt_io.CheckpointError as err:
            if resume != "auto":
                raise
            raise ckpt_io.CheckpointError(
                f"{err}. {self.path} holds that run: to start a new one, give another --run-dir, or add "
                "--overwrite (its files are moved into a sub-folder)"
            ) from err

    def set_aside(self, run_id: str | None, step: int, keep: Path | None = None) -> None:
        """Move aside the folder's checkpoints (and best.pt) that do not belong to the history being
        continued: another run id, or a later step than the one resumed from. A best.pt of this run at a
        later step (a kill between writing it and the checkpoint) waits for `settle_best`."""
        stale = None
        if self.env.is_main:
            foreign = []
            for p in ckpt_io.list_checkpoints(self.path):
                if keep is not None and p.resolve() == keep.resolve():
                    continue
                if ckpt_io.step_of(p) > step or ckpt_io.read_run_id(p) != run_id:
                    foreign.append(p)
            best = self.path / ckpt_io.BEST
            header = ckpt_io.read_header(best) if best.is_file() else None
            if header is not None and (run_id is None or header.get("run_id") != run_id):
                foreign.append(best)
            elif header is not None and isinstance(header.get("step"), int) and header["step"] > step:
                stale = header["step"]
            if foreign:
                folder = ckpt_io.move_aside(self.path, foreign, "previous")
                self.log.warning("moved %s (not of the run being continued) into %s",
                                 ", ".join(p.name for p in foreign), folder)
        self.stale_best = broadcast_from_main(stale, self.env)
        barrier()

    def settle_best(self, step: int, final: bool = False) -> None:
        """Every rank, after each step (and before the final test, `final`): a best.pt newer than the
        resume point is moved into `previous-<time>/` once this history passes its step without writing
        best.pt again. An exact resume replays that validation and rewrites it (nothing is moved); a
        continuation that differs (another world size, an allowed data change, another learning rate)
        must not report or keep the weights of a history it did not follow."""
        if self.stale_best is None or (step < self.stale_best and not final):
            return
        best = self.path / ckpt_io.BEST
        if self.env.is_main and best.is_file():
            folder = ckpt_io.move_aside(self.path, [best], "previous")
            self.log.warning("moved best.pt of step %d into %s: it was written after the checkpoint this run "
                             "resumed from, and this run did not write it again at step %d", self.stale_best,
                             folder, self.stale_best)
        self.stale_best = None
        barrier()

    def best_written(self) -> None:
        """Every rank, after best.pt was written by this history: it stands, whatever its step."""
        self.stale_best = None

    def run_files(self) -> list[Path]:
        """The files an earlier run left in the folder (train.log stays: it is appended to)."""
        return run_files(self.path)

    # --------------------------------------------------------------------------------------------
    # A finished run.

    def finished(self, resume: str, overwrite: bool, max_steps: int, dataset: str,
                 check: Callable[[dict[str, Any], Path], None]) -> dict[str, Any] | None:
        """`{"step", "test"}` of a run with nothing left to do (on every rank), else None.

        Finished means: the newest checkpoint (or the `--resume` one) is at or past `max_steps`, passes
        `check` (architecture, vocabulary, ...), was trained on `dataset`, and metrics.jsonl holds the
        test result of its step. Nothing is logged or written here, so that a finished run's files stay
        as they are; anything wrong with the checkpoint is left to the normal start, which says what it is.
        """
        found = None
        if self.env.is_main and not overwrite and resume != "never":
            found = self._finished(resume, max_steps, dataset, check)
        return broadcast_from_main(found, self.env)

    def _finished(self, resume: str, max_steps: int, dataset: str,
                  check: Callable[[dict[str, Any], Path], None]) -> dict[str, Any] | None:
        newest = ckpt_io.list_checkpoints(self.path)[:1] if resume == "auto" else [Path(resume)]
        if not newest or not ckpt_io.CKPT_RE.match(newest[0].name):
            return None
        path, step = newest[0], ckpt_io.step_of(newest[0])
        if step < max_steps:
            return None
        tests = [r for r in read_metrics(self.path / METRICS) if r.get("kind") == "test"
                 and r.get("step") == step]
        if not tests:
            return None
        try:
            ckpt = ckpt_io.load(path, map_location="cpu", notice=lambda message: None)  # nothing logged
            check(ckpt, path)
        except ckpt_io.CheckpointError:
            return None
        if ckpt["step"] != step or ckpt.get("dataset") not in (None, dataset):
            return None
        return {"step": step, "test": tests[-1]}

    def report_finished(self, finished: dict[str, Any], max_steps: int, metric_name: str) -> dict[str, Any]:
        """One line with the final test result of a finished run; nothing is written."""
        step, test = int(finished["step"]), finished["test"]
        where = f"step {step}" + (f", past train.max_steps={max_steps}" if step > max_steps else "")
        best = test.get("weights") == "best"
        weights = f"best.pt of step {test.get('best_step')}" if best else "final weights"
        self.log.info(
            "%s is finished (%s): test %s %s (loss %s over %s tokens, %s); nothing to do: raise "
            "train.max_steps to train further, or use --overwrite to start afresh", self.path, where,
            metric_name, fmt(test.get(metric_name)), fmt(test.get("loss")), test.get("tokens"), weights,
        )
        return {"step": step, "test": test, "finished": True}

    # --------------------------------------------------------------------------------------------
    # The data trained on.

    def check_data(self, corpus: Corpus, ckpt: dict[str, Any] | None, path: Path | None,
                   allow_change: bool) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
        """Refuse data that is not what the run was trained on (resuming from `ckpt`), or, on a fresh start,
        a prepared file edited since getdata.sh wrote it, unless `allow_change`, which is then logged.
        Rank 0 fingerprints the files (`data_utils.fingerprint`: only a file whose stat signature is new
        is read) and decides for every rank. Returns (rank 0: the digests of the data trained on, what
        `allow_change` let through)."""
        problem, files = None, None
        if self.env.is_main:
            files = corpus.fingerprint((ckpt or {}).get("data_files"))
            problem = self._data_problem(corpus, files, ckpt, path)
        problem = broadcast_from_main(problem, self.env)
        if problem is None:
            return files, None
        what, remedy = problem
        if not allow_change:
            raise DataError(f"{what}: {remedy}, or pass --allow-data-change to train on the data as it is")
        self.log.warning("--allow-data-change: %s; training on the data as it is", what)
        return files, what

    def _data_problem(self, corpus: Corpus, now: dict[str, dict[str, Any]], ckpt: dict[str, Any] | None,
                      path: Path | None) -> tuple[str, str] | None:
        """(what differs, what to do) between the data `now` and `ckpt`'s record of it, or meta.json's
        when starting afresh; None when nothing differs."""
        if ckpt is None:
            edited = corpus.edited(now)
            if not edited:
                return None
            name = edited[0]
            return (f"{corpus.path / name} changed since it was prepared ({short(now[name])} now, "
                    f"{short(corpus.meta['files'][name])} in meta.json)",
                    f"run `{corpus.prepare_command}` to prepare it again")
        trained_on = ckpt.get("dataset")
        if trained_on is not None and trained_on != corpus.name:
            return (f"{path} was trained on dataset {trained_on!r}, not on {corpus.name!r} (data.dataset)",
                    f"resume with --set data.dataset={trained_on}; to start a new run on {corpus.name}, give "
                    "another --run-dir, or add --overwrite (the run's files are moved into a sub-folder)")
        recorded = ckpt.get("data_files")
        if not isinstance(recorded, dict):
            self.log.info("%s records no digests of its data (written by an older version): a change of the "
                          "data since then cannot be detected; the next checkpoints record them", path)
            return None
        differ = changed(recorded, now)
        if not differ:
            return None
        more = f" (and {', '.join(differ[1:])})" if differ[1:] else ""
        return (f"{corpus.path / differ[0]}{more} differs from the data {path} was trained on "
                f"({short(recorded[differ[0]])} then, {short(now[differ[0]])} now)",
                "restore the data it was trained on")

    # --------------------------------------------------------------------------------------------
    # Checkpoint files.

    def write(self, ckpt: dict[str, Any], names: list[str], keep_last: int) -> None:
        """Rank 0: write `ckpt` under each of `names`, then rotate this run's older periodic checkpoints.
        A full disk raises DiskFullError naming the intact previous checkpoint."""
        for name in names:
            try:
                ckpt_io.save_atomic(ckpt, self.path / name)
            except OSError as err:
                if not DiskFullError.matches(err):
                    raise
                raise DiskFullError.from_os_error(err, self.last_good_text()) from err
        periodic = [n for n in names if ckpt_io.CKPT_RE.match(n)]
        if periodic:
            self.last_good = self.path / periodic[-1]
            ckpt_io.rotate(self.path, keep_last, ckpt["run_id"], ckpt["step"])
        self.log.info("checkpoint step %d -> %s", ckpt["step"], ", ".join(names))

    def last_good_text(self) -> str:
        """What an error message says about the checkpoint to go back to."""
        if self.last_good is not None and self.last_good.is_file():
            return f"the last good checkpoint is {self.last_good}"
        return "no good checkpoint of this run was written yet"

    def truncate_metrics(self, step: int) -> None:
        """Rank 0: drop the metrics.jsonl records of steps after `step`, which a resumed run replays
        identically, so that the file holds one clean history (TensorBoard is purged the same way)."""
        if self.env.is_main:
            truncate_metrics(self.path / METRICS, step)


def run_files(run_dir: Path) -> list[Path]:
    """The files an earlier run left in `run_dir` (train.log stays: it is appended to)."""
    if not run_dir.is_dir():
        return []
    return sorted(
        p for p in run_dir.iterdir()
        if ckpt_io.CKPT_RE.match(p.name) or p.name in (ckpt_io.BEST, METRICS, "config.yaml")
        or p.name.startswith("events.out.tfevents.")
    )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl ([] when there is none); a damaged line is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def truncate_metrics(path: Path, step: int) -> int:
    """Drop the records of metrics.jsonl after `step` (and any half-written line); returns how many."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", 0)) <= step
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return dropped
