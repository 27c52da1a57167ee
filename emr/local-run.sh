#!/usr/bin/env bash
# The EMR Streaming step run locally, the two ways Hadoop users test such a step:
#
#   emr/local-run.sh pipe  INPUT OUTDIR [MAPPER OPTIONS...]
#       cat INPUT | mapper | sort | reducer > OUTDIR/part-00000
#   emr/local-run.sh mrjob INPUT OUTDIR [MAPPER OPTIONS...]
#       mrjob's local runner (-r local --num-cores 2): the input split over several map tasks,
#       sorted, and spread over several reducers writing OUTDIR/part-*; the job's counters go
#       to OUTDIR/_counters.json.
#
# MAPPER OPTIONS are those of `pipeline run` (--shards, --label, --features, --exclude,
# --columns, --na-values). Under mrjob, input that is not CaPUMS5full needs --columns: the
# map tasks of later splits never see the header line (the first one stops the job if so).
# Each task's stderr (counters, summary) goes to OUTDIR/_*.log in pipe mode.
#
# Environment: BIN_DIR (default target/release, built if missing), MRJOB_PYTHON (default
# .venv-mrjob/bin/python; make it with emr/setup-mrjob.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 3 ] || usage
mode=$1 input=$2 out=$3
shift 3

bin_dir="${BIN_DIR:-$root/target/release}"
if [ ! -x "$bin_dir/mapper" ] || [ ! -x "$bin_dir/reducer" ]; then
    if [ -z "${BIN_DIR:-}" ]; then
        (cd "$root" && cargo build --release --quiet -p hadoop-streaming)
    else
        echo "local-run: no mapper and reducer in BIN_DIR=$bin_dir" >&2
        exit 1
    fi
fi
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
    echo "local-run: $out exists and is not empty" >&2
    exit 1
fi

case "$mode" in
pipe)
    mkdir -p "$out"
    "$bin_dir/mapper" "$@" < "$input" 2> "$out/_mapper.log" \
        | LC_ALL=C sort \
        | "$bin_dir/reducer" > "$out/part-00000" 2> "$out/_reducer.log"
    ;;
mrjob)
    python="${MRJOB_PYTHON:-$root/.venv-mrjob/bin/python}"
    if [ ! -x "$python" ]; then
        echo "local-run: no mrjob python at $python: run emr/setup-mrjob.sh" >&2
        exit 1
    fi
    rmdir "$out" 2>/dev/null || true
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    printf -v mapper_args '%q ' "$@"
    "$python" "$root/emr/mr_shards.py" -r local --num-cores 2 --local-tmp-dir "$tmp" \
        --bin-dir "$bin_dir" --mapper-args "$mapper_args" \
        --output-dir "$out" --no-cat-output --counters-json "$tmp/counters.json" \
        "$input" 2> "$tmp/mrjob.log" || { cat "$tmp/mrjob.log" >&2; exit 1; }
    mv "$tmp/counters.json" "$out/_counters.json"
    ;;
*)
    usage
    ;;
esac
# As Hadoop's output committer does once every task has succeeded: readers require it.
touch "$out/_SUCCESS"
