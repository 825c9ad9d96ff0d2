"""InfiniTransformerLM and ModelState: the contracts of DESIGN.md §3 at model level.

Tiny shapes: 2 layers, d_model 32, 2 heads of 16, segments of 8 tokens, vocabulary of 50. Weights
are re-drawn with a larger scale than the default initialisation (and random gates), so every
branch contributes visibly to the outputs.
"""

from __future__ import annotations

import io
import shutil

import pytest
import torch

from infiniattention import InfiniTransformerLM, LMOutput, ModelConfig, ModelState

V, N = 50, 8

MODES = {
    "infini-delta-rope": dict(memory="infini", update="delta", pos="rope"),
    "infini-linear-rope": dict(memory="infini", update="linear", pos="rope"),
    "infini-delta-xl": dict(memory="infini", update="delta", pos="xl"),
    "infini-linear-none": dict(memory="infini", update="linear", pos="none"),
    "none-rope": dict(memory="none", pos="rope"),
    "xl-mem8": dict(memory="xl", pos="xl", mem_len=8),
    "xl-mem13": dict(memory="xl", pos="xl", mem_len=13),
    "infini-options": dict(memory="infini", update="delta", pos="rope", normalizer="corrected",
                           feature="dpfp", key_norm="l2", write_gate=True),
    "infini-linear-gate": dict(memory="infini", update="linear", pos="none", write_gate=True),
    "infini-deltanet-gate": dict(memory="infini", update="delta", pos="rope", normalizer="none",
                                 key_norm="l2", write_gate=True),
}
THREE = ["infini-delta-rope", "none-rope", "xl-mem13"]


def make_config(mode: str, **overrides) -> ModelConfig:
    base = dict(vocab_size=V, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=64, segment_len=N,
                mem_len=8, dropout=0.0)
    return ModelConfig(**{**base, **MODES[mode], **overrides})


def randomize(model: InfiniTransformerLM, seed: int) -> InfiniTransformerLM:
    """Non-default weights: N(0, 0.3) matrices, perturbed LayerNorms, gates spread around 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if name.endswith("gate"):
                p.copy_(noise * 1.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            else:
                p.copy_(0.3 * noise)
    return model


def make_model(mode: str, seed: int = 0, dtype=torch.float64, **overrides) -> InfiniTransformerLM:
    torch.manual_seed(seed)
    model = randomize(InfiniTransformerLM(make_config(mode, **overrides)), seed + 100)
    return model.to(dtype).eval()


def tokens_of(B: int, T: int, seed: int, vocab: int = V) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def run_split(model, tokens, targets, splits, state=None, detach=True):
    """Feed ``tokens`` in calls of ``splits`` tokens; concatenated logits and nll, and the last state."""
    logits, nlls, start = [], [], 0
    for n in splits:
        out = model(tokens[:, start : start + n], targets=targets[:, start : start + n], state=state,
                    return_logits=True)
        state = out.state.detach() if detach else out.state
        logits.append(out.logits)
        nlls.append(out.nll)
        start += n
    assert start == tokens.size(1)
    return torch.cat(logits, dim=1), torch.cat(nlls, dim=1), state


def close(got, want, atol):
    torch.testing.assert_close(got, want, rtol=0, atol=atol)


def states_equal(a: ModelState, b: ModelState) -> bool:
    if a.seen != b.seen or len(a.layers) != len(b.layers):
        return False
    for la, lb in zip(a.layers, b.layers, strict=True):
        ta, tb = la.tensors(), lb.tensors()
        if ta.keys() != tb.keys() or not all(torch.equal(ta[n], tb[n]) for n in ta):
            return False
    return True


# ------------------------------------------------------------------------------ split invariance


def random_splits(T: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    splits, left = [], T
    while left:
        n = min(left, int(torch.randint(1, 12, (1,), generator=g)))
        splits.append(n)
        left -= n
    return splits


SPLITS = [[1] * 37, [7, 1, 1, 9, 19], [8, 8, 8, 13], "random-1", "random-2"]


@pytest.mark.parametrize("splits", SPLITS, ids=lambda s: s if isinstance(s, str) else
                         "1x37" if s == [1] * 37 else "-".join(map(str, s)))
@pytest.mark.parametrize("mode", list(MODES))
def test_any_split_of_the_stream_gives_the_same_outputs(mode, splits):
    """DESIGN §3: one call over T tokens == any split into calls carrying the state (float64)."""
    T, B = 37, 2
    if isinstance(splits, str):
        splits = random_splits(T, seed=int(splits[-1]))
    model = make_model(mode, seed=1)
    x, y = tokens_of(B, T, seed=2), tokens_of(B, T, seed=3)
    full = model(x, targets=y, return_logits=True)
    logits, nll, state = run_split(model, x, y, splits)
    assert full.logits.dtype == torch.float64
    close(logits, full.logits, 1e-10)
    close(nll, full.nll, 1e-10)
    assert state.seen == full.state.seen == T
    for got, want in zip(state.layers, full.state.layers, strict=True):
        ta, tb = got.tensors(), want.tensors()
        assert ta.keys() == tb.keys()
        for name in ta:
            close(ta[name], tb[name], 1e-10)


@pytest.mark.parametrize("mode", THREE)
def test_state_carries_information_across_segments(mode):
    """The split test would pass trivially if segments never saw each other: changing an early
    segment must change the outputs of later segments, except with memory='none'."""
    model = make_model(mode, seed=4)
    x = tokens_of(1, 24, seed=5)
    x2 = x.clone()
    x2[0, :4] = (x2[0, :4] + 1) % V  # segment 0 only
    a, b = model(x).logits, model(x2).logits
    later = (a[:, N:] - b[:, N:]).abs().max().item()
    if mode.startswith("none"):
        assert later == 0.0
    else:
        assert later > 1e-3
    assert (a[:, :N] - b[:, :N]).abs().max().item() > 1e-3


# ------------------------------------------------------------------------------ reset and detach


@pytest.mark.parametrize("mode", THREE)
def test_reset_zeroes_exactly_the_masked_lanes(mode):
    model = make_model(mode, seed=6)
    B = 4
    state = model(tokens_of(B, 21, seed=7)).state
    mask = torch.tensor([True, False, True, False])
    after = state.reset(mask)
    assert after.seen == state.seen
    for old, new in zip(state.layers, after.layers, strict=True):
        memory_names = {"infini": ["M", "z"], "xl": ["h"], "none": []}[model.config.memory]
        to, tn = old.tensors(), new.tensors()
        assert to.keys() == tn.keys()
        for name in to:
            if name in memory_names:
                assert to[name][mask].abs().max() > 0  # there was something to reset
                assert torch.equal(tn[name][mask], torch.zeros_like(to[name][mask]))
                assert torch.equal(tn[name][~mask], to[name][~mask])
            else:  # the unfinished segment's keys/values: local attention is left as it is
                assert torch.equal(tn[name], to[name])


def test_reset_lane_restarts_like_a_fresh_stream():
    """At a segment boundary a reset infini lane is exactly a new stream; the other lanes continue."""
    model = make_model("infini-delta-rope", seed=8)
    B = 3
    state = model(tokens_of(B, 2 * N, seed=9)).state
    nxt = tokens_of(B, 11, seed=10)
    mask = torch.tensor([False, True, False])
    got = model(nxt, state=state.reset(mask)).logits
    kept = model(nxt, state=state).logits
    fresh = model(nxt[1:2]).logits
    close(got[1:2], fresh, 1e-10)
    assert torch.equal(got[~mask], kept[~mask])
    assert (got[1] - kept[1]).abs().max() > 1e-3


def test_reset_needs_one_flag_per_lane():
    model = make_model("infini-delta-rope")
    state = model.init_state(3)
    with pytest.raises(ValueError, match=r"lane mask of shape \[3\]"):
        state.reset(torch.tensor([True, False]))


@pytest.mark.parametrize("mode", THREE)
@pytest.mark.parametrize("detach", [True, False])
def test_detach_cuts_the_graph_between_steps(mode, detach):
    """A tensor added to the activations of step 1 only gets no gradient from the loss of step 2
    when the state was detached in between, and a non-zero one when it was not. The xl cache is
    stop-gradient (Transformer-XL's SG) whether or not the state is detached: never a gradient."""
    model = make_model(mode, seed=11)
    B = 2
    x1, x2 = tokens_of(B, 11, seed=12), tokens_of(B, 6, seed=13)
    delta = torch.randn(B, 11, 32, dtype=torch.float64, requires_grad=True)
    handle = model.embed.register_forward_hook(lambda module, args, out: out + delta)
    state = model(x1).state
    handle.remove()
    if detach:
        state = state.detach()
        assert all(not t.requires_grad for layer in state.layers for t in layer.tensors().values())
    loss = model(x2, targets=tokens_of(B, 6, seed=14), state=state).loss
    loss.backward()
    if detach or MODES[mode]["memory"] == "xl":
        assert delta.grad is None
    else:
        assert delta.grad is not None and delta.grad.abs().max() > 0
    assert model.blocks[0].attn.q_proj.weight.grad.abs().max() > 0


def test_detach_keeps_the_values():
    model = make_model("infini-delta-rope", seed=15)
    model.train()
    state = model(tokens_of(2, 13, seed=16)).state
    assert any(t.requires_grad for layer in state.layers for t in layer.tensors().values())
    assert states_equal(state.detach(), state)


# ----------------------------------------------------------------------- state (de)serialisation


@pytest.mark.parametrize("mode", THREE)
def test_state_dict_round_trip_continues_identically(mode):
    model = make_model(mode, seed=17)
    B = 3
    state = model(tokens_of(B, 13, seed=18)).state
    buf = io.BytesIO()
    torch.save(state.state_dict(), buf)
    buf.seek(0)
    loaded = ModelState.from_state_dict(torch.load(buf, weights_only=True))
    assert loaded.seen == 13 and loaded.batch_size == B
    assert states_equal(loaded, state)
    nxt = tokens_of(B, 10, seed=19)
    a, b = model(nxt, state=state), model(nxt, state=loaded)
    assert torch.equal(a.logits, b.logits)
    assert states_equal(a.state, b.state)


def test_state_dict_names_are_batch_first_per_layer():
    model = make_model("infini-delta-rope")
    sd = model(tokens_of(3, 13, seed=20)).state.state_dict()
    assert int(sd["seen"]) == 13
    assert set(sd) == {"seen"} | {f"layers.{i}.{n}" for i in range(2) for n in ("k", "v", "M", "z")}
    assert sd["layers.1.M"].shape == (3, 2, 16, 16)
    assert sd["layers.0.k"].shape == (3, 2, 13 % N, 16)


@pytest.mark.parametrize("mode", THREE)
def test_select_and_cat_lanes_round_trip(mode):
    model = make_model(mode, seed=21)
    B = 4
    x = tokens_of(B, 13, seed=22)
    state = model(x).state
    parts = [state.select_lanes(0, 1), state.select_lanes(1, 3), state.select_lanes(3, 4)]
    assert [p.batch_size for p in parts] == [1, 2, 1]
    assert states_equal(ModelState.cat_lanes(parts), state)
    # Lanes are independent streams: a rank's share of the state continues its own lanes.
    nxt = tokens_of(B, 9, seed=23)
    whole = model(nxt, state=state).logits
    close(model(nxt[1:3], state=parts[1]).logits, whole[1:3], 1e-12)


def test_cat_lanes_needs_the_same_position():
    model = make_model("infini-delta-rope")
    a = model(tokens_of(1, 5, seed=24)).state
    b = model(tokens_of(1, 6, seed=25)).state
    with pytest.raises(ValueError, match="same number of tokens"):
        ModelState.cat_lanes([a, b])


def test_init_state_is_empty():
    model = make_model("infini-delta-rope")
    state = model.init_state(3)
    assert state.seen == 0 and state.batch_size == 3 and len(state.layers) == 2
    for layer in state.layers:
        assert layer.k.shape == (3, 2, 0, 16)
        assert torch.equal(layer.memory.M, torch.zeros(3, 2, 16, 16))
        assert torch.equal(layer.memory.z, torch.zeros(3, 2, 16))
    assert make_model("xl-mem8").init_state(3).layers[0].h.shape == (3, 0, 32)
    assert states_equal(state.to("cpu"), state)


# ------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("mode", ["infini-delta-rope", "xl-mem8"])
def test_overfits_a_short_random_sequence(mode):
    torch.manual_seed(26)
    cfg = ModelConfig(vocab_size=256, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=64,
                      segment_len=N, **{**dict(mem_len=8), **MODES[mode]}, dropout=0.0)
    model = InfiniTransformerLM(cfg).train()
    seq = tokens_of(1, 2 * N + 1, seed=27, vocab=256)
    x, y = seq[:, :-1], seq[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = model(x, targets=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(256.0)).item(), abs=0.2)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("mode", THREE)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(mode):
    """Dropout 0.1 on, in training mode: the checkpointed recomputation restores the RNG state
    (torch.utils.checkpoint's preserve_rng_state), so re-seeding before each run gives both runs
    the same dropout masks."""
    plain = make_model(mode, seed=28, dtype=torch.float32, dropout=0.1)
    ckpt = make_model(mode, seed=28, dtype=torch.float32, dropout=0.1, checkpoint_segments=True)
    ckpt.load_state_dict(plain.state_dict())
    calls = []
    ckpt.blocks[0].register_forward_pre_hook(lambda *args: calls.append(1))
    x1, x2 = tokens_of(2, 10, seed=29), tokens_of(2, 14, seed=30)
    y1, y2 = tokens_of(2, 10, seed=31), tokens_of(2, 14, seed=32)

    def run(model):
        model.train()
        torch.manual_seed(33)
        out1 = model(x1, targets=y1)
        out2 = model(x2, targets=y2, state=out1.state)  # not detached: backward crosses both calls
        loss = out1.loss + out2.loss
        model.zero_grad()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_a, grads_a = run(plain)
    loss_b, grads_b = run(ckpt)
    assert len(calls) == 4  # two calls, each forward + recomputation: checkpointing did run
    close(loss_b, loss_a, 1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        close(grads_b[name], grads_a[name], 1e-6)
    # The dropout masks matter: a different seed gives another loss.
    torch.manual_seed(34)
    assert (plain(x1, targets=y1).loss - loss_a).abs() > 0


def test_checkpointing_is_off_in_eval_mode():
    model = make_model("infini-delta-rope", checkpoint_segments=True)
    calls = []
    model.blocks[0].register_forward_pre_hook(lambda *args: calls.append(1))
    model.train()
    model(tokens_of(1, 9, seed=35), targets=tokens_of(1, 9, seed=36)).loss.backward()
    assert len(calls) == 2
    model.eval()
    model(tokens_of(1, 9, seed=35), targets=tokens_of(1, 9, seed=36))
    assert len(calls) == 3


# ------------------------------------------------------------------------------ outputs and heads


def test_nll_is_per_token_in_order_and_loss_is_its_mean():
    model = make_model("infini-delta-rope", seed=37)
    x, y = tokens_of(3, 19, seed=38), tokens_of(3, 19, seed=39)
    out = model(x, targets=y)
    assert isinstance(out, LMOutput)
    assert out.nll.shape == (3, 19) and out.loss.shape == ()
    assert out.logits is None  # targets given, return_logits None: no [B, T, V]
    close(out.loss, out.nll.mean(), 1e-12)
    logp = model(x).logits  # no targets: logits only
    assert logp.shape == (3, 19, V)
    close(logp.logsumexp(-1), torch.zeros(3, 19, dtype=torch.float64), 1e-10)  # log-probabilities
    close(out.nll, -logp.gather(-1, y[..., None]).squeeze(-1), 1e-10)
    assert out.nll.std() > 0.1  # not a uniform model: the order check above has teeth
    both = model(x, targets=y, return_logits=True)
    close(both.logits, logp, 1e-12)
    close(both.nll, out.nll, 1e-12)
    assert model(x, targets=y, return_logits=False).logits is None


def test_no_targets_means_no_loss():
    model = make_model("none-rope")
    out = model(tokens_of(2, 5, seed=40))
    assert out.loss is None and out.nll is None and out.logits.shape == (2, 5, V)


def test_adaptive_softmax_end_to_end():
    torch.manual_seed(41)
    cfg = ModelConfig(vocab_size=60, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=64,
                      segment_len=N, adaptive=True, cutoffs=[20, 40], div_val=2, dropout=0.0)
    model = randomize(InfiniTransformerLM(cfg), seed=42).double()
    x, y = tokens_of(2, 21, seed=43, vocab=60), tokens_of(2, 21, seed=44, vocab=60)
    assert (y >= 40).any() and ((y >= 20) & (y < 40)).any() and (y < 20).any()  # every cluster
    out = model(x, targets=y, return_logits=True)
    assert out.logits.shape == (2, 21, 60)
    close(out.logits.logsumexp(-1), torch.zeros(2, 21, dtype=torch.float64), 1e-10)
    close(out.nll, -out.logits.gather(-1, y[..., None]).squeeze(-1), 1e-10)
    logits, nll, _ = run_split(model, x, y, [5, 1, 15])
    close(nll, out.nll, 1e-10)
    out.loss.backward()
    assert model.embed.emb_layers[2].weight.grad.abs().max() > 0


# ------------------------------------------------------------------------------------ bad input


def test_tokens_must_be_integer_2d():
    model = make_model("infini-delta-rope")
    with pytest.raises(ValueError, match=r"shape \[batch, time\]"):
        model(tokens_of(1, 5, seed=45)[0])
    with pytest.raises(ValueError, match=r"shape \[batch, time\]"):
        model(tokens_of(1, 5, seed=45)[None])
    with pytest.raises(ValueError, match=r"shape \[batch, time\]"):
        model(tokens_of(1, 5, seed=45).double())


def test_targets_must_match_tokens():
    model = make_model("infini-delta-rope")
    with pytest.raises(ValueError, match="must have the shape of tokens"):
        model(tokens_of(2, 5, seed=46), targets=tokens_of(2, 4, seed=47))


@pytest.mark.parametrize("mode", THREE)
def test_state_with_wrong_lane_count_is_rejected(mode):
    model = make_model(mode)
    with pytest.raises(ValueError, match="3 lanes"):
        model(tokens_of(2, 5, seed=48), state=model.init_state(3))


def test_state_of_another_model_is_rejected():
    model = make_model("infini-delta-rope")
    other = make_model("infini-delta-rope", n_layer=3)
    with pytest.raises(ValueError, match="layers"):
        model(tokens_of(2, 5, seed=49), state=other.init_state(2))
    with pytest.raises(ValueError, match="memory='infini'"):
        model(tokens_of(2, 5, seed=49), state=make_model("xl-mem8").init_state(2))


# ---------------------------------------------------------------------------------- diagnostics


def test_gate_values_and_memory_stats():
    model = make_model("infini-delta-rope", seed=50)
    gates = model.gate_values()
    assert gates.shape == (2, 2)
    close(gates, torch.sigmoid(torch.stack([b.attn.gate for b in model.blocks])).float(), 1e-7)
    assert make_model("xl-mem8").gate_values() is None
    assert make_model("none-rope").gate_values() is None
    torch.manual_seed(0)
    fresh = InfiniTransformerLM(make_config("infini-delta-rope"))
    assert torch.equal(fresh.gate_values(), torch.full((2, 2), 0.5))  # gate_init 0: sigmoid(0)

    stats = model.memory_stats(model(tokens_of(2, 17, seed=51)).state)
    assert set(stats) == {f"layer{i}/{s}" for i in range(2) for s in ("M_abs_mean", "z_mean")}
    assert all(isinstance(v, float) and v > 0 for v in stats.values())
    assert model.memory_stats(model.init_state(2)) == {f"layer{i}/{s}": 0.0 for i in range(2)
                                                       for s in ("M_abs_mean", "z_mean")}


def test_num_parameters_counts_tied_weights_once():
    tied = InfiniTransformerLM(make_config("none-rope"))
    untied = InfiniTransformerLM(make_config("none-rope", tie_weights=False))
    assert tied.head.out_weights[0] is tied.embed.emb_layers[0].weight
    assert untied.num_parameters() - tied.num_parameters() == V * 32
    assert tied.num_parameters() == sum(p.numel() for p in set(tied.parameters()))


# ------------------------------------------------------------------ the Transformer-XL baseline


def test_xl_model_cuts_the_gradient_at_every_segment_boundary():
    """Through all layers, the loss of the last segment has exactly zero gradient with respect to the
    embeddings of earlier segments in the same call (xl), and a non-zero one through the memory
    (infini)."""
    for mode, crosses in (("xl-mem13", False), ("infini-delta-rope", True)):
        model = make_model(mode, seed=30)
        x, y = tokens_of(2, 3 * N, seed=31), tokens_of(2, 3 * N, seed=32)
        seen: list[torch.Tensor] = []

        def keep(module, args, out, seen=seen):
            out.retain_grad()
            seen.append(out)

        handle = model.embed.register_forward_hook(keep)
        out = model(x, targets=y)
        handle.remove()
        out.nll[:, 2 * N :].sum().backward()
        grad = seen[0].grad
        assert grad[:, 2 * N :].abs().max() > 0
        assert (grad[:, : 2 * N].abs().max() > 0) == crosses, mode


def test_xl_biases_are_shared_by_all_layers():
    """The model's one pair (u, v) is what every layer uses: an untied model whose layers all hold
    that pair gives the same outputs, and a model with different per-layer pairs does not."""
    shared = make_model("xl-mem8", seed=33)
    untied = InfiniTransformerLM(make_config("xl-mem8", untie_r=True)).double().eval()
    weights = {n: t for n, t in shared.state_dict().items() if n not in ("r_w_bias", "r_r_bias")}
    for i in range(2):
        weights[f"blocks.{i}.attn.xl_pos.r_w_bias"] = shared.r_w_bias.detach()
        weights[f"blocks.{i}.attn.xl_pos.r_r_bias"] = shared.r_r_bias.detach()
    untied.load_state_dict(weights)
    x = tokens_of(2, 2 * N + 3, seed=34)
    close(untied(x).logits, shared(x).logits, 0)
    with torch.no_grad():
        untied.blocks[1].attn.xl_pos.r_r_bias.add_(0.5)
    assert (untied(x).logits - shared(x).logits).abs().max() > 1e-6


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None,
                    reason="torch.compile on a CPU needs a C++ compiler")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_model_matches_eager():
    """``train.compile``: the hand-written backward passes (fused projection, RoPE, gated read)
    trace under ``torch.compile``, and a training step of the compiled model (three segments and a
    partial one) equals the eager one."""
    torch.manual_seed(0)
    model = randomize(InfiniTransformerLM(make_config("infini-delta-rope", n_layer=1, d_model=16, d_head=8,
                                                      d_inner=32, segment_len=4)), seed=60)
    tokens = torch.randint(0, V, (2, 15), generator=torch.Generator().manual_seed(61))

    def step(fn):
        model.zero_grad()
        out = fn(tokens[:, :-1], tokens[:, 1:])
        out.loss.backward()
        return out.loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    loss, grads = step(torch.compile(model))
    want_loss, want = step(model)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
    for name, g in want.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6)
