"""infiniattention/training/results.py: the records that results/ holds."""

from __future__ import annotations

import json

import pytest
import torch

from infiniattention.training import results


def test_a_record_round_trips_with_its_provenance(tmp_path):
    rec = results.record("demo", {"test_bpc": 2.5}, config={"model": {"n_layer": 2}}, wall_s=12.345,
                         command="bash scripts/demo.sh")
    path = results.write_result(tmp_path / "a" / "b" / "test.json", rec)
    back = results.read_result(path)
    assert back == rec and back["result"] == {"test_bpc": 2.5}
    prov = back["provenance"]
    assert prov["command"] == "bash scripts/demo.sh" and prov["wall_s"] == 12.35
    assert prov["machine"]["torch"] == torch.__version__ and prov["machine"]["cores"] >= 1
    assert prov["commit"] == "unknown" or len(prov["commit"]) == 40
    assert [p.name for p in path.parent.iterdir()] == ["test.json"]  # no temporary file left


def test_command_line_names_a_program_of_the_checkout_relative_to_it():
    argv = [str(results.ROOT / "scripts" / "passkey.py"), "eval", "--lengths", "1k,2k", "--note", "a b"]
    assert results.command_line(argv) == "scripts/passkey.py eval --lengths 1k,2k --note 'a b'"


@pytest.mark.parametrize("text", ["not json", json.dumps([1, 2]), json.dumps({"schema": 99, "result": {}})])
def test_reading_something_else_names_the_file(tmp_path, text):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="x.json"):
        results.read_result(path)


def test_a_script_that_runs_the_program_is_recorded_as_via(monkeypatch):
    monkeypatch.delenv(results.VIA_ENV, raising=False)
    assert "via" not in results.record("eval", {}, config=None, wall_s=1)["provenance"]
    monkeypatch.setenv(results.VIA_ENV, "bash scripts/demo.sh")
    prov = results.record("eval", {}, config=None, wall_s=1, command="eval.py --split test")["provenance"]
    assert prov["via"] == "bash scripts/demo.sh" and prov["command"] == "eval.py --split test"


def test_find_records_names_table_row_and_seed(tmp_path):
    rec = results.record("eval", {"bpc": 1.0}, config=None, wall_s=1)
    for rel in ("demo/test.json", "passkey/infini+gate+sp/seed-2222/filler-32k.json",
                "passkey/infini/seed-1111/probe-filler.json"):
        results.write_result(tmp_path / rel, rec)
    (tmp_path / "README.md").write_text("not a record")
    found = results.find_records(tmp_path)
    assert [(f.table, f.row, f.seed, f.name) for f in found] == [
        ("demo", None, None, "test"), ("passkey", "infini", 1111, "probe-filler"),
        ("passkey", "infini+gate+sp", 2222, "filler-32k")]
    assert found[0].result == {"bpc": 1.0}
    assert [f.name for f in results.find_records(tmp_path, "passkey")] == ["probe-filler", "filler-32k"]
    assert results.find_records(tmp_path, "speed") == [] and results.find_records(tmp_path / "none") == []
    results.write_result(tmp_path / "passkey" / "infini" / "stray.json", rec)
    with pytest.raises(ValueError, match="stray.json: not in the layout"):
        results.find_records(tmp_path)
