"""Passkey retrieval (the paper's §4.2 long-context test): train on short instances, evaluate up to 1M.

    python scripts/passkey.py train --config configs/passkey_cpu.yaml [--set passkey.all_weight=0.1 ...]
                                    [--run-dir runs/passkey_cpu] [--init runs/tiny/best.pt] [--resume auto]
                                    [--overwrite]
    python scripts/passkey.py eval --checkpoint runs/passkey_cpu/best.pt --lengths 1k,2k,8k,32k,128k,1m
                                   --depths 0,0.25,0.5,0.75,1 [--instances 4] [--out-dir DIR]
    infini-passkey train|eval ...       (installed: pip install .; --config passkey_cpu by its name)

`train` is train.py's trainer on passkey instances mixed with ordinary text (checkpoints, exact resume,
TensorBoard, `--set`, `--resume` and `--overwrite` behave as for train.py; `--set passkey.KEY=VALUE` sets
the task section).
`eval` streams every instance through the model in chunks with the state carried (the memory is the
only way back to the key), decodes the five digits greedily, and writes `passkey.md`, `passkey.json`
and, with matplotlib (`pip install -e .[plots]`), `passkey.png`. See docs/passkey.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shlex
import sys
import time
from pathlib import Path

from data_utils.startup import heavy_imports

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import numpy as np
    import torch
    import yaml

    from data_utils.corpus import get_corpus
    from data_utils.passkey import (
        Haystack,
        PasskeyError,
        PasskeyTokens,
        make_instance,
        parse_depth,
        parse_length,
    )
    from infiniattention.commands.shipped import config_path
    from infiniattention.training import results
    from infiniattention.training.cli import (
        EVALUATING,
        STARTING,
        ArgumentParser,
        check_out_dir,
        check_results_file,
        cli_entry,
        exit_with,
        stop_on_signals,
    )
    from infiniattention.training.config import (
        apply_overrides,
        config_from_dict,
        parse_override,
        read_config_file,
        write_text_atomic,
    )
    from infiniattention.training.distributed import select_device, teardown
    from infiniattention.training.errors import DiskFullError, UserError
    from infiniattention.training.evaluate import load_for_inference, precision_autocast
    from infiniattention.training.passkey import PasskeyTrainer, retrieve, task_config_from_dict
    from infiniattention.training.plots import pyplot

PROG = "scripts/passkey.py"  # how the resume command names this program (`infini-passkey` when installed)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags; `prog` names the program in the usage line (default: the name it was started by)."""
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    t = sub.add_parser("train", help="train or fine-tune on passkey instances mixed with text")
    t.add_argument("--config", required=True, help="YAML config: train.py's sections plus 'passkey', or the "
                   "name of a shipped one (passkey_cpu, passkey_cpu_2k, passkey_gpu); required")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (parsed as YAML), also passkey.KEY; repeatable")
    t.add_argument("--run-dir", help="run folder (default: runs/<config file name>)")
    t.add_argument("--resume", default="auto",
                   help="auto, never, or a checkpoint path, as train.py (default: %(default)s)")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh in a used run folder: its earlier files are moved into a sub-folder")
    t.add_argument("--init", help="start from the weights of this checkpoint (e.g. a text model); "
                   "optimizer and step start afresh; ignored when resuming (default: none)")
    t.add_argument("--allow-data-change", action="store_true",
                   help="train on data that differs from what the checkpoint was trained on, as train.py "
                   "(default: off)")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress bar, log lines only (the default off a terminal: logs, SLURM, nohup)")
    e = sub.add_parser("eval", help="streamed retrieval accuracy by length and depth")
    e.add_argument("--checkpoint", required=True,
                   help="a checkpoint file (e.g. runs/pk/stage2/best.pt); required")
    e.add_argument("--lengths", default="1k,2k,8k,32k,128k,1m",
                   help="comma-separated instance lengths in tokens, suffixes k (x1024) and m (x1048576) "
                   "(default: %(default)s)")
    e.add_argument("--depths", default="0,0.25,0.5,0.75,1",
                   help="comma-separated key depths in [0, 1] (default: %(default)s)")
    e.add_argument("--instances", type=int, default=4,
                   help="instances (keys) per length and depth (default: %(default)s)")
    e.add_argument("--tgt-len", "--chunk-len", dest="chunk_len", type=int, default=1024, metavar="N",
                   help="tokens per lane per call, rounded up to a multiple of the segment length, as "
                   "eval.py's --tgt-len (default: %(default)s; --chunk-len is the old name)")
    e.add_argument("--seed", type=int, default=0, help="seed of the keys (default: %(default)s)")
    e.add_argument("--haystack", default="filler", choices=("filler", "text"),
                   help="what hides the key: the repeated filler sentences (the paper's test), or ordinary "
                   "text of the checkpoint's dataset (--haystack-split); the keys are the same in both "
                   "(default: %(default)s)")
    e.add_argument("--haystack-split", default="valid", choices=("train", "valid", "test"),
                   help="split whose text is the haystack with --haystack text; an instance longer than the "
                   "split wraps around its end, which the tables say (default: %(default)s)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when a GPU is visible, else cpu (default: %(default)s)")
    e.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast precision of the forward passes (default: %(default)s)")
    e.add_argument("--out-dir", help="folder for passkey.md/.json/.png (default: passkey_eval/ next to the "
                   "checkpoint)")
    e.add_argument("--results", metavar="FILE",
                   help="also write the result as a results record (its numbers, the commit, the config, "
                   "the command, the machine, the wall time): e.g. results/passkey/ROW/seed-S/NAME.json")
    e.add_argument("--exact-rss", action=argparse.BooleanOptionalAction, default=True,
                   help="peak RSS = the working set: every block >= 1 MiB from its own mmap, returned when "
                   "freed (glibc). --no-exact-rss keeps them on the heap: about 2x the CPU "
                   "tokens/s, but the RSS then includes pages the allocator keeps, which grow with the calls "
                   "(default: --exact-rss)")
    return p


# ------------------------------------------------------------------------------------------------
# train


def load_passkey_config(path: str, overrides: list[str]):
    """(RunConfig, PasskeyTaskConfig) from the YAML file and `--set` overrides, read as train.py reads its
    config (one `error:` line for a folder, bad YAML, a key given twice, ...), plus the `passkey` section."""
    d = read_config_file(path, extra_sections=("passkey",))
    task = dict(d.pop("passkey", None) or {})
    rest = []
    for text in overrides:
        (section, key), value = parse_override(text)
        if section == "passkey":
            task[key] = value
        else:
            rest.append(text)
    return config_from_dict(apply_overrides(d, rest)), task_config_from_dict(task)


def cmd_train(args: argparse.Namespace, argv: list[str], prog: str = PROG) -> int:
    cfg, task = load_passkey_config(config_path(args.config), args.set)
    run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    kept = [a for i, a in enumerate(argv) if not a.startswith("--resume") and a != "--overwrite"
            and a != "--allow-data-change" and not (i and argv[i - 1] == "--resume")]
    launcher = ["python"] if prog.endswith(".py") else []
    trainer = PasskeyTrainer(cfg, run_dir, task, init_from=args.init, resume=args.resume,
                             overwrite=args.overwrite,
                             command=" ".join([*launcher, prog, *map(shlex.quote, kept)]),
                             progress=not args.no_progress, allow_data_change=args.allow_data_change)
    try:
        if trainer.env.is_main and trainer.finished is None:  # a finished run's files stay as they are
            task_yaml = yaml.safe_dump(dataclasses.asdict(task), sort_keys=False)
            write_text_atomic(run_dir / "passkey.yaml", task_yaml)
        trainer.fit()
    finally:
        trainer.close()  # the run folder's lock, also when the write above fails
    return 0


# ------------------------------------------------------------------------------------------------
# eval


def _fixed_mmap_threshold() -> None:
    """Serve every large block (>= 1 MiB) from mmap, returned to the OS when freed (glibc mallopt
    M_MMAP_THRESHOLD; fixing it also turns off glibc's dynamic threshold, which otherwise moves large
    activations onto the heap where freed pages stay resident), so peak RSS measures the working set.
    The price: every call faults its activations in afresh, which halves CPU throughput
    (``--no-exact-rss`` leaves glibc's defaults: faster, and RSS includes what the allocator keeps)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1024 * 1024)  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _peak_reset() -> None:
    """Reset the process's peak resident memory (Linux: write 5 to /proc/self/clear_refs), after handing
    the heap's free pages back (glibc malloc_trim), so each length's peak starts from the same floor."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    """Peak resident memory since the last reset (VmHWM), else since the start (ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_list(text: str, parse, what: str) -> list:
    items = [t for t in text.split(",") if t.strip()]
    if not items:
        raise PasskeyError(f"--{what} is empty")
    return [parse(t.strip()) for t in items]


def evaluate_grid(model, tok: PasskeyTokens, lengths: list[int], depths: list[float], instances: int,
                  chunk_len: int, device: torch.device, seed: int, autocast=None, log=print,
                  haystack: Haystack | None = None) -> dict:
    """Accuracy and per-digit accuracy for every (length, depth), with memory and speed per length.
    ``haystack``: ordinary text instead of the filler (the keys stay the same)."""
    rows = []
    for length in lengths:
        insts = [make_instance(tok, length, d, seed + 7919 * i + 104729 * j, haystack=haystack)
                 for j, d in enumerate(depths) for i in range(instances)]
        wraps = haystack is not None and haystack.wraps(insts[0].filler_len)
        if wraps:
            log(f"length {length:,}: the haystack {haystack.name} has {len(haystack.tokens):,} tokens, fewer "
                f"than the instance's {insts[0].filler_len:,}: its text repeats")
        _peak_reset()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        res = retrieve(model, insts, chunk_len, device, autocast)
        peak = _peak_rss_mib()
        cells = []
        for j, d in enumerate(depths):
            hits = res.digits_correct[j * instances:(j + 1) * instances]  # [instances, 5]
            cells.append({"depth": d, "realised_depths": [round(i.depth, 4) for i in
                                                          insts[j * instances:(j + 1) * instances]],
                          "accuracy": float(hits.all(1).mean()), "digit_accuracy": float(hits.mean()),
                          "per_digit": hits.mean(0).round(4).tolist(),
                          "keys": [i.key for i in insts[j * instances:(j + 1) * instances]],
                          "predicted": res.predicted[j * instances:(j + 1) * instances]})
        row = {"length": length, "cells": cells, "haystack_wraps": wraps, "tokens": res.tokens,
               "seconds": round(res.seconds, 3),
               "tokens_per_s": round(res.tokens / max(res.seconds, 1e-9), 1), "peak_rss_mib": round(peak, 1),
               "max_state_bytes": res.max_state_bytes}
        if device.type == "cuda":
            row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        rows.append(row)
        log(f"length {length:>9,}: accuracy " + " ".join(f"{c['accuracy']:.2f}" for c in cells)
            + f" (depths {','.join(map(str, depths))}) | {row['tokens_per_s']:,.0f} tok/s | peak RSS "
            f"{peak:,.0f} MiB | state {res.max_state_bytes:,} B")
    return {"rows": rows}


def markdown(result: dict) -> str:
    depths = result["depths"]
    head = "| length | " + " | ".join(f"depth {d:g}" for d in depths) + " | mean |"
    sep = "|---" * (len(depths) + 2) + "|"
    hay = result.get("haystack", "filler")
    out = [f"Passkey retrieval: {result['checkpoint']} (step {result['step']}, memory "
           f"{result.get('memory_label', result['memory'])}, segment {result['segment_len']}), "
           f"{result['instances']} instance(s) per cell, greedy decoding, haystack: {hay}.",
           "", "Accuracy (all 5 digits right):", "", head, sep]
    for r in result["rows"]:
        accs = [c["accuracy"] for c in r["cells"]]
        wrap = " (text repeats)" if r.get("haystack_wraps") else ""
        out.append(f"| {_fmt_len(r['length'])}{wrap} | " + " | ".join(f"{a:.2f}" for a in accs)
                   + f" | {np.mean(accs):.2f} |")
    out += ["", "Per-digit accuracy (chance 0.10):", "", head, sep]
    for r in result["rows"]:
        accs = [c["digit_accuracy"] for c in r["cells"]]
        out.append(f"| {_fmt_len(r['length'])} | " + " | ".join(f"{a:.2f}" for a in accs)
                   + f" | {np.mean(accs):.2f} |")
    out += ["", "| length | tokens streamed | seconds | tokens/s | peak RSS (MiB) | state bytes |",
            "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        out.append(f"| {_fmt_len(r['length'])} | {r['tokens']:,} | {r['seconds']:.1f} "
                   f"| {r['tokens_per_s']:,.0f} | {r['peak_rss_mib']:,.1f} | {r['max_state_bytes']:,} |")
    out += ["", "Peak RSS: " + ("the working set (large blocks mmapped; --no-exact-rss runs about 2x "
                                "faster on CPU)." if result.get("exact_rss", True) else
                                "the process's, including pages the allocator keeps (--no-exact-rss; "
                                "the default measures the working set alone).")]
    return "\n".join(out) + "\n"


def _fmt_len(n: int) -> str:
    if n % 2**20 == 0:
        return f"{n // 2**20}M"
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def heatmap(result: dict, path: Path) -> bool:
    """Write the accuracy heat-map (length x depth); False without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    acc = np.array([[c["accuracy"] for c in r["cells"]] for r in result["rows"]])  # [lengths, depths]
    fig, ax = plt.subplots(figsize=(1.1 * len(result["depths"]) + 2, 0.5 * len(result["rows"]) + 1.5))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(result["depths"])), [f"{d:g}" for d in result["depths"]])
    ax.set_yticks(range(len(result["rows"])), [_fmt_len(r["length"]) for r in result["rows"]])
    ax.set_xlabel("depth of the key (0: start of the filler)")
    ax.set_ylabel("instance length (tokens)")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", color="w" if acc[i, j] < 0.6 else "k")
    ax.set_title(f"passkey accuracy, {result.get('memory_label', result['memory'])}, haystack "
                 f"{result.get('haystack', 'filler')}")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def cmd_eval(args: argparse.Namespace) -> int:
    lengths = parse_list(args.lengths, parse_length, "lengths")
    depths = parse_list(args.depths, parse_depth, "depths")
    if args.instances < 1 or args.chunk_len < 1:
        raise PasskeyError(f"--instances and --tgt-len must be positive, got {args.instances} and "
                           f"{args.chunk_len}")
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent / "passkey_eval"
    check_out_dir("--out-dir", out_dir)  # before the evaluation, which can take hours
    check_results_file("--results", args.results)
    device = select_device(args.device, 0)
    model, vocab, cfg, ckpt = load_for_inference(args.checkpoint, device)
    tok = PasskeyTokens(vocab)
    for n in lengths:
        if n < tok.fixed_len:
            raise PasskeyError(f"length {n} is too short: a passkey instance needs at least "
                               f"{tok.fixed_len} tokens")
    seg = cfg.model.segment_len
    chunk = -(-args.chunk_len // seg) * seg
    haystack = None
    if args.haystack == "text":
        corpus = get_corpus(cfg.data.data_dir, cfg.data.dataset)
        haystack = Haystack(f"{cfg.data.dataset}/{args.haystack_split}", corpus.split(args.haystack_split))
    if args.exact_rss:
        _fixed_mmap_threshold()
    t0 = time.time()
    with torch.no_grad():  # not set_grad_enabled: a caller in the same process keeps its own mode
        grid = evaluate_grid(model, tok, lengths, depths, args.instances, chunk, device, args.seed,
                             precision_autocast(device, args.precision), haystack=haystack)
    result = {"checkpoint": str(args.checkpoint), "step": int(ckpt["step"]), "memory": cfg.model.memory,
              "memory_label": cfg.model.memory_label(),
              "haystack": "filler" if haystack is None else haystack.name,
              "update": cfg.model.update, "segment_len": seg, "mem_len": cfg.model.mem_len,
              "lengths": lengths, "depths": depths, "instances": args.instances, "chunk_len": chunk,
              "precision": args.precision, "device": str(device), "seed": args.seed,
              "torch_threads": torch.get_num_threads(), "exact_rss": args.exact_rss,
              "seconds": round(time.time() - t0, 1), **grid}
    print(markdown(result))  # first: the table is on the screen whatever happens to the files
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "passkey.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        (out_dir / "passkey.md").write_text(markdown(result), encoding="utf-8")
        plotted = heatmap(result, out_dir / "passkey.png")
    except OSError as err:
        if DiskFullError.matches(err):
            raise DiskFullError.from_os_error(err, advice="free some space and run the evaluation again") \
                from err
        raise UserError(f"cannot write the results into {out_dir}: {err.strerror} (the table above is "
                        "complete)") from err
    if args.results:
        rec = results.record("passkey", result, config=ckpt.get("config"), wall_s=time.time() - t0,
                             device=device)
        print(f"wrote {results.write_result(args.results, rec)}")
    if plotted:
        print(f"wrote {out_dir}/passkey.md, passkey.json and passkey.png")
    else:
        print(f"wrote {out_dir}/passkey.md and passkey.json (no heat-map: matplotlib is missing; "
              "pip install -e .[plots])")
    return 0


@cli_entry
def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    try:
        if args.command == "train":
            with stop_on_signals(STARTING):  # before the first step: one line (fit has its own)
                return cmd_train(args, argv, prog)
        with stop_on_signals(EVALUATING):  # SIGTERM/SIGHUP: one line, not a silent 143
            return cmd_eval(args)
    except PasskeyError as err:  # a bad length, depth or vocabulary: bad input, like a config error
        raise UserError(str(err)) from err
    finally:
        teardown()


def console() -> None:
    """The installed `infini-passkey` command."""
    exit_with(main(prog="infini-passkey"))


if __name__ == "__main__":
    exit_with(main(prog="python -m infiniattention.commands.passkey"))
