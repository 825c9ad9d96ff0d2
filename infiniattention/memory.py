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
    return F.elu(x).add_(1.0)  # in place: elu's backward needs its input, not its output


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


def read_products(q: Tensor, Mz: Tensor) -> Tensor:
    """``s(Q) [M | z]``: the numerator and the denominator of eq. 7 from one matmul,
    ``[..., T, d_value + 1]``. ``q`` in the memory dtype."""
    return sigma(q) @ Mz


class GatedRead(torch.autograd.Function):
    """Eq. 10 with the read of eq. 7: ``(1 - g) A_dot + g s(Q) M / (s(Q) z)``, ``g = sigmoid(b)``.

    ``forward(a_dot [B, H, T, dv], out [B, H, T, dv + 1], b [H], eps)``, where ``out = s(Q) [M | z]``
    (``read_products``). The result has ``a_dot``'s dtype; the sum is formed in
    ``out``'s (the memory dtype: ``s(Q) M`` alone grows with the stream and overflows half
    precision). The gate is folded into the ``[B, H, T, 1]`` normaliser before it touches the
    full-size numerator, so the forward is two full-size passes. The backward is written out because
    autograd's makes more full-size passes: a product of the numerator by ``addcmul``'s scalar 1 and
    separate products and reductions for the normaliser and the gate.
    """

    @staticmethod
    def forward(ctx, a_dot: Tensor, out: Tensor, b: Tensor, eps: float) -> Tensor:
        d = out.size(-1) - 1
        g = torch.sigmoid(b.to(out.dtype)).view(1, -1, 1, 1)
        inv = out[..., d:].clamp_min(eps).reciprocal()  # [B, H, T, 1]
        res = a_dot * (1.0 - g)  # promoted to the memory dtype
        res.addcmul_(out[..., :d], g * inv)
        ctx.save_for_backward(a_dot, out, b)
        ctx.eps = eps
        return res.to(a_dot.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        with full_precision(grad):  # also when backward() is called under autocast: einsum is a bmm
            return GatedRead._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        a_dot, out, b = ctx.saved_tensors
        d = out.size(-1) - 1
        g = torch.sigmoid(b.to(out.dtype)).view(1, -1, 1, 1)
        den = out[..., d:]
        inv = den.clamp_min(ctx.eps).reciprocal()
        grad = grad.to(out.dtype)
        grad_a = (grad * (1.0 - g)).to(a_dot.dtype) if ctx.needs_input_grad[0] else None
        grad_out = grad_b = None
        s = torch.einsum("...td,...td->...t", grad, out[..., :d]).unsqueeze(-1)  # [B, H, T, 1]
        if ctx.needs_input_grad[1]:
            # d inv / d den = -inv^2 where den > eps (clamp_min passes no gradient below it)
            grad_den = s * (-g * inv * inv).masked_fill_(den < ctx.eps, 0.0)
            grad_out = torch.cat([grad * (g * inv), grad_den], dim=-1)
        if ctx.needs_input_grad[2]:
            grad_g = (s * inv).sum((0, 2, 3)) - torch.linalg.vecdot(grad, a_dot.to(grad.dtype)).sum((0, 2))
            grad_b = (grad_g * g.view(-1) * (1.0 - g.view(-1))).to(b.dtype)
        return grad_a, grad_out, grad_b, None


def augment(M: Tensor, z: Tensor) -> Tensor:
    """``[M | z]``: ``M [..., dk, dv]``, ``z [..., dk]`` -> ``[..., dk, dv + 1]``."""
    return torch.cat([M, z.unsqueeze(-1)], dim=-1)


def prefix_memories(
    M0: Tensor, z0: Tensor, k: Tensor, v: Tensor, rule: str, eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Memories before and after each of ``S`` complete segments, as ``[M | z]`` and the last ``M``.

    ``M0 [B, H, dk, dv]``, ``z0 [B, H, dk]``; ``k [B, H, S, N, dk]``, ``v [B, H, S, N, dv]`` in the
    memory dtype. Returns ``Mz [B, H, S, dk, dv + 1]``, entry ``s`` the memory ``[M_{s-1} | z_{s-1}]``
    that segment ``s`` reads (eq. 7), and the memory after all writes, ``M_S [B, H, dk, dv]`` and
    ``z_S [B, H, dk]``.

    The work that touches the ``N`` tokens of a segment is done for all segments at once, in batched
    matmuls: ``s(K)`` once; ``z`` is a cumulative sum (eq. 8), so it is known before any ``M``. Linear
    rule (eq. 8): ``M`` is a cumulative sum of ``s(K)^T V``. Delta rule (eq. 9): with
    ``den_s = s(K_s) z_{s-1}`` (known in advance), ``W_s = s(K_s) / den_s`` (row-wise),
    ``U_s = s(K_s)^T V_s`` and ``P_s = s(K_s)^T W_s``,

        M_s = M_{s-1} + s(K_s)^T (V_s - W_s M_{s-1}) = U_s + (I - P_s) M_{s-1},

    so only a ``dk x dk`` by ``dk x dv`` product per segment remains in the loop over segments, and
    its backward handles ``dk x dv`` gradients, never ``[B, H, N, d]`` ones.
    """
    if rule not in ("delta", "linear"):
        raise ValueError(f"update rule must be 'delta' or 'linear', got {rule!r}")
    B, H, S, N, dk = k.shape
    sk = sigma(k)  # [B, H, S, N, dk]
    skT = sk.transpose(-1, -2)  # [B, H, S, dk, N]
    U = skT @ v  # [B, H, S, dk, dv]: s(K)^T V of every segment
    if rule == "linear":
        Mz0 = augment(M0, z0).unsqueeze(2)  # [B, H, 1, dk, dv + 1]
        Mz = torch.cat([Mz0, Mz0 + augment(U, sk.sum(dim=-2)).cumsum(dim=2)], dim=2)  # [B, H, S + 1, ...]
        last = Mz[:, :, S]
        return Mz[:, :, :S], last[..., :-1].clone(), last[..., -1].clone()
    z = torch.cat([z0.unsqueeze(2), z0.unsqueeze(2) + sk.sum(dim=-2).cumsum(dim=2)], dim=2)  # [B,H,S+1,dk]
    den = (sk @ z[:, :, :S].unsqueeze(-1)).clamp_min(eps)  # [B, H, S, N, 1]: s(K_s) z_{s-1}
    eye = torch.eye(dk, dtype=k.dtype, device=k.device)
    G = eye - skT @ (sk * den.reciprocal())  # [B, H, S, dk, dk]: I - P_s
    dv = v.size(-1)
    Ms = [M0.reshape(B * H, dk, dv)]
    # unbind, not G[:, :, s]: the backward of S slices would zero-fill S full-size gradients.
    for G_s, U_s in zip(G.reshape(B * H, S, dk, dk).unbind(1), U.reshape(B * H, S, dk, dv).unbind(1),
                        strict=True):
        Ms.append(torch.baddbmm(U_s, G_s, Ms[-1]))  # U_s + (I - P_s) M_{s-1}
    M = torch.stack(Ms[:S], dim=1).reshape(B, H, S, dk, dv)
    return augment(M, z[:, :, :S]), Ms[S].reshape(B, H, dk, dv), z[:, :, S].clone()


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
