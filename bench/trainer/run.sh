#!/usr/bin/env bash
# One DP epoch on the shards of a 1.2M-row generated file (960,000 training rows, batch 256,
# clip 3, noise 0.9): our trainer against Opacus 1.6 and the seed project's microbatch-of-3
# algorithm in PyTorch, in one run on this machine. Prints seconds per epoch and ratios.
#
#   bench/trainer/run.sh            # everything (first run installs .venv-bench, ~4.7 GB)
#   SKIP_OPACUS=1 bench/trainer/run.sh
#   OPACUS_STEPS=500 bench/trainer/run.sh   # time 500 Opacus steps and extrapolate
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=bench/data/trainer
OUT=bench/out/trainer
mkdir -p "$DATA" "$OUT"

scripts/setup-torch.sh >/dev/null
cargo build --release -q -p pipeline -p trainer
PIPELINE=target/release/pipeline
TRAINER=target/release/trainer

# The data: 1.2M rows without missing values, so the 80% training split is ~960,000 rows.
if [ ! -f "$DATA/shards/_SUCCESS" ]; then
    "$PIPELINE" generate --rows 1200000 --seed 1 --na-rate 0 --output "$DATA/input.csv" --overwrite
    "$PIPELINE" run --input "$DATA/input.csv" --output "$DATA/shards" --shards 16 --threads 2 --overwrite -q
fi

# PyTorch with every dependency (Python cannot import torch from the light .venv).
if [ -z "${SKIP_OPACUS:-}${SKIP_TORCH:-}" ] && [ ! -x .venv-bench/bin/python ]; then
    python3.11 -m venv .venv-bench
    .venv-bench/bin/pip install -q --disable-pip-version-check torch==2.11.0 'opacus==1.6.*' numpy safetensors
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"

epoch() { # epoch NAME EPOCHS ARGS...: our trainer; prints median wall and CPU s/epoch, steps, epsilon, accuracy
    local name=$1 epochs=$2; shift 2
    "$TRAINER" --data "$DATA/shards" --epochs "$epochs" --no-progress \
        --metrics-out "$OUT/$name.jsonl" --save "$OUT/$name.safetensors" "$@" > "$OUT/$name.log"
    python3 - "$OUT/$name.jsonl" <<'PY'
import json, statistics, sys
ms = [json.loads(l) for l in open(sys.argv[1])]
wall = statistics.median(m["non_private"]["seconds"] for m in ms)
cpu = statistics.median(m["non_private"]["cpu_seconds"] for m in ms)
last = ms[-1]
print(wall, cpu, last["steps"] // len(ms), last.get("epsilon"), last["test_accuracy"])
PY
}

read -r ours ours_cpu steps eps acc < <(epoch dp 3)
read -r ours_nodp nodp_cpu _ _ acc_nodp < <(epoch nodp 1 --no-dp)
read -r ours_mb3 mb3_cpu _ _ _ < <(epoch mb3 1 --microbatch-size 3)
echo "trainer: DP epoch ${ours} s wall, ${ours_cpu} s on CPU (median of 3; ${steps} steps/epoch, epsilon after 3 epochs ${eps}, test acc ${acc})"
echo "trainer: no-DP epoch ${ours_nodp} s (${nodp_cpu} s CPU, test acc ${acc_nodp}); microbatch-3 DP epoch ${ours_mb3} s (${mb3_cpu} s CPU)"

opacus=""; seedalg=""
if [ -z "${SKIP_TORCH:-}" ]; then
    flags=(--shards "$DATA/shards" --threads "${THREADS:-1}")
    [ -n "${SKIP_OPACUS:-}" ] && flags+=(--skip-opacus)
    [ -n "${OPACUS_STEPS:-}" ] && flags+=(--opacus-steps "$OPACUS_STEPS")
    py=.venv-bench/bin/python
    [ -x "$py" ] || py=python3
    # The saved model loads into PyTorch and scores what the trainer reported on the test split.
    "$py" -c "import safetensors" 2>/dev/null || "$py" -m pip install -q safetensors
    "$py" bench/trainer/torch_bench.py --shards "$DATA/shards" --check-model "$OUT/dp.safetensors"
    "$py" bench/trainer/torch_bench.py "${flags[@]}" | tee "$OUT/torch.jsonl"
    opacus=$(python3 -c "import json,sys; [print(json.loads(l)['seconds_per_epoch']) for l in open(sys.argv[1]) if '\"opacus\"' in l]" "$OUT/torch.jsonl")
    seedalg=$(python3 -c "import json,sys; [print(json.loads(l)['seconds_per_epoch']) for l in open(sys.argv[1]) if 'seed_microbatch3' in l]" "$OUT/torch.jsonl")
fi

python3 - "$ours" "$ours_cpu" "$ours_nodp" "$ours_mb3" "${opacus:-nan}" "${seedalg:-nan}" <<'PY'
import sys
ours, ours_cpu, nodp, mb3, opacus, seed = map(float, sys.argv[1:])
rows = [("trainer (ours), DP, per-example", ours), ("  same, on-CPU time only", ours_cpu),
        ("trainer (ours), no DP", nodp), ("trainer (ours), DP, microbatches of 3", mb3),
        ("Opacus 1.6 (PyTorch 2.11), DP", opacus), ("seed algorithm (microbatch 3, PyTorch)", seed)]
print()
print(f"{'one epoch, 960k rows, batch 256':<42} {'s/epoch':>10} {'vs ours':>10}")
for name, s in rows:
    ratio = s / ours if s == s else float("nan")
    print(f"{name:<42} {s:>10.3f} {ratio:>9.1f}x")
print(f"goal: <= 0.5 s per DP epoch: {'met' if ours <= 0.5 else 'NOT met'}; >= 50x faster than Opacus: "
      + ("n/a" if opacus != opacus else ("met" if opacus / ours >= 50 else "NOT met")))
PY
