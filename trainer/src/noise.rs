//! The Gaussian noise added once per step to the clipped gradient sum, drawn on the host from
//! the run's own stream (not libtorch's global generator, which every tensor op in the
//! process shares), so a seed gives the same noise on any device and in any company.

use rand::SeedableRng;
use rand::rngs::SysRng;
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Tensor};

use crate::config::NoiseRng;
use crate::{Error, Result};

/// Where the values come from.
#[derive(Debug)]
enum Stream {
    /// ChaCha8 from `--seed`, one stream per epoch: fast and reproducible.
    Seeded(Box<ChaCha8Rng>),
    /// ChaCha20 seeded by the operating system. Each value is the sum of four draws at half
    /// the std (Holohan and Braghin 2021, as Opacus's secure mode), which hides the
    /// floating-point artefacts of a single Gaussian draw.
    Secure(Box<ChaCha20Rng>),
}

/// Draws `N(0, std^2)` noise for every parameter and adds it to a gradient.
#[derive(Debug)]
pub struct NoiseSource {
    stream: Stream,
    host: Vec<f32>,
    device: Device,
}

impl NoiseSource {
    /// A source of `numel` values per draw, added on `device`; `seed` is used when seeded.
    pub fn new(kind: NoiseRng, seed: u64, numel: usize, device: Device) -> Result<Self> {
        let stream = match kind {
            NoiseRng::Seeded => Stream::Seeded(Box::new(ChaCha8Rng::seed_from_u64(seed))),
            NoiseRng::Secure => Stream::Secure(Box::new(
                ChaCha20Rng::try_from_rng(&mut SysRng)
                    .map_err(|e| Error::Config(format!("--secure-rng: no OS entropy: {e}")))?,
            )),
        };
        Ok(NoiseSource {
            stream,
            host: vec![0.0; numel],
            device,
        })
    }

    /// Starts the seeded stream of `epoch` (a resumed run draws what an uninterrupted one
    /// would); secure noise is never replayed.
    pub fn start_epoch(&mut self, epoch: u32) {
        if let Stream::Seeded(rng) = &mut self.stream {
            rng.set_stream(u64::from(epoch));
            rng.set_word_pos(0);
        }
    }

    /// `grad += N(0, std^2)` elementwise.
    pub fn add_to(&mut self, grad: &Tensor, std: f64) {
        match &mut self.stream {
            Stream::Seeded(rng) => {
                for v in self.host.iter_mut() {
                    let z: f64 = StandardNormal.sample(rng.as_mut());
                    *v = (z * std) as f32;
                }
            }
            Stream::Secure(rng) => {
                for v in self.host.iter_mut() {
                    let s: f64 = (0..4)
                        .map(|_| -> f64 { StandardNormal.sample(rng.as_mut()) })
                        .sum();
                    *v = (s * 0.5 * std) as f32;
                }
            }
        }
        let noise = Tensor::from_slice(&self.host).to_device(self.device);
        let _ = grad.shallow_clone().g_add_(&noise);
    }
}

#[cfg(test)]
mod tests {
    use tch::Kind;

    use super::*;

    fn draw(kind: NoiseRng, seed: u64, epoch: u32, n: usize, std: f64) -> Tensor {
        let mut src = NoiseSource::new(kind, seed, n, Device::Cpu).unwrap();
        src.start_epoch(epoch);
        let g = Tensor::zeros([n as i64], (Kind::Float, Device::Cpu));
        src.add_to(&g, std);
        g
    }

    #[test]
    fn both_sources_have_the_requested_std() {
        for kind in [NoiseRng::Seeded, NoiseRng::Secure] {
            let g = draw(kind, 1, 0, 50_000, 2.0);
            let (mean, std) = (
                g.mean(Kind::Float).double_value(&[]),
                g.std(true).double_value(&[]),
            );
            // Standard errors: 2/sqrt(5e4) ~ 0.009 for the mean, ~ 0.006 for the std.
            assert!(mean.abs() < 0.04, "{kind:?} mean {mean}");
            assert!((std - 2.0).abs() < 0.03, "{kind:?} std {std}");
        }
    }

    #[test]
    fn seeded_noise_repeats_per_epoch_and_secure_noise_does_not() {
        let a = draw(NoiseRng::Seeded, 3, 2, 8, 1.0);
        assert!(a.equal(&draw(NoiseRng::Seeded, 3, 2, 8, 1.0)));
        assert!(!a.equal(&draw(NoiseRng::Seeded, 3, 1, 8, 1.0)));
        assert!(!a.equal(&draw(NoiseRng::Seeded, 4, 2, 8, 1.0)));
        assert!(!draw(NoiseRng::Secure, 3, 2, 8, 1.0).equal(&draw(NoiseRng::Secure, 3, 2, 8, 1.0)));
    }
}
