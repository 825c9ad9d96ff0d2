#!/usr/bin/env bash
# One node of a multi-node run (c10d rendezvous). Start it on every node with the same MASTER_ADDR:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash scripts/run_multinode.sh --config configs/enwik8_large.yaml --set data.batch_size=16
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash scripts/run_multinode.sh --config configs/enwik8_large.yaml --set data.batch_size=16
# data.batch_size (the global lanes) must divide by NNODES x NGPU x train.grad_accum: 2 nodes x 8 GPUs
# are 16 processes, which enwik8_large's 22 lanes do not divide (16 or 32 do; enwik8_base's 8 need
# --set data.batch_size=16 too). Otherwise every rank prints one error line and nothing starts.
# The run folder (--run-dir, default runs/<config name>) must be on a filesystem every node sees:
# rank 0 writes the checkpoints and every rank reads them on resume.
# NGPU (default: the GPUs of this node), MASTER_PORT (29500), RDZV_ID (infini); PY=/path/to/python
# chooses the interpreter (default: .venv, else python3).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
: "${MASTER_ADDR:?set MASTER_ADDR to the host name of node 0}"
. scripts/python.sh
require_modules torch
NGPU=${NGPU:-$("$PY" -c 'import torch; print(max(1, torch.cuda.device_count()))')}
exec "$PY" -m torch.distributed.run --nnodes "${NNODES:-2}" --nproc_per_node "$NGPU" \
    --rdzv_id "${RDZV_ID:-infini}" --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" \
    train.py "$@"
