//! A discretized privacy loss distribution: probabilities on a grid of losses plus a mass at infinity.

use super::fft;
use crate::Result;

/// The probability mass function of a discretized privacy loss.
///
/// `probabilities()[i]` is the probability of the loss `(lower_index() + i) * discretization()`;
/// `infinity_mass()` is the probability of an infinite loss (truncated tails are put there,
/// so that the hockey-stick divergence computed from this PMF is an upper bound).
#[derive(Clone, Debug, PartialEq)]
pub struct Pmf {
    discretization: f64,
    lower_index: i64,
    probabilities: Vec<f64>,
    infinity_mass: f64,
}

impl Pmf {
    /// A PMF from its parts. `probabilities` must not be empty.
    ///
    /// # Panics
    /// When `probabilities` is empty.
    pub fn new(
        discretization: f64,
        lower_index: i64,
        probabilities: Vec<f64>,
        infinity_mass: f64,
    ) -> Self {
        assert!(!probabilities.is_empty(), "a PMF needs at least one bin");
        Self {
            discretization,
            lower_index,
            probabilities,
            infinity_mass,
        }
    }

    /// The distribution of a mechanism that releases nothing: loss 0 with probability 1.
    pub fn identity(discretization: f64) -> Self {
        Self::new(discretization, 0, vec![1.0], 0.0)
    }

    /// The grid spacing of the losses.
    pub fn discretization(&self) -> f64 {
        self.discretization
    }

    /// The grid index of the first bin's loss.
    pub fn lower_index(&self) -> i64 {
        self.lower_index
    }

    /// The probabilities of the finite losses, from the lowest loss up.
    pub fn probabilities(&self) -> &[f64] {
        &self.probabilities
    }

    /// The probability of an infinite loss.
    pub fn infinity_mass(&self) -> f64 {
        self.infinity_mass
    }

    /// The loss of bin `i`.
    fn loss(&self, i: usize) -> f64 {
        (self.lower_index + i as i64) as f64 * self.discretization
    }

    /// The hockey-stick divergence at `epsilon`: inf_mass + sum over losses l > epsilon of
    /// (1 - e^(epsilon - l)) P(l).
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let finite: f64 = self
            .probabilities
            .iter()
            .enumerate()
            .map(|(i, &p)| (i, self.loss(i), p))
            .filter(|&(_, loss, _)| loss > epsilon)
            .map(|(_, loss, p)| -(epsilon - loss).exp_m1() * p)
            .sum();
        self.infinity_mass + finite
    }

    /// The smallest epsilon >= 0 whose hockey-stick divergence is at most `delta`
    /// (infinite when the infinity mass alone exceeds it), as dp_accounting's
    /// `_get_epsilon_for_delta`: walk down from the largest loss, accumulating
    /// P(L >= l) and E[e^-L; L >= l], until epsilon falls inside the current bin.
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let (mut mass_upper, mut mass_lower) = (self.infinity_mass, 0.0f64);
        for i in (0..self.probabilities.len()).rev() {
            let loss = self.loss(i);
            if mass_upper > delta
                && mass_lower > 0.0
                && ((mass_upper - delta) / mass_lower).ln() >= loss
            {
                break;
            }
            let p = self.probabilities[i];
            mass_upper += p;
            mass_lower += (-loss).exp() * p;
            if mass_upper >= delta && mass_lower == 0.0 {
                return loss.max(0.0);
            }
        }
        if mass_upper <= mass_lower + delta {
            0.0
        } else {
            ((mass_upper - delta) / mass_lower).ln()
        }
    }

    /// This PMF with its lowest losses, of total probability at most `mass`, moved up to the
    /// lowest loss kept; `None` when no bin can go. Moving probability to a higher loss can
    /// only raise the hockey-stick divergence, of this PMF and of any composition with it.
    pub(crate) fn lower_tail_collapsed(&self, mass: f64) -> Option<Pmf> {
        let mut cut = 0.0;
        let mut keep_from = 0;
        for (i, &p) in self.probabilities.iter().enumerate() {
            if cut + p > mass || i + 1 == self.probabilities.len() {
                break;
            }
            cut += p;
            keep_from = i + 1;
        }
        if keep_from == 0 {
            return None;
        }
        let mut probabilities = self.probabilities[keep_from..].to_vec();
        probabilities[0] += cut;
        Some(Pmf::new(
            self.discretization,
            self.lower_index + keep_from as i64,
            probabilities,
            self.infinity_mass,
        ))
    }

    /// The PMF of the composition of two mechanisms: the exact convolution (no truncation).
    ///
    /// # Panics
    /// When the discretizations differ.
    pub fn compose(&self, other: &Pmf) -> Pmf {
        assert_eq!(
            self.discretization, other.discretization,
            "only PMFs on the same grid compose"
        );
        let probabilities = fft::convolve(&self.probabilities, &other.probabilities);
        let infinity_mass =
            self.infinity_mass + other.infinity_mass - self.infinity_mass * other.infinity_mass;
        Pmf::new(
            self.discretization,
            self.lower_index + other.lower_index,
            probabilities,
            infinity_mass,
        )
    }

    /// The PMF of `times` compositions of this mechanism with itself, by one FFT, a power
    /// and an inverse FFT.
    ///
    /// Losses whose total probability is at most `tail_mass_truncation` (bounded with the
    /// Chernoff bound) may be cut from the tails; that mass is added to the infinity mass, so
    /// the result stays an upper bound. `times == 0` gives the identity.
    pub fn self_compose(&self, times: u64, tail_mass_truncation: f64) -> Result<Pmf> {
        let (composed, _) = fft::self_compose_pair(self, None, times, tail_mass_truncation)?;
        Ok(composed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Pmf {
        // Losses -0.2, -0.1, 0, 0.1, 0.2 (h = 0.1) plus a little at infinity.
        Pmf::new(0.1, -2, vec![0.1, 0.2, 0.3, 0.25, 0.149], 0.001)
    }

    #[test]
    fn delta_sums_the_positive_part() {
        let p = example();
        let want = 0.001 + 0.25 * -(-0.1f64).exp_m1() + 0.149 * -(-0.2f64).exp_m1();
        assert!((p.delta_for_epsilon(0.0) - want).abs() < 1e-16);
        assert_eq!(p.delta_for_epsilon(0.2), 0.001);
        assert_eq!(p.delta_for_epsilon(5.0), 0.001);
    }

    #[test]
    fn epsilon_inverts_delta() {
        let p = example();
        for eps in [0.01, 0.05, 0.13, 0.19] {
            let delta = p.delta_for_epsilon(eps);
            let back = p.epsilon_for_delta(delta);
            assert!((back - eps).abs() < 1e-12, "{eps} -> {delta} -> {back}");
        }
        assert_eq!(p.epsilon_for_delta(0.0005), f64::INFINITY);
        assert_eq!(p.epsilon_for_delta(0.5), 0.0);
    }

    #[test]
    fn collapsing_the_lower_tail_moves_mass_up() {
        let p = example();
        assert_eq!(p.lower_tail_collapsed(0.05), None);
        let c = p.lower_tail_collapsed(0.35).unwrap();
        assert_eq!(c.lower_index(), 0);
        assert_eq!(c.probabilities().len(), 3);
        assert!((c.probabilities()[0] - 0.6).abs() < 1e-15);
        for eps in [-0.3, -0.1, 0.0, 0.1] {
            assert!(c.delta_for_epsilon(eps) >= p.delta_for_epsilon(eps));
        }
        let all = p.lower_tail_collapsed(1.0).unwrap();
        assert_eq!(all.probabilities().len(), 1, "the top bin always stays");
    }

    #[test]
    fn compose_is_the_convolution() {
        let a = Pmf::new(0.5, -1, vec![0.5, 0.5], 0.0);
        let b = Pmf::new(0.5, 2, vec![0.25, 0.75], 0.1);
        let c = a.compose(&b);
        assert_eq!(c.lower_index(), 1);
        let want = [0.125, 0.5, 0.375];
        for (g, w) in c.probabilities().iter().zip(want) {
            assert!((g - w).abs() < 1e-15);
        }
        assert!((c.infinity_mass() - 0.1).abs() < 1e-16);
        let id = Pmf::identity(0.5).compose(&b);
        assert_eq!(id.lower_index(), 2);
        assert!((id.probabilities()[1] - 0.75).abs() < 1e-15);
    }
}
