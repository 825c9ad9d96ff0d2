"""Checkpoint files: atomic writes, rotation, safe loading, compatibility checks and RNG states.

A checkpoint is a dict of tensors, plain containers, numbers and strings only, so it loads with
`torch.load(weights_only=True)`. It holds everything needed to continue bit-for-bit (NVIDIA
Transformer-XL's approach): model, optimizer, grad scaler, step, tokens seen, iterator position, the
memory state of every lane of every rank, every rank's RNG states, the resolved config, the vocabulary
(and its digest), library versions.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from . import faults
from .errors import UserError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
BEST = "best.pt"
# Temporary files of interrupted writes (`save_atomic` and `save_config`): removed on start.
TMP_RE = re.compile(r"^\.(ckpt_\d+\.pt|best\.pt|config\.yaml|metrics\.jsonl)\.tmp\d+$")
REQUIRED_KEYS = ("format_version", "step", "model", "config", "vocab_digest")
# ModelConfig fields that change parameter shapes or the meaning of the weights and memory state.
ARCH_FIELDS = (
    "vocab_size", "n_layer", "d_model", "n_head", "d_head", "d_inner", "segment_len", "memory", "update",
    "pos", "mem_len", "pre_lnorm", "activation", "adaptive", "cutoffs", "div_val", "tie_weights", "untie_r",
    "normalizer", "feature", "key_norm", "write_gate",
)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used: unreadable, truncated, or from another model or vocabulary."""


def new_run_id() -> str:
    """A fresh run id (from os.urandom: it draws nothing from the seeded RNGs)."""
    return uuid.uuid4().hex[:12]


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "cuda": str(torch.version.cuda),
    }


# ------------------------------------------------------------------------------------------------
# RNG states as plain tensors / lists (numpy's and python's tuples are not weights_only-safe as is).


def capture_rng() -> dict[str, Any]:
    """This process's torch (CPU and CUDA), numpy and python RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(py_version), "state": list(py_state), "gauss_next": py_gauss},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
         npst["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ------------------------------------------------------------------------------------------------
# Files.


def ckpt_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / f"ckpt_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Periodic checkpoints of a run folder, newest (highest step) first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def step_of(path: Path) -> int:
    """The step number in a periodic checkpoint's file name."""
    m = CKPT_RE.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not a periodic checkpoint name")
    return int(m.group(1))


class _Writer:
    """A binary file that remembers why a write failed: torch.save turns any exception of a write
    into a RuntimeError, but "no space left on device" (and a Ctrl-C) must reach the user as such."""

    def __init__(self, f, fault_point: str | None) -> None:
        self.f, self.fault_point, self.error, self.written = f, fault_point, None, 0

    def write(self, data) -> int:
        try:
            n = self.f.write(data)
            self.written += n
            if self.fault_point and self.written >= 4096:  # half-way through (a tiny model's is ~100 kB)
                point, self.fault_point = self.fault_point, None
                self.f.flush()
                faults.hit(point)
            return n
        except BaseException as err:  # OSError, or KeyboardInterrupt from a second Ctrl-C
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a reader never sees half a file.

    A failed write (a full disk, an interrupt) removes the temporary file and leaves `path` as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    kind = "best" if path.name == BEST else "ckpt"
    try:
        with open(tmp, "wb") as f:
            writer = _Writer(f, f"write.{kind}" if faults.armed(f"write.{kind}") else None)
            try:
                torch.save(obj, writer)
            except RuntimeError as err:
                if isinstance(writer.error, OSError):
                    raise OSError(writer.error.errno, writer.error.strerror, str(path)) from err
                if writer.error is not None:
                    raise writer.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
        faults.hit(f"written.{kind}")
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None or str(err.filename) == str(tmp):
            err.filename = str(path)  # name the file the user knows, not the temporary one
        raise
    finally:
        tmp.unlink(missing_ok=True)
    faults.hit(f"renamed.{kind}")


def read_run_id(path: Path) -> str | None:
    """The run id stored in a checkpoint (None when unreadable or absent); tensors are not read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable file belongs to no run
        return None
    return ckpt.get("run_id") if isinstance(ckpt, dict) else None


def rotate(run_dir: Path, keep_last: int, run_id: str | None = None, newest: int | None = None) -> list[Path]:
    """Delete periodic checkpoints of run `run_id` older than step `newest`, beyond the newest `keep_last`.

    Only files of this run (same run id), older than the one just written, are ever deleted: a
    checkpoint of another run, an unreadable one or a later one is left alone. best.pt is never touched.
    Returns the deleted paths.
    """
    mine = [
        p for p in list_checkpoints(run_dir)
        if (newest is None or step_of(p) <= newest) and (run_id is None or read_run_id(p) == run_id)
    ]
    deleted = []
    for old in mine[keep_last:]:
        old.unlink(missing_ok=True)
        deleted.append(old)
    faults.hit("rotated")
    return deleted


def clean_temporaries(run_dir: Path) -> list[Path]:
    """Remove the temporary files of writes that were killed (`.ckpt_*.pt.tmp<pid>` and the like)."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.iterdir() if TMP_RE.match(p.name)] if run_dir.is_dir() else []
    for p in found:
        p.unlink(missing_ok=True)
    return found


def move_aside(run_dir: Path, paths: list[Path], label: str) -> Path:
    """Move `paths` into a new sub-folder `run_dir/<label>-<UTC time>` (never deletes anything)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    folder = Path(run_dir) / f"{label}-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = Path(run_dir) / f"{label}-{stamp}-{n}"
    folder.mkdir()
    for p in paths:
        shutil.move(str(p), str(folder / p.name))
    return folder


def all_finite(ckpt: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of model, optimizer and memory that hold NaN or inf."""
    bad: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(prefix)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)

    for key in ("model", "optimizer", "memory"):
        walk(key, ckpt.get(key))
    return bad


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`; a truncated or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a truncated zip or a bad pickle
        # torch's own message suggests weights_only=False, which would run arbitrary code: not repeated.
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupt, or not a checkpoint: "
            f"{type(err).__name__})"
        ) from err
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not an infiniattention checkpoint (missing {REQUIRED_KEYS})")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {ckpt['format_version']}, expected {FORMAT_VERSION}"
        )
    return ckpt


def find_resumable(
    run_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict, list[Path]] | None:
    """The newest readable periodic checkpoint of `run_dir`, with the unreadable newer ones it skipped
    (a warning names each); None when there is no readable one."""
    skipped = []
    for path in list_checkpoints(run_dir):
        try:
            return path, load(path, map_location), skipped
        except CheckpointError as err:
            logger.warning("skipping %s; trying an older checkpoint", err)
            skipped.append(path)
    return None


def check_compatible(ckpt: dict[str, Any], model_cfg: dict[str, Any], vocab_digest: str, path: Path) -> None:
    """Refuse a checkpoint of another architecture or vocabulary, naming every mismatch."""
    # A field the checkpoint lacks was added later and has its default there (a checkpoint from before
    # the memory options holds the paper's memory).
    saved = {**ModelConfig().__dict__, **ckpt["config"]["model"]}
    diffs = [
        f"model.{name}: checkpoint {saved.get(name)!r} vs config {model_cfg.get(name)!r}"
        for name in ARCH_FIELDS
        if saved.get(name) != model_cfg.get(name)
    ]
    if diffs:
        raise CheckpointError(f"{path} was trained with another architecture: " + "; ".join(diffs))
    if ckpt["vocab_digest"] != vocab_digest:
        raise CheckpointError(
            f"{path} was trained with another vocabulary (digest {ckpt['vocab_digest'][:12]} vs the "
            f"dataset's {vocab_digest[:12]}): use the dataset and protocol it was trained on"
        )
