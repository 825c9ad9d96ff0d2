"""scripts/context_curve.py, scripts/plot_gates.py and scripts/compare_table.py on a tiny checkpoint, in
seconds, with and without matplotlib (without it they still write their tables and say how to get plots)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
from test_train_utils import REPO, run_train

SCRIPTS = REPO / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    out = {}
    for memory in ("infini", "none"):
        assert run_train(root / memory, **{"train.max_steps": 4, "model.dropout": 0.0, "optim.lr": 0.01,
                                           "train.log_interval": 1, "model.memory": memory}) == 0
        out[memory] = root / memory
    return out


@pytest.fixture(params=["with", "without"])
def matplotlib_state(request, monkeypatch):
    if request.param == "without":
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    else:
        pytest.importorskip("matplotlib")
    return request.param


def test_context_curve(runs, tmp_path, capsys, matplotlib_state):
    curve = load_script("context_curve")
    ckpt = runs["infini"] / "ckpt_00000004.pt"
    assert curve.main(["--checkpoint", str(ckpt), "--max-tokens", "1200", "--batch-size", "2",
                       "--by-index-k", "4", "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((tmp_path / "context_curve.json").read_text())
    # ~600 targets per lane, segments of 16: 38 segments, K = 1, 2, ..., 32 and the full stream
    assert [row["K"] for row in res["curve"]] == [1, 2, 4, 8, 16, 32, None]
    assert len({row["tokens"] for row in res["curve"]}) == 1 and res["curve"][0]["tokens"] >= 1200
    assert len(res["by_index"]) == 4 and res["by_index_gain"][0] == 0.0  # segment 0 never has memory
    assert "| full stream (never) |" in (tmp_path / "context_curve.md").read_text()
    if matplotlib_state == "with":
        assert (tmp_path / "context_curve.png").stat().st_size > 1000
    else:
        assert not (tmp_path / "context_curve.png").exists() and "pip install -e .[plots]" in printed


def test_context_curve_checks_its_out_dir_before_the_work(runs, tmp_path, capsys):
    curve = load_script("context_curve")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert curve.main(["--checkpoint", str(runs["none"] / "ckpt_00000004.pt"), "--out-dir",
                       str(blocker)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: --out-dir {blocker} is not a folder" and "K =" not in captured.out
    assert curve.main(["--checkpoint", str(tmp_path / "missing.pt"), "--out-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_context_curve_is_flat_without_memory(runs, tmp_path):
    curve = load_script("context_curve")
    assert curve.main(["--checkpoint", str(runs["none"] / "ckpt_00000004.pt"), "--max-tokens", "800",
                       "--batch-size", "2", "--out-dir", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "context_curve.json").read_text())
    values = [row["bpc"] for row in res["curve"]]
    assert max(values) - min(values) < 1e-9  # memory none: resets change nothing
    assert max(abs(g) for g in res["by_index_gain"]) < 1e-9


def test_plot_gates(runs, tmp_path, capsys, matplotlib_state):
    gates = load_script("plot_gates")
    assert gates.main(["--checkpoint", str(runs["infini"] / "ckpt_00000004.pt"), "--run-dir",
                       str(runs["infini"]), "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "gates.json").read_text())
    assert len(saved["gates"]) == 2 and len(saved["gates"][0]) == 2  # 2 layers x 2 heads
    assert all(0.0 < g < 1.0 for row in saved["gates"] for g in row)
    traj = json.loads((tmp_path / "gate_trajectories.json").read_text())
    assert sorted(traj) == [f"gate/layer{i}/head{h}" for i in range(2) for h in range(2)]
    assert [s for s, _ in traj["gate/layer0/head0"]] == [1, 2, 3, 4]
    assert traj["gate/layer1/head1"][-1][1] == pytest.approx(saved["gates"][1][1], abs=1e-6)
    assert "| layer | head 0 | head 1 | min | max |" in printed
    if matplotlib_state == "with":
        assert (tmp_path / "gates.png").stat().st_size > 1000
        assert (tmp_path / "gate_trajectories.png").stat().st_size > 1000
    else:
        assert not (tmp_path / "gates.png").exists() and "pip install -e .[plots]" in printed


def test_plot_gates_needs_an_infini_checkpoint(runs, capsys):
    gates = load_script("plot_gates")
    assert gates.main(["--checkpoint", str(runs["none"] / "ckpt_00000004.pt")]) == 1
    assert "only infini models have gates" in capsys.readouterr().err


def test_compare_table(runs, tmp_path):
    """The table of compare_memory.sh from finished runs (OUT/ROW/seed-SEED): one row per memory row in
    the order asked, numbers from the runs, two seeds of infini compared with none seed by seed."""
    curve = load_script("context_curve")
    layout = {("infini", 1111): runs["infini"], ("infini", 2222): runs["infini"],
              ("none", 1111): runs["none"]}
    for (memory, seed), run in layout.items():
        dst = tmp_path / memory / f"seed-{seed}"
        shutil.copytree(run, dst)
        shutil.copy(dst / "ckpt_00000004.pt", dst / "best.pt")
        cfg = (dst / "config.yaml").read_text().replace("seed: 1111", f"seed: {seed}")
        (dst / "config.yaml").write_text(cfg)
        assert curve.main(["--checkpoint", str(dst / "best.pt"), "--max-tokens", "400", "--batch-size", "2",
                           "--out-dir", str(dst)]) == 0
    table = load_script("compare_table")
    assert table.main([str(tmp_path), "--rows", "none,infini,xl", "--command", "test"]) == 0
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert [r["memory"] for r in rows] == ["none", "infini", "infini"]
    none, infini, _ = rows
    assert infini["parameters"] == none["parameters"] + 2 * 2  # one gate per head
    # infini: M [2, 16, 16] + z [2, 16] per layer (float32) + the unfinished segment's k, v
    partial = (infini["test_tokens"] // 2) % 16
    assert infini["state_bytes_per_lane"] == 2 * 4 * (2 * 16 * 16 + 2 * 16 + 2 * 2 * partial * 16)
    assert none["state_bytes_per_lane"] == 2 * 4 * 2 * 2 * partial * 16
    assert none["memory_gain"] == pytest.approx(0.0, abs=1e-9)
    md = (tmp_path / "compare.json").parent
    text = table.table(md, ["none", "infini"], "test")[0]
    assert "| `infini` | 2 |" in text and "| `none` | 1 |" in text
    gain = none["test_bpc"] - infini["test_bpc"]
    assert f"- `infini`: mean {gain:+.4f}, per seed {gain:+.4f}" in text  # only seed 1111 has a none run


def test_compare_plan_lists_every_run_and_refuses_unknown_rows():
    table = load_script("compare_table")
    lines = table.plan("infini+gate+l2,xl", "3,4", str(REPO / "configs" / "tiny.yaml"), [])
    assert lines == ["infini+gate+l2\t3\t--set model.memory=infini --set model.write_gate=true "
                     "--set model.key_norm=l2"] + ["infini+gate+l2\t4\t--set model.memory=infini "
                     "--set model.write_gate=true --set model.key_norm=l2"] + \
        [f"xl\t{s}\t--set model.memory=xl --set model.mem_len=64" for s in (3, 4)]
    for bad in ("infini+bogus", "xl+gate", "infini+gate+gate", "compressive"):
        with pytest.raises(ValueError, match="unknown row"):
            table.plan(bad, "", str(REPO / "configs" / "tiny.yaml"), [])
    proc = subprocess.run(["bash", str(SCRIPTS / "compare_memory.sh"), "--rows", "infini+bogus"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown row 'infini+bogus'" in proc.stderr


def test_compare_memory_rejects_bad_arguments():
    for args in (["--budget-steps", "0"], ["--budget-steps", "x"], ["--bogus"], ["--table", "Ab/c"],
                 ["--rows", "infini,none", "--label", "lr10"], ["--rows", "infini", "--label", "../x"]):
        proc = subprocess.run(["bash", str(SCRIPTS / "compare_memory.sh"), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("error:"), proc.stderr


def test_passkey_table_gives_the_lowest_accuracy_over_the_seeds(tmp_path):
    """scripts/passkey_table.py on the folder layout of passkey_cpu.sh: each cell is the lowest accuracy
    over the seeds with their mean in brackets; the probe's layer is the one with the largest trace."""
    def evaluation(run, name, length, accs, keys=10, wraps=False):
        folder = run / "eval" / name
        folder.mkdir(parents=True)
        cells = [{"depth": d, "accuracy": a} for d, a in zip((0.0, 1.0), accs, strict=True)]
        haystack = "enwik8-sample/train" if name.startswith("text-train") else "filler"
        folder.joinpath("passkey.json").write_text(json.dumps(
            {"depths": [0.0, 1.0], "instances": keys, "haystack": haystack,
             "rows": [{"length": length, "cells": cells, "haystack_wraps": wraps}]}))

    def probe(run, traces):
        folder = run / "eval" / "probe-filler"
        folder.mkdir(parents=True)
        rows = [{"length": n, "gate": {"1": 0.01}, "layers": [{"trace": 0.001}, {"trace": t}]}
                for n, t in zip((2048, 2**20), traces, strict=True)]
        folder.joinpath("memory_probe.json").write_text(json.dumps({"rows": rows, "keys": 3}))

    for seed, accs, traces in ((1, (1.0, 0.9), (0.8, 0.4)), (2, (0.7, 1.0), (0.6, 0.2))):
        run = tmp_path / "infini+gate" / f"seed-{seed}"
        evaluation(run, "filler", 8192, accs, keys=100)
        evaluation(run, "filler-long", 2**20, (0.5, 0.5))
        evaluation(run, "text-train-long", 2**20, (0.0, 0.1), wraps=True)
        probe(run, traces)
    table = load_script("passkey_table")
    assert table.main([str(tmp_path), "--rows", "infini,infini+gate"]) == 0
    text = (tmp_path / "passkey_tables.md").read_text()
    assert "| 8K | 100 | 0.70 (0.85) | 0.90 (0.95) | 0.90 |" in text
    assert "| 1M | 10 | 0.50 (0.50) | 0.50 (0.50) | 0.50 |" in text
    assert "| 1M (text repeats) | 10 | 0.00 (0.00) | 0.10 (0.10) | 0.05 |" in text
    assert "| `infini+gate` | filler | 1 | 0.7 | 0.3 | 2.33x | 0.01 |" in text
    assert "key at depth 0, 3 keys" in text
    assert "`infini`," not in text  # a row without runs is left out


def test_records_of_the_curve_the_gates_and_a_compare_row(runs, tmp_path, capsys):
    """--results of context_curve.py and plot_gates.py, and compare_table.py --record: results records
    with the numbers the scripts write next to the run, and a table rendered from them equals the one
    rendered from the runs."""
    from infiniattention.training.results import read_result

    gated = tmp_path / "gated"
    assert run_train(gated, **{"train.max_steps": 3, "model.write_gate": True, "train.log_interval": 1}) == 0
    res = tmp_path / "results"
    curve, gates = load_script("context_curve"), load_script("plot_gates")
    table = load_script("compare_table")
    for name, run in (("infini", runs["infini"]), ("infini+gate", gated)):
        dst = tmp_path / "runs" / name / "seed-1111"
        shutil.copytree(run, dst)
        shutil.copy(sorted(dst.glob("ckpt_*.pt"))[-1], dst / "best.pt")
        rec = res / "compare" / name / "seed-1111"
        assert curve.main(["--checkpoint", str(dst / "best.pt"), "--max-tokens", "400", "--batch-size", "2",
                           "--out-dir", str(dst), "--results", str(rec / "context_curve.json")]) == 0
        assert table.main(["--record", str(dst), "--results", str(rec / "test.json")]) == 0
        assert gates.main(["--checkpoint", str(dst / "best.pt"), "--run-dir", str(dst), "--out-dir",
                           str(tmp_path / "g" / name), "--results",
                           str(res / "gates" / name / "seed-1111" / "gates.json")]) == 0
        curve_rec = read_result(rec / "context_curve.json")
        assert curve_rec["kind"] == "context_curve"
        assert curve_rec["result"] == json.loads((dst / "context_curve.json").read_text())
        row = read_result(rec / "test.json")
        assert row["kind"] == "compare" and row["result"] == table.row(dst)
        assert row["config"]["model"]["write_gate"] is (name == "infini+gate")
        g = read_result(res / "gates" / name / "seed-1111" / "gates.json")
        assert g["kind"] == "gates" and g["result"]["gates"] == json.loads(
            (tmp_path / "g" / name / "gates.json").read_text())["gates"]
    assert read_result(res / "gates" / "infini" / "seed-1111" / "gates.json")["result"]["write_gate"] is None
    gated_rec = read_result(res / "gates" / "infini+gate" / "seed-1111" / "gates.json")
    write_gate = gated_rec["result"]["write_gate"]
    assert sorted(write_gate) == ["0", "1"] and all(0 < v < 1 for v in write_gate.values())
    names = ["infini", "infini+gate"]
    from_records = table.render_full(table.load_runs(res / "compare", names))
    from_runs = table.render_full(table.load_runs(tmp_path / "runs", names))
    assert from_records == from_runs and "| `infini+gate` | 1 |" in from_records
    capsys.readouterr()
    assert table.main([str(res / "compare"), "--rows", ",".join(names)]) == 0
    assert not (res / "compare" / "compare.json").exists()  # a results folder holds records only
    assert table.main(["--record", str(tmp_path / "runs" / "infini" / "seed-1111")]) == 2
