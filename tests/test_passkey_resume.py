"""A passkey run's `passkey:` section is compared on resume the way the model section is (issue 28, item
6): other passkey settings are refused in one line naming each key, also for a checkpoint of an older
version, which is compared with the run folder's passkey.yaml."""

from __future__ import annotations

import pytest
import torch
from test_passkey import _main, _train_args

from infiniattention.training import checkpoint as ckpt_io


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    run = tmp_path_factory.mktemp("pk") / "run"
    assert _main(_train_args(run, "--set", "train.max_steps=2")) == 0
    return run


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_checkpoints_record_the_passkey_section(two_steps):
    saved = ckpt_io.load(two_steps / "ckpt_00000002.pt")["passkey"]
    assert saved["val_instances"] == 4 and saved["curriculum_steps"] == 4 and saved["text_frac"] == 0.25


def test_a_resume_with_other_passkey_settings_is_refused_naming_the_keys(two_steps, tmp_path, capsys):
    run = _copy(two_steps, tmp_path / "run")
    before = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()
    other = ("--set", "train.max_steps=4", "--set", "passkey.seed=7", "--set", "passkey.all_weight=0.5")
    assert _main(_train_args(run, *other)) == 2
    line = _one_line(capsys)
    assert "was trained with other passkey settings" in line
    assert "passkey.seed: checkpoint 0 vs config 7" in line
    assert "passkey.all_weight: checkpoint 0.1 vs config 0.5" in line
    assert "--set passkey.seed=0" in line and "--overwrite" in line
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing moved
    assert _main(_train_args(run, "--set", "train.max_steps=4")) == 0  # the same settings resume


def test_an_older_checkpoint_is_compared_with_passkey_yaml(two_steps, tmp_path, capsys):
    run = _copy(two_steps, tmp_path / "run")
    for path in [*ckpt_io.list_checkpoints(run), run / ckpt_io.BEST]:
        old = torch.load(path, weights_only=True)
        del old["passkey"]  # as an earlier version wrote it
        ckpt_io.save_atomic(old, path)
    capsys.readouterr()
    assert _main(_train_args(run, "--set", "train.max_steps=4", "--set", "passkey.text_frac=0.5")) == 2
    assert "passkey.text_frac: checkpoint 0.25 vs config 0.5" in _one_line(capsys)
    assert _main(_train_args(run, "--set", "train.max_steps=4")) == 0
