//! Quiet coordinates: the gradient coordinates of audit-only parameters appended to the model,
//! which no real row touches, and the rows whose gradient lies only there (an audit's canaries).
//!
//! The audit-only parameters take an input fixed at zero, so every real row's gradient on them
//! is exactly zero and they never change the model's output (the optimizer is not even given
//! them: stepping a parameter nothing reads changes nothing). The step treats them as it treats
//! every parameter: each row is clipped over its whole gradient (model and quiet coordinates:
//! a real row's norm is its model gradient's, a canary's its quiet gradient's), the noise is
//! drawn for the model's and the quiet coordinates together (one [`super::noise::NoiseSource`]
//! of `numel + d` values), and the sum is divided by the expected batch size. What the step
//! then holds on the quiet coordinates is the mechanism's own output there: the canaries the
//! sampler drew, clipped, plus the noise, and nothing of the real rows.

use crate::mechanism::fused::Clip;

/// The sampled rows whose gradient is zero outside the quiet coordinates, before clipping: row
/// `r` has `values[r * width + j]` at quiet coordinate `coords[r * width + j]`, for `j < width`
/// (distinct coordinates within a row).
#[derive(Debug, Clone, Copy)]
pub struct QuietRows<'a> {
    /// Quiet coordinates (0-based within the quiet block), `width` per row.
    pub coords: &'a [u32],
    /// The rows' gradient values there, `width` per row.
    pub values: &'a [f32],
    /// Nonzero coordinates per row.
    pub width: usize,
}

impl QuietRows<'_> {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds each row's clipped and scaled gradient to `quiet` (the step's gradient on the
    /// quiet coordinates): `min(scale, clip_scaled / (|g| + eps)) g`, the weight every row gets
    /// ([`super::grad_sample::clip_weights`], [`super::fused`]), with `|g|` the row's norm over
    /// its whole gradient, which is zero off these coordinates.
    ///
    /// # Panics
    ///
    /// If a coordinate is outside `quiet`, or `coords` and `values` differ in length.
    pub fn add_clipped(&self, clip: Clip, quiet: &mut [f32]) {
        assert_eq!(
            self.coords.len(),
            self.values.len(),
            "a coordinate per value"
        );
        if self.width == 0 {
            return;
        }
        for (coords, values) in self
            .coords
            .chunks_exact(self.width)
            .zip(self.values.chunks_exact(self.width))
        {
            let sq: f32 = values.iter().map(|v| v * v).sum();
            let w = if clip.clip_scaled.is_finite() {
                (clip.clip_scaled / (sq.sqrt() + clip.eps)).min(clip.scale)
            } else {
                clip.scale
            };
            for (&c, &v) in coords.iter().zip(values) {
                quiet[c as usize] += w * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_clipped_over_their_whole_gradient_and_scaled() {
        let clip = Clip {
            clip_scaled: 2.0 * 0.25,
            scale: 0.25,
            eps: 1e-6,
        };
        // Row 0: norm 5 on coordinates 1 and 3 (clipped to 2); row 1: norm 1 at coordinate 3
        // (kept, times the scale).
        let rows = QuietRows {
            coords: &[1, 3, 3, 0],
            values: &[3.0, 4.0, 1.0, 0.0],
            width: 2,
        };
        assert_eq!(rows.len(), 2);
        let mut quiet = vec![0.0f32; 4];
        rows.add_clipped(clip, &mut quiet);
        let f = 0.5 / (5.0 + 1e-6);
        let want = [0.0, 3.0 * f, 0.0, 4.0 * f + 0.25];
        for (g, w) in quiet.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{quiet:?} vs {want:?}");
        }
        // The clipped row's contribution has norm C times the scale.
        let norm = ((3.0 * f).powi(2) + (4.0 * f).powi(2)).sqrt();
        assert!((norm - 0.5).abs() < 1e-6);
    }
}
