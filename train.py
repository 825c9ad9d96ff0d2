"""Train an Infini-attention (or XL / local-only baseline) language model: `python train.py --help`.

The program is infiniattention/commands/train.py (installed as `infini-train`); this file keeps
`python train.py` and `torchrun ... train.py` working from a checkout.
"""

from infiniattention.commands.train import build_parser, main, resume_command  # noqa: F401 (importable here)
from infiniattention.training.cli import exit_with

if __name__ == "__main__":
    exit_with(main())
