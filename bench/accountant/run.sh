#!/usr/bin/env bash
# Accountant benchmark (issue 7): seconds per point for our accountants (release build)
# against Google's dp_accounting 0.6.0 in Python, on the same machine, in one run.
#
# Points: epsilon after 37,500 steps (ten epochs of 960,000 rows at batch 256) at
# q = 256/960000, sigma = 0.9, delta = 1e-5; and calibrating sigma to epsilon 1.0 for the
# same run. Each with PLD (discretization 1e-4) and RDP.
#
# Usage: bench/accountant/run.sh            (from anywhere; REPEAT=5 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv-bench-acct
Q=0.000266666666666666667   # 256 / 960000
SIGMA=0.9
TARGET=1.0
STEPS=37500
DELTA=1e-5
REPEAT=${REPEAT:-5}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import dp_accounting' 2>/dev/null; then
    echo "installing dp-accounting==0.6.0 into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet dp-accounting==0.6.0
fi

cargo build --quiet --release -p accountant --example epsilon
OURS=target/release/examples/epsilon

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for kind in pld rdp; do
    # RDP takes well under a millisecond: more calls, so that CPU time is measurable.
    repeat=$REPEAT; [ "$kind" = rdp ] && repeat=$((REPEAT * 100))
    "$OURS" --accountant "$kind" --q "$Q" --sigma "$SIGMA" --steps "$STEPS" --delta "$DELTA" \
        --repeat "$repeat" >>"$out/ours"
    "$OURS" --accountant "$kind" --q "$Q" --target-epsilon "$TARGET" --steps "$STEPS" \
        --delta "$DELTA" --repeat "$repeat" >>"$out/ours"
done
"$VENV/bin/python" bench/accountant/dp_accounting_bench.py --q "$Q" --sigma "$SIGMA" \
    --target-epsilon "$TARGET" --steps "$STEPS" --delta "$DELTA" --repeat 3 >"$out/theirs"

python3 - "$out/ours" "$out/theirs" <<'PY'
import sys

def load(path):
    rows = {}
    for line in open(path):
        kind, task, value, *seconds = line.split()
        rows[(kind, task)] = (float(value), *map(float, seconds))
    return rows

ours, theirs = load(sys.argv[1]), load(sys.argv[2])
print(f"{'point':<27}{'ours s':>9}{'first':>8}{'cpu':>8} |{'dp_acc s':>9}{'cpu':>8} |"
      f"{'speedup':>8}{'(cpu)':>7}   value ours / dp_accounting")
for task, label in [("epsilon", "epsilon, 37,500 steps"), ("calibrate", "sigma for epsilon 1.0")]:
    for kind in ("pld", "rdp"):
        (ov, ow, of, oc), (tv, tw, tf, tc) = ours[(kind, task)], theirs[(kind, task)]
        cpu_ratio = f"{tc / oc:>6.0f}x" if oc > 0 else f"{'-':>7}"
        print(f"{label + ' ' + kind.upper():<27}{ow:>9.4f}{of:>8.4f}{oc:>8.4f} |{tw:>9.4f}{tc:>8.4f} |"
              f"{tw / ow:>7.0f}x{cpu_ratio}   {ov:.6f} / {tv:.6f}")
print("seconds per point: median wall clock of repeated calls in one process (ours: the first")
print("call alone too) and mean CPU time; dp_accounting: 3 calls (epsilon), 1 (calibration).")
PY
