//! `trainer::run`: load the shards, wire sampler, accountant and DP step together, train for
//! the configured epochs, report each one, checkpoint, and save the model.

use std::time::Instant;

use accountant::PrivacySpent;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::SysRng;
use rand_chacha::ChaCha20Rng;

use crate::attack::Attack;
use crate::batches::BatchQueue;
use crate::checkpoint::{self, CheckpointMeta};
use crate::config::{NoiseRng, Privacy, Sampling, TrainConfig};
use crate::data::Data;
use crate::device::synchronize;
use crate::dp_step::{DpStep, StepPrivacy};
use crate::evaluate::evaluate;
use crate::export::{self, ModelCard};
use crate::metrics::{EpochMetrics, MetricsLog, thread_cpu_ns};
use crate::mlp::{Mlp, Shape};
use crate::optim::Optimizer;
use crate::privacy::Accounting;
use crate::profile::{Phase, Profiler};
use crate::sampler::PoissonSampler;
use crate::{Error, Result};

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    /// Every epoch's metrics (resumed epochs included).
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

/// The sampler's random stream for `epoch`: stream `epoch + 1` of the run's seed (stream 0
/// initialises the model), or OS entropy with secure noise. Per-epoch streams make a resumed
/// run draw exactly the batches an uninterrupted one would.
fn sampler_rng(config: &TrainConfig, epoch: u32) -> Result<ChaCha20Rng> {
    if secure(config) {
        return ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|e| Error::Config(format!("--secure-rng: no OS entropy: {e}")));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    rng.set_stream(u64::from(epoch) + 1);
    Ok(rng)
}

fn secure(config: &TrainConfig) -> bool {
    matches!(&config.privacy, Privacy::Private(dp) if dp.noise_rng == NoiseRng::Secure)
}

/// The key of the seeded noise streams (one per epoch), independent of the sampler's.
fn noise_seed(seed: u64) -> u64 {
    shards::splitmix64(seed ^ 0x6e6f_6973_6500_0000)
}

/// The options a resumed run must share with the run that wrote the checkpoint.
fn fingerprint(config: &TrainConfig, train_rows: usize) -> serde_json::Value {
    let mut v = serde_json::to_value(config).expect("config serializes");
    let map = v.as_object_mut().expect("config is a struct");
    for transient in [
        "device",
        "intra_op_threads",
        "metrics_out",
        "save",
        "checkpoint",
        "profile",
        "progress",
        "attack_rows",
        "attack_feature",
    ] {
        map.remove(transient);
    }
    // More epochs may follow, unless the noise was calibrated for the planned number.
    let calibrated = matches!(&config.privacy,
        Privacy::Private(dp) if matches!(dp.noise, crate::config::NoiseSpec::TargetEpsilon(_)));
    if !calibrated {
        map.remove("epochs");
    }
    map.insert("train_rows".into(), train_rows.into());
    v
}

/// Trains as `config` says; prints one line per epoch on stdout (and the profile with
/// `--profile`), a progress bar on stderr when enabled.
pub fn run(config: &TrainConfig) -> Result<RunReport> {
    config.validate()?;
    tch::set_num_threads(config.intra_op_threads as i32);
    let device = config.device.resolve()?;
    let _no_grad = tch::no_grad_guard();

    let data = Data::load(
        &config.data,
        config.test_fraction,
        config.split_seed,
        device,
    )?;
    let attack = match &config.attack_feature {
        Some(name) => {
            let j = data.feature_index(name, "--attack-feature")?;
            Some(Attack::new(&data.train, j, name, config.attack_rows)?)
        }
        None => None,
    };
    let n = data.train.len();
    let per_epoch = steps_per_epoch(n, config.batch_size);
    let sampler = match config.sampling {
        Sampling::Poisson => PoissonSampler::new(n, config.batch_size, sampler_rng(config, 0)?)?,
    };

    // The one place the sampler's rate reaches the accountant (Opacus's make_private).
    let (accounting, step_privacy) = match &config.privacy {
        Privacy::NonPrivate => (None, StepPrivacy::NonPrivate),
        Privacy::Private(dp) => {
            let acc = Accounting::new(dp, &sampler, per_epoch * u64::from(config.epochs))?;
            let step = StepPrivacy::Private {
                clip: dp.l2_norm_clip,
                noise_multiplier: acc.noise_multiplier,
                grad_sample: dp.grad_sample,
                noise_rng: dp.noise_rng,
            };
            (Some(acc), step)
        }
    };

    let shape = Shape::new(data.train.width(), &config.hidden);
    let mut mlp = Mlp::new(shape.clone(), config.seed, device)?;
    let optimizer = Optimizer::new(config.optimizer, config.lr, shape.numel(), device);
    // B, or N when B > N (the rate is then capped at 1).
    let expected_batch = sampler.rate() * n as f64;
    let mut dp = DpStep::new(
        &shape,
        device,
        expected_batch,
        step_privacy,
        optimizer,
        noise_seed(config.seed),
    )?;

    let print = |line: &str| println!("{line}");
    let mut start_epoch = 0;
    let mut steps = 0u64;
    let mut history = Vec::new();
    let fp = fingerprint(config, n);
    if let Some(ck) = &config.checkpoint
        && checkpoint::exists(&ck.dir)
    {
        if !ck.resume {
            return Err(Error::Checkpoint {
                path: ck.dir.clone(),
                reason: "a checkpoint is there already: pass --resume to continue it (its \
                         steps count towards the budget) or choose another directory"
                    .into(),
            });
        }
        let saved = checkpoint::load(&ck.dir, &fp)?;
        if saved.meta.noise_multiplier != accounting.map(|a| a.noise_multiplier) {
            return Err(Error::Checkpoint {
                path: ck.dir.clone(),
                reason: format!(
                    "its noise multiplier {:?} differs from this run's {:?}",
                    saved.meta.noise_multiplier,
                    accounting.map(|a| a.noise_multiplier)
                ),
            });
        }
        mlp.load_flat(saved.tensor(&ck.dir, "params")?)?;
        dp.optimizer_mut()
            .restore(&saved.tensors, saved.meta.steps)?;
        start_epoch = saved.meta.epochs_done;
        steps = saved.meta.steps;
        history = saved.meta.metrics;
        print(&format!(
            "resuming from {} after epoch {start_epoch} ({steps} steps already count \
             towards the budget)",
            ck.dir.display()
        ));
    }
    let mut log = config
        .metrics_out
        .as_deref()
        .map(|p| MetricsLog::open(p, start_epoch > 0))
        .transpose()?;

    if let Some(acc) = &accounting {
        print(&format!(
            "training on {n} rows ({} test) on {} with q = {:.6}, noise multiplier {:.4}, {} \
             steps per epoch",
            data.test.len(),
            config.device,
            acc.sampling_rate,
            acc.noise_multiplier,
            per_epoch
        ));
    } else {
        print(&format!(
            "training on {n} rows ({} test) on {} without privacy, {per_epoch} steps per epoch",
            data.test.len(),
            config.device
        ));
    }

    let mut prof = Profiler::new(config.profile, device);
    let mut batches = BatchQueue::new(sampler, device);
    for epoch in start_epoch..config.epochs {
        batches.start_epoch(sampler_rng(config, epoch)?);
        dp.start_epoch(epoch);
        let bar = progress_bar(config.progress, per_epoch, epoch + 1, config.epochs);
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        let mut examples = 0u64;
        for s in 0..per_epoch {
            prof.restart();
            let idx = batches.next_batch(per_epoch - s);
            examples += idx.size()[0] as u64;
            let rows = data.train.rows().index_select(0, &idx);
            let (inputs, labels, norms) = (
                data.train.inputs(&rows),
                data.train.labels(&rows),
                data.train.input_norms(&rows),
            );
            prof.mark(Phase::Sampling);
            dp.step(&mlp, &inputs, &labels, &norms, &mut prof);
            if s % 64 == 0 {
                bar.set_position(s);
            }
        }
        synchronize(device);
        let seconds = started.elapsed().as_secs_f64();
        let cpu_seconds = cpu_started
            .zip(thread_cpu_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 * 1e-9);
        bar.finish_and_clear();
        steps += per_epoch;

        prof.restart();
        let eval_started = Instant::now();
        let train = evaluate(&mlp, &data.train).expect("the training set is not empty");
        let test = evaluate(&mlp, &data.test);
        let attacked = attack.as_ref().map(|a| a.run(&mlp, &data.train));
        let spent = accounting.map(|a| a.spent(steps)).transpose()?;
        prof.mark(Phase::Evaluation);
        let phases = prof.take();
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            steps,
            examples,
            train_loss: train.loss,
            train_accuracy: train.accuracy,
            test_loss: test.map(|t| t.loss),
            test_accuracy: test.map(|t| t.accuracy),
            epsilon: spent.map(|s| s.epsilon),
            delta: spent.map(|s| s.delta),
            accountant: spent.map(|s| s.accountant.to_string()),
            rdp_order: spent.and_then(|s| s.rdp_order),
            noise_multiplier: accounting.map(|a| a.noise_multiplier),
            attack_accuracy: attacked.map(|a| a.accuracy),
            attack_baseline: attacked.map(|a| a.baseline),
            seconds,
            cpu_seconds,
            eval_seconds: eval_started.elapsed().as_secs_f64(),
            examples_per_second: examples as f64 / seconds.max(1e-9),
            phases: prof.enabled().then(|| {
                phases
                    .seconds()
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), s))
                    .collect()
            }),
        };
        print(&metrics.to_string());
        if prof.enabled() {
            print(&format!("profile of epoch {}:\n{phases}", epoch + 1));
        }
        if let Some(log) = &mut log {
            log.write(&metrics)?;
        }
        history.push(metrics);
        if let Some(ck) = &config.checkpoint {
            let meta = CheckpointMeta {
                epochs_done: epoch + 1,
                steps,
                noise_multiplier: accounting.map(|a| a.noise_multiplier),
                fingerprint: fp.clone(),
                tensors: String::new(),
                metrics: history.clone(),
            };
            let mut tensors = vec![("params".to_string(), mlp.flat())];
            tensors.extend(dp.optimizer().state());
            checkpoint::save(&ck.dir, &meta, &tensors)?;
        }
    }

    let spent = accounting.map(|a| a.spent(steps)).transpose()?;
    if let Some(path) = &config.save {
        let card = ModelCard {
            architecture: export::architecture(data.train.width(), &config.hidden),
            feature_names: &data.feature_names,
            label_name: &data.label_name,
            options: config,
            accounting,
            steps,
            metrics: history.last(),
        };
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
