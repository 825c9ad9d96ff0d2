#!/usr/bin/env bash
# Create or reuse .venv and install what the project needs (PYTHON=python3.11 picks the interpreter the
# venv is made from). torch: a torch >= 2.4 that the venv already sees (its own, or the system's through
# --system-site-packages: a cluster's CUDA build) is kept as it is. Otherwise torch==2.13.0 is installed
# from PyTorch's CPU index (TORCH_INDEX_URL, default https://download.pytorch.org/whl/cpu), so a machine
# without a GPU never pulls a multi-GB CUDA build; for a CUDA build set TORCH_INDEX_URL, e.g.
# https://download.pytorch.org/whl/cu128 (PyPI's own Linux wheel, TORCH_INDEX_URL=https://pypi.org/simple,
# is a CUDA build too). The last line says which torch the venv has.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BASE=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    # --system-site-packages lets a cluster's preinstalled CUDA torch be reused.
    "$BASE" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
if ! "$VPY" - <<'PYEOF' 2>/dev/null
import sys
import torch
major, minor = (int(x) for x in torch.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
PYEOF
then
    index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
    echo "[setup] installing torch==2.13.0 from $index"
    "$VPY" -m pip install -q torch==2.13.0 --index-url "$index"
fi
"$VPY" -m pip install -q -r requirements-dev.txt
"$VPY" - <<'PYEOF'
import os
import torch
cuda = torch.version.cuda or "none, CPU only"
print(f"[setup] .venv has torch {torch.__version__} (CUDA {cuda}) from {os.path.dirname(torch.__path__[0])}")
PYEOF
