"""Tests for adaptive input embeddings and the projected adaptive log-softmax."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from infiniattention.adaptive import AdaptiveEmbedding, ProjectedAdaptiveLogSoftmax

VOCAB = 37
D_MODEL = 8
CUTOFFS = [5, 13, 24]

# (cutoffs, div_val, tie): every layout the exactness tests must hold for.
LAYOUTS = [
    pytest.param([], 1, False, id="full-softmax"),
    pytest.param([], 1, True, id="full-softmax-tied"),
    pytest.param(CUTOFFS, 1, False, id="div1"),
    pytest.param(CUTOFFS, 1, True, id="div1-tied"),
    pytest.param(CUTOFFS, 2, False, id="div2"),
    pytest.param(CUTOFFS, 2, True, id="div2-tied"),
]


def _build(cutoffs: list[int], div_val: int, tie: bool, dtype=torch.float64, seed: int = 0):
    """Embedding and softmax with random (non-zero) weights, biases and cluster logits."""
    torch.manual_seed(seed)
    emb = AdaptiveEmbedding(VOCAB, D_MODEL, cutoffs, div_val)
    crit = ProjectedAdaptiveLogSoftmax(VOCAB, D_MODEL, cutoffs, div_val, tie_to=emb if tie else None)
    with torch.no_grad():
        # Non-zero biases so a bias applied to the wrong cluster or column changes the result.
        crit.out_bias.normal_()
        if crit.cluster_bias is not None:
            crit.cluster_bias.normal_()
    return emb.to(dtype), crit.to(dtype)


def _targets_covering(cutoffs: list[int], shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """Random targets of ``shape`` with the first and last id of every cluster present."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, VOCAB, shape, generator=g).reshape(-1)
    bounds = [0, *cutoffs, VOCAB]
    edges = [b for lo, hi in pairwise(bounds) for b in (lo, hi - 1)]
    t[: len(edges)] = torch.tensor(edges)
    return t[torch.randperm(t.numel(), generator=g)].reshape(shape)


def _reference_log_prob(crit: ProjectedAdaptiveLogSoftmax, h: torch.Tensor) -> torch.Tensor:
    """Slow float64 adaptive softmax, written word by word from Grave et al. 2017."""
    bounds = [0, *crit.cutoffs, crit.vocab_size]
    n_tails = len(crit.cutoffs)

    def table(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden projected for cluster i [N, d_i], and cluster i's table [n_i, d_i]."""
        if crit.div_val == 1:
            return h, crit.out_weights[0][bounds[i] : bounds[i + 1]]
        return h @ crit.out_projs[i], crit.out_weights[i]

    x0, w0 = table(0)
    head_logits = [x0 @ w0[j] + crit.out_bias[j] for j in range(bounds[1])]
    head_logits += [h_ @ crit.cluster_weight[k] + crit.cluster_bias[k] for k in range(n_tails) for h_ in [x0]]
    head = torch.stack(head_logits, dim=-1).log_softmax(-1)  # [N, c0 + n_tails]
    out = []
    for w in range(crit.vocab_size):
        i = sum(w >= c for c in crit.cutoffs)
        if i == 0:
            out.append(head[:, w])
            continue
        x, tab = table(i)
        tail = (x @ tab.t() + crit.out_bias[bounds[i] : bounds[i + 1]]).log_softmax(-1)
        out.append(head[:, bounds[1] + i - 1] + tail[:, w - bounds[i]])
    return torch.stack(out, dim=-1)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("cutoffs, div_val, tie", LAYOUTS)
def test_log_prob_is_normalised(cutoffs, div_val, tie):
    _, crit = _build(cutoffs, div_val, tie)
    h = torch.randn(3, 4, D_MODEL, dtype=torch.float64)
    lp = crit.log_prob(h)
    assert lp.shape == (3, 4, VOCAB)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, 4, dtype=torch.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("cutoffs, div_val, tie", LAYOUTS)
def test_forward_equals_gathered_log_prob(cutoffs, div_val, tie):
    _, crit = _build(cutoffs, div_val, tie)
    h = torch.randn(4, 5, D_MODEL, dtype=torch.float64)
    t = _targets_covering(cutoffs, (4, 5))
    nll = crit(h, t)
    assert nll.shape == t.shape and nll.dtype == torch.float64
    expected = -crit.log_prob(h).gather(-1, t[..., None]).squeeze(-1)
    torch.testing.assert_close(nll, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cutoffs, div_val, tie", LAYOUTS)
def test_log_prob_matches_word_by_word_reference(cutoffs, div_val, tie):
    _, crit = _build(cutoffs, div_val, tie)
    h = torch.randn(6, D_MODEL, dtype=torch.float64)
    torch.testing.assert_close(crit.log_prob(h), _reference_log_prob(crit, h), rtol=0, atol=1e-10)


def test_empty_cutoffs_is_plain_softmax_over_tied_embedding():
    emb, crit = _build([], 1, True)
    h = torch.randn(2, 3, D_MODEL, dtype=torch.float64)
    t = _targets_covering([], (2, 3))
    logits = h @ emb.emb_layers[0].weight.t() + crit.out_bias  # [2, 3, V]
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), t.reshape(-1), reduction="none").reshape(2, 3)
    torch.testing.assert_close(crit(h, t), expected, rtol=0, atol=1e-10)


def test_nll_is_per_token_in_token_order():
    _, crit = _build(CUTOFFS, 2, False)
    h = torch.randn(24, D_MODEL, dtype=torch.float64)
    t = _targets_covering(CUTOFFS, (24,))
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    nll = crit(h, t)
    assert nll.unique().numel() > 20  # distinct values, so a wrong order cannot pass by accident
    torch.testing.assert_close(crit(h[perm], t[perm]), nll[perm], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- efficiency and precision


class _ShapeRecorder(TorchDispatchMode):
    """Records the shape of every tensor produced by an aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self.shapes.append(tuple(o.shape))
        return out


@pytest.mark.parametrize("div_val", [1, 2])
def test_forward_never_builds_full_vocabulary_logits(div_val):
    _, crit = _build(CUTOFFS, div_val, False)
    h = torch.randn(16, D_MODEL, dtype=torch.float64)
    t = _targets_covering(CUTOFFS, (16,))
    with _ShapeRecorder() as rec:
        crit(h, t)
    assert rec.shapes, "recorder saw no ops"
    assert all(VOCAB not in s for s in rec.shapes), [s for s in rec.shapes if VOCAB in s]
    with _ShapeRecorder() as rec:  # the recorder does catch full logits when they are built
        crit.log_prob(h)
    assert any(s == (16, VOCAB) for s in rec.shapes)


def test_tail_is_not_scored_when_no_target_falls_in_it():
    _, crit = _build(CUTOFFS, 2, False, dtype=torch.float32)
    h = torch.randn(10, D_MODEL)
    t = torch.randint(0, CUTOFFS[1], (10,), generator=torch.Generator().manual_seed(0))  # clusters 0 and 1
    t[0], t[1] = 0, CUTOFFS[0]
    crit(h, t).sum().backward()
    assert crit.out_weights[1].grad is not None and crit.out_weights[1].grad.abs().sum() > 0
    assert crit.out_weights[2].grad is None and crit.out_weights[3].grad is None


@pytest.mark.parametrize("div_val", [1, 2])
def test_logsumexp_runs_in_float32_for_bf16_weights(div_val):
    _, crit64 = _build(CUTOFFS, div_val, False)
    crit16 = ProjectedAdaptiveLogSoftmax(VOCAB, D_MODEL, CUTOFFS, div_val)
    crit16.load_state_dict(crit64.state_dict())
    crit16 = crit16.to(torch.bfloat16)
    h = torch.randn(32, D_MODEL, dtype=torch.float64) * 3
    t = _targets_covering(CUTOFFS, (32,))
    nll = crit16(h.to(torch.bfloat16), t)
    assert nll.dtype == torch.float32
    # Reference from the same bf16-rounded weights in float64: only the (bf16) matmuls may differ.
    crit_ref = ProjectedAdaptiveLogSoftmax(VOCAB, D_MODEL, CUTOFFS, div_val).to(torch.float64)
    crit_ref.load_state_dict({k: v.double() for k, v in crit16.state_dict().items()})
    expected = crit_ref(h.to(torch.bfloat16).double(), t)
    torch.testing.assert_close(nll.double(), expected, rtol=0, atol=0.1)


def test_bf16_autocast_returns_float32_nll():
    _, crit = _build(CUTOFFS, 2, False, dtype=torch.float32)
    h = torch.randn(2, 6, D_MODEL)
    t = _targets_covering(CUTOFFS, (2, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = crit(h, t)
        lp = crit.log_prob(h)
    assert nll.dtype == torch.float32 and lp.dtype == torch.float32
    torch.testing.assert_close(nll, crit(h, t), rtol=0, atol=0.1)


# --------------------------------------------------------------------------- embedding


def test_embedding_div1_is_one_scaled_table():
    emb, _ = _build(CUTOFFS, 1, False)
    assert len(emb.emb_layers) == 1 and len(emb.emb_projs) == 0
    tokens = _targets_covering(CUTOFFS, (3, 7))
    out = emb(tokens)
    assert out.shape == (3, 7, D_MODEL)
    torch.testing.assert_close(out, emb.emb_layers[0].weight[tokens] * math.sqrt(D_MODEL), rtol=0, atol=1e-12)


def test_embedding_projected_clusters_match_per_token_reference():
    emb, _ = _build(CUTOFFS, 2, False)
    assert [layer.weight.shape for layer in emb.emb_layers] == [(5, 8), (8, 4), (11, 2), (13, 1)]
    assert [p.shape for p in emb.emb_projs] == [(8, 8), (8, 4), (8, 2), (8, 1)]
    tokens = _targets_covering(CUTOFFS, (3, 7))
    bounds = [0, *CUTOFFS, VOCAB]
    expected = torch.empty(3, 7, D_MODEL, dtype=torch.float64)
    for b in range(3):
        for p in range(7):
            w = int(tokens[b, p])
            i = sum(w >= c for c in CUTOFFS)
            vec = emb.emb_layers[i].weight[w - bounds[i]]
            expected[b, p] = emb.emb_projs[i] @ vec * math.sqrt(D_MODEL)
    torch.testing.assert_close(emb(tokens), expected, rtol=0, atol=1e-12)


def test_embedding_rejects_out_of_range_tokens():
    emb, _ = _build(CUTOFFS, 2, False)
    with pytest.raises(IndexError):
        emb(torch.tensor([[0, VOCAB]]))


def test_embedding_projected_init_keeps_the_unprojected_scale():
    torch.manual_seed(0)
    emb = AdaptiveEmbedding(2000, 64, [500, 1000], div_val=4, init_std=0.02)
    out = emb(torch.arange(2000)) / emb.emb_scale  # [2000, 64]
    bounds = [0, 500, 1000, 2000]
    for lo, hi in pairwise(bounds):
        assert 0.016 < out[lo:hi].std().item() < 0.024


# --------------------------------------------------------------------------- tying and gradients


@pytest.mark.parametrize("div_val", [1, 2])
def test_tying_shares_weights_and_projections_but_not_biases(div_val):
    torch.manual_seed(0)
    emb = AdaptiveEmbedding(VOCAB, D_MODEL, CUTOFFS, div_val)
    crit = ProjectedAdaptiveLogSoftmax(VOCAB, D_MODEL, CUTOFFS, div_val, tie_to=emb)
    assert len(crit.out_weights) == len(emb.emb_layers)
    assert all(w is layer.weight for w, layer in zip(crit.out_weights, emb.emb_layers, strict=True))
    assert len(crit.out_projs) == len(emb.emb_projs)
    assert all(p is q for p, q in zip(crit.out_projs, emb.emb_projs, strict=True))
    both = torch.nn.ModuleList([emb, crit])
    own = {id(p) for p in crit.parameters()} - {id(p) for p in emb.parameters()}
    assert own == {id(crit.out_bias), id(crit.cluster_weight), id(crit.cluster_bias)}
    assert len(list(both.parameters())) == len(list(emb.parameters())) + 3
    h = torch.randn(4, D_MODEL)
    before = crit.log_prob(h)
    with torch.no_grad():  # one word only: shifting a whole tail's logits equally would cancel
        emb.emb_layers[-1].weight[0].add_(1.0)
    assert not torch.allclose(crit.log_prob(h), before)


def test_tying_survives_dtype_conversion():
    emb, crit = _build(CUTOFFS, 2, True, dtype=torch.float64)
    assert crit.out_weights[0] is emb.emb_layers[0].weight
    assert crit.out_projs[2] is emb.emb_projs[2]


def test_tie_to_with_a_different_layout_is_rejected():
    emb = AdaptiveEmbedding(VOCAB, D_MODEL, CUTOFFS, div_val=2)
    with pytest.raises(ValueError, match="tie_to"):
        ProjectedAdaptiveLogSoftmax(VOCAB, D_MODEL, CUTOFFS, div_val=1, tie_to=emb)
    with pytest.raises(ValueError, match="tie_to"):
        ProjectedAdaptiveLogSoftmax(VOCAB, D_MODEL, [5, 13], div_val=2, tie_to=emb)


@pytest.mark.parametrize("div_val", [1, 2])
@pytest.mark.parametrize("tie", [False, True])
def test_gradients_reach_every_cluster(div_val, tie):
    emb, crit = _build(CUTOFFS, div_val, tie, dtype=torch.float32)
    tokens = _targets_covering(CUTOFFS, (2, 12), seed=4)
    targets = _targets_covering(CUTOFFS, (2, 12), seed=5)
    crit(emb(tokens), targets).mean().backward()
    params = dict(emb.named_parameters(prefix="emb")) | dict(crit.named_parameters(prefix="crit"))
    assert len(params) >= (2 if div_val == 1 else 8)
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if div_val == 1:  # one shared table: every cluster's rows must get gradient
        grad = emb.emb_layers[0].weight.grad
        for lo, hi in pairwise([0, *CUTOFFS, VOCAB]):
            assert grad[lo:hi].abs().sum() > 0
        if not tie:
            out_grad = crit.out_weights[0].grad
            assert all(out_grad[lo:hi].abs().sum() > 0 for lo, hi in pairwise([0, *CUTOFFS, VOCAB]))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "cutoffs, div_val, match",
    [
        ([13, 5], 1, "cutoffs must be strictly increasing"),
        ([5, 5], 1, "cutoffs must be strictly increasing"),
        ([0, 5], 1, "cutoffs must be positive"),
        ([-3], 1, "cutoffs must be positive"),
        ([5, VOCAB], 1, "cutoffs must all be < vocab_size"),
        ([5], 0, "div_val must be >= 1"),
        ([5, 13, 24], 3, "div_val=3 is too large"),  # 8 // 3**3 == 0
    ],
)
@pytest.mark.parametrize("cls", [AdaptiveEmbedding, ProjectedAdaptiveLogSoftmax])
def test_invalid_layouts_raise(cls, cutoffs, div_val, match):
    with pytest.raises(ValueError, match=match):
        cls(VOCAB, D_MODEL, cutoffs, div_val)


def test_largest_valid_div_val_is_accepted():
    AdaptiveEmbedding(VOCAB, D_MODEL, CUTOFFS, div_val=2)  # last width 8 // 8 == 1
    ProjectedAdaptiveLogSoftmax(VOCAB, D_MODEL, CUTOFFS, div_val=2)


def test_forward_rejects_mismatched_shapes():
    _, crit = _build(CUTOFFS, 1, False)
    with pytest.raises(ValueError, match="leading shape"):
        crit(torch.randn(2, 3, D_MODEL, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("div_val", [1, 2])
def test_empty_batch_gives_empty_outputs(div_val):
    emb, crit = _build(CUTOFFS, div_val, True)
    tokens = torch.zeros(2, 0, dtype=torch.long)
    hidden = emb(tokens)
    assert hidden.shape == (2, 0, D_MODEL)
    assert crit(hidden, tokens).shape == (2, 0)
