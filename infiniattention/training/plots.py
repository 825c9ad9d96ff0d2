"""matplotlib, the optional `plots` extra (`pip install -e .[plots]`), for the scripts that draw PNGs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def pyplot() -> ModuleType | None:
    """`matplotlib.pyplot` on the file-only Agg backend, or None when matplotlib is not installed
    (the scripts then write their tables only)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


PLOTS_HINT = "plots need matplotlib: pip install -e .[plots]"


def write_report(out_dir: Path, stem: str, markdown: str, result: dict,
                 draw: Callable[[dict, Path], bool]) -> None:
    """Print a script's Markdown table and write it with its JSON result as STEM.md and STEM.json into
    `out_dir` (created), plus STEM.png when `draw(result, path)` can draw it (the plots extra)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    print(markdown)
    (out_dir / f"{stem}.md").write_text(markdown, encoding="utf-8")
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if draw(result, out_dir / f"{stem}.png"):
        print(f"wrote {out_dir / stem}.md, .json and .png")
    else:
        print(f"wrote {out_dir / stem}.md and .json; {PLOTS_HINT}")
