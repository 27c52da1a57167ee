#!/usr/bin/env bash
# Interleaved A/B of `pipeline run` binaries on one input: ROUNDS rounds, the order rotating each
# round; per binary, the wall times, on-CPU times (user + sys) and the last peak RSS.
#   bench/scaling/ab.sh INPUT ROUNDS BIN...     e.g. bench/scaling/ab.sh bench/data/gen-12000000.csv 3 old new
# Env: ARGS (default "--workers 1 --threads 2"). The output goes to a temporary directory.
set -euo pipefail
input=$1 rounds=$2; shift 2
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$rounds"); do
  for b in "$@"; do
    rm -rf "$out/o"
    # shellcheck disable=SC2086
    /usr/bin/time -f "$b %e %U %S %M" "$b" run --input "$input" --output "$out/o" -q ${ARGS:---workers 1 --threads 2} 2>&1 | tail -1
  done
  set -- "${@:2}" "$1"
done | awk '{w[$1]=w[$1]" "$2; c[$1]=c[$1]" "($3+$4); m[$1]=$5}
            END {for (b in w) print b, "wall:" w[b], " cpu:" c[b], " rss_kb:" m[b]}'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
