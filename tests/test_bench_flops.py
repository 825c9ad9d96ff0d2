"""The analytic FLOP count of bench/flops.py against torch's own FLOP counter.

``torch.utils.flop_counter.FlopCounterMode`` counts every matmul and batched matmul of a real forward;
the CPU's fused SDPA kernel is added to it with torch's own SDPA formula (a dense window), so the
``dense`` count must equal it exactly; the ``causal`` count (the MFU's model FLOPs) differs only in
the attention pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from flops import StepShape, forward_flops  # noqa: E402

from infiniattention import InfiniTransformerLM, ModelConfig  # noqa: E402


def _cpu_flash_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_flops}
SHAPE = dict(vocab_size=40, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=48, segment_len=8)


def counted(cfg: ModelConfig, B: int, T: int, state_steps: int = 0) -> int:
    torch.manual_seed(0)
    model = InfiniTransformerLM(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (B, T))
    state = model.init_state(B)
    with torch.no_grad():
        for _ in range(state_steps):  # fill the xl cache to its steady state
            state = model(tokens, targets=tokens, state=state).state
        with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as fc:
            model(tokens, targets=tokens, state=state)
    return fc.get_total_flops()


@pytest.mark.parametrize("kw", [
    dict(memory="none", pos="rope"),
    dict(memory="infini", update="delta", pos="rope"),
    dict(memory="infini", update="linear", pos="none"),
    dict(memory="infini", update="delta", pos="rope", write_gate=True, normalizer="corrected", key_norm="l2"),
    dict(memory="infini", update="delta", pos="rope", feature="dpfp", normalizer="corrected"),
    dict(memory="infini", update="linear", pos="none", feature="dpfp", write_gate=True),
    dict(memory="infini", update="delta", pos="none", segment_len=32),
    dict(memory="infini", update="delta", pos="rope", normalizer="none", key_norm="l2", write_gate=True),
    dict(memory="infini", update="delta", pos="rope", normalizer="none", key_norm="l2", feature="dpfp"),
])
@pytest.mark.parametrize("T", [8, 24])
def test_dense_count_matches_torch_flop_counter(kw: dict, T: int) -> None:
    cfg = ModelConfig(**{**SHAPE, **kw})
    assert forward_flops(cfg, StepShape(3, T), "dense")["total"] == counted(cfg, 3, T)


def test_causal_count_is_dense_minus_masked_pairs() -> None:
    cfg = ModelConfig(**SHAPE, memory="none", pos="rope")
    dense = forward_flops(cfg, StepShape(2, 24), "dense")
    causal = forward_flops(cfg, StepShape(2, 24), "causal")
    masked_pairs = 2 * 2 * 3 * (8 * 7 // 2)  # lanes x heads x segments x pairs above the diagonal
    assert dense["attention"] - causal["attention"] == 2 * cfg.n_layer * 2 * 16 * masked_pairs
    assert dense["projections"] == causal["projections"] and dense["ffn"] == causal["ffn"]
