//! Pessimistic connect-the-dots discretization of one step's privacy loss (Doroshenko et al. 2022, Algorithm 1).
//!
//! The loss is put on the grid k h between the losses at the noise truncation points, with
//! masses chosen so that the discrete distribution's hockey-stick divergence equals the
//! mechanism's at every grid point and interpolates it linearly in e^epsilon in between.
//! The true curve is convex in e^epsilon, so the discrete one lies above it everywhere: an
//! upper bound that is tight at the grid points. The divergence at the top grid point
//! (the loss of the truncated lower tail and beyond) becomes the mass at infinity.
//! Follows dp_accounting's `create_pmf_pessimistic_connect_dots_fixed_gap`.

use super::Pmf;
use super::fft::MAX_BINS;
use super::mechanism::{Divergence, SubsampledGaussian};
use crate::{Error, Result};

/// ln of the noise mass left out beyond the truncation points (dp_accounting's
/// `log_mass_truncation_bound`); it is not lost but counted at infinite loss.
pub(crate) const LOG_MASS_TRUNCATION: f64 = -50.0;

/// The grid indices [bottom, top] of `mechanism`'s loss between its truncation points.
fn grid(mechanism: &SubsampledGaussian, h: f64) -> Result<(i64, i64)> {
    let (lower_x, upper_x) = mechanism.truncation_x(LOG_MASS_TRUNCATION);
    let top = (mechanism.privacy_loss(lower_x) / h).ceil();
    let bottom = (mechanism.privacy_loss(upper_x) / h).floor();
    let bins = top - bottom + 1.0;
    if bins.is_nan() || bins > MAX_BINS as f64 {
        return Err(Error::PldTooLarge {
            bins: if bins.is_finite() {
                bins as u64
            } else {
                u64::MAX
            },
            max: MAX_BINS,
            sigma: f64::NAN,
        });
    }
    Ok((bottom as i64, top as i64))
}

/// The PMF whose hockey-stick divergence is `d[k]` at loss (bottom + k) h and linear in
/// e^epsilon in between:
///
/// - p_0 = 1 - delta_0 + (delta_1 - delta_0) / (e^h - 1)
/// - p_k = ((delta_{k+1} - delta_k) - e^h (delta_k - delta_{k-1})) / (e^h - 1)
/// - p_last = (delta_last - delta_{last-1}) / (e^-h - 1), and delta_last at infinity.
///
/// A part of delta linear in e^epsilon cancels from these, so each p_k is taken from the
/// residuals (delta - (1 - e^epsilon)) instead when they are the smaller numbers around k:
/// the second differences then keep their digits (dp_accounting, which uses delta alone,
/// gets about 1e-8 of spurious probability per step from rounding in the add direction).
fn from_divergences(h: f64, bottom: i64, mut d: Vec<Divergence>) -> Pmf {
    let n = d.len();
    // Delta forced non-increasing against rounding.
    for k in 1..n {
        d[k].delta = d[k].delta.min(d[k - 1].delta);
    }
    let last = d[n - 1].delta;
    if n == 1 {
        return Pmf::new(h, bottom, vec![1.0 - last], last);
    }
    let (em1, e, emm1) = (h.exp_m1(), h.exp(), (-h).exp_m1());
    let probability = |k: usize, v: &dyn Fn(usize) -> f64, residual: bool| -> f64 {
        if k == 0 {
            let head = if residual { 0.0 } else { 1.0 };
            head - v(0) + (v(1) - v(0)) / em1
        } else if k == n - 1 {
            let head = if residual {
                ((bottom + k as i64) as f64 * h).exp()
            } else {
                0.0
            };
            head + (v(k) - v(k - 1)) / emm1
        } else {
            ((v(k + 1) - v(k)) - e * (v(k) - v(k - 1))) / em1
        }
    };
    let probabilities = (0..n)
        .map(|k| {
            let stencil = k.saturating_sub(1)..=(k + 1).min(n - 1);
            let largest = |f: fn(&Divergence) -> f64| {
                stencil.clone().map(|j| f(&d[j]).abs()).fold(0.0, f64::max)
            };
            let residual = largest(|v| v.residual) < largest(|v| v.delta);
            let p = if residual {
                probability(k, &|j| d[j].residual, true)
            } else {
                probability(k, &|j| d[j].delta, false)
            };
            p.max(0.0)
        })
        .collect();
    Pmf::new(h, bottom, probabilities, last)
}

/// The pessimistic connect-the-dots PMF of `mechanism` on the grid of spacing `discretization`.
pub fn connect_the_dots(mechanism: &SubsampledGaussian, discretization: f64) -> Result<Pmf> {
    let h = discretization;
    let (bottom, top) = grid(mechanism, h)?;
    let divergences = (bottom..=top)
        .map(|k| mechanism.divergence(k as f64 * h))
        .collect();
    Ok(from_divergences(h, bottom, divergences))
}

/// The remove- and add-direction PMFs of one subsampled mechanism (q < 1) together: the add
/// direction's grid is the remove direction's mirrored, and each mirrored pair of grid points
/// shares its special-function evaluations.
/// Equal to `connect_the_dots` on each direction, in half the time.
pub(crate) fn connect_the_dots_both(
    remove: &SubsampledGaussian,
    add: &SubsampledGaussian,
    discretization: f64,
) -> Result<(Pmf, Pmf)> {
    let h = discretization;
    let (r_bottom, r_top) = grid(remove, h)?;
    let (a_bottom, a_top) = grid(add, h)?;
    let unset = Divergence {
        delta: f64::NAN,
        residual: f64::NAN,
    };
    let mut remove_d = vec![unset; (r_top - r_bottom + 1) as usize];
    let mut add_d = vec![unset; (a_top - a_bottom + 1) as usize];
    for k in r_bottom.min(-a_top)..=r_top.max(-a_bottom) {
        let in_remove = (r_bottom..=r_top).contains(&k);
        let in_add = (a_bottom..=a_top).contains(&-k);
        let eps = k as f64 * h;
        let (r, a) = match (in_remove, in_add) {
            (true, true) => SubsampledGaussian::mirrored_divergences(remove, add, eps),
            (true, false) => (remove.divergence(eps), unset),
            (false, true) => (unset, add.divergence(-eps)),
            (false, false) => continue,
        };
        if in_remove {
            remove_d[(k - r_bottom) as usize] = r;
        }
        if in_add {
            add_d[(-k - a_bottom) as usize] = a;
        }
    }
    Ok((
        from_divergences(h, r_bottom, remove_d),
        from_divergences(h, a_bottom, add_d),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::mechanism::Adjacency;
    use super::*;

    #[test]
    fn discrete_delta_matches_the_mechanism_at_grid_points_and_bounds_it_between() {
        let h = 1e-2;
        for adjacency in [Adjacency::Remove, Adjacency::Add] {
            let m = SubsampledGaussian::new(0.1, 1.0, adjacency);
            let pmf = connect_the_dots(&m, h).unwrap();
            let total: f64 = pmf.probabilities().iter().sum::<f64>() + pmf.infinity_mass();
            assert!((total - 1.0).abs() < 1e-9, "{adjacency:?}: mass {total}");
            for k in 0..200 {
                let eps = f64::from(k) * h;
                let (got, want) = (pmf.delta_for_epsilon(eps), m.delta_for_epsilon(eps));
                assert!(
                    (got - want).abs() < 1e-12,
                    "{adjacency:?} eps={eps}: {got} vs {want}"
                );
                let mid = eps + 0.5 * h;
                let (got, truth) = (pmf.delta_for_epsilon(mid), m.delta_for_epsilon(mid));
                assert!(
                    got >= truth - 1e-15,
                    "{adjacency:?} eps={mid}: {got} below {truth}"
                );
            }
        }
    }

    #[test]
    fn both_directions_at_once_equal_each_alone() {
        for (q, sigma) in [(256.0 / 960_000.0, 0.9), (0.3, 1.5)] {
            let remove = SubsampledGaussian::new(q, sigma, Adjacency::Remove);
            let add = SubsampledGaussian::new(q, sigma, Adjacency::Add);
            let (r, a) = connect_the_dots_both(&remove, &add, 1e-3).unwrap();
            for (both, alone) in [
                (r, connect_the_dots(&remove, 1e-3)),
                (a, connect_the_dots(&add, 1e-3)),
            ] {
                let alone = alone.unwrap();
                assert_eq!(both.lower_index(), alone.lower_index());
                assert_eq!(both.probabilities().len(), alone.probabilities().len());
                for (x, y) in both.probabilities().iter().zip(alone.probabilities()) {
                    assert!((x - y).abs() < 1e-11, "{x} vs {y}");
                }
                assert!((both.infinity_mass() - alone.infinity_mass()).abs() < 1e-20);
            }
        }
    }

    /// Rounding leaves no spurious probability in the add direction's low losses: what is
    /// there is the Gaussian's far tail (dp_accounting has 8e-9 below -1 from rounding).
    #[test]
    fn add_direction_low_losses_carry_only_their_true_mass() {
        let q = 256.0 / 960_000.0;
        let remove = SubsampledGaussian::new(q, 0.9, Adjacency::Remove);
        let add = SubsampledGaussian::new(q, 0.9, Adjacency::Add);
        let (_, add) = connect_the_dots_both(&remove, &add, 1e-4).unwrap();
        let below = |loss: f64| -> f64 {
            let cut = ((loss / 1e-4) as i64 - add.lower_index()) as usize;
            add.probabilities()[..cut].iter().sum()
        };
        // P(loss < -c) = P(X > 0.5 + sigma^2 ln((e^c - 1 + q) / q)), from scipy.
        for (loss, truth) in [
            (-1.0, 1.463_421_685_817_974e-17),
            (-2.0, 2.949_471_889_706_447e-22),
        ] {
            let got = below(loss);
            assert!(
                (got / truth - 1.0).abs() < 0.01,
                "below {loss}: {got:e} vs {truth:e}"
            );
        }
        assert!(below(0.0) > 0.2, "the bulk is still there");
        let total: f64 = add.probabilities().iter().sum::<f64>() + add.infinity_mass();
        assert!((total - 1.0).abs() < 1e-11, "mass {total}");
    }

    /// Grid sizes and offsets dp_accounting 0.6.0 reports for q = 256/960000, sigma = 0.9.
    #[test]
    fn grid_matches_dp_accounting() {
        let q = 256.0 / 960_000.0;
        let remove = connect_the_dots(&SubsampledGaussian::new(q, 0.9, Adjacency::Remove), 1e-4);
        let add = connect_the_dots(&SubsampledGaussian::new(q, 0.9, Adjacency::Add), 1e-4);
        let (remove, add) = (remove.unwrap(), add.unwrap());
        assert_eq!(
            (remove.lower_index(), remove.probabilities().len()),
            (-3, 32_558)
        );
        assert_eq!(
            (add.lower_index(), add.probabilities().len()),
            (-32_554, 32_558)
        );
        assert!((remove.infinity_mass() / 2.586_719_126_395_048e-27 - 1.0).abs() < 1e-6);
        assert_eq!(add.infinity_mass(), 0.0);
    }
}
