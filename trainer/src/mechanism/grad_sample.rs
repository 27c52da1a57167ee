//! Per-example gradients of the MLP in closed form, for a whole batch at once (no autograd,
//! no loop over examples).
//!
//! For BCE-with-logits the gradient at the logit is `sigmoid(z) - y`; going back through a
//! layer multiplies by `W` and masks by `z > 0`. Example i's gradient for layer l is the
//! outer product `[a_i, 1] (x) delta_i`, whose norm is `|[a_i, 1]| |delta_i|`, so the
//! per-example norms over all layers need no `[batch, in, out]` tensor, and the clipped sum
//! `sum_i w_i [a_i, 1] (x) delta_i` is one matrix product per layer.
//!
//! **A gradient that is not finite contributes zero.** A row whose values overflow the forward
//! pass (3e38 in a raw column) has an infinite or NaN gradient and so a non-finite norm. Its
//! clip factor is 0 ([`clip_weights`]; `min(1, C / norm)` would be NaN for a NaN norm), and
//! [`PerExample::weighted_sum_into`] keeps its non-finite values out of the products (`0 x inf`
//! is NaN), so it adds exactly zero: with or without it the sum moves by at most C.

use tch::{Kind, Tensor};

use crate::mlp::{LayerViews, Mlp};

/// Opacus's guard against dividing by a zero norm in the clip factor.
pub const NORM_EPS: f64 = 1e-6;

/// The per-layer quantities of one batch that all per-example gradients are built from.
#[derive(Debug)]
pub struct PerExample {
    /// Input of each layer: `[x, 1]` for the first, the ReLU activations (without the 1) after.
    inputs: Vec<Tensor>,
    /// Gradient of each example's loss at each layer's output, `[k, out]`.
    deltas: Vec<Tensor>,
}

impl PerExample {
    /// Forward and backward pass for a batch: `inputs` are `[x, 1]` (`[k, d + 1]`), `labels`
    /// `[k, 1]`.
    pub fn compute(mlp: &Mlp, inputs: &Tensor, labels: &Tensor) -> Self {
        let layers = mlp.layers();
        let depth = layers.len();
        let mut acts = Vec::with_capacity(depth);
        let mut pre = Vec::with_capacity(depth);
        acts.push(inputs.shallow_clone());
        let mut z = inputs.mm(&layers[0].block);
        for layer in &layers[1..] {
            let a = z.relu();
            let next = layer.bias.addmm(&a, &layer.weight_t);
            pre.push(z);
            acts.push(a);
            z = next;
        }
        // d loss / d logit for BCE-with-logits.
        let mut delta = z.sigmoid() - labels;
        let mut deltas = Vec::with_capacity(depth);
        for l in (1..depth).rev() {
            let back = delta.mm(&layers[l].weight);
            deltas.push(delta);
            delta = pre[l - 1].threshold_backward(&back, 0.0);
        }
        deltas.push(delta);
        deltas.reverse();
        PerExample {
            inputs: acts,
            deltas,
        }
    }

    /// Per-example gradient norms over all layers, `[k, 1]`. `input_norms` are `|[x, 1]|`
    /// per example (precomputed with the data).
    pub fn norms(&self, input_norms: &Tensor, consts: &Constants) -> Tensor {
        let mut total: Option<Tensor> = None;
        for (l, (a, d)) in self.inputs.iter().zip(&self.deltas).enumerate() {
            let d_norm = if d.size()[1] == 1 {
                d.abs()
            } else {
                d.norm_scalaropt_dim(2.0, [1i64], true)
            };
            let a_norm = if l == 0 {
                input_norms.shallow_clone()
            } else {
                a.norm_scalaropt_dim(2.0, [1i64], true).hypot(&consts.one)
            };
            let n = d_norm * a_norm;
            total = Some(match total {
                None => n,
                Some(t) => t.hypot(&n),
            });
        }
        total.expect("an MLP has at least one layer")
    }

    /// Writes `sum_i w_i g_i` into the gradient views `out`, where `g_i` is example i's
    /// gradient and `w` is `[k, 1]`, from [`clip_weights`]: 0 for every example whose norm is
    /// not finite, whose gradient then adds exactly zero (unless `norms` says every norm is
    /// finite, its non-finite values are kept out of the products, where `0 x inf` would be
    /// NaN).
    pub fn weighted_sum_into(&self, weights: &Tensor, out: &[LayerViews], norms: Norms) {
        if norms == Norms::Finite {
            return self.weighted_sum_of_finite(weights, out);
        }
        for (l, ((a, d), g)) in self.inputs.iter().zip(&self.deltas).zip(out).enumerate() {
            // sum_i w_i a_i (x) d_i = (w a)^T d = a^T (w d): weight the narrower side (or, past
            // the first layer, the side the bias sums). The weighted side of an example of
            // weight 0 is 0 or NaN: NaN becomes 0. The other side's non-finite values become
            // finite (inf: the largest float), so 0 times them is 0; where an example's norm is
            // finite, both sides are finite and untouched.
            let (mut wa, mut wd) = if l == 0 && a.size()[1] < d.size()[1] {
                (a * weights, finite(d))
            } else {
                (finite(a), d * weights)
            };
            let _ = if l == 0 && a.size()[1] < d.size()[1] {
                wa.nan_to_num_(0.0, 0.0, 0.0)
            } else {
                wd.nan_to_num_(0.0, 0.0, 0.0)
            };
            let _ = wa
                .tr()
                .mm_out(if l == 0 { &g.block } else { &g.weight_t }, &wd);
            if l > 0 {
                let _ = wd.sum_intlist_out(&g.bias, [0i64].as_slice(), false, Kind::Float);
            }
        }
    }

    /// [`PerExample::weighted_sum_into`] where every norm is finite: no guard, two operations
    /// fewer a layer.
    fn weighted_sum_of_finite(&self, weights: &Tensor, out: &[LayerViews]) {
        for (l, ((a, d), g)) in self.inputs.iter().zip(&self.deltas).zip(out).enumerate() {
            // sum_i w_i a_i (x) d_i = (w a)^T d = a^T (w d): weight the narrower side.
            let (wa, wd) = if a.size()[1] < d.size()[1] {
                (a * weights, d.shallow_clone())
            } else {
                (a.shallow_clone(), d * weights)
            };
            let _ = wa
                .tr()
                .mm_out(if l == 0 { &g.block } else { &g.weight_t }, &wd);
            if l > 0 {
                let bias = if a.size()[1] < d.size()[1] {
                    d * weights
                } else {
                    wd
                };
                let _ = bias.sum_intlist_out(&g.bias, [0i64].as_slice(), false, Kind::Float);
            }
        }
    }

    /// Every example's gradient, materialized per layer as `[k, in + 1, out]` (in the flat
    /// layout's block order). For tests and for microbatches; the training path never builds it.
    pub fn materialize(&self) -> Vec<Tensor> {
        self.inputs
            .iter()
            .zip(&self.deltas)
            .enumerate()
            .map(|(l, (a, d))| {
                let a = if l == 0 {
                    a.shallow_clone()
                } else {
                    Tensor::cat(&[a, &a.ones_like().narrow(1, 0, 1)], 1)
                };
                Tensor::einsum("bi,bo->bio", &[&a, d], None::<i64>)
            })
            .collect()
    }
}

/// The 0-dim tensors a step needs, made once (libtorch wraps a scalar argument into a new
/// tensor on every call, which costs more than the small operations themselves).
#[derive(Debug)]
pub struct Constants {
    /// 1.
    pub one: Tensor,
    /// [`NORM_EPS`].
    pub eps: Tensor,
    /// The clip bound times the gradient scale.
    pub clip_scaled: Tensor,
    /// The gradient scale (1 / expected batch size).
    pub scale: f64,
}

impl Constants {
    /// Constants for clip bound `clip` and gradient scale `scale`, on `device`.
    pub fn new(clip: f64, scale: f64, device: tch::Device) -> Self {
        let t = |v: f64| Tensor::full([], v, (Kind::Float, device));
        Constants {
            one: t(1.0),
            eps: t(NORM_EPS),
            clip_scaled: t(clip * scale),
            scale,
        }
    }
}

/// What is known of a batch's per-example norms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norms {
    /// Every norm is finite (checked): the weights and sums need no guard.
    Finite,
    /// Some may not be (not checked, or checked and not): the guarded weights and sums.
    MaybeNotFinite,
}

impl Norms {
    /// What the per-example `norms` (`[k, 1]`) are, from their sum (a read of one value: on
    /// the CPU, where every operation has finished when it returns, no wait).
    pub fn check(norms: &Tensor) -> Self {
        if norms.sum(Kind::Float).double_value(&[]).is_finite() {
            Norms::Finite
        } else {
            Norms::MaybeNotFinite
        }
    }
}

/// Clip factors times the scale, `min(1, C / (norm + 1e-6)) * scale` (Opacus's factor), and 0
/// where the norm is not finite (infinite: `C / inf` is 0 already; NaN: the factor would be
/// NaN; not looked for where `known` says every norm is finite), `[k, 1]`. With clipping off
/// (`C` infinite) the factor is the scale, and still 0 for a norm that is not finite.
pub fn clip_weights(norms: &Tensor, consts: &Constants, known: Norms) -> Tensor {
    let mut w = consts.clip_scaled.divide(&(norms + &consts.eps));
    let _ = w.clamp_max_(consts.scale);
    if known == Norms::MaybeNotFinite {
        let _ = w.nan_to_num_(0.0, 0.0, 0.0);
    }
    w
}

/// `t` with NaN as 0 and infinities as the largest finite floats (a copy).
fn finite(t: &Tensor) -> Tensor {
    t.nan_to_num(0.0, None, None)
}

#[cfg(test)]
mod tests {
    use tch::{Device, Reduction};

    use super::*;
    use crate::mlp::Shape;

    /// Random augmented inputs, 0/1 labels and the input norms, for `k` examples of width `d`.
    fn batch(k: i64, d: i64, seed: i64) -> (Tensor, Tensor, Tensor) {
        tch::manual_seed(seed);
        let x = Tensor::randn([k, d], (Kind::Float, Device::Cpu));
        let inputs = Tensor::cat(&[x, Tensor::ones([k, 1], (Kind::Float, Device::Cpu))], 1);
        let labels = Tensor::rand([k, 1], (Kind::Float, Device::Cpu)).round();
        let norms = inputs.norm_scalaropt_dim(2.0, [1i64], true);
        (inputs, labels, norms)
    }

    /// Example i's gradient by autograd on a batch of one, per layer in block layout.
    fn autograd_one(mlp: &Mlp, inputs: &Tensor, labels: &Tensor, i: i64) -> Vec<Tensor> {
        let flat = mlp.flat().detach().copy().set_requires_grad(true);
        let views = mlp.shape().views(&flat);
        let x = inputs.narrow(0, i, 1);
        let mut z = x.mm(&views[0].block);
        for v in &views[1..] {
            z = z.relu().mm(&v.weight_t) + &v.bias;
        }
        let loss = z.binary_cross_entropy_with_logits::<Tensor>(
            &labels.narrow(0, i, 1),
            None,
            None,
            Reduction::Mean,
        );
        loss.backward();
        let grad = flat.grad();
        mlp.shape()
            .views(&grad)
            .into_iter()
            .map(|v| v.block)
            .collect()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn per_example_gradients_and_norms_equal_autograd_batches_of_one() {
        for hidden in [vec![5], vec![6, 4]] {
            let (k, d) = (7, 3);
            let mlp = Mlp::new(Shape::new(d as usize, &hidden), 3, Device::Cpu).unwrap();
            let (inputs, labels, input_norms) = batch(k, d, 5);
            let pe = PerExample::compute(&mlp, &inputs, &labels);
            let grads = pe.materialize();
            let norms = pe.norms(&input_norms, &Constants::new(1.0, 1.0, Device::Cpu));
            for i in 0..k {
                let want = autograd_one(&mlp, &inputs, &labels, i);
                let mut sq = 0.0;
                for (l, w) in want.iter().enumerate() {
                    let got = grads[l].get(i);
                    assert!(
                        max_abs_diff(&got, w) < 1e-5,
                        "hidden {hidden:?} layer {l} example {i}"
                    );
                    sq += w.square().sum(Kind::Float).double_value(&[]);
                }
                let n = norms.double_value(&[i, 0]);
                assert!((n - sq.sqrt()).abs() < 1e-5, "norm {n} vs {}", sq.sqrt());
            }
        }
    }

    #[test]
    fn weighted_sum_equals_sum_of_weighted_materialized_gradients() {
        let mlp = Mlp::new(Shape::new(4, &[6, 3]), 9, Device::Cpu).unwrap();
        let (inputs, labels, input_norms) = batch(11, 4, 2);
        let pe = PerExample::compute(&mlp, &inputs, &labels);
        let consts = Constants::new(0.05, 0.25, Device::Cpu);
        let norms = pe.norms(&input_norms, &consts);
        assert_eq!(Norms::check(&norms), Norms::Finite);
        // The guarded sums (a GPU's, or a batch with a norm not finite) equal the plain ones
        // where every norm is finite.
        for known in [Norms::Finite, Norms::MaybeNotFinite] {
            let w = clip_weights(&norms, &consts, known);
            let out = Tensor::zeros([mlp.shape().numel() as i64], (Kind::Float, Device::Cpu));
            pe.weighted_sum_into(&w, &mlp.shape().views(&out), known);
            let got = mlp.shape().views(&out);
            for (l, g) in pe.materialize().iter().enumerate() {
                let want = (g * w.view([-1, 1, 1])).sum_dim_intlist(0i64, false, Kind::Float);
                assert!(
                    max_abs_diff(&got[l].block, &want) < 1e-6,
                    "{known:?} layer {l}"
                );
            }
        }
    }

    #[test]
    fn clip_weights_bound_every_norm_by_clip() {
        let norms = Tensor::from_slice(&[0.0f32, 0.5, 1.0, 4.0]).view([4, 1]);
        let w = clip_weights(
            &norms,
            &Constants::new(1.0, 0.5, Device::Cpu),
            Norms::Finite,
        );
        let clipped = Vec::<f32>::try_from((&w * &norms).view([-1])).unwrap();
        assert_eq!(Vec::<f32>::try_from(w.view([-1])).unwrap()[..2], [0.5, 0.5]);
        assert!(clipped.iter().all(|&c| c <= 0.5 + 1e-6), "{clipped:?}");
        assert!((clipped[3] - 0.5).abs() < 1e-5);
        // A norm that is not finite gets weight 0 (`min(1, C / NaN)` was NaN), with clipping
        // off too.
        let bad = Tensor::from_slice(&[f32::NAN, f32::INFINITY, 2.0]).view([3, 1]);
        for clip in [1.0, f64::INFINITY] {
            let w = clip_weights(
                &bad,
                &Constants::new(clip, 0.5, Device::Cpu),
                Norms::check(&bad),
            );
            let w = Vec::<f32>::try_from(w.view([-1])).unwrap();
            assert_eq!(w[..2], [0.0, 0.0], "clip {clip}");
            assert!(w[2] > 0.0 && w[2] <= 0.5, "clip {clip}: {w:?}");
        }
    }
}
