"""Continue a prompt with a trained checkpoint (model and vocabulary both come from the file).

    python scripts/generate.py --checkpoint runs/tiny/best.pt --prompt "The " --max-new-tokens 200

The text is printed as it is generated, in constant memory, however many tokens are asked for.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from infiniattention.generation import TextStream, generate_stream  # noqa: E402
from infiniattention.training.cli import (  # noqa: E402
    ArgumentParser,
    check_sampling_args,
    cli_entry,
    exit_with,
)
from infiniattention.training.distributed import select_device  # noqa: E402
from infiniattention.training.evaluate import load_for_inference  # noqa: E402

FLUSH_SECONDS = 0.5  # a pipe sees the text at least this often


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", default="", help="text to continue (symbols the vocabulary lacks are dropped)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_sampling_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    device = select_device(args.device, 0)
    model, vocab, _, _ = load_for_inference(args.checkpoint, device)
    ids = vocab.encode_text(args.prompt)
    if not ids:  # an empty prompt starts from the most frequent symbol (id 0 in every vocabulary kind)
        ids = [0]
    prompt = torch.tensor([ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    text = TextStream(vocab)
    out = sys.stdout
    out.write(args.prompt)
    last_flush = time.monotonic()
    for token in generate_stream(model, prompt, args.max_new_tokens, temperature=args.temperature,
                                 top_k=args.top_k, top_p=args.top_p, greedy=args.greedy, generator=generator):
        out.write(text.push(int(token[0])))
        if time.monotonic() - last_flush > FLUSH_SECONDS:
            out.flush()
            last_flush = time.monotonic()
    out.write(text.finish() + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    try:
        exit_with(main())
    except BrokenPipeError:  # `generate.py | head`: the reader has what it wanted
        exit_with(0)
