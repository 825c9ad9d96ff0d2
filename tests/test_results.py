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
