//! Poisson batches drawn for many steps ahead and copied to the device in one transfer (a copy
//! per step would make the host wait for the GPU every step).

use rand_chacha::ChaCha20Rng;
use tch::{Device, Kind, Tensor};

use crate::sampler::PoissonSampler;

/// Steps of batches drawn ahead.
const STEPS_AHEAD: usize = 64;

/// The next steps' example indices, on the device.
#[derive(Debug)]
pub struct BatchQueue {
    sampler: PoissonSampler,
    device: Device,
    scratch: Vec<i64>,
    host: Vec<i64>,
    /// `(start, len)` of each drawn step in `block`.
    bounds: Vec<(i64, i64)>,
    block: Tensor,
    next: usize,
}

impl BatchQueue {
    /// A queue over `sampler`'s batches, delivering them on `device`.
    pub fn new(sampler: PoissonSampler, device: Device) -> Self {
        BatchQueue {
            sampler,
            device,
            scratch: Vec::new(),
            host: Vec::new(),
            bounds: Vec::with_capacity(STEPS_AHEAD),
            block: Tensor::zeros([0], (Kind::Int64, device)),
            next: 0,
        }
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
        if self.next == self.bounds.len() {
            self.refill(remaining.clamp(1, STEPS_AHEAD as u64) as usize);
        }
        let (start, len) = self.bounds[self.next];
        self.next += 1;
        self.block.narrow(0, start, len)
    }

    fn refill(&mut self, steps: usize) {
        self.host.clear();
        self.bounds.clear();
        for _ in 0..steps {
            self.sampler.sample_into(&mut self.scratch);
            self.bounds
                .push((self.host.len() as i64, self.scratch.len() as i64));
            self.host.extend_from_slice(&self.scratch);
        }
        self.block = Tensor::from_slice(&self.host).to_device(self.device);
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
        let mut direct = PoissonSampler::new(1000, 30, rng()).unwrap();
        let mut queue = BatchQueue::new(PoissonSampler::new(1000, 30, rng()).unwrap(), Device::Cpu);
        let mut want = Vec::new();
        for s in 0..150u64 {
            direct.sample_into(&mut want);
            let got = Vec::<i64>::try_from(queue.next_batch(150 - s)).unwrap();
            assert_eq!(got, want, "step {s}");
        }
        queue.start_epoch(rng());
        direct.reseed(rng());
        direct.sample_into(&mut want);
        assert_eq!(Vec::<i64>::try_from(queue.next_batch(10)).unwrap(), want);
    }
}
