"""SIGTERM and SIGHUP before a training's first step (issue 28, item 9): one line saying that it stopped
and that running the same command again is safe, exit 143 / 129, instead of a silent death. Inside the
loop the trainer's own handlers finish the step and checkpoint (test_train_signal.py, test_faults.py)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from test_passkey import _main as passkey_main
from test_passkey import _train_args as passkey_args
from test_train_utils import REPO, subprocess_env, train_args, train_records

from infiniattention.training import faults
from infiniattention.training.cli import stop_on_signals
from infiniattention.training.errors import Stopped

LINE = "before the first step: nothing was half-written; running the same command again is safe"


@pytest.fixture
def default_sighup():
    """SIGHUP at its default disposition during the test, whatever this process inherited (`nohup`)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.mark.usefixtures("default_sighup")
@pytest.mark.parametrize(("program", "action", "code"), [("train", "term", 143), ("train", "hup", 129),
                                                         ("passkey", "term", 143)])
def test_a_stop_during_start_up_is_one_line_and_the_same_command_then_trains(program, action, code, tmp_path,
                                                                               monkeypatch, capsys):
    import train

    run = tmp_path / "run"
    if program == "train":
        argv = train_args(run, **{"train.max_steps": 2})
        main = train.main
    else:
        argv = passkey_args(run, "--set", "train.max_steps=2")
        main = passkey_main
    faults.reset()
    monkeypatch.setenv(faults.ENV, f"start:1:{action}")
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    name = "SIGTERM" if action == "term" else "SIGHUP"
    assert err.count("\n") == 0 and LINE in err
    assert err.startswith(f"error: stopped by {name} during start-up")
    assert f"stopped by {name}" in (run / "train.log").read_text()
    assert not list(run.glob("*.pt"))
    monkeypatch.delenv(faults.ENV)
    assert main(argv) == 0  # the lock was given back; nothing to clean up
    assert [r["step"] for r in train_records(run)] == [1, 2]


def test_the_handlers_are_restored_and_an_ignored_signal_stays_ignored():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nohup
    try:
        with pytest.raises(Stopped) as stopped, stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
        assert stopped.value.exit_code == 143
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.slow
def test_sigterm_to_a_real_train_py_during_start_up(tmp_path):
    env = subprocess_env()
    env[faults.ENV] = "start:1:term"
    proc = subprocess.run([sys.executable, "train.py", *train_args(tmp_path / "run")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0 and LINE in proc.stderr and "Traceback" not in proc.stderr
