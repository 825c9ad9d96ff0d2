"""Continue a prompt with a trained checkpoint: `python scripts/generate.py --help`.

The program is infiniattention/commands/generate.py (installed as `infini-generate`); this file keeps
`python scripts/generate.py` working from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from infiniattention.commands.generate import build_parser, console, main  # noqa: E402,F401

if __name__ == "__main__":
    console()
