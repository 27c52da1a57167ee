//! The DP-SGD mechanism: everything the printed epsilon depends on, and nothing else (no file,
//! network or terminal I/O), so that a reviewer can read it in one sitting.
//!
//! - [`sampler`] and [`batches`]: exact Poisson sampling of the privacy units at rate q, the
//!   rate the accountant is told;
//! - [`grad_sample`] and [`fused`]: per-example gradients in closed form (libtorch, and plain
//!   Rust on the CPU), their norms and Opacus's clip factor;
//! - [`dp_step`]: clip each unit's gradient to C, sum, add N(0, (sigma C)^2) once, divide by
//!   the expected batch size, step the optimizer ([`optim`]);
//! - [`noise`], [`normal`] and [`keystream`]: the Gaussian noise, from a cryptographic stream
//!   (AES-256-CTR, or ChaCha20 as the reference);
//! - [`quiet`]: an audit's quiet coordinates, parameters no real row touches, where its
//!   canaries' gradients go through the same clipping and noise;
//! - [`privacy`]: the accountant's view of the run (q, sigma, sensitivity, steps, the Gaussian
//!   releases composed with them) and the calibration of sigma for a target epsilon;
//! - [`held_out`]: the held-out accuracy's own Gaussian release, composed there;
//! - [`quantiles`]: DP quantiles by the exponential mechanism, the bounds of the columns a run
//!   has no public bounds for, composed there too.
//!
//! The rest of the trainer calls into this folder: loading, splitting and transforming the
//! records (`data`, `features`), the exchanges between workers (`train`), and what a run
//! reports and leaves behind.

pub mod batches;
pub mod dp_step;
pub mod fused;
pub mod grad_sample;
pub mod held_out;
pub mod keystream;
pub mod noise;
pub mod normal;
pub mod optim;
pub mod privacy;
pub mod quantiles;
pub mod quiet;
pub mod sampler;
