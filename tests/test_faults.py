"""The fault suite: kill -9, signals, a full disk, corrupt files and a seeded fuzz of configs.

Every defect of issue #11 has a test here (or in the module's own test file) that failed before the
fix. Trainings are tiny; most run in this process through the same `main` the scripts use (importing
torch costs ~2 s per subprocess), and a few real subprocesses prove the command-line wrapper.
Faults are injected with INFINI_FAULT (infiniattention/training/faults.py) or by monkeypatching.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_utils import REPO, prepared_data_dir, subprocess_env, train_args

from infiniattention.training import checkpoint as ckpt_io
from infiniattention.training import faults
from infiniattention.training.runlock import LOCK_NAME

# ------------------------------------------------------------------------------------------------
# Helpers.


@dataclass
class Result:
    rc: int
    out: str
    err: str


def cli(main, argv: list[str]) -> Result:
    """A script's `main(argv)` in this process, with stdout/stderr captured (SystemExit -> its code)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse --help; a usage error must not get here
            rc = exc.code if isinstance(exc.code, int) else 1
    return Result(rc, out.getvalue(), err.getvalue())


def assert_one_line(res: Result, code: int = 2, *needles: str) -> str:
    """Exit status `code`, exactly one `error:` line on stderr, no traceback; returns the line."""
    lines = res.err.strip().splitlines()
    assert res.rc == code, (res.rc, res.err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err[-2000:]
    assert "Traceback" not in res.err + res.out
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def train(run_dir: Path, *extra_args: str, **sets: object) -> Result:
    import train as train_cli

    faults.reset()
    return cli(train_cli.main, [*train_args(run_dir, **sets), *extra_args])


def records(run_dir: Path, kind: str | None = None) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if kind is None or r["kind"] == kind]


def history(run_dir: Path) -> list[tuple]:
    """Every logged number that must not depend on interruptions (times and speeds excluded)."""
    keep = ("loss", "bpc", "grad_norm", "lr", "tokens_seen", "skipped", "tokens", "best", "best_step")
    return [(r["kind"], r["step"], tuple(r.get(k) for k in keep)) for r in records(run_dir)]


def flat_tensors(obj, prefix="") -> dict[str, torch.Tensor]:
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flat_tensors(v, f"{prefix}.{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flat_tensors(v, f"{prefix}[{i}]"))
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Bitwise: final weights, optimizer, memory, best.pt weights and every logged number."""
    ca, cb = (ckpt_io.load(ckpt_io.list_checkpoints(r)[0]) for r in (a, b))
    assert ca["step"] == cb["step"]
    for key in ("model", "optimizer", "memory", "log_window"):
        ta, tb = flat_tensors(ca[key]), flat_tensors(cb[key])
        assert ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) for k in ta), key
        if key == "log_window":
            assert ca[key] == cb[key]
    ba, bb = (ckpt_io.load(r / "best.pt")["model"] for r in (a, b))
    assert all(torch.equal(ba[k], bb[k]) for k in ba)
    ha, hb = history(a), history(b)
    assert ha == hb
    steps = [(k, s) for k, s, _ in ha]
    assert len(steps) == len(set(steps)), "a step is logged twice"


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files of interrupted writes, and sub-folders of moved-aside files (the run folder's lock
    file stays: it is how one writer at a time is enforced)."""
    return sorted(p.name for p in Path(run_dir).iterdir() if p.name != LOCK_NAME
                  and (ckpt_io.TMP_RE.match(p.name) or p.name.startswith(".") or p.is_dir()))


# A run of 12 steps that logs every 2, validates every 4 and checkpoints every 3 (keep 2): kills fall
# between logs, validations and checkpoints alike, and windows straddle checkpoints.
CHAIN = {"train.max_steps": 12, "train.log_interval": 2, "train.eval_interval": 4,
         "train.ckpt_interval": 3, "train.keep_last": 2}


def sub_env(fault: str | None = None) -> dict[str, str]:
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = "1"  # bitwise equality needs the same threads in every process
    env.pop(faults.ENV, None)
    if fault:
        env[faults.ENV] = fault
    return env


class Forker:
    """tests/fork_runner.py: one real process per run, forked from a warm interpreter."""

    def __init__(self, logs: Path) -> None:
        self.logs, self.n = logs, 0
        logs.mkdir()
        self.proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "fork_runner.py")], cwd=REPO,
                                     env=sub_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def train(self, run_dir: Path, fault: str | None = None, warmup: bool = False, **sets) -> tuple[int, str]:
        """(exit status, output) of one run of the 60-step chain (so that 24 kills fit before its end)."""
        self.n += 1
        log = self.logs / f"{self.n}.log"
        argv = train_args(run_dir, **{**CHAIN, "train.max_steps": 60, **sets})
        request = {"argv": argv, "env": sub_env(fault), "log": str(log), "warmup": warmup}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the fork runner died"
        return json.loads(reply)["rc"], log.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# ------------------------------------------------------------------------------------------------
# kill -9 at 24 points of one run (several kills in a row, during checkpoint and best.pt writes).

KILL_POINTS = [
    "step:1", "log:1", "written.ckpt:1", "step:4", "write.best:1", "eval:1", "renamed.best:1",
    "write.ckpt:1", "tb:3", "renamed.ckpt:1", "rotated:1", "written.best:1", "step:2", "log:2",
    "write.ckpt:2", "eval:2", "renamed.ckpt:2", "tb:5", "written.ckpt:2", "step:3", "rotated:2",
    "write.best:2", "log:3", "renamed.best:2",
]


@pytest.mark.slow
def test_kill9_at_24_points_resumes_bitwise(tmp_path):
    forker = Forker(tmp_path / "logs")
    try:
        assert forker.train(tmp_path / "warmup", warmup=True, **{"train.max_steps": 2})[0] == 0
        straight = tmp_path / "straight"
        rc, out = forker.train(straight)
        assert rc == 0, out[-3000:]
        run = tmp_path / "killed"
        resumed_from = []
        for point in KILL_POINTS:
            rc, out = forker.train(run, f"{point}:kill")
            assert rc == -signal.SIGKILL, (point, rc, out[-3000:])
            found = ckpt_io.find_resumable(run)
            resumed_from.append(found[1]["step"] if found else 0)
        rc, out = forker.train(run)
        assert rc == 0, out[-3000:]
        assert "Traceback" not in out
    finally:
        forker.close()
    assert len(set(KILL_POINTS)) == 24 and len(set(resumed_from)) >= 8, resumed_from  # kills all along
    print("kill chain resumed from steps:", resumed_from)
    assert_same_run(straight, run)
    assert leftovers(run) == []  # the temporaries of killed writes were cleaned on the next start
    assert len(ckpt_io.list_checkpoints(run)) <= CHAIN["train.keep_last"]


# ------------------------------------------------------------------------------------------------
# SIGTERM / SIGINT: at a step, during validation, during checkpoint and best.pt writes.


@pytest.fixture(scope="module")
def straight_inproc(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight") / "run"
    res = train(run, **CHAIN)
    assert res.rc == 0, res.err
    return run


@pytest.fixture
def default_sighup():
    """SIGHUP at its default disposition during the test, whatever this process inherited (`nohup`)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.mark.parametrize("fault", ["step:5:term", "eval:1:term", "write.ckpt:1:term", "written.best:2:int",
                                   "step:7:int", "write.best:1:int", "step:5:hup", "write.ckpt:1:hup"])
@pytest.mark.usefixtures("default_sighup")
def test_signal_stops_cleanly_and_resumes_bitwise(fault, straight_inproc, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, fault)
    res = train(run, **CHAIN)
    assert res.rc == 0 and "stopped by signal" in res.out, (res.err, res.out[-1500:])
    stopped = ckpt_io.list_checkpoints(run)[0]
    assert ckpt_io.step_of(stopped) < CHAIN["train.max_steps"]
    monkeypatch.delenv(faults.ENV)
    assert train(run, **CHAIN).rc == 0
    assert_same_run(straight_inproc, run)
    assert leftovers(run) == []


@pytest.mark.parametrize("point", ["step:3", "write.ckpt:1", "write.best:1"])
def test_second_ctrl_c_is_one_line_and_130(point, tmp_path, monkeypatch):
    """Also inside a checkpoint write (torch.save used to turn the KeyboardInterrupt into a RuntimeError
    traceback); the half-written temporary is removed and the previous checkpoint stays."""
    monkeypatch.setenv(faults.ENV, f"{point}:int,{point}:int")
    res = train(tmp_path / "run", **CHAIN)
    assert_one_line(res, 130, "interrupted")
    assert leftovers(tmp_path / "run") == []
    for path in ckpt_io.list_checkpoints(tmp_path / "run"):
        assert ckpt_io.load(path)["step"] == ckpt_io.step_of(path)


def test_ctrl_c_during_startup_is_one_line_and_130(tmp_path, monkeypatch):
    import infiniattention.training.trainer as trainer_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "get_corpus", interrupted)
    assert_one_line(train(tmp_path / "run", **CHAIN), 130, "interrupted")


@pytest.mark.slow
def test_double_sigint_subprocess_is_one_line(tmp_path):
    """The real script: two Ctrl-C while training give one line and 130 (a traceback before)."""
    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", *train_args(run, **{**CHAIN, "train.max_steps": 100000})]
    proc = subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(records(run)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # the step (and its checkpoint) finished between the two signals
        pytest.skip("the first Ctrl-C completed before the second arrived")
    assert_one_line(Result(proc.returncode, out, err), 130, "interrupted")
    assert leftovers(run) == []


# ------------------------------------------------------------------------------------------------
# A full disk: during a checkpoint write (injected and a real RLIMIT_FSIZE) and during logging.


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, straight_inproc):
    run = tmp_path / "run"
    monkeypatch.setenv(faults.ENV, "write.ckpt:2:enospc")
    res = train(run, **CHAIN)
    assert_one_line(res, 1, "no space left on device", "ckpt_00000006.pt", "last good checkpoint is",
                    "ckpt_00000003.pt")
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["ckpt_00000003.pt"]
    assert ckpt_io.load(run / "ckpt_00000003.pt")["step"] == 3
    assert leftovers(run) == []
    monkeypatch.delenv(faults.ENV)
    assert train(run, **CHAIN).rc == 0  # free space, rerun: the same result as never interrupted
    assert_same_run(straight_inproc, run)


@pytest.mark.parametrize("fault", ["tb:3:enospc", "log:2:enospc"])
def test_disk_full_while_logging_is_one_line(tmp_path, monkeypatch, fault):
    monkeypatch.setenv(faults.ENV, fault)
    assert_one_line(train(tmp_path / "run", **CHAIN), 1, "no space left on device")


@pytest.mark.slow
def test_real_file_size_limit_during_checkpoint(tmp_path):
    """A real failed write (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) in a real subprocess."""
    run = tmp_path / "run"

    def limit():  # python ignores SIGXFSZ, so the write fails with an OSError instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    cmd = [sys.executable, "train.py", *train_args(run, **CHAIN)]
    proc = subprocess.run(cmd, cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert_one_line(Result(proc.returncode, proc.stdout, proc.stderr), 1, "no space left on device",
                    "ckpt_00000003.pt", "no good checkpoint")
    assert ckpt_io.list_checkpoints(run) == [] and leftovers(run) == []


@pytest.mark.slow
def test_real_file_size_limit_while_logging(tmp_path):
    """The limit hit by metrics.jsonl or the TensorBoard file (no checkpoint is due): one line, exit 1."""
    run = tmp_path / "run"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (6_000, 6_000))

    sets = {**CHAIN, "train.max_steps": 200, "train.log_interval": 1, "train.ckpt_interval": 0,
            "train.eval_interval": 0}
    cmd = [sys.executable, "train.py", *train_args(run, **sets)]
    proc = subprocess.run(cmd, cwd=REPO, env=sub_env(), capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)
    assert_one_line(Result(proc.returncode, proc.stdout, proc.stderr), 1, "no space left on device")
    assert leftovers(run) == []


# ------------------------------------------------------------------------------------------------
# Defect 1: rotation, --resume never in a used folder, run ids.


def test_resume_never_in_used_folder_is_refused_then_overwrite_moves_aside(tmp_path):
    run = tmp_path / "run"
    assert train(run, **{**CHAIN, "train.max_steps": 6}).rc == 0
    before = sorted(p.name for p in run.iterdir())
    assert_one_line(train(run, "--resume", "never", **CHAIN), 2, "--overwrite", "ckpt_00000006.pt")
    assert sorted(p.name for p in run.iterdir()) == before
    res = train(run, "--resume", "never", "--overwrite", **{**CHAIN, "train.max_steps": 4, "train.seed": 7})
    assert res.rc == 0, res.err
    moved = [p for p in run.iterdir() if p.name.startswith("previous-")]
    assert len(moved) == 1
    assert {"ckpt_00000006.pt", "best.pt", "metrics.jsonl"} <= {p.name for p in moved[0].iterdir()}
    new = ckpt_io.load(run / "ckpt_00000004.pt")
    assert ckpt_io.load(run / "best.pt")["run_id"] == new["run_id"]
    assert new["run_id"] != ckpt_io.load(moved[0] / "ckpt_00000006.pt")["run_id"]


def test_rotation_never_deletes_the_checkpoint_just_written(tmp_path):
    """Higher-numbered unreadable checkpoints (and checkpoints of another run) outranked the new ones,
    and rotation deleted what the run had just written."""
    run = tmp_path / "run"
    run.mkdir()
    for step in (55, 60):
        (run / f"ckpt_{step:08d}.pt").write_bytes(os.urandom(3000))
    res = train(run, **{**CHAIN, "train.max_steps": 6, "train.keep_last": 1, "train.eval_interval": 0})
    assert res.rc == 0, res.err
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["ckpt_00000006.pt"]
    aside = [p for p in run.iterdir() if p.name.startswith("unreadable-")]
    assert len(aside) == 1 and len(list(aside[0].iterdir())) == 2  # kept, never deleted


def test_rotate_deletes_only_older_checkpoints_of_this_run(tmp_path):
    def write(step, run_id):
        ckpt_io.save_atomic({"run_id": run_id, "x": torch.ones(2)}, ckpt_io.ckpt_path(tmp_path, step))

    for step in (1, 2, 3):
        write(step, "mine")
    write(4, "other")
    write(9, "mine")  # later than the one just written (a resume from an older checkpoint)
    deleted = ckpt_io.rotate(tmp_path, 2, "mine", newest=3)
    assert [p.name for p in deleted] == ["ckpt_00000001.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt_00000002.pt", "ckpt_00000003.pt", "ckpt_00000004.pt", "ckpt_00000009.pt"]


def test_best_pt_of_another_run_is_never_used(tmp_path):
    """best.pt and ckpt_* must come from one run: a foreign best.pt is moved aside, not tested."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(a, **{**CHAIN, "train.max_steps": 6}).rc == 0
    assert train(b, **{**CHAIN, "train.max_steps": 6, "train.seed": 5}).rc == 0
    shutil.copy(b / "best.pt", a / "best.pt")
    res = train(a, **{**CHAIN, "train.max_steps": 7, "train.eval_interval": 0})
    assert res.rc == 0, res.err
    test = records(a, "test")[-1]
    run_id = ckpt_io.load(a / "ckpt_00000007.pt")["run_id"]
    assert ckpt_io.load(a / "best.pt")["run_id"] == run_id
    assert test["best_step"] == 7 or test["weights"] == "final"
    moved = [p for p in a.iterdir() if p.name.startswith("previous-")]
    assert len(moved) == 1 and (moved[0] / "best.pt").is_file()


# ------------------------------------------------------------------------------------------------
# Defect 2: non-finite values never checkpointed, never called good; non-finite results fail.


@pytest.mark.parametrize("bad", ["optim.eps=0", "optim.lr=.inf", "optim.lr=.nan", "optim.lr=0",
                                 "optim.clip=.inf", "model.init_std=-0.02", "model.init_std=0",
                                 "optim.beta1=1",
                                 "optim.beta2=-0.1", "model.dropout=.nan", "optim.weight_decay=-1"])
def test_config_rejects_values_that_make_no_sense(bad, tmp_path):
    res = train(tmp_path / "run", "--set", bad, **CHAIN)
    assert_one_line(res, 2, bad.split("=")[0])
    assert not (tmp_path / "run").exists() or ckpt_io.list_checkpoints(tmp_path / "run") == []


def test_nan_weights_are_never_checkpointed_and_last_good_is_finite(tmp_path, monkeypatch):
    """Weights turn NaN at step 5 while the loss is still finite: the checkpoint of step 6 is refused
    and the error names ckpt_3, the last finite one."""
    from infiniattention.training.trainer import Trainer

    original = Trainer.train_step

    def poisoned(self, x, y):
        out = original(self, x, y)
        if self.step == 4:  # 0-based: the 5th step
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    run = tmp_path / "run"
    res = train(run, **{**CHAIN, "train.eval_interval": 0, "train.max_bad_steps": 100})
    assert_one_line(res, 1, "non-finite", "ckpt_00000003.pt")
    for path in ckpt_io.list_checkpoints(run):
        assert ckpt_io.all_finite(ckpt_io.load(path)) == [], path
    assert [p.name for p in ckpt_io.list_checkpoints(run)] == ["ckpt_00000003.pt"]


def test_bad_step_streak_names_a_finite_checkpoint(tmp_path, monkeypatch):
    from infiniattention.training.trainer import NAN_STEPS_ENV

    monkeypatch.setenv(NAN_STEPS_ENV, "4,5,6,7,8,9")
    run = tmp_path / "run"
    res = train(run, **{**CHAIN, "train.max_bad_steps": 2, "train.eval_interval": 0})
    line = assert_one_line(res, 1, "consecutive non-finite steps", "the last good checkpoint is")
    named = Path(line.split("the last good checkpoint is ")[1].split(". ")[0])
    assert ckpt_io.all_finite(ckpt_io.load(named)) == []


def test_non_finite_final_metrics_exit_non_zero(tmp_path, monkeypatch):
    from infiniattention.training.evaluate import EvalResult
    from infiniattention.training.trainer import Trainer

    def nan_eval(self, split, max_tokens):
        return EvalResult(nll=float("nan"), tokens=8, batch_size=1, tgt_len=8)

    monkeypatch.setattr(Trainer, "_eval", nan_eval)
    assert_one_line(train(tmp_path / "run", **{**CHAIN, "train.max_steps": 3}), 1, "loss is nan")


# ------------------------------------------------------------------------------------------------
# Defect 3: one clear line for ordinary mistakes.


YAML_CASES = {
    "syntax": (b"model:\n  n_layer: [1,\n", "line"),
    "python tag": (b"model: !!python/object/apply:os.system ['true']\n", "unsupported YAML tag"),
    "section not a mapping": (b"model: 5\n", "must be a mapping"),
    "top level list": (b"- model\n- data\n", "mapping of sections"),
    "non-utf8": (b"model:\n  n_layer: \xff\xfe\n", "not UTF-8"),
    "set as a key": (b"model: {[1]: 2}\n", "config"),
    "key given twice": (b"data:\n  batch_size: 16\n  tgt_len: 8\n  batch_size: 8\n", "on lines 2 and 4"),
    "section given twice": (b"model:\n  n_layer: 1\ndata:\n  tgt_len: 8\nmodel:\n  d_model: 16\n",
                            "on lines 1 and 5"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_yaml_is_one_line_naming_the_file(case, tmp_path):
    text, needle = YAML_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    res = train(tmp_path / "run", "--config", str(path), **CHAIN)
    assert_one_line(res, 2, needle, "bad.yaml" if case != "set as a key" else "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_one_line_everywhere(tmp_path, trained_ckpt):
    import generate_script

    import eval as eval_cli

    assert_one_line(train(tmp_path / "run", **{**CHAIN, "train.device": "cuda"}), 2, "CUDA")
    assert_one_line(cli(eval_cli.main, ["--checkpoint", str(trained_ckpt), "--device", "cuda"]), 2, "CUDA")
    assert_one_line(cli(generate_script.main, ["--checkpoint", str(trained_ckpt), "--device", "cuda"]), 2,
                    "CUDA")


@pytest.fixture(scope="module")
def trained_ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    assert train(run, **{**CHAIN, "train.max_steps": 3, "model.dropout": 0.0}).rc == 0
    return run / "ckpt_00000003.pt"


@pytest.fixture(autouse=True)
def _generate_module():
    """scripts/generate.py importable as `generate_script` (scripts/ is not a package)."""
    if "generate_script" not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location("generate_script", REPO / "scripts" / "generate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["generate_script"] = module


def _data_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(Path(prepared_data_dir()) / "enwik8-sample", root / "enwik8-sample")
    return root


CORRUPT_DATA = {
    "id too large": ("train.npy", lambda p: np.save(p, np.full(5000, 250, dtype=np.uint8)), "token ids in"),
    "negative id": ("train.npy", lambda p: np.save(p, np.arange(-3, 4997, dtype=np.int32)), "token ids in"),
    "float ids": ("train.npy", lambda p: np.save(p, np.linspace(0, 9, 5000)), "float64"),
    "2-d ids": ("valid.npy", lambda p: np.save(p, np.zeros((50, 50), dtype=np.uint8)), "1-D integer"),
    "truncated npy": ("test.npy", lambda p: p.write_bytes(p.read_bytes()[:40]), "unreadable"),
    "vocab not json": ("vocab.json", lambda p: p.write_text("{kind: byte"), "vocab.json is malformed"),
    "vocab wrong kind": ("vocab.json", lambda p: p.write_text('{"kind": "x", "symbols": []}'), "vocab.json"),
    "vocab a list": ("vocab.json", lambda p: p.write_text("[1, 2]"), "vocab.json is malformed"),
    "meta not json": ("meta.json", lambda p: p.write_bytes(b"\xff\x00"), "meta.json is malformed"),
    "meta a string": ("meta.json", lambda p: p.write_text('"x"'), "meta.json is malformed"),
    "vocab missing": ("vocab.json", lambda p: p.unlink(), "vocab.json is missing"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT_DATA))
def test_corrupt_prepared_data_is_one_line(case, tmp_path):
    name, damage, needle = CORRUPT_DATA[case]
    root = _data_copy(tmp_path)
    damage(root / "enwik8-sample" / name)
    res = train(tmp_path / "run", **{**CHAIN, "data.data_dir": str(root)})
    assert_one_line(res, 2, needle, name, "getdata.sh")
    assert records(tmp_path / "run") == []


@pytest.mark.parametrize("argv", [["--max-new-tokens", "-5"], ["--temperature", "-1"],
                                  ["--temperature", "nan"], ["--top-k", "0"], ["--top-p", "2"],
                                  ["--top-p", "0"],
                                  ["--max-new-tokens", "x"]])
def test_generate_bad_arguments_are_one_line(argv, trained_ckpt):
    import generate_script

    res = cli(generate_script.main, ["--checkpoint", str(trained_ckpt), *argv])
    assert_one_line(res, 2, argv[0])
    assert res.out == ""


@pytest.mark.parametrize("content", [os.urandom(2000), b"", b"PK\x03\x04garbage", b"\x80\x02}q\x00."])
def test_random_bytes_checkpoint_is_one_short_line(content, tmp_path):
    import generate_script

    import eval as eval_cli

    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    for res in (cli(eval_cli.main, ["--checkpoint", str(bad)]),
                cli(generate_script.main, ["--checkpoint", str(bad)]),
                train(tmp_path / "run", "--resume", str(bad), **CHAIN)):
        line = assert_one_line(res, 2, "bad.pt", "unreadable")
        assert "weights_only" not in line and len(line) < 300


def test_eval_out_into_missing_folder_is_refused_before_evaluating(trained_ckpt, tmp_path, monkeypatch):
    import infiniattention.commands.eval as eval_cli

    def no_eval(*args, **kwargs):
        raise AssertionError("evaluated before checking --out")

    monkeypatch.setattr(eval_cli, "evaluate", no_eval)
    res = cli(eval_cli.main, ["--checkpoint", str(trained_ckpt), "--out", str(tmp_path / "no" / "r.json")])
    assert_one_line(res, 2, "--out", "does not exist")


# ------------------------------------------------------------------------------------------------
# Defect 4: values that used to fall back to defaults; what can be checked at start-up.


@pytest.mark.parametrize("argv", [["--max-tokens", "0"], ["--max-tokens", "-3"], ["--batch-size", "0"],
                                  ["--tgt-len", "0"], ["--batch-size", "-1"], ["--batch-size", "100000000"]])
def test_eval_refuses_zero_and_negative_values(argv, trained_ckpt):
    import eval as eval_cli

    res = cli(eval_cli.main, ["--checkpoint", str(trained_ckpt), "--split", "valid", *argv])
    assert_one_line(res, 2, argv[0] if argv[1] != "100000000" else "lanes")
    assert res.out == ""


@pytest.mark.parametrize("sets", [{"eval.batch_size": 10**9}, {"data.batch_size": 10**9},
                                  {"data.tgt_len": 10**9}, {"model.d_model": 10**7, "model.d_head": 2}])
def test_sizes_are_checked_before_the_first_step(sets, tmp_path):
    res = train(tmp_path / "run", **{**CHAIN, **sets})
    assert_one_line(res, 2, next(iter(sets)).split(".")[-1] if "d_model" not in str(sets) else "GiB")
    assert records(tmp_path / "run") == []  # no step was spent before the error


# ------------------------------------------------------------------------------------------------
# Defect 6: leftovers of killed writes; metrics.jsonl history after a resume.


def test_temporaries_of_killed_writes_are_removed_on_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in (".ckpt_00000003.pt.tmp4242", ".best.pt.tmp17", ".config.yaml.tmp9"):
        (run / name).write_bytes(b"half a file")
    assert train(run, **{**CHAIN, "train.max_steps": 2}).rc == 0
    assert leftovers(run) == []


def test_metrics_after_resume_hold_one_clean_history(tmp_path, straight_inproc):
    """Killed after step 8 was logged but before its checkpoint: the resumed run drops the replayed
    records, and its first log line averages a full window (steps 7-8, across the checkpoint at 6)."""
    run = tmp_path / "run"
    shutil.copytree(straight_inproc, run)
    for path in ckpt_io.list_checkpoints(run):
        if ckpt_io.step_of(path) > 6:
            path.unlink()
    (run / "best.pt").unlink()  # (it is rewritten by the replayed validation of step 8)
    res = train(run, **CHAIN)
    assert res.rc == 0, res.err
    assert_same_run(straight_inproc, run)


# ------------------------------------------------------------------------------------------------
# Defect 7: generation streams in constant memory.


def test_generate_streams_before_it_finishes(trained_ckpt, monkeypatch):
    """--max-new-tokens 100000000 used to print nothing until the end (and keep every step's logits)."""
    import generate_script

    from infiniattention import model as model_mod

    calls = {"n": 0}
    forward = model_mod.InfiniTransformerLM.forward

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 300:
            raise AssertionError("nothing was printed after 300 tokens")
        return forward(self, *args, **kwargs)

    class Enough(Exception):
        pass

    class Screen(io.StringIO):
        def write(self, s):
            super().write(s)
            if len(self.getvalue()) > len("The ") + 20:
                raise Enough
            return len(s)

    monkeypatch.setattr(model_mod.InfiniTransformerLM, "forward", counted)
    monkeypatch.setattr(generate_script, "FLUSH_SECONDS", 0.0, raising=False)
    screen = Screen()
    monkeypatch.setattr(sys, "stdout", screen)
    with pytest.raises(Enough):
        generate_script.main(["--checkpoint", str(trained_ckpt), "--prompt", "The ",
                              "--max-new-tokens", "100000000"])
    assert calls["n"] <= 60


def test_generate_stream_keeps_no_tensors_per_step(trained_ckpt):
    import gc

    from infiniattention.generation import generate_stream
    from infiniattention.training.evaluate import load_for_inference

    model, _, _, _ = load_for_inference(str(trained_ckpt))
    prompt = torch.tensor([[1, 2, 3]])
    counts = []
    stream = generate_stream(model, prompt, 400, generator=torch.Generator().manual_seed(0))
    for i, _token in enumerate(stream):
        if i in (50, 399):
            gc.collect()
            # type(), not isinstance(): isinstance reads __class__, which warns on deprecated
            # torch.distributed objects
            counts.append(sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects()))
    assert counts[1] <= counts[0] + 2, counts


def test_streamed_text_equals_decoded_text(trained_ckpt):
    from data_utils.vocab import Vocab
    from infiniattention.generation import TextStream

    rng = random.Random(0)
    vocabs = [Vocab("byte", list(range(256))), Vocab("char", list(" abc\n")),
              Vocab("word", ["<eos>", "the", "cat", "<unk>"])]
    for vocab in vocabs:
        ids = [rng.randrange(len(vocab)) for _ in range(300)]
        stream = TextStream(vocab)
        text = "".join(stream.push(i) for i in ids) + stream.finish()
        assert text == vocab.decode(ids), vocab.kind


# ------------------------------------------------------------------------------------------------
# Defect 8: no progress-bar updates in a log file.


def test_no_carriage_returns_when_not_a_terminal(tmp_path):
    import train as train_cli

    args = train_args(tmp_path / "run", **{**CHAIN, "train.max_steps": 6})
    args.remove("--no-progress")
    res = cli(train_cli.main, args)
    assert res.rc == 0, res.err
    assert "\r" not in res.out + res.err
    assert "step 6 |" in res.out


# ------------------------------------------------------------------------------------------------
# The command-line wrapper in real subprocesses.


@pytest.mark.slow
def test_wrapper_in_real_processes(tmp_path, trained_ckpt):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    cases = [
        (["train.py", "--config", str(bad), "--run-dir", str(tmp_path / "r")], 2, "bad.yaml"),
        (["eval.py", "--checkpoint", str(trained_ckpt), "--batch-size", "0"], 2, "--batch-size"),
        (["scripts/generate.py", "--checkpoint", str(trained_ckpt), "--top-p", "2"], 2, "--top-p"),
        (["train.py", "--no-such-flag"], 2, "--no-such-flag"),
    ]
    for argv, code, needle in cases:
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=sub_env(), capture_output=True,
                              text=True, timeout=120)
        assert_one_line(Result(proc.returncode, proc.stdout, proc.stderr), code, needle)


# ------------------------------------------------------------------------------------------------
# A seeded fuzz of 320 runs over YAML files and --set overrides.

FUZZ_BASE = {
    "model": {"n_layer": 1, "d_model": 16, "n_head": 2, "d_head": 8, "d_inner": 32, "segment_len": 8,
              "mem_len": 8, "dropout": 0.0},
    "data": {"dataset": "enwik8-sample", "batch_size": 2, "tgt_len": 16},
    "optim": {"lr": 0.003, "warmup_steps": 1},
    "train": {"max_steps": 2, "log_interval": 1, "eval_interval": 0, "ckpt_interval": 0, "device": "cpu",
              "keep_last": 1},
    "eval": {"batch_size": 1, "tgt_len": 16, "max_tokens": 32, "test_max_tokens": 32},
}
# Keys whose valid values can make a run arbitrarily long (the fuzz is about errors, not patience).
FUZZ_FIXED = {("train", "max_steps"), ("eval", "max_tokens"), ("eval", "test_max_tokens"),
              ("data", "data_dir"), ("data", "dataset"), ("eval", "tgt_len"), ("train", "compile")}
FUZZ_VALUES = [
    -1, 0, 1, 2, -0.5, 0.5, 3.5, 1e30, -1e30, 10**12, 2**64, 1e-320, ".nan", ".inf", "-.inf", "nan", "abc",
    "", "[]", "{}", "[1, 2]", "true", "null", "1e-3", "0x10", "'12'", "~", "{a: 1}", "!!binary aGk=",
    "!!python/object/apply:os.system ['true']", "!!set {a}", "!!timestamp 2001-12-14", "[1,", "{a: ",
    "a: b: c", "*alias", "&anchor 3", "relu", "xl", "none", "linear", "gelu", "adafactor", "constant",
    "bf16", "fp16", "cuda",
]


# Values that are valid (or plausible) one by one; combined they still must end in 0 or one line.
FUZZ_PLAUSIBLE = [
    (("model", "memory"), "xl"), (("model", "memory"), "none"), (("model", "update"), "linear"),
    (("model", "pos"), "xl"), (("model", "pos"), "none"), (("model", "activation"), "gelu"),
    (("model", "pre_lnorm"), "true"), (("model", "dropout"), 0.3), (("model", "init_std"), 1.0),
    (("model", "adaptive"), "true"), (("model", "cutoffs"), "[20, 100]"), (("model", "div_val"), 2),
    (("model", "segment_len"), 5), (("model", "n_head"), 1), (("model", "d_head"), 3),
    (("optim", "name"), "adafactor"), (("optim", "schedule"), "constant"), (("optim", "clip"), 0),
    (("optim", "lr"), 1000.0), (("optim", "lr"), 1e-30), (("optim", "eps"), 1e-30),
    (("optim", "weight_decay"), 0.1), (("optim", "gate_lr_mult"), 0), (("optim", "warmup_steps"), 10**12),
    (("train", "grad_accum"), 2), (("train", "precision"), "bf16"), (("train", "precision"), "fp16"),
    (("train", "ckpt_interval"), 1), (("train", "eval_interval"), 1), (("train", "keep_last"), 10**12),
    (("train", "max_bad_steps"), 0), (("train", "log_interval"), 10**12), (("train", "seed"), 2**32 - 1),
    (("data", "roll_seed"), 3), (("data", "batch_size"), 1), (("data", "tgt_len"), 1),
    (("data", "tgt_len"), 5), (("eval", "batch_size"), 3),
]


def _fuzz_keys() -> list[tuple[str, str]]:
    import dataclasses

    from infiniattention.training.config import SECTIONS

    keys = [(s, f.name) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
            if (s, f.name) not in FUZZ_FIXED]
    return keys + [("model", "n_layers"), ("optim", "learning_rate"), ("nosuch", "key"), ("train", "")]


def _fuzz_case(rng: random.Random, keys: list[tuple[str, str]]) -> tuple[str, bytes | None, list[str]]:
    """(description, YAML file bytes or None, --set overrides)."""
    muts = [rng.choice(FUZZ_PLAUSIBLE) if rng.random() < 0.4 else (rng.choice(keys), rng.choice(FUZZ_VALUES))
            for _ in range(rng.choice((1, 1, 2, 3)))]
    kind = rng.random()
    if kind < 0.45:  # the mutations as --set overrides on the base file
        return f"set {muts}", _yaml(FUZZ_BASE), [f"{s}.{k}={v}" for (s, k), v in muts]
    if kind < 0.9:  # the mutations written into the YAML file
        lines = _yaml(FUZZ_BASE).decode().splitlines()
        for (section, key), value in muts:
            lines = [line for line in lines if line != f"  {key}: " + line.split(": ", 1)[-1]
                     or not _in_section(lines, line, section)]
            at = next((i for i, line in enumerate(lines) if line == f"{section}:"), None)
            if at is None:
                lines += [f"{section}:", f"  {key}: {value}"]
            else:
                lines.insert(at + 1, f"  {key}: {value}")
        return f"yaml {muts}", "\n".join(lines).encode() + b"\n", []
    raw = _yaml(FUZZ_BASE)  # damaged bytes: non-UTF-8, NULs, cut short
    cut = rng.randrange(len(raw))
    noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    return f"bytes at {cut}", raw[:cut] + noise + raw[cut + rng.randrange(0, 20):], []


def _in_section(lines: list[str], line: str, section: str) -> bool:
    """Whether `line` (indented) lies in the block of `section` (the base has each key once)."""
    at = lines.index(line)
    header = next(x for x in reversed(lines[:at]) if not x.startswith(" "))
    return header == f"{section}:"


def _yaml(d: dict) -> bytes:
    import yaml

    return yaml.safe_dump(d, sort_keys=False).encode()


def test_fuzz_320_configs(tmp_path):
    import train as train_cli

    data_dir = prepared_data_dir()
    rng = random.Random(20261129)
    keys = _fuzz_keys()
    tally = {"runs": 0, "exit0": 0, "one_line_errors": 0, "tracebacks": 0, "leftovers": 0}
    failures = []
    t0 = time.time()
    for i in range(320):
        desc, text, sets = _fuzz_case(rng, keys)
        run = tmp_path / f"r{i}"
        cfg = tmp_path / f"c{i}.yaml"
        cfg.write_bytes(text)
        argv = ["--config", str(cfg), "--run-dir", str(run), "--no-progress",
                "--set", f"data.data_dir={data_dir}"]
        for s in sets:
            argv += ["--set", s]
        faults.reset()
        tally["runs"] += 1
        try:
            res = cli(train_cli.main, argv)
        except BaseException as err:  # an escaped exception is a traceback for the user
            tally["tracebacks"] += 1
            failures.append((desc, f"{type(err).__name__}: {err}"))
            continue
        if res.rc == 0:
            tally["exit0"] += 1
            test = records(run, "test")
            if not (test and math.isfinite(test[-1]["loss"])):
                failures.append((desc, "exit 0 without a finite test loss"))
        else:
            lines = res.err.strip().splitlines()
            if len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.err:
                tally["one_line_errors"] += 1
            else:
                failures.append((desc, f"exit {res.rc} with stderr {res.err[-600:]!r}"))
        # nothing a later --resume auto would trust: every checkpoint left is complete and finite
        if run.is_dir():
            bad = [p.name for p in run.iterdir() if ckpt_io.TMP_RE.match(p.name)]
            for path in ckpt_io.list_checkpoints(run):
                ckpt = ckpt_io.load(path)
                if ckpt_io.all_finite(ckpt) or res.rc != 0 and ckpt["step"] >= 2:
                    bad.append(path.name)
            if bad:
                tally["leftovers"] += 1
                failures.append((desc, f"left {bad}"))
            shutil.rmtree(run)
    tally["seconds"] = round(time.time() - t0, 1)
    print("fuzz tally:", json.dumps(tally))
    assert not failures, failures[:10]
    assert tally["runs"] == 320 and tally["tracebacks"] == 0 and tally["leftovers"] == 0
    assert tally["exit0"] >= 30 and tally["one_line_errors"] >= 150  # both outcomes are exercised


# ------------------------------------------------------------------------------------------------
# Soak: thousands of tiny steps; RSS flat, disk bounded by keep_last (`pytest -m soak`).


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.soak
def test_soak_rss_flat_and_disk_bounded(tmp_path):
    import threading

    import train as train_cli

    steps = int(os.environ.get("SOAK_STEPS", "5000"))
    run = tmp_path / "run"
    samples: list[tuple[float, float]] = []
    sizes: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            samples.append((time.time(), _rss_mib()))
            if run.is_dir():
                sizes.append(sum(p.stat().st_size for p in run.rglob("*") if p.is_file()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    sets = {"model.n_layer": 1, "model.d_model": 16, "model.n_head": 2, "model.d_head": 8,
            "model.d_inner": 32, "model.segment_len": 8, "data.batch_size": 2, "data.tgt_len": 16,
            "train.max_steps": steps, "optim.decay_steps": steps,
            "train.log_interval": 50, "train.eval_interval": 1000, "train.ckpt_interval": 100,
            "train.keep_last": 2, "eval.batch_size": 1, "eval.tgt_len": 16, "eval.max_tokens": 64,
            "eval.test_max_tokens": 64}
    t0 = time.time()
    res = cli(train_cli.main, train_args(run, **sets))
    stop.set()
    thread.join()
    assert res.rc == 0, res.err
    rss = [r for _, r in samples]
    n = len(rss)
    early = float(np.median(rss[n // 10: n // 5 + 1]))
    late = float(np.median(rss[-max(n // 10, 1):]))
    report = {"steps": steps, "seconds": round(time.time() - t0, 1), "rss_mib_early": round(early, 1),
              "rss_mib_late": round(late, 1), "rss_mib_max": round(max(rss), 1),
              "disk_kib_max": round(max(sizes) / 1024, 1), "disk_kib_final": round(sizes[-1] / 1024, 1),
              "checkpoints_final": len(ckpt_io.list_checkpoints(run))}
    print("soak:", json.dumps(report))
    (tmp_path.parent / "soak.json").write_text(json.dumps(report))
    assert late - early < 25, report  # flat: no per-step growth (25 MiB over thousands of steps)
    assert report["checkpoints_final"] == 2
    ckpt_size = ckpt_io.list_checkpoints(run)[0].stat().st_size
    log_size = sum(p.stat().st_size for p in run.iterdir() if p.suffix != ".pt")
    assert max(sizes) <= 4 * ckpt_size + log_size + 64 * 1024, report  # keep_last + best + one being written


def test_resume_command_drops_overwrite():
    """The printed resume command must continue the run, not move it aside again."""
    import train as train_cli

    argv = ["--config", "c.yaml", "--resume", "never", "--overwrite", "--set", "a.b=1"]
    cmd = train_cli.resume_command(argv)
    assert cmd == "python train.py --config c.yaml --set a.b=1"


def test_full_disk_under_train_log_prints_no_logging_traceback(tmp_path, capsys):
    import errno
    import logging

    from infiniattention.training.metrics import LogFileHandler

    class FullDisk(io.StringIO):
        def write(self, s):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    handler = LogFileHandler(tmp_path / "train.log", encoding="utf-8")
    handler.stream.close()
    handler.stream = FullDisk()
    handler.emit(logging.makeLogRecord({"msg": "step 1", "levelno": logging.INFO, "levelname": "INFO"}))
    assert capsys.readouterr().err == ""  # logging's own handler prints "--- Logging error ---" + traceback


# ------------------------------------------------------------------------------------------------
# Issue 22: the last tracebacks and wordings, SIGHUP, and a finished run that stays finished.


@pytest.mark.parametrize("name", ["train.log", "metrics.jsonl", "config.yaml"])
def test_read_only_run_files_are_one_line_and_left_alone(name, tmp_path):
    """A PermissionError traceback before (for root, who may write anyway, a silent write)."""
    run = tmp_path / "run"
    assert train(run, **{**CHAIN, "train.max_steps": 3}).rc == 0
    (run / name).chmod(0o444)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert_one_line(train(run, **{**CHAIN, "train.max_steps": 6}), 2, name, "is read-only", "chmod u+w")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_config_folder_and_half_prepared_dataset_say_what_they_are(tmp_path):
    assert_one_line(train(tmp_path / "run", "--config", str(tmp_path), **CHAIN), 2, "is a folder")
    root = _data_copy(tmp_path)
    (root / "enwik8-sample" / "meta.json").unlink()  # a preparation that was killed before its end
    res = train(tmp_path / "run", **{**CHAIN, "data.data_dir": str(root)})
    assert_one_line(res, 2, "not completely prepared", "meta.json is missing", "getdata.sh enwik8-sample")


def test_eval_text_that_cannot_be_read_is_one_line(trained_ckpt, tmp_path, monkeypatch):
    import builtins
    import importlib

    import eval as eval_cli

    evaluate_mod = importlib.import_module("infiniattention.training.evaluate")  # not the function

    base = ["--checkpoint", str(trained_ckpt), "--text"]
    assert_one_line(cli(eval_cli.main, [*base, str(tmp_path)]), 2, "is a folder")  # IsADirectoryError
    locked = tmp_path / "locked.txt"
    locked.write_text("some text to score")

    def no_permission(path, *args, **kwargs):  # chmod 000 does not stop root: the kernel's answer, here
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "open", no_permission, raising=False)
    assert_one_line(cli(eval_cli.main, [*base, str(locked)]), 2, "locked.txt", "Permission denied")
    monkeypatch.setattr(sys, "stdin", None)  # what python gives a process started with fd 0 closed
    assert_one_line(cli(eval_cli.main, [*base, "-"]), 2, "standard input is closed")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_eval_out_on_a_full_disk_does_not_say_resume(trained_ckpt):
    import eval as eval_cli

    argv = ["--checkpoint", str(trained_ckpt), "--split", "valid", "--max-tokens", "32", "--out", "/dev/full"]
    line = assert_one_line(cli(eval_cli.main, argv), 1, "no space left on device", "/dev/full",
                           "run the evaluation again")
    assert "resume" not in line


def _passkey_script():
    import importlib.util

    if "passkey_script" not in sys.modules:
        spec = importlib.util.spec_from_file_location("passkey_script", REPO / "scripts" / "passkey.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["passkey_script"] = module
    return sys.modules["passkey_script"]


def test_passkey_eval_unwritable_out_dir_is_refused_before_evaluating(trained_ckpt, tmp_path, monkeypatch):
    script = _passkey_script()

    def no_eval(*args, **kwargs):
        raise AssertionError("evaluated before checking --out-dir")

    import infiniattention.commands.passkey as command  # the program behind scripts/passkey.py

    monkeypatch.setattr(command, "evaluate_grid", no_eval)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    argv = ["eval", "--checkpoint", str(trained_ckpt), "--lengths", "1k", "--depths", "0.5",
            "--instances", "1"]
    try:
        assert_one_line(cli(script.main, [*argv, "--out-dir", str(read_only / "out")]), 2, "--out-dir",
                        "cannot be created")
        assert_one_line(cli(script.main, [*argv, "--out-dir", str(read_only)]), 2, "--out-dir",
                        "is not writable")
    finally:
        read_only.chmod(0o755)


PASSKEY_YAML = {
    "syntax": (b"model:\n  n_layer: [1,\n", "invalid YAML"),
    "utf-16": ("model:\n  n_layer: 1\n".encode("utf-16"), "not UTF-8"),
    "python tag": (b"passkey: !!python/object/apply:os.system ['true']\n", "unsupported YAML tag"),
    "key given twice": (b"passkey:\n  seed: 1\n  seed: 2\n", "on lines 2 and 3"),
    "unknown section": (b"pasky:\n  seed: 1\n", "unknown config section"),
}


@pytest.mark.parametrize("case", sorted(PASSKEY_YAML))
def test_passkey_train_config_errors_are_one_line_as_for_train_py(case, tmp_path):
    text, needle = PASSKEY_YAML[case]
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    res = cli(_passkey_script().main, ["train", "--config", str(path), "--run-dir", str(tmp_path / "run")])
    assert_one_line(res, 2, needle, "bad.yaml")
    assert not (tmp_path / "run").exists()
    assert_one_line(cli(_passkey_script().main, ["train", "--config", str(tmp_path)]), 2, "is a folder")


def test_a_finished_run_run_again_changes_no_file(tmp_path):
    """Running a finished command again appended a second test record and a TensorBoard file."""
    run = tmp_path / "run"
    sets = {**CHAIN, "train.max_steps": 6}
    assert train(run, **sets).rc == 0
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    res = train(run, **sets)
    assert res.rc == 0, res.err
    assert "is finished (step 6)" in res.out and "test bpc" in res.out
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    res = train(run, **{**sets, "train.max_steps": 4})  # max_steps below the checkpoint's step
    assert res.rc == 0 and "past train.max_steps=4" in res.out, res.err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # killed after the last checkpoint, before the test result: the same command evaluates it, and says so
    kept = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"kind": "test"' not in line]
    (run / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    res = train(run, **{**sets, "train.max_steps": 4})
    assert res.rc == 0 and "at or past train.max_steps=4: no step to train" in res.out, res.err
    assert [r["step"] for r in records(run, "test")] == [6]


@pytest.mark.slow
def test_sighup_ignored_at_start_stays_ignored(tmp_path):
    """`nohup python train.py ...`: the hang-up of the terminal must not stop the run."""
    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", *train_args(run, **{**CHAIN, "train.max_steps": 100000})]
    proc = subprocess.Popen(cmd, cwd=REPO, env=sub_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    deadline = time.time() + 120
    while time.time() < deadline and len(records(run)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)
    seen = len(records(run))
    while time.time() < deadline and len(records(run)) < seen + 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "SIGHUP stopped a run that ignored it"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped by signal SIGTERM" in out, out[-2000:]
    assert "SIGHUP" not in out
