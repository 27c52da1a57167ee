"""scikit-learn on the trainer's own split of a shards folder: reads the part files (key, label,
features, as `_manifest.json` names them), puts a record in the test split when
splitmix64(key ^ splitmix64(0)) < 0.2 * 2^64 (shards::hash::is_test, the trainer's default), and
prints the majority share and the test accuracy of a logistic regression and of a 50-unit MLP
(one per seed) on min-max scaled features, non-private.

    python bench/trainer/defaults_sklearn.py SHARDS SEED..."""

import json
import os
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


def load(folder):
    schema = json.load(open(os.path.join(folder, "_manifest.json")))["schema"]
    threshold = int(0.2 * 2.0**64)
    salt = splitmix64(0)
    rows = {True: [], False: []}
    for name in sorted(os.listdir(folder)):
        if not name.startswith("part-"):
            continue
        with open(os.path.join(folder, name)) as f:
            next(f)  # the header: key, label, features
            for line in f:
                fields = line.rstrip("\n").split(",")
                key = int(fields[0])
                rows[splitmix64(key ^ salt) < threshold].append([float(x) for x in fields[1:]])
    train, test = np.array(rows[False]), np.array(rows[True])
    return schema["label"], train[:, 1:], train[:, 0], test[:, 1:], test[:, 0]


def main():
    folder, seeds = sys.argv[1], sys.argv[2:] or ["1"]
    label, xtr, ytr, xte, yte = load(folder)
    lo, hi = xtr.min(0), xtr.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    xtr, xte = (xtr - lo) / span, (xte - lo) / span
    p = yte.mean()
    print(f"scikit-learn on {folder} (label {label}): train {len(ytr)} rows, test {len(yte)} rows, "
          f"test majority share {max(p, 1 - p):.4f}")
    lr = LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xte, yte)
    mlp = [
        MLPClassifier(hidden_layer_sizes=(50,), max_iter=500, random_state=int(s)).fit(xtr, ytr).score(xte, yte)
        for s in seeds
    ]
    print(f"| scikit-learn LogisticRegression (min-max, non-private) | - | {lr:.4f} | - | {max(p, 1 - p):.4f} |")
    print(f"| scikit-learn MLPClassifier(50) (min-max, non-private) | - | {statistics.mean(mlp):.4f} "
          f"({' '.join(f'{a:.4f}' for a in mlp)}) | - | {max(p, 1 - p):.4f} |")


main()
