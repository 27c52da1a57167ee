//! Privacy accounting for DP-SGD: the (epsilon, delta) that many steps of the Poisson-subsampled Gaussian mechanism spend.
//!
//! [`rdp`]: Rényi DP over Opacus's default orders (Mironov, Talwar, Zhang 2019), converted
//! to (epsilon, delta) by Balle et al. 2020, exactly as Opacus computes it.

#![deny(missing_docs)]

mod error;
mod kind;
pub mod rdp;
pub mod special;

pub use error::{Error, Result};
pub use kind::AccountantKind;
