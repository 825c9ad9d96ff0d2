"""FastDropout (infiniattention/dropout.py): the drop rate, the scaling, the gradient, the switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infiniattention import InfiniTransformerLM, ModelConfig
from infiniattention.dropout import FastDropout, fast_dropout, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_and_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(1000, 999) + 0.5  # an odd number of elements: the last word is cut
    y = fast_dropout(x, p)
    dropped = (y == 0).double().mean().item()
    q = round(p * 2**16) / 2**16
    sd = (q * (1 - q) / x.numel()) ** 0.5
    assert abs(dropped - q) < 5 * sd  # binomial: 5 standard deviations
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - q), rtol=1e-6, atol=0)


def test_masks_are_independent_of_position() -> None:
    """Each of the three 16-bit lanes of a word drops at the same rate (the fourth is never used)."""
    torch.manual_seed(1)
    y = fast_dropout(torch.ones(3 * 400_000), 0.25).view(-1, 3)
    rates = (y == 0).double().mean(dim=0)
    assert (rates - 0.25).abs().max() < 5 * (0.25 * 0.75 / 400_000) ** 0.5


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = fast_dropout(x, 0.3)
    y.sum().backward()
    q = round(0.3 * 2**16) / 2**16
    torch.testing.assert_close(x.grad, (y != 0).float() / (1 - q), rtol=1e-6, atol=0)


def test_seeded_reproducible_and_identity_in_eval() -> None:
    x = torch.randn(10, 10)
    drop = FastDropout(0.2)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    torch.testing.assert_close(drop(x), a, rtol=0, atol=0)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(fast_dropout(x, 1e-9), x)


def test_model_switch_replaces_every_dropout() -> None:
    cfg = dict(vocab_size=20, n_layer=2, d_model=16, n_head=2, d_head=8, d_inner=32, segment_len=4)
    fast = InfiniTransformerLM(ModelConfig(**cfg, fast_dropout=True))
    plain = InfiniTransformerLM(ModelConfig(**cfg))
    kinds = [type(m) for m in fast.modules() if isinstance(m, nn.Dropout)]
    assert kinds and all(k is FastDropout for k in kinds)
    assert all(type(m) is nn.Dropout for m in plain.modules() if isinstance(m, nn.Dropout))
    assert use_fast_dropout(plain) is plain and not any(type(m) is nn.Dropout for m in plain.modules())
