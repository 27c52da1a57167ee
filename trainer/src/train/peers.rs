//! [`Peers`]: this worker's place among the run's workers and the all-reduces it takes part in
//! with them, built in the same order on every worker.

use std::time::Duration;

use cluster::AllReduce;
use tch::Tensor;
use timely::worker::Worker;

use crate::Result;
use crate::config::TrainConfig;

/// This worker, its index among the run's workers, and its all-reduces with them. Every
/// exchange that hands one worker's values to all hands worker 0's.
pub(super) struct Peers<'w> {
    worker: &'w mut Worker,
    /// Row counts, keys and checkpoint positions (exact).
    counts: AllReduce<u64>,
    /// Gradients and parameters.
    grads: AllReduce<f32>,
    /// Evaluation totals and CPU seconds.
    totals: AllReduce<f64>,
    host: Vec<f32>,
    /// This worker's index.
    pub me: usize,
    /// The number of workers.
    pub workers: usize,
}

impl<'w> Peers<'w> {
    pub fn new(worker: &'w mut Worker, config: &TrainConfig) -> Self {
        // Workers load their shards at their own pace: the first rounds may wait long.
        let counts = AllReduce::new(worker, config.connect_timeout);
        let grads = AllReduce::new(worker, config.peer_timeout);
        let totals = AllReduce::new(worker, config.peer_timeout);
        let (me, workers) = (worker.index(), worker.peers());
        Peers {
            worker,
            counts,
            grads,
            totals,
            host: Vec::new(),
            me,
            workers,
        }
    }

    /// Worker 0: it draws the keys, calibrates, reads and writes checkpoints, reports and saves.
    pub fn lead(&self) -> bool {
        self.me == 0
    }

    /// From now on a count exchange waits `timeout` for a silent peer (every worker has loaded
    /// its shards).
    pub fn set_counts_timeout(&mut self, timeout: Duration) {
        self.counts.set_timeout(timeout);
    }

    /// Replaces `v` by its sum over the workers (exact).
    pub fn sum_counts(&mut self, v: &mut [u64]) -> Result<()> {
        Ok(self.counts.sum(self.worker, v)?)
    }

    /// Replaces `v` by worker 0's.
    pub fn broadcast_counts(&mut self, v: &mut [u64]) -> Result<()> {
        Ok(self.counts.broadcast(self.worker, 0, v)?)
    }

    /// Replaces `v` by its sum over the workers.
    pub fn sum_totals(&mut self, v: &mut [f64]) -> Result<()> {
        Ok(self.totals.sum(self.worker, v)?)
    }

    /// Replaces `v` by worker 0's.
    pub fn broadcast_totals(&mut self, v: &mut [f64]) -> Result<()> {
        Ok(self.totals.broadcast(self.worker, 0, v)?)
    }

    /// Sends the flat tensor `t` (on any device) to the other workers, for a sum that
    /// [`Peers::finish_sum_tensor`] completes: the work between the two overlaps the exchange.
    pub fn start_sum_tensor(&mut self, t: &Tensor) -> Result<()> {
        self.copy_to_host(t)?;
        Ok(self.grads.start(self.worker, &self.host)?)
    }

    /// Replaces `t` (the tensor [`Peers::start_sum_tensor`] sent) by its sum over the workers.
    pub fn finish_sum_tensor(&mut self, t: &Tensor) -> Result<()> {
        self.grads.finish(self.worker, &mut self.host)?;
        self.copy_back(t)
    }

    /// Replaces the flat tensor `t` (on any device) by worker 0's.
    pub fn broadcast_tensor(&mut self, t: &Tensor) -> Result<()> {
        self.copy_to_host(t)?;
        self.grads.broadcast(self.worker, 0, &mut self.host)?;
        self.copy_back(t)
    }

    /// How long this worker has waited for the others in the gradients' all-reduce.
    pub fn grads_waited(&self) -> Duration {
        self.grads.waited
    }

    /// Copies the flat tensor `t` to the host values.
    fn copy_to_host(&mut self, t: &Tensor) -> Result<()> {
        let n = t.numel();
        self.host.resize(n, 0.0);
        Ok(t.f_copy_data(&mut self.host, n)?)
    }

    /// Writes the host values back into `t`.
    fn copy_back(&self, t: &Tensor) -> Result<()> {
        t.shallow_clone()
            .f_copy_(&Tensor::from_slice(&self.host).to_device(t.device()))?;
        Ok(())
    }
}
