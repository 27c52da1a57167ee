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
use super::mechanism::SubsampledGaussian;
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

/// The PMF whose hockey-stick divergence is `deltas[k]` at loss (bottom + k) h and linear in
/// e^epsilon in between; `deltas` is reused for the probabilities.
fn from_deltas(h: f64, bottom: i64, mut deltas: Vec<f64>) -> Pmf {
    // Forced non-increasing against rounding.
    for k in 1..deltas.len() {
        deltas[k] = deltas[k].min(deltas[k - 1]);
    }
    let n = deltas.len();
    let last = deltas[n - 1];
    if n == 1 {
        return Pmf::new(h, bottom, vec![1.0 - last], last);
    }
    let (em1, e) = (h.exp_m1(), h.exp());
    // p_0 = 1 - d_0 + (d_1 - d_0) / (e^h - 1)
    // p_k = ((d_{k+1} - d_k) - e^h (d_k - d_{k-1})) / (e^h - 1)
    // p_last = (d_last - d_{last-1}) / (e^-h - 1)
    let mut previous_diff = deltas[1] - deltas[0];
    deltas[0] = 1.0 - deltas[0] + previous_diff / em1;
    for k in 1..n - 1 {
        let diff = deltas[k + 1] - deltas[k];
        deltas[k] = (diff - previous_diff * e) / em1;
        previous_diff = diff;
    }
    deltas[n - 1] = previous_diff / (-h).exp_m1();
    for p in &mut deltas {
        *p = p.max(0.0);
    }
    Pmf::new(h, bottom, deltas, last)
}

/// The pessimistic connect-the-dots PMF of `mechanism` on the grid of spacing `discretization`.
pub fn connect_the_dots(mechanism: &SubsampledGaussian, discretization: f64) -> Result<Pmf> {
    let h = discretization;
    let (bottom, top) = grid(mechanism, h)?;
    let deltas = (bottom..=top)
        .map(|k| mechanism.delta_for_epsilon(k as f64 * h))
        .collect();
    Ok(from_deltas(h, bottom, deltas))
}

/// The remove- and add-direction PMFs of one subsampled mechanism (q < 1) together: the add
/// direction's grid is the remove direction's mirrored, and each mirrored pair of grid points
/// shares its special-function evaluations ([`SubsampledGaussian::mirrored_deltas`]).
/// Equal to `connect_the_dots` on each direction, in half the time.
pub(crate) fn connect_the_dots_both(
    remove: &SubsampledGaussian,
    add: &SubsampledGaussian,
    discretization: f64,
) -> Result<(Pmf, Pmf)> {
    let h = discretization;
    let (r_bottom, r_top) = grid(remove, h)?;
    let (a_bottom, a_top) = grid(add, h)?;
    let mut remove_deltas = vec![0.0; (r_top - r_bottom + 1) as usize];
    let mut add_deltas = vec![0.0; (a_top - a_bottom + 1) as usize];
    for k in r_bottom.min(-a_top)..=r_top.max(-a_bottom) {
        let (in_remove, in_add) = (
            (r_bottom..=r_top).contains(&k),
            (a_bottom..=a_top).contains(&-k),
        );
        let (r, a) = match (in_remove, in_add) {
            (true, true) => SubsampledGaussian::mirrored_deltas(remove, add, k as f64 * h),
            (true, false) => (remove.delta_for_epsilon(k as f64 * h), 0.0),
            (false, true) => (0.0, add.delta_for_epsilon(-k as f64 * h)),
            (false, false) => continue,
        };
        if in_remove {
            remove_deltas[(k - r_bottom) as usize] = r;
        }
        if in_add {
            add_deltas[(-k - a_bottom) as usize] = a;
        }
    }
    Ok((
        from_deltas(h, r_bottom, remove_deltas),
        from_deltas(h, a_bottom, add_deltas),
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
