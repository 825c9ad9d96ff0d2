#!/usr/bin/env bash
# SLURM: N nodes x 8 GPUs, one torchrun per node, c10d rendezvous on the first node.
#   sbatch --nodes 2 scripts/slurm_train.sh --config configs/enwik8_large.yaml --set data.batch_size=16
# data.batch_size (the global lanes) must divide by nodes x GPUs per node x train.grad_accum: enwik8_large's
# 22 lanes do not divide by 2 x 8 = 16 (16 or 32 do). Otherwise every rank prints one error line.
# Time limit and pre-emption: SLURM sends SIGTERM to this script 120 s before the limit
# (--signal=B:TERM@120). The script passes it on (srun -> torchrun -> every rank); training finishes its
# step, writes a checkpoint and stops; then the script runs `scontrol requeue`, and the requeued job
# resumes from the run folder's newest checkpoint (--resume auto is the default) and appends to the same
# slurm-<job id>.out. A run that ends by itself (finished, or failed) is not requeued.
# MASTER_PORT (29500) for the rendezvous; PY=/path/to/python chooses the interpreter (default: .venv).
#SBATCH --job-name=infini
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%j.out
set -euo pipefail
root=${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
. scripts/python.sh
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# torchrun gives the ranks this long to write their checkpoint after SIGTERM before it kills them
# (its default is 30 s; torch versions without the variable keep 30 s).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-100}
gpus=${SLURM_GPUS_PER_NODE:-8}
stopping=0
trap 'stopping=1; kill -TERM "$pid" 2>/dev/null || true' TERM
srun --kill-on-bad-exit=1 "$PY" -m torch.distributed.run \
    --nnodes "$SLURM_JOB_NUM_NODES" --nproc_per_node "${gpus##*:}" \
    --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:${MASTER_PORT:-29500}" \
    train.py "$@" &
pid=$!
status=0
wait "$pid" || status=$?
if [ "$stopping" = 1 ]; then
    # The signal ended the first wait; this one lasts until training has saved and stopped. torchrun
    # exits non-zero after a SIGTERM however cleanly its ranks stopped, so the status is not consulted.
    wait "$pid" || true
    echo "slurm_train.sh: stopped by SIGTERM; requeueing job $SLURM_JOB_ID to resume from the last checkpoint"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$status"
