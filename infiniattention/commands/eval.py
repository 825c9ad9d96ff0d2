"""Evaluate a checkpoint on a whole split, streaming it with the memory carried across calls.

    python eval.py --checkpoint runs/tiny/best.pt --split test [--batch-size 1] [--tgt-len N]
                   [--max-tokens N] [--data-dir data] [--out result.json] [--results FILE]
    python eval.py --checkpoint runs/tiny/best.pt --text FILE (or - for stdin) [--reset-every K]
    python eval.py --checkpoint runs/xl/best.pt --mem-len 2100 --clamp-len 820 --same-length
    torchrun --nproc_per_node 2 eval.py ...      (lanes shared among processes, the same numbers)
    infini-eval ...                              (installed: pip install .)

`--text` scores any file with the checkpoint's own vocabulary and data protocol. Words a word-level
vocabulary lacks are read as `<unk>`, as in the prepared splits (so a file equal to a split scores the
same as `--split`); bytes or characters a vocabulary lacks are skipped. Both are counted and reported.
`--reset-every K` resets every lane's long-term memory every K segments (K = 1: each segment sees only
itself). `--mem-len`, `--clamp-len` and
`--same-length` are Transformer-XL's evaluation-time settings, for xl checkpoints.

Defaults come from the checkpoint's `eval` config: `eval.batch_size` lanes (tiny.yaml: 4; the enwik8,
text8 and wt103 configs: 10; a config without it: 1, the split as one stream with one memory, the most
faithful number) and `eval.tgt_len`, else the training `data.tgt_len`. Transformer-XL's own protocol
evaluates 10 lanes (`--batch-size 10`); more lanes are faster but each lane starts with an empty memory.
Prints bpc (byte/char vocabularies) or perplexity (word vocabularies), tokens evaluated and settings.
`--results FILE` also writes them as a results record (the numbers, the commit, the checkpoint's config,
the command, the machine, the wall time; infiniattention/training/results.py).
"""

from __future__ import annotations

import argparse
import json
import time

from data_utils.startup import heavy_imports

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    from infiniattention.training import results
    from infiniattention.training.cli import (
        RERUN,
        ArgumentParser,
        check_eval_args,
        check_lanes,
        check_results_file,
        cli_entry,
        exit_with,
    )
    from infiniattention.training.distributed import DistEnv, setup, teardown
    from infiniattention.training.errors import DiskFullError, UserError
    from infiniattention.training.evaluate import (
        evaluate,
        load_for_inference,
        load_stream,
        precision_autocast,
    )
    from infiniattention.training.metrics import quality


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags; `prog` names the program in the usage line (default: the name it was started by)."""
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file (e.g. runs/tiny/best.pt); required")
    p.add_argument("--split", choices=("train", "valid", "test"), help="a prepared split (default: test)")
    p.add_argument("--text", metavar="FILE",
                   help="score this file instead of a split ('-': stdin; default: none)")
    p.add_argument("--reset-every", type=int, metavar="K",
                   help="reset every lane's long-term memory every K segments (1: no memory; default: never)")
    p.add_argument("--mem-len", type=int,
                   help="xl checkpoints: cached hidden states per layer (default: the checkpoint's)")
    p.add_argument("--clamp-len", type=int,
                   help="xl positions: clamp relative distances (-1: none; default: the checkpoint's)")
    p.add_argument("--same-length", action=argparse.BooleanOptionalAction, default=None,
                   help="xl checkpoints: every query sees the last mem-len keys (Transformer-XL's test mask; "
                   "default: the checkpoint's)")
    p.add_argument("--data-dir", help="root of the prepared corpora (default: the checkpoint's data_dir)")
    p.add_argument("--dataset", help="prepared corpus name (default: the checkpoint's data.dataset)")
    p.add_argument("--batch-size", type=int, help="lanes (default: the checkpoint's eval.batch_size, "
                   "1 when its config does not set it)")
    p.add_argument("--tgt-len", type=int,
                   help="tokens per lane per call (default: eval.tgt_len, else data.tgt_len)")
    p.add_argument("--max-tokens", type=int, help="stop after this many targets (default: the whole split)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when a GPU is visible, else cpu (default: %(default)s)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="autocast precision of the forward passes (default: %(default)s)")
    p.add_argument("--out", metavar="FILE", help="also write the result as JSON to this file (default: none)")
    p.add_argument("--results", metavar="FILE",
                   help="also write the result as a results record (the numbers, the commit, the config, the "
                   "command, the machine, the wall time), e.g. results/demo/test.json (default: none)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="evaluate a split whose file differs from the one the checkpoint was trained on "
                        "(refused otherwise; the result then says so) (default: off)")
    return p


@cli_entry(on_interrupt=RERUN)
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    check_eval_args(args)  # before any work: a bad value or a missing --out folder costs nothing
    check_results_file("--results", args.results)
    env = setup(args.device)  # joins the process group under torchrun
    try:
        return run(args, env)
    finally:
        teardown()


def run(args: argparse.Namespace, env: DistEnv) -> int:
    """Load, score and report; `main` owns the process group."""
    try:
        overrides = {"mem_len": args.mem_len, "clamp_len": args.clamp_len, "same_length": args.same_length}
        model, vocab, cfg, ckpt = load_for_inference(args.checkpoint, env.device, overrides)
        data, label, extra = load_stream(
            ckpt, cfg, split=args.split, text=args.text, data_dir=args.data_dir, dataset=args.dataset,
            checkpoint=args.checkpoint, allow_data_change=args.allow_data_change,
        )
    except (FileNotFoundError, ValueError) as err:  # a missing file, a flag that does not apply
        raise UserError(str(err)) from err
    batch_size = args.batch_size or cfg.eval.batch_size
    tgt_len = args.tgt_len or cfg.eval.tgt_len or cfg.data.tgt_len
    check_lanes(len(data), batch_size, label)
    autocast = precision_autocast(env.device, args.precision)
    t0 = time.time()
    res = evaluate(model, data, batch_size=batch_size, tgt_len=tgt_len, device=env.device,
                   max_tokens=args.max_tokens, autocast=autocast, env=env, reset_every=args.reset_every)
    seconds = time.time() - t0
    name, value = quality(res.nll, vocab.kind)
    m = cfg.model
    result = {
        "checkpoint": args.checkpoint, "step": int(ckpt["step"]), **extra, "loss": res.nll, name: value,
        "tokens": res.tokens, "batch_size": batch_size, "tgt_len": tgt_len, "memory": m.memory,
        "segment_len": m.segment_len, "reset_every": args.reset_every, "precision": args.precision,
        "world_size": env.world_size, "seconds": round(seconds, 2),
    }
    settings = f"memory {m.memory}, segment {m.segment_len}"
    if m.memory == "xl":
        result.update(mem_len=m.mem_len, clamp_len=m.clamp_len, same_length=m.same_length)
        settings += f", mem_len {m.mem_len}, clamp_len {m.clamp_len}, same_length {m.same_length}"
    if args.reset_every is not None:
        settings += f", memory reset every {args.reset_every} segment(s)"
    result["segment_loss"] = res.segment_nll
    if env.is_main:
        unknown = ""
        if "unknown" in extra:
            share = 100 * extra["unknown_share"]
            what = "word(s)" if vocab.kind == "word" else "symbol(s)"
            fate = "skipped" if extra["unknown_as"] == "skipped" else f"read as {extra['unknown_as']}"
            unknown = (f" | {extra['unknown']:,} unknown {what} {fate} ({share:.2f}% of the file's "
                       f"{extra['symbols']:,})")
        print(f"{label}: {name} {value:.4f} (loss {res.nll:.4f} nats/token) over {res.tokens:,} tokens"
              f"{unknown} | {batch_size} lane(s) x {tgt_len} tokens per call | {settings} | "
              f"step {result['step']} | {seconds:.1f}s")
        if args.out:
            write_result(args.out, result)
        if args.results:
            rec = results.record("eval", result, config=ckpt.get("config"), wall_s=seconds, device=env.device)
            print(f"wrote {results.write_result(args.results, rec)}")
    return 0


def write_result(path: str, result: dict) -> None:
    """--out: the result as JSON; a failed write is one line (the result above is printed already, so
    there is nothing to resume: the advice is to run the evaluation again)."""
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    except OSError as err:
        if DiskFullError.matches(err):
            err.filename = err.filename or path
            raise DiskFullError.from_os_error(err, advice="free some space and run the evaluation again") \
                from err
        raise UserError(f"--out {path} cannot be written: {err.strerror}") from err


def console() -> None:
    """The installed `infini-eval` command."""
    exit_with(main())


if __name__ == "__main__":
    exit_with(main(prog="python -m infiniattention.commands.eval"))
