#!/usr/bin/env bash
# Issue 27's per-stage profile of `pipeline run`: CPU seconds per stage (read, parse, clean, key,
# exchange, write) from `perf record --call-graph dwarf`, classified by bench/ingest/stages.py,
# beside the wall time and the limits measured on this machine in the same run (page-cache read
# and write rates and the disk's synced write rate with dd, one core's memcpy and the keying
# primitives with shards' `limits` example).
#   bench/ingest/profile.sh INPUT [BIN] [ARGS...]    e.g. bench/ingest/profile.sh bench/data/gen-12000000.csv
# BIN defaults to target/release/pipeline; ARGS to "--workers 1 --threads 2". Needs perf.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
input=$1; bin=${2:-$root/target/release/pipeline}; shift $(( $# < 2 ? $# : 2 ))
args=${*:---workers 1 --threads 2}
work=$(mktemp -d "$root/bench/data/profile.XXXXXX"); trap 'rm -rf "$work"' EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ); $bin $args"
cat "$input" > /dev/null
# shellcheck disable=SC2086
/usr/bin/time -f "wall %e s, user %U s, sys %S s, peak RSS %M KB" \
  "$bin" run --input "$input" --output "$work/o" -q $args 2>&1 | tail -1
out_bytes=$(du -sb "$work/o" | cut -f1); rm -rf "$work/o"
echo "input $(stat -c %s "$input") bytes, output $out_bytes bytes"
# shellcheck disable=SC2086
perf record -q -F 999 --call-graph dwarf,16384 -o "$work/perf.data" \
  "$bin" run --input "$input" --output "$work/o" -q $args >/dev/null 2>&1
rm -rf "$work/o"
perf script -i "$work/perf.data" -F tid,period,ip,sym --inline 2>/dev/null | python3 "$root/bench/ingest/stages.py"
rm -f "$work/perf.data"
mb=$(( (out_bytes + 1048575) / 1048576 ))
echo "limits:"
dd if="$input" of=/dev/null bs=1M 2>&1 | tail -1 | sed 's/^/  page-cache read of the input: /'
/usr/bin/time -f "  (%S s sys)" dd if=/dev/zero of="$work/dd" bs=1M count="$mb" 2>&1 | tail -2 | sed 's/^/  page-cache write of the output size: /'
rm -f "$work/dd"
dd if=/dev/zero of="$work/dd" bs=1M count="$mb" conv=fdatasync 2>&1 | tail -1 | sed 's/^/  disk write of the output size (fdatasync): /'
rm -f "$work/dd"
"$root/target/release/examples/limits" "$(($(wc -l < "$input") - 1))" | sed 's/^/  /'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
