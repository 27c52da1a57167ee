//! Special functions accurate in the tails: log-erfc, the standard normal CDF, its log and its inverse.

use std::f64::consts::{FRAC_1_SQRT_2, LN_2, PI};

/// Below this argument libm's `erfc` is accurate to a few ulps relative; above it,
/// erfc(x) < 6e-296 heads for the subnormals and the asymptotic series takes over.
const ASYMPTOTIC_FROM: f64 = 26.0;

/// Natural log of the complementary error function, accurate (relative) for every x.
///
/// For x < 26 this is `ln(libm::erfc(x))`; beyond, where erfc underflows, it is the
/// asymptotic expansion `-x^2 - ln(x sqrt(pi)) + ln(1 - 1/(2x^2) + 3/(2x^2)^2 - ...)`,
/// whose terms shrink by a factor of at least (2n+1)/1352 there, so eight of them are exact
/// to double precision.
pub fn log_erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < ASYMPTOTIC_FROM {
        return libm::erfc(x).ln();
    }
    if x == f64::INFINITY {
        return f64::NEG_INFINITY;
    }
    let inv = 1.0 / (2.0 * x * x);
    // sum_{n>=0} (-1)^n (2n-1)!! inv^n
    let (mut term, mut sum) = (1.0, 1.0);
    for n in 1..=8 {
        term *= -((2 * n - 1) as f64) * inv;
        sum += term;
    }
    -x * x - x.ln() - 0.5 * PI.ln() + sum.ln()
}

/// The standard normal CDF, Phi(z) = erfc(-z / sqrt 2) / 2.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z * FRAC_1_SQRT_2)
}

/// (Phi(z), Phi(-z)) from one erfc: the smaller of the two exact to a few ulps relative,
/// the larger as one minus it.
pub fn normal_cdf_pair(z: f64) -> (f64, f64) {
    let tail = 0.5 * libm::erfc(z.abs() * FRAC_1_SQRT_2);
    if z < 0.0 {
        (tail, 1.0 - tail)
    } else {
        (1.0 - tail, tail)
    }
}

/// ln Phi(z), accurate for every z (scipy's `log_ndtr`).
///
/// Below zero it is `log_erfc(-z / sqrt 2) - ln 2`, exact in the far lower tail; above, it is
/// `ln(1 - Phi(-z))`, exact when Phi(z) is close to 1.
pub fn normal_log_cdf(z: f64) -> f64 {
    if z.is_nan() {
        f64::NAN
    } else if z < 0.0 {
        log_erfc(-z * FRAC_1_SQRT_2) - LN_2
    } else {
        (-0.5 * libm::erfc(z * FRAC_1_SQRT_2)).ln_1p()
    }
}

/// The lower-tail quantile: the z with ln Phi(z) = `log_p`, for `log_p <= ln(1/2)`.
///
/// Starts from the asymptotic inverse and runs Newton's method on ln Phi, which is concave,
/// so the iterates approach the root monotonically from below after the first step.
pub fn normal_quantile_from_log(log_p: f64) -> f64 {
    debug_assert!(log_p <= -LN_2 + 1e-12, "lower tail only: ln p = {log_p}");
    if log_p == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let y = -2.0 * log_p;
    let mut z = if y > 2.0 {
        -(y - y.ln() - (2.0 * PI).ln()).max(0.0).sqrt()
    } else {
        -0.5
    };
    for _ in 0..100 {
        let log_cdf = normal_log_cdf(z);
        let log_pdf = -0.5 * z * z - 0.5 * (2.0 * PI).ln();
        let step = (log_cdf - log_p) / (log_pdf - log_cdf).exp();
        z -= step;
        if step.abs() <= 1e-15 * z.abs().max(1.0) {
            break;
        }
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_rel(got: f64, want: f64, tol: f64) {
        let err = ((got - want) / want).abs();
        assert!(
            err <= tol,
            "got {got:e}, want {want:e} (relative error {err:e})"
        );
    }

    /// ln erfc(x), from mpmath at 40 digits.
    #[test]
    fn log_erfc_matches_mpmath_across_both_regimes() {
        let cases = [
            (-5.0, 0.693_147_180_559_176_6),
            (-1.0, 0.611_232_317_678_070_5),
            (0.5, -0.735_011_129_837_084_4),
            (3.0, -10.720_363_041_981_113),
            (5.0, -27.200_889_545_537_434),
            (10.0, -102.879_889_024_844_89),
            (25.9, -674.637_351_895_319_2),
            (26.0, -679.831_199_763_194_2),
            (26.1, -685.045_032_903_309_4),
            (30.0, -903.974_117_110_643_9),
            (100.0, -10_005.177_585_122_664),
            (1e4, -100_000_009.782_705_32),
        ];
        for (x, want) in cases {
            assert_rel(log_erfc(x), want, 4e-15);
        }
        assert_eq!(log_erfc(0.0), 0.0);
        assert_eq!(log_erfc(f64::INFINITY), f64::NEG_INFINITY);
        assert!(log_erfc(f64::NAN).is_nan());
    }

    #[test]
    fn log_erfc_is_continuous_where_the_regimes_meet() {
        let below = libm::erfc(ASYMPTOTIC_FROM).ln();
        let above = log_erfc(ASYMPTOTIC_FROM);
        assert_rel(above, below, 1e-15);
    }

    /// ln Phi(z), from mpmath at 40 digits.
    #[test]
    fn normal_log_cdf_matches_mpmath() {
        let cases = [
            (-40.0, -804.608_442_013_753_8),
            (-10.0, -53.231_285_150_512_47),
            (-1.0, -1.841_021_645_009_263_5),
            (0.0, -std::f64::consts::LN_2),
            (3.0, -0.001_350_809_964_748_193_8),
            (8.0, -6.220_960_574_271_786e-16),
        ];
        for (z, want) in cases {
            assert_rel(normal_log_cdf(z), want, 1e-14);
        }
        assert_eq!(normal_log_cdf(f64::NEG_INFINITY), f64::NEG_INFINITY);
        assert_eq!(normal_log_cdf(f64::INFINITY), 0.0);
    }

    #[test]
    fn normal_cdf_is_symmetric_and_bounded() {
        assert_eq!(normal_cdf(0.0), 0.5);
        assert!((normal_cdf(1.3) + normal_cdf(-1.3) - 1.0).abs() < 1e-16);
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        for z in [-30.0, -3.0, -0.1, 0.0, 0.4, 2.0, 9.0] {
            let (p, c) = normal_cdf_pair(z);
            assert_eq!(p, normal_cdf(z).max(0.0).min(p.max(normal_cdf(z))));
            assert!((c - normal_cdf(-z)).abs() <= 1e-16 + 1e-15 * c);
            assert!((p - normal_cdf(z)).abs() <= 1e-16 + 1e-15 * p);
        }
    }

    /// scipy's ndtri(0.5 * exp(-50)), where dp_accounting truncates the Gaussian's tails.
    #[test]
    fn quantile_inverts_the_log_cdf() {
        let z = normal_quantile_from_log(0.5f64.ln() - 50.0);
        assert_rel(z, -9.745_474_864_965_935, 1e-15);
        for log_p in [-0.7, -1.0, -5.0, -100.0, -1e4] {
            let z = normal_quantile_from_log(log_p);
            assert_rel(normal_log_cdf(z), log_p, 1e-13);
        }
    }
}
