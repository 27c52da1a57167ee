#!/usr/bin/env bash
# The main job end to end on built-in data: generate a synthetic CaPUMS5full.csv (1.2M rows),
# preprocess it with `pipeline --workers 2 --threads 4`, and print the summary.
# Everything happens in ./run (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release -p pipeline
mkdir -p run
cd run
bin="$root/target/release"
[ -f CaPUMS5full.csv ] || "$bin/pipeline" generate --rows 1200000 --seed 1 --output CaPUMS5full.csv
"$bin/pipeline" --workers 2 --threads 4 --overwrite
