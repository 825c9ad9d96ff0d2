"""Compressive memory (eqs 7-9) against the float64 reference in tests/reference.py."""

from __future__ import annotations

import pytest
import torch
from reference import linear_attention_read, memory_read_one, memory_write
from reference import sigma as ref_sigma

from infiniattention.memory import CompressiveMemory, MemoryState, delta_write, memory_read, sigma

B, H, DK, DV, N = 2, 3, 4, 5, 6


def rand(*shape, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def ref_state_after(ks, vs, rule, eps=1e-6):
    """Reference M, z per (b, h) after writing the segments ks, vs: lists of [B, H, N, d] tensors."""
    ms = torch.zeros(B, H, DK, DV, dtype=torch.float64)
    zs = torch.zeros(B, H, DK, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            m, z = ms[b, h], zs[b, h]
            for k, v in zip(ks, vs, strict=True):
                m, z = memory_write(k[b, h].double(), v[b, h].double(), m, z, rule, eps)
            ms[b, h], zs[b, h] = m, z
    return ms, zs


def test_sigma_is_elu_plus_one_and_positive():
    x = rand(1000, seed=1, dtype=torch.float64, scale=5.0)
    x[:3] = torch.tensor([0.0, -50.0, 50.0], dtype=torch.float64)
    y = sigma(x)
    torch.testing.assert_close(y, ref_sigma(x), rtol=0, atol=1e-15)
    assert (y >= 0).all()  # ELU(x) + 1 rounds to 0 below x ~ -37 in float64; never negative
    assert (y[x > -20] > 0).all()


def test_memory_state_zeros_is_float32_and_empty():
    st = MemoryState.zeros(B, H, DK, DV)
    assert st.M.shape == (B, H, DK, DV) and st.z.shape == (B, H, DK)
    assert st.M.dtype == torch.float32 and st.z.dtype == torch.float32
    assert not st.M.any() and not st.z.any()


def test_read_of_empty_memory_is_exactly_zero_with_finite_gradient():
    mem = CompressiveMemory(H, DK, DV, batch_size=B)
    q = rand(B, H, 7, DK, seed=2, scale=3.0).requires_grad_()
    out = mem.read(q)
    assert out.shape == (B, H, 7, DV) and out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_first_delta_write_equals_linear_write():
    """With M = 0 the retrieved term of eq 9 is exactly 0 (not NaN): delta == linear."""
    k, v = rand(B, H, N, DK, seed=3), rand(B, H, N, DV, seed=4)
    lin, dlt = CompressiveMemory(H, DK, DV, batch_size=B), CompressiveMemory(H, DK, DV, batch_size=B)
    lin.write(k, v, rule="linear")
    dlt.write(k, v, rule="delta")
    assert torch.isfinite(dlt.state.M).all()
    torch.testing.assert_close(dlt.state.M, lin.state.M, rtol=0, atol=0)
    torch.testing.assert_close(dlt.state.z, lin.state.z, rtol=0, atol=0)


@pytest.mark.parametrize("rule", ["linear", "delta"])
def test_reads_and_writes_match_reference(rule):
    """Four segments: every read uses the memory before the segment's write; M, z after each write."""
    mem = CompressiveMemory(H, DK, DV, batch_size=B)
    ks = [rand(B, H, N, DK, seed=10 + s) for s in range(4)]
    vs = [rand(B, H, N, DV, seed=20 + s) for s in range(4)]
    qs = [rand(B, H, N, DK, seed=30 + s) for s in range(4)]
    for s in range(4):
        m_ref, z_ref = ref_state_after(ks[:s], vs[:s], rule)
        torch.testing.assert_close(mem.state.M.double(), m_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mem.state.z.double(), z_ref, rtol=1e-5, atol=1e-5)
        got = mem.read(qs[s])
        want = torch.empty(B, H, N, DV, dtype=torch.float64)
        for b in range(B):
            for h in range(H):
                for t in range(N):
                    want[b, h, t] = memory_read_one(qs[s][b, h, t].double(), m_ref[b, h], z_ref[b, h], 1e-6)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        mem.write(ks[s], vs[s], rule=rule)
    assert mem.state.M.dtype == torch.float32 and mem.state.z.dtype == torch.float32


def test_functional_read_and_delta_write_match_reference_float64():
    M = rand(B, H, DK, DV, seed=5, dtype=torch.float64)
    z = rand(B, H, DK, seed=6, dtype=torch.float64).abs() + 0.5
    q, k, v = (rand(B, H, N, d, seed=7 + i, dtype=torch.float64) for i, d in enumerate((DK, DK, DV)))
    got_read = memory_read(q, M, z, 1e-6)
    new_m, new_z = delta_write(M, z, k, v, 1e-6)
    for b in range(B):
        for h in range(H):
            for t in range(N):
                want = memory_read_one(q[b, h, t], M[b, h], z[b, h], 1e-6)
                torch.testing.assert_close(got_read[b, h, t], want, rtol=0, atol=1e-12)
            m_ref, z_ref = memory_write(k[b, h], v[b, h], M[b, h], z[b, h], "delta", 1e-6)
            torch.testing.assert_close(new_m[b, h], m_ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(new_z[b, h], z_ref, rtol=0, atol=1e-12)


def test_delta_rewrite_of_same_pair_leaves_memory_unchanged():
    """Eq 9: after writing (k, v) into an empty memory the read of k returns v, so a second write of
    the same pair adds nothing to M, while z still grows (the linear rule would double M)."""
    k = rand(1, 1, 1, DK, seed=8, scale=2.0)
    v = rand(1, 1, 1, DV, seed=9)
    mem = CompressiveMemory(1, DK, DV, batch_size=1)
    mem.write(k, v, rule="delta")
    m1, z1 = mem.state.M.clone(), mem.state.z.clone()
    torch.testing.assert_close(mem.read(k), v, rtol=1e-5, atol=1e-6)
    mem.write(k, v, rule="delta")
    torch.testing.assert_close(mem.state.M, m1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mem.state.z, 2 * z1, rtol=1e-6, atol=0)
    assert (mem.state.z > z1).all()

    lin = CompressiveMemory(1, DK, DV, batch_size=1)
    lin.write(k, v, rule="linear")
    lin.write(k, v, rule="linear")
    torch.testing.assert_close(lin.state.M, 2 * m1, rtol=1e-6, atol=0)


def test_linear_read_is_normalised_linear_attention_over_earlier_segments():
    """Eq 7 after eq 8 writes == sum_j s(q).s(k_j) v_j / sum_j s(q).s(k_j) over all earlier tokens."""
    mem = CompressiveMemory(H, DK, DV, batch_size=B)
    ks = [rand(B, H, N, DK, seed=40 + s) for s in range(3)]
    vs = [rand(B, H, N, DV, seed=50 + s) for s in range(3)]
    for k, v in zip(ks, vs, strict=True):
        mem.write(k, v, rule="linear")
    q = rand(B, H, 5, DK, seed=60, scale=2.0)
    got = mem.read(q)
    all_k, all_v = torch.cat(ks, dim=2).double(), torch.cat(vs, dim=2).double()
    for b in range(B):
        for h in range(H):
            for t in range(5):
                want = linear_attention_read(q[b, h, t].double(), all_k[b, h], all_v[b, h])
                torch.testing.assert_close(got[b, h, t].double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["linear", "delta"])
def test_write_is_differentiable_and_not_in_place(rule):
    mem = CompressiveMemory(H, DK, DV, batch_size=B)
    k0 = rand(B, H, N, DK, seed=70).requires_grad_()
    v0 = rand(B, H, N, DV, seed=71).requires_grad_()
    mem.write(rand(B, H, N, DK, seed=72), rand(B, H, N, DV, seed=73), rule=rule)
    before = mem.state
    m_copy, z_copy = before.M.clone(), before.z.clone()
    mem.write(k0, v0, rule=rule)
    assert mem.state.M is not before.M
    assert torch.equal(before.M, m_copy) and torch.equal(before.z, z_copy)
    mem.read(rand(B, H, 3, DK, seed=74)).square().sum().backward()
    assert k0.grad is not None and v0.grad is not None
    assert k0.grad.abs().sum() > 0 and v0.grad.abs().sum() > 0
    assert torch.isfinite(k0.grad).all() and torch.isfinite(v0.grad).all()


@pytest.mark.parametrize("rule", ["linear", "delta"])
def test_state_is_kept_and_updated_in_float32_under_bf16_autocast(rule):
    """bf16 inputs under autocast: M, z stay float32 and are computed in float32 (the same values as
    a float32 run on the same bf16 inputs, not bf16-rounded increments); reads return float32."""
    ks = [rand(B, H, N, DK, seed=80 + s, dtype=torch.bfloat16) for s in range(3)]
    vs = [rand(B, H, N, DV, seed=90 + s, dtype=torch.bfloat16) for s in range(3)]
    mem, mem32 = CompressiveMemory(H, DK, DV, batch_size=B), CompressiveMemory(H, DK, DV, batch_size=B)
    for k, v in zip(ks, vs, strict=True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mem.write(k, v, rule=rule)
            out = mem.read(k)
        mem32.write(k.float(), v.float(), rule=rule)
        out32 = mem32.read(k.float())
    assert mem.state.M.dtype == torch.float32 and mem.state.z.dtype == torch.float32
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(mem.state.M, mem32.state.M, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mem.state.z, mem32.state.z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, out32, rtol=1e-5, atol=1e-5)


def test_unknown_rule_is_rejected():
    mem = CompressiveMemory(H, DK, DV, batch_size=B)
    with pytest.raises(ValueError, match="delta.*linear|linear.*delta"):
        mem.write(rand(B, H, N, DK), rand(B, H, N, DV), rule="hebbian")
