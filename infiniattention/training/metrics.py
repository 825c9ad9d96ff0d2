"""What a user sees: `logging` (console via tqdm + train.log), metrics.jsonl and TensorBoard scalars."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import faults
from .errors import DiskFullError

LOGGER_NAME = "infiniattention"
LN2 = math.log(2.0)


def quality(nll: float, vocab_kind: str) -> tuple[str, float]:
    """("bpc", nats / ln 2) for byte and char vocabularies, ("ppl", exp(nats)) for word vocabularies."""
    if vocab_kind == "word":
        return "ppl", math.exp(min(nll, 700.0))
    return "bpc", nll / LN2


def fmt(x: Any) -> str:
    """A number for a log line with 4 decimals, or "n/a" (a missing value, e.g. no good step)."""
    return f"{x:.4f}" if isinstance(x, (int, float)) else "n/a"


class TqdmHandler(logging.Handler):
    """Log lines printed above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record))
        except Exception:
            self.handleError(record)


class LogFileHandler(logging.FileHandler):
    """train.log; a failed write (a full disk) is not printed as a logging traceback: the console still
    has the line, and the write that matters (checkpoint, metrics) reports the disk error itself."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def setup_logging(run_dir: Path | None, is_main: bool) -> logging.Logger:
    """The package logger: INFO on rank 0 (console and `run_dir/train.log`), WARNING elsewhere."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    console = TqdmHandler()
    console.setFormatter(fmt)
    logger.addHandler(console)
    if is_main and run_dir is not None:
        file_handler = LogFileHandler(Path(run_dir) / "train.log", encoding="utf-8")
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def close_logging() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class MetricsWriter:
    """metrics.jsonl (one JSON object per record) and TensorBoard scalars, on rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None) -> None:
        """`purge_step`: TensorBoard hides the events of this step and later ones that an interrupted
        earlier process wrote (a resumed run replays them)."""
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        self._hook = threading.excepthook
        if enabled:
            # TensorBoard writes from a thread; a full disk there would print a thread traceback, and
            # the main thread raises the same error at the next write anyway (one line, exit 1).
            threading.excepthook = self._quiet_disk_full
            from torch.utils.tensorboard import SummaryWriter

            self._jsonl = open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8")
            self._tb = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def record(self, kind: str, step: int, values: dict[str, Any]) -> None:
        """One jsonl line {"kind", "step", "time", **values}."""
        if not self.enabled:
            return
        line = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(line) + "\n")
        self._jsonl.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars by tag ("train/loss", "gate/layer0/head3", ...)."""
        if not self.enabled:
            return
        faults.hit("tb")
        for tag, value in values.items():
            if value is not None and math.isfinite(value):
                self._tb.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def _quiet_disk_full(self, args: threading.ExceptHookArgs) -> None:
        if not DiskFullError.matches(args.exc_value):
            self._hook(args)

    def close(self) -> None:
        if self.enabled:
            self.enabled = False
            try:
                self._tb.close()
            finally:
                self._jsonl.close()
                threading.excepthook = self._hook
