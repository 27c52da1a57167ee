//! The DP optimizer's step (Opacus's `DPOptimizer`): per-example gradients, clip each to C,
//! sum, add N(0, (sigma C)^2) once, divide by the expected batch size, optimizer update.

use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::config::{GradSample, NoiseRng};
use crate::grad_sample::{Constants, PerExample, clip_weights};
use crate::mlp::{LayerViews, Mlp, Shape};
use crate::noise::NoiseSource;
use crate::optim::Optimizer;
use crate::profile::{Phase, Profiler};

/// What a step does with the per-example gradients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepPrivacy {
    /// Plain mini-batch SGD on the same Poisson batches (`--no-dp`).
    NonPrivate,
    /// DP-SGD.
    Private {
        /// Clip bound C.
        clip: f64,
        /// Noise std over C.
        noise_multiplier: f64,
        /// Per-example or per-microbatch clipping.
        grad_sample: GradSample,
        /// The noise's random source.
        noise_rng: NoiseRng,
    },
}

/// One step's machinery, with its buffers reused across steps.
#[derive(Debug)]
pub struct DpStep {
    privacy: StepPrivacy,
    expected_batch: f64,
    consts: Constants,
    grad: Tensor,
    grad_views: Vec<LayerViews>,
    noise: Option<NoiseSource>,
    optimizer: Optimizer,
}

impl DpStep {
    /// A step for a model of `shape` on `device`; gradients are divided by `expected_batch`
    /// (divided by `expected_batch / n` with microbatches of `n`, the expected number of them).
    /// `noise_seed` seeds the noise unless it is secure.
    pub fn new(
        shape: &Shape,
        device: Device,
        expected_batch: f64,
        privacy: StepPrivacy,
        optimizer: Optimizer,
        noise_seed: u64,
    ) -> Result<Self> {
        let grad = Tensor::zeros([shape.numel() as i64], (Kind::Float, device));
        let (clip, scale, noise) = match privacy {
            StepPrivacy::NonPrivate => (f64::INFINITY, 1.0 / expected_batch, None),
            StepPrivacy::Private {
                clip,
                noise_multiplier,
                grad_sample,
                noise_rng,
            } => {
                let units = match grad_sample {
                    GradSample::Vectorized => expected_batch,
                    GradSample::Microbatch(n) => expected_batch / n as f64,
                };
                let noise = (noise_multiplier > 0.0)
                    .then(|| {
                        let std = noise_multiplier * clip / units;
                        NoiseSource::new(noise_rng, noise_seed, shape.numel(), std, device)
                    })
                    .transpose()?;
                (clip, 1.0 / units, noise)
            }
        };
        Ok(DpStep {
            privacy,
            expected_batch,
            consts: Constants::new(clip, scale, device),
            grad_views: shape.views(&grad),
            grad,
            noise,
            optimizer,
        })
    }

    /// The gradient buffer: after [`DpStep::accumulate`] the batch's clipped, scaled sum;
    /// after [`DpStep::apply`] that plus the noise, as the optimizer used it.
    pub fn grad(&self) -> &Tensor {
        &self.grad
    }

    /// The optimizer (for checkpoints).
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// The optimizer, mutably (to restore a checkpoint).
    pub fn optimizer_mut(&mut self) -> &mut Optimizer {
        &mut self.optimizer
    }

    /// Starts the noise stream of `epoch`.
    pub fn start_epoch(&mut self, epoch: u32) {
        if let Some(noise) = &mut self.noise {
            noise.start_epoch(epoch);
        }
    }

    /// The expected batch size gradients are divided by.
    pub fn expected_batch(&self) -> f64 {
        self.expected_batch
    }

    /// One step on a batch given as augmented inputs `[x, 1]`, labels and input norms:
    /// [`DpStep::accumulate`] then [`DpStep::apply`].
    pub fn step(
        &mut self,
        mlp: &Mlp,
        inputs: &Tensor,
        labels: &Tensor,
        input_norms: &Tensor,
        prof: &mut Profiler,
    ) {
        self.accumulate(mlp, inputs, labels, input_norms, prof);
        self.apply(mlp, prof);
    }

    /// Writes the batch's clipped gradient sum, divided by the expected batch size, into the
    /// gradient buffer (overwriting it). Data-parallel training sums these buffers over
    /// workers before [`DpStep::apply`], which then adds the noise once.
    pub fn accumulate(
        &mut self,
        mlp: &Mlp,
        inputs: &Tensor,
        labels: &Tensor,
        input_norms: &Tensor,
        prof: &mut Profiler,
    ) {
        let pe = PerExample::compute(mlp, inputs, labels);
        prof.mark(Phase::ForwardBackward);
        match self.privacy {
            StepPrivacy::NonPrivate => {
                pe.weighted_sum_into(&self.consts.scale_tensor, &self.grad_views);
            }
            StepPrivacy::Private { grad_sample, .. } => match grad_sample {
                GradSample::Vectorized => {
                    let w = clip_weights(&pe.norms(input_norms, &self.consts), &self.consts);
                    pe.weighted_sum_into(&w, &self.grad_views);
                }
                GradSample::Microbatch(n) => self.microbatch_sum(&pe, n),
            },
        }
        prof.mark(Phase::Clipping);
    }

    /// Adds the noise (once, std sigma C over the expected batch size) to the gradient buffer
    /// and takes the optimizer step: [`DpStep::add_noise`] then [`DpStep::update`].
    pub fn apply(&mut self, mlp: &Mlp, prof: &mut Profiler) {
        self.add_noise(prof);
        self.update(mlp, prof);
    }

    /// Adds the step's noise to the gradient buffer (nothing without noise, or when
    /// [`DpStep::noise_elsewhere`] said another worker adds it).
    pub fn add_noise(&mut self, prof: &mut Profiler) {
        if let Some(noise) = &mut self.noise {
            noise.add_to(&self.grad);
            prof.mark(Phase::Noise);
        }
    }

    /// The optimizer step with the gradient buffer as it is.
    pub fn update(&mut self, mlp: &Mlp, prof: &mut Profiler) {
        self.optimizer.step(mlp.flat(), &self.grad);
        prof.mark(Phase::Step);
    }

    /// This step adds no noise of its own: in a data-parallel run one worker adds the noise to
    /// its share before the shares are summed, so the sum holds it exactly once.
    pub fn noise_elsewhere(mut self) -> Self {
        self.noise = None;
        self
    }

    /// The seed's microbatches: consecutive groups of `n` sampled examples (the last may be
    /// smaller); each group's mean gradient is clipped as one unit.
    fn microbatch_sum(&mut self, pe: &PerExample, n: usize) {
        let grads = pe.materialize();
        let k = grads[0].size()[0] as usize;
        let groups = k.div_ceil(n);
        let device = self.grad.device();
        let ids = Tensor::arange(k as i64, (Kind::Int64, device)).floor_divide_scalar(n as i64);
        let counts: Vec<f32> = (0..groups).map(|g| (k - g * n).min(n) as f32).collect();
        let counts = Tensor::from_slice(&counts)
            .to_device(device)
            .view([-1, 1, 1]);
        let means: Vec<Tensor> = grads
            .iter()
            .map(|g| {
                let s = g.size();
                Tensor::zeros([groups as i64, s[1], s[2]], (Kind::Float, device))
                    .index_add(0, &ids, g)
                    / &counts
            })
            .collect();
        let sq = means
            .iter()
            .map(|m| {
                m.square()
                    .sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float)
            })
            .reduce(|a, b| a + b)
            .expect("an MLP has at least one layer");
        let w = clip_weights(&sq.sqrt().view([-1, 1]), &self.consts).view([-1, 1, 1]);
        for (m, out) in means.iter().zip(&self.grad_views) {
            let mut block = out.block.shallow_clone();
            block.copy_(&(m * &w).sum_dim_intlist(0i64, false, Kind::Float));
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::Reduction;

    use super::*;
    use crate::optim::OptimizerKind;

    fn setup(k: i64, seed: i64) -> (Mlp, Tensor, Tensor, Tensor) {
        tch::manual_seed(seed);
        let o = (Kind::Float, Device::Cpu);
        let mlp = Mlp::new(Shape::new(4, &[8]), seed as u64, Device::Cpu).unwrap();
        let x = Tensor::randn([k, 4], o);
        let inputs = Tensor::cat(&[x, Tensor::ones([k, 1], o)], 1);
        let labels = Tensor::rand([k, 1], o).round();
        let norms = inputs.norm_scalaropt_dim(2.0, [1i64], true);
        (mlp, inputs, labels, norms)
    }

    fn private(clip: f64, noise: f64, grad_sample: GradSample) -> StepPrivacy {
        StepPrivacy::Private {
            clip,
            noise_multiplier: noise,
            grad_sample,
            noise_rng: NoiseRng::Seeded,
        }
    }

    fn run_step(
        mlp: &Mlp,
        privacy: StepPrivacy,
        b: f64,
        batch: &(Tensor, Tensor, Tensor),
    ) -> Tensor {
        let opt = Optimizer::new(OptimizerKind::Sgd, 0.1, mlp.shape().numel(), Device::Cpu);
        let mut step = DpStep::new(mlp.shape(), Device::Cpu, b, privacy, opt, 0).unwrap();
        let mut prof = Profiler::new(false, Device::Cpu);
        step.step(mlp, &batch.0, &batch.1, &batch.2, &mut prof);
        step.grad().copy()
    }

    /// With clipping effectively off and no noise, a DP step is a plain SGD step on the sum of
    /// the examples' losses divided by B (autograd on the whole batch).
    #[test]
    fn unclipped_noiseless_step_equals_plain_sgd() {
        let (mlp, inputs, labels, norms) = setup(13, 1);
        let b = 10.0;
        let before = mlp.flat().copy();
        // Autograd reference: grad of sum(loss) / B, then p -= lr * grad.
        let flat = before.copy().set_requires_grad(true);
        let views = mlp.shape().views(&flat);
        let z = inputs.mm(&views[0].block).relu().mm(&views[1].weight_t) + &views[1].bias;
        let loss =
            z.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Sum) / b;
        loss.backward();
        let want = &before - flat.grad() * 0.1;
        let batch = (inputs, labels, norms);
        for privacy in [
            private(1e9, 0.0, GradSample::Vectorized),
            StepPrivacy::NonPrivate,
        ] {
            let model = Mlp::from_flat(mlp.shape().clone(), before.copy()).unwrap();
            let _ = run_step(&model, privacy, b, &batch);
            let diff = (model.flat() - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{privacy:?}: {diff}");
        }
    }

    /// With SGD and no noise, the update's norm never exceeds lr * C * k / B.
    #[test]
    fn noiseless_update_is_bounded_by_lr_clip_k_over_b() {
        for seed in 0..20 {
            let k = 5 + seed;
            let (mlp, inputs, labels, norms) = setup(k, seed);
            // Large inputs so most examples are clipped.
            let inputs = inputs * 30.0;
            let norms = norms * 30.0;
            let before = mlp.flat().copy();
            let clip = 0.2;
            let _ = run_step(
                &mlp,
                private(clip, 0.0, GradSample::Vectorized),
                8.0,
                &(inputs, labels, norms),
            );
            let update = (mlp.flat() - before).norm().double_value(&[]);
            let bound = 0.1 * clip * k as f64 / 8.0;
            assert!(
                update <= bound * (1.0 + 1e-5),
                "seed {seed}: {update} > {bound}"
            );
        }
    }

    #[test]
    fn microbatches_of_one_equal_per_example_clipping() {
        let (mlp, inputs, labels, norms) = setup(9, 4);
        let batch = (inputs, labels, norms);
        let a = run_step(&mlp, private(0.3, 0.0, GradSample::Vectorized), 6.0, &batch);
        let mlp2 = Mlp::new(Shape::new(4, &[8]), 4, Device::Cpu).unwrap();
        let b = run_step(
            &mlp2,
            private(0.3, 0.0, GradSample::Microbatch(1)),
            6.0,
            &batch,
        );
        assert!((a - b).abs().max().double_value(&[]) < 1e-6);
    }

    /// Microbatches of 3: each group's mean gradient, clipped, summed, divided by B / 3.
    #[test]
    fn microbatches_clip_group_means() {
        let (mlp, inputs, labels, norms) = setup(8, 6);
        let pe = PerExample::compute(&mlp, &inputs, &labels);
        let grads = pe.materialize();
        let (clip, b) = (0.05, 6.0);
        let mut want: Vec<Tensor> = grads.iter().map(|g| g.get(0).zeros_like()).collect();
        for group in [0..3, 3..6, 6..8] {
            let means: Vec<Tensor> = grads
                .iter()
                .map(|g| {
                    g.narrow(0, group.start, group.end - group.start).mean_dim(
                        0i64,
                        false,
                        Kind::Float,
                    )
                })
                .collect();
            let norm = means
                .iter()
                .map(|m| m.square().sum(Kind::Float).double_value(&[]))
                .sum::<f64>()
                .sqrt();
            let f = (clip / (norm + 1e-6)).min(1.0) / (b / 3.0);
            for (w, m) in want.iter_mut().zip(&means) {
                *w = &*w + m * f;
            }
        }
        let got = run_step(
            &mlp,
            private(clip, 0.0, GradSample::Microbatch(3)),
            b,
            &(inputs, labels, norms),
        );
        let views = mlp.shape().views(&got);
        for (l, w) in want.iter().enumerate() {
            assert!(
                (&views[l].block - w).abs().max().double_value(&[]) < 1e-6,
                "layer {l}"
            );
        }
    }

    #[test]
    fn an_empty_batch_still_adds_noise() {
        let (mlp, inputs, labels, norms) = setup(4, 2);
        let empty = (
            inputs.narrow(0, 0, 0),
            labels.narrow(0, 0, 0),
            norms.narrow(0, 0, 0),
        );
        let g = run_step(&mlp, private(1.0, 1.0, GradSample::Vectorized), 4.0, &empty);
        let std = g.std(true).double_value(&[]);
        // Noise std sigma * C / B = 0.25 over 49 parameters.
        assert!((0.15..0.35).contains(&std), "{std}");
        let g = run_step(&mlp, private(1.0, 0.0, GradSample::Vectorized), 4.0, &empty);
        assert_eq!(g.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
}
