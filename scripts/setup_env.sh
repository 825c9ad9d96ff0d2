#!/usr/bin/env bash
# Create or reuse .venv and install what the project needs.
# torch: an existing torch >= 2.4 (any CUDA build) is kept; otherwise the CPU wheel torch==2.13.0
# is installed, so a machine without a GPU never pulls a multi-GB CUDA build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    # --system-site-packages lets a cluster's preinstalled CUDA torch be reused.
    "$PY" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
if ! "$VPY" - <<'PYEOF' 2>/dev/null
import sys
import torch
major, minor = (int(x) for x in torch.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
PYEOF
then
    echo "[setup] installing torch==2.13.0"
    "$VPY" -m pip install -q torch==2.13.0
fi
"$VPY" -m pip install -q -r requirements-dev.txt
