"""Reference values for trainer::audit::bound, computed independently of it.

Steinke, Nasr and Jagielski 2023 (arXiv:2305.08846), Theorem 5.2 with delta: for r guesses of
which v are right, about m canaries, the bound on P[W >= v] under (eps, delta)-DP is

    P[B >= v] + 2 m delta max_{i=1..v} P[v - i <= B < v] / i,   B ~ Binomial(r, e^eps/(1+e^eps)),

and the audited epsilon is the largest eps whose bound is at most alpha. Here every binomial
probability is an exact sum of math.comb(r, k) p^k (1-p)^(r-k) in 60-digit decimals (the Rust
code sums log-probabilities instead), and the bisection is this file's own.

Run: python3 trainer/tests/data/audit_bound_reference.py  (standard library only)
"""

from decimal import Decimal, getcontext
from math import comb

getcontext().prec = 60


def pmf(r, p):
    q = 1 - p
    return [Decimal(comb(r, k)) * p**k * q ** (r - k) for k in range(r + 1)]


def bound(m, r, v, eps, delta):
    e = Decimal(eps).exp()
    p = e / (1 + e)
    probs = pmf(r, p)
    beta = sum(probs[v:], Decimal(0))
    if delta == 0:
        return beta
    best = Decimal(0)
    for i in range(1, v + 1):
        window = sum(probs[v - i : v], Decimal(0))
        best = max(best, window / i)
    return beta + 2 * m * Decimal(delta) * best


def epsilon(m, r, v, alpha, delta):
    alpha = Decimal(alpha)
    if bound(m, r, v, 0, delta) > alpha:
        return 0.0
    lo, hi = 0.0, 16.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if bound(m, r, v, mid, delta) <= alpha:
            lo = mid
        else:
            hi = mid
    return lo


CASES = [
    (1000, 1000, 1000, 0.05, 0.0),
    (100, 100, 90, 0.05, 0.0),
    (1000, 1000, 700, 0.05, 0.0),
    (1000, 1000, 1000, 0.05, 1e-5),
    (1000, 200, 190, 0.05, 1e-5),
    (1000, 100, 90, 0.05 / 14, 1e-5),
    (10000, 500, 480, 0.01, 1e-6),
    (1000, 50, 30, 0.05, 1e-5),
]

if __name__ == "__main__":
    for m, r, v, alpha, delta in CASES:
        print(f"    ({m}, {r}, {v}, {alpha!r}, {delta!r}, {epsilon(m, r, v, alpha, delta):.6f}),")
