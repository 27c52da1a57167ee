#!/usr/bin/env bash
# Issue 14's scaling curve: wall time, rows per second and peak RSS (/usr/bin/time -v) of
# `pipeline run` against polars' streaming engine and DuckDB's COPY ... PARTITION_BY, on the same
# generated files, in one run; and `pipeline` as two processes (`--workers 2`: process 0 binds
# both listeners and starts process 1; the peak RSS is the larger of the two), with its links
# encrypted (the default) and in clear (`pipeline-2x1-plain`, `--insecure-plaintext`).
#   bench/scaling/run.sh ROWS...            e.g. bench/scaling/run.sh 1200000 12000000
# Env: PIPELINE (binary, default target/release/pipeline), BEFORE (an older binary to measure too),
#      ENGINES (default "pipeline-1x2 pipeline-2x1 polars duckdb"), ROUNDS (default 1: the
#      engines in turn, ROUNDS times, and the median wall time of each), KEEP=1 keeps the inputs.
# Inputs go to bench/data, outputs to bench/out/scaling (both ignored by git); each output is
# removed after its run, so the disk holds one input, one output and the spilled runs at a time.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${PIPELINE:-$root/target/release/pipeline}"
engines="${ENGINES:-pipeline-1x2 pipeline-2x1 polars duckdb}"
rounds="${ROUNDS:-1}"
venv="$root/.venv-bench"
if [ ! -x "$venv/bin/python" ] && [[ " $engines " =~ \ (polars|duckdb)\  ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'polars==1.44.*' 'duckdb==2.0.1'
fi
py="$venv/bin/python"; here="$root/bench/scaling"
data="$root/bench/data"; out="$root/bench/out/scaling"; mkdir -p "$data" "$out"
export POLARS_MAX_THREADS=2
declare -A median

# Runs "$@" under /usr/bin/time -v; prints "wall_s peak_rss_mb".
timed() {
  /usr/bin/time -v -o "$out/time.$$" "$@" >/dev/null 2>"$out/err.$$" || { cat "$out/err.$$" >&2; return 1; }
  awk -F': ' '/Elapsed/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; w=s}
              /Maximum resident/ {r=$2/1024} END {printf "%.2f %.0f\n", w, r}' "$out/time.$$"
}

echo "machine: $(nproc) cores; load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
printf '%-22s %12s %10s %10s %12s %14s\n' engine rows bytes wall_s rows_per_s peak_rss_mb
for rows in "$@"; do
  input="$data/gen-$rows.csv"
  [ -f "$input" ] || "$bin" generate --rows "$rows" --seed 1 --output "$input" >/dev/null
  bytes=$(stat -L -c %s "$input")
  declare -A walls=() rsses=()
  for _ in $(seq "$rounds"); do
    for e in $engines; do
      rm -rf "$out/o"
      case $e in
        pipeline-1x2) r=$(timed "$bin" run --input "$input" --output "$out/o" -q --workers 1 --threads 2) ;;
        before-1x2)   r=$(timed "$BEFORE" run --input "$input" --output "$out/o" -q --workers 1 --threads 2) ;;
        pipeline-2x1) r=$(timed "$bin" run --input "$input" --output "$out/o" -q --workers 2 --threads 1) ;;
        pipeline-2x1-plain)
          r=$(timed "$bin" run --input "$input" --output "$out/o" -q --workers 2 --threads 1 --insecure-plaintext) ;;
        before-2x1)   r=$(timed "$BEFORE" run --input "$input" --output "$out/o" -q --workers 2 --threads 1) ;;
        polars) r=$(timed "$py" "$here/polars_stream.py" "$input" "$out/o" 16) ;;
        duckdb) r=$(timed "$py" "$here/duckdb_copy.py" "$input" "$out/o" 16) ;;
      esac
      read -r wall rss <<< "$r"
      walls[$e]="${walls[$e]:-} $wall"; rsses[$e]=$rss
      rm -rf "$out/o"
    done
  done
  for e in $engines; do
    wall=$(printf '%s\n' ${walls[$e]} | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
    printf '%-22s %12s %10s %10s %12.0f %14s   (walls:%s)\n' "$e" "$rows" "$bytes" "$wall" "$(echo "$rows / $wall" | bc -l)" "${rsses[$e]}" "${walls[$e]}"
    median[$e]=$wall
  done
  if [ -n "${median[pipeline-2x1]:-}" ] && [ -n "${median[pipeline-2x1-plain]:-}" ]; then
    printf 'pipeline 2x1 on %s rows, encrypted / plaintext: %.3fx (issue 26: <= 1.15x)\n' "$rows" \
      "$(echo "${median[pipeline-2x1]} / ${median[pipeline-2x1-plain]}" | bc -l)"
  fi
  unset walls rsses
  [ -n "${KEEP:-}" ] || rm -f "$input"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f "$out"/time.* "$out"/err.*
