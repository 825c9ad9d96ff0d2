#!/usr/bin/env bash
# Memory modes side by side: train each row with the same config, step budget and tokens on the bundled
# enwik8 sample, once per seed, evaluate each on the whole test split and on the context curve, and
# write one Markdown table with the mean and the range over the seeds (OUT/compare.md).
#
#   bash scripts/compare_memory.sh [--rows infini,xl,none] [--seeds 1111,2222,3333] [--budget-steps S]
#                                  [--config configs/tiny.yaml] [--out-dir runs/compare]
#                                  [--results-dir OUT/results] [--set section.key=value ...]
#                                  [--table compare] [--label NAME]
#                                  (--set: applied to every run)
#
# A row is a memory mode (infini: the paper's memory; xl: mem_len = segment_len; none) or infini with
# options joined by '+': gate (model.write_gate), corrected (model.normalizer), dpfp (model.feature),
# l2 (model.key_norm), deltanet (model.normalizer none), e.g. infini+gate or infini+gate+corrected+dpfp+l2;
# a row may end in zg or zg4, the zero-reaching write gate (train.write_logit_penalty=0.05 or 0.2), e.g.
# infini+gate+zg.
# Default: rows infini,xl,none, the config's seed, its train.max_steps (tiny.yaml: 1,300 steps of
# 16 x 256 tokens, about 5 minutes per run on an idle 2-core machine). Runs go to OUT/ROW/seed-SEED; a
# finished run is not trained again (auto-resume). Each run's numbers are results records in
# RESULTS/compare/ROW/seed-SEED (--results-dir RESULTS, default OUT/results; --results-dir results
# writes the committed ones): train.json (train.py), context_curve.json (context_curve.py) and, last,
# test.json (the table's row); a run whose test.json exists is skipped, so the comparison can be spread
# over sessions and machines (delete a test.json to redo its run). The table is rendered from the
# records. --table NAME puts the records in RESULTS/NAME instead of RESULTS/compare (a table of runs that
# differ by settings, not by memory: an ablation); --label NAME names the one row given (its folder in
# OUT and RESULTS), e.g. --rows infini --set optim.gate_lr_mult=10 --label lr10. --out is the old name of
# --out-dir. PY=/path/to/python chooses the interpreter (default: .venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cmdline="bash scripts/compare_memory.sh $*"
args=("$@")
config=configs/tiny.yaml
out=runs/compare
resdir=""
budget=""
rows=infini,xl,none
seeds=""
sets=()
table=compare
label=""
while [ $# -gt 0 ]; do
    case "$1" in
        --budget-steps) budget=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --out-dir|--out) out=$2; shift 2 ;;
        --results-dir) resdir=$2; shift 2 ;;
        --rows) rows=$2; shift 2 ;;
        --seeds) seeds=$2; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        --table) table=$2; shift 2 ;;
        --label) label=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$budget" ]; then
    case "$budget" in ''|*[!0-9]*|0) echo "error: --budget-steps must be a positive integer, got $budget" >&2; exit 2 ;; esac
    sets+=(--set "train.max_steps=$budget" --set "optim.decay_steps=$budget")
fi
[ -f "$config" ] || { echo "error: $config not found" >&2; exit 2; }
case "$table" in ''|*[!a-z0-9-]*) echo "error: --table must be lower-case letters, digits and -, got $table" >&2
                                  exit 2 ;; esac
if [ -n "$label" ]; then
    case "$rows" in *,*) echo "error: --label names one row: give one --rows, got $rows" >&2; exit 2 ;; esac
    case "$label" in *[!A-Za-z0-9._+-]*) echo "error: --label must be letters, digits, '.', '_', '+' or '-'," \
                                              "got $label" >&2; exit 2 ;; esac
fi
. scripts/python.sh
# The records name this command (provenance.via): the one that reproduces them.
export INFINI_RESULTS_VIA="$(command_line bash scripts/compare_memory.sh "${args[@]}")"
require_modules torch yaml
# Each row's --set arguments, and the config's seed and segment length (for the xl cache); a bad row or
# seed is refused here, before any training.
plan=$("$PY" scripts/compare_table.py --plan "$rows" --seeds "$seeds" --config "$config" -- "${sets[@]}") \
    || exit 2
resdir=${resdir:-$out/results}/$table
[ -f data/enwik8-sample/test.npy ] || bash getdata.sh enwik8-sample
mkdir -p "$out"
while IFS=$'\t' read -r row seed extra; do
    row=${label:-$row}
    run="$out/$row/seed-$seed"
    rec="$resdir/$row/seed-$seed"
    if [ -f "$rec/test.json" ]; then
        echo "== $row, seed $seed: done ($rec/test.json exists)"
        continue
    fi
    read -r -a extra_sets <<< "$extra"
    echo "== $row, seed $seed: training -> $run"
    "$PY" train.py --config "$config" --run-dir "$run" --no-progress "${sets[@]}" \
        --set "train.seed=$seed" "${extra_sets[@]}" --results "$rec/train.json"
    echo "== $row, seed $seed: context curve on the test split"
    "$PY" scripts/context_curve.py --checkpoint "$run/best.pt" --out-dir "$run" \
        --results "$rec/context_curve.json" > "$run/context_curve.log"
    tail -n 3 "$run/context_curve.log"
    "$PY" scripts/compare_table.py --record "$run" --results "$rec/test.json"
done <<< "$plan"
"$PY" scripts/compare_table.py "$resdir" --rows "${label:-$rows}" --command "$cmdline" --json "$out/compare.json" \
    | tee "$out/compare.md"
