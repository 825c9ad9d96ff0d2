#!/usr/bin/env bash
# SLURM: N nodes x 8 GPUs, one torchrun per node, c10d rendezvous on the first node.
#   sbatch --nodes 2 scripts/slurm_train.sh --config configs/enwik8_large.yaml
# Pre-emption: SLURM sends SIGTERM (--signal asks for it 120 s before the time limit); train.py
# finishes its step, writes a checkpoint and exits 0; `--requeue` restarts the job, which resumes from
# the run folder's newest checkpoint (--resume auto is the default).
#SBATCH --job-name=infini
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# srun forwards SIGTERM to torchrun, which forwards it to every worker.
srun --kill-on-bad-exit=1 .venv/bin/python -m torch.distributed.run \
    --nnodes "$SLURM_JOB_NUM_NODES" --nproc_per_node "${SLURM_GPUS_PER_NODE:-8}" \
    --rdzv_id "$SLURM_JOB_ID" --rdzv_backend c10d --rdzv_endpoint "$head_node:29500" \
    train.py "$@"
