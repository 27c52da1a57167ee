//! The command line: clap definitions, and their conversion into the library's config.

use std::path::PathBuf;

use accountant::AccountantKind;
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use cluster::ClusterArgs;
use shards::Location;
use shards::cli::S3Args;
use trainer::audit::{CanaryKind, ScoreKind};
use trainer::features::FeatureSpec;
use trainer::report::ReportConfig;
use trainer::sweep::SweepConfig;
use trainer::{
    CheckpointConfig, DeviceSpec, DpConfig, GradSample, NoiseSpec, OptimizerKind, Preset, Privacy,
    Sampling, TestRelease, TrainConfig,
};

/// Differentially private training (DP-SGD) on the shards the pipeline writes.
///
/// With no subcommand, trains on `--data` (default `shards/`, the pipeline's default output)
/// with the seed project's settings and prints each epoch's accuracy, privacy spent and
/// model-inversion attack accuracy.
///
/// What epsilon protects: one line of the input file, or with --privacy-unit (as the shards
/// were written) one unit, all its rows (add/remove neighbours: the file with or without it).
/// Records are keyed by their content and rank among equal records, so no other record's
/// split or batch moves when a unit is added or removed; a record (a unit) is in the training
/// split when splitmix64(key ^ splitmix64(--split-seed)) >= --test-fraction * 2^64, at --delta,
/// as computed by --accountant. It covers the released model and every figure of its card
/// (run/model.json): the test accuracy there is released with its own noise, composed in the
/// accountant (--test-accuracy-release). Noise, batch sampling and initialisation are keyed by
/// the OS unless --seed is given; a seeded run is not private against anyone who knows the
/// seed (and seeded runs with other settings draw other batches and noise). Without
/// --population, the number of training records N is treated as public, as Opacus and TF
/// Privacy do: q = B / N, the steps per epoch and epsilon itself reveal it. With --population
/// N_PUB (a public size of the training split), q, the steps and the scaling come from N_PUB
/// and the training count is not released. Not covered, not for publishing: the exact figures
/// the run prints and logs (the epoch lines' held-out figures, marked "exact, not released";
/// the metrics file's held-out figures and its "non_private" training-set figures; the
/// counts on stderr), and the shards folder, whose _manifest.json holds exact counts and
/// feature means.
#[derive(Debug, Parser)]
#[command(name = "trainer", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Planning instead of training.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Training options.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Epsilon for a noise multiplier, or the noise multiplier for a target epsilon.
    Privacy(PrivacyArgs),
    /// A run's metrics, card and audit as one self-contained HTML page.
    Report(ReportArgs),
    /// Train at several target epsilons (and once without DP) and plot test accuracy
    /// against epsilon.
    Sweep(Box<SweepArgs>),
    /// Audit the run these flags describe: a lower bound on its epsilon from one training run
    /// with canaries, and membership inference on its real rows.
    Audit(Box<AuditArgs>),
    /// Accounted hyperparameter search (Papernot and Steinke 2022): a random number of runs,
    /// each at a grid point drawn at random, only the best (by its noisy held-out accuracy)
    /// released, and the whole search's epsilon printed (RDP).
    Tune(Box<TuneArgs>),
}

/// `trainer [OPTIONS]`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Shards to train on: a directory, or s3://bucket/prefix.
    #[arg(long, default_value = "shards")]
    data: String,
    /// Where the settings not given come from: default (measured across census files; printed
    /// with each flag below) or seed (the seed project's: SGD, lr 0.01, clip 3, 10 epochs of
    /// batch 256, noise 0.9, every column used as it is).
    #[arg(long, value_enum, default_value_t = PresetArg::Default)]
    preset: PresetArg,
    /// Passes over the data (an epoch is round(N / batch-size) steps) [default: 10; --preset
    /// seed: 10].
    #[arg(long)]
    epochs: Option<u32>,
    /// Expected batch size B: each example joins each step with probability B / N [default:
    /// 256; --preset seed: 256].
    #[arg(long)]
    batch_size: Option<u32>,
    /// A public size N_PUB of the training split (e.g. the census' published total times
    /// 1 - --test-fraction), used instead of the realized count N: q = min(B / N_PUB, 1),
    /// round(N_PUB / B) steps per epoch, the noisy sum divided by B. The run then releases
    /// nothing that reveals N (without it, N is treated as public).
    #[arg(long, value_name = "N_PUB")]
    population: Option<u64>,
    /// Learning rate [default: 0.005; --preset seed: 0.01].
    #[arg(long)]
    lr: Option<f64>,
    /// sgd, adam, adagrad or rmsprop (PyTorch's defaults otherwise) [default: adam; --preset
    /// seed: sgd].
    #[arg(long, value_enum, ignore_case = true, hide_possible_values = true)]
    optimizer: Option<OptimizerKind>,
    /// Per-example gradient L2 bound C [default: 1; --preset seed: 3].
    #[arg(long)]
    l2_norm_clip: Option<f64>,
    /// Noise std over C [default: 0.9; --preset seed: 0.9].
    #[arg(long, conflicts_with = "target_epsilon")]
    noise_multiplier: Option<f64>,
    /// Calibrate the noise multiplier so the whole run spends this epsilon (`trainer sweep`:
    /// a comma-separated list of them [default: 0.25,0.5,1,2,4,8]).
    #[arg(long, value_delimiter = ',')]
    target_epsilon: Vec<f64>,
    /// Delta of (epsilon, delta): the guarantee's failure probability, per record.
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Accountant that computes epsilon: pld (tight) or rdp (Opacus's).
    #[arg(long, value_enum, ignore_case = true, hide_possible_values = true,
          default_value_t = AccountantKind::Pld)]
    accountant: AccountantKind,
    /// Hidden layer widths, comma-separated ("" for logistic regression).
    #[arg(long, default_value = "50")]
    hidden: String,
    /// Public bounds: NAME=LO:HI,... Each value is clipped to [LO, HI] and scaled to [0, 1].
    /// Public (given, not computed from the data): no privacy cost.
    #[arg(long)]
    feature_bounds: Option<String>,
    /// Public levels: NAME=A..B (integers) or NAME=X|Y|Z, then :drop (default: a record with
    /// another value is left out) or :other (it gets a 1 in NAME=other). One-hot encoded.
    #[arg(long)]
    feature_categories: Option<String>,
    /// Standardize by noisy estimates: NAME=LO:HI,... with a coarse public range each value is
    /// clipped to; the mean and variance are released by the Gaussian mechanism on the training
    /// split and composed with DP-SGD in the accountant (epsilon covers them).
    #[arg(long)]
    standardize: Option<String>,
    /// Noise multiplier of that Gaussian release (noise std over its L2 sensitivity).
    #[arg(long, default_value_t = trainer::features::DEFAULT_STANDARDIZE_NOISE)]
    standardize_noise: f64,
    /// Columns the feature spec does not name: on, each gets bounds from two DP quantiles of
    /// the training split (the exponential mechanism over a public grid, --bounds-epsilon each,
    /// composed in the accountant: epsilon covers them) and, unless both lie within [0, 1], is
    /// clipped to them and standardized like a --standardize column; off, they are used as
    /// they are [default: on; --preset seed: off].
    #[arg(long, value_enum)]
    auto_bounds: Option<OnOff>,
    /// Epsilon of each DP quantile's exponential mechanism (two a bounded column).
    #[arg(long, default_value_t = trainer::mechanism::quantiles::DEFAULT_QUANTILES.epsilon)]
    bounds_epsilon: f64,
    /// The two quantiles a bounded column is clipped to, LOW:HIGH.
    #[arg(long, default_value = "0.05:0.95", value_name = "LOW:HIGH")]
    bounds_quantiles: String,
    /// A JSON feature spec: {"bounds": {"age": [18, 100]}, "categories": {"educ": {"levels":
    /// [1, 2, 3], "unknown": "other"}}, "standardize": {"income": [-20000, 1000000]}}, merged
    /// with the flags above (a column may have one spec).
    #[arg(long)]
    feature_spec: Option<PathBuf>,
    /// The privacy unit the shards were written with (`pipeline --privacy-unit COLUMN`): all
    /// rows sharing the column's value are one unit, sampled together and clipped as one, and
    /// epsilon is per unit [default: the shards' own: each line, or their unit].
    #[arg(long, value_name = "COLUMN")]
    privacy_unit: Option<String>,
    /// A unit keeps at most K rows (those with the smallest keys, as the pipeline chooses)
    /// [default: the bound the shards were written with, if any].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    max_rows_per_unit: Option<u32>,
    /// Share of records (of units) held out for testing (by the design's hash of the record key,
    /// or of the unit).
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Seed of the train/test split (part of the privacy unit's definition).
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// What the model card releases of the test split: noisy (the counts of right predictions
    /// and of test records with Gaussian noise, composed in the accountant: epsilon covers
    /// them), exact-not-covered (the exact figures, which the card marks as NOT covered by
    /// epsilon), or withheld.
    #[arg(long, value_enum, default_value_t = TestReleaseArg::Noisy)]
    test_accuracy_release: TestReleaseArg,
    /// Noise multiplier of that noisy release (each count's noise std over their L2
    /// sensitivity, sqrt 2 records for a line).
    #[arg(long, default_value_t = trainer::config::DEFAULT_TEST_ACCURACY_NOISE)]
    test_accuracy_noise: f64,
    /// Seed of initialisation, sampling and noise, for runs that must repeat. Without it they
    /// are keyed by the OS and the keys are written nowhere. A seeded run is NOT private
    /// against anyone who knows the seed (its card says private_against_seed_holders: false).
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda or cuda:N (with cuda, worker thread t of a process uses GPU t % number of
    /// GPUs).
    #[arg(long, default_value = "cpu", value_parser = device)]
    device: DeviceSpec,
    /// Non-private baseline: the same loop without clipping, noise or accountant.
    #[arg(long, conflicts_with_all = ["noise_multiplier", "target_epsilon", "microbatch_size"])]
    no_dp: bool,
    /// Clip the mean gradient of microbatches of about this many examples (the seed's scheme;
    /// records are grouped by a hash of their key) instead of each example's. A record moves
    /// its microbatch's clipped mean by up to 2C, so it is accounted at noise multiplier / 2.
    #[arg(long)]
    microbatch_size: Option<usize>,
    /// Feature the model-inversion attack tries to recover ("none" to skip the attack)
    /// [default: englishability when the data has it, else none].
    #[arg(long)]
    attack_feature: Option<String>,
    /// Training rows, and held-out rows, the attack is run on.
    #[arg(long, default_value_t = 10_000)]
    attack_rows: usize,
    /// JSON-lines file of per-epoch metrics: the operator's log, with exact training-set
    /// figures under "non_private" (not covered by epsilon; do not publish it)
    /// [default: run/metrics.jsonl; none for an audit].
    #[arg(long)]
    metrics_out: Option<PathBuf>,
    /// Where to save the model (safetensors; the options and results go to the same name with
    /// .json) [default: run/model.safetensors; none for an audit].
    #[arg(long)]
    save: Option<PathBuf>,
    /// Write a checkpoint here after every epoch.
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in --checkpoint-dir (its steps count towards the budget).
    #[arg(long, requires = "checkpoint_dir")]
    resume: bool,
    /// Print where each epoch's time goes.
    #[arg(long)]
    profile: bool,
    /// libtorch intra-op threads (1 avoids OpenMP spinning on busy machines).
    #[arg(long, default_value_t = 1)]
    intra_op_threads: usize,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Processes (`--workers`) x worker threads (`--threads`), each worker training on its
    /// share of the shards (clap shows the flags' own help).
    #[command(flatten)]
    cluster: ClusterArgs<60>,
    /// How shards on S3 (`--data s3://...`) are reached.
    #[command(flatten)]
    s3: S3Args,
}

/// `--preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PresetArg {
    Default,
    Seed,
}

/// `--auto-bounds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// `--test-accuracy-release`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TestReleaseArg {
    Noisy,
    ExactNotCovered,
    Withheld,
}

/// A checked training run, and the local processes to start for it.
#[derive(Debug)]
pub struct Launch {
    /// The run.
    pub config: TrainConfig,
    /// With `--workers W` and no hostfile: the handoff (listeners bound, addresses, key) for
    /// the W - 1 processes to start here (this is process 0).
    pub spawn: Option<cluster::Handoff>,
}

impl TryFrom<TrainArgs> for Launch {
    type Error = anyhow::Error;

    fn try_from(a: TrainArgs) -> anyhow::Result<Self> {
        // Checked by the cluster (as for `pipeline`) before `--workers W` reserves W ports.
        let (cluster, spawn) = a.cluster.resolve()?;
        let data = Location::parse(&a.data).with_context(|| format!("--data {}", a.data))?;
        let preset = match a.preset {
            PresetArg::Default => Preset::Default,
            PresetArg::Seed => Preset::Seed,
        };
        let p = preset.values();
        let privacy = if a.no_dp {
            Privacy::NonPrivate
        } else {
            let target = match a.target_epsilon.as_slice() {
                [] => None,
                [e] => Some(*e),
                _ => bail!(
                    "--target-epsilon takes one epsilon for a run (`trainer sweep` takes a list)"
                ),
            };
            let noise = match (a.noise_multiplier, target) {
                (_, Some(e)) => NoiseSpec::TargetEpsilon(e),
                (Some(s), None) => NoiseSpec::Multiplier(s),
                (None, None) => NoiseSpec::Multiplier(p.noise_multiplier),
            };
            Privacy::Private(DpConfig {
                l2_norm_clip: a.l2_norm_clip.unwrap_or(p.l2_norm_clip),
                noise,
                delta: a.delta,
                accountant: a.accountant,
                grad_sample: match a.microbatch_size {
                    None => GradSample::Vectorized,
                    Some(n) => GradSample::Microbatch(n),
                },
            })
        };
        let mut features = FeatureSpec::new();
        features.standardize_noise = a.standardize_noise;
        features.auto_bounds = match a.auto_bounds {
            Some(OnOff::Off) => None,
            Some(OnOff::On) => Some(trainer::mechanism::quantiles::DEFAULT_QUANTILES),
            None => p.auto_bounds,
        };
        if let Some(q) = &mut features.auto_bounds {
            let (low, high) = a
                .bounds_quantiles
                .split_once(':')
                .and_then(|(l, h)| Some((l.trim().parse().ok()?, h.trim().parse().ok()?)))
                .with_context(|| {
                    format!(
                        "--bounds-quantiles '{}': expected LOW:HIGH, two numbers",
                        a.bounds_quantiles
                    )
                })?;
            q.low = low;
            q.high = high;
            q.epsilon = a.bounds_epsilon;
        }
        if let Some(path) = &a.feature_spec {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--feature-spec {}", path.display()))?;
            features.add_file(&path.display().to_string(), &text)?;
        }
        if let Some(f) = &a.feature_bounds {
            features.add_bounds(f)?;
        }
        if let Some(f) = &a.feature_categories {
            features.add_categories(f)?;
        }
        if let Some(f) = &a.standardize {
            features.add_standardize(f)?;
        }
        let (attack_feature, attack_required) = match a.attack_feature.as_deref() {
            None => (Some("englishability".to_string()), false),
            Some("none" | "") => (None, false),
            Some(name) => (Some(name.to_string()), true),
        };
        let config = TrainConfig {
            preset,
            data,
            epochs: a.epochs.unwrap_or(p.epochs),
            batch_size: a.batch_size.unwrap_or(p.batch_size),
            population: a.population,
            lr: a.lr.unwrap_or(p.lr),
            optimizer: a.optimizer.unwrap_or(p.optimizer),
            sampling: Sampling::Poisson,
            privacy,
            hidden: parse_hidden(&a.hidden)?,
            features,
            privacy_unit: a.privacy_unit,
            max_rows_per_unit: a.max_rows_per_unit,
            test_fraction: a.test_fraction,
            split_seed: a.split_seed,
            test_release: match a.test_accuracy_release {
                TestReleaseArg::Noisy => TestRelease::Noisy {
                    noise_multiplier: a.test_accuracy_noise,
                },
                TestReleaseArg::ExactNotCovered => TestRelease::ExactNotCovered,
                TestReleaseArg::Withheld => TestRelease::Withheld,
            },
            seed: a.seed,
            device: a.device,
            intra_op_threads: a.intra_op_threads,
            attack_feature,
            attack_required,
            attack_rows: a.attack_rows,
            metrics_out: Some(a.metrics_out.unwrap_or_else(|| "run/metrics.jsonl".into())),
            save: Some(a.save.unwrap_or_else(|| "run/model.safetensors".into())),
            checkpoint: a.checkpoint_dir.map(|dir| CheckpointConfig {
                dir,
                resume: a.resume,
            }),
            profile: a.profile,
            progress: !a.no_progress && cluster.process() == 0,
            quiet: false,
            cluster,
            connect_timeout: a.cluster.connect_timeout(),
            peer_timeout: a.cluster.peer_timeout(),
            s3: a.s3.to_options(),
        };
        config.validate()?;
        Ok(Launch { config, spawn })
    }
}

/// `--device`: refused by clap, which names the flag, with the choices.
fn device(s: &str) -> Result<DeviceSpec, String> {
    s.parse()
        .map_err(|_| "expected cpu, cuda or cuda:N (a GPU's index)".to_string())
}

/// "50" -> [50]; "64,32" -> [64, 32]; "" -> [] (logistic regression).
fn parse_hidden(s: &str) -> anyhow::Result<Vec<usize>> {
    if s.trim().is_empty() {
        return Ok(vec![]);
    }
    s.split(',')
        .map(|w| {
            w.trim()
                .parse::<usize>()
                .with_context(|| format!("--hidden '{s}': '{w}' is not a width"))
        })
        .collect()
}

/// `trainer sweep`: training flags, plus the points and repeats.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Runs per target epsilon.
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    /// Folder for runs.jsonl (one JSON line per run, also printed) and report.html.
    #[arg(long, default_value = "sweep")]
    out: PathBuf,
    /// Replace the results of an earlier sweep in --out.
    #[arg(long)]
    overwrite: bool,
    /// Training options, shared by every run (--target-epsilon takes the list of points; each
    /// run's model, metrics and checkpoints are not written).
    #[command(flatten)]
    train: TrainArgs,
}

/// The epsilons a sweep runs at without --target-epsilon.
pub const SWEEP_EPSILONS: [f64; 6] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];

impl TryFrom<SweepArgs> for SweepConfig {
    type Error = anyhow::Error;

    fn try_from(mut a: SweepArgs) -> anyhow::Result<Self> {
        if a.train.no_dp {
            bail!(
                "--no-dp: a sweep trains once without DP by itself, and at each --target-epsilon"
            );
        }
        if a.train.noise_multiplier.is_some() {
            bail!("--noise-multiplier: a sweep calibrates the noise to each --target-epsilon");
        }
        if a.train.cluster.processes.is_some() || a.train.cluster.hostfile.is_some() {
            bail!("--workers, --hostfile: a sweep runs in one process (use --threads)");
        }
        if a.train.checkpoint_dir.is_some() {
            bail!("--checkpoint-dir: a sweep writes no checkpoints");
        }
        let targets = match std::mem::take(&mut a.train.target_epsilon) {
            t if t.is_empty() => SWEEP_EPSILONS.to_vec(),
            t => t,
        };
        let progress = !a.train.no_progress;
        let Launch { config, .. } = Launch::try_from(a.train)?;
        let sweep = SweepConfig {
            base: config,
            target_epsilons: targets,
            repeats: a.repeats,
            out: a.out,
            overwrite: a.overwrite,
            progress,
        };
        sweep.validate()?;
        Ok(sweep)
    }
}

/// `trainer tune`: the training flags (--target-epsilon is the whole search's budget), the grid
/// and the number of runs.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Learning rates to draw from.
    #[arg(long, value_delimiter = ',', default_value = "0.002,0.005,0.01")]
    grid_lr: Vec<f64>,
    /// Clip bounds to draw from.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2")]
    grid_clip: Vec<f64>,
    /// Epochs to draw from (at the same budget, more epochs mean more noise a step) [default:
    /// the run's --epochs].
    #[arg(long, value_delimiter = ',')]
    grid_epochs: Vec<u32>,
    /// The distribution of the number of runs: poisson (may draw none: then nothing is
    /// released), logarithmic or geometric (at least one run).
    #[arg(long, value_enum, default_value_t = RunsArg::Poisson)]
    runs_distribution: RunsArg,
    /// The mean number of runs.
    #[arg(long, default_value_t = 4.0)]
    runs_mean: f64,
    /// Folder of the released model and its card (model.safetensors, model.json).
    #[arg(long, default_value = "tune")]
    out: PathBuf,
    /// Replace a model released there before.
    #[arg(long)]
    overwrite: bool,
    /// Training options shared by every run (--target-epsilon: the whole search's budget; the
    /// grid's flags replace --lr, --l2-norm-clip, --epochs).
    #[command(flatten)]
    train: TrainArgs,
}

/// `--runs-distribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RunsArg {
    Poisson,
    Logarithmic,
    Geometric,
}

impl TryFrom<TuneArgs> for trainer::tune::TuneConfig {
    type Error = anyhow::Error;

    fn try_from(a: TuneArgs) -> anyhow::Result<Self> {
        if a.train.target_epsilon.len() != 1 {
            bail!("--target-epsilon: a tune takes one epsilon, the whole search's budget");
        }
        if a.train.no_dp || a.train.noise_multiplier.is_some() {
            bail!("--no-dp, --noise-multiplier: a tune calibrates each run's noise itself");
        }
        if a.train.cluster.processes.is_some() || a.train.cluster.hostfile.is_some() {
            bail!("--workers, --hostfile: a tune runs in one process (use --threads)");
        }
        if a.train.checkpoint_dir.is_some() {
            bail!("--checkpoint-dir: a tune writes no checkpoints");
        }
        let progress = !a.train.no_progress;
        let Launch { config, .. } = Launch::try_from(a.train)?;
        let mean = a.runs_mean;
        let runs = match a.runs_distribution {
            RunsArg::Poisson => accountant::rdp::Runs::Poisson { mean },
            RunsArg::Logarithmic => {
                accountant::rdp::Runs::TruncatedNegativeBinomial { mean, shape: 0.0 }
            }
            RunsArg::Geometric => {
                accountant::rdp::Runs::TruncatedNegativeBinomial { mean, shape: 1.0 }
            }
        };
        let epochs = match a.grid_epochs {
            e if e.is_empty() => vec![config.epochs],
            e => e,
        };
        let tune = trainer::tune::TuneConfig {
            grid: trainer::tune::Grid {
                lr: a.grid_lr,
                l2_norm_clip: a.grid_clip,
                epochs,
            },
            base: config,
            runs,
            out: a.out,
            overwrite: a.overwrite,
            progress,
        };
        tune.validate()?;
        Ok(tune)
    }
}

/// `trainer report RUN`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run's metrics file, or its folder (metrics.jsonl, and model.json and audit.jsonl when
    /// there).
    run: PathBuf,
    /// Where the page goes [default: report.html in the run's folder].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The output of `trainer audit` (its JSON line) [default: audit.jsonl in the run folder].
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Leave out the operator's training-set figures (the metrics' "non_private" part): the
    /// page then holds only what epsilon covers and held-out figures, as the model card does.
    #[arg(long)]
    public: bool,
    /// Replace an existing page.
    #[arg(long)]
    overwrite: bool,
}

impl From<ReportArgs> for ReportConfig {
    fn from(a: ReportArgs) -> Self {
        let mut config = ReportConfig::new(a.run);
        if let Some(out) = a.out {
            config.out = out;
        }
        config.audit = a.audit;
        config.public = a.public;
        config.overwrite = a.overwrite;
        config
    }
}

/// `trainer audit`: the training flags, and the audit's own.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The run to audit, as for `trainer`.
    #[command(flatten)]
    pub train: TrainArgs,
    /// Number of canaries, each included with probability 1/2.
    #[arg(long, default_value_t = 1000)]
    canaries: usize,
    /// gradient (white-box: rows whose gradient lies on quiet coordinates no real row touches,
    /// scored from every step's noisy gradient there) or input (black-box: crafted rows,
    /// scored by the final loss).
    #[arg(long, value_enum, hide_possible_values = true, default_value_t = CanaryKind::Gradient)]
    canary_kind: CanaryKind,
    /// How gradient canaries are scored: llr (each step's likelihood ratio, included at rate q
    /// against never) or sum (the steps' noisy gradients added up, as the final model holds
    /// them).
    #[arg(long, value_enum, hide_possible_values = true, default_value_t = ScoreKind::Llr)]
    score: ScoreKind,
    /// Gradient canaries' quiet coordinates [default: one per 1024 values of a step's
    /// per-example gradients, at least 64, at most one per canary].
    #[arg(long)]
    quiet_coordinates: Option<usize>,
    /// Steps per window of the LLR score [default: as many as keep the canaries scored per
    /// step at one per quiet coordinate or per 512 values of the step's gradients].
    #[arg(long)]
    score_window: Option<usize>,
    /// The bound holds with probability 1 - alpha.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
}

impl TryFrom<AuditArgs> for trainer::audit::AuditConfig {
    type Error = anyhow::Error;

    fn try_from(a: AuditArgs) -> anyhow::Result<Self> {
        let (save, metrics_out) = (a.train.save.clone(), a.train.metrics_out.clone());
        let Launch { mut config, spawn } = Launch::try_from(a.train)?;
        if spawn.is_some() {
            bail!("the audit runs on one worker: drop --workers");
        }
        // An audit writes only what it is asked to.
        config.save = None;
        config.metrics_out = metrics_out;
        let mut audit = trainer::audit::AuditConfig::new(config);
        audit.canaries = a.canaries;
        audit.kind = a.canary_kind;
        audit.score = a.score;
        audit.quiet_coordinates = a.quiet_coordinates;
        audit.score_window = a.score_window;
        audit.alpha = a.alpha;
        audit.save = save;
        audit.validate()?;
        Ok(audit)
    }
}

/// `trainer privacy`.
#[derive(Debug, Args)]
pub struct PrivacyArgs {
    /// q: the probability that an example is in a step (batch size / rows).
    #[arg(long)]
    sampling_rate: f64,
    /// Noise std over the clip bound.
    #[arg(
        long,
        required_unless_present = "target_epsilon",
        conflicts_with = "target_epsilon"
    )]
    noise_multiplier: Option<f64>,
    /// Print the smallest noise multiplier that spends at most this epsilon.
    #[arg(long)]
    target_epsilon: Option<f64>,
    /// Number of steps.
    #[arg(long, required_unless_present = "epochs", conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Number of epochs of round(1 / q) steps, instead of --steps.
    #[arg(long)]
    epochs: Option<u64>,
    /// Delta of (epsilon, delta).
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// Accountant: pld (tight) or rdp (Opacus's).
    #[arg(long, value_enum, ignore_case = true, hide_possible_values = true,
          default_value_t = AccountantKind::Pld)]
    accountant: AccountantKind,
}

/// A checked `trainer privacy` request.
#[derive(Debug)]
pub struct PrivacyQuery {
    /// q.
    pub rate: f64,
    /// sigma, when given.
    pub noise_multiplier: Option<f64>,
    /// The target epsilon, when given.
    pub target_epsilon: Option<f64>,
    /// T.
    pub steps: u64,
    /// delta.
    pub delta: f64,
    /// The accountant.
    pub accountant: AccountantKind,
}

impl TryFrom<PrivacyArgs> for PrivacyQuery {
    type Error = anyhow::Error;

    fn try_from(a: PrivacyArgs) -> anyhow::Result<Self> {
        if !(a.sampling_rate > 0.0 && a.sampling_rate <= 1.0) {
            bail!("--sampling-rate {} must be in (0, 1]", a.sampling_rate);
        }
        if !(a.delta > 0.0 && a.delta < 1.0) {
            bail!("--delta {} must be in (0, 1)", a.delta);
        }
        let steps = match (a.steps, a.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => e * ((1.0 / a.sampling_rate).round() as u64).max(1),
            (None, None) => unreachable!("clap requires --steps or --epochs"),
        };
        Ok(PrivacyQuery {
            rate: a.sampling_rate,
            noise_multiplier: a.noise_multiplier,
            target_epsilon: a.target_epsilon,
            steps,
            delta: a.delta,
            accountant: a.accountant,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cluster::Cluster;

    use super::*;

    fn train(args: &[&str]) -> anyhow::Result<TrainConfig> {
        launch(args).map(|l| l.config)
    }

    fn launch(args: &[&str]) -> anyhow::Result<Launch> {
        let cli = Cli::try_parse_from(std::iter::once("trainer").chain(args.iter().copied()))?;
        assert!(cli.command.is_none());
        Launch::try_from(cli.train)
    }

    fn privacy(args: &[&str]) -> anyhow::Result<PrivacyQuery> {
        let cli = Cli::try_parse_from(
            ["trainer", "privacy"]
                .into_iter()
                .chain(args.iter().copied()),
        )?;
        match cli.command {
            Some(Command::Privacy(p)) => PrivacyQuery::try_from(p),
            _ => panic!("privacy subcommand"),
        }
    }

    fn audit(args: &[&str]) -> anyhow::Result<trainer::audit::AuditConfig> {
        let cli =
            Cli::try_parse_from(["trainer", "audit"].into_iter().chain(args.iter().copied()))?;
        match cli.command {
            Some(Command::Audit(a)) => trainer::audit::AuditConfig::try_from(*a),
            _ => panic!("audit subcommand"),
        }
    }

    /// `--test-accuracy-release` and `--test-accuracy-noise`: noisy at 10 by default; exact
    /// and withheld by name; a noise that is not positive and finite is refused, naming it.
    #[test]
    fn the_held_out_release_flags() {
        assert_eq!(
            train(&[]).unwrap().test_release,
            TestRelease::Noisy {
                noise_multiplier: 10.0
            }
        );
        assert_eq!(
            train(&["--test-accuracy-noise", "3"]).unwrap().test_release,
            TestRelease::Noisy {
                noise_multiplier: 3.0
            }
        );
        for (name, want) in [
            ("exact-not-covered", TestRelease::ExactNotCovered),
            ("withheld", TestRelease::Withheld),
        ] {
            let c = train(&["--test-accuracy-release", name]).unwrap();
            assert_eq!(c.test_release, want);
            assert_eq!(c.test_release_noise(), None, "{name}: nothing composed");
        }
        for bad in [
            "--test-accuracy-noise=0",
            "--test-accuracy-noise=-1",
            "--test-accuracy-noise=inf",
        ] {
            let e = train(&[bad]).unwrap_err();
            assert!(
                format!("{e:#}").contains("--test-accuracy-noise"),
                "{bad}: {e:#}"
            );
        }
        assert!(train(&["--test-accuracy-release", "exact"]).is_err());
        // Nothing to release without a test split, or without DP.
        assert_eq!(
            train(&["--test-fraction", "0"])
                .unwrap()
                .test_release_noise(),
            None
        );
        assert_eq!(train(&["--no-dp"]).unwrap().test_release_noise(), None);
    }

    #[test]
    fn audit_takes_the_training_flags_and_its_own() {
        let a = audit(&[]).unwrap();
        assert_eq!((a.canaries, a.alpha), (1000, 0.05));
        assert_eq!(a.kind, trainer::audit::CanaryKind::Gradient);
        assert_eq!(a.score, ScoreKind::Llr);
        assert_eq!((a.quiet_coordinates, a.score_window), (None, None));
        // Nothing is written unless asked: not the model, not the metrics.
        assert!(a.save.is_none() && a.train.save.is_none() && a.train.metrics_out.is_none());
        let a = audit(&[
            "--canaries",
            "500",
            "--canary-kind",
            "input",
            "--alpha",
            "0.01",
            "--batch-size",
            "64",
            "--noise-multiplier",
            "0",
            "--save",
            "a.safetensors",
            "--seed",
            "3",
            "--score",
            "sum",
            "--quiet-coordinates",
            "100",
            "--score-window",
            "4",
        ])
        .unwrap();
        assert_eq!((a.canaries, a.alpha), (500, 0.01));
        assert_eq!(a.score, ScoreKind::Sum);
        assert_eq!((a.quiet_coordinates, a.score_window), (Some(100), Some(4)));
        assert_eq!(a.kind, trainer::audit::CanaryKind::Input);
        assert_eq!((a.train.batch_size, a.train.seed), (64, Some(3)));
        assert_eq!(a.save, Some("a.safetensors".into()));
        assert!(
            a.train.save.is_none(),
            "the audit saves its model itself, marked"
        );
        for (args, flag) in [
            (&["--canary-kind", "white"][..], "--canary-kind"),
            (&["--alpha", "0"][..], "--alpha"),
            (&["--canaries", "0"][..], "--canaries"),
            (&["--quiet-coordinates", "0"][..], "--quiet-coordinates"),
            (&["--score-window", "0"][..], "--score-window"),
            (&["--no-dp"][..], "--no-dp"),
            (&["--workers", "2"][..], "--workers"),
            (&["--microbatch-size", "3"][..], "--microbatch-size"),
        ] {
            let err = format!("{:#}", audit(args).unwrap_err());
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        // A plain run still writes its model and metrics where it always did.
        let c = train(&[]).unwrap();
        assert_eq!(c.save, Some("run/model.safetensors".into()));
    }

    /// `--preset seed` gives the seed project's settings, and a flag given still wins; the help
    /// prints each preset's value of each flag it sets, as the presets hold them.
    #[test]
    fn the_seed_preset_is_one_flag_away_and_flags_win() {
        let c = train(&["--preset", "seed"]).unwrap();
        let mut want = TrainConfig::with_preset(Location::parse("shards").unwrap(), Preset::Seed);
        want.metrics_out = Some("run/metrics.jsonl".into());
        want.save = Some("run/model.safetensors".into());
        want.progress = true;
        assert_eq!(c, want);
        let c = train(&["--preset", "seed", "--lr", "0.2", "--auto-bounds", "on"]).unwrap();
        assert_eq!((c.lr, c.optimizer), (0.2, OptimizerKind::Sgd));
        assert!(c.features.auto_bounds.is_some());
        let c = train(&["--auto-bounds", "off", "--bounds-epsilon", "0.3"]).unwrap();
        assert_eq!(c.features.auto_bounds, None);
        let c = train(&["--bounds-epsilon", "0.3", "--bounds-quantiles", "0.1:0.9"]).unwrap();
        let q = c.features.auto_bounds.unwrap();
        assert_eq!((q.low, q.high, q.epsilon), (0.1, 0.9, 0.3));
        for (args, flag) in [
            (&["--bounds-quantiles", "0.9"][..], "--bounds-quantiles"),
            (&["--bounds-quantiles", "0.9:0.1"][..], "--bounds-quantiles"),
            (&["--bounds-epsilon", "0"][..], "--bounds-epsilon"),
        ] {
            let err = format!("{:#}", train(args).unwrap_err());
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let help: String = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let (d, s) = (Preset::Default.values(), Preset::Seed.values());
        let on_off = |b: bool| if b { "on" } else { "off" };
        for want in [
            format!("[default: {}; --preset seed: {}]", d.epochs, s.epochs),
            format!(
                "[default: {}; --preset seed: {}]",
                d.batch_size, s.batch_size
            ),
            format!("[default: {}; --preset seed: {}]", d.lr, s.lr),
            format!("[default: {}; --preset seed: {}]", d.optimizer, s.optimizer),
            format!(
                "[default: {}; --preset seed: {}]",
                d.l2_norm_clip, s.l2_norm_clip
            ),
            format!(
                "[default: {}; --preset seed: {}]",
                d.noise_multiplier, s.noise_multiplier
            ),
            format!(
                "[default: {}; --preset seed: {}]",
                on_off(d.auto_bounds.is_some()),
                on_off(s.auto_bounds.is_some())
            ),
        ] {
            assert!(help.contains(&want), "--help lacks {want}");
        }
    }

    #[test]
    fn bare_trainer_is_the_default_preset_on_shards() {
        let c = train(&[]).unwrap();
        let mut want = TrainConfig::new(Location::parse("shards").unwrap());
        want.metrics_out = Some("run/metrics.jsonl".into());
        want.save = Some("run/model.safetensors".into());
        want.progress = true;
        assert_eq!(c, want);
    }

    #[test]
    fn each_flag_reaches_the_config() {
        let c = train(&[
            "--data",
            "s3://b/p",
            "--epochs",
            "3",
            "--batch-size",
            "64",
            "--lr",
            "0.1",
            "--optimizer",
            "adam",
            "--l2-norm-clip",
            "1.5",
            "--target-epsilon",
            "3",
            "--delta",
            "1e-6",
            "--hidden",
            "64,32",
            "--test-fraction",
            "0.1",
            "--split-seed",
            "4",
            "--seed",
            "5",
            "--device",
            "cuda:1",
            "--microbatch-size",
            "3",
            "--attack-feature",
            "sex",
            "--attack-rows",
            "100",
            "--metrics-out",
            "m.jsonl",
            "--save",
            "m.safetensors",
            "--checkpoint-dir",
            "ck",
            "--resume",
            "--profile",
            "--intra-op-threads",
            "2",
            "--no-progress",
            "--feature-bounds",
            "age=18:100",
            "--feature-categories",
            "educ=1..16:other",
            "--standardize",
            "income=-20000:1000000",
            "--standardize-noise",
            "4",
        ])
        .unwrap();
        let mut features = FeatureSpec::new();
        features.standardize_noise = 4.0;
        features.auto_bounds = Preset::Default.values().auto_bounds;
        features.add_bounds("age=18:100").unwrap();
        features.add_categories("educ=1..16:other").unwrap();
        features.add_standardize("income=-20000:1000000").unwrap();
        assert_eq!(c.features, features);
        assert_eq!(
            c.data,
            Location::S3 {
                bucket: "b".into(),
                key: "p".into()
            }
        );
        assert_eq!((c.epochs, c.batch_size, c.lr), (3, 64, 0.1));
        assert_eq!(c.optimizer, OptimizerKind::Adam);
        assert_eq!(c.hidden, [64, 32]);
        assert_eq!((c.test_fraction, c.split_seed, c.seed), (0.1, 4, Some(5)));
        assert_eq!(c.device, DeviceSpec::Cuda(1));
        assert_eq!(c.attack_feature.as_deref(), Some("sex"));
        assert_eq!(c.attack_rows, 100);
        assert_eq!(c.metrics_out, Some("m.jsonl".into()));
        assert_eq!(c.save, Some("m.safetensors".into()));
        assert_eq!(
            c.checkpoint,
            Some(CheckpointConfig {
                dir: "ck".into(),
                resume: true
            })
        );
        assert!(c.profile && !c.progress);
        assert_eq!(c.intra_op_threads, 2);
        let Privacy::Private(dp) = c.privacy else {
            panic!("private")
        };
        assert_eq!(dp.l2_norm_clip, 1.5);
        assert_eq!(dp.noise, NoiseSpec::TargetEpsilon(3.0));
        assert_eq!(dp.delta, 1e-6);
        assert_eq!(dp.grad_sample, GradSample::Microbatch(3));
    }

    #[test]
    fn no_dp_noise_and_attack_switches() {
        assert_eq!(train(&["--no-dp"]).unwrap().privacy, Privacy::NonPrivate);
        assert!(train(&["--no-dp", "--noise-multiplier", "1"]).is_err());
        assert!(train(&["--noise-multiplier", "1", "--target-epsilon", "2"]).is_err());
        let c = train(&[
            "--noise-multiplier",
            "1.3",
            "--hidden",
            "",
            "--attack-feature",
            "none",
        ])
        .unwrap();
        let Privacy::Private(dp) = c.privacy else {
            panic!("private")
        };
        assert_eq!(dp.noise, NoiseSpec::Multiplier(1.3));
        assert!(c.hidden.is_empty() && c.attack_feature.is_none());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        for (args, flag) in [
            (&["--optimizer", "lbfgs"][..], "--optimizer"),
            (&["--hidden", "50,x"][..], "--hidden"),
            (&["--device", "gpu"][..], "--device"),
            (&["--accountant", "prv"][..], "--accountant"),
            (&["--test-fraction", "1.5"][..], "--test-fraction"),
            (&["--microbatch-size", "0"][..], "--microbatch-size"),
            (&["--lr", "inf"][..], "--lr inf must be finite"),
            (&["--lr", "NaN"][..], "--lr NaN must be finite"),
            (&["--hidden", "1000000000"][..], "--hidden width 1000000000"),
            (&["--workers", "100000"][..], "--workers 100000"),
            (&["--threads", "100000"][..], "--threads 100000"),
            (&["--batch-size", "4000000000"][..], "--batch-size"),
            (
                &["--peer-timeout", "18446744073709551615"][..],
                "--peer-timeout",
            ),
        ] {
            let err = format!("{:#}", train(args).unwrap_err());
            assert!(err.contains(flag), "{args:?}: {err}");
        }
        assert!(
            Cli::try_parse_from(["trainer", "--resume"]).is_err(),
            "--resume needs a dir"
        );
    }

    /// `trainer --help` says what epsilon protects: the unit, delta, accountant, the seed
    /// policy, and that the metrics' non-private part and the manifest are not for publishing.
    #[test]
    fn help_states_the_privacy_unit_and_what_is_not_covered() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for phrase in [
            "one line of the input file",
            "--privacy-unit",
            "--delta",
            "--accountant",
            "--seed",
            "non_private",
            "_manifest.json",
            "treated as public",
            "--population",
            "--test-accuracy-release",
            "exact, not released",
        ] {
            assert!(help.contains(phrase), "--help lacks {phrase}: {help}");
        }
    }

    #[test]
    fn privacy_takes_steps_or_epochs_and_sigma_or_target() {
        let q = privacy(&[
            "--sampling-rate",
            "0.04",
            "--noise-multiplier",
            "1.5",
            "--steps",
            "2250",
        ])
        .unwrap();
        assert_eq!(
            (q.rate, q.noise_multiplier, q.steps, q.delta),
            (0.04, Some(1.5), 2250, 1e-5)
        );
        let q = privacy(&[
            "--sampling-rate",
            "0.04",
            "--target-epsilon",
            "2",
            "--epochs",
            "3",
            "--accountant",
            "pld",
        ])
        .unwrap();
        assert_eq!(
            (q.target_epsilon, q.steps, q.accountant),
            (Some(2.0), 75, AccountantKind::Pld)
        );
        assert!(privacy(&["--sampling-rate", "0.04", "--steps", "10"]).is_err());
        assert!(privacy(&["--sampling-rate", "0.04", "--noise-multiplier", "1"]).is_err());
        assert!(
            privacy(&[
                "--sampling-rate",
                "2",
                "--noise-multiplier",
                "1",
                "--steps",
                "1"
            ])
            .is_err()
        );
    }

    fn sweep(args: &[&str]) -> anyhow::Result<SweepConfig> {
        let cli =
            Cli::try_parse_from(["trainer", "sweep"].into_iter().chain(args.iter().copied()))?;
        match cli.command {
            Some(Command::Sweep(s)) => SweepConfig::try_from(*s),
            _ => panic!("sweep subcommand"),
        }
    }

    #[test]
    fn sweep_takes_a_list_of_epsilons_and_the_training_flags() {
        let s = sweep(&[]).unwrap();
        assert_eq!(s.target_epsilons, SWEEP_EPSILONS);
        assert_eq!(
            (s.repeats, s.out.as_path()),
            (3, std::path::Path::new("sweep"))
        );
        assert!(s.progress && !s.overwrite);
        let s = sweep(&[
            "--target-epsilon",
            "0.5,2",
            "--repeats",
            "2",
            "--epochs",
            "4",
            "--seed",
            "9",
            "--accountant",
            "rdp",
            "--out",
            "x",
            "--overwrite",
            "--no-progress",
        ])
        .unwrap();
        assert_eq!(s.target_epsilons, [0.5, 2.0]);
        assert_eq!((s.repeats, s.base.epochs, s.base.seed), (2, 4, Some(9)));
        assert!(s.overwrite && !s.progress);
        for (args, said) in [
            (&["--no-dp"][..], "--no-dp"),
            (&["--noise-multiplier", "1"][..], "--noise-multiplier"),
            (&["--workers", "2"][..], "--workers"),
            (&["--checkpoint-dir", "ck"][..], "--checkpoint-dir"),
            (&["--target-epsilon", "1,0"][..], "--target-epsilon 0"),
            (&["--repeats", "0"][..], "--repeats"),
            (&["--lr", "inf"][..], "--lr"),
        ] {
            let err = format!("{:#}", sweep(args).unwrap_err());
            assert!(err.contains(said), "{args:?}: {err}");
        }
        // A training run takes one epsilon.
        let err = format!("{:#}", train(&["--target-epsilon", "1,2"]).unwrap_err());
        assert!(err.contains("trainer sweep"), "{err}");
    }

    #[test]
    fn report_flags_reach_the_config() {
        let parse = |args: &[&str]| -> ReportConfig {
            let cli = Cli::try_parse_from(
                ["trainer", "report"]
                    .into_iter()
                    .chain(args.iter().copied()),
            )
            .unwrap();
            match cli.command {
                Some(Command::Report(r)) => r.into(),
                _ => panic!("report subcommand"),
            }
        };
        let c = parse(&["run/metrics.jsonl"]);
        assert_eq!(c.out, PathBuf::from("run/report.html"));
        assert!(!c.public && !c.overwrite && c.audit.is_none());
        let c = parse(&[
            "m.jsonl",
            "--out",
            "p.html",
            "--audit",
            "a.jsonl",
            "--public",
            "--overwrite",
        ]);
        assert_eq!(
            (c.out, c.audit, c.public, c.overwrite),
            ("p.html".into(), Some("a.jsonl".into()), true, true)
        );
        assert!(
            Cli::try_parse_from(["trainer", "report"]).is_err(),
            "RUN is required"
        );
    }

    /// The `--s3-*` flags reach the store options the shards are read with; without them,
    /// the storage layer's defaults.
    #[test]
    fn s3_flags_set_the_store_options() {
        assert_eq!(train(&[]).unwrap().s3, shards::S3Options::default());
        let c = train(&[
            "--s3-read-timeout",
            "4",
            "--s3-max-attempts",
            "1",
            "--s3-concurrency",
            "2",
        ])
        .unwrap();
        assert_eq!(c.s3.read_timeout, std::time::Duration::from_secs(4));
        assert_eq!((c.s3.max_attempts, c.s3.concurrency), (Some(1), 2));
        assert!(train(&["--s3-read-timeout", "0"]).is_err());
    }

    #[test]
    fn workers_threads_and_hostfile_make_the_cluster() {
        let l = launch(&["--threads", "3"]).unwrap();
        assert_eq!(l.config.cluster, Cluster::Single { threads: 3 });
        assert!(l.spawn.is_none());
        let l = launch(&["--workers", "2", "--threads", "2"]).unwrap();
        let handoff = l.spawn.expect("starts the other process");
        assert_eq!(handoff.processes(), 2);
        assert_eq!(
            (
                l.config.cluster.process(),
                l.config.cluster.processes(),
                l.config.cluster.threads()
            ),
            (0, 2, 2)
        );
        assert!(l.config.cluster.security().is_keyed());
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "a:1\nb:2\n").unwrap();
        let h = hosts.to_str().unwrap();
        let err = launch(&["--hostfile", h, "--process", "1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cluster-key-file"), "{err}");
        let l = launch(&[
            "--hostfile",
            h,
            "--process",
            "1",
            "--peer-timeout",
            "5",
            "--insecure-plaintext",
        ])
        .unwrap();
        assert!(
            l.spawn.is_none() && !l.config.progress,
            "process 1 shows no progress"
        );
        assert_eq!(l.config.cluster.process(), 1);
        assert_eq!(l.config.peer_timeout, Duration::from_secs(5));
        for (args, flag) in [
            (&["--hostfile", h][..], "--process"),
            (&["--hostfile", h, "--process", "2"][..], "--process 2"),
            (
                &["--hostfile", h, "--process", "0", "--workers", "3"][..],
                "--workers 3",
            ),
            (&["--process", "1"][..], "--hostfile"),
            (&["--threads", "0"][..], "--threads"),
            (
                &["--workers", "2", "--microbatch-size", "3"][..],
                "--microbatch-size",
            ),
        ] {
            let err = format!("{:#}", launch(args).unwrap_err());
            assert!(err.contains(flag), "{args:?}: {err}");
        }
    }

    /// The cluster and S3 flags read as each group alone reads them (and as `pipeline` reads
    /// them), in training, an audit and a sweep.
    #[test]
    fn shared_flags_read_alike() {
        use fastdp_tests::flags;
        for head in [
            &["trainer"][..],
            &["trainer", "audit"],
            &["trainer", "sweep"],
        ] {
            let argv = [head, flags::CLUSTER, flags::S3].concat();
            let a = match Cli::try_parse_from(&argv).unwrap() {
                Cli {
                    command: Some(Command::Audit(a)),
                    ..
                } => a.train,
                Cli {
                    command: Some(Command::Sweep(s)),
                    ..
                } => s.train,
                Cli { train, .. } => train,
            };
            flags::assert_cluster(&a.cluster);
            flags::assert_s3(&a.s3);
        }
        let a = Cli::try_parse_from(["trainer"]).unwrap().train;
        assert_eq!(a.cluster.peer_timeout, 60, "the trainer's own default");
    }

    /// Optimizer, accountant, device and canaries are typed by clap, in any case where they
    /// were before.
    #[test]
    fn choices_are_typed() {
        let c = train(&[
            "--optimizer",
            "RMSprop",
            "--accountant",
            "RDP",
            "--device",
            "cuda",
        ])
        .unwrap();
        assert_eq!(
            (c.optimizer, c.device),
            (OptimizerKind::Rmsprop, DeviceSpec::AnyCuda)
        );
        let Privacy::Private(dp) = c.privacy else {
            panic!("private")
        };
        assert_eq!(dp.accountant, AccountantKind::Rdp);
        for (args, choices) in [
            (&["--optimizer", "lbfgs"][..], "sgd, adam, adagrad, rmsprop"),
            (&["--accountant", "prv"][..], "rdp, pld"),
            (&["--device", "gpu"][..], "cpu, cuda or cuda:N"),
            (&["audit", "--canary-kind", "white"][..], "gradient, input"),
            (&["audit", "--score", "max"][..], "llr, sum"),
        ] {
            let err = Cli::try_parse_from(std::iter::once("trainer").chain(args.iter().copied()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(args[args.len() - 2]) && err.contains(choices),
                "{err}"
            );
        }
    }
}
