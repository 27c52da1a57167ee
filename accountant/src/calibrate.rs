//! Noise calibration: the smallest noise multiplier whose epsilon meets a target, for either accountant.

use crate::{AccountantKind, Error, Releases, Result, epsilon_composed, params, rdp};
#[cfg(test)]
use crate::{epsilon, epsilon_with_gaussians};

/// The relative precision of the calibrated noise multiplier.
pub const CALIBRATION_TOLERANCE: f64 = 1e-3;

/// The largest noise multiplier the search tries before calling a target unreachable.
const MAX_SIGMA: f64 = 1e6;

/// The smallest noise multiplier sigma (within [`CALIBRATION_TOLERANCE`] relative, rounded
/// up) such that `steps` steps at sampling rate `q` spend at most `target_epsilon` at `delta`
/// by the `kind` accountant.
///
/// The returned sigma meets the target; a sigma `CALIBRATION_TOLERANCE` (relative) smaller
/// does not. `q == 0` or `steps == 0` need no noise and give 0. RDP cannot go below the
/// epsilon of zero RDP at its largest order (about 0.1 at delta 1e-5 with Opacus's orders):
/// such a target is [`Error::UnreachableEpsilon`].
///
/// The search brackets sigma by secant steps on (ln sigma, ln epsilon) (for PLD starting
/// from the RDP answer, which is an upper bound as RDP's epsilon is the larger), then narrows
/// the bracket by regula falsi with the Illinois modification until its ends are within the
/// tolerance: about five evaluations of epsilon.
pub fn calibrate_noise(
    kind: AccountantKind,
    q: f64,
    target_epsilon: f64,
    steps: u64,
    delta: f64,
) -> Result<f64> {
    calibrate_noise_with_gaussians(kind, q, target_epsilon, steps, &[], delta)
}

/// The smallest DP-SGD noise multiplier (as [`calibrate_noise`]) such that the steps composed
/// with one release of each Gaussian mechanism in `gaussians` (noise multipliers, see
/// [`crate::epsilon_with_gaussians`]) spend at most `target_epsilon`: the steps get what the
/// Gaussians leave of the budget. A target the Gaussians alone use up is
/// [`Error::UnreachableEpsilon`].
pub fn calibrate_noise_with_gaussians(
    kind: AccountantKind,
    q: f64,
    target_epsilon: f64,
    steps: u64,
    gaussians: &[f64],
    delta: f64,
) -> Result<f64> {
    calibrate_noise_composed(
        kind,
        q,
        target_epsilon,
        steps,
        &Releases::gaussians(gaussians),
        delta,
    )
}

/// The smallest DP-SGD noise multiplier (as [`calibrate_noise`]) such that the steps composed
/// with `releases` ([`crate::epsilon_composed`]) spend at most `target_epsilon`. A target the
/// releases alone use up is [`Error::UnreachableEpsilon`].
pub fn calibrate_noise_composed(
    kind: AccountantKind,
    q: f64,
    target_epsilon: f64,
    steps: u64,
    releases: &Releases,
    delta: f64,
) -> Result<f64> {
    params::sampling_rate(q)?;
    releases.validate()?;
    params::target_epsilon(target_epsilon)?;
    params::delta(delta)?;
    if q == 0.0 || steps == 0 {
        return Ok(0.0);
    }
    let unreachable = |sigma: f64, epsilon: f64| Error::UnreachableEpsilon {
        target: target_epsilon,
        accountant: kind,
        delta,
        sigma,
        epsilon,
    };
    // Epsilon at sigma; a PLD too fine to allocate means far too little noise.
    let eps_at = |sigma: f64| -> Result<f64> {
        match epsilon_composed(kind, q, sigma, steps, releases, delta) {
            Ok(spent) => Ok(spent.epsilon),
            Err(Error::PldTooLarge { .. }) => Ok(f64::INFINITY),
            Err(e) => Err(e),
        }
    };
    let (start, slope) = match kind {
        AccountantKind::Rdp => {
            let orders = rdp::default_orders();
            // What the releases alone spend (nothing without them): no noise on the steps
            // reaches below it.
            let (floor, _) = rdp::get_privacy_spent(&orders, &releases.rdp(&orders), delta);
            if target_epsilon <= floor {
                return Err(unreachable(f64::INFINITY, floor));
            }
            (1.0, -2.0)
        }
        AccountantKind::Pld => {
            // RDP needs at least as much noise; when it cannot reach the target, start at 1.
            match calibrate_noise_composed(
                AccountantKind::Rdp,
                q,
                target_epsilon,
                steps,
                releases,
                delta,
            ) {
                // PLD's epsilon falls steeply with sigma: guess steep, so that the first
                // step stays on the cheap side (larger sigma, coarser distribution).
                Ok(sigma) => (sigma, -4.0),
                Err(Error::UnreachableEpsilon { .. }) => (1.0, -4.0),
                Err(e) => return Err(e),
            }
        }
    };

    // Bracket: eps(lo) > target >= eps(hi). Step in ln sigma along the local slope of
    // ln eps (a guess at first), overshooting by 3% so that one step usually brackets;
    // smaller sigma means a finer PLD, so this avoids wandering far below the answer.
    let (mut sigma, mut eps) = (start, eps_at(start)?);
    let mut slope: f64 = slope;
    let mut lo: Option<(f64, f64)> = None;
    let mut hi: Option<(f64, f64)> = None;
    loop {
        if eps > target_epsilon {
            lo = Some((sigma, eps));
        } else {
            hi = Some((sigma, eps));
        }
        if let (Some(_), Some(_)) = (lo, hi) {
            break;
        }
        if sigma >= MAX_SIGMA {
            return Err(unreachable(sigma, eps));
        }
        if sigma < 1e-12 {
            return Ok(sigma);
        }
        let toward = if eps.is_finite() && eps > 0.0 {
            (target_epsilon / eps).ln() / slope
        } else if eps > target_epsilon {
            std::f64::consts::LN_2
        } else {
            -std::f64::consts::LN_2
        };
        let step = (toward + 0.03 * toward.signum()).clamp(-std::f64::consts::LN_2, 2.0);
        let next = (sigma * step.exp()).min(MAX_SIGMA);
        let next_eps = eps_at(next)?;
        let local = (next_eps / eps).ln() / (next / sigma).ln();
        if local.is_finite() {
            slope = local.clamp(-8.0, -0.1);
        }
        (sigma, eps) = (next, next_eps);
    }
    let ((mut lo, mut eps_lo), (mut hi, mut eps_hi)) =
        (lo.expect("bracketed"), hi.expect("bracketed"));

    // Narrow it: regula falsi on g(x) = ln eps(e^x) - ln target, x = ln sigma.
    let g = |eps: f64| (eps / target_epsilon).ln();
    let tol = CALIBRATION_TOLERANCE.ln_1p();
    let (mut g_lo, mut g_hi) = (g(eps_lo), g(eps_hi));
    let mut last_side = 0i8;
    for iteration in 0..200 {
        let (a, b) = (lo.ln(), hi.ln());
        if b - a <= tol {
            break;
        }
        let interpolated = g_lo.is_finite() && g_hi.is_finite() && g_lo != g_hi;
        let x = if interpolated && iteration < 60 {
            let x = (a * g_hi - b * g_lo) / (g_hi - g_lo);
            let margin = (0.45 * tol).min(0.25 * (b - a));
            x.clamp(a + margin, b - margin)
        } else {
            0.5 * (a + b)
        };
        let sigma = x.exp();
        let eps = eps_at(sigma)?;
        if eps > target_epsilon {
            (lo, eps_lo, g_lo) = (sigma, eps, g(eps));
            if last_side == 1 {
                g_hi *= 0.5;
            }
            last_side = 1;
        } else {
            (hi, eps_hi, g_hi) = (sigma, eps, g(eps));
            if last_side == -1 {
                g_lo *= 0.5;
            }
            last_side = -1;
        }
    }
    debug_assert!(eps_hi <= target_epsilon && eps_lo > target_epsilon);
    Ok(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(kind: AccountantKind, q: f64, target: f64, steps: u64, delta: f64) -> f64 {
        let sigma = calibrate_noise(kind, q, target, steps, delta).unwrap();
        let at = epsilon(kind, q, sigma, steps, delta).unwrap().epsilon;
        assert!(
            at <= target,
            "{kind}: sigma {sigma} gives {at} > target {target}"
        );
        let smaller = sigma * (1.0 - CALIBRATION_TOLERANCE);
        let above = epsilon(kind, q, smaller, steps, delta).unwrap().epsilon;
        assert!(
            above > target,
            "{kind}: sigma {smaller} still meets {target} ({above})"
        );
        sigma
    }

    #[test]
    fn rdp_round_trips() {
        round_trip(AccountantKind::Rdp, 0.04, 8.0, 2_250, 1e-5);
        round_trip(AccountantKind::Rdp, 256.0 / 960_000.0, 1.0, 3_750, 1e-5);
        round_trip(AccountantKind::Rdp, 0.01, 0.5, 1_000, 1e-6);
    }

    /// Round trips where PLD is quick even unoptimized: enough noise that one step's loss
    /// spans few grid points.
    #[test]
    fn pld_round_trips_and_needs_less_noise() {
        let pld = round_trip(AccountantKind::Pld, 0.01, 0.2, 10, 1e-5);
        let rdp = round_trip(AccountantKind::Rdp, 0.01, 0.2, 10, 1e-5);
        assert!(pld < rdp, "pld {pld} vs rdp {rdp}");
    }

    /// RDP cannot go below about 0.1 at delta 1e-5; PLD still calibrates there.
    #[test]
    fn pld_round_trips_below_the_rdp_floor() {
        round_trip(AccountantKind::Pld, 0.01, 0.05, 10, 1e-5);
    }

    #[test]
    fn no_release_needs_no_noise() {
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            assert_eq!(calibrate_noise(kind, 0.0, 1.0, 100, 1e-5), Ok(0.0));
            assert_eq!(calibrate_noise(kind, 0.1, 1.0, 0, 1e-5), Ok(0.0));
        }
    }

    #[test]
    fn unreachable_and_invalid_targets() {
        let e = calibrate_noise(AccountantKind::Rdp, 0.01, 0.05, 100, 1e-5).unwrap_err();
        assert!(
            matches!(e, Error::UnreachableEpsilon { target, .. } if target == 0.05),
            "{e}"
        );
        assert_eq!(
            calibrate_noise(AccountantKind::Pld, 0.01, -1.0, 100, 1e-5),
            Err(Error::TargetEpsilon(-1.0))
        );
        assert_eq!(
            calibrate_noise(AccountantKind::Pld, 2.0, 1.0, 100, 1e-5),
            Err(Error::SamplingRate(2.0))
        );
    }

    /// With a Gaussian release besides the steps, the calibrated steps spend what it leaves:
    /// the composition meets the target, more noise than without it, and a target the
    /// Gaussian alone exceeds is unreachable.
    #[test]
    fn calibrates_what_a_gaussian_leaves() {
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            let (q, target, steps, g, delta) = (0.01, 1.0, 200, 6.0, 1e-5);
            let sigma =
                calibrate_noise_with_gaussians(kind, q, target, steps, &[g], delta).unwrap();
            let at = epsilon_with_gaussians(kind, q, sigma, steps, &[g], delta)
                .unwrap()
                .epsilon;
            assert!(at <= target, "{kind}: {at}");
            let smaller = sigma * (1.0 - CALIBRATION_TOLERANCE);
            let above = epsilon_with_gaussians(kind, q, smaller, steps, &[g], delta)
                .unwrap()
                .epsilon;
            assert!(above > target, "{kind}: {above}");
            assert!(sigma > calibrate_noise(kind, q, target, steps, delta).unwrap());
            let e = calibrate_noise_with_gaussians(kind, q, 0.2, steps, &[0.5], delta).unwrap_err();
            assert!(matches!(e, Error::UnreachableEpsilon { .. }), "{kind}: {e}");
        }
    }
}
