"""scripts/memory_probe.py: the trace of a passkey in the compressive memory, on a tiny checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_passkey import _enwik8_vocab

from infiniattention import InfiniTransformerLM, ModelConfig
from infiniattention.training import checkpoint as ckpt_io
from infiniattention.training.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "memory_probe.py"


def _checkpoint(path: Path, memory: str = "infini", gate_bias: float | None = None) -> Path:
    vocab = _enwik8_vocab()
    torch.manual_seed(0)
    options = dict(write_gate=True, feature="dpfp", key_norm="l2") if memory == "infini" else {}
    cfg = ModelConfig(vocab_size=len(vocab), n_layer=2, d_model=16, n_head=2, d_head=8, d_inner=32,
                      segment_len=64, memory=memory, mem_len=64, dropout=0.0, **options)
    model = InfiniTransformerLM(cfg)
    if gate_bias is not None:
        with torch.no_grad():
            for block in model.blocks:
                block.attn.write_gate.weight.zero_()
                block.attn.write_gate.bias.fill_(gate_bias)
    ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "step": 7, "model": model.state_dict(),
                         "config": RunConfig(model=cfg).to_dict(), "vocab": vocab.to_dict(),
                         "vocab_digest": vocab.digest()}, path)
    return path


def _probe(ckpt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--checkpoint", str(ckpt), "--lengths", "512,2k",
                           "--keys", "2", "--device", "cpu", "--out-dir", str(out), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_probe_reports_trace_normaliser_and_gates_per_layer(tmp_path):
    results = tmp_path / "results" / "passkey" / "row" / "seed-1" / "probe.json"
    r = _probe(_checkpoint(tmp_path / "m.pt"), tmp_path / "probe", "--results", str(results))
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "probe" / "memory_probe.json").read_text())
    assert res["memory"] == "infini+gate+dpfp+l2" and [row["length"] for row in res["rows"]] == [512, 2048]
    for row in res["rows"]:
        assert len(row["layers"]) == 2
        for i, layer in enumerate(row["layers"]):
            assert 0 < layer["trace"] and layer["den"] > 0 and len(layer["trace_per_head"]) == 2
            assert 0 < row["gate"][str(i)] < 1 and 0 < row["gate_key"][str(i)] < 1
            hay, key = row["gate_haystack"][str(i)], row["gate_key"][str(i)]
            assert 0 < hay < 1 and row["gate_ratio"][str(i)] == pytest.approx(key / hay)
    md = (tmp_path / "probe" / "memory_probe.md").read_text()
    assert "| 2K |" in md and "carries the key most" in md
    rec = json.loads(results.read_text())  # the same result, with what produced it
    assert rec["kind"] == "memory_probe" and rec["result"] == res
    assert rec["config"]["model"]["write_gate"] is True and "--results" in rec["provenance"]["command"]
    assert rec["provenance"]["machine"]["torch"] == torch.__version__ and rec["provenance"]["wall_s"] > 0


def test_gate_means_count_the_key_sentence_and_the_haystack_apart_across_calls():
    """Token t's write gate logit is t itself: the means over each span are means of known positions,
    whatever the chunking of the stream."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_probe", SCRIPT)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    model = InfiniTransformerLM(ModelConfig(vocab_size=8, n_layer=1, d_model=8, n_head=2, d_head=4,
                                            d_inner=8, segment_len=4, write_gate=True))
    gates = probe._GateMeans(model, (5, 9), [(2, 5), (9, 14)])
    hook = gates._record(0)
    for lo, hi in ((0, 3), (3, 10), (10, 16)):  # calls of 3, 7 and 6 tokens
        logits = torch.arange(lo, hi, dtype=torch.float64).view(1, -1, 1).expand(2, -1, 2) / 4
        hook(None, None, logits)
        gates.advance(hi - lo)

    def mean(positions):
        return float(torch.sigmoid(torch.tensor(positions, dtype=torch.float64) / 4).mean())

    assert gates.means("key")[0] == pytest.approx(mean(range(5, 9)), rel=1e-12)
    assert gates.means("hay")[0] == pytest.approx(mean([*range(2, 5), *range(9, 14)]), rel=1e-12)
    assert gates.means("all")[0] == pytest.approx(mean(range(16)), rel=1e-12)
    gates.close()


def test_a_memory_that_writes_nothing_holds_no_trace(tmp_path):
    """Write gate logits of -1e4 (beta = 0): the memory stays empty, whatever the key."""
    r = _probe(_checkpoint(tmp_path / "m.pt", gate_bias=-1e4), tmp_path / "probe")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "probe" / "memory_probe.json").read_text())
    for row in res["rows"]:
        assert all(layer["trace"] == 0.0 and layer["den"] == 0.0 for layer in row["layers"])


@pytest.mark.parametrize("memory", ["xl", "none"])
def test_probe_needs_an_infini_checkpoint(tmp_path, memory):
    r = _probe(_checkpoint(tmp_path / "m.pt", memory=memory), tmp_path / "probe")
    assert r.returncode == 2 and "the probe reads the compressive memory of an infini checkpoint" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
