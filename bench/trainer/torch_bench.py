"""One DP-SGD epoch in PyTorch on the trainer's shards: Opacus 1.6, and the seed project's
microbatch-of-3 algorithm (timed over a few steps and extrapolated).

Same data (the train split of the shards, by the design's splitmix64 rule), same MLP (9-50-1),
batch 256 (Poisson-sampled for Opacus), clip 3, noise 0.9, SGD lr 0.01. Prints one JSON line
per measurement.
"""

import argparse
import glob
import json
import os
import time

import numpy as np
import torch
from torch import nn

MASK = (1 << 64) - 1


def splitmix64(x):
    """SplitMix64 over a uint64 numpy array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def load(shards, test_fraction=0.2, split_seed=0, split="train"):
    """One split of every part file: (features float32 [n, k], labels float32 [n])."""
    parts = []
    for path in sorted(glob.glob(os.path.join(shards, "part-*"))):
        a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        parts.append(a)
    a = np.concatenate(parts)
    offsets = a[:, 0].astype(np.uint64)
    seed_hash = splitmix64(np.array([split_seed], dtype=np.uint64))[0]
    threshold = np.uint64(int(test_fraction * 2.0**64))
    test = splitmix64(offsets ^ seed_hash) < threshold
    rows = a[test] if split == "test" else a[~test]
    return rows[:, 2:].astype(np.float32), rows[:, 1].astype(np.float32)


def check_model(path, shards):
    """Loads the trainer's safetensors into the nn.Sequential its card names and measures test
    accuracy on the test split computed here, to compare with the trainer's own figure."""
    from safetensors.torch import load_file

    card = json.load(open(os.path.splitext(path)[0] + ".json"))
    model = eval(card["architecture"])  # e.g. nn.Sequential(nn.Linear(9, 50), nn.ReLU(), ...)
    model.load_state_dict(load_file(path))
    x, y = load(shards, split="test")
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).squeeze(1) > 0
    acc = (pred == torch.from_numpy(y).bool()).float().mean().item()
    return acc, card["metrics"]["test_accuracy"]


def mlp(k, hidden):
    return nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def opacus_epoch(x, y, args):
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    model = mlp(x.shape[1], args.hidden)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size)
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private(
        module=model,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=args.noise,
        max_grad_norm=args.clip,
        poisson_sampling=True,
    )
    loss_fn = nn.BCEWithLogitsLoss()
    steps = len(loader)
    limit = args.opacus_steps or steps
    start = time.perf_counter()
    done = 0
    for xb, yb in loader:
        opt.zero_grad()
        if len(xb) > 0:
            loss_fn(model(xb).squeeze(1), yb).backward()
        opt.step()
        done += 1
        if done >= limit:
            break
    elapsed = time.perf_counter() - start
    eps = engine.get_epsilon(1e-5)
    return elapsed * steps / done, done, steps, eps


def seed_epoch(x, y, args):
    """The seed's DP-SGD: fixed batches, microbatches of 3 clipped one by one in Python."""
    torch.manual_seed(0)
    model = mlp(x.shape[1], args.hidden)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=args.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = len(xt)
    steps = n // args.batch_size
    perm = torch.randperm(n)
    start = time.perf_counter()
    for s in range(args.seed_steps):
        idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
        xb, yb = xt[idx], yt[idx]
        total = [torch.zeros_like(p) for p in params]
        micro = list(zip(torch.split(xb, 3), torch.split(yb, 3)))
        for mx, my in micro:
            opt.zero_grad()
            loss_fn(model(mx).squeeze(1), my).backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            for t, p in zip(total, params):
                t.add_(p.grad)
        for t, p in zip(total, params):
            p.grad = (t + torch.randn_like(t) * args.noise * args.clip) / len(micro)
        opt.step()
    elapsed = time.perf_counter() - start
    return elapsed * steps / args.seed_steps, args.seed_steps, steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shards", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=3.0)
    p.add_argument("--noise", type=float, default=0.9)
    # One thread by default: on a busy 2-core machine OpenMP's spinning threads make PyTorch's
    # small operations 5-10x slower (measured: Opacus 32 s/epoch at 1 thread, 364 s at 2).
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--opacus-steps", type=int, default=0, help="0: the whole epoch")
    p.add_argument("--seed-steps", type=int, default=50)
    p.add_argument("--skip-opacus", action="store_true")
    p.add_argument("--check-model", help="a model the trainer saved: compare its test accuracy")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.check_model:
        ours, reported = check_model(args.check_model, args.shards)
        print(json.dumps({"check": "model", "pytorch_test_accuracy": ours,
                          "trainer_test_accuracy": reported}), flush=True)
        return
    x, y = load(args.shards)
    info = {"rows": len(x), "threads": args.threads, "torch": torch.__version__}
    if not args.skip_opacus:
        secs, done, steps, eps = opacus_epoch(x, y, args)
        print(json.dumps({"impl": "opacus", "seconds_per_epoch": secs, "steps_timed": done,
                          "steps_per_epoch": steps, "epsilon": eps, **info}), flush=True)
    secs, done, steps = seed_epoch(x, y, args)
    print(json.dumps({"impl": "seed_microbatch3", "seconds_per_epoch": secs, "steps_timed": done,
                      "steps_per_epoch": steps, **info}), flush=True)


if __name__ == "__main__":
    main()
