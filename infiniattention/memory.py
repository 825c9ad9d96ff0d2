"""Compressive memory of Infini-attention: read (eq. 7), linear write (eq. 8), delta write (eq. 9).

Equation numbers follow v2 of the paper (v1 in brackets). Per head the memory is a matrix
``M: d_key x d_value`` and a normaliser ``z: d_key``; both start at zero and are kept in float32 (or
float64 when the inputs are float64) whatever the compute dtype, because ``z`` grows with every token
and overflows in half precision. Every division is ``num / den.clamp_min(eps)``, so a read of an empty
memory is exactly 0 and never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def sigma(x: Tensor) -> Tensor:
    """The paper's non-linearity for keys and queries of the memory: s(x) = ELU(x) + 1 > 0."""
    return F.elu(x) + 1.0


def memory_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the memory path: float32 for half/bfloat16/float32 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


@dataclass
class MemoryState:
    """Memory of one layer: ``M [B, H, d_key, d_value]`` and ``z [B, H, d_key]`` (float32)."""

    M: Tensor
    z: Tensor

    @classmethod
    def zeros(
        cls,
        batch_size: int,
        n_head: int,
        d_key: int,
        d_value: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> MemoryState:
        """M_0 = 0, z_0 = 0."""
        return cls(
            torch.zeros(batch_size, n_head, d_key, d_value, device=device, dtype=dtype),
            torch.zeros(batch_size, n_head, d_key, device=device, dtype=dtype),
        )

    def detach(self) -> MemoryState:
        return MemoryState(self.M.detach(), self.z.detach())


def full_precision(x: Tensor) -> torch.autocast:
    """Autocast switched off on ``x``'s device: the memory path runs in its own dtype."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def memory_read(q: Tensor, M: Tensor, z: Tensor, eps: float = 1e-6) -> Tensor:
    """Memory read, eq. 7 (v1 eq. 3): ``A_mem = s(Q) M / (s(Q) z)``.

    ``q [..., T, d_key]``, ``M [..., d_key, d_value]``, ``z [..., d_key]`` -> ``[..., T, d_value]``.
    The result has the memory's dtype, also under autocast.
    """
    with full_precision(q):
        sq = sigma(q.to(M.dtype))  # [..., T, d_key]
        num = sq @ M  # [..., T, d_value]
        den = (sq @ z.unsqueeze(-1)).clamp_min(eps)  # [..., T, 1]
        return num / den


def linear_update(k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Increments of the linear write, eq. 8 (v1 eq. 4): ``dM = s(K)^T V``, ``dz = sum_t s(K_t)``.

    ``k [..., T, d_key]``, ``v [..., T, d_value]`` (already in the memory dtype).
    """
    sk = sigma(k)
    return sk.transpose(-1, -2) @ v, sk.sum(dim=-2)


def delta_write(M: Tensor, z: Tensor, k: Tensor, v: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Delta write, eq. 9 (v1 eq. 5): ``M + s(K)^T (V - s(K) M / (s(K) z))``; ``z`` as in eq. 8.

    Only what the memory does not already retrieve for a key is added. The denominator uses the
    normaliser *before* this write.
    """
    sk = sigma(k)  # [..., T, d_key]
    retrieved = (sk @ M) / (sk @ z.unsqueeze(-1)).clamp_min(eps)  # [..., T, d_value]
    return M + sk.transpose(-1, -2) @ (v - retrieved), z + sk.sum(dim=-2)


def linear_write(M: Tensor, z: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Linear write, eq. 8 (v1 eq. 4): ``M + s(K)^T V``, ``z + sum_t s(K_t)``."""
    dM, dz = linear_update(k, v)
    return M + dM, z + dz


def prefix_memories(
    M0: Tensor, z0: Tensor, k: Tensor, v: Tensor, rule: str, eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Memories before and after each of ``S`` complete segments.

    ``M0 [B, H, dk, dv]``, ``z0 [B, H, dk]``; ``k [B, H, S, N, dk]``, ``v [B, H, S, N, dv]`` in the
    memory dtype. Returns ``M [B, H, S + 1, dk, dv]`` and ``z [B, H, S + 1, dk]``: entry ``s`` is the
    memory that segment ``s`` reads (``M_{s-1}`` of eq. 7), the last one the memory after all writes.
    The linear rule is a cumulative sum of the per-segment increments; the delta rule depends on the
    memory it writes into, so it loops over segments, on the small ``dk x dv`` matrices only.
    """
    if rule == "linear":
        dM, dz = linear_update(k, v)  # [B, H, S, dk, dv], [B, H, S, dk]
        M = torch.cat([M0.unsqueeze(2), M0.unsqueeze(2) + dM.cumsum(dim=2)], dim=2)
        z = torch.cat([z0.unsqueeze(2), z0.unsqueeze(2) + dz.cumsum(dim=2)], dim=2)
        return M, z
    if rule == "delta":
        Ms, zs = [M0], [z0]
        # unbind, not k[:, :, s]: the backward of S slices would zero-fill S full-size gradients.
        for k_s, v_s in zip(k.unbind(2), v.unbind(2), strict=True):
            M_next, z_next = delta_write(Ms[-1], zs[-1], k_s, v_s, eps)
            Ms.append(M_next)
            zs.append(z_next)
        return torch.stack(Ms, dim=2), torch.stack(zs, dim=2)
    raise ValueError(f"update rule must be 'delta' or 'linear', got {rule!r}")


class CompressiveMemory:
    """A stateful view of the memory for use outside the layer (tests, analysis, demos).

    ``read`` implements eq. 7 against the current state; ``write`` replaces the state by the result of
    eq. 8 or 9 (new tensors, differentiable, never in place).
    """

    def __init__(
        self,
        n_head: int,
        d_key: int,
        d_value: int,
        eps: float = 1e-6,
        batch_size: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.eps = eps
        self.state = MemoryState.zeros(batch_size, n_head, d_key, d_value, device, memory_dtype(dtype))

    def read(self, q: Tensor) -> Tensor:
        """``q [B, H, T, d_key]`` -> ``[B, H, T, d_value]`` (eq. 7)."""
        return memory_read(q, self.state.M, self.state.z, self.eps)

    def write(self, k: Tensor, v: Tensor, rule: str = "linear") -> None:
        """Write ``k [B, H, T, d_key]``, ``v [B, H, T, d_value]`` with eq. 8 (linear) or 9 (delta)."""
        M, z = self.state.M, self.state.z
        k, v = k.to(M.dtype), v.to(M.dtype)
        with full_precision(k):
            if rule == "linear":
                M, z = linear_write(M, z, k, v)
            elif rule == "delta":
                M, z = delta_write(M, z, k, v, self.eps)
            else:
                raise ValueError(f"update rule must be 'delta' or 'linear', got {rule!r}")
        self.state = MemoryState(M, z)
