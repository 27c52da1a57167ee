#!/usr/bin/env bash
# Runs the tests that open sockets ROUNDS times in a row (default 20), stopping at the first
# failure: cluster (unit tests, killed_peer), pipeline (hangs, commit, dataflow_vs_reference),
# trainer (parallel), fastdp-tests (cluster_security, netns, pipeline_trainer, capture). Run two
# at once to test them beside a busy copy of themselves:
#   scripts/stress-sockets.sh 20 & scripts/stress-sockets.sh 20; wait
# TESTS="cluster_security killed_peer" limits it to those test binaries (by name). The test
# binaries (and the binaries they run, built as `cargo test` builds them: the pipeline with its
# crash points) are built once by `cargo test --no-run` and run directly, each from its
# package's directory as cargo runs them, so two copies do not wait on cargo's lock; build
# before starting two copies (the first copy's build is a no-op for the second).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
want=${TESTS:-"cluster killed_peer hangs commit dataflow_vs_reference parallel cluster_security netns pipeline_trainer capture"}
export LIBTORCH=${LIBTORCH:-$PWD/.venv/lib/python3.11/site-packages/torch}
list=$(cargo test -q --no-run --message-format=json -p cluster -p pipeline -p trainer -p fastdp-tests 2>/dev/null |
  python3 -c '
import json, sys, os
want = set(sys.argv[1].split())
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    name = m["target"]["name"]
    kinds = m["target"]["kind"]
    if (name in want and "lib" not in kinds) or (name == "cluster" and "lib" in kinds and "cluster" in want):
        print(os.path.dirname(m["manifest_path"]), m["executable"], name)
' "$want")
echo "$(date -u +%T) pid $$: $(echo "$list" | wc -l) test binaries, $rounds rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  start=$(date +%s)
  while read -r dir exe name; do
    if ! (cd "$dir" && "$exe" -q >"/tmp/stress-$$-$name.log" 2>&1); then
      echo "round $round: $name FAILED (pid $$; /tmp/stress-$$-$name.log)"
      tail -30 "/tmp/stress-$$-$name.log"
      exit 1
    fi
  done <<< "$list"
  echo "$(date -u +%T) pid $$: round $round passed in $(( $(date +%s) - start )) s; load $(cut -d' ' -f1-3 /proc/loadavg)"
done
rm -f /tmp/stress-$$-*.log
