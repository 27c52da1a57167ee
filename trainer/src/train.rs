//! `trainer::run`: load the shards, wire sampler, accountant and DP step together, train for
//! the configured epochs, report each one, checkpoint, and save the model.
//!
//! A run is data-parallel over the workers of its cluster (one worker for the plain trainer:
//! the same code path). Each worker loads a contiguous block of the shards; training examples
//! are numbered globally in (part, record) order, which does not depend on the workers, and
//! every worker draws, from the same stream, only the members of the Poisson sample of those
//! numbers that fall in its own block (the sampler's blocks of examples have positions of their
//! own in the stream, so this is the single-worker sample restricted to the share). Each step the workers' clipped gradient sums are added up in worker order (worker 0's
//! share carries the step's noise, so it is added exactly once), and every worker applies the
//! same update. The model is the same for any number of workers up to the order of the float
//! additions, and the accountant sees exactly the single-process mechanism.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accountant::PrivacySpent;
use cluster::AllReduce;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tch::Tensor;
use timely::worker::Worker;

use crate::attack::{Attack, Imputer};
use crate::audit::canary::Canaries;
use crate::batches::BatchQueue;
use crate::checkpoint::{self, CheckpointMeta};
use crate::config::{DpConfig, NoiseRng, NoiseSpec, Privacy, Sampling, TrainConfig};
use crate::data::Data;
use crate::device::{self, synchronize};
use crate::dp_step::{DpStep, StepPrivacy, microbatch_of};
use crate::evaluate::{self, Totals};
use crate::export::{self, ModelCard};
use crate::features::Standardizer;
use crate::metrics::{EpochMetrics, MetricsLog, NonPrivate, thread_cpu_ns};
use crate::mlp::{Mlp, Shape};
use crate::noise::NoiseSource;
use crate::optim::Optimizer;
use crate::privacy::Accounting;
use crate::profile::{Phase, Profiler};
use crate::publish;
use crate::sampler::PoissonSampler;
use crate::settings::Settings;
use crate::{Error, Result};

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    /// Every epoch's metrics (resumed epochs included, with their public part only: a
    /// checkpoint keeps no training-set statistic).
    pub metrics: Vec<EpochMetrics>,
    /// The mechanism's parameters (absent with `--no-dp`).
    pub accounting: Option<Accounting>,
    /// The budget spent by the whole run.
    pub spent: Option<PrivacySpent>,
    /// Steps taken in all.
    pub steps: u64,
    /// The trained model.
    pub model: Mlp,
}

/// Number of steps in an epoch: round(N / B), at least 1 (3750 for the seed's 960,000 rows
/// at batch 256).
pub fn steps_per_epoch(train_rows: usize, batch_size: u32) -> u64 {
    ((train_rows as f64 / f64::from(batch_size)).round() as u64).max(1)
}

/// What the mechanism takes from the size of the training split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingPlan {
    /// The sampling rate q = min(B / size, 1).
    pub rate: f64,
    /// round(size / B), at least 1.
    pub steps_per_epoch: u64,
    /// q * size: what the noisy sum is divided by (B, or the size when B is above it).
    pub expected_batch: f64,
}

impl SamplingPlan {
    /// The plan at expected batch `batch_size` for a training split of `train_rows` records,
    /// or of the public size `population` (`--population`) when given: then nothing in it
    /// depends on the realized count, which is what neighbouring datasets differ in.
    pub fn new(train_rows: usize, batch_size: u32, population: Option<u64>) -> Self {
        let size = population.map_or(train_rows, |p| p as usize);
        let rate = (f64::from(batch_size) / size.max(1) as f64).min(1.0);
        SamplingPlan {
            rate,
            steps_per_epoch: steps_per_epoch(size, batch_size),
            expected_batch: rate * size as f64,
        }
    }
}

/// Where the sampler's randomness comes from: the run's seed, or (the default) a secret key
/// drawn from the OS by worker 0 and shared with the others, so all draw the same sample.
#[derive(Debug, Clone, Copy)]
enum SamplerKey {
    Seed(u64),
    Secret([u8; 32]),
}

/// The sampler's random stream for `epoch`: stream `epoch + 1` of the key (stream 0 of the seed
/// initialises the model). Per-epoch streams make a resumed run draw exactly the batches an
/// uninterrupted one would.
fn sampler_rng(key: SamplerKey, epoch: u32) -> ChaCha20Rng {
    let mut rng = match key {
        SamplerKey::Seed(seed) => ChaCha20Rng::seed_from_u64(seed),
        SamplerKey::Secret(key) => ChaCha20Rng::from_seed(key),
    };
    rng.set_stream(u64::from(epoch) + 1);
    rng
}

/// Trains as `config` says, on every worker of `config.cluster` in this process; worker 0 prints
/// one line per epoch on stdout (and the profile with `--profile`), a progress bar on stderr
/// when enabled, and writes the metrics, checkpoints and model.
///
/// Returns the report of this process's first worker (every worker ends with the same model;
/// only worker 0's report includes the epochs of a resumed checkpoint). When workers fail, the
/// first error that is a cause is returned, not another worker's report of its leaving.
pub fn run(config: &TrainConfig) -> Result<RunReport> {
    run_on(config, None, None)
}

/// [`run`] on shards already loaded in this process (`trainer sweep` loads them once for all
/// its runs): the same loop, each worker taking its share from `loaded` instead of reading it.
pub fn run_loaded(config: &TrainConfig, loaded: &Arc<Loaded>) -> Result<RunReport> {
    loaded.check(config)?;
    run_on(config, Some(Arc::clone(loaded)), None)
}

/// [`run`], with an audit's canaries inserted into the run (`trainer audit`, one worker): the
/// same loop, sampler, clipping, noise and accountant; the canaries only add rows, or gradients
/// for the sampled canary rows, and read the noisy gradients the steps produce.
pub(crate) fn run_with_canaries(
    config: &TrainConfig,
    canaries: Option<Arc<Mutex<Canaries>>>,
) -> Result<RunReport> {
    run_on(config, None, canaries)
}

fn run_on(
    config: &TrainConfig,
    loaded: Option<Arc<Loaded>>,
    canaries: Option<Arc<Mutex<Canaries>>>,
) -> Result<RunReport> {
    config.validate()?;
    if config.cluster.process() == 0 {
        check_outputs(config)?;
    }
    tch::set_num_threads(config.intra_op_threads as i32);
    let shared = Arc::new(config.clone());
    // A peer whose machine stops acknowledging (link or machine down) is named unreachable
    // after half the peer timeout, before a round's own timeout, as in the pipeline.
    let unreachable = (config.peer_timeout / 2).max(Duration::from_secs(1));
    let guards = cluster::execute_watching(
        &config.cluster,
        config.connect_timeout,
        Some(unreachable),
        move |worker| {
            let _no_grad = tch::no_grad_guard();
            train_worker(&shared, worker, loaded.as_deref(), canaries.as_deref())
        },
    )?;
    let first = config.cluster.process() * config.cluster.threads();
    let mut report = None;
    let mut errors = Vec::new();
    for (i, result) in guards.join().into_iter().enumerate() {
        match result {
            Ok(Ok(r)) => {
                report.get_or_insert(r);
            }
            Ok(Err(e)) => errors.push(e),
            Err(message) => errors.push(Error::WorkerPanicked {
                worker: first + i,
                message,
            }),
        }
    }
    if let Some(i) = errors.iter().position(|e| !e.is_peer_gone()) {
        return Err(errors.swap_remove(i));
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(report.expect("every worker returned a report"))
}

/// The all-reduces a worker takes part in, built in the same order on every worker.
struct Collectives {
    /// Row counts, keys and checkpoint positions (exact).
    counts: AllReduce<u64>,
    /// Gradients and parameters.
    grads: AllReduce<f32>,
    /// Evaluation totals and CPU seconds.
    totals: AllReduce<f64>,
    host: Vec<f32>,
}

impl Collectives {
    fn new(worker: &mut Worker, config: &TrainConfig) -> Self {
        Collectives {
            // Workers load their shards at their own pace: the first rounds may wait long.
            counts: AllReduce::new(worker, config.connect_timeout),
            grads: AllReduce::new(worker, config.peer_timeout),
            totals: AllReduce::new(worker, config.peer_timeout),
            host: Vec::new(),
        }
    }

    /// Replaces the flat tensor `t` (on any device) by its sum over the workers, or, with
    /// `root`, by worker `root`'s.
    fn reduce_tensor(
        &mut self,
        worker: &mut Worker,
        t: &Tensor,
        root: Option<usize>,
    ) -> Result<()> {
        let n = t.numel();
        self.host.resize(n, 0.0);
        t.f_copy_data(&mut self.host, n)?;
        match root {
            None => self.grads.sum(worker, &mut self.host)?,
            Some(root) => self.grads.broadcast(worker, root, &mut self.host)?,
        }
        t.shallow_clone()
            .f_copy_(&Tensor::from_slice(&self.host).to_device(t.device()))?;
        Ok(())
    }
}

/// The shards of a single-process run, loaded once for several runs with the same data, split
/// and workers ([`run_loaded`]): each worker's share on its device.
#[derive(Debug)]
pub struct Loaded {
    /// What the shares were loaded for: data, split, feature spec, device, threads.
    key: String,
    shares: Vec<Mutex<Data>>,
}

impl Loaded {
    /// Loads every worker's share of `config.data` as `config`'s run would (one process only).
    pub fn load(config: &TrainConfig) -> Result<Self> {
        if config.cluster.processes() != 1 {
            return Err(Error::Config(
                "shards loaded once serve the runs of one process (no --workers, --hostfile)"
                    .into(),
            ));
        }
        let threads = config.cluster.threads();
        let shares = (0..threads)
            .map(|me| {
                let device = config.device.resolve_for(me)?;
                let data = Data::load_share(
                    &config.data,
                    me,
                    threads,
                    config.test_fraction,
                    config.split_seed,
                    &config.features,
                    device,
                )?;
                Ok(Mutex::new(data))
            })
            .collect::<Result<_>>()?;
        Ok(Loaded {
            key: Self::key(config),
            shares,
        })
    }

    fn key(config: &TrainConfig) -> String {
        format!(
            "{} {} {} {:?} {:?} {:?}",
            config.data,
            config.test_fraction,
            config.split_seed,
            config.features,
            config.device,
            config.cluster
        )
    }

    /// Refuses a run whose data, split, device or workers are not those loaded.
    fn check(&self, config: &TrainConfig) -> Result<()> {
        if Self::key(config) == self.key {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "the shards were loaded for {}, not for this run's {}",
                self.key,
                Self::key(config)
            )))
        }
    }

    /// A copy of worker `me`'s share: a run changes its data in place (standardization), so
    /// each run gets its own tensors.
    fn share(&self, me: usize) -> Result<Data> {
        self.shares[me]
            .lock()
            .expect("a share is only copied under its lock")
            .copy()
    }

    /// The loaded shares (worker order).
    pub fn with_shares<T>(&self, f: impl FnOnce(&[&Data]) -> T) -> T {
        let guards: Vec<_> = self
            .shares
            .iter()
            .map(|s| s.lock().expect("a share is only copied under its lock"))
            .collect();
        let shares: Vec<&Data> = guards.iter().map(|g| &**g).collect();
        f(&shares)
    }
}

/// One worker's run: see the module documentation.
fn train_worker(
    config: &TrainConfig,
    worker: &mut Worker,
    loaded: Option<&Loaded>,
    canaries: Option<&Mutex<Canaries>>,
) -> Result<RunReport> {
    let mut coll = Collectives::new(worker, config);
    let (me, workers) = (worker.index(), worker.peers());
    let lead = me == 0;
    let device = config.device.resolve_for(me % config.cluster.threads())?;

    let mut data = match loaded {
        Some(loaded) => loaded.share(me)?,
        None => Data::load_share(
            &config.data,
            me,
            workers,
            config.test_fraction,
            config.split_seed,
            &config.features,
            device,
        )?,
    };
    if canaries.is_some() && !data.transform.standardized.is_empty() {
        // Its input canaries are crafted model inputs, appended before the release is drawn:
        // standardizing would move them.
        return Err(Error::Config(
            "trainer audit does not take --standardize: give those columns public bounds \
             (--feature-bounds) instead"
                .into(),
        ));
    }
    // An audit's input canaries are rows appended to the training set; its gradient canaries
    // are sampled as rows numbered after them (`extra`), with no features.
    let extra = match canaries {
        Some(c) => lock(c).insert(&mut data)?,
        None => 0,
    };
    // Everyone's train and test counts (and column agreement), so each worker knows where its
    // examples sit in the global order.
    let names_hash = data
        .feature_names
        .iter()
        .chain([&data.label_name])
        .fold(0u64, |h, name| {
            name.bytes().fold(shards::splitmix64(h), |h, b| {
                shards::splitmix64(h ^ u64::from(b))
            })
        });
    let mut counts = vec![0u64; 2 * workers + 2];
    counts[me] = (data.train.len() + extra) as u64;
    counts[workers + me] = data.test.len() as u64;
    counts[2 * workers] = data.train.width() as u64;
    counts[2 * workers + 1] = names_hash;
    coll.counts.sum(worker, &mut counts)?;
    coll.counts.set_timeout(config.peer_timeout);
    if counts[2 * workers] != (workers * data.train.width()) as u64
        || counts[2 * workers + 1] != names_hash.wrapping_mul(workers as u64)
    {
        return Err(Error::Data {
            location: config.data.to_string(),
            reason: "the shards do not all have the same columns".into(),
        });
    }
    let n = counts[..workers].iter().sum::<u64>() as usize;
    let n_test = counts[workers..2 * workers].iter().sum::<u64>() as usize;
    let share_start = counts[..me].iter().sum::<u64>() as i64;
    let share = share_start..share_start + (data.train.len() + extra) as i64;
    if n == 0 {
        return Err(Error::Data {
            location: config.data.to_string(),
            reason: format!(
                "no training records ({n_test} test records, test fraction {})",
                config.test_fraction
            ),
        });
    }

    // Every process must run the same mechanism on the same data: compare every setting that
    // matters before anything else is exchanged.
    let columns: Vec<String> = [&data.label_name]
        .into_iter()
        .chain(&data.feature_names)
        .cloned()
        .collect();
    let settings = Settings::new(config, data.fingerprint, n as u64, columns);
    settings.agree(me, workers, config.cluster.threads(), |v| {
        Ok(coll.counts.sum(worker, v)?)
    })?;
    report_transform(&data, lead, |v| Ok(coll.counts.sum(worker, v)?))?;

    // The attack runs on the run's leading training rows and leading held-out rows; this worker
    // holds those in its ranges.
    let test_start = counts[workers..workers + me].iter().sum::<u64>() as usize;
    let attack = match &config.attack_feature {
        Some(name) => Some(Attacks::new(
            &data,
            name,
            config.attack_rows,
            (share.start as usize, test_start),
            n_test,
            |v| Ok(coll.totals.sum(worker, v)?),
        )?),
        None => None,
    };

    // The sampling key and the initialisation: from the seed, or from the OS (worker 0 draws
    // them and sends them to the others; they are written nowhere).
    let (key, init_seed) = match config.seed {
        Some(seed) => (SamplerKey::Seed(seed), seed),
        None => {
            let mut words = [0u64; 5];
            if lead {
                let mut os = ChaCha20Rng::try_from_rng(&mut SysRng)
                    .map_err(|e| Error::Config(format!("no OS entropy for the run's keys: {e}")))?;
                words = std::array::from_fn(|_| os.next_u64());
            }
            coll.counts.broadcast(worker, 0, &mut words)?;
            let mut bytes = [0u8; 32];
            for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
            (SamplerKey::Secret(bytes), words[4])
        }
    };
    let plan = SamplingPlan::new(n, config.batch_size, config.population);
    let per_epoch = plan.steps_per_epoch;
    let sampler = match config.sampling {
        Sampling::Poisson => PoissonSampler::with_rate(n, plan.rate, sampler_rng(key, 0))?,
    };

    // The standardized columns' Gaussian release, composed with the steps.
    let preprocessing =
        (!data.transform.standardized.is_empty()).then_some(config.features.standardize_noise);
    // The one place the sampler's rate reaches the accountant (Opacus's make_private). Worker
    // 0 calibrates the noise for a target epsilon and hands the multiplier to the others.
    let (accounting, step_privacy) = match &config.privacy {
        Privacy::NonPrivate => (None, StepPrivacy::NonPrivate),
        Privacy::Private(dp) => {
            let planned = per_epoch * u64::from(config.epochs);
            let mut sigma = [0f64];
            if lead {
                sigma[0] = Accounting::new(dp, &sampler, planned, preprocessing)?.noise_multiplier;
            }
            coll.totals.broadcast(worker, 0, &mut sigma)?;
            let given = DpConfig {
                noise: NoiseSpec::Multiplier(sigma[0]),
                ..dp.clone()
            };
            let acc = Accounting::new(&given, &sampler, planned, preprocessing)?;
            let step = StepPrivacy::Private {
                clip: dp.l2_norm_clip,
                noise_multiplier: acc.noise_multiplier,
                grad_sample: dp.grad_sample,
                noise_rng: match config.noise_rng() {
                    // Seeded runs with other settings (or data) get other noise, so two of them
                    // cannot cancel their noise against each other.
                    NoiseRng::Seeded(seed) => NoiseRng::Seeded(settings.noise_seed(seed)),
                    NoiseRng::Os => NoiseRng::Os,
                },
            };
            (Some(acc), step)
        }
    };
    #[cfg(test)]
    let step_privacy = match canaries {
        Some(c) => lock(c).tamper(step_privacy),
        None => step_privacy,
    };

    let shape = Shape::new(data.train.width(), &config.hidden);
    let mut mlp = Mlp::new(shape.clone(), init_seed, device)?;
    let optimizer = Optimizer::new(config.optimizer, config.lr, shape.numel(), device);
    // B, or N (N_pub with --population) when B is above it (the rate is then capped at 1).
    let mut dp = DpStep::new(&shape, device, plan.expected_batch, step_privacy, optimizer)?;
    // With microbatches, each training record's microbatch, by its key.
    let microbatches = (dp.microbatches() > 0).then(|| {
        let ids: Vec<i64> = data
            .train_keys
            .iter()
            .map(|&k| microbatch_of(k, dp.microbatches()))
            .collect();
        Tensor::from_slice(&ids).to_device(device)
    });
    if !lead {
        // Worker 0's share carries the noise.
        dp = dp.noise_elsewhere();
    }
    if let Some(c) = canaries {
        lock(c).start(
            &mlp,
            &shape,
            sampler.rate(),
            step_privacy,
            dp.expected_batch(),
            device,
        )?;
    }

    // Worker 0 reports. A closed stdout (`trainer | head`) ends the report, not the run.
    let print = |line: &str| {
        if lead && !config.quiet {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    };
    let fp = settings.for_checkpoint();
    let mut history = Vec::new();
    // Worker 0 reads the checkpoint (it needs to exist only where worker 0 runs) and hands its
    // position, parameters and optimizer state to the others.
    let mut position = [0u64; 3];
    let mut saved_standardizer = None;
    if lead && let Some((saved, dir)) = resume(config, &fp, accounting.as_ref())? {
        saved_standardizer = saved.meta.standardizer.clone();
        mlp.load_flat(saved.tensor(dir, "params")?)?;
        dp.optimizer_mut()
            .restore(&saved.tensors, saved.meta.steps)?;
        position = [1, u64::from(saved.meta.epochs_done), saved.meta.steps];
        history = saved.meta.metrics;
    }
    coll.counts.broadcast(worker, 0, &mut position)?;
    let [resumed, start_epoch, mut steps] = position;
    let start_epoch = start_epoch as u32;
    if resumed == 1 {
        coll.reduce_tensor(worker, mlp.flat(), Some(0))?;
        let state: Vec<Tensor> = dp
            .optimizer()
            .state()
            .into_iter()
            .map(|(_, t)| t.shallow_clone())
            .collect();
        for t in &state {
            coll.reduce_tensor(worker, t, Some(0))?;
        }
        dp.optimizer_mut().set_steps(steps);
        if let Some(ck) = &config.checkpoint {
            print(&format!(
                "resuming from {} after epoch {start_epoch} ({steps} steps already count \
                 towards the budget)",
                ck.dir.display()
            ));
        }
    }
    let noise_rng = match config.noise_rng() {
        NoiseRng::Seeded(seed) => NoiseRng::Seeded(settings.noise_seed(seed)),
        NoiseRng::Os => NoiseRng::Os,
    };
    let standardizer = standardize(
        &mut data,
        preprocessing,
        saved_standardizer,
        lead,
        noise_rng,
        |v, broadcast| match broadcast {
            false => Ok(coll.totals.sum(worker, v)?),
            true => Ok(coll.totals.broadcast(worker, 0, v)?),
        },
    )?;
    // A resumed run's metrics file is rewritten to the checkpoint's epochs first: an epoch whose
    // line was written but whose checkpoint was not is trained (and logged) once more, not twice.
    let mut log = config
        .metrics_out
        .as_deref()
        .filter(|_| lead)
        .map(|p| match resumed {
            1 => MetricsLog::resume(p, &history),
            _ => MetricsLog::create(p),
        })
        .transpose()?;

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
    let rows = match config.population {
        None => format!("{n} rows ({n_test} test)"),
        Some(p) => format!("a public population of {p} rows (--population)"),
    };
    if let Some(acc) = &accounting {
        print(&format!(
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
        print(&format!(
            "privacy unit: {}; delta {:e}, {} accountant",
            export::privacy_unit(config),
            acc.delta,
            acc.accountant
        ));
        if let Some(seed) = config.seed {
            print(&format!(
                "seeded run (--seed {seed}): anyone who knows the seed can replay its noise and \
                 batches, so what it releases is NOT private against them \
                 (private_against_seed_holders: false); leave --seed out for a release"
            ));
        }
    } else {
        print(&format!(
            "training on {rows} on {on} without privacy, {per_epoch} steps per epoch"
        ));
    }
    if config.population.is_some() {
        print(&format!(
            "  | not private: {n} training rows ({n_test} test) realized"
        ));
    }

    let mut spent: Option<PrivacySpent> = None;
    let mut prof = Profiler::new(config.profile && lead, device);
    let mut batches = BatchQueue::for_share(sampler, share, device);
    for epoch in start_epoch..config.epochs {
        batches.start_epoch(sampler_rng(key, epoch));
        dp.start_epoch(epoch);
        let bar = progress_bar(config.progress && lead, per_epoch, epoch + 1, config.epochs);
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        let comm_started = coll.grads.waited;
        let mut examples = 0u64;
        for s in 0..per_epoch {
            prof.restart();
            let mut idx = batches.next_batch(per_epoch - s);
            examples += batches.sample_size();
            let mut canaries = canaries.map(lock);
            if let Some(c) = &mut canaries {
                idx = c.take_sampled(&idx, data.train.len());
            }
            if let Some(ids) = &microbatches {
                dp.set_microbatches(ids.index_select(0, &idx));
            }
            let rows = data.train.rows().index_select(0, &idx);
            prof.mark(Phase::Sampling);
            dp.accumulate_rows(&mlp, data.train.width(), &rows, &mut prof);
            if let Some(c) = &mut canaries {
                c.add_gradients(dp.grad());
            }
            dp.add_noise(&mut prof);
            if workers > 1 {
                coll.reduce_tensor(worker, dp.grad(), None)?;
                prof.mark(Phase::AllReduce);
            }
            if let Some(c) = &mut canaries {
                c.observe(&mlp, &data.train, dp.grad());
            }
            drop(canaries);
            dp.update(&mlp, &mut prof);
            if s % 64 == 0 {
                bar.set_position(s);
            }
        }
        synchronize(device);
        let seconds = started.elapsed().as_secs_f64();
        let cpu_seconds = cpu_started
            .zip(thread_cpu_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 * 1e-9);
        let comm_seconds = (workers > 1).then(|| (coll.grads.waited - comm_started).as_secs_f64());
        bar.finish_and_clear();
        steps += per_epoch;

        prof.restart();
        let eval_started = Instant::now();
        // Loss and accuracy sums over every worker's examples, the attack's hits, CPU seconds,
        // the budget spent (worker 0 asks the accountant; the others add 0), and the examples
        // the steps used (each worker draws only its share of the sample).
        let mut sums = [0f64; 14];
        sums[13] = examples as f64;
        sums[..3].copy_from_slice(&evaluate::totals(&mlp, &data.train).to_array());
        sums[3..6].copy_from_slice(&evaluate::totals(&mlp, &data.test).to_array());
        if let Some(a) = &attack {
            sums[6] = a.train.correct(&mlp, &data.train);
            sums[7] = a.train.counts().1;
            sums[11] = a.held_out.correct(&mlp, &data.test);
            sums[12] = a.held_out.counts().1;
        }
        sums[8] = cpu_seconds.unwrap_or(f64::NAN);
        if lead && let Some(acc) = &accounting {
            let s = acc.spent(steps)?;
            sums[9] = s.epsilon;
            sums[10] = s.rdp_order.unwrap_or(f64::NAN);
        }
        coll.totals.sum(worker, &mut sums)?;
        let examples = sums[13] as u64;
        spent = accounting.map(|a| PrivacySpent {
            epsilon: sums[9],
            delta: a.delta,
            accountant: a.accountant,
            rdp_order: sums[10].is_finite().then_some(sums[10]),
        });
        let train = Totals::from_slice(&sums[..3])
            .evaluation()
            .expect("the training set is not empty");
        let test = Totals::from_slice(&sums[3..6]).evaluation();
        let attack_train = attack
            .as_ref()
            .filter(|_| sums[7] > 0.0)
            .map(|_| sums[6] / sums[7]);
        let held_out = attack.as_ref().filter(|_| sums[12] > 0.0);
        let attack_held_out = held_out.map(|_| sums[11] / sums[12]);
        prof.mark(Phase::Evaluation);
        let phases = prof.take();
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            steps,
            test_loss: test.map(|t| t.loss),
            test_accuracy: test.map(|t| t.accuracy),
            epsilon: spent.map(|s| s.epsilon),
            delta: spent.map(|s| s.delta),
            accountant: spent.map(|s| s.accountant.to_string()),
            rdp_order: spent.and_then(|s| s.rdp_order),
            noise_multiplier: accounting.map(|a| a.noise_multiplier),
            attack_accuracy: attack_held_out,
            attack_baseline: held_out.map(|a| a.held_out.baseline()),
            attack_imputer: held_out.and_then(|a| a.imputer),
            workers,
            non_private: Some(NonPrivate {
                private: false,
                examples,
                train_loss: train.loss,
                train_accuracy: train.accuracy,
                attack_train_accuracy: attack_train,
                attack_leakage: attack_train.zip(attack_held_out).map(|(t, h)| t - h),
                seconds,
                cpu_seconds: sums[8].is_finite().then_some(sums[8]),
                comm_seconds,
                eval_seconds: eval_started.elapsed().as_secs_f64(),
                examples_per_second: examples as f64 / seconds.max(1e-9),
                phases: prof.enabled().then(|| {
                    phases
                        .seconds()
                        .into_iter()
                        .map(|(n, s)| (n.to_string(), s))
                        .collect()
                }),
            }),
        };
        print(&metrics.to_string());
        if prof.enabled() {
            print(&format!(
                "profile of epoch {} (not private: timings grow with the realized batch \
                 sizes):\n{phases}",
                epoch + 1
            ));
        }
        if let Some(log) = &mut log {
            log.write(&metrics)?;
        }
        history.push(metrics);
        if lead && let Some(ck) = &config.checkpoint {
            let meta = CheckpointMeta {
                epochs_done: epoch + 1,
                steps,
                noise_multiplier: accounting.map(|a| a.noise_multiplier),
                fingerprint: fp.clone(),
                tensors: String::new(),
                // What epsilon covers and held-out figures only: a checkpoint may be shipped.
                metrics: history.iter().map(EpochMetrics::public).collect(),
                standardizer: standardizer.clone(),
            };
            let mut tensors = vec![("params".to_string(), mlp.flat())];
            tensors.extend(dp.optimizer().state());
            checkpoint::save(&ck.dir, &meta, &tensors)?;
        }
    }

    if let Some(c) = canaries {
        lock(c).finish(&mlp, &data)?;
    }
    if spent.is_none() && lead {
        // No epoch left to train (a resumed run that had finished).
        spent = accounting.map(|a| a.spent(steps)).transpose()?;
    }
    if lead && let Some(path) = &config.save {
        let card = ModelCard::new(
            config,
            &data.feature_names,
            &data.label_name,
            accounting,
            spent,
            steps,
            history.last(),
            standardizer.as_ref(),
        );
        export::save(path, &mlp, &card)?;
        print(&format!(
            "saved {} and {}",
            path.display(),
            export::card_path(path).display()
        ));
    }
    if let Some(s) = &spent {
        print(&format!("privacy spent: {s} after {steps} steps"));
    }
    Ok(RunReport {
        metrics: history,
        accounting,
        spent,
        steps,
        model: mlp,
    })
}

/// Tells the operator (stderr, worker 0) what the feature spec found over every worker's share:
/// records with a level outside a categorical column's spec, and columns used as they are that
/// hold values outside [0, 1] (which swamp the others, and with DP the clip bound). These are
/// exact figures for the operator, never written to the card.
fn report_transform(
    data: &Data,
    lead: bool,
    sum: impl FnOnce(&mut [u64]) -> Result<()>,
) -> Result<()> {
    let t = &data.transform;
    let mut v: Vec<u64> = t
        .unknown
        .iter()
        .map(|u| u.2)
        .chain(t.raw_out_of_range.iter().map(|r| u64::from(r.1)))
        .collect();
    sum(&mut v)?;
    if !lead {
        return Ok(());
    }
    let (unknown, raw) = v.split_at(t.unknown.len());
    for ((name, policy, _), &count) in t.unknown.iter().zip(unknown) {
        if count > 0 {
            eprintln!(
                "trainer: {count} record(s) have a value of '{name}' outside its levels: {}",
                match policy {
                    crate::features::Unknown::Drop => "dropped (not trained or tested on)",
                    crate::features::Unknown::Other => "encoded as {name}=other",
                }
            );
        }
    }
    let wide: Vec<&str> = t
        .raw_out_of_range
        .iter()
        .zip(raw)
        .filter(|(_, n)| **n > 0)
        .map(|((name, _), _)| name.as_str())
        .collect();
    if !wide.is_empty() {
        eprintln!(
            "trainer: warning: feature(s) {} have values outside [0, 1] and are used as they \
             are: give them public bounds (--feature-bounds NAME=LO:HI), levels \
             (--feature-categories) or a range to standardize in (--standardize NAME=LO:HI)",
            wide.join(", ")
        );
    }
    Ok(())
}

/// Releases the standardized columns' statistics (the sums over every worker's training
/// records, plus worker 0's Gaussian noise, handed to all) and standardizes both splits with
/// them; a resumed run uses the checkpoint's release instead. `None` without such columns.
/// `exchange(v, false)` sums `v` over the workers, `exchange(v, true)` hands worker 0's to all.
fn standardize(
    data: &mut Data,
    noise_multiplier: Option<f64>,
    saved: Option<Standardizer>,
    lead: bool,
    noise_rng: NoiseRng,
    mut exchange: impl FnMut(&mut [f64], bool) -> Result<()>,
) -> Result<Option<Standardizer>> {
    let Some(sigma) = noise_multiplier else {
        return Ok(None);
    };
    let cols = data.transform.standardized.clone();
    let sensitivity = Standardizer::sensitivity(cols.len());
    let mut sums = data.transform.train_sums.clone();
    exchange(&mut sums, false)?;
    if lead {
        match saved {
            Some(s) if s.noisy_sums.len() == sums.len() => sums = s.noisy_sums,
            _ => {
                let noise =
                    Tensor::zeros([sums.len() as i64], (tch::Kind::Float, tch::Device::Cpu));
                let mut source =
                    NoiseSource::new(noise_rng, sums.len(), sigma * sensitivity, tch::Device::Cpu)?;
                // A stream no epoch's step noise uses.
                source.start_epoch(u32::MAX);
                source.add_to(&noise);
                let noise = Vec::<f32>::try_from(&noise)?;
                for (s, z) in sums.iter_mut().zip(noise) {
                    *s += f64::from(z);
                }
            }
        }
    } else {
        sums.fill(0.0);
    }
    exchange(&mut sums, true)?;
    let st = Standardizer {
        noise_multiplier: sigma,
        sensitivity,
        noisy_sums: sums,
    };
    let moments = st.unit_moments();
    data.train.standardize(&cols, &moments)?;
    data.test.standardize(&cols, &moments)?;
    Ok(Some(st))
}

/// Process 0's checks before any work is spent: `--resume` has a checkpoint to continue, and
/// every output (model and card, metrics, checkpoints) can be written.
fn check_outputs(config: &TrainConfig) -> Result<()> {
    if let Some(ck) = &config.checkpoint {
        if ck.resume {
            checkpoint::check_resumable(&ck.dir)?;
        } else if checkpoint::exists(&ck.dir) {
            return Err(already_there(&ck.dir));
        }
        publish::check_writable_dir("--checkpoint-dir", &ck.dir)?;
    }
    if let Some(path) = &config.metrics_out {
        publish::check_writable_file("--metrics-out", path)?;
    }
    if let Some(path) = &config.save {
        export::check_writable(path)?;
    }
    Ok(())
}

fn already_there(dir: &std::path::Path) -> Error {
    Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: "a checkpoint is there already: pass --resume to continue it (its steps count \
                 towards the budget) or choose another directory"
            .into(),
    }
}

/// The checkpoint to continue from, if any: refuses one without `--resume`, none with it, or one
/// from a run with other options or another noise multiplier.
fn resume<'a>(
    config: &'a TrainConfig,
    fp: &serde_json::Value,
    accounting: Option<&Accounting>,
) -> Result<Option<(checkpoint::Checkpoint, &'a std::path::Path)>> {
    let Some(ck) = &config.checkpoint else {
        return Ok(None);
    };
    if !checkpoint::exists(&ck.dir) {
        if ck.resume {
            checkpoint::check_resumable(&ck.dir)?;
        }
        return Ok(None);
    }
    if !ck.resume {
        return Err(already_there(&ck.dir));
    }
    let saved = checkpoint::load(&ck.dir, fp)?;
    let ours = accounting.map(|a| a.noise_multiplier);
    if saved.meta.noise_multiplier != ours {
        return Err(Error::Checkpoint {
            path: ck.dir.clone(),
            reason: format!(
                "its noise multiplier {:?} differs from this run's {ours:?}",
                saved.meta.noise_multiplier
            ),
        });
    }
    Ok(Some((saved, &ck.dir)))
}

/// The model-inversion attack on a run's leading training rows and leading held-out rows, and
/// the baseline imputer's accuracy on those held-out rows (fitted on them once: it does not
/// depend on the model).
struct Attacks {
    train: Attack,
    held_out: Attack,
    imputer: Option<f64>,
}

impl Attacks {
    /// The attack on feature `name` of up to `rows` leading rows of each split; this worker's
    /// rows of the splits start at global positions `starts`; `sum` adds up over workers.
    fn new(
        data: &Data,
        name: &str,
        rows: usize,
        starts: (usize, usize),
        n_test: usize,
        mut sum: impl FnMut(&mut [f64]) -> Result<()>,
    ) -> Result<Self> {
        let j = data.feature_index(name, "--attack-feature")?;
        let (train_rows, test_rows) =
            (rows.saturating_sub(starts.0), rows.saturating_sub(starts.1));
        let mut train = Attack::new(&data.train, j, name, train_rows)?;
        let mut held_out = Attack::new(&data.test, j, name, test_rows)?;
        let mut v = [
            train.counts().0,
            train.counts().1,
            held_out.counts().0,
            held_out.counts().1,
        ];
        sum(&mut v)?;
        train.set_majority(v[0], v[1]);
        held_out.set_majority(v[2], v[3]);
        let imputer = if n_test > 0 {
            let imp = Imputer::fit(&data.test, j, test_rows, &mut sum)?;
            let mut v = [imp.correct(&data.test, test_rows), held_out.counts().1];
            sum(&mut v)?;
            Some(v[0] / v[1].max(1.0))
        } else {
            None
        };
        Ok(Attacks {
            train,
            held_out,
            imputer,
        })
    }
}

/// The canaries' state (one worker uses it; a poisoned lock means that worker panicked, which
/// the run reports).
fn lock(c: &Mutex<Canaries>) -> std::sync::MutexGuard<'_, Canaries> {
    c.lock().expect("the audit's worker did not panic")
}

fn progress_bar(enabled: bool, steps: u64, epoch: u32, epochs: u32) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "epoch {msg} [{bar:30}] {pos}/{len} steps {elapsed} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{epoch}/{epochs}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `--population`, q, the steps and the divisor come from N_pub alone: neighbouring
    /// training sets (N and N + 1 rows) get the same plan; without it, the realized N.
    #[test]
    fn the_sampling_plan_comes_from_the_public_population() {
        let public = SamplingPlan::new(1_000, 64, Some(960_000));
        assert_eq!(public.rate, 64.0 / 960_000.0);
        assert_eq!(public.steps_per_epoch, 15_000);
        assert_eq!(public.expected_batch, 64.0);
        assert_eq!(SamplingPlan::new(1_001, 64, Some(960_000)), public);
        // Capped at 1 when B is above N_pub.
        let capped = SamplingPlan::new(1_000, 64, Some(40));
        assert_eq!((capped.rate, capped.steps_per_epoch), (1.0, 1));
        assert_eq!(capped.expected_batch, 40.0);
        // Without it, as before: q = B / N, round(N / B) steps.
        let realized = SamplingPlan::new(1_000, 64, None);
        assert_eq!(realized.rate, 64.0 / 1_000.0);
        assert_eq!(realized.steps_per_epoch, steps_per_epoch(1_000, 64));
        assert_ne!(SamplingPlan::new(1_001, 64, None), realized);
    }
}
