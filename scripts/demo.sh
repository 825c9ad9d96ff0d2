#!/usr/bin/env bash
# The CPU demo, from a fresh checkout: environment, data (offline), a few minutes of training on the
# bundled enwik8 sample, held-out bpc, a generated sample, and where the TensorBoard logs are.
#   bash scripts/demo.sh            (extra arguments go to train.py, e.g. --set train.max_steps=100)
#   PY=/path/to/python bash scripts/demo.sh     (an environment of your own: .venv is then left alone)
#   RUN=folder RESULTS=folder bash scripts/demo.sh   (the run folder, default runs/tiny; the folder of its
#                                                     results records train.json and test.json, default
#                                                     RUN/results; results/demo is the committed one)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
RUN=${RUN:-runs/tiny}  # RUN=folder chooses another run folder
RESULTS=${RESULTS:-$RUN/results}
args=("$@")
# torch uses every physical core by default (2 threads: 1.5x the tokens/s of 1 on a 2-core VM). On a
# machine busy with other jobs a thread pool can stall on descheduled threads: set OMP_NUM_THREADS=1.

if [ -n "${PY:-}" ]; then
    echo "== 1/5 environment: PY=$PY"
else
    echo "== 1/5 environment (.venv)"
    bash scripts/setup_env.sh
fi
. scripts/python.sh
# The records name this command (provenance.via): the one that reproduces them.
export INFINI_RESULTS_VIA="$(command_line bash scripts/demo.sh "${args[@]}")"
require_modules torch numpy yaml tqdm tensorboard

echo "== 2/5 data: the bundled first 10^6 bytes of enwik8, split 90/5/5 (no network)"
bash getdata.sh enwik8-sample

echo "== 3/5 training configs/tiny.yaml on $("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")') -> $RUN"
start=$(date +%s)
"$PY" train.py --config configs/tiny.yaml --run-dir "$RUN" --results "$RESULTS/train.json" "$@"
echo "training took $(( $(date +%s) - start )) s"

echo "== 4/5 held-out test bpc (whole test split, memory carried; best checkpoint)"
"$PY" eval.py --checkpoint "$RUN/best.pt" --split test --out "$RUN/test_eval.json" --results "$RESULTS/test.json"

echo "== 5/5 a generated sample (top-p 0.9)"
"$PY" scripts/generate.py --checkpoint "$RUN/best.pt" --prompt "The history of " --max-new-tokens 300 \
    --top-p 0.9 --seed 0
echo
bin=$(dirname "$PY")
echo "logs: $RUN/train.log, $RUN/metrics.jsonl; TensorBoard: $bin/tensorboard --logdir $RUN"
echo "baselines: $PY train.py --config configs/tiny.yaml --run-dir runs/tiny-xl --set model.memory=xl"
echo "           (or model.memory=none); compare with: $bin/tensorboard --logdir runs"
