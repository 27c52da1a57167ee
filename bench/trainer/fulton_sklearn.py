"""scikit-learn's logistic regression and MLP on the Fulton fixture's train/test split (the
design's rule: a record is a test record when splitmix64(offset ^ splitmix64(0)) < 0.2 * 2^64,
offset being the byte offset of its line), min-max scaled by the training rows' min and max,
then the trainer's cards from fulton.sh: one table of mean test accuracy over the seeds."""

import json
import statistics
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

MASK = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def load(path, split_seed=0, test_fraction=0.2):
    data = open(path, "rb").read()
    threshold = int(test_fraction * 2.0**64)
    key = splitmix64(split_seed)
    header, offset = None, 0
    rows = {True: [], False: []}
    for line in data.split(b"\n"):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        fields = [f.strip(b'"').decode() for f in line.rstrip(b"\r").split(b",")]
        if header is None:
            header = fields
            continue
        if any(f in ("", "NA") for f in fields):
            continue
        rows[splitmix64(start ^ key) < threshold].append([float(f) for f in fields])
    label = header.index("employed")
    feats = [i for i, h in enumerate(header) if h not in ("employed", "state", "fips")]
    out = []
    for test in (False, True):
        a = np.array(rows[test])
        out += [a[:, feats], a[:, label]]
    return out


def main():
    out, seeds, epsilons = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
    xtr, ytr, xte, yte = load("tests/data/FultonPUMS5full.csv")
    lo, hi = xtr.min(0), xtr.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    xtr, xte = (xtr - lo) / span, (xte - lo) / span
    print(f"train {len(ytr)} rows, test {len(yte)} rows, majority {max(yte.mean(), 1 - yte.mean()):.4f}")
    lr = LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xte, yte)
    mlp = [
        MLPClassifier(hidden_layer_sizes=(50,), max_iter=500, random_state=int(s)).fit(xtr, ytr).score(xte, yte)
        for s in seeds
    ]
    print("| run | epsilon (mean) | test accuracy, mean of seeds | per seed |")
    print("| --- | ---: | ---: | --- |")
    print(f"| scikit-learn LogisticRegression (min-max, non-private) | - | {lr:.4f} | deterministic |")
    print(f"| scikit-learn MLPClassifier(50) (min-max, non-private) | - | {statistics.mean(mlp):.4f} | {', '.join(f'{a:.4f}' for a in mlp)} |")
    for variant in ("public", "standardized"):
        for eps in epsilons + ["nodp"]:
            accs, spent = [], []
            for s in seeds:
                card = json.load(open(f"{out}/{variant}-{eps}-{s}.json"))
                accs.append(card["held_out"]["test_accuracy"])
                if card["privacy"]:
                    spent.append(card["privacy"]["epsilon"])
            e = f"{statistics.mean(spent):.3f}" if spent else "no DP"
            print(f"| trainer, {variant} | {e} | {statistics.mean(accs):.4f} | {', '.join(f'{a:.4f}' for a in accs)} |")


main()
