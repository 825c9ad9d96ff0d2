"""Helpers shared by the model-level benchmarks: device sync, commit id, peak RSS, table printing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    """Wait for the device, so that a wall-clock time covers the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def git_commit() -> str:
    """Short commit of the checkout, with ``-dirty`` when tracked files have changed."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak(device: torch.device) -> int | None:
    """Reset the peak-memory counter; returns the memory in use now (bytes), None if unavailable.

    CUDA: the allocator's peak. CPU: the RSS high-water mark, reset to the current RSS through
    ``/proc/self/clear_refs`` (Linux); run the process with ``MALLOC_MMAP_THRESHOLD_=65536`` so that
    freed tensors leave the RSS at once and the peak measures live tensors."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    rss = status_kib("VmRSS")
    return None if rss is None else rss * 1024


def peak_since(device: torch.device, base: int | None) -> int | None:
    """Peak memory (bytes) above ``base`` since ``reset_peak``."""
    if base is None:
        return None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    hwm = status_kib("VmHWM")
    return None if hwm is None else hwm * 1024 - base


def print_table(rows: list[list[str]]) -> None:
    """First row: header. First column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        cells = enumerate(zip(r, widths, strict=True))
        print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in cells))
        if i == 0:
            print("-+-".join("-" * w for w in widths))


def write_json(path: str | Path, result: dict) -> Path:
    """Write ``result`` atomically (temporary file, then rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    return out
