"""The Markdown table of scripts/compare_memory.sh, from the runs it made.

    python scripts/compare_table.py runs/compare [--command "bash scripts/compare_memory.sh ..."]

One row per memory mode (infini, xl, none; those present): parameters, state bytes per lane at the end
of the test stream, training tokens/s (median of the logged windows), test bpc (whole split, memory
carried), bpc with the memory reset at every segment (K = 1), and the difference. Reads each run's
config.yaml, metrics.jsonl, best.pt and context_curve.json; prints the table and writes compare.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from infiniattention.training.evaluate import load_for_inference  # noqa: E402

MODES = ("infini", "xl", "none")


def state_bytes_at_end(model, n_tokens: int, tgt_len: int) -> int:
    """Bytes of one lane's state after a stream of `n_tokens` tokens (what a long-running lane holds:
    the xl cache, or the compressive memory plus the unfinished segment's keys and values)."""
    state = model.init_state(1, "cpu")
    tokens = torch.zeros(1, n_tokens, dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, n_tokens, tgt_len):
            state = model(tokens[:, start : start + tgt_len], state=state).state
    return sum(t.numel() * t.element_size() for layer in state.layers for t in layer.tensors().values())


def row(run: Path) -> dict:
    model, _, cfg, ckpt = load_for_inference(str(run / "best.pt"))
    curve = json.loads((run / "context_curve.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train" and r.get("tokens_per_s")]
    lane_tokens = curve["tokens"] // curve["batch_size"]
    full = curve["curve"][-1]["bpc"]
    k1 = curve["curve"][0]["bpc"]
    return {
        "memory": cfg.model.memory, "run": str(run), "step": int(ckpt["step"]),
        "tokens_trained": int(ckpt.get("tokens_seen", 0)) or None,
        "parameters": model.num_parameters(),
        "state_bytes_per_lane": state_bytes_at_end(model, lane_tokens, curve["tgt_len"]),
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "test_bpc": full, "bpc_k1": k1, "memory_gain": k1 - full, "test_tokens": curve["tokens"],
        "segment_len": cfg.model.segment_len,
        "mem_len": cfg.model.mem_len if cfg.model.memory == "xl" else None,
    }


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the folder of compare_memory.sh (one sub-folder per memory mode)")
    p.add_argument("--command", default="bash scripts/compare_memory.sh",
                   help="the command, for the caption (default: %(default)s)")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = [row(out / m) for m in MODES if (out / m / "context_curve.json").is_file()]
    if not rows:
        print(f"error: no finished run in {out} (expected {', '.join(MODES)} sub-folders)", file=sys.stderr)
        return 1
    r0 = rows[0]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        f"`{args.command}` ({date}, commit {commit()}): {r0['step']:,} steps each, the same config, seed "
        f"and tokens; test split of the bundled enwik8 sample ({r0['test_tokens']:,} tokens, memory carried "
        "across the whole split in each lane; K = 1: memory reset at every segment).",
        "",
        "| memory | parameters | state bytes per lane (end of stream) | training tokens/s | test bpc | "
        "bpc at K = 1 | memory gain (K = 1 - full) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = f"`{r['memory']}`" + (f" (mem_len {r['mem_len']})" if r["mem_len"] else "")
        speed = f"{r['tokens_per_s'] / 1000:.1f}K" if r["tokens_per_s"] else "n/a"
        lines.append(f"| {name} | {r['parameters']:,} | {r['state_bytes_per_lane']:,} | {speed} | "
                     f"{r['test_bpc']:.4f} | {r['bpc_k1']:.4f} | {r['memory_gain']:+.4f} |")
    by = {r["memory"]: r for r in rows}
    if {"infini", "none", "xl"} <= by.keys():
        i, n, x = by["infini"]["test_bpc"], by["none"]["test_bpc"], by["xl"]["test_bpc"]
        lines += ["", f"infini vs none: {n - i:+.4f} bpc (target >= +0.03); infini's memory gain "
                  f"{by['infini']['memory_gain']:+.4f} (target >= +0.03); infini vs xl: {x - i:+.4f} bpc "
                  "(target >= -0.02)."]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (out / "compare.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
