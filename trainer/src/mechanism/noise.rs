//! The Gaussian noise added once per step to the clipped gradient sum, drawn on the host from
//! the run's own streams (not libtorch's global generator, which every tensor op in the
//! process shares), so a seed gives the same noise on any device and in any company. It is
//! drawn for many steps at once and copied to the device in one transfer: a copy per step
//! would make the host wait for the GPU every step.
//!
//! The parameters are cut into [`BLOCKS`] blocks, each with its own stream, so that in a
//! data-parallel run every worker draws and adds the noise of its own blocks
//! ([`NoiseSource::share`]): each value is still added exactly once, the values are those one
//! worker would draw for all of them (the same noise for any layout), and no worker waits for
//! the one that would otherwise draw it all.

use std::ops::Range;

use rand::SeedableRng;
use rand::rngs::SysRng;
use rand_chacha::ChaCha20Rng;
use tch::{Device, Tensor};

use crate::config::NoiseRng;
use crate::mechanism::normal::Ziggurat;
use crate::{Error, Result};

/// Blocks of parameters, each with its own stream (never depending on the workers).
pub const BLOCKS: usize = 16;

/// Where a block's values come from: ChaCha20, keyed by the run's seed (one stream per epoch
/// and block, so a resumed run draws what an uninterrupted one would) or by the operating
/// system (never replayed, the key never leaves this process). Each value is the sum of four
/// standard Gaussian draws at half the std (Holohan and Braghin 2021, as Opacus's secure
/// mode), which hides the floating-point artefacts of a single draw. The draws are a ziggurat
/// on the stream's 32-bit words ([`crate::mechanism::normal`]).
#[derive(Debug)]
struct Streams {
    /// This source's blocks' draws, in block order.
    blocks: Vec<Ziggurat<ChaCha20Rng>>,
    seeded: bool,
}

/// At most this many values are drawn ahead (16 MB of `f32`).
const MAX_AHEAD: usize = 1 << 22;
/// Steps of noise drawn ahead, for small models.
const STEPS_AHEAD: usize = 64;

/// Draws `N(0, std^2)` noise for every parameter of its blocks and adds it to a gradient.
#[derive(Debug)]
pub struct NoiseSource {
    streams: Streams,
    std: f64,
    numel: usize,
    /// The blocks this source draws.
    blocks: Range<usize>,
    /// Their parameters.
    coords: Range<usize>,
    /// `[rows, coords.len()]`; row `next` is the next step's noise.
    host: Vec<f32>,
    /// `host` on the device, copied when a step first adds it there.
    block: Option<Tensor>,
    next: usize,
    device: Device,
}

/// The parameters of block `b` of `numel`.
fn block_coords(b: usize, numel: usize) -> Range<usize> {
    b * numel / BLOCKS..(b + 1) * numel / BLOCKS
}

/// The blocks of worker `part` of `parts` (contiguous, together all of them, each once).
pub fn share_blocks(part: usize, parts: usize) -> Range<usize> {
    part * BLOCKS / parts..(part + 1) * BLOCKS / parts
}

impl NoiseSource {
    /// A source of `numel` values of std `std` per step, added on `device`.
    pub fn new(kind: NoiseRng, numel: usize, std: f64, device: Device) -> Result<Self> {
        let rows = (MAX_AHEAD / numel.max(1)).clamp(1, STEPS_AHEAD);
        NoiseSource::drawing_ahead(kind, numel, std, device, rows)
    }

    /// [`NoiseSource::new`], drawing `rows` steps ahead.
    fn drawing_ahead(
        kind: NoiseRng,
        numel: usize,
        std: f64,
        device: Device,
        rows: usize,
    ) -> Result<Self> {
        let key = |b: usize| -> Result<ChaCha20Rng> {
            match kind {
                NoiseRng::Seeded(seed) => {
                    let mut rng = ChaCha20Rng::seed_from_u64(noise_seed(seed));
                    rng.set_stream(stream(0, b));
                    Ok(rng)
                }
                NoiseRng::Os => ChaCha20Rng::try_from_rng(&mut SysRng)
                    .map_err(|e| Error::Config(format!("no OS entropy for the noise's key: {e}"))),
            }
        };
        let blocks = (0..BLOCKS)
            .map(|b| key(b).map(Ziggurat::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(NoiseSource {
            streams: Streams {
                blocks,
                seeded: matches!(kind, NoiseRng::Seeded(_)),
            },
            std,
            numel,
            blocks: 0..BLOCKS,
            coords: 0..numel,
            host: vec![0.0; rows * numel],
            block: None,
            next: rows,
            device,
        })
    }

    /// The part of this source that worker `part` of `parts` adds: the noise of its blocks
    /// ([`share_blocks`]), the same values as the whole source's there; `None` when its blocks
    /// hold no parameters. Called before the first step.
    pub fn share(mut self, part: usize, parts: usize) -> Option<Self> {
        debug_assert_eq!(self.blocks, 0..BLOCKS, "a share of the whole source");
        let blocks = share_blocks(part, parts);
        let coords = block_coords(blocks.start, self.numel).start
            ..block_coords(blocks.end.max(1) - 1, self.numel).end;
        if blocks.is_empty() || coords.is_empty() {
            return None;
        }
        let rows = self.rows();
        self.streams.blocks.truncate(blocks.end - self.blocks.start);
        self.streams
            .blocks
            .drain(..blocks.start - self.blocks.start);
        self.host = vec![0.0; rows * coords.len()];
        self.blocks = blocks;
        self.coords = coords;
        self.block = None;
        self.next = rows;
        Some(self)
    }

    /// This source drawing at most `steps` steps ahead (an epoch's: every epoch starts its
    /// streams anew, so a run with few steps an epoch, full batch above all, would draw noise it
    /// never adds). The values are the same however many steps are drawn ahead.
    pub fn ahead_at_most(mut self, steps: usize) -> Self {
        let rows = self.rows().min(steps.max(1));
        self.host = vec![0.0; rows * self.coords.len()];
        self.block = None;
        self.next = rows;
        self
    }

    fn rows(&self) -> usize {
        self.host.len() / self.coords.len().max(1)
    }

    /// Starts the seeded streams of `epoch` (a resumed run draws what an uninterrupted one
    /// would); secure noise is never replayed.
    pub fn start_epoch(&mut self, epoch: u32) {
        if self.streams.seeded {
            for (b, normal) in self.blocks.clone().zip(&mut self.streams.blocks) {
                let rng = normal.rng_mut();
                rng.set_stream(stream(epoch, b));
                rng.set_word_pos(0);
                normal.discard();
            }
        }
        self.next = self.rows();
    }

    /// `grad += N(0, std^2)` elementwise, on this source's parameters.
    pub fn add_to(&mut self, grad: &Tensor) {
        if self.next == self.rows() {
            self.refill();
        }
        let (rows, width) = (self.rows() as i64, self.coords.len() as i64);
        let block = self.block.get_or_insert_with(|| {
            Tensor::from_slice(&self.host)
                .view([rows, width])
                .to_device(self.device)
        });
        let noise = block.select(0, self.next as i64);
        self.next += 1;
        let _ = grad
            .narrow(0, self.coords.start as i64, width)
            .g_add_(&noise);
    }

    /// [`NoiseSource::add_to`] on a gradient in host memory: the same values, added in `f32`
    /// as on the device.
    pub fn add_to_host(&mut self, grad: &mut [f32]) {
        if self.next == self.rows() {
            self.refill();
        }
        let width = self.coords.len();
        let noise = &self.host[self.next * width..(self.next + 1) * width];
        for (g, &n) in grad[self.coords.clone()].iter_mut().zip(noise) {
            *g += n;
        }
        self.next += 1;
    }

    /// Draws the next steps' noise (copied to the device when first added there): each
    /// block's values from its own stream, step after step.
    fn refill(&mut self) {
        let width = self.coords.len();
        let scale = 0.5 * self.std;
        for row in self.host.chunks_exact_mut(width.max(1)) {
            for (b, normal) in self.blocks.clone().zip(&mut self.streams.blocks) {
                let c = block_coords(b, self.numel);
                let at = c.start - self.coords.start..c.end - self.coords.start;
                normal.fill_sums_of_four(&mut row[at], scale);
            }
        }
        self.block = None;
        self.next = 0;
    }
}

/// The seeded stream of block `b` in `epoch`.
fn stream(epoch: u32, b: usize) -> u64 {
    u64::from(epoch) * BLOCKS as u64 + b as u64
}

/// The key of the seeded noise streams (one per epoch), independent of the sampler's and the
/// initialisation's, which use the seed itself.
fn noise_seed(seed: u64) -> u64 {
    shards::splitmix64(seed ^ 0x6e6f_6973_6500_0000)
}

#[cfg(test)]
mod tests {
    use tch::Kind;

    use super::*;

    fn draw(kind: NoiseRng, epoch: u32, n: usize, std: f64) -> Tensor {
        let mut src = NoiseSource::drawing_ahead(kind, n, std, Device::Cpu, 1).unwrap();
        src.start_epoch(epoch);
        let g = Tensor::zeros([n as i64], (Kind::Float, Device::Cpu));
        src.add_to(&g);
        g
    }

    #[test]
    fn both_sources_have_the_requested_std() {
        for kind in [NoiseRng::Seeded(1), NoiseRng::Os] {
            let g = draw(kind, 0, 50_000, 2.0);
            let (mean, std) = (
                g.mean(Kind::Float).double_value(&[]),
                g.std(true).double_value(&[]),
            );
            // Standard errors: 2/sqrt(5e4) ~ 0.009 for the mean, ~ 0.006 for the std.
            assert!(mean.abs() < 0.04, "{kind:?} mean {mean}");
            assert!((std - 2.0).abs() < 0.03, "{kind:?} std {std}");
        }
    }

    /// Steps see the same noise however many steps are drawn ahead, and an epoch restarts
    /// its stream wherever the previous one stopped.
    #[test]
    fn noise_does_not_depend_on_drawing_ahead() {
        let source = |rows| {
            let mut s =
                NoiseSource::drawing_ahead(NoiseRng::Seeded(5), 7, 1.0, Device::Cpu, rows).unwrap();
            s.start_epoch(1);
            s
        };
        let step = |s: &mut NoiseSource| {
            let g = Tensor::zeros([7], (Kind::Float, Device::Cpu));
            s.add_to(&g);
            g
        };
        let (mut a, mut b) = (source(2), source(64));
        // Capped after the epoch started (as a run caps it at its steps per epoch).
        let mut c = source(64).ahead_at_most(3);
        let first = step(&mut a);
        assert!(first.equal(&step(&mut b)));
        assert!(first.equal(&step(&mut c)));
        for _ in 0..5 {
            let s = step(&mut a);
            assert!(s.equal(&step(&mut b)));
            assert!(s.equal(&step(&mut c)));
        }
        a.start_epoch(1);
        assert!(step(&mut a).equal(&first));
    }

    /// Each value is the sum of four consecutive standard normal draws of the epoch's stream
    /// times half the std (the secure construction), and the values over many steps are
    /// N(0, std^2) (the draws' own distribution is tested in `normal`).
    #[test]
    fn each_value_is_the_sum_of_four_draws_at_half_the_std() {
        let (n, std) = (1000, 0.3);
        let g = draw(NoiseRng::Seeded(9), 2, n, std);
        let got = Vec::<f32>::try_from(&g).unwrap();
        for b in 0..BLOCKS {
            // Block b of epoch 2: stream 2 * BLOCKS + b of the key.
            let mut rng = ChaCha20Rng::seed_from_u64(noise_seed(9));
            rng.set_stream(2 * BLOCKS as u64 + b as u64);
            let mut z = Ziggurat::new(rng);
            let block = b * n / BLOCKS..(b + 1) * n / BLOCKS;
            for (i, &v) in got.iter().enumerate().take(block.end).skip(block.start) {
                let want = ((z.draw() + z.draw() + z.draw() + z.draw()) * 0.5 * std) as f32;
                assert_eq!(v, want, "value {i}");
            }
        }
    }

    /// However many workers share the noise, their blocks cover every parameter once and
    /// their shares add, over several steps and epochs, to exactly the noise of one source.
    #[test]
    fn shares_add_up_to_the_whole_noise_once() {
        for numel in [1, 5, 16, 551, 1000] {
            for parts in [1, 2, 3, 5, 16, 17, 40] {
                let whole = || {
                    NoiseSource::drawing_ahead(NoiseRng::Seeded(4), numel, 1.0, Device::Cpu, 3)
                        .unwrap()
                };
                let mut one = whole();
                let mut shares: Vec<NoiseSource> =
                    (0..parts).filter_map(|p| whole().share(p, parts)).collect();
                let mut covered = vec![0; numel];
                for s in &shares {
                    covered[s.coords.clone()].iter_mut().for_each(|c| *c += 1);
                }
                assert!(
                    covered.iter().all(|&c| c == 1),
                    "{numel} values, {parts} parts: {covered:?}"
                );
                for epoch in [0, 3] {
                    one.start_epoch(epoch);
                    shares.iter_mut().for_each(|s| s.start_epoch(epoch));
                    for step in 0..5 {
                        let mut want = vec![0f32; numel];
                        one.add_to_host(&mut want);
                        let mut got = Tensor::zeros([numel as i64], (Kind::Float, Device::Cpu));
                        for (i, s) in shares.iter_mut().enumerate() {
                            if i % 2 == 0 {
                                s.add_to(&got);
                            } else {
                                let mut h = Vec::<f32>::try_from(&got).unwrap();
                                s.add_to_host(&mut h);
                                got.copy_(&Tensor::from_slice(&h));
                            }
                        }
                        let got = Vec::<f32>::try_from(&got).unwrap();
                        assert_eq!(
                            got, want,
                            "{numel} values, {parts} parts, epoch {epoch}, step {step}"
                        );
                    }
                }
            }
        }
    }

    /// Adding on the host gives the same values as adding on the device, and the two can
    /// alternate without skipping or repeating a step's noise.
    #[test]
    fn host_and_device_adds_draw_the_same_steps() {
        let source = || {
            let mut s =
                NoiseSource::drawing_ahead(NoiseRng::Seeded(8), 5, 0.7, Device::Cpu, 3).unwrap();
            s.start_epoch(4);
            s
        };
        let (mut a, mut b) = (source(), source());
        for step in 0..8 {
            let base: Vec<f32> = (0..5).map(|i| (i * step) as f32 * 0.1).collect();
            let g = Tensor::from_slice(&base);
            a.add_to(&g);
            let mut h = base.clone();
            if step % 3 == 1 {
                let t = Tensor::from_slice(&base);
                b.add_to(&t);
                h = Vec::<f32>::try_from(&t).unwrap();
            } else {
                b.add_to_host(&mut h);
            }
            assert_eq!(Vec::<f32>::try_from(&g).unwrap(), h, "step {step}");
        }
    }

    #[test]
    fn seeded_noise_repeats_per_epoch_and_os_keyed_noise_does_not() {
        let a = draw(NoiseRng::Seeded(3), 2, 8, 1.0);
        assert!(a.equal(&draw(NoiseRng::Seeded(3), 2, 8, 1.0)));
        assert!(!a.equal(&draw(NoiseRng::Seeded(3), 1, 8, 1.0)));
        assert!(!a.equal(&draw(NoiseRng::Seeded(4), 2, 8, 1.0)));
        assert!(!draw(NoiseRng::Os, 2, 8, 1.0).equal(&draw(NoiseRng::Os, 2, 8, 1.0)));
    }
}
