//! RDP of the Poisson-subsampled Gaussian mechanism at any order (Mironov, Talwar, Zhang 2019, Section 3.3).

use crate::special::log_erfc;

/// The RDP of `steps` compositions of the Poisson-subsampled Gaussian mechanism, one value per order.
///
/// Sampling rate `q`, noise multiplier `sigma` (noise std over L2 sensitivity). As Opacus's
/// `compute_rdp`: 0 when `q == 0`, infinite when `sigma == 0`, `alpha / (2 sigma^2)` per step
/// when `q == 1`, and otherwise `log(A_alpha) / (alpha - 1)` per step, with A_alpha from the
/// binomial expansion at integer orders and from the sign-correct pair of series at
/// fractional orders. `steps == 0` gives zeros (nothing released). Orders must be > 1.
pub fn compute_rdp(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Vec<f64> {
    if steps == 0 {
        return vec![0.0; orders.len()];
    }
    let steps = steps as f64;
    orders
        .iter()
        .map(|&alpha| rdp_one_step(q, sigma, alpha) * steps)
        .collect()
}

/// [`compute_rdp`] as Google's dp_accounting 0.6 computes it: the same at integer orders; at
/// fractional orders each term of the pair of series enters with |C(alpha, i)| (dp_accounting's
/// `_log_comb` is a difference of log-gammas, the log of the absolute value) and the sum stops
/// once both terms decrease and lie 30 nats below the total (at most 1000 terms). Every term
/// counted positive makes A_alpha an upper bound on the sign-correct series, so this curve lies
/// on or above [`compute_rdp`]'s (4e-5 relative at a typical DP-SGD run's best order): what
/// `trainer tune` states, so that its epsilon is dp_accounting's `RepeatAndSelectDpEvent`'s.
pub fn compute_rdp_as_dp_accounting(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Vec<f64> {
    if steps == 0 {
        return vec![0.0; orders.len()];
    }
    let steps = steps as f64;
    orders
        .iter()
        .map(|&alpha| {
            if q == 0.0 || sigma == 0.0 || q == 1.0 || alpha.is_infinite() || alpha.fract() == 0.0 {
                rdp_one_step(q, sigma, alpha) * steps
            } else {
                log_a_fractional_unsigned(q, sigma, alpha) / (alpha - 1.0) * steps
            }
        })
        .collect()
}

/// RDP of one step at order `alpha` (Opacus's `_compute_rdp`).
fn rdp_one_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        0.0
    } else if sigma == 0.0 {
        f64::INFINITY
    } else if q == 1.0 {
        alpha / (2.0 * sigma * sigma)
    } else if alpha.is_infinite() {
        f64::INFINITY
    } else if alpha.fract() == 0.0 {
        log_a_integer(q, sigma, alpha as u64) / (alpha - 1.0)
    } else {
        log_a_fractional(q, sigma, alpha) / (alpha - 1.0)
    }
}

/// log(exp(x) + exp(y)).
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = (x.min(y), x.max(y));
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// log(exp(x) - exp(y)) for x >= y, as Opacus's `_log_sub` (which returns x when expm1 overflows).
fn log_sub(x: f64, y: f64) -> f64 {
    debug_assert!(x >= y, "log_sub would be negative: {x} < {y}");
    if y == f64::NEG_INFINITY {
        return x;
    }
    if x == y {
        return f64::NEG_INFINITY;
    }
    let d = (x - y).exp_m1();
    if d.is_infinite() { x } else { d.ln() + y }
}

/// log(A_alpha) for integer alpha: sum_i C(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 sigma^2)).
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (1.0 - q).ln());
    let two_var = 2.0 * sigma * sigma;
    let mut log_a = f64::NEG_INFINITY;
    let mut log_binom = 0.0; // ln C(alpha, 0)
    for i in 0..=alpha {
        if i > 0 {
            log_binom += ((alpha - i + 1) as f64).ln() - (i as f64).ln();
        }
        let fi = i as f64;
        let s = log_binom + fi * log_q + (alpha - i) as f64 * log_1mq + (fi * fi - fi) / two_var;
        log_a = log_add(log_a, s);
    }
    log_a
}

/// log(A_alpha) for fractional alpha: two series split at z0, summed with the sign of each
/// generalized binomial coefficient, until both terms drop below exp(-30) (Opacus's loop).
fn log_a_fractional(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (1.0 - q).ln());
    let two_var = 2.0 * sigma * sigma;
    let erfc_scale = std::f64::consts::SQRT_2 * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    // C(alpha, i) carried as ln|C| and its sign: C(alpha, i) = C(alpha, i-1) (alpha - i + 1) / i.
    let (mut log_coef, mut positive) = (0.0, true);
    let mut i = 0u64;
    loop {
        let fi = i as f64;
        if i > 0 {
            let factor = alpha - fi + 1.0;
            log_coef += factor.abs().ln() - fi.ln();
            if factor < 0.0 {
                positive = !positive;
            }
        }
        let j = alpha - fi;
        let log_t0 = log_coef + fi * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + fi * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / erfc_scale);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / erfc_scale);
        let log_s0 = log_t0 + (fi * fi - fi) / two_var + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
        if positive {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        i += 1;
        if log_s0.max(log_s1) < -30.0 {
            break;
        }
    }
    log_add(log_a0, log_a1)
}

/// log(A_alpha) for fractional alpha as dp_accounting's `_compute_log_a_frac`: every term with
/// |C(alpha, i)|, until both terms decrease and are 30 nats below the total (1000 at most).
fn log_a_fractional_unsigned(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (1.0 - q).ln());
    let two_var = 2.0 * sigma * sigma;
    let erfc_scale = std::f64::consts::SQRT_2 * sigma;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let mut log_coef = 0.0; // ln |C(alpha, i)|
    for i in 0..1000u32 {
        let fi = f64::from(i);
        if i > 0 {
            log_coef += (alpha - fi + 1.0).abs().ln() - fi.ln();
        }
        let j = alpha - fi;
        let log_t0 = log_coef + fi * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + fi * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((fi - z0) / erfc_scale);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / erfc_scale);
        let log_s0 = log_t0 + (fi * fi - fi) / two_var + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_var + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    log_add(log_a0, log_a1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cases_follow_opacus() {
        let orders = [1.5, 2.0, 32.0];
        assert_eq!(compute_rdp(0.0, 1.0, 10, &orders), vec![0.0; 3]);
        assert!(
            compute_rdp(0.1, 0.0, 10, &orders)
                .iter()
                .all(|r| r.is_infinite())
        );
        let full = compute_rdp(1.0, 2.0, 3, &orders);
        for (r, a) in full.iter().zip(orders) {
            assert!(
                (r - 3.0 * a / 8.0).abs() < 1e-15,
                "q = 1 is the plain Gaussian"
            );
        }
        assert_eq!(compute_rdp(0.1, 1.0, 0, &orders), vec![0.0; 3]);
        assert_eq!(
            compute_rdp(0.1, 1.0, 1, &[f64::INFINITY]),
            vec![f64::INFINITY]
        );
    }

    #[test]
    fn integer_order_two_has_a_closed_form() {
        // A_2 = (1-q)^2 + 2q(1-q) + q^2 e^{1/sigma^2} = 1 + q^2 (e^{1/sigma^2} - 1).
        let (q, sigma) = (0.01f64, 1.1f64);
        let want = (q * q * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
        let got = compute_rdp(q, sigma, 1, &[2.0])[0];
        assert!(((got - want) / want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn rdp_is_increasing_in_order_and_continuous_across_integers() {
        let (q, sigma) = (0.04, 1.5);
        let orders: Vec<f64> = (11..=40).map(|x| f64::from(x) / 10.0).collect();
        let rdp = compute_rdp(q, sigma, 1, &orders);
        assert!(rdp.windows(2).all(|w| w[0] < w[1]), "{rdp:?}");
        // Fractional orders just beside an integer agree with it to first order.
        let around = compute_rdp(q, sigma, 1, &[2.999_999, 3.0, 3.000_001]);
        assert!((around[0] - around[1]).abs() < 1e-6 * around[1]);
        assert!((around[2] - around[1]).abs() < 1e-6 * around[1]);
    }

    /// Opacus's values for q = 0.04, sigma = 1.5, one step (from `bench/accountant/reference.py`).
    #[test]
    fn matches_opacus_per_order() {
        let got = compute_rdp(0.04, 1.5, 1, &[1.1, 3.9, 10.5, 63.0]);
        let want = [
            0.000_481_656_740_904_812_83,
            0.001_833_202_199_563_627_7,
            0.006_221_354_273_909_654,
            10.729_206_823_144_093,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!(((g - w) / w).abs() < 1e-12, "{g} vs {w}");
        }
    }
}
