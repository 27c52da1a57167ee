//! The privacy budget a run spends: the entry point that asks either accountant for epsilon at delta.

use std::fmt;

use crate::{AccountantKind, Releases, Result, params, pld, rdp};

/// Epsilon at delta, and how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PrivacySpent {
    /// The epsilon of (epsilon, delta)-DP.
    pub epsilon: f64,
    /// The delta it holds at.
    pub delta: f64,
    /// The accountant that computed it.
    pub accountant: AccountantKind,
    /// The RDP order that gave the best epsilon (RDP only).
    pub rdp_order: Option<f64>,
}

impl fmt::Display for PrivacySpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epsilon = {:.6} at delta = {:e} ({}",
            self.epsilon, self.delta, self.accountant
        )?;
        if let Some(order) = self.rdp_order {
            write!(f, ", order {order}")?;
        }
        f.write_str(")")
    }
}

/// The (epsilon, delta) spent by `steps` steps of DP-SGD: the Poisson-subsampled Gaussian
/// mechanism with sampling rate `q` and noise multiplier `sigma` (noise std over clipping norm).
///
/// [`AccountantKind::Rdp`] reproduces Opacus's `RDPAccountant` (default orders);
/// [`AccountantKind::Pld`] is [`pld::epsilon`] with [`pld::PldOptions::default`]. When
/// `q == 0` or `steps == 0` nothing is released and epsilon is 0 for both; when `sigma == 0`
/// (and q > 0) it is infinite. Epsilon is never negative (Opacus's conversion can be, for a
/// delta near 1; that is reported as 0).
///
/// ```
/// use accountant::{AccountantKind, epsilon};
///
/// let q = 256.0 / 960_000.0; // batch 256 out of 960,000 rows
/// let rdp = epsilon(AccountantKind::Rdp, q, 0.9, 3_750, 1e-5)?;
/// assert!((rdp.epsilon - 0.677_169_183_680_73).abs() < 1e-9);
/// assert_eq!(rdp.rdp_order, Some(13.0));
///
/// let pld = epsilon(AccountantKind::Pld, q, 0.9, 3_750, 1e-5)?;
/// assert!((pld.epsilon - 0.084_219_5).abs() < 1e-6); // dp_accounting's value
/// assert!(pld.epsilon < rdp.epsilon);
/// # Ok::<(), accountant::Error>(())
/// ```
pub fn epsilon(
    kind: AccountantKind,
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
) -> Result<PrivacySpent> {
    epsilon_with_gaussians(kind, q, sigma, steps, &[], delta)
}

/// The (epsilon, delta) spent by `steps` steps of DP-SGD (as [`epsilon`]) composed with one
/// release of each Gaussian mechanism in `gaussians`, given by its noise multiplier (noise std
/// over the L2 sensitivity of what it releases): statistics computed on the same records, such
/// as the noisy means a preprocessing step releases.
///
/// Both accountants compose heterogeneous mechanisms exactly as they compose steps: RDP adds
/// the unsampled Gaussian's `alpha / (2 s^2)` to the sampled Gaussian's RDP at every order
/// before converting; PLD convolves the Gaussian's privacy loss distribution (discretized
/// pessimistically like a step's) with the steps' composition. With no DP-SGD step (`q == 0`
/// or `steps == 0`) epsilon is the Gaussians' alone.
pub fn epsilon_with_gaussians(
    kind: AccountantKind,
    q: f64,
    sigma: f64,
    steps: u64,
    gaussians: &[f64],
    delta: f64,
) -> Result<PrivacySpent> {
    epsilon_composed(
        kind,
        q,
        sigma,
        steps,
        &Releases::gaussians(gaussians),
        delta,
    )
}

/// The (epsilon, delta) spent by `steps` steps of DP-SGD (as [`epsilon`]) composed with
/// `releases` (Gaussian and exponential mechanisms, each once; [`Releases`] says how each
/// accountant composes them). With no DP-SGD step epsilon is the releases' alone.
pub fn epsilon_composed(
    kind: AccountantKind,
    q: f64,
    sigma: f64,
    steps: u64,
    releases: &Releases,
    delta: f64,
) -> Result<PrivacySpent> {
    params::sampling_rate(q)?;
    params::noise_multiplier(sigma)?;
    params::delta(delta)?;
    releases.validate()?;
    let spent = |epsilon, rdp_order| PrivacySpent {
        epsilon,
        delta,
        accountant: kind,
        rdp_order,
    };
    let sgd_releases = q > 0.0 && steps > 0;
    if !sgd_releases && releases.is_empty() {
        return Ok(spent(0.0, None));
    }
    if (sgd_releases && sigma == 0.0) || releases.not_private() {
        return Ok(spent(f64::INFINITY, None));
    }
    match kind {
        AccountantKind::Rdp => {
            let orders = rdp::default_orders();
            let rdp = rdp::composed_rdp(q, sigma, steps, releases, &orders);
            let (epsilon, order) = rdp::get_privacy_spent(&orders, &rdp, delta);
            // The conversion can go below 0 for a large delta; (0, delta)-DP is what it says.
            Ok(spent(epsilon.max(0.0), (!order.is_nan()).then_some(order)))
        }
        AccountantKind::Pld => {
            let options = pld::PldOptions::default();
            let epsilon = if sgd_releases {
                pld::epsilon_composed(q, sigma, steps, releases, delta, &options)?
            } else {
                pld::epsilon_composed(0.0, 1.0, 0, releases, delta, &options)?
            };
            Ok(spent(epsilon, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn rel(a: f64, b: f64) -> f64 {
        ((a - b) / b).abs()
    }

    /// Opacus's own test (`test_rdp_accountant`: q = 0.04, sigma = 1.5, int(90 / 0.04) steps).
    #[test]
    fn rdp_golden_values() {
        let s = epsilon(AccountantKind::Rdp, 0.04, 1.5, 2_250, 1e-5).unwrap();
        assert!(rel(s.epsilon, 7.329_111_171_43) < 1e-6, "{}", s.epsilon);
        assert!(
            rel(s.epsilon, 7.329_111_171_438_654_5) < 1e-12,
            "{}",
            s.epsilon
        );
        assert_eq!(s.rdp_order, Some(3.9));
        let s = epsilon(AccountantKind::Rdp, 256.0 / 960_000.0, 0.9, 3_750, 1e-5).unwrap();
        assert!(
            rel(s.epsilon, 0.677_169_183_680_730) < 1e-12,
            "{}",
            s.epsilon
        );
        assert_eq!(s.rdp_order, Some(13.0));
        assert_eq!(s.accountant, AccountantKind::Rdp);
    }

    #[test]
    fn nothing_released_and_no_noise() {
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            assert_eq!(epsilon(kind, 0.0, 1.0, 100, 1e-5).unwrap().epsilon, 0.0);
            assert_eq!(epsilon(kind, 0.1, 1.0, 0, 1e-5).unwrap().epsilon, 0.0);
            assert_eq!(
                epsilon(kind, 0.1, 0.0, 100, 1e-5).unwrap().epsilon,
                f64::INFINITY
            );
        }
    }

    #[test]
    fn epsilon_is_never_negative() {
        let s = epsilon(AccountantKind::Rdp, 0.01, 50.0, 1, 0.5).unwrap();
        assert_eq!(s.epsilon, 0.0);
        let (raw, _) =
            rdp::get_privacy_spent(&[2.0], &rdp::compute_rdp(0.01, 50.0, 1, &[2.0]), 0.5);
        assert!(raw < 0.0, "Opacus's conversion itself: {raw}");
    }

    #[test]
    fn invalid_parameters_are_named() {
        let k = AccountantKind::Rdp;
        assert_eq!(
            epsilon(k, 1.01, 1.0, 1, 1e-5),
            Err(Error::SamplingRate(1.01))
        );
        assert_eq!(
            epsilon(k, 0.1, -0.5, 1, 1e-5),
            Err(Error::NoiseMultiplier(-0.5))
        );
        assert_eq!(epsilon(k, 0.1, 1.0, 1, 0.0), Err(Error::Delta(0.0)));
    }

    /// PLD is the tighter accountant: never above RDP for the same run, at the default
    /// discretization and (for wider coverage at test speed) at a coarser one, which is still
    /// an upper bound.
    #[test]
    fn pld_is_never_above_rdp() {
        let coarse = pld::PldOptions {
            discretization: 1e-3,
            ..pld::PldOptions::default()
        };
        let runs = [
            (256.0 / 960_000.0, 0.9, 3_750, 1e-5, true),
            (0.05, 2.0, 100, 1e-6, true),
            (1.0, 5.0, 10, 1e-5, true),
            (0.01, 1.1, 3_750, 1e-5, false),
            (0.04, 1.5, 2_250, 1e-5, false),
            (0.1, 0.8, 50, 1e-5, false),
            (0.001, 0.6, 1_000, 1e-6, false),
        ];
        for (q, sigma, steps, delta, default) in runs {
            let r = epsilon(AccountantKind::Rdp, q, sigma, steps, delta)
                .unwrap()
                .epsilon;
            let p = if default {
                epsilon(AccountantKind::Pld, q, sigma, steps, delta)
                    .unwrap()
                    .epsilon
            } else {
                pld::epsilon(q, sigma, steps, delta, &coarse).unwrap()
            };
            assert!(
                p <= r,
                "q={q} sigma={sigma} steps={steps}: pld {p} > rdp {r}"
            );
        }
    }

    /// More steps, a higher sampling rate or less noise never lowers epsilon (PLD at a coarser
    /// discretization, to keep the test fast; monotonicity does not depend on it).
    #[test]
    fn monotone_in_steps_rate_and_noise() {
        let coarse = pld::PldOptions {
            discretization: 1e-3,
            ..pld::PldOptions::default()
        };
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            let eps = |q, sigma, steps| match kind {
                AccountantKind::Rdp => epsilon(kind, q, sigma, steps, 1e-5).unwrap().epsilon,
                AccountantKind::Pld => pld::epsilon(q, sigma, steps, 1e-5, &coarse).unwrap(),
            };
            let by_steps: Vec<f64> = [10, 100, 1_000, 3_000].map(|t| eps(0.01, 1.0, t)).into();
            let by_q: Vec<f64> = [0.001, 0.005, 0.02, 0.05].map(|q| eps(q, 1.0, 200)).into();
            let by_sigma: Vec<f64> = [0.8, 1.0, 1.5, 3.0].map(|s| eps(0.01, s, 200)).into();
            for (name, v, increasing) in [
                ("steps", &by_steps, true),
                ("q", &by_q, true),
                ("sigma", &by_sigma, false),
            ] {
                for w in v.windows(2) {
                    let ok = if increasing { w[0] < w[1] } else { w[0] > w[1] };
                    assert!(ok, "{kind}: epsilon not monotone in {name}: {v:?}");
                }
            }
        }
    }

    /// The Gaussian's RDP, alpha / (2 g^2), written out here, added to the steps' RDP before
    /// the conversion: the composition the function must compute.
    #[test]
    fn rdp_composes_a_gaussian_by_adding_its_rdp() {
        let (q, sigma, steps, g, delta) = (0.01, 1.1, 1_000, 8.0, 1e-5);
        let orders = rdp::default_orders();
        let by_hand: Vec<f64> = rdp::compute_rdp(q, sigma, steps, &orders)
            .iter()
            .zip(&orders)
            .map(|(r, a)| r + a / (2.0 * g * g))
            .collect();
        let (want, order) = rdp::get_privacy_spent(&orders, &by_hand, delta);
        let got =
            epsilon_with_gaussians(AccountantKind::Rdp, q, sigma, steps, &[g], delta).unwrap();
        assert_eq!(got.epsilon, want);
        assert_eq!(got.rdp_order, Some(order));
        let alone = epsilon(AccountantKind::Rdp, q, sigma, steps, delta).unwrap();
        assert!(got.epsilon > alone.epsilon);
        assert_eq!(
            epsilon_with_gaussians(AccountantKind::Rdp, q, sigma, steps, &[], delta).unwrap(),
            alone
        );
    }

    /// PLD: the composition costs more than either part and less than their sum; a Gaussian
    /// alone is the unsampled single step; a Gaussian without noise spends everything.
    #[test]
    fn pld_composes_a_gaussian() {
        let (q, sigma, steps, g, delta) = (0.05, 2.0, 100, 4.0, 1e-6);
        let k = AccountantKind::Pld;
        let both = epsilon_with_gaussians(k, q, sigma, steps, &[g], delta)
            .unwrap()
            .epsilon;
        let sgd = epsilon(k, q, sigma, steps, delta).unwrap().epsilon;
        let gauss = epsilon_with_gaussians(k, 0.0, 1.0, 0, &[g], delta)
            .unwrap()
            .epsilon;
        let single = epsilon(k, 1.0, g, 1, delta).unwrap().epsilon;
        assert!((gauss / single - 1.0).abs() < 1e-9, "{gauss} vs {single}");
        assert!(
            both > sgd && both > gauss && both < sgd + gauss,
            "{both} {sgd} {gauss}"
        );
        assert!(
            epsilon_with_gaussians(k, q, sigma, steps, &[0.0], delta)
                .unwrap()
                .epsilon
                .is_infinite()
        );
        assert_eq!(
            epsilon_with_gaussians(k, q, sigma, steps, &[-1.0], delta),
            Err(Error::NoiseMultiplier(-1.0))
        );
    }
}
