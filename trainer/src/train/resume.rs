//! Checkpoints across runs: process 0's checks of the outputs before any work, and the start
//! of a run ([`restore`]): fresh, or worker 0's checkpoint ([`Position`], parameters and
//! optimizer state) handed to every worker.

use std::path::Path;

use tch::Tensor;

use super::Stdout;
use super::peers::Peers;
use crate::checkpoint;
use crate::config::TrainConfig;
use crate::export;
use crate::features::Standardizer;
use crate::mechanism::dp_step::DpStep;
use crate::mechanism::held_out::HeldOutRelease;
use crate::mechanism::privacy::Accounting;
use crate::mechanism::quantiles::ReleasedBounds;
use crate::metrics::EpochMetrics;
use crate::mlp::Mlp;
use crate::publish;
use crate::{Error, Result};

/// Where a run starts, worker 0's word handed to all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Position {
    /// Whether a checkpoint is continued.
    pub resumed: bool,
    /// The epochs done before.
    pub epochs_done: u32,
    /// The steps taken before (they count towards the budget).
    pub steps: u64,
}

impl Position {
    /// As three words for the exchange.
    pub fn to_words(self) -> [u64; 3] {
        [
            u64::from(self.resumed),
            u64::from(self.epochs_done),
            self.steps,
        ]
    }

    /// From [`Position::to_words`]'s layout.
    pub fn from_words(words: [u64; 3]) -> Self {
        Position {
            resumed: words[0] == 1,
            epochs_done: words[1] as u32,
            steps: words[2],
        }
    }
}

/// What a run starts from.
#[derive(Debug, Default)]
pub(super) struct Start {
    /// The same on every worker.
    pub position: Position,
    /// The checkpoint's epochs (worker 0's; empty on the others).
    pub history: Vec<EpochMetrics>,
    /// The checkpoint's standardization release (worker 0's).
    pub standardizer: Option<Standardizer>,
    /// The checkpoint's DP quantile bounds (worker 0's).
    pub bounds: Option<Vec<ReleasedBounds>>,
    /// The checkpoint's held-out release, if it made one (worker 0's).
    pub test_release: Option<HeldOutRelease>,
    /// The held-out releases made before (worker 0's).
    pub test_releases: u32,
}

/// Worker 0 reads the checkpoint (it needs to exist only where worker 0 runs) and hands its
/// position, parameters (into `mlp`) and optimizer state (into `dp`) to the others. The
/// checkpoint's steps must be its epochs of `per_epoch` steps, and its epsilon what
/// `accounting` says they spend.
#[allow(clippy::too_many_arguments)] // the run's parts a restore reads or fills, each once
pub(super) fn restore(
    config: &TrainConfig,
    peers: &mut Peers,
    fingerprint: &serde_json::Value,
    accounting: Option<&Accounting>,
    per_epoch: u64,
    mlp: &mut Mlp,
    dp: &mut DpStep,
    out: Stdout,
) -> Result<Start> {
    let mut start = Start::default();
    if peers.lead()
        && let Some((saved, dir)) = saved_checkpoint(config, fingerprint, accounting, per_epoch)?
    {
        start.standardizer = saved.meta.standardizer.clone();
        start.bounds = saved.meta.bounds.clone();
        start.test_release = saved.meta.test_release.clone();
        start.test_releases = saved.meta.test_releases;
        mlp.load_flat(saved.tensor(dir, "params")?)?;
        dp.optimizer_mut()
            .restore(&saved.tensors, saved.meta.steps)?;
        start.position = Position {
            resumed: true,
            epochs_done: saved.meta.epochs_done,
            steps: saved.meta.steps,
        };
        start.history = saved.meta.metrics;
    }
    let mut words = start.position.to_words();
    peers.broadcast_counts(&mut words)?;
    start.position = Position::from_words(words);
    if start.position.resumed {
        peers.broadcast_tensor(mlp.flat())?;
        let state: Vec<Tensor> = dp
            .optimizer()
            .state()
            .into_iter()
            .map(|(_, t)| t.shallow_clone())
            .collect();
        for t in &state {
            peers.broadcast_tensor(t)?;
        }
        let Position {
            epochs_done, steps, ..
        } = start.position;
        dp.optimizer_mut().set_steps(steps);
        if let Some(ck) = &config.checkpoint {
            out.line(&format!(
                "resuming from {} after epoch {epochs_done} ({steps} steps already count \
                 towards the budget)",
                ck.dir.display()
            ));
        }
    }
    Ok(start)
}

/// Process 0's checks before any work is spent: `--resume` has a checkpoint to continue, and
/// every output (model and card, metrics, checkpoints) can be written.
pub(super) fn check_outputs(config: &TrainConfig) -> Result<()> {
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

fn already_there(dir: &Path) -> Error {
    Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: "a checkpoint is there already: pass --resume to continue it (its steps count \
                 towards the budget) or choose another directory"
            .into(),
    }
}

/// The checkpoint to continue from, if any: refuses one without `--resume`, none with it, or one
/// from a run with other options or another noise multiplier, or one whose steps, epsilon or
/// metrics file disagree with what this run's epochs of `per_epoch` steps would have written
/// (an edited checkpoint would resume with the budget understated).
fn saved_checkpoint<'a>(
    config: &'a TrainConfig,
    fp: &serde_json::Value,
    accounting: Option<&Accounting>,
    per_epoch: u64,
) -> Result<Option<(checkpoint::Checkpoint, &'a Path)>> {
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
    let refuse = |reason: String| Error::Checkpoint {
        path: ck.dir.clone(),
        reason,
    };
    let ours = accounting.map(|a| a.noise_multiplier);
    if saved.meta.noise_multiplier != ours {
        return Err(refuse(format!(
            "its noise multiplier {:?} differs from this run's {ours:?}",
            saved.meta.noise_multiplier
        )));
    }
    let meta = &saved.meta;
    let expected = u64::from(meta.epochs_done) * per_epoch;
    if meta.steps != expected {
        return Err(refuse(format!(
            "it says {} steps after {} epochs, but an epoch of this run is {per_epoch} steps \
             ({expected} in all): it was altered, or written by another run; resuming it would \
             count the privacy budget wrong",
            meta.steps, meta.epochs_done
        )));
    }
    if let (Some(acc), Some(said)) = (accounting, meta.metrics.last().and_then(|m| m.epsilon)) {
        // Its last epoch's epsilon counts the held-out releases made by then.
        let spent = acc.spent_so_far(meta.steps, meta.test_releases)?.epsilon;
        if (spent - said).abs() > 1e-9 * spent.abs().max(1.0) {
            return Err(refuse(format!(
                "its last epoch reports epsilon {said}, but {} steps (and {} held-out \
                 releases) of this run's mechanism spend {spent}: it was altered",
                meta.steps, meta.test_releases
            )));
        }
    }
    if let Some(path) = &config.metrics_out {
        crate::metrics::check_history(path, &meta.metrics).map_err(refuse)?;
    }
    Ok(Some((saved, &ck.dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worker 0's position is every worker's, field for field.
    #[test]
    fn positions_round_trip_through_their_words() {
        for p in [
            Position::default(),
            Position {
                resumed: true,
                epochs_done: 7,
                steps: 26_250,
            },
            Position {
                resumed: true,
                epochs_done: u32::MAX,
                steps: u64::MAX,
            },
        ] {
            assert_eq!(Position::from_words(p.to_words()), p);
        }
        assert_eq!(Position::default().to_words(), [0, 0, 0]);
    }
}
