#!/usr/bin/env bash
# Test accuracy on the real Fulton County PUMS fixture (label employed), mean of 3 seeds, at
# epsilon 1, 2, 4, 8 and without DP, with the committed public spec (bounds and categories) and
# with standardization by noisy estimates (categories public, age and income standardized),
# against scikit-learn's logistic regression and 50-unit MLP on min-max scaled features of the
# same split (the design's hash rule, reproduced in fulton_sklearn.py), in one run.
#
#   bench/trainer/fulton.sh                 # debug binaries (accuracy does not need release)
#   TRAINER=target/release/trainer bench/trainer/fulton.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

OUT=bench/out/fulton
mkdir -p "$OUT"
TRAINER=${TRAINER:-target/debug/trainer}
PIPELINE=${PIPELINE:-target/debug/pipeline}
[ -x "$TRAINER" ] && [ -x "$PIPELINE" ] || cargo build -q -p pipeline -p trainer
SEEDS=${SEEDS:-"1 2 3"}
EPSILONS=${EPSILONS:-"1 2 4 8"}

if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c 'import sklearn' 2>/dev/null; then
    python3 -m venv .venv-bench
    .venv-bench/bin/pip install -q --disable-pip-version-check scikit-learn
fi

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PIPELINE" run --input tests/data/FultonPUMS5full.csv --output "$OUT/shards" --shards 4 \
    --exclude state,fips --overwrite -q

declare -A SPECS=(
    [public]="--feature-spec tests/data/FultonPUMS5full.spec.json"
    [standardized]="--feature-categories educ=1..16:other,puma=1101..1107:other --standardize age=0:120,income=-100000:2000000"
)
for variant in public standardized; do
    for eps in $EPSILONS nodp; do
        for seed in $SEEDS; do
            if [ "$eps" = nodp ]; then privacy=(--no-dp); else privacy=(--target-epsilon "$eps"); fi
            # shellcheck disable=SC2086
            "$TRAINER" --data "$OUT/shards" ${SPECS[$variant]} "${privacy[@]}" --seed "$seed" \
                --epochs 10 --optimizer adam --lr 0.01 --attack-feature none --no-progress \
                --save "$OUT/$variant-$eps-$seed.safetensors" \
                --metrics-out "$OUT/$variant-$eps-$seed.jsonl" > "$OUT/$variant-$eps-$seed.log" 2>&1
        done
    done
done
echo "load after trainer runs: $(cut -d' ' -f1-3 /proc/loadavg)"

.venv-bench/bin/python bench/trainer/fulton_sklearn.py "$OUT" "$SEEDS" "$EPSILONS"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
