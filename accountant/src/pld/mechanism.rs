//! The privacy loss of the Poisson-subsampled Gaussian mechanism, in the remove and in the add direction.
//!
//! Sensitivity 1, noise N(0, sigma^2), sampling rate q (dp_accounting's `GaussianPrivacyLoss`
//! with `sampling_prob = q`). With mu the noise density:
//! - remove: mu_upper(x) = (1-q) mu(x) + q mu(x + 1), mu_lower(x) = mu(x);
//! - add: mu_upper(x) = mu(x), mu_lower(x) = (1-q) mu(x) + q mu(x - 1).
//!
//! The privacy loss ln(mu_upper(x) / mu_lower(x)) is decreasing in x in both directions, so the
//! hockey-stick divergence at epsilon is mu_upper(X <= x) - e^epsilon mu_lower(X <= x) at the x
//! where the loss equals epsilon.

use crate::special::{normal_cdf_pair, normal_log_cdf, normal_quantile_from_log};

/// Which neighbour holds the extra record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Adjacency {
    /// The real dataset has the record, the neighbour has it removed.
    Remove,
    /// The neighbour has a record added.
    Add,
}

/// The hockey-stick divergence at one epsilon in two forms, equal in exact arithmetic:
/// `delta` itself, and `residual` = delta - (1 - e^epsilon).
///
/// Each is computed to a few ulps of its own size. Where delta is close to 1 - e^epsilon (the
/// add direction at low losses: all but a tail probability of the outcomes have a loss above
/// epsilon) delta has lost the digits that the connect-the-dots probabilities, second
/// differences of it divided by the grid step, need; the residual keeps them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Divergence {
    /// The hockey-stick divergence, in [0, 1].
    pub delta: f64,
    /// delta - (1 - e^epsilon); infinite where e^epsilon would overflow.
    pub residual: f64,
}

/// (P(X <= x), P(X > x)) under mu_upper and under mu_lower.
#[derive(Clone, Copy, Debug)]
struct Cdfs {
    upper: (f64, f64),
    lower: (f64, f64),
}

/// One step of the Poisson-subsampled Gaussian mechanism seen from one direction of adjacency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubsampledGaussian {
    q: f64,
    sigma: f64,
    adjacency: Adjacency,
    /// ln(1/q) and ln(1/q - 1), used by every inverse.
    log_inv_q: f64,
    log_inv_q_m1: f64,
}

/// log(e^a + e^b), with -inf as the zero.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let (lo, hi) = (a.min(b), a.max(b));
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// log(e^a - e^b) for a > b.
fn log_sub_exp(a: f64, b: f64) -> f64 {
    a + (-(b - a).exp()).ln_1p()
}

/// ln(a e^b + c), as dp_accounting's `log_a_times_exp_b_plus_c` (for a > 0).
fn log_a_times_exp_b_plus_c(a: f64, b: f64, c: f64) -> f64 {
    if b == 0.0 {
        return (a + c).ln();
    }
    let d = b + a.ln();
    if c == 0.0 {
        d
    } else if c < 0.0 {
        log_sub_exp(d, (-c).ln())
    } else {
        log_add_exp(d, c.ln())
    }
}

/// Python's `math.isclose` with its default relative tolerance.
fn is_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl SubsampledGaussian {
    /// The mechanism with sampling rate `q` in (0, 1] and noise multiplier `sigma` > 0.
    pub fn new(q: f64, sigma: f64, adjacency: Adjacency) -> Self {
        debug_assert!(
            q > 0.0 && q <= 1.0 && sigma > 0.0,
            "q = {q}, sigma = {sigma}"
        );
        Self {
            q,
            sigma,
            adjacency,
            log_inv_q: (1.0 / q).ln(),
            log_inv_q_m1: (-(1.0 - 1.0 / q)).ln(),
        }
    }

    /// ln(e^loss / q + 1 - 1/q), the unsampled loss behind a subsampled one (q < 1).
    fn unsampled_loss(&self, loss: f64) -> f64 {
        if loss == 0.0 {
            return 0.0;
        }
        log_sub_exp(loss + self.log_inv_q, self.log_inv_q_m1)
    }

    /// The direction of adjacency this loss is for.
    pub fn adjacency(&self) -> Adjacency {
        self.adjacency
    }

    /// Remove-direction loss without subsampling: (-1/2 - x) / sigma^2.
    fn unsampled_remove_loss(&self, x: f64) -> f64 {
        (-0.5 - x) / (self.sigma * self.sigma)
    }

    fn remove_loss(&self, x: f64) -> f64 {
        let loss = self.unsampled_remove_loss(x);
        if self.q == 1.0 {
            loss
        } else {
            log_a_times_exp_b_plus_c(self.q, loss, 1.0 - self.q)
        }
    }

    /// The privacy loss ln(mu_upper(x) / mu_lower(x)) at x.
    pub fn privacy_loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.remove_loss(x),
            Adjacency::Add => -self.remove_loss(-x),
        }
    }

    /// The largest x whose privacy loss is at least `loss`.
    ///
    /// Defined for loss > ln(1-q) (remove) and loss < -ln(1-q) (add); at those limits it is
    /// +inf and -inf.
    pub fn inverse_privacy_loss(&self, loss: f64) -> f64 {
        let var = self.sigma * self.sigma;
        let q = self.q;
        match self.adjacency {
            Adjacency::Remove => {
                if q == 1.0 {
                    return -0.5 - loss * var;
                }
                if is_close(loss, (1.0 - q).ln()) {
                    return f64::INFINITY;
                }
                -0.5 - self.unsampled_loss(loss) * var
            }
            Adjacency::Add => {
                if q == 1.0 {
                    return 0.5 - loss * var;
                }
                if is_close(loss, -(1.0 - q).ln()) {
                    return f64::NEG_INFINITY;
                }
                0.5 + self.unsampled_loss(-loss) * var
            }
        }
    }

    /// The CDFs of mu_upper and mu_lower at x, each with its complement; both mix
    /// N(0, sigma^2) at x with one shifted copy, so they share the unshifted values.
    fn cdfs(&self, x: f64) -> Cdfs {
        let (q, s) = (self.q, self.sigma);
        let shift = match self.adjacency {
            Adjacency::Remove => 1.0,
            Adjacency::Add => -1.0,
        };
        let plain = normal_cdf_pair(x / s);
        let shifted = normal_cdf_pair((x + shift) / s);
        let mixed = if q == 1.0 {
            shifted
        } else {
            (
                (1.0 - q) * plain.0 + q * shifted.0,
                (1.0 - q) * plain.1 + q * shifted.1,
            )
        };
        match self.adjacency {
            Adjacency::Remove => Cdfs {
                upper: mixed,
                lower: plain,
            },
            Adjacency::Add => Cdfs {
                upper: plain,
                lower: mixed,
            },
        }
    }

    /// ln P(X <= x) for X ~ mu_lower, accurate however far in the tail.
    fn lower_log_cdf(&self, x: f64) -> f64 {
        let (q, s) = (self.q, self.sigma);
        match self.adjacency {
            Adjacency::Remove => normal_log_cdf(x / s),
            Adjacency::Add if q == 1.0 => normal_log_cdf((x - 1.0) / s),
            Adjacency::Add => log_add_exp(
                (-q).ln_1p() + normal_log_cdf(x / s),
                q.ln() + normal_log_cdf((x - 1.0) / s),
            ),
        }
    }

    /// The hockey-stick divergence delta(epsilon) = sup_S mu_upper(S) - e^epsilon mu_lower(S), in [0, 1].
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        self.divergence(epsilon).delta
    }

    /// The hockey-stick divergence at `epsilon`, as delta and as its residual.
    pub fn divergence(&self, epsilon: f64) -> Divergence {
        let q = self.q;
        if q < 1.0 {
            match self.adjacency {
                // mu_upper >= (1-q) mu_lower pointwise: below ln(1-q) the whole space counts.
                Adjacency::Remove if epsilon <= (-q).ln_1p() => {
                    return Divergence {
                        delta: (-epsilon.exp_m1()).clamp(0.0, 1.0),
                        residual: 0.0,
                    };
                }
                // mu_lower >= (1-q) mu_upper pointwise: above -ln(1-q) nothing counts.
                Adjacency::Add if epsilon >= -(-q).ln_1p() => {
                    return Divergence {
                        delta: 0.0,
                        residual: epsilon.exp_m1(),
                    };
                }
                _ => {}
            }
        }
        let x = self.inverse_privacy_loss(epsilon);
        self.divergence_at(epsilon, x, self.cdfs(x))
    }

    /// The divergence at `epsilon` from the CDFs at its x: delta = P_upper(X <= x) - e^eps
    /// P_lower(X <= x), and residual = e^eps P_lower(X > x) - P_upper(X > x).
    fn divergence_at(&self, epsilon: f64, x: f64, cdfs: Cdfs) -> Divergence {
        let scaled_lower = match Self::scaled(epsilon, cdfs.lower.0) {
            Some(scaled) => scaled,
            None => (epsilon + self.lower_log_cdf(x)).exp(),
        };
        let delta = (cdfs.upper.0 - scaled_lower).clamp(0.0, 1.0);
        let residual = if epsilon.abs() < 600.0 {
            // delta in [0, 1] means residual in [e^eps - 1, e^eps].
            // (max then min: for large epsilon e^eps - 1 rounds to e^eps or above it.)
            (epsilon.exp() * cdfs.lower.1 - cdfs.upper.1)
                .max(epsilon.exp_m1())
                .min(epsilon.exp())
        } else {
            f64::INFINITY
        };
        Divergence { delta, residual }
    }

    /// e^epsilon p, through logs only where e^epsilon could overflow or p underflow.
    fn scaled(epsilon: f64, p: f64) -> Option<f64> {
        (epsilon.abs() < 600.0 && p > 1e-290).then(|| epsilon.exp() * p)
    }

    /// (divergence of `remove` at epsilon, divergence of `add` at -epsilon), the two
    /// directions of the same subsampled mechanism (q < 1), from one inverse and two erfc
    /// evaluations.
    ///
    /// The add direction's loss is the mirror image of the remove direction's
    /// (L_add(x) = -L_remove(-x)), so its x at -epsilon is minus the remove direction's x at
    /// epsilon, and its CDFs are the complements of the ones the remove direction needs.
    pub(crate) fn mirrored_divergences(
        remove: &Self,
        add: &Self,
        epsilon: f64,
    ) -> (Divergence, Divergence) {
        debug_assert!(remove.adjacency == Adjacency::Remove && add.adjacency == Adjacency::Add);
        debug_assert!(remove.q == add.q && remove.sigma == add.sigma && remove.q < 1.0);
        let (q, s) = (remove.q, remove.sigma);
        if epsilon <= (-q).ln_1p() {
            return (remove.divergence(epsilon), add.divergence(-epsilon));
        }
        let x = remove.inverse_privacy_loss(epsilon);
        let (p0, p0c) = normal_cdf_pair(x / s);
        let (p1, p1c) = normal_cdf_pair((x + 1.0) / s);
        let mixed = ((1.0 - q) * p0 + q * p1, (1.0 - q) * p0c + q * p1c);
        let remove_cdfs = Cdfs {
            upper: mixed,
            lower: (p0, p0c),
        };
        // At -x: Phi(-x/s) = p0c and Phi((-x - 1)/s) = p1c, complements swapped.
        let add_cdfs = Cdfs {
            upper: (p0c, p0),
            lower: (mixed.1, mixed.0),
        };
        (
            remove.divergence_at(epsilon, x, remove_cdfs),
            add.divergence_at(-epsilon, -x, add_cdfs),
        )
    }

    /// The x range outside which at most e^`log_mass` of mu_upper lies (dp_accounting's
    /// `privacy_loss_tail`): each tail of N(0, sigma^2) cut at half that mass, widened by
    /// the sensitivity on the side the shifted component lies.
    pub fn truncation_x(&self, log_mass: f64) -> (f64, f64) {
        let lower = self.sigma * normal_quantile_from_log(0.5f64.ln() + log_mass);
        match self.adjacency {
            Adjacency::Remove => (lower - 1.0, -lower),
            Adjacency::Add => (lower, -lower + 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::special::normal_cdf;

    #[test]
    fn inverse_inverts_the_loss_in_both_directions() {
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            for q in [1e-4, 0.05, 1.0] {
                let m = SubsampledGaussian::new(q, 0.9, adjacency);
                for x in [-6.0, -1.0, -0.2, 0.0, 0.7, 3.0] {
                    let loss = m.privacy_loss(x);
                    let back = m.inverse_privacy_loss(loss);
                    assert!(
                        (back - x).abs() < 1e-6,
                        "{adjacency:?} q={q} x={x} back={back}"
                    );
                }
            }
        }
    }

    #[test]
    fn loss_is_decreasing_and_bounded_by_the_sampling_limits() {
        let q = 0.01;
        let remove = SubsampledGaussian::new(q, 1.0, Adjacency::Remove);
        let add = SubsampledGaussian::new(q, 1.0, Adjacency::Add);
        let xs: Vec<f64> = (-40..=40).map(|i| f64::from(i) / 4.0).collect();
        for w in xs.windows(2) {
            assert!(remove.privacy_loss(w[0]) > remove.privacy_loss(w[1]));
            assert!(add.privacy_loss(w[0]) > add.privacy_loss(w[1]));
        }
        assert!(remove.privacy_loss(5.0) > (1.0 - q).ln());
        assert!(remove.privacy_loss(50.0) >= (1.0 - q).ln());
        assert!(add.privacy_loss(-5.0) < -(1.0 - q).ln());
        assert!(add.privacy_loss(-50.0) <= -(1.0 - q).ln());
    }

    /// Without subsampling the Gaussian mechanism's delta has a closed form (Balle and Wang 2018):
    /// Phi(1/(2s) - eps s) - e^eps Phi(-1/(2s) - eps s).
    #[test]
    fn unsampled_delta_is_the_analytic_gaussian() {
        let s = 1.3;
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            let m = SubsampledGaussian::new(1.0, s, adjacency);
            for eps in [0.0, 0.5, 1.0, 3.0] {
                let want =
                    normal_cdf(0.5 / s - eps * s) - eps.exp() * normal_cdf(-0.5 / s - eps * s);
                let got = m.delta_for_epsilon(eps);
                assert!(
                    (got - want).abs() < 1e-15,
                    "{adjacency:?} eps={eps}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn delta_limits_of_the_subsampled_directions() {
        let q = 0.1;
        let remove = SubsampledGaussian::new(q, 1.0, Adjacency::Remove);
        let add = SubsampledGaussian::new(q, 1.0, Adjacency::Add);
        assert_eq!(add.delta_for_epsilon(-(1.0 - q).ln() + 1e-9), 0.0);
        let eps = (1.0 - q).ln() - 0.5;
        assert!((remove.delta_for_epsilon(eps) - (1.0 - eps.exp())).abs() < 1e-15);
        // Delta is non-increasing in epsilon.
        let mut last = 1.0;
        for i in -20..60 {
            let d = remove.delta_for_epsilon(f64::from(i) / 10.0);
            assert!(d <= last + 1e-16);
            last = d;
        }
    }

    #[test]
    fn mirrored_divergences_match_each_direction() {
        for (q, sigma) in [(256.0 / 960_000.0, 0.9), (0.05, 2.0), (0.5, 0.3)] {
            let remove = SubsampledGaussian::new(q, sigma, Adjacency::Remove);
            let add = SubsampledGaussian::new(q, sigma, Adjacency::Add);
            for i in -300..=300 {
                let eps = f64::from(i) / 37.0;
                let (r, a) = SubsampledGaussian::mirrored_divergences(&remove, &add, eps);
                for (got, want) in [(r, remove.divergence(eps)), (a, add.divergence(-eps))] {
                    for (g, w) in [(got.delta, want.delta), (got.residual, want.residual)] {
                        assert!(
                            (g - w).abs() <= 1e-15 + 1e-9 * w.abs(),
                            "q={q} eps={eps}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// The two forms agree, and the residual keeps the digits delta loses where the add
    /// direction's delta is 1 - e^eps up to a tail probability.
    #[test]
    fn residual_is_delta_minus_its_linear_part() {
        let q = 256.0 / 960_000.0;
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            let m = SubsampledGaussian::new(q, 0.9, adjacency);
            for i in -325..=325 {
                let eps = f64::from(i) / 100.0;
                let d = m.divergence(eps);
                let linear = -eps.exp_m1();
                assert!(
                    (d.delta - linear - d.residual).abs() < 1e-14,
                    "{adjacency:?} eps={eps}"
                );
            }
        }
        // Add direction at eps = -2: delta = 1 - e^-2 - O(Phi(-9.7)), the residual is the tail.
        let add = SubsampledGaussian::new(q, 0.9, Adjacency::Add);
        let d = add.divergence(-2.0);
        assert!(d.residual.abs() < 1e-20, "{d:?}");
    }

    /// Where e^eps - 1 rounds to e^eps (eps > 37), the residual's bounds meet.
    #[test]
    fn large_epsilon_divergence_is_finite() {
        let m = SubsampledGaussian::new(0.3, 0.05, Adjacency::Remove);
        for eps in [36.0, 38.0, 40.0, 300.0] {
            let d = m.divergence(eps);
            assert!((0.0..=1.0).contains(&d.delta), "{eps}: {d:?}");
            assert!(d.residual >= eps.exp_m1() - 1.0, "{eps}: {d:?}");
        }
        assert_eq!(m.divergence(700.0).residual, f64::INFINITY);
    }

    #[test]
    fn truncation_matches_dp_accounting() {
        let m = SubsampledGaussian::new(0.5, 2.0, Adjacency::Remove);
        let (lo, hi) = m.truncation_x(-50.0);
        assert!((hi - 2.0 * 9.745_474_864_965_935).abs() < 1e-12);
        assert!((lo + hi + 1.0).abs() < 1e-12);
        let m = SubsampledGaussian::new(0.5, 2.0, Adjacency::Add);
        let (lo, hi) = m.truncation_x(-50.0);
        assert!((lo + hi - 1.0).abs() < 1e-12);
    }
}
