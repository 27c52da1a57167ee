//! The clipped gradient sum of a small MLP on the CPU in plain Rust: the same closed form as
//! [`crate::mechanism::grad_sample`] (forward, `sigmoid(z) - y` at the logit, back through `W` and the ReLU
//! masks, per-example norm `sqrt(sum_l |a_l, 1|^2 |delta_l|^2)`, Opacus's clip factor), with
//! one matrix product per layer and direction and no libtorch call per operation.
//!
//! At batch 256 and 551 parameters a libtorch step is some 25 calls of about a microsecond of
//! fixed cost each for about 0.5 MFLOP of arithmetic; here the step is two copies in, one out
//! (after the noise is added on the host, see [`crate::mechanism::dp_step::DpStep::add_noise`], and with
//! plain SGD the parameters' update on the host, [`Fused::update_params`]),
//! and per layer a product forward (`Z_l = [A_l, 1] W_l`), one back (`Delta_l W_l^T`, masked)
//! and one for the gradient (`[A_l, 1]^T diag(w) Delta_l`), by `ndarray`'s `general_mat_mul`
//! (the `matrixmultiply` kernels, which pick AVX2/FMA or AVX-512 at run time; this crate's own
//! loops, without `unsafe` or a global `-C target-cpu`, get 128-bit vectors). The output
//! layer (one logit) is a row at a time: its ReLU, logit, gradient and the masked gradient at
//! the layer below in one pass. [`crate::mechanism::dp_step::DpStep`] uses it on the CPU where it is
//! faster ([`Fused::worthwhile`]); tests hold it equal to the libtorch path.
//!
//! A batch gathered from coded rows takes one forward and backward pass per distinct feature
//! vector, the labels only in each vector's weight ([`Fused::accumulate_by_vector`]): the
//! census batches of 256 hold 97 distinct rows but 74 distinct vectors.
//!
//! As there, an example whose squared gradient norm is not finite gets weight 0 and its rows of
//! every layer's input and gradient are zeroed before the weighted sums (where `0 x inf` would
//! be NaN), so it contributes exactly zero; [`Fused::take_zeroed`] counts them.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use tch::Tensor;

use crate::host_rows::{HostRows, Labelled};
use crate::mlp::Shape;

/// Host buffers for one worker's fused steps, reused across steps (grown to the largest
/// batch seen, never shrunk).
#[derive(Debug)]
pub struct Fused {
    /// Layer widths: inputs, hidden..., 1.
    sizes: Vec<usize>,
    /// Start of each layer's `[in + 1, out]` block in the flat parameters.
    offsets: Vec<usize>,
    params: Vec<f32>,
    grad: Vec<f32>,
    /// The batch's data rows `[k, stride]`: `[x, 1, y, |x, 1|, padding]`.
    rows: Vec<f32>,
    /// Per layer `l >= 1`: `[k, in_l + 1]`, its input (ReLU outputs) and a column of ones.
    acts: Vec<Vec<f32>>,
    /// Per layer: `[k, out_l]`, the pre-activations, then the gradient at the layer's output.
    deltas: Vec<Vec<f32>>,
    /// Per example: the squared gradient norm (per feature vector
    /// ([`Fused::accumulate_by_vector`]): that of the gradient at a logit gradient of 1).
    sq: Vec<f32>,
    /// Per example: `sigmoid` of the logit.
    prob: Vec<f32>,
    /// Per example: its weight in the sum, `min(scale, clip_scaled / (|g_i| + eps))`.
    weight: Vec<f32>,
    /// The output layer's weights squared.
    w_sq: Vec<f32>,
    /// A layer's input scaled by the weights, where that is narrower than its gradient.
    scaled: Vec<f32>,
    /// Examples whose gradient was not finite (weight 0) since [`Fused::take_zeroed`].
    zeroed: u64,
    /// Per row of a grouped batch ([`Fused::accumulate_gathered`]): the examples it stands
    /// for.
    counts: Vec<f32>,
    /// Per distinct (feature vector, label) of a batch grouped by vector
    /// ([`Fused::accumulate_by_vector`]): the examples it stands for.
    labelled: Vec<Labelled>,
    /// Scratch for [`HostRows::gather_grouped`] and [`HostRows::gather_by_vector`].
    slots: Vec<u32>,
    /// The model tensor whose parameters `params` holds newer than it does: after a deferred
    /// optimizer step ([`Fused::update_params`]) until [`Fused::write_back`] (or this value's
    /// drop). Holding it keeps its storage alive, so its address names it.
    ahead: Option<Tensor>,
}

/// What the output layer takes as the gradient at the logit.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LogitGrad {
    /// `sigmoid(z) - y`, `y` the row's label: each example's gradient.
    Label,
    /// 1: the gradient of the logit itself, shared by the examples of a feature vector.
    One,
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

impl Clip {
    /// The weight of a gradient (an example's, a unit's) of squared norm `sq` in the sum: 0
    /// where `sq` is not finite.
    #[inline]
    pub fn weight(&self, sq: f32) -> f32 {
        if !sq.is_finite() {
            0.0
        } else if self.clip_scaled.is_finite() {
            (self.clip_scaled / (sq.sqrt() + self.eps)).min(self.scale)
        } else {
            self.scale
        }
    }
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
            acts: vec![Vec::new(); depth],
            deltas: vec![Vec::new(); depth],
            sq: Vec::new(),
            prob: Vec::new(),
            weight: Vec::new(),
            w_sq: vec![0.0; sizes[depth - 1]],
            scaled: Vec::new(),
            params: vec![0.0; at],
            grad: vec![0.0; at],
            rows: Vec::new(),
            zeroed: 0,
            counts: Vec::new(),
            labelled: Vec::new(),
            slots: Vec::new(),
            ahead: None,
            sizes,
            offsets,
        }
    }

    /// Whether the fused path is expected to beat the libtorch one on the CPU: models of at
    /// most 4096 parameters at expected batches of at most 1024. Measured with
    /// `trainer/examples/epoch.rs` on the census model (551 parameters, one thread, best
    /// on-CPU seconds per epoch of 3 rounds, fused against libtorch, 2-core AMD EPYC at load
    /// 7-11; bench/RESULTS.md, issue 16): batch 64 0.290 against 0.538, 256 0.149 against
    /// 0.201, 512 0.126 against 0.149, 1024 0.116 against 0.119, 2048 0.117 against 0.117,
    /// 4096 0.105 against 0.102. Past about a thousand rows libtorch's fixed cost per call is
    /// paid off and its AVX-512 products catch up.
    pub fn worthwhile(shape: &Shape, expected_batch: f64) -> bool {
        shape.numel() <= 4096 && expected_batch <= 1024.0
    }

    /// Computes `sum_i w_i g_i` into the host gradient ([`Fused::grad_mut`], then
    /// [`Fused::write_to`]), where `rows` is the batch's `[k, stride]` data rows
    /// (`[x, 1, y, |x, 1|, padding]`, see [`crate::data::Examples`]), `flat` the model's
    /// parameters and `w_i = min(scale, clip_scaled / (|g_i| + eps))`.
    pub fn accumulate(&mut self, flat: &Tensor, rows: &Tensor, clip: Clip) {
        let [k, stride] = rows.size()[..] else {
            panic!("batch rows are [k, stride]");
        };
        let (k, stride) = (k as usize, stride as usize);
        if !self.begin(flat, k, stride) {
            return;
        }
        rows.copy_data(&mut self.rows, k * stride);
        self.accumulate_copied(k, stride, clip, false);
    }

    /// Reads the parameters from `flat` and makes room for `k` rows of `stride`; with no rows,
    /// zeroes the gradient and says there is nothing to accumulate.
    fn begin(&mut self, flat: &Tensor, k: usize, stride: usize) -> bool {
        self.load_params(flat);
        let numel = self.params.len();
        // No real row touches the quiet coordinates.
        self.grad[numel..].fill(0.0);
        if k == 0 {
            self.grad.fill(0.0);
            return false;
        }
        self.reserve(k, stride);
        true
    }

    /// [`Fused::accumulate`] on the batch of rows `idx` of `all`, every example's data rows on
    /// the host (as [`crate::data::Examples::host_rows`] keeps them): the same sum as
    /// `accumulate` on `all`'s tensor after `index_select(0, idx)`, without that gather's
    /// per-row cost and the batch's copy out. Where `all` is coded, equal rows are one row of
    /// the step: rows of the same features are one forward and backward pass
    /// ([`Fused::accumulate_by_vector`]), or, in a batch where that pass is not finite for
    /// some vector, equal rows are one row ([`HostRows::gather_grouped`]; equal rows have
    /// equal gradients, norms and weights, so the row's weight times its count is their part
    /// of the sum). Either is the same sum, added in another order: equal to the ungrouped
    /// step's to a few units in the last place of `f32`, tested. Plain rows are not grouped
    /// (the same bits as `index_select`).
    ///
    /// # Panics
    ///
    /// If an index is outside `all` (as `index_select` does).
    pub fn accumulate_gathered(&mut self, flat: &Tensor, all: &HostRows, idx: &[i64], clip: Clip) {
        let stride = all.stride();
        if !self.begin(flat, idx.len(), stride) {
            return;
        }
        let rows = &mut self.rows[..idx.len() * stride];
        let label = self.sizes[0] + 1;
        if let Some(vectors) =
            all.gather_by_vector(label, idx, rows, &mut self.labelled, &mut self.slots)
            && self.accumulate_by_vector(vectors, stride, clip)
        {
            return;
        }
        // Plain rows, or a vector whose gradient is not finite: a distinct row at a time.
        let rows = &mut self.rows[..idx.len() * stride];
        let k = all.gather_grouped(idx, rows, &mut self.counts, &mut self.slots);
        self.accumulate_copied(k, stride, clip, true);
    }

    /// The clipped sum of a batch grouped by feature vector: `self.rows` holds its `vectors`
    /// distinct vectors, `self.labelled` each vector's labels with their counts. The MLP's
    /// output is one logit and its hidden layers' ReLU masks depend on the features alone, so
    /// an example's gradient is `d J(x)`, `d = sigmoid(z) - y` the gradient at the logit and
    /// `J(x)` the gradient at a logit gradient of 1: one forward and backward pass a vector
    /// gives `J` and `S = |J|^2`, and an example's squared norm is `d^2 S`. Its weight is
    /// [`Clip::weight`] of that, as for each example alone, and the vector's part of the sum is
    /// `(sum_y n_y w_y d_y) J`. An example whose `d^2 S` is not finite adds zero and is
    /// counted, as in [`Fused::accumulate`] (`d^2 S` and the norm that adds `d` in layer by
    /// layer differ by rounding, so only within that of `f32::MAX` can they disagree on it).
    ///
    /// Returns false, having added and counted nothing, where `S` is not finite for some
    /// vector: there every `d^2 S` is not finite while an example's own squared norm can be
    /// (a small `d`; `d = 0` where a layer's part of `S` overflowed but not its input), so the
    /// caller takes the batch a distinct row at a time, as before.
    fn accumulate_by_vector(&mut self, vectors: usize, stride: usize, clip: Clip) -> bool {
        let k = vectors;
        self.forward(k, stride);
        self.output_layer(k, stride, LogitGrad::One);
        self.backward(k, stride);
        if !self.sq[..k].iter().all(|s| s.is_finite()) {
            return false;
        }
        let weight = &mut self.weight[..k];
        weight.fill(0.0);
        for l in &self.labelled {
            let v = l.vector as usize;
            let d = self.prob[v] - l.label;
            let sq = d * d * self.sq[v];
            if sq.is_finite() {
                weight[v] += l.count * clip.weight(sq) * d;
            } else {
                self.zeroed += l.count as u64;
            }
        }
        // `J` is finite where `S` is: no row to zero.
        self.weighted_sums(k, stride);
        true
    }

    /// [`Fused::accumulate_gathered`] for privacy units: the batch's rows are its units' rows,
    /// unit `u` being rows `starts[u]..starts[u + 1]` of `idx`, and each unit's gradient (the
    /// sum of its rows') is clipped once: every row of a unit gets the unit's weight
    /// `min(scale, clip_scaled / (|sum_i g_i| + eps))`. The unit's squared norm is, layer by
    /// layer, `sum_{i, j} (a_i . a_j)(delta_i . delta_j)` over its rows' inputs and gradients
    /// at the layer's output (a unit of one row: the per-example norm).
    pub fn accumulate_units_gathered(
        &mut self,
        flat: &Tensor,
        all: &HostRows,
        idx: &[i64],
        starts: &[usize],
        clip: Clip,
    ) {
        let (k, stride) = (idx.len(), all.stride());
        if !self.begin(flat, k, stride) {
            return;
        }
        all.gather(idx, &mut self.rows[..k * stride]);
        self.forward(k, stride);
        self.output_layer(k, stride, LogitGrad::Label);
        self.backward(k, stride);
        // A row whose gradient is not finite adds zero to its unit's sum.
        self.zero_non_finite(k, stride, false);
        self.unit_weights(k, stride, starts, clip);
        self.weighted_sums(k, stride);
    }

    /// Every row's weight from its unit's squared gradient norm (see
    /// [`Fused::accumulate_units_gathered`]).
    fn unit_weights(&mut self, k: usize, stride: usize, starts: &[usize], clip: Clip) {
        let width = self.sizes[0];
        for unit in starts.windows(2) {
            let (from, to) = (unit[0], unit[1]);
            debug_assert!(to <= k, "a unit's rows are in the batch");
            let mut sq = 0.0f32;
            for l in 0..self.offsets.len() {
                let out = self.sizes[l + 1];
                let inp = if l == 0 { width + 1 } else { self.sizes[l] + 1 };
                let (a, rs) = layer_input(&self.rows, &self.acts, &self.sizes, l, k, stride);
                let delta = &self.deltas[l];
                for i in from..to {
                    let (ai, di) = (&a[i * rs..i * rs + inp], &delta[i * out..(i + 1) * out]);
                    sq += dot(ai, ai) * dot(di, di);
                    for j in i + 1..to {
                        let (aj, dj) = (&a[j * rs..j * rs + inp], &delta[j * out..(j + 1) * out]);
                        sq += 2.0 * dot(ai, aj) * dot(di, dj);
                    }
                }
            }
            // A unit whose rows are finite but whose sum is not adds nothing, counted too.
            self.zeroed += u64::from(!sq.is_finite());
            let w = clip.weight(sq);
            self.weight[from..to].fill(w);
        }
    }

    /// The rest of [`Fused::accumulate`] once the batch's `k` rows are in `self.rows`
    /// (`grouped`: each standing for `self.counts` examples).
    fn accumulate_copied(&mut self, k: usize, stride: usize, clip: Clip, grouped: bool) {
        self.forward(k, stride);
        self.output_layer(k, stride, LogitGrad::Label);
        self.backward(k, stride);
        self.clip_weights(k, clip);
        if grouped {
            for (w, &c) in self.weight[..k].iter_mut().zip(&self.counts) {
                *w *= c;
            }
        }
        self.zero_non_finite(k, stride, grouped);
        self.weighted_sums(k, stride);
    }

    /// The examples whose gradient was not finite since the last call (they contributed zero).
    pub fn take_zeroed(&mut self) -> u64 {
        std::mem::take(&mut self.zeroed)
    }

    /// The host gradient [`Fused::accumulate`] wrote (to add the noise to on the host), the
    /// quiet coordinates ([`Fused::with_quiet`]) after the model's.
    pub fn grad_mut(&mut self) -> &mut [f32] {
        &mut self.grad
    }

    /// The host gradient.
    pub fn grad(&self) -> &[f32] {
        &self.grad
    }

    /// These buffers with `quiet` quiet coordinates after the model's parameters in the host
    /// gradient ([`crate::mechanism::quiet`]): zero after each accumulation, for the step to
    /// add its quiet rows and the noise to.
    pub fn with_quiet(mut self, quiet: usize) -> Self {
        self.grad.resize(self.params.len() + quiet, 0.0);
        self
    }

    /// Takes an optimizer step on the host: reads the parameters from `flat` (the model's),
    /// lets `step` update them from the host gradient and writes them back to `flat`, or with
    /// `defer`, keeps them here as newer than `flat` until [`Fused::write_back`]: the next
    /// step on `flat` starts from them without reading it, so a run of steps costs no libtorch
    /// call (three a step otherwise, some 2 us of a 20 us step at batch 256).
    pub fn update_params(
        &mut self,
        flat: &Tensor,
        defer: bool,
        step: impl FnOnce(&mut [f32], &[f32]),
    ) {
        self.load_params(flat);
        let numel = self.params.len();
        step(&mut self.params, &self.grad[..numel]);
        self.ahead = Some(flat.shallow_clone());
        if !defer {
            self.write_back();
        }
    }

    /// Brings `params` to `flat`'s values: a read of `flat`, unless `params` is already newer
    /// than it (a deferred step on it); parameters pending for another tensor are written to
    /// that one first.
    fn load_params(&mut self, flat: &Tensor) {
        if let Some(model) = &self.ahead {
            if same_storage(model, flat) {
                return;
            }
            self.write_back();
        }
        let numel = self.params.len();
        flat.copy_data(&mut self.params, numel);
    }

    /// Writes parameters newer than their model's tensor (deferred steps) to it.
    pub fn write_back(&mut self) {
        if let Some(mut model) = self.ahead.take() {
            model.copy_(&Tensor::from_slice(&self.params));
        }
    }

    /// Copies the host gradient into `out` (the flat gradient tensor).
    pub fn write_to(&self, out: &Tensor) {
        out.shallow_clone().copy_(&Tensor::from_slice(&self.grad));
    }

    /// Grows the buffers to a batch of `k` rows of `stride`.
    fn reserve(&mut self, k: usize, stride: usize) {
        let grow = |v: &mut Vec<f32>, n: usize| {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        };
        grow(&mut self.rows, k * stride);
        for l in 0..self.offsets.len() {
            if l > 0 {
                grow(&mut self.acts[l], k * (self.sizes[l] + 1));
            }
            grow(&mut self.deltas[l], k * self.sizes[l + 1]);
        }
        grow(&mut self.sq, k);
        grow(&mut self.prob, k);
        grow(&mut self.weight, k);
        let widest = self.sizes.iter().max().expect("a model has layers");
        grow(&mut self.scaled, k * (widest + 1));
    }

    /// The hidden layers: `Z_l = [A_l, 1] W_l` into `deltas[l]`, and the ReLU of each but the
    /// last (which [`Fused::output_layer`] takes) into `acts[l + 1]`.
    fn forward(&mut self, k: usize, stride: usize) {
        let last = self.offsets.len() - 1;
        for l in 0..last {
            let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
            let block = &self.params[self.offsets[l]..self.offsets[l] + (inp + 1) * out];
            let zv = &mut self.deltas[l][..k * out];
            let (a, rs) = layer_input(&self.rows, &self.acts, &self.sizes, l, k, stride);
            general_mat_mul(
                1.0,
                &view(a, (k, inp + 1), (rs, 1)),
                &view(block, (inp + 1, out), (out, 1)),
                0.0,
                &mut view_mut(zv, (k, out), (out, 1)),
            );
            if l + 1 < last {
                let next = &mut self.acts[l + 1][..k * (out + 1)];
                for (a, z) in next.chunks_exact_mut(out + 1).zip(zv.chunks_exact(out)) {
                    for (a, &z) in a.iter_mut().zip(z) {
                        *a = z.max(0.0);
                    }
                    a[out] = 1.0;
                }
            }
        }
    }

    /// The output layer, one example at a time: the ReLU of the last hidden layer (into
    /// `acts`), the logit's `sigmoid` (into `prob`), the logit's gradient `grad` (into the last
    /// `deltas`), the masked gradient at the last hidden layer (into its `deltas`), and the
    /// squared norm of the example's gradient for these two layers (into `sq`).
    fn output_layer(&mut self, k: usize, stride: usize, grad: LogitGrad) {
        let last = self.offsets.len() - 1;
        let width = self.sizes[0];
        let inp = self.sizes[last];
        let block = &self.params[self.offsets[last]..self.offsets[last] + inp + 1];
        let (w, bias) = (&block[..inp], block[inp]);
        let rows = &self.rows[..k * stride];
        let sq = &mut self.sq[..k];
        let prob = &mut self.prob[..k];
        let logit_grad = |p: f32, row: &[f32]| match grad {
            LogitGrad::Label => p - row[width + 1],
            LogitGrad::One => 1.0,
        };
        if last == 0 {
            // No hidden layer: logistic regression on the inputs.
            for (((s, d), p), row) in sq
                .iter_mut()
                .zip(&mut self.deltas[0][..k])
                .zip(prob.iter_mut())
                .zip(rows.chunks_exact(stride))
            {
                *p = sigmoid(dot(&row[..inp], w) + bias);
                *d = logit_grad(*p, row);
                *s = *d * *d * (row[width + 2] * row[width + 2]);
            }
            return;
        }
        for (q, &w) in self.w_sq.iter_mut().zip(w) {
            *q = w * w;
        }
        let (below, here) = self.deltas.split_at_mut(last);
        let (zs, logits) = (&mut below[last - 1][..k * inp], &mut here[0][..k]);
        let acts = &mut self.acts[last][..k * (inp + 1)];
        for (((((z, a), s), d), p), row) in zs
            .chunks_exact_mut(inp)
            .zip(acts.chunks_exact_mut(inp + 1))
            .zip(sq.iter_mut())
            .zip(logits.iter_mut())
            .zip(prob.iter_mut())
            .zip(rows.chunks_exact(stride))
        {
            let (a_sq, logit, masked_w_sq) = relu_row(z, &mut a[..inp], w, &self.w_sq);
            a[inp] = 1.0;
            *p = sigmoid(logit + bias);
            *d = logit_grad(*p, row);
            // The gradient at the last hidden layer's output: d w, where its ReLU passed.
            for ((z, &a), &w) in z.iter_mut().zip(a.iter()).zip(w) {
                *z = relu_mask(a, w * *d);
            }
            *s = *d * *d * (a_sq + 1.0);
            if last == 1 {
                // That gradient's squared norm is d^2 sum_{j: a_j > 0} w_j^2; the layer's
                // input is the data row.
                let x_norm = row[width + 2];
                *s += *d * *d * masked_w_sq * (x_norm * x_norm);
            }
        }
    }

    /// Back through the hidden layers below the last: each layer's part of the squared norms,
    /// and the masked gradient at the output of the layer below (`Delta_l W_l^T`).
    fn backward(&mut self, k: usize, stride: usize) {
        let last = self.offsets.len() - 1;
        let width = self.sizes[0];
        for l in (0..last).rev() {
            let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
            if l + 1 < last || l > 0 {
                // (The layer just below the output layer with the data as input was done
                // there.)
                let delta = &self.deltas[l][..k * out];
                let (a, rs) = layer_input(&self.rows, &self.acts, &self.sizes, l, k, stride);
                for ((s, d), a) in self.sq[..k]
                    .iter_mut()
                    .zip(delta.chunks_exact(out))
                    .zip(a.chunks(rs))
                {
                    let a_sq = if l == 0 {
                        a[width + 2] * a[width + 2]
                    } else {
                        dot(&a[..inp], &a[..inp]) + 1.0
                    };
                    *s += dot(d, d) * a_sq;
                }
            }
            if l > 0 {
                let block = &self.params[self.offsets[l]..self.offsets[l] + inp * out];
                let (below, here) = self.deltas.split_at_mut(l);
                let (back, delta) = (&mut below[l - 1][..k * inp], &here[0][..k * out]);
                general_mat_mul(
                    1.0,
                    &view(delta, (k, out), (out, 1)),
                    &view(block, (out, inp), (1, out)),
                    0.0,
                    &mut view_mut(back, (k, inp), (inp, 1)),
                );
                let acts = &self.acts[l][..k * (inp + 1)];
                for (b, a) in back.chunks_exact_mut(inp).zip(acts.chunks_exact(inp + 1)) {
                    for (b, &a) in b.iter_mut().zip(a) {
                        *b = relu_mask(a, *b);
                    }
                }
            }
        }
    }

    /// Each example's weight from its squared norm: 0 where that is not finite.
    fn clip_weights(&mut self, k: usize, clip: Clip) {
        for (w, &s) in self.weight[..k].iter_mut().zip(&self.sq[..k]) {
            *w = clip.weight(s);
        }
    }

    /// Zeroes, for each example whose squared norm is not finite, its rows of every layer's
    /// input and gradient (its weight is 0, but `0 x inf` is NaN in the sums), and counts it
    /// (`grouped`: as the examples it stands for).
    fn zero_non_finite(&mut self, k: usize, stride: usize, grouped: bool) {
        for i in 0..k {
            if self.sq[i].is_finite() {
                continue;
            }
            self.zeroed += if grouped { self.counts[i] as u64 } else { 1 };
            for l in 0..self.offsets.len() {
                let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
                self.deltas[l][i * out..(i + 1) * out].fill(0.0);
                if l == 0 {
                    self.rows[i * stride..i * stride + inp + 1].fill(0.0);
                } else {
                    self.acts[l][i * (inp + 1)..(i + 1) * (inp + 1)].fill(0.0);
                }
            }
        }
    }

    /// `G_l = [A_l, 1]^T diag(w) Delta_l` into each layer's block of `grad`, the weights
    /// applied to the narrower of the two.
    fn weighted_sums(&mut self, k: usize, stride: usize) {
        let mut grad = std::mem::take(&mut self.grad);
        let mut scaled = std::mem::take(&mut self.scaled);
        for l in 0..self.offsets.len() {
            let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
            let g = &mut grad[self.offsets[l]..self.offsets[l] + (inp + 1) * out];
            let weight = &self.weight[..k];
            let (a, rs) = layer_input(&self.rows, &self.acts, &self.sizes, l, k, stride);
            let delta = &self.deltas[l][..k * out];
            if out == 1 {
                g.fill(0.0);
                for ((a, &w), &d) in a.chunks(rs).zip(weight).zip(delta) {
                    axpy(g, w * d, &a[..=inp]);
                }
            } else if inp < out {
                let sc = &mut scaled[..k * (inp + 1)];
                for ((s, a), &w) in sc.chunks_exact_mut(inp + 1).zip(a.chunks(rs)).zip(weight) {
                    for (s, &a) in s.iter_mut().zip(a) {
                        *s = a * w;
                    }
                }
                general_mat_mul(
                    1.0,
                    &view(sc, (inp + 1, k), (1, inp + 1)),
                    &view(delta, (k, out), (out, 1)),
                    0.0,
                    &mut view_mut(g, (inp + 1, out), (out, 1)),
                );
            } else {
                let sc = &mut scaled[..k * out];
                for ((s, d), &w) in sc
                    .chunks_exact_mut(out)
                    .zip(delta.chunks_exact(out))
                    .zip(weight)
                {
                    for (s, &d) in s.iter_mut().zip(d) {
                        *s = d * w;
                    }
                }
                general_mat_mul(
                    1.0,
                    &view(a, (inp + 1, k), (1, rs)),
                    &view(sc, (k, out), (out, 1)),
                    0.0,
                    &mut view_mut(g, (inp + 1, out), (out, 1)),
                );
            }
        }
        self.grad = grad;
        self.scaled = scaled;
    }
}

/// A deferred step's parameters are never lost: they reach their model when this is dropped.
impl Drop for Fused {
    fn drop(&mut self) {
        self.write_back();
    }
}

/// Whether `a` and `b` are the same memory (the model's flat parameters, or a tensor on it).
fn same_storage(a: &Tensor, b: &Tensor) -> bool {
    a.data_ptr() == b.data_ptr() && a.size() == b.size() && a.device() == b.device()
}

/// Layer `l`'s input `[A_l, 1]` for a batch of `k` as `(buffer, row stride)`: the data rows
/// for the first layer, the ReLU outputs after.
fn layer_input<'a>(
    rows: &'a [f32],
    acts: &'a [Vec<f32>],
    sizes: &[usize],
    l: usize,
    k: usize,
    stride: usize,
) -> (&'a [f32], usize) {
    if l == 0 {
        (&rows[..k * stride], stride)
    } else {
        let w = sizes[l] + 1;
        (&acts[l][..k * w], w)
    }
}

/// `m` as an `ndarray` view of `shape` with (row, column) `strides`.
fn view(m: &[f32], shape: (usize, usize), strides: (usize, usize)) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape(shape.strides(strides), m).expect("the buffer holds the matrix")
}

/// [`view`], mutable.
fn view_mut(
    m: &mut [f32],
    shape: (usize, usize),
    strides: (usize, usize),
) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape(shape.strides(strides), m).expect("the buffer holds the matrix")
}

/// One example's last hidden layer: `a = relu(z)`; returns `|a|^2`, `a . w` and
/// `sum_{j: a_j > 0} w_sq_j`, each in eight interleaved partial sums (a single running sum
/// would wait on each addition; the compiler may not reorder float additions itself).
#[inline]
fn relu_row(z: &[f32], a: &mut [f32], w: &[f32], w_sq: &[f32]) -> (f32, f32, f32) {
    let (mut s1, mut s2, mut s3) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let full = z.len() / 8 * 8;
    for c in (0..full).step_by(8) {
        let (z, a, w, q) = (
            &z[c..c + 8],
            &mut a[c..c + 8],
            &w[c..c + 8],
            &w_sq[c..c + 8],
        );
        for i in 0..8 {
            let v = z[i].max(0.0);
            a[i] = v;
            s1[i] += v * v;
            s2[i] += v * w[i];
            s3[i] += relu_mask(v, q[i]);
        }
    }
    let (mut t1, mut t2, mut t3) = (0f32, 0f32, 0f32);
    for i in full..z.len() {
        let v = z[i].max(0.0);
        a[i] = v;
        t1 += v * v;
        t2 += v * w[i];
        t3 += relu_mask(v, w_sq[i]);
    }
    (
        s1.iter().sum::<f32>() + t1,
        s2.iter().sum::<f32>() + t2,
        s3.iter().sum::<f32>() + t3,
    )
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

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use tch::Device;

    use super::*;
    use crate::data::Examples;
    use crate::mlp::Mlp;

    /// A batch of coded rows takes one pass per feature vector unless some vector's gradient
    /// is not finite (a row of huge values), and either way its clipped sum is the ungrouped
    /// step's to a few units in the last place, with as many examples zeroed: models of no,
    /// one, two and three hidden layers, clipped and not.
    #[test]
    fn one_pass_per_vector_unless_a_vector_is_not_finite() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (n, d) = (400, 5);
        let patterns: Vec<Vec<f32>> = (0..6u32)
            .map(|p| {
                (0..d)
                    .map(|j| f32::from(u8::from((p >> (j % 3)) & 1 == 1)))
                    .collect()
            })
            .collect();
        let mut features = vec![3e38f32; d];
        let mut labels = vec![1.0f32];
        for _ in 1..n {
            features.extend_from_slice(&patterns[rng.random_range(0..6)]);
            labels.push(f32::from(rng.random_bool(0.5)));
        }
        let data = Examples::new(&features, &labels, d, Device::Cpu).unwrap();
        let all = data.host_rows().unwrap();
        assert!(all.coded());
        let stride = all.stride();
        for hidden in [vec![], vec![7], vec![4, 6], vec![5, 3, 4]] {
            let shape = Shape::new(d, &hidden);
            let mlp = Mlp::new(shape.clone(), 1, Device::Cpu).unwrap();
            for clip_scaled in [0.02, f32::INFINITY] {
                let clip = Clip {
                    clip_scaled,
                    scale: 0.1,
                    eps: 1e-6,
                };
                for huge in [false, true] {
                    let mut idx: Vec<i64> =
                        (0..200).map(|_| rng.random_range(1..n as i64)).collect();
                    if huge {
                        idx.insert(77, 0);
                    }
                    let what = format!("{hidden:?} clip {clip_scaled} huge {huge}");
                    let mut by_vector = Fused::new(&shape);
                    assert!(by_vector.begin(mlp.flat(), idx.len(), stride));
                    let vectors = all
                        .gather_by_vector(
                            d + 1,
                            &idx,
                            &mut by_vector.rows,
                            &mut by_vector.labelled,
                            &mut by_vector.slots,
                        )
                        .unwrap();
                    assert_eq!(vectors, 6 + usize::from(huge), "{what}");
                    assert!(by_vector.labelled.len() > vectors, "{what}: both labels");
                    let taken = by_vector.accumulate_by_vector(vectors, stride, clip);
                    assert_eq!(taken, !huge, "{what}");

                    let mut gathered = Fused::new(&shape);
                    gathered.accumulate_gathered(mlp.flat(), &all, &idx, clip);
                    let mut each = Fused::new(&shape);
                    let rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
                    each.accumulate(mlp.flat(), &rows, clip);
                    assert_eq!(gathered.take_zeroed(), each.take_zeroed(), "{what}");
                    // The same terms added in another order: equal to a few units in the
                    // last place of the sum of their magnitudes (at most k C where clipped).
                    let largest = each.grad().iter().fold(0f32, |m, g| m.max(g.abs()));
                    let terms = largest.max(idx.len() as f32 * clip_scaled.min(largest));
                    for (a, b) in gathered.grad().iter().zip(each.grad()) {
                        assert!((a - b).abs() <= 1e-6 * terms, "{what}: {a} against {b}");
                    }
                    if !huge {
                        assert_eq!(by_vector.grad(), gathered.grad(), "{what}");
                    }
                }
            }
        }
    }
}
