"""Prints the reference values the `accountant` crate pins in its tests.

The crate reproduces two Python implementations; this script asks them (and scipy and mpmath
for the special functions) for every number the Rust tests pin, so the numbers can be checked
and regenerated:

- Opacus 1.6.0's RDP analysis, `opacus/accountants/analysis/rdp.py`. It only needs numpy and
  scipy, so it is loaded straight from the Opacus wheel and torch is not needed.
- dp_accounting 0.6.0's `PLDAccountant` (value discretization interval 1e-4), and its one-step
  `from_gaussian_mechanism` PMFs for the grid the connect-the-dots test checks.

Setup (the venv is git-ignored):

    python3 -m venv .venv-acct
    .venv-acct/bin/pip install dp-accounting==0.6.0 mpmath
    .venv-acct/bin/pip download opacus==1.6.0 --no-deps -d .venv-acct/wheels

Run from the repository root:

    .venv-acct/bin/python bench/accountant/reference.py [--opacus-wheel PATH] [--extra]

`--extra` also prints dp_accounting's epsilon for a wider set of runs, to compare by hand with
`cargo run --release -p accountant --example epsilon`.
"""

import argparse
import glob
import math
import types
import zipfile

import mpmath
from scipy import special

from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.pld import privacy_loss_distribution

Q_EPOCH = 256 / 960_000  # batch 256 of the 960,000 training rows


def opacus_rdp(wheel):
    """Opacus's rdp.py as a module, read from the wheel."""
    with zipfile.ZipFile(wheel) as z:
        source = z.read("opacus/accountants/analysis/rdp.py").decode()
    module = types.ModuleType("opacus_rdp")
    exec(compile(source, "opacus/accountants/analysis/rdp.py", "exec"), module.__dict__)
    return module


def opacus_orders():
    return [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def pld_epsilon(q, sigma, steps, delta):
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
    event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))
    accountant.compose(dp_event.SelfComposedDpEvent(event, steps))
    return accountant.get_epsilon(delta)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opacus-wheel", help="opacus-1.6.0 wheel (default: .venv-acct/wheels)")
    parser.add_argument("--extra", action="store_true", help="also a wider set of PLD runs")
    args = parser.parse_args()
    wheel = args.opacus_wheel or sorted(glob.glob(".venv-acct/wheels/opacus-1.6.0-*.whl"))[-1]
    rdp = opacus_rdp(wheel)
    orders = opacus_orders()

    print("# Opacus 1.6.0 RDP: epsilon, best order (spent.rs rdp_golden_values)")
    for q, sigma, steps, delta in [
        (0.04, 1.5, int(90 / 0.04), 1e-5),
        (Q_EPOCH, 0.9, 3_750, 1e-5),
        (Q_EPOCH, 0.9, 37_500, 1e-5),
    ]:
        r = rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
        eps, order = rdp.get_privacy_spent(orders=orders, rdp=r, delta=delta)
        print(f"q={q!r} sigma={sigma} steps={steps} delta={delta}: {eps!r} order {order}")

    print("# Opacus 1.6.0 RDP per order, q=0.04 sigma=1.5, one step (matches_opacus_per_order)")
    one = rdp.compute_rdp(q=0.04, noise_multiplier=1.5, steps=1, orders=[1.1, 3.9, 10.5, 63.0])
    print([float(x) for x in one])

    print("# dp_accounting 0.6.0 PLDAccountant(1e-4): epsilon (pld::tests::matches_dp_accounting_*)")
    for q, sigma, steps, delta in [
        (Q_EPOCH, 0.9, 3_750, 1e-5),
        (Q_EPOCH, 0.9, 37_500, 1e-5),
        (0.01, 1.1, 3_750, 1e-5),
        (0.05, 2.0, 100, 1e-6),
    ]:
        print(f"q={q!r} sigma={sigma} steps={steps} delta={delta}: {pld_epsilon(q, sigma, steps, delta)!r}")

    print("# dp_accounting one-step grid, q=256/960000 sigma=0.9 (grid_matches_dp_accounting)")
    pld = privacy_loss_distribution.from_gaussian_mechanism(
        0.9, sampling_prob=Q_EPOCH, value_discretization_interval=1e-4
    )
    for name, pmf in [("remove", pld._pmf_remove), ("add", pld._pmf_add)]:
        print(f"{name}: lower {pmf._lower_loss} size {pmf.size} infinity {pmf._infinity_mass!r}")

    print("# special functions (special.rs tests)")
    print(f"ndtri(0.5 exp(-50)) = {special.ndtri(0.5 * math.exp(-50))!r}")
    mpmath.mp.dps = 40
    for x in [-5, -1, 0.5, 3, 5, 10, 25.9, 26, 26.1, 30, 100, 1e4]:
        print(f"ln erfc({x}) = {mpmath.nstr(mpmath.log(mpmath.erfc(x)), 17)}")
    for z in [-40, -10, -1, 3, 8]:
        print(f"ln Phi({z}) = {mpmath.nstr(mpmath.log(mpmath.ncdf(z)), 17)}")

    if args.extra:
        print("# dp_accounting 0.6.0 PLDAccountant(1e-4), wider set")
        for q, sigma, steps, delta in [
            (1.0, 10.0, 1_000, 1e-5),
            (0.5, 3.0, 100, 1e-5),
            (1e-3, 0.7, 100_000, 1e-5),
            (0.1, 0.8, 50, 1e-5),
            (0.04, 1.5, 2_250, 1e-5),
            (Q_EPOCH, 0.6, 37_500, 1e-5),
            (0.02, 5.0, 10_000, 1e-7),
        ]:
            print(f"q={q!r} sigma={sigma} steps={steps} delta={delta}: {pld_epsilon(q, sigma, steps, delta)!r}")


if __name__ == "__main__":
    main()
