#!/usr/bin/env bash
# Download, verify and prepare corpora into data/<name>/ (every flag and protocol: docs/data.md):
#   bash getdata.sh                      # enwik8 text8 wikitext-2 wikitext-103
#   bash getdata.sh enwik8-sample        # the bundled 1 MB excerpt, no network
#   bash getdata.sh enwik8 --protocol bytes --mirror /shared/archives
#   PY=/path/to/python bash getdata.sh ...   # another interpreter (default: .venv, else python3)
# A thin wrapper: all logic lives in data_utils/prepare.py (installed: infini-getdata).
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
. "$root/scripts/python.sh"
require_modules numpy tqdm
# PYTHONPATH instead of cd: relative paths (--data-dir, --input) stay relative to the caller.
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m data_utils.prepare "$@"
