#!/usr/bin/env bash
# The CPU passkey recipe end to end, for one or more memory modes: stage 1 (configs/passkey_cpu.yaml,
# short instances: the retrieval circuit forms), stage 2 (configs/passkey_cpu_2k.yaml, instances of up
# to 2K tokens, initialised from stage 1's best.pt), then greedy retrieval with the state streamed, of
# stage 2's last checkpoint (the end of its cosine schedule).
#
#   bash scripts/passkey_cpu.sh [--out-dir runs/passkey] [--instances 20] [--no-long] [MODE ...]
#
# MODE: infini (default), xl (mem_len 64 = one segment), none. Per mode it writes OUT/MODE/stage1,
# OUT/MODE/stage2 and OUT/MODE/eval (513 tokens to 8K, --instances keys per length and depth); for
# infini also OUT/infini/eval_long (32K, 128K and 1M tokens, 2 keys per depth; --no-long skips it).
# Timed on the idle 2-core VM (README.md, "Passkey retrieval"): infini trains in 38 minutes, and the
# script with both evaluations takes 45.
# A finished stage is not trained again (auto-resume); an interrupted one resumes where it stopped.
# --out is the old name of --out-dir. PY=/path/to/python chooses the interpreter (default: .venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=runs/passkey
instances=20
long=1
modes=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out-dir|--out) out=$2; shift 2 ;;
        --instances) instances=$2; shift 2 ;;
        --no-long) long=0; shift ;;
        -h|--help) sed -n 2,15p "$0"; exit 0 ;;
        infini|xl|none) modes+=("$1"); shift ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#modes[@]} -gt 0 ] || modes=(infini)
. scripts/python.sh
require_modules torch yaml
[ -f data/enwik8-sample/train.npy ] || bash getdata.sh enwik8-sample
for mode in "${modes[@]}"; do
    run=$out/$mode
    echo "== $mode: stage 1 (configs/passkey_cpu.yaml) -> $run/stage1"
    "$PY" scripts/passkey.py train --config configs/passkey_cpu.yaml --run-dir "$run/stage1" --no-progress \
        --set "model.memory=$mode"
    echo "== $mode: stage 2 (configs/passkey_cpu_2k.yaml) -> $run/stage2"
    "$PY" scripts/passkey.py train --config configs/passkey_cpu_2k.yaml --run-dir "$run/stage2" --no-progress \
        --init "$run/stage1/best.pt" --set "model.memory=$mode"
    # The last checkpoint, not best.pt: 32 validation instances rank checkpoints too coarsely (README).
    last=$(ls "$run"/stage2/ckpt_*.pt | sort | tail -n 1)
    echo "== $mode: retrieval of $last, 513 tokens to 8K -> $run/eval"
    "$PY" scripts/passkey.py eval --checkpoint "$last" --lengths 513,1k,2k,8k \
        --instances "$instances" --out-dir "$run/eval" | tail -n 25
    if [ "$mode" = infini ] && [ "$long" = 1 ]; then
        echo "== $mode: retrieval, 32K to 1M tokens -> $run/eval_long"
        "$PY" scripts/passkey.py eval --checkpoint "$last" --lengths 32k,128k,1m \
            --instances 2 --out-dir "$run/eval_long" | tail -n 25
    fi
done
