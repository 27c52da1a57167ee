"""Reference values for trainer::tune, computed independently of it: the epsilon of a tune
(Papernot and Steinke, "Hyperparameter tuning with Renyi differential privacy", ICLR 2022) by
Google's dp_accounting 0.6.0, `RdpAccountant` with `RepeatAndSelectDpEvent`, over Opacus's RDP
orders (the accountant crate's default orders).

The run repeated: 800 steps of the Poisson-subsampled Gaussian at q = 256/20532 and noise 0.78,
the held-out accuracy's Gaussian release (noise multiplier 10), the standardization's Gaussian
release (10) and 30 DP quantiles, exponential mechanisms of epsilon 0.05 each, as zCDP of
epsilon^2 / 8 (bounded range, Cesar and Rogers 2021). delta 1e-5.

Setup (outside the repository): python3 -m venv /tmp/dpa && /tmp/dpa/bin/pip install dp-accounting==0.6.0
Run: /tmp/dpa/bin/python trainer/tests/data/tune_reference.py
"""

import math

from dp_accounting import dp_event as E
from dp_accounting.rdp import rdp_privacy_accountant as R

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
RUN = E.ComposedDpEvent(
    [
        E.SelfComposedDpEvent(E.PoissonSampledDpEvent(256 / 20532, E.GaussianDpEvent(0.78)), 800),
        E.GaussianDpEvent(10.0),
        E.GaussianDpEvent(10.0),
        E.SelfComposedDpEvent(E.ZCDpEvent(0.05 * 0.05 / 8), 30),
    ]
)

for name, mean, shape in [("Poisson", 4.0, math.inf), ("logarithmic", 4.0, 0.0)]:
    a = R.RdpAccountant(orders=ORDERS)
    a.compose(E.RepeatAndSelectDpEvent(RUN, mean, shape))
    print(f"# {name}, mean {mean}")
    print(repr(float(a.get_epsilon(1e-5))))
a = R.RdpAccountant(orders=ORDERS)
a.compose(RUN)
print("# one run")
print(repr(float(a.get_epsilon(1e-5))))

# The same releases with exact steps (full batch, q = 1: the plain Gaussian, which both
# accountants compute in closed form): 10 steps at noise 4. trainer::tune's test takes the
# pointwise maximum with a run at noise 6, which this one dominates at every order.
EXACT = E.ComposedDpEvent(
    [
        E.SelfComposedDpEvent(E.GaussianDpEvent(4.0), 10),
        E.GaussianDpEvent(10.0),
        E.GaussianDpEvent(10.0),
        E.SelfComposedDpEvent(E.ZCDpEvent(0.05 * 0.05 / 8), 30),
    ]
)
for name, mean, shape in [("Poisson", 4.0, math.inf), ("logarithmic", 4.0, 0.0)]:
    a = R.RdpAccountant(orders=ORDERS)
    a.compose(E.RepeatAndSelectDpEvent(EXACT, mean, shape))
    print(f"# exact steps, {name}, mean {mean}")
    print(repr(float(a.get_epsilon(1e-5))))
