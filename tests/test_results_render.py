"""scripts/results.py: the tables of README.md and docs/ rendered from results/, checked against it, and a
fresh run compared with it.

The committed blocks must equal their rendering from the committed results/. The rendering itself is
tested on a results folder that the real programs write (tiny trainings, checkpoints and evaluations,
in seconds); the comparison of a fresh run on small synthetic records.
"""

from __future__ import annotations

import importlib.util
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import torch
from test_memory_probe import _checkpoint as _probe_checkpoint
from test_passkey import _enwik8_vocab, _tiny_model
from test_train_utils import REPO, prepared_data_dir, run_train

from infiniattention.training import checkpoint as ckpt_io
from infiniattention.training import results
from infiniattention.training.config import DataConfig, RunConfig


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


R = load_script("results")


def test_committed_blocks_match_their_rendering(capsys):
    """Every results block of README.md, docs/*.md and bench/RESULTS.md is what results/ renders."""
    assert R.main(["check"]) == 0, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# A results folder written by the programs themselves


def _passkey_checkpoint(path: Path, seed: int) -> Path:
    vocab = _enwik8_vocab()
    model = _tiny_model(vocab, seg=64, seed=seed)
    data = DataConfig(dataset="enwik8-sample", data_dir=prepared_data_dir())
    cfg = RunConfig(model=model.config, data=data)
    ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "step": 5, "model": model.state_dict(),
                         "config": cfg.to_dict(), "vocab": vocab.to_dict(), "vocab_digest": vocab.digest()},
                        path)
    return path


def _with_via(via: str, func, argv: list[str]) -> int:
    """A program's main, as a script named `via` runs it (passkey.py eval turns autograd off for its
    process: it is turned back on here, for the tests that follow in this one)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(results.VIA_ENV, via)
        mp.setattr(sys, "argv", argv)
        try:
            return func(argv[1:])
        finally:
            torch.set_grad_enabled(True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """results/ of tiny runs: demo (eval + train), compare (3 runs: test, context curve), gates, speed
    (2 shapes), passkey (3 rows and seeds: filler, valid text, probe) and passkey-screen."""
    import eval as eval_cli
    from infiniattention.commands import passkey as passkey_cmd

    base = tmp_path_factory.mktemp("results-tree")
    res = base / "results"
    runs = {}
    for row, seed, memory in (("infini", 1111, "infini"), ("infini", 2222, "infini"), ("none", 1111, "none")):
        run = base / "runs" / row / f"seed-{seed}"
        assert run_train(run, **{"train.max_steps": 3, "train.seed": seed, "model.memory": memory,
                                 "model.dropout": 0.0, "train.log_interval": 1}) == 0
        shutil.copy(run / "ckpt_00000003.pt", run / "best.pt")
        runs[row, seed] = run
    curve, table = load_script("context_curve"), load_script("compare_table")
    gates = load_script("plot_gates")
    via = "bash scripts/compare_memory.sh --rows infini,none --seeds 1111,2222"
    for (row, seed), run in runs.items():
        rec = res / "compare" / row / f"seed-{seed}"
        assert _with_via(via, curve.main, ["scripts/context_curve.py", "--checkpoint", str(run / "best.pt"),
                                           "--max-tokens", "400", "--batch-size", "2", "--out-dir", str(run),
                                           "--results", str(rec / "context_curve.json")]) == 0
        assert _with_via(via, table.main, ["scripts/compare_table.py", "--record", str(run), "--results",
                                           str(rec / "test.json")]) == 0
    run = runs["infini", 1111]
    assert gates.main(["--checkpoint", str(run / "best.pt"), "--run-dir", str(run), "--out-dir",
                       str(base / "gates"), "--results", str(res / "gates" / "infini" / "seed-1111" /
                                                             "gates.json")]) == 0
    assert _with_via("bash scripts/demo.sh", eval_cli.main,
                     ["eval.py", "--checkpoint", str(run / "best.pt"), "--split", "test", "--max-tokens",
                      "300", "--batch-size", "2", "--results", str(res / "demo" / "test.json")]) == 0
    sys.path.insert(0, str(REPO / "bench"))
    import bench_model

    for shape, width in (("demo", 16), ("small", 32)):
        argv = ["bench/bench_model.py", "--config", "bench/small.yaml", "--set", "model.n_layer=1", "--set",
                f"model.d_model={width}", "--set", "model.n_head=2", "--set", f"model.d_head={width // 2}",
                "--set", "model.segment_len=16", "--set", "data.tgt_len=32", "--set", "data.batch_size=2",
                "--modes", "infini,infini+gate,none", "--rounds", "1", "--steps", "1", "--warmup", "0",
                "--no-memory", "--device", "cpu", "--out", str(base / f"{shape}.json"),
                "--results", str(res / "speed" / f"{shape}.json")]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "argv", argv)
            bench_model.main(argv[1:])
    probe = load_script("memory_probe")
    pk_via = "bash scripts/passkey_cpu.sh --seeds 1111,2222 infini infini+gate"
    for row, seed in (("infini", 1111), ("infini", 2222), ("infini+gate", 1111)):
        ckpt = _passkey_checkpoint(base / f"pk-{row}-{seed}.pt", seed) if row == "infini" else \
            _probe_checkpoint(base / f"pk-{row}-{seed}.pt")
        rec = res / "passkey" / row / f"seed-{seed}"
        common = ["--checkpoint", str(ckpt), "--depths", "0,1", "--instances", "2", "--device", "cpu",
                  "--no-exact-rss"]
        assert _with_via(pk_via, passkey_cmd.main, [
            "scripts/passkey.py", "eval", *common, "--lengths", "512,1k", "--out-dir", str(base / "ev1"),
            "--results", str(rec / "filler-512-1k.json")]) == 0
        if row == "infini":
            assert _with_via(pk_via, passkey_cmd.main, [
                "scripts/passkey.py", "eval", *common, "--lengths", "1k", "--haystack", "text",
                "--haystack-split", "valid", "--out-dir", str(base / "ev2"),
                "--results", str(rec / "text-valid-1k.json")]) == 0
        assert _with_via(pk_via, probe.main, [
            "scripts/memory_probe.py", "--checkpoint", str(ckpt), "--lengths", "512,2k", "--keys", "2",
            "--device", "cpu", "--out-dir", str(base / "probe"),
            "--results", str(rec / "probe-filler.json")]) == 0
    shutil.copytree(res / "passkey", res / "passkey-screen")
    ckpt = base / "pk-infini-1111.pt"
    for name, rss in (("exact-rss", "--exact-rss"), ("no-exact-rss", "--no-exact-rss")):
        assert _with_via("bash scripts/passkey_cpu.sh --eval speed infini", passkey_cmd.main, [
            "scripts/passkey.py", "eval", "--checkpoint", str(ckpt), "--depths", "0,1", "--instances", "1",
            "--device", "cpu", rss, "--lengths", "512,1k", "--out-dir", str(base / f"ev-{name}"),
            "--results", str(res / "passkey-speed" / "infini" / "seed-1111" / f"{name}.json")]) == 0
    return res


ALL_BLOCKS = """# A page

Some text that render leaves alone.

<!-- results:demo -->
<!-- /results -->

<!-- results:compare -->
old text
<!-- /results -->

<!-- results:compare style=summary rows=infini,none -->
<!-- /results -->

<!-- results:context-curve seed=2222 ks=1,2 -->
<!-- /results -->

<!-- results:gates -->
<!-- /results -->

<!-- results:speed -->
<!-- /results -->

<!-- results:speed style=ratios shapes=small,demo -->
<!-- /results -->

<!-- results:passkey-stage2 -->
<!-- /results -->

<!-- results:passkey-stage2 style=summary haystacks=filler lengths=1k -->
<!-- /results -->

<!-- results:passkey-probe layers=1 -->
<!-- /results -->

<!-- results:passkey-screen rows=infini+gate,infini -->
<!-- /results -->

<!-- results:passkey-speed -->
<!-- /results -->

The end.
"""


def _render(tree: Path, doc: Path, command: str = "render") -> int:
    return R.main([command, "--results-dir", str(tree), "--files", str(doc)])


def test_every_block_renders_from_the_records_and_names_their_command(tree, tmp_path, capsys):
    doc = tmp_path / "page.md"
    doc.write_text(ALL_BLOCKS)
    assert _render(tree, doc, "check") == 1  # not rendered yet: every block differs
    assert capsys.readouterr().err.count("differs from its rendering") == 12
    assert _render(tree, doc) == 0 and _render(tree, doc, "check") == 0
    text = doc.read_text()
    assert text.startswith("# A page\n\nSome text that render leaves alone.\n")
    assert text.endswith("The end.\n")
    assert "old text" not in text
    blocks = {b.label: text[b.start:b.end] for b in R.find_blocks(doc, text)}

    demo = results.read_result(tree / "demo" / "test.json")
    assert f"| test | bpc | {demo['result']['bpc']:.4f} | {demo['result']['tokens']:,} | 2 x 32 |" in \
        blocks["results:demo"]
    assert "Measured by `bash scripts/demo.sh` (commit " in blocks["results:demo"]

    rows = {(r, s): results.read_result(tree / "compare" / r / f"seed-{s}" / "test.json")["result"]
            for r, s in (("infini", 1111), ("infini", 2222), ("none", 1111))}
    bpc = [rows["infini", s]["test_bpc"] for s in (1111, 2222)]
    spread = f"{statistics.fmean(bpc):.4f} ({max(bpc) - min(bpc):.4f})"
    assert f"| `infini` | 2 | {rows['infini', 1111]['parameters']:,} |" in blocks["results:compare"]
    assert spread in blocks["results:compare"]
    assert spread in blocks["results:compare style=summary rows=infini,none"]
    gain = rows["none", 1111]["test_bpc"] - rows["infini", 1111]["test_bpc"]
    assert f"- `infini`: mean {gain:+.4f}, per seed {gain:+.4f}" in blocks["results:compare"]
    via = "`bash scripts/compare_memory.sh --rows infini,none --seeds 1111,2222`"
    assert via in blocks["results:compare"]

    curve = results.read_result(tree / "compare" / "infini" / "seed-2222" / "context_curve.json")["result"]
    cells = " | ".join(f"{p['bpc']:.4f}" for p in (curve["curve"][0], curve["curve"][1], curve["curve"][-1]))
    assert "Seed 2222:" in blocks["results:context-curve seed=2222 ks=1,2"]
    assert f"| `infini` | {cells} |" in blocks["results:context-curve seed=2222 ks=1,2"]

    g = results.read_result(tree / "gates" / "infini" / "seed-1111" / "gates.json")["result"]["gates"]
    assert f"| `infini`: `sigmoid(b)` | {min(g[0]):.3f}-{max(g[0]):.3f} |" in blocks["results:gates"]

    speed = results.read_result(tree / "speed" / "demo.json")["result"]
    step = {r["variant"]: r["step_s"] for r in speed["rows"]}
    gate = step["infini+gate"]
    assert f"| `infini+gate` | {gate * 1e3:.0f} | {gate / step['infini']:.2f} |" in blocks["results:speed"]
    ratios = blocks["results:speed style=ratios shapes=small,demo"]
    assert "| shape | `gate` | `none` |" in ratios
    assert ratios.index("| small (`bench/small.yaml`)") < ratios.index("| demo (`bench/small.yaml`)")

    stage2 = blocks["results:passkey-stage2"]
    assert "| `infini` | filler | 1111, 2222 |" in stage2 and "| `infini+gate` | filler | 1111 |" in stage2
    assert "| `infini` | text (valid) | 1111, 2222 | - |" in stage2  # 512 was not evaluated in text
    assert "Keys per cell: 512 2, 1K 2." in stage2
    assert "`bash scripts/passkey_cpu.sh --seeds 1111,2222 infini infini+gate`" in stage2
    summary = blocks["results:passkey-stage2 style=summary haystacks=filler lengths=1k"]
    assert "| memory | seed | filler: 1K |" in summary and summary.count("| `infini` |") == 2

    probe = blocks["results:passkey-probe layers=1"]
    rec = results.read_result(tree / "passkey" / "infini+gate" / "seed-1111" / "probe-filler.json")["result"]
    trace = [r["layers"][1]["trace"] for r in rec["rows"]]
    hay = statistics.fmean(r["gate_haystack"]["1"] for r in rec["rows"])
    drop = trace[0] / trace[1]
    assert f"| `infini+gate` | 1111 | 1 | {trace[0]:.3g} | {trace[1]:.3g} | {drop:.1f}x |" in probe
    den = f"{rec['rows'][0]['layers'][1]['den']:.3g} -> {rec['rows'][-1]['layers'][1]['den']:.3g}"
    assert f"| {den} | {hay:.3g} |" in probe
    assert "| 0 |" not in probe and "`infini` |" not in probe  # layer 1 only: the infini model has one

    screen = blocks["results:passkey-screen rows=infini+gate,infini"]
    assert screen.index("| `infini+gate` | 1111 |") < screen.index("| `infini` | 1111, 2222 |")
    assert "rendered from `" in screen and "passkey-screen/` by `python scripts/results.py render`" in screen

    speed = blocks["results:passkey-speed"]
    folder = tree / "passkey-speed" / "infini" / "seed-1111"
    exact, fast = (results.read_result(folder / f"{n}.json")["result"] for n in ("exact-rss", "no-exact-rss"))
    assert exact["exact_rss"] and not fast["exact_rss"]
    for e, f in zip(exact["rows"], fast["rows"], strict=True):
        assert (f"| {e['tokens']:,} | {e['tokens_per_s']:,.0f} / {f['tokens_per_s']:,.0f} | "
                f"{e['peak_rss_mib']:.0f} | {e['max_state_bytes']:,} |") in speed
    assert "| `infini` | 512 | 1,024 |" in speed and "| `infini` | 1K | 2,048 |" in speed
    ratio = exact["rows"][1]["peak_rss_mib"] / exact["rows"][0]["peak_rss_mib"]
    assert f"the peak RSS at 1K is {ratio:.2f}x the one at 512" in speed
    assert "`bash scripts/passkey_cpu.sh --eval speed infini`" in speed


def test_check_names_each_block_that_differs_or_cannot_render(tree, tmp_path, capsys):
    doc = tmp_path / "page.md"
    doc.write_text("<!-- results:gates -->\n<!-- /results -->\n\n<!-- results:words -->\n<!-- /results -->\n")
    assert _render(tree, doc) == 1  # words: no record; gates rendered all the same
    err = capsys.readouterr().err
    assert f"{doc}: results:words: cannot be rendered: no eval record in" in err
    text = doc.read_text()
    assert "`sigmoid(b)`" in text
    doc.write_text(text.replace("<!-- results:words -->\n<!-- /results -->\n", ""))
    assert _render(tree, doc, "check") == 0
    g = results.read_result(tree / "gates" / "infini" / "seed-1111" / "gates.json")["result"]["gates"]
    doc.write_text(doc.read_text().replace(f"{max(g[0]):.3f} |", "0.999 |", 1))  # a number typed by hand
    assert _render(tree, doc, "check") == 1
    assert capsys.readouterr().err.strip() == f"{doc}: results:gates differs from its rendering"
    for bad, message in (("<!-- results:gates -->\n", "has no <!-- /results --> line"),
                         ("<!-- results:gates rows= -->\n<!-- /results -->\n", "starts like a results"),
                         ("text\n<!-- /results -->\n", "starts like a results marker"),
                         ("<!-- results:bogus -->\n<!-- /results -->\n", "unknown block results:bogus"),
                         ("<!-- results:gates style=x -->\n<!-- /results -->\n", "takes no option style"),
                         ("<!-- results:gates rows=xl -->\n<!-- /results -->\n", "no record of row xl")):
        doc.write_text(bad)
        assert _render(tree, doc, "check") in (1, 2)
        assert message in capsys.readouterr().err


def test_check_refuses_a_results_folder_with_a_file_that_is_not_a_record(tmp_path, capsys):
    doc = tmp_path / "page.md"
    doc.write_text("no blocks\n")
    stray = tmp_path / "results" / "passkey" / "infini" / "seed-1" / "passkey_tables.json"
    stray.parent.mkdir(parents=True)
    stray.write_text("{}")
    assert R.main(["check", "--results-dir", str(tmp_path / "results"), "--files", str(doc)]) == 2
    assert f"{stray}: not a results record" in capsys.readouterr().err


def test_show_prints_a_block_ready_to_paste(tree, capsys):
    assert R.main(["show", "--results-dir", str(tree), "gates"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<!-- results:gates -->\n\n| memory | layer 0 | layer 1 |") or "Seed 1111" in out
    assert out.rstrip().endswith("<!-- /results -->")


def test_the_command_shown_names_a_results_folder_as_the_reader_types_it():
    """A run made in another checkout that wrote into this one's results/ by an absolute path is shown
    with results/...; other absolute paths and runs/results folders stay as they were."""
    cmd = ("scripts/passkey.py eval --checkpoint /tmp/ck.pt --out-dir runs/results/x "
           "--results /work/main/results/passkey/infini/seed-1111/filler.json")
    assert R._short_paths(cmd) == ("scripts/passkey.py eval --checkpoint /tmp/ck.pt --out-dir runs/results/x "
                                   "--results results/passkey/infini/seed-1111/filler.json")
    assert R._short_paths("bash scripts/passkey_cpu.sh --results-dir /a/b/results infini") == \
        "bash scripts/passkey_cpu.sh --results-dir results infini"


def test_passkey_cells_take_the_lowest_seed_and_the_mean(tree, tmp_path):
    """A cell over several seeds: the seed with the lowest mean over the depths (its lowest depth), then
    the mean over the seeds; a length that only some seeds have says so. (Accuracies set in copies of
    real records: an untrained model retrieves nothing.)"""
    pt = load_script("passkey_table")
    root = tmp_path / "passkey"
    for seed, accs in ((1, [[1.0, 0.5], [0.4, 0.2]]), (2, [[0.5, 0.0], [0.6, 0.6]])):
        rec = results.read_result(tree / "passkey" / "infini" / "seed-1111" / "filler-512-1k.json")
        for row, acc in zip(rec["result"]["rows"], accs, strict=True):
            for cell, a in zip(row["cells"], acc, strict=True):
                cell["accuracy"] = a
        if seed == 2:
            rec["result"]["rows"] = rec["result"]["rows"][:1]
        results.write_result(root / "infini" / f"seed-{seed}" / "filler.json", rec)
    data = pt.collect(root, ["infini"])
    text = pt.render_accuracy(data)
    assert "| `infini` | filler | 1, 2 | 0.25 (0.00), mean 0.50 (0.25) | 0.30 (0.20) [1 of 2 seeds] |" in text
    assert "| `infini` | 2 | 0.25 (0.00) / - |" in pt.render_summary(data)
    assert "| `infini` | 1, 2 | 0.25 / 0.30 |" in pt.render_screen(data)


# ------------------------------------------------------------------------------------------------
# A fresh run against the committed records


def _write(root: Path, rel: str, kind: str, result: dict) -> None:
    results.write_result(root / rel, results.record(kind, result, config=None, wall_s=1.0, command="x"))


def _compare_row(bpc: float, k1: float, seed: int) -> dict:
    return {"test_bpc": bpc, "bpc_k1": k1, "memory_gain": k1 - bpc, "seed": seed}


def test_compare_reproduced_differs_tolerance_and_missing(tmp_path, capsys):
    committed, new = tmp_path / "committed", tmp_path / "new"
    for seed, bpc in ((1111, 2.75), (2222, 2.76), (3333, 2.77)):  # test bpc range 0.02
        _write(committed, f"compare/infini/seed-{seed}/test.json", "compare",
               _compare_row(bpc, bpc + 0.01, seed))
    _write(committed, "compare/none/seed-1111/test.json", "compare", _compare_row(2.74, 2.74, 1111))
    _write(committed, "words/test.json", "eval", {"split": "test", "ppl": 200.0})
    _write(new, "compare/infini/seed-1111/test.json", "compare", _compare_row(2.769, 2.779, 1111))
    _write(new, "compare/none/seed-1111/test.json", "compare", _compare_row(2.775, 2.775, 1111))
    _write(new, "words/test.json", "eval", {"split": "test", "ppl": 209.0})
    _write(new, "compare/xl/seed-1111/test.json", "compare", _compare_row(2.65, 2.84, 1111))
    _write(new, "compare/infini/seed-1111/train.json", "train", {"step": 3})  # nothing to compare
    lines, ok, bad, missing = R.compare(new, committed)
    by = {(line[1], line[3]): line for line in lines}
    # infini seed 1111: 2.769 against the same seed's 2.75, within the 3 seeds' range 0.02
    assert by["infini", "test bpc"][4:] == ["2.7500", "2.7690", "0.0200 (range of 3 seeds)", "reproduced"]
    # none: one committed seed, the default 0.03 bpc: 0.035 away
    assert by["none", "test bpc"][4:] == ["2.7400", "2.7750", "0.0300 (default)", "differs"]
    assert by["-", "test perplexity"][4:] == ["200.0", "209.0", "10.0 (default 5%)", "reproduced"]
    assert by["xl", "test bpc"][4:] == ["-", "2.6500", "-", "no committed value yet"]
    assert (ok, bad, missing) == (5, 2, 3)  # none: test bpc and bpc at K = 1
    assert R.main(["compare", str(new), "--committed", str(committed)]) == 1
    out = capsys.readouterr().out
    assert "| compare | none | 1111 | test bpc | 2.7400 | 2.7750 | 0.0300 (default) | differs |" in out
    assert "5 reproduced, 2 differ, 3 without a committed value" in out and "--full" in out
    shutil.rmtree(new / "compare" / "none")
    assert R.main(["compare", str(new), "--committed", str(committed)]) == 0  # nothing differs
    capsys.readouterr()
    assert R.main(["compare", str(tmp_path / "empty"), "--committed", str(committed)]) == 2
    assert "holds no results record" in capsys.readouterr().err


def test_a_check_kept_as_a_record_renders_its_steps_and_verdicts(tmp_path, capsys):
    """compare --record: the check of a fresh run as a record (the last run of the durations file, its
    verdicts and counts), which the reproduce block renders; compare ignores it as a committed record."""
    committed, new = tmp_path / "results", tmp_path / "new"
    _write(committed, "compare/infini/seed-1111/test.json", "compare", _compare_row(2.75, 2.76, 1111))
    _write(new, "compare/infini/seed-1111/test.json", "compare", _compare_row(2.76, 2.77, 1111))
    durations = tmp_path / "durations.txt"
    durations.write_text("start 2026-01-01T00:00:00Z mode quick commit aaaaaaa\ndemo 999 s x\nend x\n"
                         "start 2026-01-02T00:00:00Z mode quick commit bbbbbbb\n"
                         "demo 300 s 2026-01-02T00:05Z\ncompare 1200 s 2026-01-02T00:25Z\n"
                         "end 2026-01-02T00:25:00Z\n")
    quick = committed / "reproduce" / "quick.json"
    assert R.main(["compare", str(new), "--committed", str(committed), "--durations", str(durations),
                   "--record", str(quick)]) == 0
    rec = results.read_result(quick)
    assert rec["kind"] == "reproduce" and rec["provenance"]["wall_s"] == 1500.0
    assert rec["result"]["steps"] == [{"step": "demo", "seconds": 300}, {"step": "compare", "seconds": 1200}]
    assert (rec["result"]["reproduced"], rec["result"]["differ"], rec["result"]["missing"]) == (3, 0, 0)
    text = R.render_block("reproduce", {}, committed)
    assert "| demo | 300 s |" in text and "| all | 1,500 s (25.0 min) |" in text
    assert "| compare | infini | 1111 | test bpc | 2.7500 | 2.7600 | 0.0300 (default) | reproduced |" in text
    assert "3 reproduced, 0 differ, 0 without a committed value." in text
    assert R.compare(new, committed)[1:] == (3, 0, 0)  # the reproduce record holds no measure


def test_the_committed_records_reproduce_themselves(capsys):
    """`compare` reads every record that results/ holds (the keys the programs really write, not a
    stand-in's): checked against itself, every number is reproduced and none is missing."""
    lines, ok, bad, missing = R.compare(REPO / "results", REPO / "results")
    assert ok > 0 and bad == 0 and missing == 0
    assert {line[0] for line in lines} >= {"demo", "words", "compare", "gates", "speed", "passkey"}


def test_compare_measures_of_passkey_speed_and_gates():
    cells = [{"accuracy": 1.0}, {"accuracy": 0.5}]
    found = results.Found("passkey-screen", "infini", 1111, "filler-1k-2k", Path("x"), {
        "kind": "passkey", "result": {"haystack": "enwik8-sample/valid",
                                      "rows": [{"length": 1024, "cells": cells}]}})
    (m,) = R.measures(found)
    assert (m.what, m.value, m.tol) == ("text (valid) 1K: key accuracy", 0.75, 0.15)
    speed = results.Found("speed", None, None, "demo", Path("x"), {"kind": "bench_model", "result": {
        "rows": [{"variant": "infini", "step_s": 0.4}, {"variant": "infini+dpfp", "step_s": 0.7}]}})
    (m,) = R.measures(speed)
    assert m.what == "demo shape: step time infini+dpfp / infini" and m.relative
    assert m.value == pytest.approx(1.75)
    gates = results.Found("gates", "infini+gate", 1111, "gates", Path("x"), {"kind": "gates", "result": {
        "gates": [[0.2, 0.4]], "write_gate": {"0": 0.5}}})
    assert [(m.what, round(m.value, 6)) for m in R.measures(gates)] == [
        ("sigmoid(b), layer 0, mean over heads", 0.3), ("write gate, layer 0", 0.5)]


def test_a_word_level_record_renders_its_perplexity_and_a_gate_near_zero_its_digits(tmp_path):
    """eval.py writes `ppl` at word level; a write gate pushed to ~1e-6 is shown as such, not as 0.00."""
    rec = results.record("eval", {"ppl": 223.4158, "loss": 5.409, "tokens": 10840, "batch_size": 4,
                                  "tgt_len": 128, "step": 400, "split": "test"},
                         config={"model": {"memory": "infini"}, "train": {"seed": 1111}}, wall_s=1.0,
                         command="x")
    results.write_result(tmp_path / "words" / "test.json", rec)
    text, used, _ = R.block_eval(tmp_path, {}, "words")
    assert "| perplexity | 223.4 |" in text and len(used) == 1
    assert R._gate(9.5e-07) == "9.5e-07" and R._gate(0.4567) == "0.46" and R._gate(0.01) == "0.01"


def test_a_difference_zero_up_to_rounding_is_not_printed_negative():
    """`none`'s memory worth is bpc(K=1) - bpc(full) of two evaluations of the same stream: a float
    difference of about -1e-9 must read 0.0000, not -0.0000."""
    table = load_script("compare_table")
    assert (table.f4(-1e-9), table.f4(-6e-5), table.f4(0.01234)) == ("0.0000", "-0.0001", "0.0123")
    runs = {"none": [{"test_bpc": 2.75, "bpc_k1": 2.75 - 1e-9, "memory_gain": -1e-9, "seed": 1,
                      "memory": "none"}]}
    assert "| 2.7500 | 0.0000 |" in table.render_summary(runs)
