"""Slow float64 reference of Infini-attention (Munkhdalai et al. 2024, arXiv 2404.07143).

Written from the equations alone, independently of ``infiniattention``: explicit loops over
batch lanes, heads, segments and queries, scalar softmax, per-token outer products for the
memory writes. It is meant to be obviously right, not fast; use tiny shapes.

Equation numbers are v2 of the paper (v1 in brackets):
  eq 5       Q = X W_Q, K = X W_K, V = X W_V
  eq 6       A_dot: causal softmax attention inside the segment (positions: rope | xl | none)
  eq 7 [3]   A_mem = s(Q) M_{s-1} / max(s(Q) z_{s-1}, eps), s(x) = ELU(x) + 1
  eq 8 [4]   M_s = M_{s-1} + s(K)^T V;  z_s = z_{s-1} + sum_t s(K_t)
  eq 9 [5]   M_s = M_{s-1} + s(K)^T (V - s(K) M_{s-1} / max(s(K) z_{s-1}, eps))
  eq 10 [6]  A = sigmoid(b) A_mem + (1 - sigmoid(b)) A_dot
  eq 11      O = [A_1; ...; A_H] W_O

Memory options (infiniattention.memory.MemoryOptions), each written out per token here:
  feature dpfp   phi(x)_(j, i) = r_i r_((i - j) mod 2d), r = [relu(x); relu(-x)], j = 1..3
                 (Schlag, Irie & Schmidhuber 2021), instead of s(x)
  key_norm l2    phi(x) / max(|phi(x)|_2, eps)
  write_gate     token t of head h writes beta_t phi(k_t) (x) val_t into M and beta_t phi(k_t) into
                 z (times gamma_t when corrected), beta_t = sigmoid(w_h . x_t + c_h)
  corrected      z grows by gamma_t beta_t phi(k_t), gamma_t = clip(1 - z_{s-1}.phi(k_t) /
                 max(|phi(k_t)|^2, eps), 0, 1) from the z before the segment, detached (ARMT);
                 every denominator phi.z becomes max(phi.z, |phi|^2), and the delta write's
                 max(phi.z, |phi|^2, phi.c) with c = sum over the segment of beta_t phi(k_t)
  normalizer none  DeltaNet (Schlag et al. 2021, Yang et al. 2024): the read is phi(q) M_{s-1}, no
                 denominator and no z; the write goes token by token through the segment,
                 M <- M + beta_t phi(k_t) (x) (v_t - phi(k_t) M), each token reading the M that the
                 tokens before it left (phi(k) L2-normalised)

memory="xl" is Transformer-XL (Dai et al. 2019): a query at p in the segment starting at a attends
to the keys at [a - mem_len, p] (same_length: [p - mem_len + 1, p]); the keys and values before a
are projected from the DETACHED layer input (the paper's SG(h)), so they pass gradient to the
weights but never to earlier positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RefConfig:
    """Shape and mode of the layer under test (mirrors the InfiniAttention constructor)."""

    d_model: int
    n_head: int
    d_head: int
    segment_len: int
    update: str = "delta"
    pos: str = "rope"
    memory: str = "infini"
    mem_len: int = 0
    clamp_len: int = -1
    same_length: bool = False
    eps: float = 1e-6
    normalizer: str = "sum"
    feature: str = "elu"
    key_norm: str = "none"
    write_gate: bool = False


@dataclass
class RefWeights:
    """Weights in nn.Linear layout ([out, in]); gate [H]; xl: wr [H*d, d_model], u, v [H, d];
    write gate: wg [H, d_model], bg [H]."""

    wq: Tensor
    wk: Tensor
    wv: Tensor
    wo: Tensor
    gate: Tensor | None = None
    wr: Tensor | None = None
    u: Tensor | None = None
    v: Tensor | None = None
    wg: Tensor | None = None
    bg: Tensor | None = None


@dataclass
class RefOutput:
    out: Tensor  # [B, T, d_model]: eq 11 applied to the gated heads
    heads: Tensor  # [B, H, T, d]: A per head after the gate (eq 10)
    a_mem: Tensor  # [B, H, T, d]: memory branch (zeros when memory != "infini")
    a_dot: Tensor  # [B, H, T, d]: local branch
    M: Tensor | None  # [B, H, d, d]: memory after the last COMPLETE segment
    z: Tensor | None  # [B, H, d]
    q: Tensor  # [B, H, T, d]: raw projections, for tests that need them
    k: Tensor
    v: Tensor


def weights_of(layer, dtype=torch.float64, keep_graph: bool = False) -> RefWeights:
    """Copy a layer's parameters (names from the layer's contract) into a RefWeights."""

    def take(t):
        if t is None:
            return None
        return t.to(dtype) if keep_graph else t.detach().to(dtype).clone()

    xl = getattr(layer, "xl_pos", None)
    gate = getattr(layer, "gate", None)
    wgate = getattr(layer, "write_gate", None)
    return RefWeights(
        wq=take(layer.q_proj.weight),
        wk=take(layer.k_proj.weight),
        wv=take(layer.v_proj.weight),
        wo=take(layer.o_proj.weight),
        gate=take(gate) if isinstance(gate, torch.Tensor) else None,
        wr=take(xl.r_proj.weight) if xl is not None else None,
        u=take(xl.r_w_bias) if xl is not None else None,
        v=take(xl.r_r_bias) if xl is not None else None,
        wg=take(wgate.weight) if wgate is not None else None,
        bg=take(wgate.bias) if wgate is not None else None,
    )


# ----------------------------------------------------------------------------- small pieces


def sigma(x: Tensor) -> Tensor:
    """s(x) = ELU(x) + 1, written out: x + 1 for x > 0, exp(x) otherwise."""
    return torch.where(x > 0, x + 1.0, torch.exp(torch.clamp(x, max=0.0)))


def rope_rotate(x: Tensor, t: int, base: float = 10000.0) -> Tensor:
    """Rotate-half RoPE of one vector x [d] at offset t: [x1 cos - x2 sin, x2 cos + x1 sin]."""
    d = x.shape[-1]
    half = d // 2
    first, second = [], []
    for i in range(half):
        angle = t * base ** (-2.0 * i / d)
        c, s = math.cos(angle), math.sin(angle)
        first.append(x[i] * c - x[i + half] * s)
        second.append(x[i + half] * c + x[i] * s)
    return torch.stack(first + second)


def xl_sinusoid(dist: int, d_model: int, dtype=torch.float64) -> Tensor:
    """Transformer-XL R0[dist] = [sin(dist f_i)]_i ++ [cos(dist f_i)]_i, f_i = 10000^(-2i/d_model)."""
    half = d_model // 2
    sins = [math.sin(dist * 10000.0 ** (-2.0 * i / d_model)) for i in range(half)]
    coss = [math.cos(dist * 10000.0 ** (-2.0 * i / d_model)) for i in range(half)]
    return torch.tensor(sins + coss, dtype=dtype)


def segment_start(p: int, n: int) -> int:
    """a(p): first position of the segment holding p (segments fixed by absolute position)."""
    return (p // n) * n


def softmax_list(scores: list[Tensor]) -> list[Tensor]:
    """Softmax of a list of 0-d tensors, max-subtracted."""
    m = max(float(s.detach()) for s in scores)
    e = [torch.exp(s - m) for s in scores]
    tot = e[0]
    for x in e[1:]:
        tot = tot + x
    return [x / tot for x in e]


# ----------------------------------------------------------------------------- branches


def split_heads(y: Tensor, n_head: int, d_head: int) -> Tensor:
    """[B, T, H*d] -> [B, H, T, d]: head h owns columns h*d:(h+1)*d (head-major blocks)."""
    return torch.stack([y[:, :, h * d_head : (h + 1) * d_head] for h in range(n_head)], dim=1)


def local_branch(x: Tensor, q: Tensor, k: Tensor, v: Tensor, cfg: RefConfig, w: RefWeights,
                 k_sg: Tensor | None = None, v_sg: Tensor | None = None) -> Tensor:
    """A_dot (eq 6), one query at a time. q, k, v [B, H, T, d]; returns [B, H, T, d].

    xl: keys/values at positions before the query's segment come from k_sg, v_sg (projections of
    the detached input)."""
    bsz, n_head, t_len, d = q.shape
    n = cfg.segment_len
    pos = "xl" if cfg.memory == "xl" else cfg.pos
    scale = 1.0 / math.sqrt(d)
    r_heads = {}  # dist -> [H, d]: r_proj(R0[dist]) split per head
    rows = []
    for b in range(bsz):
        head_rows = []
        for h in range(n_head):
            q_rows = []
            for p in range(t_len):
                a = segment_start(p, n)
                lo = max(0, a - cfg.mem_len) if cfg.memory == "xl" else a
                if cfg.memory == "xl" and cfg.same_length:
                    lo = max(lo, p - cfg.mem_len + 1)
                span = range(lo, p + 1)
                cached = [cfg.memory == "xl" and j < a for j in span]  # SG(h) positions
                keys = [k_sg[b, h, j] if c else k[b, h, j] for j, c in zip(span, cached, strict=True)]
                values = [v_sg[b, h, j] if c else v[b, h, j] for j, c in zip(span, cached, strict=True)]
                scores = []
                for j, key in zip(range(lo, p + 1), keys, strict=True):
                    if pos == "none":
                        s = torch.dot(q[b, h, p], key)
                    elif pos == "rope":
                        s = torch.dot(rope_rotate(q[b, h, p], p - a), rope_rotate(key, j - a))
                    elif pos == "xl":
                        dist = p - j
                        if cfg.clamp_len > 0:
                            dist = min(dist, cfg.clamp_len)
                        if dist not in r_heads:
                            r0 = xl_sinusoid(dist, cfg.d_model, dtype=x.dtype)
                            r_heads[dist] = (w.wr @ r0).reshape(n_head, d)
                        r = r_heads[dist][h]
                        s = torch.dot(q[b, h, p] + w.u[h], key) + torch.dot(q[b, h, p] + w.v[h], r)
                    else:
                        raise ValueError(pos)
                    scores.append(s * scale)
                probs = softmax_list(scores)
                acc = torch.zeros_like(v[b, h, 0])
                for pr, value in zip(probs, values, strict=True):
                    acc = acc + pr * value
                q_rows.append(acc)
            head_rows.append(torch.stack(q_rows))
        rows.append(torch.stack(head_rows))
    return torch.stack(rows)


def dpfp(x: Tensor, nu: int = 3) -> Tensor:
    """DPFP of one vector x [d], element by element: r = [relu(x_0..x_{d-1}), relu(-x_0..-x_{d-1})],
    then for j = 1..nu the products r_i r_{(i - j) mod 2d}, i = 0..2d-1, block after block."""
    d = x.shape[0]
    r = [torch.clamp(x[i], min=0.0) for i in range(d)] + [torch.clamp(-x[i], min=0.0) for i in range(d)]
    return torch.stack([r[i] * r[(i - j) % (2 * d)] for j in range(1, nu + 1) for i in range(2 * d)])


def features(x: Tensor, cfg: RefConfig | None) -> Tensor:
    """phi(x) of one query or key vector: s(x) (the paper) or DPFP, optionally L2-normalised."""
    f = dpfp(x) if cfg is not None and cfg.feature == "dpfp" else sigma(x)
    if cfg is not None and cfg.key_norm == "l2":
        f = f / torch.clamp(torch.sqrt(torch.sum(f * f)), min=cfg.eps)
    return f


def denominator(f: Tensor, z: Tensor, cfg: RefConfig | None, eps: float,
                mass: Tensor | None = None) -> Tensor:
    """phi . z, floored at |phi|^2 (and at phi . mass when given) for the corrected normaliser, then
    at eps."""
    den = torch.dot(f, z)
    if cfg is not None and cfg.normalizer == "corrected":
        den = torch.maximum(den, torch.dot(f, f))
        if mass is not None:
            den = torch.maximum(den, torch.dot(f, mass))
    return torch.clamp(den, min=eps)


def memory_read_one(qv: Tensor, mem: Tensor, z: Tensor, eps: float, cfg: RefConfig | None = None) -> Tensor:
    """Eq 7 for one query vector: phi(q) M / max(phi(q) . z, eps), phi = s for the paper."""
    f = features(qv, cfg)
    if cfg is not None and cfg.normalizer == "none":
        return f @ mem
    return (f @ mem) / denominator(f, z, cfg, eps)


def memory_write(ks: Tensor, vs: Tensor, mem: Tensor, z: Tensor, update: str, eps: float,
                 cfg: RefConfig | None = None, betas: Tensor | None = None):
    """Eq 8 (linear) or eq 9 (delta) for one segment's keys ks [n, d], values vs [n, dv], with the
    memory options of cfg (None: the paper's memory) and write gates betas [n] (None: 1).

    Every token of the segment retrieves from the OLD memory (M_{s-1}, z_{s-1}), and the corrected
    normaliser's gamma is computed from the OLD z; the sum of outer products is then added.
    Returns (M_s, z_s).
    """
    new_m = mem
    new_z = z
    gate = [betas[t] if betas is not None else 1.0 for t in range(ks.shape[0])]
    mass = torch.zeros_like(z)  # the segment's own write into z, before any correction
    for t in range(ks.shape[0]):
        mass = mass + gate[t] * features(ks[t], cfg)
    if cfg is not None and cfg.normalizer == "none":  # DeltaNet: one token after the other, no z
        for t in range(ks.shape[0]):
            f = features(ks[t], cfg)
            new_m = new_m + gate[t] * torch.outer(f, vs[t] - f @ new_m)
        return new_m, new_z
    for t in range(ks.shape[0]):
        f = features(ks[t], cfg)
        beta = gate[t]
        if update == "linear":
            val = vs[t]
        elif update == "delta":
            val = vs[t] - (f @ mem) / denominator(f, z, cfg, eps, mass)
        else:
            raise ValueError(update)
        new_m = new_m + beta * torch.outer(f, val)
        if cfg is not None and cfg.normalizer == "corrected":
            fd = f.detach()
            gamma = torch.clamp(1.0 - torch.dot(fd, z.detach()) / torch.clamp(torch.dot(fd, fd), min=eps),
                                min=0.0, max=1.0)
            new_z = new_z + gamma * beta * f
        else:
            new_z = new_z + beta * f
    return new_m, new_z


def write_gates(x: Tensor, cfg: RefConfig, w: RefWeights) -> Tensor:
    """beta [B, H, T]: sigmoid(w_h . x_t + c_h) for every lane, head and token."""
    bsz, t_len, _ = x.shape
    return torch.stack([torch.stack([torch.stack([torch.sigmoid(torch.dot(w.wg[h], x[b, t]) + w.bg[h])
                                                  for t in range(t_len)]) for h in range(cfg.n_head)])
                        for b in range(bsz)])


def memory_branch(q: Tensor, k: Tensor, v: Tensor, cfg: RefConfig, betas: Tensor | None = None):
    """A_mem for every query (eq 7) with the memory of the segments before it; writes (eqs 8/9)
    only after a segment is complete. betas [B, H, T]: write gates (None: none).
    Returns (A_mem [B, H, T, dv], M [B, H, dk, dv], z [B, H, dk])."""
    bsz, n_head, t_len, d = q.shape
    dk = 6 * d if cfg.feature == "dpfp" else d
    dv = v.shape[-1]
    n = cfg.segment_len
    n_complete = t_len // n
    n_seg = -(-t_len // n)
    outs, ms, zs = [], [], []
    for b in range(bsz):
        h_out, h_m, h_z = [], [], []
        for h in range(n_head):
            mem = q.new_zeros(dk, dv)
            z = q.new_zeros(dk)
            rows = []
            for s in range(n_seg):
                lo, hi = s * n, min((s + 1) * n, t_len)
                for p in range(lo, hi):
                    rows.append(memory_read_one(q[b, h, p], mem, z, cfg.eps, cfg))
                if s < n_complete:
                    gates = betas[b, h, lo:hi] if betas is not None else None
                    mem, z = memory_write(k[b, h, lo:hi], v[b, h, lo:hi], mem, z, cfg.update, cfg.eps, cfg,
                                          gates)
            h_out.append(torch.stack(rows))
            h_m.append(mem)
            h_z.append(z)
        outs.append(torch.stack(h_out))
        ms.append(torch.stack(h_m))
        zs.append(torch.stack(h_z))
    return torch.stack(outs), torch.stack(ms), torch.stack(zs)


# ----------------------------------------------------------------------------- the layer


def reference_forward(x: Tensor, cfg: RefConfig, w: RefWeights, branch: str = "gated") -> RefOutput:
    """The whole layer on a stream x [B, T, d_model] that starts at position 0.

    branch: "gated" (eq 10), "memory" (A = A_mem only) or "local" (A = A_dot only).
    """
    hd = cfg.d_head
    q = split_heads(x @ w.wq.T, cfg.n_head, hd)  # eq 5
    k = split_heads(x @ w.wk.T, cfg.n_head, hd)
    v = split_heads(x @ w.wv.T, cfg.n_head, hd)

    xd = x.detach()  # Transformer-XL's SG(h) for the cached keys and values
    k_sg = split_heads(xd @ w.wk.T, cfg.n_head, hd)
    v_sg = split_heads(xd @ w.wv.T, cfg.n_head, hd)
    a_dot = local_branch(x, q, k, v, cfg, w, k_sg, v_sg)
    if cfg.memory == "infini":
        betas = write_gates(x, cfg, w) if cfg.write_gate else None
        a_mem, mem, z = memory_branch(q, k, v, cfg, betas)
        heads_list = []
        for h in range(cfg.n_head):
            g = torch.sigmoid(w.gate[h])
            if branch == "gated":
                heads_list.append(g * a_mem[:, h] + (1 - g) * a_dot[:, h])
            elif branch == "memory":
                heads_list.append(a_mem[:, h])
            elif branch == "local":
                heads_list.append(a_dot[:, h])
            else:
                raise ValueError(branch)
        heads = torch.stack(heads_list, dim=1)
    else:
        a_mem, mem, z = torch.zeros_like(a_dot), None, None
        heads = a_dot

    concat = torch.cat([heads[:, h] for h in range(cfg.n_head)], dim=-1)  # [B, T, H*d]
    out = concat @ w.wo.T  # eq 11
    return RefOutput(out=out, heads=heads, a_mem=a_mem, a_dot=a_dot, M=mem, z=z, q=q, k=k, v=v)


def linear_attention_read(qv: Tensor, ks: Tensor, vs: Tensor) -> Tensor:
    """Normalised linear attention of one query over keys ks [n, d], values vs [n, dv]:
    sum_j s(q).s(k_j) v_j / sum_j s(q).s(k_j) -- what the linear-rule memory read must equal."""
    sq = sigma(qv)
    num = torch.zeros_like(vs[0])
    den = qv.new_zeros(())
    for j in range(ks.shape[0]):
        wgt = torch.dot(sq, sigma(ks[j]))
        num = num + wgt * vs[j]
        den = den + wgt
    return num / den
