"""Streaming generation and sampling.

Generation prefills the prompt in one call, then feeds one token at a time; its log-probabilities
must equal those of one full forward pass over the same tokens (DESIGN.md §3: any split of a stream
gives the same outputs), and the state it carries must stay bounded however long it runs.
"""

from __future__ import annotations

import math

import pytest
import torch

from infiniattention import InfiniTransformerLM, ModelConfig, generate
from infiniattention.generation import sample_next

V, N = 50, 8

MODES = {
    "infini-delta-rope": dict(memory="infini", update="delta", pos="rope"),
    "infini-delta-xl": dict(memory="infini", update="delta", pos="xl"),
    "infini-delta-none": dict(memory="infini", update="delta", pos="none"),
    "infini-linear-rope": dict(memory="infini", update="linear", pos="rope"),
    "infini-linear-xl": dict(memory="infini", update="linear", pos="xl"),
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


def make_model(mode: str, seed: int = 0, dtype=torch.float32, **overrides) -> InfiniTransformerLM:
    """A tiny model with non-default weights (N(0, 0.3) matrices, random gates and LayerNorms)."""
    torch.manual_seed(seed)
    base = dict(vocab_size=V, n_layer=2, d_model=32, n_head=2, d_head=16, d_inner=64, segment_len=N,
                mem_len=8, dropout=0.0)
    model = InfiniTransformerLM(ModelConfig(**{**base, **MODES[mode], **overrides}))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("gate"):
                p.copy_(noise * 1.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            else:
                p.copy_(0.3 * noise)
    return model.to(dtype).eval()


def prompt_of(B: int, P: int, seed: int) -> torch.Tensor:
    return torch.randint(0, V, (B, P), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- streaming == full


# float32: log-probabilities down to about -13 with these weights; the one-token path sums in another
# order than the full pass, so allow 1e-5 plus 1e-5 relative (observed: at most 1.5e-5 absolute,
# 4e-6 relative). float64 shows that the two paths compute the same function.
@pytest.mark.parametrize(("dtype", "atol", "rtol"), [(torch.float32, 1e-5, 1e-5), (torch.float64, 1e-10, 0)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("mode", list(MODES))
def test_streaming_logits_equal_one_full_forward(mode, dtype, atol, rtol):
    """Prompt of 11 tokens, 25 new ones with segments of 8: the stream crosses four boundaries,
    two of them during one-token steps."""
    model = make_model(mode, seed=1, dtype=dtype)
    prompt = prompt_of(2, 11, seed=2)
    gen = torch.Generator().manual_seed(3)
    new, logp = generate(model, prompt, 25, generator=gen, return_logits=True)
    assert new.shape == (2, 25) and logp.shape == (2, 25, V) and logp.dtype == dtype
    stream = torch.cat([prompt, new[:, :-1]], dim=1)  # every token the model was fed
    with torch.no_grad():
        full = model(stream).logits  # [2, 35, V]
    torch.testing.assert_close(logp, full[:, 10:], rtol=rtol, atol=atol)
    torch.testing.assert_close(logp.exp(), full[:, 10:].exp(), rtol=0, atol=atol)
    # logp are the distributions the tokens were drawn from: normalised log-probabilities
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(2, 25, dtype=dtype), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["infini-delta-rope", "xl-mem13"])
def test_generation_continues_a_given_state(mode):
    model = make_model(mode, seed=4, dtype=torch.float64)
    history, prompt = prompt_of(1, 13, seed=5), prompt_of(1, 3, seed=6)
    with torch.no_grad():
        state = model(history).state
    new, logp = generate(model, prompt, 10, greedy=True, state=state, return_logits=True)
    with torch.no_grad():
        full = model(torch.cat([history, prompt, new[:, :-1]], dim=1)).logits
    torch.testing.assert_close(logp, full[:, 15:], rtol=0, atol=1e-10)
    assert torch.equal(new, logp.argmax(-1))


def test_generation_runs_in_eval_mode_and_restores_training():
    model = make_model("infini-delta-rope", seed=7, dtype=torch.float64, dropout=0.3, dropatt=0.3)
    prompt = prompt_of(2, 9, seed=8)
    model.train()
    new, logp = generate(model, prompt, 12, greedy=True, return_logits=True)
    assert model.training
    model.eval()
    with torch.no_grad():
        full = model(torch.cat([prompt, new[:, :-1]], dim=1)).logits
    torch.testing.assert_close(logp, full[:, 8:], rtol=0, atol=1e-10)  # no dropout while generating
    model.train()
    assert torch.equal(generate(model, prompt, 12, greedy=True), new)


# --------------------------------------------------------------------------------- bounded state


def record_states(model: InfiniTransformerLM) -> list:
    """States returned by every forward call of ``model``."""
    states = []
    model.register_forward_hook(lambda module, args, out: states.append(out.state))
    return states


@pytest.mark.parametrize("mode", ["infini-delta-rope", "none-rope"])
def test_generation_state_is_bounded(mode):
    model = make_model(mode, seed=9)
    states = record_states(model)
    generate(model, prompt_of(2, 5, seed=10), 200, generator=torch.Generator().manual_seed(11))
    assert len(states) == 200  # one prefill call, then 199 one-token calls
    assert states[-1].seen == 204
    for state in states:
        for layer in state.layers:
            assert layer.k.size(2) < N and layer.v.size(2) < N
            assert layer.k.size(2) == state.seen % N
            if model.config.memory == "infini":
                assert layer.memory.M.shape == (2, 2, 16, 16) and layer.memory.z.shape == (2, 2, 16)
                assert torch.isfinite(layer.memory.M).all()


@pytest.mark.parametrize("mem_len", [8, 13])
def test_xl_cache_is_bounded(mem_len):
    model = make_model("xl-mem8", seed=12, mem_len=mem_len)
    states = record_states(model)
    generate(model, prompt_of(2, 5, seed=13), 200, generator=torch.Generator().manual_seed(14))
    sizes = [state.layers[0].h.size(1) for state in states]
    assert max(sizes) == mem_len + N - 1  # reached, never exceeded
    for state in states:
        for layer in state.layers:
            assert layer.h.size(1) == min(state.seen, mem_len + state.seen % N)


# -------------------------------------------------------------------------------------- sampling


def random_logits(B: int, seed: int) -> torch.Tensor:
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * 2


def test_greedy_is_argmax():
    logits = random_logits(64, seed=15)
    want = logits.argmax(-1)
    assert torch.equal(sample_next(logits, greedy=True), want)
    assert torch.equal(sample_next(logits, temperature=0), want)
    gen = torch.Generator().manual_seed(16)
    assert torch.equal(sample_next(logits, top_k=1, generator=gen), want)
    assert torch.equal(sample_next(logits, temperature=1e-3, generator=gen), want)
    assert not torch.equal(sample_next(logits, generator=gen), want)  # sampling does sample


def test_generate_greedy_equals_top_k_one():
    model = make_model("infini-delta-rope", seed=17)
    prompt = prompt_of(3, 6, seed=18)
    greedy = generate(model, prompt, 20, greedy=True)
    assert torch.equal(generate(model, prompt, 20, top_k=1, generator=torch.Generator().manual_seed(0)),
                      greedy)


def test_seeded_generator_is_reproducible():
    model = make_model("infini-delta-rope", seed=19)
    prompt = prompt_of(4, 6, seed=20)

    def run(seed):
        return generate(model, prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(seed))

    a = run(21)
    assert torch.equal(run(21), a)
    assert not torch.equal(run(22), a)
    assert not torch.equal(a, generate(model, prompt, 30, greedy=True))


def test_top_k_keeps_the_k_most_likely():
    logits = random_logits(1, seed=23).expand(4000, V)
    top3 = set(logits[0].topk(3).indices.tolist())
    picked = sample_next(logits, top_k=3, generator=torch.Generator().manual_seed(24))
    assert set(picked.tolist()) == top3


def nucleus_logits() -> tuple[torch.Tensor, list[int]]:
    """Probabilities 0.6, 0.25, 0.1, 0.05 on tokens in a shuffled order; returns the ranking."""
    order = [7, 2, 9, 4]
    probs = torch.zeros(12)
    probs[order] = torch.tensor([0.6, 0.25, 0.1, 0.05])
    return probs.log()[None].expand(4000, 12), order


@pytest.mark.parametrize(("top_p", "kept"), [(0.01, 1), (0.55, 1), (0.8, 2), (0.9, 3), (1.0, 4)])
def test_top_p_keeps_only_the_nucleus(top_p, kept):
    """The smallest set of most likely tokens whose probability reaches top_p; the top one always."""
    logits, order = nucleus_logits()
    picked = sample_next(logits, top_p=top_p, generator=torch.Generator().manual_seed(25))
    assert set(picked.tolist()) == set(order[:kept])
    # renormalised inside the nucleus
    share = (picked == order[0]).float().mean().item()
    want = 0.6 / sum([0.6, 0.25, 0.1, 0.05][:kept])
    assert share == pytest.approx(want, abs=0.04)


def test_temperature_flattens_the_distribution():
    logits, order = nucleus_logits()
    gen = torch.Generator().manual_seed(26)
    cold = (sample_next(logits, temperature=0.5, generator=gen) == order[0]).float().mean().item()
    hot = (sample_next(logits, temperature=2.0, generator=gen) == order[0]).float().mean().item()
    p = torch.tensor([0.6, 0.25, 0.1, 0.05])
    assert cold == pytest.approx((p**2 / (p**2).sum())[0].item(), abs=0.04)
    assert hot == pytest.approx((p**0.5 / (p**0.5).sum())[0].item(), abs=0.04)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_k=0), "top_k must be >= 1"),
    (dict(top_k=-3), "top_k must be >= 1"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_p=-0.2), r"top_p must be in \(0, 1\]"),
    (dict(top_p=math.nan), r"top_p must be in \(0, 1\]"),
])
def test_invalid_sampling_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(random_logits(2, seed=27), **kwargs)
    model = make_model("none-rope")
    with pytest.raises(ValueError, match=match):
        generate(model, prompt_of(1, 3, seed=28), 2, **kwargs)


@pytest.mark.parametrize("prompt", [torch.zeros(5, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long)],
                         ids=["1d", "empty"])
def test_invalid_prompt_raises(prompt):
    with pytest.raises(ValueError, match="prompt of shape"):
        generate(make_model("none-rope"), prompt, 3)


def test_zero_new_tokens():
    model = make_model("none-rope")
    new, logp = generate(model, prompt_of(2, 4, seed=29), 0, return_logits=True)
    assert new.shape == (2, 0) and logp.shape == (2, 0, V)
