#!/usr/bin/env bash
# Issue 2's benchmark: `pipeline run` (1x1, 1x2, 2x1 workers x threads) against PySpark
# local[2], polars and a sequential Python csv script, on the same generated 1.2M-row file, in
# one run, end to end (process start included). Prints medians and ratios to `pipeline` 1x2.
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

declare -A cmds=(
  ["pipeline 1x1"]="$bin run --input $data --output $work/o --overwrite -q --workers 1 --threads 1"
  ["pipeline 1x2"]="$bin run --input $data --output $work/o --overwrite -q --workers 1 --threads 2"
  ["pipeline 2x1"]="$bin run --input $data --output $work/o --overwrite -q --workers 2 --threads 1"
  ["polars"]="$py $here/polars_job.py $data $work/polars 16"
  ["pyspark local[2]"]="$py $here/spark_job.py $data $work/spark 16"
  ["python csv"]="$py $here/seq_csv.py $data $work/seq 16"
)
order=("pipeline 1x1" "pipeline 1x2" "pipeline 2x1" "polars" "pyspark local[2]" "python csv")
declare -A median
for name in "${order[@]}"; do
  times=()
  n=$reps; [ "$name" = "python csv" ] || [ "$name" = "pyspark local[2]" ] && n=$(( reps < 3 ? reps : 3 ))
  for _ in $(seq "$n"); do
    rm -rf "$work/polars" "$work/seq"
    s=$(date +%s.%N); ${cmds[$name]} >/dev/null 2>&1; e=$(date +%s.%N)
    times+=("$(echo "$e - $s" | bc)")
  done
  median[$name]=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
done
echo "machine: $(nproc) cores, $(uname -m); input: 1.2M rows, $(stat -c %s "$data") bytes; medians of up to $reps runs"
printf '%-18s %10s %14s\n' "engine" "seconds" "x pipeline 1x2"
base=${median["pipeline 1x2"]}
for name in "${order[@]}"; do
  printf '%-18s %10.3f %14.1f\n' "$name" "${median[$name]}" "$(echo "${median[$name]} / $base" | bc -l)"
done
