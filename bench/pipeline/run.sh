#!/usr/bin/env bash
# Issue 2's benchmark: `pipeline run` (1x1, 1x2, 2x1 workers x threads) against PySpark
# local[2], polars and a sequential Python csv script, on the same generated 1.2M-row file, in
# one run, end to end (process start included). Prints medians and ratios to `pipeline` 1x2.
# `pipeline 2x1 plaintext` is 2x1 with `--insecure-plaintext`: the price of the encrypted links.
#   bench/pipeline/run.sh [repetitions]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
reps="${1:-5}"
work="$root/bench/out/pipeline"; mkdir -p "$work"
venv="$root/.venv-bench-pipeline"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q polars==1.* pyspark==3.5.*
fi
command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
cargo build --release -q -p pipeline --manifest-path "$root/Cargo.toml"
bin="$root/target/release/pipeline"
data="$work/CaPUMS5full.csv"
[ -f "$data" ] || "$bin" generate --rows 1200000 --seed 1 --output "$data"
py="$venv/bin/python"; here="$root/bench/pipeline"
load=$(cut -d" " -f1-3 /proc/loadavg)

declare -A cmds=(
  ["pipeline 1x1"]="$bin run --input $data --output $work/o --overwrite -q --workers 1 --threads 1"
  ["pipeline 1x2"]="$bin run --input $data --output $work/o --overwrite -q --workers 1 --threads 2"
  ["pipeline 2x1"]="$bin run --input $data --output $work/o --overwrite -q --workers 2 --threads 1"
  ["pipeline 2x1 plaintext"]="$bin run --input $data --output $work/o --overwrite -q --workers 2 --threads 1 --insecure-plaintext"
  ["polars"]="$py $here/polars_job.py $data $work/polars 16"
  ["pyspark local[2]"]="$py $here/spark_job.py $data $work/spark 16"
  ["python csv"]="$py $here/seq_csv.py $data $work/seq 16"
)
order=("pipeline 1x1" "pipeline 1x2" "pipeline 2x1" "pipeline 2x1 plaintext" "polars" "pyspark local[2]" "python csv")
med() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A median cpu best
for name in "${order[@]}"; do
  walls=(); cpus=()
  n=$reps; [ "$name" = "python csv" ] || [ "$name" = "pyspark local[2]" ] && n=$(( reps < 3 ? reps : 3 ))
  for _ in $(seq "$n"); do
    rm -rf "$work/polars" "$work/seq"
    /usr/bin/time -f "%e %U %S" -o "$work/time" ${cmds[$name]} >/dev/null 2>&1
    read -r wall user sys < "$work/time"
    walls+=("$wall"); cpus+=("$(echo "$user + $sys" | bc)")
  done
  median[$name]=$(printf '%s\n' "${walls[@]}" | med)
  best[$name]=$(printf '%s\n' "${walls[@]}" | sort -g | head -n 1)
  cpu[$name]=$(printf '%s\n' "${cpus[@]}" | med)
done
echo "machine: $(nproc) cores, $(uname -m); input: 1.2M rows, $(stat -c %s "$data") bytes; medians of up to $reps runs"
echo "load average before: $load"
echo "(best = fastest run: the least disturbed by other load on a shared machine)"
printf '%-18s %9s %9s %9s %14s %14s\n' "engine" "median s" "best s" "cpu s" "median x 1x2" "best x 1x2"
base=${median["pipeline 1x2"]}; bbase=${best["pipeline 1x2"]}
for name in "${order[@]}"; do
  printf '%-18s %9.3f %9.3f %9.3f %14.1f %14.1f\n' "$name" "${median[$name]}" "${best[$name]}" "${cpu[$name]}" \
    "$(echo "${median[$name]} / $base" | bc -l)" "$(echo "${best[$name]} / $bbase" | bc -l)"
done
