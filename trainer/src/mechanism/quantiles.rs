//! DP quantiles by the exponential mechanism over a public grid of candidates (Smith 2011, as
//! OpenDP's `make_private_quantile`): the bounds, centre and scale of the columns a run was
//! given no public bounds for. Pure functions of the counts and a random stream, no I/O.
//!
//! **The mechanism.** For a quantile alpha in (0, 1) and sorted public candidates
//! `c_1 < ... < c_m` ([`grid`]), the score of candidate `c` on the values `x` (clamped to
//! `[c_1, c_m]`) counts how many values lie on the wrong side of it ([`scores`]: OpenDP's
//! `|(1 - alpha) #{x < c} - alpha #{x > c}|`, made exact at ties), 0 at the quantile. Adding or
//! removing one privacy unit with at most K rows moves it by at most `K max(alpha, 1 - alpha)`
//! =: Delta, whatever the other rows (the score needs no count n, which add/remove neighbours
//! differ in). The mechanism releases candidate `c` with probability proportional to
//! `exp(-epsilon score(c) / (2 Delta))`: epsilon-DP, and epsilon-bounded range (its privacy loss
//! spans at most epsilon over the candidates), which the accountant composes
//! ([`accountant::Releases`]). It is sampled as the argmax of `-epsilon score / (2 Delta)` plus
//! standard Gumbel noise, one draw per candidate (the Gumbel-max trick), from a ChaCha20 stream
//! keyed by the run's seed or by the operating system.
//!
//! **What it costs and what it gives.** Each quantile is one mechanism of the declared epsilon;
//! a column takes two (its low and high quantiles), whatever its values. The score is within
//! about `2 Delta ln(m) / epsilon` of the best (Smith 2011): 380 rows at epsilon 0.05 and
//! m = 23,401 for alpha near 0 or 1, small next to a census' tens of thousands of rows. Past the
//! data's ends every candidate scores `min(alpha, 1 - alpha) n`, so a tail quantile needs that
//! well above the same margin ([`DEFAULT_QUANTILES`]).

use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::config::NoiseRng;
use crate::{Error, Result};

/// The public candidates: 0 and every `+-k 10^e` with three significant digits (`k` in
/// 100..=999) from 0.001 to 9.99e9, sorted: 23,401 values, every integer up to 999 among them,
/// each within 1% of the next (so codes such as 1101..1107 or years 1990..2020 keep their
/// spread). A value outside the grid counts as its end.
pub fn grid() -> Vec<f64> {
    let mut positive = Vec::with_capacity(900 * 13);
    for e in -5i32..=7 {
        for k in 100..=999u32 {
            let v = if e < 0 {
                f64::from(k) / 10f64.powi(-e)
            } else {
                f64::from(k) * 10f64.powi(e)
            };
            positive.push(v);
        }
    }
    let mut all: Vec<f64> = positive.iter().rev().map(|v| -v).collect();
    all.push(0.0);
    all.extend(positive);
    all
}

/// How many of a column's values fall on each candidate of [`grid`] (compared as `f32`, the
/// values' own type), each value counted at its nearest candidate (the lower one at a tie;
/// beyond the grid, its end): the mechanism's input, summed over every worker's training rows.
/// Snapping is a function of each value alone, so one unit still moves the counts by at most
/// its rows; without it the values of a column that all lie between two neighbouring
/// candidates (codes 1101 to 1107 between 1100 and 1110) would score every candidate on one
/// side alike.
pub fn counts(values: impl Iterator<Item = f32>, candidates: &[f32]) -> Vec<u64> {
    let mut counts = vec![0u64; candidates.len()];
    let mut snap = Snap::new(candidates);
    for x in values {
        counts[snap.at(x)] += 1;
    }
    counts
}

/// [`counts`] of each column `cols` of `rows`, in one pass over the rows (a pass per column
/// would read a million rows' table once per column).
pub fn column_counts<'r>(
    rows: impl Iterator<Item = &'r [f32]>,
    cols: &[usize],
    candidates: &[f32],
) -> Vec<Vec<u64>> {
    let mut counts = vec![vec![0u64; candidates.len()]; cols.len()];
    let mut snaps = vec![Snap::new(candidates); cols.len()];
    for row in rows {
        for ((counts, snap), &j) in counts.iter_mut().zip(&mut snaps).zip(cols) {
            counts[snap.at(row[j])] += 1;
        }
    }
    counts
}

/// [`nearest`] with a memory: a census column repeats a few values a million times, so each
/// value's candidate is remembered by its bits in a small direct-mapped table (a pure function
/// of the bits, so the counts are the same), where a binary search of the 23,401 candidates per
/// value took longer than a training epoch.
#[derive(Clone)]
struct Snap<'a> {
    candidates: &'a [f32],
    memo: [Option<(u32, usize)>; 256],
}

impl<'a> Snap<'a> {
    fn new(candidates: &'a [f32]) -> Self {
        Snap {
            candidates,
            memo: [None; 256],
        }
    }

    #[inline]
    fn at(&mut self, x: f32) -> usize {
        let slot = (x.to_bits().wrapping_mul(0x9e37_79b1) >> 24) as usize;
        match self.memo[slot] {
            Some((bits, at)) if bits == x.to_bits() => at,
            _ => {
                let at = nearest(x, self.candidates);
                self.memo[slot] = Some((x.to_bits(), at));
                at
            }
        }
    }
}

/// The candidate `x` counts at ([`counts`]' rule): its nearest (the lower one at a tie), the
/// grid's end beyond it.
fn nearest(x: f32, candidates: &[f32]) -> usize {
    let last = candidates.len() - 1;
    match candidates.binary_search_by(|c| c.total_cmp(&x)) {
        Ok(i) => i,
        Err(0) => 0,
        Err(i) if i > last => last,
        Err(i) => {
            let (below, above) = (f64::from(candidates[i - 1]), f64::from(candidates[i]));
            let x = f64::from(x);
            if above - x < x - below { i } else { i - 1 }
        }
    }
}

/// The scores of every candidate for quantile `alpha`, from [`counts`]: with `L`, `E`, `G` the
/// numbers of values below, at and above candidate `c`, `max((1 - alpha) L - alpha (E + G),
/// alpha G - (1 - alpha) (L + E), 0)`: 0 exactly when `c` is an alpha-quantile (at most a share
/// alpha of the values below it, at most 1 - alpha above), growing with how many values lie on
/// the wrong side. Without ties (`E = 0`) it is OpenDP's `|(1 - alpha) L - alpha G|`; with them
/// (a 0/1 column) the value the ties sit on scores 0 rather than `(1 - alpha) L`. Adding one
/// value adds 1 to one of `L`, `E`, `G`, which moves each of the two terms by at most
/// `max(alpha, 1 - alpha)` and so their maximum with 0 too.
pub fn scores(counts: &[u64], alpha: f64) -> Vec<f64> {
    let n: u64 = counts.iter().sum();
    let mut below = 0u64;
    let mut out = Vec::with_capacity(counts.len());
    for &at in counts {
        let (l, e, g) = (below as f64, at as f64, (n - below - at) as f64);
        let low = (1.0 - alpha) * l - alpha * (e + g);
        let high = alpha * g - (1.0 - alpha) * (l + e);
        out.push(low.max(high).max(0.0));
        below += at;
    }
    out
}

/// The score's sensitivity for quantile `alpha` when one privacy unit has at most
/// `rows_per_unit` rows: `K max(alpha, 1 - alpha)`.
pub fn sensitivity(alpha: f64, rows_per_unit: u32) -> f64 {
    f64::from(rows_per_unit) * alpha.max(1.0 - alpha)
}

/// The exponential mechanism's choice among `scores` (lower is better) at `epsilon` with
/// sensitivity `delta_score`: the index maximizing `-epsilon score / (2 Delta) + G`, `G` standard
/// Gumbel draws from `rng` (ties in the noisy values, probability 0, to the first).
pub fn select(scores: &[f64], epsilon: f64, delta_score: f64, rng: &mut impl Rng) -> usize {
    let scale = epsilon / (2.0 * delta_score);
    let mut best = (f64::NEG_INFINITY, 0);
    for (i, s) in scores.iter().enumerate() {
        // U in (0, 1): 53 random bits, never 0.
        let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let gumbel = -(-u.ln()).ln();
        let v = -scale * s + gumbel;
        if v > best.0 {
            best = (v, i);
        }
    }
    best.1
}

/// The random stream of a run's quantiles: keyed by the seed (mixed with the run's settings by
/// the caller, as the noise is) on a stream of its own, or by the operating system.
pub fn rng(kind: NoiseRng) -> Result<ChaCha20Rng> {
    match kind {
        NoiseRng::Seeded(seed) => {
            let mut rng =
                ChaCha20Rng::seed_from_u64(shards::splitmix64(seed ^ 0x7175_616e_7469_6c65));
            rng.set_stream(1);
            Ok(rng)
        }
        NoiseRng::Os => ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|e| Error::Config(format!("no OS entropy for the quantiles' key: {e}"))),
    }
}

/// The quantiles a bounded column releases, and what the model's input is made of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantileSpec {
    /// The low quantile (the lower bound).
    pub low: f64,
    /// The high quantile (the upper bound).
    pub high: f64,
    /// Each quantile's exponential mechanism is epsilon-DP at this epsilon.
    pub epsilon: f64,
}

/// The default [`QuantileSpec`]: the 5th and 95th percentiles, each at epsilon 0.05. Beyond the
/// data every candidate scores `min(alpha, 1 - alpha) n`, so the mechanism tells the tail
/// quantile from the ~10,000 candidates past the data's ends only when `epsilon min(alpha, 1 -
/// alpha) n / (2 Delta)` is well above `ln 10000` (9.2): 26 nats for the 5th percentile of
/// 20,000 rows at epsilon 0.05, but 5 for the 1st (which then lands anywhere past the data).
pub const DEFAULT_QUANTILES: QuantileSpec = QuantileSpec {
    low: 0.05,
    high: 0.95,
    epsilon: 0.05,
};

impl QuantileSpec {
    /// Checks the quantiles (0 < low < high < 1) and the epsilon (finite, positive).
    pub fn validate(&self) -> Result<()> {
        if !(0.0 < self.low && self.low < self.high && self.high < 1.0) {
            return Err(Error::Config(format!(
                "--bounds-quantiles {}:{} must satisfy 0 < low < high < 1",
                self.low, self.high
            )));
        }
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(Error::Config(format!(
                "--bounds-epsilon {} must be finite and positive",
                self.epsilon
            )));
        }
        Ok(())
    }
}

/// A column's released bounds, from its two quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedBounds {
    /// The column.
    pub name: String,
    /// The low quantile's released candidate.
    pub lo: f64,
    /// The high quantile's released candidate.
    pub hi: f64,
}

impl ReleasedBounds {
    /// Whether the column is used as it is: both bounds within [0, 1] (a 0/1 or fraction
    /// column), a decision made from the released bounds alone.
    pub fn as_is(&self) -> bool {
        self.lo >= 0.0 && self.hi <= 1.0
    }
}

/// Releases the bounds of every column from its `counts` ([`counts`] over every worker's
/// training rows, one vector per column, in `names` order), two quantiles each, with `rng`.
pub fn release(
    names: &[String],
    counts: &[Vec<u64>],
    spec: QuantileSpec,
    rows_per_unit: u32,
    rng: &mut impl Rng,
) -> Vec<ReleasedBounds> {
    let candidates = grid();
    names
        .iter()
        .zip(counts)
        .map(|(name, c)| {
            let mut pick = |alpha: f64| {
                let s = scores(c, alpha);
                candidates[select(&s, spec.epsilon, sensitivity(alpha, rows_per_unit), rng)]
            };
            let lo = pick(spec.low);
            let hi = pick(spec.high);
            // The two are released as drawn; the bounds are their order (post-processing).
            ReleasedBounds {
                name: name.clone(),
                lo: lo.min(hi),
                hi: lo.max(hi),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid32() -> Vec<f32> {
        grid().iter().map(|&c| c as f32).collect()
    }

    #[test]
    fn the_grid_is_public_sorted_and_covers_integer_codes() {
        let g = grid();
        assert_eq!(g.len(), 23_401);
        assert!(g.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(g[11_700], 0.0);
        for v in 1..=999 {
            assert!(g.contains(&f64::from(v)), "{v}");
        }
        for v in [0.5, 0.01, 0.001, 1100.0, 1990.0, 2020.0, 9.99e9, -45.0] {
            assert!(g.contains(&v), "{v}");
        }
        let g32 = grid32();
        assert!(g32.windows(2).all(|w| w[0] < w[1]), "distinct as f32 too");
    }

    /// Counts put each value on its candidate or between two, the ends taking what is beyond;
    /// scores are lowest at the quantile and move by at most the sensitivity when a value is
    /// added.
    /// The remembered candidates give the counts of a binary search per value: repeated values
    /// (0/1 columns), values whose bits share a table slot, every value distinct, and the odd
    /// ones (NaN, infinities, -0, beyond the grid).
    #[test]
    fn remembered_candidates_count_as_a_search_per_value() {
        let g = grid32();
        let plain = |values: &[f32]| {
            let mut c = vec![0u64; g.len()];
            for &x in values {
                c[nearest(x, &g)] += 1;
            }
            c
        };
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let zero_one: Vec<f32> = (0..5000).map(|_| (next() % 2) as f32).collect();
        let codes: Vec<f32> = (0..5000).map(|_| (next() % 3000) as f32).collect();
        let wide: Vec<f32> = (0..5000)
            .map(|_| f32::from_bits((next() >> 32) as u32))
            .filter(|x| x.is_finite())
            .collect();
        let odd = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1e12,
            -1e12,
            1e-9,
            1105.0,
        ];
        let odd: Vec<f32> = odd.iter().cycle().take(1000).copied().collect();
        for values in [&zero_one, &codes, &wide, &odd] {
            assert_eq!(counts(values.iter().copied(), &g), plain(values));
        }
    }

    #[test]
    fn counts_and_scores() {
        let c = [0.0f32, 1.0, 2.0];
        let few = counts([0.4f32, 0.5, 0.6, 1.0, 7.0, -3.0].into_iter(), &c);
        // -3 -> 0, 0.4 -> 0, 0.5 -> 0 (a tie), 0.6 -> 1, 1, 7 -> 2.
        assert_eq!(few, [3, 2, 1]);
        // Median: 0 or 1 (3 at 0, 2 at 1, 1 above).
        let s = scores(&few, 0.5);
        assert_eq!(s, [0.0, 0.0, 2.0]);
        // Codes between two candidates snap to the nearer.
        let g = grid32();
        let pumas = counts((1101..=1107).map(|v| v as f32), &g);
        let at = |v: f32| g.iter().position(|&c| c == v).unwrap();
        assert_eq!(
            (pumas[at(1100.0)], pumas[at(1110.0)]),
            (5, 2),
            "1105 is a tie"
        );
        assert_eq!(pumas.iter().sum::<u64>(), 7);
        // A 0/1 column with 14% ones: its 95th percentile is 1, which scores 0; anything above
        // 1 scores 5% of the rows.
        let ones = counts(
            (0..100).map(|i| f32::from(u8::from(i < 14))),
            &[0.0, 0.5, 1.0, 2.0],
        );
        let got = scores(&ones, 0.95);
        for (g, w) in got.iter().zip([9.0, 9.0, 0.0, 5.0]) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
        let g = grid32();
        let values: Vec<f32> = (0..1000).map(|i| i as f32 / 10.0).collect();
        let base = counts(values.iter().copied(), &g);
        for added in [-5.0f32, 0.0, 33.3, 50.0, 1e12] {
            let more = counts(values.iter().copied().chain([added]), &g);
            for alpha in [0.01, 0.5, 0.99] {
                let (a, b) = (scores(&base, alpha), scores(&more, alpha));
                let moved = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                assert!(
                    moved <= sensitivity(alpha, 1) + 1e-9,
                    "{added} {alpha}: {moved}"
                );
            }
        }
        let s = scores(&base, 0.5);
        let best = s
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert!(
            (g[best] - 50.0).abs() <= 0.5,
            "median of 0..99.9 is near 50: {}",
            g[best]
        );
    }

    /// One pass over the rows counts each column as a pass over that column does.
    #[test]
    fn column_counts_are_each_columns_counts() {
        let g = grid32();
        let k = 3;
        let table: Vec<f32> = (0..30_000u32)
            .flat_map(|i| {
                [
                    f32::from(u8::from(i % 3 == 0)),
                    18.0 + (i % 83) as f32 + 0.25 * (i % 4) as f32,
                    -1e11 + (i % 5) as f32 * 1e11,
                ]
            })
            .collect();
        let cols = [2, 0, 1];
        let together = column_counts(table.chunks_exact(k), &cols, &g);
        for (c, &j) in together.iter().zip(&cols) {
            let alone = counts(table.chunks_exact(k).map(|r| r[j]), &g);
            assert_eq!(*c, alone, "column {j}");
            assert_eq!(c.iter().sum::<u64>(), 30_000);
        }
    }

    /// A column whose codes all lie between two candidates still gets bounds at them.
    #[test]
    fn codes_between_candidates_get_the_nearest_bounds() {
        let g = grid32();
        let pumas: Vec<f32> = (0..20_000).map(|i| 1101.0 + (i % 7) as f32).collect();
        let counted = [counts(pumas.iter().copied(), &g)];
        let mut rng = rng(NoiseRng::Seeded(1)).unwrap();
        let b = release(&["puma".into()], &counted, DEFAULT_QUANTILES, 1, &mut rng);
        assert_eq!((b[0].lo, b[0].hi), (1100.0, 1110.0), "{b:?}");
    }

    /// The mechanism's output distribution is the exponential mechanism's: on three candidates
    /// the frequencies over 60,000 draws match exp(-epsilon score / (2 Delta)) normalized.
    #[test]
    fn selection_follows_the_exponential_mechanism() {
        let scores = [0.0, 1.0, 3.0];
        let (eps, sens) = (2.0f64, 1.0f64);
        let w: Vec<f64> = scores
            .iter()
            .map(|s| (-eps * s / (2.0 * sens)).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let n = 60_000;
        let mut hits = [0usize; 3];
        for _ in 0..n {
            hits[select(&scores, eps, sens, &mut rng)] += 1;
        }
        for i in 0..3 {
            let p = w[i] / total;
            let got = hits[i] as f64 / n as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() < 5.0 * se, "candidate {i}: {got} vs {p}");
        }
    }

    /// On 20,000 ages the released bounds land near the 5th and 95th percentiles (22 and 93); a
    /// 0/1 column is used as it is; the same seed replays the release.
    #[test]
    fn releases_bounds_near_the_quantiles() {
        let g = grid32();
        let ages: Vec<f32> = (0..20_000).map(|i| 18.0 + (i % 80) as f32).collect();
        let ones: Vec<f32> = (0..20_000)
            .map(|i| f32::from(u8::from(i % 7 == 0)))
            .collect();
        let counted = [
            counts(ages.iter().copied(), &g),
            counts(ones.iter().copied(), &g),
        ];
        let names = ["age".to_string(), "flag".to_string()];
        let mut rng = rng(NoiseRng::Seeded(3)).unwrap();
        let b = release(&names, &counted, DEFAULT_QUANTILES, 1, &mut rng);
        assert!((20.0..=24.0).contains(&b[0].lo), "{b:?}");
        assert!((91.0..=95.0).contains(&b[0].hi), "{b:?}");
        assert!(!b[0].as_is() && b[1].as_is(), "{b:?}");
        let mut again = super::rng(NoiseRng::Seeded(3)).unwrap();
        assert_eq!(
            release(&names, &counted, DEFAULT_QUANTILES, 1, &mut again),
            b
        );
    }
}
