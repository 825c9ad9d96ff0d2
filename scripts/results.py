"""Results as data: the tables of README.md, docs/ and bench/RESULTS.md rendered from results/, checked
against it, and a fresh run compared with it.

    python scripts/results.py render [--results-dir results] [--files FILE ...]
    python scripts/results.py check  [--results-dir results] [--files FILE ...]
    python scripts/results.py show BLOCK [KEY=VALUE ...]     (a block's rendering, markers included)
    python scripts/results.py list                          (what results/ holds, and every block)
    python scripts/results.py compare NEW [--committed results] [--record FILE [--durations FILE]]

A table that comes from results/ sits between markers in a Markdown file, each a line of its own:

    <!-- results:compare style=summary -->
    ...rendered, never edited by hand...
    <!-- /results -->

`render` rewrites every block of README.md, docs/*.md and bench/RESULTS.md from the records under
--results-dir; `check` exits 1 naming each block whose text differs from its rendering (or that cannot
be rendered), and changes nothing. Both refuse (exit 2) a results folder that holds a JSON file that is
not a record in the layout of results/README.md. Each block ends with the command that measured its
numbers (the records' provenance: `via`, the script that ran the program, else the program's own
command), their commits and machines. Blocks (KEY=VALUE options in the marker):

    demo, words           the test bpc or perplexity of results/demo, results/words (eval.py records)
    compare               results/compare/ROW/seed-S/test.json; style=full (docs) or summary (README);
                          rows=a,b,...; table=compare (another table of compare_memory.sh --table)
    context-curve         results/compare/ROW/seed-S/context_curve.json; seed=S (default: the lowest),
                          ks=1,2,4 (columns; default: all), rows=, table=compare
    gates                 results/gates/ROW/seed-S/gates.json; seed=, rows=, table=gates
    speed                 results/speed/SHAPE.json (bench_model.py records); style=table or ratios,
                          shapes=demo,small
    passkey-stage2        results/passkey/ROW/seed-S/*.json (kind passkey); style=full or summary,
                          rows=, haystacks=filler,text,text-valid, lengths=2k,8k, table=passkey
    passkey-probe         the memory probe records of the same folders; haystack=filler or text,
                          layers=1, rows=, table=passkey
    passkey-screen        results/passkey-screen (stage 1 only): accuracy by length and the probe; rows=
    passkey-speed         results/passkey-speed/ROW/seed-S/{exact-rss,no-exact-rss}.json: streaming
                          speed, peak RSS and state bytes by length; seed=, rows=
    reproduce             results/reproduce/NAME.json (compare --record): a fresh machine's check, its
                          step times and verdicts; name=quick

`compare` checks a fresh run against the committed records (scripts/reproduce_results.sh --quick): for
every number of NEW (a results folder) that a committed record also has (same table, row and measure),
the committed value of the same seed (else the mean over the committed seeds), the new one, the
tolerance and "reproduced" or "differs". The tolerance is the range (max - min) of the committed seeds
where there are several, else the measure's default: 0.03 bpc, 5 % of a perplexity, 0.15 of a passkey
accuracy, 0.10 of a gate, 20 % of a step-time ratio. Exit status 1 when a number differs; a number
with no committed value is listed as such and does not fail.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import re
import shlex
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    from data_utils.passkey import parse_length
    from infiniattention.training.results import Found, find_records, record, write_result

DOC_FILES = ("README.md", "docs/*.md", "bench/RESULTS.md")
OPEN = re.compile(r"^<!-- results:([a-z0-9-]+)((?: [a-z_]+=[^\s>]+)*) -->[ \t]*$", re.M)
CLOSE = "<!-- /results -->"
CLOSE_LINE = re.compile(r"^<!-- /results -->[ \t]*$", re.M)


@functools.cache
def _script(name: str):
    """A module of scripts/ (not a package): compare_table, passkey_table."""
    spec = importlib.util.spec_from_file_location(f"_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class NoData(ValueError):
    """A block whose records are not (all) in the results folder."""


# ------------------------------------------------------------------------------------------------
# Blocks: (results folder, options) -> (Markdown, the records it shows, the folder they come from)


Rendered = tuple[str, list[Found], str]


def _list(opts: dict[str, str], key: str) -> list[str] | None:
    return [x for x in opts[key].split(",") if x] if key in opts else None


def _of(root: Path, table: str, kind: str, name: str | None = None) -> list[Found]:
    found = [f for f in find_records(root, table) if f.record["kind"] == kind and name in (None, f.name)]
    if not found:
        raise NoData(f"no {kind} record in {root / table}" + (f" named {name}.json" if name else ""))
    return found


def _by_row(found: list[Found], rows: list[str] | None) -> dict[str, list[Found]]:
    """Row -> its records in seed order; rows in the order asked, else the tables' order."""
    names = rows or _script("passkey_table").order_rows(sorted({f.row for f in found if f.row}))
    out = {}
    for name in names:
        mine = sorted((f for f in found if f.row == name), key=lambda f: f.seed or 0)
        if mine:
            out[name] = mine
        elif rows:
            raise NoData(f"no record of row {name}")
    return out


def _seed(found: list[Found], opts: dict[str, str]) -> list[Found]:
    seed = int(opts["seed"]) if "seed" in opts else min(f.seed for f in found if f.seed is not None)
    return [f for f in found if f.seed == seed]


def _gate(value: float) -> str:
    """A write gate: two decimals, or two significant digits below 0.01 (a gate pushed to ~0 is not 0)."""
    return f"{value:.2f}" if not value < 0.01 else f"{value:.2g}"


def block_eval(root: Path, opts: dict[str, str], table: str) -> Rendered:
    """The demo's or the word-level starter's test number (eval.py records), with its training."""
    evals = _of(root, table, "eval")
    trains = {(f.row, f.seed): f for f in find_records(root, table) if f.record["kind"] == "train"}
    lines = ["| memory | seed | split | metric | value | tokens evaluated | lanes x tokens per call | "
             "weights | training |", "|---|---:|---|---|---:|---:|---|---|---:|"]
    used = list(evals)
    for f in evals:
        res, cfg = f.result, f.record.get("config") or {}
        metric = "bpc" if "bpc" in res else "perplexity"  # eval.py's keys: bpc, or ppl at word level
        value = f"{res['bpc']:.4f}" if metric == "bpc" else f"{res['ppl']:.1f}"
        weights, training = f"step {res['step']:,}", "-"
        train = trains.get((f.row, f.seed))
        if train is not None:
            used.append(train)
            weights += f" of {train.result['step']:,}"
            if not train.result.get("finished"):
                threads = train.record["provenance"]["machine"].get("torch_threads")
                training = f"{train.record['provenance']['wall_s'] / 60:.1f} min ({threads} thread(s))"
        memory = f.row or cfg.get("model", {}).get("memory", "?")
        lines.append(f"| `{memory}` | {cfg.get('train', {}).get('seed', '-')} | {res.get('split', '-')} | "
                     f"{metric} | {value} | {res['tokens']:,} | {res['batch_size']} x {res['tgt_len']} | "
                     f"{weights} | {training} |")
    return "\n".join(lines) + "\n", used, table


def block_compare(root: Path, opts: dict[str, str]) -> Rendered:
    table = opts.get("table", "compare")
    found = _by_row(_of(root, table, "compare", "test"), _list(opts, "rows"))
    runs = {row: [f.result for f in fs] for row, fs in found.items()}
    ct = _script("compare_table")
    render = {"full": ct.render_full, "summary": ct.render_summary}[opts.get("style", "full")]
    return render(runs), [f for fs in found.values() for f in fs], table


def block_curve(root: Path, opts: dict[str, str]) -> Rendered:
    table = opts.get("table", "compare")
    found = _by_row(_seed(_of(root, table, "context_curve", "context_curve"), opts), _list(opts, "rows"))
    ks = [int(k) for k in _list(opts, "ks") or []] or None
    text = _script("compare_table").render_curve({row: fs[0].result for row, fs in found.items()}, ks)
    seed = next(iter(found.values()))[0].seed
    return f"Seed {seed}:\n\n{text}", [fs[0] for fs in found.values()], table


def block_gates(root: Path, opts: dict[str, str]) -> Rendered:
    table = opts.get("table", "gates")
    found = _by_row(_seed(_of(root, table, "gates"), opts), _list(opts, "rows"))
    first = next(iter(found.values()))[0]
    n_layers = max(len(fs[0].result["gates"]) for fs in found.values())
    lines = [f"Seed {first.seed}, step {first.result['step']:,}: `sigmoid(b)` of eq. 10 per layer, lowest-"
             "highest over the heads (1: the head reads only the memory, 0: only local attention), and the "
             "mean write gate per layer at the last validation.", "",
             "| memory | " + " | ".join(f"layer {i}" for i in range(n_layers)) + " |",
             "|---|" + "---|" * n_layers]
    for row, fs in found.items():
        res = fs[0].result
        lines.append(f"| `{row}`: `sigmoid(b)` | "
                     + " | ".join(f"{min(g):.3f}-{max(g):.3f}" for g in res["gates"]) + " |")
        if res.get("write_gate"):
            lines.append(f"| `{row}`: mean write gate | "
                         + " | ".join(_gate(res["write_gate"].get(str(i), float("nan")))
                                      for i in range(n_layers)) + " |")
    return "\n".join(lines) + "\n", [fs[0] for fs in found.values()], table


def _config_arg(f: Found) -> str:
    """The --config of the record's command, for a label."""
    words = shlex.split(f.record["provenance"]["command"])
    return words[words.index("--config") + 1] if "--config" in words[:-1] else "?"


def block_speed(root: Path, opts: dict[str, str]) -> Rendered:
    found = {f.name: f for f in _of(root, "speed", "bench_model")}
    names = _list(opts, "shapes") or sorted(found)
    missing = [n for n in names if n not in found]
    if missing:
        raise NoData(f"no speed record {', '.join(missing)} in {root / 'speed'}")
    shapes = [found[n] for n in names]
    steps = {f.name: {r["variant"]: r["step_s"] for r in f.result["rows"]} for f in shapes}
    variants = list(dict.fromkeys(v for f in shapes for v in steps[f.name]))
    r0 = shapes[0].result
    threads = sorted({str(f.record["provenance"]["machine"].get("torch_threads")) for f in shapes})
    lines = [f"Step time of a training step (median over {r0['rounds']} rounds x {r0['steps_per_round']} "
             f"steps, the variants interleaved in one process; {r0['clock']} clock, {'/'.join(threads)} "
             "thread(s)), and over the paper's memory (`x infini`).", ""]
    if opts.get("style", "table") == "ratios":
        others = [v for v in variants if v != "infini"]
        lines += ["| shape | " + " | ".join(f"`{v.removeprefix('infini+')}`" for v in others) + " |",
                  "|---|" + "---:|" * len(others)]
        for f in shapes:
            base = steps[f.name].get("infini")
            cells = [f"{steps[f.name][v] / base:.2f}" if base and v in steps[f.name] else "-" for v in others]
            lines.append(f"| {f.name} (`{_config_arg(f)}`) | " + " | ".join(cells) + " |")
    else:
        lines += ["| variant | " + " | ".join(f"{f.name} (`{_config_arg(f)}`): step ms | x infini"
                                               for f in shapes) + " |", "|---|" + "---:|---:|" * len(shapes)]
        for v in variants:
            cells = []
            for f in shapes:
                st, base = steps[f.name].get(v), steps[f.name].get("infini")
                cells += [f"{st * 1e3:.0f}" if st else "-", f"{st / base:.2f}" if st and base else "-"]
            lines.append(f"| `{v}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n", shapes, "speed"


def _passkey(root: Path, opts: dict[str, str], default_table: str,
             kind: str) -> tuple[dict, list[Found], str]:
    table = opts.get("table", default_table)
    pt = _script("passkey_table")
    folder = root / table
    rows = _list(opts, "rows") or pt.order_rows(sorted(p.name for p in folder.iterdir() if p.is_dir())
                                                if folder.is_dir() else [])
    data = pt.collect(folder, rows)
    used = [f for f in find_records(root, table) if f.row in data and f.record["kind"] == kind]
    if not used:
        raise NoData(f"no {kind} record in {folder}")
    missing = [r for r in _list(opts, "rows") or [] if r not in data]
    if missing:
        raise NoData(f"no record of row {', '.join(missing)} in {folder}")
    return data, used, table


def block_passkey(root: Path, opts: dict[str, str]) -> Rendered:
    data, used, table = _passkey(root, opts, "passkey", "passkey")
    pt = _script("passkey_table")
    lengths = [parse_length(x) for x in _list(opts, "lengths") or []] or None
    render = {"full": pt.render_accuracy, "summary": pt.render_summary}[opts.get("style", "full")]
    return render(data, _list(opts, "haystacks"), lengths), used, table


def block_probe(root: Path, opts: dict[str, str]) -> Rendered:
    data, used, table = _passkey(root, opts, "passkey", "memory_probe")
    layers = [int(x) for x in _list(opts, "layers") or []] or None
    hay = opts.get("haystack", "filler")
    used = [f for f in used if (f.result.get("haystack") == "filler") == (hay == "filler")]
    return _script("passkey_table").render_probe(data, hay, layers), used, table


def block_screen(root: Path, opts: dict[str, str]) -> Rendered:
    data, used, table = _passkey(root, opts, "passkey-screen", "passkey")
    probes = [f for f in find_records(root, table) if f.row in data and f.record["kind"] == "memory_probe"]
    return _script("passkey_table").render_screen(data), used + probes, table


def block_passkey_speed(root: Path, opts: dict[str, str]) -> Rendered:
    """Streaming cost by length: one passkey evaluation with --exact-rss (the working set) and one with
    --no-exact-rss (the faster allocator), of the same checkpoint, lengths and instances."""
    table = opts.get("table", "passkey-speed")
    found = _by_row(_seed(_of(root, table, "passkey"), opts), _list(opts, "rows"))
    fmt = _script("passkey_table").fmt_len
    lines = ["| memory | length | tokens streamed | tokens/s, `--exact-rss` / `--no-exact-rss` | "
             "peak RSS, MiB (`--exact-rss`) | state bytes |", "|---|---:|---:|---|---:|---:|"]
    notes, used = [], []
    for row, fs in found.items():
        by_mode = {f.result.get("exact_rss", True): f for f in fs}
        if set(by_mode) != {True, False}:
            raise NoData(f"row {row} needs one record with --exact-rss and one with --no-exact-rss in "
                         f"{root / table}")
        exact, fast = by_mode[True], by_mode[False]
        used += [exact, fast]
        speed = {r["length"]: r["tokens_per_s"] for r in fast.result["rows"]}
        rows = exact.result["rows"]
        for r in rows:
            fast_s = f"{speed[r['length']]:,.0f}" if r["length"] in speed else "-"
            lines.append(f"| `{row}` | {fmt(r['length'])} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} / "
                         f"{fast_s} | {r['peak_rss_mib']:.0f} | {r['max_state_bytes']:,} |")
        first, last = rows[0], rows[-1]
        res = exact.result
        notes.append(f"`{row}` (seed {exact.seed}, step {res['step']:,}, {res['instances']} "
                     f"instance(s) per depth, {len(res['depths'])} depths): the peak RSS at "
                     f"{fmt(last['length'])} is {last['peak_rss_mib'] / first['peak_rss_mib']:.2f}x the one "
                     f"at {fmt(first['length'])}; the state, {first['max_state_bytes']:,} -> "
                     f"{last['max_state_bytes']:,} bytes.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n", used, table


COMPARISON_HEAD = ("table", "row", "seed", "measure", "committed", "new", "tolerance", "verdict")


def comparison_table(lines: list[list[str]]) -> list[str]:
    """The Markdown table of a check (`compare`), one line per number: printed, and rendered from its
    record."""
    return (["| " + " | ".join(COMPARISON_HEAD) + " |", "|---|---|---|---|---:|---:|---|---|"]
            + ["| " + " | ".join(line) + " |" for line in lines])


def block_reproduce(root: Path, opts: dict[str, str]) -> Rendered:
    """A committed check of a fresh machine (results/reproduce/NAME.json): step times and verdicts."""
    found = _of(root, "reproduce", "reproduce", opts.get("name", "quick"))[0]
    res = found.result
    lines = []
    if res["steps"]:
        lines += ["| step | wall time |", "|---|---:|"]
        lines += [f"| {s['step']} | {s['seconds']:,} s |" for s in res["steps"]]
        lines += [f"| all | {res['total_s']:,.0f} s ({res['total_s'] / 60:.1f} min) |", ""]
    lines += comparison_table([[r[h] for h in COMPARISON_HEAD] for r in res["rows"]])
    lines += ["", f"{res['reproduced']} reproduced, {res['differ']} differ, {res['missing']} without a "
              "committed value."]
    return "\n".join(lines) + "\n", [found], "reproduce"


BLOCKS: dict[str, tuple[Callable[[Path, dict[str, str]], Rendered], tuple[str, ...]]] = {
    "demo": (lambda root, opts: block_eval(root, opts, "demo"), ()),
    "words": (lambda root, opts: block_eval(root, opts, "words"), ()),
    "compare": (block_compare, ("style", "rows", "table")),
    "context-curve": (block_curve, ("seed", "ks", "rows", "table")),
    "gates": (block_gates, ("seed", "rows", "table")),
    "speed": (block_speed, ("style", "shapes")),
    "passkey-stage2": (block_passkey, ("style", "rows", "haystacks", "lengths", "table")),
    "passkey-probe": (block_probe, ("haystack", "layers", "rows", "table")),
    "passkey-screen": (block_screen, ("rows", "table")),
    "passkey-speed": (block_passkey_speed, ("seed", "rows", "table")),
    "reproduce": (block_reproduce, ("name",)),
}


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def _short_paths(command: str) -> str:
    """The command as a reader types it from the repository: a results folder given by an absolute path
    (a run made in another checkout, writing into this one's results/) is shown as results/..."""
    return re.sub(r"(?<![\w.])/\S*/(results)(?=/|\s|$)", r"\1", command)


def provenance_line(used: list[Found], source: str) -> str:
    """Which command measured the numbers (the script that ran the program, else the program), on
    which commits and machines, when; and where the block is rendered from."""
    provs = [f.record["provenance"] for f in used]
    cmds = _unique(_short_paths(p.get("via") or p["command"]) for p in provs)
    shown = "; ".join(f"`{c}`" for c in cmds[:2])
    if len(cmds) > 2:
        shown += f" and {len(cmds) - 2} more (each record's provenance)"
    commits = _unique(p["commit"][:7] + ("+dirty" if p.get("dirty") else "") for p in provs)
    machines = _unique(f"torch {p['machine']['torch']}, {p['machine']['cores']} cores"
                       + (f", {p['machine']['device_name']}" if p["machine"].get("device_name") else "")
                       for p in provs)
    dates = sorted(p["date"][:10] for p in provs)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    return (f"Measured by {shown} (commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}; "
            f"{'; '.join(machines)}; {when}); rendered from `{source}/` by `python scripts/results.py "
            "render`.")


def parse_options(text: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in text.split())


def render_block(name: str, opts: dict[str, str], root: Path) -> str:
    """The text between a block's markers: the table and its provenance, blank lines around them."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block results:{name} (blocks: {', '.join(BLOCKS)})")
    func, keys = BLOCKS[name]
    unknown = sorted(set(opts) - set(keys))
    if unknown:
        raise ValueError(f"results:{name} takes no option {', '.join(unknown)} (options: "
                         f"{', '.join(keys) or 'none'})")
    text, used, table = func(root, opts)
    source = root / table
    try:
        source_name = str(source.resolve().relative_to(ROOT))
    except ValueError:
        source_name = str(source)
    return f"\n\n{text}\n{provenance_line(used, source_name)}\n\n"


# ------------------------------------------------------------------------------------------------
# Markers in Markdown files


@dataclass
class Block:
    path: Path
    name: str
    options: str
    start: int  # the body: text[start:end], between the markers
    end: int

    @property
    def label(self) -> str:
        return f"results:{self.name}{self.options}"


def find_blocks(path: Path, text: str) -> list[Block]:
    """Every marked block of a file; a marker is a line of its own. An unclosed block, a closing marker
    without a block, or a line that starts like a marker but is not one is an error naming the file."""
    blocks, pos = [], 0
    while (m := OPEN.search(text, pos)) is not None:
        close = CLOSE_LINE.search(text, m.end())
        nested = OPEN.search(text, m.end())
        if close is None or (nested is not None and nested.start() < close.start()):
            line = text.count("\n", 0, m.start()) + 1
            raise ValueError(f"{path}:{line}: results:{m.group(1)} has no {CLOSE} line before the next block")
        blocks.append(Block(path, m.group(1), m.group(2), m.end(), close.start()))
        pos = close.end()
    markers = [line for line in text.splitlines() if line.startswith(("<!-- results:", "<!-- /results"))]
    if len(markers) != 2 * len(blocks):
        raise ValueError(f"{path}: a line that starts like a results marker is not one, or a {CLOSE} has no "
                         "block: a block is '<!-- results:NAME KEY=VALUE ... -->' ... '<!-- /results -->', "
                         "each marker a line of its own")
    return blocks


def doc_files(patterns: list[str] | None) -> list[Path]:
    if patterns:
        return [Path(p) for p in patterns]
    return [p for pat in DOC_FILES for p in sorted(ROOT.glob(pat))]


def process(files: list[Path], root: Path, write: bool) -> list[str]:
    """Render every block of `files`; rewrite them when `write`. Returns one line per problem: a block
    that differs from its rendering (not `write`), or that cannot be rendered."""
    problems = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        pieces, last = [], 0
        for block in find_blocks(path, text):
            body = text[block.start:block.end]
            try:
                fresh = render_block(block.name, parse_options(block.options), root)
            except (ValueError, KeyError) as err:
                problems.append(f"{path}: {block.label}: cannot be rendered: {err}")
                fresh = body
            if fresh != body and not write:
                problems.append(f"{path}: {block.label} differs from its rendering")
            pieces += [text[last:block.start], fresh]
            last = block.end
        new = "".join(pieces) + text[last:]
        if write and new != text:
            path.write_text(new, encoding="utf-8")
            print(f"rendered {path}")
    return problems


# ------------------------------------------------------------------------------------------------
# A fresh run against the committed records


@dataclass(frozen=True)
class Measure:
    """One number of a record, what it is called, its format and its default tolerance (absolute, or
    relative to the committed value)."""

    what: str
    value: float
    fmt: str
    tol: float
    relative: bool = False


def measures(f: Found) -> list[Measure]:
    """The numbers of a record that a fresh run is checked on (none for kinds not listed)."""
    res, kind = f.result, f.record["kind"]
    if kind == "eval":
        if "bpc" in res:
            return [Measure(f"{res.get('split', 'test')} bpc", res["bpc"], ".4f", 0.03)]
        return [Measure(f"{res.get('split', 'test')} perplexity", res["ppl"], ".1f", 0.05, True)]
    if kind == "compare":
        return [Measure("test bpc", res["test_bpc"], ".4f", 0.03),
                Measure("bpc at K = 1", res["bpc_k1"], ".4f", 0.03),
                Measure("memory gain", res["memory_gain"], ".4f", 0.03)]
    if kind == "gates":
        out = [Measure(f"sigmoid(b), layer {i}, mean over heads", statistics.fmean(g), ".3f", 0.10)
               for i, g in enumerate(res["gates"])]
        return out + [Measure(f"write gate, layer {i}", v, ".3f", 0.10)
                      for i, v in sorted((res.get("write_gate") or {}).items())]
    if kind == "passkey":
        pt = _script("passkey_table")
        hay, split = pt.haystack_of(res)
        where = "filler" if split is None else f"text ({split})"
        return [Measure(f"{where} {pt.fmt_len(r['length'])}: key accuracy", statistics.fmean(
            c["accuracy"] for c in r["cells"]), ".2f", 0.15) for r in res["rows"]]
    if kind == "bench_model":
        steps = {r["variant"]: r["step_s"] for r in res["rows"]}
        # 20 %: two runs of the same benchmark on the idle 2-core machine (5 and 3 rounds) differed by
        # up to 14 % in a ratio (docs/results.md, "Does my machine reproduce them?").
        return [Measure(f"{f.name} shape: step time {v} / infini", s / steps["infini"], ".2f", 0.20, True)
                for v, s in steps.items() if v != "infini" and "infini" in steps]
    return []


def compare(new_root: Path, committed_root: Path) -> tuple[list[list[str]], int, int, int]:
    """Rows (table, row, seed, measure, committed, new, tolerance, verdict) and the counts of
    reproduced, differing and uncommitted numbers."""
    # (table, row, measure) -> seed -> values: one seed's record files may share a measure (a passkey
    # cell at 2K in both filler.json and filler-2k-8k.json); the seeds' spread is between seeds.
    committed: dict[tuple, dict[int | None, list[float]]] = {}
    for f in find_records(committed_root) if committed_root.is_dir() else []:
        for m in measures(f):
            committed.setdefault((f.table, f.row, m.what), {}).setdefault(f.seed, []).append(m.value)
    lines, counts = [], [0, 0, 0]
    for f in find_records(new_root):
        for m in measures(f):
            old = committed.get((f.table, f.row, m.what), {})
            seed = "-" if f.seed is None else str(f.seed)
            if not old:
                lines.append([f.table, f.row or "-", seed, m.what, "-", format(m.value, m.fmt), "-",
                              "no committed value yet"])
                counts[2] += 1
                continue
            values = [statistics.fmean(v) for v in old.values()]  # one per seed
            ref = statistics.fmean(old[f.seed]) if f.seed in old else statistics.fmean(values)
            if len(values) > 1:
                tol, why = max(values) - min(values), f"range of {len(values)} seeds"
            else:
                tol, why = (m.tol * abs(ref), f"default {m.tol:.0%}") if m.relative else (m.tol, "default")
            ok = abs(m.value - ref) <= tol + 1e-12
            counts[0 if ok else 1] += 1
            lines.append([f.table, f.row or "-", seed, m.what, format(ref, m.fmt), format(m.value, m.fmt),
                          f"{tol:{m.fmt}} ({why})", "reproduced" if ok else "differs"])
    return lines, *counts


def print_comparison(lines: list[list[str]], ok: int, bad: int, missing: int, committed: Path) -> None:
    print("\n".join(comparison_table(lines)))
    print(f"\n{ok} reproduced, {bad} differ, {missing} without a committed value")
    if missing:
        print(f"no committed value: {committed} has no record of that table, row and measure yet; "
              "`bash scripts/reproduce_results.sh --full` writes them (see results/README.md)")


def read_durations(path: Path) -> tuple[list[dict], float]:
    """The step times of the last run logged in a reproduce_results.sh durations file ("start ...",
    then "STEP SECONDS s DATE" per step, then "end ..."): [{"step", "seconds"}] and their sum."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("start ")]
    steps = []
    for line in lines[starts[-1] + 1 if starts else 0:]:
        if (m := re.fullmatch(r"(\S+) (\d+) s \S+", line)) is not None:
            steps.append({"step": m.group(1), "seconds": int(m.group(2))})
    return steps, float(sum(s["seconds"] for s in steps))


def comparison_record(lines: list[list[str]], ok: int, bad: int, missing: int,
                      durations: Path | None) -> dict:
    """The check of a fresh run as a results record (kind "reproduce"): its verdict per number, its
    counts and, from the durations file, its step times; the commit is the one that was checked."""
    steps, total = read_durations(durations) if durations is not None else ([], 0.0)
    result = {"rows": [dict(zip(COMPARISON_HEAD, line, strict=True)) for line in lines], "reproduced": ok,
              "differ": bad, "missing": missing, "steps": steps, "total_s": total}
    return record("reproduce", result, config=None, wall_s=total)


# ------------------------------------------------------------------------------------------------
# The command line


def cmd_list(root: Path) -> None:
    found = find_records(root) if root.is_dir() else []
    tables: dict[str, dict] = {}
    for f in found:
        tables.setdefault(f.table, {}).setdefault(f.row or "-", set()).add(f.seed)
    for table, rows in tables.items():
        print(f"{table}:")
        for row, seeds in rows.items():
            names = sorted({f.name for f in found if f.table == table and (f.row or "-") == row})
            seeds_text = ", ".join(str(s) for s in sorted(s for s in seeds if s is not None)) or "-"
            print(f"  {row}: seeds {seeds_text}; {', '.join(names)}")
    if not found:
        print(f"{root}: no records")
    print("blocks:")
    for path in doc_files(None):
        for block in find_blocks(path, path.read_text(encoding="utf-8")):
            print(f"  {path.relative_to(ROOT)}: {block.label}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("render", "check", "show", "list"):
        s = sub.add_parser(name)
        s.add_argument("--results-dir", default=str(ROOT / "results"),
                       help="the results folder (default: results/ of this checkout)")
        if name in ("render", "check"):
            s.add_argument("--files", nargs="+", help="Markdown files (default: README.md, docs/*.md, "
                           "bench/RESULTS.md)")
        if name == "show":
            s.add_argument("block", help=f"one of {', '.join(BLOCKS)}")
            s.add_argument("options", nargs="*", metavar="KEY=VALUE", help="the block's options")
    c = sub.add_parser("compare")
    c.add_argument("new", help="the results folder of a fresh run (reproduce_results.sh --quick: "
                   "OUT/results)")
    c.add_argument("--committed", default=str(ROOT / "results"),
                   help="the committed results folder (default: results/ of this checkout)")
    c.add_argument("--record", metavar="FILE", help="also write the check as a results record (kind "
                   "reproduce; commit it as results/reproduce/quick.json to render it)")
    c.add_argument("--durations", metavar="FILE", help="reproduce_results.sh's durations.txt: its last "
                   "run's step times go into --record")
    args = p.parse_args(argv)
    try:
        if args.command == "compare":
            new, committed = Path(args.new), Path(args.committed)
            if not new.is_dir() or not find_records(new):
                print(f"error: {new} holds no results record", file=sys.stderr)
                return 2
            lines, ok, bad, missing = compare(new, committed)
            print_comparison(lines, ok, bad, missing, committed)
            if args.record:
                durations = Path(args.durations) if args.durations else None
                write_result(args.record, comparison_record(lines, ok, bad, missing, durations))
            return 1 if bad else 0
        root = Path(args.results_dir)
        if args.command == "list":
            cmd_list(root)
            return 0
        if args.command == "show":
            opts = " ".join(args.options)
            print(f"<!-- results:{args.block}{' ' + opts if opts else ''} -->"
                  + render_block(args.block, parse_options(opts), root) + CLOSE)
            return 0
        find_records(root)  # every file of the results folder is a record, in the layout
        problems = process(doc_files(args.files), root, write=args.command == "render")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(line, file=sys.stderr)
    if args.command == "check" and not problems:
        print(f"every block matches its rendering from {os.path.relpath(args.results_dir)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
