//! Privacy accounting for DP-SGD: the (epsilon, delta) that many steps of the Poisson-subsampled Gaussian mechanism spend, by RDP or by PLD.
//!
//! Two accountants, both pure functions of (sampling rate q, noise multiplier sigma, steps,
//! delta):
//! - [`rdp`]: Rényi DP over Opacus's default orders (Mironov, Talwar, Zhang 2019), converted
//!   to (epsilon, delta) by Balle et al. 2020, exactly as Opacus computes it;
//! - [`pld`]: the privacy loss distribution, discretized pessimistically (connect-the-dots,
//!   Doroshenko et al. 2022) and composed by FFT, as Google's dp_accounting computes it; a
//!   tighter upper bound.
//!
//! [`epsilon`] asks either for the budget spent, [`calibrate_noise`] for the smallest noise
//! multiplier meeting a target; [`epsilon_with_gaussians`] and
//! [`calibrate_noise_with_gaussians`] do the same for a run that also releases statistics
//! through the (unsampled) Gaussian mechanism, composed in the same accountant.
//!
//! ```
//! use accountant::{AccountantKind, calibrate_noise, epsilon};
//!
//! let q = 0.05;
//! let spent = epsilon(AccountantKind::Pld, q, 2.0, 100, 1e-6)?;
//! println!("{spent}"); // epsilon = 1.273... at delta = 1e-6 (pld)
//! let sigma = calibrate_noise(AccountantKind::Rdp, q, 1.0, 100, 1e-6)?;
//! assert!(epsilon(AccountantKind::Rdp, q, sigma, 100, 1e-6)?.epsilon <= 1.0);
//! # Ok::<(), accountant::Error>(())
//! ```

#![deny(missing_docs)]

mod calibrate;
mod error;
mod kind;
mod params;
pub mod pld;
pub mod rdp;
mod releases;
pub mod special;
mod spent;

pub use calibrate::{
    CALIBRATION_TOLERANCE, calibrate_noise, calibrate_noise_composed,
    calibrate_noise_with_gaussians,
};
pub use error::{Error, Result};
pub use kind::AccountantKind;
pub use releases::Releases;
pub use spent::{PrivacySpent, epsilon, epsilon_composed, epsilon_with_gaussians};
