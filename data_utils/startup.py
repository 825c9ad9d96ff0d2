"""How every program starts: its heavy imports (torch, numpy, yaml, ...) under one guard.

A Python without the requirements, a Ctrl-C while torch loads (a second or more), or a SIGTERM/SIGHUP
then, is one line on stderr and an exit status, never a traceback:

    with heavy_imports():
        import torch
        from infiniattention.training.cli import cli_entry

Standard library only, and importable before anything heavy (`data_utils/__init__.py` and
`infiniattention/__init__.py` import their modules lazily), so train.py, eval.py, getdata.sh's
`python -m data_utils.prepare`, scripts/*.py, `python -m infiniattention.commands.*` and the installed
`infini-*` commands all pass through it. It lives in `data_utils`, the lowest package, because
getdata's program (`data_utils.prepare`) needs it too and imports nothing from `infiniattention`.

`Stopped` is SIGTERM or SIGHUP raised as an exception where Ctrl-C raises KeyboardInterrupt (it is one),
so a program that only reads (eval.py, generate.py, getdata.sh) runs the same clean-up for all three
and says in one line that it stopped and that running it again is safe (`stop_on_signals`).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

# import name -> pip name: what pyproject.toml's dependencies give a program.
REQUIREMENTS = {"torch": "torch", "numpy": "numpy", "yaml": "pyyaml", "tqdm": "tqdm",
                "tensorboard": "tensorboard"}
MISSING_EXIT = 2  # as scripts/python.sh: the environment is the input that must change
_ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages when installed)
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C raises KeyboardInterrupt: the same clean-up runs for all
    (and, a BaseException, no `except Exception` on its way mistakes it for a failure, e.g. of a
    checkpoint being read). ``when``, if given, completes the one line ("stopped by SIGTERM <when>")
    that replaces the program's own advice."""

    def __init__(self, signum: int, when: str | None = None) -> None:
        super().__init__(signum)
        self.signum, self.when = signum, when
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        name = f"stopped by {signal.Signals(self.signum).name}"
        return f"{name} {self.when}" if self.when else name


def interruption(err: KeyboardInterrupt) -> tuple[str, int]:
    """(what stopped the program, its exit status): Ctrl-C 130, SIGTERM 143, SIGHUP 129."""
    if isinstance(err, Stopped):
        return str(err), err.exit_code
    return "interrupted (Ctrl-C)", 128 + signal.SIGINT


@contextlib.contextmanager
def stop_on_signals(when: str | None = None) -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP, where they would kill the process silently (their default
    action), raise `Stopped(signum, when)` instead; an ignored one stays ignored (`nohup`), a handler of
    the caller's stays (a training loop installs its own inside the block and restores these). The
    handlers before the block come back after it. Outside the main thread, where Python cannot set
    handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise_stopped(signum: int, frame: object) -> None:
        raise Stopped(signum, when)

    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s, handler in previous.items():
        if handler == signal.SIG_DFL:
            signal.signal(s, _raise_stopped)
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler == signal.SIG_DFL:
                signal.signal(s, handler)


def _say(line: str, code: int) -> None:
    try:
        sys.stderr.write(" ".join(f"error: {line}".split()) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # no terminal left (SIGHUP): the status still tells
        pass
    raise SystemExit(code)


@contextlib.contextmanager
def heavy_imports() -> Iterator[None]:
    """Import a program's modules: a missing or broken requirement, Ctrl-C, SIGTERM or SIGHUP meanwhile
    is one `error:` line and exit status 2 (requirements), 130, 143 or 129. Any other ImportError is a
    bug in this code and keeps its traceback."""
    try:
        with stop_on_signals():
            yield
    except KeyboardInterrupt as err:  # Ctrl-C, or Stopped
        what, code = interruption(err)
        _say(f"{what} while starting, before any work: run the same command again", code)
    except ImportError as err:
        problem = requirement_problem(err)
        if problem is None:
            raise
        _say(f"{problem} in this Python ({sys.executable}): {setup_advice()}", MISSING_EXIT)


def requirement_problem(err: ImportError) -> str | None:
    """What `err` says about the requirements in words: those not installed, or the one that failed to
    import (seen in the traceback: a shim, a broken install, a missing dependency of its own); None
    when no requirement is at fault."""
    top = (err.name or "").partition(".")[0]
    if isinstance(err, ModuleNotFoundError) and top in REQUIREMENTS and _spec(top) is None:
        missing = [name for name in REQUIREMENTS if _spec(name) is None]
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    files = [frame.filename for frame in traceback.extract_tb(err.__traceback__)]
    for name in REQUIREMENTS:
        spec = _spec(name)
        places = list(spec.submodule_search_locations or []) if spec else []
        places += [spec.origin] if spec and spec.origin else []
        if any(f == p or f.startswith(os.path.join(p, "")) for f in files for p in places):
            why = " ".join(str(err).split())  # numpy's own advice spans many lines
            return f"{name} cannot be imported ({type(err).__name__}: {why[:300]})"
    return None


def _spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """Where module `name` would be imported from; None when nowhere (or when it cannot be told)."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a module in sys.modules without a spec, a broken parent
        return None


def setup_advice() -> str:
    """The commands that give this program its requirements: the checkout's setup script and its .venv,
    or pip for an installed package."""
    setup = _ROOT / "scripts" / "setup_env.sh"
    if not setup.is_file():
        pips = " ".join(REQUIREMENTS.values())
        return f"install the requirements: {sys.executable} -m pip install {pips}"
    here = Path.cwd().resolve()
    root = "" if here == _ROOT else f"{_ROOT}/"
    venv = f"{root}.venv"
    if Path(sys.prefix).resolve() == _ROOT / ".venv":  # activated already: the venv itself lacks them
        return f"run `bash {root}scripts/setup_env.sh` and the command again"
    return (f"run `bash {root}scripts/setup_env.sh` (it makes {venv}), then `source {venv}/bin/activate` "
            "and the command again")
