//! The f-DP one-run bound (Mahloujifar, Melis and Chaudhuri, "Auditing f-Differential Privacy
//! in One Run", arXiv:2410.22235), for the trade-off curve of the Gaussian mechanism, as
//! google-deepmind/jax_privacy computes it (`jax_privacy.auditing._epsilon_one_run_fdp`, the
//! paper's `audit_rh_with_cap`).
//!
//! The claim tested is "the mechanism is mu-GDP" (its trade-off curve is at least
//! `G_mu(x) = Phi(Phi^-1(1 - x) - mu)`) with mu the one of the Gaussian mechanism that is exactly
//! (epsilon, delta)-DP (Balle and Wang 2018). m canaries are each included with probability 1/2;
//! the auditor guesses "included" for k of them (abstaining on the other m - k) and v guesses
//! are right. The recursion below bounds what an f-DP mechanism allows; when the observation
//! exceeds it, the claim is rejected at level alpha. The audited epsilon is the largest epsilon
//! whose claim is rejected (bisection: a larger epsilon is a weaker claim).
//!
//! Unlike [`super::bound`] (which holds for every (epsilon, delta)-DP mechanism), this bound
//! assumes the mechanism's trade-off curve is a Gaussian one: exactly true for full-batch DP-SGD
//! (T Gaussian mechanisms compose to mu = sqrt(T) / sigma), an approximation for Poisson
//! subsampling at q < 1, whose curve is not Gaussian. In exchange it uses the whole curve, not
//! one (epsilon, delta) point of it, and recovers much more of the true epsilon.

use accountant::special::{normal_cdf, normal_log_cdf, normal_quantile_from_log};

use super::bound::{self, Guesses, Outcome, Ranked};

/// `ln delta(eps)` of the Gaussian mechanism with noise `sigma` over the sensitivity (Balle and
/// Wang 2018, eq. 6; dp_accounting's `_get_log_delta`).
fn log_delta(sigma: f64, eps: f64) -> f64 {
    let t = eps * sigma + 1.0 / (2.0 * sigma);
    let x = normal_log_cdf(1.0 / sigma - t);
    let y = eps + normal_log_cdf(-t);
    if y <= x {
        x + (-(y - x).exp()).ln_1p()
    } else {
        f64::NEG_INFINITY
    }
}

/// The mu = 1 / sigma of the Gaussian mechanism that is exactly (`eps`, `delta`)-DP: the
/// strongest mu-GDP claim that (eps, delta)-DP allows (dp_accounting's `get_sigma_gaussian`).
pub fn gaussian_mu(eps: f64, delta: f64) -> f64 {
    assert!(
        eps >= 0.0 && delta > 0.0 && delta < 1.0,
        "eps {eps}, delta {delta}"
    );
    let target = delta.ln();
    // delta falls as sigma grows: bracket, then bisect ln sigma.
    let (mut lo, mut hi) = (0.1f64, 1.0f64);
    while log_delta(lo, eps) < target {
        hi = lo;
        lo /= 10.0;
    }
    while log_delta(hi, eps) > target {
        lo = hi;
        hi *= 10.0;
    }
    for _ in 0..200 {
        let mid = (lo * hi).sqrt();
        if log_delta(mid, eps) > target {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi / lo - 1.0 < 1e-14 {
            break;
        }
    }
    1.0 / (0.5 * (lo + hi))
}

/// epsilon of mu-GDP at `delta`: the inverse of [`gaussian_mu`] in epsilon (0 when mu-GDP is
/// already (0, delta)-DP).
pub fn gaussian_epsilon(mu: f64, delta: f64) -> f64 {
    if mu <= 0.0 {
        return 0.0;
    }
    if mu.is_infinite() {
        return f64::INFINITY;
    }
    let (sigma, target) = (1.0 / mu, delta.ln());
    if log_delta(sigma, 0.0) <= target {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while log_delta(sigma, hi) > target {
        lo = hi;
        hi *= 2.0;
    }
    while hi - lo > 1e-12 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if log_delta(sigma, mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `Phi^-1(p)`, accurate in both tails.
fn quantile(p: f64) -> f64 {
    if p <= 0.0 {
        f64::NEG_INFINITY
    } else if p >= 1.0 {
        f64::INFINITY
    } else if p <= 0.5 {
        normal_quantile_from_log(p.ln())
    } else {
        -normal_quantile_from_log((-p).ln_1p())
    }
}

/// The paper's recursion: positive when `correct` right guesses out of `guesses` about
/// `canaries` canaries reject mu-GDP at level `alpha` (jax_privacy's `audit_objective`).
fn objective(canaries: usize, guesses: usize, correct: usize, alpha: f64, mu: f64) -> f64 {
    let m = canaries as f64;
    let mut r = alpha * correct as f64 / m;
    let mut h = alpha * (guesses - correct) as f64 / m;
    // The inverse of the blow-up of G_mu: x -> Phi(Phi^-1(x) - mu).
    let inverse = |x: f64| normal_cdf(quantile(x) - mu);
    for i in (0..correct).rev() {
        let h_new = h.max(inverse(r));
        if h_new == h {
            // Neither h nor r can change any more.
            break;
        }
        r = (r + (i as f64 / (guesses - i) as f64) * (h_new - h)).min(1.0);
        h = h_new;
    }
    r + h - guesses as f64 / m
}

/// The largest epsilon whose Gaussian claim (as [`epsilon_lower_bound`]) is rejected, if it is
/// above `floor`; `floor` otherwise (one evaluation when the claim at `floor` stands).
pub fn epsilon_lower_bound_above(
    canaries: usize,
    guesses: usize,
    correct: usize,
    alpha: f64,
    delta: f64,
    floor: f64,
) -> f64 {
    assert!(
        correct <= guesses && guesses <= canaries,
        "{correct} right of {guesses} guesses about {canaries} canaries"
    );
    if correct == 0 {
        return floor;
    }
    bound::largest_rejected(floor, |eps| {
        objective(canaries, guesses, correct, alpha, gaussian_mu(eps, delta)) > 0.0
    })
}

/// The candidate guesses for `m` canaries, fixed before any score is seen: "included" on the
/// k highest scores, abstaining on the rest, for k in 1-2-5 steps from 10 up to m (and m), as
/// jax_privacy's f-DP bound takes them (one-sided: k- = 0).
pub fn candidates(m: usize) -> Vec<Guesses> {
    bound::candidates(m)
        .into_iter()
        .filter(|g| g.k_minus == 0)
        .collect()
}

/// Audits `scores` against the canaries' true membership `included` with the f-DP bound: for
/// each candidate ([`candidates`]), bound epsilon at `alpha / candidates`, keep the largest.
pub fn audit(scores: &[f64], included: &[bool], alpha: f64, delta: f64) -> Outcome {
    let m = scores.len();
    bound::best_of(
        &Ranked::new(scores, included),
        &candidates(m),
        alpha,
        |made, correct, level, best| {
            epsilon_lower_bound_above(m, made, correct, level, delta, best)
        },
    )
}

/// The largest epsilon [`audit`] could give with `included` of `m` canaries in: a perfect
/// score, every guess right that can be.
pub fn max_epsilon(m: usize, included: usize, alpha: f64, delta: f64) -> f64 {
    bound::best_of(
        &Ranked::perfect(m, included),
        &candidates(m),
        alpha,
        |made, correct, level, best| {
            epsilon_lower_bound_above(m, made, correct, level, delta, best)
        },
    )
    .epsilon
}

/// The largest epsilon whose Gaussian claim (mu-GDP with the mu that is exactly (epsilon,
/// `delta`)-DP, [`gaussian_mu`]) `correct` right guesses out of `guesses` (abstaining on the
/// rest of the `canaries`) reject at level `alpha`: 0 when none is rejected, to within 1e-6.
pub fn epsilon_lower_bound(
    canaries: usize,
    guesses: usize,
    correct: usize,
    alpha: f64,
    delta: f64,
) -> f64 {
    epsilon_lower_bound_above(canaries, guesses, correct, alpha, delta, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From `trainer/tests/data/audit_fdp_reference.py`, which runs jax_privacy 2.0.0's own
    /// implementation: (m, guesses, correct, alpha, delta, f-DP epsilon, Steinke epsilon). The
    /// last three are the guesses behind jax_privacy's golden numbers 2.164749, 4.7218075 and
    /// 9.133752 (its tests/auditing_test.py).
    pub(crate) const REFERENCE: &[(usize, usize, usize, f64, f64, f64, f64)] = &[
        (1000, 100, 100, 0.05, 1e-05, 5.549028, 3.465376),
        (1000, 1000, 1000, 0.05, 1e-05, 12.334570, 5.782283),
        (1000, 200, 150, 0.05, 1e-05, 1.296916, 0.819973),
        (1000, 50, 30, 0.05, 1e-05, 0.000000, 0.000000),
        (10000, 500, 450, 0.0025, 1e-05, 2.020920, 1.252673),
        (10000, 10000, 7000, 0.05, 1e-06, 1.565601, 0.811195),
        (100000, 1000, 900, 0.05 / 26.0, 1e-05, 1.857769, 0.000000),
        (100000, 20000, 12000, 0.05 / 26.0, 1e-05, 0.364473, 0.225530),
        (20000, 406, 379, 0.05 / 386.0, 1e-06, 2.164749, 0.000000),
        (20000, 938, 934, 0.05 / 374.0, 1e-06, 4.721807, 0.910860),
        (20000, 5436, 5436, 0.05 / 140.0, 1e-06, 9.133752, 4.071674),
    ];

    #[test]
    fn fdp_bound_matches_jax_privacy() {
        for &(m, k, v, alpha, delta, want, _) in REFERENCE {
            let got = epsilon_lower_bound(m, k, v, alpha, delta);
            assert!(
                (got - want).abs() < 2e-5,
                "m {m} k {k} v {v} alpha {alpha} delta {delta}: {got} vs {want}"
            );
        }
    }

    /// The same cases through [`super::super::bound`]: our Steinke bound agrees with
    /// jax_privacy's `_epsilon_one_run` too.
    #[test]
    fn steinke_bound_matches_jax_privacy() {
        for &(m, k, v, alpha, delta, _, want) in REFERENCE {
            let got = crate::audit::bound::epsilon_lower_bound(m, k, v, alpha, delta);
            assert!(
                (got - want).abs() < 2e-5,
                "m {m} k {k} v {v} alpha {alpha} delta {delta}: {got} vs {want}"
            );
        }
    }

    /// dp_accounting 0.6.0's get_sigma_gaussian(eps, delta) (1 / mu), and back.
    #[test]
    fn gaussian_mu_matches_dp_accounting_and_inverts() {
        for (eps, delta, sigma) in [
            (1.0, 1e-5, 3.730_631_634_815_937_4),
            (2.0, 1e-5, 1.993_812_445_643_537),
            (8.0, 1e-6, 0.652_935_384_358_215_6),
        ] {
            let mu = gaussian_mu(eps, delta);
            assert!(
                (1.0 / mu - sigma).abs() < 1e-9 * sigma,
                "{eps}: {} vs {sigma}",
                1.0 / mu
            );
            assert!((gaussian_epsilon(mu, delta) - eps).abs() < 1e-8);
        }
    }
}
