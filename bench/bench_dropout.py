"""Dropout on the CPU: what a mask costs, and ReLU + dropout forward and backward.

Random-number generators against a multiplication, per ``--numel`` float32 elements, and the FFN's
``drop(relu(x))`` with ``torch.nn.functional.dropout`` against ``infiniattention.dropout.fast_dropout``
and a one-expression ``relu(x) * keep`` with the fast mask. Variants interleaved over ``--rounds``;
medians.

    python bench/bench_dropout.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import torch
    import torch.nn.functional as F
    from common import git_commit, print_table, write_json

    from infiniattention.dropout import fast_dropout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numel", type=int, default=1 << 20)
    ap.add_argument("--p", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_dropout.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.get_num_threads() != 1:
        raise SystemExit("error: --clock cpu measures one thread: use it with --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    n, p = args.numel, args.p
    x = torch.randn(n)
    xg = torch.randn(n, requires_grad=True)
    g = torch.randn(n)

    def fwd_bwd(f):
        def run():
            xg.grad = None
            f(xg).backward(g)
        return run

    variants = {
        "mul (reference)": lambda: x * x,
        "F.dropout": lambda: F.dropout(x, p, True),
        "bernoulli_": lambda: torch.empty_like(x).bernoulli_(1 - p),
        "rand_like < p": lambda: torch.rand_like(x) >= p,
        "random_ int64 (n/3 words)": lambda: torch.empty(-(-n // 3), dtype=torch.int64).random_(),
        "fast_dropout": lambda: fast_dropout(x, p),
        "fwd+bwd relu, F.dropout": fwd_bwd(lambda t: F.dropout(F.relu(t), p, True)),
        "fwd+bwd relu, fast_dropout": fwd_bwd(lambda t: fast_dropout(F.relu(t), p)),
        "fwd+bwd relu only": fwd_bwd(F.relu),
    }
    times = {k: [] for k in variants}
    for f in variants.values():
        f()
    for _ in range(args.rounds):
        for k, f in variants.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["mul (reference)"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {n:,} float32 elements, p={p}, "
          f"{args.rounds} interleaved rounds, medians, {args.clock} clock")
    rows = [[k, f"{v * 1e3:.2f}", f"{v / base:.0f}"] for k, v in med.items()]
    print_table([["variant", "ms", "x mul"], *rows])
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": git_commit(),
              "threads": torch.get_num_threads(), "numel": n, "p": p, "clock": args.clock,
              "median_s": med, "times_s": times}
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
