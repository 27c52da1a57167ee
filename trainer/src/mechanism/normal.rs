//! Standard normal draws from a cryptographic stream, fast: Marsaglia and Tsang's ziggurat
//! (2000, 128 layers) on 32-bit words generated in bulk.
//!
//! Each word gives one draw in 98.8% of cases: its low 7 bits pick the layer and the other 25
//! (disjoint from them, unlike the original RNOR, whose layer and value share bits) are a
//! signed 25-bit integer `j`; if `|j|` is under the layer's threshold the draw is `j * w_i`.
//! Otherwise the wedge or tail is sampled exactly (rejection with uniform doubles made of two
//! more words each). `rand_distr`'s `StandardNormal` spends a 64-bit word and a call into the
//! generator per draw; this spends a 32-bit word from a buffer, about twice as fast per draw on
//! ChaCha20, whose output is most of the cost. Resolution: within a layer the draws are spaced
//! `w_i = x_i / 2^24`, below `f32`'s spacing near the layer's edge `x_i` (the noise is `f32`).

use crate::mechanism::keystream::Words;

/// Layers of the ziggurat.
const LAYERS: usize = 128;
/// The start of the tail, `r`, for 128 layers.
const R: f64 = 3.442_619_855_899;
/// The area of each layer (and of the base strip with the tail), for 128 layers.
const V: f64 = 9.912_563_035_262_17e-3;
/// Scale of the signed 25-bit value: `|j| < 2^24`.
const M: f64 = 16_777_216.0;
/// Words generated per refill of the buffer (16 KiB).
const BUF: usize = 4096;

/// The ziggurat's tables, computed once.
#[derive(Debug, Clone)]
struct Tables {
    /// Threshold on `|j|` under which a draw is inside the layer's inner rectangle.
    k: [u32; LAYERS],
    /// `x_i / 2^24`: a draw's value per unit of `j`.
    w: [f64; LAYERS],
    /// `exp(-x_i^2 / 2)`.
    f: [f64; LAYERS],
}

impl Tables {
    fn new() -> Self {
        let mut k = [0u32; LAYERS];
        let mut w = [0f64; LAYERS];
        let mut f = [0f64; LAYERS];
        let mut dn = R;
        let mut tn = dn;
        let q = V / (-0.5 * dn * dn).exp();
        k[0] = ((dn / q) * M) as u32;
        k[1] = 0;
        w[0] = q / M;
        w[LAYERS - 1] = dn / M;
        f[0] = 1.0;
        f[LAYERS - 1] = (-0.5 * dn * dn).exp();
        for i in (1..LAYERS - 1).rev() {
            dn = (-2.0 * (V / dn + (-0.5 * dn * dn).exp()).ln()).sqrt();
            k[i + 1] = ((dn / tn) * M) as u32;
            tn = dn;
            f[i] = (-0.5 * dn * dn).exp();
            w[i] = dn / M;
        }
        Tables { k, w, f }
    }
}

/// Standard normal draws from the words of `G`, buffered.
#[derive(Debug, Clone)]
pub struct Ziggurat<G> {
    rng: G,
    tables: Box<Tables>,
    buf: Box<[u32; BUF]>,
    next: usize,
}

impl<G: Words> Ziggurat<G> {
    /// Draws from `rng`'s stream as it stands.
    pub fn new(rng: G) -> Self {
        Ziggurat {
            rng,
            tables: Box::new(Tables::new()),
            buf: Box::new([0; BUF]),
            next: BUF,
        }
    }

    /// The generator, to reposition its stream; call [`Ziggurat::discard`] after moving it.
    pub fn rng_mut(&mut self) -> &mut G {
        &mut self.rng
    }

    /// Forgets the buffered words, so the next draw reads the generator where it now stands.
    pub fn discard(&mut self) {
        self.next = BUF;
    }

    #[inline]
    fn word(&mut self) -> u32 {
        if self.next == BUF {
            self.rng.fill_words(&mut self.buf[..]);
            self.next = 0;
        }
        let w = self.buf[self.next];
        self.next += 1;
        w
    }

    /// Fills `out` with `(d1 + d2 + d3 + d4) * scale` as `f32`, `d1..d4` four consecutive
    /// draws each: the same values as [`Ziggurat::draw`] four times per value, with the common
    /// case (all four in their inner rectangles, 95%) read straight off the buffer.
    pub fn fill_sums_of_four(&mut self, out: &mut [f32], scale: f64) {
        let mut i = 0;
        while i < out.len() {
            let done = fast_sums(&self.tables, &self.buf[self.next..], &mut out[i..], scale);
            self.next += 4 * done;
            i += done;
            if i < out.len() {
                // A draw outside the inner rectangles, or the buffer's last few words.
                let s = self.draw() + self.draw() + self.draw() + self.draw();
                out[i] = (s * scale) as f32;
                i += 1;
            }
        }
    }

    /// A uniform double in (0, 1): 53 bits from two words, plus half a step.
    fn uniform(&mut self) -> f64 {
        let bits = (u64::from(self.word()) << 21) ^ u64::from(self.word() >> 11);
        (bits as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// One standard normal draw.
    #[inline]
    pub fn draw(&mut self) -> f64 {
        let word = self.word();
        let layer = (word & 0x7f) as usize;
        // The top 25 bits as a signed integer in [-2^24, 2^24).
        let j = (word as i32) >> 7;
        if j.unsigned_abs() < self.tables.k[layer] {
            return f64::from(j) * self.tables.w[layer];
        }
        self.slow(j, layer)
    }

    /// A draw outside the inner rectangles: the tail beyond `r`, or a wedge.
    #[cold]
    fn slow(&mut self, mut j: i32, mut layer: usize) -> f64 {
        loop {
            let x = f64::from(j) * self.tables.w[layer];
            if layer == 0 {
                // Marsaglia's tail method: the tail beyond r, exactly.
                loop {
                    let t = -self.uniform().ln() / R;
                    let y = -self.uniform().ln();
                    if y + y >= t * t {
                        return if j > 0 { R + t } else { -R - t };
                    }
                }
            }
            let (f_in, f_out) = (self.tables.f[layer], self.tables.f[layer - 1]);
            if f_in + self.uniform() * (f_out - f_in) < (-0.5 * x * x).exp() {
                return x;
            }
            let word = self.word();
            layer = (word & 0x7f) as usize;
            j = (word as i32) >> 7;
            if j.unsigned_abs() < self.tables.k[layer] {
                return f64::from(j) * self.tables.w[layer];
            }
        }
    }
}

/// Sums of four draws into `out` from `words` for as long as all four of a sum's words fall in
/// their layers' inner rectangles; returns the number of sums written (each used four words).
#[inline]
fn fast_sums(t: &Tables, words: &[u32], out: &mut [f32], scale: f64) -> usize {
    let mut done = 0;
    for (v, w) in out.iter_mut().zip(words.chunks_exact(4)) {
        let w: &[u32; 4] = w.try_into().expect("chunks of four");
        let layer = w.map(|w| (w & 0x7f) as usize);
        let j = w.map(|w| (w as i32) >> 7);
        let inner = (j[0].unsigned_abs() < t.k[layer[0]])
            & (j[1].unsigned_abs() < t.k[layer[1]])
            & (j[2].unsigned_abs() < t.k[layer[2]])
            & (j[3].unsigned_abs() < t.k[layer[3]]);
        if !inner {
            break;
        }
        let s = f64::from(j[0]) * t.w[layer[0]]
            + f64::from(j[1]) * t.w[layer[1]]
            + f64::from(j[2]) * t.w[layer[2]]
            + f64::from(j[3]) * t.w[layer[3]];
        *v = (s * scale) as f32;
        done += 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// The standard normal CDF (erfc by a Chebyshev fit with relative error < 1.2e-7,
    /// Numerical Recipes' `erfcc`).
    fn phi(x: f64) -> f64 {
        let z = x.abs() / std::f64::consts::SQRT_2;
        let t = 1.0 / (1.0 + 0.5 * z);
        let erfc = t
            * (-z * z - 1.265_512_23
                + t * (1.000_023_68
                    + t * (0.374_091_96
                        + t * (0.096_784_18
                            + t * (-0.186_288_06
                                + t * (0.278_868_07
                                    + t * (-1.135_203_98
                                        + t * (1.488_515_87
                                            + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
                .exp();
        if x >= 0.0 {
            1.0 - 0.5 * erfc
        } else {
            0.5 * erfc
        }
    }

    /// Moments, a Kolmogorov-Smirnov and an Anderson-Darling test against N(0, 1), and the
    /// tail frequencies, over `draws`.
    fn check_standard_normal(draws: &mut [f64], what: &str) {
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let m = |p: i32| draws.iter().map(|x| (x - mean).powi(p)).sum::<f64>() / n;
        let (var, m3, m4) = (m(2), m(3), m(4));
        let (skew, kurt) = (m3 / var.powf(1.5), m4 / (var * var));
        // Standard errors at n = 4M: mean 5e-4, var 7e-4, skewness 1.2e-3, kurtosis 2.4e-3;
        // bounds at about 5 of them.
        assert!(mean.abs() < 2.5e-3, "{what}: mean {mean}");
        assert!((var - 1.0).abs() < 3.5e-3, "{what}: variance {var}");
        assert!(skew.abs() < 6e-3, "{what}: skewness {skew}");
        assert!((kurt - 3.0).abs() < 1.2e-2, "{what}: kurtosis {kurt}");
        draws.sort_unstable_by(f64::total_cmp);
        let (mut ks, mut ad) = (0.0f64, 0.0f64);
        for (i, &x) in draws.iter().enumerate() {
            let c = phi(x).max(1e-300);
            let i = i as f64;
            ks = ks.max((c - i / n).abs()).max(((i + 1.0) / n - c).abs());
            // 1 - F(x_(n-i)) as F(-x_(n-i)), which keeps its digits in the upper tail.
            let upper = phi(-draws[draws.len() - 1 - i as usize]).max(1e-300);
            ad += (2.0 * i + 1.0) * (c.ln() + upper.ln());
        }
        let ad = -n - ad / n;
        // KS: sqrt(n) D has the Kolmogorov distribution, whose 99.9% quantile is 1.95. AD:
        // the 99.9% quantile of A^2 for a fully specified distribution is about 5.97. The CDF
        // approximation's error (~1e-7) is far below the KS resolution 1/sqrt(n) = 5e-4.
        assert!(
            ks * n.sqrt() < 1.95,
            "{what}: KS sqrt(n) D = {}",
            ks * n.sqrt()
        );
        assert!(ad < 5.97, "{what}: Anderson-Darling A^2 = {ad}");
        // The tails beyond r = 3.44 (the ziggurat's tail path) and 4.5, both sides.
        for t in [R, 4.5] {
            let expected = 2.0 * (1.0 - phi(t)) * n;
            let got = draws.iter().filter(|x| x.abs() > t).count() as f64;
            assert!(
                (got - expected).abs() < 5.0 * expected.sqrt() + 2.0,
                "{what}: {got} draws beyond +-{t}, expected {expected}"
            );
        }
    }

    #[test]
    fn draws_are_standard_normal() {
        let mut z = Ziggurat::new(ChaCha20Rng::seed_from_u64(7));
        let mut draws: Vec<f64> = (0..4_000_000).map(|_| z.draw()).collect();
        check_standard_normal(&mut draws, "one draw");
        // The noise's construction: the sum of four draws over 2 is again N(0, 1).
        let mut sums: Vec<f64> = (0..4_000_000)
            .map(|_| 0.5 * (z.draw() + z.draw() + z.draw() + z.draw()))
            .collect();
        check_standard_normal(&mut sums, "sum of four over 2");
    }

    /// The ziggurat's tables describe layers of equal area V under exp(-x^2 / 2), ending at r.
    #[test]
    fn tables_are_consistent() {
        let t = Tables::new();
        for i in 1..LAYERS - 1 {
            let (x_in, x_out) = (t.w[i] * M, t.w[i + 1] * M);
            let area = x_out * (t.f[i] - t.f[i + 1]);
            assert!((area - V).abs() < 1e-9, "layer {i}: area {area}");
            assert!(x_in < x_out);
        }
        // The top layer ends at the mode: its inner edge x_1 has f(x_1) + V / x_1 = 1.
        let x1 = t.w[1] * M;
        assert!((t.f[1] + V / x1 - 1.0).abs() < 1e-6, "{}", t.f[1] + V / x1);
    }

    /// The bulk sums are bit for bit the one-by-one draws', across buffer refills, slow
    /// draws and lengths that do not divide the buffer.
    #[test]
    fn bulk_sums_of_four_equal_draws_one_by_one() {
        for seed in 0..8 {
            let mut a = Ziggurat::new(ChaCha20Rng::seed_from_u64(seed));
            let mut b = Ziggurat::new(ChaCha20Rng::seed_from_u64(seed));
            for len in [1, 551, 3001, 7, 20_000] {
                let want: Vec<f32> = (0..len)
                    .map(|_| ((a.draw() + a.draw() + a.draw() + a.draw()) * 0.37) as f32)
                    .collect();
                let mut got = vec![0f32; len];
                b.fill_sums_of_four(&mut got, 0.37);
                let same = want
                    .iter()
                    .zip(&got)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "seed {seed}, {len} values");
            }
        }
    }

    #[test]
    fn same_stream_same_draws() {
        let mut a = Ziggurat::new(ChaCha20Rng::seed_from_u64(3));
        let mut b = Ziggurat::new(ChaCha20Rng::seed_from_u64(3));
        let x: Vec<f64> = (0..10_000).map(|_| a.draw()).collect();
        let y: Vec<f64> = (0..10_000).map(|_| b.draw()).collect();
        assert_eq!(x, y);
        let mut c = Ziggurat::new(ChaCha20Rng::seed_from_u64(4));
        assert_ne!(x[..8], (0..8).map(|_| c.draw()).collect::<Vec<_>>()[..]);
    }
}
