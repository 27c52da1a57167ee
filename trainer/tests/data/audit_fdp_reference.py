"""Reference values for trainer::audit::fdp (and a cross-check of trainer::audit::bound), from
google-deepmind/jax_privacy's own implementation, independent of ours.

jax_privacy 2.0.0, `jax_privacy.auditing`:
- `_epsilon_one_run_fdp(eps_lo, m, n_guess, n_correct, significance, delta)`: the f-DP one-run
  bound of Mahloujifar, Melis and Chaudhuri (arXiv:2410.22235, "audit_rh_with_cap") for the
  Gaussian trade-off curve of the Gaussian mechanism that is exactly (eps, delta)-DP
  (dp_accounting.get_sigma_gaussian);
- `_epsilon_one_run(...)`: the bound of Steinke, Nasr and Jagielski (arXiv:2305.08846).

The last three f-DP cases are the guesses behind jax_privacy's own golden numbers
(tests/auditing_test.py, test_epsilon_one_run_close: 2.164749, 4.7218075 and 9.133752 for 10,000
in- and 10,000 out-canaries whose scores are N(shift, 1) and N(0, 1) quantiles, shift 1, 2, 4,
alpha 0.05, delta 1e-6): the counts (n_guess, n_correct) at the threshold CanaryScoreAuditor
picks, and alpha divided by the number of thresholds it tries (386, 374, 140).

Run (in a throwaway virtual environment):
    python3 -m venv /tmp/jp && /tmp/jp/bin/pip install jax-privacy==2.0.0
    /tmp/jp/bin/python trainer/tests/data/audit_fdp_reference.py
"""

from jax_privacy import auditing

# (m, guesses, correct, alpha, delta)
CASES = [
    (1000, 100, 100, 0.05, 1e-5),
    (1000, 1000, 1000, 0.05, 1e-5),
    (1000, 200, 150, 0.05, 1e-5),
    (1000, 50, 30, 0.05, 1e-5),
    (10000, 500, 450, 0.05 / 20, 1e-5),
    (10000, 10000, 7000, 0.05, 1e-6),
    (100000, 1000, 900, 0.05 / 26, 1e-5),
    (100000, 20000, 12000, 0.05 / 26, 1e-5),
    (20000, 406, 379, 0.05 / 386, 1e-6),
    (20000, 938, 934, 0.05 / 374, 1e-6),
    (20000, 5436, 5436, 0.05 / 140, 1e-6),
]

if __name__ == "__main__":
    for m, k, v, alpha, delta in CASES:
        fdp = auditing._epsilon_one_run_fdp(0.0, m, k, v, alpha, delta)
        steinke = auditing._epsilon_one_run(0.0, m, k, v, alpha, delta)
        print(f"    ({m}, {k}, {v}, {alpha!r}, {delta!r}, {fdp:.6f}, {steinke:.6f}),")
