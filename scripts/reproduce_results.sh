#!/usr/bin/env bash
# Every result table and figure of README.md and docs/, regenerated on this machine in one command:
#
#   bash scripts/reproduce_results.sh [--quick | --full] [--out-dir DIR] [--only STEP,...] [--seeds S,...]
#                                     [--dry-run]
#
# Steps (--only; default: all of the mode's), with their time on an idle 2-core machine:
#   demo      bash scripts/demo.sh: the CPU demo's test bpc (5 minutes)
#   compare   scripts/compare_memory.sh: rows infini, OPTION (below), xl and none at the demo's budget,
#             seeds 1111, 2222, 3333, each with its context curve (12 runs, the demo's is infini
#             seed 1111: about 70 minutes)
#   gates     scripts/plot_gates.py on the compare runs infini and OPTION, seed 1111 (seconds)
#   passkey   scripts/passkey_cpu.sh: infini and OPTION with seeds 1111, 2222, 3333 (the full grid and the
#             memory probe), xl and none with seed 1111 (short grid), and OPTION's streaming cost by
#             length (--eval speed, seed 1111) (about 16 hours)
#   screen    scripts/passkey_cpu.sh --stages 1 --eval screen: the options' stage-1 screen, seed 1111
#             (75 minutes)
#   ablation  scripts/compare_memory.sh --table ablation-gate-lr: the demo's gate learning rate and
#             initial gate at segment 16, 400 steps (docs/results.md, "How the demo recipe was found":
#             five runs with their gates, about 15 minutes)
#   words     configs/wt2_tiny.yaml on the bundled WikiText-2 sample: its test perplexity (3 minutes)
#   speed     bench/bench_model.py at the demo shape and at the small shape: the paper's memory, each
#             option alone, all four, DeltaNet's memory (with and without the gate) and none,
#             interleaved (on an otherwise idle machine; 3 minutes)
#
# Modes:
#   (none)    every step into OUT (default runs/results), its results records into OUT/results, the
#             figures into docs/, the step times into OUT/durations.txt; results/ is left alone.
#   --full    every step, its records into results/ (the committed ones): a step, run or evaluation whose
#             record is there already is skipped, so --full can be spread over sessions and machines
#             (commit results/ in between); runs into OUT (default runs/results), where an interrupted
#             training resumes; then the figures into docs/ and `python scripts/results.py render`.
#   --quick   the check of a fresh machine, at most 45 minutes (32 measured from a clean clone,
#             docs/results.md): the demo, one seed (1111) of the compare, the gates, the screen of
#             infini at 1K and 2K (--stages 1 --eval screen-short), the word-level starter and the
#             speed ratios (3 rounds, no peak-memory runs). Runs and records into OUT (default
#             runs/quick; never into results/), then `python scripts/results.py compare OUT/results`:
#             per number the committed value, the new one, the tolerance and "reproduced" or "differs"
#             (OUT/quick.md; as a results record OUT/quick.json, with the step times: committed as
#             results/reproduce/quick.json, docs/results.md renders it); exit status 1 when a number
#             differs.
# --seeds S,... (default 1111,2222,3333) are the training seeds of compare and passkey: with --full, one
# seed at a time spreads them over sessions. --dry-run prints the commands (and what --full would skip)
# without running them.
#
# OPTION (infini+gate+zg4: the write gate with the zero-reaching prior at 0.2) is the memory the results
# compare with the paper's: the one that holds the key to 1M; docs/passkey.md, "Holding to 1M", says why.
# The figures need the plots extra (pip install -e .[plots]); without it they are left out. PY= chooses
# the interpreter. results/README.md: the layout of results/ and what each table needs.
set -euo pipefail
args=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OPTION=infini+gate+zg4
SEEDS=1111,2222,3333
SCREEN_ROWS=(infini infini+gate infini+gate+corrected infini+gate+corrected+l2 infini+gate+corrected+dpfp+l2)
VARIANTS=infini,infini+gate,infini+corrected,infini+l2,infini+dpfp,infini+gate+corrected+dpfp+l2,infini+deltanet+l2,infini+gate+deltanet+l2,none
mode=default
out=""
only=""
dry=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick|--full)
            [ "$mode" = default ] || { echo "error: --quick and --full exclude each other" >&2; exit 2; }
            mode=${1#--}; shift ;;
        --out-dir|--out) [ $# -ge 2 ] || { echo "error: $1 needs a folder" >&2; exit 2; }; out=$2; shift 2 ;;
        --only) [ $# -ge 2 ] || { echo "error: --only needs steps" >&2; exit 2; }; only=$2; shift 2 ;;
        --dry-run) dry=1; shift ;;
        --seeds) [ $# -ge 2 ] || { echo "error: --seeds needs seeds" >&2; exit 2; }; SEEDS=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $mode in
    quick) steps=demo,compare,gates,screen,words,speed; out=${out:-runs/quick}; res=$out/results ;;
    full) steps=demo,compare,gates,passkey,screen,ablation,words,speed; out=${out:-runs/results}; res=results ;;
    *) steps=demo,compare,gates,passkey,screen,ablation,words,speed; out=${out:-runs/results}; res=$out/results ;;
esac
for step in ${only//,/ }; do
    case ",$steps," in *",$step,"*) ;; *) echo "error: --only: unknown step $step for this mode (steps: $steps)" >&2
                                          exit 2 ;; esac
done
only=${only:-$steps}
. scripts/python.sh
require_modules torch yaml
unset INFINI_RESULTS_VIA  # the programs run below are the commands of their records
log="$out/durations.txt"

wanted() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
run() {  # run COMMAND...: run it, or print it (--dry-run)
    if [ -n "$dry" ]; then echo "+ $(command_line "$@")"; else "$@"; fi
}
timed() {  # timed NAME COMMAND...: run, and append its wall time to $log
    local name=$1; shift
    local start
    start=$(date +%s)
    [ -n "$dry" ] || echo "==== $name: $(command_line "$@")"
    run "$@"
    [ -n "$dry" ] || echo "$name $(( $(date +%s) - start )) s $(date -u +%FT%TZ)" >> "$log"
}
recorded() {  # recorded FILE...: true when --full finds every record there already (the step is skipped)
    [ "$mode" = full ] || return 1
    local f
    for f in "$@"; do [ -f "$f" ] || return 1; done
    echo "==== skipped: $* already in results/"
}
figure() {  # figure SRC DST: copy a figure into docs/ (not in --quick; a missing one is a note)
    [ "$mode" != quick ] || return 0
    if [ -n "$dry" ] || [ -f "$1" ]; then run cp "$1" "$2"; else echo "note: no $1 (pip install -e .[plots])"; fi
}

if [ -z "$dry" ]; then
    mkdir -p "$out"
    echo "start $(date -u +%FT%TZ) mode $mode commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        >> "$log"
fi
run bash getdata.sh enwik8-sample

if wanted demo && ! recorded "$res/demo/test.json"; then
    # The demo is the compare's infini run of seed 1111 (the same config and seed): trained once.
    timed demo env RUN="$out/compare/infini/seed-1111" RESULTS="$res/demo" bash scripts/demo.sh
fi
if wanted compare; then
    rows="infini,$OPTION,xl,none"
    seeds=$SEEDS
    [ "$mode" != quick ] || seeds=1111
    timed compare bash scripts/compare_memory.sh --rows "$rows" --seeds "$seeds" --out-dir "$out/compare" \
        --results-dir "$res"
    for row in infini "$OPTION"; do
        figure "$out/compare/$row/seed-1111/context_curve.png" "docs/context_curve_$row.png"
    done
fi
if wanted gates; then
    for row in infini "$OPTION"; do
        recorded "$res/gates/$row/seed-1111/gates.json" && continue
        run_dir="$out/compare/$row/seed-1111"
        if [ -z "$dry" ] && [ ! -f "$run_dir/best.pt" ]; then
            echo "error: gates need the compare run $run_dir (its record came from another machine): run" \
                 "--only compare here after removing $res/compare/$row/seed-1111/test.json" >&2
            exit 1
        fi
        timed "gates-$row" "$PY" scripts/plot_gates.py --checkpoint "$run_dir/best.pt" --run-dir "$run_dir" \
            --out-dir "$out/gates/$row" --results "$res/gates/$row/seed-1111/gates.json"
    done
    figure "$out/gates/infini/gates.png" docs/gates_infini.png
    figure "$out/gates/infini/gate_trajectories.png" docs/gate_trajectories_infini.png
fi
if wanted passkey; then
    timed passkey bash scripts/passkey_cpu.sh --out-dir "$out/passkey" --results-dir "$res" \
        --seeds "$SEEDS" infini "$OPTION"
    timed passkey-baselines bash scripts/passkey_cpu.sh --out-dir "$out/passkey" --results-dir "$res" \
        --seeds 1111 xl none
    timed passkey-speed bash scripts/passkey_cpu.sh --eval speed --out-dir "$out/passkey" --results-dir "$res" \
        --seeds 1111 "$OPTION"
    run "$PY" scripts/passkey_table.py "$res/passkey" --rows "infini,$OPTION,xl,none" --tables-dir "$out/passkey" \
        --figures docs
fi
if wanted screen; then
    if [ "$mode" = quick ]; then
        timed screen bash scripts/passkey_cpu.sh --stages 1 --eval screen-short --out-dir "$out/passkey-screen" \
            --results-dir "$res" infini
    else
        timed screen bash scripts/passkey_cpu.sh --stages 1 --eval screen --out-dir "$out/passkey-screen" \
            --results-dir "$res" "${SCREEN_ROWS[@]}"
    fi
fi
if wanted ablation; then
    # gate_lr_mult:gate_init; the label names the row of the table (docs/results.md)
    for setting in 1:0 10:0 100:0 10:2 10:-2; do
        lr=${setting%%:*}
        init=${setting#*:}
        label=lr$lr-init$init
        timed "ablation-$label" bash scripts/compare_memory.sh --rows infini --seeds 1111 --budget-steps 400 \
            --set model.segment_len=16 --set "optim.gate_lr_mult=$lr" --set "model.gate_init=$init" \
            --table ablation-gate-lr --label "$label" --out-dir "$out/ablation" --results-dir "$res"
        recorded "$res/ablation-gate-lr/$label/seed-1111/gates.json" && continue
        run "$PY" scripts/plot_gates.py --checkpoint "$out/ablation/$label/seed-1111/best.pt" \
            --run-dir "$out/ablation/$label/seed-1111" --out-dir "$out/ablation/$label/gates" \
            --results "$res/ablation-gate-lr/$label/seed-1111/gates.json"
    done
fi
if wanted words && ! recorded "$res/words/test.json"; then
    run bash getdata.sh wikitext-2-sample
    timed words "$PY" train.py --config configs/wt2_tiny.yaml --run-dir "$out/words" --no-progress \
        --results "$res/words/train.json"
    run "$PY" eval.py --checkpoint "$out/words/best.pt" --split test --out "$out/words/test_eval.json" \
        --results "$res/words/test.json"
fi
if wanted speed; then
    rounds=(--rounds 5 --steps 3)
    [ "$mode" != quick ] || rounds=(--rounds 3 --steps 3 --no-memory)
    for shape in demo:configs/tiny.yaml small:bench/small.yaml; do
        name=${shape%%:*}
        recorded "$res/speed/$name.json" && continue
        timed "speed-$name" "$PY" bench/bench_model.py --config "${shape#*:}" --modes "$VARIANTS" "${rounds[@]}" \
            --out "$out/speed/$name.json" --results "$res/speed/$name.json"
    done
fi

[ -n "$dry" ] || { echo "end $(date -u +%FT%TZ)" >> "$log"; cat "$log"; }
case $mode in
    full) run "$PY" scripts/results.py render ;;
    quick)
        if [ -n "$dry" ]; then
            run "$PY" scripts/results.py compare "$res" --committed results --durations "$log" \
                --record "$out/quick.json"
            exit 0
        fi
        set +e
        INFINI_RESULTS_VIA="$(command_line bash scripts/reproduce_results.sh "${args[@]}")" \
            "$PY" scripts/results.py compare "$res" --committed results --durations "$log" \
            --record "$out/quick.json" | tee "$out/quick.md"
        status=${PIPESTATUS[0]}
        set -e
        echo "the check above: $out/quick.md; the step times: $log; as a record: $out/quick.json (to" \
             "publish it: cp $out/quick.json results/reproduce/quick.json; python scripts/results.py render)"
        exit "$status" ;;
esac
