"""Analytic FLOP count of one training step of an InfiniTransformerLM (and of Transformer-XL).

A multiply-add is 2 FLOPs; a training step is 3x the forward (the backward of a matmul is two
matmuls of the same size); elementwise work, norms, softmax and the optimizer are not counted (they
are not matmuls, so they are not what a matmul ceiling measures). Per layer and forward, with
``n = B * T`` tokens, ``D = d_model``, ``I = n_head * d_head``, ``N = segment_len``:

- projections: ``Q`` and ``O`` on ``n`` tokens, ``K`` and ``V`` on ``n`` tokens (xl: on the cached
  ``mem_len`` states as well, which Transformer-XL recomputes every step): ``2 D I`` each per token;
- FFN: ``2 * 2 D d_inner`` per token;
- local attention, eq. 6: ``Q K^T`` and ``A V``, ``2 * 2 d_head`` per query-key pair and head. Pairs
  are counted two ways: ``causal`` (the pairs the model uses: key at or before the query; xl: plus
  all ``mem_len`` cached keys; the *model* FLOPs of the MFU) or ``dense`` (every pair of the window a
  kernel computes: ``N`` keys per query, xl ``mem_len + N``; what ``torch.utils.flop_counter``
  counts for SDPA, used by the test of this module);
- xl position term ``(q + v) R_{i-j}``: one more ``2 d_head`` per pair and head, and the projection
  ``R = W_R sinusoid`` of the ``mem_len + N`` distances, once per call;
- memory, eqs. 7-9 (infini), per segment, head and lane, with ``dk`` the key features (``d_head``;
  ``6 d_head`` with ``feature: dpfp``) and ``d = d_head``: the read ``phi(Q) [M | z]``:
  ``2 N dk (d + 1)``; the delta write's retrieval ``phi(K) [M | z]``: ``2 N dk (d + 1)``; the write
  ``phi(K)^T V'``: ``2 N dk d`` (linear rule: the write only); the corrected normaliser's gamma and
  denominator floor ``phi(K) z``, ``phi(K) mass``: ``2 * 2 N dk``. ``dense`` counts what the layer
  computes for the delta rule with keys no wider than the segment (``memory.prefix_memories``):
  ``P_s = w^T W``, ``2 N dk^2``, and the ``(I - P_s) M_{s-1}`` product, ``2 dk^2 d``, in place of the
  retrieval's ``2 N dk d``; wider keys compute eq. 9 as written (the model FLOPs). ``normalizer:
  none`` (DeltaNet) writes token by token, ``2 N dk d`` for the retrievals and ``2 N dk d`` for the
  writes; ``dense`` counts its chunkwise WY form: the Gram matrix ``phi(K) phi(K)^T``, ``2 N^2 dk``,
  then ``P_s``, ``U_s`` and the scan (or eq. 9's two products for wide keys) as above, and leaves out
  the triangular solve (``N^2 (dk + d)``), which torch's counter does not count either;
- the write gate (``write_gate``): ``2 D n_head`` per token;
- output head: ``2 D V`` per token (adaptive softmax: the head cluster and the cluster logits).
"""

from __future__ import annotations

from dataclasses import dataclass

from infiniattention.config import ModelConfig
from infiniattention.memory import MemoryOptions


@dataclass(frozen=True)
class StepShape:
    """Batch lanes ``B`` and tokens per lane ``T`` of one step."""

    batch: int
    tokens: int


def _segment_lengths(T: int, N: int) -> list[int]:
    """Lengths of the segments of a call of ``T`` tokens that starts at a segment boundary."""
    return [N] * (T // N) + ([T % N] if T % N else [])


def forward_flops(cfg: ModelConfig, shape: StepShape, attention: str = "causal") -> dict[str, float]:
    """Forward FLOPs of one call on ``[B, T]`` tokens by component (see the module docstring).

    The xl cache is taken as full (``mem_len`` states), its steady state after the first call.
    """
    if attention not in ("causal", "dense"):
        raise ValueError(f"attention must be 'causal' or 'dense', got {attention!r}")
    B, T = shape.batch, shape.tokens
    D, H, dh, N = cfg.d_model, cfg.n_head, cfg.d_head, cfg.segment_len
    inner, n = H * dh, B * T
    xl = cfg.memory == "xl"
    m = cfg.mem_len if xl else 0
    segs = _segment_lengths(T, N)

    kv_tokens = B * (T + m)
    proj = 2 * n * D * inner * 2 + 2 * kv_tokens * D * inner * 2
    ffn = 2 * 2 * n * D * cfg.d_inner
    pairs = 0
    for L in segs:
        if attention == "causal":
            pairs += L * m + L * (L + 1) // 2
        else:  # the kernels' window: L keys of the segment (xl: the whole mem_len + N window)
            pairs += L * (m + N) if xl else L * L
    pairs *= B * H
    attn = 2 * 2 * dh * pairs
    pos = 0
    if cfg.pos == "xl":
        table = m + N if xl else min(T, N)  # distances projected once per call
        pos = 2 * dh * pairs + 2 * table * D * inner
    mem = 0
    if cfg.memory == "infini":
        dk = MemoryOptions(feature=cfg.feature).key_dim(dh)
        full = T // N
        read = sum(2 * L * dk * (dh + 1) for L in segs)
        write = full * N * 2 * dk * dh
        if cfg.normalizer == "none":  # DeltaNet: no z column in the retrieval
            write += full * N * 2 * dk * dh
            if attention == "dense":
                write += full * 2 * N * N * dk  # the WY form's Gram matrix
                if not 2 * N * dh < dk * (N + dh):
                    write += full * (2 * N * dk * dk + 2 * dk * dk * dh - 2 * N * dk * dh)
        elif cfg.update == "delta":
            write += full * N * 2 * dk * (dh + 1)
            if cfg.normalizer == "corrected":
                write += full * 2 * 2 * N * dk
            if attention == "dense" and not 2 * N * dh < dk * (N + dh):
                # the G form: P_s = w^T W and (I - P_s) M_{s-1} in place of the retrieval (wider keys
                # compute eq. 9 as written: the retrieval and the write, the model FLOPs)
                write += full * (2 * N * dk * dk + 2 * dk * dk * dh - 2 * N * dk * dh)
        mem = B * H * (read + write)
        proj += 2 * n * D * H if cfg.write_gate else 0
    if cfg.adaptive and cfg.cutoffs:
        head = 2 * n * D * (cfg.cutoffs[0] + len(cfg.cutoffs))
    else:
        head = 2 * n * D * cfg.vocab_size
    per_layer = {"projections": proj, "ffn": ffn, "attention": attn, "xl_position": pos, "memory": mem}
    out = {k: float(v * cfg.n_layer) for k, v in per_layer.items()}
    out["head"] = float(head)
    out["total"] = sum(out.values())
    return out


def train_flops(cfg: ModelConfig, shape: StepShape, attention: str = "causal") -> float:
    """FLOPs of one training step (forward + backward = 3x forward)."""
    return 3.0 * forward_flops(cfg, shape, attention)["total"]
