//! `trainer sweep`: the privacy-utility curve. Trains with the noise calibrated to each target
//! epsilon, several times each, and once without DP, on shards loaded once, through
//! [`crate::run_loaded`] (the trainer's one training loop); writes one JSON line per run and a
//! page plotting test accuracy against epsilon.
//!
//! Seeds: without `--seed` every run draws its own keys from the OS. With `--seed S`, repeat r
//! of every point (and the baseline, repeat 0) is seeded with [`repeat_seed`]`(S, r)`, so the
//! points of one repeat start from the same initialisation; their batches and noise are keyed
//! by the run's settings too ([`crate::settings::Settings::sampler_seed`]), so every run of the
//! sweep draws its own: independent mechanisms, whose epsilons add up (basic composition). (The
//! batches were keyed by the seed alone, and points sharing them are one mechanism releasing
//! two noisy sums per batch, far above the sum of their epsilons.)

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use report::{Lines, Page, Series, number};
use serde::{Deserialize, Serialize};

use crate::config::{NoiseSpec, Privacy, TrainConfig};
use crate::publish::{self, create_parent};
use crate::train::Loaded;
use crate::{Error, Result};

/// The results file's name in `--out`.
pub const RUNS_NAME: &str = "runs.jsonl";
/// The page's name in `--out`.
pub const PAGE_NAME: &str = "report.html";

/// A checked sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepConfig {
    /// The training options every run shares (DP-SGD; the sweep sets the noise per point and
    /// writes no model, metrics file or checkpoint per run).
    pub base: TrainConfig,
    /// The points: the noise of each is calibrated to spend this epsilon over the run.
    pub target_epsilons: Vec<f64>,
    /// Runs per point.
    pub repeats: u32,
    /// The folder for `runs.jsonl` and `report.html`.
    pub out: PathBuf,
    /// Replace the results of an earlier sweep there.
    pub overwrite: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl SweepConfig {
    /// Checks what the types do not.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        self.base.validate()?;
        if !matches!(self.base.privacy, Privacy::Private(_)) {
            return bad(
                "a sweep trains with DP at each --target-epsilon (and once without DP by \
                        itself): leave --no-dp out"
                    .into(),
            );
        }
        if self.target_epsilons.is_empty() {
            return bad("--target-epsilon: give at least one epsilon".into());
        }
        if let Some(e) = self
            .target_epsilons
            .iter()
            .find(|e| !(e.is_finite() && **e > 0.0))
        {
            return bad(format!("--target-epsilon {e} must be positive and finite"));
        }
        if self.repeats == 0 {
            return bad("--repeats must be at least 1".into());
        }
        if self.base.test_fraction == 0.0 {
            return bad(
                "--test-fraction 0: a sweep plots test accuracy, it needs test rows".into(),
            );
        }
        if self.base.checkpoint.is_some() {
            return bad("a sweep writes no checkpoints (no --checkpoint-dir)".into());
        }
        if self.base.cluster.processes() != 1 {
            return bad(
                "a sweep runs in one process (--threads, not --workers or --hostfile)".into(),
            );
        }
        Ok(())
    }

    /// Where the results go.
    pub fn runs_path(&self) -> PathBuf {
        self.out.join(RUNS_NAME)
    }

    /// Where the page goes.
    pub fn page_path(&self) -> PathBuf {
        self.out.join(PAGE_NAME)
    }

    /// The options every private run shares, as the card shows options: the noise is the
    /// point's, the seed the sweep's, and no file is written per run.
    pub fn shared_settings(&self) -> serde_json::Value {
        let mut c = self.run_config(self.target_epsilons.first().copied(), 0);
        c.seed = self.base.seed;
        let mut v = serde_json::to_value(&c).expect("options serialize");
        if let Some(p) = v.pointer_mut("/privacy/private/noise") {
            *p = serde_json::Value::String("calibrated to each target epsilon".into());
        }
        v
    }

    /// The runs, in order: the baseline, then each point's repeats.
    pub fn plan(&self) -> Vec<(Option<f64>, u32)> {
        std::iter::once((None, 0))
            .chain(
                self.target_epsilons
                    .iter()
                    .flat_map(|&e| (0..self.repeats).map(move |r| (Some(e), r))),
            )
            .collect()
    }

    /// The options of one run: `target` (None: the non-private baseline), repeat `repeat`.
    pub fn run_config(&self, target: Option<f64>, repeat: u32) -> TrainConfig {
        let mut c = self.base.clone();
        c.privacy = match (&self.base.privacy, target) {
            (Privacy::Private(dp), Some(e)) => {
                let mut dp = dp.clone();
                dp.noise = NoiseSpec::TargetEpsilon(e);
                Privacy::Private(dp)
            }
            _ => Privacy::NonPrivate,
        };
        c.seed = self.base.seed.map(|s| repeat_seed(s, repeat));
        // No card, so no held-out release (the page shows the exact figures, marked).
        c.test_release = crate::config::TestRelease::Withheld;
        c.save = None;
        c.metrics_out = None;
        c.checkpoint = None;
        c.progress = false;
        c.quiet = true;
        c
    }
}

/// The seed of repeat `repeat` of a sweep seeded with `seed`.
pub fn repeat_seed(seed: u64, repeat: u32) -> u64 {
    shards::splitmix64(seed ^ shards::splitmix64(u64::from(repeat) + 1))
}

/// One run of a sweep: its JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRun {
    /// The point (absent for the non-private baseline).
    pub target_epsilon: Option<f64>,
    /// Repeat index, from 0.
    pub repeat: u32,
    /// The run's seed (absent: keyed by the OS).
    pub seed: Option<u64>,
    /// Epsilon the run spent at `delta` (absent without DP).
    pub epsilon: Option<f64>,
    /// Delta.
    pub delta: Option<f64>,
    /// The accountant.
    pub accountant: Option<String>,
    /// The calibrated noise multiplier.
    pub noise_multiplier: Option<f64>,
    /// Steps taken.
    pub steps: u64,
    /// Accuracy on the held-out rows after the last epoch.
    pub test_accuracy: Option<f64>,
    /// Mean loss on the held-out rows after the last epoch.
    pub test_loss: Option<f64>,
    /// The model-inversion attack's accuracy on held-out rows.
    pub attack_accuracy: Option<f64>,
    /// Exact training-set figures and timing: not covered by epsilon.
    pub non_private: SweepNonPrivate,
}

/// A sweep run's figures that epsilon does not cover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepNonPrivate {
    /// Always false.
    pub private: bool,
    /// Accuracy on the training rows after the last epoch.
    pub train_accuracy: Option<f64>,
    /// Wall seconds of the run.
    pub seconds: f64,
}

/// A finished sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Every run, in order.
    pub runs: Vec<SweepRun>,
    /// The majority class's share of the test rows: the accuracy of always guessing it.
    pub majority: f64,
}

/// Runs the sweep: loads the shards once, trains every run of [`SweepConfig::plan`], calls
/// `each` with each run's line (after writing it to `runs.jsonl`), and writes the page.
pub fn sweep(config: &SweepConfig, mut each: impl FnMut(&SweepRun)) -> Result<Sweep> {
    config.validate()?;
    for path in [config.runs_path(), config.page_path()] {
        if path.exists() && !config.overwrite {
            return Err(Error::Config(format!(
                "--out {}: {} exists (pass --overwrite to replace it)",
                config.out.display(),
                path.display()
            )));
        }
        publish::check_writable_file("--out", &path)?;
    }
    let loaded = Arc::new(Loaded::load(&config.base)?);
    let majority = loaded.with_shares(|shares| {
        let ones = shares
            .iter()
            .map(|d| d.test.label_sum())
            .sum::<Result<f64>>()?;
        let n = shares.iter().map(|d| d.test.len()).sum::<usize>();
        let p = ones / n.max(1) as f64;
        Ok::<_, Error>(p.max(1.0 - p))
    })?;
    let runs_path = config.runs_path();
    create_parent(&runs_path)?;
    let mut out = std::fs::File::create(&runs_path).map_err(|e| Error::io(&runs_path, e))?;
    let plan = config.plan();
    let bar = if config.progress {
        let bar = ProgressBar::new(plan.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "sweep [{bar:30}] {pos}/{len} runs {elapsed} eta {eta} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut runs = Vec::new();
    for (target, repeat) in plan {
        bar.set_message(match target {
            Some(e) => format!("epsilon {e}, repeat {}", repeat + 1),
            None => "without DP".into(),
        });
        let run_config = config.run_config(target, repeat);
        let started = Instant::now();
        let report = crate::run_loaded(&run_config, &loaded)?;
        let last = report.metrics.last();
        let run = SweepRun {
            target_epsilon: target,
            repeat,
            seed: run_config.seed,
            epsilon: report.spent.map(|s| s.epsilon),
            delta: report.spent.map(|s| s.delta),
            accountant: report.spent.map(|s| s.accountant.to_string()),
            noise_multiplier: report.accounting.map(|a| a.noise_multiplier),
            steps: report.steps,
            test_accuracy: last.and_then(|m| m.test_accuracy),
            test_loss: last.and_then(|m| m.test_loss),
            attack_accuracy: last.and_then(|m| m.attack_accuracy),
            non_private: SweepNonPrivate {
                private: false,
                train_accuracy: last
                    .and_then(|m| m.non_private.as_ref())
                    .map(|n| n.train_accuracy),
                seconds: started.elapsed().as_secs_f64(),
            },
        };
        let line = serde_json::to_string(&run).expect("a sweep run serializes");
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| Error::io(&runs_path, e))?;
        bar.suspend(|| each(&run));
        runs.push(run);
        bar.inc(1);
    }
    bar.finish_and_clear();
    out.sync_all().map_err(|e| Error::io(&runs_path, e))?;
    let settings = config.shared_settings();
    let html = sweep_page(&config.base.data.to_string(), &runs, majority, &settings)?;
    publish::write_durable(&config.page_path(), html.as_bytes())?;
    Ok(Sweep { runs, majority })
}

/// One point of the curve: the runs at one target epsilon.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The target.
    pub target: f64,
    /// Mean epsilon spent.
    pub epsilon: f64,
    /// The noise multiplier (mean over the repeats; they agree).
    pub noise_multiplier: f64,
    /// Test accuracies of the repeats.
    pub accuracies: Vec<f64>,
}

impl Point {
    /// Mean test accuracy.
    pub fn mean(&self) -> f64 {
        self.accuracies.iter().sum::<f64>() / self.accuracies.len().max(1) as f64
    }

    /// Lowest and highest test accuracy.
    pub fn range(&self) -> (f64, f64) {
        self.accuracies
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &a| {
                (lo.min(a), hi.max(a))
            })
    }

    /// Sample standard deviation (0 for one repeat).
    pub fn std(&self) -> f64 {
        let n = self.accuracies.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.accuracies.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// The private runs grouped by target epsilon, in increasing order.
pub fn points(runs: &[SweepRun]) -> Vec<Point> {
    let mut targets: Vec<f64> = runs.iter().filter_map(|r| r.target_epsilon).collect();
    targets.sort_by(f64::total_cmp);
    targets.dedup();
    targets
        .into_iter()
        .map(|t| {
            let at: Vec<&SweepRun> = runs
                .iter()
                .filter(|r| r.target_epsilon == Some(t))
                .collect();
            let mean = |f: fn(&SweepRun) -> Option<f64>| {
                let v: Vec<f64> = at.iter().filter_map(|r| f(r)).collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            Point {
                target: t,
                epsilon: mean(|r| r.epsilon),
                noise_multiplier: mean(|r| r.noise_multiplier),
                accuracies: at.iter().filter_map(|r| r.test_accuracy).collect(),
            }
        })
        .collect()
}

/// The sweep's page: test accuracy against epsilon (log axis), with the non-private runs' mean
/// and the majority class as lines, a table of the points, and the settings.
pub fn sweep_page(
    data: &str,
    runs: &[SweepRun],
    majority: f64,
    settings: &serde_json::Value,
) -> Result<String> {
    let plot = |e: report::Error| Error::Config(e.to_string());
    let pts = points(runs);
    let baseline: Vec<f64> = runs
        .iter()
        .filter(|r| r.target_epsilon.is_none())
        .filter_map(|r| r.test_accuracy)
        .collect();
    let baseline =
        (!baseline.is_empty()).then(|| baseline.iter().sum::<f64>() / baseline.len() as f64);
    let accountant = runs
        .iter()
        .find_map(|r| r.accountant.clone())
        .unwrap_or_else(|| "?".into());
    let delta = runs.iter().find_map(|r| r.delta);
    let repeats = pts.iter().map(|p| p.accuracies.len()).max().unwrap_or(0);

    let mut page = Page::new(&format!("Privacy-utility sweep: {data}"));
    page.note(&format!(
        "Operator's page, not a release. Each point's epsilon is that run's guarantee for one \
         record of the training split (at delta {}, {accountant} accountant). The page shows \
         figures of {} runs on the same data, one of them without DP, so it is not covered by \
         any one epsilon: the runs draw independent batches and noise, so publishing models of \
         several private runs spends the sum of their epsilons (basic composition), and the \
         non-private run is covered by none. Test accuracy and the majority class are exact \
         statistics of the held-out rows, which no epsilon covers.",
        delta.map_or("?".into(), |d| format!("{d:e}")),
        runs.len()
    ));
    page.heading("Test accuracy against epsilon");
    let (lo, hi) = pts.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.epsilon), hi.max(p.epsilon))
    });
    let span = |y: f64| vec![(lo, y), (hi, y)];
    let mut series = vec![Series {
        name: format!("DP-SGD (mean; bars: min to max of {repeats} runs)"),
        points: pts.iter().map(|p| (p.epsilon, p.mean())).collect(),
        spread: Some(pts.iter().map(Point::range).collect()),
        reference: false,
    }];
    if let Some(b) = baseline {
        series.push(Series {
            name: "non-private (--no-dp)".into(),
            points: span(b),
            spread: None,
            reference: true,
        });
    }
    series.push(Series {
        name: "majority class".into(),
        points: span(majority),
        spread: None,
        reference: true,
    });
    let svg = Lines {
        title: "Test accuracy against epsilon".into(),
        x_label: format!("epsilon (log scale; {accountant})"),
        y_label: "test accuracy".into(),
        series,
        log_x: true,
    }
    .svg()
    .map_err(plot)?;
    page.figure(
        &svg,
        "Test accuracy after the last epoch at each target epsilon (x: the epsilon spent), the \
         non-private run, and always guessing the majority class.",
    );
    let mut rows: Vec<Vec<String>> = pts
        .iter()
        .map(|p| {
            let (lo, hi) = p.range();
            vec![
                number(p.target, 3),
                number(p.epsilon, 4),
                number(p.noise_multiplier, 4),
                p.accuracies.len().to_string(),
                number(p.mean(), 4),
                number(p.std(), 2),
                number(lo, 4),
                number(hi, 4),
            ]
        })
        .collect();
    if let Some(b) = baseline {
        rows.push(vec![
            "no DP".into(),
            "-".into(),
            "-".into(),
            runs.iter()
                .filter(|r| r.target_epsilon.is_none())
                .count()
                .to_string(),
            number(b, 4),
            "-".into(),
            "-".into(),
            "-".into(),
        ]);
    }
    page.table(
        &[
            "target epsilon",
            "epsilon spent",
            "noise multiplier",
            "runs",
            "test accuracy (mean)",
            "std",
            "min",
            "max",
        ],
        &rows,
    );
    page.paragraph(&format!(
        "Majority class: {} of the test rows.",
        number(majority, 4)
    ));
    page.heading("Settings shared by every run");
    let mut rows = Vec::new();
    crate::report::flatten("", settings, &mut rows);
    page.table(&["setting", "value"], &rows);
    Ok(page.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: Option<f64>, repeat: u32, acc: f64) -> SweepRun {
        SweepRun {
            target_epsilon: target,
            repeat,
            seed: None,
            epsilon: target.map(|t| t * 0.99),
            delta: target.map(|_| 1e-5),
            accountant: target.map(|_| "pld".into()),
            noise_multiplier: target.map(|t| 1.0 / t),
            steps: 100,
            test_accuracy: Some(acc),
            test_loss: Some(0.6),
            attack_accuracy: None,
            non_private: SweepNonPrivate {
                private: false,
                train_accuracy: Some(0.7),
                seconds: 1.0,
            },
        }
    }

    #[test]
    fn points_group_the_repeats_in_epsilon_order() {
        let runs = vec![
            run(None, 0, 0.8),
            run(Some(4.0), 0, 0.70),
            run(Some(0.5), 0, 0.60),
            run(Some(4.0), 1, 0.74),
            run(Some(0.5), 1, 0.62),
        ];
        let p = points(&runs);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].target, p[1].target), (0.5, 4.0));
        assert!((p[1].mean() - 0.72).abs() < 1e-12);
        assert_eq!(p[1].range(), (0.70, 0.74));
        assert!((p[1].std() - 0.04f64 / 2f64.sqrt()).abs() < 1e-12);
        assert!((p[0].epsilon - 0.495).abs() < 1e-12);
    }

    #[test]
    fn the_page_plots_accuracy_against_epsilon_with_both_lines() {
        let runs = vec![
            run(None, 0, 0.8123),
            run(Some(0.25), 0, 0.61),
            run(Some(8.0), 0, 0.7777),
        ];
        let html = sweep_page(
            "shards",
            &runs,
            0.5555,
            &serde_json::json!({"epochs": 10, "batch_size": 256}),
        )
        .unwrap();
        for text in [
            "Privacy-utility sweep: shards",
            "Test accuracy against epsilon",
            "epsilon (log scale; pld)",
            "non-private (--no-dp)",
            "majority class",
            "0.8123",
            "0.5555",
            "0.7777",
            "batch_size",
            "basic composition",
        ] {
            assert!(html.contains(text), "{text} missing");
        }
        assert!(!html.contains("<script"));
    }

    /// Seeded sweep points draw independent batches (issue 23 D): they were keyed by the
    /// repeat's seed alone, so two points of a repeat took the same Poisson batches, and the
    /// sum of their epsilons the page speaks of understated what the pair spends. Each epoch's
    /// realized sample size (the sum of its batch sizes) differs between the points, while the
    /// same point run again (a replay: same seed, same settings) draws the very same batches.
    #[test]
    fn seeded_points_draw_independent_batches_and_a_replay_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("input.csv");
        let out = dir.path().join("shards");
        pipeline::generate(&pipeline::GenerateConfig {
            rows: 1_500,
            seed: 3,
            na_rate: 0.0,
            households: false,
            output: shards::Location::Local(csv.clone()),
            overwrite: true,
            s3: Default::default(),
        })
        .unwrap();
        pipeline::run(&pipeline::RunConfig {
            shards: 2,
            overwrite: true,
            ..pipeline::RunConfig::new(
                shards::Location::Local(csv),
                shards::Location::Local(out.clone()),
            )
        })
        .unwrap();
        let mut base = TrainConfig::new(shards::Location::Local(out));
        base.epochs = 4;
        base.batch_size = 64;
        base.attack_feature = None;
        base.seed = Some(11);
        let config = SweepConfig {
            base,
            target_epsilons: vec![1.0, 8.0],
            repeats: 1,
            out: dir.path().join("sweep"),
            overwrite: false,
            progress: false,
        };
        config.validate().unwrap();
        let loaded = Arc::new(Loaded::load(&config.base).unwrap());
        let sizes = |target: f64| -> Vec<u64> {
            let report = crate::run_loaded(&config.run_config(Some(target), 0), &loaded).unwrap();
            report
                .metrics
                .iter()
                .map(|m| m.non_private.as_ref().unwrap().examples)
                .collect()
        };
        let (one, eight) = (sizes(1.0), sizes(8.0));
        assert_eq!(
            config.run_config(Some(1.0), 0).seed,
            config.run_config(Some(8.0), 0).seed,
            "one repeat's points share its seed"
        );
        assert_ne!(one, eight, "the points drew the same batches");
        assert_eq!(sizes(1.0), one, "a replay draws the same batches");
    }

    #[test]
    fn the_plan_and_the_seed_policy() {
        let mut base = TrainConfig::new(shards::Location::parse("shards").unwrap());
        base.save = Some("run/model.safetensors".into());
        let mut config = SweepConfig {
            base,
            target_epsilons: vec![1.0, 2.0],
            repeats: 2,
            out: "sweep".into(),
            overwrite: false,
            progress: false,
        };
        config.validate().unwrap();
        assert_eq!(
            config.plan(),
            [
                (None, 0),
                (Some(1.0), 0),
                (Some(1.0), 1),
                (Some(2.0), 0),
                (Some(2.0), 1)
            ]
        );
        let c = config.run_config(Some(2.0), 1);
        let Privacy::Private(dp) = &c.privacy else {
            panic!("private")
        };
        assert_eq!(dp.noise, NoiseSpec::TargetEpsilon(2.0));
        assert!(c.save.is_none() && c.metrics_out.is_none() && c.quiet && !c.progress);
        assert_eq!(c.seed, None, "no --seed: OS keys for every run");
        assert_eq!(config.run_config(None, 0).privacy, Privacy::NonPrivate);
        let shown = config.shared_settings();
        assert_eq!(
            shown.pointer("/privacy/private/noise").unwrap(),
            "calibrated to each target epsilon"
        );
        assert!(shown["save"].is_null() && shown["metrics_out"].is_null());

        config.base.seed = Some(7);
        let seeds: Vec<_> = config
            .plan()
            .into_iter()
            .map(|(t, r)| config.run_config(t, r).seed.unwrap())
            .collect();
        assert_eq!(seeds[1], seeds[3], "a repeat's points share its seed");
        assert_ne!(seeds[1], seeds[2], "repeats differ");
        assert_eq!(seeds[0], repeat_seed(7, 0));
        assert_ne!(repeat_seed(7, 0), repeat_seed(8, 0));

        for (change, said) in [
            (
                Box::new(|c: &mut SweepConfig| c.base.privacy = Privacy::NonPrivate)
                    as Box<dyn Fn(&mut SweepConfig)>,
                "--no-dp",
            ),
            (Box::new(|c| c.target_epsilons = vec![1.0, -1.0]), "-1"),
            (Box::new(|c| c.target_epsilons.clear()), "--target-epsilon"),
            (Box::new(|c| c.repeats = 0), "--repeats"),
            (Box::new(|c| c.base.test_fraction = 0.0), "--test-fraction"),
        ] {
            let mut c = config.clone();
            change(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(said), "{said}: {e}");
        }
    }
}
