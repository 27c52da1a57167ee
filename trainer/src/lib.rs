//! A DP-SGD trainer on tch (libtorch) for the shards the preprocessing engines write.
//!
//! The pieces follow Opacus's seams, wired together in one place ([`run`]):
//! - [`mechanism`]: everything the printed epsilon depends on, in one folder with no I/O:
//!   exact Poisson sampling, whose rate is the accountant's q ([`mechanism::sampler`],
//!   [`mechanism::batches`]); per-example gradients in closed form ([`mechanism::grad_sample`],
//!   [`mechanism::fused`]); clip, sum, add noise once, scale, optimizer step
//!   ([`mechanism::dp_step`], [`mechanism::noise`], [`mechanism::normal`],
//!   [`mechanism::optim`]); epsilon and noise calibration ([`mechanism::privacy`]);
//! - [`features`]: the feature spec (public bounds, categories, standardization by noisy
//!   estimates) applied to every record before the split;
//! - [`settings`]: what the processes of a run agree on before the first step;
//! - [`evaluate`], [`attack`], [`metrics`], [`checkpoint`], [`export`]: what a run reports
//!   and leaves behind;
//! - [`audit`]: `trainer audit`, a lower bound on epsilon from one run of the same loop with
//!   canaries, and membership inference on the real rows;
//! - [`report`], [`sweep`]: a run as an HTML page, and the privacy-utility curve of many runs;
//! - [`tune`]: accounted hyperparameter search (a random number of runs, the best released).
//!
//! [`run`] trains on every worker of [`TrainConfig::cluster`] (processes x threads, the
//! `cluster` crate's): each holds a share of the shards, all draw the same sample, and their
//! clipped gradient sums are all-reduced, so the model does not depend on the number of workers
//! ([`train`] explains how).
//!
//! ```no_run
//! let data = shards::Location::parse("shards")?;
//! let report = trainer::run(&trainer::TrainConfig::new(data))?;
//! println!("{:?}", report.spent);
//! # Ok::<(), trainer::Error>(())
//! ```
#![deny(missing_docs)]

pub mod attack;
pub mod audit;
pub mod checkpoint;
pub mod config;
pub mod coverage;
pub mod data;
pub mod device;
mod error;
pub mod evaluate;
pub mod export;
pub mod features;
pub mod host_rows;
pub mod mechanism;
pub mod metrics;
pub mod mlp;
pub mod profile;
pub mod publish;
pub mod report;
pub mod settings;
pub mod sweep;
pub mod train;
pub mod tune;

pub use config::{
    CheckpointConfig, DpConfig, GradSample, NoiseRng, NoiseSpec, Preset, Privacy, Sampling,
    TestRelease, TrainConfig,
};
pub use device::DeviceSpec;
pub use error::{Error, Result};
pub use mechanism::optim::OptimizerKind;
pub use train::{Loaded, RunReport, run, run_loaded, steps_per_epoch};
