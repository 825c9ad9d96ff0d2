"""Train an Infini-attention (or XL / local-only baseline) language model: `python train.py --help`.

The program is infiniattention/commands/train.py (installed as `infini-train`); this file keeps
`python train.py` and `torchrun ... train.py` working from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under python -I or -P (no script folder)

from infiniattention.commands.train import build_parser, main, resume_command  # noqa: E402,F401 (importable here)
from infiniattention.training.cli import exit_with  # noqa: E402

if __name__ == "__main__":
    exit_with(main())
