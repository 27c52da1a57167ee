//! [`Steps`]: one epoch of DP-SGD steps on this worker's share: draw the batch, accumulate the
//! clipped gradients, add the noise (each worker's share carries that of its blocks of parameters), sum over the workers, update.

use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Tensor};

use super::keys::SamplerKey;
use super::lock;
use super::peers::Peers;
use crate::Result;
use crate::audit::canary::Canaries;
use crate::data::Data;
use crate::device::synchronize;
use crate::host_rows::HostRows;
use crate::mechanism::batches::BatchQueue;
use crate::mechanism::dp_step::DpStep;
use crate::metrics::thread_cpu_ns;
use crate::mlp::Mlp;
use crate::profile::{Phase, Profiler};

/// What the steps of every epoch use.
pub(super) struct Steps<'a> {
    /// Clip, noise, scale, optimizer step.
    pub dp: DpStep,
    /// This worker's share of each step's Poisson sample.
    pub batches: BatchQueue,
    /// With microbatches, each training record's microbatch, by its key.
    pub microbatches: Option<Tensor>,
    /// An audit's canaries.
    pub canaries: Option<&'a Mutex<Canaries>>,
    /// Where the sampler's streams come from.
    pub key: SamplerKey,
    /// Steps per epoch.
    pub per_epoch: u64,
    /// The device the steps run on.
    pub device: Device,
    /// Whether to show a progress bar (worker 0, `--progress`).
    pub progress: bool,
    /// Where the plain-Rust step runs on the CPU (without microbatches): a host
    /// copy of the training rows ([`crate::data::Examples::host_rows`]) it gathers its
    /// batches from, instead of `index_select` on the row tensor and a copy of the batch.
    pub host_rows: Option<HostRows>,
    /// With privacy units, the rows of a step's units and where each unit's start (reused
    /// buffers).
    pub unit_rows: (Vec<i64>, Vec<usize>),
}

/// What an epoch's steps took.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepsDone {
    /// Examples this worker's steps used (its share of the samples).
    pub examples: u64,
    /// Gradients its steps zeroed for not being finite.
    pub zeroed: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// This thread's CPU seconds, where the platform tells them.
    pub cpu_seconds: Option<f64>,
    /// Seconds waited in the gradients' all-reduce (with more than one worker).
    pub comm_seconds: Option<f64>,
}

impl Steps<'_> {
    /// Epoch `epoch` (from 0) of `epochs`: every step on `mlp`, timed in `prof`.
    pub fn epoch(
        &mut self,
        peers: &mut Peers,
        mlp: &Mlp,
        data: &Data,
        epoch: u32,
        epochs: u32,
        prof: &mut Profiler,
    ) -> Result<StepsDone> {
        self.batches.start_epoch(self.key.rng(epoch));
        self.dp.start_epoch(epoch);
        let per_epoch = self.per_epoch;
        let bar = progress_bar(self.progress, per_epoch, epoch + 1, epochs);
        let started = Instant::now();
        let cpu_started = thread_cpu_ns();
        let comm_started = peers.grads_waited();
        // The steps leave the parameters on the host (when the plain-Rust path steps there);
        // they reach `mlp` here, whatever the steps returned.
        let examples = self.steps(peers, mlp, data, &bar, prof);
        self.dp.sync_model();
        let examples = examples?;
        synchronize(self.device);
        let seconds = started.elapsed().as_secs_f64();
        let cpu_seconds = cpu_started
            .zip(thread_cpu_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 * 1e-9);
        let comm_seconds =
            (peers.workers > 1).then(|| (peers.grads_waited() - comm_started).as_secs_f64());
        bar.finish_and_clear();
        Ok(StepsDone {
            examples,
            zeroed: self.dp.take_zeroed(),
            seconds,
            cpu_seconds,
            comm_seconds,
        })
    }

    /// The steps of an epoch started by [`Steps::epoch`]; returns the examples they used.
    /// Their parameters may be left on the host ([`DpStep::update_deferred`]).
    fn steps(
        &mut self,
        peers: &mut Peers,
        mlp: &Mlp,
        data: &Data,
        bar: &ProgressBar,
        prof: &mut Profiler,
    ) -> Result<u64> {
        let per_epoch = self.per_epoch;
        let mut examples = 0u64;
        prof.restart();
        let mut next = (per_epoch > 0).then(|| self.draw(per_epoch, data));
        prof.mark(Phase::Sampling);
        for s in 0..per_epoch {
            prof.restart();
            let drawn = next.take().expect("every step's batch is drawn");
            examples += self.batches.sample_size();
            let mut canaries = self.canaries.map(lock);
            match (drawn, &self.host_rows) {
                (Drawn::Host, Some(all)) => {
                    let mut idx = self.batches.batch_host();
                    if let Some(c) = &mut canaries {
                        idx = c.take_sampled_host(idx, data.train.len());
                    }
                    self.dp.accumulate_gathered(mlp, all, idx, prof);
                }
                (Drawn::Rows(rows), _) => {
                    prof.mark(Phase::Sampling);
                    self.dp
                        .accumulate_rows(mlp, data.train.width(), &rows, prof);
                }
                (Drawn::Units, Some(all)) => {
                    let mut units = self.batches.batch_host();
                    if let Some(c) = &mut canaries {
                        units = c.take_sampled_host(units, data.train_units());
                    }
                    let (rows, starts) = &mut self.unit_rows;
                    data.unit_rows(units, rows, starts);
                    self.dp
                        .accumulate_units_gathered(mlp, all, rows, starts, prof);
                }
                (Drawn::Units, None) => {
                    let mut units = self.batches.batch_host();
                    if let Some(c) = &mut canaries {
                        units = c.take_sampled_host(units, data.train_units());
                    }
                    let (rows, starts) = &mut self.unit_rows;
                    data.unit_rows(units, rows, starts);
                    let groups: Vec<i64> = starts
                        .windows(2)
                        .enumerate()
                        .flat_map(|(g, w)| std::iter::repeat_n(g as i64, w[1] - w[0]))
                        .collect();
                    let device = self.device;
                    self.dp.set_units(
                        Tensor::from_slice(&groups).to_device(device),
                        units.len() as i64,
                    );
                    let idx = Tensor::from_slice(rows).to_device(device);
                    let rows = data.train.rows().index_select(0, &idx);
                    prof.mark(Phase::Sampling);
                    self.dp
                        .accumulate_rows(mlp, data.train.width(), &rows, prof);
                }
                _ => {
                    let mut idx = self.batches.batch();
                    if let Some(c) = &mut canaries {
                        idx = c.take_sampled(&idx, data.train.len());
                    }
                    if let Some(ids) = &self.microbatches {
                        self.dp.set_microbatches(ids.index_select(0, &idx));
                    }
                    let rows = data.train.rows().index_select(0, &idx);
                    prof.mark(Phase::Sampling);
                    self.dp
                        .accumulate_rows(mlp, data.train.width(), &rows, prof);
                }
            }
            if let Some(c) = &mut canaries {
                c.add_rows(&mut self.dp);
            }
            self.dp.add_noise(prof);
            // The next step's batch does not depend on this one's result: it is drawn while the
            // other workers' gradients are on their way.
            if peers.workers > 1 {
                peers.start_sum_tensor(self.dp.grad())?;
                prof.mark(Phase::AllReduce);
            }
            if s + 1 < per_epoch {
                next = Some(self.draw(per_epoch - s - 1, data));
                prof.mark(Phase::Sampling);
            }
            if peers.workers > 1 {
                peers.finish_sum_tensor(self.dp.grad())?;
                prof.mark(Phase::AllReduce);
            }
            if let Some(c) = &mut canaries {
                c.observe(&self.dp);
            }
            drop(canaries);
            self.dp.update_deferred(mlp, prof);
            if s % 64 == 0 {
                bar.set_position(s);
            }
        }
        Ok(examples)
    }
}

/// How a step takes its batch, drawn ahead of the step (its indices stay in [`BatchQueue`]).
enum Drawn {
    /// The plain-Rust step gathers the rows from its host copy.
    Host,
    /// The rows, gathered ahead for the libtorch step.
    Rows(Tensor),
    /// Canaries (which may join the batch) or microbatches want the indices first.
    Indices,
    /// The step's units, whose rows are gathered and grouped at the step.
    Units,
}

impl Steps<'_> {
    /// Draws the next step's batch (of `remaining` steps in the epoch).
    fn draw(&mut self, remaining: u64, data: &Data) -> Drawn {
        self.batches.advance(remaining);
        if self.dp.units() {
            Drawn::Units
        } else if self.host_rows.is_some() {
            Drawn::Host
        } else if self.canaries.is_some() || self.microbatches.is_some() {
            Drawn::Indices
        } else {
            Drawn::Rows(data.train.rows().index_select(0, &self.batches.batch()))
        }
    }
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
