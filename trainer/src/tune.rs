//! `trainer tune`: accounted hyperparameter search (Papernot and Steinke, "Hyperparameter
//! tuning with Renyi differential privacy", ICLR 2022).
//!
//! **The guarantee.** Let Q be one run of the trainer with hyperparameters drawn uniformly at
//! random from a small grid (learning rate, clip bound, epochs); each grid point's noise
//! multiplier is fixed before any data is seen, so that every point's RDP curve (its steps, its
//! DP quantile bounds, standardization and held-out releases, all composed) lies below a common
//! curve, the pointwise maximum, which is then Q's RDP curve (Renyi divergence is jointly
//! quasi-convex, so the mixture over the grid is bounded by its worst point). The tuner draws a
//! number of runs K from a public distribution (Poisson, or a truncated negative binomial: the
//! logarithmic or geometric), runs Q K times on the same data with independent keys, and
//! releases only the run with the best score, its noisy held-out accuracy (a release each run
//! makes and Q's curve includes): by Theorems 2 and 6 of the paper the whole procedure is RDP
//! with the curve [`accountant::rdp::repeat_and_select`] computes (dp_accounting 0.6's
//! `RepeatAndSelectDpEvent`), converted to (epsilon, delta) as every RDP figure here. What is
//! not released: the other runs' models and scores, and K itself (the theorem covers the
//! selected run's output only), so they are printed for the operator, marked, and written
//! nowhere.
//!
//! **Calibration.** For a target epsilon, the tuner searches the largest per-run epsilon such
//! that, with every grid point's noise calibrated (by RDP) to spend it, the theorem's total is
//! at most the target. The total takes the steps' RDP as dp_accounting computes it
//! ([`rdp::compute_rdp_as_dp_accounting`]: every term of the fractional-order series counted
//! positive, on or above Opacus's sign-correct series by about 4e-5), so that the epsilon
//! printed is dp_accounting's for the same search, not a hair below it.

use std::path::PathBuf;
use std::sync::Arc;

use accountant::rdp::{self, Runs};
use accountant::{AccountantKind, PrivacySpent, Releases};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::config::{NoiseSpec, Privacy, TestRelease, TrainConfig};
use crate::export::{self, ModelCard};
use crate::mechanism::privacy::Preprocessing;
use crate::train::{Loaded, SamplingPlan};
use crate::{Error, Result};

/// The hyperparameters a tune draws from: every combination of the three lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grid {
    /// Learning rates.
    pub lr: Vec<f64>,
    /// Clip bounds C.
    pub l2_norm_clip: Vec<f64>,
    /// Epochs (at a fixed total budget, more epochs mean more noise per step).
    pub epochs: Vec<u32>,
}

impl Grid {
    /// Every point, in order (learning rate slowest, then clip, then epochs).
    pub fn points(&self) -> Vec<(f64, f64, u32)> {
        let mut out = Vec::new();
        for &lr in &self.lr {
            for &clip in &self.l2_norm_clip {
                for &epochs in &self.epochs {
                    out.push((lr, clip, epochs));
                }
            }
        }
        out
    }
}

/// A checked tune.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneConfig {
    /// The options every run shares; its noise is `TargetEpsilon(total)`, the whole tune's
    /// budget.
    pub base: TrainConfig,
    /// The hyperparameters drawn from.
    pub grid: Grid,
    /// The distribution of the number of runs.
    pub runs: Runs,
    /// Where the released model and its card go.
    pub out: PathBuf,
    /// Replace an earlier release there.
    pub overwrite: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// A grid point's run, as planned: its hyperparameters and noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Candidate {
    /// Learning rate.
    pub lr: f64,
    /// Clip bound.
    pub l2_norm_clip: f64,
    /// Epochs.
    pub epochs: u32,
    /// Steps in all.
    pub steps: u64,
    /// The noise multiplier calibrated for it.
    pub noise_multiplier: f64,
}

/// The plan of a tune: each grid point's noise and the budget the whole tune spends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TunePlan {
    /// The grid points, with their noise.
    pub candidates: Vec<Candidate>,
    /// The sampling rate every run uses.
    pub sampling_rate: f64,
    /// What one run spends (RDP), each grid point calibrated to it.
    pub run_epsilon: f64,
    /// What the whole tune spends: the theorem's epsilon at the run's delta (RDP).
    pub epsilon: f64,
    /// The delta.
    pub delta: f64,
    /// The distribution of the number of runs.
    #[serde(serialize_with = "runs")]
    pub runs: Runs,
}

fn runs<S: serde::Serializer>(r: &Runs, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&describe(*r))
}

/// The distribution in words.
pub fn describe(r: Runs) -> String {
    match r {
        Runs::Poisson { mean } => format!("Poisson of mean {mean}"),
        Runs::TruncatedNegativeBinomial { mean, shape: 0.0 } => {
            format!("logarithmic of mean {mean}")
        }
        Runs::TruncatedNegativeBinomial { mean, shape: 1.0 } => {
            format!("geometric of mean {mean}")
        }
        Runs::TruncatedNegativeBinomial { mean, shape } => {
            format!("truncated negative binomial of shape {shape} and mean {mean}")
        }
    }
}

/// The theorem's epsilon of a tune whose runs have the RDP curves `curves` (at `orders`), each
/// run's hyperparameters drawn among them: [`rdp::repeat_and_select`] of their pointwise
/// maximum, converted at `delta`.
pub fn tune_epsilon(orders: &[f64], curves: &[Vec<f64>], runs: Runs, delta: f64) -> Result<f64> {
    let mut worst = vec![0.0f64; orders.len()];
    for c in curves {
        for (w, r) in worst.iter_mut().zip(c) {
            *w = w.max(*r);
        }
    }
    let repeated = rdp::repeat_and_select(orders, &worst, runs)?;
    Ok(rdp::get_privacy_spent(orders, &repeated, delta).0.max(0.0))
}

impl TuneConfig {
    /// Checks what the types do not.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.into()));
        self.base.validate()?;
        self.runs.validate()?;
        let Privacy::Private(dp) = &self.base.privacy else {
            return bad("tune releases a private model: leave --no-dp out");
        };
        if !matches!(dp.noise, NoiseSpec::TargetEpsilon(_)) {
            return bad(
                "tune needs --target-epsilon, the whole tune's budget (it calibrates each \
                 grid point's noise for it)",
            );
        }
        if dp.grad_sample.sensitivity() != 1.0 {
            return bad("tune clips per example: leave --microbatch-size out");
        }
        if !matches!(self.base.test_release, TestRelease::Noisy { .. })
            || self.base.test_fraction == 0.0
        {
            return bad(
                "tune selects the best run by its noisy held-out accuracy: keep \
                 --test-accuracy-release noisy and a test split",
            );
        }
        if self.grid.lr.is_empty()
            || self.grid.l2_norm_clip.is_empty()
            || self.grid.epochs.is_empty()
        {
            return bad("--grid-lr, --grid-clip and --grid-epochs each need a value");
        }
        for (flag, v) in [
            ("--grid-lr", &self.grid.lr),
            ("--grid-clip", &self.grid.l2_norm_clip),
        ] {
            if let Some(x) = v.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                return Err(Error::Config(format!(
                    "{flag} {x} must be positive and finite"
                )));
            }
        }
        if self.grid.epochs.contains(&0) {
            return bad("--grid-epochs must be at least 1");
        }
        if self.grid.points().len() > 1000 {
            return bad("the grid has more than 1000 points");
        }
        if self.base.checkpoint.is_some() || self.base.cluster.processes() != 1 {
            return bad("tune runs in one process without checkpoints (--threads works)");
        }
        Ok(())
    }

    /// The total budget.
    fn target(&self) -> f64 {
        match &self.base.privacy {
            Privacy::Private(dp) => match dp.noise {
                NoiseSpec::TargetEpsilon(e) => e,
                NoiseSpec::Multiplier(_) => unreachable!("validated: a target"),
            },
            Privacy::NonPrivate => unreachable!("validated: private"),
        }
    }

    /// The plan on data with `train_units` training units and the releases each run makes
    /// before and after its steps (`preprocessing`, and the held-out release at the base's
    /// noise): every grid point's noise such that the theorem's total is at most the target.
    pub fn plan(&self, train_units: usize, preprocessing: Preprocessing) -> Result<TunePlan> {
        let Privacy::Private(dp) = &self.base.privacy else {
            unreachable!("validated: private")
        };
        let delta = dp.delta;
        let sampling = SamplingPlan::new(train_units, self.base.batch_size, self.base.population);
        let q = sampling.rate;
        let releases = Releases {
            gaussians: preprocessing
                .gaussian
                .into_iter()
                .chain(self.base.test_release_noise())
                .collect(),
            exponential: preprocessing
                .quantiles
                .map_or_else(Vec::new, |(e, n)| vec![e; n as usize]),
        };
        let orders = rdp::default_orders();
        let points = self.grid.points();
        let at = |run_epsilon: f64| -> Result<(Vec<Candidate>, f64)> {
            let mut candidates = Vec::with_capacity(points.len());
            let mut curves = Vec::with_capacity(points.len());
            for &(lr, clip, epochs) in &points {
                let steps = sampling.steps_per_epoch * u64::from(epochs);
                let sigma = accountant::calibrate_noise_composed(
                    AccountantKind::Rdp,
                    q,
                    run_epsilon,
                    steps,
                    &releases,
                    delta,
                )?;
                curves.push(rdp::composed_rdp_as_dp_accounting(
                    q, sigma, steps, &releases, &orders,
                ));
                candidates.push(Candidate {
                    lr,
                    l2_norm_clip: clip,
                    epochs,
                    steps,
                    noise_multiplier: sigma,
                });
            }
            Ok((
                candidates,
                tune_epsilon(&orders, &curves, self.runs, delta)?,
            ))
        };
        let target = self.target();
        // The total grows with the per-run budget: bisect for the largest that meets the target
        // (in log space, to a relative 1e-3), from what the releases alone spend (no per-run
        // budget reaches below it) up to the target.
        let (floor, _) = rdp::get_privacy_spent(&orders, &releases.rdp(&orders), delta);
        let (mut lo, mut hi) = (floor.max(target * 1e-3), target);
        let mut best: Option<(Vec<Candidate>, f64, f64)> = None;
        // The target itself first (one run spending it all is the most a run can be given).
        let mut mid = hi;
        loop {
            match at(mid) {
                Ok((c, total)) if total <= target => {
                    lo = mid;
                    best = Some((c, mid, total));
                }
                Ok(_) => hi = mid,
                // Below what the releases alone spend: too small.
                Err(Error::Accountant(accountant::Error::UnreachableEpsilon { .. })) => lo = mid,
                Err(e) => return Err(e),
            }
            if hi / lo <= 1.0 + 1e-3 {
                break;
            }
            mid = (lo * hi).sqrt();
        }
        let (candidates, run_epsilon, epsilon) = best.ok_or_else(|| {
            Error::Config(format!(
                "--target-epsilon {target}: a tune of {} needs more, even with runs that \
                 spend almost nothing (the theorem adds ln(mean) / (order - 1) at every order)",
                describe(self.runs)
            ))
        })?;
        Ok(TunePlan {
            candidates,
            sampling_rate: q,
            run_epsilon,
            epsilon,
            delta,
            runs: self.runs,
        })
    }

    /// The options of run `k` at grid point `c`: its hyperparameters and noise, accounted by
    /// RDP, keyed by its own seed (from the tune's, if given), writing nothing.
    pub fn run_config(&self, c: &Candidate, k: u64) -> TrainConfig {
        let mut t = self.base.clone();
        t.lr = c.lr;
        t.epochs = c.epochs;
        if let Privacy::Private(dp) = &mut t.privacy {
            dp.l2_norm_clip = c.l2_norm_clip;
            dp.noise = NoiseSpec::Multiplier(c.noise_multiplier);
            dp.accountant = AccountantKind::Rdp;
        }
        t.seed = self
            .base
            .seed
            .map(|s| crate::sweep::repeat_seed(s, u32::try_from(k).unwrap_or(u32::MAX)));
        t.save = None;
        t.metrics_out = None;
        t.checkpoint = None;
        t.progress = false;
        t.quiet = true;
        t
    }
}

/// One run of a tune, as the operator sees it (exact figures, not released).
#[derive(Debug, Clone, Serialize)]
pub struct TuneRun {
    /// The run's number, from 1.
    pub run: u64,
    /// Its grid point.
    pub candidate: Candidate,
    /// Its noisy held-out accuracy, the score.
    pub score: f64,
    /// Its exact held-out accuracy.
    pub test_accuracy: Option<f64>,
}

/// What a tune did.
#[derive(Debug, Clone)]
pub struct Tuned {
    /// The plan.
    pub plan: TunePlan,
    /// Every run (the operator's: exact figures, not released).
    pub runs: Vec<TuneRun>,
    /// The index of the released run in `runs` (none when K = 0).
    pub best: Option<usize>,
    /// The held-out rows' majority share (exact, the operator's).
    pub majority: f64,
    /// The budget spent.
    pub spent: PrivacySpent,
}

/// The card's account of a tune: what was searched and what the guarantee is.
#[derive(Debug, Clone, Serialize)]
pub struct TuningStatement {
    /// How.
    pub method: String,
    /// The grid, with each point's planned noise (public: functions of the options and N).
    pub candidates: Vec<Candidate>,
    /// The distribution of the number of runs (public, fixed before the data is seen).
    pub runs: String,
    /// What one run spends (RDP).
    pub run_epsilon: f64,
    /// What the whole tune spends (the card's `privacy.epsilon`).
    pub epsilon: f64,
    /// In words.
    pub statement: String,
}

/// Runs the tune: loads the shards once, plans, draws the number of runs, trains each at a
/// random grid point through [`crate::run_loaded`], calls `each` with each run (for the
/// operator), and releases the best run's model and card in `--out`.
pub fn tune(config: &TuneConfig, mut each: impl FnMut(&TuneRun)) -> Result<Tuned> {
    config.validate()?;
    let model = config.out.join("model.safetensors");
    if export::card_path(&model).exists() && !config.overwrite {
        return Err(Error::Config(format!(
            "--out {}: a model is there (pass --overwrite to replace it)",
            config.out.display()
        )));
    }
    export::check_writable(&model)?;
    let base = crate::train::with_units(&config.base)?;
    let config = TuneConfig {
        base,
        ..config.clone()
    };
    let loaded = Arc::new(Loaded::load(&config.base)?);
    let (train_units, test_ones, test_rows, names, bounded) = loaded.with_shares(|shares| {
        let units = shares.iter().map(|d| d.train_units()).sum::<usize>();
        let ones = shares
            .iter()
            .map(|d| d.test.label_sum())
            .sum::<Result<f64>>();
        let rows = shares.iter().map(|d| d.test.len()).sum::<usize>();
        (
            units,
            ones,
            rows,
            shares[0].feature_names.clone(),
            shares[0].transform.bounded.len() as u32,
        )
    });
    let test_ones = test_ones?;
    let p = test_ones / test_rows.max(1) as f64;
    let majority = p.max(1.0 - p);
    let preprocessing = Preprocessing {
        gaussian: config.base.features.gaussian_release(&names),
        quantiles: config
            .base
            .features
            .auto_bounds
            .filter(|_| bounded > 0)
            .map(|q| (q.epsilon, 2 * bounded)),
    };
    let plan = config.plan(train_units, preprocessing)?;
    let mut rng = match config.base.seed {
        Some(s) => ChaCha20Rng::seed_from_u64(shards::splitmix64(s ^ 0x7475_6e65)),
        None => ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|e| Error::Config(format!("no OS entropy for the tune's key: {e}")))?,
    };
    let uniform = |rng: &mut ChaCha20Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let k = config.runs.quantile(uniform(&mut rng));
    let bar = if config.progress {
        let bar = ProgressBar::new(k);
        bar.set_style(
            ProgressStyle::with_template("tune [{bar:30}] {pos}/{len} runs {elapsed} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut runs: Vec<TuneRun> = Vec::new();
    let mut best: Option<(usize, crate::RunReport)> = None;
    for i in 0..k {
        let c = plan.candidates[(rng.next_u64() % plan.candidates.len() as u64) as usize];
        bar.set_message(format!(
            "lr {} clip {} epochs {}",
            c.lr, c.l2_norm_clip, c.epochs
        ));
        let report = crate::run_loaded(&config.run_config(&c, i), &loaded)?;
        let score = report
            .test_release
            .as_ref()
            .map(|r| r.accuracy)
            .ok_or_else(|| Error::Config("a tune run made no held-out release".into()))?;
        let run = TuneRun {
            run: i + 1,
            candidate: c,
            score,
            test_accuracy: report.metrics.last().and_then(|m| m.test_accuracy),
        };
        bar.suspend(|| each(&run));
        if best.as_ref().is_none_or(|(b, _)| score > runs[*b].score) {
            best = Some((runs.len(), report));
        }
        runs.push(run);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let spent = PrivacySpent {
        epsilon: plan.epsilon,
        delta: plan.delta,
        accountant: AccountantKind::Rdp,
        rdp_order: None,
    };
    if let Some((_, report)) = &best {
        let card_config = TrainConfig {
            save: Some(model.clone()),
            ..report.config.clone()
        };
        let mut card = ModelCard::new(
            &card_config,
            &report.feature_names,
            &report.label_name,
            report.accounting,
            Some(spent),
            report.steps,
            None,
            report.standardizer.as_ref(),
            &report.bounds,
            report.test_release.as_ref(),
        );
        let statement = TuningStatement {
            method: "Papernot and Steinke 2022 (ICLR), random number of runs, the best \
                     released; dp_accounting's RepeatAndSelectDpEvent"
                .into(),
            candidates: plan.candidates.clone(),
            runs: describe(plan.runs),
            run_epsilon: plan.run_epsilon,
            epsilon: plan.epsilon,
            statement: format!(
                "This model is the best, by its noisy held-out accuracy, of a random number of \
                 runs (drawn from the {} distribution), each at a grid point drawn uniformly \
                 from candidates with its noise calibrated so that one run spends epsilon \
                 {:.4} (RDP); by Papernot and Steinke (2022, Theorems 2 and 6) the whole search \
                 is ({:.4}, {:e})-DP (RDP, converted at the run's delta), which privacy.epsilon \
                 states. Only this run's model and card are released: how many runs there were \
                 and the other runs' models and scores are not.",
                describe(plan.runs),
                plan.run_epsilon,
                plan.epsilon,
                plan.delta
            ),
        };
        if let Some(p) = &mut card.privacy {
            p.statement = format!(
                "{} (Tuned: see tuning; the mechanism below is the released run's, and epsilon \
                 is the whole search's.)",
                p.statement
            );
        }
        card.tuning = Some(statement);
        export::save(&model, &report.model, &card)?;
    }
    Ok(Tuned {
        plan,
        best: best.map(|(i, _)| i),
        runs,
        majority,
        spent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The theorem's epsilon against dp_accounting 0.6.0's `RepeatAndSelectDpEvent`
    /// (tests/data/tune_reference.py), with the releases a run makes: the held-out release
    /// (Gaussian 10), the standardization (Gaussian 10) and 30 DP quantiles of epsilon 0.05
    /// (zCDP epsilon^2 / 8 in RDP).
    ///
    /// - Steps whose RDP both compute exactly (full batch: the plain Gaussian, 10 steps at noise
    ///   4), with a second grid point (noise 6) that the first dominates: equal to 1e-9.
    /// - Subsampled steps (800 at q 256/20532, noise 0.78), their curve as dp_accounting computes
    ///   it ([`rdp::compute_rdp_as_dp_accounting`], which the tune states): equal to 1e-9. (With
    ///   Opacus's sign-correct series, [`rdp::compute_rdp`], the same tune comes out 2.5e-4 to
    ///   4e-4 lower.)
    #[test]
    fn the_tunes_epsilon_is_dp_accountings_repeat_and_select() {
        let orders = rdp::default_orders();
        let releases = Releases {
            gaussians: vec![10.0, 10.0],
            exponential: vec![0.05; 30],
        };
        let exact = [
            rdp::composed_rdp(1.0, 4.0, 10, &releases, &orders),
            rdp::composed_rdp(1.0, 6.0, 10, &releases, &orders),
        ];
        for (runs, want) in [
            (Runs::Poisson { mean: 4.0 }, 5.625_772_185_469_742),
            (
                Runs::TruncatedNegativeBinomial {
                    mean: 4.0,
                    shape: 0.0,
                },
                5.420_803_059_206_984,
            ),
        ] {
            let got = tune_epsilon(&orders, &exact, runs, 1e-5).unwrap();
            assert!(
                ((got - want) / want).abs() < 1e-9,
                "{runs:?}: {got} vs dp_accounting's {want}"
            );
        }
        let q = 256.0 / 20532.0;
        let curve = rdp::composed_rdp_as_dp_accounting(q, 0.78, 800, &releases, &orders);
        let (one, _) = rdp::get_privacy_spent(&orders, &curve, 1e-5);
        let want = 4.535_437_689_538_19;
        assert!(((one - want) / want).abs() < 1e-9, "{one}");
        for (runs, want) in [
            (Runs::Poisson { mean: 4.0 }, 6.298_608_094_615_712),
            (
                Runs::TruncatedNegativeBinomial {
                    mean: 4.0,
                    shape: 0.0,
                },
                6.333_126_075_215_921_5,
            ),
        ] {
            let got = tune_epsilon(&orders, std::slice::from_ref(&curve), runs, 1e-5).unwrap();
            assert!(
                ((got - want) / want).abs() < 1e-9,
                "{runs:?}: {got} vs dp_accounting's {want}"
            );
        }
    }

    /// The plan spends the target (to the bisection's 1e-3), no more; each grid point's noise
    /// gives it the same one-run epsilon, so more epochs get more noise; the theorem costs more
    /// than one run.
    #[test]
    fn the_plan_meets_the_target_and_gives_longer_runs_more_noise() {
        let mut base = TrainConfig::new(shards::Location::parse("shards").unwrap());
        if let Privacy::Private(dp) = &mut base.privacy {
            dp.noise = NoiseSpec::TargetEpsilon(4.0);
        }
        let tune = TuneConfig {
            base,
            grid: Grid {
                lr: vec![0.005, 0.01],
                l2_norm_clip: vec![1.0],
                epochs: vec![5, 10],
            },
            runs: Runs::TruncatedNegativeBinomial {
                mean: 4.0,
                shape: 0.0,
            },
            out: "tune".into(),
            overwrite: false,
            progress: false,
        };
        tune.validate().unwrap();
        let pre = Preprocessing {
            gaussian: Some(10.0),
            quantiles: Some((0.05, 30)),
        };
        let plan = tune.plan(20_532, pre).unwrap();
        assert_eq!(plan.candidates.len(), 4);
        assert!(
            plan.epsilon <= 4.0 && plan.epsilon > 3.95,
            "{}",
            plan.epsilon
        );
        assert!(plan.run_epsilon < plan.epsilon, "{plan:?}");
        let (short, long) = (plan.candidates[0], plan.candidates[1]);
        assert_eq!((short.epochs, long.epochs), (5, 10));
        assert_eq!(short.steps * 2, long.steps);
        assert!(long.noise_multiplier > short.noise_multiplier, "{plan:?}");
        // Recomputed from the plan alone, as a reader of the card would.
        let orders = rdp::default_orders();
        let releases = Releases {
            gaussians: vec![10.0, 10.0],
            exponential: vec![0.05; 30],
        };
        let curves: Vec<Vec<f64>> = plan
            .candidates
            .iter()
            .map(|c| {
                rdp::composed_rdp_as_dp_accounting(
                    plan.sampling_rate,
                    c.noise_multiplier,
                    c.steps,
                    &releases,
                    &orders,
                )
            })
            .collect();
        assert_eq!(
            tune_epsilon(&orders, &curves, plan.runs, 1e-5).unwrap(),
            plan.epsilon
        );
        let mut small = tune.clone();
        if let Privacy::Private(dp) = &mut small.base.privacy {
            dp.noise = NoiseSpec::TargetEpsilon(0.05);
        }
        let e = small.plan(20_532, pre).unwrap_err().to_string();
        assert!(e.contains("--target-epsilon 0.05"), "{e}");
    }
}
