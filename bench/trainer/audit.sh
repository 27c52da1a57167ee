#!/usr/bin/env bash
# trainer audit: (1) its overhead over a plain run of the same settings, on the 1.2M-row bench
# data; (2) audited against accounted epsilon for accounted epsilon 1, 2, 4, 8 and without noise,
# at batch 256 and at full batch, gradient and input canaries, on a 20,000-row generated file.
#
#   bench/trainer/audit.sh                 # both parts
#   PART=overhead bench/trainer/audit.sh   # or PART=table
#   TRAINER=... PIPELINE=... bench/trainer/audit.sh   # prebuilt binaries
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=bench/out/audit
mkdir -p "$OUT" bench/data/trainer bench/data/audit
if [ -z "${TRAINER:-}" ]; then
    cargo build --release -q -p pipeline -p trainer
fi
TRAINER=${TRAINER:-target/release/trainer}
PIPELINE=${PIPELINE:-target/release/pipeline}
REPS=${REPS:-3}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"

# measure METRICS CMD...: "wall cpu loop" seconds of one run: the whole process's wall and CPU
# (user + sys) time, and the training loop's time (the epochs' "seconds" in the metrics file).
measure() {
    python3 - "$@" <<'PY'
import json, os, resource, subprocess, sys, time
metrics, cmd = sys.argv[1], sys.argv[2:]
if os.path.exists(metrics):
    os.remove(metrics)
before = resource.getrusage(resource.RUSAGE_CHILDREN)
t = time.perf_counter()
with open("bench/out/audit/last.log", "w") as log:
    subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
wall = time.perf_counter() - t
after = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
loop = sum(json.loads(l)["seconds"] for l in open(metrics))
print(f"{wall:.3f} {cpu:.3f} {loop:.3f}")
PY
}

median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }

if [ "${PART:-overhead}" = overhead ] || [ -z "${PART:-}" ] || [ "${PART}" = all ]; then
    BIG=bench/data/trainer
    if [ ! -f "$BIG/shards/_SUCCESS" ]; then
        "$PIPELINE" generate --rows 1200000 --seed 1 --na-rate 0 --output "$BIG/input.csv" --overwrite
        "$PIPELINE" run --input "$BIG/input.csv" --output "$BIG/shards" --shards 16 --threads 2 --overwrite -q
    fi
    echo "## overhead: median of $REPS runs each (interleaved), seconds"
    echo "| setting | plain wall | audit wall | plain CPU | audit CPU | plain loop | audit loop | loop ratio | CPU ratio |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    overhead() { # NAME AUDIT_ARGS COMMON_ARGS...
        local name=$1 extra=$2; shift 2
        local pw=() pc=() pl=() aw=() ac=() al=() w c l
        for _ in $(seq "$REPS"); do
            read -r w c l < <(measure "$OUT/plain.jsonl" "$TRAINER" --data "$BIG/shards" --no-progress \
                --attack-feature none --metrics-out "$OUT/plain.jsonl" --save "$OUT/plain.safetensors" "$@")
            pw+=("$w"); pc+=("$c"); pl+=("$l")
            # shellcheck disable=SC2086
            read -r w c l < <(measure "$OUT/audit.jsonl" "$TRAINER" audit --data "$BIG/shards" --no-progress \
                --attack-feature none --metrics-out "$OUT/audit.jsonl" $extra "$@")
            aw+=("$w"); ac+=("$c"); al+=("$l")
        done
        local mpw mpc mpl maw mac mal
        mpw=$(median "${pw[@]}"); mpc=$(median "${pc[@]}"); mpl=$(median "${pl[@]}")
        maw=$(median "${aw[@]}"); mac=$(median "${ac[@]}"); mal=$(median "${al[@]}")
        echo "| $name | $mpw | $maw | $mpc | $mac | $mpl | $mal | $(python3 -c "print(f'{$mal/$mpl:.2f}x')") | $(python3 -c "print(f'{$mac/$mpc:.2f}x')") |"
    }
    overhead "batch 256, 2 epochs, 1000 gradient canaries (hidden 50: random directions)" "--canary-kind gradient" --epochs 2 --seed 1
    overhead "batch 256, 2 epochs, 1000 gradient canaries, hidden 100 (Diracs)" "--canary-kind gradient" --epochs 2 --hidden 100 --seed 1
    overhead "batch 256, 2 epochs, 1000 input canaries" "--canary-kind input" --epochs 2 --seed 1
    overhead "full batch, 5 steps, 1000 gradient canaries, hidden 100 (corrected score)" "--canary-kind gradient" --epochs 5 --batch-size 10000000 --hidden 100 --seed 1
fi

if [ "${PART:-}" = table ] || [ -z "${PART:-}" ] || [ "${PART}" = all ]; then
    SMALL=bench/data/audit
    if [ ! -f "$SMALL/shards/_SUCCESS" ]; then
        "$PIPELINE" generate --rows 20000 --seed 2 --na-rate 0 --output "$SMALL/input.csv" --overwrite
        "$PIPELINE" run --input "$SMALL/input.csv" --output "$SMALL/shards" --shards 4 --overwrite -q
    fi
    echo "## audited vs accounted epsilon (delta 1e-5, alpha 0.05, 1000 canaries, hidden 100, seed 1)"
    echo "| batch | steps | canaries | accounted | audited | right / guesses | k+ / k- |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: |"
    row() { # BATCH_LABEL KIND NOISE_ARGS... (after the batch args)
        local label=$1 kind=$2; shift 2
        "$TRAINER" audit --data "$SMALL/shards" --no-progress --attack-feature none --hidden 100 \
            --lr 0.05 --seed 1 --canary-kind "$kind" "$@" > "$OUT/row.log"
        tail -1 "$OUT/row.log" | python3 -c '
import json, sys
r = json.load(sys.stdin)
acc = r["accounted_epsilon"]
r["acc"] = "inf (no noise)" if acc is None else "%.2f" % acc
r["label"] = sys.argv[1]
print("| {label} | {steps} | {canary_kind} | {acc} | {audited_epsilon:.2f} | {correct} / {guesses} | {k_plus} / {k_minus} |".format(**r))
' "$label"
    }
    for kind in gradient input; do
        for eps in 1 2 4 8; do
            row "256" "$kind" --batch-size 256 --epochs 10 --target-epsilon "$eps"
        done
        row "256" "$kind" --batch-size 256 --epochs 10 --noise-multiplier 0
        for eps in 1 2 4 8; do
            row "full" "$kind" --batch-size 10000000 --epochs 50 --target-epsilon "$eps"
        done
        row "full" "$kind" --batch-size 10000000 --epochs 50 --noise-multiplier 0
    done
fi
