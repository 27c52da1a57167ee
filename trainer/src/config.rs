//! The validated options of a training run, in domain types (built from the CLI in `main`).

use std::path::PathBuf;
use std::time::Duration;

use accountant::AccountantKind;
use cluster::Cluster;
use serde::Serialize;
use shards::Location;

use crate::device::DeviceSpec;
use crate::features::FeatureSpec;
use crate::mechanism::optim::OptimizerKind;
use crate::mechanism::quantiles::{DEFAULT_QUANTILES, QuantileSpec};

/// How each step's examples are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Every example joins every step independently with probability q = batch / N (the
    /// sampling the accountant's amplification assumes).
    Poisson,
}

/// How gradients are formed before clipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GradSample {
    /// One gradient per example, computed for the whole batch at once in closed form.
    Vectorized,
    /// The seed project's scheme, accounted for: the sampled examples are grouped into about
    /// B / `n` microbatches by a hash of each record's key (so a record's group depends on that
    /// record alone), and each group's mean gradient is clipped as one unit. A record joining
    /// a group changes its clipped mean by up to 2C, so the accountant is told sensitivity 2C
    /// (`Microbatch(1)` is `Vectorized`).
    Microbatch(usize),
}

impl GradSample {
    /// The add/remove sensitivity of the step's clipped sum, in units of the clip bound C: 1
    /// per example, 2 with microbatches of more than one (trainer/README.md derives it).
    pub fn sensitivity(self) -> f64 {
        match self {
            GradSample::Microbatch(n) if n > 1 => 2.0,
            _ => 1.0,
        }
    }
}

/// How the noise multiplier is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseSpec {
    /// Given: noise std is `multiplier * clip`.
    Multiplier(f64),
    /// Calibrated before training so the whole run spends this epsilon at the run's delta.
    TargetEpsilon(f64),
}

/// Where the Gaussian noise's key comes from. Either way each value is the sum of four Gaussian
/// draws at half the std (Holohan and Braghin 2021, as Opacus's secure mode), from ChaCha20.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseRng {
    /// Keyed by the run's `--seed`, one stream per epoch: reproducible, and so not private
    /// against anyone who knows the seed.
    Seeded(u64),
    /// Keyed by the operating system's CSPRNG and written nowhere (the default).
    Os,
}

/// The differential-privacy part of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DpConfig {
    /// Per-example (or per-microbatch) L2 clipping bound C.
    pub l2_norm_clip: f64,
    /// Noise multiplier, given or calibrated.
    pub noise: NoiseSpec,
    /// The delta of (epsilon, delta).
    pub delta: f64,
    /// Which accountant reports epsilon (and calibrates the noise).
    #[serde(serialize_with = "display")]
    pub accountant: AccountantKind,
    /// Per-example or microbatch gradients.
    pub grad_sample: GradSample,
}

/// What the model card releases of the held-out (test) split: its accuracy is a statistic of
/// the held-out units, which the DP-SGD steps do not cover (docs/design.md, "Held-out accuracy
/// is released with its own noise").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestRelease {
    /// The number of correct predictions and of test records, each plus Gaussian noise of std
    /// `noise_multiplier` times their L2 sensitivity, composed with the steps in the
    /// accountant: epsilon covers it (the default).
    Noisy {
        /// Noise std over the L2 sensitivity of the two counts.
        noise_multiplier: f64,
    },
    /// The exact held-out figures, which the card marks as not covered by epsilon.
    ExactNotCovered,
    /// Nothing of the held-out split (sweeps and audits, which write no card).
    Withheld,
}

/// The held-out release's default noise multiplier: the counts' noise std is 10 times their
/// sensitivity (about 14 records for a line), an accuracy error of about 1e-4 on the census'
/// 240,000 test records, for little epsilon (the Gaussian's RDP is alpha / 200).
pub const DEFAULT_TEST_ACCURACY_NOISE: f64 = 10.0;

/// A set of defaults for the settings a user does not give (`--preset`): the optimizer, its
/// learning rate, the clip bound, the epochs, the batch size, the noise and whether columns
/// without public bounds get DP quantile bounds. A flag given always wins over the preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Chosen by measuring across census files (generated CaPUMS, the Fulton PUMS extract with
    /// two labels; bench/RESULTS.md, issue 25).
    Default,
    /// The seed project's settings: SGD at learning rate 0.01, clip 3, 10 epochs of batch 256,
    /// noise 0.9, every column used as it is.
    Seed,
}

/// What a [`Preset`] sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetValues {
    /// Passes over the data.
    pub epochs: u32,
    /// Expected batch size.
    pub batch_size: u32,
    /// Learning rate.
    pub lr: f64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Clip bound C.
    pub l2_norm_clip: f64,
    /// Noise multiplier (without a target epsilon).
    pub noise_multiplier: f64,
    /// DP quantile bounds for the columns without public ones (`None`: used as they are).
    pub auto_bounds: Option<QuantileSpec>,
}

impl Preset {
    /// The preset's settings.
    pub const fn values(self) -> PresetValues {
        match self {
            Preset::Default => PresetValues {
                epochs: 10,
                batch_size: 256,
                lr: 0.005,
                optimizer: OptimizerKind::Adam,
                l2_norm_clip: 1.0,
                noise_multiplier: 0.9,
                auto_bounds: Some(DEFAULT_QUANTILES),
            },
            Preset::Seed => PresetValues {
                epochs: 10,
                batch_size: 256,
                lr: 0.01,
                optimizer: OptimizerKind::Sgd,
                l2_norm_clip: 3.0,
                noise_multiplier: 0.9,
                auto_bounds: None,
            },
        }
    }
}

/// Private training or the non-private baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Privacy {
    /// DP-SGD.
    Private(DpConfig),
    /// `--no-dp`: the same loop without clipping, noise or accountant.
    NonPrivate,
}

/// Checkpoints written after each epoch, and whether to continue from one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointConfig {
    /// The directory holding `checkpoint.safetensors` and `checkpoint.json`.
    pub dir: PathBuf,
    /// Continue from the checkpoint there (its steps count towards the budget).
    pub resume: bool,
}

/// Everything a training run needs, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainConfig {
    /// The preset the settings not given were taken from.
    pub preset: Preset,
    /// The shards to train on.
    #[serde(serialize_with = "display")]
    pub data: Location,
    /// Number of epochs; an epoch is round(N / batch_size) steps.
    pub epochs: u32,
    /// Expected batch size B: the Poisson rate is q = B / N and gradients are divided by B.
    pub batch_size: u32,
    /// A public size of the training split (`--population`), used instead of the realized
    /// count N wherever the mechanism depends on it: q = min(B / N_pub, 1), round(N_pub / B)
    /// steps per epoch, the noisy sum divided by q * N_pub. With it the released files do not
    /// carry N (under add/remove adjacency, N is exactly what differs between neighbours);
    /// without it N is treated as public.
    pub population: Option<u64>,
    /// Learning rate.
    pub lr: f64,
    /// The optimizer applied to the (noisy) gradient.
    pub optimizer: OptimizerKind,
    /// How batches are drawn.
    pub sampling: Sampling,
    /// DP-SGD or the baseline.
    pub privacy: Privacy,
    /// Hidden layer widths (empty: logistic regression).
    pub hidden: Vec<usize>,
    /// How the feature columns become the model's inputs (public bounds, categories, noisy
    /// standardization); empty: every column as it is.
    pub features: FeatureSpec,
    /// The privacy unit (`--privacy-unit`): the column the shards were written with, whose
    /// rows are one unit. `None`: the shards' own (each line, or the unit they were written
    /// with). Checked against the shards when they are loaded.
    pub privacy_unit: Option<String>,
    /// `--max-rows-per-unit`: a unit keeps at most this many rows (its smallest keys); `None`:
    /// the shards' own bound, if any.
    pub max_rows_per_unit: Option<u32>,
    /// Share of records in the test set.
    pub test_fraction: f64,
    /// Seed of the train/test split (the design's splitmix64 rule).
    pub split_seed: u64,
    /// What the card releases of the held-out split.
    pub test_release: TestRelease,
    /// Seed of initialisation, batch sampling and noise, for runs that must repeat. `None` (the
    /// default): all three are keyed by the operating system's CSPRNG and the keys are written
    /// nowhere. A seeded run's release is not private against anyone who knows the seed.
    pub seed: Option<u64>,
    /// Where to train.
    pub device: DeviceSpec,
    /// libtorch intra-op threads.
    pub intra_op_threads: usize,
    /// The sensitive feature the model-inversion attack recovers (`None`: no attack).
    pub attack_feature: Option<String>,
    /// Whether a data without [`TrainConfig::attack_feature`] is an error (a feature the user
    /// named) or trains without the attack, saying so (the default feature).
    pub attack_required: bool,
    /// How many training rows, and how many held-out rows, the attack is run on.
    pub attack_rows: usize,
    /// JSON-lines file of per-epoch metrics.
    pub metrics_out: Option<PathBuf>,
    /// Where to save the model (safetensors; the options go next to it as `.json`).
    pub save: Option<PathBuf>,
    /// Per-epoch checkpoints.
    pub checkpoint: Option<CheckpointConfig>,
    /// Print where each epoch's time goes.
    pub profile: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Print nothing on stdout (no epoch lines; `trainer sweep` prints one line per run).
    #[serde(skip)]
    pub quiet: bool,
    /// Data-parallel workers: processes x threads, one worker per thread (`Single { threads:
    /// 1 }`: the plain single-process trainer). Every worker trains on its share of the shards;
    /// the model does not depend on the number of workers.
    #[serde(skip)]
    pub cluster: Cluster,
    /// How long to wait for the other processes to connect, and for every worker to load its
    /// shards.
    #[serde(skip)]
    pub connect_timeout: Duration,
    /// How long a step waits for a worker that neither contributes nor is known to be gone.
    #[serde(skip)]
    pub peer_timeout: Duration,
    /// How shards on S3 are reached (timeouts, attempts; `--s3-*`).
    #[serde(skip)]
    pub s3: shards::S3Options,
}

impl TrainConfig {
    /// The noise multiplier of the held-out accuracy's Gaussian release when the run makes
    /// one and composes it in the accountant: a private run with a test split and
    /// [`TestRelease::Noisy`].
    pub fn test_release_noise(&self) -> Option<f64> {
        match (&self.privacy, self.test_release) {
            (Privacy::Private(_), TestRelease::Noisy { noise_multiplier })
                if self.test_fraction > 0.0 =>
            {
                Some(noise_multiplier)
            }
            _ => None,
        }
    }

    /// What loading the run's records takes.
    pub fn data_spec(&self) -> crate::data::DataSpec {
        crate::data::DataSpec {
            location: self.data.clone(),
            s3: self.s3.clone(),
            test_fraction: self.test_fraction,
            split_seed: self.split_seed,
            features: self.features.clone(),
            privacy_unit: self.privacy_unit.clone(),
            max_rows_per_unit: self.max_rows_per_unit,
        }
    }

    /// The noise's key: the seed when there is one, else the operating system.
    pub fn noise_rng(&self) -> NoiseRng {
        match self.seed {
            Some(seed) => NoiseRng::Seeded(seed),
            None => NoiseRng::Os,
        }
    }

    /// The default preset's settings ([`Preset::Default`]) on `data`, delta 1e-5, one hidden
    /// layer of 50, the attack on `englishability` when the data has it, accounted by PLD, keyed
    /// by the OS (no seed), with no files written.
    pub fn new(data: Location) -> Self {
        TrainConfig::with_preset(data, Preset::Default)
    }

    /// [`TrainConfig::new`] with `preset`'s settings ([`Preset::Seed`]: the seed project's).
    pub fn with_preset(data: Location, preset: Preset) -> Self {
        let p = preset.values();
        let mut features = FeatureSpec::new();
        features.auto_bounds = p.auto_bounds;
        TrainConfig {
            preset,
            data,
            epochs: p.epochs,
            batch_size: p.batch_size,
            population: None,
            lr: p.lr,
            optimizer: p.optimizer,
            sampling: Sampling::Poisson,
            privacy: Privacy::Private(DpConfig {
                l2_norm_clip: p.l2_norm_clip,
                noise: NoiseSpec::Multiplier(p.noise_multiplier),
                delta: 1e-5,
                accountant: AccountantKind::Pld,
                grad_sample: GradSample::Vectorized,
            }),
            hidden: vec![50],
            features,
            privacy_unit: None,
            max_rows_per_unit: None,
            test_fraction: 0.2,
            split_seed: 0,
            test_release: TestRelease::Noisy {
                noise_multiplier: DEFAULT_TEST_ACCURACY_NOISE,
            },
            seed: None,
            device: DeviceSpec::Cpu,
            intra_op_threads: 1,
            attack_feature: Some("englishability".into()),
            attack_required: false,
            attack_rows: 10_000,
            metrics_out: None,
            save: None,
            checkpoint: None,
            profile: false,
            progress: false,
            quiet: false,
            cluster: Cluster::Single { threads: 1 },
            connect_timeout: Duration::from_secs(60),
            peer_timeout: Duration::from_secs(60),
            s3: shards::S3Options::default(),
        }
    }

    /// Checks ranges and combinations the types do not rule out, and bounds that keep an
    /// absurd flag from running the machine out of memory or threads (see [`limits`]).
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("--batch-size must be at least 1".into());
        }
        if self.batch_size > limits::BATCH_SIZE {
            return bad(format!(
                "--batch-size {} is above the limit of {}",
                self.batch_size,
                limits::BATCH_SIZE
            ));
        }
        if let Some(p) = self.population
            && !(1..=limits::POPULATION).contains(&p)
        {
            return bad(format!(
                "--population {p} must be at least 1 and at most the limit of {}",
                limits::POPULATION
            ));
        }
        positive_finite("--lr", self.lr)?;
        if !(0.0..1.0).contains(&self.test_fraction) {
            return bad(format!(
                "--test-fraction {} must be in [0, 1)",
                self.test_fraction
            ));
        }
        if self.hidden.contains(&0) {
            return bad("--hidden widths must be positive".into());
        }
        if self.max_rows_per_unit == Some(0) {
            return bad("--max-rows-per-unit must be at least 1".into());
        }
        if self.hidden.len() > limits::LAYERS {
            return bad(format!(
                "--hidden has {} layers; the limit is {}",
                self.hidden.len(),
                limits::LAYERS
            ));
        }
        if let Some(w) = self.hidden.iter().find(|w| **w > limits::WIDTH) {
            return bad(format!(
                "--hidden width {w} is above the limit of {}",
                limits::WIDTH
            ));
        }
        // Weights between hidden layers (the input layer is small: one row of features), and the
        // activations of a step: batch x hidden units, a few copies each.
        let weights: usize = self.hidden.windows(2).map(|w| w[0] * w[1]).sum();
        if weights > limits::PARAMETERS {
            return bad(format!(
                "--hidden {:?} has {weights} weights between its layers; the limit is {}",
                self.hidden,
                limits::PARAMETERS
            ));
        }
        let units: usize = self.hidden.iter().sum();
        let activations = units.saturating_mul(self.batch_size as usize);
        if activations > limits::ACTIVATIONS {
            return bad(format!(
                "--batch-size {} x {units} hidden units (--hidden) is {activations} activations \
                 per step; the limit is {}: lower one of them",
                self.batch_size,
                limits::ACTIVATIONS
            ));
        }
        if let TestRelease::Noisy { noise_multiplier } = self.test_release
            && !(noise_multiplier.is_finite() && noise_multiplier > 0.0)
        {
            return bad(format!(
                "--test-accuracy-noise {noise_multiplier} must be finite and positive"
            ));
        }
        let noise = self.features.standardize_noise;
        let standardizes =
            self.features.standardized().next().is_some() || self.features.auto_bounds.is_some();
        if standardizes && !(noise.is_finite() && noise > 0.0) {
            return bad(format!(
                "--standardize-noise {noise} must be finite and positive"
            ));
        }
        if let Some(q) = self.features.auto_bounds {
            q.validate()?;
        }
        if self.intra_op_threads == 0 {
            return bad("--intra-op-threads must be at least 1".into());
        }
        if self.intra_op_threads > limits::THREADS {
            return bad(format!(
                "--intra-op-threads {} is above the limit of {}",
                self.intra_op_threads,
                limits::THREADS
            ));
        }
        if self.cluster.threads() == 0 {
            return bad("--threads must be at least 1".into());
        }
        check_layout(Some(self.cluster.processes()), self.cluster.threads())?;
        for (flag, t) in [
            ("--connect-timeout", self.connect_timeout),
            ("--peer-timeout", self.peer_timeout),
        ] {
            if t > limits::TIMEOUT {
                return bad(format!(
                    "{flag} {} is above the limit of {} seconds",
                    t.as_secs(),
                    limits::TIMEOUT.as_secs()
                ));
            }
        }
        if let Privacy::Private(dp) = &self.privacy {
            positive_finite("--l2-norm-clip", dp.l2_norm_clip)?;
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return bad(format!("--delta {} must be in (0, 1)", dp.delta));
            }
            match dp.noise {
                NoiseSpec::Multiplier(s) if !s.is_finite() => {
                    return bad(format!("--noise-multiplier {s} must be finite"));
                }
                NoiseSpec::Multiplier(s) if s < 0.0 => {
                    return bad(format!("--noise-multiplier {s} must be non-negative"));
                }
                NoiseSpec::TargetEpsilon(e) => positive_finite("--target-epsilon", e)?,
                _ => {}
            }
            if dp.grad_sample == GradSample::Microbatch(0) {
                return bad("--microbatch-size must be at least 1".into());
            }
            if matches!(dp.grad_sample, GradSample::Microbatch(n) if n > 1)
                && self.cluster.workers() > 1
            {
                // A microbatch's mean is clipped before the sum; its members may live on any
                // worker, so each step would have to gather every group's mean first.
                return bad(format!(
                    "--microbatch-size {} needs a single worker (this run has {}): per-example \
                     clipping is the data-parallel scheme",
                    match dp.grad_sample {
                        GradSample::Microbatch(n) => n,
                        GradSample::Vectorized => 1,
                    },
                    self.cluster.workers()
                ));
            }
        }
        Ok(())
    }
}

/// Upper bounds on the flags that size memory, threads and processes: far above any sensible
/// run of this model, far below what would exhaust a machine.
pub mod limits {
    /// `--batch-size`.
    pub const BATCH_SIZE: u32 = 1 << 24;
    /// `--population` (a trillion records: exact in an f64, and far above any census).
    pub const POPULATION: u64 = 1_000_000_000_000;
    /// Hidden layers in `--hidden`.
    pub const LAYERS: usize = 64;
    /// One hidden width in `--hidden`.
    pub const WIDTH: usize = 1 << 16;
    /// Weights between hidden layers (2^26 f32: 256 MiB per copy of the parameters).
    pub const PARAMETERS: usize = 1 << 26;
    /// Batch size x hidden units, the activations of one step (2^28 f32: 1 GiB per copy).
    pub const ACTIVATIONS: usize = 1 << 28;
    /// `--threads` and `--intra-op-threads`.
    pub const THREADS: usize = 1024;
    /// `--workers`: processes (each of `--threads` timely workers).
    pub const PROCESSES: usize = 1024;
    /// `--connect-timeout` and `--peer-timeout` (a week).
    pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
}

/// Checks `--workers` and `--threads` against [`limits`] (before a process or port is
/// reserved for them).
pub fn check_layout(processes: Option<usize>, threads: usize) -> crate::Result<()> {
    if threads > limits::THREADS {
        return Err(crate::Error::Config(format!(
            "--threads {threads} is above the limit of {}",
            limits::THREADS
        )));
    }
    if let Some(p) = processes.filter(|p| *p > limits::PROCESSES) {
        return Err(crate::Error::Config(format!(
            "--workers {p} is above the limit of {}",
            limits::PROCESSES
        )));
    }
    Ok(())
}

/// `value` of `flag` must be finite and positive ("--lr inf must be finite").
fn positive_finite(flag: &str, value: f64) -> crate::Result<()> {
    if !value.is_finite() {
        return Err(crate::Error::Config(format!(
            "{flag} {value} must be finite"
        )));
    }
    if value <= 0.0 {
        return Err(crate::Error::Config(format!(
            "{flag} {value} must be positive"
        )));
    }
    Ok(())
}

fn display<S: serde::Serializer>(v: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_preset_is_the_seed_projects_and_valid() {
        let c = TrainConfig::with_preset(Location::parse("shards").unwrap(), Preset::Seed);
        assert_eq!(c.optimizer, OptimizerKind::Sgd);
        assert_eq!(c.features.auto_bounds, None, "every column as it is");
        assert_eq!((c.epochs, c.batch_size, c.lr), (10, 256, 0.01));
        let Privacy::Private(dp) = &c.privacy else {
            panic!("private by default")
        };
        assert_eq!(dp.l2_norm_clip, 3.0);
        assert_eq!(dp.noise, NoiseSpec::Multiplier(0.9));
        // The seed's inversion_atk target_col=8 of its feature vector is englishability.
        assert_eq!(c.attack_feature.as_deref(), Some("englishability"));
        assert_eq!(c.seed, None, "keys come from the OS unless a seed is given");
        c.validate().unwrap();
    }

    #[test]
    fn rejects_out_of_range_options() {
        let base = TrainConfig::new(Location::parse("shards").unwrap());
        let mut c = base.clone();
        c.test_fraction = 1.0;
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.hidden = vec![50, 0];
        assert!(c.validate().is_err());
        let mut c = base;
        if let Privacy::Private(dp) = &mut c.privacy {
            dp.delta = 0.0;
        }
        assert!(c.validate().unwrap_err().to_string().contains("--delta"));
    }

    fn refused(change: impl FnOnce(&mut TrainConfig)) -> String {
        let mut c = TrainConfig::new(Location::parse("shards").unwrap());
        change(&mut c);
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn non_finite_values_must_be_finite() {
        for lr in [f64::INFINITY, f64::NAN] {
            let err = refused(|c| c.lr = lr);
            assert!(
                err.contains("--lr") && err.contains("must be finite"),
                "{err}"
            );
        }
        assert!(refused(|c| c.lr = -1.0).contains("must be positive"));
        let err = refused(|c| {
            if let Privacy::Private(dp) = &mut c.privacy {
                dp.noise = NoiseSpec::TargetEpsilon(f64::INFINITY);
            }
        });
        assert!(err.contains("--target-epsilon inf must be finite"), "{err}");
        let err = refused(|c| {
            if let Privacy::Private(dp) = &mut c.privacy {
                dp.l2_norm_clip = f64::NAN;
            }
        });
        assert!(err.contains("--l2-norm-clip NaN must be finite"), "{err}");
    }

    #[test]
    fn absurd_sizes_are_refused_before_allocating() {
        for (change, flag) in [
            (
                Box::new(|c: &mut TrainConfig| c.hidden = vec![1_000_000_000])
                    as Box<dyn FnOnce(&mut TrainConfig)>,
                "--hidden width 1000000000",
            ),
            (Box::new(|c| c.hidden = vec![60_000, 60_000]), "weights"),
            (Box::new(|c| c.hidden = vec![1; 65]), "layers"),
            (
                Box::new(|c| {
                    c.hidden = vec![10_000];
                    c.batch_size = 1 << 20;
                }),
                "--batch-size 1048576 x 10000 hidden units",
            ),
            (Box::new(|c| c.batch_size = u32::MAX), "--batch-size"),
            (Box::new(|c| c.population = Some(0)), "--population 0"),
            (Box::new(|c| c.population = Some(u64::MAX)), "--population"),
            (
                Box::new(|c| c.cluster = Cluster::Single { threads: 100_000 }),
                "--threads 100000",
            ),
            (
                Box::new(|c| c.intra_op_threads = 5000),
                "--intra-op-threads",
            ),
            (
                Box::new(|c| c.peer_timeout = Duration::from_secs(u64::MAX)),
                "--peer-timeout",
            ),
        ] {
            let err = refused(change);
            assert!(err.contains(flag) && err.contains("limit"), "{flag}: {err}");
        }
        assert!(
            check_layout(Some(100_000), 1)
                .unwrap_err()
                .to_string()
                .contains("--workers")
        );
        check_layout(Some(8), 16).unwrap();
    }
}
