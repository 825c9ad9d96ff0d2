"""The run folder's life (infiniattention/training/runfolder.py) on hand-made checkpoint files: which
checkpoint a start continues from, what is moved aside, a finished run, the data check, writes and
rotation. The trainings that exercise it end to end are in test_faults.py and test_concurrency.py."""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from test_train_utils import prepared_data_dir

from data_utils.corpus import DataError, get_corpus
from infiniattention.training import checkpoint as ckpt_io
from infiniattention.training.distributed import DistEnv
from infiniattention.training.errors import DiskFullError, UserError
from infiniattention.training.runfolder import RunFolder, read_metrics, truncate_metrics

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def folder(path: Path) -> RunFolder:
    path.mkdir(exist_ok=True)
    return RunFolder(path, ENV, logging.getLogger("test_runfolder"))


def fake_ckpt(step: int, run_id: str = "run-a", **extra) -> dict:
    """The keys a loader requires, tiny weights and a run id."""
    return {"format_version": ckpt_io.FORMAT_VERSION, "run_id": run_id, "step": step,
            "model": {"w": torch.full((3,), float(step))}, "config": {"model": {}}, "vocab_digest": "v",
            **extra}


def write(run: Path, name: str, step: int, run_id: str = "run-a") -> Path:
    ckpt_io.save_atomic(fake_ckpt(step, run_id), run / name)
    return run / name


def moved(run: Path, label: str) -> list[str]:
    return sorted(p.name for d in run.glob(f"{label}-*") for p in d.iterdir())


def test_auto_selects_the_newest_readable_and_moves_newer_unreadable_ones_aside(tmp_path):
    rf = folder(tmp_path / "run")
    write(rf.path, "ckpt_00000003.pt", 3)
    newest = write(rf.path, "ckpt_00000006.pt", 6)
    newest.write_bytes(newest.read_bytes()[:200])  # truncated
    path, ckpt = rf.select("auto", overwrite=False)
    assert path.name == "ckpt_00000003.pt" and ckpt["step"] == 3
    assert moved(rf.path, "unreadable") == ["ckpt_00000006.pt"]


def test_auto_without_a_readable_checkpoint_starts_afresh_with_everything_moved_aside(tmp_path):
    rf = folder(tmp_path / "run")
    (rf.path / "ckpt_00000002.pt").write_text("not a checkpoint")
    write(rf.path, ckpt_io.BEST, 2)
    assert rf.select("auto", overwrite=False) is None
    assert moved(rf.path, "unreadable") == ["ckpt_00000002.pt"]
    assert moved(rf.path, "previous") == [ckpt_io.BEST]  # a best.pt of no run being continued


def test_never_in_a_used_folder_is_refused_and_overwrite_moves_the_files_aside(tmp_path):
    rf = folder(tmp_path / "run")
    write(rf.path, "ckpt_00000003.pt", 3)
    (rf.path / "metrics.jsonl").write_text("{}\n")
    (rf.path / "train.log").write_text("kept\n")
    with pytest.raises(UserError, match="ckpt_00000003.pt.*--overwrite"):
        rf.select("never", overwrite=False)
    assert (rf.path / "ckpt_00000003.pt").is_file()
    assert rf.select("never", overwrite=True) is None
    assert moved(rf.path, "previous") == ["ckpt_00000003.pt", "metrics.jsonl"]
    assert (rf.path / "train.log").read_text() == "kept\n"  # appended to, never moved


def test_set_aside_keeps_only_the_history_being_continued(tmp_path):
    rf = folder(tmp_path / "run")
    keep = write(rf.path, "ckpt_00000004.pt", 4)
    write(rf.path, "ckpt_00000002.pt", 2)
    write(rf.path, "ckpt_00000003.pt", 3, run_id="run-b")  # another run
    write(rf.path, "ckpt_00000008.pt", 8)  # a later step: not of the history being continued
    write(rf.path, ckpt_io.BEST, 4, run_id="run-b")
    rf.set_aside("run-a", 4, keep=keep)
    kept = sorted(p.name for p in ckpt_io.list_checkpoints(rf.path))
    assert kept == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert moved(rf.path, "previous") == [ckpt_io.BEST, "ckpt_00000003.pt", "ckpt_00000008.pt"]


def test_a_refused_checkpoint_under_auto_says_how_to_keep_the_run(tmp_path):
    rf = folder(tmp_path / "run")

    def other_architecture(ckpt, path):
        raise ckpt_io.CheckpointError(f"{path} was trained with another architecture")

    with pytest.raises(ckpt_io.CheckpointError, match="another architecture.*--run-dir.*--overwrite"):
        rf.check_compatible(fake_ckpt(1), rf.path / "x.pt", "auto", other_architecture)
    with pytest.raises(ckpt_io.CheckpointError) as err:
        rf.check_compatible(fake_ckpt(1), rf.path / "x.pt", "x.pt", other_architecture)
    assert "--overwrite" not in str(err.value)


def test_finished_needs_the_test_record_of_the_newest_checkpoint(tmp_path):
    rf = folder(tmp_path / "run")
    write(rf.path, "ckpt_00000006.pt", 6)
    args = dict(resume="auto", overwrite=False, max_steps=6, dataset="d", check=lambda c, p: None)
    assert rf.finished(**args) is None  # no test result yet
    test = {"kind": "test", "step": 6, "loss": 1.0, "bpc": 1.44, "tokens": 10}
    (rf.path / "metrics.jsonl").write_text(json.dumps(test) + "\n")
    assert rf.finished(**args) == {"step": 6, "test": test}
    assert rf.finished(**{**args, "max_steps": 7}) is None
    assert rf.finished(**{**args, "overwrite": True}) is None

    def refuse(ckpt, path):
        raise ckpt_io.CheckpointError("another architecture")

    assert rf.finished(**{**args, "check": refuse}) is None


def test_write_rotates_and_names_the_last_good_checkpoint(tmp_path):
    rf = folder(tmp_path / "run")
    assert rf.last_good_text() == "no good checkpoint of this run was written yet"
    for step in (1, 2, 3):
        rf.write(fake_ckpt(step), [ckpt_io.ckpt_path(rf.path, step).name], keep_last=2)
    rf.write(fake_ckpt(3), [ckpt_io.BEST], keep_last=2)
    assert sorted(p.name for p in rf.path.iterdir()) == [ckpt_io.BEST, "ckpt_00000002.pt", "ckpt_00000003.pt"]
    assert rf.last_good_text() == f"the last good checkpoint is {rf.path / 'ckpt_00000003.pt'}"


def test_a_full_disk_names_the_intact_previous_checkpoint(tmp_path, monkeypatch):
    rf = folder(tmp_path / "run")
    rf.write(fake_ckpt(1), ["ckpt_00000001.pt"], keep_last=2)

    def full(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ckpt_io, "save_atomic", full)
    with pytest.raises(DiskFullError, match="ckpt_00000002.pt.*last good checkpoint is .*ckpt_00000001.pt"):
        rf.write(fake_ckpt(2), ["ckpt_00000002.pt"], keep_last=2)


def test_check_data_refuses_an_edited_file_unless_allowed(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(Path(prepared_data_dir()) / "enwik8-sample", root / "enwik8-sample")
    rf = folder(tmp_path / "run")
    corpus = get_corpus(str(root), "enwik8-sample")
    files, change = rf.check_data(corpus, None, None, allow_change=False)
    assert change is None and set(files) >= {"train.npy", "valid.npy", "test.npy"}
    ckpt = fake_ckpt(3, dataset="enwik8-sample", data_files=files)
    assert rf.check_data(corpus, ckpt, rf.path / "ckpt_00000003.pt", allow_change=False)[1] is None
    with open(root / "enwik8-sample" / "valid.npy", "r+b") as f:  # one byte of the data
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    corpus = get_corpus(str(root), "enwik8-sample")
    with pytest.raises(DataError, match="valid.npy differs from the data .* was trained on"):
        rf.check_data(corpus, ckpt, rf.path / "ckpt_00000003.pt", allow_change=False)
    _, change = rf.check_data(corpus, ckpt, rf.path / "ckpt_00000003.pt", allow_change=True)
    assert "valid.npy differs" in change


def test_truncate_metrics_keeps_one_clean_history(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"kind": "train", "step": s}) for s in (1, 2, 3, 4)] + ['{"kind": "tra']
    path.write_text("\n".join(lines))
    assert truncate_metrics(path, 2) == 3  # steps 3, 4 and the half-written line
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert truncate_metrics(tmp_path / "none.jsonl", 2) == 0 and read_metrics(tmp_path / "none.jsonl") == []


def test_names_stay_importable_from_the_trainer():
    from infiniattention.training import Trainer, TrainingError, trainer

    assert trainer.read_metrics is read_metrics and trainer.truncate_metrics is truncate_metrics
    assert trainer.Trainer is Trainer and trainer.TrainingError is TrainingError
    assert callable(Trainer.save_checkpoint)


# ------------------------------------------------------------------------------------------------
# A best.pt newer than the resume point (kill -9 between writing best.pt and the checkpoint).

BEST_RUN = {"train.max_steps": 4, "train.eval_interval": 2, "train.ckpt_interval": 3, "train.keep_last": 3}


@pytest.fixture(scope="module")
def killed_after_best(tmp_path_factory):
    """A run as a kill -9 right after best.pt of step 4 leaves it: the newest checkpoint is step 3."""
    from test_train_utils import run_train

    run = tmp_path_factory.mktemp("best") / "run"
    assert run_train(run, **BEST_RUN) == 0
    assert ckpt_io.read_header(run / ckpt_io.BEST)["step"] == 4
    (run / "ckpt_00000004.pt").unlink()
    return run


def test_a_newer_best_pt_is_kept_when_the_resumed_run_writes_it_again(killed_after_best, tmp_path):
    """An exact resume replays the validation of step 4 and rewrites best.pt: nothing is set aside."""
    from test_train_utils import run_train

    run = tmp_path / "run"
    shutil.copytree(killed_after_best, run)
    before = torch.load(run / ckpt_io.BEST, weights_only=True)["model"]
    assert run_train(run, **BEST_RUN) == 0
    assert not list(run.glob("previous-*"))
    after = torch.load(run / ckpt_io.BEST, weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_newer_best_pt_is_moved_aside_when_the_resumed_run_passes_its_step(killed_after_best, tmp_path):
    """A continuation that stops before step 4 (here: max_steps 3) must not report best.pt of step 4,
    a history it did not follow, as its test result; the file is moved aside, not deleted."""
    from test_train_utils import run_train, train_records

    run = tmp_path / "run"
    shutil.copytree(killed_after_best, run)
    assert run_train(run, **{**BEST_RUN, "train.max_steps": 3}) == 0
    test = train_records(run, "test")[-1]
    assert test["step"] == 3 and test["weights"] == "final" and "best_step" not in test
    assert [ckpt_io.read_header(p)["step"] for p in run.glob("previous-*/best.pt")] == [4]
    assert "moved best.pt of step 4 into" in (run / "train.log").read_text()


# ------------------------------------------------------------------------------------------------
# A finished run in a read-only folder (a read-only filesystem, an archive).


def _chmod_tree(root: Path, file_mode: int, dir_mode: int) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(dir_mode if p.is_dir() else file_mode)


def test_a_finished_run_in_a_read_only_folder_prints_its_result(tmp_path, capsys):
    """Refused as "not writable" before; printing the result needs no write. Training there stays refused
    in one line."""
    from test_train_utils import train_args

    import train

    run = tmp_path / "run"
    argv = train_args(run, **{"train.max_steps": 3, "train.eval_interval": 3})
    assert train.main(argv) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    _chmod_tree(run, 0o444, 0o555)
    try:
        assert train.main(argv) == 0
        out, err = capsys.readouterr()
        assert "is finished (step 3): test bpc" in out and err == ""
        argv6 = train_args(run, **{"train.max_steps": 6, "train.eval_interval": 3})
        assert train.main(argv6) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "is not writable: make it writable or use another --run-dir" in err
    finally:
        _chmod_tree(run, 0o644, 0o755)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
