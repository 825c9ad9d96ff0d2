"""Shared helpers of the training tests (no tests here): a prepared tiny corpus and tiny run configs."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def prepared_data_dir() -> str:
    """The bundled enwik8 sample, prepared once per test process into a temporary folder (no network)."""
    root = tempfile.mkdtemp(prefix="infini-data-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "data_utils.prepare", "enwik8-sample", "--data-dir", root, "--no-progress"],
        cwd=REPO, check=True, capture_output=True,
    )
    return root


def tiny_sets(**extra: object) -> list[str]:
    """`--set` arguments of a model and run small enough for a CPU test (dropout on, to test RNG restore)."""
    values = {
        "model.n_layer": 2, "model.d_model": 32, "model.n_head": 2, "model.d_head": 16, "model.d_inner": 64,
        "model.segment_len": 16, "model.dropout": 0.1, "model.mem_len": 16,
        "data.dataset": "enwik8-sample", "data.data_dir": prepared_data_dir(), "data.batch_size": 4,
        "data.tgt_len": 32,
        "optim.lr": 0.003, "optim.warmup_steps": 2, "optim.decay_steps": 100,
        "train.log_interval": 1, "train.eval_interval": 0, "train.ckpt_interval": 0, "train.device": "cpu",
        "eval.batch_size": 2, "eval.max_tokens": 256, "eval.test_max_tokens": 256,
    }
    values.update(extra)
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()]


def train_args(run_dir: Path, **extra: object) -> list[str]:
    args = ["--run-dir", str(run_dir), "--no-progress"]
    for s in tiny_sets(**extra):
        args += ["--set", s]
    return args


def run_train(run_dir: Path, **extra: object) -> int:
    """train.py's main in this process."""
    import train

    return train.main(train_args(run_dir, **extra))


def train_records(run_dir: Path, kind: str = "train") -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    """Model weights of the newest periodic checkpoint of a run."""
    from infiniattention.training.checkpoint import list_checkpoints, load

    return load(list_checkpoints(run_dir)[0])["model"]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def signalled(signum: int):
    """A stand-in for a program's long work (an evaluation) that sends this process `signum` and waits:
    the program's handler must stop it before the wait ends."""

    def work(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises first
        raise AssertionError(f"{signal.Signals(signum).name} did not stop the work")

    return work
