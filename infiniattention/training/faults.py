"""Fault injection for the fault suite (tests/test_faults.py): off unless INFINI_FAULT is set.

    INFINI_FAULT="<point>:<n>[:<action>],..."

makes the n-th time this process reaches `<point>` (counted from 1) perform `<action>`: `kill`
(SIGKILL, the default: a power cut or the OOM killer), `term` (SIGTERM: pre-emption), `int`
(SIGINT: Ctrl-C), `hup` (SIGHUP: the terminal closed, ssh dropped) or `enospc` (raise "No space left
on device" as a full disk would).

Points: `start` (during a training's set-up, the run folder locked, before the model is built), `step`
(after an optimizer step), `log` (after a metrics.jsonl record), `eval` (after a
validation pass, before its record), `write.ckpt` / `write.best` (half-way through writing a periodic
checkpoint / best.pt: the temporary file is incomplete), `written.ckpt` / `written.best` (the temporary
file is complete, not yet renamed), `renamed.ckpt` / `renamed.best` (renamed, rotation not yet done),
`rotated` (old checkpoints deleted), `tb` (before TensorBoard scalars are written).
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "INFINI_FAULT"
ACTIONS = ("kill", "term", "int", "hup", "enospc")
_counts: Counter[str] = Counter()
_parsed: tuple[str, list[tuple[str, int, str]]] | None = None


def _plan() -> list[tuple[str, int, str]]:
    """The (point, n, action) entries of INFINI_FAULT (re-read when the variable changes)."""
    global _parsed
    text = os.environ.get(ENV, "")
    if _parsed is None or _parsed[0] != text:
        entries = []
        for item in filter(None, (t.strip() for t in text.split(","))):
            point, n, *action = item.split(":")
            act = action[0] if action else "kill"
            if act not in ACTIONS:
                raise ValueError(f"{ENV}: unknown action {act!r} in {item!r}; valid: {', '.join(ACTIONS)}")
            entries.append((point, int(n), act))
        _parsed = (text, entries)
        _counts.clear()
    return _parsed[1]


def armed(point: str) -> bool:
    """Whether any entry names `point` (lets callers skip the cost of a hook)."""
    return any(p == point for p, _, _ in _plan()) if os.environ.get(ENV) else False


def hit(point: str) -> None:
    """Count one pass through `point`; perform the action planned for this pass, if any."""
    if not os.environ.get(ENV):
        return
    plan = _plan()
    _counts[point] += 1
    for p, n, action in plan:
        if p == point and n == _counts[point]:
            if action == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT,
                   "hup": signal.SIGHUP}[action]
            os.kill(os.getpid(), sig)


def reset() -> None:
    """Forget the counts (in-process tests run several trainings in one process)."""
    global _parsed
    _parsed = None
    _counts.clear()
