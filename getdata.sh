#!/usr/bin/env bash
# Download, verify and prepare corpora into data/<name>/ (see README.md, "Data"):
#   bash getdata.sh                      # enwik8 text8 wikitext-2 wikitext-103
#   bash getdata.sh enwik8-sample        # the bundled 1 MB excerpt, no network
#   bash getdata.sh enwik8 --protocol bytes --mirror /shared/archives
# A thin wrapper: all logic lives in data_utils/prepare.py.
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
if [ -x "$root/.venv/bin/python" ]; then PY="$root/.venv/bin/python"; else PY=python3; fi
# PYTHONPATH instead of cd: relative paths (--data-dir, --input) stay relative to the caller.
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m data_utils.prepare "$@"
