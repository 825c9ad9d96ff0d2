#!/usr/bin/env bash
# One command, three memory modes: train infini, xl (mem_len = segment_len) and none with the same
# config, seed, step budget and tokens on the bundled enwik8 sample, evaluate each on the whole test
# split and on the context curve, and write one Markdown table (runs/compare/compare.md).
#
#   bash scripts/compare_memory.sh [--budget-steps S] [--config configs/tiny.yaml] [--out-dir runs/compare]
#                                  [--set section.key=value ...]   (applied to all three runs)
#
# Default budget: the config's train.max_steps (tiny.yaml: 1,300 steps of 16 x 256 tokens; measured:
# 17 minutes in all on an idle 2-core machine). A finished run is not trained again (auto-resume).
# --out is the old name of --out-dir. PY=/path/to/python chooses the interpreter (default: .venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cmdline="bash scripts/compare_memory.sh $*"
config=configs/tiny.yaml
out=runs/compare
budget=""
sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --budget-steps) budget=$2; shift 2 ;;
        --config) config=$2; shift 2 ;;
        --out-dir|--out) out=$2; shift 2 ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        -h|--help) sed -n 2,11p "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$budget" ]; then
    case "$budget" in ''|*[!0-9]*|0) echo "error: --budget-steps must be a positive integer, got $budget" >&2; exit 2 ;; esac
    sets+=(--set "train.max_steps=$budget" --set "optim.decay_steps=$budget")
fi
[ -f "$config" ] || { echo "error: $config not found" >&2; exit 2; }
. scripts/python.sh
require_modules torch yaml
[ -f data/enwik8-sample/test.npy ] || bash getdata.sh enwik8-sample
# The segment length of the resolved config (with the --set overrides), for the xl cache length.
seg=$("$PY" - "$config" "${sets[@]}" <<'EOF'
import sys
from infiniattention.training.config import ConfigError, load_config
args = sys.argv[2:]
try:
    cfg = load_config(sys.argv[1], [args[i + 1] for i in range(0, len(args), 2)])
except ConfigError as err:  # one line, as train.py would print it
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
print(cfg.model.segment_len)
EOF
)
mkdir -p "$out"
for mode in infini xl none; do
    extra=(--set "model.memory=$mode")
    [ "$mode" = xl ] && extra+=(--set "model.mem_len=$seg")
    echo "== $mode: training -> $out/$mode"
    "$PY" train.py --config "$config" --run-dir "$out/$mode" --no-progress "${sets[@]}" "${extra[@]}"
    echo "== $mode: context curve on the test split"
    "$PY" scripts/context_curve.py --checkpoint "$out/$mode/best.pt" --out-dir "$out/$mode" > "$out/$mode/context_curve.log"
    tail -n 3 "$out/$mode/context_curve.log"
done
"$PY" scripts/compare_table.py "$out" --command "$cmdline" | tee "$out/compare.md"
