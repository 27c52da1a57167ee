#!/usr/bin/env bash
# Issue 11's check that the commit protocol (staging beside the target, one rename, syncs, the
# lock, the reader's checks) costs the happy path under 10%: `pipeline run` on the 1.2M-row
# file with two binaries, the one before and the one after, interleaved in one run (the order
# alternates each round): each rewriting its own existing output with --overwrite, and each
# writing a fresh output (the old one removed, untimed, before the run).
#
#   bench/pipeline/commit.sh OLD_PIPELINE NEW_PIPELINE [rounds]
#
# Reports per binary the median and best wall time and median CPU time of the whole run
# (workers x threads 1x2), and the median time of its commit: from the last part file finished
# (its rename into the temporary directory) to the process's exit, read from an strace of the
# renames only (so those runs are not counted in the wall times).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
old="$1" new="$2" rounds="${3:-7}"
work="${WORK:-$root/bench/out/commit}"; mkdir -p "$work"
data="$work/CaPUMS5full.csv"
[ -f "$data" ] || "$new" generate --rows 1200000 --seed 1 --output "$data" >/dev/null
load_before=$(cut -d" " -f1-3 /proc/loadavg)
med() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A walls cpus commits
run() { # name binary mode
  local name="$1 $3" bin=$2 out="$work/o-$1"
  [ "$3" = fresh ] && rm -rf "$out"
  /usr/bin/time -f "%e %U %S" -o "$work/time" \
    "$bin" run --input "$data" --output "$out" --overwrite -q --workers 1 --threads 2
  read -r wall user sys < "$work/time"
  walls[$name]+="$wall "; cpus[$name]+="$(echo "$user + $sys" | bc) "
  [ "$3" = fresh ] && rm -rf "$out"
  strace -f -ttt -qq --seccomp-bpf -e trace=rename,renameat,renameat2,exit_group -o "$work/trace" \
    "$bin" run --input "$data" --output "$out" --overwrite -q --workers 1 --threads 2
  # The last part finished: a rename whose target is a part in the temporary directory.
  local t0 t1
  t0=$(grep -E '(_temporary|\.staging)/part-[0-9]+"' "$work/trace" | tail -n 1 | awk '{print $2}')
  t1=$(grep 'exit_group' "$work/trace" | tail -n 1 | awk '{print $2}')
  commits[$name]+="$(echo "($t1 - $t0) * 1000" | bc -l) "
}
# One untimed run each, so both outputs exist and the page cache is warm.
"$old" run --input "$data" --output "$work/o-old" --overwrite -q --workers 1 --threads 2
"$new" run --input "$data" --output "$work/o-new" --overwrite -q --workers 1 --threads 2
for r in $(seq "$rounds"); do
  for mode in overwrite fresh; do
    if [ $((r % 2)) -eq 1 ]; then run old "$old" $mode; run new "$new" $mode
    else run new "$new" $mode; run old "$old" $mode; fi
  done
done
echo "machine: $(nproc) cores; input: 1.2M rows, $(stat -c %s "$data") bytes; $rounds rounds, interleaved"
echo "load average before: $load_before; after: $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-14s %10s %10s %10s %18s\n' "binary, output" "median s" "best s" "cpu s" "commit median ms"
for name in "old overwrite" "new overwrite" "old fresh" "new fresh"; do
  printf '%-14s %10s %10s %10s %18.1f\n' "$name" \
    "$(tr ' ' '\n' <<<"${walls[$name]}" | grep . | med)" \
    "$(tr ' ' '\n' <<<"${walls[$name]}" | grep . | sort -g | head -n 1)" \
    "$(tr ' ' '\n' <<<"${cpus[$name]}" | grep . | med)" \
    "$(tr ' ' '\n' <<<"${commits[$name]}" | grep . | med)"
done
