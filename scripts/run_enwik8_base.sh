#!/usr/bin/env bash
# enwik8, Transformer-XL base shape, on all GPUs of one node (torchrun). Extra arguments go to train.py:
#   CONFIG=configs/enwik8_base_xl.yaml NGPU=2 bash scripts/run_enwik8_base.sh   # Transformer-XL baseline
#   NGPU=4 bash scripts/run_enwik8_base.sh --set train.grad_accum=2
set -euo pipefail
cd "$(dirname "$0")/.."
NGPU=${NGPU:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}
exec .venv/bin/python -m torch.distributed.run --standalone --nproc_per_node "$NGPU" \
    train.py --config "${CONFIG:-configs/enwik8_base.yaml}" "$@"
