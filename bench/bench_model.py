"""Training throughput of the whole model: tokens/s, peak memory and MFU per memory mode.

One training step is what the trainer does: forward under the configured precision, backward,
gradient clipping, the optimizer step (``build_optimizer``: AdamW), the state carried (detached) to
the next step. Random tokens of the config's shape (``data.batch_size`` x ``data.tgt_len``).

- **Interleaved**: every round times ``--steps`` steps of every mode (and variant) in turn, in one
  process, after ``--warmup`` untimed steps each; the reported time is the median over all timed
  steps, the spread the lowest and highest per-round median.
- **MFU**: the analytic FLOPs of a step (``bench/flops.py``: projections, FFN, causal attention, xl
  position term, memory reads and writes, output head; backward = 2x forward) / step time / the
  matmul ceiling, measured in the same process once per round (median over rounds) as the best of
  a few ``torch.mm`` shapes of the model (the FFN and attention projections, forward and backward
  shapes) in the compute dtype.
- **Peak memory**: a fresh process per mode that builds the model and runs 3 steps. CUDA:
  ``torch.cuda.max_memory_allocated``. CPU: the RSS high-water mark (reset after ``import torch``
  through ``/proc/self/clear_refs``) minus the RSS then, with ``MALLOC_MMAP_THRESHOLD_=65536`` so that
  freed tensors leave the RSS at once.
- **Transformer-XL original** (``--txl-repo PATH``, a checkout of kimiyoung/transformer-xl): its
  ``MemTransformerLM`` imported at run time from ``PATH/pytorch`` and timed the same way at the
  same shape (``tgt_len``, ``mem_len``, widths, dropout; Adam, clip, ``same_length`` off as in its
  training scripts). Two run-time shims, no edits to its files: ``torch.version.cuda`` is given a
  value while its adaptive-softmax module is imported (it parses it at import), and its ``uint8``
  attention masks are turned into ``bool`` in ``masked_fill`` during its steps (current torch
  rejects ``uint8`` masks). Its FLOPs are counted with the xl formula (the same math).
- ``--compile on|both``: ``torch.compile`` of the model (``both``: eager and compiled interleaved).

    python bench/bench_model.py --config bench/small.yaml --txl-repo /path/to/transformer-xl
    python bench/bench_model.py --config configs/enwik8_base.yaml --set data.batch_size=4 \\
        --set data.tgt_len=512 --modes infini,xl,none

``--out FILE`` writes the whole result as JSON; ``--results FILE`` also writes it as a results record
(``results/speed/demo.json``: the rows and ratios, with the commit, the config, the command, the
machine and the wall time in the record's envelope; infiniattention/training/results.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import torch
    from common import git_commit, peak_since, print_table, reset_peak, sync, write_json
    from flops import StepShape, forward_flops, train_flops

    from infiniattention import InfiniTransformerLM
    from infiniattention.config import ModelConfig, memory_settings
    from infiniattention.dropout import use_fast_dropout
    from infiniattention.training.config import ConfigError, RunConfig, load_config
    from infiniattention.training.evaluate import precision_autocast
    from infiniattention.training.optim import build_optimizer
    from infiniattention.training.results import record, write_result

SWITCHES = ("compile", "fastdrop")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------------------- helpers


def mode_config(cfg: RunConfig, mode: str) -> ModelConfig:
    """The run's model config with memory ``mode``: infini, xl, none, or infini+OPTION+... (a memory
    label, e.g. infini+gate+corrected; xl forces xl positions)."""
    settings = memory_settings(mode)
    return replace(cfg.model, **settings, pos="xl" if settings["memory"] == "xl" else cfg.model.pos)


CLOCK = time.perf_counter


def matmul_ceiling(shapes: list[tuple[int, int, int]], dtype: torch.dtype, device: torch.device,
                   repeats: int = 5) -> float:
    """Best median FLOP/s of ``torch.mm`` over ``shapes`` (m, k, n) in ``dtype``."""
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            sync(device)
            t0 = CLOCK()
            torch.mm(a, b)
            sync(device)
            times.append(CLOCK() - t0)
        best = max(best, 2 * m * k * n / statistics.median(times))
    return best


def ceiling_shapes(cfg: ModelConfig, tokens: int) -> list[tuple[int, int, int]]:
    """The model's big matmuls: FFN and projections, forward and the two backward shapes."""
    D, Di, inner = cfg.d_model, cfg.d_inner, cfg.n_head * cfg.d_head
    return [(tokens, D, Di), (tokens, Di, D), (Di, tokens, D), (tokens, D, inner), (inner, tokens, D)]


# ----------------------------------------------------------------------------------------- runners


class Runner:
    """One model, its optimizer, its carried state and a ``step()`` that trains on one batch."""

    name: str
    flops: float
    tokens: int

    def step(self) -> None:
        raise NotImplementedError


class OurRunner(Runner):
    def __init__(self, cfg: RunConfig, mode: str, device: torch.device, compiled: bool, fast_dropout: bool,
                 seed: int) -> None:
        torch.manual_seed(seed)
        self.cfg, self.device = cfg, device
        mcfg = mode_config(cfg, mode)
        self.model = InfiniTransformerLM(mcfg).to(device).train()
        if fast_dropout:
            use_fast_dropout(self.model)
        self.fwd: Callable = torch.compile(self.model) if compiled else self.model
        self.opt = build_optimizer(self.model, cfg.optim)
        B, T = cfg.data.batch_size, cfg.data.tgt_len
        gen = torch.Generator().manual_seed(seed)
        self.batches = [torch.randint(0, mcfg.vocab_size, (B, T + 1), generator=gen).to(device)
                        for _ in range(4)]
        self.i = 0
        self.state = self.model.init_state(B, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.precision == "fp16")
        self.name = mode + ("+compile" if compiled else "") + ("+fastdrop" if fast_dropout else "")
        self.tokens = B * T
        self.flops = train_flops(mcfg, StepShape(B, T))
        self.flop_parts = forward_flops(mcfg, StepShape(B, T))
        self.n_params = self.model.num_parameters()

    def step(self) -> None:
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        with precision_autocast(self.device, self.cfg.train.precision):
            out = self.fwd(batch[:, :-1], targets=batch[:, 1:], state=self.state)
        self.scaler.scale(out.loss.float()).backward()
        self.scaler.unscale_(self.opt)
        clip = self.cfg.optim.clip if self.cfg.optim.clip > 0 else math.inf
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.state = out.state.detach()


@contextlib.contextmanager
def _bool_masks():
    """During the original's steps: ``masked_fill`` with a ``uint8`` mask acts as with ``bool``."""
    original = torch.Tensor.masked_fill

    def masked_fill(self, mask, value):
        return original(self, mask.bool() if mask.dtype == torch.uint8 else mask, value)

    torch.Tensor.masked_fill = masked_fill
    try:
        yield
    finally:
        torch.Tensor.masked_fill = original


def import_txl(repo: Path):
    """``MemTransformerLM`` of a kimiyoung/transformer-xl checkout, imported at run time."""
    pt = repo / "pytorch"
    if not (pt / "mem_transformer.py").is_file():
        raise SystemExit(f"error: {pt / 'mem_transformer.py'} not found: --txl-repo must be a checkout of "
                         "kimiyoung/transformer-xl")
    sys.path[:0] = [str(pt), str(pt / "utils")]
    saved = torch.version.cuda
    torch.version.cuda = saved or "0.0"  # its adaptive softmax parses the CUDA version at import
    try:
        return importlib.import_module("mem_transformer").MemTransformerLM
    finally:
        torch.version.cuda = saved


class TXLRunner(Runner):
    """The original Transformer-XL (``attn_type 0``) at the same shape; its training step."""

    def __init__(self, cls, cfg: RunConfig, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)
        m, self.cfg, self.device = cfg.model, cfg, device
        B, T = cfg.data.batch_size, cfg.data.tgt_len
        self.model = cls(m.vocab_size, m.n_layer, m.n_head, m.d_model, m.d_head, m.d_inner, m.dropout,
                         m.dropatt, tie_weight=True, pre_lnorm=m.pre_lnorm, tgt_len=T, ext_len=0,
                         mem_len=m.mem_len, same_length=False, attn_type=0, clamp_len=m.clamp_len)
        self.model.to(device).train()
        for name, p in self.model.named_parameters():  # its train.py's normal(0, 0.02) init
            if "layer_norm" in name:
                continue
            torch.nn.init.normal_(p, 0.0, 0.02) if p.dim() > 1 or "r_" in name else torch.nn.init.zeros_(p)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr)
        gen = torch.Generator().manual_seed(seed)
        self.batches = [torch.randint(0, m.vocab_size, (T + 1, B), generator=gen).to(device)
                        for _ in range(4)]
        self.i, self.mems = 0, ()
        self.name = "txl-original"
        self.tokens = B * T
        xl = replace(m, memory="xl", pos="xl", segment_len=T)
        self.flops = train_flops(xl, StepShape(B, T))
        self.flop_parts = forward_flops(xl, StepShape(B, T))
        self.n_params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> None:
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        with _bool_masks(), precision_autocast(self.device, self.cfg.train.precision):
            ret = self.model(batch[:-1], batch[1:], *self.mems)
        loss, self.mems = ret[0], tuple(ret[1:])
        loss.float().mean().backward()
        clip = self.cfg.optim.clip if self.cfg.optim.clip > 0 else math.inf
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.opt.step()


def timed_steps(runner: Runner, steps: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(steps):
        sync(device)
        t0 = CLOCK()
        runner.step()
        sync(device)
        times.append(CLOCK() - t0)
    return times


# ------------------------------------------------------------------------------------- peak memory


def memory_worker(args: argparse.Namespace, cfg: RunConfig, device: torch.device, variant: str) -> dict:
    """Peak memory of 3 training steps of one variant in this (fresh) process."""
    gc.collect()
    base = reset_peak(device)
    runner = build_runner(args, cfg, device, variant)
    for _ in range(3):
        runner.step()
    return {"peak_bytes": peak_since(device, base)}


def peak_memory(args: argparse.Namespace, variant: str) -> int | None:
    cmd = [sys.executable, __file__, "--memory-worker", variant] + [a for a in sys.argv[1:]]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        last = res.stderr.strip().splitlines()[-1:]
        print(f"  peak memory of {variant}: worker failed: {last}", flush=True)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"]


# -------------------------------------------------------------------------------------------- main


def build_runner(args: argparse.Namespace, cfg: RunConfig, device: torch.device, variant: str) -> Runner:
    if variant == "txl-original":
        return TXLRunner(import_txl(Path(args.txl_repo)), cfg, device, args.seed)
    words = variant.split("+")
    mode = "+".join(w for w in words if w not in SWITCHES)
    return OurRunner(cfg, mode, device, compiled="compile" in words, fast_dropout="fastdrop" in words,
                     seed=args.seed)


def variants_of(args: argparse.Namespace) -> list[str]:
    """``mode[+compile][+fastdrop]`` for every mode and the chosen switches, then the original."""
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        try:
            memory_settings(m)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
    switches = {"off": [""], "on": ["+{}"], "both": ["", "+{}"]}
    out = []
    for m in modes:
        for c in switches[args.compile]:
            for f in switches[args.fast_dropout]:
                out.append(m + c.format("compile") + f.format("fastdrop"))
    if args.txl_repo:
        out.append("txl-original")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True,
                    help="YAML config (model, data.batch_size, data.tgt_len, optim)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--modes", default="infini,xl,none",
                    help="comma-separated memory modes: infini, xl, none, or infini with options joined by "
                    "'+' (gate, corrected, deltanet, dpfp, l2), e.g. infini,infini+gate,infini+dpfp,none")
    ap.add_argument("--txl-repo", default=None, help="checkout of kimiyoung/transformer-xl to time as well")
    ap.add_argument("--compile", default="off", choices=["off", "on", "both"], help="torch.compile the model")
    ap.add_argument("--fast-dropout", default="off", choices=["off", "on", "both"],
                    help="infiniattention.dropout.FastDropout instead of nn.Dropout")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default=None, choices=list(DTYPES), help="override train.precision")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the rounds")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="wall: time.perf_counter; cpu: time.thread_time, the CPU time of the one thread "
                         "(needs --threads 1): on a machine shared with other jobs it leaves out the time "
                         "the process waits for a core")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="profile 2 steps of each variant and print its top K ops by self time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_model.json"))
    ap.add_argument("--results", metavar="FILE", default=None,
                    help="also write the result as a results record, e.g. results/speed/demo.json")
    ap.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def load(args: argparse.Namespace) -> tuple[RunConfig, torch.device]:
    try:
        cfg = load_config(args.config, args.set)
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.precision:
        cfg.train.precision = args.precision
    dev = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no GPU")
    if args.txl_repo and cfg.data.tgt_len != cfg.model.segment_len:
        print(f"note: tgt_len {cfg.data.tgt_len} != segment_len {cfg.model.segment_len}: the original "
              "Transformer-XL attends over the whole tgt_len, so it is not the same shape", flush=True)
    return cfg, torch.device(dev)


def profile_top(runner: Runner, device: torch.device, k: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(2):
            runner.step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1.0
    return [{"op": e.key, "self_ms_per_step": getattr(e, key) / 2e3, "share": getattr(e, key) / total,
             "calls_per_step": e.count / 2} for e in events[:k]]


def main(argv: list[str] | None = None) -> None:
    global CLOCK
    start = time.time()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if args.device == "cuda" or torch.get_num_threads() != 1:
            raise SystemExit("error: --clock cpu measures one CPU thread: use it with --threads 1 on the CPU")
        CLOCK = time.thread_time
    cfg, device = load(args)
    if args.memory_worker:
        print(json.dumps(memory_worker(args, cfg, device, args.memory_worker)))
        return
    variants = variants_of(args)
    B, T = cfg.data.batch_size, cfg.data.tgt_len
    dtype = DTYPES[cfg.train.precision]
    m = cfg.model
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"precision={cfg.train.precision} | {m.n_layer} x d_model {m.d_model}, {m.n_head} x {m.d_head}, "
          f"d_inner {m.d_inner}, segment {m.segment_len}, mem_len {m.mem_len}, batch {B} x tgt_len {T}, "
          f"dropout {m.dropout} | clock {args.clock} | variants {', '.join(variants)}", flush=True)

    runners = {v: build_runner(args, cfg, device, v) for v in variants}
    for r in runners.values():
        for _ in range(args.warmup):
            r.step()
    times: dict[str, list[list[float]]] = {v: [] for v in variants}
    ceilings = []
    shapes = ceiling_shapes(m, B * T)
    for rnd in range(args.rounds):
        ceilings.append(matmul_ceiling(shapes, dtype, device))
        for v, r in runners.items():
            times[v].append(timed_steps(r, args.steps, device))
        line = ", ".join(f"{v} {statistics.median(times[v][-1]) * 1e3:.0f} ms" for v in variants)
        print(f"  round {rnd + 1}/{args.rounds}: ceiling {ceilings[-1] / 1e9:.1f} GFLOP/s; {line}",
              flush=True)
    ceiling = statistics.median(ceilings)

    rows = []
    for v, r in runners.items():
        flat = [t for rnd in times[v] for t in rnd]
        per_round = [statistics.median(rnd) for rnd in times[v]]
        sec = statistics.median(flat)
        rows.append({
            "variant": v, "step_s": sec,
            "step_s_round_min": min(per_round), "step_s_round_max": max(per_round),
            "tokens_per_s": r.tokens / sec, "train_flops_per_step": r.flops, "mfu": r.flops / sec / ceiling,
            "forward_flops_by_part": r.flop_parts, "params": r.n_params,
        })
    by = {row["variant"]: row for row in rows}
    ratios = {}
    if "infini" in by and "none" in by:
        ratios["time_infini_over_none"] = by["infini"]["step_s"] / by["none"]["step_s"]
    for v in variants:  # each memory option against the paper's memory
        if v.startswith("infini+") and not any(w in SWITCHES for w in v.split("+")) and "infini" in by:
            ratios[f"time_{v}_over_infini"] = by[v]["step_s"] / by["infini"]["step_s"]
    if "txl-original" in by:
        for v in variants:
            if v != "txl-original":
                txl = by["txl-original"]["tokens_per_s"]
                ratios[f"tokens_per_s_{v}_over_txl"] = by[v]["tokens_per_s"] / txl
    for v in variants:
        for switch in ("+compile", "+fastdrop"):
            base = v[: -len(switch)]
            if v.endswith(switch) and base in by:
                ratios[f"time_{v}_over_{base}"] = by[v]["step_s"] / by[base]["step_s"]

    profiles = {}
    if args.profile:
        for v, r in runners.items():
            profiles[v] = profile_top(r, device, args.profile)
            print(f"\nprofile of {v} (2 steps, top {args.profile} by self time):")
            for e in profiles[v]:
                print(f"  {e['share'] * 100:5.1f}%  {e['self_ms_per_step']:8.1f} ms/step  "
                      f"{e['calls_per_step']:6.0f} calls  {e['op']}")
    del runners
    gc.collect()
    if not args.no_memory:
        for row in rows:
            peak = peak_memory(args, row["variant"])
            row["peak_MiB"] = None if peak is None else peak / 2**20

    head = ["variant", "tokens/s", "step ms (round min-max)", "GFLOP/step", "MFU", "peak MiB"]
    lines = [head]
    for row in rows:
        peak = row.get("peak_MiB")
        lines.append([
            row["variant"], f"{row['tokens_per_s']:,.0f}",
            f"{row['step_s'] * 1e3:.0f} "
            f"({row['step_s_round_min'] * 1e3:.0f}-{row['step_s_round_max'] * 1e3:.0f})",
            f"{row['train_flops_per_step'] / 1e9:.2f}", f"{row['mfu'] * 100:.1f}%",
            "-" if peak is None else f"{peak:.0f}",
        ])
    print(f"\nmatmul ceiling {ceiling / 1e9:.1f} GFLOP/s ({dtype}, median of {args.rounds} rounds; "
          f"round min-max {min(ceilings) / 1e9:.1f}-{max(ceilings) / 1e9:.1f}); "
          f"{args.rounds} rounds x {args.steps} steps per variant, medians, {args.clock} clock")
    print_table(lines)
    for k, val in ratios.items():
        print(f"{k}: {val:.3f}")

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "commit": git_commit(),
        "machine": {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "config": cfg.to_dict(),
        "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup, "clock": args.clock,
        "matmul_ceiling_flops": ceiling, "matmul_ceiling_rounds": ceilings, "ceiling_shapes": shapes,
        "rows": rows, "ratios": ratios, "step_times_s": times, "profiles": profiles,
    }
    print(f"wrote {write_json(args.out, result)}")
    if args.results:
        envelope = ("command", "date_utc", "commit", "machine", "config")  # the record's own fields
        rec = record("bench_model", {k: v for k, v in result.items() if k not in envelope},
                     config=cfg.to_dict(), wall_s=time.time() - start, device=device)
        print(f"wrote {write_result(args.results, rec)}")


if __name__ == "__main__":
    main()
