#!/usr/bin/env bash
# `pipeline run` with input and output on S3 (a local S3 server on loopback) versus on local
# disk, on the 1.2M-row generated file, in one run; prints medians, the S3/local ratio, and a
# breakdown of the extra time (S3 input only, S3 output only, raw transfers).
#
#   bench/s3/run.sh                      # REPS=5 CONFIGS="1x2 2x2" ROWS=1200000 SERVER=moto
#   BASELINE=/path/to/old/pipeline bench/s3/run.sh   # also times that binary, interleaved
#   SERVER=s3s bench/s3/run.sh           # against s3s-fs (Rust) instead of moto (Python)
#
# SERVER is scripts/s3-server.sh's S3_SERVER_KIND: moto (what the tests use; Python, slower than
# the client at taking in a run's output) or s3s (s3s-fs, installed on first use).
# Each timing is wall time and the pipeline processes' on-CPU time (user + sys of the command
# and its children; the server's own CPU is not in it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
rows="${ROWS:-1200000}"
reps="${REPS:-5}"
configs="${CONFIGS:-1x2 2x2}"
work="$root/bench/out/s3"
data="$root/bench/data/CaPUMS5full-$rows.csv"
mkdir -p "$work" "$(dirname "$data")"

echo "building (release)..." >&2
# One invocation, so both targets share one feature set (two would build the SDK twice).
cargo build --release --quiet -p pipeline -p shards --features shards/s3 --bin pipeline --example s3cp
pipeline="$root/target/release/pipeline"
s3cp="$root/target/release/examples/s3cp"

export S3_SERVER_STATE="$work/server" S3_SERVER_KIND="${SERVER:-moto}"
"$root/scripts/s3-server.sh" stop >/dev/null 2>&1 || true
trap '"$root/scripts/s3-server.sh" stop' EXIT
eval "$("$root/scripts/s3-server.sh" start 2>"$work/server.start")"
server="$(sed -n 's/^s3-server: \(.*\) listening on .*/\1/p' "$work/server.start")"
echo "server: $server on $AWS_ENDPOINT_URL" >&2
# A signed CreateBucket (s3s-fs refuses unsigned requests; moto takes either).
curl -fsS -X PUT -o /dev/null --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -H "x-amz-content-sha256: $(sha256sum </dev/null | cut -d' ' -f1)" "$AWS_ENDPOINT_URL/bench"

[[ -e "$data" ]] || "$pipeline" generate --rows "$rows" --seed 1 --output "$data" >&2
remote_in="s3://bench/in/CaPUMS5full.csv"
"$s3cp" "$data" "$remote_in" >&2

times="$work/times.tsv"
: >"$times"
# One command's wall seconds and on-CPU seconds (user + sys, children included), appended to
# $times as "label<TAB>wall<TAB>cpu".
timed() {
    local label="$1"
    shift
    /usr/bin/time -f '%e %U %S' -o "$work/last.time" "$@" >/dev/null 2>"$work/last.err" || {
        cat "$work/last.err" >&2
        exit 1
    }
    read -r wall user sys <"$work/last.time"
    printf '%s\t%s\t%s\n' "$label" "$wall" "$(echo "$user + $sys" | bc)" >>"$times"
}

for config in $configs; do
    w="${config%x*}"
    t="${config#*x}"
    run=("$pipeline" run --workers "$w" --threads "$t" --shards 16 --overwrite --quiet)
    for i in $(seq 1 "$reps"); do
        echo "$config rep $i/$reps" >&2
        timed "$config local" "${run[@]}" --input "$data" --output "$work/local"
        timed "$config s3" "${run[@]}" --input "$remote_in" --output s3://bench/out
        timed "$config s3-in" "${run[@]}" --input "$remote_in" --output "$work/local-from-s3"
        timed "$config s3-out" "${run[@]}" --input "$data" --output s3://bench/out-from-local
        if [[ -n "${BASELINE:-}" ]]; then
            base=("$BASELINE" "${run[@]:1}")
            timed "$config local (baseline)" "${base[@]}" --input "$data" --output "$work/local"
            timed "$config s3 (baseline)" "${base[@]}" --input "$remote_in" --output s3://bench/out-base
        fi
    done
done
for i in $(seq 1 "$reps"); do
    timed "raw get" "$s3cp" "$remote_in" "$work/download.csv"
    timed "raw put" "$s3cp" "$data" s3://bench/raw/upload.csv
done

# The S3 runs' outputs must be the local run's bytes: every part, and the manifest where the
# input is the same file (it names the input's base name).
for prefix in out out-from-local; do
    files=("$work"/local/part-*)
    [[ "$prefix" == out ]] || files+=("$work/local/_manifest.json")
    for file in "${files[@]}"; do
        name="$(basename "$file")"
        "$s3cp" "s3://bench/$prefix/$name" "$work/check" 2>/dev/null
        cmp -s "$file" "$work/check" || {
            echo "s3://bench/$prefix/$name differs from $file" >&2
            exit 1
        }
    done
done
rm -f "$work/check"
echo "outputs on S3 (s3->s3, local->s3): the local run's bytes" >&2

python3 - "$times" "$configs" "$(stat -c %s "$data")" "$rows" "$server" <<'PY'
import statistics, sys
from collections import defaultdict
path, configs, size, rows = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4])
server = sys.argv[5]
t, cpu = defaultdict(list), defaultdict(list)
for line in open(path):
    label, secs, cpus = line.rstrip("\n").split("\t")
    t[label].append(float(secs))
    cpu[label].append(float(cpus))
med = {k: statistics.median(v) for k, v in t.items()}
mcpu = {k: statistics.median(v) for k, v in cpu.items()}
mib = size / 2**20
print(f"input: {rows} rows, {mib:.1f} MiB; medians of {len(t[configs[0] + ' local'])} runs; {server} on 127.0.0.1")
print(f"{'workers x threads':<18} {'local':>8} {'s3->s3':>8} {'ratio':>6} {'s3 in':>8} {'s3 out':>8}")
for c in configs:
    l, s, i, o = (med[f"{c} {k}"] for k in ("local", "s3", "s3-in", "s3-out"))
    print(f"{c:<18} {l:>7.2f}s {s:>7.2f}s {s / l:>5.2f}x {i:>7.2f}s {o:>7.2f}s")
print("s3 in: S3 input, local output; s3 out: local input, S3 output (commit by server-side copy)")
print("on-CPU seconds of the pipeline processes (medians):")
for c in configs:
    print(f"  {c}: " + ", ".join(f"{k} {mcpu[f'{c} {k}']:.2f}s" for k in ("local", "s3", "s3-in", "s3-out")))
for c in configs:
    if f"{c} s3 (baseline)" in med:
        l, s = med[f"{c} local (baseline)"], med[f"{c} s3 (baseline)"]
        print(f"baseline {c}: local {l:.2f}s, s3->s3 {s:.2f}s, ratio {s / l:.2f}x; "
              f"on-CPU local {mcpu[f'{c} local (baseline)']:.2f}s, s3->s3 {mcpu[f'{c} s3 (baseline)']:.2f}s")
g, p = med["raw get"], med["raw put"]
print(f"raw transfer of the input through the store: get {g:.2f}s ({mib / g:.0f} MiB/s), put {p:.2f}s ({mib / p:.0f} MiB/s)")
PY
