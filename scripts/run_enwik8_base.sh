#!/usr/bin/env bash
# enwik8, Transformer-XL base shape, on all GPUs of one node (torchrun). Extra arguments go to train.py:
#   CONFIG=configs/enwik8_base_xl.yaml NGPU=2 bash scripts/run_enwik8_base.sh   # Transformer-XL baseline
#   NGPU=4 bash scripts/run_enwik8_base.sh --set train.grad_accum=2
# data.batch_size must divide by NGPU x train.grad_accum (enwik8_base: 8 lanes; enwik8_base_xl: 22).
# PY=/path/to/python chooses the interpreter (default: .venv, else python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/python.sh
require_modules torch
NGPU=${NGPU:-$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')}
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" \
    train.py --config "${CONFIG:-configs/enwik8_base.yaml}" "$@"
