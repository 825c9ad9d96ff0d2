"""Benchmark of one InfiniAttention layer: throughput and streaming memory.

Three implementations of the same width (B=4, d_model=512, 8 heads of 64, segments of 128):

- ``layer``: ``infiniattention.attention.InfiniAttention`` (parallel over segments, eqs. 5-11);
- ``loop``: the straightforward per-segment Python loop of the same math, written here (project the
  segment, RoPE, causal SDPA inside it, read the memory, write it, gate, output projection), sharing
  the layer's weights; it is checked against the layer before timing;
- ``full``: plain full causal attention (q/k/v/o projections + ``F.scaled_dot_product_attention(
  is_causal=True)`` over the whole length), skipped where the estimated memory does not fit or the
  estimated time exceeds ``--max-seconds``.

Throughput: forward + backward of one call over the whole length, tokens/s = B * T / time; one warm-up
run, then the median of ``--repeats`` runs. Streaming memory: a no-grad pass over the whole length in
calls of ``--chunk`` tokens with the state carried; on CUDA ``torch.cuda.max_memory_allocated`` minus
the allocation before the pass; on CPU the peak RSS of a fresh subprocess per configuration, run with
MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors leave the RSS at once: its RSS high-water mark
(VmHWM, reset after imports and building the layer through /proc/self/clear_refs) minus its RSS at
that reset. Targets: layer vs loop tokens/s at 2K >= 1.5x; streaming peak at 32K within 1.1x of 2K.

    python bench/bench_layer.py --device cpu --repeats 2
    python bench/bench_layer.py --quick            # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import torch
    import torch.nn.functional as F
    from common import status_kib
    from flops import StepShape, forward_flops
    from torch import Tensor, nn

    from infiniattention.attention import InfiniAttention
    from infiniattention.config import ModelConfig

TARGET_SPEEDUP_2K = 1.5
TARGET_MEMORY_RATIO = 1.1
TARGET_INFINI_OVER_NONE = 1.10
TARGET_LAYER_MFU = 0.70


# ------------------------------------------------------------------------------------ loop version


def rope_tables(n: int, d: int, device, dtype) -> tuple[Tensor, Tensor]:
    """cos, sin [n, d/2] of offsets 0..n-1 inside a segment (rotate-half RoPE, base 10000)."""
    inv_freq = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64, device=device) / d)
    angles = torch.arange(n, dtype=torch.float64, device=device)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def loop_forward(layer: InfiniAttention, x: Tensor) -> Tensor:
    """Infini-attention one segment at a time (what most reproductions write), fresh memory."""
    B, T, _ = x.shape
    N, H, d, eps = layer.segment_len, layer.n_head, layer.d_head, layer.eps
    M = x.new_zeros(B, H, d, d, dtype=torch.float32)
    z = x.new_zeros(B, H, d, dtype=torch.float32)
    g = torch.sigmoid(layer.gate).view(1, H, 1, 1)
    outs = []
    for start in range(0, T, N):
        xs = x[:, start : start + N]
        n = xs.size(1)
        cos, sin = rope_tables(n, d, x.device, x.dtype)

        def heads(y: Tensor, n=n) -> Tensor:
            return y.reshape(B, n, H, d).transpose(1, 2)  # [B, H, n, d]

        q, k, v = heads(layer.q_proj(xs)), heads(layer.k_proj(xs)), heads(layer.v_proj(xs))
        a_dot = F.scaled_dot_product_attention(rope(q, cos, sin), rope(k, cos, sin), v, is_causal=True)
        sq, sk = F.elu(q.float()) + 1, F.elu(k.float()) + 1
        a_mem = (sq @ M) / (sq @ z[..., None]).clamp_min(eps)  # eq 7, before the write
        if n == N:  # only complete segments are written
            if layer.update == "delta":
                vw = v.float() - (sk @ M) / (sk @ z[..., None]).clamp_min(eps)  # eq 9
            else:
                vw = v.float()  # eq 8
            M = M + sk.transpose(-1, -2) @ vw
            z = z + sk.sum(dim=-2)
        a = g * a_mem.to(a_dot.dtype) + (1 - g) * a_dot  # eq 10
        outs.append(layer.o_proj(a.transpose(1, 2).reshape(B, n, H * d)))  # eq 11
    return torch.cat(outs, dim=1)


class FullCausal(nn.Module):
    """Plain causal softmax attention over the whole sequence, the same width."""

    def __init__(self, d_model: int, n_head: int, d_head: int) -> None:
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        inner = n_head * d_head
        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.reshape(B, T, self.n_head, self.d_head).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), is_causal=True
        )
        return self.o_proj(a.transpose(1, 2).reshape(B, T, -1))


# ----------------------------------------------------------------------------------------- timing


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fwd_bwd(fn, x: Tensor, params: list[Tensor], repeats: int, device: str) -> float:
    """Median seconds of forward + backward (one warm-up run first)."""
    grad_out = torch.randn_like(x)
    times = []
    for i in range(repeats + 1):
        for p in params:
            p.grad = None
        x.grad = None
        sync(device)
        t0 = time.perf_counter()
        out = fn(x)
        out.backward(grad_out)
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
        del out
    return statistics.median(times)


def available_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def full_attention_bytes(B: int, T: int, d_model: int, H: int, device: str, dtype) -> int:
    """Estimated peak of full causal attention fwd + bwd: about 16 [B, T, d_model] activations and
    gradients, plus three [B, H, T, T] score-sized buffers when SDPA falls back to the math kernel."""
    elt = torch.finfo(dtype).bits // 8
    linear = 16 * B * T * d_model * elt
    probe = torch.zeros(1, H, 8, d_model // H, device=device, dtype=dtype)
    backend = int(torch._fused_sdp_choice(probe, probe, probe, is_causal=True))
    quadratic = 0 if backend != 0 else 3 * B * H * T * T * elt  # 0: SDPBackend.MATH
    return linear + quadratic


# ---------------------------------------------------------------------------- streaming memory


def reset_peak_rss() -> int:
    """Reset the RSS high-water mark to the current RSS (Linux: clear_refs 5) and return it in bytes.

    Without that reset, the high-water mark of ``import torch`` can hide a smaller streaming peak.
    Falls back to ``ru_maxrss`` where /proc is unavailable."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kib("VmRSS") * 1024
    except (OSError, TypeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss() -> int:
    hwm = status_kib("VmHWM")
    return hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def stream_once(args: argparse.Namespace, total: int, update: str, device: str) -> dict:
    """No-grad pass over ``total`` tokens in calls of ``args.chunk`` with the state carried."""
    torch.manual_seed(0)
    layer = InfiniAttention(args.d_model, args.heads, args.d_head, args.segment, update=update).to(device)
    gen = torch.Generator(device=device).manual_seed(1)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = reset_peak_rss()
    state, checksum = None, 0.0
    with torch.no_grad():
        for start in range(0, total, args.chunk):
            n = min(args.chunk, total - start)
            x = torch.randn(args.batch, n, args.d_model, generator=gen, device=device)
            out, state = layer(x, state)
            checksum += float(out[:, -1].sum())
            del out, x  # only the state is carried from call to call
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = peak_rss() - base
    return {"peak_bytes": int(peak), "seen": state.seen, "checksum": checksum}


def stream_peak(args: argparse.Namespace, total: int, update: str, device: str) -> dict:
    if device == "cuda":
        return stream_once(args, total, update, device)
    cmd = [
        sys.executable,
        __file__,
        "--stream-worker",
        f"{total},{update}",
        "--device",
        "cpu",
        "--batch",
        str(args.batch),
        "--d-model",
        str(args.d_model),
        "--heads",
        str(args.heads),
        "--d-head",
        str(args.d_head),
        "--segment",
        str(args.segment),
        "--chunk",
        str(args.chunk),
    ]
    # Large allocations through mmap, so that freed tensors leave the RSS at once and the peak RSS
    # measures live tensors, not glibc's retained (fragmented) heap.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ memory cost and MFU of the layer


def layer_train_flops(B: int, T: int, D: int, H: int, dh: int, N: int, memory: str, update: str) -> float:
    """Forward + backward FLOPs of one layer call (bench/flops.py: projections, causal attention,
    memory reads and writes; no FFN, no head)."""
    cfg = ModelConfig(vocab_size=1, n_layer=1, d_model=D, n_head=H, d_head=dh, d_inner=1, segment_len=N,
                      memory=memory, update=update)
    parts = forward_flops(cfg, StepShape(B, T))
    return 3.0 * (parts["projections"] + parts["attention"] + parts["memory"])


def import_at_commit(commit: str):
    """``infiniattention.attention`` as of ``commit`` (``git archive`` into a temporary package)."""
    import importlib
    import tempfile

    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="bench_ref_"))
    archive = subprocess.run(["git", "-C", str(root), "archive", commit, "infiniattention"],
                             capture_output=True)
    if archive.returncode != 0:
        why = archive.stderr.decode().strip()
        raise SystemExit(f"error: cannot read infiniattention at {commit!r}: {why}")
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    (tmp / "infiniattention").rename(tmp / "ref_infiniattention")
    sys.path.insert(0, str(tmp))
    return importlib.import_module("ref_infiniattention.attention")


def infini_vs_none(args: argparse.Namespace, T: int, update: str, device: str) -> dict:
    """``infini`` against ``none`` (the same layer without its memory) and a matmul ceiling of the
    layer's projection shapes, interleaved over ``--rounds`` rounds; medians."""
    B, D, H, dh, N = args.batch, args.d_model, args.heads, args.d_head, args.segment
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {"infini": [], "none": [], "ceiling": []}
    torch.manual_seed(0)
    layers = {m: InfiniAttention(D, H, dh, N, update=update, memory=m).to(device) for m in ("infini", "none")}
    if args.compare_ref:  # the same layer as of an earlier commit, same weights, timed in the same rounds
        ref = import_at_commit(args.compare_ref).InfiniAttention(D, H, dh, N, update=update).to(device)
        ref.load_state_dict(layers["infini"].state_dict())
        layers[f"infini@{args.compare_ref}"] = ref
        times[f"infini@{args.compare_ref}"] = []
    x = torch.randn(B, T, D, device=device, requires_grad=True)
    g = torch.randn(B, T, D, device=device)
    mats = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device))
            for m, k, n in ((B * T, D, H * dh), (H * dh, B * T, D), (B * T, H * dh, D))]

    def step(m: str) -> float:
        x.grad = None
        for p in layers[m].parameters():
            p.grad = None
        sync(device)
        t0 = clock()
        layers[m](x)[0].backward(g)
        sync(device)
        return clock() - t0

    for m in layers:
        step(m)
    for _ in range(args.rounds):
        for m in layers:
            times[m].append(step(m))
        best = 0.0
        for a, b in mats:
            sync(device)
            t0 = clock()
            torch.mm(a, b)
            sync(device)
            best = max(best, 2 * a.size(0) * a.size(1) * b.size(1) / (clock() - t0))
        times["ceiling"].append(best)
    med = {m: statistics.median(v) for m, v in times.items()}
    out = {"T": T, "segments": -(-T // N), "update": update, "clock": args.clock, "rounds": args.rounds,
           "ceiling_flops": med["ceiling"], "infini_over_none": med["infini"] / med["none"],
           "infini_over_none_per_round": [a / b for a, b in zip(times["infini"], times["none"], strict=True)]}
    for m in layers:
        flops = layer_train_flops(B, T, D, H, dh, N, m.split("@")[0], update)
        out[f"{m}_s"] = med[m]
        out[f"{m}_tok_s"] = B * T / med[m]
        out[f"{m}_mfu"] = flops / med[m] / med["ceiling"]
    return out


# ------------------------------------------------------------------------------------------- main


def fmt_rate(v) -> str:
    return v if isinstance(v, str) else f"{v:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small sizes (B=2, lengths 512, 1024, 2048)")
    ap.add_argument("--lengths", default=None, help="comma-separated total lengths (default 2048,8192,32768)")
    ap.add_argument("--updates", default="delta,linear", help="update rules for the layer columns")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--d-head", type=int, default=64)
    ap.add_argument("--segment", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=2048, help="tokens per call of the streaming pass")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="skip full attention where one fwd+bwd is estimated to take longer",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the infini-vs-none timing")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: time.thread_time of the one thread (needs --threads 1), which leaves out the "
                         "time spent waiting for a core on a shared machine")
    ap.add_argument("--compare-ref", default=None, metavar="COMMIT",
                    help="also time the infini layer as of COMMIT (same weights) in the same rounds")
    ap.add_argument("--only-vs-none", action="store_true",
                    help="only the infini-vs-none timing and MFU at the first length")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_layer.json"))
    ap.add_argument("--stream-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stream_worker:
        total, update = args.stream_worker.split(",")
        print(json.dumps(stream_once(args, int(total), update, device)))
        return
    if args.quick:
        args.batch = min(args.batch, 2)
        lengths = [512, 1024, 2048]
    else:
        lengths = [2048, 8192, 32768]
    if args.lengths:
        lengths = [int(s) for s in args.lengths.split(",")]
    updates = [u for u in args.updates.split(",") if u]
    B, D, H, dh, N = args.batch, args.d_model, args.heads, args.d_head, args.segment
    if args.clock == "cpu" and (device == "cuda" or torch.get_num_threads() != 1):
        raise SystemExit("error: --clock cpu measures one CPU thread: use it with --threads 1 on the CPU")
    vs = infini_vs_none(args, lengths[0], updates[0], device)
    print(f"T={vs['T']} ({vs['segments']} segments), {updates[0]}, {args.rounds} interleaved rounds, "
          f"{args.clock} clock: infini {vs['infini_tok_s']:,.0f} tok/s, none {vs['none_tok_s']:,.0f} tok/s, "
          f"infini/none time {vs['infini_over_none']:.3f} (target <= {TARGET_INFINI_OVER_NONE}; per round "
          f"{min(vs['infini_over_none_per_round']):.2f}-{max(vs['infini_over_none_per_round']):.2f}); MFU "
          f"against a {vs['ceiling_flops'] / 1e9:.1f} GFLOP/s matmul ceiling: infini {vs['infini_mfu']:.1%}, "
          f"none {vs['none_mfu']:.1%} (target >= {TARGET_LAYER_MFU:.0%})", flush=True)
    for name in [n for n in vs if n.endswith("_tok_s") and "@" in n]:
        ref = name[: -len("_tok_s")]
        print(f"{ref}: {vs[name]:,.0f} tok/s, time / none {vs[ref + '_s'] / vs['none_s']:.3f}; this "
              f"commit's infini is {vs['infini_tok_s'] / vs[name]:.2f}x as fast", flush=True)
    if args.only_vs_none:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"config": {"device": device, "torch": torch.__version__,
                                              "threads": torch.get_num_threads(), "batch": B, "d_model": D,
                                              "n_head": H, "d_head": dh, "segment_len": N},
                                   "infini_vs_none": vs}, indent=2))
        print(f"wrote {out}")
        return

    torch.manual_seed(0)
    layers = {u: InfiniAttention(D, H, dh, N, update=u).to(device) for u in updates}
    main_update = updates[0]
    full = FullCausal(D, H, dh).to(device)

    # The loop version computes the same function as the layer (checked on a short input).
    with torch.no_grad():
        xc = torch.randn(B, 3 * N + N // 2, D, device=device)
        loop_err = float((loop_forward(layers[main_update], xc) - layers[main_update](xc)[0]).abs().max())
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} B={B} d_model={D} "
        f"heads={H}x{dh} segment={N}; loop vs layer max |diff| = {loop_err:.2e}",
        flush=True,
    )

    rows = []
    prev_full = None  # (T, seconds) of the last full-attention measurement
    for T in lengths:
        row: dict = {"T": T}
        x = torch.randn(B, T, D, device=device, requires_grad=True)
        for u in updates:
            lay = layers[u]
            sec = time_fwd_bwd(lambda x, lay=lay: lay(x)[0], x, list(lay.parameters()), args.repeats, device)
            row[f"layer_{u}_tok_s"] = B * T / sec
            print(f"  T={T} layer[{u}] {B * T / sec:,.0f} tok/s", flush=True)
        lay = layers[main_update]
        sec = time_fwd_bwd(
            lambda x, lay=lay: loop_forward(lay, x), x, list(lay.parameters()), args.repeats, device
        )
        row["loop_tok_s"] = B * T / sec
        print(f"  T={T} loop[{main_update}] {B * T / sec:,.0f} tok/s", flush=True)

        need = full_attention_bytes(B, T, D, H, device, x.dtype)
        est_sec = None if prev_full is None else prev_full[1] * (T / prev_full[0]) ** 2
        if need > 0.7 * available_bytes(device):
            row["full_tok_s"] = f"n/a (too large: ~{need / 2**30:.0f} GiB)"
        elif est_sec is not None and est_sec > args.max_seconds:
            row["full_tok_s"] = f"n/a (too slow: ~{est_sec:.0f} s)"
        else:
            sec = time_fwd_bwd(full, x, list(full.parameters()), args.repeats, device)
            row["full_tok_s"] = B * T / sec
            prev_full = (T, sec)
        print(f"  T={T} full {fmt_rate(row['full_tok_s'])} tok/s", flush=True)
        del x

        for u in updates:
            st = stream_peak(args, T, u, device)
            row[f"stream_peak_MiB_{u}"] = st["peak_bytes"] / 2**20
        rows.append(row)

    # ---- table
    mem_what = (
        "torch.cuda.max_memory_allocated - allocated before the pass"
        if device == "cuda"
        else "fresh subprocess per configuration, MALLOC_MMAP_THRESHOLD_=65536: "
        "VmHWM (reset after imports + layer) - VmRSS then"
    )
    head = (
        ["T"]
        + [f"layer[{u}] tok/s" for u in updates]
        + [f"loop[{main_update}] tok/s", "full SDPA tok/s", f"layer/loop[{main_update}]"]
    )
    head += [f"stream peak MiB [{u}]" for u in updates]
    lines = [head]
    for r in rows:
        ratio = r[f"layer_{main_update}_tok_s"] / r["loop_tok_s"]
        r["layer_vs_loop"] = ratio
        lines.append(
            [str(r["T"])]
            + [fmt_rate(r[f"layer_{u}_tok_s"]) for u in updates]
            + [fmt_rate(r["loop_tok_s"]), fmt_rate(r["full_tok_s"]), f"{ratio:.2f}x"]
            + [f"{r[f'stream_peak_MiB_{u}']:.1f}" for u in updates]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    print()
    for i, line in enumerate(lines):
        print(" | ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))

    first, last = rows[0], rows[-1]
    summary = {
        "layer_vs_loop_at_first_length": first["layer_vs_loop"],
        "target_layer_vs_loop": TARGET_SPEEDUP_2K,
        "stream_peak_ratio_last_vs_first": {
            u: last[f"stream_peak_MiB_{u}"] / max(first[f"stream_peak_MiB_{u}"], 1e-9) for u in updates
        },
        "target_stream_peak_ratio": TARGET_MEMORY_RATIO,
    }
    print(
        f"\nlayer/loop at T={first['T']}: {summary['layer_vs_loop_at_first_length']:.2f}x "
        f"(target >= {TARGET_SPEEDUP_2K}x)"
    )
    for u, r in summary["stream_peak_ratio_last_vs_first"].items():
        print(
            f"stream peak [{u}] T={last['T']} / T={first['T']}: {r:.2f}x (target <= {TARGET_MEMORY_RATIO}x)"
        )
    print(f"stream peak: {mem_what}; calls of {args.chunk} tokens, no grad")

    result = {
        "config": {
            "device": device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch": B,
            "d_model": D,
            "n_head": H,
            "d_head": dh,
            "segment_len": N,
            "updates": updates,
            "repeats": args.repeats,
            "chunk": args.chunk,
            "timing": "forward+backward of one call over the whole length; median after 1 warm-up",
            "stream_memory": mem_what,
            "loop_vs_layer_max_abs_diff": loop_err,
        },
        "rows": rows,
        "summary": summary,
        "infini_vs_none": vs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
