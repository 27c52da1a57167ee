//! The privacy loss distribution of a mechanism under add/remove adjacency: one PMF per direction, the worse one counts.

use super::connect_dots::{connect_the_dots, connect_the_dots_both};
use super::mechanism::{Adjacency, SubsampledGaussian};
use super::{PldOptions, Pmf, fft};
use crate::{Error, Result};

/// The privacy loss distributions of a mechanism for removing and for adding a record.
///
/// Subsampling makes the two directions differ; delta is the larger of the two and epsilon
/// the larger of the two (dp_accounting's `PrivacyLossDistribution` with `pmf_add`). When
/// they coincide (no subsampling) only one is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivacyLossDistribution {
    remove: Pmf,
    add: Option<Pmf>,
}

impl PrivacyLossDistribution {
    /// A distribution from its remove-direction PMF and, when it differs, the add-direction one.
    pub fn new(remove: Pmf, add: Option<Pmf>) -> Self {
        Self { remove, add }
    }

    /// One step of the Poisson-subsampled Gaussian mechanism, sampling rate `q`, noise
    /// multiplier `sigma`, discretized pessimistically by connect-the-dots.
    ///
    /// `q == 0` releases nothing (the identity); `sigma == 0` with `q > 0` is not private
    /// (all mass at infinite loss).
    pub fn subsampled_gaussian(q: f64, sigma: f64, options: &PldOptions) -> Result<Self> {
        crate::params::sampling_rate(q)?;
        crate::params::noise_multiplier(sigma)?;
        options.validate()?;
        let h = options.discretization;
        if q == 0.0 {
            return Ok(Self::new(Pmf::identity(h), None));
        }
        if sigma == 0.0 {
            return Ok(Self::new(Pmf::new(h, 0, vec![0.0], 1.0), None));
        }
        let with_sigma = |e: Error| match e {
            Error::PldTooLarge { bins, max, .. } => Error::PldTooLarge { bins, max, sigma },
            other => other,
        };
        let remove = SubsampledGaussian::new(q, sigma, Adjacency::Remove);
        if q == 1.0 {
            return Ok(Self::new(
                connect_the_dots(&remove, h).map_err(with_sigma)?,
                None,
            ));
        }
        let add = SubsampledGaussian::new(q, sigma, Adjacency::Add);
        let (remove, add) = connect_the_dots_both(&remove, &add, h).map_err(with_sigma)?;
        Ok(Self::new(remove, Some(add)))
    }

    /// A pure `epsilon`-DP mechanism (an exponential mechanism, say), by its dominating pair:
    /// randomized response, whose privacy loss is `+epsilon` with probability
    /// `1 / (1 + e^-epsilon)` and `-epsilon` with probability `1 / (1 + e^epsilon)` in either
    /// direction (every epsilon-DP mechanism is a post-processing of it: Kairouz, Oh and
    /// Viswanath 2015). Both losses are rounded up to the grid, as dp_accounting's
    /// `from_privacy_parameters` rounds them (delta 0).
    pub fn pure_dp(epsilon: f64, options: &PldOptions) -> Result<Self> {
        options.validate()?;
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(Error::PureEpsilon(epsilon));
        }
        let h = options.discretization;
        let (low, high) = ((-epsilon / h).ceil() as i64, (epsilon / h).ceil() as i64);
        let mut probabilities = vec![0.0; (high - low + 1) as usize];
        probabilities[0] += 1.0 / (1.0 + epsilon.exp());
        *probabilities.last_mut().expect("at least one bin") += 1.0 / (1.0 + (-epsilon).exp());
        Ok(Self::new(Pmf::new(h, low, probabilities, 0.0), None))
    }

    /// The remove-direction PMF.
    pub fn remove(&self) -> &Pmf {
        &self.remove
    }

    /// The add-direction PMF (the remove one when the two coincide).
    pub fn add(&self) -> &Pmf {
        self.add.as_ref().unwrap_or(&self.remove)
    }

    /// The distribution of running this mechanism and then `other`.
    pub fn compose(&self, other: &Self) -> Self {
        let remove = self.remove.compose(&other.remove);
        let add = match (&self.add, &other.add) {
            (None, None) => None,
            _ => Some(self.add().compose(other.add())),
        };
        Self::new(remove, add)
    }

    /// The distribution of `times` runs of this mechanism; both directions share one FFT.
    /// See [`Pmf::self_compose`] for `tail_mass_truncation`.
    pub fn self_compose(&self, times: u64, tail_mass_truncation: f64) -> Result<Self> {
        let (remove, add) =
            fft::self_compose_pair(&self.remove, self.add.as_ref(), times, tail_mass_truncation)?;
        Ok(Self::new(remove, add))
    }

    /// The hockey-stick divergence at `epsilon`: the larger of the two directions.
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let remove = self.remove.delta_for_epsilon(epsilon);
        match &self.add {
            None => remove,
            Some(add) => remove.max(add.delta_for_epsilon(epsilon)),
        }
    }

    /// The smallest epsilon >= 0 at which both directions' divergence is at most `delta`.
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        let remove = self.remove.epsilon_for_delta(delta);
        match &self.add {
            None => remove,
            Some(add) => remove.max(add.epsilon_for_delta(delta)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(h: f64) -> PldOptions {
        PldOptions {
            discretization: h,
            ..PldOptions::default()
        }
    }

    #[test]
    fn edge_cases() {
        let opts = PldOptions::default();
        let none = PrivacyLossDistribution::subsampled_gaussian(0.0, 1.0, &opts).unwrap();
        assert_eq!(none.epsilon_for_delta(1e-5), 0.0);
        let open = PrivacyLossDistribution::subsampled_gaussian(0.1, 0.0, &opts).unwrap();
        assert_eq!(open.epsilon_for_delta(1e-5), f64::INFINITY);
        let full = PrivacyLossDistribution::subsampled_gaussian(1.0, 1.0, &opts).unwrap();
        assert_eq!(full.add(), full.remove(), "no subsampling: one direction");
        assert!(PrivacyLossDistribution::subsampled_gaussian(1.1, 1.0, &opts).is_err());
        let tiny = PrivacyLossDistribution::subsampled_gaussian(0.5, 1e-3, &opts);
        assert!(
            matches!(tiny, Err(Error::PldTooLarge { sigma, .. }) if sigma == 1e-3),
            "{tiny:?}"
        );
    }

    /// Composing 2 steps with 2 steps is composing 4 steps, with or without the FFT's
    /// truncation window.
    #[test]
    fn composing_two_and_two_is_composing_four() {
        let pld = PrivacyLossDistribution::subsampled_gaussian(0.05, 1.0, &options(1e-3)).unwrap();
        let two = pld.self_compose(2, 0.0).unwrap();
        let four = pld.self_compose(4, 0.0).unwrap();
        let two_two = two.compose(&two);
        for (a, b) in [
            (four.remove(), two_two.remove()),
            (four.add(), two_two.add()),
        ] {
            assert_eq!(a.lower_index(), b.lower_index());
            for (x, y) in a.probabilities().iter().zip(b.probabilities()) {
                assert!((x - y).abs() < 1e-15);
            }
            assert!((a.infinity_mass() - b.infinity_mass()).abs() < 1e-20);
        }
        // Truncation adds its 1e-15 to the infinity mass: a hair more epsilon, up to the
        // FFT's rounding (about 1e-15 in delta too).
        let truncated = pld.self_compose(4, 1e-15).unwrap();
        for delta in [1e-3, 1e-5, 1e-7] {
            let (e4, e22) = (
                truncated.epsilon_for_delta(delta),
                two_two.epsilon_for_delta(delta),
            );
            let rel = (e4 - e22) / e22;
            assert!(
                (-1e-9..=1e-7).contains(&rel),
                "delta {delta}: {e4} vs {e22}"
            );
        }
    }

    #[test]
    fn one_step_by_steps_equals_powering() {
        let pld = PrivacyLossDistribution::subsampled_gaussian(0.02, 0.8, &options(1e-3)).unwrap();
        let mut repeated = pld.clone();
        for _ in 1..6 {
            repeated = repeated.compose(&pld);
        }
        let powered = pld.self_compose(6, 1e-15).unwrap();
        let (a, b) = (
            repeated.epsilon_for_delta(1e-5),
            powered.epsilon_for_delta(1e-5),
        );
        assert!((a - b).abs() <= 1e-9 * a, "{a} vs {b}");
    }
}
