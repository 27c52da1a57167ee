//! `trainer audit`: an empirical lower bound on epsilon from one training run with canaries,
//! by two bounds: Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run"
//! (NeurIPS 2023; any (epsilon, delta)-DP mechanism, [`bound`]) and Mahloujifar, Melis and
//! Chaudhuri, "Auditing f-Differential Privacy in One Run" (arXiv:2410.22235; mechanisms with
//! a Gaussian trade-off curve, [`fdp`]); and membership inference on the real records.
//!
//! m canaries are each included with probability 1/2; the run is [`crate::run`]'s own loop
//! (same sampler, clipping, noise and accountant), with every canary a row the sampler draws
//! and the included ones training ([`canary`]). Gradient canaries live on quiet coordinates
//! that no real row touches ([`crate::mechanism::quiet`]) and are scored from every step's
//! noisy gradient there ([`score`]). After the run the auditor guesses "included" for the
//! highest scores (and "excluded" for the lowest), and each bound turns the number of right
//! guesses into the largest epsilon they rule out at confidence 1 - alpha. An implementation
//! whose epsilon is right never has audited epsilon above accounted epsilon (except with
//! probability alpha).

pub mod bound;
pub mod canary;
pub mod fdp;
pub mod mia;
#[cfg(any(test, feature = "audit-mutations"))]
pub mod mutation;
pub mod score;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tch::Tensor;

pub use bound::Outcome;
pub use canary::{Canaries, CanaryKind, Layout};
pub use mia::MiaReport;
#[cfg(any(test, feature = "audit-mutations"))]
pub use mutation::Mutation;
pub use score::ScoreKind;

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
    /// How gradient canaries are scored.
    pub score: ScoreKind,
    /// Gradient canaries' quiet coordinates, if not [`Layout::choose`]'s.
    pub quiet_coordinates: Option<usize>,
    /// Steps per LLR window, if not [`Layout::choose`]'s.
    pub score_window: Option<usize>,
    /// One minus the confidence of the bound.
    pub alpha: f64,
    /// Where to save the audit's model, if anywhere (its card says it is an audit model).
    pub save: Option<PathBuf>,
    /// The audit's tests and mutation benchmark only: how the audited step is broken.
    #[cfg(any(test, feature = "audit-mutations"))]
    pub mutation: Mutation,
}

impl AuditConfig {
    /// An audit of `train` with the defaults: 1000 gradient canaries scored by their per-step
    /// likelihood ratio, alpha 0.05, nothing saved.
    pub fn new(mut train: TrainConfig) -> Self {
        // Input canaries are crafted model inputs appended before any feature release, and DP
        // bounds would move them: the audit uses the columns the spec does not name as they are.
        train.features.auto_bounds = None;
        AuditConfig {
            train,
            canaries: 1000,
            kind: CanaryKind::Gradient,
            score: ScoreKind::Llr,
            quiet_coordinates: None,
            score_window: None,
            alpha: 0.05,
            save: None,
            #[cfg(any(test, feature = "audit-mutations"))]
            mutation: Mutation::default(),
        }
    }

    /// Checks what an audit needs beyond a valid run.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        let bad = |m: &str| Err(Error::Config(m.into()));
        if self.canaries == 0 {
            return bad("--canaries must be at least 1");
        }
        if self.quiet_coordinates == Some(0) {
            return bad("--quiet-coordinates must be at least 1");
        }
        if self.score_window == Some(0) {
            return bad("--score-window must be at least 1");
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
            return bad(
                "the audit runs on one worker (its canaries are scored where the steps run): \
                 drop --workers, --threads and --hostfile",
            );
        }
        if self.train.checkpoint.is_some() {
            return bad("--checkpoint-dir: an audit is one uninterrupted run");
        }
        Ok(())
    }
}

/// One bound's result: the audited epsilon and the guesses that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoundReport {
    /// The lower bound on epsilon, holding with probability at least 1 - alpha (under the
    /// bound's assumption).
    pub epsilon: f64,
    /// Guesses made (k+ + k-).
    pub guesses: usize,
    /// Of which right.
    pub correct: usize,
    /// Guesses "included" on the highest scores.
    pub k_plus: usize,
    /// Guesses "excluded" on the lowest scores.
    pub k_minus: usize,
    /// Canaries not guessed on.
    pub abstentions: usize,
    /// Candidate guess counts the confidence was divided over.
    pub candidates: usize,
    /// The largest epsilon this bound could have shown with these canaries at this alpha (a
    /// perfect score: every guess right that can be, given how many canaries are in): an
    /// audited epsilon below the accounted one says nothing about epsilons above this.
    pub max_epsilon: f64,
}

impl BoundReport {
    fn new(o: Outcome, m: usize, max_epsilon: f64) -> Self {
        BoundReport {
            epsilon: o.epsilon,
            guesses: o.made,
            correct: o.correct,
            k_plus: o.guesses.k_plus,
            k_minus: o.guesses.k_minus,
            abstentions: m - o.made,
            candidates: o.candidates,
            max_epsilon,
        }
    }
}

/// What an audit found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The lower bound on epsilon of Steinke et al. (any (epsilon, delta)-DP mechanism),
    /// holding with probability at least 1 - alpha: `steinke.epsilon`.
    pub audited_epsilon: f64,
    /// The f-DP lower bound (a Gaussian trade-off curve assumed): `fdp.epsilon`.
    pub fdp_epsilon: f64,
    /// The accountant's epsilon for the same run (an upper bound; infinite without noise).
    pub accounted_epsilon: f64,
    /// Whether the audit shows the accountant wrong: the Steinke bound above the accounted
    /// epsilon, or the f-DP bound above it where its assumption holds exactly (full batch).
    pub caught: bool,
    /// The accountant that gave it.
    pub accountant: String,
    /// The run's delta (also used by the bounds).
    pub delta: f64,
    /// One minus the bounds' confidence.
    pub alpha: f64,
    /// `gradient` or `input`.
    pub canary_kind: CanaryKind,
    /// How gradient canaries were scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreKind>,
    /// Gradient canaries' quiet coordinates, codes and LLR windows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
    /// Gradient canaries: the std of the noise seen on the quiet coordinates (robustly, from
    /// their changes between steps over the first 65,536 values) over the std the accountant
    /// was told; about 1 when the code adds the noise it claims. A diagnostic, not a bound;
    /// the LLR uses the noise seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_noise_ratio: Option<f64>,
    /// m.
    pub canaries: usize,
    /// How many were in the training set.
    pub included: usize,
    /// The Steinke bound (Steinke, Nasr and Jagielski 2023): holds for every (epsilon,
    /// delta)-DP mechanism.
    pub steinke: BoundReport,
    /// The f-DP bound (Mahloujifar, Melis and Chaudhuri 2024) for the Gaussian trade-off
    /// curve: holds for mechanisms whose curve is a Gaussian one (exactly at full batch).
    pub fdp: BoundReport,
    /// The GDP mu the f-DP bound rules out (that of the Gaussian mechanism exactly
    /// (fdp_epsilon, delta)-DP).
    pub fdp_mu: f64,
    /// Whether the f-DP bound's assumption holds exactly: q = 1, where T steps compose to the
    /// Gaussian mechanism with mu = sqrt(T) / sigma.
    pub fdp_exact: bool,
    /// The Steinke bound's guesses, right guesses, k+, k- and candidates (as before the f-DP
    /// bound: `steinke` holds them too).
    pub guesses: usize,
    /// Of which right.
    pub correct: usize,
    /// Guesses "included" on the highest scores.
    pub k_plus: usize,
    /// Guesses "excluded" on the lowest scores.
    pub k_minus: usize,
    /// Candidate (k+, k-) pairs the confidence was divided over.
    pub candidates: usize,
    /// The run's sampling rate q the accountant was told (with the canaries in the population).
    pub sampling_rate: f64,
    /// The noise multiplier the accountant was told.
    pub noise_multiplier: f64,
    /// Steps taken.
    pub steps: u64,
    /// What was audited, in words.
    pub audited: String,
    /// What the bounds assume, in words.
    pub assumptions: String,
    /// The LOSS attack on the real training rows against the held-out rows.
    pub membership_inference: MiaReport,
}

impl AuditReport {
    /// The human lines: what was audited, each bound, the verdict.
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
        let guesses = |b: &BoundReport| {
            format!(
                "{} of {} guesses right, k+ {}, k- {}, {} abstentions, best of {} tried; at \
                 most {:.2} with a perfect score",
                b.correct,
                b.guesses,
                b.k_plus,
                b.k_minus,
                b.abstentions,
                b.candidates,
                b.max_epsilon
            )
        };
        let noise = match self.quiet_noise_ratio {
            Some(r) => format!(
                "audit: the noise on the quiet coordinates is {r:.3} of what the accountant \
                 was told\n"
            ),
            None => String::new(),
        };
        format!(
            "audit: {}\n\
             audit: assumes {}\n\
             {noise}\
             audit (Steinke et al. 2023, any (epsilon, delta)-DP mechanism): epsilon >= {:.3} ({})\n\
             audit (f-DP, Mahloujifar et al. 2024, Gaussian trade-off curve{}): epsilon >= {:.3}, \
             mu >= {:.3} ({})\n\
             audit: epsilon >= {:.3} with confidence {}; the accountant ({}) says epsilon <= {:.3} \
             at delta {}: {}. Membership inference (LOSS) on real rows: AUC {:.4}, {tpr}",
            self.audited,
            self.assumptions,
            self.audited_epsilon,
            guesses(&self.steinke),
            if self.fdp_exact {
                ", exact at full batch"
            } else {
                ", an approximation at q < 1"
            },
            self.fdp_epsilon,
            self.fdp_mu,
            guesses(&self.fdp),
            self.audited_epsilon.max(if self.fdp_exact {
                self.fdp_epsilon
            } else {
                0.0
            }),
            1.0 - self.alpha,
            self.accountant,
            self.accounted_epsilon,
            self.delta,
            if self.caught {
                "CAUGHT: the mechanism spends more than the accountant says"
            } else {
                "not caught"
            },
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
    let c = Canaries::new(config.kind, config.canaries, canary_seed).scored(
        config.score,
        config.quiet_coordinates,
        config.score_window,
    );
    #[cfg(any(test, feature = "audit-mutations"))]
    let c = c.with_mutation(config.mutation);
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
    let m = config.canaries;
    let inside = included.iter().filter(|&&i| i).count();
    let steinke = BoundReport::new(
        bound::audit(scores, included, config.alpha, dp.delta),
        m,
        bound::max_epsilon(m, inside, config.alpha, dp.delta),
    );
    let fdp = BoundReport::new(
        fdp::audit(scores, included, config.alpha, dp.delta),
        m,
        fdp::max_epsilon(m, inside, config.alpha, dp.delta),
    );
    let accounting = run.accounting.expect("a private run has accounting");
    let spent = run.spent.expect("a private run spent something");
    let fdp_exact = accounting.sampling_rate >= 1.0;
    let layout = canaries.layout();
    let report = AuditReport {
        audited_epsilon: steinke.epsilon,
        fdp_epsilon: fdp.epsilon,
        accounted_epsilon: spent.epsilon,
        caught: steinke.epsilon > spent.epsilon || (fdp_exact && fdp.epsilon > spent.epsilon),
        accountant: spent.accountant.to_string(),
        delta: dp.delta,
        alpha: config.alpha,
        canary_kind: config.kind,
        score: layout.map(|_| config.score),
        layout,
        quiet_noise_ratio: canaries.noise_ratio(),
        canaries: m,
        included: inside,
        steinke,
        fdp,
        fdp_mu: if fdp.epsilon > 0.0 {
            fdp::gaussian_mu(fdp.epsilon, dp.delta)
        } else {
            0.0
        },
        fdp_exact,
        guesses: steinke.guesses,
        correct: steinke.correct,
        k_plus: steinke.k_plus,
        k_minus: steinke.k_minus,
        candidates: steinke.candidates,
        sampling_rate: accounting.sampling_rate,
        noise_multiplier: accounting.noise_multiplier,
        steps: run.steps,
        audited: audited(config, layout),
        assumptions: assumptions(fdp_exact),
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

/// What an audit of `config` audits, in words.
fn audited(config: &AuditConfig, layout: Option<Layout>) -> String {
    let m = config.canaries;
    match (config.kind, layout) {
        (CanaryKind::Gradient, Some(l)) => format!(
            "{m} gradient canaries (white-box) on {} quiet coordinates, parameters no real row \
             touches ({}), scored by {}: the run's own sampler, the clipping of each row over \
             its whole gradient, the noise, the divisor and the accountant's claim; not the \
             model's per-example gradients (the canaries have none)",
            l.quiet_coordinates,
            if l.code_width == 1 {
                "a coordinate each".to_string()
            } else {
                format!("codes of {} coordinates with random signs", l.code_width)
            },
            match config.score {
                ScoreKind::Llr if l.score_window == 1 => {
                    "each step's likelihood ratio, included at rate q against never".to_string()
                }
                ScoreKind::Llr => format!(
                    "the likelihood ratio of windows of {} steps, included at rate q against never",
                    l.score_window
                ),
                ScoreKind::Sum => "the sum of the steps' noisy gradients (the final model)".into(),
            }
        ),
        _ => format!(
            "{m} input canaries (black-box: crafted rows, scored by how much training lowered \
             their loss in the final model): the whole training path, per-example gradients \
             included"
        ),
    }
}

/// What the bounds assume, in words.
fn assumptions(fdp_exact: bool) -> String {
    format!(
        "each canary included independently with probability 1/2 (the secret), and scores \
         computed from what the mechanism outputs and the codes fixed before the run, never \
         from the sampler's draws; the Steinke bound then holds for any (epsilon, delta)-DP \
         mechanism; the f-DP bound assumes the mechanism's trade-off curve is that of a \
         Gaussian mechanism with the same (epsilon, delta), {}",
        if fdp_exact {
            "which full-batch DP-SGD is exactly (its steps compose to mu = sqrt(T) / sigma)"
        } else {
            "which Poisson subsampling at q < 1 is not: there it is an estimate, not a proof"
        }
    )
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

    /// The tests' setting: the default model (551 parameters), `epochs` epochs of `batch`,
    /// noise multiplier `sigma`, 1000 canaries.
    fn audit(
        data: &Location,
        kind: CanaryKind,
        batch: u32,
        epochs: u32,
        sigma: f64,
        seed: u64,
    ) -> AuditConfig {
        let mut t = TrainConfig::with_preset(data.clone(), crate::Preset::Seed);
        t.batch_size = batch;
        t.epochs = epochs;
        t.lr = 0.05;
        t.seed = Some(seed);
        t.attack_feature = None;
        t.quiet = true;
        if let Privacy::Private(dp) = &mut t.privacy {
            dp.noise = NoiseSpec::Multiplier(sigma);
        }
        let mut a = AuditConfig::new(t);
        a.kind = kind;
        a
    }

    const FULL_BATCH: u32 = 1_000_000;

    fn show(what: &str, r: &AuditReport) {
        eprintln!(
            "AUDIT {what}: Steinke {:.3} ({}/{}), f-DP {:.3} ({}/{}), accounted {:.3}, window {:?}",
            r.audited_epsilon,
            r.steinke.correct,
            r.steinke.guesses,
            r.fdp_epsilon,
            r.fdp.correct,
            r.fdp.guesses,
            r.accounted_epsilon,
            r.layout.map(|l| l.score_window),
        );
    }

    /// Correct DP runs never audit above their accounted epsilon: full-batch and batch-128
    /// gradient canaries and batch-32 input canaries, several seeds each; by the Steinke bound
    /// always, by the f-DP bound where its Gaussian curve is the mechanism's (full batch).
    #[test]
    fn audited_epsilon_never_exceeds_accounted_for_correct_runs() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        for seed in 0..3 {
            for (kind, batch, epochs, sigma) in [
                (CanaryKind::Gradient, FULL_BATCH, 10, 4.0),
                (CanaryKind::Gradient, 128, 2, 1.0),
                (CanaryKind::Input, 32, 3, 1.0),
            ] {
                let r = run(&audit(&data, kind, batch, epochs, sigma, seed)).unwrap();
                show(&format!("seed {seed} {kind} batch {batch}"), &r);
                assert!(!r.caught, "{r:?}");
                assert!(r.audited_epsilon <= r.accounted_epsilon, "{r:?}");
                assert_eq!(r.fdp_exact, batch == FULL_BATCH);
                if r.fdp_exact {
                    assert!(r.fdp_epsilon <= r.accounted_epsilon, "{r:?}");
                }
                assert_eq!(r.canaries, 1000);
                assert!(r.steinke.guesses > 0 && r.steinke.correct <= r.steinke.guesses);
                assert_eq!(r.fdp.k_minus, 0, "the f-DP bound guesses one side");
                assert_eq!(r.fdp.abstentions + r.fdp.guesses, 1000);
            }
        }
    }

    /// Without noise (clipping on), 1000 gradient canaries audit epsilon above 3 at full batch
    /// and at batch 128, where the per-step likelihood ratio sees each drawn canary; input
    /// canaries find some when the model memorizes.
    #[test]
    fn without_noise_the_audit_finds_a_large_epsilon() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        for (batch, epochs) in [(FULL_BATCH, 10), (128, 10)] {
            let r = run(&audit(&data, CanaryKind::Gradient, batch, epochs, 0.0, 7)).unwrap();
            show(&format!("no noise, batch {batch}"), &r);
            assert!(r.accounted_epsilon.is_infinite());
            assert!(r.audited_epsilon >= 3.0, "{r:?}");
            assert!(r.fdp_epsilon >= 5.0, "{r:?}");
        }
        // Input canaries see only the final model; a model that can memorize (lr 0.5, batch
        // 32, 60 epochs) still gives them away (measured 0.93 at seed 1; 0.40 to 0.98 over 20
        // seeds; at 30 epochs it fell to 0.19 at some seeds).
        let mut config = audit(&data, CanaryKind::Input, 32, 60, 0.0, 1);
        config.train.lr = 0.5;
        config.train.hidden = vec![200];
        let r = run(&config).unwrap();
        show("no noise, input", &r);
        assert!(r.audited_epsilon >= 0.2, "{r:?}");
    }

    /// Purposely broken steps are caught: at full batch, noise a tenth of what the accountant
    /// is told (10 steps told sigma 10) and the clip bound ten times the told one; at batch
    /// 128 (q < 1), noise a tenth. The same runs with the step they claim are not caught.
    #[test]
    fn broken_steps_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        for (batch, epochs, sigma) in [(FULL_BATCH, 10, 10.0), (128, 5, 1.5)] {
            let config = audit(&data, CanaryKind::Gradient, batch, epochs, sigma, 3);
            let honest = run(&config).unwrap();
            show(&format!("batch {batch} honest"), &honest);
            assert!(!honest.caught, "{honest:?}");
            for (name, mutation) in [
                (
                    "noise x0.1",
                    Mutation {
                        noise: 0.1,
                        ..Mutation::default()
                    },
                ),
                (
                    "clip x10",
                    Mutation {
                        clip: 10.0,
                        ..Mutation::default()
                    },
                ),
            ] {
                let lying = run(&AuditConfig {
                    mutation,
                    ..config.clone()
                })
                .unwrap();
                show(&format!("batch {batch} {name}"), &lying);
                assert_eq!(lying.accounted_epsilon, honest.accounted_epsilon);
                assert!(lying.caught, "{name} not caught: {lying:?}");
            }
        }
    }

    /// At full batch without noise, a canary's sum score is exactly what it put in: one
    /// clipped canary per step when included, nothing when not (no real row touches the
    /// quiet coordinates), and ten times that when the step clips at 10 C: the canaries go
    /// through the step's own clipping.
    #[test]
    fn full_batch_scores_are_exactly_the_canaries_contributions() {
        let dir = tempfile::tempdir().unwrap();
        let data = shards(dir.path());
        let config = audit(&data, CanaryKind::Gradient, FULL_BATCH, 4, 0.0, 11);
        for clip in [1.0, 10.0] {
            let canaries = Arc::new(Mutex::new(
                Canaries::new(CanaryKind::Gradient, 300, 11)
                    .scored(ScoreKind::Sum, None, None)
                    .with_mutation(Mutation {
                        clip,
                        ..Mutation::default()
                    }),
            ));
            let report =
                crate::train::run_with_canaries(&config.train, Some(Arc::clone(&canaries)))
                    .unwrap();
            let c = canaries.lock().unwrap();
            assert_eq!(report.accounting.unwrap().sampling_rate, 1.0);
            assert_eq!(c.layout().unwrap().code_width, 1, "a coordinate each");
            let included = c.included().iter().filter(|&&i| i).count();
            assert!(included > 100, "{included}");
            for (i, (&score, &inc)) in c.scores().unwrap().iter().zip(c.included()).enumerate() {
                let want = if inc { 4.0 * clip } else { 0.0 };
                assert!(
                    (score - want).abs() < 1e-4 * clip,
                    "canary {i} (included {inc}, clip x{clip}): {score} vs {want}"
                );
            }
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
                &|a: &mut AuditConfig| a.quiet_coordinates = Some(0),
                "--quiet-coordinates",
            ),
            (
                &|a: &mut AuditConfig| a.score_window = Some(0),
                "--score-window",
            ),
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
