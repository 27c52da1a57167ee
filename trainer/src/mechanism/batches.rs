//! Poisson batches, drawn for many steps ahead and copied to the device in one transfer on a GPU
//! (a copy per step would make the host wait for the GPU every step), one step at a time on the
//! CPU (so each step's draw costs about the same, and can fill the wait for the other workers'
//! gradients: [`crate::train`]'s steps draw the next batch then).
//!
//! In a data-parallel run every worker draws, from the same stream, only the part of the
//! sample that falls in its own range of examples ([`PoissonSampler::sample_share_into`]).

use std::ops::Range;

use rand_chacha::ChaCha20Rng;
use tch::{Device, Kind, Tensor};

use crate::mechanism::sampler::PoissonSampler;

/// Steps of batches drawn ahead on a GPU.
const STEPS_AHEAD: usize = 64;

/// The next steps' example indices, on the device.
#[derive(Debug)]
pub struct BatchQueue {
    sampler: PoissonSampler,
    device: Device,
    /// The global indices held here; delivered indices are relative to its start.
    share: Range<i64>,
    /// Steps drawn at a time.
    ahead: usize,
    scratch: Vec<i64>,
    host: Vec<i64>,
    /// `(start, len)` of each drawn step in `block`.
    bounds: Vec<(i64, i64)>,
    /// `host` on the device, made when first asked for after a refill.
    block: Option<Tensor>,
    next: usize,
    drawn: u64,
}

impl BatchQueue {
    /// A queue over `sampler`'s batches, delivering them on `device`.
    pub fn new(sampler: PoissonSampler, device: Device) -> Self {
        let all = 0..sampler.population() as i64;
        BatchQueue::for_share(sampler, all, device)
    }

    /// A queue delivering the members of `sampler`'s batches that fall in `share` (global
    /// indices), as indices relative to `share.start`.
    pub fn for_share(sampler: PoissonSampler, share: Range<i64>, device: Device) -> Self {
        BatchQueue {
            sampler,
            device,
            share,
            ahead: if device.is_cuda() { STEPS_AHEAD } else { 1 },
            scratch: Vec::new(),
            host: Vec::new(),
            bounds: Vec::with_capacity(STEPS_AHEAD),
            block: None,
            next: 0,
            drawn: 0,
        }
    }

    /// The number of examples in the step last delivered (this share's part of the sample).
    pub fn sample_size(&self) -> u64 {
        self.drawn
    }

    /// The sampler (its rate is the accountant's q).
    pub fn sampler(&self) -> &PoissonSampler {
        &self.sampler
    }

    /// Starts an epoch's random stream, dropping batches drawn ahead from the previous one.
    pub fn start_epoch(&mut self, rng: ChaCha20Rng) {
        self.sampler.reseed(rng);
        self.bounds.clear();
        self.next = 0;
    }

    /// The next step's indices (sorted, distinct); draws up to `remaining` steps when none
    /// are left (so an epoch consumes exactly its steps' share of the stream).
    pub fn next_batch(&mut self, remaining: u64) -> Tensor {
        self.advance(remaining);
        self.batch()
    }

    /// Delivers the next step (its indices: [`BatchQueue::batch`], [`BatchQueue::batch_host`]);
    /// draws up to `remaining` steps when none are left.
    pub fn advance(&mut self, remaining: u64) {
        if self.next == self.bounds.len() {
            self.refill(remaining.clamp(1, self.ahead as u64) as usize);
        }
        self.next += 1;
        self.drawn = self.bounds[self.next - 1].1 as u64;
    }

    /// The indices of the step last delivered, on the device.
    pub fn batch(&mut self) -> Tensor {
        let Some((start, len)) = self.next.checked_sub(1).map(|n| self.bounds[n]) else {
            return Tensor::zeros([0], (Kind::Int64, self.device));
        };
        let (host, device) = (&self.host, self.device);
        self.block
            .get_or_insert_with(|| Tensor::from_slice(host).to_device(device))
            .narrow(0, start, len)
    }

    /// The indices of the step last delivered, on the host.
    pub fn batch_host(&self) -> &[i64] {
        match self.next.checked_sub(1).map(|n| self.bounds[n]) {
            Some((start, len)) => &self.host[start as usize..(start + len) as usize],
            None => &[],
        }
    }

    /// This queue drawing `ahead` steps at a time (on the CPU it draws one).
    #[cfg(test)]
    fn drawing_ahead(mut self, ahead: usize) -> Self {
        self.ahead = ahead;
        self
    }

    fn refill(&mut self, steps: usize) {
        self.host.clear();
        self.bounds.clear();
        let start = self.share.start;
        for _ in 0..steps {
            self.sampler
                .sample_share_into(self.share.clone(), &mut self.scratch);
            self.bounds
                .push((self.host.len() as i64, self.scratch.len() as i64));
            self.host.extend(self.scratch.iter().map(|&i| i - start));
        }
        self.block = None;
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn delivers_the_samplers_batches_in_order() {
        let rng = || ChaCha20Rng::seed_from_u64(9);
        // One step at a time (the CPU), a GPU's 64, and blocks that do not divide the steps.
        for ahead in [1, 7, STEPS_AHEAD] {
            let mut direct = PoissonSampler::new(1000, 30, rng()).unwrap();
            let mut queue =
                BatchQueue::new(PoissonSampler::new(1000, 30, rng()).unwrap(), Device::Cpu)
                    .drawing_ahead(ahead);
            let mut want = Vec::new();
            for s in 0..150u64 {
                direct.sample_into(&mut want);
                let got = Vec::<i64>::try_from(queue.next_batch(150 - s)).unwrap();
                assert_eq!(got, want, "step {s}, {ahead} ahead");
                assert_eq!(queue.batch_host(), want, "step {s} on the host");
                assert_eq!(
                    Vec::<i64>::try_from(queue.batch()).unwrap(),
                    want,
                    "asked again"
                );
                assert_eq!(queue.sample_size(), want.len() as u64);
            }
            queue.start_epoch(rng());
            assert!(
                queue.batch_host().is_empty(),
                "none delivered in the new epoch"
            );
            assert_eq!(queue.batch().numel(), 0);
            direct.reseed(rng());
            direct.sample_into(&mut want);
            queue.advance(10);
            assert_eq!(Vec::<i64>::try_from(queue.batch()).unwrap(), want);
        }
    }

    /// Shares of the index space together deliver exactly the whole sample, each relative to
    /// its start, with blocks of the sampler inside shares, across their cuts, and larger than
    /// them.
    #[test]
    fn shares_split_the_sample() {
        let rng = || ChaCha20Rng::seed_from_u64(4);
        for block in [64, 300, 4096] {
            let sampler = || PoissonSampler::with_block(1000, 0.08, rng(), block).unwrap();
            let mut whole = BatchQueue::new(sampler(), Device::Cpu);
            let cuts = [0i64, 0, 300, 301, 640, 1000];
            let mut parts: Vec<BatchQueue> = cuts
                .windows(2)
                .enumerate()
                .map(|(i, c)| {
                    BatchQueue::for_share(sampler(), c[0]..c[1], Device::Cpu)
                        .drawing_ahead(1 + i * 20)
                })
                .collect();
            for s in 0..100u64 {
                let want = Vec::<i64>::try_from(whole.next_batch(100 - s)).unwrap();
                let mut got = Vec::new();
                let mut sizes = 0;
                for (q, c) in parts.iter_mut().zip(cuts.windows(2)) {
                    let local = Vec::<i64>::try_from(q.next_batch(100 - s)).unwrap();
                    assert_eq!(q.batch_host(), local, "the same indices on the host");
                    assert!(local.iter().all(|&i| i >= 0 && i < c[1] - c[0]));
                    got.extend(local.iter().map(|i| i + c[0]));
                    sizes += q.sample_size();
                }
                assert_eq!(got, want, "block {block} step {s}");
                assert_eq!(sizes, want.len() as u64);
            }
        }
    }
}
