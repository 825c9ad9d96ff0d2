"""Compressive memory of Infini-attention: read (eq. 7), linear write (eq. 8), delta write (eq. 9),
and the options of later associative-memory work (``MemoryOptions``).

Equation numbers follow v2 of the paper (v1 in brackets). Per head the memory is a matrix
``M: d_key x d_value`` and a normaliser ``z: d_key``; both start at zero and are kept in float32 (or
float64 when the inputs are float64) whatever the compute dtype, because ``z`` grows with every token
and overflows in half precision. Every division is ``num / den.clamp_min(eps)``, so a read of an empty
memory is exactly 0 and never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor


def sigma(x: Tensor) -> Tensor:
    """The paper's non-linearity for keys and queries of the memory: s(x) = ELU(x) + 1 > 0."""
    return F.elu(x).add_(1.0)  # in place: elu's backward needs its input, not its output


def memory_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of the memory path: float32 for half/bfloat16/float32 inputs, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


UPDATE_RULES = ("delta", "linear")
NORMALIZERS = ("sum", "corrected", "none")
FEATURES = ("elu", "dpfp")
KEY_NORMS = ("none", "l2")
DPFP_NU = 3  # Schlag et al. (2021) and ARMT use nu = 3: 2 * 3 * d_head features


@dataclass(frozen=True)
class MemoryOptions:
    """How the memory reads and writes. The defaults are the paper's memory, bit for bit.

    ``feature``: the map ``phi`` applied to queries and keys: ``elu`` is the paper's
    ``s(x) = ELU(x) + 1``; ``dpfp`` is the deterministic parameter-free projection of Schlag, Irie &
    Schmidhuber (2021) with ``nu = 3``, ``2 * nu * d_head`` non-negative, mostly sparse features.
    ``key_norm``: ``l2`` divides every feature vector by its L2 norm (queries and keys alike).
    ``normalizer``: ``sum`` is eq. 8's ``z = sum_t phi(K_t)``; ``corrected`` is ARMT's (Rodkin et al.
    2024): ``z`` grows by ``gamma_t phi(K_t)`` with ``gamma_t = clip(1 - z phi(K_t) / |phi(K_t)|^2, 0,
    1)`` (not back-propagated), so it stops growing along directions it has already counted.
    ``none`` is DeltaNet's memory (Schlag et al. 2021; Yang et al. 2024): no ``z``; the read is
    ``A_mem = phi(Q) M_{s-1}`` and the write is the delta rule token by token,
    ``M_t = M_{t-1} + beta_t phi(k_t)^T (v_t - phi(k_t) M_{t-1})`` with L2-normalised ``phi(k_t)``
    (needs ``update: delta`` and ``key_norm: l2``), computed per segment in the chunkwise WY form
    (``deltanet_segments``). With a unit key and ``beta_t`` in [0, 1] each write replaces part of what
    ``M`` returns for ``k_t`` by ``v_t`` and leaves every orthogonal direction as it was, so ``M``
    never grows with the length of the stream.
    ``write_gate``: a per-head, per-token ``beta_t = sigmoid(w . x_t + b)`` (computed by the layer)
    scales token ``t``'s write into ``M`` and into ``z``, so a model can learn what not to write.
    """

    update: str = "delta"
    normalizer: str = "sum"
    feature: str = "elu"
    key_norm: str = "none"
    write_gate: bool = False
    eps: float = 1e-6

    def __post_init__(self) -> None:
        for name, valid in (("update", UPDATE_RULES), ("normalizer", NORMALIZERS), ("feature", FEATURES),
                            ("key_norm", KEY_NORMS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {', '.join(valid)}; got {getattr(self, name)!r}")
        if not isinstance(self.write_gate, bool):
            raise ValueError(f"write_gate must be true or false, got {self.write_gate!r}")
        if self.normalizer == "corrected" and self.update == "linear":
            raise ValueError("normalizer 'corrected' needs update 'delta': with the linear rule M grows "
                             "without bound while the corrected z stops growing")
        if self.normalizer == "none" and (self.update != "delta" or self.key_norm != "l2"):
            raise ValueError("normalizer 'none' (DeltaNet's memory) needs update 'delta' and key_norm 'l2': "
                             f"got update {self.update!r} and key_norm {self.key_norm!r}")

    def key_dim(self, d_head: int) -> int:
        """Width of ``phi(Q)``, ``phi(K)``: the rows of ``M`` and the length of ``z``."""
        return 2 * DPFP_NU * d_head if self.feature == "dpfp" else d_head


PAPER = MemoryOptions()


def dpfp(x: Tensor, nu: int = DPFP_NU) -> Tensor:
    """DPFP (Schlag, Irie & Schmidhuber 2021): ``r = [ReLU(x), ReLU(-x)]`` (``2 d``), then for ``j = 1..nu``
    the products ``r_i r_{i-j}`` (indices mod ``2 d``), concatenated: ``[..., 2 nu d]``, >= 0."""
    return _Features.apply(x, nu, None)


def feature_map(x: Tensor, opts: MemoryOptions = PAPER) -> Tensor:
    """``phi(x)``, the features of queries and keys that the memory reads and writes with (eq. 7's
    ``s``): ``s(x) = ELU(x) + 1`` (the paper) or DPFP, optionally L2-normalised."""
    if opts.feature == "dpfp":
        return _Features.apply(x, DPFP_NU, opts.eps if opts.key_norm == "l2" else None)
    f = sigma(x)
    if opts.key_norm == "l2":
        f = f / torch.linalg.vector_norm(f, dim=-1, keepdim=True).clamp_min(opts.eps)
    return f


class _Features(torch.autograd.Function):
    """DPFP features, L2-normalised when ``eps`` is given (``f / max(|f|, eps)``), with the backward
    written out: it keeps ``r`` (``2 d`` per token) and, only when normalising, the output and its
    norm, and takes six products per ``j`` where autograd's graph of the rolls, products,
    concatenations and the norm makes about twice as many full-size passes (the feature map was half
    of the memory's cost)."""

    @staticmethod
    def forward(ctx, x: Tensor, nu: int, eps: float | None) -> Tensor:
        r = torch.cat([F.relu(x), F.relu(-x)], dim=-1)  # [..., 2d]
        f = torch.cat([r * r.roll(j, dims=-1) for j in range(1, nu + 1)], dim=-1)  # [..., 2 nu d]
        norm = None
        if eps is not None:
            norm = torch.linalg.vector_norm(f, dim=-1, keepdim=True)
            f = f / norm.clamp_min(eps)
        ctx.save_for_backward(r, f if eps is not None else None, norm)  # f: for the norm's backward only
        ctx.nu, ctx.eps = nu, eps
        return f

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        r, f, norm = ctx.saved_tensors
        if ctx.eps is not None:
            # out = f / n, n = max(|f|, eps): d out = (g - out (g . out) [|f| >= eps]) / n
            radial = (grad * f).sum(-1, keepdim=True) * (norm >= ctx.eps)
            grad = (grad - f * radial) / norm.clamp_min(ctx.eps)
        g = grad.unflatten(-1, (ctx.nu, r.size(-1)))  # [..., nu, 2d]: block j - 1 is r * roll(r, j)
        dr = torch.zeros_like(r)
        for j in range(1, ctx.nu + 1):
            gj = g[..., j - 1, :]
            dr += gj * r.roll(j, dims=-1) + (gj * r).roll(-j, dims=-1)
        d = r.size(-1) // 2
        # relu(x) passes its gradient where x > 0, relu(-x) (negated) where x < 0: where r > 0.
        return dr[..., :d] * (r[..., :d] > 0) - dr[..., d:] * (r[..., d:] > 0), None, None


@torch.no_grad()
def corrected_gamma(z0: Tensor, phi: Tensor, beta: Tensor | None, eps: float) -> Tensor:
    """ARMT's ``gamma_t = clip(1 - z_{s-1} phi_t / |phi_t|^2, 0, 1)`` for every token of ``S`` complete
    segments, each from the normaliser before its segment (the segment-level write of eq. 9), so
    only this loop over segments is sequential. Detached, as in ARMT.

    ``z0 [B, H, dk]``, ``phi [B, H, S, N, dk]``, ``beta [B, H, S, N]`` or None -> ``[B, H, S, N]``.
    """
    z = z0.detach()
    phi = phi.detach()
    sq = phi.square().sum(-1).clamp_min(eps)  # |phi_t|^2, [B, H, S, N]
    gammas = []
    for s in range(phi.size(2)):
        g = (1.0 - (phi[:, :, s] @ z.unsqueeze(-1)).squeeze(-1) / sq[:, :, s]).clamp_(0.0, 1.0)
        gammas.append(g)
        w = g if beta is None else g * beta[:, :, s].detach()
        z = z + (phi[:, :, s] * w.unsqueeze(-1)).sum(-2)
    return torch.stack(gammas, dim=2)


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


def normaliser(phi: Tensor, z: Tensor, opts: MemoryOptions = PAPER, mass: Tensor | None = None) -> Tensor:
    """The denominator of eq. 7 (and of eq. 9's retrieval) before its ``eps`` floor:
    ``phi z`` -> ``[..., T, 1]``.

    With the ``corrected`` normaliser it is ``max(phi z, |phi|^2)``: the threshold at which gamma
    counts a direction as stored (``z phi >= |phi|^2``), so a direction that ``z`` has not counted
    yet is read as if counted once. Without this floor, ``M`` can hold a direction that ``z`` does
    not (a token written with ``gamma = 0`` adds to ``M`` along all its features but to no feature
    of ``z``), and a query along it divides a finite ``phi M`` by ``eps``.

    ``mass [..., d_key]`` (the write's own segment, ``sum_t beta_t phi(K_t)``; ``corrected`` only)
    raises the retrieval's denominator to at least ``phi . mass``. Eq. 9 writes a whole segment at
    once; the paper's ``z`` holds every earlier token, so its ``phi z`` outgrows one segment's keys,
    but the corrected ``z`` stops growing, and a segment of correlated keys would add up to ``N``
    full delta steps along one direction (``M`` grows without bound: measured in the tests). With
    the segment's mass in the denominator the segment's correction ``P_s`` has spectral radius
    <= 1 (Schur test on non-negative features), so each write is non-expansive.
    """
    if opts.normalizer == "none":  # DeltaNet: the read is phi(Q) M itself
        return torch.ones_like(phi[..., :1])
    den = phi @ z.unsqueeze(-1)
    if opts.normalizer == "corrected":
        den = torch.maximum(den, phi.square().sum(-1, keepdim=True))
        if mass is not None:
            den = torch.maximum(den, phi @ mass.unsqueeze(-1))
    return den


def memory_read(q: Tensor, M: Tensor, z: Tensor, eps: float = 1e-6, opts: MemoryOptions = PAPER) -> Tensor:
    """Memory read, eq. 7 (v1 eq. 3): ``A_mem = phi(Q) M / (phi(Q) z)``, ``phi = s`` for the paper.

    ``q [..., T, d_head]``, ``M [..., d_key, d_value]``, ``z [..., d_key]`` -> ``[..., T, d_value]``.
    The result has the memory's dtype, also under autocast.
    """
    with full_precision(q):
        fq = feature_map(q.to(M.dtype), opts)  # [..., T, d_key]
        return (fq @ M) / normaliser(fq, z, opts).clamp_min(eps)


def write(M: Tensor, z: Tensor, k: Tensor, v: Tensor, opts: MemoryOptions = PAPER,
          beta: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The write of one complete segment: eq. 8 (linear) or eq. 9 (delta), with the options.

    ``M [..., d_key, d_value]``, ``z [..., d_key]``; raw keys ``k [..., T, d_head]``, values
    ``v [..., T, d_value]`` and the write gate ``beta [..., T]`` (or None), all in the memory dtype.
    Every token retrieves from the memory before the segment (eq. 9's denominator uses ``z`` before
    the write). New tensors, differentiable, never in place.
    """
    gate = None if beta is None else beta.unsqueeze(-2)
    _, M, z = prefix_memories(M, z, k.unsqueeze(-3), v.unsqueeze(-3), opts, gate)
    return M, z


def read_products(q: Tensor, Mz: Tensor, opts: MemoryOptions = PAPER) -> Tensor:
    """``phi(Q) [M | z]``: the numerator and the denominator of eq. 7 from one matmul,
    ``[..., T, d_value + 1]``. ``q`` in the memory dtype. With the ``corrected`` normaliser the last
    column is ``normaliser``'s floored denominator."""
    fq = feature_map(q, opts)
    out = fq @ Mz
    if opts.normalizer == "corrected":
        den = torch.maximum(out[..., -1:], fq.square().sum(-1, keepdim=True))
        out = torch.cat([out[..., :-1], den], dim=-1)
    elif opts.normalizer == "none":  # no denominator: a column of ones (GatedRead divides by 1 exactly)
        out = torch.cat([out[..., :-1], torch.ones_like(out[..., -1:])], dim=-1)
    return out


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
    M0: Tensor, z0: Tensor, k: Tensor, v: Tensor, opts: MemoryOptions = PAPER, beta: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Memories before and after each of ``S`` complete segments, as ``[M | z]`` and the last ``M``.

    ``M0 [B, H, dk, dv]``, ``z0 [B, H, dk]``; raw keys ``k [B, H, S, N, d_head]``, values
    ``v [B, H, S, N, dv]`` and the write gate ``beta [B, H, S, N]`` (None: no gate) in the memory
    dtype. Returns ``Mz [B, H, S, dk, dv + 1]``, entry ``s`` the memory ``[M_{s-1} | z_{s-1}]`` that
    segment ``s`` reads (eq. 7), and the memory after all writes, ``M_S [B, H, dk, dv]`` and
    ``z_S [B, H, dk]``.

    The work that touches the ``N`` tokens of a segment is done for all segments at once, in batched
    matmuls: ``phi(K)`` once; ``z`` is a cumulative sum (eq. 8; ``corrected``: of ``gamma``-weighted
    features, the gammas from a short no-grad loop over segments), so it is known before any ``M``.
    With ``w_t = beta_t phi(K_t)`` (``phi(K_t)`` without a gate), linear rule (eq. 8): ``M`` is a
    cumulative sum of ``w^T V``. Delta rule (eq. 9): with ``den_s = normaliser(phi(K_s), z_{s-1})``
    (``corrected``: and the segment's own mass)
    (known in advance), ``W_s = phi(K_s) / den_s`` (row-wise), ``U_s = w_s^T V_s`` and
    ``P_s = w_s^T W_s``,

        M_s = M_{s-1} + w_s^T (V_s - W_s M_{s-1}) = U_s + (I - P_s) M_{s-1}

    (the scan over segments: ``_delta_scan``). ``normalizer: none`` (DeltaNet) writes token by token
    instead; its chunkwise WY form (``deltanet_segments``) has the same segment-level shape, with
    ``w_s = phi(K_s)`` and ``W_s``, ``V_s`` from one triangular solve per segment, and ``z`` stays
    ``z0``.
    """
    B, H, S, N, _ = k.shape
    phi = feature_map(k, opts)  # [B, H, S, N, dk]
    if opts.normalizer == "none":
        W, V = deltanet_segments(phi, v, beta)
        M, M_last = _delta_scan(M0, phi.transpose(-1, -2), W, V)
        z = z0.unsqueeze(2).expand(B, H, S, z0.size(-1))  # no normaliser: z stays as it was (zero)
        return augment(M, z), M_last, z0.clone()
    w = phi if beta is None else phi * beta.unsqueeze(-1)  # each token's write strength
    wT = w.transpose(-1, -2)  # [B, H, S, dk, N]
    mass = w.sum(dim=-2)  # [B, H, S, dk]: each segment's write into z before any correction
    if opts.normalizer == "corrected":
        dz = (w * corrected_gamma(z0, phi, beta, opts.eps).unsqueeze(-1)).sum(dim=-2)
    else:
        dz = mass
    if opts.update == "linear":
        U = wT @ v  # [B, H, S, dk, dv]: w^T V of every segment
        Mz0 = augment(M0, z0).unsqueeze(2)  # [B, H, 1, dk, dv + 1]
        Mz = torch.cat([Mz0, Mz0 + augment(U, dz).cumsum(dim=2)], dim=2)  # [B, H, S + 1, ...]
        last = Mz[:, :, S]
        return Mz[:, :, :S], last[..., :-1].clone(), last[..., -1].clone()
    z = torch.cat([z0.unsqueeze(2), z0.unsqueeze(2) + dz.cumsum(dim=2)], dim=2)  # [B, H, S + 1, dk]
    den = normaliser(phi, z[:, :, :S], opts, mass).clamp_min(opts.eps)  # [B, H, S, N, 1]
    M, M_last = _delta_scan(M0, wT, phi * den.reciprocal(), v)  # W_s = phi(K_s) / den_s
    return augment(M, z[:, :, :S]), M_last, z[:, :, S].clone()


def _delta_scan(M0: Tensor, wT: Tensor, W: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
    """``M_s = M_{s-1} + w_s^T (V_s - W_s M_{s-1})`` over ``S`` segments: the memories before each
    segment ``[B, H, S, dk, dv]`` and after the last ``[B, H, dk, dv]``.

    ``M0 [B, H, dk, dv]``, ``wT [B, H, S, dk, N]``, ``W [B, H, S, N, dk]``, ``V [B, H, S, N, dv]``.
    Only this loop over segments is sequential. With ``U_s = w_s^T V_s`` and ``P_s = w_s^T W_s`` it
    is ``M_s = U_s + (I - P_s) M_{s-1}``: a ``dk x dk`` by ``dk x dv`` product per segment, whose
    backward handles ``dk x dv`` gradients, never ``[B, H, N, d]`` ones. Keys wider than the segment
    is long (``dpfp``; ``d_head > N``) take the first form, which never forms ``P_s``: two ``N``-wide
    products per segment (``4 N dk dv`` flops against ``2 dk^2 (N + dv)``).
    """
    B, H, S, dk, N = wT.shape
    dv = V.size(-1)
    Ms = [M0.reshape(B * H, dk, dv)]
    # unbind, not [:, :, s]: the backward of S slices would zero-fill S full-size gradients.
    if 2 * N * dv < dk * (N + dv):  # wide keys (dpfp: dk = 6 d_head): eq. 9 as written
        for wT_s, W_s, V_s in zip(wT.reshape(B * H, S, dk, N).unbind(1), W.reshape(B * H, S, N, dk).unbind(1),
                                  V.reshape(B * H, S, N, dv).unbind(1), strict=True):
            Ms.append(torch.baddbmm(Ms[-1], wT_s, V_s - torch.bmm(W_s, Ms[-1])))  # M + w^T (V - W M)
    else:
        eye = torch.eye(dk, dtype=wT.dtype, device=wT.device)
        G = eye - wT @ W  # [B, H, S, dk, dk]: I - P_s
        U = wT @ V  # [B, H, S, dk, dv]: w^T V of every segment
        for G_s, U_s in zip(G.reshape(B * H, S, dk, dk).unbind(1), U.reshape(B * H, S, dk, dv).unbind(1),
                            strict=True):
            Ms.append(torch.baddbmm(U_s, G_s, Ms[-1]))  # U_s + (I - P_s) M_{s-1}
    M = torch.stack(Ms[:S], dim=1).reshape(B, H, S, dk, dv)
    return M, Ms[S].reshape(B, H, dk, dv)


def deltanet_segments(phi: Tensor, v: Tensor, beta: Tensor | None) -> tuple[Tensor, Tensor]:
    """The chunkwise WY form of the token-by-token delta rule (Yang et al. 2024, "Parallelizing Linear
    Transformers with the Delta Rule over Sequence Length"), for every segment at once.

    Inside a segment of ``N`` tokens (unit keys ``k_t = phi_t``, gates ``beta_t``, 1 without a gate),
    ``M_t = M_{t-1} + beta_t k_t^T (v_t - k_t M_{t-1})`` unrolls to ``M_N = M_0 + K^T (V' - W M_0)``:
    token ``t``'s effective write ``u_t = beta_t (v_t - k_t M_{t-1})`` expands to
    ``u_t = beta_t (v_t - k_t M_0) - sum_{i<t} beta_t (k_t . k_i) u_i``, a unit lower-triangular
    system ``A U = diag(beta) (V - K M_0)`` with ``A = I + tril(diag(beta) K K^T, -1)``. One
    triangular solve gives ``W = A^-1 diag(beta) K`` and ``V' = A^-1 diag(beta) V`` for every
    segment in parallel; only ``_delta_scan`` over segments remains sequential.

    ``phi [B, H, S, N, dk]`` (L2-normalised), ``v [B, H, S, N, dv]``, ``beta [B, H, S, N]`` or None
    -> ``W [B, H, S, N, dk]``, ``V' [B, H, S, N, dv]``.
    """
    N = phi.size(-2)
    b = torch.ones_like(phi[..., 0]) if beta is None else beta  # [B, H, S, N]
    gram = (phi @ phi.transpose(-1, -2)) * b.unsqueeze(-1)  # [B, H, S, N, N]: beta_t (k_t . k_i)
    A = torch.tril(gram, diagonal=-1) + torch.eye(N, dtype=phi.dtype, device=phi.device)
    rhs = torch.cat([phi, v], dim=-1) * b.unsqueeze(-1)  # [B, H, S, N, dk + dv]
    X = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    dk = phi.size(-1)
    return X[..., :dk], X[..., dk:]


class CompressiveMemory:
    """A stateful view of the memory for use outside the layer (tests, analysis, demos).

    ``read`` implements eq. 7 against the current state; ``write`` replaces the state by the result of
    eq. 8 or 9 (new tensors, differentiable, never in place). ``options`` selects the feature map,
    key normalisation, normaliser and write gate (default: the paper's memory); ``d_key`` is the width
    of the raw queries and keys, and ``M`` has ``options.key_dim(d_key)`` rows.
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
        options: MemoryOptions | None = None,
    ) -> None:
        self.options = replace(options or PAPER, eps=eps)
        self.state = MemoryState.zeros(batch_size, n_head, self.options.key_dim(d_key), d_value, device,
                                       memory_dtype(dtype))

    def read(self, q: Tensor) -> Tensor:
        """``q [B, H, T, d_key]`` -> ``[B, H, T, d_value]`` (eq. 7)."""
        return memory_read(q, self.state.M, self.state.z, self.options.eps, self.options)

    def write(self, k: Tensor, v: Tensor, rule: str = "linear", beta: Tensor | None = None) -> None:
        """Write ``k [B, H, T, d_key]``, ``v [B, H, T, d_value]`` as one segment with eq. 8 (``rule``
        linear) or 9 (delta), each token scaled by ``beta [B, H, T]`` when given (the write gate)."""
        opts = replace(self.options, update=rule)
        M = self.state.M
        with full_precision(k):
            beta = None if beta is None else beta.to(M.dtype)
            self.state = MemoryState(*write(M, self.state.z, k.to(M.dtype), v.to(M.dtype), opts, beta))
