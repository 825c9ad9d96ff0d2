"""How every program starts (data_utils/startup.py): a Python without torch, numpy or yaml, and a Ctrl-C,
SIGTERM or SIGHUP while torch loads, are one line and an exit status; every program also runs as a module.

A Python "without torch" is this one with a shim module `torch` (or `numpy`) first on PYTHONPATH that
raises what the test wants, or `python -S`, which sees no site-packages at all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_utils.startup import Stopped, interruption, requirement_problem, setup_advice, stop_on_signals

REPO = Path(__file__).resolve().parents[1]

# Every program a user starts, as the command line after `python`.
PROGRAMS = {
    "train.py": ["train.py"], "eval.py": ["eval.py"], "generate.py": ["scripts/generate.py"],
    "passkey.py": ["scripts/passkey.py"], "memory_probe.py": ["scripts/memory_probe.py"],
    "context_curve.py": ["scripts/context_curve.py"], "plot_gates.py": ["scripts/plot_gates.py"],
    "compare_table.py": ["scripts/compare_table.py"], "passkey_table.py": ["scripts/passkey_table.py"],
    "results.py": ["scripts/results.py"], "bench_model.py": ["bench/bench_model.py"],
    "bench_layer.py": ["bench/bench_layer.py"], "bench_context.py": ["bench/bench_context.py"],
    "bench_dropout.py": ["bench/bench_dropout.py"], "gpu_parity.py": ["bench/gpu_parity.py"],
    "-m train": ["-m", "infiniattention.commands.train"], "-m eval": ["-m", "infiniattention.commands.eval"],
    "-m generate": ["-m", "infiniattention.commands.generate"],
    "-m passkey": ["-m", "infiniattention.commands.passkey"],
    "infini-train": ["-c", "from infiniattention.commands.train import console; console()"],
    "infini-eval": ["-c", "from infiniattention.commands.eval import console; console()"],
    "infini-generate": ["-c", "from infiniattention.commands.generate import console; console()"],
    "infini-passkey": ["-c", "from infiniattention.commands.passkey import console; console()"],
}
# getdata.sh's program needs numpy, not torch.
GETDATA = {"-m data_utils.prepare": ["-m", "data_utils.prepare"],
           "infini-getdata": ["-c", "from data_utils.prepare import console; console()"]}


def _shim(folder: Path, module: str, body: str) -> dict[str, str]:
    """An environment whose `import <module>` runs `body` instead (the repository stays importable)."""
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(body)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO)]), "OMP_NUM_THREADS": "1"}


def _run(args: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def _one_line(proc: subprocess.CompletedProcess, code: int, *parts: str) -> str:
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stdout[-500:], err[-2000:])
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    for part in parts:
        assert part in err, (part, err)
    return err


@pytest.mark.parametrize("name", [*PROGRAMS, *GETDATA])
def test_a_python_whose_torch_or_numpy_fails_to_import_gets_one_line(name, tmp_path):
    args = PROGRAMS.get(name) or GETDATA[name]
    module = "numpy" if name in GETDATA else "torch"
    env = _shim(tmp_path / "shim", module, "raise ImportError('libtorch_cpu.so: cannot open it')\n")
    _one_line(_run(args, env), 2, f"{module} cannot be imported", "libtorch_cpu.so",
              f"in this Python ({sys.executable})", "run `bash scripts/setup_env.sh`")


@pytest.mark.parametrize("name", ["train.py", "generate.py", "-m eval", "-m data_utils.prepare"])
def test_a_python_without_site_packages_names_what_is_missing(name, tmp_path):
    """`python -S`: no torch, numpy, yaml, ...; from another folder, the advice gives whole paths."""
    args = PROGRAMS.get(name) or GETDATA[name]
    if args[0] != "-m":
        args = [str(REPO / args[0])]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-S", *args, "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    _one_line(proc, 2, "torch, numpy, yaml", "not installed", f"bash {REPO}/scripts/setup_env.sh",
              f"source {REPO}/.venv/bin/activate")


@pytest.mark.parametrize("name", [*PROGRAMS, *GETDATA])
def test_ctrl_c_while_torch_loads_is_one_line_and_130(name, tmp_path):
    """KeyboardInterrupt raised inside `import torch` (where Ctrl-C in the first second lands)."""
    args = PROGRAMS.get(name) or GETDATA[name]
    env = _shim(tmp_path / "shim", "numpy" if name in GETDATA else "torch", "raise KeyboardInterrupt\n")
    _one_line(_run(args, env), 130, "interrupted (Ctrl-C) while starting", "run the same command again")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_real_signal_while_torch_loads(signum, tmp_path):
    """A real signal, sent while the program is inside `import torch` (a shim that waits there)."""
    marker = tmp_path / "importing"
    env = _shim(tmp_path / "shim", "torch",
                f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "eval.py", "--help"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    what = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"stopped by {signum.name}"
    _one_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 128 + signum,
              f"{what} while starting", "run the same command again")


def test_a_signal_ignored_at_start_stays_ignored(tmp_path):
    """Under nohup SIGHUP is ignored: the guard leaves it so, while SIGTERM still stops the start."""
    marker = tmp_path / "importing"
    env = _shim(tmp_path / "shim", "torch",
                f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n")

    def nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "eval.py", "--help"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=nohup)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None  # still starting
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    _one_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 143, "stopped by SIGTERM")


def test_another_import_error_keeps_its_traceback(tmp_path):
    """A bug in this code (an ImportError that no requirement raised) is not disguised as a setup problem."""
    try:
        import infiniattention.no_such_module  # noqa: F401
    except ImportError as err:
        assert requirement_problem(err) is None
    else:
        raise AssertionError("the import should have failed")


def test_setup_advice_for_an_installed_package(monkeypatch, tmp_path):
    import data_utils.startup as startup

    monkeypatch.setattr(startup, "_ROOT", tmp_path)  # site-packages: no scripts/setup_env.sh beside it
    assert setup_advice().startswith(f"install the requirements: {sys.executable} -m pip install torch")


def test_stop_on_signals_raises_stopped_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as caught, stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert interruption(caught.value) == ("stopped by SIGTERM", 143)
    assert signal.getsignal(signal.SIGTERM) is before
    assert interruption(KeyboardInterrupt()) == ("interrupted (Ctrl-C)", 130)


@pytest.mark.parametrize("module", ["train", "eval", "generate", "passkey"])
def test_every_command_runs_as_a_module(module):
    proc = subprocess.run([sys.executable, "-m", f"infiniattention.commands.{module}", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"usage: python -m infiniattention.commands.{module} "), proc.stdout[:200]


def test_the_libraries_import_without_torch():
    """`import infiniattention` and `import data_utils` load nothing heavy: a program's guard comes first."""
    code = ("import sys, infiniattention, data_utils, infiniattention.commands, data_utils.startup; "
            "print(sorted(m for m in ('torch', 'numpy', 'yaml') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
