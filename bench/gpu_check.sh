#!/usr/bin/env bash
# One prepared run on a machine with a GPU: correctness on the device, then timings. Everything goes
# to $OUT (default bench/results/gpu). DEVICE=cpu runs the same steps on the CPU (a smoke test).
#   OUT=/path bash bench/gpu_check.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${OUT:-bench/results/gpu}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
mkdir -p "$OUT"
status=0
step() { echo "== $1"; shift; "$@" 2>&1 | tee -a "$OUT/log.txt"; local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || status=1; }

step "environment" "$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
step "parity: device float32 vs CPU float64, streaming vs full, bf16 over a long stream" \
    "$PY" bench/gpu_parity.py --device "$DEVICE" --out "$OUT/gpu_parity.json"
if [ "$DEVICE" = cpu ]; then lengths=512,1024; else lengths=2048,8192,32768; fi
step "layer benchmark" "$PY" bench/bench_layer.py --device "$DEVICE" --lengths "$lengths" --repeats 3 \
    --out "$OUT/bench_layer.json"
# Whole-model training throughput and MFU at the enwik8_base widths in bf16, eager and torch.compile
# interleaved in one process (TXL_REPO=/path/to/transformer-xl adds the original Transformer-XL). The
# CPU smoke run uses a 1-layer small model and skips compile (minutes of compilation on a CPU).
txl=()
if [ -n "${TXL_REPO:-}" ]; then txl=(--txl-repo "$TXL_REPO"); fi
if [ "$DEVICE" = cpu ]; then
    model_args=(--config bench/small.yaml --set model.n_layer=1 --rounds 1 --steps 1 --warmup 1 --compile off)
    context_args=(--config bench/small.yaml --set model.n_layer=1 --lengths 4096,8192)
else
    model_args=(--config configs/enwik8_base.yaml --rounds 5 --steps 5 --warmup 3 --compile both)
    context_args=(--config bench/small.yaml)
fi
step "model benchmark: enwik8_base widths, bf16, with and without compile" "$PY" bench/bench_model.py \
    "${model_args[@]}" "${txl[@]}" --precision bf16 --modes infini,xl,none --device "$DEVICE" \
    --out "$OUT/bench_model_enwik8_base_bf16.json"
step "streaming evaluation: peak memory and tokens/s up to 1M tokens" "$PY" bench/bench_context.py \
    "${context_args[@]}" --device "$DEVICE" --out "$OUT/bench_context.json"
step "data: bundled sample" bash getdata.sh enwik8-sample --data-dir "$OUT/data"
if [ "$DEVICE" = cpu ]; then steps=20; else steps=300; fi
for precision in bf16 fp16; do
    step "train tiny on $DEVICE, $precision, $steps steps" "$PY" train.py --config configs/tiny.yaml \
        --run-dir "$OUT/tiny-$precision" --resume never --no-progress \
        --set data.data_dir="$OUT/data" --set train.device="$DEVICE" --set train.precision=$precision \
        --set train.max_steps=$steps --set train.eval_interval=$steps --set train.ckpt_interval=$steps
done
step "eval (bf16 checkpoint)" "$PY" eval.py --checkpoint "$OUT/tiny-bf16/best.pt" --split test \
    --data-dir "$OUT/data" --device "$DEVICE" --out "$OUT/eval.json"
echo "results in $OUT (status $status)"
exit $status
