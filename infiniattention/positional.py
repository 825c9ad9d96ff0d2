"""Positional encodings of the local attention branch (never of the memory path, paper §4.1).

Positions are offsets inside a segment (0..N-1), or, for the Transformer-XL cache, relative
distances: never absolute stream positions, whose float32 rotary angles lose precision at a million
tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE), rotate-half convention.

    ``inv_freq[i] = base^(-2i/d)``; the two halves ``x1 = x[:d/2]``, ``x2 = x[d/2:]`` are rotated by
    ``angle = position * inv_freq``: ``[x1 cos - x2 sin, x2 cos + x1 sin]``.
    """

    def __init__(self, d_head: int, base: float = 10000.0) -> None:
        super().__init__()
        if d_head % 2:
            raise ValueError(f"rope needs an even d_head, got {d_head}")
        inv_freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x [..., L, d]`` by ``positions [L]``."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        angles = positions.to(dtype)[:, None] * self.inv_freq.to(dtype)[None, :]  # [L, d/2]
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        return _Rotation.apply(x, cos, sin)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``[x1 cos - x2 sin, x2 cos + x1 sin]``: per half a product and an in-place ``addcmul_``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([(x1 * cos).addcmul_(x2, sin, value=-1.0), (x2 * cos).addcmul_(x1, sin)], dim=-1)


class _Rotation(torch.autograd.Function):
    """RoPE as a rotation by ``angle``; its backward is the rotation by ``-angle`` (the transpose of
    an orthogonal map): the forward's few passes instead of autograd's eight products, four sums
    and a split."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, -sin), None, None


class XLRelativePosition(nn.Module):
    """Transformer-XL relative positional encoding (Dai et al. 2019, §3.3).

    The score of query ``i`` and key ``j`` is ``(q_i + u) k_j + (q_i + v) R_{i-j}`` where ``R`` is a
    learned projection of a sinusoid of the distance. This module supplies ``u`` (``r_w_bias``) and the
    second term; the first is ordinary dot-product attention with ``q + u``.

    As in kimiyoung/transformer-xl, dropout (``dropout``) is applied to the sinusoid before its
    projection, and ``u, v`` may be owned by the caller (one pair shared by every layer of a model):
    with ``biases=False`` this module has no ``u, v`` of its own and they are passed to each call.
    """

    def __init__(self, d_model: int, n_head: int, d_head: int, clamp_len: int = -1,
                 dropout: float = 0.0, biases: bool = True) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"xl positions need an even d_model, got {d_model}")
        self.n_head, self.d_head, self.clamp_len = n_head, d_head, clamp_len
        self.r_proj = nn.Linear(d_model, n_head * d_head, bias=False)
        self.drop = nn.Dropout(dropout)
        if biases:
            self.r_w_bias = nn.Parameter(torch.empty(n_head, d_head).normal_(std=0.02))  # u
            self.r_r_bias = nn.Parameter(torch.empty(n_head, d_head).normal_(std=0.02))  # v
        inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def sinusoid(self, dist: Tensor, dtype: torch.dtype) -> Tensor:
        """``[sin(d f), cos(d f)]`` of distances ``dist [L]`` -> ``[L, d_model]``."""
        angles = dist.to(torch.float64)[:, None] * self.inv_freq[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)

    def uv(self, bias: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        """``(u, v)``: the caller's pair when given, else this module's own."""
        if bias is not None:
            return bias
        if not hasattr(self, "r_w_bias"):
            raise ValueError("this layer shares u, v with its model (biases=False): pass xl_bias=(u, v)")
        return self.r_w_bias, self.r_r_bias

    def embedding(self, n_dist: int, device: torch.device) -> Tensor:
        """``R = r_proj(drop(R0[min(dist, clamp_len)]))``, distances ``0..n_dist-1``: ``[n_dist, H*d]``."""
        table = torch.arange(n_dist, device=device)
        if self.clamp_len > 0:
            table = table.clamp(max=self.clamp_len)
        return self.r_proj(self.drop(self.sinusoid(table, self.r_proj.weight.dtype)))

    def position_scores(self, q: Tensor, q_pos: Tensor, k_pos: Tensor,
                        bias: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The positional term ``(q_i + v) R_{i-j}``, unscaled.

        ``q [B, H, S, Nq, d]``, ``q_pos [Nq]``, ``k_pos [Nk]`` -> ``[B, H, S, Nq, Nk]``. The queries
        must be the last ``Nq`` positions of the keys' window, in order (``q_pos[i] - k_pos[j] =
        i + Nk - Nq - j``, true of every causal window of the layer), so distances are below ``Nk``
        and the table size is known without a device sync. Entries of masked pairs (key after the
        query) hold arbitrary finite values; the caller masks them.

        Transformer-XL's relative shift: one matmul against the table of distances ``Nk - 1, ...,
        0`` preceded by a zero row gives ``[B, H, S, Nq, Nk + 1]``; read with row stride ``Nk``
        instead of ``Nk + 1`` (a view, no copy), row ``i`` starts ``i`` entries later, so entry
        ``(i, j)`` is the score of distance ``i + Nk - Nq - j`` (entry ``Nq + i Nk + j`` of the
        flattened ``Nq x (Nk + 1)`` block, whose first ``Nq`` entries are dropped). No gather.
        """
        B, H, S, Nq, d = q.shape
        Nk = k_pos.numel()
        R = self.embedding(Nk, q.device).to(q.dtype).reshape(Nk, H, d).flip(0)  # distances Nk-1 .. 0
        R = F.pad(R, (0, 0, 0, 0, 1, 0))  # [Nk + 1, H, d]: a zero row in front
        v = self.uv(bias)[1]
        qv = q + v.to(q.dtype)[None, :, None, None, :]
        scores = torch.einsum("bhsnd,rhd->bhsnr", qv, R)  # [B, H, S, Nq, Nk + 1]
        return scores.reshape(B, H, S, Nq * (Nk + 1))[..., Nq:].view(B, H, S, Nq, Nk)

    def content_query(self, q: Tensor, bias: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``q + u`` for the content term; ``q [B, H, ..., d]``."""
        u = self.uv(bias)[0]
        shape = (1, self.n_head) + (1,) * (q.dim() - 3) + (self.d_head,)
        return q + u.to(q.dtype).reshape(shape)
