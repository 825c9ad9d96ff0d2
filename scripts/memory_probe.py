"""Memory probe: how much of a passkey the compressive memory still holds after L tokens.

    python scripts/memory_probe.py --checkpoint runs/passkey/infini/stage2/ckpt_00002500.pt
        [--lengths 2k,8k,32k,128k,1m] [--depth 0] [--keys 4] [--haystack filler|text]
        [--haystack-split valid] [--tgt-len 4096] [--out-dir DIR]

For each length, every instance is streamed twice, as two lanes: with its key and with another key
(everything else equal). At the last question token each layer's memory read (eq. 7) is computed
against the memory that token reads, and the probe reports, per layer:

- trace: ``|A_mem(key) - A_mem(other)| / |A_mem(key)|`` (L2 norms over the value dimension, mean over
  heads and keys): how much of what the memory returns at the question depends on the key. The paper's
  memory dilutes the key's write among every later write, so its trace falls with the length;
- den: ``phi(Q) z`` at that token (mean over heads and lanes), the normaliser of eq. 7, which for the
  paper's memory grows with every token written;
- gate: the mean write gate ``beta`` over the prompt (``write_gate`` models; "-" otherwise);
  ``gate@hay``, its mean over the haystack (the filler or text around the key sentence: what the memory
  should not keep), ``gate@key``, its mean over the tokens of the key sentence, and ``key/hay``, their
  ratio (the contrast that decides how long the key survives the haystack's writes).

Writes memory_probe.md, memory_probe.json and, with matplotlib (``pip install -e .[plots]``),
memory_probe.png (trace against length, one line per layer) to ``--out-dir`` (default: a
``memory_probe`` folder next to the checkpoint).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import numpy as np
    import torch

    from data_utils.corpus import get_corpus
    from data_utils.passkey import (
        N_DIGITS,
        Haystack,
        PasskeyError,
        PasskeyInstance,
        PasskeyTokens,
        make_instance,
        parse_depth,
        parse_length,
    )
    from infiniattention.model import InfiniTransformerLM, ModelState
    from infiniattention.training import results
    from infiniattention.training.cli import (
        RERUN,
        ArgumentParser,
        check_out_dir,
        check_results_file,
        cli_entry,
        exit_with,
    )
    from infiniattention.training.distributed import select_device
    from infiniattention.training.errors import UserError
    from infiniattention.training.evaluate import load_for_inference
    from infiniattention.training.plots import pyplot, write_report


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="an infini-memory checkpoint")
    p.add_argument("--lengths", default="2k,8k,32k,128k,1m",
                   help="instance lengths, suffixes k (x1024) and m (x1048576) (default: %(default)s)")
    p.add_argument("--depth", default="0", help="depth of the key in [0, 1]; 0 puts it farthest from the "
                   "question (default: %(default)s)")
    p.add_argument("--keys", type=int, default=4, help="instances (keys) per length (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the keys (default: %(default)s)")
    p.add_argument("--haystack", default="filler", choices=("filler", "text"),
                   help="the filler sentences or ordinary text of --haystack-split (default: %(default)s)")
    p.add_argument("--haystack-split", default="valid", choices=("train", "valid", "test"),
                   help="split of the checkpoint's dataset for --haystack text (default: %(default)s)")
    p.add_argument("--tgt-len", "--chunk-len", dest="chunk_len", type=int, default=4096, metavar="N",
                   help="tokens per lane per call, rounded up to whole segments (default: %(default)s; "
                   "--chunk-len is the old name)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run (default: %(default)s)")
    p.add_argument("--out-dir", help="folder for memory_probe.md/.json/.png (default: memory_probe/ next to "
                   "the checkpoint)")
    p.add_argument("--results", metavar="FILE",
                   help="also write the result as a results record (its numbers, the commit, the config, "
                   "the command, the machine, the wall time): e.g. "
                   "results/passkey/ROW/seed-S/probe-filler.json")
    return p


def other_key(key: str) -> str:
    """A key that differs from ``key`` in every digit (each digit + 5 mod 10)."""
    return "".join(str((int(c) + 5) % 10) for c in key)


class _LastInputs:
    """Forward pre-hooks on every layer's attention that keep the input of the last position seen."""

    def __init__(self, model: InfiniTransformerLM) -> None:
        self.x: dict[int, torch.Tensor] = {}
        self._hooks = [block.attn.register_forward_pre_hook(self._keep(i))
                       for i, block in enumerate(model.blocks)]

    def _keep(self, layer: int):
        def hook(module, args):
            self.x[layer] = args[0][:, -1:].detach()
        return hook

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


class _GateMeans:
    """Forward hooks on every write gate: the sum and count of beta over all tokens, over the key
    sentence (stream positions ``key = (lo, hi)``) and over the haystack (``hay``: the filler or text
    before and after the key sentence, which is everything the memory should not keep)."""

    def __init__(self, model: InfiniTransformerLM, key: tuple[int, int],
                 hay: list[tuple[int, int]]) -> None:
        self.spans = {"key": [key], "hay": hay}
        self.pos = 0
        self.sums: dict[str, dict[int, list[float]]] = {"all": {}, "key": {}, "hay": {}}
        self._hooks = []
        for i, block in enumerate(model.blocks):
            gate = getattr(block.attn, "write_gate", None)
            if gate is not None:
                self._hooks.append(gate.register_forward_hook(self._record(i)))

    def advance(self, n: int) -> None:
        self.pos += n

    def _add(self, which: str, layer: int, beta: torch.Tensor) -> None:
        acc = self.sums[which].setdefault(layer, [0.0, 0])
        acc[0] += float(beta.sum())
        acc[1] += beta.numel()

    def _record(self, layer: int):
        def hook(module, args, logits):
            beta = torch.sigmoid(logits.detach().double())  # [B, T, H]
            self._add("all", layer, beta)
            for which, spans in self.spans.items():
                for a, b in spans:
                    lo, hi = max(a - self.pos, 0), min(b - self.pos, beta.size(1))
                    if lo < hi:
                        self._add(which, layer, beta[:, lo:hi])
        return hook

    def means(self, which: str) -> dict[int, float]:
        return {i: s / n for i, (s, n) in self.sums[which].items() if n}

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


@torch.no_grad()
def probe_length(model: InfiniTransformerLM, insts: list[PasskeyInstance], chunk_len: int,
                 device: torch.device) -> dict:
    """Stream ``insts`` (one lane each: an instance with its key, then the same with another key, for
    every key) to the start of the last question token's segment, read each layer's memory for that
    token, and return per-layer trace, normaliser and gate means."""
    N = model.config.segment_len
    prompt = insts[0].prompt_len
    boundary = (prompt - 1) // N * N  # the last token's segment starts here: it reads the memory of then
    first = insts[0]
    key_lo = first.key_pos - len(first.tok.key_parts[0])
    key_hi = first.copy_pos + N_DIGITS + len(first.tok.key_parts[2])
    hay_lo = len(first.tok.preamble)
    hay_hi = key_hi + first.filler_len - first.filler_before
    gates = _GateMeans(model, (key_lo, key_hi), [(hay_lo, key_lo), (key_hi, hay_hi)])
    state = model.init_state(len(insts), device)
    streams = [i.chunks(chunk_len, stop=boundary) for i in insts] if boundary else []
    for pieces in zip(*streams, strict=True):
        x = torch.from_numpy(np.stack(pieces)).to(device)
        state = model(x, state=state).state
        gates.advance(x.size(1))
    memories = state
    inputs = _LastInputs(model)
    tail = torch.from_numpy(np.stack([np.concatenate(list(i.chunks(chunk_len, boundary, prompt)))
                                      for i in insts])).to(device)
    model(tail, state=state)
    inputs.close()
    gates.close()
    hay, key = gates.means("hay"), gates.means("key")
    return {"layers": [_layer_row(model, memories, inputs.x, i) for i in range(len(model.blocks))],
            "gate": gates.means("all"), "gate_key": key, "gate_haystack": hay,
            "gate_ratio": {i: key[i] / max(hay[i], 1e-300) for i in key if i in hay}}


def _layer_row(model: InfiniTransformerLM, state: ModelState, inputs: dict[int, torch.Tensor],
               i: int) -> dict:
    # a_mem [2K, H, 1, d], den [2K, H, 1]
    a_mem, den = model.blocks[i].attn.read_memory(inputs[i], state.layers[i].memory)
    a_mem, den = a_mem[:, :, 0].double(), den[:, :, 0].double()
    mine, other = a_mem[0::2], a_mem[1::2]  # lanes alternate: the key, then the other key
    norm = mine.norm(dim=-1)  # [K, H]
    trace = (mine - other).norm(dim=-1) / norm.clamp_min(1e-30)
    return {"trace": float(trace.mean()), "trace_per_head": trace.mean(0).tolist(),
            "read_norm": float(norm.mean()), "den": float(den[0::2].mean())}


def run(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """The probe's result, and the checkpoint's resolved config."""
    lengths = [parse_length(t) for t in args.lengths.split(",") if t.strip()]
    depth = parse_depth(args.depth)
    if args.keys < 1 or args.chunk_len < 1:
        raise PasskeyError(f"--keys and --tgt-len must be positive, got {args.keys} and {args.chunk_len}")
    device = select_device(args.device, 0)
    model, vocab, cfg, ckpt = load_for_inference(args.checkpoint, device)
    if cfg.model.memory != "infini":
        raise UserError(f"{args.checkpoint} has memory {cfg.model.memory}: the probe reads the compressive "
                        "memory of an infini checkpoint")
    tok = PasskeyTokens(vocab)
    haystack = None
    if args.haystack == "text":
        corpus = get_corpus(cfg.data.data_dir, cfg.data.dataset)
        haystack = Haystack(f"{cfg.data.dataset}/{args.haystack_split}", corpus.split(args.haystack_split))
    N = cfg.model.segment_len
    chunk = -(-args.chunk_len // N) * N
    rows = []
    t0 = time.time()
    for length in lengths:
        insts = []
        for j in range(args.keys):
            inst = make_instance(tok, length, depth, args.seed + 7919 * j, haystack=haystack)
            insts += [inst, make_instance(tok, length, depth, args.seed + 7919 * j, key=other_key(inst.key),
                                          haystack=haystack)]
        res = probe_length(model, insts, chunk, device)
        rows.append({"length": length, **res})
        print(f"length {length:>9,}: trace " + " ".join(f"L{i} {r['trace']:.3g}" for i, r in
                                                         enumerate(res["layers"]))
              + " | den " + " ".join(f"{r['den']:.3g}" for r in res["layers"]), flush=True)
    return {"checkpoint": str(args.checkpoint), "step": int(ckpt["step"]), "memory": cfg.model.memory_label(),
            "segment_len": N, "depth": depth, "keys": args.keys, "seed": args.seed,
            "haystack": "filler" if haystack is None else haystack.name, "lengths": lengths, "rows": rows,
            "seconds": round(time.time() - t0, 1)}, ckpt.get("config")


def _fmt_len(n: int) -> str:
    if n % 2**20 == 0:
        return f"{n // 2**20}M"
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def markdown(res: dict) -> str:
    n_layers = len(res["rows"][0]["layers"])
    head = "| length | " + " | ".join(f"layer {i}: trace / den / gate@hay / gate@key / key/hay"
                                      for i in range(n_layers)) + " |"
    out = [f"Memory probe: {res['checkpoint']} (step {res['step']}, memory {res['memory']}, segment "
           f"{res['segment_len']}), haystack {res['haystack']}, key at depth {res['depth']:g}, "
           f"{res['keys']} key(s) per length.", "",
           "trace: |A_mem(key) - A_mem(other key)| / |A_mem(key)| at the last question token (mean over "
           "heads and keys); den: phi(Q) z there; gate@hay: mean write gate over the haystack; gate@key: "
           "over the key sentence; key/hay: their ratio.", "", head, "|---" * (n_layers + 1) + "|"]
    for r in res["rows"]:
        cells = []
        for i, lay in enumerate(r["layers"]):
            gates = [r.get(name, {}).get(i) for name in ("gate_haystack", "gate_key", "gate_ratio")]
            cells.append(f"{lay['trace']:.3g} / {lay['den']:.3g} / "
                         + " / ".join(f"{g:.3g}" if g is not None else "-" for g in gates))
        out.append(f"| {_fmt_len(r['length'])} | " + " | ".join(cells) + " |")
    best = max(range(n_layers), key=lambda i: res["rows"][0]["layers"][i]["trace"])
    first, last = res["rows"][0], res["rows"][-1]
    t0, t1 = first["layers"][best]["trace"], last["layers"][best]["trace"]
    out += ["", f"Layer {best} carries the key most at {_fmt_len(first['length'])}: its trace goes from "
            f"{t0:.3g} to {t1:.3g} at {_fmt_len(last['length'])} ({t0 / max(t1, 1e-30):.2f}x lower)."]
    return "\n".join(out) + "\n"


def plot(res: dict, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.8))
    lengths = [r["length"] for r in res["rows"]]
    for i in range(len(res["rows"][0]["layers"])):
        ax.plot(lengths, [r["layers"][i]["trace"] for r in res["rows"]], "o-", label=f"layer {i}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("instance length (tokens)")
    ax.set_ylabel("trace of the key in the memory read")
    ax.set_title(f"{res['memory']}, haystack {res['haystack']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


@cli_entry(on_interrupt=RERUN)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent / "memory_probe"
    check_out_dir("--out-dir", out_dir)  # before the streams, which can take long
    check_results_file("--results", args.results)
    t0 = time.time()
    try:
        res, config = run(args)
    except PasskeyError as err:
        raise UserError(str(err)) from err
    write_report(out_dir, "memory_probe", markdown(res), res, plot)
    if args.results:
        rec = results.record("memory_probe", res, config=config, wall_s=time.time() - t0)
        print(f"wrote {results.write_result(args.results, rec)}")
    return 0


if __name__ == "__main__":
    exit_with(main())
