//! From RDP to (epsilon, delta): the conversion of Balle et al. 2020 (Theorem 21), as Opacus's `get_privacy_spent`.

/// The smallest epsilon over the orders at `delta`, and the order that gives it.
///
/// For each order alpha with RDP r:
/// `eps = r - (ln delta + ln alpha) / (alpha - 1) + ln((alpha - 1) / alpha)`.
/// NaN values are skipped (the first minimum wins, as numpy's `nanargmin`); when every value
/// is NaN the result is `(inf, NaN)`.
///
/// # Panics
/// When `orders` and `rdp` differ in length.
pub fn get_privacy_spent(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    assert_eq!(
        orders.len(),
        rdp.len(),
        "one RDP value per order: {} orders, {} values",
        orders.len(),
        rdp.len()
    );
    let log_delta = delta.ln();
    let mut best: Option<(f64, f64)> = None;
    for (&alpha, &r) in orders.iter().zip(rdp) {
        let eps = r - (log_delta + alpha.ln()) / (alpha - 1.0) + ((alpha - 1.0) / alpha).ln();
        if eps.is_nan() {
            continue;
        }
        if best.is_none_or(|(b, _)| eps < b) {
            best = Some((eps, alpha));
        }
    }
    best.unwrap_or((f64::INFINITY, f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_best_order() {
        let orders = [2.0, 4.0, 8.0];
        let rdp = [0.5, 0.6, 3.0];
        let (eps, order) = get_privacy_spent(&orders, &rdp, 1e-5);
        let at = |a: f64, r: f64| r - (1e-5f64.ln() + a.ln()) / (a - 1.0) + ((a - 1.0) / a).ln();
        assert_eq!(order, 4.0);
        assert_eq!(eps, at(4.0, 0.6));
        assert!(eps < at(2.0, 0.5) && eps < at(8.0, 3.0));
    }

    #[test]
    fn nan_is_skipped_and_all_nan_is_infinite() {
        let (eps, order) = get_privacy_spent(&[1.0, 2.0], &[0.1, 0.1], 1e-5);
        assert_eq!(order, 2.0, "order 1 gives NaN and is skipped");
        assert!(eps.is_finite());
        let (eps, order) = get_privacy_spent(&[1.0], &[f64::INFINITY], 1e-5);
        assert!(eps.is_infinite() && order.is_nan());
    }

    #[test]
    fn infinite_rdp_gives_infinite_epsilon() {
        let (eps, _) = get_privacy_spent(&[2.0, 3.0], &[f64::INFINITY; 2], 1e-5);
        assert_eq!(eps, f64::INFINITY);
    }

    #[test]
    #[should_panic(expected = "one RDP value per order")]
    fn mismatched_lengths_panic() {
        get_privacy_spent(&[2.0], &[], 1e-5);
    }
}
