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
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
BEST = "best.pt"
REQUIRED_KEYS = ("format_version", "step", "model", "config", "vocab_digest")
# ModelConfig fields that change parameter shapes or the meaning of the weights and memory state.
ARCH_FIELDS = (
    "vocab_size", "n_layer", "d_model", "n_head", "d_head", "d_inner", "segment_len", "memory", "update",
    "pos", "mem_len", "pre_lnorm", "activation", "adaptive", "cutoffs", "div_val", "tie_weights", "untie_r",
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, truncated, or from another model or vocabulary."""


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


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def rotate(run_dir: Path, keep_last: int) -> None:
    """Delete periodic checkpoints beyond the newest `keep_last` (best.pt is never touched)."""
    for old in list_checkpoints(run_dir)[keep_last:]:
        old.unlink(missing_ok=True)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with `weights_only=True`; a truncated or foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a truncated zip or a bad pickle
        raise CheckpointError(
            f"checkpoint {path} is unreadable (truncated or corrupt: {type(err).__name__}: {err})"
        ) from err
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not an infiniattention checkpoint (missing {REQUIRED_KEYS})")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {ckpt['format_version']}, expected {FORMAT_VERSION}"
        )
    return ckpt


def find_resumable(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest readable periodic checkpoint of `run_dir`; unreadable ones are skipped with a warning."""
    for path in list_checkpoints(run_dir):
        try:
            return path, load(path, map_location)
        except CheckpointError as err:
            logger.warning("skipping %s; trying an older checkpoint", err)
    return None


def check_compatible(ckpt: dict[str, Any], model_cfg: dict[str, Any], vocab_digest: str, path: Path) -> None:
    """Refuse a checkpoint of another architecture or vocabulary, naming every mismatch."""
    saved = ckpt["config"]["model"]
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
