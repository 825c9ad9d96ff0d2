"""DDP with torchrun on CPU (gloo): same parameters as one process on the same global batch, exact resume,
and resuming a 2-rank checkpoint in a single process (memory state re-sharded by lanes)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from test_train_utils import REPO, final_params, run_train, subprocess_env, train_args, train_records


def torchrun(run_dir, **extra) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "train.py", *train_args(run_dir, **extra)]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_lanes_not_dividing_among_ranks_is_one_line_from_every_rank(tmp_path):
    """Nothing but each rank's error line comes from our code (torchrun's own failure summary follows)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "train.py", *train_args(tmp_path / "run", **{"data.batch_size": 3})]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).splitlines()
    expected = ("error: data.batch_size=3 must be divisible by world_size x train.grad_accum = 2 x 1: "
                "use 2 or 4 (--set data.batch_size=...) or another number of processes")
    assert [line for line in lines if line.startswith("error:")] == [expected, expected], proc.stderr
    frames = [line for line in lines if line.strip().startswith("File ") and "site-packages" not in line]
    assert all("<frozen" in line for line in frames), proc.stderr  # torchrun's traceback only


def close(a: dict, b: dict, atol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


@pytest.mark.slow
def test_ddp_matches_single_process_and_resumes(tmp_path):
    # dropout 0: with dropout, 1 and 2 processes draw different masks for the same lanes
    common = {"model.dropout": 0.0, "train.ckpt_interval": 2, "train.eval_interval": 2}
    torchrun(tmp_path / "ddp", **common, **{"train.max_steps": 4, "train.grad_accum": 2})
    assert run_train(tmp_path / "single", **common, **{"train.max_steps": 4}) == 0
    ddp, single = final_params(tmp_path / "ddp"), final_params(tmp_path / "single")
    assert close(ddp, single, 1e-6)
    losses_ddp = [r["loss"] for r in train_records(tmp_path / "ddp")]
    losses_single = [r["loss"] for r in train_records(tmp_path / "single")]
    assert losses_ddp == pytest.approx(losses_single, abs=1e-5)
    ckpt = torch.load(tmp_path / "ddp" / "ckpt_00000004.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["memory"]["layers.0.M"].shape[0] == 4

    # 2 steps, stop, resume to 4 under torchrun: bit-for-bit the uninterrupted 2-rank run
    torchrun(tmp_path / "split", **common, **{"train.max_steps": 2, "train.grad_accum": 2})
    shutil.copytree(tmp_path / "split", tmp_path / "split_single")
    torchrun(tmp_path / "split", **common, **{"train.max_steps": 4, "train.grad_accum": 2})
    resumed = final_params(tmp_path / "split")
    assert all(torch.equal(resumed[k], ddp[k]) for k in ddp)

    # a 2-rank checkpoint resumed by one process: lanes re-sharded, same result up to rounding
    assert run_train(tmp_path / "split_single", **common, **{"train.max_steps": 4}) == 0
    assert close(final_params(tmp_path / "split_single"), ddp, 1e-6)
    assert "dropout streams are re-seeded" in (tmp_path / "split_single" / "train.log").read_text()
