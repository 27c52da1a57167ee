//! What worker 0 says before the first step: the data, the workers, the mechanism, the privacy
//! unit, and a seeded run's warning.

use super::Stdout;
use super::layout::Layout;
use crate::config::TrainConfig;
use crate::device;
use crate::export;
use crate::mechanism::privacy::Accounting;

/// The run's opening lines on `out`: `workers` workers, worker 0 on `device`, `per_epoch` steps
/// per epoch over the training rows of `layout`.
pub(super) fn announce(
    config: &TrainConfig,
    accounting: Option<&Accounting>,
    layout: &Layout,
    per_epoch: u64,
    workers: usize,
    device: tch::Device,
    out: Stdout,
) {
    let (n, n_test) = (layout.train_rows, layout.test_rows);
    let on = if workers == 1 {
        device::name(device)
    } else {
        format!(
            "{workers} workers ({} processes x {} threads; worker 0 on {})",
            config.cluster.processes(),
            config.cluster.threads(),
            device::name(device)
        )
    };
    // With --population the realized counts are not released: they go behind the marker of
    // the figures epsilon does not cover.
    let rows = match (config.population, &config.privacy_unit) {
        (None, None) => format!("{n} rows ({n_test} test)"),
        (None, Some(unit)) => format!(
            "{} {unit}s ({n} rows; {n_test} test rows)",
            layout.train_units
        ),
        (Some(p), None) => format!("a public population of {p} rows (--population)"),
        (Some(p), Some(unit)) => format!("a public population of {p} {unit}s (--population)"),
    };
    if let Some(acc) = accounting {
        out.line(&format!(
            "training on {rows} on {on} with q = {:.6}, noise multiplier \
             {:.4}{}, {per_epoch} steps per epoch",
            acc.sampling_rate,
            acc.noise_multiplier,
            if acc.sensitivity == 1.0 {
                String::new()
            } else {
                format!(
                    " (sensitivity {}C: accounted as {:.4})",
                    acc.sensitivity, acc.effective_noise_multiplier
                )
            },
        ));
        out.line(&format!(
            "privacy unit: {}; delta {:e}, {} accountant",
            export::privacy_unit(config),
            acc.delta,
            acc.accountant
        ));
        if let Some(seed) = config.seed {
            out.line(&format!(
                "seeded run (--seed {seed}): anyone who knows the seed can replay its noise and \
                 batches, so what it releases is NOT private against them \
                 (private_against_seed_holders: false); leave --seed out for a release"
            ));
        }
    } else {
        out.line(&format!(
            "training on {rows} on {on} without privacy, {per_epoch} steps per epoch"
        ));
    }
    if config.population.is_some() {
        out.line(&format!(
            "  | not private: {} training units, {n} training rows ({n_test} test) realized",
            layout.train_units
        ));
    }
}
