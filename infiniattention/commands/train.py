"""Train an Infini-attention (or XL / local-only baseline) language model.

    python train.py --config configs/tiny.yaml [--set optim.lr=1e-3 ...] [--run-dir runs/x]
    torchrun --nproc_per_node 8 train.py --config configs/enwik8_base.yaml
    infini-train --config tiny        (installed: pip install .; a shipped config by its name)
    torchrun --nproc_per_node 8 --no-python infini-train --config enwik8_base

`--results FILE`: once the run has finished, its final numbers (step, validation, test) as a results
record (the commit, the config, the command, the machine, the wall time of this command;
infiniattention/training/results.py).

Exit status: 0 when the run finished or stopped on SIGTERM/SIGINT/SIGHUP with a checkpoint (rerun the
same command to resume), 2 for a mistake in the input, 1 for a run that failed. See docs/training.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

from data_utils.startup import heavy_imports

with heavy_imports():  # torch: a missing requirement or a Ctrl-C meanwhile is one line
    from infiniattention.commands.shipped import config_path
    from infiniattention.training import results
    from infiniattention.training.cli import (
        STARTING,
        ArgumentParser,
        check_results_file,
        cli_entry,
        exit_with,
        stop_on_signals,
    )
    from infiniattention.training.config import load_training_config
    from infiniattention.training.distributed import teardown
    from infiniattention.training.trainer import Trainer

PROG = "train.py"  # how the resume command names this program (`infini-train` when installed)


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The flags; `prog` names the program in the usage line (default: the name it was started by)."""
    p = ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (sections model, data, optim, train, eval), or the name of "
                   "a shipped one (tiny, enwik8_base, ...); default: none, every value from --set and the "
                   "dataclass defaults")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (parsed as YAML); repeatable")
    p.add_argument("--run-dir", help="run folder (default: runs/<config file name>)")
    p.add_argument("--resume", default="auto",
                   help="auto (latest checkpoint of the run folder, if any), never (refused when the folder "
                        "holds checkpoints, unless --overwrite), or a checkpoint path (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a used run folder: its earlier files are moved into a sub-folder")
    p.add_argument("--allow-data-change", action="store_true",
                   help="train on data that differs from what the checkpoint was trained on, or that changed "
                        "since getdata.sh prepared it (refused otherwise); logged in train.log and "
                        "metrics.jsonl (default: off)")
    p.add_argument("--results", metavar="FILE",
                   help="when the run has finished, write its final numbers as a results record, e.g. "
                   "results/words/train.json (default: none)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar, log lines only (the default off a terminal: logs, SLURM, nohup)")
    return p


def resume_command(argv: list[str], prog: str = PROG) -> str:
    """The command that continues this run (`--resume auto` is the default, so it is the same one);
    `prog`: `train.py` (run with python), an installed command such as `infini-train`, or
    `python -m infiniattention.commands.train`.
    `--overwrite` and `--allow-data-change` are dropped: each applies to the start it was given to."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        if arg.startswith("--resume=") or arg in ("--overwrite", "--allow-data-change"):
            continue
        kept.append(arg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    script = prog.endswith(".py")
    launcher = "python" if script else ""
    if world > 1:  # the same torchrun launch (add your --nnodes / rendezvous options on several nodes)
        launcher = f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', world)}"
        if prog.startswith("python -m "):
            prog = prog.removeprefix("python ")  # torchrun -m MODULE
        elif not script:
            launcher += " --no-python"
    return " ".join(filter(None, [launcher, prog, *map(shlex.quote, kept)]))


@cli_entry
def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """The command line; user errors are one `error:` line and exit status 2 (1 for a failed run)."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(argv)
    check_results_file("--results", args.results)
    t0 = time.time()
    try:
        with stop_on_signals(STARTING):  # before the first step: one line, not a silent 143 (fit has its own)
            cfg = load_training_config(config_path(args.config) if args.config else None, args.set)
            name = Path(args.config).stem if args.config else "default"
            run_dir = Path(args.run_dir or Path("runs") / name)
            trainer = Trainer(cfg, run_dir, resume=args.resume, overwrite=args.overwrite,
                              command=resume_command(argv, prog), progress=not args.no_progress,
                              allow_data_change=args.allow_data_change)
            final = trainer.fit()
        if args.results and trainer.env.is_main and not final.get("stopped"):
            rec = results.record("train", {**final, "run_dir": str(run_dir)}, config=cfg.to_dict(),
                                 wall_s=time.time() - t0, device=trainer.device)
            print(f"wrote {results.write_result(args.results, rec)}")
    finally:
        teardown()
    return 0


def console() -> None:
    """The installed `infini-train` command."""
    exit_with(main(prog="infini-train"))


if __name__ == "__main__":
    exit_with(main(prog="python -m infiniattention.commands.train"))
