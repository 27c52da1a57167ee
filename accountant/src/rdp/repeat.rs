//! Repeat and select: the RDP of running a mechanism a random number of times and releasing only
//! the best run (Papernot and Steinke, "Hyperparameter tuning with Renyi differential
//! privacy", ICLR 2022), as dp_accounting 0.6 computes it (`RepeatAndSelectDpEvent`).

use crate::{Error, Result};

/// The distribution of the number of runs K.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Runs {
    /// K ~ Poisson(mean) (K may be 0: then nothing is released). Theorem 6 of the paper.
    Poisson {
        /// E[K].
        mean: f64,
    },
    /// K from the truncated negative binomial distribution of shape eta >= 0 (eta = 0 is the
    /// logarithmic distribution, eta = 1 the geometric), whose gamma gives the mean: K >= 1
    /// always. Theorem 2 of the paper.
    TruncatedNegativeBinomial {
        /// E[K].
        mean: f64,
        /// eta.
        shape: f64,
    },
}

impl Runs {
    /// The mean number of runs.
    pub fn mean(&self) -> f64 {
        match *self {
            Runs::Poisson { mean } | Runs::TruncatedNegativeBinomial { mean, .. } => mean,
        }
    }

    /// Checks the mean (>= 1, finite) and the shape (>= 0, finite).
    pub fn validate(&self) -> Result<()> {
        let (mean, shape) = match *self {
            Runs::Poisson { mean } => (mean, f64::INFINITY),
            Runs::TruncatedNegativeBinomial { mean, shape } => (mean, shape),
        };
        let shape_ok = matches!(self, Runs::Poisson { .. }) || (shape.is_finite() && shape >= 0.0);
        if mean.is_finite() && mean >= 1.0 && shape_ok {
            Ok(())
        } else {
            Err(Error::Runs { mean, shape })
        }
    }

    /// gamma of the truncated negative binomial of this mean and shape (None for Poisson): the
    /// largest gamma (within a relative 1e-9) whose mean is at least this one, as
    /// dp_accounting's `_gamma_truncated_negative_binomial` bisects it.
    pub fn gamma(&self) -> Option<f64> {
        let Runs::TruncatedNegativeBinomial { mean, shape } = *self else {
            return None;
        };
        if shape == 1.0 {
            return Some(1.0 / mean);
        }
        let (mut lo, mut hi) = (0.0f64, (2.0 * (shape + 1.0) / mean).min(1.0));
        while hi > lo * (1.0 + 1e-9) {
            let gamma = (lo + hi) / 2.0;
            if tnb_mean(gamma, shape) < mean {
                hi = gamma;
            } else {
                lo = gamma;
            }
        }
        Some(lo)
    }

    /// P[K = k].
    pub fn pmf(&self, k: u64) -> f64 {
        match *self {
            Runs::Poisson { mean } => {
                let k = k as f64;
                (k * mean.ln() - mean - libm::lgamma(k + 1.0)).exp()
            }
            Runs::TruncatedNegativeBinomial { shape, .. } => {
                if k == 0 {
                    return 0.0;
                }
                let gamma = self.gamma().expect("a truncated negative binomial");
                let k = k as f64;
                if shape == 0.0 {
                    // Logarithmic: (1 - gamma)^k / (k ln(1 / gamma)).
                    (k * (1.0 - gamma).ln() - k.ln() - (-gamma.ln()).ln()).exp()
                } else {
                    // (1 - gamma)^k gamma^eta binom(k + eta - 1, k) / (1 - gamma^eta).
                    let log_binom =
                        libm::lgamma(k + shape) - libm::lgamma(k + 1.0) - libm::lgamma(shape);
                    (log_binom + k * (1.0 - gamma).ln() + shape * gamma.ln()
                        - (-(shape * gamma.ln()).exp_m1()).ln())
                    .exp()
                }
            }
        }
    }

    /// The number of runs at `u` in [0, 1): the smallest k with P[K <= k] > u (inverse CDF).
    pub fn quantile(&self, u: f64) -> u64 {
        let mut cdf = 0.0;
        let mut k = 0;
        loop {
            cdf += self.pmf(k);
            // The tail beyond 1e6 runs is below any u a 53-bit draw gives for these means.
            if cdf > u || k >= 1_000_000 {
                return k;
            }
            k += 1;
        }
    }
}

/// E[K] of the truncated negative binomial with `gamma` and `shape` (Definition 1).
fn tnb_mean(gamma: f64, shape: f64) -> f64 {
    let log_gamma = gamma.ln();
    // log(x) / (x - 1), 1 at x = 1.
    let logx_over_xm1 = |x: f64| {
        if (x - 1.0).abs() < 1e-12 {
            1.0
        } else {
            x.ln() / (x - 1.0)
        }
    };
    // (e^x - 1) / x, 1 at x = 0.
    let expm1_over_x = |x: f64| if x == 0.0 { 1.0 } else { x.exp_m1() / x };
    if shape == 1.0 {
        1.0 / gamma
    } else if shape == 0.0 {
        1.0 / (gamma * logx_over_xm1(gamma))
    } else {
        1.0 / (gamma * expm1_over_x(shape * log_gamma) * logx_over_xm1(gamma))
    }
}

/// The smallest delta at which RDP `rdp` at `orders` gives (`epsilon`, delta)-DP, and the order
/// that gives it: the better of the KL bound `sqrt(1 - e^-r)` and Proposition 12 of Canonne,
/// Kamath and Steinke 2020, `exp((a - 1)(r - epsilon + ln(1 - 1/a)) - ln a)` (for a > 1.01),
/// as dp_accounting's `compute_delta`.
pub fn compute_delta(orders: &[f64], rdp: &[f64], epsilon: f64) -> (f64, f64) {
    assert_eq!(orders.len(), rdp.len(), "one RDP value per order");
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let mut log_delta = if r <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 {
            best = (log_delta, a);
        }
    }
    (best.0.exp().min(1.0), best.1)
}

/// The RDP at each of `orders` of running a mechanism whose RDP is `rdp` (at the same
/// orders) K times, K drawn from `runs`, and releasing only the best run (by any score the
/// runs release), as dp_accounting 0.6's `_compute_rdp_repeat_and_select`:
///
/// - Poisson (Theorem 6): `rdp(a) + mean delta^(a) + ln(mean) / (a - 1)`, with delta^(a) the
///   run's delta at epsilon^ = ln(1 + 1 / (a - 1)) ([`compute_delta`]);
/// - truncated negative binomial of shape eta (Theorem 2): `rdp(a) + ln(mean) / (a - 1) +
///   (1 + eta) min over a^ of ((1 - 1/a^) rdp(a^) - ln(gamma) / a^)`, then made monotone
///   (RDP does not decrease with the order).
///
/// Orders at or below 1 get infinity (the formulas need a > 1).
pub fn repeat_and_select(orders: &[f64], rdp: &[f64], runs: Runs) -> Result<Vec<f64>> {
    runs.validate()?;
    assert_eq!(orders.len(), rdp.len(), "one RDP value per order");
    let mean = runs.mean();
    let mut out = vec![f64::INFINITY; orders.len()];
    match runs {
        Runs::Poisson { .. } => {
            for (i, &a) in orders.iter().enumerate() {
                if a <= 1.0 {
                    continue;
                }
                let eps_hat = (1.0 / (a - 1.0)).ln_1p();
                let (delta_hat, _) = compute_delta(orders, rdp, eps_hat);
                out[i] = rdp[i] + mean * delta_hat + mean.ln() / (a - 1.0);
            }
        }
        Runs::TruncatedNegativeBinomial { shape, .. } => {
            let gamma = runs.gamma().expect("a truncated negative binomial");
            let c = (1.0 + shape)
                * orders
                    .iter()
                    .zip(rdp)
                    .map(|(&a, &r)| (1.0 - 1.0 / a) * r - gamma.ln() / a)
                    .fold(f64::INFINITY, f64::min);
            for (i, &a) in orders.iter().enumerate() {
                if a > 1.0 {
                    out[i] = rdp[i] + mean.ln() / (a - 1.0) + c;
                }
            }
            let raw = out.clone();
            for (i, &a) in orders.iter().enumerate() {
                out[i] = orders
                    .iter()
                    .zip(&raw)
                    .filter(|(b, _)| a <= **b)
                    .map(|(_, r)| *r)
                    .fold(f64::INFINITY, f64::min);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_their_means_and_sum_to_one() {
        for runs in [
            Runs::Poisson { mean: 3.0 },
            Runs::TruncatedNegativeBinomial {
                mean: 3.0,
                shape: 0.0,
            },
            Runs::TruncatedNegativeBinomial {
                mean: 3.0,
                shape: 1.0,
            },
            Runs::TruncatedNegativeBinomial {
                mean: 5.0,
                shape: 0.5,
            },
        ] {
            let (mut total, mut mean) = (0.0, 0.0);
            for k in 0..2000 {
                let p = runs.pmf(k);
                total += p;
                mean += k as f64 * p;
            }
            assert!((total - 1.0).abs() < 1e-6, "{runs:?}: total {total}");
            assert!(
                (mean / runs.mean() - 1.0).abs() < 1e-6,
                "{runs:?}: mean {mean}"
            );
            assert_eq!(
                runs.quantile(0.0),
                if matches!(runs, Runs::Poisson { .. }) {
                    0
                } else {
                    1
                }
            );
        }
        let geometric = Runs::TruncatedNegativeBinomial {
            mean: 4.0,
            shape: 1.0,
        };
        assert_eq!(geometric.gamma(), Some(0.25));
        assert!((geometric.pmf(2) - 0.25 * 0.75).abs() < 1e-15);
        assert!(Runs::Poisson { mean: 0.5 }.validate().is_err());
        assert!(
            Runs::TruncatedNegativeBinomial {
                mean: 2.0,
                shape: -1.0
            }
            .validate()
            .is_err()
        );
    }

    /// One run (mean 1 of a distribution that is always 1) costs what the run costs, plus the
    /// formula's constant; more runs never cost less.
    #[test]
    fn more_runs_cost_more() {
        let orders = crate::rdp::default_orders();
        let rdp = crate::rdp::compute_rdp(0.01, 1.0, 1000, &orders);
        let at = |mean| {
            let r = repeat_and_select(
                &orders,
                &rdp,
                Runs::TruncatedNegativeBinomial { mean, shape: 0.0 },
            )
            .unwrap();
            crate::rdp::get_privacy_spent(&orders, &r, 1e-5).0
        };
        let (one, _) = crate::rdp::get_privacy_spent(&orders, &rdp, 1e-5);
        assert!(at(2.0) > one && at(4.0) > at(2.0) && at(8.0) > at(4.0));
    }
}
