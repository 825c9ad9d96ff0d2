"""Results as data: one JSON file per measurement, with what produced it.

Every program that produces a number the README or docs/ report can write it with ``--results FILE``
(for example ``results/passkey/infini+gate/seed-1111/filler-2k-8k.json``). A file is a record:

    {"schema": 1, "kind": "passkey", "result": {...the program's own numbers...},
     "config": {...the resolved run config...}, "provenance": {"commit": ..., "dirty": ...,
     "command": ..., "machine": {...}, "wall_s": ..., "date": ...}}

``result`` is exactly what the program prints and writes next to its run (``passkey.json``,
``memory_probe.json``); the envelope adds the commit, the config, the exact command, the machine and
the wall time, so a table rendered from ``results/`` names its source, and a later session can tell
whether a number still belongs to the code. Files are written atomically (a temporary file renamed).

When a script runs the program (``bash scripts/compare_memory.sh`` runs train.py, context_curve.py, ...),
it exports its own command line as ``INFINI_RESULTS_VIA``; the record keeps it as ``provenance.via``
(absent otherwise), and the rendered tables name it: it is the command that reproduces the number.

Layout of a results folder (``find_records``): ``TABLE/ROW/seed-SEED/NAME.json`` for a table with rows
and seeds (``compare/infini/seed-1111/test.json``), ``TABLE/NAME.json`` for a table of one run
(``demo/test.json``, ``speed/small.json``). ROW is an opaque label (``infini+gate+sp``).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SCHEMA = 1
ROOT = Path(__file__).resolve().parents[2]
VIA_ENV = "INFINI_RESULTS_VIA"  # the script that ran the program, exported by the scripts


def git_commit(root: Path = ROOT) -> tuple[str, bool]:
    """(full commit hash, whether tracked files differ from it); ("unknown", False) outside a checkout."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        return head, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def machine(device: torch.device | str | None = None) -> dict[str, Any]:
    """What the numbers were measured on: cores, torch threads and version, device, Python."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info: dict[str, Any] = {
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(terse=True), "device": str(dev),
    }
    if dev.type == "cuda" and torch.cuda.is_available():
        info["device_name"] = torch.cuda.get_device_name(dev)
    return info


def command_line(argv: list[str] | None = None, prog: str | None = None) -> str:
    """The command as a user would type it again: the program's path relative to the checkout when it
    lies inside it, then its arguments, shell-quoted."""
    argv = list(sys.argv if argv is None else argv)
    head = prog or argv[0]
    try:
        head = str(Path(head).resolve().relative_to(ROOT))
    except (ValueError, OSError):
        pass
    return " ".join(shlex.quote(a) for a in [head, *argv[1:]])


def record(kind: str, result: dict[str, Any], *, config: dict[str, Any] | None, wall_s: float,
           command: str | None = None, device: torch.device | str | None = None) -> dict[str, Any]:
    """The record of one measurement (see the module docstring)."""
    commit, dirty = git_commit()
    provenance: dict[str, Any] = {"commit": commit, "dirty": dirty, "command": command or command_line()}
    if os.environ.get(VIA_ENV):
        provenance["via"] = os.environ[VIA_ENV]
    provenance.update(machine=machine(device), wall_s=round(float(wall_s), 2),
                      date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return {"schema": SCHEMA, "kind": kind, "result": result, "config": config, "provenance": provenance}


def write_result(path: str | Path, rec: dict[str, Any]) -> Path:
    """Write a record as JSON, atomically (folders created). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(rec, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    """A record written by `write_result` (a ValueError naming the file when it is not one)."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable results record ({err})") from err
    if not isinstance(rec, dict) or rec.get("schema") != SCHEMA or "result" not in rec:
        raise ValueError(f"{path}: not a results record of schema {SCHEMA}")
    return rec


@dataclass(frozen=True)
class Found:
    """A record found in a results folder, with where it sits: table, row and seed (None for a table of
    one run), and its file name without ``.json``."""

    table: str
    row: str | None
    seed: int | None
    name: str
    path: Path
    record: dict[str, Any]

    @property
    def result(self) -> dict[str, Any]:
        return self.record["result"]


def _seed_of(folder: str) -> int | None:
    head, _, tail = folder.partition("-")
    return int(tail) if head == "seed" and tail.isdigit() else None


def find_records(root: str | Path, table: str | None = None) -> list[Found]:
    """Every record under ``root`` (of one ``table``, or all), in path order: ``TABLE/NAME.json`` and
    ``TABLE/ROW/seed-SEED/NAME.json``. Other JSON files are an error naming them (a results folder
    holds records only); other files (README.md) are ignored."""
    root = Path(root)
    if table is not None:
        tables = [root / table]
    else:
        tables = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = []
    for folder in tables:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.json")):
            parts = path.relative_to(folder).parts
            if len(parts) == 1:
                row, seed = None, None
            elif len(parts) == 3 and _seed_of(parts[1]) is not None:
                row, seed = parts[0], _seed_of(parts[1])
            else:
                raise ValueError(f"{path}: not in the layout TABLE/NAME.json or "
                                 "TABLE/ROW/seed-SEED/NAME.json")
            found.append(Found(folder.name, row, seed, path.stem, path, read_result(path)))
    return found
