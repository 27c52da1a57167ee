//! The accountant's one error type: which input was invalid, with its value.

use crate::AccountantKind;

/// Everything that can go wrong when accounting: each variant names the bad value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The Poisson sampling rate must lie in [0, 1].
    #[error("sampling rate q = {0} is outside [0, 1]")]
    SamplingRate(f64),
    /// The noise multiplier must be a finite number >= 0.
    #[error("noise multiplier sigma = {0} must be finite and >= 0")]
    NoiseMultiplier(f64),
    /// Delta must lie in the open interval (0, 1).
    #[error("delta = {0} is outside (0, 1)")]
    Delta(f64),
    /// A target epsilon must be a finite number > 0.
    #[error("target epsilon = {0} must be finite and > 0")]
    TargetEpsilon(f64),
    /// No noise multiplier brings the accountant's epsilon down to the target.
    #[error(
        "target epsilon = {target} is unreachable with the {accountant} accountant at delta = {delta}: \
         even sigma = {sigma} gives epsilon = {epsilon}"
    )]
    UnreachableEpsilon {
        /// The target that was asked for.
        target: f64,
        /// The accountant that was asked.
        accountant: AccountantKind,
        /// The delta the target was asked at.
        delta: f64,
        /// The largest noise multiplier tried.
        sigma: f64,
        /// The epsilon that noise multiplier gives.
        epsilon: f64,
    },
    /// A pure-DP mechanism's epsilon must be a finite number >= 0.
    #[error("a pure-DP mechanism's epsilon = {0} must be finite and >= 0")]
    PureEpsilon(f64),
    /// A number of runs' mean must be finite and at least 1, its shape >= 0.
    #[error(
        "the random number of runs must have a mean >= 1 and a shape >= 0 (mean {mean}, shape {shape})"
    )]
    Runs {
        /// The mean asked for.
        mean: f64,
        /// The shape asked for (infinite for Poisson).
        shape: f64,
    },
    /// The PLD discretization interval must be a finite number > 0.
    #[error("PLD discretization interval = {0} must be finite and > 0")]
    Discretization(f64),
    /// The PLD tail mass truncation must lie in [0, 1).
    #[error("PLD tail mass truncation = {0} is outside [0, 1)")]
    TailMassTruncation(f64),
    /// The discretized privacy loss would need more bins than we are willing to allocate.
    #[error(
        "the PLD would need {bins} bins (at most {max}) for sigma = {sigma}: \
         use a larger discretization interval, or the RDP accountant"
    )]
    PldTooLarge {
        /// Bins the distribution would need.
        bins: u64,
        /// The most bins allowed.
        max: u64,
        /// The noise multiplier that asked for them.
        sigma: f64,
    },
    /// An accountant name that is neither `rdp` nor `pld`.
    #[error("unknown accountant {0:?} (expected \"rdp\" or \"pld\")")]
    UnknownAccountant(String),
}

/// The accountant's result type.
pub type Result<T> = std::result::Result<T, Error>;
