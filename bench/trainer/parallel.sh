#!/usr/bin/env bash
# Data-parallel DP-SGD on this machine: one epoch on the shards of the 1.2M-row generated file
# (960,000 training rows, clip 3, noise 0.9) at batch 256 and 4096, as 1 worker (1x1), 2 threads
# in one process (1x2) and 2 processes of one thread (2x1). Prints seconds per epoch (median
# over REPS runs of EPOCHS epochs, layouts interleaved so the machine's load hits all alike), the
# speed-up over 1x1, the CPU seconds all workers spent, and the microseconds per step worker 0
# spent in the gradient all-reduce (sending, waiting for the slower worker, adding), next to the
# all-reduce's own latency on an idle exchange.
#
# Layout `2x1p` is 2x1 with `--insecure-plaintext` (links neither authenticated nor encrypted):
# the price of the encrypted links is the 2x1 / 2x1p ratio, measured side by side.
#
# BASELINE=path/to/an/older/trainer runs that binary too, interleaved with this one (same
# layouts, same data), and prints its table below ours: a baseline measured in the same run.
#
#   bench/trainer/parallel.sh                 # REPS=3 EPOCHS=2
#   REPS=5 BATCHES="4096" bench/trainer/parallel.sh
#   BASELINE=/tmp/base/trainer bench/trainer/parallel.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DATA=bench/data/trainer
OUT=bench/out/trainer/parallel
REPS=${REPS:-3}
EPOCHS=${EPOCHS:-2}
BATCHES=${BATCHES:-"256 4096"}
LAYOUTS=${LAYOUTS:-"1x1 1x2 2x1 2x1p"}
BASELINE=${BASELINE:-}
rm -rf "$OUT"
mkdir -p "$DATA" "$OUT"

scripts/setup-torch.sh >/dev/null
# SKIP_BUILD=1 uses the release binaries already built.
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build --release -q -p pipeline -p trainer
    cargo build --release -q -p cluster --example allreduce_latency
fi
PIPELINE=target/release/pipeline
TRAINER=target/release/trainer

# The same data as run.sh: 1.2M rows without missing values, 16 shards.
if [ ! -f "$DATA/shards/_SUCCESS" ]; then
    "$PIPELINE" generate --rows 1200000 --seed 1 --na-rate 0 --output "$DATA/input.csv" --overwrite
    "$PIPELINE" run --input "$DATA/input.csv" --output "$DATA/shards" --shards 16 --threads 2 --overwrite -q
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "all-reduce latency, 551 f32 (the model's gradient), idle exchange:"
if [ -x target/release/examples/allreduce_latency ]; then
    target/release/examples/allreduce_latency 551 3000 | sed 's/^/  /'
fi

for rep in $(seq "$REPS"); do
    for batch in $BATCHES; do
        for layout in $LAYOUTS; do
            workers=${layout%x*}
            threads=${layout#*x}
            plain=()
            if [ "${threads%p}" != "$threads" ]; then
                threads=${threads%p}
                plain=(--insecure-plaintext)
            fi
            for bin in "$TRAINER" $BASELINE; do
                tag=""
                [ "$bin" = "$TRAINER" ] || tag="base-"
                name="${tag}b${batch}-${layout}-r${rep}"
                "$bin" --data "$DATA/shards" --epochs "$EPOCHS" --batch-size "$batch" \
                    --workers "$workers" --threads "$threads" "${plain[@]}" --no-progress --attack-feature none \
                    --metrics-out "$OUT/$name.jsonl" --save "$OUT/$name.safetensors" \
                    > "$OUT/$name.log"
            done
        done
    done
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"

for tag in "" ${BASELINE:+base-}; do
python3 - "$OUT" "$REPS" "$BATCHES" "$LAYOUTS" "$tag" <<'PY'
import json, statistics, sys
out, reps, batches, layouts, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5]
print()
print("baseline (BASELINE):" if tag else "this tree:")
print(f"{'batch':>6} {'WxT':>5} {'s/epoch':>8} {'speed-up':>9} {'CPU s':>7} {'all-reduce us/step':>19} {'epsilon':>9} {'test acc':>9}")
results = {}
for batch in batches:
    base = None
    for layout in layouts:
        epochs = []
        for rep in range(1, reps + 1):
            with open(f"{out}/{tag}b{batch}-{layout}-r{rep}.jsonl") as f:
                epochs += [json.loads(l) for l in f]
        wall = statistics.median(m["non_private"]["seconds"] for m in epochs)
        cpu = statistics.median(m["non_private"]["cpu_seconds"] for m in epochs)
        per_epoch = epochs[0]["steps"] // epochs[0]["epoch"]
        comm = [m["non_private"]["comm_seconds"] for m in epochs if m["non_private"].get("comm_seconds") is not None]
        comm_us = f"{statistics.median(comm) / per_epoch * 1e6:.1f}" if comm else "-"
        base = base or wall
        results[(batch, layout)] = wall
        last = epochs[-1]
        print(f"{batch:>6} {layout:>5} {wall:>8.3f} {base / wall:>8.2f}x {cpu:>7.3f} {comm_us:>19} "
              f"{last['epsilon']:>9.4f} {last['test_accuracy']:>9.4f}")
if ("4096", "1x1") in results:
    for layout in ("1x2", "2x1"):
        if ("4096", layout) in results:
            s = results[("4096", "1x1")] / results[("4096", layout)]
            print(f"goal at batch 4096, {layout}: >= 1.6x faster than 1x1: {'met' if s >= 1.6 else 'NOT met'} ({s:.2f}x)")
for batch in batches:
    if (batch, "2x1") in results and (batch, "2x1p") in results:
        r = results[(batch, "2x1")] / results[(batch, "2x1p")]
        goal = f" (issue 26: <= 1.10x: {'met' if r <= 1.10 else 'NOT met'})" if batch == "4096" else ""
        print(f"batch {batch}, 2x1 encrypted / plaintext (2x1p), s/epoch: {r:.3f}x{goal}")
PY
done
