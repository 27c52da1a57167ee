//! The clipped gradient sum of a small MLP on the CPU in plain Rust, one example at a time:
//! the same closed form as [`crate::grad_sample`] (forward, `sigmoid(z) - y` at the logit,
//! back through `W` and the ReLU masks, per-example norm `sqrt(sum_l |a_l, 1|^2 |delta_l|^2)`,
//! Opacus's clip factor), without a libtorch call per operation.
//!
//! At batch 256 and 551 parameters a libtorch step is some 25 calls of about a microsecond of
//! fixed cost each for about 0.5 MFLOP of arithmetic; here the step is three copies in and
//! one out, and inputs that are exactly 0 (most of a one-hot or 0/1 census row) are skipped in
//! the first layer's products, which changes no sum. [`crate::dp_step::DpStep`] uses it on the
//! CPU where it is faster (small models at small batches, see [`Fused::worthwhile`]); tests
//! hold it equal to the libtorch path.

use tch::Tensor;

use crate::mlp::Shape;

/// Host buffers for one worker's fused steps, reused across steps.
#[derive(Debug)]
pub struct Fused {
    /// Layer widths: inputs, hidden..., 1.
    sizes: Vec<usize>,
    /// Start of each layer's `[in + 1, out]` block in the flat parameters.
    offsets: Vec<usize>,
    params: Vec<f32>,
    grad: Vec<f32>,
    rows: Vec<f32>,
    /// Per layer `l >= 1`: the example's input to layer `l` (ReLU activations).
    acts: Vec<Vec<f32>>,
    /// Per layer: the example's pre-activation, then the gradient at the layer's output.
    deltas: Vec<Vec<f32>>,
    /// Per layer: the positions of the nonzero entries of the example's input to it.
    nonzero: Vec<Vec<usize>>,
    /// Per layer: how many of `nonzero` are set.
    nonzero_len: Vec<usize>,
}

/// What the clipped sum is scaled and clipped by.
#[derive(Debug, Clone, Copy)]
pub struct Clip {
    /// The clip bound times the scale (`f32::INFINITY`: no clipping).
    pub clip_scaled: f32,
    /// The scale, 1 / expected batch size: the largest weight an example gets.
    pub scale: f32,
    /// Opacus's guard against a zero norm.
    pub eps: f32,
}

impl Fused {
    /// Buffers for a model of `shape`.
    pub fn new(shape: &Shape) -> Self {
        let depth = shape.depth();
        let mut sizes: Vec<usize> = (0..depth).map(|l| shape.layer(l).0).collect();
        sizes.push(1);
        let mut offsets = Vec::with_capacity(depth);
        let mut at = 0;
        for l in 0..depth {
            offsets.push(at);
            at += (sizes[l] + 1) * sizes[l + 1];
        }
        Fused {
            acts: sizes[..depth].iter().map(|&n| vec![0.0; n]).collect(),
            deltas: sizes[1..].iter().map(|&n| vec![0.0; n]).collect(),
            nonzero: sizes[..depth].iter().map(|&n| vec![0; n + 1]).collect(),
            nonzero_len: vec![0; depth],
            params: vec![0.0; at],
            grad: vec![0.0; at],
            rows: Vec::new(),
            sizes,
            offsets,
        }
    }

    /// Whether the fused path is expected to beat the libtorch one on the CPU: models of at
    /// most 4096 parameters at expected batches of at most 256. Measured on the census model
    /// (551 parameters, one thread, 2-core AMD EPYC under load): an epoch at batch 256 took
    /// 0.207-0.210 s CPU fused against 0.211-0.219 s with libtorch, but at batch 512 0.186 s
    /// against 0.158 s and at 4096 about 40% more: this code's per-example arithmetic runs on
    /// 128-bit vectors, libtorch's matrix products on AVX-512, which pays once the batch
    /// outweighs the libtorch step's fixed cost.
    pub fn worthwhile(shape: &Shape, expected_batch: f64) -> bool {
        shape.numel() <= 4096 && expected_batch <= 256.0
    }

    /// Writes `sum_i w_i g_i` into `out` (the flat gradient), where `rows` is the batch's
    /// `[k, stride]` data rows (`[x, 1, y, |x, 1|, padding]`, see [`crate::data::Examples`]),
    /// `flat` the model's parameters and `w_i = min(scale, clip_scaled / (|g_i| + eps))`.
    pub fn accumulate(&mut self, flat: &Tensor, rows: &Tensor, clip: Clip, out: &Tensor) {
        let [k, stride] = rows.size()[..] else {
            panic!("batch rows are [k, stride]");
        };
        let (k, stride) = (k as usize, stride as usize);
        if self.rows.len() < k * stride {
            self.rows.resize(k * stride, 0.0);
        }
        if k > 0 {
            rows.copy_data(&mut self.rows, k * stride);
        }
        let numel = self.params.len();
        flat.copy_data(&mut self.params, numel);
        self.grad.fill(0.0);
        let width = self.sizes[0];
        let rows = std::mem::take(&mut self.rows);
        for row in rows[..k * stride].chunks_exact(stride) {
            let (x, y, x_norm) = (&row[..=width], row[width + 1], row[width + 2]);
            let logit = self.forward(x);
            let last = self.deltas.len() - 1;
            self.deltas[last][0] = sigmoid(logit) - y;
            let sq = self.backward(x_norm);
            let w = if clip.clip_scaled.is_finite() {
                (clip.clip_scaled / (sq.sqrt() + clip.eps)).min(clip.scale)
            } else {
                clip.scale
            };
            self.add_weighted(x, w);
        }
        self.rows = rows;
        out.shallow_clone().copy_(&Tensor::from_slice(&self.grad));
    }

    /// The example's forward pass: fills `acts` (ReLU outputs) and `nonzero`, and returns the
    /// logit.
    fn forward(&mut self, x: &[f32]) -> f32 {
        let depth = self.offsets.len();
        for l in 0..depth {
            let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
            let block = &self.params[self.offsets[l]..self.offsets[l] + (inp + 1) * out];
            let a = if l == 0 { x } else { &self.acts[l][..] };
            let nz = &mut self.nonzero[l];
            let count = nonzero(a, nz);
            self.nonzero_len[l] = count;
            let z = &mut self.deltas[l];
            if out == 1 {
                // One output (the logit): a dot product with the weight column.
                z[0] = dot(a, &block[..a.len()]) + if l == 0 { 0.0 } else { block[inp] };
            } else {
                if l == 0 {
                    // x ends with the constant 1, which picks up the bias row.
                    z.fill(0.0);
                } else {
                    z.copy_from_slice(&block[inp * out..]);
                }
                for &j in &nz[..count] {
                    axpy(z, a[j], &block[j * out..(j + 1) * out]);
                }
            }
            if l + 1 < depth {
                for (a, &v) in self.acts[l + 1].iter_mut().zip(z.iter()) {
                    *a = v.max(0.0);
                }
            }
        }
        self.deltas[depth - 1][0]
    }

    /// Back from the logit's gradient (in the last `deltas`): fills every layer's `deltas` and
    /// returns the example's squared gradient norm.
    fn backward(&mut self, x_norm: f32) -> f32 {
        let depth = self.offsets.len();
        let mut sq = 0.0f32;
        for l in (0..depth).rev() {
            let d_sq = dot(&self.deltas[l], &self.deltas[l]);
            let a_sq = if l == 0 {
                x_norm * x_norm
            } else {
                dot(&self.acts[l], &self.acts[l]) + 1.0
            };
            sq += d_sq * a_sq;
            if l > 0 {
                let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
                let block = &self.params[self.offsets[l]..self.offsets[l] + inp * out];
                let (below, here) = self.deltas.split_at_mut(l);
                let (back, delta) = (&mut below[l - 1], &here[0]);
                if out == 1 {
                    let d = delta[0];
                    for ((b, &w), &a) in back.iter_mut().zip(block).zip(&self.acts[l]) {
                        *b = relu_mask(a, w * d);
                    }
                } else {
                    for ((b, w), &a) in back
                        .iter_mut()
                        .zip(block.chunks_exact(out))
                        .zip(&self.acts[l])
                    {
                        *b = relu_mask(a, dot(w, delta));
                    }
                }
            }
        }
        sq
    }

    /// `grad += w [a_l, 1] (x) delta_l` for every layer (`nonzero` from the forward pass).
    fn add_weighted(&mut self, x: &[f32], w: f32) {
        for l in 0..self.offsets.len() {
            let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
            let block = &mut self.grad[self.offsets[l]..self.offsets[l] + (inp + 1) * out];
            let delta = &self.deltas[l];
            // The first layer's input ends with the constant 1 (its bias row); later layers'
            // bias rows get the constant 1 here.
            let a = if l == 0 { x } else { &self.acts[l][..] };
            if out == 1 {
                axpy(&mut block[..a.len()], w * delta[0], a);
            } else {
                for &j in &self.nonzero[l][..self.nonzero_len[l]] {
                    axpy(&mut block[j * out..(j + 1) * out], w * a[j], delta);
                }
            }
            if l > 0 {
                axpy(&mut block[inp * out..], w, delta);
            }
        }
    }
}

/// Writes the positions of `a`'s nonzero entries to the front of `out` (at least as long as
/// `a`) and returns how many there are, without a branch per entry (whether a 0/1 feature or a
/// ReLU output is zero is a coin flip to a branch predictor).
#[inline]
fn nonzero(a: &[f32], out: &mut [usize]) -> usize {
    let mut n = 0;
    for (j, &v) in a.iter().enumerate() {
        out[n] = j;
        n += usize::from(v != 0.0);
    }
    n
}

/// `v` where the ReLU's output `a` is positive, else 0 (`threshold_backward`), without a branch:
/// the sign of a ReLU output is a coin flip that a branch predictor cannot learn.
#[inline]
fn relu_mask(a: f32, v: f32) -> f32 {
    f32::from_bits(v.to_bits() & 0u32.wrapping_sub(u32::from(a > 0.0)))
}

#[inline]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `sum_i a_i b_i` in eight interleaved partial sums (a single running sum would wait on each
/// addition's latency; the compiler may not reorder float additions itself).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}
