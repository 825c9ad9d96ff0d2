"""Correctness on an accelerator: the model on DEVICE against the same model in float64 on the CPU.

Checks, for every memory mode, that (1) one full forward on the device in float32 matches the float64
CPU forward, (2) streaming one token at a time on the device matches the device's full forward, and
(3) a long bf16 autocast stream stays finite with the memory kept in float32. Prints a table, writes
JSON, exits 1 on a failure.

    python bench/gpu_parity.py --device cuda --out bench/results/gpu_parity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    import torch

    from infiniattention import InfiniTransformerLM, ModelConfig, generate

MODES = {
    "infini-delta": dict(memory="infini", update="delta"),
    "infini-linear": dict(memory="infini", update="linear"),
    "infini-xlpos": dict(memory="infini", pos="xl"),
    "none": dict(memory="none"),
    "xl": dict(memory="xl", mem_len=24),
}


def check_mode(name: str, kw: dict, device: torch.device) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, n_layer=2, d_model=64, n_head=4, d_head=16, d_inner=128,
                      segment_len=16, dropout=0.0, **kw)
    ref = InfiniTransformerLM(cfg).double().eval()
    dev = InfiniTransformerLM(cfg).to(device).eval()
    dev.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    tokens = torch.randint(0, 97, (3, 16 * 6 + 5))
    with torch.no_grad():
        want = ref(tokens).logits
        got = dev(tokens.to(device)).logits
        full_vs_ref = (got.double().cpu() - want).abs().max().item()
        _, streamed = generate(dev, tokens[:, :7].to(device), 40, greedy=True, return_logits=True)
        new = generate(dev, tokens[:, :7].to(device), 40, greedy=True)
        full = dev(torch.cat([tokens[:, :7].to(device), new], dim=1)).logits[:, 6:46]
        stream_vs_full = (streamed - full).abs().max().item()
        state, finite = None, True
        with torch.autocast(device.type, dtype=torch.bfloat16):
            for _ in range(50):
                out = dev(torch.randint(0, 97, (3, 16 * 40), device=device), state=state)
                state = out.state
                finite &= bool(torch.isfinite(out.logits).all())
        mem_fp32 = all(layer.memory.M.dtype == torch.float32 for layer in state.layers if layer.memory)
    ok = full_vs_ref < 1e-4 and stream_vs_full < 1e-4 and finite and mem_fp32
    return dict(mode=name, full_vs_float64=full_vs_ref, stream_vs_full=stream_vs_full,
                bf16_32k_finite=finite, memory_float32=mem_fp32, ok=ok)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu_parity.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32, not TF32
    torch.backends.cudnn.allow_tf32 = False
    rows = [check_mode(name, kw, device) for name, kw in MODES.items()]
    print(f"{'mode':<14} {'full vs f64':>12} {'stream vs full':>15} {'bf16 finite':>12} {'M fp32':>7} ok")
    for r in rows:
        print(f"{r['mode']:<14} {r['full_vs_float64']:>12.2e} {r['stream_vs_full']:>15.2e} "
              f"{r['bf16_32k_finite']!s:>12} {r['memory_float32']!s:>7} {r['ok']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": str(device), "torch": torch.__version__, "rows": rows},
                                         indent=2))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
