"""Reference values for the accountant's releases (exponential mechanisms composed with DP-SGD
steps) and for repeat-and-select (Papernot and Steinke 2022), from Google's dp_accounting 0.6.0,
independently of the Rust code. The accountant's tests pin what this prints.

- PLD: an epsilon-DP exponential mechanism is composed as dp_accounting's
  `from_privacy_parameters(DifferentialPrivacyParameters(epsilon, 0))` (randomized response of
  that epsilon, its losses rounded up to the grid), with the Poisson-subsampled Gaussian steps
  (`from_gaussian_mechanism(sigma, sampling_prob=q)` self-composed) and unsampled Gaussians,
  value discretization interval 1e-4.
- RDP: the exponential mechanism as `ZCDpEvent(rho = epsilon^2 / 8)` (bounded range implies
  that zCDP: Cesar and Rogers 2021), over Opacus's orders (the crate's default orders).
- Repeat and select: `RepeatAndSelectDpEvent(run, mean, shape)` in `RdpAccountant` over the
  same orders: shape inf is Poisson, 0 logarithmic, 1 geometric.

Setup (outside the repository): python3 -m venv /tmp/dpa && /tmp/dpa/bin/pip install dp-accounting==0.6.0
Run: /tmp/dpa/bin/python accountant/tests/data/releases_reference.py
"""

import math

from dp_accounting import dp_event as E
from dp_accounting.pld import common
from dp_accounting.pld import privacy_loss_distribution as P
from dp_accounting.rdp import rdp_privacy_accountant as R

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
DELTA = 1e-5
H = 1e-4


def pld_epsilon(q, sigma, steps, gaussians, exponential):
    pld = None
    if steps:
        pld = P.from_gaussian_mechanism(sigma, sampling_prob=q, value_discretization_interval=H).self_compose(steps)
    for g in gaussians:
        p = P.from_gaussian_mechanism(g, value_discretization_interval=H)
        pld = p if pld is None else pld.compose(p)
    for eps, times in exponential:
        p = P.from_privacy_parameters(common.DifferentialPrivacyParameters(eps, 0), value_discretization_interval=H)
        p = p.self_compose(times)
        pld = p if pld is None else pld.compose(p)
    return pld.get_epsilon_for_delta(DELTA)


def run_event(q, sigma, steps, gaussians, exponential):
    events = []
    if steps:
        events.append(E.SelfComposedDpEvent(E.PoissonSampledDpEvent(q, E.GaussianDpEvent(sigma)), steps))
    events += [E.GaussianDpEvent(g) for g in gaussians]
    events += [E.SelfComposedDpEvent(E.ZCDpEvent(eps * eps / 8), times) for eps, times in exponential]
    return E.ComposedDpEvent(events)


def rdp_epsilon(event):
    a = R.RdpAccountant(orders=ORDERS)
    a.compose(event)
    return a.get_epsilon(DELTA)


RUN = (0.0125, 0.9, 800, [10.0], [(0.05, 8)])
print("# pld: steps (q 0.0125, sigma 0.9, 800) + Gaussian 10 + 8 exponential of 0.05")
print(repr(pld_epsilon(*RUN)))
print("# pld: 12 exponential of 0.1 alone")
print(repr(pld_epsilon(0, 1, 0, [], [(0.1, 12)])))
print("# pld: 12 exponential of 0.1 and 4 of 0.3 with Gaussian 5")
print(repr(pld_epsilon(0, 1, 0, [5.0], [(0.1, 12), (0.3, 4)])))
print("# rdp: the same run")
print(repr(rdp_epsilon(run_event(*RUN))))
for name, mean, shape in [("logarithmic", 4.0, 0.0), ("geometric", 5.0, 1.0), ("poisson", 3.0, math.inf), ("tnb 0.5", 4.0, 0.5)]:
    print(f"# rdp repeat and select of the run: {name}, mean {mean}")
    print(repr(rdp_epsilon(E.RepeatAndSelectDpEvent(run_event(*RUN), mean, shape))))
# The formulas alone, on a curve both libraries compute exactly (zCDP: rho * alpha, no
# subsampled Gaussian, whose fractional orders dp_accounting computes slightly differently from
# Opacus, which the crate reproduces).
for name, mean, shape in [("logarithmic", 4.0, 0.0), ("geometric", 5.0, 1.0), ("poisson", 3.0, math.inf), ("tnb 0.5", 4.0, 0.5)]:
    print(f"# rdp repeat and select of zCDP rho 0.05: {name}, mean {mean}")
    print(repr(rdp_epsilon(E.RepeatAndSelectDpEvent(E.ZCDpEvent(0.05), mean, shape))))
