//! The one-run audit's statistics (Steinke, Nasr and Jagielski 2023, Theorem 5.2 with delta):
//! the probability that an (epsilon, delta)-DP mechanism lets an auditor make `correct` right
//! guesses out of `guesses`, and the largest epsilon that observation rules out.
//!
//! Each of m canaries is included independently with probability 1/2; the auditor guesses
//! inclusion (+1) for the k+ highest scores and exclusion (-1) for the k- lowest, abstaining on
//! the rest. Under (epsilon, delta)-DP the number W of correct guesses among r satisfies, for
//! every v,
//!
//! ```text
//! P[W >= v] <= P[B >= v] + 2 m delta * max_{i = 1..v} P[v - i <= B < v] / i,
//!     B ~ Binomial(r, e^eps / (1 + e^eps)).
//! ```
//!
//! The audited epsilon is the largest epsilon whose bound is at most alpha at the observed v
//! (found by bisection: the bound grows with epsilon). With several candidate (k+, k-) pairs
//! fixed before the scores are seen, each is tested at alpha / (number of pairs) (Bonferroni),
//! so the best of them still holds at confidence 1 - alpha.

use serde::Serialize;

/// `ln(k!)` for `k = 0..=n`, by summing logarithms (exact to rounding; no gamma function).
fn log_factorials(n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    let mut acc = 0.0f64;
    out.push(0.0);
    for k in 1..=n {
        acc += (k as f64).ln();
        out.push(acc);
    }
    out
}

/// `ln(e^a + e^b)`.
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// The Binomial(r, p) probabilities `P[B = k]` for `k = 0..=r`, in log space.
fn log_pmf(r: usize, p: f64, lf: &[f64]) -> Vec<f64> {
    let (lp, lq) = (p.ln(), (-p).ln_1p());
    (0..=r)
        .map(|k| {
            let c = lf[r] - lf[k] - lf[r - k];
            let a = if k == 0 { 0.0 } else { k as f64 * lp };
            let b = if k == r { 0.0 } else { (r - k) as f64 * lq };
            c + a + b
        })
        .collect()
}

/// The probability bound above: an upper bound on `P[W >= correct]` for `guesses` guesses
/// about `canaries` canaries under (`epsilon`, `delta`)-DP (at most 1).
pub fn p_value(canaries: usize, guesses: usize, correct: usize, epsilon: f64, delta: f64) -> f64 {
    assert!(correct <= guesses, "{correct} correct of {guesses} guesses");
    if correct == 0 {
        return 1.0;
    }
    let p = 1.0 / (1.0 + (-epsilon).exp());
    let lf = log_factorials(guesses);
    let pmf = log_pmf(guesses, p, &lf);
    // tail[k] = ln P[B >= k], from the top down (small terms first).
    let mut tail = vec![f64::NEG_INFINITY; guesses + 2];
    for k in (0..=guesses).rev() {
        tail[k] = log_add(tail[k + 1], pmf[k]);
    }
    let beta = tail[correct].exp();
    if delta == 0.0 {
        return beta.min(1.0);
    }
    // max over i of P[v - i <= B < v] / i, the window growing down from v - 1.
    let (mut window, mut best) = (f64::NEG_INFINITY, 0.0f64);
    for i in 1..=correct {
        window = log_add(window, pmf[correct - i]);
        best = best.max((window - (i as f64).ln()).exp());
    }
    (beta + 2.0 * canaries as f64 * delta * best).min(1.0)
}

/// The largest epsilon that `correct` right guesses out of `guesses` rule out at confidence
/// `1 - alpha` (0 when none is ruled out), to within 1e-6.
pub fn epsilon_lower_bound(
    canaries: usize,
    guesses: usize,
    correct: usize,
    alpha: f64,
    delta: f64,
) -> f64 {
    largest_rejected(0.0, |eps| {
        p_value(canaries, guesses, correct, eps, delta) <= alpha
    })
}

/// The largest epsilon at or above `floor` that `rejected` rejects, to within 1e-6 (`floor`
/// when it does not reject `floor`; the search stops doubling past 1e3). Both bounds' search:
/// a claim of epsilon is rejected for every epsilon below the largest one rejected.
pub(crate) fn largest_rejected(floor: f64, rejected: impl Fn(f64) -> bool) -> f64 {
    if !rejected(floor) {
        return floor;
    }
    let (mut lo, mut hi) = (floor, (2.0 * floor).max(1.0));
    while rejected(hi) {
        lo = hi;
        hi *= 2.0;
        if hi > 1e3 {
            return lo;
        }
    }
    while hi - lo > 1e-6 {
        let mid = 0.5 * (lo + hi);
        if rejected(mid) { lo = mid } else { hi = mid }
    }
    lo
}

/// How many top (k+) and bottom (k-) scores to guess on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Guesses {
    /// Guesses "included" on the highest scores.
    pub k_plus: usize,
    /// Guesses "excluded" on the lowest scores.
    pub k_minus: usize,
}

/// The candidate (k+, k-) pairs for `m` canaries, fixed before any score is seen: total guesses
/// r in 1-2-5 steps from 10 up to m, each split evenly (k+ = k- = r / 2) or all positive
/// (k+ = r, k- = 0).
pub fn candidates(m: usize) -> Vec<Guesses> {
    let mut totals = Vec::new();
    let mut decade = 10usize;
    'outer: loop {
        for f in [1, 2, 5] {
            let r = decade * f;
            if r > m {
                break 'outer;
            }
            totals.push(r);
        }
        decade *= 10;
    }
    if totals.last() != Some(&m) && m > 0 {
        totals.push(m);
    }
    totals
        .into_iter()
        .flat_map(|r| {
            [
                Guesses {
                    k_plus: r - r / 2,
                    k_minus: r / 2,
                },
                Guesses {
                    k_plus: r,
                    k_minus: 0,
                },
            ]
        })
        .collect()
}

/// The outcome of an audit's guesses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    /// The audited epsilon: a lower bound holding with probability at least `1 - alpha`.
    pub epsilon: f64,
    /// The pair that gave it.
    pub guesses: Guesses,
    /// Guesses made with that pair (k+ + k-).
    pub made: usize,
    /// Of which right.
    pub correct: usize,
    /// Candidate pairs tested (alpha is divided by this).
    pub candidates: usize,
}

/// Right guesses among the k highest and the k lowest scores, for every k. Ties in the scores
/// are broken by canary index (which does not depend on membership).
#[derive(Debug, Clone)]
pub struct Ranked {
    top: Vec<usize>,
    bottom: Vec<usize>,
}

impl Ranked {
    /// Ranks `scores` and counts the right guesses against the canaries' true membership
    /// `included`.
    pub fn new(scores: &[f64], included: &[bool]) -> Self {
        assert_eq!(scores.len(), included.len(), "one score per canary");
        let m = scores.len();
        let mut order: Vec<usize> = (0..m).collect();
        // Highest first; NaN (never produced by a sound score) sorts last.
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut top = vec![0usize; m + 1];
        let mut bottom = vec![0usize; m + 1];
        for k in 0..m {
            top[k + 1] = top[k] + usize::from(included[order[k]]);
            bottom[k + 1] = bottom[k] + usize::from(!included[order[m - 1 - k]]);
        }
        Ranked { top, bottom }
    }

    /// The ranking of a perfect score: the `included` canaries of `m` all above the others.
    pub fn perfect(m: usize, included: usize) -> Self {
        Ranked {
            top: (0..=m).map(|k| k.min(included)).collect(),
            bottom: (0..=m).map(|k| k.min(m - included)).collect(),
        }
    }

    /// Right guesses with pair `g`: "included" on the k+ highest, "excluded" on the k- lowest.
    pub fn correct(&self, g: Guesses) -> usize {
        self.top[g.k_plus] + self.bottom[g.k_minus]
    }
}

/// The best outcome over the candidate `pairs` (fixed before the scores), each tested at
/// `alpha / pairs` (Bonferroni): `bound(made, correct, level, best)` is a pair's epsilon, or
/// anything up to `best` (the largest so far) when it does not beat it.
pub fn best_of(
    ranked: &Ranked,
    pairs: &[Guesses],
    alpha: f64,
    bound: impl Fn(usize, usize, f64, f64) -> f64,
) -> Outcome {
    let level = alpha / pairs.len().max(1) as f64;
    let mut best = Outcome {
        epsilon: 0.0,
        guesses: Guesses {
            k_plus: 0,
            k_minus: 0,
        },
        made: 0,
        correct: 0,
        candidates: pairs.len(),
    };
    for g in pairs {
        let made = g.k_plus + g.k_minus;
        let correct = ranked.correct(*g);
        let epsilon = bound(made, correct, level, best.epsilon);
        if epsilon > best.epsilon || best.made == 0 {
            best = Outcome {
                epsilon,
                guesses: *g,
                made,
                correct,
                candidates: pairs.len(),
            };
        }
    }
    best
}

/// Audits `scores` against the canaries' true membership `included`: for each candidate pair
/// ([`candidates`]), guess on the top k+ and bottom k- scores, bound epsilon at
/// `alpha / candidates`, keep the largest.
pub fn audit(scores: &[f64], included: &[bool], alpha: f64, delta: f64) -> Outcome {
    let m = scores.len();
    best_of(
        &Ranked::new(scores, included),
        &candidates(m),
        alpha,
        |made, correct, level, _| epsilon_lower_bound(m, made, correct, level, delta),
    )
}

/// The largest epsilon [`audit`] could give with `included` of `m` canaries in: a perfect
/// score, every guess right that can be.
pub fn max_epsilon(m: usize, included: usize, alpha: f64, delta: f64) -> f64 {
    best_of(
        &Ranked::perfect(m, included),
        &candidates(m),
        alpha,
        |made, correct, level, _| epsilon_lower_bound(m, made, correct, level, delta),
    )
    .epsilon
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from `trainer/tests/data/audit_bound_reference.py`, which computes the
    /// same bound with exact rational binomial sums (Python integers and 60-digit decimals) and
    /// its own bisection: (m, r, v, alpha, delta, epsilon).
    const REFERENCE: &[(usize, usize, usize, f64, f64, f64)] = &[
        (1000, 1000, 1000, 0.05, 0.0, 5.809068),
        (100, 100, 90, 0.05, 0.0, 1.630823),
        (1000, 1000, 700, 0.05, 0.0, 0.732011),
        (1000, 1000, 1000, 0.05, 1e-05, 5.782283),
        (1000, 200, 190, 0.05, 1e-05, 2.393618),
        (1000, 100, 90, 0.05 / 14.0, 1e-05, 1.310656),
        (10000, 500, 480, 0.01, 1e-06, 2.653588),
        (1000, 50, 30, 0.05, 1e-05, 0.000000),
    ];

    #[test]
    fn bound_matches_the_independent_reference() {
        for &(m, r, v, alpha, delta, want) in REFERENCE {
            let got = epsilon_lower_bound(m, r, v, alpha, delta);
            assert!(
                (got - want).abs() < 1e-4,
                "m {m} r {r} v {v} alpha {alpha} delta {delta}: {got} vs {want}"
            );
        }
    }
}
