"""Continue a prompt with a trained checkpoint (model and vocabulary both come from the file).

    python scripts/generate.py --checkpoint runs/tiny/best.pt --prompt "The " --max-new-tokens 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from infiniattention.generation import generate  # noqa: E402
from infiniattention.training.checkpoint import CheckpointError  # noqa: E402
from infiniattention.training.distributed import select_device  # noqa: E402
from infiniattention.training.evaluate import load_for_inference  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", default="", help="text to continue (symbols the vocabulary lacks are dropped)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    try:
        device = select_device(args.device, 0)
        model, vocab, _, _ = load_for_inference(args.checkpoint, device)
    except (FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ids = vocab.encode_text(args.prompt)
    if not ids:  # an empty prompt starts from the most frequent symbol (id 0 in every vocabulary kind)
        ids = [0]
    prompt = torch.tensor([ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    new = generate(model, prompt, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, greedy=args.greedy, generator=generator)
    print(args.prompt + vocab.decode(new[0].tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
