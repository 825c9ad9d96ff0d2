"""The tables (and heat-maps) of scripts/passkey_cpu.sh, over its rows and seeds.

    python scripts/passkey_table.py runs/passkey [--rows infini,infini+gate,xl,none] [--figures docs]

Reads OUT/ROW/seed-SEED/eval/*/passkey.json (and memory_probe.json) and prints, per haystack (the
filler; text of the test split to 32K and of the training split at 128K and 1M; text of the valid
split, on which options are chosen), one table per row: key accuracy per length and depth, the lowest
over the seeds (a claim must hold for every seed), with the seeds' mean in brackets and the number of
keys per cell. Then the memory probe: the trace of the key in the layer that carries it most, by
length (mean over the seeds), and its drop from the shortest to the longest length. Writes
passkey_tables.md and passkey_tables.json to OUT; with --figures DIR and matplotlib, one heat-map per
row and haystack (DIR/passkey_ROW_HAYSTACK.png, lowest accuracy over the seeds) and the probe's
traces (DIR/memory_probe.png).
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


# Haystack -> the evaluations (sub-folders of eval/) that make its table, shortest lengths first.
HAYSTACKS = {
    "filler": ("filler", "filler-32k", "filler-long"),
    "text": ("text-test", "text-test-32k", "text-train-long"),
    "text-valid": ("text-valid", "text-valid-32k"),
}
TITLES = {
    "filler": "the filler sentences (the paper's test)",
    "text": "real text: the test split to 32K, the training split at 128K and 1M (wrapping at 1M)",
    "text-valid": "real text of the valid split (where options are chosen)",
}


def fmt_len(n: int) -> str:
    if n % 2**20 == 0:
        return f"{n // 2**20}M"
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def load_grid(run: Path, names: tuple[str, ...]) -> dict[int, dict]:
    """length -> {"depths": [...], "accuracy": [...], "keys": n} from the evaluations of one run."""
    out = {}
    for name in names:
        path = run / "eval" / name / "passkey.json"
        if not path.is_file():
            continue
        res = json.loads(path.read_text())
        for row in res["rows"]:
            out[row["length"]] = {"depths": res["depths"], "accuracy": [c["accuracy"] for c in row["cells"]],
                                  "keys": res["instances"], "wraps": row.get("haystack_wraps", False)}
    return out


def collect(out: Path, rows: list[str]) -> dict:
    """row -> {"seeds": [...], haystack -> length -> per-seed grids, "probe": per-seed probes}."""
    data = {}
    for row in rows:
        runs = sorted(p for p in (out / row).glob("seed-*") if (p / "eval").is_dir())
        if not runs:
            continue
        entry = {"seeds": [int(p.name.split("-", 1)[1]) for p in runs]}
        for hay, names in HAYSTACKS.items():
            grids = [load_grid(p, names) for p in runs]
            lengths = sorted(set().union(*grids))
            entry[hay] = {n: [g[n] for g in grids if n in g] for n in lengths}
        probes = {}
        for kind in ("filler", "text"):
            found = [json.loads(f.read_text()) for p in runs
                     if (f := p / "eval" / f"probe-{kind}" / "memory_probe.json").is_file()]
            if found:
                probes[kind] = found
        entry["probe"] = probes
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
    p.add_argument("--rows", default="infini,infini+gate,infini+gate+corrected+dpfp+l2,xl,none",
                   help="rows in table order; absent ones are left out (default: %(default)s)")
    p.add_argument("--figures", help="folder for the heat-maps and the probe plot (default: none)")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = collect(out, [r for r in args.rows.split(",") if r])
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
    (out / "passkey_tables.md").write_text(text, encoding="utf-8")
    (out / "passkey_tables.json").write_text(json.dumps({"rows": data, "probe": summaries}, indent=1) + "\n",
                                             encoding="utf-8")
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
