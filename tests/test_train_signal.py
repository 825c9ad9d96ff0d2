"""Pre-emption: SIGTERM (or SIGHUP: a closed terminal, a dropped ssh) to a real `python train.py`
subprocess saves, exits 0, and resumes exactly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train_utils import REPO, final_params, run_train, subprocess_env, train_args, train_records

STEPS = 80  # enough that the run cannot finish between the poll and the signal
EXTRA = {"train.max_steps": STEPS, "train.ckpt_interval": 1000}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The run that was never interrupted."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert run_train(run, **EXTRA) == 0
    return run


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_saves_and_resume_matches_uninterrupted(sig, straight, tmp_path):
    run = tmp_path / "interrupted"
    cmd = [sys.executable, "train.py", *train_args(run, **EXTRA)]
    # SIGHUP at its default in the child, whatever this process inherited (nohup keeps it ignored)
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert f"stopped by signal {sig.name}" in output and "Resume with:" in output
    assert "python train.py --run-dir" in output
    saved = sorted(run.glob("ckpt_*.pt"))
    assert len(saved) == 1
    stopped_at = int(saved[0].stem.split("_")[1])
    assert 3 <= stopped_at < STEPS

    # resume (same command) to the end, and compare with a run that was never interrupted
    assert run_train(run, **EXTRA) == 0
    a, b = final_params(run), final_params(straight)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in train_records(run)] == [r["loss"] for r in train_records(straight)]
