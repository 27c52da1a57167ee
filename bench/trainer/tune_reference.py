"""The epsilon of a `trainer tune` card by Google's dp_accounting 0.6.0 (RdpAccountant,
RepeatAndSelectDpEvent over Opacus's orders), from the card alone: the released run's
releases (DP quantiles as zCDP of epsilon^2 / 8, the standardization's and the held-out
release's Gaussians) composed with the steps of the grid's points, repeated and selected over
the card's distribution of runs. Needs every grid point at the same noise and steps (the
default grid: one epoch count), where the maximum of the points' curves is that one curve.

    python bench/trainer/tune_reference.py TUNE/model.json"""

import json
import math
import sys

from dp_accounting import dp_event as E
from dp_accounting.rdp import rdp_privacy_accountant as R

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))

card = json.load(open(sys.argv[1]))
m, t = card["privacy"]["mechanism"], card["tuning"]
points = {(c["noise_multiplier"], c["steps"]) for c in t["candidates"]}
assert len(points) == 1, f"grid points differ in noise or steps: {points}"
sigma, steps = points.pop()
events = [E.SelfComposedDpEvent(E.PoissonSampledDpEvent(m["sampling_rate"], E.GaussianDpEvent(sigma)), steps)]
for key in ("preprocessing_noise_multiplier", "test_release_noise_multiplier"):
    if m.get(key) is not None:
        events += [E.GaussianDpEvent(m[key])] * (m.get("test_releases", 1) if key.startswith("test") else 1)
if m.get("quantile_epsilon") is not None:
    events.append(E.SelfComposedDpEvent(E.ZCDpEvent(m["quantile_epsilon"] ** 2 / 8), m["quantiles"]))
name, mean = t["runs"].split(" of mean ")
shape = {"Poisson": math.inf, "logarithmic": 0.0, "geometric": 1.0}[name]
a = R.RdpAccountant(orders=ORDERS)
a.compose(E.RepeatAndSelectDpEvent(E.ComposedDpEvent(events), float(mean), shape))
ref = a.get_epsilon(card["privacy"]["delta"])
ours = card["privacy"]["epsilon"]
print(f"tune epsilon {ours:.6f}, dp_accounting {ref:.6f}, difference {ours - ref:+.6f} "
      f"(relative {(ours - ref) / ref:+.2e})")
