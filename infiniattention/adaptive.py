"""Adaptive input embeddings and adaptive softmax for large vocabularies.

The vocabulary is split by frequency rank into clusters ``[0, c0), [c0, c1), ..., [c_last, V)``.
Cluster ``i`` gets width ``d_model // div_val**i``, so rare words cost fewer parameters:

* :class:`AdaptiveEmbedding` -- adaptive input (Baevski & Auli, 2019): each cluster has its own
  table and a linear projection up to ``d_model``.
* :class:`ProjectedAdaptiveLogSoftmax` -- adaptive softmax (Grave et al., 2017): a head softmax over
  the shortlist ``[0, c0)`` plus one logit per tail cluster, and a softmax inside each tail, so
  ``log p(w | h) = log p(cluster(w) | h) + log p(w | cluster(w), h)``.

Both follow Transformer-XL's ``AdaptiveEmbedding`` / ``ProjectedAdaptiveLogSoftmax`` in behaviour,
including weight tying of the output tables and projections to the input ones.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _validate_clusters(vocab_size: int, d_model: int, cutoffs: list[int], div_val: int) -> list[int]:
    """Check the cluster layout and return the boundaries ``[0, *cutoffs, vocab_size]``."""
    if vocab_size < 1 or d_model < 1:
        raise ValueError(f"vocab_size and d_model must be >= 1, got {vocab_size} and {d_model}")
    if any(c <= 0 for c in cutoffs):
        raise ValueError(f"cutoffs must be positive, got {cutoffs}")
    if any(b <= a for a, b in pairwise(cutoffs)):
        raise ValueError(f"cutoffs must be strictly increasing, got {cutoffs}")
    if any(c >= vocab_size for c in cutoffs):
        raise ValueError(f"cutoffs must all be < vocab_size={vocab_size}, got {cutoffs}")
    if div_val < 1:
        raise ValueError(f"div_val must be >= 1, got {div_val}")
    n_clusters = len(cutoffs) + 1
    if d_model // div_val ** (n_clusters - 1) < 1:
        raise ValueError(
            f"div_val={div_val} is too large: the last of {n_clusters} clusters would have width "
            f"d_model // div_val**{n_clusters - 1} = 0 (d_model={d_model}); use a smaller div_val "
            f"or fewer cutoffs"
        )
    return [0, *cutoffs, vocab_size]


def _cluster_of(tokens: Tensor, cutoffs: Tensor) -> Tensor:
    """Cluster index of each token id: i such that bounds[i] <= token < bounds[i + 1].

    Out-of-range ids land in the first or last cluster, whose table lookup then raises, instead of
    silently matching no cluster.
    """
    return torch.bucketize(tokens.contiguous(), cutoffs, right=True)


def _to_float32_or_wider(x: Tensor) -> Tensor:
    """Upcast bf16/fp16 to float32; leave float32 and float64 alone (float64 keeps tests exact)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class AdaptiveEmbedding(nn.Module):
    """Adaptive input representations (Baevski & Auli, 2019), scaled by sqrt(d_model).

    With ``div_val == 1`` every cluster would have width ``d_model`` and need no projection, so the
    module is a single ``nn.Embedding(vocab_size, d_model)`` and ``emb_projs`` is empty. Otherwise
    cluster ``i`` has table ``emb_layers[i]`` of width ``d_model // div_val**i`` and projection
    ``emb_projs[i]`` of shape ``[d_model, d_emb_i]`` (Transformer-XL gives cluster 0 one too).
    """

    def __init__(
        self, vocab_size: int, d_model: int, cutoffs: list[int], div_val: int = 1, init_std: float = 0.02
    ) -> None:
        super().__init__()
        self.bounds = _validate_clusters(vocab_size, d_model, cutoffs, div_val)
        self.vocab_size, self.d_model, self.div_val = vocab_size, d_model, div_val
        self.cutoffs = list(cutoffs)
        self.d_embs = [d_model // div_val**i for i in range(len(cutoffs) + 1)]
        # Transformer-XL (after Vaswani et al.) multiplies embeddings by sqrt(d_model), lifting the
        # small-init tables (std init_std) towards unit scale in the residual stream.
        self.emb_scale = d_model**0.5
        self.register_buffer("_cutoffs", torch.tensor(self.cutoffs, dtype=torch.long), persistent=False)

        if div_val == 1:
            self.emb_layers = nn.ModuleList([nn.Embedding(vocab_size, d_model)])
            self.emb_projs = nn.ParameterList()
        else:
            sizes = [hi - lo for lo, hi in pairwise(self.bounds)]
            self.emb_layers = nn.ModuleList(
                nn.Embedding(n, d) for n, d in zip(sizes, self.d_embs, strict=True)
            )
            self.emb_projs = nn.ParameterList(nn.Parameter(torch.empty(d_model, d)) for d in self.d_embs)
        for layer in self.emb_layers:
            nn.init.normal_(layer.weight, std=init_std)
        for proj in self.emb_projs:
            # std 1/sqrt(d_emb) preserves variance, so every cluster's projected embedding has the same
            # scale (init_std) as an unprojected one, whatever its width.
            nn.init.normal_(proj, std=proj.shape[1] ** -0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        """Embed ``tokens`` [...] into [..., d_model], each token through its own cluster's table."""
        if self.div_val == 1:
            return self.emb_layers[0](tokens) * self.emb_scale  # [..., d_model]
        flat = tokens.reshape(-1)  # [N]
        cluster = _cluster_of(flat, self._cutoffs)  # [N]
        out = None
        for i, lo in enumerate(self.bounds[:-1]):
            idx = (cluster == i).nonzero().squeeze(1)  # [n_i]
            if idx.numel() == 0:
                continue
            emb_i = self.emb_layers[i](flat[idx] - lo)  # [n_i, d_emb_i]
            proj_i = F.linear(emb_i, self.emb_projs[i])  # [n_i, d_model]
            if out is None:
                # Created from the first projected piece so it takes autocast's dtype.
                out = proj_i.new_zeros(flat.numel(), self.d_model)  # [N, d_model]
            out = out.index_copy(0, idx, proj_i.to(out.dtype))
        if out is None:  # no tokens at all
            out = self.emb_projs[0].new_zeros(0, self.d_model)  # [0, d_model]
        return out.reshape(*tokens.shape, self.d_model) * self.emb_scale  # [..., d_model]


class ProjectedAdaptiveLogSoftmax(nn.Module):
    """Adaptive softmax (Grave et al., 2017) with per-cluster projections, returning per-token NLL.

    The head scores the shortlist ``[0, c0)`` and one logit per tail cluster; tail ``i`` scores its
    own words after projecting ``hidden`` down to width ``d_model // div_val**i``. With ``cutoffs=[]``
    it is a plain full softmax with the same API.

    Parameters: ``out_weights`` (one ``[vocab_size, d_model]`` table when ``div_val == 1``, else one
    ``[n_i, d_emb_i]`` per cluster), ``out_projs`` (``[d_model, d_emb_i]`` per cluster, empty when
    ``div_val == 1``), ``out_bias`` ``[vocab_size]``, and ``cluster_weight`` / ``cluster_bias`` for the
    tail logits of the head (``None`` without tails). With ``tie_to`` the weights and projections are
    the embedding's own parameter objects (Transformer-XL ``tie_weight`` + ``tie_projs``); biases and
    cluster logits stay separate.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        cutoffs: list[int],
        div_val: int = 1,
        tie_to: AdaptiveEmbedding | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.bounds = _validate_clusters(vocab_size, d_model, cutoffs, div_val)
        self.vocab_size, self.d_model, self.div_val = vocab_size, d_model, div_val
        self.cutoffs = list(cutoffs)
        self.d_embs = [d_model // div_val**i for i in range(len(cutoffs) + 1)]
        self.n_tails = len(cutoffs)
        self.register_buffer("_cutoffs", torch.tensor(self.cutoffs, dtype=torch.long), persistent=False)

        if tie_to is not None:
            self._check_tie(tie_to)
            self.out_weights = nn.ParameterList(layer.weight for layer in tie_to.emb_layers)
            self.out_projs = nn.ParameterList(tie_to.emb_projs)
        else:
            self.out_weights, self.out_projs = self._own_weights(init_std)
        self.out_bias = nn.Parameter(torch.zeros(vocab_size))
        if self.n_tails:
            self.cluster_weight = nn.Parameter(torch.randn(self.n_tails, d_model) * init_std)
            self.cluster_bias = nn.Parameter(torch.zeros(self.n_tails))
        else:
            self.register_parameter("cluster_weight", None)
            self.register_parameter("cluster_bias", None)

    def _check_tie(self, emb: AdaptiveEmbedding) -> None:
        """Tying needs the embedding to have exactly the same cluster layout."""
        mine = (self.vocab_size, self.d_model, self.cutoffs, self.div_val)
        theirs = (emb.vocab_size, emb.d_model, emb.cutoffs, emb.div_val)
        if mine != theirs:
            raise ValueError(
                f"tie_to has (vocab_size, d_model, cutoffs, div_val) = {theirs} but this softmax has "
                f"{mine}; build both from the same values to tie them"
            )

    def _own_weights(self, init_std: float) -> tuple[nn.ParameterList, nn.ParameterList]:
        """Untied tables and projections, initialised like :class:`AdaptiveEmbedding`'s."""
        if self.div_val == 1:
            weights = nn.ParameterList([nn.Parameter(torch.randn(self.vocab_size, self.d_model) * init_std)])
            return weights, nn.ParameterList()
        sizes = [hi - lo for lo, hi in pairwise(self.bounds)]
        weights = nn.ParameterList(
            nn.Parameter(torch.randn(n, d) * init_std) for n, d in zip(sizes, self.d_embs, strict=True)
        )
        projs = nn.ParameterList(nn.Parameter(torch.randn(self.d_model, d) * d**-0.5) for d in self.d_embs)
        return weights, projs

    def _cluster_params(self, i: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Cluster i's output table [n_i, d_emb_i], bias [n_i] and projection [d_model, d_emb_i] or None."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        if self.div_val == 1:
            return self.out_weights[0][lo:hi], self.out_bias[lo:hi], None
        return self.out_weights[i], self.out_bias[lo:hi], self.out_projs[i]

    @staticmethod
    def _log_softmax(hidden: Tensor, weight: Tensor, bias: Tensor, proj: Tensor | None) -> Tensor:
        """log_softmax(proj(hidden) W^T + b) over the rows of ``weight``: [n, rows]."""
        if proj is not None:
            hidden = F.linear(hidden, proj.t())  # [n, d_emb]
        logits = F.linear(hidden, weight, bias)  # [n, rows]
        # The logsumexp sums thousands of exponentials: in bf16 (8-bit mantissa) each term and the
        # running sum are rounded to ~0.4%, which shifts the NLL by far more than the differences in
        # bpc/perplexity we compare. Normalising in float32 costs little next to the matmul above.
        return F.log_softmax(_to_float32_or_wider(logits), dim=-1)

    def _head_log_softmax(self, hidden: Tensor) -> Tensor:
        """Head log-probs [N, c0 + n_tails]: shortlist words, then one column per tail cluster."""
        weight, bias, proj = self._cluster_params(0)
        if self.n_tails:
            weight = torch.cat([weight, self.cluster_weight], dim=0)  # [c0 + n_tails, d_model]
            bias = torch.cat([bias, self.cluster_bias], dim=0)  # [c0 + n_tails]
        return self._log_softmax(hidden, weight, bias, proj)

    def forward(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Per-token NLL in nats (float32 or wider), shaped like ``targets``.

        Grave et al. 2017: -log p(w|h) = -log p(C(w)|h) - log p(w|C(w),h). The head is scored for
        every token; a tail only for the tokens whose target lies in it, so no [N, vocab_size] logits
        are ever built.
        """
        if hidden.shape[:-1] != targets.shape or hidden.shape[-1] != self.d_model:
            raise ValueError(
                f"hidden must be [..., {self.d_model}] with leading shape equal to targets' "
                f"{tuple(targets.shape)}, got {tuple(hidden.shape)}"
            )
        h = hidden.reshape(-1, self.d_model)  # [N, d_model]
        t = targets.reshape(-1)  # [N]
        cluster = _cluster_of(t, self._cutoffs)  # [N]
        c0 = self.bounds[1]
        # Column of the head that each target needs: the word itself, or its tail cluster's logit.
        head_col = torch.where(cluster == 0, t, c0 + cluster - 1)  # [N]
        nll = -self._head_log_softmax(h).gather(1, head_col[:, None]).squeeze(1)  # [N]
        for i in range(1, self.n_tails + 1):
            idx = (cluster == i).nonzero().squeeze(1)  # [n_i]
            if idx.numel() == 0:
                continue
            tail_lp = self._log_softmax(h[idx], *self._cluster_params(i))  # [n_i, |cluster i|]
            word_lp = tail_lp.gather(1, (t[idx] - self.bounds[i])[:, None]).squeeze(1)  # [n_i]
            nll = nll.index_add(0, idx, -word_lp.to(nll.dtype))
        return nll.reshape(targets.shape)

    def log_prob(self, hidden: Tensor) -> Tensor:
        """Full normalised log-probabilities [..., vocab_size], for generation and tests (O(N V) memory)."""
        if hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden must be [..., {self.d_model}], got {tuple(hidden.shape)}")
        h = hidden.reshape(-1, self.d_model)  # [N, d_model]
        head = self._head_log_softmax(h)  # [N, c0 + n_tails]
        c0 = self.bounds[1]
        parts = [head[:, :c0]]
        for i in range(1, self.n_tails + 1):
            tail_lp = self._log_softmax(h, *self._cluster_params(i))  # [N, |cluster i|]
            parts.append(head[:, c0 + i - 1, None] + tail_lp.to(head.dtype))
        return torch.cat(parts, dim=-1).reshape(*hidden.shape[:-1], self.vocab_size)  # [..., vocab_size]
