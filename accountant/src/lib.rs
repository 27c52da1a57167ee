//! Privacy accounting for DP-SGD: the (epsilon, delta) that many steps of the Poisson-subsampled Gaussian mechanism spend, by RDP or by PLD.
//!
//! - [`rdp`]: Rényi DP over Opacus's default orders (Mironov, Talwar, Zhang 2019), converted
//!   to (epsilon, delta) by Balle et al. 2020, exactly as Opacus computes it;
//! - [`pld`]: the privacy loss distribution, discretized pessimistically (connect-the-dots,
//!   Doroshenko et al. 2022) and composed by FFT, as Google's dp_accounting computes it; a
//!   tighter upper bound.

#![deny(missing_docs)]

mod error;
mod kind;
mod params;
pub mod pld;
pub mod rdp;
pub mod special;

pub use error::{Error, Result};
pub use kind::AccountantKind;
