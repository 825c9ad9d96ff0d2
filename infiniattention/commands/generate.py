"""Continue a prompt with a trained checkpoint (model and vocabulary both come from the file).

    python scripts/generate.py --checkpoint runs/tiny/best.pt --prompt "The " --max-new-tokens 200
    infini-generate ...                   (installed: pip install .)

The text is printed as it is generated, in constant memory, however many tokens are asked for. A
word-level model's text is words joined by spaces (its prompt is shown as the model reads it, with
`<unk>` for words the vocabulary lacks); prompt symbols the vocabulary lacks are named on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

from data_utils.startup import heavy_imports

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import torch

    from data_utils.vocab import UNK, TextStream, Vocab
    from infiniattention.generation import generate_stream
    from infiniattention.training.cli import RERUN, ArgumentParser, check_sampling_args, cli_entry, exit_with
    from infiniattention.training.distributed import select_device
    from infiniattention.training.errors import UserError
    from infiniattention.training.evaluate import load_for_inference

FLUSH_SECONDS = 0.5  # a pipe sees the text at least this often
SHOWN_UNKNOWN = 10  # unknown prompt symbols named on stderr; the rest are counted


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags; `prog` names the program in the usage line (default: the name it was started by)."""
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint file (e.g. runs/tiny/best.pt); required")
    p.add_argument("--prompt", default="",
                   help="text to continue (default: empty, start from the most frequent symbol)")
    p.add_argument("--max-new-tokens", type=int, default=200,
                   help="tokens to generate (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="divide the logits by this; 0 is greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, help="sample among the k most likely tokens (default: all)")
    p.add_argument("--top-p", type=float,
                   help="sample among the most likely tokens whose probability reaches p (default: all)")
    p.add_argument("--greedy", action="store_true",
                   help="always take the most likely token (default: sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda when a GPU is visible, else cpu (default: %(default)s)")
    return p


def prompt_ids(vocab: Vocab, prompt: str) -> list[int]:
    """The prompt's token ids; symbols the vocabulary lacks are named in one line on stderr (a word
    vocabulary reads them as `<unk>`, and refuses them when it has no `<unk>`; others drop them)."""
    unknown = vocab.unknown(prompt)
    if unknown:
        names = ", ".join(map(repr, unknown[:SHOWN_UNKNOWN]))
        names += f" and {len(unknown) - SHOWN_UNKNOWN} more" if len(unknown) > SHOWN_UNKNOWN else ""
        if vocab.kind == "word" and vocab.unk_id is None:
            raise UserError(f"the prompt has {len(unknown)} word(s) that the vocabulary lacks and it has no "
                            f"{UNK} to read them as: {names}; use words of the training text")
        fate = f"read as {UNK}" if vocab.kind == "word" else "dropped"
        kind = "word(s)" if vocab.kind == "word" else "symbol(s)"
        print(f"warning: {len(unknown)} prompt {kind} not in the vocabulary, {fate}: {names}",
              file=sys.stderr)
    return vocab.encode_text(prompt)


@cli_entry(on_interrupt=RERUN)
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    check_sampling_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    device = select_device(args.device, 0)
    model, vocab, _, _ = load_for_inference(args.checkpoint, device)
    ids = prompt_ids(vocab, args.prompt)
    # A word model's prompt is shown as it reads it: words joined by single spaces, <unk> included.
    shown = vocab.decode(ids) if vocab.kind == "word" else args.prompt
    if not ids:  # an empty prompt starts from the most frequent symbol (id 0 in every vocabulary kind)
        ids = [0]
    prompt = torch.tensor([ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    text = TextStream(vocab, after=ids)
    out = sys.stdout
    out.write(shown)
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


def console(prog: str | None = None) -> None:
    """The installed `infini-generate` command; `generate.py | head` ends quietly."""
    try:
        exit_with(main(prog=prog))
    except BrokenPipeError:  # the reader has what it wanted
        exit_with(0)


if __name__ == "__main__":
    console(prog="python -m infiniattention.commands.generate")
