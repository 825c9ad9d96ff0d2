"""Infini-attention (Munkhdalai et al. 2024, arXiv 2404.07143), eqs. 5-11 (v2 numbering).

One layer: shared Q/K/V projections (eq. 5); causal local attention inside each segment (eq. 6); a
compressive memory read before it is written (eqs. 7-9); a learned per-head gate mixing the two
(eq. 10); the output projection (eq. 11). The same module also runs the two baselines that share
every other line of code: ``memory="none"`` (local attention only) and ``memory="xl"`` (the
Transformer-XL cache of ``mem_len`` earlier hidden states). The xl cache is stop-gradient, as in
Transformer-XL (its SG(h)): keys and values of earlier segments are projected from detached layer
inputs, within a call and across calls, so no gradient crosses a segment boundary in xl mode.

Layer-major and parallel over segments: a call on ``T`` tokens runs the projections on all of them,
local attention on ``[B * H, S, N, d]`` in one ``scaled_dot_product_attention`` call, and the memory
read of every segment against its prefix memory. Segment boundaries are fixed by the absolute stream
position (every ``segment_len`` tokens), so the state also carries the keys and values of the
unfinished segment: any split of a stream into calls gives the same outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .memory import (
    GatedRead,
    MemoryOptions,
    MemoryState,
    augment,
    full_precision,
    memory_dtype,
    prefix_memories,
    read_products,
)
from .positional import RotaryEmbedding, XLRelativePosition

MEMORY_MODES = ("infini", "none", "xl")
UPDATE_RULES = ("delta", "linear")
POSITIONAL = ("rope", "xl", "none")


@dataclass
class AttentionState:
    """What one layer carries from call to call.

    ``seen``: tokens of the stream consumed so far (fixes the segment boundaries).
    ``k``, ``v``: raw keys/values of the unfinished segment ``[B, H, seen % N, d_head]`` (infini, none).
    ``memory``: the compressive memory (infini). ``h``: cached layer inputs ``[B, C, d_model]`` (xl).
    ``beta``: the write gate of the unfinished segment's tokens ``[B, H, seen % N]`` (infini with
    ``write_gate``), written with their keys and values when the segment completes.
    """

    seen: int
    k: Tensor | None = None
    v: Tensor | None = None
    memory: MemoryState | None = None
    h: Tensor | None = None
    beta: Tensor | None = None

    def tensors(self) -> dict[str, Tensor]:
        """The state's tensors by name, all batch-first."""
        out = {"k": self.k, "v": self.v, "h": self.h, "beta": self.beta}
        if self.memory is not None:
            out.update(M=self.memory.M, z=self.memory.z)
        return {name: t for name, t in out.items() if t is not None}

    @classmethod
    def from_tensors(cls, seen: int, tensors: dict[str, Tensor]) -> AttentionState:
        memory = MemoryState(tensors["M"], tensors["z"]) if "M" in tensors else None
        return cls(seen, tensors.get("k"), tensors.get("v"), memory, tensors.get("h"), tensors.get("beta"))

    def map(self, fn) -> AttentionState:
        """Apply ``fn`` to every tensor (detach, move, select lanes)."""
        return AttentionState.from_tensors(self.seen, {n: fn(t) for n, t in self.tensors().items()})

    def detach(self) -> AttentionState:
        return self.map(Tensor.detach)

    @property
    def batch_size(self) -> int:
        return next(iter(self.tensors().values())).size(0)

    def reset(self, lanes: Tensor) -> AttentionState:
        """Zero the long-term memory (compressive memory or XL cache) of the lanes where ``lanes`` is
        True. Local attention inside the current segment is left as it is."""
        def zero(t: Tensor) -> Tensor:
            mask = lanes.to(device=t.device, dtype=torch.bool).view(-1, *([1] * (t.dim() - 1)))
            return t.masked_fill(mask, 0)

        memory = self.memory
        if memory is not None:
            memory = MemoryState(zero(memory.M), zero(memory.z))
        h = zero(self.h) if self.h is not None else None
        return replace(self, memory=memory, h=h)


class InfiniAttention(nn.Module):
    """Infini-attention layer (eqs. 5-11), usable on its own.

    ``forward(x [B, T, d_model], state) -> (out [B, T, d_model], next_state)`` for any ``T >= 1``.
    """

    def __init__(
        self,
        d_model: int,
        n_head: int,
        d_head: int,
        segment_len: int,
        update: str = "delta",
        pos: str = "rope",
        dropatt: float = 0.0,
        gate_init: float = 0.0,
        eps: float = 1e-6,
        memory: str = "infini",
        mem_len: int = 0,
        clamp_len: int = -1,
        same_length: bool = False,
        pos_dropout: float = 0.0,
        own_xl_bias: bool = True,
        normalizer: str = "sum",
        feature: str = "elu",
        key_norm: str = "none",
        write_gate: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("n_head", n_head), ("d_head", d_head),
                            ("segment_len", segment_len)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _check_choice("update", update, UPDATE_RULES)
        _check_choice("pos", pos, POSITIONAL)
        _check_choice("memory", memory, MEMORY_MODES)
        if memory == "xl":
            if pos != "xl":
                raise ValueError(f"memory='xl' uses the Transformer-XL relative encoding: pos must be 'xl', "
                                 f"got {pos!r}")
            if isinstance(mem_len, bool) or not isinstance(mem_len, int) or mem_len < 0:
                raise ValueError(f"memory='xl' needs an integer mem_len >= 0, got {mem_len!r}")
            if same_length and mem_len == 0:
                raise ValueError("same_length=True needs mem_len > 0 (each query sees the last mem_len keys)")
        elif same_length:
            raise ValueError(f"same_length applies to memory='xl' only, got memory={memory!r}")
        options = {"normalizer": normalizer, "feature": feature, "key_norm": key_norm,
                   "write_gate": write_gate}
        defaults = MemoryOptions()
        if memory != "infini":
            for name, value in options.items():
                if value != getattr(defaults, name):
                    raise ValueError(f"{name}={value!r} is an option of the compressive memory: it needs "
                                     f"memory='infini', got memory={memory!r}")
        # Validates the option values (and refuses normalizer 'corrected' with update 'linear').
        self.mem_opts = MemoryOptions(update=update, eps=eps, **options)
        self.d_model, self.n_head, self.d_head = d_model, n_head, d_head
        self.segment_len, self.update, self.pos, self.memory = segment_len, update, pos, memory
        self.mem_len = mem_len if memory == "xl" else 0
        self.dropatt, self.eps = dropatt, eps
        self.same_length = same_length

        inner = n_head * d_head
        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, d_model, bias=False)
        self.d_key = self.mem_opts.key_dim(d_head)  # rows of M: d_head, or 6 d_head with dpfp features
        if memory == "infini":
            # b of eq. 10: one learned scalar per head.
            self.gate = nn.Parameter(torch.full((n_head,), float(gate_init)))
            if write_gate:
                # beta_t = sigmoid(w . x_t + b): one write strength per head and token.
                self.write_gate = nn.Linear(d_model, n_head)
        if pos == "rope":
            self.rope = RotaryEmbedding(d_head)
        elif pos == "xl":
            self.xl_pos = XLRelativePosition(d_model, n_head, d_head, clamp_len, pos_dropout,
                                             biases=own_xl_bias)

    # ----------------------------------------------------------------------------------------- state
    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> AttentionState:
        """A fresh stream: ``M_0 = z_0 = 0``, nothing cached."""
        H, d = self.n_head, self.d_head
        if self.memory == "xl":
            return AttentionState(0, h=torch.zeros(batch_size, 0, self.d_model, device=device))
        memory = MemoryState.zeros(batch_size, H, self.d_key, d, device) if self.memory == "infini" else None
        empty = torch.zeros(batch_size, H, 0, d, device=device)
        beta = torch.zeros(batch_size, H, 0, device=device) if self.mem_opts.write_gate else None
        return AttentionState(0, k=empty, v=empty.clone(), memory=memory, beta=beta)

    def _check_state(self, state: AttentionState, batch_size: int) -> None:
        H, d, N = self.n_head, self.d_head, self.segment_len
        expect = f"a state from init_state({batch_size}) of a layer with memory={self.memory!r}, " \
                 f"n_head={H}, d_head={d}, segment_len={N}"
        if self.memory == "xl":
            h = state.h
            ok = h is not None and h.dim() == 3 and h.shape[0] == batch_size and h.shape[2] == self.d_model
        else:
            k = state.k
            ok = (k is not None and state.v is not None and k.shape[0] == batch_size
                  and tuple(k.shape[1:]) == (H, state.seen % N, d) and k.shape == state.v.shape)
            if self.memory == "infini":
                m, dk = state.memory, self.d_key
                ok = ok and m is not None and tuple(m.M.shape) == (batch_size, H, dk, d) \
                    and tuple(m.z.shape) == (batch_size, H, dk)
            if self.mem_opts.write_gate:
                beta = state.beta
                ok = ok and beta is not None and tuple(beta.shape) == (batch_size, H, state.seen % N)
        if not ok:
            shapes = {name: tuple(t.shape) for name, t in state.tensors().items()}
            raise ValueError(f"expected {expect}; got a state with seen={state.seen} and tensors {shapes}")

    # --------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor, state: AttentionState | None = None,
                xl_bias: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, AttentionState]:
        """``xl_bias``: Transformer-XL's ``(u, v)`` when the model shares one pair across its layers
        (``own_xl_bias=False``); otherwise the layer's own pair is used."""
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(
                f"expected x of shape [batch, time, d_model={self.d_model}], got {tuple(x.shape)}"
            )
        B, T, _ = x.shape
        if T == 0:
            raise ValueError("expected at least one token (x has time length 0)")
        if state is None:
            state = self.init_state(B, x.device)
        self._check_state(state, B)
        H, d = self.n_head, self.d_head
        if self.memory == "xl":
            q = self._heads(self.q_proj(x))  # [B, H, T, d]
            a, next_state = self._forward_xl(x, q, state, xl_bias)
        else:
            a, next_state = self._forward_segments(*self._qkv(x), state, xl_bias, self._write_strength(x))
        out = self.o_proj(a.transpose(1, 2).reshape(B, T, H * d))  # eq. 11: [A_1; ...; A_H] W_O
        return out, next_state

    def _heads(self, y: Tensor) -> Tensor:
        """``[B, T, H * d] -> [B, H, T, d]``: head ``h`` is the column block ``h*d:(h+1)*d``."""
        B, T, _ = y.shape
        return y.reshape(B, T, self.n_head, self.d_head).transpose(1, 2)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Eq. 5: ``Q, K, V [B, H, T, d]`` from one matmul, each contiguous in this head-major
        layout, so that the attention kernel and the memory's batched matmuls take them (and what
        is computed from them) as views instead of copying them at every use."""
        B, T, _ = x.shape
        w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])  # [3 H d, d_model]
        y = F.linear(x, w).view(B, T, 3, self.n_head, self.d_head)
        return _HeadMajor.apply(y)

    def _write_strength(self, x: Tensor) -> Tensor | None:
        """The write gate ``beta = sigmoid(w . x + b)``, ``[B, H, T]`` in the memory dtype (None
        without the gate)."""
        if not self.mem_opts.write_gate:
            return None
        # A module call (not F.linear), so forward hooks see the logits: WriteGateTap, tests.
        logits = self.write_gate(x)  # [B, T, H]
        return torch.sigmoid(logits.to(memory_dtype(x.dtype))).transpose(1, 2)

    def _forward_segments(self, q: Tensor, k: Tensor, v: Tensor, state: AttentionState,
                          xl_bias: tuple[Tensor, Tensor] | None,
                          beta: Tensor | None = None) -> tuple[Tensor, AttentionState]:
        """Local attention per segment (eq. 6), gated with the memory read (eqs. 7-10)."""
        N, T = self.segment_len, q.size(2)
        r = state.seen % N  # tokens of the unfinished segment already seen
        if r:
            k_all = torch.cat([state.k.to(k.dtype), k], dim=2)  # [B, H, r + T, d]
            v_all = torch.cat([state.v.to(v.dtype), v], dim=2)
            if beta is not None:
                beta = torch.cat([state.beta.to(beta.dtype), beta], dim=2)  # [B, H, r + T]
        else:  # nothing carried over (the state's k, v are empty): no copy
            k_all, v_all = k, v
        a = self._local(q, k_all, v_all, r, xl_bias)
        memory = state.memory
        if self.memory == "infini":
            out, memory = self._memory(q, k_all, v_all, r, memory, beta)  # eq. 7: phi(Q) [M | z]
            a = GatedRead.apply(a, out, self.gate, self.eps)  # eq. 10: g A_mem + (1 - g) A_dot
        done = (r + T) // N * N  # tokens of complete segments; the rest waits for its segment to end
        next_state = AttentionState(
            state.seen + T, k=k_all[:, :, done:].clone(), v=v_all[:, :, done:].clone(), memory=memory,
            beta=None if beta is None else beta[:, :, done:].clone(),
        )
        return a, next_state

    def _local(self, q: Tensor, k_all: Tensor, v_all: Tensor, r: int,
               xl_bias: tuple[Tensor, Tensor] | None) -> Tensor:
        """Eq. 6 for queries ``q [B, H, T, d]`` whose segment holds ``r`` earlier keys of ``k_all``."""
        B, H, T, d = q.shape
        N, L = self.segment_len, k_all.size(2)
        if L <= N:  # one segment (e.g. generation): only the real queries, no padding
            pos_q = torch.arange(r, L, device=q.device)
            pos_k = torch.arange(L, device=q.device)
            out = self._attend(q[:, :, None], k_all[:, :, None], v_all[:, :, None], pos_q, pos_k,
                               aligned=r == 0, xl_bias=xl_bias)
            return out[:, :, 0]
        S = -(-L // N)
        pad = S * N - L
        q5 = _to_segments(q, r, pad, N)  # query rows of cached keys are padding
        k5, v5 = _to_segments(k_all, 0, pad, N), _to_segments(v_all, 0, pad, N)
        pos = torch.arange(N, device=q.device)
        out = self._attend(q5, k5, v5, pos, pos, aligned=True, xl_bias=xl_bias)
        return _from_segments(out, r, T)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, pos_q: Tensor, pos_k: Tensor,
                valid_k: Tensor | None = None, aligned: bool = False,
                xl_bias: tuple[Tensor, Tensor] | None = None, window: int = 0) -> Tensor:
        """Causal softmax attention, one window of keys per segment.

        ``q [B, H, S, Nq, d]``, ``k, v [B, H, S, Nk, d]``; ``pos_q [Nq]``, ``pos_k [Nk]`` are offsets
        from the segment start (negative: the XL cache); query ``i`` sees key ``j`` iff
        ``pos_k[j] <= pos_q[i]`` and ``valid_k [S, Nk]`` allows it. ``aligned``: ``pos_q == pos_k``,
        the plain causal case that the fused kernels handle without a mask. ``window > 0``: query
        ``i`` also sees only keys with ``pos_k[j] > pos_q[i] - window`` (Transformer-XL's same_length).
        """
        B, H, S, Nq, d = q.shape
        scale = 1.0 / math.sqrt(d)
        dropout = self.dropatt if self.training else 0.0
        if self.pos == "rope":
            q, k = self.rope(q, pos_q), self.rope(k, pos_k)

        def flat(t: Tensor) -> Tensor:  # [B, H, S, n, m] -> [B * H, S, n, m]
            return t.reshape(B * H, S, t.size(-2), t.size(-1))

        allowed = pos_k[None, :] <= pos_q[:, None]  # [Nq, Nk]
        if window > 0:
            allowed = allowed & (pos_k[None, :] > pos_q[:, None] - window)
        if valid_k is not None:
            allowed = allowed & valid_k[:, None, :]  # [S, Nq, Nk]
        if self.pos == "xl":
            # Transformer-XL's score (q + u) k^T + (q + v) R, scaled and masked. Written out rather
            # than SDPA with a float mask: that mask needs a gradient, which sends SDPA to its math
            # kernel anyway; here the position term is added inside the content matmul (baddbmm).
            Nk = k.size(-2)
            bias = self.xl_pos.position_scores(q, pos_q, pos_k, xl_bias)  # [B, H, S, Nq, Nk]
            bias = bias.masked_fill(~allowed, float("-inf")).reshape(B * H * S, Nq, Nk)
            qu = self.xl_pos.content_query(q, xl_bias).reshape(B * H * S, Nq, d)
            scores = torch.baddbmm(bias, qu, k.reshape(B * H * S, Nk, d).transpose(1, 2), beta=scale,
                                   alpha=scale)
            probs = scores.softmax(dim=-1)
            if dropout:
                probs = F.dropout(probs, dropout)
            out = torch.bmm(probs.to(v.dtype), v.reshape(B * H * S, Nk, d))
        elif aligned and valid_k is None:
            out = F.scaled_dot_product_attention(flat(q), flat(k), flat(v), is_causal=True,
                                                 dropout_p=dropout, scale=scale)
        else:
            out = F.scaled_dot_product_attention(flat(q), flat(k), flat(v), attn_mask=allowed,
                                                 dropout_p=dropout, scale=scale)
        return out.reshape(B, H, S, Nq, d)

    def _memory(self, q: Tensor, k_all: Tensor, v_all: Tensor, r: int, memory: MemoryState,
                beta: Tensor | None = None) -> tuple[Tensor, MemoryState]:
        """Memory read of every segment (eq. 7) and the writes of the completed ones (eq. 8 or 9).

        Returns the read as ``s(Q) [M | z]`` (``[B, H, T, d + 1]``: the numerator and the
        denominator of eq. 7, see ``read_products``) and the memory after the writes. No positional
        encoding here: raw Q and K (paper §4.1). Computed in float32 (float64 for float64 inputs)
        with autocast off, so the growing ``z`` never overflows half precision. Segment ``s`` reads
        the memory written by segments ``< s`` only (read before write).
        """
        B, H, T, d = q.shape
        N, L, opts = self.segment_len, k_all.size(2), self.mem_opts
        S, n_full = -(-L // N), L // N
        dt = memory_dtype(q.dtype)
        with full_precision(q):
            q = q.to(dt)
            M, z = memory.M.to(dt), memory.z.to(dt)
            if n_full == 0:  # inside one unfinished segment (e.g. generation): a read, no write
                return read_products(q, augment(M, z), opts), MemoryState(M, z)
            k_done = k_all[:, :, : n_full * N].to(dt).reshape(B, H, n_full, N, d)
            v_done = v_all[:, :, : n_full * N].to(dt).reshape(B, H, n_full, N, d)
            b_done = None if beta is None else beta[:, :, : n_full * N].reshape(B, H, n_full, N)
            Mz, M, z = prefix_memories(M, z, k_done, v_done, opts, b_done)  # Mz [B, H, n_full, dk, d + 1]
            if S > n_full:  # the unfinished last segment reads the memory after all writes
                Mz = torch.cat([Mz, augment(M, z).unsqueeze(2)], dim=2)
            if S == 1:  # one segment: its queries as they are, no padding
                out = read_products(q, Mz[:, :, 0], opts)
            else:
                out = _from_segments(read_products(_to_segments(q, r, S * N - L, N), Mz, opts), r, T)
        return out, MemoryState(M, z)

    def read_memory(self, x: Tensor, memory: MemoryState) -> tuple[Tensor, Tensor]:
        """The memory branch alone for layer inputs ``x [B, T, d_model]`` against ``memory``: ``A_mem``
        of eq. 7 ``[B, H, T, d_head]`` and its denominator ``phi(Q) z`` ``[B, H, T]`` (after the
        ``corrected`` floor, before ``eps``). For analysis (``scripts/memory_probe.py``): a token at
        position ``p`` of the stream reads the memory as it was at the start of its segment."""
        if self.memory != "infini":
            raise ValueError(f"read_memory needs memory='infini', got memory={self.memory!r}")
        q = self._qkv(x)[0]
        dt = memory_dtype(q.dtype)
        with full_precision(q):
            out = read_products(q.to(dt), augment(memory.M.to(dt), memory.z.to(dt)), self.mem_opts)
            den = out[..., -1]
            return out[..., :-1] / den.clamp_min(self.eps).unsqueeze(-1), den

    def _forward_xl(self, x: Tensor, q: Tensor, state: AttentionState,
                    xl_bias: tuple[Tensor, Tensor] | None) -> tuple[Tensor, AttentionState]:
        """Transformer-XL baseline: a query at ``p`` in the segment starting at ``a`` sees the keys at
        ``[a - mem_len, p]`` (``same_length``: ``[p - mem_len + 1, p]``, always ``mem_len`` keys once
        the stream is long enough), projected from the layer inputs (earlier calls' inputs are cached).

        Stop-gradient as in Transformer-XL: the keys and values at ``[a - mem_len, a)`` are projected
        from detached inputs (the weights still get their gradient), and the cache returned for the
        next call is detached, so no gradient crosses a segment boundary.
        """
        B, H, T, d = q.shape
        N, m = self.segment_len, self.mem_len
        r = state.seen % N
        cache = state.h.to(x.dtype).detach()  # [B, C, d_model]: positions [seen - C, seen); SG
        C = cache.size(1)
        xs = torch.cat([cache, x], dim=1)  # [B, C + T, d_model]
        S = -(-(r + T) // N)
        front, back = m + r - C, S * N - (r + T)  # pad so that window s starts at s * N
        W = m + N

        def windows(t: Tensor) -> Tensor:  # [B, C + T, d_model] -> [B, H, S, W, d] per segment
            return F.pad(self._heads(t), (0, 0, front, back)).unfold(2, W, N).transpose(-1, -2)

        k5, v5 = windows(self.k_proj(xs)), windows(self.v_proj(xs))
        if m > 0 and S > 1 and torch.is_grad_enabled():
            # SG(h): the first m keys of each window. Those of window 0 are the cache, already
            # detached (so with one segment per call nothing is projected twice); those of the later
            # windows are this call's inputs, projected again from detached inputs (the weights still
            # get their gradient).
            xd = torch.cat([cache, x.detach()], dim=1)
            k5 = torch.cat([windows(self.k_proj(xd))[:, :, :, :m], k5[:, :, :, m:]], dim=3)
            v5 = torch.cat([windows(self.v_proj(xd))[:, :, :, :m], v5[:, :, :, m:]], dim=3)
        q5 = F.pad(q, (0, 0, r, back)).reshape(B, H, S, N, d)
        pos_q = torch.arange(N, device=x.device)
        pos_k = torch.arange(W, device=x.device) - m
        idx = torch.arange(S, device=x.device)[:, None] * N + torch.arange(W, device=x.device)[None, :]
        valid = (idx >= front) & (idx < front + C + T)  # [S, W]: not padding
        a = self._attend(q5, k5, v5, pos_q, pos_k, valid_k=valid, xl_bias=xl_bias,
                         window=m if self.same_length else 0)
        a = a.reshape(B, H, S * N, d)[:, :, r : r + T]
        seen = state.seen + T
        keep = min(seen, m + seen % N)
        return a, AttentionState(seen, h=xs[:, xs.size(1) - keep :].detach().clone())


class _HeadMajor(torch.autograd.Function):
    """``y [B, T, 3, H, d]`` (the fused projection) -> ``q, k, v [B, H, T, d]``, each contiguous.

    One copy per tensor forward and backward. (``permute().contiguous().unbind()`` would give the
    same forward, but its backward stacks the three gradients and then copies them again.)
    """

    @staticmethod
    def forward(ctx, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return y.permute(2, 0, 3, 1, 4).contiguous().unbind(0)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:  # unused outputs arrive as zeros (materialize_grads)
        B, H, T, d = grads[0].shape
        out = grads[0].new_empty(B, T, 3, H, d)
        for i, g in enumerate(grads):
            out[:, :, i].copy_(g.transpose(1, 2))
        return out


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, valid))}; got {value!r}")


def _to_segments(t: Tensor, front: int, back: int, N: int) -> Tensor:
    """``[B, H, L, d]`` -> ``[B, H, S, N, d]`` with ``front``/``back`` zero rows; no copy for padding
    that is not needed (a pad always copies, and its zero-fill costs as much again)."""
    if front or back:
        t = F.pad(t, (0, 0, front, back))
    B, H, L, d = t.shape
    return t.reshape(B, H, L // N, N, d)


def _from_segments(t: Tensor, front: int, T: int) -> Tensor:
    """``[B, H, S, N, d]`` -> its ``T`` rows after ``front`` as ``[B, H, T, d]``; no slice when all
    rows are kept (the backward of a slice zero-fills a gradient of the full size)."""
    B, H, S, N, d = t.shape
    t = t.reshape(B, H, S * N, d)
    return t if front == 0 and T == S * N else t[:, :, front : front + T]
