"""RoPE and Transformer-XL relative encodings against the float64 reference in tests/reference.py."""

from __future__ import annotations

import pytest
import torch
from reference import rope_rotate, xl_sinusoid

from infiniattention.positional import RotaryEmbedding, XLRelativePosition


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_rope_matches_reference_rotate_half():
    d = 8
    rope = RotaryEmbedding(d)
    x = rand(2, 3, 7, d, seed=1)
    positions = torch.tensor([0, 1, 2, 5, 6, 100, 4095])
    got = rope(x, positions)
    for i, p in enumerate(positions.tolist()):
        for b in range(2):
            for h in range(3):
                want = rope_rotate(x[b, h, i], p)
                torch.testing.assert_close(got[b, h, i], want, rtol=0, atol=1e-12)


def test_rope_gradient_is_the_inverse_rotation():
    """The written-out backward (rotation by -angle) against autograd through the reference, token by
    token, also for a non-contiguous input (a transposed view, as the layer's heads are)."""
    d = 8
    rope = RotaryEmbedding(d)
    positions = torch.tensor([0, 3, 7, 4095])
    x = rand(2, 4, 3, d, seed=3).transpose(1, 2).requires_grad_()  # [2, 3, 4, d], not contiguous
    grad = rand(2, 3, 4, d, seed=4)
    (got,) = torch.autograd.grad(rope(x, positions), x, grad)
    want = torch.zeros_like(got)
    for i, p in enumerate(positions.tolist()):
        xi = x.detach()[:, :, i].reshape(-1, d)
        for row in range(xi.size(0)):
            leaf = xi[row].clone().requires_grad_()
            (g,) = torch.autograd.grad(rope_rotate(leaf, p), leaf, grad[:, :, i].reshape(-1, d)[row])
            want[:, :, i].view(-1, d)[row] = g
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: rope(t, positions), (x,))


def test_rope_at_offset_zero_is_identity_and_preserves_norm():
    rope = RotaryEmbedding(6)
    x = rand(4, 5, 6, seed=2)
    pos = torch.arange(5)
    torch.testing.assert_close(rope(x, torch.zeros(5, dtype=torch.long)), x, rtol=0, atol=0)
    torch.testing.assert_close(rope(x, pos).norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=0)


def test_rope_scores_depend_only_on_relative_offset():
    rope = RotaryEmbedding(8)
    q, k = rand(1, 8, seed=3), rand(1, 8, seed=4)
    base = (rope(q, torch.tensor([5])) * rope(k, torch.tensor([2]))).sum()
    shifted = (rope(q, torch.tensor([9])) * rope(k, torch.tensor([6]))).sum()
    other = (rope(q, torch.tensor([6])) * rope(k, torch.tensor([2]))).sum()
    torch.testing.assert_close(base, shifted, rtol=0, atol=1e-12)
    assert (base - other).abs() > 1e-6


def test_rope_float32_angles_are_computed_accurately():
    """Angles of large offsets in float32 inputs must not be rounded in half precision."""
    rope = RotaryEmbedding(8)
    x = rand(3, 8, seed=5)
    pos = torch.tensor([0, 511, 2047])
    got = rope(x.float(), pos).double()
    want = torch.stack([rope_rotate(x[i], int(p)) for i, p in enumerate(pos)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_rope_needs_even_head_width():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(5)


def test_xl_sinusoid_matches_reference():
    d_model = 10
    xl = XLRelativePosition(d_model, n_head=2, d_head=3)
    dist = torch.arange(0, 40)
    got = xl.sinusoid(dist, torch.float64)
    assert got.shape == (40, d_model)
    for i in range(40):
        torch.testing.assert_close(got[i], xl_sinusoid(i, d_model), rtol=0, atol=1e-12)


@pytest.mark.parametrize("clamp_len", [-1, 3])
def test_xl_position_scores_match_explicit_formula(clamp_len):
    """(q_i + v_h) . R_h[min(i - j, clamp_len)], R = r_proj(R0); head-major split of r_proj's rows."""
    d_model, n_head, d_head = 8, 2, 3
    xl = XLRelativePosition(d_model, n_head, d_head, clamp_len=clamp_len).double()
    with torch.no_grad():
        xl.r_r_bias.copy_(rand(n_head, d_head, seed=6))
    q = rand(2, n_head, 1, 4, d_head, seed=7)  # [B, H, S, Nq, d]
    q_pos = torch.arange(4, 8)
    k_pos = torch.arange(0, 8)
    got = xl.position_scores(q, q_pos, k_pos)  # [B, H, S, Nq, Nk]
    wr, v = xl.r_proj.weight.detach(), xl.r_r_bias.detach()
    for b in range(2):
        for h in range(n_head):
            for i, qp in enumerate(q_pos.tolist()):
                for j, kp in enumerate(k_pos.tolist()):
                    if kp > qp:
                        continue  # masked by the caller
                    dist = qp - kp if clamp_len <= 0 else min(qp - kp, clamp_len)
                    r = (wr @ xl_sinusoid(dist, d_model))[h * d_head : (h + 1) * d_head]
                    want = torch.dot(q[b, h, 0, i] + v[h], r)
                    torch.testing.assert_close(got[b, h, 0, i, j], want, rtol=0, atol=1e-12)


def test_xl_content_query_adds_u_per_head():
    xl = XLRelativePosition(8, 2, 3).double()
    with torch.no_grad():
        xl.r_w_bias.copy_(rand(2, 3, seed=8))
    q = rand(2, 2, 5, 3, seed=9)
    got = xl.content_query(q)
    for h in range(2):
        torch.testing.assert_close(got[:, h], q[:, h] + xl.r_w_bias[h].detach(), rtol=0, atol=0)


def test_xl_parameters_are_registered():
    xl = XLRelativePosition(8, 2, 3)
    names = dict(xl.named_parameters())
    assert names["r_w_bias"].shape == (2, 3) and names["r_r_bias"].shape == (2, 3)
    assert names["r_proj.weight"].shape == (6, 8)
    assert xl.r_proj.bias is None


def test_xl_position_embedding_dropout():
    """Dropout on the sinusoid before its projection (kimiyoung/transformer-xl drops pos_emb): with an
    identity projection, training mode zeroes entries and scales the rest by 1 / (1 - p); eval mode
    leaves the sinusoid as it is."""
    xl = XLRelativePosition(8, 2, 4, dropout=0.5).double()
    with torch.no_grad():
        xl.r_proj.weight.copy_(torch.eye(8, dtype=torch.float64))
    torch.manual_seed(0)
    clean = xl.eval().embedding(40, torch.device("cpu"))
    torch.testing.assert_close(clean, xl.sinusoid(torch.arange(40), torch.float64), rtol=0, atol=0)
    dropped = xl.train().embedding(40, torch.device("cpu"))
    zero = dropped == 0
    assert 0.3 < zero.double().mean() < 0.7
    torch.testing.assert_close(dropped[~zero], 2 * clean[~zero], rtol=0, atol=1e-15)
