//! Composition of PMFs by FFT: exact convolution, and T-fold self-composition by powering the spectrum inside a Chernoff window.
//!
//! Two real sequences share one complex FFT (one as the real part, one as the imaginary
//! part), so composing the remove and the add direction costs one forward and one inverse
//! transform. For `T` self-compositions the spectrum is raised to the power `T` by repeated
//! squaring. The result is only computed on a window of losses that holds all but
//! `tail_mass_truncation` of the mass by the Chernoff bound; the input is folded onto the
//! window's length, so mass beyond the window wraps around (cyclic convolution):
//! - mass below the window lands inside it at a higher loss, which only overstates delta;
//! - mass above it lands at a lower loss; there is at most `tail_mass_truncation / 2` of it,
//!   and the whole `tail_mass_truncation` is added to the infinity mass to pay for it.
//!
//! Before that, each step's lowest losses (at most `tail_mass_truncation / (2 T)` of
//! probability) are moved up to the lowest loss kept, which is pessimistic too and keeps the
//! window from having to reach far down for almost no mass.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use super::Pmf;
use crate::{Error, Result};

/// The largest window (bins) we will transform: 2^24 complex values are 256 MiB.
pub(crate) const MAX_BINS: u64 = 1 << 24;

/// The smallest 2^a or 3 * 2^a that is >= n: sizes rustfft transforms fast, few enough
/// that repeated calls (noise calibration) reuse the cached plans.
fn fast_len(n: usize) -> usize {
    let pow2 = n.next_power_of_two();
    let three = 3 * n.div_ceil(3).next_power_of_two();
    pow2.min(three)
}

thread_local! {
    /// FFT plans (twiddle tables) by length, kept across calls on this thread.
    static PLANNER: RefCell<FftPlanner<f64>> = RefCell::new(FftPlanner::new());
}

/// The forward and inverse FFTs of length `len`, planned once per thread.
fn plans(len: usize) -> (Arc<dyn Fft<f64>>, Arc<dyn Fft<f64>>) {
    PLANNER.with(|planner| {
        let mut planner = planner.borrow_mut();
        (planner.plan_fft_forward(len), planner.plan_fft_inverse(len))
    })
}

/// Buffers up to this many values are kept per thread between calls (16 MiB each), so that
/// repeated compositions (noise calibration) do not fault fresh pages in every time.
const KEEP_BUFFER: usize = 1 << 20;

/// A spectrum buffer and an FFT scratch buffer.
type Buffers = (Vec<Complex<f64>>, Vec<Complex<f64>>);

thread_local! {
    /// The buffers of the last composition on this thread.
    static BUFFERS: RefCell<Buffers> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `work` with a zeroed buffer of `len` values and a scratch buffer, reusing this
/// thread's when they are not too large.
fn with_buffers<T>(
    len: usize,
    work: impl FnOnce(&mut [Complex<f64>], &mut Vec<Complex<f64>>) -> T,
) -> T {
    let zero = Complex::new(0.0, 0.0);
    let (mut z, mut scratch) = BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()));
    z.clear();
    z.resize(len, zero);
    let out = work(&mut z, &mut scratch);
    if z.capacity() <= KEEP_BUFFER && scratch.capacity() <= KEEP_BUFFER {
        BUFFERS.with(|b| *b.borrow_mut() = (z, scratch));
    }
    out
}

/// Transforms `z` in place with `fft`, using (and growing) `scratch`.
fn transform(fft: &dyn Fft<f64>, z: &mut [Complex<f64>], scratch: &mut Vec<Complex<f64>>) {
    let needed = fft.get_inplace_scratch_len();
    if scratch.len() < needed {
        scratch.resize(needed, Complex::new(0.0, 0.0));
    }
    fft.process_with_scratch(z, &mut scratch[..needed]);
}

/// The (A, B) spectra of real sequences a, b packed as z = a + i b, from Z[k] and Z[L-k].
fn unpack(zk: Complex<f64>, zn: Complex<f64>) -> (Complex<f64>, Complex<f64>) {
    let zn = zn.conj();
    let a = (zk + zn) * 0.5;
    let d = (zk - zn) * 0.5;
    (a, Complex::new(d.im, -d.re)) // d / i
}

/// Every element of `z` raised to the power `n`, by repeated squaring. All elements share
/// the exponent, so the squarings run in lockstep over a block held as separate real and
/// imaginary arrays: independent multiplications that vectorize, instead of one long
/// dependency chain per element.
fn power_all(z: &mut [Complex<f64>], n: u64) {
    const BLOCK: usize = 32;
    for chunk in z.chunks_mut(BLOCK) {
        let (mut base_re, mut base_im) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
        let (mut res_re, mut res_im) = ([1.0f64; BLOCK], [0.0f64; BLOCK]);
        for (j, c) in chunk.iter().enumerate() {
            (base_re[j], base_im[j]) = (c.re, c.im);
        }
        let mut e = n;
        while e > 0 {
            if e & 1 == 1 {
                for j in 0..BLOCK {
                    let re = res_re[j] * base_re[j] - res_im[j] * base_im[j];
                    let im = res_re[j] * base_im[j] + res_im[j] * base_re[j];
                    (res_re[j], res_im[j]) = (re, im);
                }
            }
            e >>= 1;
            if e > 0 {
                for j in 0..BLOCK {
                    let re = base_re[j] * base_re[j] - base_im[j] * base_im[j];
                    let im = 2.0 * base_re[j] * base_im[j];
                    (base_re[j], base_im[j]) = (re, im);
                }
            }
        }
        for (j, c) in chunk.iter_mut().enumerate() {
            *c = Complex::new(res_re[j], res_im[j]);
        }
    }
}

/// The linear convolution of two sequences.
pub(crate) fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let out_len = a.len() + b.len() - 1;
    let len = fast_len(out_len);
    let (forward, inverse) = plans(len);
    with_buffers(len, |z, scratch| {
        for (i, &x) in a.iter().enumerate() {
            z[i].re = x;
        }
        for (i, &x) in b.iter().enumerate() {
            z[i].im = x;
        }
        transform(&*forward, z, scratch);
        for k in 0..=len / 2 {
            let nk = (len - k) % len;
            let (fa, fb) = unpack(z[k], z[nk]);
            let (ga, gb) = unpack(z[nk], z[k]);
            z[k] = fa * fb;
            z[nk] = ga * gb;
        }
        transform(&*inverse, z, scratch);
        let scale = 1.0 / len as f64;
        z[..out_len].iter().map(|c| c.re * scale).collect()
    })
}

/// ln sum_i p_i e^(t i), for t of either sign, without overflow.
///
/// Summed from the end the exponent favours (shifted so the largest factor is 1), in blocks
/// whose factors are a common power of e^-|t| times a fixed table, so each block is a dot
/// product; stops once the remaining factors cannot add a relative 1e-18.
fn log_mgf(probs: &[f64], t: f64) -> f64 {
    const BLOCK: usize = 16;
    let r = (-t.abs()).exp();
    // table[j] = r^j, and its mirror for blocks read from their far end.
    let mut table = [1.0f64; BLOCK];
    for j in 1..BLOCK {
        table[j] = table[j - 1] * r;
    }
    let mut mirrored = table;
    mirrored.reverse();
    let step = table[BLOCK - 1] * r;
    let dot = |block: &[f64], weights: &[f64]| -> f64 {
        block.iter().zip(weights).map(|(p, w)| p * w).sum()
    };
    let (mut sum, mut factor) = (0.0f64, 1.0f64);
    if t >= 0.0 {
        // Shift by the top index: sum_i p_i e^(-t (top - i)), from the top down.
        let top = (probs.len() - 1) as f64;
        for block in probs.rchunks(BLOCK) {
            sum += factor * dot(block, &mirrored[BLOCK - block.len()..]);
            factor *= step;
            if factor < sum * 1e-18 {
                break;
            }
        }
        t * top + sum.ln()
    } else {
        for block in probs.chunks(BLOCK) {
            sum += factor * dot(block, &table);
            factor *= step;
            if factor < sum * 1e-18 {
                break;
            }
        }
        sum.ln()
    }
}

/// Golden-section minimum of a unimodal function on [a, b].
fn golden_min(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64, iterations: usize) -> f64 {
    let g = 0.5 * (5f64.sqrt() - 1.0);
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..iterations {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    fc.min(fd)
}

/// Index bounds [lo, hi] (relative to `times * lower_index`) outside which the `times`-fold
/// self-convolution of `probs` has at most `tail_mass / 2` mass on each side, by the
/// Chernoff bound P(S >= u) <= exp(times K(t) - t u), minimized over t > 0 (u(t) is
/// unimodal in t because K is convex), and likewise below.
fn chernoff_window(probs: &[f64], times: u64, tail_mass: f64) -> (u128, u128) {
    let full_hi = (probs.len() as u128 - 1) * u128::from(times);
    if tail_mass <= 0.0 || probs.iter().all(|&p| p <= 0.0) {
        return (0, full_hi);
    }
    let n = times as f64;
    let c = (2.0 / tail_mass).ln();
    // t ranges over e^-28 .. e^7 per bin; 18 golden steps pin ln t to within 0.006, finer
    // than the flat minimum needs (u is quadratic in the error of t there).
    let (lo_t, hi_t) = (-28.0, 7.0);
    let upper = golden_min(
        |s| {
            let t = f64::exp(s);
            (n * log_mgf(probs, t) + c) / t
        },
        lo_t,
        hi_t,
        18,
    );
    let lower = -golden_min(
        |s| {
            let t = f64::exp(s);
            (n * log_mgf(probs, -t) + c) / t
        },
        lo_t,
        hi_t,
        18,
    );
    let hi = if upper.is_finite() && upper >= 0.0 {
        (upper.ceil() as u128).min(full_hi)
    } else {
        full_hi
    };
    let lo = if lower.is_finite() && lower > 0.0 {
        (lower.floor() as u128).min(hi)
    } else {
        0
    };
    (lo, hi)
}

/// Where the window of one composed PMF sits: its start, its length, and whether it cuts
/// any support.
struct Window {
    start: u128,
    len: usize,
    truncated: bool,
}

/// Self-compose `a` (and `b`, when given) `times` times, sharing one FFT of a common length.
pub(crate) fn self_compose_pair(
    a: &Pmf,
    b: Option<&Pmf>,
    times: u64,
    tail_mass_truncation: f64,
) -> Result<(Pmf, Option<Pmf>)> {
    if times == 0 {
        let id = Pmf::identity(a.discretization());
        return Ok((id.clone(), b.map(|_| id)));
    }
    if times == 1 {
        return Ok((a.clone(), b.cloned()));
    }
    if let Some(b) = b {
        assert_eq!(
            a.discretization(),
            b.discretization(),
            "only PMFs on the same grid compose"
        );
    }
    // Each step's lowest losses, of probability at most tail_mass / (2 times) in all, are moved
    // up to the lowest loss kept: pessimistic, and over `times` steps it changes the composition
    // by at most tail_mass / 2 in total variation. It spares the window the long, nearly
    // massless lower tail of the add direction (losses down to -ln(q) - ...), which the
    // Chernoff bound would otherwise have to cover.
    fn collapse(p: &Pmf, mass: f64) -> Cow<'_, Pmf> {
        p.lower_tail_collapsed(mass)
            .map_or(Cow::Borrowed(p), Cow::Owned)
    }
    let per_step = tail_mass_truncation / (2.0 * times as f64);
    let a = collapse(a, per_step);
    let b = b.map(|b| collapse(b, per_step));
    let (a, b) = (&*a, b.as_deref());
    let pmfs: Vec<&Pmf> = std::iter::once(a).chain(b).collect();
    let windows: Vec<(u128, u128, u128)> = pmfs
        .iter()
        .map(|p| {
            let full = (p.probabilities().len() as u128 - 1) * u128::from(times) + 1;
            let (lo, hi) = chernoff_window(p.probabilities(), times, tail_mass_truncation);
            (lo, hi, full)
        })
        .collect();
    let needed = windows
        .iter()
        .map(|&(lo, hi, _)| hi - lo + 1)
        .max()
        .expect("at least one PMF");
    if needed > u128::from(MAX_BINS) {
        return Err(Error::PldTooLarge {
            bins: u64::try_from(needed).unwrap_or(u64::MAX),
            max: MAX_BINS,
            sigma: f64::NAN,
        });
    }
    let len = fast_len(needed as usize);
    let placed: Vec<Window> = windows
        .iter()
        .map(|&(lo, _, full)| {
            let len = len as u128;
            if len >= full {
                Window {
                    start: 0,
                    len: full as usize,
                    truncated: false,
                }
            } else {
                Window {
                    start: lo.min(full - len),
                    len: len as usize,
                    truncated: true,
                }
            }
        })
        .collect();

    let (forward, inverse) = plans(len);
    let scale = 1.0 / len as f64;
    with_buffers(len, |z, scratch| {
        // Fold each input onto the cyclic buffer: a in the real part, b in the imaginary part.
        for chunk in a.probabilities().chunks(len) {
            for (c, &p) in z.iter_mut().zip(chunk) {
                c.re += p;
            }
        }
        if let Some(b) = b {
            for chunk in b.probabilities().chunks(len) {
                for (c, &p) in z.iter_mut().zip(chunk) {
                    c.im += p;
                }
            }
        }
        transform(&*forward, z, scratch);
        power_spectra(z, times);
        transform(&*inverse, z, scratch);

        let build = |which: usize, pmf: &Pmf| -> Result<Pmf> {
            let window = &placed[which];
            let start = (window.start % len as u128) as usize;
            // The window read cyclically from `start`: the buffer from there, then its head.
            let (head, tail) = z.split_at(start);
            let part = |c: &Complex<f64>| {
                let v = if which == 0 { c.re } else { c.im };
                (v * scale).max(0.0)
            };
            let probabilities: Vec<f64> =
                tail.iter().chain(head).take(window.len).map(part).collect();
            let lower = i128::from(pmf.lower_index()) * i128::from(times) + window.start as i128;
            let lower = i64::try_from(lower).map_err(|_| Error::PldTooLarge {
                bins: u64::MAX,
                max: MAX_BINS,
                sigma: f64::NAN,
            })?;
            // 1 - (1 - inf)^times, stably, plus what the window may have cut.
            let mut infinity_mass = -(times as f64 * (-pmf.infinity_mass()).ln_1p()).exp_m1();
            if window.truncated {
                infinity_mass += tail_mass_truncation;
            }
            Ok(Pmf::new(
                pmf.discretization(),
                lower,
                probabilities,
                infinity_mass.min(1.0),
            ))
        };
        let first = build(0, a)?;
        let second = b.map(|b| build(1, b)).transpose()?;
        Ok((first, second))
    })
}

/// Turns the spectrum Z of z = a + i b into the spectrum of a^(*n) + i b^(*n) (cyclic
/// n-fold self-convolutions), in place.
///
/// The spectra A and B of the real sequences are conjugate-symmetric, so A_k is stored at k
/// and B_k at L-k while they are powered. Where k = L-k (k = 0, and L/2 for even L) both are
/// real, sit in the one value as (A_k, B_k) and are powered on their own.
fn power_spectra(z: &mut [Complex<f64>], times: u64) {
    let len = z.len();
    let self_paired: &[usize] = if len.is_multiple_of(2) {
        &[0, len / 2]
    } else {
        &[0]
    };
    let real_powers: Vec<(usize, f64, f64)> = self_paired
        .iter()
        .map(|&k| (k, z[k].re.powf(times as f64), z[k].im.powf(times as f64)))
        .collect();
    for k in 1..len.div_ceil(2) {
        let nk = len - k;
        (z[k], z[nk]) = unpack(z[k], z[nk]);
    }
    power_all(z, times);
    let i = Complex::new(0.0, 1.0);
    for k in 1..len.div_ceil(2) {
        let nk = len - k;
        let (pa, pb) = (z[k], z[nk]);
        z[k] = pa + i * pb;
        z[nk] = pa.conj() + i * pb.conj();
    }
    for (k, pa, pb) in real_powers {
        z[k] = Complex::new(pa, pb);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
        out
    }

    #[test]
    fn fast_len_is_a_power_of_two_or_three_times_one() {
        assert_eq!(fast_len(1), 1);
        assert_eq!(fast_len(7), 8);
        assert_eq!(fast_len(11), 12);
        assert_eq!(fast_len(1000), 1024);
        assert_eq!(fast_len(1500), 1536);
        assert_eq!(fast_len(116_000), 131_072);
        assert_eq!(fast_len(98_000), 98_304);
        for n in 1..3000 {
            let m = fast_len(n);
            assert!(m >= n && m < 2 * n, "{n} -> {m}");
            let odd = m >> m.trailing_zeros();
            assert!(odd == 1 || odd == 3, "{n} -> {m}");
        }
    }

    #[test]
    fn power_all_is_repeated_multiplication() {
        let mut z: Vec<Complex<f64>> = (0..37)
            .map(|k| Complex::from_polar(1.0 - f64::from(k) / 100.0, f64::from(k) * 0.3))
            .collect();
        let want: Vec<Complex<f64>> = z.iter().map(|c| c.powu(13)).collect();
        power_all(&mut z, 13);
        for (g, w) in z.iter().zip(&want) {
            assert!((g - w).norm() < 1e-14, "{g} vs {w}");
        }
        power_all(&mut z, 0);
        assert!(z.iter().all(|c| *c == Complex::new(1.0, 0.0)));
    }

    #[test]
    fn convolve_matches_the_naive_sum() {
        let a = [0.1, 0.0, 0.4, 0.2, 0.3];
        let b = [0.6, 0.3, 0.1];
        let want = naive_convolve(&a, &b);
        let got = convolve(&a, &b);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-16, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn self_compose_without_truncation_is_repeated_convolution() {
        let a = Pmf::new(0.1, -1, vec![0.2, 0.5, 0.25], 0.05);
        let b = Pmf::new(0.1, 3, vec![0.7, 0.3], 0.0);
        let (a5, b5) = self_compose_pair(&a, Some(&b), 5, 0.0).unwrap();
        let b5 = b5.unwrap();
        let mut want_a = a.probabilities().to_vec();
        let mut want_b = b.probabilities().to_vec();
        for _ in 1..5 {
            want_a = naive_convolve(&want_a, a.probabilities());
            want_b = naive_convolve(&want_b, b.probabilities());
        }
        assert_eq!(a5.lower_index(), -5);
        assert_eq!(b5.lower_index(), 15);
        for (got, want) in [(&a5, &want_a), (&b5, &want_b)] {
            assert_eq!(got.probabilities().len(), want.len());
            for (g, w) in got.probabilities().iter().zip(want) {
                assert!((g - w).abs() < 1e-15);
            }
        }
        let want_inf = 1.0 - 0.95f64.powi(5);
        assert!((a5.infinity_mass() - want_inf).abs() < 1e-15);
        assert_eq!(b5.infinity_mass(), 0.0);
    }

    #[test]
    fn log_mgf_matches_the_direct_sum() {
        let probs: Vec<f64> = (0..100).map(|i| f64::from((i * 37) % 11) / 500.0).collect();
        for t in [-3.0, -0.01, 0.0, 1e-4, 0.2, 5.0] {
            let direct: f64 = probs
                .iter()
                .enumerate()
                .map(|(i, p)| p * (t * i as f64).exp())
                .sum::<f64>()
                .ln();
            let got = log_mgf(&probs, t);
            assert!(
                (got - direct).abs() < 1e-13 * direct.abs().max(1.0),
                "t={t}: {got} vs {direct}"
            );
        }
    }

    #[test]
    fn chernoff_window_holds_the_mass() {
        // Bernoulli(0.3) steps: the sum is Binomial(200, 0.3).
        let probs = [0.7, 0.3];
        let (lo, hi) = chernoff_window(&probs, 200, 1e-12);
        assert!(
            lo > 0 && hi < 200,
            "the window cuts both tails: [{lo}, {hi}]"
        );
        // Exact binomial tails outside the window are within the budget.
        let log_pmf = |k: u32| {
            let (n, k) = (200.0, f64::from(k));
            libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
                + k * 0.3f64.ln()
                + (n - k) * 0.7f64.ln()
        };
        let below: f64 = (0..lo as u32).map(|k| log_pmf(k).exp()).sum();
        let above: f64 = (hi as u32 + 1..=200).map(|k| log_pmf(k).exp()).sum();
        assert!(below <= 0.5e-12 && above <= 0.5e-12, "{below:e} {above:e}");
        // And it is not absurdly loose: mass just inside each edge is not negligible.
        assert!(log_pmf(lo as u32 + 8).exp() > 1e-16);
        assert!(log_pmf(hi as u32 - 8).exp() > 1e-16);
    }

    #[test]
    fn truncated_composition_is_pessimistic() {
        let probs: Vec<f64> = (0..50)
            .map(|i| if i % 7 == 0 { 1.0 } else { 0.1 })
            .collect();
        let total: f64 = probs.iter().sum();
        let pmf = Pmf::new(0.01, -10, probs.iter().map(|p| p / total).collect(), 0.0);
        let exact = pmf.self_compose(400, 0.0).unwrap();
        let cut = pmf.self_compose(400, 1e-10).unwrap();
        assert!(cut.probabilities().len() < exact.probabilities().len());
        assert!(cut.infinity_mass() >= 1e-10);
        for eps in [0.0, 0.5, 1.0, 2.0] {
            let (e, c) = (exact.delta_for_epsilon(eps), cut.delta_for_epsilon(eps));
            assert!(c >= e - 1e-15, "eps {eps}: truncated {c} < exact {e}");
            assert!(
                c <= e + 2e-10,
                "eps {eps}: truncated {c} far above exact {e}"
            );
        }
    }
}
