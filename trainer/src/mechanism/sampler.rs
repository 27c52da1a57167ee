//! Exact Poisson sampling: each example joins each step independently with probability q.
//!
//! The examples are cut into fixed blocks (their length depends only on N and q, never on how
//! many workers share the data). A step draws each block's count from Binomial(len, q) and the
//! block's members as a uniform subset of that size, which has exactly the distribution of one
//! independent Bernoulli(q) draw per example at O(batch) cost. The counts come from the step's
//! own position in the stream and each block's members from the block's own position, so a
//! data-parallel worker draws only the blocks that overlap its share of the examples (and every
//! block's count, a few numbers), and the members it keeps are exactly those a single worker
//! would have drawn: the same sample, so the same model, for any workers x threads.

use std::ops::Range;

use rand::RngExt;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Binomial, Distribution};

use crate::{Error, Result};

/// Expected members per block: blocks are the smallest power of two at least this over q (and
/// at least [`MIN_BLOCK`] examples), so a block costs a reposition of the stream only next to
/// hundreds of draws.
const MEMBERS_PER_BLOCK: f64 = 256.0;
/// The shortest block.
const MIN_BLOCK: u64 = 1 << 12;
/// Stream words reserved per block and step (a block's draws use far fewer: at most about
/// 2 words per member, plus rejected repeats).
const SEGMENT_WORDS: u128 = 1 << 26;

/// Draws the examples of each step from `0..n`.
#[derive(Debug, Clone)]
pub struct PoissonSampler {
    n: u64,
    rate: f64,
    block: u64,
    /// The count of a full block, and of the last (shorter) one.
    full: Binomial,
    last: Binomial,
    rng: ChaCha20Rng,
    /// Steps drawn since the stream was (re)seeded.
    step: u64,
    counts: Vec<u64>,
    drawn: Vec<i64>,
    scratch: Vec<i64>,
}

impl PoissonSampler {
    /// A sampler over `n` examples with rate `expected_batch / n` (at most 1).
    pub fn new(n: usize, expected_batch: u32, rng: ChaCha20Rng) -> Result<Self> {
        if n == 0 {
            return Err(Error::Config(
                "cannot sample from an empty training set".into(),
            ));
        }
        let rate = (f64::from(expected_batch) / n as f64).min(1.0);
        PoissonSampler::with_rate(n, rate, rng)
    }

    /// A sampler over `n` examples with rate `rate` in (0, 1].
    pub fn with_rate(n: usize, rate: f64, rng: ChaCha20Rng) -> Result<Self> {
        let block = ((MEMBERS_PER_BLOCK / rate).min(1e18) as u64)
            .max(MIN_BLOCK)
            .next_power_of_two();
        PoissonSampler::with_block(n, rate, rng, block)
    }

    /// [`PoissonSampler::with_rate`] with blocks of `block` examples.
    pub(crate) fn with_block(n: usize, rate: f64, rng: ChaCha20Rng, block: u64) -> Result<Self> {
        let n = n as u64;
        let binomial = |len: u64| {
            Binomial::new(len, rate)
                .map_err(|e| Error::Config(format!("sampling rate {rate}: {e}")))
        };
        let last_len = n - (n.max(1) - 1) / block * block;
        Ok(PoissonSampler {
            n,
            rate,
            block,
            full: binomial(block)?,
            last: binomial(last_len)?,
            rng,
            step: 0,
            counts: Vec::new(),
            drawn: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// The sampling rate q: the probability that an example is in a step.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Number of examples sampled from.
    pub fn population(&self) -> usize {
        self.n as usize
    }

    /// Replaces the random stream (a new epoch, or a resumed run); steps count from 0 again.
    pub fn reseed(&mut self, rng: ChaCha20Rng) {
        self.rng = rng;
        self.step = 0;
    }

    /// Draws one step's examples into `out` (cleared first), sorted, without repeats.
    pub fn sample_into(&mut self, out: &mut Vec<i64>) {
        self.sample_share_into(0..self.n as i64, out);
    }

    /// Draws one step's examples that fall in `share` (global indices) into `out` (cleared
    /// first), sorted, without repeats: exactly the members of `share` that
    /// [`PoissonSampler::sample_into`] would draw at this step.
    pub fn sample_share_into(&mut self, share: Range<i64>, out: &mut Vec<i64>) {
        out.clear();
        let (blocks, step) = (self.n.div_ceil(self.block), self.step);
        let segment =
            |b: u64| (u128::from(step) * u128::from(blocks + 1) + u128::from(b)) * SEGMENT_WORDS;
        // Every block's count, from the step's first segment.
        self.rng.set_word_pos(segment(0));
        self.counts.clear();
        for b in 0..blocks {
            let size = if b + 1 == blocks {
                &self.last
            } else {
                &self.full
            };
            self.counts.push(size.sample(&mut self.rng));
        }
        let (lo, hi) = (
            share.start.max(0) as u64,
            (share.end.max(0) as u64).min(self.n),
        );
        if lo < hi {
            for b in lo / self.block..hi.div_ceil(self.block) {
                self.rng.set_word_pos(segment(b + 1));
                let start = b * self.block;
                let len = self.block.min(self.n - start);
                let from = out.len();
                self.block_members(self.counts[b as usize], start, len, out);
                // Keep the part inside the share (only the first and last blocks reach out).
                if start < lo || start + len > hi {
                    let kept = out[from..]
                        .iter()
                        .copied()
                        .filter(|&i| (lo as i64..hi as i64).contains(&i));
                    self.scratch.clear();
                    self.scratch.extend(kept);
                    out.truncate(from);
                    out.extend_from_slice(&self.scratch);
                }
            }
        }
        self.step += 1;
    }

    /// Appends a uniformly random `k`-subset of `start..start + len`, sorted.
    fn block_members(&mut self, k: u64, start: u64, len: u64, out: &mut Vec<i64>) {
        let from = out.len();
        if 2 * k <= len {
            self.uniform_subset(k, len, out);
        } else {
            // Dense: draw the complement instead, so the rejection below stays cheap.
            let mut skip = Vec::with_capacity((len - k) as usize);
            self.uniform_subset(len - k, len, &mut skip);
            let mut skip = skip.into_iter().peekable();
            for i in 0..len as i64 {
                if skip.peek() == Some(&i) {
                    skip.next();
                } else {
                    out.push(i);
                }
            }
        }
        for i in &mut out[from..] {
            *i += start as i64;
        }
    }

    /// Appends a uniformly random `k`-subset of `0..len`, sorted: uniform draws, keeping the
    /// distinct ones until there are `k` (the set is uniform by symmetry; repeats are rare for
    /// k << len).
    fn uniform_subset(&mut self, k: u64, len: u64, out: &mut Vec<i64>) {
        let n = len as i64;
        let mut drawn = std::mem::take(&mut self.drawn);
        drawn.clear();
        drawn.extend((0..k).map(|_| self.rng.random_range(0..n)));
        radix_sort(&mut drawn, n, &mut self.scratch);
        drawn.dedup();
        while (drawn.len() as u64) < k {
            let v = self.rng.random_range(0..n);
            if let Err(at) = drawn.binary_search(&v) {
                drawn.insert(at, v);
            }
        }
        out.extend_from_slice(&drawn);
        self.drawn = drawn;
    }
}

/// Sorts values in `0..n` (least significant byte first, one pass per byte of `n - 1`): at
/// batch 4096 a third of the time `sort_unstable` takes, and every data-parallel worker sorts
/// each step's whole sample.
fn radix_sort(values: &mut Vec<i64>, n: i64, scratch: &mut Vec<i64>) {
    if values.len() < 64 {
        values.sort_unstable();
        return;
    }
    let bits = 64 - (n.max(2) - 1).leading_zeros();
    scratch.clear();
    scratch.resize(values.len(), 0);
    for shift in (0..bits).step_by(8) {
        let digit = |x: i64| ((x >> shift) & 0xff) as usize;
        let mut starts = [0usize; 257];
        for &x in values.iter() {
            starts[digit(x) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        for &x in values.iter() {
            let d = digit(x);
            scratch[starts[d]] = x;
            starts[d] += 1;
        }
        std::mem::swap(values, scratch);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn sampler(n: usize, batch: u32, seed: u64) -> PoissonSampler {
        PoissonSampler::new(n, batch, ChaCha20Rng::seed_from_u64(seed)).unwrap()
    }

    /// Batch sizes follow Binomial(N, q) (mean, variance and a chi-square over size bins) and
    /// every example is included at rate q (no example over- or under-sampled).
    #[test]
    fn matches_independent_inclusion_at_rate_q() {
        let (n, batch) = (2_000usize, 40u32);
        check_independent_inclusion(sampler(n, batch, 11), n, batch);
    }

    /// The same with 16 blocks, the last one shorter: the counts of independent blocks add up
    /// to the Binomial(N, q) size and every example is still included at rate q.
    #[test]
    fn blocks_keep_independent_inclusion_at_rate_q() {
        let (n, batch) = (2_000usize, 40u32);
        let rate = f64::from(batch) / n as f64;
        let s = PoissonSampler::with_block(n, rate, ChaCha20Rng::seed_from_u64(12), 128).unwrap();
        check_independent_inclusion(s, n, batch);
    }

    fn check_independent_inclusion(mut s: PoissonSampler, n: usize, batch: u32) {
        let steps = 20_000usize;
        let q = f64::from(batch) / n as f64;
        let mut hits = vec![0u32; n];
        let mut sizes = Vec::with_capacity(steps);
        let mut idx = Vec::new();
        for _ in 0..steps {
            s.sample_into(&mut idx);
            assert!(idx.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
            for &i in &idx {
                hits[i as usize] += 1;
            }
            sizes.push(idx.len() as f64);
        }
        let mean = sizes.iter().sum::<f64>() / steps as f64;
        let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (steps - 1) as f64;
        let (bm, bv) = (n as f64 * q, n as f64 * q * (1.0 - q));
        // Standard errors: sqrt(bv / steps) ~ 0.044 for the mean, ~ bv*sqrt(2/steps) for var.
        assert!((mean - bm).abs() < 0.2, "mean batch {mean} vs {bm}");
        assert!(
            (var / bv - 1.0).abs() < 0.05,
            "batch variance {var} vs {bv}"
        );

        // Chi-square of batch sizes against the binomial pmf, bins with expected count >= 20.
        let pmf = |k: u64| -> f64 {
            let ln_choose = ln_gamma(n as f64 + 1.0)
                - ln_gamma(k as f64 + 1.0)
                - ln_gamma((n as u64 - k) as f64 + 1.0);
            (ln_choose + k as f64 * q.ln() + (n as u64 - k) as f64 * (1.0 - q).ln()).exp()
        };
        let mut counts = vec![0usize; n + 1];
        for &s in &sizes {
            counts[s as usize] += 1;
        }
        let (mut chi2, mut dof, mut rest_obs, mut rest_exp) = (0.0, 0i32, 0.0, 0.0);
        for (k, &count) in counts.iter().enumerate() {
            let e = pmf(k as u64) * steps as f64;
            if e >= 20.0 {
                chi2 += (count as f64 - e).powi(2) / e;
                dof += 1;
            } else {
                rest_obs += count as f64;
                rest_exp += e;
            }
        }
        chi2 += (rest_obs - rest_exp).powi(2) / rest_exp;
        // dof ~ 30 here; the 99.9% quantile of chi-square(30) is about 59.7.
        assert!(chi2 < 2.0 * dof as f64, "chi2 {chi2} with {dof} bins");

        // Per-example inclusion: each count ~ Binomial(steps, q), mean 400, sd ~ 19.8.
        let expected = steps as f64 * q;
        let worst = hits
            .iter()
            .map(|&h| (h as f64 - expected).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 5.0 * (expected * (1.0 - q)).sqrt(),
            "worst deviation {worst}"
        );
        let overall = hits.iter().map(|&h| h as f64).sum::<f64>() / (steps * n) as f64;
        assert!(
            (overall / q - 1.0).abs() < 0.005,
            "overall rate {overall} vs {q}"
        );
    }

    #[test]
    fn dense_rates_and_rate_one() {
        let mut s = sampler(100, 90, 3);
        let mut idx = Vec::new();
        let mut total = 0;
        for _ in 0..1000 {
            s.sample_into(&mut idx);
            assert!(idx.windows(2).all(|w| w[0] < w[1]) && idx.iter().all(|&i| i < 100));
            total += idx.len();
        }
        assert!((total as f64 / 1000.0 - 90.0).abs() < 0.5, "{total}");
        let mut s = sampler(10, 50, 3);
        assert_eq!(s.rate(), 1.0);
        s.sample_into(&mut idx);
        assert_eq!(idx, (0..10).collect::<Vec<i64>>());
    }

    #[test]
    fn same_seed_same_batches() {
        let (mut a, mut b) = (sampler(10_000, 64, 5), sampler(10_000, 64, 5));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            a.sample_into(&mut x);
            b.sample_into(&mut y);
            assert_eq!(x, y);
        }
    }

    #[test]
    fn radix_sort_sorts() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let mut scratch = Vec::new();
        for (len, n) in [
            (0, 10),
            (5, 10),
            (1000, 7),
            (4096, 959_811),
            (3000, 1 << 40),
        ] {
            let mut v: Vec<i64> = (0..len).map(|_| rng.random_range(0..n)).collect();
            let mut want = v.clone();
            want.sort_unstable();
            radix_sort(&mut v, n, &mut scratch);
            assert_eq!(v, want, "{len} values below {n}");
        }
    }

    /// Lanczos approximation, enough for the test's binomial pmf.
    fn ln_gamma(x: f64) -> f64 {
        const G: [f64; 9] = [
            0.999_999_999_999_809_9,
            676.520_368_121_885_1,
            -1_259.139_216_722_402_8,
            771.323_428_777_653_1,
            -176.615_029_162_140_6,
            12.507_343_278_686_905,
            -0.138_571_095_265_720_12,
            9.984_369_578_019_572e-6,
            1.505_632_735_149_311_6e-7,
        ];
        let x = x - 1.0;
        let mut a = G[0];
        let t = x + 7.5;
        for (i, g) in G.iter().enumerate().skip(1) {
            a += g / (x + i as f64);
        }
        0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
    }
}
