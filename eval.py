"""Evaluate a checkpoint on a whole split or a text file: `python eval.py --help`.

The program is infiniattention/commands/eval.py (installed as `infini-eval`); this file keeps
`python eval.py` and `torchrun ... eval.py` working from a checkout.
"""

from infiniattention.commands.eval import build_parser, main, run  # noqa: F401 (importable here)
from infiniattention.training.cli import exit_with

if __name__ == "__main__":
    exit_with(main())
