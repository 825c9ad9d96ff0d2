"""Compressive memory (eqs 7-9) against the float64 reference in tests/reference.py."""

from __future__ import annotations

import pytest
import torch
from reference import linear_attention_read, memory_read_one, memory_write
from reference import sigma as ref_sigma

from infiniattention.memory import (
    CompressiveMemory,
    MemoryOptions,
    MemoryState,
    feature_map,
    memory_read,
    sigma,
    write,
)

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
    new_m, new_z = write(M, z, k, v, MemoryOptions(update="delta", eps=1e-6))
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


# ------------------------------------------------------------------------ memory options: reads


SPARSE = [MemoryOptions(update=u, normalizer=n, feature="dpfp", key_norm=k, write_gate=g)
          for u in ("delta", "linear") for n in ("sum", "corrected") for k in ("none", "l2")
          for g in (False, True) if not (n == "corrected" and u == "linear")]


def _sparse_stream(mem: CompressiveMemory, seed: int, segments: int = 20) -> None:
    """Write segments of keys with half their coordinates zeroed (sparse DPFP features); values in
    [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(segments):
        k = torch.randn(1, H, 8, DK, generator=g, dtype=torch.float64)
        k[..., torch.randperm(DK, generator=g)[: DK // 2]] = 0
        v = torch.rand(1, H, 8, DV, generator=g, dtype=torch.float64) * 2 - 1
        beta = torch.rand(1, H, 8, generator=g, dtype=torch.float64) if mem.options.write_gate else None
        mem.write(k, v, rule=mem.options.update, beta=beta)


@pytest.mark.parametrize("opts", SPARSE, ids=lambda o: f"{o.update}-{o.normalizer}-{o.feature}-{o.key_norm}-"
                                                         f"{'gate' if o.write_gate else 'nogate'}")
def test_read_with_a_tiny_normaliser_stays_bounded(opts):
    """Queries of every scale from 1e-4 to 10 with random coordinates zeroed: their DPFP features are
    sparse or exactly 0, so phi(q) z falls below eps for many. Every read stays finite and on the
    scale of the values written (|v| <= 1), for every allowed combination of the other options; with
    the sum normaliser and the linear rule it is a convex combination of them. (ELU + 1 features are
    >= 0 everywhere and never give a tiny normaliser.)"""
    mem = CompressiveMemory(H, DK, DV, batch_size=1, dtype=torch.float64, options=opts)
    _sparse_stream(mem, seed=50)
    g = torch.Generator().manual_seed(51)
    q = torch.randn(1, H, 4000, DK, generator=g, dtype=torch.float64)
    q = q * (torch.rand(q.shape, generator=g) < 0.6)
    q = q * 10 ** torch.empty(1, H, 4000, 1, dtype=torch.float64).uniform_(-4, 1, generator=g)
    read = mem.read(q)
    fq = feature_map(q, opts)
    assert (fq @ mem.state.z.unsqueeze(-1) < opts.eps).sum() > 100  # tiny normalisers are exercised
    assert torch.isfinite(read).all()
    assert read.abs().max() < 20.0
    if opts.update == "linear" and opts.normalizer == "sum":
        assert read.abs().max() <= 1.0


def test_corrected_read_of_a_direction_that_z_has_not_counted_is_not_divided_by_eps():
    """Corrected normaliser, features set exactly (s(log f) = f for 0 < f <= 1). Key a counts
    features {0, 1} in z; key b = features {0, 1, 2} has z . phi(b) >= |phi(b)|^2, so gamma = 0: b
    adds to M along feature 2, but z does not count it. A query along feature 2 alone has
    phi(q) z ~ 0: with den.clamp_min(eps) alone eq. 7 would return phi(q) M / eps; the corrected
    floor |phi(q)|^2 = 1 returns phi(q) M."""
    opts = MemoryOptions(normalizer="corrected")

    def keys(*features: float) -> torch.Tensor:
        return torch.log(torch.tensor(features, dtype=torch.float64)).clamp_min(-745.0).view(1, 1, 1, -1)

    M = torch.zeros(1, 1, 3, 1, dtype=torch.float64)
    z = torch.zeros(1, 1, 3, dtype=torch.float64)
    for k, value in ((keys(1.0, 1.0, 0.0), 1.0), (keys(0.6, 0.6, 0.3), -1.0)):
        M, z = write(M, z, k, torch.full((1, 1, 1, 1), value, dtype=torch.float64), opts)
    assert z[0, 0, 2] < 1e-300 and M[0, 0, 2].abs() > 0.1  # M holds feature 2, z does not
    q = keys(0.0, 0.0, 1.0)
    fq = feature_map(q)
    unfloored = (fq @ M) / (fq @ z.unsqueeze(-1)).clamp_min(1e-6)
    assert unfloored.abs().max() > 1e4
    torch.testing.assert_close(memory_read(q, M, z, 1e-6, opts), fq @ M, rtol=1e-9, atol=0)


@pytest.mark.parametrize("feature", ["elu", "dpfp"])
def test_corrected_delta_write_stays_bounded_over_a_long_stream(feature):
    """2,000 segments of 8 correlated L2-normalised keys (half their coordinates zeroed), no gate:
    the corrected z stops growing, so without the segment's own mass in the write's denominator
    each segment adds up to 8 full delta steps along shared directions and M grows to ~460 on this
    stream (dpfp); with it M stays within a few times the values (|v| <= 1)."""
    opts = MemoryOptions(normalizer="corrected", feature=feature, key_norm="l2")
    mem = CompressiveMemory(H, DK, DV, batch_size=1, dtype=torch.float64, options=opts)
    g = torch.Generator().manual_seed(50)
    largest = 0.0
    for _ in range(2000):
        k = torch.randn(1, H, 8, DK, generator=g, dtype=torch.float64)
        k[..., torch.randperm(DK, generator=g)[: DK // 2]] = 0
        v = torch.rand(1, H, 8, DV, generator=g, dtype=torch.float64) * 2 - 1
        mem.write(k, v, rule="delta")
        largest = max(largest, mem.state.M.abs().max().item())
    assert largest < 10.0
    read = mem.read(torch.randn(1, H, 500, DK, generator=g, dtype=torch.float64))
    assert read.abs().max() < 5.0


# ------------------------------------------------------------------ DeltaNet's memory (normalizer none)

DELTANET = MemoryOptions(normalizer="none", key_norm="l2")


def test_deltanet_segments_equal_the_token_by_token_delta_rule_with_gradients():
    """The chunkwise WY form of every segment at once equals the float64 reference that writes one
    token after the other (each reading the M its predecessors left), from a non-empty memory, for M
    and for the gradients of keys, values, gates and the starting memory."""
    from reference import RefConfig

    from infiniattention.memory import prefix_memories

    cfg = RefConfig(d_model=1, n_head=H, d_head=DK, segment_len=N, normalizer="none", key_norm="l2")
    k = rand(B, H, 3, N, DK, seed=60, dtype=torch.float64).requires_grad_()
    v = rand(B, H, 3, N, DV, seed=61, dtype=torch.float64).requires_grad_()
    beta = torch.rand(B, H, 3, N, generator=torch.Generator().manual_seed(62),
                      dtype=torch.float64).requires_grad_()
    M0 = rand(B, H, DK, DV, seed=63, dtype=torch.float64).requires_grad_()
    z0 = torch.zeros(B, H, DK, dtype=torch.float64)
    Mz, M_last, z_last = prefix_memories(M0, z0, k, v, DELTANET, beta)
    weights = rand(B, H, 3, DK, DV + 1, seed=64, dtype=torch.float64)
    ((Mz * weights).sum() + M_last.square().sum()).backward()
    got = [t.grad.clone() for t in (k, v, beta, M0)]
    for t in (k, v, beta, M0):
        t.grad = None
    assert torch.equal(z_last, z0) and torch.equal(Mz[..., -1], torch.zeros_like(Mz[..., -1]))
    loss = 0.0
    for b in range(B):
        for h in range(H):
            m = M0[b, h]
            for s in range(3):
                loss = loss + (m * weights[b, h, s, :, :DV]).sum()
                torch.testing.assert_close(Mz[b, h, s, :, :DV], m, rtol=0, atol=1e-12)
                m, _ = memory_write(k[b, h, s], v[b, h, s], m, z0[b, h], "delta", 1e-6, cfg, beta[b, h, s])
            torch.testing.assert_close(M_last[b, h], m, rtol=0, atol=1e-12)
            loss = loss + m.square().sum()
    loss.backward()
    for name, mine, t in zip(("k", "v", "beta", "M0"), got, (k, v, beta, M0), strict=True):
        assert t.grad.abs().max() > 1e-3, name
        torch.testing.assert_close(mine, t.grad, rtol=0, atol=1e-10, msg=name)


def test_deltanet_read_has_no_denominator_and_an_empty_memory_reads_zero():
    q = rand(B, H, 7, DK, seed=65, dtype=torch.float64)
    M = rand(B, H, DK, DV, seed=66, dtype=torch.float64)
    z = rand(B, H, DK, seed=67, dtype=torch.float64).abs()  # ignored: there is no normaliser
    torch.testing.assert_close(memory_read(q, M, z, 1e-6, DELTANET), feature_map(q, DELTANET) @ M,
                               rtol=0, atol=0)
    assert torch.equal(memory_read(q, torch.zeros_like(M), z, 1e-6, DELTANET),
                       torch.zeros(B, H, 7, DV, dtype=torch.float64))


def test_deltanet_memory_stays_bounded_over_a_million_tokens():
    """1M tokens of random keys (ELU + 1 features, all positive, so every key overlaps every other),
    values in [-1, 1] and gates in [0, 1], written in float32 in calls of 256 segments: with unit keys
    each write replaces part of what M returns along one key and leaves the rest, so the largest
    singular value of M stays near the values' norm (the paper's sum-normalised M instead grows with
    the stream) and does not grow from the first 10 % of the stream to the end."""
    from infiniattention.memory import prefix_memories

    g = torch.Generator().manual_seed(68)
    d, n, S = 16, 64, 256
    M, z = torch.zeros(1, 2, d, d), torch.zeros(1, 2, d)
    norms, v_max = [], 0.0
    for _ in range(2**20 // (n * S)):
        k = torch.randn(1, 2, S, n, d, generator=g)
        v = torch.rand(1, 2, S, n, d, generator=g) * 2 - 1
        beta = torch.rand(1, 2, S, n, generator=g)
        v_max = max(v_max, v.norm(dim=-1).max().item())
        _, M, z = prefix_memories(M, z, k, v, DELTANET, beta)
        norms.append(torch.linalg.matrix_norm(M, ord=2).max().item())
    assert M.dtype == torch.float32 and torch.isfinite(M).all() and not z.any()
    assert max(norms) < 1.5 * v_max
    assert max(norms[len(norms) // 2:]) < 1.5 * max(norms[: len(norms) // 10])


def test_deltanet_needs_the_delta_rule_and_unit_keys():
    for bad in (dict(normalizer="none"), dict(normalizer="none", key_norm="l2", update="linear")):
        with pytest.raises(ValueError, match="needs update 'delta' and key_norm 'l2'"):
            MemoryOptions(**bad)
