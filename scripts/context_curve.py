"""Context curve: how much a model gains from context beyond its own segment.

    python scripts/context_curve.py --checkpoint runs/tiny/best.pt [--split test | --text FILE]
        [--batch-size B] [--tgt-len L] [--max-tokens N] [--by-index-k 16] [--out-dir DIR] [--results FILE]

For K = 1, 2, 4, 8, ... segments and the full stream, the whole split (or file) is scored with every
lane's long-term memory reset every K segments (eval.py --reset-every K): K = 1 is each segment on its
own, the full stream is the ordinary evaluation. Then the bpc by segment index after a reset
(segment 0, 1, 2, ... of the periods of `--by-index-k` segments). For `memory: none` the curve is flat
by construction; for infini and xl it shows whether the memory is used.

Writes context_curve.md, context_curve.json and (with matplotlib, `pip install -e .[plots]`)
context_curve.png to `--out-dir` (default: the checkpoint's folder); with `--results FILE`, also the
result as a results record (e.g. results/compare/infini/seed-1111/context_curve.json).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    from infiniattention.training import results
    from infiniattention.training.checkpoint import CheckpointError
    from infiniattention.training.cli import RERUN, check_out_dir, check_results_file, cli_entry, exit_with
    from infiniattention.training.distributed import select_device
    from infiniattention.training.errors import UserError
    from infiniattention.training.evaluate import evaluate, load_for_inference, load_stream
    from infiniattention.training.metrics import quality
    from infiniattention.training.plots import pyplot, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (e.g. runs/tiny/best.pt); required")
    p.add_argument("--split", choices=("train", "valid", "test"), help="a prepared split (default: test)")
    p.add_argument("--text", metavar="FILE", help="score this file instead ('-': stdin; default: none)")
    p.add_argument("--data-dir", help="root of the prepared corpora (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, help="lanes (default: the checkpoint's eval.batch_size)")
    p.add_argument("--tgt-len", type=int, help="tokens per lane per call (default: the checkpoint's)")
    p.add_argument("--max-tokens", type=int, help="score only this many targets of each pass (default: all)")
    p.add_argument("--by-index-k", type=int, default=16,
                   help="period (segments) of the by-segment-index table (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when a GPU is visible, else cpu (default: %(default)s)")
    p.add_argument("--out-dir", help="where to write the table and plot (default: the checkpoint's folder)")
    p.add_argument("--results", metavar="FILE", help="also write the curve as a results record (the numbers, "
                   "the commit, the config, the command, the machine, the wall time; default: none)")
    return p


def powers_of_two(n_segments: int) -> list[int]:
    """1, 2, 4, ... below the lane's number of segments (the full stream comes after them)."""
    ks, k = [], 1
    while k < n_segments:
        ks.append(k)
        k *= 2
    return ks


def to_markdown(res: dict) -> str:
    name = res["metric"]
    lines = [
        f"Context curve of `{res['checkpoint']}` (step {res['step']}, memory `{res['memory']}`, segment "
        f"{res['segment_len']}) on {res['label']}: {res['tokens']:,} tokens, {res['batch_size']} lane(s) of "
        f"{res['segments_per_lane']} segments.",
        "",
        f"| memory reset every K segments | {name} | gain over K = 1 |",
        "|---|---:|---:|",
    ]
    first = res["curve"][0][name]
    for row in res["curve"]:
        k = "full stream (never)" if row["K"] is None else str(row["K"])
        lines.append(f"| {k} | {row[name]:.4f} | {first - row[name]:+.4f} |")
    lines += ["", f"{name} by segment index after a reset (memory reset every {res['by_index_k']} segments):",
              "", f"| segment after reset | {name} | gain over the same segments at K = 1 | tokens |",
              "|---:|---:|---:|---:|"]
    rows = zip(res["by_index"], res["by_index_gain"], res["by_index_tokens"], strict=True)
    for i, (v, g, n) in enumerate(rows):
        lines.append(f"| {i} | {v:.4f} | {g:+.4f} | {n:,} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> bool:
    """The curve and the by-index profile as one PNG; False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    name = res["metric"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ks = [row["K"] for row in res["curve"] if row["K"] is not None]
    vals = [row[name] for row in res["curve"] if row["K"] is not None]
    full = res["curve"][-1][name]
    ax1.plot(ks, vals, "o-", label="memory reset every K segments")
    ax1.axhline(full, color="C1", ls="--", label="full stream (never reset)")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("K (segments of context)")
    ax1.set_ylabel(name)
    ax1.set_title(f"{res['memory']} memory, segment {res['segment_len']}")
    ax1.legend(fontsize=8)
    ax2.plot(range(len(res["by_index_gain"])), res["by_index_gain"], "o-")
    ax2.axhline(0.0, color="grey", lw=0.8)
    ax2.set_xlabel(f"segment index after a reset (period {res['by_index_k']})")
    ax2.set_ylabel(f"{name} gain over K = 1")
    ax2.set_title("gain by position after a reset")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


@cli_entry(on_interrupt=RERUN)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent
    check_out_dir("--out-dir", out_dir)  # before the evaluations, which can take long
    check_results_file("--results", args.results)
    start = time.time()
    try:
        if args.by_index_k < 1:
            raise ValueError(f"--by-index-k must be a positive integer, got {args.by_index_k}")
        device = select_device(args.device, 0)
        model, vocab, cfg, ckpt = load_for_inference(args.checkpoint, device)
        data, label, extra = load_stream(ckpt, cfg, split=args.split, text=args.text, data_dir=args.data_dir,
                                         checkpoint=args.checkpoint)
        batch_size = args.batch_size or cfg.eval.batch_size
        tgt_len = args.tgt_len or cfg.eval.tgt_len or cfg.data.tgt_len
        if batch_size < 1 or tgt_len < 1:
            raise ValueError(f"--batch-size and --tgt-len must be positive, got {batch_size} and {tgt_len}")
        if len(data) // batch_size < 2:
            raise ValueError(f"{label} has {len(data):,} tokens: too few for {batch_size} lane(s)")
        N = cfg.model.segment_len
        lane_targets = len(data) // batch_size - 1
        if args.max_tokens:
            lane_targets = min(lane_targets, -(-args.max_tokens // batch_size))
        n_segments = -(-lane_targets // N)
        kw = dict(batch_size=batch_size, tgt_len=tgt_len, device=device, max_tokens=args.max_tokens)
        t0 = time.time()
        curve, metric = [], None
        for k in [*powers_of_two(n_segments), None]:
            r = evaluate(model, data, reset_every=k, **kw)
            metric, value = quality(r.nll, vocab.kind)
            curve.append({"K": k, "loss": r.nll, metric: value, "tokens": r.tokens})
            print(f"K = {'full' if k is None else k:>4}: {metric} {value:.4f}", flush=True)
        by_k = min(args.by_index_k, n_segments)
        r = evaluate(model, data, reset_every=by_k, **kw)
        # The same segments without memory (K = 1), grouped the same way: the text's own difficulty at
        # each index cancels in the difference.
        alone = evaluate(model, data, reset_every=1, index_every=by_k, **kw)
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        raise UserError(str(err)) from err
    to_metric = (lambda nll: nll / math.log(2)) if metric == "bpc" else math.exp
    res = {
        "checkpoint": args.checkpoint, "step": int(ckpt["step"]), "label": label, **extra,
        "memory": cfg.model.memory, "segment_len": N, "batch_size": batch_size, "tgt_len": tgt_len,
        "tokens": curve[-1]["tokens"], "segments_per_lane": n_segments, "metric": metric, "curve": curve,
        "by_index_k": by_k, "by_index": [to_metric(v) for v in r.segment_nll],
        "by_index_tokens": r.segment_tokens,
        "by_index_gain": [to_metric(a) - to_metric(v) for a, v in zip(alone.segment_nll, r.segment_nll,
                                                                       strict=True)],
        "seconds": round(time.time() - t0, 1),
    }
    write_report(out_dir, "context_curve", to_markdown(res), res, plot)
    if args.results:
        rec = results.record("context_curve", res, config=ckpt.get("config"), wall_s=time.time() - start,
                             device=device)
        print(f"wrote {results.write_result(args.results, rec)}")
    return 0


if __name__ == "__main__":
    exit_with(main())
