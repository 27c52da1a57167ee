//! Privacy accounting for a run: the one place where the sampler's rate becomes the
//! accountant's q, and where `--target-epsilon` turns into a noise multiplier.

use accountant::{AccountantKind, PrivacySpent, Releases};
use serde::Serialize;

use crate::config::{DpConfig, NoiseSpec};
use crate::mechanism::sampler::PoissonSampler;
use crate::{Error, Result};

/// The parameters of the sampled Gaussian mechanism a private run composes, fixed for the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accounting {
    /// The accountant asked for epsilon.
    #[serde(serialize_with = "display")]
    pub accountant: AccountantKind,
    /// q: the sampler's rate.
    pub sampling_rate: f64,
    /// sigma: noise std over the clip bound C (what each step adds is N(0, (sigma C)^2)).
    pub noise_multiplier: f64,
    /// The add/remove sensitivity of the step's clipped sum in units of C: 1 per example, 2
    /// with microbatches ([`crate::GradSample::sensitivity`]).
    pub sensitivity: f64,
    /// sigma / sensitivity: the noise multiplier of the mechanism the accountant composes.
    pub effective_noise_multiplier: f64,
    /// delta of (epsilon, delta).
    pub delta: f64,
    /// The noise multiplier of the Gaussian mechanism that released the standardized columns'
    /// statistics before training (`--standardize`), composed with the steps; `None` without
    /// one.
    pub preprocessing_noise_multiplier: Option<f64>,
    /// The noise multiplier of the held-out accuracy's Gaussian release
    /// ([`crate::mechanism::held_out`]), declared before training and composed with the steps;
    /// `None` when the card releases no covered held-out figure.
    pub test_release_noise_multiplier: Option<f64>,
    /// How many such releases the whole run makes: 1 (more only for a run continued past a
    /// finished one, which released its own).
    pub test_releases: u32,
    /// The epsilon of each exponential mechanism that released a DP quantile before training
    /// (the bounds of the columns without public ones, [`crate::mechanism::quantiles`]),
    /// composed with the steps; `None` without them.
    pub quantile_epsilon: Option<f64>,
    /// How many quantiles were released (two per bounded column).
    pub quantiles: u32,
}

/// The releases a run makes before its first step, declared before any is drawn: the Gaussian
/// of the standardized columns' statistics and the exponential mechanisms of the DP quantile
/// bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Preprocessing {
    /// The standardization's noise multiplier, when the run makes that release.
    pub gaussian: Option<f64>,
    /// Each quantile's epsilon and how many there are, when the run bounds columns so.
    pub quantiles: Option<(f64, u32)>,
}

impl From<Option<f64>> for Preprocessing {
    /// A standardization release alone (or none).
    fn from(gaussian: Option<f64>) -> Self {
        Preprocessing {
            gaussian,
            quantiles: None,
        }
    }
}

impl Accounting {
    /// Accounting for a run that draws its batches with `sampler` and plans `planned_steps`
    /// steps in all; with a target epsilon, the noise multiplier is the smallest that spends at
    /// most the target over those steps. The accountant sees the noise over the sensitivity.
    /// `preprocessing`: the noise multiplier of a Gaussian release before training, composed
    /// with the steps (a target epsilon then calibrates the steps for what it leaves), and
    /// `test_release` that of the held-out accuracy's release after the last step (the same).
    pub fn new(
        dp: &DpConfig,
        sampler: &PoissonSampler,
        planned_steps: u64,
        preprocessing: impl Into<Preprocessing>,
        test_release: Option<f64>,
    ) -> Result<Self> {
        let preprocessing = preprocessing.into();
        let releases = Releases {
            gaussians: preprocessing
                .gaussian
                .into_iter()
                .chain(test_release)
                .collect(),
            exponential: quantile_list(preprocessing.quantiles),
        };
        let sampling_rate = sampler.rate();
        let sensitivity = dp.grad_sample.sensitivity();
        let effective_noise_multiplier = match dp.noise {
            NoiseSpec::Multiplier(s) => s / sensitivity,
            NoiseSpec::TargetEpsilon(target) => {
                check_rate(sampling_rate)?;
                accountant::calibrate_noise_composed(
                    dp.accountant,
                    sampling_rate,
                    target,
                    planned_steps,
                    &releases,
                    dp.delta,
                )?
            }
        };
        Ok(Accounting {
            accountant: dp.accountant,
            sampling_rate,
            noise_multiplier: effective_noise_multiplier * sensitivity,
            sensitivity,
            effective_noise_multiplier,
            delta: dp.delta,
            preprocessing_noise_multiplier: preprocessing.gaussian,
            test_release_noise_multiplier: test_release,
            test_releases: u32::from(test_release.is_some()),
            quantile_epsilon: preprocessing.quantiles.map(|q| q.0),
            quantiles: preprocessing.quantiles.map_or(0, |q| q.1),
        })
    }

    /// Every release besides the steps that the whole run composes after `test_releases`
    /// held-out releases: the preprocessing's (spent even at step 0) and those.
    pub fn releases(&self, test_releases: u32) -> Releases {
        let tests = self
            .test_release_noise_multiplier
            .map_or(0, |_| test_releases as usize);
        Releases {
            gaussians: self
                .preprocessing_noise_multiplier
                .into_iter()
                .chain(std::iter::repeat_n(
                    self.test_release_noise_multiplier.unwrap_or(0.0),
                    tests,
                ))
                .collect(),
            exponential: quantile_list(self.quantile_epsilon.map(|e| (e, self.quantiles))),
        }
    }

    /// The budget the whole run spends after `steps` steps: the steps, the preprocessing
    /// release and every held-out release ([`Accounting::test_releases`]).
    pub fn spent(&self, steps: u64) -> Result<PrivacySpent> {
        self.spent_so_far(steps, self.test_releases)
    }

    /// The budget spent after `steps` steps and `test_releases` held-out releases (and the
    /// preprocessing release, which comes first: it is spent even at step 0).
    pub fn spent_so_far(&self, steps: u64, test_releases: u32) -> Result<PrivacySpent> {
        check_rate(self.sampling_rate)?;
        Ok(accountant::epsilon_composed(
            self.accountant,
            self.sampling_rate,
            self.effective_noise_multiplier,
            steps,
            &self.releases(test_releases),
            self.delta,
        )?)
    }
}

/// Epsilon at `delta` after `steps` steps of the Poisson-subsampled Gaussian mechanism with
/// rate `q` and noise multiplier `sigma` (`trainer privacy`). The accountant handles the edge
/// cases (no steps spend nothing, no noise an infinite budget); a training rate must be positive.
pub fn epsilon(
    kind: AccountantKind,
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
) -> Result<PrivacySpent> {
    check_rate(q)?;
    Ok(accountant::epsilon(kind, q, sigma, steps, delta)?)
}

/// The smallest noise multiplier whose epsilon after `steps` steps is at most `target`.
pub fn noise_for_target(
    kind: AccountantKind,
    q: f64,
    target: f64,
    steps: u64,
    delta: f64,
) -> Result<f64> {
    check_rate(q)?;
    Ok(accountant::calibrate_noise(kind, q, target, steps, delta)?)
}

/// `count` exponential mechanisms of `epsilon` each, for the accountant.
fn quantile_list(quantiles: Option<(f64, u32)>) -> Vec<f64> {
    quantiles.map_or_else(Vec::new, |(e, n)| vec![e; n as usize])
}

fn check_rate(q: f64) -> Result<()> {
    if q > 0.0 && q <= 1.0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "sampling rate {q} must be in (0, 1]"
        )))
    }
}

fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::config::GradSample;

    fn dp(noise: NoiseSpec) -> DpConfig {
        DpConfig {
            l2_norm_clip: 3.0,
            noise,
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            grad_sample: GradSample::Vectorized,
        }
    }

    /// Microbatches double the sensitivity: the accountant sees sigma / 2, and a target
    /// epsilon doubles the noise the step adds.
    #[test]
    fn microbatches_are_accounted_at_half_the_noise_multiplier() {
        let sampler = PoissonSampler::new(10_000, 100, ChaCha20Rng::seed_from_u64(0)).unwrap();
        let mut micro = dp(NoiseSpec::Multiplier(1.8));
        micro.grad_sample = GradSample::Microbatch(3);
        let acc = Accounting::new(&micro, &sampler, 500, None, None).unwrap();
        assert_eq!(
            (acc.sensitivity, acc.effective_noise_multiplier),
            (2.0, 0.9)
        );
        let per_example =
            Accounting::new(&dp(NoiseSpec::Multiplier(0.9)), &sampler, 500, None, None).unwrap();
        assert_eq!(acc.spent(500).unwrap(), per_example.spent(500).unwrap());
        micro.noise = NoiseSpec::TargetEpsilon(2.0);
        let calibrated = Accounting::new(&micro, &sampler, 500, None, None).unwrap();
        let plain = Accounting::new(
            &dp(NoiseSpec::TargetEpsilon(2.0)),
            &sampler,
            500,
            None,
            None,
        )
        .unwrap();
        assert_eq!(calibrated.noise_multiplier, 2.0 * plain.noise_multiplier);
    }

    /// The rate the accountant sees is the sampler's, and the seed workload gives the RDP
    /// value the accountant crate pins (q = 256/960000, sigma 0.9, one epoch of 3750 steps).
    #[test]
    fn accounts_with_the_samplers_rate() {
        let sampler = PoissonSampler::new(960_000, 256, ChaCha20Rng::seed_from_u64(0)).unwrap();
        let acc = Accounting::new(
            &dp(NoiseSpec::Multiplier(0.9)),
            &sampler,
            37_500,
            None,
            None,
        )
        .unwrap();
        assert_eq!(acc.sampling_rate, 256.0 / 960_000.0);
        let spent = acc.spent(3750).unwrap();
        assert!(
            (spent.epsilon / 0.677169183680730 - 1.0).abs() < 1e-6,
            "{spent:?}"
        );
        assert_eq!(acc.spent(0).unwrap().epsilon, 0.0);
    }

    #[test]
    fn target_epsilon_is_met_over_the_planned_steps() {
        let sampler = PoissonSampler::new(10_000, 100, ChaCha20Rng::seed_from_u64(0)).unwrap();
        let acc = Accounting::new(
            &dp(NoiseSpec::TargetEpsilon(2.0)),
            &sampler,
            500,
            None,
            None,
        )
        .unwrap();
        let eps = acc.spent(500).unwrap().epsilon;
        assert!(
            eps <= 2.0 && eps > 1.95,
            "{eps} with sigma {}",
            acc.noise_multiplier
        );
    }

    /// The held-out release is composed in the same accountant as the steps: epsilon with it is
    /// the accountant crate's for the steps plus one Gaussian of its noise multiplier (after
    /// the standardization's, when there is one), counted once per release made; a target
    /// epsilon calibrates the steps for what it leaves and is still met with it.
    #[test]
    fn the_held_out_release_is_composed_with_the_steps() {
        let sampler = PoissonSampler::new(10_000, 100, ChaCha20Rng::seed_from_u64(0)).unwrap();
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            let mut plain = dp(NoiseSpec::Multiplier(1.1));
            plain.accountant = kind;
            let steps = Accounting::new(&plain, &sampler, 500, None, None).unwrap();
            let with = Accounting::new(&plain, &sampler, 500, Some(4.0), Some(10.0)).unwrap();
            assert_eq!(with.test_releases, 1);
            let want = |tests: &[f64]| {
                let g: Vec<f64> = [4.0].iter().chain(tests).copied().collect();
                accountant::epsilon_with_gaussians(kind, 0.01, 1.1, 500, &g, 1e-5)
                    .unwrap()
                    .epsilon
            };
            assert_eq!(with.spent(500).unwrap().epsilon, want(&[10.0]));
            assert_eq!(with.spent_so_far(500, 0).unwrap().epsilon, want(&[]));
            assert_eq!(
                with.spent_so_far(500, 2).unwrap().epsilon,
                want(&[10.0, 10.0])
            );
            assert!(with.spent(500).unwrap().epsilon > steps.spent(500).unwrap().epsilon);
            // Without a release declared, none is counted whatever the count says.
            assert_eq!(
                steps.spent_so_far(500, 3).unwrap(),
                steps.spent(500).unwrap()
            );
            let mut target = dp(NoiseSpec::TargetEpsilon(2.0));
            target.accountant = kind;
            let calibrated = Accounting::new(&target, &sampler, 500, None, Some(3.0)).unwrap();
            let alone = Accounting::new(&target, &sampler, 500, None, None).unwrap();
            let eps = calibrated.spent(500).unwrap().epsilon;
            assert!(eps <= 2.0 && eps > 1.9, "{kind}: {eps}");
            assert!(
                calibrated.noise_multiplier > alone.noise_multiplier,
                "{kind}"
            );
        }
    }

    #[test]
    fn no_noise_spends_everything_and_bad_rates_are_refused() {
        assert!(
            epsilon(AccountantKind::Rdp, 0.1, 0.0, 10, 1e-5)
                .unwrap()
                .epsilon
                .is_infinite()
        );
        assert!(epsilon(AccountantKind::Rdp, 0.0, 1.0, 10, 1e-5).is_err());
        assert!(epsilon(AccountantKind::Rdp, 1.5, 1.0, 10, 1e-5).is_err());
    }
}
