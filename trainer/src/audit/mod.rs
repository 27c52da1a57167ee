//! `trainer audit`: an empirical lower bound on epsilon from one training run (Steinke, Nasr
//! and Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023), and membership
//! inference on the real records.
//!
//! m canaries are each included with probability 1/2; the run is [`crate::run`]'s own loop
//! (same sampler, clipping, noise and accountant), with every canary a row the sampler draws
//! and the included ones training ([`canary`]). After it, each canary gets a score, the auditor guesses "included" for the
//! highest and "excluded" for the lowest, and [`bound`] turns the number of right guesses into
//! the largest epsilon they rule out at confidence 1 - alpha. An implementation whose epsilon
//! is right never has audited epsilon above accounted epsilon (except with probability alpha).

pub mod bound;
pub mod canary;
pub mod mia;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tch::Tensor;

pub use bound::Outcome;
pub use canary::{Canaries, CanaryKind};
pub use mia::MiaReport;

use crate::config::{GradSample, Privacy, TrainConfig};
use crate::export;
use crate::metrics::create_parent;
use crate::{Error, Result};

/// A checked `trainer audit` request.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The run, exactly as `trainer` would do it (its `save` is ignored: see `save` below).
    pub train: TrainConfig,
    /// Number of canaries m.
    pub canaries: usize,
    /// White-box or black-box canaries.
    pub kind: CanaryKind,
    /// One minus the confidence of the bound.
    pub alpha: f64,
    /// Where to save the audit's model, if anywhere (its card says it is an audit model).
    pub save: Option<PathBuf>,
    /// Tests only: the noise the step adds, as a share of what the accountant is told.
    #[cfg(test)]
    pub noise_factor: f64,
}

impl AuditConfig {
    /// An audit of `train` with the defaults: 1000 gradient canaries, alpha 0.05, nothing saved.
    pub fn new(mut train: TrainConfig) -> Self {
        // Input canaries are crafted model inputs appended before any feature release, and DP
        // bounds would move them: the audit uses the columns the spec does not name as they are.
        train.features.auto_bounds = None;
        AuditConfig {
            train,
            canaries: 1000,
            kind: CanaryKind::Gradient,
            alpha: 0.05,
            save: None,
            #[cfg(test)]
            noise_factor: 1.0,
        }
    }

    /// Checks what an audit needs beyond a valid run.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        let bad = |m: &str| Err(Error::Config(m.into()));
        if self.canaries == 0 {
            return bad("--canaries must be at least 1");
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(Error::Config(format!(
                "--alpha {} must be in (0, 1)",
                self.alpha
            )));
        }
        let Privacy::Private(dp) = &self.train.privacy else {
            return bad(
                "an audit checks a private run: drop --no-dp (--noise-multiplier 0 audits \
                 clipping without noise)",
            );
        };
        if dp.grad_sample != GradSample::Vectorized {
            return bad("--microbatch-size: the audit's canaries are per-example rows");
        }
        if self.train.cluster.workers() != 1 {
            return bad("the audit runs on one worker: drop --workers, --threads and --hostfile");
        }
        if self.train.checkpoint.is_some() {
            return bad("--checkpoint-dir: an audit is one uninterrupted run");
        }
        Ok(())
    }
}

/// What an audit found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The lower bound on epsilon, holding with probability at least 1 - alpha.
    pub audited_epsilon: f64,
    /// The accountant's epsilon for the same run (an upper bound; infinite without noise).
    pub accounted_epsilon: f64,
    /// The accountant that gave it.
    pub accountant: String,
    /// The run's delta (also used by the bound).
    pub delta: f64,
    /// One minus the bound's confidence.
    pub alpha: f64,
    /// `gradient` or `input`.
    pub canary_kind: CanaryKind,
    /// Gradient canaries' directions: `dirac` (a parameter each) or `random` (more canaries
    /// than parameters: they overlap, which weakens the audit; widen `--hidden`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_directions: Option<&'static str>,
    /// m.
    pub canaries: usize,
    /// How many were in the training set.
    pub included: usize,
    /// Guesses made (k+ + k-).
    pub guesses: usize,
    /// Of which right.
    pub correct: usize,
    /// Guesses "included" on the highest scores.
    pub k_plus: usize,
    /// Guesses "excluded" on the lowest scores.
    pub k_minus: usize,
    /// Candidate (k+, k-) pairs the confidence was divided over.
    pub candidates: usize,
    /// The run's sampling rate q (with the canaries in the population).
    pub sampling_rate: f64,
    /// The noise multiplier the accountant was told.
    pub noise_multiplier: f64,
    /// Steps taken.
    pub steps: u64,
    /// The LOSS attack on the real training rows against the held-out rows.
    pub membership_inference: MiaReport,
}

impl AuditReport {
    /// The human line.
    pub fn summary(&self) -> String {
        let m = &self.membership_inference;
        let tpr = m
            .tpr_at_fpr
            .iter()
            .map(|t| {
                format!(
                    "TPR {:.4} at FPR {} ({}/{} members, {}/{} held out)",
                    t.tpr, t.fpr, t.true_positives, m.members, t.false_positives, m.nonmembers
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "audit: epsilon >= {:.3} with confidence {} ({} of {} guesses right about {} {}{} \
             canaries, {} included; k+ {}, k- {}); the accountant ({}) says epsilon <= {:.3} at \
             delta {}. Membership inference (LOSS) on real rows: AUC {:.4}, {tpr}",
            self.audited_epsilon,
            1.0 - self.alpha,
            self.correct,
            self.guesses,
            self.canaries,
            self.canary_kind,
            match self.canary_directions {
                Some("random") => " (random-direction: more canaries than parameters)",
                _ => "",
            },
            self.included,
            self.k_plus,
            self.k_minus,
            self.accountant,
            self.accounted_epsilon,
            self.delta,
            m.auc,
        )
    }
}

/// Runs the audit: trains once with the canaries, scores them, bounds epsilon.
pub fn run(config: &AuditConfig) -> Result<AuditReport> {
    config.validate()?;
    let mut train = config.train.clone();
    // The audit's model is never a release: saved only below, marked; nor is a held-out
    // accuracy drawn for it (its accounted epsilon is the steps').
    train.save = None;
    train.test_release = crate::config::TestRelease::Withheld;
    // The m canaries join the population q is computed from, as they join the realized rows.
    train.population = train.population.map(|p| p + config.canaries as u64);
    // Which canaries are included is the secret the audit guesses: from --seed for a
    // reproducible audit, else from the operating system.
    let canary_seed = match train.seed {
        Some(seed) => seed,
        None => {
            use rand::{SeedableRng, TryRng};
            let mut os = rand_chacha::ChaCha20Rng::try_from_rng(&mut rand::rngs::SysRng)
                .map_err(|e| Error::Config(format!("no OS entropy for the canaries: {e}")))?;
            os.try_next_u64().expect("ChaCha20 does not fail")
        }
    };
    let c = Canaries::new(config.kind, config.canaries, canary_seed);
    #[cfg(test)]
    let c = c.with_noise_factor(config.noise_factor);
    let canaries = Arc::new(Mutex::new(c));
    let run = crate::train::run_with_canaries(&train, Some(Arc::clone(&canaries)))?;
    let canaries = canaries.lock().expect("the run has finished");
    let scores = canaries
        .scores()
        .expect("a finished run scored its canaries");
    let included = canaries.included();
    let Privacy::Private(dp) = &train.privacy else {
        unreachable!("validated: private");
    };
    let outcome = bound::audit(scores, included, config.alpha, dp.delta);
    let accounting = run.accounting.expect("a private run has accounting");
    let spent = run.spent.expect("a private run spent something");
    let report = AuditReport {
        audited_epsilon: outcome.epsilon,
        accounted_epsilon: spent.epsilon,
        accountant: spent.accountant.to_string(),
        delta: dp.delta,
        alpha: config.alpha,
        canary_kind: config.kind,
        canary_directions: canaries.directions(),
        canaries: config.canaries,
        included: included.iter().filter(|&&i| i).count(),
        guesses: outcome.made,
        correct: outcome.correct,
        k_plus: outcome.guesses.k_plus,
        k_minus: outcome.guesses.k_minus,
        candidates: outcome.candidates,
        sampling_rate: accounting.sampling_rate,
        noise_multiplier: accounting.noise_multiplier,
        steps: run.steps,
        membership_inference: canaries
            .mia()
            .expect("a finished run attacked its rows")
            .clone(),
    };
    if let Some(path) = &config.save {
        save(path, &run.model, &report, config)?;
    }
    Ok(report)
}

/// The audit's model and a card that says what it is: never a release (it was trained on
/// canaries, and its epsilon is the audit's subject, not a guarantee about this file).
fn save(
    path: &std::path::Path,
    model: &crate::mlp::Mlp,
    report: &AuditReport,
    config: &AuditConfig,
) -> Result<()> {
    create_parent(path)?;
    Tensor::write_safetensors(&model.state_dict(), path)?;
    let card = serde_json::json!({
        "audit_model": true,
        "warning": "trained with privacy-audit canaries by `trainer audit`: not a release",
        "architecture": export::architecture(model.shape().layer(0).0, &config.train.hidden),
        "options": &config.train,
        "audit": report,
    });
    let file = export::card_path(path);
    let json = serde_json::to_string_pretty(&card).expect("the card serializes");
    std::fs::write(&file, json).map_err(|e| Error::io(file, e))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use shards::Location;

    use super::*;
    use crate::config::NoiseSpec;

    /// 2,000 generated rows (about 1,560 training rows) in 4 shards, by the real generator and
    /// pipeline.
    fn shards(dir: &Path) -> Location {
        let csv = dir.join("input.csv");
        let out = dir.join("shards");
        pipeline::generate(&pipeline::GenerateConfig {
            households: false,
            rows: 2000,
            seed: 1,
            na_rate: 0.01,
            output: Location::Local(csv.clone()),
            overwrite: true,
            s3: Default::default(),
        })
        .expect("generate");
        pipeline::run(&pipeline::RunConfig {
            shards: 4,
            overwrite: true,
            ..pipeline::RunConfig::new(Location::Local(csv), Location::Local(out.clone()))
        })
        .expect("pipeline run");
        Location::Local(out)
    }

    /// The tests' setting: a wide hidden layer (2,201 parameters, so 1,000 gradient canaries
    /// are Diracs on distinct parameters), `steps` steps of `batch`, noise multiplier `sigma`.
    fn audit(
        data: &Location,
        kind: CanaryKind,
        batch: u32,
        steps: u32,
        sigma: f64,
        seed: u64,
    ) -> AuditConfig {
        let mut t = TrainConfig::with_preset(data.clone(), crate::Preset::Seed);
        t.batch_size = batch;
        t.epochs = steps;
        t.hidden = vec![200];
        t.lr = 0.05;
        t.seed = Some(seed);
        t.attack_feature = None;
        if let Privacy::Private(dp) = &mut t.privacy {
            dp.noise = NoiseSpec::Multiplier(sigma);
        }
        let mut a = AuditConfig::new(t);
        a.kind = kind;
        a
    }

    const FULL_BATCH: u32 = 1_000_000;

    /// Correct DP runs never audit above their accounted epsilon: full-batch and batch-128
    /// gradient canaries and batch-32 input canaries, several seeds each.
    #[test]
    fn audited_epsilon_never_exceeds_accounted_for_correct_runs() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        for seed in 0..3 {
            for (kind, batch, steps, sigma) in [
                (CanaryKind::Gradient, FULL_BATCH, 10, 4.0),
                (CanaryKind::Gradient, 128, 2, 1.0),
                (CanaryKind::Input, 32, 3, 1.0),
            ] {
                let r = run(&audit(&data, kind, batch, steps, sigma, seed)).unwrap();
                eprintln!(
                    "AUDIT seed {seed} {kind} batch {batch}: audited {:.3} accounted {:.3} ({}/{})",
                    r.audited_epsilon, r.accounted_epsilon, r.correct, r.guesses
                );
                assert!(
                    r.audited_epsilon <= r.accounted_epsilon,
                    "seed {seed} {kind} batch {batch}: audited {} > accounted {}",
                    r.audited_epsilon,
                    r.accounted_epsilon
                );
                assert_eq!(r.canaries, 1000);
                assert!(r.guesses > 0 && r.correct <= r.guesses);
            }
        }
    }

    /// Without noise (clipping on), 1,000 gradient canaries audit epsilon above 3 at full
    /// batch, and above 2 at batch 128; input canaries find some when the model memorizes.
    #[test]
    fn without_noise_the_audit_finds_a_large_epsilon() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        let r = run(&audit(&data, CanaryKind::Gradient, FULL_BATCH, 10, 0.0, 7)).unwrap();
        eprintln!(
            "AUDIT no noise: {:.3} ({}/{})",
            r.audited_epsilon, r.correct, r.guesses
        );
        assert!(r.accounted_epsilon.is_infinite());
        assert!(r.audited_epsilon >= 3.0, "{r:?}");
        // At q < 1 the real rows' expected gradient is estimated per window, not exact: the
        // audit still finds well over epsilon 2 (measured 2.6; 0.66 without the estimate).
        let r = run(&audit(&data, CanaryKind::Gradient, 128, 20, 0.0, 7)).unwrap();
        eprintln!(
            "AUDIT no noise, batch 128: {:.3} ({}/{})",
            r.audited_epsilon, r.correct, r.guesses
        );
        assert!(r.audited_epsilon >= 2.0, "{r:?}");
        // Input canaries see only the final model; a model that can memorize (lr 0.5, batch
        // 32, 30 epochs) still gives them away (measured 0.38).
        let mut config = audit(&data, CanaryKind::Input, 32, 30, 0.0, 1);
        config.train.lr = 0.5;
        let r = run(&config).unwrap();
        eprintln!(
            "AUDIT no noise, input: {:.3} ({}/{})",
            r.audited_epsilon, r.correct, r.guesses
        );
        assert!(r.audited_epsilon >= 0.2, "{r:?}");
    }

    /// A step whose noise is a tenth of what the accountant is told is caught: 10 full-batch
    /// steps told sigma 10 (accounted epsilon about 1.5) really add sigma 1, and the audit
    /// finds more epsilon than accounted. With the noise it claims, the same run is not caught.
    #[test]
    fn noise_a_tenth_of_the_accounted_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        let config = audit(&data, CanaryKind::Gradient, FULL_BATCH, 10, 10.0, 3);
        let honest = run(&config).unwrap();
        assert!(
            honest.audited_epsilon <= honest.accounted_epsilon,
            "{honest:?}"
        );
        let lying = run(&AuditConfig {
            noise_factor: 0.1,
            ..config
        })
        .unwrap();
        eprintln!(
            "AUDIT honest {:.3} ({}/{}), lying {:.3} ({}/{}), accounted {:.3}",
            honest.audited_epsilon,
            honest.correct,
            honest.guesses,
            lying.audited_epsilon,
            lying.correct,
            lying.guesses,
            honest.accounted_epsilon
        );
        assert_eq!(lying.accounted_epsilon, honest.accounted_epsilon);
        assert!(
            lying.audited_epsilon > lying.accounted_epsilon,
            "not caught: {lying:?}"
        );
    }

    /// At full batch without noise, a canary's score is exactly what it put in: steps x C / B
    /// when included, 0 when not (the real rows' gradient is subtracted exactly), so the
    /// canaries enter the step as rows of gradient norm C and nothing else reaches the score.
    #[test]
    fn full_batch_scores_are_exactly_the_canaries_contributions() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        let config = audit(&data, CanaryKind::Gradient, FULL_BATCH, 4, 0.0, 11);
        let canaries = Arc::new(Mutex::new(Canaries::new(CanaryKind::Gradient, 300, 11)));
        let report =
            crate::train::run_with_canaries(&config.train, Some(Arc::clone(&canaries))).unwrap();
        let c = canaries.lock().unwrap();
        let included = c.included().iter().filter(|&&i| i).count();
        let accounting = report.accounting.unwrap();
        assert_eq!(accounting.sampling_rate, 1.0);
        // B is the expected batch: every real row and every included canary.
        let rows = report.metrics[0]
            .non_private
            .as_ref()
            .expect("the run's own diagnostics")
            .examples as f64;
        let per_step = 3.0 / rows;
        assert!(
            included > 100 && rows > 1500.0 + included as f64,
            "{included} {rows}"
        );
        for (i, (&score, &inc)) in c.scores().unwrap().iter().zip(c.included()).enumerate() {
            let want = if inc { 4.0 * per_step } else { 0.0 };
            assert!(
                (score - want).abs() < 1e-2 * per_step,
                "canary {i} (included {inc}): {score} vs {want}"
            );
        }
    }

    /// Which canaries are included is the secret the audit guesses, so the mechanism must not
    /// depend on it beyond each canary's own contribution: the sampling rate, the steps and the
    /// divisor are the same whichever canaries are in (every canary has a row the sampler
    /// draws; an excluded canary's row trains nothing). Each canary's inclusion is then exactly
    /// the add/remove neighbour of the sampled Gaussian mechanism the accountant composes. (q
    /// was B / (N + included): it moved with the secret.)
    #[test]
    fn the_sampling_rate_does_not_depend_on_which_canaries_are_included() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        for kind in [CanaryKind::Gradient, CanaryKind::Input] {
            let config = audit(&data, kind, 128, 1, 1.0, 5);
            let run_with = |seed: u64| {
                let c = Arc::new(Mutex::new(Canaries::new(kind, 300, seed)));
                let report =
                    crate::train::run_with_canaries(&config.train, Some(Arc::clone(&c))).unwrap();
                let included = c.lock().unwrap().included().iter().filter(|&&i| i).count();
                (
                    report.accounting.unwrap().sampling_rate,
                    report.steps,
                    included,
                )
            };
            let (a, b) = (run_with(1), run_with(2));
            assert_ne!(
                a.2, b.2,
                "the two draws include different numbers of canaries"
            );
            assert_eq!((a.0, a.1), (b.0, b.1), "{kind}: {a:?} vs {b:?}");
        }
    }

    /// With `--population N_PUB`, the audit's q counts its m canaries into the public size,
    /// as it counts them into the realized rows without it: q = B / (N_PUB + m).
    #[test]
    fn the_audit_adds_its_canaries_to_a_public_population() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        let mut config = audit(&data, CanaryKind::Gradient, 128, 1, 1.0, 5);
        config.canaries = 300;
        config.train.population = Some(5_000);
        let report = run(&config).unwrap();
        assert_eq!(report.sampling_rate, 128.0 / 5_300.0);
        assert_eq!(
            report.steps, 41,
            "round(5,300 / 128) steps in the one epoch"
        );
    }

    #[test]
    fn bad_audit_options_are_refused_naming_them() {
        let data = Location::parse("shards").unwrap();
        let base = AuditConfig::new(TrainConfig::new(data));
        for (change, flag) in [
            (
                &(|a: &mut AuditConfig| a.canaries = 0) as &dyn Fn(&mut AuditConfig),
                "--canaries",
            ),
            (&|a: &mut AuditConfig| a.alpha = 1.5, "--alpha"),
            (
                &|a: &mut AuditConfig| a.train.privacy = Privacy::NonPrivate,
                "--no-dp",
            ),
            (
                &|a: &mut AuditConfig| a.train.cluster = cluster::Cluster::Single { threads: 2 },
                "--threads",
            ),
        ] {
            let mut a = base.clone();
            change(&mut a);
            let err = a.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
    }
}
