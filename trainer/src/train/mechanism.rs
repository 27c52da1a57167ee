//! The mechanism: the one place the sampler's rate reaches the accountant (Opacus's
//! `make_private`). Worker 0 calibrates the noise for a target epsilon and hands the
//! multiplier to the others.

use super::peers::Peers;
use crate::Result;
use crate::config::{DpConfig, NoiseRng, NoiseSpec, Privacy, TrainConfig};
use crate::mechanism::dp_step::StepPrivacy;
use crate::mechanism::privacy::{Accounting, Preprocessing};
use crate::mechanism::sampler::PoissonSampler;
use crate::settings::Settings;

/// The accounting of `planned` steps of `sampler` (after the releases before the first step,
/// `preprocessing`, and before the held-out accuracy's release, when the run makes one) and
/// what each step does, the same on every worker; `None` and no noise with `--no-dp`.
pub(super) fn mechanism(
    config: &TrainConfig,
    peers: &mut Peers,
    sampler: &PoissonSampler,
    planned: u64,
    preprocessing: Preprocessing,
    settings: &Settings,
) -> Result<(Option<Accounting>, StepPrivacy)> {
    let dp = match &config.privacy {
        Privacy::NonPrivate => return Ok((None, StepPrivacy::NonPrivate)),
        Privacy::Private(dp) => dp,
    };
    let test_release = config.test_release_noise();
    let mut sigma = [0f64];
    if peers.lead() {
        sigma[0] =
            Accounting::new(dp, sampler, planned, preprocessing, test_release)?.noise_multiplier;
    }
    peers.broadcast_totals(&mut sigma)?;
    let given = DpConfig {
        noise: NoiseSpec::Multiplier(sigma[0]),
        ..dp.clone()
    };
    let acc = Accounting::new(&given, sampler, planned, preprocessing, test_release)?;
    let step = StepPrivacy::Private {
        clip: dp.l2_norm_clip,
        noise_multiplier: acc.noise_multiplier,
        grad_sample: dp.grad_sample,
        noise_rng: noise_rng(config, settings),
    };
    Ok((Some(acc), step))
}

/// Where the run's noise comes from. Seeded runs with other settings (or data) get other noise,
/// so two of them cannot cancel their noise against each other.
pub(super) fn noise_rng(config: &TrainConfig, settings: &Settings) -> NoiseRng {
    match config.noise_rng() {
        NoiseRng::Seeded(seed) => NoiseRng::Seeded(settings.noise_seed(seed)),
        NoiseRng::Os => NoiseRng::Os,
    }
}
