"""Gate analysis: sigmoid(b) of every layer and head (eq. 10), as in the paper's Figure 3.

    python scripts/plot_gates.py --checkpoint runs/tiny/best.pt [--run-dir runs/tiny] [--out-dir DIR]
        [--results FILE]

Prints the gates as a table (layer x head, with each layer's spread) and writes gates.md, gates.json
and, with matplotlib (`pip install -e .[plots]`), gates.png, a heat-map: 1 means the head reads only
the compressive memory, 0 only local attention. With `--run-dir`, also the gate trajectories over
training, read from the run's TensorBoard logs (the trainer logs gate/layerL/headH at every log
interval): gate_trajectories.md / .json and gate_trajectories.png, and, for a model with a write gate,
the mean write gate per layer at the last validation (write_gate/layerL). `--results FILE` also writes
the gates (and those means) as a results record (e.g. results/gates/infini/seed-1111/gates.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_utils.startup import heavy_imports  # noqa: E402

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    from infiniattention.training import results
    from infiniattention.training.checkpoint import CheckpointError
    from infiniattention.training.cli import check_results_file
    from infiniattention.training.errors import UserError
    from infiniattention.training.evaluate import load_for_inference
    from infiniattention.training.plots import PLOTS_HINT, pyplot


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint of an infini-memory model; required")
    p.add_argument("--run-dir", help="also plot the gate trajectories from this run's TensorBoard logs "
                   "(default: none)")
    p.add_argument("--out-dir", help="where to write tables and plots (default: the checkpoint's folder)")
    p.add_argument("--results", metavar="FILE", help="also write the gates as a results record (the numbers, "
                   "the commit, the config, the command, the machine, the wall time; default: none)")
    return p


def gate_table(gates: list[list[float]]) -> str:
    n_head = len(gates[0])
    lines = ["| layer | " + " | ".join(f"head {h}" for h in range(n_head)) + " | min | max |",
             "|---|" + "---:|" * (n_head + 2)]
    for layer, row in enumerate(gates):
        cells = " | ".join(f"{g:.3f}" for g in row)
        lines.append(f"| {layer} | {cells} | {min(row):.3f} | {max(row):.3f} |")
    flat = [g for row in gates for g in row]
    lines.append(f"\nall heads: {min(flat):.3f} to {max(flat):.3f}")
    return "\n".join(lines) + "\n"


def plot_heatmap(gates: list[list[float]], title: str, path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    n_layer, n_head = len(gates), len(gates[0])
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * n_head, 1.0 + 0.6 * n_layer))
    im = ax.imshow(gates, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for layer in range(n_layer):
        for h in range(n_head):
            g = gates[layer][h]
            ax.text(h, layer, f"{g:.2f}", ha="center", va="center", color="white" if g < 0.6 else "black",
                    fontsize=8)
    ax.set_xticks(range(n_head))
    ax.set_yticks(range(n_layer))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="sigmoid(b): 1 = memory, 0 = local")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def read_scalars(run_dir: Path, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] of the run's TensorBoard scalars whose tag starts with `prefix`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} not found")
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = sorted(t for t in acc.Tags().get("scalars", []) if t.startswith(prefix))
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags}


def read_trajectories(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """`gate/layerL/headH` -> [(step, value)] from the run's TensorBoard event files."""
    traj = read_scalars(run_dir, "gate/")
    if not traj:
        raise ValueError(f"{run_dir} has no gate/layerL/headH scalars in its TensorBoard logs")
    return traj


def last_write_gates(run_dir: Path) -> dict[str, float] | None:
    """Layer -> the mean write gate at the run's last validation (TensorBoard write_gate/layerL), None
    for a model without a write gate."""
    series = read_scalars(run_dir, "write_gate/layer")
    return {t.removeprefix("write_gate/layer"): s[-1][1] for t, s in series.items() if s} or None


def trajectory_table(traj: dict[str, list[tuple[int, float]]]) -> str:
    """Per layer, the range of its heads' gates at a few steps of training."""
    steps = sorted({s for series in traj.values() for s, _ in series})
    picks = sorted({steps[round(f * (len(steps) - 1))] for f in (0.0, 0.25, 0.5, 0.75, 1.0)})
    layers = sorted({t.split("/")[1] for t in traj}, key=lambda name: int(name[5:]))
    lines = ["| layer | " + " | ".join(f"step {s:,}" for s in picks) + " |", "|---|" + "---|" * len(picks)]
    for layer in layers:
        cells = []
        for s in picks:
            vals = [v for t, series in traj.items() if t.split("/")[1] == layer
                    for st, v in series if st == s]
            cells.append(f"{min(vals):.2f}-{max(vals):.2f}" if vals else "")
        lines.append(f"| {layer[5:]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_trajectories(traj: dict[str, list[tuple[int, float]]], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    layers = sorted({t.split("/")[1] for t in traj}, key=lambda name: int(name[5:]))
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3), sharey=True, squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        for tag, series in traj.items():
            if tag.split("/")[1] == layer:
                ax.plot([s for s, _ in series], [v for _, v in series], label=tag.split("/")[2])
        ax.set_title(layer)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("sigmoid(b)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.time()
    try:
        check_results_file("--results", args.results)
        model, _, cfg, ckpt = load_for_inference(args.checkpoint)
        gates = model.gate_values()
        if gates is None:
            raise ValueError(f"{args.checkpoint} has memory {cfg.model.memory}: only infini models have "
                             "gates")
        traj = read_trajectories(Path(args.run_dir)) if args.run_dir else None
        write_gates = last_write_gates(Path(args.run_dir)) if args.run_dir else None
    except (FileNotFoundError, CheckpointError, ValueError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, CheckpointError) else 1  # a checkpoint refused: bad input
    out_dir = Path(args.out_dir) if args.out_dir else Path(args.checkpoint).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = gates.tolist()
    title = f"sigmoid(b), {Path(args.checkpoint).name} step {int(ckpt['step'])}"
    table = f"Gates {title}:\n\n" + gate_table(rows)
    print(table)
    (out_dir / "gates.md").write_text(table, encoding="utf-8")
    (out_dir / "gates.json").write_text(json.dumps({"checkpoint": args.checkpoint, "step": int(ckpt["step"]),
                                                    "gates": rows}, indent=1) + "\n", encoding="utf-8")
    written = [out_dir / "gates.md"]
    plotted = plot_heatmap(rows, title, out_dir / "gates.png")
    if traj is not None:
        ttable = f"Gate range per layer over training ({args.run_dir}):\n\n" + trajectory_table(traj)
        print(ttable)
        (out_dir / "gate_trajectories.md").write_text(ttable, encoding="utf-8")
        (out_dir / "gate_trajectories.json").write_text(json.dumps(traj) + "\n", encoding="utf-8")
        written.append(out_dir / "gate_trajectories.md")
        plotted = plot_trajectories(traj, out_dir / "gate_trajectories.png") and plotted
    names = ", ".join(str(p) for p in written)
    print(f"wrote {names} (+ .json" + (", .png)" if plotted else f"); {PLOTS_HINT}"))
    if args.results:
        res = {"checkpoint": args.checkpoint, "step": int(ckpt["step"]), "memory": cfg.model.memory_label(),
               "gates": rows, "write_gate": write_gates}
        rec = results.record("gates", res, config=ckpt.get("config"), wall_s=time.time() - start)
        print(f"wrote {results.write_result(args.results, rec)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
