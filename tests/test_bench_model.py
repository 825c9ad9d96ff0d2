"""bench/bench_model.py at a tiny shape, in seconds: its JSON and its results record."""

from __future__ import annotations

import json
import sys

from test_train_utils import REPO

from infiniattention.training.results import read_result


def test_results_record_holds_the_rows_and_ratios(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "bench"))
    import bench_model

    argv = ["--config", str(REPO / "bench" / "small.yaml"), "--set", "model.n_layer=1", "--set",
            "model.d_model=16", "--set", "model.n_head=2", "--set", "model.d_head=8", "--set",
            "model.d_inner=32", "--set", "model.segment_len=16", "--set", "data.tgt_len=32", "--set",
            "data.batch_size=2", "--modes", "infini,infini+gate,none", "--rounds", "1", "--steps", "1",
            "--warmup", "0", "--no-memory", "--device", "cpu", "--out", str(tmp_path / "b.json"),
            "--results", str(tmp_path / "results" / "speed" / "tiny.json")]
    monkeypatch.setattr(sys, "argv", ["bench/bench_model.py", *argv])
    bench_model.main(argv)
    capsys.readouterr()
    full = json.loads((tmp_path / "b.json").read_text())
    rec = read_result(tmp_path / "results" / "speed" / "tiny.json")
    assert rec["kind"] == "bench_model" and rec["config"] == full["config"]
    assert rec["result"]["rows"] == full["rows"] and rec["result"]["ratios"] == full["ratios"]
    assert [r["variant"] for r in rec["result"]["rows"]] == ["infini", "infini+gate", "none"]
    assert "time_infini+gate_over_infini" in rec["result"]["ratios"]
    assert rec["provenance"]["command"].startswith("bench/bench_model.py --config")
