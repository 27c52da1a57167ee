//! [`Releases`]: the mechanisms a run releases besides its DP-SGD steps, which the accountants
//! compose with the steps.

use crate::{Result, params};

/// Mechanisms run on the same records as the DP-SGD steps, each released once, composed with
/// the steps by the accountant that computes the run's epsilon.
///
/// - A Gaussian mechanism, by its noise multiplier (noise std over the L2 sensitivity of what
///   it releases): noisy sums, counts, a held-out accuracy.
/// - An exponential mechanism (McSherry and Talwar 2007), by the epsilon it is calibrated to:
///   it samples an output with probability proportional to `exp(epsilon u / (2 Delta))` for a
///   score `u` of sensitivity `Delta`, so it is epsilon-DP, and its privacy loss spans at most
///   epsilon over the outputs (epsilon-bounded range, Durfee and Rogers 2019). RDP composes it
///   as `(epsilon^2 / 8)`-zCDP, `alpha epsilon^2 / 8` at order alpha (bounded range implies
///   it: Cesar and Rogers 2021); PLD as randomized response of the same epsilon, the
///   dominating pair of every epsilon-DP mechanism (dp_accounting's
///   `from_privacy_parameters`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Releases {
    /// Gaussian mechanisms, by noise multiplier.
    pub gaussians: Vec<f64>,
    /// Exponential mechanisms, by epsilon.
    pub exponential: Vec<f64>,
}

impl Releases {
    /// Gaussian mechanisms only.
    pub fn gaussians(gaussians: &[f64]) -> Self {
        Releases {
            gaussians: gaussians.to_vec(),
            exponential: Vec::new(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.gaussians.is_empty() && self.exponential.is_empty()
    }

    /// Checks every parameter.
    pub(crate) fn validate(&self) -> Result<()> {
        for &g in &self.gaussians {
            params::noise_multiplier(g)?;
        }
        for &e in &self.exponential {
            params::pure_epsilon(e)?;
        }
        Ok(())
    }

    /// Whether one of them releases without privacy (a Gaussian without noise).
    pub(crate) fn not_private(&self) -> bool {
        self.gaussians.contains(&0.0)
    }

    /// Their RDP at each of `orders`, summed: `alpha / (2 g^2)` per Gaussian,
    /// `alpha epsilon^2 / 8` per exponential mechanism.
    pub fn rdp(&self, orders: &[f64]) -> Vec<f64> {
        let mut rdp = vec![0.0; orders.len()];
        for &g in &self.gaussians {
            for (r, g) in rdp
                .iter_mut()
                .zip(crate::rdp::compute_rdp(1.0, g, 1, orders))
            {
                *r += g;
            }
        }
        for &e in &self.exponential {
            for (r, a) in rdp.iter_mut().zip(orders) {
                *r += a * e * e / 8.0;
            }
        }
        rdp
    }

    /// The exponential mechanisms grouped by epsilon (in order of first appearance), with how
    /// many of each: the PLD accountant composes each group by one FFT.
    pub(crate) fn exponential_groups(&self) -> Vec<(f64, u64)> {
        let mut groups: Vec<(f64, u64)> = Vec::new();
        for &e in &self.exponential {
            match groups.iter_mut().find(|(g, _)| g.to_bits() == e.to_bits()) {
                Some((_, n)) => *n += 1,
                None => groups.push((e, 1)),
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdp::{Runs, default_orders, get_privacy_spent, repeat_and_select};
    use crate::{AccountantKind, epsilon_composed, pld};

    /// The run the references compose: 800 steps at q 0.0125 and sigma 0.9, a Gaussian of noise
    /// multiplier 10 and 8 exponential mechanisms of epsilon 0.05.
    fn run() -> (f64, f64, u64, Releases) {
        let releases = Releases {
            gaussians: vec![10.0],
            exponential: vec![0.05; 8],
        };
        (0.0125, 0.9, 800, releases)
    }

    fn close(got: f64, want: f64, rel: f64) {
        assert!(
            ((got - want) / want).abs() <= rel,
            "{got} vs dp_accounting's {want}"
        );
    }

    /// PLD against dp_accounting 0.6.0 (`tests/data/releases_reference.py`): the exponential
    /// mechanisms as randomized response, composed with the steps and Gaussians.
    #[test]
    fn pld_composition_matches_dp_accounting() {
        let (q, sigma, steps, r) = run();
        let got = epsilon_composed(AccountantKind::Pld, q, sigma, steps, &r, 1e-5)
            .unwrap()
            .epsilon;
        close(got, 2.737_026_507_792_091_2, 1e-6);
        let opts = pld::PldOptions::default();
        let alone = Releases {
            exponential: vec![0.1; 12],
            ..Releases::default()
        };
        let got = pld::epsilon_composed(0.0, 1.0, 0, &alone, 1e-5, &opts).unwrap();
        close(got, 1.176_916_705_349_326_8, 1e-6);
        let mixed = Releases {
            gaussians: vec![5.0],
            exponential: [vec![0.1; 12], vec![0.3; 4]].concat(),
        };
        let got = pld::epsilon_composed(0.0, 1.0, 0, &mixed, 1e-5, &opts).unwrap();
        close(got, 2.465_834_609_966_647_5, 1e-6);
    }

    /// RDP against dp_accounting 0.6.0: the exponential mechanisms as zCDP of epsilon^2 / 8;
    /// and the run repeated a random number of times, the best released
    /// (`RepeatAndSelectDpEvent`), for the four kinds of distribution. dp_accounting computes
    /// the subsampled Gaussian's RDP at fractional orders slightly differently from Opacus
    /// (which [`crate::rdp::compute_rdp`] reproduces to 1e-12; 4e-5 apart at this run's best
    /// order): one run agrees to 3e-5 and its repetitions to 1e-3 (Poisson's term, the mean
    /// times the run's delta, amplifies the difference to 3e-4); with dp_accounting's own series
    /// ([`crate::rdp::compute_rdp_as_dp_accounting`]) and on a curve both compute exactly
    /// (zCDP), to 1e-9.
    #[test]
    fn rdp_composition_and_repeat_and_select_match_dp_accounting() {
        let (q, sigma, steps, r) = run();
        let got = epsilon_composed(AccountantKind::Rdp, q, sigma, steps, &r, 1e-5)
            .unwrap()
            .epsilon;
        close(got, 3.108_113_654_451_071_5, 3e-5);
        let orders = default_orders();
        let curve = crate::rdp::composed_rdp(q, sigma, steps, &r, &orders);
        let exact = crate::rdp::composed_rdp_as_dp_accounting(q, sigma, steps, &r, &orders);
        close(
            get_privacy_spent(&orders, &exact, 1e-5).0,
            3.108_113_654_451_071_5,
            1e-9,
        );
        let zcdp: Vec<f64> = orders.iter().map(|a| 0.05 * a).collect();
        let logarithmic = Runs::TruncatedNegativeBinomial {
            mean: 4.0,
            shape: 0.0,
        };
        let geometric = Runs::TruncatedNegativeBinomial {
            mean: 5.0,
            shape: 1.0,
        };
        let poisson = Runs::Poisson { mean: 3.0 };
        let tnb = Runs::TruncatedNegativeBinomial {
            mean: 4.0,
            shape: 0.5,
        };
        for (runs, run_want, zcdp_want) in [
            (logarithmic, 4.499_955_442_662_028, 2.042_574_725_178_780_2),
            (geometric, 5.191_579_520_855_996, 2.459_601_698_100_478),
            (poisson, 4.114_659_911_351_666, 1.854_483_179_889_981_2),
            (tnb, 4.767_867_712_622_2, 2.215_694_634_372_449_7),
        ] {
            let repeated = repeat_and_select(&orders, &curve, runs).unwrap();
            close(
                get_privacy_spent(&orders, &repeated, 1e-5).0,
                run_want,
                1e-3,
            );
            // dp_accounting's own series for the steps: equal.
            let repeated = repeat_and_select(&orders, &exact, runs).unwrap();
            close(
                get_privacy_spent(&orders, &repeated, 1e-5).0,
                run_want,
                1e-9,
            );
            let repeated = repeat_and_select(&orders, &zcdp, runs).unwrap();
            close(
                get_privacy_spent(&orders, &repeated, 1e-5).0,
                zcdp_want,
                1e-9,
            );
        }
    }

    #[test]
    fn rdp_adds_each_mechanisms_and_groups_count_equal_epsilons() {
        let r = Releases {
            gaussians: vec![4.0],
            exponential: vec![0.1, 0.2, 0.1],
        };
        let orders = [2.0, 8.0];
        let got = r.rdp(&orders);
        for (g, a) in got.iter().zip(orders) {
            let want = a / (2.0 * 16.0) + a * (0.01 + 0.04 + 0.01) / 8.0;
            assert!((g - want).abs() < 1e-12, "{g} vs {want}");
        }
        assert_eq!(r.exponential_groups(), [(0.1, 2), (0.2, 1)]);
        assert!(Releases::default().is_empty());
        assert!(
            Releases {
                exponential: vec![-1.0],
                ..Releases::default()
            }
            .validate()
            .is_err()
        );
    }
}
