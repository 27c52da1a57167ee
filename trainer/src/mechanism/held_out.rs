//! The held-out accuracy's own release: the number of correct predictions on the test split, the
//! number of test records and the number of them labelled 1, each plus Gaussian noise, a
//! mechanism the accountant composes with the steps
//! ([`crate::mechanism::privacy::Accounting`]), so the card's test accuracy and its yardstick,
//! the share of the more common label, are covered by the printed epsilon.
//!
//! Adding or removing one privacy unit with at most K records in the test split moves each
//! count by at most K, so the three move by at most K sqrt 3 in L2: the noise std of each is
//! `noise_multiplier * K * sqrt 3`, and the accountant sees a Gaussian mechanism of noise
//! multiplier `noise_multiplier` (no sampling).

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::config::NoiseRng;
use crate::mechanism::noise::NoiseSource;

/// The release's noise stream: one that no epoch's steps use, nor the standardization's.
const STREAM: u32 = u32::MAX - 1;

/// The release's parameters, fixed before training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeldOutMechanism {
    /// Noise std over the L2 sensitivity.
    pub noise_multiplier: f64,
    /// The most records one privacy unit has in the test split (1 for a line).
    pub rows_per_unit: u32,
}

impl HeldOutMechanism {
    /// The L2 sensitivity of (correct, count, positives): K sqrt 3.
    pub fn sensitivity(&self) -> f64 {
        f64::from(self.rows_per_unit) * 3f64.sqrt()
    }

    /// Each count's noise std.
    pub fn std(&self) -> f64 {
        self.noise_multiplier * self.sensitivity()
    }

    /// Releases `correct` right predictions of `count` test records, `positives` of them
    /// labelled 1 (exact, summed over every worker), after `steps` steps, with noise from `rng`
    /// (each value the sum of four draws, as the steps' noise).
    pub fn release(
        &self,
        correct: f64,
        count: f64,
        positives: f64,
        steps: u64,
        rng: NoiseRng,
    ) -> Result<HeldOutRelease> {
        let noise = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let mut source = NoiseSource::new(rng, 3, self.std(), Device::Cpu)?;
        source.start_epoch(STREAM);
        source.add_to(&noise);
        let z = Vec::<f32>::try_from(&noise)?;
        let (noisy_correct, noisy_count) = (correct + f64::from(z[0]), count + f64::from(z[1]));
        let noisy_positives = positives + f64::from(z[2]);
        let n = noisy_count.max(1.0);
        let share = (noisy_positives / n).clamp(0.0, 1.0);
        Ok(HeldOutRelease {
            noisy_correct,
            noisy_count,
            noisy_positives,
            majority_share: share.max(1.0 - share),
            accuracy: (noisy_correct / n).clamp(0.0, 1.0),
            noise_multiplier: self.noise_multiplier,
            rows_per_unit: self.rows_per_unit,
            l2_sensitivity: self.sensitivity(),
            noise_std: self.std(),
            steps,
        })
    }
}

/// The released figures (the card's `test_accuracy_release`, recorded in the last checkpoint so
/// that a resumed run does not release them again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutRelease {
    /// The number of correct predictions on the test split, plus noise.
    pub noisy_correct: f64,
    /// The number of test records, plus noise.
    pub noisy_count: f64,
    /// The number of test records labelled 1, plus noise (absent in releases of earlier
    /// versions).
    #[serde(default)]
    pub noisy_positives: f64,
    /// The share of the more common label, `max(s, 1 - s)` for `s = noisy_positives /
    /// noisy_count` clamped to [0, 1]: the accuracy of always guessing it, the yardstick of
    /// `accuracy` (post-processing).
    #[serde(default)]
    pub majority_share: f64,
    /// `noisy_correct / noisy_count`, clamped to [0, 1] (post-processing of the two).
    pub accuracy: f64,
    /// Noise std over the L2 sensitivity.
    pub noise_multiplier: f64,
    /// The most records one privacy unit has in the test split.
    pub rows_per_unit: u32,
    /// The counts' L2 sensitivity, `rows_per_unit * sqrt 3`.
    pub l2_sensitivity: f64,
    /// Each count's noise std.
    pub noise_std: f64,
    /// The steps of the model it measures (public: the run's plan).
    pub steps: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each count gets noise of std `noise_multiplier * K * sqrt 3` and mean 0, independently;
    /// a seed replays a release; the accuracy and the majority share are the clamped ratios.
    #[test]
    fn the_counts_get_noise_of_the_stated_std() {
        for k in [1u32, 3] {
            let m = HeldOutMechanism {
                noise_multiplier: 2.0,
                rows_per_unit: k,
            };
            let want = 2.0 * f64::from(k) * 3f64.sqrt();
            assert!((m.std() - want).abs() < 1e-12);
            let n = 4000;
            let (mut s, mut ss, mut cross) = ([0.0f64; 3], [0.0f64; 3], 0.0);
            for seed in 0..n {
                let r = m.release(0.0, 0.0, 0.0, 1, NoiseRng::Seeded(seed)).unwrap();
                for (i, v) in [r.noisy_correct, r.noisy_count, r.noisy_positives]
                    .into_iter()
                    .enumerate()
                {
                    s[i] += v;
                    ss[i] += v * v;
                }
                cross += r.noisy_correct * r.noisy_count;
                assert_eq!(r.noise_std, m.std());
                assert_eq!(r.l2_sensitivity, m.sensitivity());
            }
            let n = n as f64;
            for i in 0..3 {
                let mean = s[i] / n;
                let std = (ss[i] / n - mean * mean).sqrt();
                // Standard errors: std / sqrt(n) for the mean, about std / sqrt(2n) for the std.
                assert!(mean.abs() < 4.0 * want / n.sqrt(), "K {k}: mean {mean}");
                assert!(
                    (std / want - 1.0).abs() < 0.05,
                    "K {k}: std {std}, want {want}"
                );
            }
            let corr = cross / n / (want * want);
            assert!(corr.abs() < 0.07, "K {k}: correlation {corr}");
        }
        let m = HeldOutMechanism {
            noise_multiplier: 10.0,
            rows_per_unit: 1,
        };
        let a = m
            .release(600.0, 1000.0, 300.0, 7, NoiseRng::Seeded(4))
            .unwrap();
        assert_eq!(
            m.release(600.0, 1000.0, 300.0, 7, NoiseRng::Seeded(4))
                .unwrap(),
            a
        );
        assert_ne!(m.release(600.0, 1000.0, 300.0, 7, NoiseRng::Os).unwrap(), a);
        assert_eq!(a.accuracy, a.noisy_correct / a.noisy_count);
        assert!((a.accuracy - 0.6).abs() < 0.1, "{a:?}");
        assert_eq!(a.majority_share, 1.0 - a.noisy_positives / a.noisy_count);
        assert!((a.majority_share - 0.7).abs() < 0.1, "{a:?}");
        // No test records: the ratio of two noises, clamped.
        let none = m.release(0.0, 0.0, 0.0, 7, NoiseRng::Seeded(5)).unwrap();
        assert!((0.0..=1.0).contains(&none.accuracy), "{none:?}");
    }
}
