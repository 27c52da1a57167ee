#!/usr/bin/env bash
# The main job end to end on built-in data: generate a synthetic CaPUMS5full.csv (1.2M rows),
# preprocess it with `pipeline --workers 2 --threads 4`, then train a DP model on the shards
# with `trainer` at a target epsilon and print what it got. Everything happens in ./run
# (git-ignored); a fresh machine first installs libtorch (scripts/setup-torch.sh).
#
# The model is released as a private one would be: no --seed, so noise, batches and
# initialisation are keyed by the OS and a rerun cannot replay them. model.json (the card) may be
# published with the weights; metrics.jsonl's "non_private" figures and the shards folder (its
# _manifest.json) hold exact statistics and may not.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup-torch.sh
cargo build --release -p pipeline -p trainer
mkdir -p run
cd run
bin="$root/target/release"
[ -f CaPUMS5full.csv ] || "$bin/pipeline" generate --rows 1200000 --seed 1 --output CaPUMS5full.csv
"$bin/pipeline" --workers 2 --threads 4 --overwrite
"$bin/trainer" --data shards --target-epsilon 1 --delta 1e-5 --epochs 10 \
    --metrics-out metrics.jsonl --save model.safetensors
python3 -c 'import json; c = json.load(open("model.json")); print(c["privacy"]["statement"])'
