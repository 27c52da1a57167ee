#!/usr/bin/env bash
# trainer audit (issue 24): (1) its overhead over a plain run of the same settings, on the 1.2M-row
# bench data, with 1,000 and 10,000 gradient canaries; (2) the mutation table: the audit on
# purposely broken mechanisms (noise x0.5, x0.1, none; clip x10 untold; sampling 4x the told rate;
# the accountant told q/2) at the defaults (batch 256, 10 epochs, target epsilon 1) and at full
# batch (20 steps, target epsilon 2), then correct full-batch runs at target epsilon 2, 4, 8 over
# 5 seeds, on a 20,000-row generated file. The broken mechanisms exist only in the
# `audit_mutations` example, built here with `--features audit-mutations`; the shipped trainer
# never has them.
#
#   bench/trainer/audit.sh                 # both parts
#   PART=overhead bench/trainer/audit.sh   # or PART=table
#   TRAINER=... PIPELINE=... MUTATIONS=... bench/trainer/audit.sh   # prebuilt binaries
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=bench/out/audit
mkdir -p "$OUT" bench/data/trainer bench/data/audit
if [ -z "${TRAINER:-}" ]; then
    cargo build --release -q -p pipeline -p trainer
fi
if [ -z "${MUTATIONS:-}" ] && { [ "${PART:-all}" = table ] || [ "${PART:-all}" = all ]; }; then
    cargo build --release -q -p trainer --features audit-mutations --example audit_mutations
fi
TRAINER=${TRAINER:-target/release/trainer}
PIPELINE=${PIPELINE:-target/release/pipeline}
MUTATIONS=${MUTATIONS:-target/release/examples/audit_mutations}
REPS=${REPS:-5}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "uptime at start: $(uptime)"

# measure METRICS CMD...: "wall cpu loop" seconds of one run: the whole process's wall and CPU
# (user + sys) time, and the training loop's on-CPU time (the epochs' "cpu_seconds" in the
# metrics file: the training thread's own, which other processes on a busy machine do not
# inflate as they do its wall time).
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
loop = sum(json.loads(l)["non_private"]["cpu_seconds"] for l in open(metrics))
print(f"{wall:.3f} {cpu:.3f} {loop:.3f}")
PY
}

median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }

if [ "${PART:-all}" = overhead ] || [ "${PART:-all}" = all ]; then
    BIG=bench/data/trainer
    if [ ! -f "$BIG/shards/_SUCCESS" ]; then
        "$PIPELINE" generate --rows 1200000 --seed 1 --na-rate 0 --output "$BIG/input.csv" --overwrite
        "$PIPELINE" run --input "$BIG/input.csv" --output "$BIG/shards" --shards 16 --threads 2 --overwrite -q
    fi
    echo "## overhead: median of $REPS runs each (interleaved), seconds"
    echo "| setting | plain wall | audit wall | wall ratio | plain CPU | audit CPU | CPU ratio | plain loop CPU | audit loop CPU | loop ratio | layout (quiet / code / window) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
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
        local layout
        layout=$(tail -1 "$OUT/last.log" | python3 -c 'import json,sys; l=json.load(sys.stdin).get("layout") or {}; print(l.get("quiet_coordinates","-"), "/", l.get("code_width","-"), "/", l.get("score_window","-"))')
        local mpw mpc mpl maw mac mal
        mpw=$(median "${pw[@]}"); mpc=$(median "${pc[@]}"); mpl=$(median "${pl[@]}")
        maw=$(median "${aw[@]}"); mac=$(median "${ac[@]}"); mal=$(median "${al[@]}")
        echo "| $name | $mpw | $maw | $(ratio "$maw" "$mpw") | $mpc | $mac | $(ratio "$mac" "$mpc") | $mpl | $mal | $(ratio "$mal" "$mpl") | $layout |"
    }
    overhead "batch 256, 2 epochs, 1,000 gradient canaries" "--canaries 1000" --epochs 2 --seed 1
    overhead "batch 256, 2 epochs, 10,000 gradient canaries" "--canaries 10000" --epochs 2 --seed 1
    overhead "batch 256, 10 epochs, 10,000 gradient canaries" "--canaries 10000" --epochs 10 --seed 1
    overhead "full batch, 5 steps, 10,000 gradient canaries" "--canaries 10000" --epochs 5 --batch-size 4194304 --seed 1
    overhead "full batch, 5 steps, 100,000 gradient canaries" "--canaries 100000" --epochs 5 --batch-size 4194304 --seed 1
    echo "uptime after the overhead part: $(uptime)"
fi

if [ "${PART:-all}" = table ] || [ "${PART:-all}" = all ]; then
    SMALL=bench/data/audit
    if [ ! -f "$SMALL/shards/_SUCCESS" ]; then
        "$PIPELINE" generate --rows 20000 --seed 2 --na-rate 0 --output "$SMALL/input.csv" --overwrite
        "$PIPELINE" run --input "$SMALL/input.csv" --output "$SMALL/shards" --shards 4 --overwrite -q
    fi
    echo "## mutation table and full-batch repeats (20,000 generated rows, delta 1e-5, alpha 0.05; * = f-DP at q < 1, an estimate)"
    CANARIES=${CANARIES:-1000} FULL_CANARIES=${FULL_CANARIES:-100000} SEEDS=${SEEDS:-5} \
        "$MUTATIONS" "$SMALL/shards" all
    echo "uptime after the table: $(uptime)"
fi
