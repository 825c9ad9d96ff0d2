"""eval.py and scripts/generate.py on a checkpoint of a tiny run."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys

import pytest
from test_train_utils import REPO, run_train, signalled, subprocess_env


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "run"
    assert run_train(run, **{"train.max_steps": 4, "model.dropout": 0.0}) == 0
    return run / "ckpt_00000004.pt"


def test_eval_prints_and_writes_json(ckpt, tmp_path, capsys):
    import eval as eval_cli

    out = tmp_path / "r.json"
    assert eval_cli.main(["--checkpoint", str(ckpt), "--split", "valid", "--max-tokens", "300",
                          "--batch-size", "2", "--tgt-len", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "enwik8-sample valid: bpc" in printed and "2 lane(s) x 16 tokens" in printed
    result = json.loads(out.read_text())
    assert result["tokens"] == 320 and result["split"] == "valid" and result["step"] == 4
    assert math.isclose(result["bpc"], result["loss"] / math.log(2))


def test_eval_does_not_depend_on_call_length(ckpt, tmp_path):
    """Memory is carried across calls, so 1 lane evaluated 48 or 16 tokens at a time gives the same nll."""
    import eval as eval_cli

    results = []
    for tgt_len in (48, 16):
        out = tmp_path / f"{tgt_len}.json"
        assert eval_cli.main(["--checkpoint", str(ckpt), "--split", "test", "--max-tokens", "240",
                              "--batch-size", "1", "--tgt-len", str(tgt_len), "--out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0]["tokens"] == results[1]["tokens"] == 240
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)


def test_eval_missing_checkpoint(tmp_path, capsys):
    import eval as eval_cli

    assert eval_cli.main(["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_generate_script(ckpt):
    proc = subprocess.run(
        [sys.executable, "scripts/generate.py", "--checkpoint", str(ckpt), "--prompt", "The ",
         "--max-new-tokens", "20", "--top-k", "5", "--seed", "1"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The ") and len(proc.stdout.strip()) > 4


def test_a_checkpoint_with_memory_options_needs_no_flag_repeated(tmp_path, capsys):
    """Trained with every memory option: eval.py, generate.py, the passkey eval and the memory probe
    take them from the checkpoint; the run resumes from its own config.yaml with no option flag."""
    import eval as eval_cli
    import train
    from infiniattention.training.checkpoint import load

    run = tmp_path / "run"
    options = {"model.write_gate": True, "model.normalizer": "corrected", "model.feature": "dpfp",
               "model.key_norm": "l2", "model.dropout": 0.0}
    assert run_train(run, **{"train.max_steps": 4, **options}) == 0
    ckpt = run / "ckpt_00000004.pt"
    assert load(ckpt)["config"]["model"]["feature"] == "dpfp"
    out = tmp_path / "r.json"
    assert eval_cli.main(["--checkpoint", str(ckpt), "--split", "valid", "--max-tokens", "200",
                          "--out", str(out)]) == 0
    assert math.isfinite(json.loads(out.read_text())["bpc"])
    # resume from the run's own resolved config: the options come with it
    assert train.main(["--config", str(run / "config.yaml"), "--run-dir", str(run), "--no-progress",
                       "--set", "train.max_steps=6"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    capsys.readouterr()
    last = str(run / "ckpt_00000006.pt")
    for cmd in (["generate.py", "--checkpoint", last, "--prompt", "The ", "--max-new-tokens", "10"],
                ["passkey.py", "eval", "--checkpoint", last, "--lengths", "300", "--depths", "0",
                 "--instances", "1", "--out-dir", str(tmp_path / "pk")],
                ["memory_probe.py", "--checkpoint", last, "--lengths", "300", "--keys", "1", "--out-dir",
                 str(tmp_path / "probe")]):
        proc = subprocess.run([sys.executable, f"scripts/{cmd[0]}", *cmd[1:]], cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (cmd[0], proc.stderr)
    assert json.loads((tmp_path / "pk" / "passkey.json").read_text())["memory_label"] == \
        "infini+gate+corrected+dpfp+l2"
    assert json.loads((tmp_path / "probe" / "memory_probe.json").read_text())["memory"] == \
        "infini+gate+corrected+dpfp+l2"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_eval_stopped_by_a_signal_says_so_in_one_line(ckpt, monkeypatch, capsys, signum):
    """A real SIGTERM (or SIGHUP) to the process while it evaluates: one line, 143 (129), and the handler
    before the evaluation is back afterwards."""
    import eval as eval_cli
    from infiniattention.commands import eval as eval_cmd

    before = signal.getsignal(signum)
    monkeypatch.setattr(eval_cmd, "evaluate", signalled(signum))
    assert eval_cli.main(["--checkpoint", str(ckpt), "--split", "valid"]) == 128 + signum
    assert capsys.readouterr().err == (f"error: stopped by {signum.name}; nothing was left half-written: run "
                                       "the same command again\n")
    assert signal.getsignal(signum) is before


def test_generate_stopped_by_sigterm_says_so_in_one_line(ckpt):
    proc = subprocess.Popen(
        [sys.executable, "scripts/generate.py", "--checkpoint", str(ckpt), "--max-new-tokens", "10000000"],
        cwd=REPO, env={**subprocess_env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout.read(5)  # it is generating
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err == "error: stopped by SIGTERM; nothing was left half-written: run the same command again\n"


def test_eval_results_record_holds_the_result_and_the_checkpoints_config(ckpt, tmp_path, capsys):
    import eval as eval_cli

    rec_path = tmp_path / "results" / "demo" / "test.json"
    assert eval_cli.main(["--checkpoint", str(ckpt), "--split", "test", "--max-tokens", "200", "--batch-size",
                          "2", "--tgt-len", "16", "--out", str(tmp_path / "r.json"),
                          "--results", str(rec_path)]) == 0
    assert f"wrote {rec_path}" in capsys.readouterr().out
    rec = json.loads(rec_path.read_text())
    assert rec["kind"] == "eval" and rec["result"] == json.loads((tmp_path / "r.json").read_text())
    assert rec["config"]["model"]["n_layer"] == 2 and rec["provenance"]["wall_s"] >= 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert eval_cli.main(["--checkpoint", str(ckpt), "--results", str(blocker / "test.json")]) == 2
    assert "--results" in capsys.readouterr().err  # refused before the evaluation
