#!/usr/bin/env bash
# The CPU passkey recipe end to end, for one or more memories and seeds: stage 1 (configs/passkey_cpu.yaml,
# short instances: the retrieval circuit forms), stage 2 (configs/passkey_cpu_2k.yaml, instances of up to
# 2K tokens, initialised from stage 1's best.pt), then greedy retrieval with the state streamed, of
# stage 2's last checkpoint (the end of its cosine schedule), in the filler and in real text.
#
#   bash scripts/passkey_cpu.sh [--out-dir runs/passkey] [--seeds 1111,2222,3333] [--stages 1|2]
#                               [--eval full|short|screen|screen-short|speed|none] [--results-dir results]
#                               [ROW ...]
#
# ROW: infini (the paper's memory; default), xl (mem_len 64 = one segment), none, or infini with memory
# options joined by '+': gate, corrected, dpfp, l2, deltanet (e.g. infini+gate), then optionally the
# recipe words sp (state passing) and zg or zg4 (the zero-reaching write gate; zg4: four times the push)
# (scripts/compare_table.py: RECIPE_WORDS). Each seed sets train.seed and the instances' passkey.seed
# (stage 1: SEED, stage 2: SEED + 1), so rows of the same seed see the same data.
# Per row and seed it writes OUT/ROW/seed-SEED/{stage1,stage2,eval}, and every evaluation's results
# record into RESULTS/passkey/ROW/seed-SEED/NAME.json (RESULTS: --results-dir, default results/).
# --stages 1 --eval screen is the screen of docs/passkey.md: stage 1 only, its last checkpoint evaluated
# at 1K, 2K, 8K and 32K (10 keys at depths 0, 0.5, 1) in the filler and in valid text, and the memory
# probe from 2K to 128K, into RESULTS/passkey-screen/ROW/seed-SEED/ (--eval screen-short: 1K and 2K
# alone, no probe: the check of reproduce_results.sh --quick). --eval full (default for infini
# rows) evaluates the grid of docs/passkey.md: depths 0, 0.25, 0.5, 0.75, 1; the filler at 2K and 8K
# (100 keys per cell), 32K (20), 128K and 1M (10); text of the valid and the test split at 2K, 8K (100)
# and 32K (20); training-split text at 128K and 1M (10); and the memory probe (scripts/memory_probe.py)
# in both haystacks from 2K to 1M. --eval short (default for xl and none, which reach no key beyond
# their window): the filler and valid text at 2K and 8K, 20 keys. --eval speed: the streaming cost by
# length (docs/passkey.md, "Memory and speed with length"): one key per depth in the filler at 1K, 8K,
# 128K and 1M, once with --exact-rss (the working set) and once without (the speed), into
# RESULTS/passkey-speed/ROW/seed-SEED/{exact-rss,no-exact-rss}.json (run it on an idle machine).
# A finished stage is not trained again and an interrupted training resumes where it stopped; an
# evaluation whose record exists is not run again, and a row and seed whose records all exist is not
# trained either, so a grid can be spread over sessions and machines. The records name this command
# (provenance.via). --out is the old name of --out-dir. PY=/path/to/python chooses the interpreter
# (default: .venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
args=("$@")
out=runs/passkey
seeds=1111
eval_mode=""
stages=2
results_dir=results
rows=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out-dir|--out) out=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        --eval) eval_mode=$2; shift 2 ;;
        --stages) stages=$2; shift 2 ;;
        --results-dir) results_dir=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        -*) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
        *) rows+=("$1"); shift ;;
    esac
done
case "$eval_mode" in
    ""|full|short|screen|screen-short|speed|none) ;;
    *) echo "error: --eval must be full, short, screen, screen-short, speed or none, got $eval_mode" >&2
       exit 2 ;;
esac
case "$stages" in 1|2) ;; *) echo "error: --stages must be 1 or 2, got $stages" >&2; exit 2 ;; esac
[ ${#rows[@]} -gt 0 ] || rows=(infini)
. scripts/python.sh
# The records name this command (provenance.via): the one that reproduces them.
export INFINI_RESULTS_VIA="$(command_line bash scripts/passkey_cpu.sh "${args[@]}")"
require_modules torch yaml
# Each row's --set arguments (a bad row or seed is refused here, before any training).
plan=$("$PY" scripts/compare_table.py --plan "$(IFS=,; echo "${rows[*]}")" --seeds "$seeds" \
       --config configs/passkey_cpu.yaml) || exit 2
[ -f data/enwik8-sample/train.npy ] || bash getdata.sh enwik8-sample

evaluate() {  # evaluate NAME ARGS...: one passkey evaluation into $run/eval/NAME and its results record
    local name=$1; shift
    [ -f "$record/$name.json" ] && return 0
    echo "== $row, seed $seed: $name"
    "$PY" scripts/passkey.py eval --checkpoint "$last" --no-exact-rss --out-dir "$run/eval/$name" \
        --results "$record/$name.json" "$@" | awk '/^\| [0-9]/ && n++ < 8'  # reads all: no SIGPIPE
}

probe() {  # probe NAME ARGS...: the memory probe into $run/eval/NAME and its results record
    local name=$1; shift
    [ -f "$record/$name.json" ] && return 0
    echo "== $row, seed $seed: $name"
    "$PY" scripts/memory_probe.py --checkpoint "$last" --out-dir "$run/eval/$name" \
        --results "$record/$name.json" "$@" | tail -n 3
}

records() {  # records MODE: the names of the records MODE makes for $row
    local infini=""
    [ "${row%%+*}" = infini ] && infini=1
    case "$1" in
        screen) echo filler text-valid ${infini:+probe-filler} ;;
        screen-short) echo filler-1k-2k text-valid-1k-2k ;;
        short) echo filler text-valid ;;
        speed) echo exact-rss no-exact-rss ;;
        full) echo filler-2k-8k filler-32k filler-long text-valid-2k-8k text-valid-32k text-test-2k-8k \
                   text-test-32k text-train-long ${infini:+probe-filler-1m probe-text} ;;
    esac
}

while IFS=$'\t' read -r row seed extra; do
    run=$out/$row/seed-$seed
    read -r -a sets <<< "$extra"
    mode=$eval_mode
    [ -n "$mode" ] || case "$row" in infini*) mode=full ;; *) mode=short ;; esac
    record=$results_dir/passkey/$row/seed-$seed
    [ "$stages" = 2 ] || record=$results_dir/passkey-screen/$row/seed-$seed
    [ "$mode" != speed ] || record=$results_dir/passkey-speed/$row/seed-$seed
    missing=0
    for name in $(records "$mode"); do [ -f "$record/$name.json" ] || missing=1; done
    if [ "$mode" != none ] && [ $missing = 0 ]; then
        echo "== $row, seed $seed: done (every record of --eval $mode is in $record)"
        continue
    fi
    echo "== $row, seed $seed: stage 1 (configs/passkey_cpu.yaml) -> $run/stage1"
    "$PY" scripts/passkey.py train --config configs/passkey_cpu.yaml --run-dir "$run/stage1" --no-progress \
        "${sets[@]}" --set "train.seed=$seed" --set "passkey.seed=$seed"
    if [ "$stages" = 2 ]; then
        echo "== $row, seed $seed: stage 2 (configs/passkey_cpu_2k.yaml) -> $run/stage2"
        "$PY" scripts/passkey.py train --config configs/passkey_cpu_2k.yaml --run-dir "$run/stage2" \
            --no-progress --init "$run/stage1/best.pt" "${sets[@]}" --set "train.seed=$seed" \
            --set "passkey.seed=$((seed + 1))"
    fi
    # The last checkpoint, not best.pt: 32 validation instances rank checkpoints too coarsely.
    last=$(ls "$run/stage$stages"/ckpt_*.pt | sort | tail -n 1)
    case "$mode" in
        screen)
            evaluate filler --lengths 1k,2k,8k,32k --depths 0,0.5,1 --instances 10
            evaluate text-valid --lengths 1k,2k,8k,32k --depths 0,0.5,1 --instances 10 --haystack text \
                --haystack-split valid
            if [ "${row%%+*}" = infini ]; then
                probe probe-filler --lengths 2k,8k,32k,128k --keys 4
            fi ;;
        screen-short)
            evaluate filler-1k-2k --lengths 1k,2k --depths 0,0.5,1 --instances 10
            evaluate text-valid-1k-2k --lengths 1k,2k --depths 0,0.5,1 --instances 10 --haystack text \
                --haystack-split valid ;;
        speed)  # the last option wins: evaluate passes --no-exact-rss first
            evaluate exact-rss --lengths 1k,8k,128k,1m --instances 1 --exact-rss
            evaluate no-exact-rss --lengths 1k,8k,128k,1m --instances 1 ;;
        short)
            evaluate filler --lengths 2k,8k --instances 20
            evaluate text-valid --lengths 2k,8k --instances 20 --haystack text --haystack-split valid ;;
        full)  # the milestone's cells first (filler at 128K and 1M, held-out test text at 32K), then the rest
            evaluate filler-long --lengths 128k,1m --instances 10
            evaluate text-test-32k --lengths 32k --instances 20 --haystack text --haystack-split test
            if [ "${row%%+*}" = infini ]; then
                probe probe-filler-1m --lengths 2k,8k,32k,128k,1m --keys 4
            fi
            evaluate filler-2k-8k --lengths 2k,8k --instances 100
            evaluate filler-32k --lengths 32k --instances 20
            evaluate text-test-2k-8k --lengths 2k,8k --instances 100 --haystack text --haystack-split test
            evaluate text-valid-2k-8k --lengths 2k,8k --instances 100 --haystack text --haystack-split valid
            evaluate text-valid-32k --lengths 32k --instances 20 --haystack text --haystack-split valid
            evaluate text-train-long --lengths 128k,1m --instances 10 --haystack text --haystack-split train
            if [ "${row%%+*}" = infini ]; then
                probe probe-text --lengths 2k,8k,32k --keys 4 --haystack text --haystack-split valid
            fi ;;
    esac
done <<< "$plan"
