#!/usr/bin/env bash
# Issue 27's ingest goal, side by side: `pipeline run` binaries (1x2 by default) against polars
# 1.44's streaming engine doing the same work (bench/scaling/polars_stream.py: row index as the
# offset, drop nulls, binary labels, 16 CSV shards by a hash of the row index), on one input in
# the page cache, ROUNDS rounds, the order rotating each round. Per engine: median and best wall
# time, median CPU time (user + sys), last peak RSS; per binary, polars' median wall time over
# its own.
#   bench/ingest/vs_polars.sh INPUT ROUNDS BIN...
#   e.g. bench/ingest/vs_polars.sh bench/data/gen-12000000.csv 7 target/release/pipeline
# Env: ARGS (default "--workers 1 --threads 2"). Needs .venv-bench (bench/scaling/run.sh makes it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
input=$1 rounds=$2; shift 2
py="$root/.venv-bench/bin/python"
export POLARS_MAX_THREADS=2
out=$(mktemp -d "$root/bench/data/vs.XXXXXX"); trap 'rm -rf "$out"' EXIT
cat "$input" >/dev/null
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ); $("$py" -c 'import polars; print("polars", polars.__version__)')"
engines=("$@" polars)
for _ in $(seq "$rounds"); do
  for e in "${engines[@]}"; do
    rm -rf "$out/o"
    if [ "$e" = polars ]; then
      /usr/bin/time -f "$e %e %U %S %M" "$py" "$root/bench/scaling/polars_stream.py" "$input" "$out/o" 16 2>&1 | tail -1
    else
      # shellcheck disable=SC2086
      /usr/bin/time -f "$e %e %U %S %M" "$e" run --input "$input" --output "$out/o" -q ${ARGS:---workers 1 --threads 2} 2>&1 | tail -1
    fi
  done
  engines=("${engines[@]:1}" "${engines[0]}")
done > "$out/times"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
pol=$(awk '$1=="polars" {print $2}' "$out/times" | median)
printf '%-50s %9s %9s %9s %9s %9s\n' engine "wall med" "wall min" "cpu med" "rss MB" "polars/x"
for e in "$@" polars; do
  w=$(awk -v e="$e" '$1==e {print $2}' "$out/times" | median)
  m=$(awk -v e="$e" '$1==e {print $2}' "$out/times" | sort -g | head -1)
  c=$(awk -v e="$e" '$1==e {print $3+$4}' "$out/times" | median)
  r=$(awk -v e="$e" '$1==e {r=$5} END {printf "%.0f", r/1024}' "$out/times")
  printf '%-50s %9.3f %9.3f %9.3f %9s %8.2fx\n' "$e" "$w" "$m" "$c" "$r" "$(echo "$pol / $w" | bc -l)"
done
echo "every run (engine wall user sys rss_kb):"
sed 's/^/  /' "$out/times"
