"""Passkey retrieval, training and evaluation: `python scripts/passkey.py --help`.

The program is infiniattention/commands/passkey.py (installed as `infini-passkey`); this file keeps
`python scripts/passkey.py` working from a checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from infiniattention.commands.passkey import (  # noqa: E402,F401 (importable here)
    build_parser,
    heatmap,
    load_passkey_config,
    main,
)
from infiniattention.training.cli import exit_with  # noqa: E402

if __name__ == "__main__":
    exit_with(main())
