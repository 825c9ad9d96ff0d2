#!/usr/bin/env bash
# Set up .venv (see scripts/setup_env.sh) and run the whole test suite, then ruff.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup_env.sh
.venv/bin/python -m ruff check .
.venv/bin/python -m pytest -q "$@"
