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
    """The table of compare_memory.sh from finished runs: one row per mode, numbers from the runs."""
    curve = load_script("context_curve")
    for memory, run in runs.items():
        dst = tmp_path / memory
        shutil.copytree(run, dst)
        shutil.copy(dst / "ckpt_00000004.pt", dst / "best.pt")
        assert curve.main(["--checkpoint", str(dst / "best.pt"), "--max-tokens", "400", "--batch-size", "2",
                           "--out-dir", str(dst)]) == 0
    table = load_script("compare_table")
    assert table.main([str(tmp_path), "--command", "test"]) == 0
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert [r["memory"] for r in rows] == ["infini", "none"]
    infini, none = rows
    assert infini["parameters"] == none["parameters"] + 2 * 2  # one gate per head
    # infini: M [2, 16, 16] + z [2, 16] per layer (float32) + the unfinished segment's k, v
    partial = (infini["test_tokens"] // 2) % 16
    assert infini["state_bytes_per_lane"] == 2 * 4 * (2 * 16 * 16 + 2 * 16 + 2 * 2 * partial * 16)
    assert none["state_bytes_per_lane"] == 2 * 4 * 2 * 2 * partial * 16
    assert none["memory_gain"] == pytest.approx(0.0, abs=1e-9)


def test_compare_memory_rejects_bad_arguments():
    for args in (["--budget-steps", "0"], ["--budget-steps", "x"], ["--bogus"]):
        proc = subprocess.run(["bash", str(SCRIPTS / "compare_memory.sh"), *args], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("error:"), proc.stderr
