"""Checkpoint files: atomic writes, rotation, safe loading, compatibility checks and RNG states.

A checkpoint is a dict of tensors, plain containers, numbers and strings only, so it loads with
`torch.load(weights_only=True)`. It holds everything needed to continue bit-for-bit (NVIDIA
Transformer-XL's approach): model, optimizer, grad scaler, step, tokens seen, iterator position, the
memory state of every lane of every rank, every rank's RNG states, the resolved config, the vocabulary
(and its digest), library versions.

Checkpoints verify themselves. `save_atomic` stores `content_sha256`: a SHA-256 over the payload's
content, every tensor's dtype, shape and raw bytes and every other value, walked in a fixed order
(`content_digest`). It is computed from the objects, not from the serialized file, so it costs one
streaming pass over each tensor (a byte view, no copy of the checkpoint) when saving and another when
loading, and holds for any PyTorch serialization of the same content. `load` refuses, in one line, a
file whose content does not match its digest (a flipped byte: torch does not check the zip's CRCs) or
whose model, optimizer or memory values are not finite. A checkpoint written before digests existed
still loads, with a one-line notice that it carries none. `load` also says in words what an unreadable
file is (empty, text, truncated, a foreign pickle, a run folder) instead of the unpickler's exception.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import platform
import random
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
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
DIGEST_KEY = "content_sha256"  # see `content_digest`; absent in checkpoints written before it existed
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
    The file records the digest of `obj`'s content (`DIGEST_KEY`), recomputed at every save.
    """
    obj = {**obj, DIGEST_KEY: content_digest(obj)}
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
    return read_header(path).get("run_id")


def read_header(path: Path) -> dict[str, Any]:
    """The run id and step stored in a checkpoint ({} when unreadable); tensors are not read (mmap), and
    nothing is verified: enough to sort files into runs, not to use them."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable file belongs to no run
        return {}
    return {k: ckpt.get(k) for k in ("run_id", "step")} if isinstance(ckpt, dict) else {}


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


def load(path: str | Path, map_location: str | torch.device = "cpu",
         notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load with `weights_only=True` and verify (`verify`); CheckpointError says in one line what is wrong
    with a file that cannot be used. `notice` (default: a logged warning) gets the note about a
    checkpoint without a digest."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(_folder_message(path))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():  # e.g. about a foreign pickle's protocol: the error line says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for a truncated zip or a bad pickle
        # torch's own message suggests weights_only=False, which would run arbitrary code: not repeated.
        raise CheckpointError(f"checkpoint {path} is unreadable: {describe_unreadable(path, err)}") from err
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not an infiniattention checkpoint (missing {REQUIRED_KEYS})")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {ckpt['format_version']}, expected {FORMAT_VERSION}"
        )
    verify(ckpt, path, notice)
    return ckpt


def verify(ckpt: dict[str, Any], path: Path, notice: Callable[[str], None] | None = None) -> None:
    """Refuse (CheckpointError) a checkpoint whose content does not match its digest, or whose model,
    optimizer or memory values are not finite: used, it would give NaN results or a resume that is
    quietly not exact. A checkpoint without a digest (an older version's) passes with a notice."""
    saved = ckpt.get(DIGEST_KEY)
    if saved is None:
        (notice or logger.warning)(f"checkpoint {path} carries no content digest (written by an older "
                                   "version): it cannot be verified; new checkpoints carry one")
    elif saved != content_digest(ckpt):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match the digest saved in "
                              "it (bytes changed after it was written); use another checkpoint")
    bad = all_finite(ckpt)
    if bad:
        where = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(f"checkpoint {path} holds non-finite values (NaN or inf) in {where}: it cannot "
                              "be used; use an earlier checkpoint")


def content_digest(obj: Any) -> str:
    """SHA-256 of `obj`'s content (the top-level `DIGEST_KEY` left out): tensors by dtype, shape and raw
    bytes, containers in a fixed order, other values by type and repr."""
    h = hashlib.sha256()
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != DIGEST_KEY}
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:
    """Add `value` to the hash `h`, each item tagged with its type and length so that no two different
    contents give the same stream."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1).cpu().contiguous()  # one tensor at a time: no copy of the whole
        h.update(f"T{flat.dtype}{tuple(value.shape)}:".encode())
        h.update(flat.view(torch.uint8).numpy())  # a view of the bytes
    elif isinstance(value, dict):
        h.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}:".encode())
        for item in value:
            _feed(h, item)
    elif isinstance(value, (str, bytes)):
        data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        h.update(f"{type(value).__name__}{len(data)}:".encode())
        h.update(data)
    else:  # None, bool, int, float (repr round-trips floats exactly)
        h.update(f"{type(value).__name__}:{value!r};".encode())


def _folder_message(path: Path) -> str:
    """A folder given as a checkpoint: name the checkpoints in it."""
    found = [(p, what) for p, what in ((path / BEST, "the best validation"),
                                        (next(iter(list_checkpoints(path)), None), "the newest"))
             if p is not None and p.is_file()]
    if not found:
        return (f"{path} is a folder, not a checkpoint file, and holds no checkpoint ({BEST} or "
                "ckpt_<step>.pt): give a checkpoint file")
    names = " or ".join(f"{p} ({what})" for p, what in found)
    return f"{path} is a folder, not a checkpoint file: give one of its checkpoints, {names}"


def describe_unreadable(path: Path, err: BaseException) -> str:
    """What a file that torch cannot load is, in words (the type of torch's exception says nothing to
    a user)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4096)
            f.seek(max(0, size - 65_557))  # the zip end record lies within the last 64 KiB + 22 bytes
            tail = f.read()
    except OSError as os_err:
        return f"it cannot be read ({os_err.strerror})"
    if size == 0:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        if b"PK\x05\x06" not in tail:
            return ("a truncated or corrupt checkpoint (its zip archive has no end: the write or copy was "
                    "cut short)")
        if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
            return ("a PyTorch file holding Python objects, not only tensors (e.g. a model saved whole with "
                    "torch.save): not a checkpoint of this project")
        return "a truncated or corrupt checkpoint, or a zip archive that is not a checkpoint"
    if head[:1] == b"\x80":
        return ("a Python pickle (another program's, or an old PyTorch format), not a checkpoint of this "
                "project")
    text = _as_text(head)
    if text is not None:
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"a text file, not a checkpoint (it starts with {first!r})"
    return "not a checkpoint (unrecognised binary content)"


def _as_text(head: bytes) -> str | None:
    """`head` as text when it is UTF-8 without NUL bytes (a character cut at the end allowed)."""
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as err:
        return head[:err.start].decode("utf-8") if err.start >= len(head) - 3 else None


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
