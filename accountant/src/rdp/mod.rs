//! Rényi DP of the Poisson-subsampled Gaussian mechanism and its conversion to (epsilon, delta), as Opacus computes them.
//!
//! A port of Opacus's `opacus/accountants/analysis/rdp.py`: the RDP of the sampled Gaussian
//! mechanism at each order (Mironov, Talwar, Zhang 2019), composed over steps by
//! multiplication, then the tightest (epsilon, delta) over the orders by the conversion of
//! Balle et al. 2020 (Theorem 21).

mod conversion;
mod repeat;
mod sampled_gaussian;

pub use conversion::get_privacy_spent;
pub use repeat::{Runs, compute_delta, repeat_and_select};
pub use sampled_gaussian::{compute_rdp, compute_rdp_as_dp_accounting};

use crate::Releases;

/// The RDP at each of `orders` of `steps` steps of the Poisson-subsampled Gaussian mechanism
/// (rate `q`, noise multiplier `sigma`) composed with `releases` ([`Releases::rdp`]): the
/// curve [`get_privacy_spent`] converts, and the one a repeated run's guarantee starts from
/// ([`repeat_and_select`]).
pub fn composed_rdp(
    q: f64,
    sigma: f64,
    steps: u64,
    releases: &Releases,
    orders: &[f64],
) -> Vec<f64> {
    with_releases(
        q,
        steps,
        || compute_rdp(q, sigma, steps, orders),
        releases,
        orders,
    )
}

/// [`composed_rdp`] with the steps' curve as dp_accounting computes it
/// ([`compute_rdp_as_dp_accounting`]: on or above Opacus's).
pub fn composed_rdp_as_dp_accounting(
    q: f64,
    sigma: f64,
    steps: u64,
    releases: &Releases,
    orders: &[f64],
) -> Vec<f64> {
    with_releases(
        q,
        steps,
        || compute_rdp_as_dp_accounting(q, sigma, steps, orders),
        releases,
        orders,
    )
}

/// The steps' curve (`steps_curve`, zero where no step samples anything) plus the releases'.
fn with_releases(
    q: f64,
    steps: u64,
    steps_curve: impl FnOnce() -> Vec<f64>,
    releases: &Releases,
    orders: &[f64],
) -> Vec<f64> {
    let mut rdp = if q > 0.0 && steps > 0 {
        steps_curve()
    } else {
        vec![0.0; orders.len()]
    };
    for (r, e) in rdp.iter_mut().zip(releases.rdp(orders)) {
        *r += e;
    }
    rdp
}

/// Opacus's default RDP orders: 1.1, 1.2, ..., 10.9, then 12, 13, ..., 63.
///
/// `[1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))`, computed the same way so
/// the orders 2.0, 3.0, ..., 10.0 come out exactly integral and take the integer expansion.
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + f64::from(x) / 10.0)
        .chain((12..64).map(f64::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_are_opacus_alphas() {
        let orders = default_orders();
        assert_eq!(orders.len(), 99 + 52);
        assert_eq!(orders[0], 1.1);
        assert_eq!(orders[98], 10.9);
        assert_eq!(orders[99], 12.0);
        assert_eq!(*orders.last().unwrap(), 63.0);
        assert_eq!(orders[9], 2.0, "1 + 10/10.0 is exactly 2");
        assert!(orders.windows(2).all(|w| w[0] < w[1]));
    }
}
