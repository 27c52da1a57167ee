//! Gradient canaries' codes on the quiet coordinates, and their scores from what the step
//! leaves there each step (the white-box auditor's view: Nasr et al. 2023).
//!
//! Canary i's gradient is `R C u_i` (R large: every clip bound the step may use cuts it to its
//! own norm), `u_i` a unit vector over the d quiet coordinates: a coordinate of its own when
//! there are at most as many canaries as quiet coordinates, else `w` coordinates with random
//! signs (`+-1 / sqrt(w)`). Codes that share coordinates let canaries see each other
//! (`E <u_i, u_j>^2 = 1 / d`): that costs power, never validity, because the guarantee being
//! tested holds for each canary's inclusion whatever the other canaries are, and the score is a
//! function of the mechanism's output and of the codes, fixed before the run.
//!
//! Per step the auditor reads the quiet coordinates, in units of one clipped canary (times
//! `B / C`): `y_t = sum of the drawn included canaries' u_j + N(0, sigma^2 I)`.
//! - [`ScoreKind::Llr`]: per canary, the log-likelihood ratio over all steps of "included at
//!   rate q" against "never included", the optimal test for the Poisson-subsampled Gaussian
//!   mechanism the accountant composes: `sum_t ln(1 - q + q exp((x_t - 1/2) / v))` with
//!   `x_t = <y_t, u_i>` and v the noise variance. With many canaries per quiet coordinate the
//!   steps are taken in windows of K (the sum of a window's `y_t` is one observation; the
//!   canary is in it n ~ Binomial(K, q) times), so that scoring costs per step about what
//!   the quiet coordinates' noise does; K = 1 is the per-step test. The other canaries' share
//!   of `x` is counted as noise of variance `q (m / 2) / d` per step.
//! - [`ScoreKind::Sum`]: `<sum_t y_t, u_i>`, what the final model's audit parameters hold
//!   under plain SGD (the score before per-step scores): it ignores which steps carry the
//!   signal, so at q < 1 it adds the noise of every step to the canary's few.

use std::fmt;

use rand::RngExt;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

/// How gradient canaries are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScoreKind {
    /// The log-likelihood ratio of each step's (or window's) observation, summed over steps.
    Llr,
    /// The sum over steps of the observation (the final model under plain SGD).
    Sum,
}

impl fmt::Display for ScoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScoreKind::Llr => "llr",
            ScoreKind::Sum => "sum",
        })
    }
}

/// Nonzero coordinates of a canary's code when canaries share the quiet coordinates.
pub const CODE_WIDTH: usize = 8;

/// The canaries' unit vectors over the quiet coordinates.
#[derive(Debug, Clone)]
pub struct Codes {
    quiet: usize,
    width: usize,
    /// `width` coordinates per canary.
    coords: Vec<u32>,
    /// `width` values per canary, `+-1 / sqrt(width)`.
    values: Vec<f32>,
}

impl Codes {
    /// Codes for `m` canaries over `quiet` coordinates: canary i on coordinate i when
    /// `m <= quiet`, else [`CODE_WIDTH`] distinct coordinates with random signs each, from `rng`.
    pub fn new(m: usize, quiet: usize, rng: &mut ChaCha20Rng) -> Self {
        assert!(quiet > 0, "at least one quiet coordinate");
        if m <= quiet {
            return Codes {
                quiet,
                width: 1,
                coords: (0..m as u32).collect(),
                values: vec![1.0; m],
            };
        }
        let width = CODE_WIDTH.min(quiet);
        let value = (1.0 / (width as f64).sqrt()) as f32;
        let mut coords = Vec::with_capacity(m * width);
        let mut values = Vec::with_capacity(m * width);
        for _ in 0..m {
            let from = coords.len();
            while coords.len() < from + width {
                let c = rng.random_range(0..quiet as u32);
                if !coords[from..].contains(&c) {
                    coords.push(c);
                    values.push(if rng.random_bool(0.5) { value } else { -value });
                }
            }
        }
        Codes {
            quiet,
            width,
            coords,
            values,
        }
    }

    /// Number of canaries.
    pub fn len(&self) -> usize {
        self.coords.len() / self.width
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }

    /// Quiet coordinates.
    pub fn quiet(&self) -> usize {
        self.quiet
    }

    /// Nonzero coordinates per code.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Whether every canary has a coordinate of its own.
    pub fn distinct(&self) -> bool {
        self.width == 1
    }

    /// `E <u_i, u_j>^2` for two canaries: 0 on distinct coordinates, `1 / d` for random codes.
    pub fn cross_talk(&self) -> f64 {
        if self.distinct() {
            0.0
        } else {
            1.0 / self.quiet as f64
        }
    }

    /// Canary i's coordinates and values.
    pub fn code(&self, i: usize) -> (&[u32], &[f32]) {
        let at = i * self.width..(i + 1) * self.width;
        (&self.coords[at.clone()], &self.values[at])
    }

    /// `<y, u_i>` for every canary, added to `out` through `f`.
    fn project(&self, y: &[f64], mut f: impl FnMut(usize, f64)) {
        if self.distinct() {
            for (i, &c) in self.coords.iter().enumerate() {
                f(i, y[c as usize]);
            }
            return;
        }
        for (i, (cs, vs)) in self
            .coords
            .chunks_exact(self.width)
            .zip(self.values.chunks_exact(self.width))
            .enumerate()
        {
            let x: f64 = cs
                .iter()
                .zip(vs)
                .map(|(&c, &v)| y[c as usize] * f64::from(v))
                .sum();
            f(i, x);
        }
    }
}

/// The smallest variance a window's observation is modelled with (a run without noise and
/// canaries on coordinates of their own has none): `1e-6` per step, in units of one canary.
const VARIANCE_FLOOR: f64 = 1e-6;

/// The log-likelihood ratio of one window's observation `x` (in units of one canary): "the
/// canary is in the window n ~ Binomial(k, q) times" against "never", with Gaussian noise of
/// variance `v`: `ln sum_n Binomial(n; k, q) exp((n x - n^2 / 2) / v)`.
#[derive(Debug, Clone)]
struct WindowLlr {
    /// `ln Binomial(n; k, q) - n^2 / (2 v)` for n = 0..=k (the n-th term's log is
    /// `a[n] + n x / v`).
    a: Vec<f64>,
    /// `1 / v`.
    inv_v: f64,
    /// q = 1: the canary is in every step, and the ratio is linear in x.
    every_step: bool,
    /// The window's noise variance v.
    variance: f64,
    /// The fast form for `x / v <= u_max`: `a[0] + ln(1 + sum_{n=1..} c[n - 1] e^(n x / v))`,
    /// with `c[n - 1] = e^(a[n] - a[0])` for the terms that can matter there (every one left
    /// out is below e^-40 of the largest), and no term's exponent above 700.
    c: Vec<f64>,
    u_max: f64,
}

impl WindowLlr {
    fn new(k: usize, q: f64, v: f64) -> Self {
        let every_step = q >= 1.0;
        let (lq, lp) = ((-q).ln_1p(), q.ln());
        let mut a = Vec::with_capacity(k + 1);
        let mut log_choose = 0.0f64;
        for n in 0..=k {
            if n > 0 {
                log_choose += ((k - n + 1) as f64).ln() - (n as f64).ln();
            }
            let lb = if every_step {
                if n == k { 0.0 } else { f64::NEG_INFINITY }
            } else {
                log_choose + n as f64 * lp + (k - n) as f64 * lq
            };
            let n = n as f64;
            a.push(lb - n * n / (2.0 * v));
        }
        // The largest u = x / v the fast form takes: past every plausible observation (all k
        // copies and ten standard deviations), and without overflow...
        let plausible = (k as f64 + 10.0 * v.sqrt() + 1.0) / v;
        let u_max = (1..=k)
            .map(|n| (700.0 - (a[n] - a[0])) / n as f64)
            .fold(plausible.min(30.0), f64::min);
        // ... and the terms that matter up to it (log-concave in n: past the largest, they only
        // fall).
        let mut c = Vec::new();
        let mut best = 0.0f64;
        for n in 1..=k {
            let t = a[n] - a[0] + n as f64 * u_max;
            if t < best - 40.0 && n > 1 && t < a[n - 1] - a[0] + (n - 1) as f64 * u_max {
                break;
            }
            best = best.max(t);
            c.push((a[n] - a[0]).exp());
        }
        WindowLlr {
            a,
            inv_v: 1.0 / v,
            every_step,
            variance: v,
            c,
            u_max,
        }
    }

    fn eval(&self, x: f64) -> f64 {
        let u = x * self.inv_v;
        if self.every_step {
            let k = self.a.len() - 1;
            return self.a[k] + k as f64 * u;
        }
        if u <= self.u_max {
            // Term n is c[n - 1] z^n; they rise to a peak and then fall (log-concave), so the sum
            // stops at the first term past the peak below 1e-17 of what has been added.
            let z = u.exp();
            let (mut sum, mut zn, mut prev) = (0.0f64, 1.0f64, 0.0f64);
            for &c in &self.c {
                zn *= z;
                let t = c * zn;
                sum += t;
                if t < prev && t < 1e-17 * (1.0 + sum) {
                    break;
                }
                prev = t;
            }
            return self.a[0] + ln_1p_small(sum);
        }
        self.eval_exact(u)
    }

    /// `scores[i] += ` the ratio at `xs[i]`, for a window's canaries: the fast form with as
    /// many terms as the largest observation needs (the same count for every canary, so the
    /// canaries' sums run side by side), the term-by-term sum past `u_max`.
    fn add_all(&self, xs: &[f64], scores: &mut [f64]) {
        if self.every_step {
            for (s, &x) in scores.iter_mut().zip(xs) {
                *s += self.eval(x);
            }
            return;
        }
        let u_hi = xs
            .iter()
            .map(|x| x * self.inv_v)
            .filter(|&u| u <= self.u_max)
            .fold(f64::NEG_INFINITY, f64::max);
        // Terms needed at the largest u (fewer at any smaller one): up to the first past the
        // peak below 1e-17 of the sum.
        let z_hi = u_hi.exp();
        let (mut sum, mut zn, mut prev, mut n) = (0.0f64, 1.0f64, 0.0f64, 0);
        for &c in &self.c {
            zn *= z_hi;
            let t = c * zn;
            sum += t;
            n += 1;
            if t < prev && t < 1e-17 * (1.0 + sum) {
                break;
            }
            prev = t;
        }
        let c = &self.c[..n];
        for (s, &x) in scores.iter_mut().zip(xs) {
            let u = x * self.inv_v;
            *s += if u <= self.u_max {
                let z = u.exp();
                let sum = c.iter().rev().fold(0.0, |acc, &c| (acc + c) * z);
                self.a[0] + ln_1p_small(sum)
            } else {
                self.eval_exact(u)
            };
        }
    }

    /// `ln sum_n exp(a[n] + n u)` term by term, in log space: the terms are log-concave in n,
    /// so the sum stops once they fall and are below e^-40 of the largest.
    fn eval_exact(&self, u: f64) -> f64 {
        let mut best = self.a[0];
        let mut sum = 1.0f64;
        let mut prev = best;
        for (n, a) in self.a.iter().enumerate().skip(1) {
            let t = a + n as f64 * u;
            if t > best {
                sum = sum * (best - t).exp() + 1.0;
                best = t;
            } else {
                sum += (t - best).exp();
                if t < prev && t < best - 40.0 {
                    break;
                }
            }
            prev = t;
        }
        best + sum.ln()
    }
}

/// `ln(1 + s)` for `s >= 0`: the series where s is small (what it leaves out, `s^4 / 4`, is
/// below 2.5e-17 there), else the function.
fn ln_1p_small(s: f64) -> f64 {
    if s < 1e-4 {
        s * (1.0 - s * (0.5 - s / 3.0))
    } else {
        s.ln_1p()
    }
}

/// What the scores assume about the mechanism (the accountant's claim).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Claim {
    /// The sampling rate q the accountant was told.
    pub sampling_rate: f64,
    /// The noise multiplier the accountant was told (noise std over C).
    pub noise_multiplier: f64,
}

/// Quiet values the noise's scale is estimated from before the first window is scored.
const CALIBRATION: usize = 1 << 16;

/// Accumulates the canaries' scores step by step.
///
/// The LLR's noise variance is not the claimed `sigma^2` but the one seen on the quiet
/// coordinates themselves, from the changes of each coordinate between consecutive steps over
/// the first [`CALIBRATION`] values (and two steps at least): `(1.4826 median |y_t - y_t-1| / sqrt 2)^2` (the median
/// ignores the canaries' rare spikes; at q = 1 they are in every step and cancel). It is a
/// function of the mechanism's output, so the bound stays valid; when the code is right it is
/// the claimed sigma, and when the noise is broken it is the noise really there, which makes
/// the test sharp exactly then.
#[derive(Debug)]
pub struct Scorer {
    kind: ScoreKind,
    codes: Codes,
    claim: Claim,
    /// Steps per window (1 for [`ScoreKind::Sum`]).
    window: usize,
    /// From the step's gradient to units of one clipped canary: `B / C`.
    unit: f64,
    /// Steps held back (in canary units) until the noise's scale is estimated.
    pending: Vec<f64>,
    /// The noise's std per quiet coordinate and step, in canary units, once estimated.
    noise: Option<f64>,
    llr: Option<WindowLlr>,
    /// The current window's sum of observations, and its steps so far.
    sum: Vec<f64>,
    steps: usize,
    /// The canaries' observations in the window being scored.
    xs: Vec<f64>,
    scores: Vec<f64>,
}

impl Scorer {
    /// Scores of `kind` for canaries `codes`, the steps' quiet gradients in units of
    /// `clip / expected_batch`, under `claim`, in windows of `window` steps (LLR only).
    pub fn new(
        kind: ScoreKind,
        codes: Codes,
        claim: Claim,
        clip: f64,
        expected_batch: f64,
        window: usize,
    ) -> Self {
        let m = codes.len();
        let window = match kind {
            ScoreKind::Llr => window.max(1),
            ScoreKind::Sum => usize::MAX,
        };
        Scorer {
            kind,
            pending: Vec::new(),
            noise: None,
            llr: None,
            sum: vec![0.0; codes.quiet()],
            xs: vec![0.0; m],
            scores: vec![0.0; m],
            codes,
            claim,
            window,
            unit: expected_batch / clip,
            steps: 0,
        }
    }

    /// Steps per window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The codes.
    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    /// The noise's std seen on the quiet coordinates, over the std the accountant was told
    /// (1 when the code adds the noise it claims), once estimated.
    pub fn noise_ratio(&self) -> Option<f64> {
        self.noise.map(|n| n / self.claim.noise_multiplier)
    }

    /// One step's gradient on the quiet coordinates (after the noise).
    pub fn observe(&mut self, quiet: &[f32]) {
        assert_eq!(
            quiet.len(),
            self.sum.len(),
            "one value per quiet coordinate"
        );
        if self.noise.is_none() {
            self.pending
                .extend(quiet.iter().map(|&g| f64::from(g) * self.unit));
            // At least two steps: the estimate compares consecutive ones.
            if self.pending.len() >= CALIBRATION.max(2 * quiet.len()) {
                self.calibrate();
            }
            return;
        }
        let unit = self.unit;
        self.step(quiet.iter().map(|&g| f64::from(g) * unit));
    }

    /// Estimates the noise's scale from the steps held back, then scores them.
    fn calibrate(&mut self) {
        let d = self.sum.len().max(1);
        // A coordinate's change from one step to the next: the noise twice (variance
        // 2 sigma^2) and a canary only where one was drawn in just one of the two steps, which
        // the median ignores (a canary in every step, at q = 1, cancels).
        let mut abs: Vec<f64> = self
            .pending
            .chunks_exact(d)
            .zip(self.pending.chunks_exact(d).skip(1))
            .flat_map(|(a, b)| a.iter().zip(b).map(|(a, b)| (b - a).abs()))
            .collect();
        let noise = if abs.is_empty() {
            // A single step: the claim.
            self.claim.noise_multiplier
        } else {
            let mid = abs.len() / 2;
            1.4826 * *abs.select_nth_unstable_by(mid, f64::total_cmp).1 / 2f64.sqrt()
        };
        self.noise = Some(noise);
        let q = self.claim.sampling_rate;
        let m = self.codes.len() as f64;
        // The noise, the other canaries' share, and a floor for runs without either.
        let step_variance =
            noise * noise + q * (m / 2.0) * self.codes.cross_talk() + VARIANCE_FLOOR;
        if self.kind == ScoreKind::Llr {
            self.llr = Some(WindowLlr::new(
                self.window,
                q,
                self.window as f64 * step_variance,
            ));
        }
        let pending = std::mem::take(&mut self.pending);
        for step in pending.chunks_exact(self.sum.len().max(1)) {
            self.step(step.iter().copied());
        }
    }

    fn step(&mut self, y: impl Iterator<Item = f64>) {
        for (s, y) in self.sum.iter_mut().zip(y) {
            *s += y;
        }
        self.steps += 1;
        if self.kind == ScoreKind::Llr && self.steps == self.window {
            self.close_window();
        }
    }

    fn close_window(&mut self) {
        if self.steps == 0 {
            return;
        }
        let full = self
            .llr
            .as_ref()
            .expect("calibrated before the first window");
        let partial;
        let llr = if self.steps == self.window {
            full
        } else {
            // The last window, shorter: the same per-step variance over fewer steps.
            let k = self.steps;
            let v = full.variance / self.window as f64 * k as f64;
            partial = WindowLlr::new(k, self.claim.sampling_rate, v);
            &partial
        };
        let xs = &mut self.xs;
        self.codes.project(&self.sum, |i, x| xs[i] = x);
        llr.add_all(xs, &mut self.scores);
        self.sum.fill(0.0);
        self.steps = 0;
    }

    /// The scores (higher: more likely included), after the last step.
    pub fn finish(&mut self) -> Vec<f64> {
        if self.noise.is_none() {
            self.calibrate();
        }
        match self.kind {
            ScoreKind::Llr => self.close_window(),
            ScoreKind::Sum => {
                let scores = &mut self.scores;
                self.codes.project(&self.sum, |i, x| scores[i] = x);
            }
        }
        std::mem::take(&mut self.scores)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;

    #[test]
    fn codes_are_unit_vectors_and_distinct_when_they_fit() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let own = Codes::new(10, 16, &mut rng);
        assert!(own.distinct() && own.cross_talk() == 0.0);
        assert_eq!((own.len(), own.code(7)), (10, (&[7u32][..], &[1.0f32][..])));
        let shared = Codes::new(500, 64, &mut rng);
        assert_eq!((shared.len(), shared.width()), (500, CODE_WIDTH));
        let mut inner = 0.0;
        for i in 0..500 {
            let (c, v) = shared.code(i);
            let norm: f32 = v.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-6);
            let mut sorted = c.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), CODE_WIDTH, "distinct coordinates");
            if i > 0 {
                let (c0, v0) = shared.code(i - 1);
                let dot: f32 = c
                    .iter()
                    .zip(v)
                    .flat_map(|(a, x)| {
                        c0.iter()
                            .zip(v0)
                            .filter(move |(b, _)| *b == a)
                            .map(move |(_, y)| x * y)
                    })
                    .sum();
                inner += f64::from(dot * dot);
            }
        }
        // E <u_i, u_j>^2 = 1 / d = 0.0156 (499 pairs: standard error about 0.002).
        let mean = inner / 499.0;
        assert!((mean - shared.cross_talk()).abs() < 0.008, "{mean}");
    }

    /// The window LLR with K = 1 is the per-step ratio of the two mixtures, and with K steps
    /// it is the ratio of "n ~ Binomial(K, q) copies" against none, computed directly.
    #[test]
    fn window_llr_is_the_likelihood_ratio() {
        let (q, v) = (0.03, 0.7);
        let one = WindowLlr::new(1, q, v);
        for x in [-3.0, 0.0, 0.4, 1.0, 6.0] {
            let want = (1.0 - q + q * ((x - 0.5) / v).exp()).ln();
            assert!((one.eval(x) - want).abs() < 1e-12, "{x}");
        }
        let k = 5;
        let five = WindowLlr::new(k, q, 5.0 * v);
        let choose =
            |n: u32| (1..=n).fold(1.0, |c, j| c * f64::from(k as u32 - j + 1) / f64::from(j));
        for x in [-2.0, 0.0, 1.0, 2.5, 9.0] {
            let want: f64 = (0..=k as u32)
                .map(|n| {
                    let n_f = f64::from(n);
                    choose(n)
                        * q.powi(n as i32)
                        * (1.0 - q).powi(k as i32 - n as i32)
                        * ((n_f * x - n_f * n_f / 2.0) / (5.0 * v)).exp()
                })
                .sum();
            assert!(
                (five.eval(x) - want.ln()).abs() < 1e-10,
                "{x}: {} {}",
                five.eval(x),
                want.ln()
            );
        }
        // The fast form is the term-by-term sum, for short and long windows, rare and
        // frequent canaries, wide and narrow noise, where it applies and past it.
        for (k, q, v) in [
            (1, 0.01, 1.0),
            (4, 0.3, 0.05),
            (37, 0.01, 37.0),
            (64, 0.9, 3.0),
        ] {
            let w = WindowLlr::new(k, q, v);
            for i in -400..=400 {
                let x = f64::from(i) * 0.05 * v.sqrt() + 0.3;
                let (fast, exact) = (w.eval(x), w.eval_exact(x * w.inv_v));
                assert!(
                    (fast - exact).abs() <= 1e-12 * exact.abs().max(1.0),
                    "k {k} q {q} v {v} x {x}: {fast} vs {exact}"
                );
            }
        }
        // The whole window's canaries at once: the same values as one at a time.
        for (k, q, v) in [(1, 0.01, 1.0), (8, 0.003, 8.0), (37, 0.01, 0.5)] {
            let w = WindowLlr::new(k, q, v);
            let xs: Vec<f64> = (-50..=50).map(|i| f64::from(i) * 0.1 * v.sqrt()).collect();
            let mut scores = vec![1.0; xs.len()];
            w.add_all(&xs, &mut scores);
            for (s, &x) in scores.iter().zip(&xs) {
                let want = 1.0 + w.eval_exact(x * w.inv_v);
                assert!(
                    (s - want).abs() <= 1e-12 * want.abs().max(1.0),
                    "k {k} x {x}: {s} vs {want}"
                );
            }
        }
        // q = 1: linear in x.
        let all = WindowLlr::new(3, 1.0, 2.0);
        assert!((all.eval(1.5) - (3.0 * 1.5 - 4.5) / 2.0).abs() < 1e-12);
    }

    /// Simulated steps of the mechanism on the quiet coordinates (sampled included canaries
    /// plus noise): the LLR separates included from excluded canaries, and at small q far
    /// better than the sum over steps does.
    #[test]
    fn llr_scores_find_the_included_canaries_that_the_sum_misses() {
        let (m, d, q, sigma, steps) = (200usize, 200usize, 0.02, 0.4, 500usize);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let codes = Codes::new(m, d, &mut rng);
        let included: Vec<bool> = (0..m).map(|_| rng.random_bool(0.5)).collect();
        let claim = Claim {
            sampling_rate: q,
            noise_multiplier: sigma,
        };
        let (clip, batch) = (2.0, 50.0);
        let mut llr = Scorer::new(ScoreKind::Llr, codes.clone(), claim, clip, batch, 1);
        let mut sum = Scorer::new(ScoreKind::Sum, codes, claim, clip, batch, 1);
        for _ in 0..steps {
            let mut y: Vec<f32> = (0..d)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (sigma * z * clip / batch) as f32
                })
                .collect();
            for (i, &inc) in included.iter().enumerate() {
                if inc && rng.random_bool(q) {
                    y[i] += (clip / batch) as f32;
                }
            }
            llr.observe(&y);
            sum.observe(&y);
        }
        let auc = |s: &[f64]| {
            let (mut wins, mut pairs) = (0.0, 0.0);
            for (a, &ia) in s.iter().zip(&included) {
                for (b, &ib) in s.iter().zip(&included) {
                    if ia && !ib {
                        pairs += 1.0;
                        wins += if a > b {
                            1.0
                        } else if a == b {
                            0.5
                        } else {
                            0.0
                        };
                    }
                }
            }
            wins / pairs
        };
        assert!(
            (llr.noise_ratio().unwrap() - 1.0).abs() < 0.05,
            "the noise seen is the noise told"
        );
        let (a_llr, a_sum) = (auc(&llr.finish()), auc(&sum.finish()));
        // Each included canary is drawn about 10 times: 10 spikes of 2.5 sigma among 500 steps,
        // which the sum adds to the noise of all 500 (signal 10 against 9 of noise).
        assert!(a_llr > 0.9, "LLR AUC {a_llr}, sum AUC {a_sum}");
        assert!(a_sum < a_llr - 0.1, "sum AUC {a_sum} vs LLR {a_llr}");
    }

    /// The noise's scale is read off the quiet coordinates' changes between steps: two steps
    /// at least (even with more coordinates than the calibration's values), the canaries of a
    /// full-batch run (in every step) cancel, and it is the noise really added, not the claim.
    #[test]
    fn the_noise_seen_is_estimated_from_changes_between_steps() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (m, sigma) = (100_000usize, 0.3);
        let claim = Claim {
            sampling_rate: 1.0,
            noise_multiplier: 1.0,
        };
        let codes = Codes::new(m, m, &mut rng);
        let mut scorer = Scorer::new(ScoreKind::Llr, codes, claim, 1.0, 1.0, 1);
        for _ in 0..3 {
            let y: Vec<f32> = (0..m)
                .map(|i| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    // Every other canary in, in every step.
                    (sigma * z + if i % 2 == 0 { 1.0 } else { 0.0 }) as f32
                })
                .collect();
            scorer.observe(&y);
        }
        // 100,000 changes (two steps): a standard error of about 0.4%.
        let ratio = scorer.noise_ratio().expect("estimated after two steps");
        assert!((ratio - sigma).abs() < 0.01, "{ratio}");
        let scores = scorer.finish();
        assert!(scores[0] > scores[1], "the included canary scores higher");
    }
}
