"""The tables (and heat-maps) of scripts/passkey_cpu.sh, over its rows and seeds.

    python scripts/passkey_table.py results/passkey [--rows infini,infini+gate,xl,none] [--figures docs]
                                    [--tables-dir runs/passkey]
    python scripts/passkey_table.py runs/passkey ...

Reads OUT/ROW/seed-SEED/*.json, the results records of passkey_cpu.sh (kind passkey: what
`scripts/passkey.py eval` writes; kind memory_probe: `scripts/memory_probe.py`), or the evaluation
folders of its runs (OUT/ROW/seed-SEED/eval/*/passkey.json and memory_probe.json); the file names do
not matter: each evaluation says its haystack and lengths. Prints, per haystack (the filler; text of
the test split to 32K and of the training split at 128K and 1M; text of the valid split, on which
options are chosen), one table per row: key accuracy per length and depth, the lowest over the seeds (a
claim must hold for every seed), with the seeds' mean in brackets and the number of keys per cell. Then
the memory probe: the trace of the key in the layer that carries it most, by length (mean over the
seeds), and its drop from the shortest to the longest length. Writes passkey_tables.md and
passkey_tables.json to OUT (or --tables-dir); with --figures DIR and matplotlib, one heat-map per row
and haystack (DIR/passkey_ROW_HAYSTACK.png, lowest accuracy over the seeds) and the probe's traces
(DIR/memory_probe.png).

`render_accuracy`, `render_summary`, `render_probe` and `render_screen` are the tables that
scripts/results.py renders into README.md and docs/ from results/passkey and results/passkey-screen.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    from infiniattention.training.plots import pyplot
    from infiniattention.training.results import read_result

# The haystacks of the tables: the filler; held-out text (the test split, and the training split at the
# lengths the test split is too short for); the valid split's text, on which options are chosen.
HAYSTACKS = ("filler", "text", "text-valid")
LABELS = {"filler": "filler", "text": "text", "text-valid": "text (valid)"}
TITLES = {
    "filler": "the filler sentences (the paper's test)",
    "text": "real text: the test split to 32K, the training split at 128K and 1M (wrapping at 1M)",
    "text-valid": "real text of the valid split (where options are chosen)",
}


def fmt_len(n: int) -> str:
    if n % 2**20 == 0:
        return f"{n // 2**20}M"
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def haystack_of(result: dict) -> tuple[str, str | None]:
    """(table haystack, text split) of an evaluation: ("filler", None), ("text", "test"), ..."""
    hay = result.get("haystack", "filler")
    if hay == "filler":
        return "filler", None
    split = hay.rsplit("/", 1)[-1]
    return ("text-valid" if split == "valid" else "text"), split


def evaluations(folder: Path) -> list[tuple[str, dict]]:
    """(kind, result) of every evaluation of one row and seed: its records (FOLDER/*.json), or the
    evaluation folders of a run of passkey_cpu.sh (FOLDER/eval/*/passkey.json, memory_probe.json)."""
    found = []
    for path in sorted(folder.glob("*.json")):
        rec = read_result(path)
        found.append((rec["kind"], rec["result"]))
    for path in sorted(folder.glob("eval/*/*.json")):
        kind = {"passkey.json": "passkey", "memory_probe.json": "memory_probe"}.get(path.name)
        if kind:
            found.append((kind, json.loads(path.read_text())))
    return found


def seed_folders(folder: Path) -> list[tuple[int, Path]]:
    """(seed, folder) of ROW/seed-SEED, in seed order."""
    runs = [(int(p.name[5:]), p) for p in folder.glob("seed-*") if p.name[5:].isdigit()]
    return sorted(runs)


def order_rows(names: list[str]) -> list[str]:
    """The tables' row order: the paper's memory and its variants (fewest options first), xl, none."""
    rank = {"infini": 0, "xl": 1, "none": 2}
    return sorted(names, key=lambda n: (rank.get(n.split("+")[0], 3), n.count("+"), n))


def collect(out: Path, rows: list[str]) -> dict:
    """row -> {"seeds": [...], haystack -> length -> one cell per seed that has it ({"seed", "depths",
    "accuracy", "keys", "wraps", "split"}), "probe": haystack -> one probe result per seed (+ "seed")}.
    Rows without any evaluation are left out; where two evaluations of one seed give the same length
    and haystack, the first (by file name) counts."""
    data = {}
    for row in rows:
        entry: dict = {"seeds": [], **{hay: {} for hay in HAYSTACKS}, "probe": {}}
        for seed, folder in seed_folders(out / row):
            found = evaluations(folder)
            if not found:
                continue
            entry["seeds"].append(seed)
            for kind, res in found:
                hay, split = haystack_of(res)
                if kind == "memory_probe":
                    entry["probe"].setdefault("filler" if hay == "filler" else "text", []).append(
                        {**res, "seed": seed})
                    continue
                if kind != "passkey":
                    continue
                for r in res["rows"]:
                    cells = entry[hay].setdefault(r["length"], [])
                    if any(c["seed"] == seed for c in cells):
                        continue
                    cells.append({"seed": seed, "depths": res["depths"], "keys": res["instances"],
                                  "accuracy": [c["accuracy"] for c in r["cells"]],
                                  "wraps": r.get("haystack_wraps", False), "split": split})
        for hay in HAYSTACKS:
            entry[hay] = dict(sorted(entry[hay].items()))
        if entry["seeds"]:
            data[row] = entry
    return data


def table(row: str, hay: str, grids: dict[int, list[dict]]) -> list[str]:
    depths = next(iter(grids.values()))[0]["depths"]
    lines = [f"`{row}`, {TITLES[hay]}:", "",
             "| length | keys/cell | " + " | ".join(f"depth {d:g}" for d in depths) + " | mean |",
             "|---|---:|" + "---:|" * (len(depths) + 1)]
    for n, runs in grids.items():
        cells = []
        for j in range(len(depths)):
            accs = [r["accuracy"][j] for r in runs]
            cells.append(f"{min(accs):.2f}" + (f" ({statistics.fmean(accs):.2f})" if len(accs) > 1 else ""))
        mean = statistics.fmean(a for r in runs for a in r["accuracy"])
        wrap = " (text repeats)" if any(r["wraps"] for r in runs) else ""
        lines.append(f"| {fmt_len(n)}{wrap} | {runs[0]['keys']} | " + " | ".join(cells) + f" | {mean:.2f} |")
    return lines + [""]


def probe_summary(row: str, probes: list[dict], kind: str) -> tuple[list[str], dict]:
    """The layer with the largest trace at the shortest length; its trace by length, mean over seeds."""
    n_layers = len(probes[0]["rows"][0]["layers"])
    lengths = [r["length"] for r in probes[0]["rows"]]
    trace = [[statistics.fmean(p["rows"][i]["layers"][layer]["trace"] for p in probes)
              for i in range(len(lengths))] for layer in range(n_layers)]
    best = max(range(n_layers), key=lambda layer: trace[layer][0])
    gates = [p["rows"][0]["gate"].get(str(best)) for p in probes]
    drop = trace[best][0] / trace[best][-1] if trace[best][-1] > 0 else float("inf")
    summary = {"layer": best, "lengths": lengths, "trace": trace[best], "drop": drop,
               "keys": sorted({p["keys"] for p in probes})}
    cells = " | ".join(f"{t:.3g}" for t in trace[best])
    gate = f"{statistics.fmean(gates):.3g}" if all(g is not None for g in gates) else "-"
    line = f"| `{row}` | {kind} | {best} | {cells} | {summary['drop']:.2f}x | {gate} |"
    return [line], {**summary, "lengths_label": [fmt_len(n) for n in lengths]}


# ------------------------------------------------------------------------------------------------
# The rendered tables of README.md and docs/ (scripts/results.py): deterministic functions of `collect`.


def _stats(cell: dict) -> tuple[float, float]:
    """(mean over the depths, lowest depth) of one seed's cell."""
    return statistics.fmean(cell["accuracy"]), min(cell["accuracy"])


def accuracy_cell(cells: list[dict], n_seeds: int) -> str:
    """Mean over the depths (lowest depth); over several seeds the seed with the lowest mean, then the
    mean over the seeds; "[k of n seeds]" where only some seeds have this length."""
    stats = [_stats(c) for c in cells]
    low = min(stats, key=lambda st: st[0])
    text = f"{low[0]:.2f} ({low[1]:.2f})"
    if len(stats) > 1:
        text += (f", mean {statistics.fmean(st[0] for st in stats):.2f} "
                 f"({statistics.fmean(st[1] for st in stats):.2f})")
    if len(stats) < n_seeds:
        text += f" [{len(stats)} of {n_seeds} seeds]"
    return text


def _lengths(data: dict, hays: list[str], only: list[int] | None = None) -> list[int]:
    found = sorted({n for entry in data.values() for hay in hays for n in entry[hay]})
    return [n for n in found if only is None or n in only]


def _keys_line(data: dict, hays: list[str], lengths: list[int]) -> str:
    parts = []
    for n in lengths:
        keys = sorted({c["keys"] for e in data.values() for hay in hays for c in e[hay].get(n, [])})
        parts.append(f"{fmt_len(n)} {keys[0]}" if len(keys) == 1 else f"{fmt_len(n)} {keys[0]}-{keys[-1]}")
    return ", ".join(parts)


def _text_line(data: dict) -> str:
    """Which split the text haystack comes from at which length, and where it repeats."""
    splits: dict[str, set[int]] = {}
    wraps = set()
    for e in data.values():
        for n, cells in e["text"].items():
            for c in cells:
                splits.setdefault(c["split"], set()).add(n)
                if c["wraps"]:
                    wraps.add(n)
    if not splits:
        return ""
    parts = [f"the {split} split at {', '.join(fmt_len(n) for n in sorted(ns))}" for split, ns in
             sorted(splits.items(), key=lambda kv: min(kv[1]))]
    repeat = f" (repeating at {', '.join(fmt_len(n) for n in sorted(wraps))})" if wraps else ""
    return f" Text: {'; '.join(parts)}{repeat}."


def render_accuracy(data: dict, hays: list[str] | None = None, lengths: list[int] | None = None) -> str:
    """Key accuracy by length, one line per row and haystack (docs/passkey.md)."""
    hays = [h for h in (hays or list(HAYSTACKS)) if any(e[h] for e in data.values())]
    cols = _lengths(data, hays, lengths)
    depths = sorted({d for e in data.values() for h in hays for cs in e[h].values() for c in cs
                     for d in c["depths"]})
    lines = [f"Key accuracy (all five digits), mean over the depths {', '.join(f'{d:g}' for d in depths)} "
             "and, in brackets, the lowest depth; with several seeds, the seed with the lowest mean, then "
             f"the mean over the seeds. Keys per cell: {_keys_line(data, hays, cols)}.{_text_line(data)}",
             "", "| memory | haystack | seeds | " + " | ".join(fmt_len(n) for n in cols) + " |",
             "|---|---|---|" + "---|" * len(cols)]
    for row, e in data.items():
        for hay in hays:
            if not e[hay]:
                continue
            seeds = sorted({c["seed"] for cs in e[hay].values() for c in cs})
            cells = [accuracy_cell(e[hay][n], len(seeds)) if n in e[hay] else "-" for n in cols]
            lines.append(f"| `{row}` | {LABELS[hay]} | {', '.join(map(str, seeds))} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines) + "\n"


def render_summary(data: dict, hays: list[str] | None = None, lengths: list[int] | None = None) -> str:
    """One line per row and seed, each haystack's lengths in one column (the README's table)."""
    hays = [h for h in (hays or ["filler", "text"]) if any(e[h] for e in data.values())]
    cols = {h: _lengths(data, [h], lengths) for h in hays}
    lines = ["| memory | seed | " + " | ".join(f"{LABELS[h]}: " + " / ".join(fmt_len(n) for n in cols[h])
                                               for h in hays) + " |", "|---|---|" + "---|" * len(hays)]
    for row, e in data.items():
        for seed in e["seeds"]:
            groups = []
            for h in hays:
                vals = []
                for n in cols[h]:
                    mine = [c for c in e[h].get(n, []) if c["seed"] == seed]
                    if not mine:
                        vals.append("-")
                        continue
                    mean, low = _stats(mine[0])
                    vals.append(f"{mean:.2f}" if low == mean else f"{mean:.2f} ({low:.2f})")
                groups.append(" / ".join(vals))
            if any(v.strip("-/ ") for v in groups):
                lines.append(f"| `{row}` | {seed} | " + " | ".join(groups) + " |")
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    """Three digits below 10^4, else the exponent: 973, 2.4, 2.1e4, 1.1e7."""
    if abs(x) < 1e4:
        return f"{x:.3g}"
    mantissa, exp = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exp)}"


def _gate(res_rows: list[dict], name: str, layer: int) -> float | None:
    vals = [r.get(name, {}).get(str(layer)) for r in res_rows]
    return statistics.fmean(vals) if vals and all(v is not None for v in vals) else None


def render_probe(data: dict, hay: str = "filler", layers: list[int] | None = None) -> str:
    """The probe per row, seed and layer: the key's trace by length, its drop, the normaliser, the
    write gate over the haystack and the key sentence (docs/passkey.md)."""
    probes = [(row, p) for row, e in data.items() for p in e["probe"].get(hay, [])]
    if not probes:
        raise ValueError(f"no memory probe in the haystack {hay}")
    cols = sorted({r["length"] for _, p in probes for r in p["rows"]})
    keys = sorted({p["keys"] for _, p in probes})
    depths = sorted({p["depth"] for _, p in probes})
    lines = [f"Memory probe (scripts/memory_probe.py), haystack {hay}, key at depth "
             f"{', '.join(f'{d:g}' for d in depths)}, {'/'.join(map(str, keys))} keys per length: the trace "
             "`|A_mem(key) - A_mem(other key)| / |A_mem(key)|` at the last question token by length; its "
             "drop from the shortest to the longest length; the read's normaliser `phi(Q) . z` there; the "
             "mean write gate over the haystack and over the key sentence (mean over the lengths) and their "
             "ratio.", "",
             "| memory | seed | layer | trace at " + " | ".join(fmt_len(n) for n in cols)
             + " | drop | `phi(Q) . z` | gate@hay | gate@key | key/hay |",
             "|---|---|---:|" + "---:|" * (len(cols) + 1) + "---|---:|---:|---:|"]
    for row, p in probes:
        by_len = {r["length"]: r for r in p["rows"]}
        n_layers = len(p["rows"][0]["layers"])
        for layer in layers if layers is not None else range(n_layers):
            if layer >= n_layers:
                continue
            trace = [by_len[n]["layers"][layer]["trace"] if n in by_len else None for n in cols]
            first, last = p["rows"][0]["layers"][layer], p["rows"][-1]["layers"][layer]
            drop = f"{first['trace'] / last['trace']:.1f}x" if last["trace"] > 0 else "inf"
            gates = [_gate(p["rows"], name, layer) for name in ("gate_haystack", "gate_key", "gate_ratio")]
            cells = [f"{t:.3g}" if t is not None else "-" for t in trace]
            gate_cells = [f"{g:.3g}" if g is not None else "-" for g in gates]
            lines.append(f"| `{row}` | {p['seed']} | {layer} | " + " | ".join(cells) + f" | {drop} | "
                         f"{_num(first['den'])} -> {_num(last['den'])} | " + " | ".join(gate_cells) + " |")
    return "\n".join(lines) + "\n"


def _probe_drop(probes: list[dict]) -> str:
    """The layer that carries the key most at the shortest length: its trace first -> last (mean over
    the seeds) and how many times lower."""
    n_layers = len(probes[0]["rows"][0]["layers"])
    first = [statistics.fmean(p["rows"][0]["layers"][i]["trace"] for p in probes) for i in range(n_layers)]
    best = max(range(n_layers), key=lambda i: first[i])
    last = statistics.fmean(p["rows"][-1]["layers"][best]["trace"] for p in probes)
    ratio = first[best] / last if last > 0 else float("inf")
    times = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"
    span = f"{fmt_len(probes[0]['rows'][0]['length'])} -> {fmt_len(probes[0]['rows'][-1]['length'])}"
    return f"layer {best}, {span}: {first[best]:.2g} -> {last:.2g} ({times})"


def render_screen(data: dict) -> str:
    """The options' screen after stage 1: accuracy by length per haystack, the probe's drop."""
    hays = [h for h in HAYSTACKS if any(e[h] for e in data.values())]
    cols = {h: _lengths(data, [h]) for h in hays}
    depths = sorted({d for e in data.values() for h in hays for cs in e[h].values() for c in cs
                     for d in c["depths"]})
    probe = any(e["probe"].get("filler") for e in data.values())
    lines = [f"Mean key accuracy over the depths {', '.join(f'{d:g}' for d in depths)}; with several seeds, "
             f"the lowest seed. Keys per cell: {_keys_line(data, hays, _lengths(data, hays))}."
             f"{_text_line(data)}"
             + (" Probe: the trace of the key in the layer that carries it most, filler haystack, mean over "
                "the seeds, from the shortest to the longest length (and how many times lower it ends)."
                if probe else ""), "",
             "| memory | seeds | " + " | ".join(f"{LABELS[h]} " + " / ".join(fmt_len(n) for n in cols[h])
                                               for h in hays) + (" | probe: trace |" if probe else " |"),
             "|---|---|" + "---|" * (len(hays) + probe)]
    for row, e in data.items():
        cells = []
        for h in hays:
            vals = [f"{min(_stats(c)[0] for c in e[h][n]):.2f}" if n in e[h] else "-" for n in cols[h]]
            cells.append(" / ".join(vals))
        if probe:
            cells.append(_probe_drop(e["probe"]["filler"]) if e["probe"].get("filler") else "-")
        lines.append(f"| `{row}` | {', '.join(map(str, e['seeds']))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def heatmap(row: str, hay: str, grids: dict[int, list[dict]], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    import numpy as np

    depths = next(iter(grids.values()))[0]["depths"]
    acc = np.array([[min(r["accuracy"][j] for r in runs) for j in range(len(depths))]
                    for runs in grids.values()])
    fig, ax = plt.subplots(figsize=(1.1 * len(depths) + 2, 0.5 * len(grids) + 1.5))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_yticks(range(len(grids)), [fmt_len(n) for n in grids])
    ax.set_xlabel("depth of the key (0: farthest from the question)")
    ax.set_ylabel("instance length (tokens)")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", color="w" if acc[i, j] < 0.6 else "k")
    ax.set_title(f"{row}, {hay}: lowest key accuracy over the seeds", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def probe_plot(summaries: dict[str, dict], path: Path) -> bool:
    plt = pyplot()
    if plt is None or not summaries:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, s in summaries.items():
        ax.plot(s["lengths"], s["trace"], "o-", label=f"{label} (layer {s['layer']})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("instance length (tokens)")
    ax.set_ylabel("trace of the key in the memory read")
    ax.set_title("memory probe: the key's trace at the question")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="the output folder of scripts/passkey_cpu.sh")
    p.add_argument("--rows", default="",
                   help="rows in table order; absent ones are left out (default: every row folder of OUT, "
                   "the paper's memory and its variants first, then xl and none)")
    p.add_argument("--figures", help="folder for the heat-maps and the probe plot (default: none)")
    p.add_argument("--tables-dir", help="folder for passkey_tables.md and .json (default: OUT; a results "
                   "folder holds records only, so give another one for results/passkey)")
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = [r for r in args.rows.split(",") if r] or order_rows([p.name for p in out.iterdir() if p.is_dir()]
                                                                if out.is_dir() else [])
    data = collect(out, rows)
    if not data:
        print(f"error: no evaluated run in {out}", file=sys.stderr)
        return 1
    lines = []
    for hay in HAYSTACKS:
        for row, entry in data.items():
            if entry[hay]:
                lines += table(row, hay, entry[hay])
    summaries = {}
    for kind in ("filler", "text"):
        probe_lines = []
        for row, entry in data.items():
            if kind in entry["probe"]:
                rows_, summary = probe_summary(row, entry["probe"][kind], kind)
                probe_lines += rows_
                summaries[f"{row}, {kind}"] = summary
        if probe_lines:
            first = summaries[next(k for k in summaries if k.endswith(kind))]
            lengths = first["lengths_label"]
            keys = "/".join(str(k) for k in first["keys"])
            lines += [f"Memory probe, haystack {kind} (scripts/memory_probe.py; key at depth 0, {keys} keys, "
                      "mean over the seeds): the trace |A_mem(key) - A_mem(other key)| / |A_mem(key)| at the "
                      "last question token in the layer that carries the key most, by length; its drop from "
                      "the shortest to the longest length; that layer's mean write gate over the prompt.", "",
                      "| memory | haystack | layer | " + " | ".join(lengths) + " | drop | write gate |",
                      "|---|---|---:|" + "---:|" * (len(lengths) + 2)] + probe_lines + [""]
    text = "\n".join(lines)
    print(text)
    tables = Path(args.tables_dir) if args.tables_dir else out
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "passkey_tables.md").write_text(text, encoding="utf-8")
    summary = json.dumps({"rows": data, "probe": summaries}, indent=1)
    (tables / "passkey_tables.json").write_text(summary + "\n", encoding="utf-8")
    if args.figures:
        folder = Path(args.figures)
        folder.mkdir(parents=True, exist_ok=True)
        drawn = [heatmap(row, hay, entry[hay], folder / f"passkey_{row}_{hay}.png")
                 for row, entry in data.items() for hay in HAYSTACKS if entry[hay]]
        drawn.append(probe_plot(summaries, folder / "memory_probe.png"))
        if not all(drawn):
            print("no figures: pip install -e .[plots]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
