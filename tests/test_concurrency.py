"""One writer per run folder, data that cannot change under a run, and prepares that never mix (issue #22).

Each test failed before the fix: two trainings in one folder both ran and interleaved their files, an
edited train.npy was trained on (and kept by getdata.sh) without a word, a resume on another dataset
was accepted, and concurrent prepares mixed one process's meta.json with another's splits.
Trainings are tiny and run in this process where they can (see test_faults.py); the other holder of a
lock is a real process, so that a kill -9 really ends it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_faults import CHAIN, Result, _data_copy, assert_one_line, cli, records, sub_env, train
from test_train_utils import REPO, prepared_data_dir, train_args

from data_utils import Corpus
from data_utils.fingerprint import PREPARED_FILES
from data_utils.locking import HolderLock
from data_utils.prepare import main as prepare_main
from infiniattention.training import checkpoint as ckpt_io
from infiniattention.training.runlock import LOCK_NAME

GETDATA = ["bash", str(REPO / "getdata.sh")]
SAMPLE = REPO / "data" / "samples" / "enwik6"


def hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding the lock `path` (no torch: it starts in a blink); kill it to end it."""
    code = ("import sys, time; from data_utils.locking import HolderLock; lock = HolderLock(sys.argv[1]); "
            "assert lock.try_acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, env=sub_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def permute(path: Path) -> None:
    """The edit of the issue: the same ids in another order (same dtype and length, so nothing else
    notices)."""
    ids = np.load(path)
    np.save(path, np.random.default_rng(0).permutation(ids))


# ------------------------------------------------------------------------------------------------
# One writer per run folder.


def test_holder_lock_names_its_holder_and_a_killed_holder_frees_it(tmp_path):
    path = tmp_path / "x.lock"
    holder = hold_lock(path)
    lock = HolderLock(path)
    assert not lock.try_acquire()
    assert lock.holder()["pid"] == holder.pid and lock.holder()["host"] == socket.gethostname()
    holder.kill()
    holder.wait()
    assert lock.try_acquire()  # the kernel dropped the killed holder's lock: no manual step
    assert lock.previous["pid"] == holder.pid  # its record stayed: it never released
    assert lock.holder()["pid"] == os.getpid()
    lock.release()
    assert path.read_text() == ""
    again = HolderLock(path)
    assert again.try_acquire() and again.previous is None  # a clean release leaves no record
    again.release()
    path.write_bytes(b"\xff\xfe not a record")  # damaged by hand: no record, and no error
    damaged = HolderLock(path)
    assert damaged.holder() is None and damaged.try_acquire() and damaged.previous is None
    damaged.release()


def test_a_second_training_is_refused_naming_the_holder_and_kill9_frees_the_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run / LOCK_NAME)
    try:
        res = train(run, **CHAIN)
        assert_one_line(res, 2, "in use by another training", f"PID {holder.pid}", socket.gethostname())
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    res = train(run, **CHAIN)
    assert res.rc == 0, res.err
    assert (run / LOCK_NAME).read_text() == ""  # released at the end
    assert len(records(run, "test")) == 1


def test_passkey_train_takes_the_same_lock(tmp_path):
    from test_passkey import _main, _train_args

    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run / LOCK_NAME)
    try:
        err = _capture(lambda: _main(_train_args(run, "--set", "train.max_steps=2")))
    finally:
        holder.kill()
        holder.wait()
    assert_one_line(err, 2, "in use by another training", f"PID {holder.pid}")
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]


def _capture(fn) -> Result:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fn()
    return Result(rc, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_two_trainings_started_together_one_trains_the_other_is_refused(tmp_path):
    """The issue's double-submitted job: both used to exit 0 with every metrics record twice."""
    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", *train_args(run, **{**CHAIN, "train.max_steps": 40})]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 2], [e[-2000:] for _, e in outs]
    (winner,) = [p for p in procs if p.returncode == 0]
    (refused,) = [Result(p.returncode, o, e) for p, (o, e) in zip(procs, outs, strict=True) if p.returncode]
    assert_one_line(refused, 2, "in use by another training", f"PID {winner.pid}")
    steps = [(r["kind"], r["step"]) for r in records(run)]
    assert len(steps) == len(set(steps)) and ("test", 40) in steps
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow
def test_kill9_of_the_lock_holder_then_the_same_command_resumes(tmp_path):
    run = tmp_path / "run"
    sets = {**CHAIN, "train.max_steps": 100000, "train.ckpt_interval": 2}
    proc = subprocess.Popen([sys.executable, "train.py", *train_args(run, **sets)], cwd=REPO, env=sub_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not ckpt_io.list_checkpoints(run) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the training ended before it was killed"
        refused = train(run, **{**sets, "train.max_steps": 3})
        assert_one_line(refused, 2, "in use by another training", f"PID {proc.pid}")
    finally:
        proc.kill()
        proc.wait()
    step = ckpt_io.step_of(ckpt_io.find_resumable(run)[0])
    res = train(run, **{**sets, "train.max_steps": step + 2})
    assert res.rc == 0, res.err
    assert f"resumed from {ckpt_io.ckpt_path(run, step)}" in res.out
    assert records(run, "test")[-1]["step"] == step + 2


@pytest.mark.slow
def test_under_torchrun_every_rank_is_refused_with_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = hold_lock(run / LOCK_NAME)
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "train.py", *train_args(run, **CHAIN)]
        proc = subprocess.run(cmd, cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    out = proc.stdout + proc.stderr
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 2, out[-3000:]
    assert all("in use by another training" in line and f"PID {holder.pid}" in line for line in errors)
    assert 'train.py", line' not in out and "infiniattention/" not in out  # no traceback of our code
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # no rank wrote anything


# ------------------------------------------------------------------------------------------------
# Prepares: locked, built beside the dataset, never mixed.


def test_a_prepare_waits_for_the_holder_of_the_dataset_lock(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    lock = HolderLock(data / ".enwik8-sample.lock")
    assert lock.try_acquire()
    proc = subprocess.Popen([*GETDATA, "enwik8-sample", "--data-dir", str(data)], stderr=subprocess.PIPE,
                            text=True)
    try:
        waiting = proc.stderr.readline()
        assert f"being prepared by PID {os.getpid()}" in waiting, waiting
        time.sleep(0.2)
        assert proc.poll() is None and not (data / "enwik8-sample").exists()
    finally:
        lock.release()
    assert proc.wait(timeout=120) == 0
    assert Corpus(data / "enwik8-sample").meta["tokens"]["train"] == 889_779


def test_sigterm_to_getdata_says_it_stopped_and_a_rerun_finishes(tmp_path):
    """SIGTERM while getdata.sh waits for another preparation: one line, exit 143; the same command run
    again afterwards prepares the dataset."""
    data = tmp_path / "data"
    data.mkdir()
    lock = HolderLock(data / ".enwik8-sample.lock")
    assert lock.try_acquire()
    cmd = ["bash", str(REPO / "getdata.sh"), "enwik8-sample", "--data-dir", str(data), "--no-progress"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PY": sys.executable})
    try:
        assert "being prepared by PID" in proc.stderr.readline()
        proc.send_signal(signal.SIGTERM)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 143
    finally:
        lock.release()
    assert err == ("[getdata] error: stopped by SIGTERM; nothing half-written was kept: run the same command "
                   "again to finish the preparation\n")
    assert subprocess.run(cmd, capture_output=True, env={**os.environ, "PY": sys.executable}).returncode == 0
    assert Corpus(data / "enwik8-sample").meta["tokens"]["train"] == 889_779


def test_three_concurrent_prepares_of_the_sample_all_succeed_with_one_result(tmp_path):
    data = tmp_path / "data"
    cmd = [*GETDATA, "enwik8-sample", "--data-dir", str(data)]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert sum("preparing protocol" in err for err in errs) == 1, errs  # the others waited, then found it
    _assert_consistent(data / "enwik8-sample")
    assert sorted(p.name for p in data.iterdir()) == [".enwik8-sample.lock", "enwik8-sample"]  # no build left


def test_concurrent_text_prepares_with_other_splits_never_mix(tmp_path):
    """The issue's case: meta.json from one process and train.npy from the other, in 3 of 3 tries."""
    data = tmp_path / "data"
    splits = ["0.8,0.1,0.1", "0.9,0.05,0.05"] * 2
    procs = [subprocess.Popen([*GETDATA, "text", "--input", str(SAMPLE), "--name", "mine", "--data-dir",
                               str(data), "--split", s], stderr=subprocess.PIPE, text=True) for s in splits]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    corpus = _assert_consistent(data / "mine")
    n = SAMPLE.stat().st_size
    assert len(corpus.train) == int(n * corpus.meta["fractions"][0])  # the split of the same process


def _assert_consistent(folder: Path) -> Corpus:
    """meta.json describes exactly the files beside it."""
    corpus = Corpus(folder)
    assert corpus.meta["tokens"] == {s: len(corpus.split(s)) for s in ("train", "valid", "test")}
    files = corpus.meta.get("files", {})
    assert {name: sha256(folder / name) for name in PREPARED_FILES} == {n: files[n]["sha256"] for n in files}
    return corpus


# ------------------------------------------------------------------------------------------------
# Data edits after prepare and after a checkpoint.


def test_getdata_prepares_again_a_dataset_edited_after_prepare(tmp_path, caplog):
    caplog.set_level("INFO", logger="data_utils")
    argv = ["enwik8-sample", "--data-dir", str(tmp_path / "data"), "--no-progress"]
    assert prepare_main(argv) == 0
    train_npy = tmp_path / "data" / "enwik8-sample" / "train.npy"
    good = sha256(train_npy)
    permute(train_npy)
    caplog.clear()
    assert prepare_main(argv) == 0
    assert "train.npy changed since it was prepared" in caplog.text and "preparing again" in caplog.text
    assert sha256(train_npy) == good
    caplog.clear()
    assert prepare_main(argv) == 0
    assert "nothing to do" in caplog.text


def test_meta_json_without_digests_still_loads_and_is_prepared_again(tmp_path, caplog):
    root = _data_copy(tmp_path)
    meta_path = root / "enwik8-sample" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]  # as an earlier version wrote it
    meta_path.write_text(json.dumps(meta))
    assert Corpus(root / "enwik8-sample").meta["tokens"]["train"] == 889_779
    assert train(tmp_path / "run", **{**CHAIN, "train.max_steps": 2, "data.data_dir": str(root)}).rc == 0
    caplog.set_level("INFO", logger="data_utils")
    assert prepare_main(["enwik8-sample", "--data-dir", str(root), "--no-progress"]) == 0
    assert "records no file digests" in caplog.text and "preparing again" in caplog.text
    assert "files" in json.loads(meta_path.read_text())


def test_a_fresh_training_on_data_edited_after_prepare_is_refused_unless_allowed(tmp_path):
    root = _data_copy(tmp_path)
    permute(root / "enwik8-sample" / "train.npy")
    sets = {**CHAIN, "train.max_steps": 3, "data.data_dir": str(root)}
    assert_one_line(train(tmp_path / "run", **sets), 2, "train.npy changed since it was prepared",
                    "getdata.sh enwik8-sample", "--allow-data-change")
    assert records(tmp_path / "run") == []
    res = train(tmp_path / "run", "--allow-data-change", **sets)
    assert res.rc == 0, res.err
    assert [r["step"] for r in records(tmp_path / "run", "data_change")] == [0]
    assert "--allow-data-change: " in (tmp_path / "run" / "train.log").read_text()


def test_a_resume_on_edited_data_is_refused_then_allowed_and_logged(tmp_path):
    import eval as eval_cli

    root = _data_copy(tmp_path)
    run = tmp_path / "run"
    sets = {**CHAIN, "data.data_dir": str(root)}
    assert train(run, **{**sets, "train.max_steps": 6}).rc == 0
    permute(root / "enwik8-sample" / "train.npy")
    before = snapshot(run)
    res = train(run, **{**sets, "train.max_steps": 9})
    line = assert_one_line(res, 2, "train.npy differs from the data", "ckpt_00000006.pt was trained on",
                           "--allow-data-change")
    after = snapshot(run)
    log = after.pop("train.log").decode()
    assert log.startswith(before.pop("train.log").decode()) and log.endswith(line + "\n")  # the error, kept
    assert after == before
    ckpt = str(run / "ckpt_00000006.pt")
    assert_one_line(cli(eval_cli.main, ["--checkpoint", ckpt, "--split", "train", "--max-tokens", "64"]), 2,
                    "train.npy differs", "--allow-data-change")
    assert cli(eval_cli.main, ["--checkpoint", ckpt, "--split", "test", "--max-tokens", "64"]).rc == 0
    res = train(run, "--allow-data-change", **{**sets, "train.max_steps": 9})
    assert res.rc == 0, res.err
    assert [r["step"] for r in records(run, "data_change")] == [6]
    assert "--allow-data-change: " in (run / "train.log").read_text()
    import train as train_cli

    resume = train_cli.resume_command(["--allow-data-change", "--run-dir", "r"])
    assert resume == "python train.py --run-dir r"  # the flag is not carried on to later resumes
    # the new checkpoints record the data as it is now: the next resume needs no flag
    assert train(run, **{**sets, "train.max_steps": 12}).rc == 0


def test_eval_split_on_edited_data_is_refused_unless_allowed(tmp_path):
    import eval as eval_cli

    root = _data_copy(tmp_path)
    run = tmp_path / "run"
    assert train(run, **{**CHAIN, "train.max_steps": 3, "data.data_dir": str(root)}).rc == 0
    permute(root / "enwik8-sample" / "test.npy")
    argv = ["--checkpoint", str(run / "ckpt_00000003.pt"), "--split", "test", "--max-tokens", "64"]
    assert_one_line(cli(eval_cli.main, argv), 2, "test.npy differs from the data", "--allow-data-change")
    out = tmp_path / "r.json"
    res = cli(eval_cli.main, [*argv, "--allow-data-change", "--out", str(out)])
    assert res.rc == 0, res.err
    assert "test.npy" in json.loads(out.read_text())["data_changed"]


def test_a_resume_on_another_dataset_is_refused(tmp_path):
    root = _data_copy(tmp_path)
    shutil.copytree(root / "enwik8-sample", root / "other")  # same vocabulary and length
    run = tmp_path / "run"
    sets = {**CHAIN, "data.data_dir": str(root)}
    assert train(run, **{**sets, "train.max_steps": 3}).rc == 0
    res = train(run, **{**sets, "train.max_steps": 6, "data.dataset": "other"})
    assert_one_line(res, 2, "trained on dataset 'enwik8-sample'", "--set data.dataset=enwik8-sample")


def test_an_old_checkpoint_without_digests_resumes_with_a_note(tmp_path):
    run = tmp_path / "run"
    assert train(run, **{**CHAIN, "train.max_steps": 3}).rc == 0
    path = run / "ckpt_00000003.pt"
    old = torch.load(path, weights_only=True)
    del old["data_files"]  # as an earlier version wrote it
    ckpt_io.save_atomic(old, path)
    res = train(run, **{**CHAIN, "train.max_steps": 5})
    assert res.rc == 0, res.err
    assert "records no digests of its data" in (run / "train.log").read_text()
    assert set(ckpt_io.load(run / "ckpt_00000005.pt")["data_files"]) == set(PREPARED_FILES)


def test_an_unchanged_file_is_not_read_again(tmp_path, monkeypatch):
    """The cost of the check: a file whose stat signature was recorded with its digest is not hashed."""
    import data_utils.fingerprint as fp

    corpus = Corpus(Path(prepared_data_dir()) / "enwik8-sample")
    read = []
    monkeypatch.setattr(fp, "file_digests", lambda path, algorithms: read.append(path) or {"sha256": "x"})
    corpus.fingerprint()
    assert read == []  # meta.json's records hold
    copy = _data_copy(tmp_path) / "enwik8-sample"
    Corpus(copy).fingerprint()
    assert sorted(p.name for p in read) == sorted(PREPARED_FILES)  # a copy: new inodes, read once
