"""Checkpoint files: weights_only loading, atomic writes, RNG round trip, refusal of foreign files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from test_train_utils import final_params, run_train, train_records

from infiniattention.training import checkpoint as ckpt_io


def test_rng_round_trip_is_weights_only_safe(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    state = ckpt_io.capture_rng()
    ckpt_io.save_atomic({"rng": state}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.randn(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt_io.restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.random(), np.random.randn(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_atomic_save_leaves_no_temporary(tmp_path):
    ckpt_io.save_atomic({"x": torch.ones(3)}, tmp_path / "a.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_rotation_keeps_last_k(tmp_path):
    for step in (1, 2, 3, 4):
        (tmp_path / f"ckpt_{step:08d}.pt").write_bytes(b"x")
    (tmp_path / "best.pt").write_bytes(b"x")
    ckpt_io.rotate(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "ckpt_00000003.pt", "ckpt_00000004.pt"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with checkpoints at steps 3 and 6."""
    run = tmp_path_factory.mktemp("ckpt") / "run"
    assert run_train(run, **{"train.max_steps": 6, "train.ckpt_interval": 3}) == 0
    return run


def test_truncated_checkpoint_is_refused_and_auto_falls_back(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    newest = run / "ckpt_00000006.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.raises(ckpt_io.CheckpointError, match="truncated or corrupt"):
        ckpt_io.load(newest)
    # --resume PATH on the broken file: a clear error, exit 2
    import train

    rc = train.main(["--run-dir", str(run), "--resume", str(newest), "--no-progress",
                     *sum((["--set", s] for s in _sets(6)), [])])
    assert rc == 2
    assert "truncated or corrupt" in (run / "train.log").read_text()
    # --resume auto: skips it and continues from step 3 to 6
    assert run_train(run, **{"train.max_steps": 6, "train.ckpt_interval": 3}) == 0
    log = (run / "train.log").read_text()
    assert "trying an older checkpoint" in log and "resumed from" in log
    assert "ckpt_00000003.pt at step 3" in log
    a, b = final_params(trained), final_params(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _sets(max_steps: int, **extra) -> list[str]:
    from test_train_utils import tiny_sets

    return tiny_sets(**{"train.max_steps": max_steps, **extra})


def test_other_architecture_is_refused(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    rc = run_train(run, **{"train.max_steps": 8, "model.d_model": 48})
    assert rc == 2
    log = (run / "train.log").read_text()
    assert "another architecture" in log and "model.d_model: checkpoint 32 vs config 48" in log


def test_other_vocabulary_is_refused(trained):
    ckpt = ckpt_io.load(trained / "ckpt_00000006.pt")
    cfg = ckpt["config"]["model"]
    with pytest.raises(ckpt_io.CheckpointError, match="another vocabulary"):
        ckpt_io.check_compatible(ckpt, cfg, "0" * 64, trained / "ckpt_00000006.pt")


def test_resume_never_starts_fresh_only_with_overwrite(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    import train

    sets = sum((["--set", s] for s in _sets(2)), [])
    args = ["--run-dir", str(run), "--resume", "never", "--no-progress", *sets]
    before = sorted(p.name for p in run.iterdir())
    assert train.main(args) == 2  # refused: the folder holds checkpoints of an earlier run
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and "ckpt_00000006.pt" in err
    assert sorted(p.name for p in run.iterdir()) == before  # nothing touched
    assert train.main([*args, "--overwrite"]) == 0
    assert [r["step"] for r in train_records(run)] == [1, 2]
    moved = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert len(moved) == 1 and (moved[0] / "ckpt_00000006.pt").is_file() and (moved[0] / "best.pt").is_file()
    assert (moved[0] / "metrics.jsonl").is_file()


def test_checkpoint_contents(trained):
    ckpt = torch.load(trained / "ckpt_00000006.pt", weights_only=True)
    for key in ("model", "optimizer", "scaler", "step", "tokens_seen", "iterator", "memory", "rng", "config",
                "vocab", "vocab_digest", "versions", "world_size"):
        assert key in ckpt, key
    assert ckpt["iterator"]["position"] == 6 * 32 and ckpt["world_size"] == 1
    assert set(ckpt["rng"][0]) == {"torch", "cuda", "numpy", "python"}
    assert ckpt["memory"]["layers.0.M"].shape[0] == 4  # all lanes of the global batch
