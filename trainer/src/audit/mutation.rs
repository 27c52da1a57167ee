//! Purposely broken mechanisms, for the audit's tests and the mutation table of
//! `bench/trainer/audit.sh` only: compiled under `cfg(test)` or the `audit-mutations` feature,
//! which the shipped trainer never enables.
//!
//! Each mutation changes what the step does and leaves what the accountant is told alone (or
//! the other way round), so a correct audit should find more epsilon than accounted.

use serde::Serialize;

use crate::mechanism::dp_step::StepPrivacy;

/// How a run's mechanism differs from what its accountant is told.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mutation {
    /// The noise the step adds, as a share of what the accountant is told.
    pub noise: f64,
    /// The clip bound the step uses, as a multiple of the one the accountant is told (the
    /// noise's std stays sigma times the told bound).
    pub clip: f64,
    /// The rate the sampler draws at, as a multiple of the planned rate q (at most 1).
    pub sampled_rate: f64,
    /// The rate the accountant is told, as a multiple of q.
    pub told_rate: f64,
}

impl Default for Mutation {
    fn default() -> Self {
        Mutation {
            noise: 1.0,
            clip: 1.0,
            sampled_rate: 1.0,
            told_rate: 1.0,
        }
    }
}

impl Mutation {
    /// The mutations of the benchmark's table, by name (the correct step first).
    pub fn table() -> Vec<(&'static str, Mutation)> {
        let none = Mutation::default();
        vec![
            ("correct", none),
            ("noise x0.5", Mutation { noise: 0.5, ..none }),
            ("noise x0.1", Mutation { noise: 0.1, ..none }),
            ("no noise", Mutation { noise: 0.0, ..none }),
            ("clip x10 untold", Mutation { clip: 10.0, ..none }),
            (
                "sampling 4x the told rate",
                Mutation {
                    sampled_rate: 4.0,
                    ..none
                },
            ),
            (
                "accountant told q/2",
                Mutation {
                    told_rate: 0.5,
                    ..none
                },
            ),
        ]
    }

    /// What the step really does, from what the accountant was told.
    pub(crate) fn step(&self, told: StepPrivacy) -> StepPrivacy {
        match told {
            StepPrivacy::Private {
                clip,
                noise_multiplier,
                grad_sample,
                noise_rng,
            } => StepPrivacy::Private {
                clip: clip * self.clip,
                // The noise multiplier is over the step's clip bound: its std stays
                // `noise * sigma * C` for the told C.
                noise_multiplier: noise_multiplier * self.noise / self.clip,
                grad_sample,
                noise_rng,
            },
            p => p,
        }
    }

    /// The rate the accountant is told and the rate the sampler draws at, for planned rate
    /// `rate`.
    pub(crate) fn rates(&self, rate: f64) -> (f64, f64) {
        (
            (rate * self.told_rate).min(1.0),
            (rate * self.sampled_rate).min(1.0),
        )
    }
}
