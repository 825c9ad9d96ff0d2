#!/usr/bin/env bash
# One node of a multi-node run (c10d rendezvous). Start it on every node with the same MASTER_ADDR:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 bash scripts/run_multinode.sh --config configs/enwik8_large.yaml
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 bash scripts/run_multinode.sh --config configs/enwik8_large.yaml
# The run folder (--run-dir, default runs/<config name>) must be on a filesystem every node sees:
# rank 0 writes the checkpoints and every rank reads them on resume.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MASTER_ADDR:?set MASTER_ADDR to the host name of node 0}"
NGPU=${NGPU:-$(python -c 'import torch; print(max(1, torch.cuda.device_count()))')}
exec .venv/bin/python -m torch.distributed.run --nnodes "${NNODES:-2}" --nproc_per_node "$NGPU" \
    --rdzv_id "${RDZV_ID:-infini}" --rdzv_backend c10d --rdzv_endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" \
    train.py "$@"
