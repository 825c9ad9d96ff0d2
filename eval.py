"""Evaluate a checkpoint on a whole split, streaming it with the memory carried across calls.

    python eval.py --checkpoint runs/tiny/best.pt --split test [--batch-size 1] [--tgt-len N]
                   [--max-tokens N] [--data-dir data] [--out result.json]

Defaults come from the checkpoint's `eval` config: 1 lane (the split is one stream with one memory,
the most faithful number) and `tgt_len` = the training `data.tgt_len`. Transformer-XL's own protocol
evaluates 10 lanes (`--batch-size 10`); more lanes are faster but each lane starts with an empty memory.
Prints bpc (byte/char vocabularies) or perplexity (word vocabularies), tokens evaluated and settings.
"""

from __future__ import annotations

import argparse
import json
import time

from data_utils.corpus import get_corpus
from infiniattention.training.checkpoint import CheckpointError
from infiniattention.training.cli import ArgumentParser, check_eval_args, check_lanes, cli_entry, exit_with
from infiniattention.training.distributed import select_device
from infiniattention.training.evaluate import evaluate, load_for_inference, precision_autocast
from infiniattention.training.metrics import quality


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (e.g. runs/tiny/best.pt)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--data-dir", help="root of the prepared corpora (default: the checkpoint's data_dir)")
    p.add_argument("--dataset", help="prepared corpus name (default: the checkpoint's data.dataset)")
    p.add_argument("--batch-size", type=int, help="lanes (default: the checkpoint's eval.batch_size)")
    p.add_argument("--tgt-len", type=int,
                   help="tokens per lane per call (default: eval.tgt_len, else data.tgt_len)")
    p.add_argument("--max-tokens", type=int, help="stop after this many targets (default: the whole split)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--out", help="also write the result as JSON to this file")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_eval_args(args)  # before any work: a bad value or a missing --out folder costs nothing
    device = select_device(args.device, 0)
    model, vocab, cfg, ckpt = load_for_inference(args.checkpoint, device)
    corpus = get_corpus(args.data_dir or cfg.data.data_dir, args.dataset or cfg.data.dataset)
    if corpus.vocab.digest() != ckpt["vocab_digest"]:
        raise CheckpointError(
            f"{args.checkpoint} was trained with another vocabulary than {corpus.path}: evaluate on the "
            "dataset and protocol it was trained on"
        )
    batch_size = args.batch_size or cfg.eval.batch_size
    tgt_len = args.tgt_len or cfg.eval.tgt_len or cfg.data.tgt_len
    check_lanes(len(corpus.split(args.split)), batch_size, f"{args.split} split")
    autocast = precision_autocast(device, args.precision)
    t0 = time.time()
    res = evaluate(model, corpus.split(args.split), batch_size=batch_size, tgt_len=tgt_len, device=device,
                   max_tokens=args.max_tokens, autocast=autocast)
    seconds = time.time() - t0
    name, value = quality(res.nll, vocab.kind)
    result = {
        "checkpoint": args.checkpoint, "step": int(ckpt["step"]), "dataset": corpus.name,
        "protocol": corpus.meta.get("protocol"), "split": args.split, "loss": res.nll, name: value,
        "tokens": res.tokens, "batch_size": batch_size, "tgt_len": tgt_len, "memory": cfg.model.memory,
        "segment_len": cfg.model.segment_len, "precision": args.precision, "seconds": round(seconds, 2),
    }
    print(f"{corpus.name} {args.split}: {name} {value:.4f} (loss {res.nll:.4f} nats/token) over "
          f"{res.tokens:,} tokens | {batch_size} lane(s) x {tgt_len} tokens per call | memory "
          f"{cfg.model.memory}, segment {cfg.model.segment_len} | step {result['step']} | {seconds:.1f}s")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    exit_with(main())
