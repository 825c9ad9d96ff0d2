"""Pre-emption: SIGTERM to a real `python train.py` subprocess saves, exits 0, and resumes exactly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train_utils import REPO, final_params, run_train, subprocess_env, train_args, train_records


@pytest.mark.slow
def test_sigterm_saves_and_resume_matches_uninterrupted(tmp_path):
    steps = 80  # enough that the run cannot finish between the poll and the signal
    extra = {"train.max_steps": steps, "train.ckpt_interval": 1000}
    run = tmp_path / "interrupted"
    cmd = [sys.executable, "train.py", *train_args(run, **extra)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "stopped by signal SIGTERM" in output and "Resume with:" in output
    assert "python train.py --run-dir" in output
    saved = sorted(run.glob("ckpt_*.pt"))
    assert len(saved) == 1
    stopped_at = int(saved[0].stem.split("_")[1])
    assert 3 <= stopped_at < steps

    # resume (same command) to the end, and compare with a run that was never interrupted
    assert run_train(run, **extra) == 0
    assert run_train(tmp_path / "straight", **extra) == 0
    a, b = final_params(run), final_params(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)
    straight = [r["loss"] for r in train_records(tmp_path / "straight")]
    assert [r["loss"] for r in train_records(run)] == straight
