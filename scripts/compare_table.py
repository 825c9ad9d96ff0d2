"""The Markdown table of scripts/compare_memory.sh, from the runs it made; and its run plan.

    python scripts/compare_table.py runs/compare [--rows infini,xl,none] [--command "bash ..."] [--json F]
    python scripts/compare_table.py --record runs/compare/infini/seed-1111 --results FILE
    python scripts/compare_table.py --plan infini,infini+gate,none --seeds 1,2 --config C -- [--set k=v ...]

Table: one row per memory row (those with finished runs): parameters, state bytes per lane at the end
of the test stream, training tokens/s (median of the logged windows of every seed), and over the seeds
the mean and the range (max - min) of the test bpc (whole split, memory carried), of the bpc with the
memory reset at every segment (K = 1), and of their difference, the memory's gain; then each row's
difference to `none`, seed by seed. Reads OUT/ROW/seed-SEED: the results record test.json that
--record wrote there (a results folder, e.g. results/compare), else the run itself (its metrics.jsonl,
best.pt and context_curve.json); prints the table and writes compare.json (--json; default: into OUT
when OUT holds runs, none for a results folder).

--record measures one finished run (what the table shows of it) and writes it as a results record
(kind "compare"). --plan prints one line per run (row, seed, the row's --set arguments), and refuses
an unknown row. `render_full`, `render_summary` and `render_curve` are the tables that
scripts/results.py renders into README.md and docs/ from results/compare.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import torch

    from infiniattention.config import memory_settings
    from infiniattention.training import results
    from infiniattention.training.checkpoint import CheckpointError
    from infiniattention.training.evaluate import load_for_inference

# Words of a row that set the training recipe rather than the memory (scripts/passkey_cpu.sh,
# scripts/compare_memory.sh; docs/passkey.md): sp, state passing in passkey training (each lane keeps its
# memory into its next instance with probability 0.99: memories of a geometric age, mean 99 lanes);
# zg, the zero-reaching write gate (a constant push on every write-gate logit above -12, weight 0.05:
# training/gate_prior.py); zg4, the same push four times as strong (0.2). Per word: its --set arguments
# in a passkey run and in a text run (None: the word has no meaning there; text training already carries
# the memory from batch to batch). A row takes at most one word per setting (not zg and zg4).
RECIPE_WORDS: dict[str, dict[str, list[str] | None]] = {
    "sp": {"passkey": ["passkey.state_passing=0.99"], "text": None},
    "zg": {"passkey": ["passkey.write_logit_penalty=0.05"], "text": ["train.write_logit_penalty=0.05"]},
    "zg4": {"passkey": ["passkey.write_logit_penalty=0.2"], "text": ["train.write_logit_penalty=0.2"]},
}


def row_sets(row: str, segment_len: int, passkey: bool = False) -> list[str]:
    """The --set arguments of a row: infini, xl, none, or infini+OPTION+... (a memory label), followed
    by recipe words (``RECIPE_WORDS``), e.g. infini+gate+sp+zg (passkey) or infini+gate+zg (text)."""
    task = "passkey" if passkey else "text"
    words = row.split("+")
    recipe = []
    for w in reversed(words):
        if w not in RECIPE_WORDS:
            break
        recipe.insert(0, w)
    if len(set(recipe)) != len(recipe) or any(w in RECIPE_WORDS for w in words[:len(words) - len(recipe)]):
        raise ValueError(f"unknown row {row!r}: recipe words ({', '.join(RECIPE_WORDS)}) come once each, "
                         "after the memory's options")
    keys = [s.split("=")[0] for w in recipe for s in RECIPE_WORDS[w]["passkey"]]
    if len(set(keys)) != len(keys):
        raise ValueError(f"row {row!r}: {' and '.join(recipe)} set the same thing; choose one")
    for w in recipe:
        if RECIPE_WORDS[w][task] is None:
            raise ValueError(f"row {row!r}: {w} is a passkey recipe word (text training already carries "
                             "the memory from batch to batch)")
    try:
        settings = memory_settings("+".join(words[:len(words) - len(recipe)]))
    except ValueError as err:
        hint = f"; rows may end in {', '.join(RECIPE_WORDS)}"
        raise ValueError(str(err).replace("unknown memory", "unknown row") + hint) from None
    sets = [f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in settings.items()]
    sets += [s for w in recipe for s in RECIPE_WORDS[w][task]]
    if settings["memory"] == "xl":
        sets.append(f"model.mem_len={segment_len}")
    return sets


def plan(rows: str, seeds: str, config: str, overrides: list[str]) -> list[str]:
    """Tab-separated (row, seed, --set arguments) of every run, rows outer, seeds inner. ``config``: a
    train.py config, or a passkey one (with a ``passkey`` section)."""
    from infiniattention.commands.passkey import load_passkey_config
    from infiniattention.training.config import read_config_file

    cfg, _ = load_passkey_config(config, overrides)
    passkey = "passkey" in read_config_file(config, extra_sections=("passkey",))
    names = [r.strip() for r in rows.split(",") if r.strip()]
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()] or [cfg.train.seed]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if not names:
        raise ValueError("--rows is empty")
    lines = []
    for name in names:
        sets = " ".join(f"--set {s}" for s in row_sets(name, cfg.model.segment_len, passkey=passkey))
        lines += [f"{name}\t{seed}\t{sets}" for seed in seed_list]
    return lines


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
    """What the table shows of one finished run (OUT/ROW/seed-SEED)."""
    return measure(run)[0]


def measure(run: Path) -> tuple[dict, dict | None]:
    """`row` of one run, and the resolved config of its best.pt."""
    model, _, cfg, ckpt = load_for_inference(str(run / "best.pt"))
    curve = json.loads((run / "context_curve.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in records if r["kind"] == "train" and r.get("tokens_per_s")]
    lane_tokens = curve["tokens"] // curve["batch_size"]
    full = curve["curve"][-1]["bpc"]
    k1 = curve["curve"][0]["bpc"]
    return {
        "memory": cfg.model.memory_label(), "seed": cfg.train.seed, "run": str(run),
        "step": int(ckpt["step"]),
        "tokens_trained": int(ckpt.get("tokens_seen", 0)) or None,
        "parameters": model.num_parameters(),
        "state_bytes_per_lane": state_bytes_at_end(model, lane_tokens, curve["tgt_len"]),
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "test_bpc": full, "bpc_k1": k1, "memory_gain": k1 - full, "test_tokens": curve["tokens"],
        "segment_len": cfg.model.segment_len,
        "mem_len": cfg.model.mem_len if cfg.model.memory == "xl" else None,
    }, ckpt.get("config")


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1], timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def f4(x: float) -> str:
    """Four decimals, with no "-0.0000" for a difference that is zero up to rounding."""
    return f"{round(x, 4) + 0.0:.4f}"


def spread(values: list[float]) -> str:
    """The mean and, over several seeds, the range (max - min)."""
    mean = statistics.fmean(values)
    return f4(mean) if len(values) == 1 else f"{f4(mean)} ({f4(max(values) - min(values))})"


def load_runs(out: Path, names: list[str]) -> dict[str, list[dict]]:
    """Row name -> the rows of its seeds (seed order), from records (OUT/ROW/seed-S/test.json) or runs."""
    runs = {}
    for name in names:
        folders = sorted((p for p in (out / name).glob("seed-*") if p.name[5:].isdigit()),
                         key=lambda p: int(p.name[5:]))
        rows = []
        for folder in folders:
            if (folder / "test.json").is_file():
                rows.append(results.read_result(folder / "test.json")["result"])
            elif (folder / "context_curve.json").is_file() and (folder / "best.pt").is_file():
                rows.append(row(folder))
        if rows:
            runs[name] = rows
    return runs


def label(name: str, r0: dict) -> str:
    return f"`{name}`" + (f" (mem_len {r0['mem_len']})" if r0.get("mem_len") else "")


def versus_none(runs: dict[str, list[dict]]) -> list[tuple[str, list[float]]]:
    """(row, test bpc of `none` minus the row's, seed by seed) for every row with seeds that none has."""
    if "none" not in runs:
        return []
    base = {r["seed"]: r["test_bpc"] for r in runs["none"]}
    out = []
    for name, rs in runs.items():
        diffs = [base[r["seed"]] - r["test_bpc"] for r in rs if r["seed"] in base]
        if name != "none" and diffs:
            out.append((name, diffs))
    return out


def render_full(runs: dict[str, list[dict]]) -> str:
    """The table of docs/results.md (every column) and each row's gain over `none`, seed by seed."""
    lines = [
        "| memory | seeds | parameters | state bytes per lane (end of stream) | training tokens/s | "
        "test bpc | bpc at K = 1 | memory gain (K = 1 - full) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in runs.items():
        r0 = rs[0]
        speeds = [r["tokens_per_s"] for r in rs if r["tokens_per_s"]]
        speed = f"{statistics.median(speeds) / 1000:.1f}K" if speeds else "n/a"
        lines.append(f"| {label(name, r0)} | {len(rs)} | {r0['parameters']:,} | "
                     f"{r0['state_bytes_per_lane']:,} | {speed} | {spread([r['test_bpc'] for r in rs])} | "
                     f"{spread([r['bpc_k1'] for r in rs])} | {spread([r['memory_gain'] for r in rs])} |")
    gains = versus_none(runs)
    if gains:
        lines += ["", "Test bpc gained over `none` with the same seed (positive: better than none):", ""]
        lines += [f"- `{name}`: mean {statistics.fmean(d):+.4f}, per seed "
                  + ", ".join(f"{x:+.4f}" for x in d) for name, d in gains]
    return "\n".join(lines) + "\n"


def render_summary(runs: dict[str, list[dict]]) -> str:
    """The README's table: test bpc over the seeds, what the memory is worth, the gain over `none`."""
    gains = dict(versus_none(runs))
    lines = ["| memory | seeds | test bpc, mean (range) | memory worth | vs `none`, per seed (+: better) |",
             "|---|---:|---:|---:|---|"]
    for name, rs in runs.items():
        worth = statistics.fmean(r["memory_gain"] for r in rs)
        vs = ", ".join(f"{x:+.4f}" for x in gains.get(name, []))
        lines.append(f"| {label(name, rs[0])} | {len(rs)} | {spread([r['test_bpc'] for r in rs])} | "
                     f"{f4(worth)} | {vs} |")
    return "\n".join(lines) + "\n"


def render_curve(curves: dict[str, dict], ks: list[int] | None = None) -> str:
    """Row name -> context_curve.py result: the metric with the memory reset every K segments, one row
    per memory; `ks` chooses the columns (default: every K of the first curve), then the full stream."""
    first = next(iter(curves.values()))
    metric = first["metric"]
    ks = ks or [p["K"] for p in first["curve"] if p["K"] is not None]
    lines = ["| memory reset every K segments | " + " | ".join(map(str, ks)) + " | never |",
             "|---|" + "---:|" * (len(ks) + 1)]
    for name, res in curves.items():
        by_k = {p["K"]: p[metric] for p in res["curve"]}
        cells = [f"{by_k[k]:.4f}" if k in by_k else "-" for k in [*ks, None]]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(out: Path, names: list[str], command: str) -> tuple[str, list[dict]]:
    runs = load_runs(out, names)
    if not runs:
        raise FileNotFoundError(f"no finished run in {out} (expected {', '.join(names)} sub-folders)")
    first = next(iter(runs.values()))[0]
    seeds = sorted({r["seed"] for rs in runs.values() for r in rs})
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    caption = (f"`{command}` ({date}, commit {commit()}): {first['step']:,} steps each, the same config "
               f"and tokens, seeds {', '.join(map(str, seeds))}; test split of the bundled enwik8 sample "
               f"({first['test_tokens']:,} tokens, memory carried across the whole split in each lane; "
               "K = 1: memory reset at every segment). Mean over the seeds, the range (max - min) in "
               "brackets.")
    return caption + "\n\n" + render_full(runs), [r for rs in runs.values() for r in rs]


def write_record(run: Path, path: str) -> Path:
    """--record: one run's row as a results record (kind "compare")."""
    start = time.time()
    result, config = measure(run)
    return results.write_result(path, results.record("compare", result, config=config,
                                                     wall_s=time.time() - start))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", help="the folder of compare_memory.sh (OUT/ROW/seed-SEED)")
    p.add_argument("--rows", default="infini,xl,none", help="rows, in table order (default: %(default)s)")
    p.add_argument("--command", default="bash scripts/compare_memory.sh",
                   help="the command, for the caption (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON here (default: OUT/compare.json "
                   "when OUT holds runs, none for a results folder)")
    p.add_argument("--record", metavar="RUN", help="write one finished run's row as a results record "
                   "(--results FILE) instead of a table")
    p.add_argument("--results", metavar="FILE", help="with --record: the record's file, e.g. "
                   "results/compare/infini/seed-1111/test.json")
    p.add_argument("--plan", metavar="ROWS", help="print the run plan of these rows instead of a table")
    p.add_argument("--seeds", default="", help="with --plan: comma-separated seeds (default: the config's)")
    p.add_argument("--config", help="with --plan: the config file")
    p.add_argument("overrides", nargs="*", help="with --plan, after --: the --set arguments of every run")
    args = p.parse_args(argv)
    try:
        if args.plan is not None:
            overrides = [o for o in args.overrides if o != "--set"]
            print("\n".join(plan(args.plan, args.seeds, args.config, overrides)))
            return 0
        if args.record is not None:
            if not args.results:
                raise ValueError("--record needs --results FILE (e.g. results/compare/ROW/seed-S/test.json)")
            print(f"wrote {write_record(Path(args.record), args.results)}")
            return 0
        if args.out is None:
            p.error("the output folder of compare_memory.sh is required")
        names = [r.strip() for r in args.rows.split(",") if r.strip()]
        text, rows = table(Path(args.out), names, args.command)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, FileNotFoundError) else 2
    print(text, end="")
    records = any(p.is_file() for name in names for p in (Path(args.out) / name).glob("seed-*/test.json"))
    json_path = args.json or (None if records else Path(args.out) / "compare.json")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
