//! [`Epochs`]: a worker's epochs, and after each what the workers add up ([`EpochSums`]), the
//! epoch's metrics, the metrics file and the checkpoint; at the end the model and its card.

use std::path::Path;
use std::time::Instant;

use accountant::PrivacySpent;

use super::Stdout;
use super::attacks::Attacks;
use super::held_out::HeldOut;
use super::peers::Peers;
use super::records::Evaluated;
use super::resume::Start;
use super::spent_ahead::SpentAhead;
use super::steps::{Steps, StepsDone};
use crate::Result;
use crate::checkpoint::{self, CheckpointMeta};
use crate::config::TrainConfig;
use crate::data::Data;
use crate::evaluate::{self, Totals};
use crate::export::{self, ModelCard};
use crate::features::Standardizer;
use crate::mechanism::privacy::Accounting;
use crate::mechanism::quantiles::ReleasedBounds;
use crate::metrics::{EpochMetrics, MetricsLog, NonPrivate};
use crate::mlp::Mlp;
use crate::profile::{Phase, Profiler};

/// The attack's right guesses over some rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Hits {
    /// Rows guessed right.
    pub correct: f64,
    /// Rows attacked.
    pub rows: f64,
}

impl Hits {
    /// The share guessed right (`None` over no rows).
    fn rate(self) -> Option<f64> {
        (self.rows > 0.0).then(|| self.correct / self.rows)
    }
}

/// What the workers add up after each epoch: loss and accuracy sums over every worker's
/// examples, the attack's hits, the examples the steps used (each worker draws only its share
/// of the sample), the gradients zeroed for not being finite, CPU seconds, and the budget spent
/// (worker 0 asks the accountant; the others add 0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct EpochSums {
    /// Over the training split.
    pub train: Totals,
    /// Over the held-out split.
    pub test: Totals,
    /// The attack on the leading training rows.
    pub attack_train: Hits,
    /// The attack on the leading held-out rows.
    pub attack_held_out: Hits,
    /// Examples in the epoch's samples.
    pub examples: f64,
    /// Gradients the steps zeroed for not being finite.
    pub zeroed: f64,
    /// CPU seconds of the steps (NaN where a worker cannot tell them).
    pub cpu_seconds: f64,
    /// Epsilon spent so far.
    pub epsilon: f64,
    /// The RDP order of that bound (NaN without one).
    pub rdp_order: f64,
}

impl EpochSums {
    /// Values in [`EpochSums::to_array`].
    pub const LEN: usize = 17;

    /// This worker's share: its evaluation, its attack rows, what its steps `done` used, and
    /// (worker 0) the budget `spent`.
    pub fn local(
        mlp: &Mlp,
        data: &Data,
        distinct: &Evaluated,
        attack: Option<&Attacks>,
        done: &StepsDone,
        spent: Option<PrivacySpent>,
    ) -> Self {
        let mut sums = EpochSums {
            train: evaluate::totals_of(mlp, &data.train, distinct.train.as_ref()),
            test: evaluate::totals_of(mlp, &data.test, distinct.test.as_ref()),
            examples: done.examples as f64,
            zeroed: done.zeroed as f64,
            cpu_seconds: done.cpu_seconds.unwrap_or(f64::NAN),
            ..EpochSums::default()
        };
        if let Some(a) = attack {
            sums.attack_train = Hits {
                correct: a.train.correct(mlp, &data.train),
                rows: a.train.counts().1,
            };
            sums.attack_held_out = Hits {
                correct: a.held_out.correct(mlp, &data.test),
                rows: a.held_out.counts().1,
            };
        }
        if let Some(s) = spent {
            sums.epsilon = s.epsilon;
            sums.rdp_order = s.rdp_order.unwrap_or(f64::NAN);
        }
        sums
    }

    /// As one array for the all-reduce, in the fields' order.
    pub fn to_array(self) -> [f64; Self::LEN] {
        let [tl, tc, tn, tf] = self.train.to_array();
        let [hl, hc, hn, hf] = self.test.to_array();
        [
            tl,
            tc,
            tn,
            tf,
            hl,
            hc,
            hn,
            hf,
            self.attack_train.correct,
            self.attack_train.rows,
            self.attack_held_out.correct,
            self.attack_held_out.rows,
            self.examples,
            self.zeroed,
            self.cpu_seconds,
            self.epsilon,
            self.rdp_order,
        ]
    }

    /// From [`EpochSums::to_array`]'s layout.
    pub fn from_array(v: &[f64; Self::LEN]) -> Self {
        EpochSums {
            train: Totals::from_slice(&v[0..4]),
            test: Totals::from_slice(&v[4..8]),
            attack_train: Hits {
                correct: v[8],
                rows: v[9],
            },
            attack_held_out: Hits {
                correct: v[10],
                rows: v[11],
            },
            examples: v[12],
            zeroed: v[13],
            cpu_seconds: v[14],
            epsilon: v[15],
            rdp_order: v[16],
        }
    }

    /// These sums added up over every worker.
    pub fn all_reduce(&self, peers: &mut Peers) -> Result<Self> {
        let mut v = self.to_array();
        peers.sum_totals(&mut v)?;
        Ok(Self::from_array(&v))
    }

    /// The budget spent, as worker 0's accountant put it in.
    pub fn spent(&self, accounting: Option<Accounting>) -> Option<PrivacySpent> {
        accounting.map(|a| PrivacySpent {
            epsilon: self.epsilon,
            delta: a.delta,
            accountant: a.accountant,
            rdp_order: self.rdp_order.is_finite().then_some(self.rdp_order),
        })
    }
}

/// Where a run's epochs end.
pub(super) struct Trained {
    /// Steps taken in all.
    pub steps: u64,
    /// Every epoch's metrics (a resumed checkpoint's first).
    pub history: Vec<EpochMetrics>,
    /// The budget spent.
    pub spent: Option<PrivacySpent>,
}

/// A worker's epochs and what it reports and writes after each (worker 0 writes).
pub(super) struct Epochs<'a> {
    pub config: &'a TrainConfig,
    pub steps: Steps<'a>,
    /// Worker 0's `--profile`.
    pub prof: Profiler,
    pub attack: Option<Attacks>,
    pub accounting: Option<Accounting>,
    /// Worker 0's accountant in a private run (`None` elsewhere), computing what each epoch
    /// will have spent while it trains (made from `accounting`, which does not change during
    /// the run).
    pub spent_ahead: Option<SpentAhead>,
    /// Worker 0's metrics file.
    pub log: Option<MetricsLog>,
    pub out: Stdout,
    /// The settings a checkpoint records ([`crate::settings::Settings::for_checkpoint`]).
    pub fingerprint: serde_json::Value,
    /// The standardized columns' release, recorded in every checkpoint and the card.
    pub standardizer: Option<Standardizer>,
    /// The DP quantile bounds, recorded in every checkpoint and the card.
    pub bounds: Vec<ReleasedBounds>,
    /// The held-out accuracy's release, made after the last epoch, recorded in its checkpoint
    /// and the card.
    pub held_out: HeldOut,
    /// Each split's distinct rows, each evaluated once ([`evaluate::totals_of`]).
    pub distinct: Evaluated,
    /// The share of the held-out rows' more common label (exact: the operator's yardstick).
    pub test_majority: Option<f64>,
    /// The held-out rows labelled 1 (exact, over every worker: the held-out release's input).
    pub test_positives: f64,
}

impl Epochs<'_> {
    /// Trains `mlp` on `data` from `start` to the configured epochs.
    pub fn train(
        &mut self,
        peers: &mut Peers,
        mlp: &Mlp,
        data: &Data,
        start: Start,
    ) -> Result<Trained> {
        let (mut steps, mut history) = (start.position.steps, start.history);
        let mut spent = None;
        for epoch in start.position.epochs_done..self.config.epochs {
            let last = epoch + 1 == self.config.epochs;
            if let Some(ahead) = &mut self.spent_ahead {
                ahead.ask(
                    steps + self.steps.per_epoch,
                    self.held_out.after_epoch(last),
                );
            }
            let done =
                self.steps
                    .epoch(peers, mlp, data, epoch, self.config.epochs, &mut self.prof)?;
            steps += self.steps.per_epoch;
            let (metrics, epoch_spent, profile, test) =
                self.evaluate(peers, mlp, data, epoch, steps, &done, last)?;
            spent = epoch_spent;
            history.push(metrics);
            // The held-out release, after the last epoch, before its checkpoint records it.
            if last {
                self.held_out
                    .release(peers.lead(), &test, self.test_positives, steps)?;
            }
            // The checkpoint first, then the metrics line, then stdout: a kill in between never
            // leaves an epoch logged or printed that a resume would train again.
            if peers.lead()
                && let Some(ck) = &self.config.checkpoint
            {
                self.save_checkpoint(&ck.dir, epoch + 1, steps, &history, mlp)?;
            }
            let metrics = history
                .last()
                .expect("this epoch's metrics were just pushed");
            if let Some(log) = &mut self.log {
                log.write(metrics)?;
            }
            self.out.line(&metrics.to_string());
            if let Some(profile) = profile {
                self.out.line(&profile);
            }
        }
        if self.held_out.pending() {
            // A resumed run with no epoch left whose checkpoint made no release (another
            // version's): made now, on the model as it is.
            let mut test =
                evaluate::totals_of(mlp, &data.test, self.distinct.test.as_ref()).to_array();
            peers.sum_totals(&mut test)?;
            self.held_out.release(
                peers.lead(),
                &Totals::from_slice(&test),
                self.test_positives,
                steps,
            )?;
        }
        Ok(Trained {
            steps,
            history,
            spent,
        })
    }

    /// The metrics of epoch `epoch` (from 0) after `steps` steps, the last `done`, the budget
    /// spent (after the `last` epoch, with the held-out release it is followed by), with
    /// `--profile` where the epoch's time went (for worker 0 to print), and the exact held-out
    /// totals (for that release).
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        peers: &mut Peers,
        mlp: &Mlp,
        data: &Data,
        epoch: u32,
        steps: u64,
        done: &StepsDone,
        last: bool,
    ) -> Result<(EpochMetrics, Option<PrivacySpent>, Option<String>, Totals)> {
        self.prof.restart();
        let eval_started = Instant::now();
        let releases = self.held_out.after_epoch(last);
        // Worker 0 of a private run has the accountant; it answers in place where it cannot
        // ahead.
        let spent_here = match &mut self.spent_ahead {
            Some(ahead) => Some(ahead.spent(steps, releases)?),
            None => None,
        };
        let sums = EpochSums::local(
            mlp,
            data,
            &self.distinct,
            self.attack.as_ref(),
            done,
            spent_here,
        )
        .all_reduce(peers)?;
        let spent = sums.spent(self.accounting);
        let train = sums
            .train
            .evaluation()
            .expect("the training set is not empty");
        let test = sums.test.evaluation();
        let attack = self.attack.as_ref();
        let attack_train = attack.and(sums.attack_train.rate());
        let held_out = attack.filter(|_| sums.attack_held_out.rows > 0.0);
        let attack_held_out = held_out.and(sums.attack_held_out.rate());
        self.prof.mark(Phase::Evaluation);
        let phases = self.prof.take();
        let examples = sums.examples as u64;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            steps,
            test_loss: test.map(|t| t.loss),
            test_accuracy: test.map(|t| t.accuracy),
            test_majority: self.test_majority,
            epsilon: spent.map(|s| s.epsilon),
            delta: spent.map(|s| s.delta),
            accountant: spent.map(|s| s.accountant.to_string()),
            rdp_order: spent.and_then(|s| s.rdp_order),
            noise_multiplier: self.accounting.map(|a| a.noise_multiplier),
            attack_feature: held_out.and(self.config.attack_feature.clone()),
            attack_accuracy: attack_held_out,
            attack_baseline: held_out.map(|a| a.held_out.baseline()),
            attack_imputer: held_out.and_then(|a| a.imputer),
            workers: peers.workers,
            non_private: Some(NonPrivate {
                private: false,
                examples,
                gradients_zeroed: sums.zeroed as u64,
                non_finite_logits: (sums.train.non_finite + sums.test.non_finite) as u64,
                train_loss: train.loss,
                train_accuracy: train.accuracy,
                attack_train_accuracy: attack_train,
                attack_leakage: attack_train.zip(attack_held_out).map(|(t, h)| t - h),
                seconds: done.seconds,
                cpu_seconds: sums.cpu_seconds.is_finite().then_some(sums.cpu_seconds),
                comm_seconds: done.comm_seconds,
                eval_seconds: eval_started.elapsed().as_secs_f64(),
                examples_per_second: examples as f64 / done.seconds.max(1e-9),
                phases: self.prof.enabled().then(|| {
                    phases
                        .seconds()
                        .into_iter()
                        .map(|(n, s)| (n.to_string(), s))
                        .collect()
                }),
            }),
        };
        let profile = self.prof.enabled().then(|| {
            format!(
                "profile of epoch {} (not private: timings grow with the realized batch \
                 sizes):\n{phases}",
                epoch + 1
            )
        });
        Ok((metrics, spent, profile, sums.test))
    }

    /// Worker 0's checkpoint after `epochs_done` epochs and `steps` steps.
    fn save_checkpoint(
        &self,
        dir: &Path,
        epochs_done: u32,
        steps: u64,
        history: &[EpochMetrics],
        mlp: &Mlp,
    ) -> Result<()> {
        let meta = CheckpointMeta {
            epochs_done,
            steps,
            noise_multiplier: self.accounting.map(|a| a.noise_multiplier),
            fingerprint: self.fingerprint.clone(),
            tensors: String::new(),
            // What epsilon covers only: a checkpoint may be shipped.
            metrics: history.iter().map(EpochMetrics::public).collect(),
            standardizer: self.standardizer.clone(),
            bounds: (!self.bounds.is_empty()).then(|| self.bounds.clone()),
            test_release: self.held_out.release.clone(),
            test_releases: self.held_out.made,
        };
        let mut tensors = vec![("params".to_string(), mlp.flat())];
        tensors.extend(self.steps.dp.optimizer().state());
        checkpoint::save(dir, &meta, &tensors)
    }

    /// Worker 0 saves the model and its card, and says what the run spent (asking the
    /// accountant when no epoch was left to train: a resumed run that had finished).
    pub fn finish(&self, lead: bool, mlp: &Mlp, data: &Data, trained: &mut Trained) -> Result<()> {
        if trained.spent.is_none() && lead {
            trained.spent = self
                .accounting
                .map(|a| a.spent(trained.steps))
                .transpose()?;
        }
        if lead && let Some(path) = &self.config.save {
            let card = ModelCard::new(
                self.config,
                &data.feature_names,
                &data.label_name,
                self.accounting,
                trained.spent,
                trained.steps,
                trained.history.last(),
                self.standardizer.as_ref(),
                &self.bounds,
                self.held_out.release.as_ref(),
            );
            export::save(path, mlp, &card)?;
            self.out.line(&format!(
                "saved {} and {}",
                path.display(),
                export::card_path(path).display()
            ));
        }
        if let Some(r) = &self.held_out.release {
            self.out.line(&format!(
                "released test accuracy {:.4} against a majority share of {:.4} (covered by \
                 epsilon: {:.1} right of {:.1} test records, {:.1} labelled 1, each count with \
                 Gaussian noise of std {:.2})",
                r.accuracy,
                r.majority_share,
                r.noisy_correct,
                r.noisy_count,
                r.noisy_positives,
                r.noise_std
            ));
        }
        if let Some(s) = &trained.spent {
            self.out
                .line(&format!("privacy spent: {s} after {} steps", trained.steps));
        }
        if let Some(line) = trained.history.last().and_then(summary) {
            self.out.line(&line);
        }
        Ok(())
    }
}

/// The run's last line: its test accuracy against the majority share (exact, the operator's),
/// and a warning when the model learned nothing beyond the majority class.
pub(super) fn summary(last: &EpochMetrics) -> Option<String> {
    let (accuracy, majority) = last.test_accuracy.zip(last.test_majority)?;
    let mut line = format!(
        "summary: test accuracy {accuracy:.4} against a majority share of {majority:.4}, \
         {:+.4} (exact, not released)",
        accuracy - majority
    );
    if accuracy <= majority + LEARNED_NOTHING {
        line.push_str(&format!(
            "\nwarning: the model learned nothing beyond the majority class (test accuracy \
             {accuracy:.4}, at most {LEARNED_NOTHING} above always guessing the more common \
             label): try more epochs or another --lr, public bounds or levels for wide \
             columns (--feature-spec), or the default preset if this run used --preset seed"
        ));
    }
    Some(line)
}

/// A test accuracy at most this far above the majority share is flagged as learning nothing.
pub const LEARNED_NOTHING: f64 = 0.005;

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary puts the accuracy beside the majority share and flags a model that learned
    /// nothing.
    #[test]
    fn the_summary_flags_a_model_at_the_majority_share() {
        let mut m = EpochMetrics {
            epoch: 1,
            steps: 1,
            test_loss: Some(0.6),
            test_accuracy: Some(0.6211),
            test_majority: Some(0.6211),
            epsilon: None,
            delta: None,
            accountant: None,
            rdp_order: None,
            noise_multiplier: None,
            attack_feature: None,
            attack_accuracy: None,
            attack_baseline: None,
            attack_imputer: None,
            workers: 1,
            non_private: None,
        };
        let s = summary(&m).unwrap();
        assert!(
            s.contains("test accuracy 0.6211 against a majority share of 0.6211")
                && s.contains("learned nothing"),
            "{s}"
        );
        m.test_accuracy = Some(0.83);
        let s = summary(&m).unwrap();
        assert!(
            s.contains("+0.2089") && !s.contains("learned nothing"),
            "{s}"
        );
        m.test_majority = None;
        assert_eq!(summary(&m), None);
    }

    /// Every field travels in a slot of its own: the array comes back as the same sums, and
    /// summing two workers' arrays sums each field.
    #[test]
    fn epoch_sums_round_trip_and_add_up_field_by_field() {
        let a = EpochSums {
            train: Totals {
                loss: 1.5,
                correct: 2.0,
                count: 3.0,
                non_finite: 3.5,
            },
            test: Totals {
                loss: 4.5,
                correct: 5.0,
                count: 6.0,
                non_finite: 6.5,
            },
            attack_train: Hits {
                correct: 7.0,
                rows: 8.0,
            },
            attack_held_out: Hits {
                correct: 9.0,
                rows: 10.0,
            },
            examples: 11.0,
            zeroed: 11.5,
            cpu_seconds: 12.25,
            epsilon: 13.5,
            rdp_order: 14.0,
        };
        assert_eq!(EpochSums::from_array(&a.to_array()), a);
        assert_eq!(
            a.to_array(),
            [
                1.5, 2.0, 3.0, 3.5, 4.5, 5.0, 6.0, 6.5, 7.0, 8.0, 9.0, 10.0, 11.0, 11.5, 12.25,
                13.5, 14.0
            ]
        );
        // A worker other than 0: no epsilon, and NaN CPU seconds poison the sum.
        let b = EpochSums {
            cpu_seconds: f64::NAN,
            ..EpochSums::default()
        };
        let mut sum = a.to_array();
        for (x, y) in sum.iter_mut().zip(b.to_array()) {
            *x += y;
        }
        let all = EpochSums::from_array(&sum);
        assert_eq!(all.epsilon, 13.5);
        assert!(all.cpu_seconds.is_nan());
        assert_eq!(all.attack_held_out.rate(), Some(0.9));
        assert_eq!(Hits::default().rate(), None);
    }
}
