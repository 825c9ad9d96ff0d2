"""Evaluate a checkpoint on a whole split or a text file: `python eval.py --help`.

The program is infiniattention/commands/eval.py (installed as `infini-eval`); this file keeps
`python eval.py` and `torchrun ... eval.py` working from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under python -I or -P (no script folder)

from infiniattention.commands.eval import build_parser, main, run  # noqa: E402,F401 (importable here)
from infiniattention.training.cli import exit_with  # noqa: E402

if __name__ == "__main__":
    exit_with(main())
