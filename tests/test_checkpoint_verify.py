"""Checkpoints verify themselves (issue 28, items 8 and 4): a content digest checked by every loader, NaN
weights refused, `--resume auto` falling back past a bad checkpoint, a digest-less checkpoint of an
older version loading with a notice, and unreadable files and run folders described in words."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from test_passkey import _train_args as passkey_args
from test_train_utils import REPO, final_params, run_train

from infiniattention.training import checkpoint as ckpt_io

RUN = {"train.max_steps": 6, "train.ckpt_interval": 3, "train.eval_interval": 3, "train.keep_last": 3}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny infini run: checkpoints at steps 3 and 6, best.pt."""
    run = tmp_path_factory.mktemp("verify") / "run"
    assert run_train(run, **RUN) == 0
    return run


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_error_line(capsys, rc: int, code: int = 2) -> str:
    """Exit status `code` and exactly one `error:` line on stderr, no traceback; returns the line."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code and len(lines) == 1 and lines[0].startswith("error: "), (rc, err[-2000:])
    assert "Traceback" not in err
    return lines[0]


def with_nan_weight(src: Path, dst: Path, keep_old_digest: bool = False) -> Path:
    """`src` with one weight set to NaN: saved afresh (a digest of the NaN content), or edited in place of
    its bytes as another tool would (the digest saved in it no longer matches)."""
    ckpt = torch.load(src, weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name].view(-1)[0] = float("nan")
    if keep_old_digest:
        torch.save(ckpt, dst)
    else:
        ckpt_io.save_atomic(ckpt, dst)
    return dst


def with_flipped_moment(src: Path, dst: Path) -> Path:
    """`src` with the lowest bit of one float of an Adam moment flipped in the file: still finite, and
    torch loads it without a word (it does not check the zip's CRCs)."""
    moments = torch.load(src, weights_only=True)["optimizer"]["state"]
    moment = max((s["exp_avg"] for s in moments.values()), key=lambda t: t.numel())
    raw = moment.contiguous().numpy().tobytes()
    data = bytearray(src.read_bytes())
    at = data.find(raw[:64])
    assert at >= 0 and data.find(raw[:64], at + 1) < 0
    data[at] ^= 1  # little-endian: the lowest mantissa byte of the first float
    dst.write_bytes(bytes(data))
    return dst


def without_digest(src: Path, dst: Path) -> Path:
    """`src` as a version before digests wrote it."""
    ckpt = torch.load(src, weights_only=True)
    del ckpt[ckpt_io.DIGEST_KEY]
    torch.save(ckpt, dst)
    return dst


# ------------------------------------------------------------------------------------------------
# The digest.


def test_the_digest_is_of_the_content_not_of_the_file(tmp_path):
    model = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2, dtype=torch.bfloat16)}
    ckpt = {"step": 3, "model": model, "rng": [{"python": [1, 2, 3]}], "best_val": float("inf"), "name": "x",
            "none": None}
    digest = ckpt_io.content_digest(ckpt)
    assert ckpt_io.content_digest(dict(reversed(list(ckpt.items())))) == digest  # key order
    ckpt_io.save_atomic(ckpt, tmp_path / "a.pt")
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert loaded[ckpt_io.DIGEST_KEY] == digest == ckpt_io.content_digest(loaded)
    assert ckpt_io.DIGEST_KEY not in ckpt  # the caller's dict is left as it was
    changed = {**ckpt, "model": {**ckpt["model"], "w": ckpt["model"]["w"].clone()}}
    changed["model"]["w"].view(torch.int32)[0, 1] ^= 1  # one bit
    for other in (changed, {**ckpt, "step": 3.0}, {**ckpt, "step": "3"},
                  {**ckpt, "model": {**ckpt["model"], "w": ckpt["model"]["w"].reshape(3, 2)}},
                  {**ckpt, "model": {**ckpt["model"], "w": ckpt["model"]["w"].double()}}):
        assert ckpt_io.content_digest(other) != digest


def test_every_checkpoint_a_training_writes_carries_its_digest(trained):
    for path in [*ckpt_io.list_checkpoints(trained), trained / ckpt_io.BEST]:
        ckpt = torch.load(path, weights_only=True)
        assert ckpt[ckpt_io.DIGEST_KEY] == ckpt_io.content_digest(ckpt)


# ------------------------------------------------------------------------------------------------
# A NaN weight and a flipped byte: every loader refuses, resume falls back.


@pytest.mark.parametrize("keep_old_digest", [False, True], ids=["resaved", "edited"])
def test_a_nan_weight_is_refused_by_every_loader(keep_old_digest, trained, tmp_path, capsys):
    import eval as eval_cli
    from infiniattention.commands import generate, passkey

    bad = with_nan_weight(trained / "ckpt_00000006.pt", tmp_path / "nan.pt", keep_old_digest)
    needle = "does not match the digest" if keep_old_digest else "non-finite values (NaN or inf) in model."
    calls = {
        "eval.py": lambda: eval_cli.main(["--checkpoint", str(bad), "--split", "valid"]),
        "generate.py": lambda: generate.main(["--checkpoint", str(bad), "--max-new-tokens", "5"]),
        "passkey.py eval": lambda: passkey.main(["eval", "--checkpoint", str(bad), "--lengths", "1k",
                                                 "--depths", "0.5", "--instances", "1"]),
        "memory_probe.py": lambda: script("memory_probe").main(["--checkpoint", str(bad), "--lengths", "1k",
                                                                "--keys", "1", "--device", "cpu"]),
        "context_curve.py": lambda: script("context_curve").main(["--checkpoint", str(bad)]),
        "passkey.py train --init": lambda: passkey.main(passkey_args(tmp_path / "pk", "--init", str(bad))),
    }
    capsys.readouterr()
    for program, call in calls.items():
        line = one_error_line(capsys, call())
        assert "nan.pt" in line and needle in line, (program, line)
    assert script("plot_gates").main(["--checkpoint", str(bad)]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "passkey_eval").exists() and not (tmp_path / "memory_probe").exists()


def test_resume_falls_back_past_a_nan_checkpoint_and_never_names_it_good(trained, tmp_path, monkeypatch):
    from infiniattention.training.trainer import NAN_STEPS_ENV

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    with_nan_weight(trained / "ckpt_00000006.pt", run / "ckpt_00000006.pt")
    monkeypatch.setenv(NAN_STEPS_ENV, "3")  # the first step after the resume diverges
    assert run_train(run, **{**RUN, "train.max_bad_steps": 0}) == 1
    log = (run / "train.log").read_text()
    assert "non-finite values (NaN or inf) in model." in log and "trying an older checkpoint" in log
    assert "ckpt_00000003.pt at step 3" in log
    error = [line for line in log.splitlines() if "consecutive non-finite steps" in line][-1]
    assert "the last good checkpoint is" in error and "ckpt_00000003.pt" in error
    assert "ckpt_00000006.pt" not in error
    assert [p.name for p in run.glob("unreadable-*/*")] == ["ckpt_00000006.pt"]


def test_a_flipped_byte_in_an_optimizer_moment_is_refused_and_resume_falls_back(trained, tmp_path, capsys):
    import eval as eval_cli

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    flipped = with_flipped_moment(trained / "ckpt_00000006.pt", run / "ckpt_00000006.pt")
    assert torch.isfinite(torch.load(flipped, weights_only=True)["optimizer"]["state"][0]["exp_avg"]).all()
    capsys.readouterr()
    line = one_error_line(capsys, eval_cli.main(["--checkpoint", str(flipped)]))
    assert "is corrupt: its content does not match the digest" in line
    assert run_train(run, **RUN) == 0  # back to step 3, then the same steps 4 to 6
    log = (run / "train.log").read_text()
    assert "trying an older checkpoint" in log and "ckpt_00000003.pt at step 3" in log
    a, b = final_params(trained), final_params(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# Checkpoints of an older version, folders and unreadable files.


def test_a_checkpoint_without_digest_loads_with_a_notice(trained, tmp_path, capsys):
    import eval as eval_cli

    old = without_digest(trained / "ckpt_00000006.pt", tmp_path / "old.pt")
    capsys.readouterr()
    assert eval_cli.main(["--checkpoint", str(old), "--split", "valid", "--max-tokens", "64"]) == 0
    out, err = capsys.readouterr()
    notes = [line for line in err.splitlines() if "carries no content digest" in line]
    assert len(notes) == 1 and notes[0].startswith("warning: ") and "old.pt" in notes[0]
    assert "bpc" in out
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "ckpt_00000006.pt").unlink()
    without_digest(trained / "ckpt_00000003.pt", run / "ckpt_00000003.pt")
    assert run_train(run, **RUN) == 0
    log = (run / "train.log").read_text()
    assert "carries no content digest" in log and "ckpt_00000003.pt at step 3" in log
    new = torch.load(run / "ckpt_00000006.pt", weights_only=True)
    assert new[ckpt_io.DIGEST_KEY] == ckpt_io.content_digest(new)


def test_a_run_folder_as_checkpoint_names_the_checkpoints_in_it(trained, tmp_path, capsys):
    import eval as eval_cli
    from infiniattention.commands import generate

    capsys.readouterr()
    for call in (eval_cli.main, generate.main):
        line = one_error_line(capsys, call(["--checkpoint", str(trained)]))
        assert "is a folder, not a checkpoint file" in line
        assert f"{trained / 'best.pt'} (the best validation)" in line
        assert f"{trained / 'ckpt_00000006.pt'} (the newest)" in line
    line = one_error_line(capsys, eval_cli.main(["--checkpoint", str(tmp_path)]))
    assert "holds no checkpoint" in line


UNREADABLE = {
    "empty": (lambda good: b"", "the file is empty"),
    "text": (lambda good: b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\n",
             "a text file, not a checkpoint (it starts with 'version https://git-lfs"),
    "truncated": (lambda good: good[: len(good) // 2],
                  "a truncated or corrupt checkpoint (its zip archive has no end"),
    "pickle": (lambda good: b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}\x94.", "a Python pickle"),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_an_unreadable_checkpoint_says_what_the_file_is(case, trained, tmp_path, capsys):
    import eval as eval_cli

    content, words = UNREADABLE[case]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content((trained / "ckpt_00000003.pt").read_bytes()))
    capsys.readouterr()
    line = one_error_line(capsys, eval_cli.main(["--checkpoint", str(bad)]))
    assert f"checkpoint {bad} is unreadable: {words}" in line
    assert "Error" not in line.removeprefix("error: ")  # no exception names


def test_a_model_saved_whole_is_named_as_such(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="holding Python objects, not only tensors"):
        ckpt_io.load(tmp_path / "model.pt")
