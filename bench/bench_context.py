"""Streaming evaluation at long context: peak memory and tokens/s against the stream's length.

The model of ``--config`` (eval mode, no grad) reads a random token stream of ``L`` tokens per lane
(``--lengths``, default 8K, 64K, 512K and 1M) in calls of ``eval.tgt_len`` tokens with its state
carried, computing the per-token NLL as evaluation does, in each memory mode. The memory state of
``infini`` and the cache of ``xl`` have a fixed size, so both numbers should be flat in ``L``.

Each (mode, length) runs in a fresh process, in interleaved order (every mode at one length, then
the next length). After ``--warmup-calls`` untimed calls (default 4: with fewer, the 8K pass
times its first calls, which are slower while thread pools and the allocator settle, and its rate
moved by up to 1.5x between runs), the peak-memory counter is reset (CUDA: the allocator's
peak; CPU: the RSS high-water mark through ``/proc/self/clear_refs``, with
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors leave the RSS at once); the reported peak is
above the memory in use then (model, state, warm caches). tokens/s: lanes x call length / the
median time of a call (robust to other jobs on a shared machine) and, as a check, the whole pass.

    python bench/bench_context.py --config bench/small.yaml
    python bench/bench_context.py --config bench/small.yaml --lengths 8192,65536 --modes infini
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
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

    from infiniattention import InfiniTransformerLM
    from infiniattention.training.config import ConfigError, RunConfig, load_config
    from infiniattention.training.evaluate import precision_autocast

MODES = ("infini", "xl", "none")
TARGET_MEMORY_RATIO = 1.1
TARGET_SPEED_DROP = 0.10


def stream(cfg: RunConfig, mode: str, total: int, device: torch.device, seed: int, clock,
           warmup_calls: int) -> dict:
    """One streaming pass of ``total`` tokens per lane after ``warmup_calls`` untimed calls; returns
    timings and the peak memory."""
    torch.manual_seed(seed)
    mcfg = replace(cfg.model, memory=mode, pos="xl" if mode == "xl" else cfg.model.pos)
    model = InfiniTransformerLM(mcfg).to(device).eval()
    B, n = cfg.eval.batch_size, cfg.eval.tgt_len
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    nll_sum, call_s = 0.0, []
    with torch.no_grad(), precision_autocast(device, cfg.train.precision):
        state = model.init_state(B, device)
        for _ in range(warmup_calls):  # untimed: thread pools, allocator and caches settle
            tokens = torch.randint(0, mcfg.vocab_size, (B, n + 1), generator=gen, device=device)
            state = model(tokens[:, :-1], targets=tokens[:, 1:], state=state).state
        base = reset_peak(device)
        t_start = clock()
        done = 0
        while done < total:
            m = min(n, total - done)
            tokens = torch.randint(0, mcfg.vocab_size, (B, m + 1), generator=gen, device=device)
            sync(device)
            t0 = clock()
            out = model(tokens[:, :-1], targets=tokens[:, 1:], state=state)
            nll_sum += float(out.nll.sum())  # as evaluation does: a host sync per call
            state = out.state
            call_s.append((clock() - t0, m))
            del out, tokens
            done += m
        sync(device)
        elapsed = clock() - t_start
    peak = peak_since(device, base)
    full = [s for s, m in call_s if m == n] or [s for s, _ in call_s]
    return {"mode": mode, "tokens": total, "lanes": B, "call_len": n, "calls": len(call_s),
            "tokens_per_s": B * n / statistics.median(full), "tokens_per_s_whole_pass": B * total / elapsed,
            "peak_bytes": peak, "mean_nll": nll_sum / (B * total), "seen": state.seen}


def run_worker(args: argparse.Namespace, mode: str, total: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", f"{mode},{total}", *sys.argv[1:]]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"error: the {mode} pass over {total} tokens failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="YAML config (model, eval.batch_size, eval.tgt_len)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--modes", default="infini,xl,none")
    ap.add_argument("--lengths", default="8192,65536,524288,1048576", help="tokens per lane")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="cpu: time.thread_time of the one thread (needs --threads 1), which leaves out the "
                         "time spent waiting for a core on a shared machine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-calls", type=int, default=4,
                    help="untimed calls before the timed stream (its state carries on from them)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_context.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = load_config(args.config, args.set)
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    dev = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(dev)
    if args.clock == "cpu" and (dev == "cuda" or torch.get_num_threads() != 1):
        raise SystemExit("error: --clock cpu measures one CPU thread: use it with --threads 1 on the CPU")
    if args.warmup_calls < 0:
        raise SystemExit(f"error: --warmup-calls must be >= 0, got {args.warmup_calls}")
    if args.worker:
        mode, total = args.worker.split(",")
        clock = time.thread_time if args.clock == "cpu" else time.perf_counter
        print(json.dumps(stream(cfg, mode, int(total), device, args.seed, clock, args.warmup_calls)))
        return
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"error: unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
    try:
        lengths = sorted(int(s) for s in args.lengths.split(",") if s)
    except ValueError:
        raise SystemExit(f"error: --lengths must be comma-separated integers, got {args.lengths!r}") from None
    m = cfg.model
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"precision={cfg.train.precision} | {m.n_layer} x d_model {m.d_model}, {m.n_head} x {m.d_head}, "
          f"segment {m.segment_len}, mem_len {m.mem_len} | {cfg.eval.batch_size} lanes, calls of "
          f"{cfg.eval.tgt_len} tokens | clock {args.clock}", flush=True)
    rows = []
    for L in lengths:
        for mode in modes:
            r = run_worker(args, mode, L)
            rows.append(r)
            peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f} MiB"
            print(f"  {mode} {L:,} tokens: {r['tokens_per_s']:,.0f} tok/s, peak {peak}", flush=True)

    summary = {}
    table = [["mode"] + [f"{L:,} tok/s" for L in lengths] + [f"{L:,} peak MiB" for L in lengths]
             + ["peak last/first", "tok/s last/first"]]
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        first, last = mine[0], mine[-1]
        peak_ratio = (last["peak_bytes"] / first["peak_bytes"]
                      if first["peak_bytes"] and last["peak_bytes"] is not None else None)
        speed_ratio = last["tokens_per_s"] / first["tokens_per_s"]
        summary[mode] = {"peak_ratio": peak_ratio, "tokens_per_s_ratio": speed_ratio,
                         "memory_met": peak_ratio is not None and peak_ratio <= TARGET_MEMORY_RATIO,
                         "speed_met": speed_ratio >= 1 - TARGET_SPEED_DROP}
        table.append([mode] + [f"{r['tokens_per_s']:,.0f}" for r in mine]
                     + ["n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.1f}" for r in mine]
                     + ["n/a" if peak_ratio is None else f"{peak_ratio:.2f}x", f"{speed_ratio:.2f}x"])
    print()
    print_table(table)
    print(f"targets: peak at {lengths[-1]:,} within {TARGET_MEMORY_RATIO}x of {lengths[0]:,}; tokens/s "
          f"within {TARGET_SPEED_DROP:.0%}. Peak: above the memory in use after "
          f"{args.warmup_calls} warm-up call(s).")
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "commit": git_commit(),
        "machine": {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "clock": args.clock, "warmup_calls": args.warmup_calls,
        "config": cfg.to_dict(), "rows": rows, "summary": summary,
    }
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
