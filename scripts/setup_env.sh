#!/usr/bin/env bash
# Create or reuse .venv and install what the project needs (PYTHON=python3.11 picks the interpreter the
# venv is made from). torch: a torch >= 2.4 that the venv already sees (its own, or the system's through
# --system-site-packages: a cluster's CUDA build) is kept as it is. Otherwise torch==2.13.0 is installed
# from PyTorch's CPU index (TORCH_INDEX_URL, default https://download.pytorch.org/whl/cpu), so a machine
# without a GPU never pulls a multi-GB CUDA build; for a CUDA build set TORCH_INDEX_URL, e.g.
# https://download.pytorch.org/whl/cu128 (PyPI's own Linux wheel, TORCH_INDEX_URL=https://pypi.org/simple,
# is a CUDA build too). When that index cannot be reached, pip's own sources are used (PyPI, or the
# find-links and indexes of your pip configuration), and one line says where torch came from. pip runs
# quietly: its errors show, its retry warnings do not. The last lines say which torch the venv has and
# how to use it: `source .venv/bin/activate` (or call .venv/bin/python) before `python train.py ...`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
BASE=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    # --system-site-packages lets a cluster's preinstalled CUDA torch be reused.
    "$BASE" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
pip_quiet() { "$VPY" -m pip "$@" -qq --disable-pip-version-check; }

if ! "$VPY" - <<'PYEOF' 2>/dev/null
import sys
import torch
major, minor = (int(x) for x in torch.__version__.split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 4) else 1)
PYEOF
then
    index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
    from=(--index-url "$index")
    if ! "$VPY" - "$index" <<'PYEOF' 2>/dev/null
import sys
import urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10).close()
PYEOF
    then
        echo "[setup] $index cannot be reached: installing torch==2.13.0 from pip's own sources instead" \
             "(PyPI, or the find-links and indexes of your pip configuration)"
        from=()
    else
        echo "[setup] installing torch==2.13.0 from $index"
    fi
    report=$(mktemp)
    trap 'rm -f "$report"' EXIT
    report_args=()
    if "$VPY" -m pip install --help 2>/dev/null | grep -q -- --report; then
        report_args=(--report "$report")
    fi
    pip_quiet install torch==2.13.0 "${from[@]}" "${report_args[@]}"
    if [ ${#from[@]} -eq 0 ] && [ -s "$report" ]; then
        "$VPY" - "$report" <<'PYEOF'
import json
import sys
import urllib.parse
for item in json.load(open(sys.argv[1])).get("install", []):
    if item["metadata"]["name"].lower() == "torch":
        url = urllib.parse.unquote(item["download_info"]["url"])
        print(f"[setup] torch {item['metadata']['version']} came from {url}")
PYEOF
    fi
fi
pip_quiet install -r requirements-dev.txt
"$VPY" - <<'PYEOF'
import os
import torch
cuda = torch.version.cuda or "none, CPU only"
print(f"[setup] .venv has torch {torch.__version__} (CUDA {cuda}) from {os.path.dirname(torch.__path__[0])}")
PYEOF
echo "[setup] to use it: source .venv/bin/activate (or call .venv/bin/python), then python train.py ..."
