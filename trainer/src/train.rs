//! `trainer::run`: load the shards, wire sampler, accountant and DP step together, train for
//! the configured epochs, report each one, checkpoint, and save the model.
//!
//! A run is data-parallel over the workers of its cluster (one worker for the plain trainer:
//! the same code path). Each worker loads a contiguous block of the shards; training examples
//! are numbered globally in (part, record) order, which does not depend on the workers, and
//! every worker draws, from the same stream, only the members of the Poisson sample of those
//! numbers that fall in its own block (the sampler's blocks of examples have positions of their
//! own in the stream, so this is the single-worker sample restricted to the share). Each step the workers' clipped gradient sums are added up in worker order (each
//! worker's share carries the noise of its blocks of parameters, [`crate::mechanism::noise::BLOCKS`], so
//! each value is added exactly once), and every worker applies the
//! same update. The model is the same for any number of workers up to the order of the float
//! additions, and the accountant sees exactly the single-process mechanism.
//!
//! A worker's run is wired in one function, `train_worker`, from phases that each live in a
//! file of their own below `train/`, with one typed struct per exchange between the workers.
//! The record's path from the shards to the step is one of them, in four stages called in
//! order ([`records`]: load, key and split, features; the releases declared; the transform
//! released and applied; the batches).

mod announce;
mod attacks;
mod epoch;
mod held_out;
mod keys;
mod layout;
mod loaded;
mod mechanism;
mod peers;
mod records;
mod resume;
mod spent_ahead;
mod steps;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accountant::PrivacySpent;
use timely::worker::Worker;

use self::announce::announce;
use self::attacks::Attacks;
use self::epoch::Epochs;
use self::held_out::HeldOut;
use self::keys::Keys;
use self::layout::Layout;
pub use self::loaded::Loaded;
use self::mechanism::{mechanism, noise_rng};
use self::peers::Peers;
use self::records::Released;
use self::resume::{check_outputs, restore};
use self::steps::Steps;
use crate::audit::canary::Canaries;
use crate::audit::score::Claim;
use crate::config::{Sampling, TrainConfig};
use crate::data::Data;
use crate::mechanism::batches::BatchQueue;
use crate::mechanism::dp_step::DpStep;
use crate::mechanism::optim::Optimizer;
use crate::mechanism::privacy::Accounting;
use crate::mechanism::sampler::PoissonSampler;
use crate::metrics::{EpochMetrics, MetricsLog};
use crate::mlp::{Mlp, Shape};
use crate::profile::Profiler;
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
    /// The held-out accuracy's noisy release, when the run made one (worker 0's).
    pub test_release: Option<crate::mechanism::held_out::HeldOutRelease>,
    /// The standardized columns' release, if any.
    pub standardizer: Option<crate::features::Standardizer>,
    /// The DP quantile bounds, if any.
    pub bounds: Vec<crate::mechanism::quantiles::ReleasedBounds>,
    /// The model's inputs, in order.
    pub feature_names: Vec<String>,
    /// The label column.
    pub label_name: String,
    /// The options as the run resolved them (the privacy unit, the feature attacked): what its
    /// card states.
    pub config: TrainConfig,
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
    let shared = Arc::new(with_units(config)?);
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

/// `config` with its privacy unit as the shards have it: the column they were written with and
/// the bound on a unit's rows (the smaller of theirs and `--max-rows-per-unit`), so that
/// everything the run says and releases names the unit epsilon is for. Refuses a unit the
/// shards were not written with.
pub fn with_units(config: &TrainConfig) -> Result<TrainConfig> {
    let dataset = crate::data::open_dataset(&config.data, &config.s3)?;
    let (written, written_cap) = dataset.unit()?;
    let units = crate::data::Units::resolve(
        &config.data,
        written.as_deref(),
        written_cap,
        config.privacy_unit.as_deref(),
        config.max_rows_per_unit,
    )?;
    let mut config = config.clone();
    config.privacy_unit = units.as_ref().map(|u| u.column.clone());
    config.max_rows_per_unit = units.and_then(|u| u.max_rows);
    Ok(config)
}

/// One worker's run (see the module documentation): the one place its phases are wired, in
/// the order of the exchanges every worker takes part in.
fn train_worker(
    config: &TrainConfig,
    worker: &mut Worker,
    loaded: Option<&Loaded>,
    canaries: Option<&Mutex<Canaries>>,
) -> Result<RunReport> {
    let mut peers = Peers::new(worker, config);
    let (me, workers, lead) = (peers.me, peers.workers, peers.lead());
    let device = config.device.resolve_for(me % config.cluster.threads())?;
    // The record's path, stage 1 of 4 (`records`): load, key and split, features.
    let (mut data, extra) = records::load(config, me, workers, device, loaded, canaries)?;
    // Stage 2: the releases the transform will make, composed with the steps by the accountant.
    let declared = records::declare(config, &data)?;
    // Everyone's train and test counts (and column agreement), so each worker knows where its
    // examples sit in the global order.
    let layout = Layout::exchange(&mut peers, config, &data, extra)?;

    // Every process must run the same mechanism on the same data: compare every setting that
    // matters before anything else is exchanged.
    let columns: Vec<String> = [&data.label_name]
        .into_iter()
        .chain(&data.feature_names)
        .cloned()
        .collect();
    let settings = Settings::new(config, data.fingerprint, layout.train_rows as u64, columns);
    settings.agree(me, workers, config.cluster.threads(), |v| {
        peers.sum_counts(v)
    })?;

    let keys = Keys::exchange(config.seed, &settings, &mut peers)?;
    // Units are sampled (each line is a unit without --privacy-unit).
    let plan = SamplingPlan::new(layout.train_units, config.batch_size, config.population);
    let per_epoch = plan.steps_per_epoch;
    // The rate the accountant is told, and the one the sampler draws at: the same, except in
    // the audit's purposely broken mechanisms (its tests and mutation benchmark only).
    let (told_rate, rate) = (plan.rate, plan.rate);
    #[cfg(any(test, feature = "audit-mutations"))]
    let (told_rate, rate) = canaries.map_or((told_rate, rate), |c| lock(c).mutation().rates(rate));
    let sampler = match config.sampling {
        Sampling::Poisson => {
            PoissonSampler::with_rate(layout.train_units, rate, keys.sampler.rng(0))?
        }
    };
    let planned = per_epoch * u64::from(config.epochs);
    let told = (told_rate != rate)
        .then(|| PoissonSampler::with_rate(layout.train_units, told_rate, keys.sampler.rng(0)))
        .transpose()?;
    let (mut accounting, told_privacy) = mechanism(
        config,
        &mut peers,
        told.as_ref().unwrap_or(&sampler),
        planned,
        declared.preprocessing,
        &settings,
    )?;
    let step_privacy = told_privacy;
    #[cfg(any(test, feature = "audit-mutations"))]
    let step_privacy = canaries.map_or(step_privacy, |c| lock(c).mutation().step(step_privacy));

    let shape = Shape::new(data.train.width(), &config.hidden);
    let mut mlp = Mlp::new(shape.clone(), keys.init_seed, device)?;
    let optimizer = Optimizer::new(config.optimizer, config.lr, shape.numel(), device);
    // An audit's gradient canaries live on quiet coordinates after the model's parameters.
    let quiet = canaries.map_or(0, |c| {
        lock(c).quiet_coordinates(told_rate, plan.expected_batch, shape.numel())
    });
    // B, or N (N_pub with --population) when B is above it (the rate is then capped at 1).
    let mut dp = DpStep::with_quiet(
        &shape,
        device,
        plan.expected_batch,
        step_privacy,
        optimizer,
        quiet,
    )?;
    if let Some(units) = &data.units {
        if dp.microbatches() > 0 {
            return Err(Error::Config(format!(
                "--microbatch groups records, and with the privacy unit '{}' each unit is \
                 already clipped as one: leave --microbatch out",
                units.column
            )));
        }
        dp = dp.clip_units();
    }
    // Each worker's share carries the noise of its blocks of parameters.
    dp = dp.noise_share(me, workers).noise_ahead(per_epoch);
    if let (Some(c), Some(acc)) = (canaries, &accounting) {
        // The auditor scores under what the accountant was told.
        let claim = Claim {
            sampling_rate: acc.sampling_rate,
            noise_multiplier: acc.noise_multiplier,
        };
        lock(c).start(&mlp, claim, told_privacy, dp.expected_batch())?;
    }

    // Worker 0 reports. A closed stdout (`trainer | head`) ends the report, not the run.
    let out = Stdout(lead && !config.quiet);
    let fingerprint = settings.for_checkpoint();
    let mut start = restore(
        config,
        &mut peers,
        &fingerprint,
        accounting.as_ref(),
        per_epoch,
        &mut mlp,
        &mut dp,
        out,
    )?;
    // The held-out release: worker 0 keeps the checkpoint's if it was made at this run's last
    // step; the accountant composes every release the run and those it continues make.
    let final_steps = start.position.steps
        + u64::from(config.epochs.saturating_sub(start.position.epochs_done)) * per_epoch;
    let held_out = HeldOut::exchange(
        config,
        data.units.as_ref(),
        &mut start,
        final_steps,
        noise_rng(config, &settings),
        &mut peers,
    )?;
    if let Some(acc) = &mut accounting {
        acc.test_releases = held_out.total();
    }
    // Stage 3: the feature transform's releases, applied to both splits.
    let saved = Released {
        bounds: start.bounds.take().unwrap_or_default(),
        standardizer: start.standardizer.take(),
    };
    let Released {
        bounds,
        standardizer,
    } = records::transform(
        &mut data,
        config,
        declared,
        saved,
        noise_rng(config, &settings),
        &mut peers,
    )?;
    // Stage 4: the training rows as the step reads them.
    let records::Batches {
        microbatches,
        host_rows,
        distinct,
    } = records::batches(&data, dp.microbatches(), dp.fused(), device)?;
    // The attack runs on the run's leading training rows and leading held-out rows (as the
    // model sees them: after the feature transform); this worker holds those in its ranges.
    let (attack_feature, attack_note) = attack_target(config, &data, standardizer.as_ref())?;
    let attack = match &attack_feature {
        Some(name) => Some(Attacks::new(
            &data,
            name,
            config.attack_rows,
            (layout.train_start, layout.test_start),
            lead,
            |v| peers.sum_totals(v),
        )?),
        None => None,
    };
    // The held-out rows' majority share: the yardstick of every accuracy the run prints.
    let mut labels = [data.test.label_sum()?, data.test.len() as f64];
    peers.sum_totals(&mut labels)?;
    let test_majority = (labels[1] > 0.0).then(|| {
        let p = labels[0] / labels[1];
        p.max(1.0 - p)
    });
    // What the card and the lines say: the feature attacked, if any.
    let resolved;
    let config = if attack_feature == config.attack_feature {
        config
    } else {
        resolved = TrainConfig {
            attack_feature,
            ..config.clone()
        };
        &resolved
    };
    // A resumed run's metrics file is rewritten to the checkpoint's epochs first: an epoch whose
    // line was written but whose checkpoint was not is trained (and logged) once more, not twice.
    let log = config
        .metrics_out
        .as_deref()
        .filter(|_| lead)
        .map(|p| match start.position.resumed {
            true => MetricsLog::resume(p, &start.history),
            false => MetricsLog::create(p),
        })
        .transpose()?;
    announce(
        config,
        accounting.as_ref(),
        &layout,
        per_epoch,
        workers,
        device,
        out,
    );
    out.line(&attack_note);

    let mut epochs = Epochs {
        config,
        steps: Steps {
            dp,
            batches: BatchQueue::for_share(sampler, layout.share.clone(), device),
            microbatches,
            canaries,
            key: keys.sampler,
            per_epoch,
            device,
            progress: config.progress && lead,
            host_rows,
            unit_rows: Default::default(),
        },
        prof: Profiler::new(config.profile && lead, device),
        attack,
        accounting,
        spent_ahead: accounting
            .filter(|_| lead)
            .map(spent_ahead::SpentAhead::new),
        log,
        out,
        fingerprint,
        standardizer,
        bounds,
        held_out,
        distinct,
        test_majority,
        test_positives: labels[0],
    };
    let mut trained = epochs.train(&mut peers, &mlp, &data, start)?;
    if let Some(c) = canaries {
        lock(c).finish(&mlp, &data)?;
    }
    epochs.finish(lead, &mlp, &data, &mut trained)?;
    Ok(RunReport {
        metrics: trained.history,
        accounting,
        spent: trained.spent,
        steps: trained.steps,
        test_release: epochs.held_out.release.take(),
        standardizer: epochs.standardizer.take(),
        bounds: std::mem::take(&mut epochs.bounds),
        feature_names: data.feature_names.clone(),
        label_name: data.label_name.clone(),
        config: config.clone(),
        model: mlp,
    })
}

/// The feature the run attacks, and a line saying which (or why none): the configured one,
/// unless it is the default and the data lacks it, or it is a column the transform
/// standardized (the attack sets a 0/1 input to 0 and to 1, which a standardized input never
/// holds). A feature the user named that the data lacks is an error.
fn attack_target(
    config: &TrainConfig,
    data: &Data,
    standardizer: Option<&crate::features::Standardizer>,
) -> Result<(Option<String>, String)> {
    let Some(name) = &config.attack_feature else {
        return Ok((
            None,
            "model-inversion attack: none (--attack-feature none)".into(),
        ));
    };
    if !data.feature_names.contains(name) {
        if config.attack_required {
            data.feature_index(name, "--attack-feature")?;
        }
        return Ok((
            None,
            format!(
                "model-inversion attack: none: the data has no column '{name}' (the default \
                 --attack-feature); name one of its 0/1 columns with --attack-feature"
            ),
        ));
    }
    let standardized = standardizer.is_some_and(|s| s.columns.iter().any(|c| c.name == *name))
        || config.features.standardized().any(|(n, _, _)| n == name);
    if standardized {
        let message = format!(
            "model-inversion attack: none: '{name}' is standardized (it is not a 0/1 input the \
             attack can set to 0 and 1); give it public levels or bounds, or attack another \
             column"
        );
        if config.attack_required {
            return Err(Error::Config(format!("--attack-feature {message}")));
        }
        return Ok((None, message));
    }
    Ok((
        Some(name.clone()),
        format!(
            "model-inversion attack on '{name}': on held-out (and, not private, training) rows \
             the attacker sets it to 0 and to 1 and keeps the value whose prediction is closer \
             to the row's label; read it against guessing the majority value and against an \
             imputer that predicts it from the other columns without the model (exact figures, \
             not released)"
        ),
    ))
}

/// Worker 0's report on stdout (`false` elsewhere, and with `--quiet`). A closed stdout
/// (`trainer | head`) ends the report, not the run.
#[derive(Debug, Clone, Copy)]
struct Stdout(bool);

impl Stdout {
    fn line(self, line: &str) {
        if self.0 {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }
}

/// The canaries' state (one worker uses it; a poisoned lock means that worker panicked, which
/// the run reports).
fn lock(c: &Mutex<Canaries>) -> std::sync::MutexGuard<'_, Canaries> {
    c.lock().expect("the audit's worker did not panic")
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
