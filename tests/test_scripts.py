"""The shell scripts: the interpreter they run (PY=, .venv, python3) and the SLURM script's requeue.

SLURM is not installed here: stand-ins for `srun` (runs its command on this machine) and `scontrol`
(records its arguments and answers `show hostnames`) come first on PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_utils import REPO, subprocess_env, tiny_sets

SRUN = """#!/bin/sh
while [ "${1#--}" != "$1" ]; do shift; done  # srun's own options
exec "$@"
"""
SCONTROL = """#!/bin/sh
echo "$*" >> "$SCONTROL_LOG"
[ "$1" = show ] && echo localhost
exit 0
"""


def _tree_without_venv(dest: Path) -> Path:
    """The files the shell scripts use, in a folder with no .venv (as a checkout before setup_env.sh)."""
    dest.mkdir()
    for name in ("getdata.sh", "train.py", "eval.py"):
        shutil.copy2(REPO / name, dest / name)
    skip = shutil.ignore_patterns("__pycache__")
    for name in ("scripts", "configs", "data_utils", "infiniattention"):
        shutil.copytree(REPO / name, dest / name, ignore=skip)
    shutil.copytree(REPO / "data" / "samples", dest / "data" / "samples")
    return dest


def _bin(folder: Path, **programs: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in programs.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def test_scripts_without_venv_fall_back_to_python3_and_say_so(tmp_path):
    """No .venv and no PY: python3 from PATH with a one-line note (it used to be exit 127); a python that
    lacks the requirements gets one line that says what to do."""
    tree = _tree_without_venv(tmp_path / "tree")
    python3 = _bin(tmp_path / "bin", python3=f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    env = {**os.environ, "PATH": f"{python3}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PY", None)
    proc = subprocess.run(["bash", "getdata.sh", "enwik8-sample", "--no-progress"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"note: no .venv in {tree}: using {tmp_path / 'bin' / 'python3'}; set PY=")
    assert (tree / "data" / "enwik8-sample" / "train.npy").is_file()

    for script in ("scripts/compare_memory.sh", "scripts/passkey_cpu.sh"):
        proc = subprocess.run(["bash", script, "--bogus"], cwd=tree, env={**env, "PY": "/no/python"},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "unknown argument --bogus" in proc.stderr
    proc = subprocess.run(["bash", "scripts/compare_memory.sh", "--budget-steps", "1"], cwd=tree,
                          env={**env, "PY": "/no/python"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ("error: PY=/no/python does not run: set PY=/path/to/python, or run "
                           "bash scripts/setup_env.sh\n")


def test_py_chooses_the_interpreter_of_every_script(tmp_path):
    """PY= is honoured by getdata.sh (it used to ignore it) and by the scripts that call it."""
    log = tmp_path / "calls"
    script = f'#!/bin/sh\necho "$*" >> {log}\nexec {sys.executable} "$@"\n'
    recorder = _bin(tmp_path / "bin", py=script) / "py"
    tree = _tree_without_venv(tmp_path / "tree")
    env = {**subprocess_env(), "PY": str(recorder)}
    proc = subprocess.run(["bash", "getdata.sh", "enwik8-sample", "--no-progress"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "note:" not in proc.stderr, proc.stderr
    assert "-m data_utils.prepare enwik8-sample" in log.read_text()
    cmd = ["bash", "scripts/compare_memory.sh", "--set", "model.bogus=1", "--out-dir", str(tmp_path / "cmp")]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: unknown config key 'model.bogus'")
    assert "Traceback" not in proc.stderr


FAKE_PIP_PYTHON = """#!/bin/bash
# .venv/bin/python of a checkout without torch: pip is a stand-in that logs its arguments (and writes the
# --report pip would, naming a local wheel); the first check, `import torch`, fails; the rest is python.
if [ "$1" = -m ] && [ "$2" = pip ]; then
    shift 2
    echo "$*" >> "$PIP_LOG"
    if [ "$1 $2" = "install --help" ]; then echo "  --report <file>"; exit 0; fi
    prev=
    for arg in "$@"; do
        if [ "$prev" = --report ]; then
            echo '{"install": [{"metadata": {"name": "torch", "version": "2.13.0+cpu"},
                "download_info": {"url": "file:///opt/wheels/torch-2.13.0%2Bcpu-cp311.whl"}}]}' > "$arg"
        fi
        prev=$arg
    done
    exit 0
fi
if [ "$1" = - ] && [ ! -e "$PIP_LOG.checked" ]; then touch "$PIP_LOG.checked"; exit 1; fi
exec REAL_PYTHON "$@"
"""


def test_setup_env_without_the_pytorch_index_is_quiet_and_says_where_torch_came_from(tmp_path):
    """PyTorch's index unreachable: one line says so, pip's own sources are used (no --index-url), pip
    runs with -qq (its retry warnings used to fill pages), and one line names the wheel torch came from."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "scripts", tree / "scripts")
    for name in ("requirements.txt", "requirements-dev.txt"):
        shutil.copy2(REPO / name, tree / name)
    (tree / ".venv").mkdir()
    _bin(tree / ".venv" / "bin", python=FAKE_PIP_PYTHON.replace("REAL_PYTHON", sys.executable))
    log = tmp_path / "pip.log"
    env = {**os.environ, "PIP_LOG": str(log), "TORCH_INDEX_URL": "http://127.0.0.1:9/whl/cpu"}
    proc = subprocess.run(["bash", "scripts/setup_env.sh"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("[setup] http://127.0.0.1:9/whl/cpu cannot be reached: installing "
                               "torch==2.13.0 from pip's own sources instead"), lines
    assert lines[1] == "[setup] torch 2.13.0+cpu came from file:///opt/wheels/torch-2.13.0+cpu-cp311.whl"
    assert lines[2].startswith("[setup] .venv has torch") and not proc.stderr
    assert lines[3].startswith("[setup] to use it: source .venv/bin/activate") and len(lines) == 4
    installs = [line for line in log.read_text().splitlines()
                if line.startswith("install") and "--help" not in line]
    assert len(installs) == 2 and all("-qq" in line for line in installs), installs
    assert "torch==2.13.0" in installs[0] and "--index-url" not in installs[0]


@pytest.mark.parametrize("script", ["run_multinode.sh", "slurm_train.sh"])
def test_multinode_examples_have_lanes_that_divide_the_processes(script):
    """The examples in the scripts' headers (2 nodes x 8 GPUs = 16 processes) pass the lane rule."""
    from infiniattention.training.config import load_config

    lines = (REPO / "scripts" / script).read_text().splitlines()
    examples = [line.split(script, 1)[1].split() for line in lines
                if line.startswith("#") and f"scripts/{script} --config" in line]
    assert examples
    for args in examples:
        config = REPO / args[args.index("--config") + 1]
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        assert load_config(str(config), sets).data.batch_size % (2 * 8) == 0, args


# ------------------------------------------------------------------------------------------------
# scripts/slurm_train.sh


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm(tmp_path: Path, *args: str) -> subprocess.Popen:
    fake = _bin(tmp_path / "slurm_bin", srun=SRUN, scontrol=SCONTROL)
    env = {**subprocess_env(), "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "PY": sys.executable,
           "SCONTROL_LOG": str(tmp_path / "scontrol.log"), "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_PER_NODE": "gpu:1",
           "SLURM_SUBMIT_DIR": str(REPO), "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(["bash", str(REPO / "scripts" / "slurm_train.sh"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _train_args(run: Path, steps: int) -> list[str]:
    args = ["--run-dir", str(run), "--no-progress"]
    for s in tiny_sets(**{"train.max_steps": steps, "train.ckpt_interval": 1000}):
        args += ["--set", s]
    return args


@pytest.mark.slow
def test_slurm_script_requeues_after_sigterm(tmp_path):
    """SIGTERM to the batch script (what --signal=B:TERM@120 sends): training saves and stops, then the
    script runs `scontrol requeue <job id>`; the requeued job would resume from that checkpoint."""
    run = tmp_path / "run"
    proc = _slurm(tmp_path, *_train_args(run, 100000))
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output
    assert "stopped by signal SIGTERM" in output and "requeueing job 4242" in output
    calls = (tmp_path / "scontrol.log").read_text().splitlines()
    assert calls == ["show hostnames localhost", "requeue 4242"]
    assert len(list(run.glob("ckpt_*.pt"))) == 1


def test_slurm_script_does_not_requeue_a_run_that_ends_by_itself(tmp_path):
    """A failed run (here a config error) is not requeued: it would fail again, forever."""
    proc = _slurm(tmp_path, "--run-dir", str(tmp_path / "run"), "--set", "optim.lrr=1")
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0 and "did you mean 'optim.lr'" in output
    assert "requeue" not in (tmp_path / "scontrol.log").read_text()


# ------------------------------------------------------------------------------------------------
# Results records written by the scripts' programs


@pytest.mark.slow
def test_compare_memory_writes_records_and_skips_a_recorded_run(tmp_path):
    """compare_memory.sh at a tiny size: each run's train.json, context_curve.json and test.json are
    records that name the script's command (provenance.via); the table is rendered from them; a run
    whose test.json exists is not trained again, even with its run folder gone."""
    from infiniattention.training.results import read_result

    tree = _tree_without_venv(tmp_path / "tree")
    env = {**subprocess_env(), "PY": sys.executable}
    tiny = ["--set", "model.n_layer=1", "--set", "model.d_model=16", "--set", "model.n_head=2", "--set",
            "model.d_head=8", "--set", "model.d_inner=32", "--set", "data.batch_size=4", "--set",
            "data.tgt_len=64", "--set", "eval.batch_size=16", "--set", "train.eval_interval=0", "--set",
            "train.ckpt_interval=0", "--set", "eval.max_tokens=256", "--set", "eval.test_max_tokens=256",
            "--set", "optim.warmup_steps=0"]
    cmd = ["bash", "scripts/compare_memory.sh", "--rows", "infini", "--seeds", "7", "--budget-steps", "2",
           "--out-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res"), *tiny]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = tmp_path / "res" / "compare" / "infini" / "seed-7"
    kinds = {name: read_result(rec / f"{name}.json") for name in ("train", "context_curve", "test")}
    assert {n: r["kind"] for n, r in kinds.items()} == {"train": "train", "context_curve": "context_curve",
                                                         "test": "compare"}
    for r in kinds.values():
        assert r["provenance"]["via"].startswith("bash scripts/compare_memory.sh --rows infini --seeds 7")
    assert kinds["train"]["result"]["step"] == 2 and kinds["test"]["result"]["seed"] == 7
    assert kinds["train"]["provenance"]["command"].startswith("train.py --config configs/tiny.yaml")
    assert f"{kinds['test']['result']['test_bpc']:.4f}" in proc.stdout  # the table, from the records
    assert (tmp_path / "runs" / "compare.json").is_file()
    assert not (tmp_path / "res" / "compare" / "compare.json").exists()
    shutil.rmtree(tmp_path / "runs")
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"== infini, seed 7: done ({rec}/test.json exists)" in proc.stdout
    assert not (tmp_path / "runs" / "infini").exists()
    # --table and --label: a run that differs by a setting, in a table of its own, under its label
    ablation = ["--set", "optim.gate_lr_mult=10", "--table", "ablation-x", "--label", "lr10"]
    proc = subprocess.run([*cmd, *ablation], cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = tmp_path / "res" / "ablation-x" / "lr10" / "seed-7"
    test = read_result(rec / "test.json")
    assert test["config"]["optim"]["gate_lr_mult"] == 10 and (tmp_path / "runs" / "lr10" / "seed-7").is_dir()
    assert "| `lr10` | 1 |" in proc.stdout


@pytest.mark.slow
def test_demo_writes_its_train_and_test_records(tmp_path):
    from infiniattention.training.results import read_result

    tree = _tree_without_venv(tmp_path / "tree")
    env = {**subprocess_env(), "PY": sys.executable, "RUN": str(tmp_path / "run"),
           "RESULTS": str(tmp_path / "res" / "demo")}
    tiny = ["--set", "model.n_layer=1", "--set", "model.d_model=16", "--set", "model.n_head=2", "--set",
            "model.d_head=8", "--set", "model.d_inner=32", "--set", "data.batch_size=4", "--set",
            "train.max_steps=2", "--set", "train.eval_interval=0", "--set", "eval.batch_size=16"]
    proc = subprocess.run(["bash", "scripts/demo.sh", *tiny], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train, test = (read_result(tmp_path / "res" / "demo" / f"{n}.json") for n in ("train", "test"))
    assert train["kind"] == "train" and train["result"]["step"] == 2
    assert test["kind"] == "eval" and test["result"]["split"] == "test" and test["result"]["tokens"] > 40_000
    assert test["provenance"]["via"] == "bash scripts/demo.sh " + " ".join(tiny)
    assert test["provenance"]["command"].startswith("eval.py --checkpoint")


# ------------------------------------------------------------------------------------------------
# scripts/reproduce_results.sh: its arguments and, with --dry-run, what each mode runs and writes


def _reproduce(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/reproduce_results.sh", *args], cwd=cwd,
                          env={**subprocess_env(), "PY": sys.executable}, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, message", [
    (["--quick", "--full"], "error: --quick and --full exclude each other"),
    (["--bogus"], "error: unknown argument --bogus (see --help)"),
    (["--quick", "--only", "passkey"], "error: --only: unknown step passkey for this mode"),
    (["--only", "demo,typo"], "error: --only: unknown step typo"),
    (["--out-dir"], "error: --out-dir needs a folder"),
])
def test_reproduce_results_refuses_bad_arguments(args, message):
    proc = _reproduce(REPO, *args)
    assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr


def test_reproduce_results_help_names_the_modes():
    proc = _reproduce(REPO, "--help")
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--full" in proc.stdout
    assert "set -euo" not in proc.stdout


def test_reproduce_quick_writes_only_into_its_out_folder(tmp_path):
    out = tmp_path / "quick"
    proc = _reproduce(REPO, "--quick", "--dry-run", "--out-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    written = [w.split("=", 1)[-1] for c in commands for w in c.split()
               if w.startswith(("RESULTS=", str(out), "results"))]
    assert written and all(w.startswith(str(out)) for w in written if w != "results"), written
    assert commands[-1].endswith(f"scripts/results.py compare {out}/results --committed results "
                                 f"--durations {out}/durations.txt --record {out}/quick.json")
    steps = " ".join(commands)
    assert f"RUN={out}/compare/infini/seed-1111 RESULTS={out}/results/demo bash scripts/demo.sh" in steps
    assert "--rows infini,infini+gate+zg4,xl,none --seeds 1111 " in steps
    assert "passkey_cpu.sh --stages 1 --eval screen-short" in steps
    assert "--rounds 3 --steps 3 --no-memory" in steps
    assert "configs/wt2_tiny.yaml" in steps and not (out / "durations.txt").exists()


def test_reproduce_full_skips_what_results_holds_and_renders(tmp_path):
    from test_train_utils import REPO as repo

    from infiniattention.training.results import record, write_result

    tree = _tree_without_venv(tmp_path / "tree")
    shutil.copytree(repo / "bench", tree / "bench")
    rec = record("eval", {"bpc": 2.7}, config=None, wall_s=1.0, command="x")
    for rel in ("demo/test.json", "speed/small.json", "gates/infini/seed-1111/gates.json"):
        write_result(tree / "results" / rel, rec)
    proc = _reproduce(tree, "--full", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "==== skipped: results/demo/test.json already in results/" in out and "scripts/demo.sh" not in out
    assert "bench_model.py --config configs/tiny.yaml" in out and "--config bench/small.yaml" not in out
    assert "--out-dir runs/results/compare --results-dir results" in out and "--seeds 1111,2222,3333" in out
    assert "plot_gates.py --checkpoint runs/results/compare/infini+gate+zg4/seed-1111/best.pt" in out
    assert "--checkpoint runs/results/compare/infini/seed-1111/best.pt" not in out
    assert "--eval screen" in out and "infini+gate+corrected+dpfp+l2" in out
    assert out.rstrip().endswith("scripts/results.py render")
    one = _reproduce(tree, "--full", "--dry-run", "--only", "compare,passkey", "--seeds", "2222").stdout
    assert "--rows infini,infini+gate+zg4,xl,none --seeds 2222 " in one
    assert "--seeds 2222 infini infini+gate+zg4" in one
