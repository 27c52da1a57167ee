//! Checks of the accountants' inputs, shared by every entry point.

use crate::{Error, Result};

/// A Poisson sampling rate: q in [0, 1].
pub(crate) fn sampling_rate(q: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&q) {
        Ok(q)
    } else {
        Err(Error::SamplingRate(q))
    }
}

/// A noise multiplier: finite and >= 0.
pub(crate) fn noise_multiplier(sigma: f64) -> Result<f64> {
    if sigma.is_finite() && sigma >= 0.0 {
        Ok(sigma)
    } else {
        Err(Error::NoiseMultiplier(sigma))
    }
}

/// A delta: in the open interval (0, 1).
pub(crate) fn delta(delta: f64) -> Result<f64> {
    if delta > 0.0 && delta < 1.0 {
        Ok(delta)
    } else {
        Err(Error::Delta(delta))
    }
}

/// A pure-DP mechanism's epsilon: finite and >= 0.
pub(crate) fn pure_epsilon(epsilon: f64) -> Result<f64> {
    if epsilon.is_finite() && epsilon >= 0.0 {
        Ok(epsilon)
    } else {
        Err(Error::PureEpsilon(epsilon))
    }
}

/// A target epsilon: finite and > 0.
pub(crate) fn target_epsilon(epsilon: f64) -> Result<f64> {
    if epsilon.is_finite() && epsilon > 0.0 {
        Ok(epsilon)
    } else {
        Err(Error::TargetEpsilon(epsilon))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_closed_or_open_ranges() {
        assert_eq!(sampling_rate(0.0), Ok(0.0));
        assert_eq!(sampling_rate(1.0), Ok(1.0));
        assert_eq!(noise_multiplier(0.0), Ok(0.0));
        assert_eq!(delta(1e-5), Ok(1e-5));
        assert_eq!(target_epsilon(0.5), Ok(0.5));
    }

    #[test]
    fn rejects_and_names_the_bad_value() {
        assert_eq!(sampling_rate(1.5), Err(Error::SamplingRate(1.5)));
        assert!(matches!(
            sampling_rate(f64::NAN),
            Err(Error::SamplingRate(_))
        ));
        assert_eq!(noise_multiplier(-1.0), Err(Error::NoiseMultiplier(-1.0)));
        assert!(noise_multiplier(f64::INFINITY).is_err());
        assert_eq!(delta(0.0), Err(Error::Delta(0.0)));
        assert_eq!(delta(1.0), Err(Error::Delta(1.0)));
        assert_eq!(target_epsilon(0.0), Err(Error::TargetEpsilon(0.0)));
        assert!(
            Error::SamplingRate(1.5).to_string().contains("1.5"),
            "message names the value"
        );
    }
}
