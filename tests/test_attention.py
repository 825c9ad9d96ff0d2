"""InfiniAttention (eqs 5-11) against the slow float64 reference in tests/reference.py.

Tiny shapes: d_model 10, 3 heads of 4 (so H * d_head != d_model), segments of 4 tokens, batch 2.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from reference import (
    RefConfig,
    linear_attention_read,
    memory_branch,
    memory_write,
    reference_forward,
    rope_rotate,
    segment_start,
    weights_of,
)
from torch import nn

from infiniattention.attention import AttentionState, InfiniAttention

D, H, DH, N, B = 10, 3, 4, 4, 2

MODES = {
    "infini-delta-rope": dict(memory="infini", update="delta", pos="rope"),
    "infini-delta-xl": dict(memory="infini", update="delta", pos="xl"),
    "infini-delta-none": dict(memory="infini", update="delta", pos="none"),
    "infini-linear-rope": dict(memory="infini", update="linear", pos="rope"),
    "infini-linear-xl": dict(memory="infini", update="linear", pos="xl"),
    "infini-linear-none": dict(memory="infini", update="linear", pos="none"),
    "infini-delta-xl-clamp2": dict(memory="infini", update="delta", pos="xl", clamp_len=2),
    "infini-linear-none-eps50": dict(memory="infini", update="linear", pos="none", eps=50.0),
    "none-rope": dict(memory="none", pos="rope"),
    "none-xl": dict(memory="none", pos="xl"),
    "none-none": dict(memory="none", pos="none"),
    "xl-mem7": dict(memory="xl", pos="xl", mem_len=2 * N - 1),
    "xl-mem3-clamp5": dict(memory="xl", pos="xl", mem_len=3, clamp_len=5),
    "xl-mem5-same": dict(memory="xl", pos="xl", mem_len=5, same_length=True),
    "xl-mem2-same": dict(memory="xl", pos="xl", mem_len=2, same_length=True),
    "xl-mem0": dict(memory="xl", pos="xl", mem_len=0),
    # Memory options (MemoryOptions): each alone, and combined.
    "infini-delta-rope-gate": dict(memory="infini", update="delta", pos="rope", write_gate=True),
    "infini-delta-none-corrected": dict(memory="infini", update="delta", pos="none", normalizer="corrected"),
    "infini-delta-rope-dpfp": dict(memory="infini", update="delta", pos="rope", feature="dpfp"),
    "infini-linear-rope-l2": dict(memory="infini", update="linear", pos="rope", key_norm="l2"),
    "infini-linear-none-dpfp-l2-gate": dict(memory="infini", update="linear", pos="none", feature="dpfp",
                                            key_norm="l2", write_gate=True),
    "infini-delta-xl-all": dict(memory="infini", update="delta", pos="xl", normalizer="corrected",
                                feature="dpfp", key_norm="l2", write_gate=True),
    "infini-delta-rope-elu-l2-corrected-gate": dict(memory="infini", update="delta", pos="rope",
                                                    normalizer="corrected", key_norm="l2", write_gate=True),
    # DeltaNet's memory (normalizer none): alone, gated, and with wide dpfp keys (24 rows > N tokens)
    "infini-delta-rope-deltanet": dict(memory="infini", update="delta", pos="rope", normalizer="none",
                                       key_norm="l2"),
    "infini-delta-none-deltanet-gate": dict(memory="infini", update="delta", pos="none", normalizer="none",
                                            key_norm="l2", write_gate=True),
    "infini-delta-xl-deltanet-dpfp-gate": dict(memory="infini", update="delta", pos="xl", normalizer="none",
                                               feature="dpfp", key_norm="l2", write_gate=True),
}
OPTION_MODES = [m for m in MODES if any(k in MODES[m] for k in ("normalizer", "feature", "key_norm",
                                                                "write_gate"))]
XL_MODES = [m for m in MODES if MODES[m]["memory"] == "xl"]
PLAIN_INFINI = [
    "infini-delta-rope",
    "infini-delta-xl",
    "infini-delta-none",
    "infini-linear-rope",
    "infini-linear-xl",
    "infini-linear-none",
]


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def make_layer(mode: dict, seed: int = 0, gate=None, d_model: int = D) -> InfiniAttention:
    """A float64 layer with random (non-default) weights, gates and xl biases."""
    torch.manual_seed(seed)
    layer = InfiniAttention(d_model, H, DH, N, dropatt=0.0, **mode).double()
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name == "gate":
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 1.5 if gate is None else gate)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return layer


def ref_config(mode: dict, d_model: int = D) -> RefConfig:
    return RefConfig(d_model=d_model, n_head=H, d_head=DH, segment_len=N, **mode)


def run_split(layer, x, splits, detach=False):
    state, outs = None, []
    start = 0
    for n in splits:
        out, state = layer(x[:, start : start + n], state)
        if detach:
            state = state.detach()
        outs.append(out)
        start += n
    assert start == x.size(1)
    return torch.cat(outs, dim=1), state


def close(got, want, atol):
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


# ------------------------------------------------------------------------------------ 1. reference


@pytest.mark.parametrize("T", [3, N, 3 * N + 5])
@pytest.mark.parametrize("mode", list(MODES))
def test_matches_reference_one_call(mode, T):
    layer = make_layer(MODES[mode], seed=1)
    x = rand(B, T, D, seed=2)
    out, state = layer(x)
    ref = reference_forward(x, ref_config(MODES[mode]), weights_of(layer))
    assert out.shape == (B, T, D) and out.dtype == torch.float64
    close(out, ref.out, 1e-10)
    assert state.seen == T
    if MODES[mode]["memory"] != "xl":
        done = T // N * N  # keys/values of the unfinished segment wait in the state, raw
        close(state.k, ref.k[:, :, done:], 1e-12)
        close(state.v, ref.v[:, :, done:], 1e-12)
    if MODES[mode]["memory"] == "infini":
        close(state.memory.M, ref.M, 1e-10)  # only complete segments written: padding never in z
        close(state.memory.z, ref.z, 1e-10)


@pytest.mark.parametrize("mode", list(MODES))
def test_matches_reference_across_calls(mode):
    """7 + (3N + 1) + 1 tokens in three calls, the state detached between calls."""
    layer = make_layer(MODES[mode], seed=3)
    splits = [7, 3 * N + 1, 1]
    x = rand(B, sum(splits), D, seed=4)
    out, state = run_split(layer, x, splits, detach=True)
    ref = reference_forward(x, ref_config(MODES[mode]), weights_of(layer))
    close(out, ref.out, 1e-10)
    assert state.seen == sum(splits)
    if MODES[mode]["memory"] == "infini":
        close(state.memory.M, ref.M, 1e-10)
        close(state.memory.z, ref.z, 1e-10)


def test_no_state_is_a_fresh_state():
    layer = make_layer(MODES["infini-delta-rope"], seed=5)
    x = rand(B, 9, D, seed=6)
    state = layer.init_state(B)
    assert isinstance(state, AttentionState) and state.seen == 0
    assert not state.memory.M.any() and not state.memory.z.any()
    a, _ = layer(x)
    b, _ = layer(x, state)
    close(a, b, 0)


def test_dropatt_is_off_in_eval_mode():
    mode = MODES["infini-delta-rope"]
    x = rand(B, 9, D, seed=7)
    plain = make_layer(mode, seed=8)
    dropping = InfiniAttention(D, H, DH, N, dropatt=0.5, **mode).double()
    dropping.load_state_dict(plain.state_dict())
    dropping.eval()
    close(dropping(x)[0], plain(x)[0], 0)
    dropping.train()
    assert (dropping(x)[0] - plain(x)[0]).abs().max() > 1e-6


# ------------------------------------------------------------------------------------ 2. causality


@pytest.mark.parametrize("t", [5, 8])
@pytest.mark.parametrize("mode", list(MODES))
def test_causality(mode, t):
    """Changing token t changes no output before t, and changes the output at t."""
    layer = make_layer(MODES[mode], seed=9)
    x = rand(B, 3 * N + 2, D, seed=10)
    x2 = x.clone()
    x2[:, t] = rand(B, D, seed=11)
    out, _ = layer(x)
    out2, _ = layer(x2)
    close(out2[:, :t], out[:, :t], 1e-12)
    assert (out2[:, t] - out[:, t]).abs().amax(dim=-1).min() > 1e-8  # in every batch lane
    nxt = segment_start(t, N) + N
    changed = (out2[:, nxt : nxt + N] - out[:, nxt : nxt + N]).abs().max()  # the next segment
    memory = MODES[mode]["memory"]
    if memory == "none" or (memory == "xl" and t < nxt - MODES[mode]["mem_len"]):
        assert changed == 0  # local attention never crosses a segment; t is outside the XL window
    else:
        assert changed > 1e-8  # the memory / XL cache carries token t onward


# ------------------------------------------------------------------------------- 3. split invariance


SPLITS = [[1] * 13, [3, 5, 5], [4, 4, 4, 1], [7, 6], [2, 9, 1, 1]]


@pytest.mark.parametrize("mode", list(MODES))
def test_split_invariance(mode):
    layer = make_layer(MODES[mode], seed=12)
    x = rand(B, 13, D, seed=13)
    whole, st_whole = layer(x)
    for splits in SPLITS:
        out, st = run_split(layer, x, splits)
        close(out, whole, 1e-12)
        assert st.seen == st_whole.seen == 13
        for name, t in st_whole.tensors().items():
            close(st.tensors()[name], t, 1e-12)


# -------------------------------------------------------------------------------------- 4. the gate


@pytest.mark.parametrize("mode", PLAIN_INFINI)
def test_gate_extremes_select_one_branch(mode):
    """sigmoid(+30) = 1 - 9e-14: the memory branch alone; sigmoid(-30): the local branch alone."""
    x = rand(B, 3 * N + 1, D, seed=14)
    cfg = ref_config(MODES[mode])
    hi = make_layer(MODES[mode], seed=15, gate=30.0)
    lo = make_layer(MODES[mode], seed=15, gate=-30.0)
    ref_mem = reference_forward(x, cfg, weights_of(hi), branch="memory")
    ref_loc = reference_forward(x, cfg, weights_of(lo), branch="local")
    close(hi(x)[0], ref_mem.out, 1e-10)
    close(lo(x)[0], ref_loc.out, 1e-10)
    assert (ref_mem.out - ref_loc.out).abs().max() > 1e-3
    close(hi(x)[0][:, :N], torch.zeros(B, N, D, dtype=torch.float64), 1e-10)  # M_0 = 0 reads 0


def test_gate_is_one_parameter_per_head():
    layer = InfiniAttention(D, H, DH, N, memory="infini")
    assert isinstance(layer.gate, nn.Parameter) and layer.gate.shape == (H,)
    assert layer.gate.requires_grad
    assert "gate" in layer.state_dict() and any(p is layer.gate for p in layer.parameters())
    torch.testing.assert_close(layer.gate.detach(), torch.zeros(H))  # gate_init = 0 by default
    layer = InfiniAttention(D, H, DH, N, memory="infini", gate_init=-2.0)
    torch.testing.assert_close(layer.gate.detach(), torch.full((H,), -2.0))
    for memory, pos, mem_len in (("none", "rope", 0), ("xl", "xl", 4)):
        other = InfiniAttention(D, H, DH, N, memory=memory, pos=pos, mem_len=mem_len)
        assert not any("gate" in name for name in other.state_dict())


@pytest.mark.parametrize("mode", ["infini-delta-rope", "infini-linear-xl"])
def test_each_gate_acts_on_its_own_head(mode):
    """With W_O = identity the output is [A_1; ...; A_H]: moving gate[1] moves only head 1's block."""
    width = H * DH
    layer = make_layer(MODES[mode], seed=16, d_model=width)
    with torch.no_grad():
        layer.o_proj.weight.copy_(torch.eye(width, dtype=torch.float64))
    x = rand(B, 2 * N + 3, width, seed=17)
    before, _ = layer(x)
    with torch.no_grad():
        layer.gate[1] += 2.0
    after, _ = layer(x)
    for h in range(H):
        block = slice(h * DH, (h + 1) * DH)
        diff = (after[:, N:, block] - before[:, N:, block]).abs().max()
        assert (diff > 1e-6) if h == 1 else (diff == 0), (h, diff)
    ref = reference_forward(x, ref_config(MODES[mode], d_model=width), weights_of(layer))
    close(after, ref.heads.transpose(1, 2).reshape(B, -1, width), 1e-10)


# ---------------------------------------------------------------------- 5. gradients through memory


def segment2_loss(out):
    w = rand(*out[:, 2 * N : 3 * N].shape, seed=99)
    return (out[:, 2 * N : 3 * N] * w).sum()


@pytest.mark.parametrize("update", ["delta", "linear"])
def test_gradient_through_memory_reaches_qkv(update):
    """Loss on segment 2 only, local branch switched off (gate +30): q_proj gets gradient from the
    read, k_proj / v_proj from the writes of segments 0 and 1; all equal the reference's autograd."""
    mode = dict(memory="infini", update=update, pos="rope")
    layer = make_layer(mode, seed=18, gate=30.0)
    x = rand(B, 3 * N, D, seed=19)
    segment2_loss(layer(x)[0]).backward()

    w = weights_of(layer)
    for t in (w.wq, w.wk, w.wv, w.wo):
        t.requires_grad_()
    segment2_loss(reference_forward(x, ref_config(mode), w).out).backward()
    for name, ref_w in (("q_proj", w.wq), ("k_proj", w.wk), ("v_proj", w.wv), ("o_proj", w.wo)):
        grad = getattr(layer, name).weight.grad
        assert grad.abs().max() > 1e-3, name
        close(grad, ref_w.grad, 1e-10)

    def loss_at(weight, i, j, delta):
        with torch.no_grad():
            weight[i, j] += delta
            value = segment2_loss(layer(x)[0]).item()
            weight[i, j] -= delta
        return value

    for name in ("k_proj", "v_proj", "q_proj"):
        weight = getattr(layer, name).weight
        for i, j in ((0, 0), (5, 3), (11, 9)):
            fd = (loss_at(weight, i, j, 1e-6) - loss_at(weight, i, j, -1e-6)) / 2e-6
            assert abs(fd - weight.grad[i, j].item()) < 1e-6 * max(1.0, abs(fd)), (name, i, j)


@pytest.mark.parametrize("mode", ["infini-delta-rope", "infini-linear-rope", "infini-linear-none-eps50",
                                  "none-rope", *OPTION_MODES])
def test_every_parameter_gradient_matches_reference_over_uneven_calls(mode):
    """Random gates (both branches matter), a stream of 3 N + 3 tokens fed in calls of 3, 6 and 6
    tokens (unaligned: carried keys, padded and partial segments) with the state's graph kept: the
    gradients of W_Q, W_K, W_V, W_O and the gates equal autograd through the float64 reference on the
    whole stream (eps 50 clamps the memory's denominators)."""
    layer = make_layer(MODES[mode], seed=30)
    x = rand(B, 3 * N + 3, D, seed=31)
    grad = rand(B, 3 * N + 3, D, seed=32)
    outs, state = [], None
    for start, stop in ((0, 3), (3, 9), (9, 3 * N + 3)):
        out, state = layer(x[:, start:stop], state)
        outs.append(out)
    (torch.cat(outs, dim=1) * grad).sum().backward()
    w = weights_of(layer)
    params = {"q_proj": w.wq, "k_proj": w.wk, "v_proj": w.wv, "o_proj": w.wo}
    if w.gate is not None:
        params["gate"] = w.gate
    if w.wg is not None:
        params.update({"write_gate.weight": w.wg, "write_gate.bias": w.bg})
    for t in params.values():
        t.requires_grad_()
    (reference_forward(x, ref_config(MODES[mode]), w).out * grad).sum().backward()
    grads = {name: p.grad for name, p in layer.named_parameters()}
    for name, ref in params.items():
        got = grads[name] if name.startswith(("gate", "write_gate")) else grads[f"{name}.weight"]
        assert ref.grad.abs().max() > 1e-3, name
        close(got, ref.grad, 1e-10)


@pytest.mark.parametrize("mode", ["infini-delta-rope", "infini-linear-none", "none-rope"])
def test_gradient_crosses_segments_only_through_memory(mode):
    """d loss(segment 2) / d x(segment 0): through the memory (infini), exactly 0 without it."""
    layer = make_layer(MODES[mode], seed=20)
    x = rand(B, 3 * N, D, seed=21).requires_grad_()
    out, state = layer(x)
    segment2_loss(out).backward()
    xr = x.detach().clone().requires_grad_()
    segment2_loss(reference_forward(xr, ref_config(MODES[mode]), weights_of(layer)).out).backward()
    close(x.grad, xr.grad, 1e-10)
    if MODES[mode]["memory"] == "infini":
        assert x.grad[:, :N].abs().max() > 1e-4
        assert state.memory.M.requires_grad and state.memory.z.requires_grad
        detached = state.detach()
        assert not detached.memory.M.requires_grad and not detached.k.requires_grad
        close(detached.memory.M, state.memory.M.detach(), 0)
    else:
        assert x.grad[:, :N].abs().max() == 0


# ------------------------------------------------------------------------------ 6/7. memory rules


def test_linear_memory_read_is_linear_attention_over_earlier_segments():
    """Eq 7 after eq 8: with the local branch off, head h at position p outputs
    sum_j s(q_p).s(k_j) v_j / sum_j s(q_p).s(k_j) over all j of earlier segments."""
    width = H * DH
    layer = make_layer(MODES["infini-linear-rope"], seed=22, gate=30.0, d_model=width)
    with torch.no_grad():
        layer.o_proj.weight.copy_(torch.eye(width, dtype=torch.float64))
    x = rand(B, 3 * N + 2, width, seed=23)
    out, _ = layer(x)
    ref = reference_forward(x, ref_config(MODES["infini-linear-rope"], d_model=width), weights_of(layer))
    for b in range(B):
        for h in range(H):
            for p in range(N, 3 * N + 2):
                a = segment_start(p, N)
                want = linear_attention_read(ref.q[b, h, p], ref.k[b, h, :a], ref.v[b, h, :a])
                close(out[b, p, h * DH : (h + 1) * DH], want, 1e-10)


# ------------------------------------------------------------------------- 8. numerical robustness


@pytest.mark.parametrize("mode", PLAIN_INFINI)
def test_first_segment_is_finite_in_float32_with_gradients(mode):
    torch.manual_seed(24)
    layer = InfiniAttention(D, H, DH, N, **MODES[mode])
    x = torch.randn(B, N, D, requires_grad=True)
    out, state = layer(x)
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert torch.isfinite(state.memory.M).all() and torch.isfinite(state.memory.z).all()


@pytest.mark.parametrize("update", ["delta", "linear"])
def test_long_bf16_stream_stays_finite_and_float32(update):
    """2,000 segments of bf16 input under autocast: finite, M and z float32 and updated in float32
    (compared with the reference's writes of the same bf16 keys/values; a bf16 z would stall near
    256 increments of ~1, bf16 increments of M would be off by ~1e-2 relative)."""
    torch.manual_seed(25)
    bsz, heads, dh, n, total = 1, 2, 4, 4, 8000
    layer = InfiniAttention(8, heads, dh, n, update=update, pos="rope")
    x = torch.randn(bsz, total, 8).to(torch.bfloat16)
    state, ks, vs = None, [], []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, total, 2000):
            chunk = x[:, start : start + 2000]
            out, state = layer(chunk, state)
            assert torch.isfinite(out.float()).all()
            ks.append(layer.k_proj(chunk).double().reshape(bsz, 2000, heads, dh).transpose(1, 2))
            vs.append(layer.v_proj(chunk).double().reshape(bsz, 2000, heads, dh).transpose(1, 2))
    M, z = state.memory.M, state.memory.z
    assert M.dtype == torch.float32 and z.dtype == torch.float32
    assert torch.isfinite(M).all() and torch.isfinite(z).all()
    k, v = torch.cat(ks, dim=2), torch.cat(vs, dim=2)
    for h in range(heads):
        m_ref, z_ref = torch.zeros(dh, dh, dtype=torch.float64), torch.zeros(dh, dtype=torch.float64)
        for s in range(total // n):
            seg = slice(s * n, (s + 1) * n)
            m_ref, z_ref = memory_write(k[0, h, seg], v[0, h, seg], m_ref, z_ref, update, 1e-6)
        torch.testing.assert_close(z[0, h].double(), z_ref, rtol=1e-4, atol=0)
        torch.testing.assert_close(M[0, h].double(), m_ref, rtol=0, atol=1e-4 * m_ref.abs().max().item())


# ------------------------------------------------------------------------ 9. heads are independent


@pytest.mark.parametrize("mode", ["infini-delta-rope", "infini-linear-xl", "none-none", "xl-mem7"])
def test_permuting_heads_permutes_nothing_else(mode):
    layer = make_layer(MODES[mode], seed=26)
    x = rand(B, 2 * N + 3, D, seed=27)
    out, _ = layer(x)
    perm = [2, 0, 1]
    rows = torch.cat([torch.arange(h * DH, (h + 1) * DH) for h in perm])
    with torch.no_grad():
        for lin in (layer.q_proj, layer.k_proj, layer.v_proj):
            lin.weight.copy_(lin.weight[rows])
        layer.o_proj.weight.copy_(layer.o_proj.weight[:, rows])
        if hasattr(layer, "gate"):
            layer.gate.copy_(layer.gate[perm])
        if hasattr(layer, "xl_pos"):
            layer.xl_pos.r_proj.weight.copy_(layer.xl_pos.r_proj.weight[rows])
            layer.xl_pos.r_w_bias.copy_(layer.xl_pos.r_w_bias[perm])
            layer.xl_pos.r_r_bias.copy_(layer.xl_pos.r_r_bias[perm])
    permuted, _ = layer(x)
    close(permuted, out, 1e-12)
    with torch.no_grad():  # the check has teeth: permuting only the queries changes the output
        layer.q_proj.weight.copy_(layer.q_proj.weight[rows])
    assert (layer(x)[0] - out).abs().max() > 1e-6


# ---------------------------------------------------------------------------------- 10. bad input


def test_bad_inputs_raise_value_errors():
    layer = make_layer(MODES["infini-delta-rope"], seed=28)
    x = rand(B, 5, D)
    with pytest.raises(ValueError, match=r"(?i)expected.*d_model"):
        layer(x[0])
    with pytest.raises(ValueError, match=r"(?i)expected.*d_model"):
        layer(rand(B, 5, D + 1))
    with pytest.raises(ValueError, match=r"(?i)expected.*(batch|init_state\(2\))"):
        layer(x, make_layer(MODES["infini-delta-rope"]).init_state(B + 1))
    _, state = layer(rand(B + 1, 5, D))
    with pytest.raises(ValueError, match=r"(?i)expected.*(batch|init_state\(2\))"):
        layer(x, state)
    other_heads = InfiniAttention(D, H + 1, DH, N)
    with pytest.raises(ValueError, match=rf"n_head={H}"):
        layer(x, other_heads.init_state(B))
    other_width = InfiniAttention(D, H, DH + 2, N)
    with pytest.raises(ValueError, match=rf"d_head={DH}"):
        layer(x, other_width.init_state(B))
    no_memory = InfiniAttention(D, H, DH, N, memory="none")
    with pytest.raises(ValueError, match=r"memory='infini'"):
        layer(x, no_memory.init_state(B))
    for segment_len in (0, -4):
        with pytest.raises(ValueError, match="segment_len"):
            InfiniAttention(D, H, DH, segment_len)
    with pytest.raises(ValueError, match="update"):
        InfiniAttention(D, H, DH, N, update="hebbian")
    with pytest.raises(ValueError, match="pos"):
        InfiniAttention(D, H, DH, N, pos="alibi")
    with pytest.raises(ValueError, match="memory"):
        InfiniAttention(D, H, DH, N, memory="retrieval")


def test_xl_memory_never_runs_with_another_position_encoding():
    """memory='xl' is the Transformer-XL baseline: pos is xl. A layer asked for another pos either
    refuses (ValueError naming pos) or runs exactly the xl reference."""
    try:
        layer = InfiniAttention(D, H, DH, N, memory="xl", pos="rope", mem_len=5).double()
    except ValueError as err:
        assert "pos" in str(err)
        return
    x = rand(B, 9, D, seed=29)
    close(
        layer(x)[0],
        reference_forward(x, ref_config(dict(memory="xl", pos="xl", mem_len=5)), weights_of(layer)).out,
        1e-10,
    )


# -------------------------------------------------------------------- 11. memory sees no positions


def test_memory_branch_uses_raw_queries_and_keys_under_rope():
    """With pos=rope and the local branch off, the output is the memory read of the RAW Q, K; a
    memory fed rotated Q, K (a known defect) gives a different answer."""
    mode = MODES["infini-delta-rope"]
    layer = make_layer(mode, seed=30, gate=30.0)
    x = rand(B, 3 * N + 1, D, seed=31)
    out, _ = layer(x)
    cfg = ref_config(mode)
    ref = reference_forward(x, cfg, weights_of(layer), branch="memory")
    close(out, ref.out, 1e-10)

    def rotated(t):
        return torch.stack(
            [
                torch.stack(
                    [
                        torch.stack(
                            [rope_rotate(t[b, h, p], p - segment_start(p, N)) for p in range(t.size(2))]
                        )
                        for h in range(H)
                    ]
                )
                for b in range(B)
            ]
        )

    wrong, _, _ = memory_branch(rotated(ref.q), rotated(ref.k), ref.v, cfg)
    wrong_out = wrong.transpose(1, 2).reshape(B, -1, H * DH) @ layer.o_proj.weight.detach().T
    assert (wrong_out - out).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["infini-delta-rope", "none-rope"])
def test_rope_uses_offsets_inside_the_segment_not_stream_positions(mode):
    """float32 at stream position 4e7: the same output as at position 0 for the same segment (empty
    memory in both), since RoPE sees offsets 0..N-1; float32 angles of 4e7 would be off by ~1 rad."""
    torch.manual_seed(32)
    layer = InfiniAttention(D, H, DH, N, **MODES[mode])
    x = torch.randn(B, N + 2, D)
    near, _ = layer(x)
    far_state = replace(layer.init_state(B), seen=10**7 * N)
    far, _ = layer(x, far_state)
    torch.testing.assert_close(far, near, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------- 11. Transformer-XL baseline semantics


@pytest.mark.parametrize("mode", XL_MODES)
def test_xl_cache_is_stop_gradient_within_a_call(mode):
    """Transformer-XL's SG(h): d out(segment 2) / d x(segments 0, 1) is exactly 0 in one call; the
    weights still get their gradient through the cached keys and values, equal to the reference's."""
    layer = make_layer(MODES[mode], seed=40)
    x = rand(B, 3 * N, D, seed=41).requires_grad_()
    params = [layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight, layer.xl_pos.r_proj.weight]
    got = torch.autograd.grad(segment2_loss(layer(x)[0]), [x, *params])
    assert got[0][:, : 2 * N].abs().max() == 0
    assert got[0][:, 2 * N :].abs().amin(dim=-1).min() > 0
    xr = x.detach().clone().requires_grad_()
    ref = reference_forward(xr, ref_config(MODES[mode]), weights_of(layer, keep_graph=True))
    want = torch.autograd.grad(segment2_loss(ref.out), [xr, *params])
    for g, w in zip(got, want, strict=True):
        close(g, w, 1e-10)


@pytest.mark.parametrize("mode", XL_MODES)
def test_xl_cache_is_stop_gradient_across_calls(mode):
    """The cache handed to the next call carries no graph, detached or not: the next call's output
    has no gradient path to the earlier call's input (it had one before the SG fix)."""
    layer = make_layer(MODES[mode], seed=42)
    x1 = rand(B, N + 3, D, seed=43).requires_grad_()
    _, state = layer(x1)
    assert state.h.numel() > 0 or MODES[mode]["mem_len"] == 0
    assert not state.h.requires_grad
    out2, _ = layer(rand(B, 2 * N, D, seed=44), state)
    out2.sum().backward()
    assert x1.grad is None
    assert layer.k_proj.weight.grad.abs().max() > 0


def test_xl_with_mem_len_0_is_local_attention():
    """mem_len 0: no cache, exactly the local attention of memory='none' with xl positions."""
    xl = make_layer(MODES["xl-mem0"], seed=45)
    local = InfiniAttention(D, H, DH, N, memory="none", pos="xl").double()
    local.load_state_dict(xl.state_dict())
    x = rand(B, 3 * N + 2, D, seed=46)
    close(xl(x)[0], local(x)[0], 1e-12)
    out, state = run_split(xl, x, [5, 6, 3])
    close(out, local(x)[0], 1e-12)
    assert state.h.size(1) == (3 * N + 2) % N


def test_same_length_sees_exactly_mem_len_keys():
    """same_length: every query attends to the last mem_len keys (itself included), wherever it sits
    in its segment. With equal values v_j = e_j (one-hot positions), the attention weights are the
    output: exactly mem_len of them are non-zero for every query past the first mem_len tokens."""
    m, T = 5, 3 * N + 2
    layer = InfiniAttention(T, 1, T, N, memory="xl", pos="xl", mem_len=m, same_length=True).double()
    plain = InfiniAttention(T, 1, T, N, memory="xl", pos="xl", mem_len=m).double()
    eye = torch.eye(T, dtype=torch.float64)
    for lay in (layer, plain):
        with torch.no_grad():
            lay.v_proj.weight.copy_(eye)
            lay.o_proj.weight.copy_(eye)
    x = eye[None]  # one-hot positions as inputs, so output row p holds the weights over positions
    for lay, count in ((layer, lambda p: min(p + 1, m)), (plain, lambda p: min(p + 1, p % N + 1 + m))):
        probs = lay(x)[0][0]  # [T, T]
        for p in range(T):
            assert int((probs[p].abs() > 1e-12).sum()) == count(p), (lay.same_length, p)
            assert probs[p, p + 1 :].abs().max() == 0 if p + 1 < T else True


def test_model_owned_xl_biases():
    """own_xl_bias=False: the layer has no u, v; it uses the pair it is given, and asks for one."""
    shared = make_layer(MODES["xl-mem7"], seed=48)
    borrowing = InfiniAttention(D, H, DH, N, memory="xl", pos="xl", mem_len=2 * N - 1,
                                own_xl_bias=False).double()
    assert not any(name.endswith(("r_w_bias", "r_r_bias")) for name, _ in borrowing.named_parameters())
    own = {n: t for n, t in shared.state_dict().items() if not n.endswith(("r_w_bias", "r_r_bias"))}
    borrowing.load_state_dict(own)
    x = rand(B, 2 * N + 1, D, seed=49)
    uv = (shared.xl_pos.r_w_bias, shared.xl_pos.r_r_bias)
    close(borrowing(x, xl_bias=uv)[0], shared(x)[0], 0)
    with pytest.raises(ValueError, match="pass xl_bias"):
        borrowing(x)


def test_same_length_needs_xl_and_a_cache():
    with pytest.raises(ValueError, match="same_length applies to memory='xl' only"):
        InfiniAttention(D, H, DH, N, memory="infini", same_length=True)
    with pytest.raises(ValueError, match="same_length=True needs mem_len > 0"):
        InfiniAttention(D, H, DH, N, memory="xl", pos="xl", mem_len=0, same_length=True)


# ----------------------------------------------------------------------------- 10. memory options


def _forced_write_gate(layer: InfiniAttention, logit_of_position) -> list[int]:
    """Replace the write gate's logits by ``logit_of_position(p)`` at stream position p (a forward
    hook that counts the positions it has seen). Returns the one-item list holding that count."""
    seen = [0]

    def hook(module, args, logits):
        T = logits.size(1)
        values = torch.tensor([logit_of_position(seen[0] + t) for t in range(T)], dtype=logits.dtype)
        seen[0] += T
        return values.view(1, T, 1).expand_as(logits).clone()

    layer.write_gate.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("options", [dict(), dict(normalizer="corrected"),
                                     dict(feature="dpfp", key_norm="l2"),
                                     dict(update="linear", feature="dpfp"),
                                     dict(normalizer="none", key_norm="l2")])
def test_write_gate_of_one_everywhere_is_the_layer_without_gate(options):
    """beta = 1 (logit +inf) everywhere: outputs and states bit for bit those of the same layer
    without the gate; gradients to rounding (autograd sums the feature map's two uses in another
    order once the gate multiplies one of them)."""
    mode = {"memory": "infini", "update": "delta", "pos": "rope", **options}
    plain = make_layer(mode, seed=40)
    gated = make_layer({**mode, "write_gate": True}, seed=40)
    gated.load_state_dict({**plain.state_dict(), **{f"write_gate.{n}": p for n, p in
                                                     gated.write_gate.state_dict().items()}})
    _forced_write_gate(gated, lambda p: float("inf"))
    x = rand(B, 4 * N + 3, D, seed=41)
    outs = []
    for layer in (plain, gated):
        out, state = run_split(layer, x, [5, 2 * N, 2 * N - 2])
        (out * rand(*out.shape, seed=42)).sum().backward()
        outs.append((out, state, {n: p.grad for n, p in layer.named_parameters() if "write_gate" not in n}))
    (o1, s1, g1), (o2, s2, g2) = outs
    assert torch.equal(o1, o2)
    assert torch.equal(s1.memory.M, s2.memory.M) and torch.equal(s1.memory.z, s2.memory.z)
    for name in g1:
        close(g2[name], g1[name], 1e-12)


@pytest.mark.parametrize("options", [dict(), dict(normalizer="corrected"),
                                     dict(feature="dpfp", key_norm="l2"),
                                     dict(update="linear", feature="dpfp", key_norm="l2"),
                                     dict(normalizer="none", key_norm="l2")])
def test_write_gate_of_zero_after_the_key_freezes_the_memory(options):
    """beta = 0 (logit -inf) from the token after the key on: the memory after the key's segment
    stays bit for bit the same over 60 more segments, fed in uneven calls."""
    mode = {"memory": "infini", "update": "delta", "pos": "rope", "write_gate": True, **options}
    layer = make_layer(mode, seed=43)
    key_end = 2 * N + 1  # the key's segment is segment 2: [2N, 3N)
    _forced_write_gate(layer, lambda p: 0.7 if p < key_end else float("-inf"))
    x = rand(B, 63 * N, D, seed=44)
    _, state = run_split(layer, x[:, : 3 * N], [3, 3 * N - 3])
    after_key = state.memory
    assert after_key.M.abs().max() > 0
    start = 3 * N
    for n in (1, N - 1, 7 * N + 2, 30 * N, 22 * N - 2):
        _, state = layer(x[:, start : start + n], state)
        start += n
        assert torch.equal(state.memory.M, after_key.M) and torch.equal(state.memory.z, after_key.z)
    assert start == 63 * N


def test_memory_options_are_validated():
    for bad, match in ((dict(normalizer="l1"), "normalizer must be one of sum, corrected, none"),
                       (dict(feature="relu"), "feature must be one of elu, dpfp"),
                       (dict(key_norm="l1"), "key_norm must be one of none, l2"),
                       (dict(write_gate="yes"), "write_gate must be true or false"),
                       (dict(normalizer="corrected", update="linear"), "needs update 'delta'"),
                       (dict(normalizer="none"), "needs update 'delta' and key_norm 'l2'"),
                       (dict(normalizer="none", key_norm="l2", update="linear"),
                        "needs update 'delta' and key_norm 'l2'")):
        with pytest.raises(ValueError, match=match):
            InfiniAttention(D, H, DH, N, **{"update": "delta", **bad})
    for memory, extra in (("none", {}), ("xl", dict(pos="xl", mem_len=4))):
        for option in (dict(write_gate=True), dict(feature="dpfp"), dict(normalizer="corrected"),
                       dict(key_norm="l2")):
            with pytest.raises(ValueError, match="needs memory='infini'"):
                InfiniAttention(D, H, DH, N, memory=memory, **extra, **option)


def test_dpfp_memory_has_six_times_the_key_rows_and_the_gate_is_carried():
    layer = InfiniAttention(D, H, DH, N, feature="dpfp", write_gate=True)
    state = layer.init_state(B)
    assert state.memory.M.shape == (B, H, 6 * DH, DH) and state.memory.z.shape == (B, H, 6 * DH)
    assert state.beta.shape == (B, H, 0)
    _, state = layer(torch.randn(B, N + 3, D), state)
    assert state.beta.shape == (B, H, 3) and ((state.beta > 0) & (state.beta < 1)).all()
    assert isinstance(layer.write_gate, nn.Linear) and layer.write_gate.weight.shape == (H, D)


@pytest.mark.parametrize("mode", ["infini-delta-rope-gate", "infini-delta-xl-all",
                                  "infini-delta-none-deltanet-gate"])
def test_long_bf16_stream_with_options_stays_finite_and_float32(mode):
    """500 segments of bf16 input under autocast: M, z stay float32 and finite, and the state holds
    the same bytes at every length (flat memory)."""
    torch.manual_seed(45)
    layer = InfiniAttention(D, H, DH, N, **{k: v for k, v in MODES[mode].items()})
    x = torch.randn(1, 500 * N, D).to(torch.bfloat16)
    state, sizes = None, set()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, x.size(1), 250 * N):
            out, state = layer(x[:, start : start + 250 * N], state)
            assert torch.isfinite(out.float()).all()
            sizes.add(sum(t.numel() * t.element_size() for t in state.tensors().values()))
    assert state.memory.M.dtype == torch.float32 and state.memory.z.dtype == torch.float32
    assert torch.isfinite(state.memory.M).all() and torch.isfinite(state.memory.z).all()
    assert len(sizes) == 1
