"""matplotlib, the optional `plots` extra (`pip install -e .[plots]`), for the scripts that draw PNGs."""

from __future__ import annotations

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
