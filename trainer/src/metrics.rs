//! Per-epoch metrics: one JSON line each in the metrics file, one readable line on stdout.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::publish;
pub use crate::publish::create_parent;
use crate::{Error, Result};

/// What an epoch achieved: figures epsilon covers ([`crate::coverage::METRICS`]), the exact
/// figures of the held-out rows (the operator's: the card releases its own noisy accuracy), and
/// in [`EpochMetrics::non_private`] the operator's exact training-set diagnostics, which must
/// never be released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number, from 1.
    pub epoch: u32,
    /// Steps taken by the run so far, resumed steps included (what the budget counts).
    pub steps: u64,
    /// Mean loss on the held-out (test) rows (absent without any).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_loss: Option<f64>,
    /// Accuracy on the held-out rows (absent without any).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_accuracy: Option<f64>,
    /// The share of the held-out rows' more common label: the accuracy of always guessing it,
    /// the yardstick of `test_accuracy` (absent without held-out rows).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_majority: Option<f64>,
    /// Epsilon spent so far at `delta` (absent with `--no-dp`).
    pub epsilon: Option<f64>,
    /// The delta epsilon holds at.
    pub delta: Option<f64>,
    /// The accountant that computed epsilon.
    pub accountant: Option<String>,
    /// The best RDP order (RDP only).
    pub rdp_order: Option<f64>,
    /// The noise multiplier used.
    pub noise_multiplier: Option<f64>,
    /// The feature the model-inversion attack recovers (absent without an attack).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attack_feature: Option<String>,
    /// The model-inversion attack's accuracy on held-out rows (absent without an attack
    /// feature or held-out rows).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attack_accuracy: Option<f64>,
    /// The majority baseline on those rows: always guessing the more common value.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attack_baseline: Option<f64>,
    /// A baseline imputer's accuracy on those rows: logistic regression of the attack feature
    /// on the other features and the label, fitted on the held-out rows (no model involved).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attack_imputer: Option<f64>,
    /// Data-parallel workers (processes x threads) that trained the epoch.
    #[serde(default = "one")]
    pub workers: usize,
    /// The operator's exact training-set statistics and timings (absent in what is released:
    /// the model card and checkpoints).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub non_private: Option<NonPrivate>,
}

/// Exact statistics of the training rows, and timings (which depend on the realized batch
/// sizes): the operator's diagnostics, not covered by epsilon and never released. Serialized
/// with `"private": false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NonPrivate {
    /// Always false: nothing here is covered by epsilon.
    pub private: bool,
    /// Examples the epoch's Poisson batches held in all (the realized batch sizes' sum).
    pub examples: u64,
    /// Of those, the examples whose gradient was not finite and so contributed zero (a row
    /// whose values overflow the forward pass).
    #[serde(default)]
    pub gradients_zeroed: u64,
    /// Training and held-out rows whose logit was not finite after the epoch (each counted at
    /// a clamped logit, see [`crate::evaluate::LOGIT_BOUND`]).
    #[serde(default)]
    pub non_finite_logits: u64,
    /// Mean loss on the training rows after the epoch.
    pub train_loss: f64,
    /// Accuracy on the training rows after the epoch.
    pub train_accuracy: f64,
    /// The attack's accuracy on training rows.
    pub attack_train_accuracy: Option<f64>,
    /// Its accuracy on training rows minus on held-out rows: what the model leaks about its
    /// training rows beyond what it says about the population.
    pub attack_leakage: Option<f64>,
    /// Seconds of training in the epoch (evaluation excluded).
    pub seconds: f64,
    /// Seconds the training threads spent on a CPU, summed over every worker (Linux; absent
    /// elsewhere). On a shared machine this is what the run itself cost; wall time includes
    /// waiting for the neighbours.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Of the training seconds, those worker 0 spent in the all-reduce of the gradients
    /// (sending, waiting for the others, adding); absent with one worker.
    #[serde(default)]
    pub comm_seconds: Option<f64>,
    /// Seconds of evaluation after the epoch.
    pub eval_seconds: f64,
    /// Training examples processed per second.
    pub examples_per_second: f64,
    /// Seconds per phase, with `--profile`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phases: Option<Vec<(String, f64)>>,
}

impl EpochMetrics {
    /// The figures that may be released (a checkpoint's, the public page's): those epsilon
    /// covers ([`crate::coverage::METRICS`]), without the exact held-out figures and
    /// [`EpochMetrics::non_private`].
    pub fn public(&self) -> EpochMetrics {
        crate::coverage::public_metrics(self)
    }
}

impl fmt::Display for EpochMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "epoch {:>3}", self.epoch)?;
        if let (Some(e), Some(d)) = (self.epsilon, self.delta) {
            let acc = self.accountant.as_deref().unwrap_or("?");
            write!(f, "  epsilon {e:.4} (delta {d:e}, {acc})")?;
        }
        // Exact figures of the held-out rows: the operator's, not what the card releases.
        let held_out = self.test_loss.zip(self.test_accuracy);
        if held_out.is_some() || self.attack_accuracy.is_some() {
            write!(f, "  | exact, not released:")?;
        }
        if let Some((l, a)) = held_out {
            write!(f, " test loss {l:.4} acc {a:.4}")?;
            if let Some(m) = self.test_majority {
                write!(f, " (majority {m:.4})")?;
            }
        }
        if let (Some(a), Some(b)) = (self.attack_accuracy, self.attack_baseline) {
            let feature = self.attack_feature.as_deref().unwrap_or("?");
            write!(
                f,
                "  attack on {feature} (held-out) {a:.4} (majority {b:.4}"
            )?;
            if let Some(i) = self.attack_imputer {
                write!(f, ", imputer {i:.4}")?;
            }
            write!(f, ": {})", attack_reading(a, b, self.attack_imputer))?;
        }
        if let Some(n) = &self.non_private {
            write!(
                f,
                "  | not private: train loss {:.4} acc {:.4}",
                n.train_loss, n.train_accuracy
            )?;
            if n.gradients_zeroed > 0 {
                write!(f, " {} gradient(s) not finite, zeroed", n.gradients_zeroed)?;
            }
            if n.non_finite_logits > 0 {
                write!(f, " {} row(s) with a logit not finite", n.non_finite_logits)?;
            }
            if let Some(l) = n.attack_leakage {
                write!(f, " attack leakage {l:+.4}")?;
            }
            write!(f, "  {:.2} s  {:.0} ex/s", n.seconds, n.examples_per_second)?;
            if let Some(c) = n.comm_seconds {
                write!(f, "  ({} workers, all-reduce {c:.3} s)", self.workers)?;
            }
        }
        Ok(())
    }
}

/// How to read the attack's accuracy `attack` on held-out rows against guessing the majority
/// value (`majority`) and the imputer (`imputer`), in a few words.
pub fn attack_reading(attack: f64, majority: f64, imputer: Option<f64>) -> &'static str {
    const MARGIN: f64 = 0.005;
    if attack <= majority + MARGIN {
        "no better than guessing the majority value"
    } else if imputer.is_some_and(|i| attack <= i + MARGIN) {
        "above guessing, not above what the other columns give without the model"
    } else {
        "above what the other columns give without the model (population-level, not a leak by itself)"
    }
}

fn one() -> usize {
    1
}

/// The JSON-lines metrics file.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Opens `path` for a new run, truncating it.
    pub fn create(path: &Path) -> Result<Self> {
        Self::open(path, false)
    }

    /// Opens `path` for a resumed run whose checkpoint covers the epochs of `history`. The file
    /// is first rewritten (atomically) to one line per covered epoch, in order: the line the file
    /// already has for it (same epoch and steps; kept byte for byte, with whatever the
    /// checkpoint's copy leaves out), else the checkpoint's copy. Lines of epochs the checkpoint
    /// does not cover (a crash between an epoch's line and its checkpoint, or a torn last line)
    /// are dropped, so each epoch is logged once; the resumed epochs are then appended.
    pub fn resume(path: &Path, history: &[EpochMetrics]) -> Result<Self> {
        create_parent(path)?;
        let existing = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        publish::write_durable(path, resumed_lines(&existing, history).as_bytes())?;
        Self::open(path, true)
    }

    /// Opens `path`, truncating it, or appending (a resumed run wants [`MetricsLog::resume`],
    /// which also drops lines its checkpoint does not cover).
    pub fn open(path: &Path, append: bool) -> Result<Self> {
        create_parent(path)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
        })
    }

    /// Appends one epoch's line and flushes it.
    pub fn write(&mut self, m: &EpochMetrics) -> Result<()> {
        let line = serde_json::to_string(m).expect("metrics serialize");
        writeln!(self.out, "{line}")
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Checks a checkpoint's epochs (`history`) against the metrics file at `path`, when there is
/// one: each epoch the file logged must show the steps and epsilon the checkpoint's copy shows,
/// and the file may log at most one epoch more (written before a crash stopped its
/// checkpoint). A checkpoint whose steps were lowered no longer matches what the run logged.
pub fn check_history(path: &Path, history: &[EpochMetrics]) -> std::result::Result<(), String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read --metrics-out {}: {e}", path.display())),
    };
    for line in text.lines() {
        let Ok(logged) = serde_json::from_str::<EpochMetrics>(line) else {
            continue; // a torn last line
        };
        let at = logged.epoch as usize;
        if at > history.len() + 1 {
            return Err(format!(
                "--metrics-out {} logs epoch {at}, but the checkpoint covers {} epochs: the \
                 checkpoint was altered, or belongs to another run",
                path.display(),
                history.len()
            ));
        }
        if let Some(saved) = at.checked_sub(1).and_then(|i| history.get(i))
            && (saved.steps != logged.steps || saved.epsilon != logged.epsilon)
        {
            return Err(format!(
                "--metrics-out {} logs epoch {at} after {} steps (epsilon {:?}), the checkpoint \
                 after {} (epsilon {:?}): the checkpoint or the file was altered",
                path.display(),
                logged.steps,
                logged.epsilon,
                saved.steps,
                saved.epsilon
            ));
        }
    }
    Ok(())
}

/// The metrics file a resumed run starts from (see [`MetricsLog::resume`]).
fn resumed_lines(existing: &str, history: &[EpochMetrics]) -> String {
    let mut written: HashMap<(u64, u64), &str> = HashMap::new();
    for line in existing.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let (Some(epoch), Some(steps)) = (v["epoch"].as_u64(), v["steps"].as_u64())
        {
            written.entry((epoch, steps)).or_insert(line);
        }
    }
    let mut out = String::new();
    for m in history {
        match written.get(&(u64::from(m.epoch), m.steps)) {
            Some(line) => out.push_str(line),
            None => out.push_str(&serde_json::to_string(m).expect("metrics serialize")),
        }
        out.push('\n');
    }
    out
}

/// Nanoseconds the calling thread has spent on a CPU, from the kernel's scheduler statistics
/// (`None` where there are none).
pub fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EpochMetrics {
        EpochMetrics {
            epoch: 1,
            steps: 3750,
            test_loss: Some(0.61),
            test_accuracy: Some(0.65),
            test_majority: Some(0.6),
            epsilon: Some(0.677),
            delta: Some(1e-5),
            accountant: Some("rdp".into()),
            rdp_order: Some(13.0),
            noise_multiplier: Some(0.9),
            attack_feature: Some("englishability".into()),
            attack_accuracy: Some(0.61),
            attack_baseline: Some(0.8),
            attack_imputer: Some(0.82),
            workers: 2,
            non_private: Some(NonPrivate {
                private: false,
                examples: 960_123,
                gradients_zeroed: 0,
                non_finite_logits: 0,
                train_loss: 0.6,
                train_accuracy: 0.66,
                attack_train_accuracy: Some(0.62),
                attack_leakage: Some(0.01),
                seconds: 0.4,
                cpu_seconds: Some(0.3),
                comm_seconds: Some(0.05),
                eval_seconds: 0.1,
                examples_per_second: 2.4e6,
                phases: None,
            }),
        }
    }

    fn epoch(n: u32) -> EpochMetrics {
        EpochMetrics {
            epoch: n,
            ..sample()
        }
    }

    fn lines(path: &Path) -> Vec<EpochMetrics> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The lines a resume keeps are the file's own, byte for byte (with what the checkpoint's
    /// copy may leave out), one per covered epoch: later, repeated and torn lines go.
    #[test]
    fn a_resume_keeps_the_files_own_lines_of_the_covered_epochs() {
        let json = |m: &EpochMetrics| serde_json::to_string(m).unwrap();
        let mut one = serde_json::to_value(epoch(1)).unwrap();
        one["operator_only"] = serde_json::json!({"train_loss": 0.5});
        let one = one.to_string();
        let existing = format!(
            "{one}\n{one}\n{}\n{}\n{{\"epoch\": 3, \"ste",
            json(&epoch(2)),
            json(&epoch(3))
        );
        let other_run = EpochMetrics {
            steps: 1,
            ..epoch(2)
        };
        assert_eq!(
            resumed_lines(&existing, &[epoch(1), epoch(2)]),
            format!("{one}\n{}\n", json(&epoch(2)))
        );
        // A line of another run (other steps) is not taken for the checkpoint's epoch.
        assert_eq!(
            resumed_lines(&existing, &[epoch(1), other_run.clone()]),
            format!("{one}\n{}\n", json(&other_run))
        );
    }

    #[test]
    fn writes_json_lines_and_resumes_from_the_checkpoints_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        log.write(&epoch(1)).unwrap();
        // Epoch 2's line is written, the run dies before its checkpoint: the checkpoint covers
        // epoch 1 only.
        log.write(&epoch(2)).unwrap();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut log = MetricsLog::resume(&path, &[epoch(1)]).unwrap();
        log.write(&epoch(2)).unwrap();
        assert_eq!(lines(&path), [epoch(1), epoch(2)]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        // A metrics file lost (or a new --metrics-out) gets the checkpoint's epochs back.
        let other = dir.path().join("other.jsonl");
        MetricsLog::resume(&other, &[epoch(1), epoch(2)])
            .unwrap()
            .write(&epoch(3))
            .unwrap();
        assert_eq!(lines(&other), [epoch(1), epoch(2), epoch(3)]);
        MetricsLog::create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(
            text.contains("\"non_private\":{\"private\":false,"),
            "{text}"
        );
        let public = serde_json::to_string(&sample().public()).unwrap();
        assert!(
            !public.contains("train") && !public.contains("examples"),
            "{public}"
        );
        // Nor the exact held-out figures (the card releases its own noisy accuracy).
        assert!(
            !public.contains("test_") && !public.contains("attack"),
            "{public}"
        );
        assert!(public.contains("\"epsilon\":0.677"), "{public}");
        let shown = sample().to_string();
        assert!(
            shown.contains("epsilon 0.6770")
                && shown.contains(
                    "| exact, not released: test loss 0.6100 acc 0.6500 (majority 0.6000)"
                )
                && shown.contains(
                    "attack on englishability (held-out) 0.6100 (majority 0.8000, imputer \
                     0.8200: no better than guessing the majority value)"
                )
                && shown.contains("2 workers, all-reduce 0.050 s"),
            "{shown}"
        );
    }
}
