#!/usr/bin/env bash
# Issue 3's benchmark: the streaming step on the 1.2M-row generated file, in one run.
#   mapper | sort | reducer with our release binaries against the Python scripts a user would
#   write (mapper.py: split, print str(list)<TAB>label; reducer.py: echo), each stage timed on
#   its own (file to file, so mapper, sort and reducer are separate), then the whole pipe, then
#   both under mrjob's local runner (-r local --num-cores 2). Medians of REPS runs (mrjob: fewer).
#   bench/streaming/run.sh [REPS]      (default 5)
# Env: MRJOB=0 skips the mrjob rows (and installing mrjob); the Python scripts then run on python3.
#      BIN=DIR takes the mapper and reducer from DIR instead of building them.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/bench/streaming"
reps="${1:-5}"
work="$root/bench/out/streaming"
mkdir -p "$work"
export LC_ALL=C   # the same sort for both; mrjob's local runner sorts with LC_ALL=C too

bin="${BIN:-$root/target/release}"
[ -n "${BIN:-}" ] || cargo build --release --quiet -p hadoop-streaming --manifest-path "$root/Cargo.toml"
mrjob=${MRJOB:-1}
if [ "$mrjob" = 1 ]; then
    bash "$root/emr/setup-mrjob.sh" >/dev/null
    py="$root/.venv-mrjob/bin/python"
else
    py=python3
fi

# The same file as bench/pipeline (pipeline generate --rows 1200000 --seed 1).
data="$work/CaPUMS5full.csv"
if [ ! -f "$data" ]; then
    gen="$root/target/release/pipeline"
    [ -x "$gen" ] || { cargo build --quiet -p pipeline --manifest-path "$root/Cargo.toml"; gen="$root/target/debug/pipeline"; }
    "$gen" generate --rows 1200000 --seed 1 --output "$data"
fi

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# time_it NAME N COMMAND: runs COMMAND (a string for bash -c) N times and keeps the median wall
# time and the median CPU time (user + sys of every process; on a shared machine the fairer
# measure of the work each side does).
declare -A med cpu
time_it() {
    local name=$1 n=$2 cmd=$3 r u s
    local -a wall=() work=()
    for _ in $(seq "$n"); do
        read -r r u s < <({ TIMEFORMAT='%R %U %S'; time bash -c "$cmd"; } 2>&1 >/dev/null | tail -n 1)
        wall+=("$r")
        work+=("$(echo "$u + $s" | bc)")
    done
    med[$name]=$(printf '%s\n' "${wall[@]}" | median)
    cpu[$name]=$(printf '%s\n' "${work[@]}" | median)
}

few=$(( reps < 3 ? reps : 3 ))
time_it rust_map "$reps" "'$bin/mapper' < '$data' > '$work/rust.map' 2>/dev/null"
time_it rust_sort "$reps" "sort '$work/rust.map' > '$work/rust.sorted'"
time_it rust_red "$reps" "'$bin/reducer' < '$work/rust.sorted' > '$work/rust.out' 2>/dev/null"
time_it rust_pipe "$reps" "'$bin/mapper' < '$data' 2>/dev/null | sort | '$bin/reducer' > '$work/rust.out' 2>/dev/null"
time_it py_map "$few" "'$py' '$here/mapper.py' < '$data' > '$work/py.map'"
time_it py_sort "$few" "sort '$work/py.map' > '$work/py.sorted'"
time_it py_red "$few" "'$py' '$here/reducer.py' < '$work/py.sorted' > '$work/py.out'"
time_it py_pipe "$few" "'$py' '$here/mapper.py' < '$data' | sort | '$py' '$here/reducer.py' > '$work/py.out'"
mr=(-r local --num-cores 2 --no-cat-output)
[ "$mrjob" = 1 ] && time_it rust_mrjob "$few" "rm -rf '$work/mr-rust'; '$py' '$root/emr/mr_shards.py' ${mr[*]} --bin-dir '$bin' --output-dir '$work/mr-rust' '$data' 2>/dev/null"
[ "$mrjob" = 1 ] && time_it py_mrjob "$few" "rm -rf '$work/mr-py'; '$py' '$here/mr_python.py' ${mr[*]} --output-dir '$work/mr-py' '$data' 2>/dev/null"

rows_out=$(( $(wc -l < "$work/rust.out") - 1 ))
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); input: 1.2M rows, $(stat -c %s "$data") bytes"
echo "rust: $rows_out records out, $(stat -c %s "$work/rust.map") bytes of mapper output;" \
     "python: $(wc -l < "$work/py.out") lines out, $(stat -c %s "$work/py.map") bytes of mapper output"
echo "medians of $reps runs (python and mrjob: $few); sort is LC_ALL=C sort on each side's own mapper output"
printf '%-26s %19s %19s %17s\n' "" "rust (s)" "python (s)" "python / rust"
printf '%-26s %9s %9s %9s %9s %8s %8s\n' "stage" "wall" "cpu" "wall" "cpu" "wall" "cpu"
row() {
    printf '%-26s %9.3f %9.3f %9.3f %9.3f %7.1fx %7.1fx\n' "$1" "$2" "$3" "$4" "$5" \
        "$(echo "$4 / $2" | bc -l)" "$(echo "$5 / $3" | bc -l)"
}
sum() { echo "$1 + $2" | bc; }
row "mapper" "${med[rust_map]}" "${cpu[rust_map]}" "${med[py_map]}" "${cpu[py_map]}"
row "sort" "${med[rust_sort]}" "${cpu[rust_sort]}" "${med[py_sort]}" "${cpu[py_sort]}"
row "reducer" "${med[rust_red]}" "${cpu[rust_red]}" "${med[py_red]}" "${cpu[py_red]}"
row "mapper + reducer" "$(sum "${med[rust_map]}" "${med[rust_red]}")" "$(sum "${cpu[rust_map]}" "${cpu[rust_red]}")" \
    "$(sum "${med[py_map]}" "${med[py_red]}")" "$(sum "${cpu[py_map]}" "${cpu[py_red]}")"
row "mapper | sort | reducer" "${med[rust_pipe]}" "${cpu[rust_pipe]}" "${med[py_pipe]}" "${cpu[py_pipe]}"
[ "$mrjob" = 1 ] && row "mrjob -r local, 2 cores" "${med[rust_mrjob]}" "${cpu[rust_mrjob]}" "${med[py_mrjob]}" "${cpu[py_mrjob]}"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores shared with other work)"
