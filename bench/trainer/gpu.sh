#!/usr/bin/env bash
# CUDA smoke test and timings on a GPU machine, for a trainer binary built elsewhere:
#
#   cargo build --release -p trainer --features cuda        # on the build machine
#   bench/trainer/gpu.sh target/release/trainer bench/data/trainer/shards
#
# The binary links libtorch_cuda but not its CUDA libraries: they come from this machine's own
# PyTorch 2.11 (CUDA 13.0) install, via LD_LIBRARY_PATH. Prints one epoch's seconds at batch
# 256 and 4096 on the GPU (goals: <= 1.0 s and <= 0.1 s) and at batch 256 on the CPU cores.
set -euo pipefail
TRAINER=${1:?usage: gpu.sh TRAINER_BINARY SHARDS_DIR}
SHARDS=${2:?usage: gpu.sh TRAINER_BINARY SHARDS_DIR}
PYTHON=${PYTHON:-python3}
LIB=$("$PYTHON" -c "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')")
export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=${OUT:-$(mktemp -d)}
echo "torch lib: $LIB"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

run() { # run NAME ARGS...: one epoch, prints the training seconds from the metrics file
    local name=$1; shift
    "$TRAINER" --data "$SHARDS" --epochs 1 --no-progress --metrics-out "$OUT/$name.jsonl" \
        --save "$OUT/$name.safetensors" "$@" > "$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log"; return 1; }
    "$PYTHON" -c "import json,sys; m=json.loads(open(sys.argv[1]).readlines()[-1]); n=m['non_private']; c=n.get('comm_seconds'); print(f\"{sys.argv[2]:<28} {n['seconds']:8.3f} s/epoch  cpu {n['cpu_seconds'] or 0:.2f} s  test acc {m['test_accuracy']:.4f}  epsilon {m['epsilon']}\" + (f\"  all-reduce {c / (m['steps'] / m['epoch']) * 1e6:.0f} us/step\" if c is not None else ''))" "$OUT/$name.jsonl" "$name"
}

# Smoke: a short CUDA run must succeed and report a GPU device.
"$TRAINER" --data "$SHARDS" --epochs 1 --device cuda --batch-size 4096 --profile --no-progress \
    --metrics-out "$OUT/smoke.jsonl" --save "$OUT/smoke.safetensors" | tee "$OUT/smoke.log"
grep -q " on cuda:0 " "$OUT/smoke.log" || { echo "smoke: FAILED (not on cuda:0)"; exit 1; }
echo "smoke: ok"

run cuda-b256 --device cuda --batch-size 256
run cuda-b4096 --device cuda --batch-size 4096
run cuda-b256-profile --device cuda --batch-size 256 --profile
run cpu-b256-1thread --device cpu --batch-size 256
run cpu-b256-allthreads --device cpu --batch-size 256 --intra-op-threads "$(nproc)"
run cpu-b4096-1thread --device cpu --batch-size 4096

# Data-parallel on the CPU cores: one worker per core (at most one per part file).
PARTS=$(ls "$SHARDS" | grep -c '^part-' || true)
CORES=$(nproc)
WORKERS=$(( CORES < PARTS ? CORES : PARTS ))
run "cpu-b256-${WORKERS}workers" --device cpu --batch-size 256 --threads "$WORKERS"
run "cpu-b4096-${WORKERS}workers" --device cpu --batch-size 4096 --threads "$WORKERS"
run "cpu-b4096-2x$((WORKERS / 2))workers" --device cpu --batch-size 4096 --workers 2 --threads "$((WORKERS / 2))"

# Several GPUs: one worker thread per GPU.
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [ "${GPUS:-0}" -gt 1 ]; then
    run "cuda-b4096-${GPUS}gpus" --device cuda --batch-size 4096 --threads "$GPUS"
    run "cuda-b256-${GPUS}gpus" --device cuda --batch-size 256 --threads "$GPUS"
fi
echo "outputs in $OUT"
