//! The DP optimizer's step (Opacus's `DPOptimizer`): per-example gradients, clip each to C,
//! sum, add N(0, (sigma C)^2) once, divide by the expected batch size, optimizer update.
//!
//! In every gradient path (the closed form in libtorch, the plain-Rust [`Fused`] step, the
//! microbatches) a gradient whose norm is not finite contributes zero and is counted
//! ([`DpStep::take_zeroed`], an operator's diagnostic): the clipped sum moves by at most the
//! sensitivity the accountant is told, whatever one row holds.

use std::cell::Cell;

use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::config::{GradSample, NoiseRng};
use crate::host_rows::HostRows;
use crate::mechanism::fused::{Clip, Fused};
use crate::mechanism::grad_sample::{Constants, NORM_EPS, Norms, PerExample, clip_weights};
use crate::mechanism::keystream::Cipher;
use crate::mechanism::noise::NoiseSource;
use crate::mechanism::optim::Optimizer;
use crate::mechanism::quiet::QuietRows;
use crate::mlp::{LayerViews, Mlp, Shape};
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
        /// The noise's key.
        noise_rng: NoiseRng,
    },
}

/// The number of microbatches records are hashed into for microbatches of `size` at expected
/// batch size `expected_batch`: round(B / size), at least 1, so a microbatch holds `size`
/// sampled records on average.
pub fn microbatch_count(expected_batch: f64, size: usize) -> usize {
    ((expected_batch / size as f64).round() as usize).max(1)
}

/// The microbatch of the record with key `key` out of `count` ([`shards::hash::microbatch_of`]:
/// a hash of the key alone, so adding or removing a record moves no other record between groups).
pub fn microbatch_of(key: u64, count: usize) -> i64 {
    i64::from(shards::hash::microbatch_of(key, count as u32))
}

/// How [`DpStep::grouped_sum`] makes a group's gradient of its rows'.
#[derive(Debug, Clone, Copy)]
enum Group {
    /// Their sum: a privacy unit's gradient.
    Sum,
    /// Their mean: the seed's microbatches.
    Mean,
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
    /// With microbatches: their number, and the next batch's rows' microbatches.
    microbatches: usize,
    microbatch_ids: Option<Tensor>,
    /// With privacy units: the next batch's rows' units (their places among the batch's
    /// units) and the number of units, set before each step ([`DpStep::set_units`]).
    units: bool,
    unit_ids: Option<(Tensor, i64)>,
    /// The plain-Rust CPU path for small models ([`Fused`]), where it is faster.
    fused: Option<Fused>,
    /// The fused path's host gradient is newer than `grad`: it is copied over when `grad` is
    /// read or the optimizer steps, so the noise is added to it on the host first.
    host_pending: Cell<bool>,
    /// The model's parameters, and the quiet coordinates after them in `grad` (an audit's:
    /// [`crate::mechanism::quiet`]; 0 otherwise).
    numel: usize,
    quiet: usize,
    /// Gradients (per example, or microbatch means) the libtorch paths clipped since
    /// [`DpStep::take_zeroed`], and how many had a finite norm (on the host where that was
    /// checked; the rest on the device, read only there): the others contributed zero.
    clipped: u64,
    finite: u64,
    finite_device: Tensor,
    /// Whether the libtorch per-example path looks at the norms first ([`Norms::check`]) and
    /// takes the unguarded sums when all are finite: on the CPU, where the look costs no wait;
    /// on a GPU it would wait for the device every step, so the sums are always guarded.
    check_norms: bool,
}

impl DpStep {
    /// A step for a model of `shape` on `device`; gradients are divided by `expected_batch`
    /// (by [`microbatch_count`] with microbatches, the expected number of them).
    pub fn new(
        shape: &Shape,
        device: Device,
        expected_batch: f64,
        privacy: StepPrivacy,
        optimizer: Optimizer,
    ) -> Result<Self> {
        DpStep::with_quiet(shape, device, expected_batch, privacy, optimizer, 0)
    }

    /// [`DpStep::new`] with `quiet` quiet coordinates after the model's parameters
    /// ([`crate::mechanism::quiet`]): the gradient and the noise have `numel + quiet` values,
    /// the optimizer is given the first `numel`.
    pub fn with_quiet(
        shape: &Shape,
        device: Device,
        expected_batch: f64,
        privacy: StepPrivacy,
        optimizer: Optimizer,
        quiet: usize,
    ) -> Result<Self> {
        let numel = shape.numel();
        let grad = Tensor::zeros([(numel + quiet) as i64], (Kind::Float, device));
        let mut microbatches = 0;
        let (clip, scale, noise) = match privacy {
            StepPrivacy::NonPrivate => (f64::INFINITY, 1.0 / expected_batch, None),
            StepPrivacy::Private {
                clip,
                noise_multiplier,
                grad_sample,
                noise_rng,
            } => {
                let units = match grad_sample {
                    GradSample::Microbatch(n) if n > 1 => {
                        microbatches = microbatch_count(expected_batch, n);
                        microbatches as f64
                    }
                    _ => expected_batch,
                };
                let noise = (noise_multiplier > 0.0)
                    .then(|| {
                        let std = noise_multiplier * clip / units;
                        NoiseSource::new(noise_rng, numel + quiet, std, device)
                    })
                    .transpose()?;
                (clip, 1.0 / units, noise)
            }
        };
        let fused = (device == Device::Cpu
            && microbatches == 0
            && Fused::worthwhile(shape, expected_batch))
        .then(|| Fused::new(shape).with_quiet(quiet));
        Ok(DpStep {
            numel,
            quiet,
            privacy,
            expected_batch,
            fused,
            host_pending: Cell::new(false),
            clipped: 0,
            finite: 0,
            finite_device: Tensor::zeros([], (Kind::Int64, device)),
            check_norms: device == Device::Cpu,
            consts: Constants::new(clip, scale, device),
            grad_views: shape.views(&grad),
            grad,
            noise,
            optimizer,
            microbatches,
            microbatch_ids: None,
            units: false,
            unit_ids: None,
        })
    }

    /// This step clips units, not rows: each sampled unit's gradient is the sum of its rows'
    /// per-example gradients, clipped once to C (user-level DP-SGD); [`DpStep::set_units`]
    /// says before each step which rows make which unit.
    pub fn clip_units(mut self) -> Self {
        assert_eq!(self.microbatches, 0, "units and microbatches do not mix");
        self.units = true;
        self
    }

    /// Whether this step clips units ([`DpStep::clip_units`]).
    pub fn units(&self) -> bool {
        self.units
    }

    /// With units: the unit (`0..count`, its place among the batch's units) of each row of the
    /// next batch, `[k]` int64 on the device. Needed before each [`DpStep::accumulate`] then.
    pub fn set_units(&mut self, ids: Tensor, count: i64) {
        self.unit_ids = Some((ids, count));
    }

    /// With microbatches: the microbatch ([`microbatch_of`]) of each row of the next batch,
    /// `[k]` int64 on the device. Needed before each [`DpStep::accumulate`] then.
    pub fn set_microbatches(&mut self, ids: Tensor) {
        self.microbatch_ids = Some(ids);
    }

    /// Uses the plain-Rust CPU path ([`Fused`]) for [`DpStep::accumulate_rows`] or not (it is
    /// chosen automatically: on the CPU, without microbatches, for small models at small
    /// batches). `on` needs
    /// a CPU model and no microbatches.
    pub fn set_fused(&mut self, on: bool, shape: &Shape) {
        assert!(
            !on || (self.grad.device() == Device::Cpu && self.microbatches == 0),
            "the fused path is for CPU steps without microbatches"
        );
        self.flush();
        self.sync_model();
        self.fused = on.then(|| Fused::new(shape).with_quiet(self.quiet));
    }

    /// Copies the fused path's host gradient into `grad` if it is newer.
    fn flush(&self) {
        if self.host_pending.replace(false)
            && let Some(fused) = &self.fused
        {
            fused.write_to(&self.grad);
        }
    }

    /// Whether the libtorch path checks the norms first ([`DpStep`]'s `check_norms`): tests run
    /// the guarded sums a GPU step takes on the CPU too.
    #[cfg(test)]
    fn set_check_norms(&mut self, on: bool) {
        self.check_norms = on;
    }

    /// Whether [`DpStep::accumulate_rows`] takes the plain-Rust CPU path.
    pub fn fused(&self) -> bool {
        self.fused.is_some()
    }

    /// The number of microbatches records are hashed into (0 without microbatches).
    pub fn microbatches(&self) -> usize {
        self.microbatches
    }

    /// The gradient buffer: after [`DpStep::accumulate`] the batch's clipped, scaled sum;
    /// after [`DpStep::apply`] that plus the noise, as the optimizer used it.
    pub fn grad(&self) -> &Tensor {
        self.flush();
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

    /// [`DpStep::accumulate`] on a batch given as its data rows (`[k, stride]`, as
    /// [`crate::data::Examples::rows`] holds them, with `width` features), by the plain-Rust
    /// path where [`DpStep::fused`] says so.
    pub fn accumulate_rows(&mut self, mlp: &Mlp, width: usize, rows: &Tensor, prof: &mut Profiler) {
        let clip = self.clip();
        // (Units take the plain-Rust path only through `accumulate_units_gathered`.)
        if let Some(fused) = self.fused.as_mut().filter(|_| !self.units) {
            fused.accumulate(mlp.flat(), rows, clip);
            self.host_pending.set(true);
            prof.mark(Phase::Clipping);
            return;
        }
        let w = width as i64;
        let (inputs, labels, norms) = (
            rows.narrow(1, 0, w + 1),
            rows.narrow(1, w + 1, 1),
            rows.narrow(1, w + 2, 1),
        );
        self.accumulate(mlp, &inputs, &labels, &norms, prof);
    }

    /// [`DpStep::accumulate_rows`] on rows `idx` of `all`, every example's data rows on the
    /// host ([`crate::data::Examples::host_rows`]), gathered by the plain-Rust
    /// path itself: the same model bits as `accumulate_rows` on `index_select(0, idx)` of the
    /// row tensor, without that gather.
    ///
    /// # Panics
    ///
    /// Unless [`DpStep::fused`] (the caller keeps host rows only then), or if an index is
    /// outside `all`.
    pub fn accumulate_gathered(
        &mut self,
        mlp: &Mlp,
        all: &HostRows,
        idx: &[i64],
        prof: &mut Profiler,
    ) {
        let clip = self.clip();
        let fused = self
            .fused
            .as_mut()
            .expect("host rows are gathered on the plain-Rust path only");
        fused.accumulate_gathered(mlp.flat(), all, idx, clip);
        self.host_pending.set(true);
        prof.mark(Phase::Clipping);
    }

    /// [`DpStep::accumulate_gathered`] for privacy units: rows `idx` of `all`, unit `u` being
    /// `idx[starts[u]..starts[u + 1]]`, each unit clipped once ([`DpStep::clip_units`]).
    ///
    /// # Panics
    ///
    /// Unless [`DpStep::fused`] and [`DpStep::units`], or if an index is outside `all`.
    pub fn accumulate_units_gathered(
        &mut self,
        mlp: &Mlp,
        all: &HostRows,
        idx: &[i64],
        starts: &[usize],
        prof: &mut Profiler,
    ) {
        assert!(self.units, "units are gathered for a step that clips units");
        let clip = self.clip();
        let fused = self
            .fused
            .as_mut()
            .expect("host rows are gathered on the plain-Rust path only");
        fused.accumulate_units_gathered(mlp.flat(), all, idx, starts, clip);
        self.host_pending.set(true);
        prof.mark(Phase::Clipping);
    }

    /// What the plain-Rust path scales and clips by.
    fn clip(&self) -> Clip {
        Clip {
            clip_scaled: match self.privacy {
                StepPrivacy::NonPrivate => f32::INFINITY,
                StepPrivacy::Private { clip, .. } => (clip * self.consts.scale) as f32,
            },
            scale: self.consts.scale as f32,
            eps: NORM_EPS as f32,
        }
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
        self.host_pending.set(false);
        self.sync_model();
        let pe = PerExample::compute(mlp, inputs, labels);
        prof.mark(Phase::ForwardBackward);
        let norms = pe.norms(input_norms, &self.consts);
        let known = match self.check_norms {
            true => Norms::check(&norms),
            false => Norms::MaybeNotFinite,
        };
        self.count_finite(&norms, known);
        match self.privacy {
            StepPrivacy::Private { .. } if self.units => {
                let (ids, count) = self
                    .unit_ids
                    .take()
                    .expect("set_units is called before each step with units");
                self.grouped_sum(&pe, &norms, &ids, count, Group::Sum);
            }
            StepPrivacy::Private { .. } if self.microbatches > 0 => {
                let ids = self
                    .microbatch_ids
                    .take()
                    .expect("set_microbatches is called before each step with microbatches");
                self.grouped_sum(&pe, &norms, &ids, self.microbatches as i64, Group::Mean);
            }
            // Per example; without DP the clip bound is infinite: every weight is the scale,
            // but for gradients that are not finite (0), as with DP.
            _ => {
                let w = clip_weights(&norms, &self.consts, known);
                pe.weighted_sum_into(&w, &self.grad_views, known);
            }
        }
        if self.quiet > 0 {
            // No real row touches the quiet coordinates.
            let _ = self.quiet_tensor().zero_();
        }
        prof.mark(Phase::Clipping);
    }

    /// The gradient buffer's quiet coordinates (a view).
    fn quiet_tensor(&self) -> Tensor {
        self.grad.narrow(0, self.numel as i64, self.quiet as i64)
    }

    /// The number of quiet coordinates after the model's parameters.
    pub fn quiet(&self) -> usize {
        self.quiet
    }

    /// Adds `rows` (rows whose gradient lies on the quiet coordinates only: an audit's
    /// canaries), clipped and scaled like every row, to the batch's clipped sum: after
    /// [`DpStep::accumulate`] (or its variants), before the noise.
    ///
    /// # Panics
    ///
    /// If a row's coordinate is not a quiet coordinate of this step.
    pub fn add_quiet_rows(&mut self, rows: &QuietRows) {
        if rows.is_empty() {
            return;
        }
        let clip = self.clip();
        match &mut self.fused {
            Some(fused) if self.host_pending.get() => {
                rows.add_clipped(clip, &mut fused.grad_mut()[self.numel..]);
            }
            _ => {
                let mut host = vec![0f32; self.quiet];
                rows.add_clipped(clip, &mut host);
                let device = self.grad.device();
                let _ = self
                    .quiet_tensor()
                    .g_add_(&Tensor::from_slice(&host).to_device(device));
            }
        }
    }

    /// Copies the gradient buffer's quiet coordinates into `out` (resized): after
    /// [`DpStep::add_noise`], what the auditor reads there.
    pub fn read_quiet(&self, out: &mut Vec<f32>) {
        out.resize(self.quiet, 0.0);
        match &self.fused {
            Some(fused) if self.host_pending.get() => {
                out.copy_from_slice(&fused.grad()[self.numel..]);
            }
            _ => self
                .quiet_tensor()
                .to_device(Device::Cpu)
                .copy_data(out, self.quiet),
        }
    }

    /// Counts the gradients of `norms` (`[k, 1]`) and those of finite norm (all of them where
    /// `known` says so, else on the device).
    fn count_finite(&mut self, norms: &Tensor, known: Norms) {
        let k = norms.size()[0] as u64;
        self.clipped += k;
        match known {
            Norms::Finite => self.finite += k,
            Norms::MaybeNotFinite => self.finite_device += norms.isfinite().sum(Kind::Int64),
        }
    }

    /// The gradients that contributed zero because their norm was not finite (per example, and
    /// with microbatches also microbatch means), since the last call: an operator's diagnostic,
    /// a statistic of the data that epsilon does not cover. Reads the device (once an epoch).
    pub fn take_zeroed(&mut self) -> u64 {
        let finite = std::mem::take(&mut self.finite) + self.finite_device.int64_value(&[]) as u64;
        let _ = self.finite_device.zero_();
        let zeroed = std::mem::take(&mut self.clipped) - finite;
        zeroed + self.fused.as_mut().map_or(0, Fused::take_zeroed)
    }

    /// Adds the noise (once, std sigma C over the expected batch size) to the gradient buffer
    /// and takes the optimizer step: [`DpStep::add_noise`] then [`DpStep::update`].
    pub fn apply(&mut self, mlp: &Mlp, prof: &mut Profiler) {
        self.add_noise(prof);
        self.update(mlp, prof);
    }

    /// Adds the step's noise to the gradient buffer (nothing without noise, or when
    /// [`DpStep::noise_share`] left it to other workers). After the fused path, to its
    /// host gradient before that is copied over (the same `f32` additions, without two
    /// libtorch calls a step).
    pub fn add_noise(&mut self, prof: &mut Profiler) {
        if let Some(noise) = &mut self.noise {
            match &mut self.fused {
                Some(fused) if self.host_pending.get() => noise.add_to_host(fused.grad_mut()),
                _ => noise.add_to(&self.grad),
            }
            prof.mark(Phase::Noise);
        }
    }

    /// The optimizer step with the gradient buffer as it is. SGD or Adam after the fused path
    /// (its host gradient not read since) step on the host, and the gradient buffer stays
    /// pending (copied over only if it is read).
    pub fn update(&mut self, mlp: &Mlp, prof: &mut Profiler) {
        self.update_params(mlp, false, prof);
    }

    /// [`DpStep::update`], leaving a host step's parameters newer than `mlp`'s until
    /// [`DpStep::sync_model`] (which this step's own later calls make where they need `mlp`):
    /// for a run of steps on the plain-Rust path, which then reads and writes no tensor.
    /// Whoever reads `mlp` after it calls [`DpStep::sync_model`] first.
    pub fn update_deferred(&mut self, mlp: &Mlp, prof: &mut Profiler) {
        self.update_params(mlp, true, prof);
    }

    /// Writes parameters a deferred step left on the host ([`DpStep::update_deferred`]) to
    /// their model.
    pub fn sync_model(&mut self) {
        if let Some(fused) = &mut self.fused {
            fused.write_back();
        }
    }

    fn update_params(&mut self, mlp: &Mlp, defer: bool, prof: &mut Profiler) {
        match &mut self.fused {
            Some(fused) if self.host_pending.get() && self.optimizer.has_host_step() => {
                let optimizer = &mut self.optimizer;
                fused.update_params(mlp.flat(), defer, |p, g| optimizer.step_host(p, g));
            }
            _ => {
                self.sync_model();
                self.flush();
                let model = self.grad.narrow(0, 0, self.numel as i64);
                self.optimizer.step(mlp.flat(), &model);
            }
        }
        prof.mark(Phase::Step);
    }

    /// This step's noise drawn at most `steps` steps ahead ([`NoiseSource::ahead_at_most`]:
    /// an epoch's steps).
    pub fn noise_ahead(mut self, steps: u64) -> Self {
        let steps = usize::try_from(steps).unwrap_or(usize::MAX);
        self.noise = self.noise.take().map(|n| n.ahead_at_most(steps));
        self
    }

    /// This step's noise from `cipher`'s keystream ([`NoiseSource::into_cipher`]; the default
    /// is AES-256-CTR, ChaCha20 the reference): before [`DpStep::noise_ahead`] and
    /// [`DpStep::noise_share`].
    pub fn noise_cipher(mut self, cipher: Cipher) -> Result<Self> {
        self.noise = self
            .noise
            .take()
            .map(|n| n.into_cipher(cipher))
            .transpose()?;
        Ok(self)
    }

    /// This step adds the noise of worker `part` of `parts` only ([`NoiseSource::share`]): in a
    /// data-parallel run every worker adds its blocks' noise to its share before the shares are
    /// summed, so the sum holds each value exactly once.
    pub fn noise_share(mut self, part: usize, parts: usize) -> Self {
        self.noise = self.noise.take().and_then(|n| n.share(part, parts));
        self
    }

    /// Rows grouped by `ids` (`0..groups`): each group's gradient, the sum of its rows'
    /// per-example gradients (a privacy unit's) or their mean (the seed's microbatches; an
    /// empty group adds nothing), is clipped as one and the clipped gradients are summed. A row
    /// whose gradient is not finite (`norms`) counts as a zero gradient, and a group whose
    /// gradient's norm is not finite (finite gradients summing past the floats) adds nothing.
    fn grouped_sum(
        &mut self,
        pe: &PerExample,
        norms: &Tensor,
        ids: &Tensor,
        groups: i64,
        how: Group,
    ) {
        let bad = norms.isfinite().logical_not().view([-1, 1, 1]);
        let grads: Vec<Tensor> = pe
            .materialize()
            .into_iter()
            .map(|g| g.masked_fill(&bad, 0.0))
            .collect();
        let device = self.grad.device();
        let counts = match how {
            Group::Mean => Some(
                Tensor::zeros([groups], (Kind::Float, device))
                    .index_add(
                        0,
                        ids,
                        &Tensor::ones([ids.size()[0]], (Kind::Float, device)),
                    )
                    .clamp_min(1.0)
                    .view([-1, 1, 1]),
            ),
            Group::Sum => None,
        };
        let means: Vec<Tensor> = grads
            .iter()
            .map(|g| {
                let s = g.size();
                let sum =
                    Tensor::zeros([groups, s[1], s[2]], (Kind::Float, device)).index_add(0, ids, g);
                match &counts {
                    Some(c) => sum / c,
                    None => sum,
                }
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
        let norms = sq.sqrt().view([-1, 1]);
        self.count_finite(&norms, Norms::MaybeNotFinite);
        let w = clip_weights(&norms, &self.consts, Norms::MaybeNotFinite).view([-1, 1, 1]);
        for (m, out) in means.iter().zip(&self.grad_views) {
            let mut block = out.block.shallow_clone();
            // A mean of weight 0 may hold infinities: 0 x inf is NaN, which adds as 0.
            let mut weighted = m * &w;
            let _ = weighted.nan_to_num_(0.0, 0.0, 0.0);
            block.copy_(&weighted.sum_dim_intlist(0i64, false, Kind::Float));
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::Reduction;

    use super::*;
    use crate::mechanism::optim::OptimizerKind;

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
            noise_rng: NoiseRng::Seeded(0),
        }
    }

    fn run_step(
        mlp: &Mlp,
        privacy: StepPrivacy,
        b: f64,
        batch: &(Tensor, Tensor, Tensor),
    ) -> Tensor {
        let opt = Optimizer::new(OptimizerKind::Sgd, 0.1, mlp.shape().numel(), Device::Cpu);
        let mut step = DpStep::new(mlp.shape(), Device::Cpu, b, privacy, opt).unwrap();
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

    /// Microbatches of 3 at B = 6 (two groups): each group's mean gradient over its members,
    /// clipped, summed, divided by the number of groups.
    #[test]
    fn microbatches_clip_group_means() {
        let (mlp, inputs, labels, norms) = setup(8, 6);
        let pe = PerExample::compute(&mlp, &inputs, &labels);
        let grads = pe.materialize();
        let (clip, b) = (0.05, 6.0);
        let ids = [0i64, 1, 0, 0, 1, 1, 0, 1];
        let mut want: Vec<Tensor> = grads.iter().map(|g| g.get(0).zeros_like()).collect();
        for group in 0..2 {
            let members: Vec<i64> = (0..8).filter(|&i| ids[i as usize] == group).collect();
            let members = Tensor::from_slice(&members);
            let means: Vec<Tensor> = grads
                .iter()
                .map(|g| {
                    g.index_select(0, &members)
                        .mean_dim(0i64, false, Kind::Float)
                })
                .collect();
            let norm = means
                .iter()
                .map(|m| m.square().sum(Kind::Float).double_value(&[]))
                .sum::<f64>()
                .sqrt();
            let f = (clip / (norm + 1e-6)).min(1.0) / 2.0;
            for (w, m) in want.iter_mut().zip(&means) {
                *w = &*w + m * f;
            }
        }
        let opt = Optimizer::new(OptimizerKind::Sgd, 0.1, mlp.shape().numel(), Device::Cpu);
        let privacy = private(clip, 0.0, GradSample::Microbatch(3));
        let mut step = DpStep::new(mlp.shape(), Device::Cpu, b, privacy, opt).unwrap();
        assert_eq!(step.microbatches(), 2);
        step.set_microbatches(Tensor::from_slice(&ids));
        let mut prof = Profiler::new(false, Device::Cpu);
        step.accumulate(&mlp, &inputs, &labels, &norms, &mut prof);
        let views = mlp.shape().views(step.grad());
        for (l, w) in want.iter().enumerate() {
            assert!(
                (&views[l].block - w).abs().max().double_value(&[]) < 1e-6,
                "layer {l}"
            );
        }
    }

    /// Units (user-level DP-SGD): each unit's gradient, the sum of its rows' per-example
    /// gradients, is clipped once, and the clipped unit gradients are summed and divided by B.
    #[test]
    fn units_clip_the_sum_of_their_rows() {
        let (mlp, inputs, labels, norms) = setup(9, 8);
        let pe = PerExample::compute(&mlp, &inputs, &labels);
        let grads = pe.materialize();
        let (clip, b) = (0.4, 3.0);
        // Three units of 4, 1 and 4 rows, in no order.
        let ids = [0i64, 2, 1, 0, 2, 0, 2, 0, 2];
        let mut want: Vec<Tensor> = grads.iter().map(|g| g.get(0).zeros_like()).collect();
        for unit in 0..3 {
            let rows: Vec<i64> = (0..9).filter(|&i| ids[i as usize] == unit).collect();
            let rows = Tensor::from_slice(&rows);
            let sums: Vec<Tensor> = grads
                .iter()
                .map(|g| {
                    g.index_select(0, &rows)
                        .sum_dim_intlist(0i64, false, Kind::Float)
                })
                .collect();
            let norm = sums
                .iter()
                .map(|m| m.square().sum(Kind::Float).double_value(&[]))
                .sum::<f64>()
                .sqrt();
            let f = (clip / (norm + 1e-6)).min(1.0) / b;
            for (w, m) in want.iter_mut().zip(&sums) {
                *w = &*w + m * f;
            }
        }
        let opt = Optimizer::new(OptimizerKind::Sgd, 0.1, mlp.shape().numel(), Device::Cpu);
        let mut step = DpStep::new(
            mlp.shape(),
            Device::Cpu,
            b,
            private(clip, 0.0, GradSample::Vectorized),
            opt,
        )
        .unwrap()
        .clip_units();
        step.set_units(Tensor::from_slice(&ids), 3);
        let mut prof = Profiler::new(false, Device::Cpu);
        step.accumulate(&mlp, &inputs, &labels, &norms, &mut prof);
        let views = mlp.shape().views(step.grad());
        for (l, w) in want.iter().enumerate() {
            assert!(
                (&views[l].block - w).abs().max().double_value(&[]) < 1e-6,
                "layer {l}"
            );
        }
    }

    /// Neighbouring datasets at the unit level: adding one unit (any number of rows, sampled)
    /// to a batch of units moves the clipped sum by at most C, the sensitivity the accountant is
    /// told, while per-row clipping of the same rows moves it by up to the unit's size in C.
    #[test]
    fn adding_a_unit_moves_the_clipped_sum_by_at_most_c() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(12);
        let mut worst_rows = 0.0f64;
        for draw in 0..200 {
            let k = 8 + draw % 16;
            let (mlp, inputs, labels, norms) = setup(k, draw);
            let scale = [0.1, 1.0, 30.0][draw as usize % 3];
            let batch = (&inputs * scale, labels, &norms * scale);
            // Rows 0..k-size are the other units' (each of 1 to 3 rows); the last `size` rows
            // are the unit added.
            let size = 1 + draw % 6;
            let mut unit_of = Vec::new();
            let mut next = 0;
            while unit_of.len() < (k - size) as usize {
                let n = rng.random_range(1..=3usize);
                unit_of.extend(std::iter::repeat_n(next, n));
                next += 1;
            }
            unit_of.truncate((k - size) as usize);
            let others = unit_of.last().map_or(0, |u| u + 1);
            unit_of.extend(std::iter::repeat_n(others, size as usize));
            let sum = |with: bool, units: bool| {
                let rows: Vec<i64> = (0..k)
                    .filter(|&r| with || unit_of[r as usize] < others)
                    .collect();
                let opt = Optimizer::new(OptimizerKind::Sgd, 0.1, mlp.shape().numel(), Device::Cpu);
                let privacy = private(1.0, 0.0, GradSample::Vectorized);
                let mut step = DpStep::new(mlp.shape(), Device::Cpu, 1.0, privacy, opt).unwrap();
                if units {
                    step = step.clip_units();
                    let ids: Vec<i64> = rows.iter().map(|&r| unit_of[r as usize]).collect();
                    step.set_units(Tensor::from_slice(&ids), others + 1);
                }
                let idx = Tensor::from_slice(&rows);
                let pick = |t: &Tensor| t.index_select(0, &idx);
                let mut prof = Profiler::new(false, Device::Cpu);
                step.accumulate(
                    &mlp,
                    &pick(&batch.0),
                    &pick(&batch.1),
                    &pick(&batch.2),
                    &mut prof,
                );
                step.grad().copy()
            };
            let change = (sum(true, true) - sum(false, true))
                .norm()
                .double_value(&[]);
            assert!(
                change <= 1.0 + 1e-4,
                "draw {draw}: a unit of {size} rows moved it by {change} C"
            );
            let by_rows = (sum(true, false) - sum(false, false))
                .norm()
                .double_value(&[]);
            worst_rows = worst_rows.max(by_rows);
        }
        assert!(
            worst_rows > 1.5,
            "per-row clipping of a unit's rows: worst {worst_rows} C"
        );
    }

    /// The clipped sum of `rows` (no noise), times what the step divides it by: the quantity
    /// whose add/remove sensitivity the accountant is told.
    fn clipped_sum(
        mlp: &Mlp,
        grad_sample: GradSample,
        b: f64,
        batch: &(Tensor, Tensor, Tensor),
        keys: &[u64],
        rows: &[i64],
    ) -> Tensor {
        let opt = Optimizer::new(OptimizerKind::Sgd, 0.1, mlp.shape().numel(), Device::Cpu);
        let privacy = private(1.0, 0.0, grad_sample);
        let mut step = DpStep::new(mlp.shape(), Device::Cpu, b, privacy, opt).unwrap();
        let idx = Tensor::from_slice(rows);
        let units = if step.microbatches() > 0 {
            let ids: Vec<i64> = rows
                .iter()
                .map(|&r| microbatch_of(keys[r as usize], step.microbatches()))
                .collect();
            step.set_microbatches(Tensor::from_slice(&ids));
            step.microbatches() as f64
        } else {
            b
        };
        let mut prof = Profiler::new(false, Device::Cpu);
        let pick = |t: &Tensor| t.index_select(0, &idx);
        step.accumulate(
            mlp,
            &pick(&batch.0),
            &pick(&batch.1),
            &pick(&batch.2),
            &mut prof,
        );
        step.grad() * units
    }

    /// Neighbouring datasets: over many datasets, models and Poisson draws, adding one record
    /// (sampled) to a batch moves the clipped sum by at most the sensitivity the accountant is
    /// told, `GradSample::sensitivity() * C`. With microbatches of 3 the change does exceed C,
    /// so telling the accountant C (as grouping consecutive records did) would be wrong.
    #[test]
    fn adding_a_record_moves_the_clipped_sum_by_at_most_the_accounted_sensitivity() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(10);
        for grad_sample in [GradSample::Vectorized, GradSample::Microbatch(3)] {
            let bound = grad_sample.sensitivity();
            let mut worst = 0.0f64;
            for draw in 0..300 {
                let k = 6 + draw % 20;
                let (mlp, inputs, labels, norms) = setup(k, draw);
                // Inputs of every scale, so some groups are clipped and some are not.
                let scale = [0.1, 1.0, 30.0][draw as usize % 3];
                let batch = (&inputs * scale, labels, &norms * scale);
                let keys: Vec<u64> = (0..k).map(|_| rng.random()).collect();
                let q = [1.0, 0.5, 0.2][draw as usize % 3];
                // The last record is the one added; the others join with probability q.
                let without: Vec<i64> = (0..k - 1).filter(|_| rng.random_bool(q)).collect();
                let mut with = without.clone();
                with.push(k - 1);
                let b = (k as f64 * q).max(1.0);
                let a = clipped_sum(&mlp, grad_sample, b, &batch, &keys, &without);
                let c = clipped_sum(&mlp, grad_sample, b, &batch, &keys, &with);
                let change = (a - c).norm().double_value(&[]);
                assert!(
                    change <= bound * (1.0 + 1e-4),
                    "{grad_sample:?} draw {draw}: the clipped sum moved by {change} C, the \
                     accountant was told {bound} C"
                );
                worst = worst.max(change);
            }
            if grad_sample != GradSample::Vectorized {
                assert!(worst > 1.0, "{grad_sample:?}: worst change {worst} C");
            }
        }
    }

    fn all_finite(t: &Tensor) -> bool {
        t.isfinite().all().int64_value(&[]) == 1
    }

    /// How a test takes a step's batch: the libtorch closed form, the plain-Rust step on the
    /// batch's rows or gathering them from the host rows itself, microbatches of 3, or privacy
    /// units by libtorch or in plain Rust.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Path {
        Libtorch,
        /// The libtorch path as on a GPU: the sums guarded without looking at the norms.
        Unchecked,
        Fused,
        Gathered,
        Microbatch,
        Units,
        FusedUnits,
    }

    /// The batch `idx` of `data` accumulated by `step` along `path` (microbatches by `keys`;
    /// unit `u` being `idx[starts[u]..starts[u + 1]]`), times what the step divides by: the
    /// clipped sum itself.
    fn path_sum(
        step: &mut DpStep,
        mlp: &Mlp,
        data: &crate::data::Examples,
        keys: &[u64],
        (idx, starts): (&[i64], &[usize]),
        path: Path,
    ) -> Tensor {
        let mut prof = Profiler::new(false, Device::Cpu);
        let rows = data.rows().index_select(0, &Tensor::from_slice(idx));
        let units = match path {
            Path::Units => {
                let groups: Vec<i64> = starts
                    .windows(2)
                    .enumerate()
                    .flat_map(|(g, w)| std::iter::repeat_n(g as i64, w[1] - w[0]))
                    .collect();
                step.set_units(Tensor::from_slice(&groups), starts.len() as i64 - 1);
                step.accumulate_rows(mlp, data.width(), &rows, &mut prof);
                step.expected_batch()
            }
            Path::FusedUnits => {
                let all = data.host_rows().unwrap();
                step.accumulate_units_gathered(mlp, &all, idx, starts, &mut prof);
                step.expected_batch()
            }
            Path::Gathered => {
                let all = data.host_rows().unwrap();
                step.accumulate_gathered(mlp, &all, idx, &mut prof);
                step.expected_batch()
            }
            Path::Microbatch => {
                let m = step.microbatches();
                let ids: Vec<i64> = idx
                    .iter()
                    .map(|&r| microbatch_of(keys[r as usize], m))
                    .collect();
                step.set_microbatches(Tensor::from_slice(&ids));
                step.accumulate_rows(mlp, data.width(), &rows, &mut prof);
                m as f64
            }
            Path::Libtorch | Path::Fused | Path::Unchecked => {
                step.set_check_norms(path != Path::Unchecked);
                step.accumulate_rows(mlp, data.width(), &rows, &mut prof);
                step.expected_batch()
            }
        };
        step.grad() * units
    }

    /// Nothing one row holds escapes the clip (issue 23 B): a row of huge values (3e38, which
    /// overflows the forward pass; 1e30, whose norm overflows; 1e39, infinite in `f32`) in any
    /// number of its fields, at any place in the batch, moves the noiseless clipped sum by at
    /// most the sensitivity the accountant is told, in every gradient path, and the sum stays
    /// finite. Per example (libtorch, plain Rust on rows or gathered) and in a privacy unit
    /// (libtorch and plain Rust; the row in another unit or one of its own) its gradient
    /// contributes exactly zero and is counted, so the paths agree with it as without it; with
    /// microbatches its group's mean moves (it counts as a member), by at most 2C; without DP
    /// it adds nothing either. A step with noise leaves the model finite.
    #[test]
    fn a_row_of_huge_values_moves_the_clipped_sum_by_at_most_the_clip_bound() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(29);
        let huge = [
            3e38f32,
            -3e38,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let (n, d) = (60, 6);
        let mut zeroed_seen = 0;
        for case in 0..48 {
            let hidden = [vec![8], vec![6, 5], vec![], vec![20]][case % 4].clone();
            let shape = Shape::new(d, &hidden);
            let scale = [1.0f32, 30.0][case / 4 % 2];
            let mut features: Vec<f32> = (0..n * d)
                .map(|_| rng.random_range(-1.0f32..1.0) * scale)
                .collect();
            let mut labels: Vec<f32> = (0..n).map(|_| f32::from(rng.random_bool(0.5))).collect();
            // The last row is the huge one: 1 to d of its fields, each of either sign.
            let fields = 1 + case % d;
            let mut cols: Vec<usize> = (0..d).collect();
            for j in 0..fields {
                let pick = rng.random_range(j..d);
                cols.swap(j, pick);
                features[(n - 1) * d + cols[j]] = huge[rng.random_range(0..huge.len())];
            }
            labels[n - 1] = f32::from(rng.random_bool(0.5));
            let data = crate::data::Examples::new(&features, &labels, d, Device::Cpu).unwrap();
            let keys: Vec<u64> = (0..n).map(|_| rng.random()).collect();
            let mlp = Mlp::new(shape.clone(), case as u64, Device::Cpu).unwrap();
            let without: Vec<i64> = (0..n as i64 - 1).filter(|_| rng.random_bool(0.5)).collect();
            // Units of 1 to 4 consecutive rows; the huge row joins one of them, or is a unit
            // of its own.
            let mut starts = vec![0usize];
            while *starts.last().unwrap() < without.len() {
                let next = starts.last().unwrap() + rng.random_range(1..=4usize);
                starts.push(next.min(without.len()));
            }
            let unit = rng.random_range(0..starts.len());
            let (mut with, mut with_starts) = (without.clone(), starts.clone());
            if unit + 1 == starts.len() {
                with.push(n as i64 - 1);
                with_starts.push(with.len());
            } else {
                let at = rng.random_range(starts[unit]..=starts[unit + 1]);
                with.insert(at, n as i64 - 1);
                with_starts[unit + 1..].iter_mut().for_each(|s| *s += 1);
            }
            let b = 30.0;
            let mut per_example: Vec<Tensor> = Vec::new();
            let mut per_unit: Vec<Tensor> = Vec::new();
            for (path, privacy) in [
                (Path::Libtorch, private(1.0, 0.0, GradSample::Vectorized)),
                (Path::Unchecked, private(1.0, 0.0, GradSample::Vectorized)),
                (Path::Fused, private(1.0, 0.0, GradSample::Vectorized)),
                (Path::Gathered, private(1.0, 0.0, GradSample::Vectorized)),
                (
                    Path::Microbatch,
                    private(1.0, 0.0, GradSample::Microbatch(3)),
                ),
                (Path::Units, private(1.0, 0.0, GradSample::Vectorized)),
                (Path::FusedUnits, private(1.0, 0.0, GradSample::Vectorized)),
                (Path::Libtorch, StepPrivacy::NonPrivate),
                (Path::Unchecked, StepPrivacy::NonPrivate),
                (Path::Fused, StepPrivacy::NonPrivate),
            ] {
                let fused = matches!(path, Path::Fused | Path::Gathered | Path::FusedUnits);
                let mut step = sgd_step(&shape, 0.1, b, privacy, fused);
                if matches!(path, Path::Units | Path::FusedUnits) {
                    step = step.clip_units();
                }
                let a = path_sum(&mut step, &mlp, &data, &keys, (&without, &starts), path);
                assert_eq!(
                    step.take_zeroed(),
                    0,
                    "{path:?}: no gradient zeroed without it"
                );
                let c = path_sum(&mut step, &mlp, &data, &keys, (&with, &with_starts), path);
                let zeroed = step.take_zeroed();
                zeroed_seen += zeroed;
                let what = format!("case {case} {hidden:?} {path:?} {privacy:?}");
                assert!(all_finite(&c), "{what}: the sum is not finite");
                let change = (&a - &c).norm().double_value(&[]);
                let size = a.norm().double_value(&[]).max(1.0);
                match (path, privacy) {
                    (Path::Microbatch, _) => {
                        assert!(change <= 2.0 * (1.0 + 1e-4), "{what}: moved by {change}");
                        assert_eq!(zeroed, 1, "{what}: counted");
                    }
                    _ => {
                        // The sensitivity C, and in fact nothing: the row adds zero.
                        assert!(change <= 1.0 * (1.0 + 1e-4), "{what}: moved by {change}");
                        assert!(change <= 1e-5 * size, "{what}: moved by {change}");
                        assert_eq!(zeroed, 1, "{what}: counted");
                    }
                }
                match (path, privacy) {
                    (Path::Units | Path::FusedUnits, _) => per_unit.push(c),
                    (Path::Microbatch, _) | (_, StepPrivacy::NonPrivate) => {}
                    _ => per_example.push(c),
                }
            }
            for paths in [&per_example, &per_unit] {
                for (i, other) in paths.iter().enumerate().skip(1) {
                    let diff = (&paths[0] - other).abs().max().double_value(&[]);
                    let size = paths[0].abs().max().double_value(&[]).max(1e-3);
                    assert!(
                        diff <= 1e-5 * size,
                        "case {case}: path {i} differs by {diff}"
                    );
                }
            }
            // With noise, the model stays finite.
            for fused in [false, true] {
                let model = Mlp::new(shape.clone(), case as u64, Device::Cpu).unwrap();
                let mut step = sgd_step(
                    &shape,
                    0.1,
                    b,
                    private(1.0, 1.0, GradSample::Vectorized),
                    fused,
                );
                let mut prof = Profiler::new(false, Device::Cpu);
                let rows = data.rows().index_select(0, &Tensor::from_slice(&with));
                step.accumulate_rows(&model, d, &rows, &mut prof);
                step.apply(&model, &mut prof);
                assert!(all_finite(model.flat()), "case {case}");
            }
        }
        assert!(zeroed_seen >= 48 * 6, "{zeroed_seen}");
    }

    /// A step with plain SGD at `lr` on the CPU, the fused path on or off, started at epoch 0.
    fn sgd_step(shape: &Shape, lr: f64, batch: f64, privacy: StepPrivacy, fused: bool) -> DpStep {
        step_with(OptimizerKind::Sgd, shape, lr, batch, privacy, fused)
    }

    /// [`sgd_step`] with another optimizer.
    fn step_with(
        kind: OptimizerKind,
        shape: &Shape,
        lr: f64,
        batch: f64,
        privacy: StepPrivacy,
        fused: bool,
    ) -> DpStep {
        let opt = Optimizer::new(kind, lr, shape.numel(), Device::Cpu);
        let mut s = DpStep::new(shape, Device::Cpu, batch, privacy, opt).unwrap();
        s.set_fused(fused, shape);
        s.start_epoch(0);
        s
    }

    /// `n` examples of `d` features uniform on [-1, 1), labelled 1 with probability `p`.
    fn random_examples(
        rng: &mut rand_chacha::ChaCha20Rng,
        n: usize,
        d: usize,
        p: f64,
    ) -> crate::data::Examples {
        use rand::RngExt;
        let features: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let labels: Vec<f32> = (0..n).map(|_| f32::from(rng.random_bool(p))).collect();
        crate::data::Examples::new(&features, &labels, d, Device::Cpu).unwrap()
    }

    /// Step `step`'s batch in the fused path's tests: 1 to 79 random rows of `n` (repeats
    /// allowed, in no order), none at step 3.
    fn random_batch(rng: &mut rand_chacha::ChaCha20Rng, step: usize, n: usize) -> Vec<i64> {
        use rand::RngExt;
        let k = if step == 3 {
            0
        } else {
            rng.random_range(1..80)
        };
        (0..k).map(|_| rng.random_range(0..n as i64)).collect()
    }

    /// With privacy units, the plain-Rust path (each unit's norm from its rows' pairwise
    /// products) writes the same clipped sum as the libtorch one (each unit's gradient summed
    /// from its rows' materialized gradients), for units of 1 to 6 rows, deep and shallow
    /// models, clipped and not.
    #[test]
    fn fused_units_equal_the_libtorch_units() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        for (case, hidden) in [vec![8], vec![6, 5], vec![50], vec![]]
            .into_iter()
            .enumerate()
        {
            let d = 4 + case;
            let n = 200;
            let data = random_examples(&mut rng, n, d, 0.5);
            let all = data.host_rows().unwrap();
            let shape = Shape::new(d, &hidden);
            let mlp = Mlp::new(shape.clone(), case as u64, Device::Cpu).unwrap();
            for clip in [0.3, 1e9] {
                let privacy = private(clip, 0.0, GradSample::Vectorized);
                let mut prof = Profiler::new(false, Device::Cpu);
                for _ in 0..10 {
                    let units = rng.random_range(0..30usize);
                    let (mut idx, mut starts) = (Vec::new(), vec![0usize]);
                    for _ in 0..units {
                        let size = rng.random_range(1..=6usize);
                        idx.extend((0..size).map(|_| rng.random_range(0..n as i64)));
                        starts.push(idx.len());
                    }
                    let mut fused = sgd_step(&shape, 0.1, 16.0, privacy, true).clip_units();
                    fused.accumulate_units_gathered(&mlp, &all, &idx, &starts, &mut prof);
                    let mut plain = sgd_step(&shape, 0.1, 16.0, privacy, false).clip_units();
                    let groups: Vec<i64> = starts
                        .windows(2)
                        .enumerate()
                        .flat_map(|(g, w)| std::iter::repeat_n(g as i64, w[1] - w[0]))
                        .collect();
                    plain.set_units(Tensor::from_slice(&groups), units as i64);
                    let rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
                    plain.accumulate_rows(&mlp, d, &rows, &mut prof);
                    let (a, b) = (fused.grad(), plain.grad());
                    let diff = (a - b).abs().max().double_value(&[]);
                    let size = a.abs().max().double_value(&[]);
                    assert!(
                        diff <= 1e-5 * size.max(1e-3),
                        "{hidden:?} clip {clip}, {units} units: {diff} of {size}"
                    );
                }
            }
        }
    }

    /// The plain-Rust path writes the same clipped sum as the libtorch one, for deep and
    /// shallow models and one without a hidden layer, layers wider and narrower than their
    /// inputs, with and without clipping, 0/1 inputs and real ones, batches that grow and
    /// shrink and an empty one, with seeded noise (added on the host after the fused path) and
    /// without; and the models stay equal over many steps.
    #[test]
    fn fused_path_equals_the_libtorch_path() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        for (case, hidden) in [vec![8], vec![6, 5], vec![50], vec![3, 7, 4], vec![]]
            .into_iter()
            .enumerate()
        {
            let d = 3 + case * 2;
            let n = 300;
            let sparse = case % 2 == 0;
            let features: Vec<f32> = (0..n * d)
                .map(|_| {
                    if sparse {
                        f32::from(rng.random_bool(0.4))
                    } else {
                        rng.random_range(-3.0f32..3.0)
                    }
                })
                .collect();
            let labels: Vec<f32> = (0..n).map(|_| f32::from(rng.random_bool(0.5))).collect();
            let data = crate::data::Examples::new(&features, &labels, d, Device::Cpu).unwrap();
            let shape = Shape::new(d, &hidden);
            for privacy in [
                private(0.5, 0.0, GradSample::Vectorized),
                private(1e9, 0.0, GradSample::Vectorized),
                private(0.5, 1.0, GradSample::Vectorized),
                StepPrivacy::NonPrivate,
            ] {
                let models = [
                    Mlp::new(shape.clone(), case as u64, Device::Cpu).unwrap(),
                    Mlp::new(shape.clone(), case as u64, Device::Cpu).unwrap(),
                ];
                let mut steps: Vec<DpStep> = [false, true]
                    .iter()
                    .map(|&fused| {
                        let opt =
                            Optimizer::new(OptimizerKind::Sgd, 0.5, shape.numel(), Device::Cpu);
                        let mut s = DpStep::new(&shape, Device::Cpu, 40.0, privacy, opt).unwrap();
                        s.set_fused(fused, &shape);
                        s
                    })
                    .collect();
                let mut prof = Profiler::new(false, Device::Cpu);
                for step in 0..30 {
                    let idx = random_batch(&mut rng, step, n);
                    let rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
                    for (s, m) in steps.iter_mut().zip(&models) {
                        s.accumulate_rows(m, d, &rows, &mut prof);
                        s.add_noise(&mut prof);
                    }
                    let (a, b) = (steps[0].grad(), steps[1].grad());
                    let diff = (a - b).abs().max().double_value(&[]);
                    let size = a.abs().max().double_value(&[]);
                    assert!(
                        diff <= 1e-5 * size.max(1e-3),
                        "{hidden:?} {privacy:?} step {step}: {diff} (largest {size})"
                    );
                    for (s, m) in steps.iter_mut().zip(&models) {
                        s.update(m, &mut prof);
                    }
                }
                let diff = (models[0].flat() - models[1].flat()).abs().max();
                assert!(diff.double_value(&[]) < 1e-5, "{hidden:?} {privacy:?}");
            }
        }
    }

    /// The plain-Rust step gathering its batch from the host rows gives bit for bit the
    /// gradients and models of the same step on `index_select` of the row tensor, over
    /// several steps (empty batches, repeated and unsorted indices included), with and
    /// without clipping and seeded noise.
    #[test]
    fn host_gather_equals_index_select_bit_for_bit() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(23);
        let (n, d) = (300, 9);
        let data = random_examples(&mut rng, n, d, 0.4);
        let all = data.host_rows().unwrap();
        assert_eq!((all.len(), all.stride()), (n, data.stride()));
        let shape = Shape::new(d, &[11, 5]);
        let bits = |t: &Tensor| -> Vec<u32> {
            Vec::<f32>::try_from(t.reshape([-1]))
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        for privacy in [
            StepPrivacy::NonPrivate,
            private(0.5, 1.1, GradSample::Vectorized),
        ] {
            let models: Vec<Mlp> = (0..2)
                .map(|_| Mlp::new(shape.clone(), 3, Device::Cpu).unwrap())
                .collect();
            let mut steps: Vec<DpStep> = (0..2)
                .map(|_| sgd_step(&shape, 0.2, 40.0, privacy, true))
                .collect();
            let mut prof = Profiler::new(false, Device::Cpu);
            for step in 0..30 {
                let idx = random_batch(&mut rng, step, n);
                let rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
                steps[0].accumulate_rows(&models[0], d, &rows, &mut prof);
                steps[1].accumulate_gathered(&models[1], &all, &idx, &mut prof);
                for (s, m) in steps.iter_mut().zip(&models) {
                    s.add_noise(&mut prof);
                    s.update(m, &mut prof);
                }
                assert_eq!(
                    bits(steps[0].grad()),
                    bits(steps[1].grad()),
                    "step {step}: the same gradient"
                );
                assert_eq!(
                    bits(models[0].flat()),
                    bits(models[1].flat()),
                    "step {step}: the same model"
                );
            }
        }
    }

    /// On coded rows (few distinct rows: 0/1 features; one pattern of huge values whose
    /// gradient is not finite; labels 0, 1 and 0.25 on every pattern, and a few of inf and
    /// NaN, whose examples' gradients are not finite though their features' are) the gathered
    /// step, one forward and backward pass per feature vector, writes the clipped sum of the
    /// ungrouped step and of the libtorch path up to the order of the additions, zeroes as
    /// many examples, and the models stay within 1e-6 (libtorch's 1e-5) of each other over
    /// 30 steps: models of no, one, two and three hidden layers, batches with the huge
    /// pattern (taken a distinct row at a time) and without.
    #[test]
    fn grouped_steps_on_coded_rows_equal_the_ungrouped_step() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let (n, d) = (2000, 6);
        let patterns: Vec<Vec<f32>> = (0..12u32)
            .map(|p| match p {
                11 => vec![3e38; d],
                _ => (0..d)
                    .map(|j| f32::from(u8::from((p >> (j % 4)) & 1 == 1)))
                    .collect(),
            })
            .collect();
        let (mut features, mut labels, mut huge) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let p = if i % 100 == 7 {
                huge.push(i as i64);
                11
            } else {
                rng.random_range(0..11)
            };
            features.extend_from_slice(&patterns[p]);
            labels.push(match i % 97 {
                3 => f32::INFINITY,
                5 => f32::NAN,
                _ => [0.0, 1.0, 0.25][rng.random_range(0..3)],
            });
        }
        let data = crate::data::Examples::new(&features, &labels, d, Device::Cpu).unwrap();
        let all = data.host_rows().unwrap();
        assert!(all.coded());
        for hidden in [vec![], vec![9], vec![6, 5], vec![3, 7, 4]] {
            let shape = Shape::new(d, &hidden);
            for privacy in [
                StepPrivacy::NonPrivate,
                private(0.5, 1.1, GradSample::Vectorized),
            ] {
                // Libtorch, plain Rust ungrouped, plain Rust gathered.
                let models: Vec<Mlp> = (0..3)
                    .map(|_| Mlp::new(shape.clone(), 3, Device::Cpu).unwrap())
                    .collect();
                let mut steps: Vec<DpStep> = [false, true, true]
                    .iter()
                    .map(|&fused| sgd_step(&shape, 0.2, 40.0, privacy, fused))
                    .collect();
                let mut prof = Profiler::new(false, Device::Cpu);
                let mut total_zeroed = 0;
                for step in 0..30 {
                    let mut idx: Vec<i64> = if step == 3 {
                        Vec::new()
                    } else {
                        (0..rng.random_range(1..120))
                            .map(|_| rng.random_range(0..n as i64))
                            .filter(|i| i % 100 != 7)
                            .collect()
                    };
                    if step % 3 == 1 {
                        let at = rng.random_range(0..=idx.len());
                        idx.insert(at, huge[rng.random_range(0..huge.len())]);
                    }
                    let what = format!("{hidden:?} {privacy:?} step {step}");
                    let rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
                    steps[0].accumulate_rows(&models[0], d, &rows, &mut prof);
                    steps[1].accumulate_rows(&models[1], d, &rows, &mut prof);
                    steps[2].accumulate_gathered(&models[2], &all, &idx, &mut prof);
                    let grads: Vec<Tensor> = steps.iter().map(|s| s.grad().copy()).collect();
                    let scale = grads[1].abs().max().double_value(&[]).max(1e-3);
                    for (other, tol) in [(0, 1e-5), (2, 1e-6)] {
                        let diff = (&grads[1] - &grads[other]).abs().max().double_value(&[]);
                        assert!(
                            diff <= tol * scale,
                            "{what}: path {other}'s gradient {diff} of {scale}"
                        );
                    }
                    let zeroed: Vec<u64> = steps.iter_mut().map(|s| s.take_zeroed()).collect();
                    assert_eq!(zeroed, vec![zeroed[1]; 3], "{what}: zeroed");
                    total_zeroed += zeroed[1];
                    for (s, m) in steps.iter_mut().zip(&models) {
                        s.add_noise(&mut prof);
                        s.update(m, &mut prof);
                    }
                    let scale = models[1].flat().abs().max().double_value(&[]);
                    for (other, tol) in [(0, 1e-5), (2, 1e-6)] {
                        let diff = (models[1].flat() - models[other].flat())
                            .abs()
                            .max()
                            .double_value(&[]);
                        assert!(
                            diff <= tol * scale,
                            "{what}: path {other}'s model {diff} of {scale}"
                        );
                    }
                }
                assert!(total_zeroed > 10, "{hidden:?}: {total_zeroed} zeroed");
            }
        }
    }

    /// SGD and Adam on the host after the fused path (the gradient not read before the update)
    /// give the model of the libtorch optimizer after the fused path (the gradient read
    /// first, which copies it over) and of the libtorch path, with seeded noise; the gradient
    /// read after the update is the one the optimizer used.
    #[test]
    fn host_steps_after_the_fused_path_equal_the_libtorch_optimizer() {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            host_step_equals_libtorchs(kind);
        }
    }

    fn host_step_equals_libtorchs(kind: OptimizerKind) {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(17);
        let (n, d) = (200, 6);
        let data = random_examples(&mut rng, n, d, 0.3);
        let shape = Shape::new(d, &[7]);
        // Fused with the host step, fused with the gradient read first, libtorch.
        let variants = [(true, false), (true, true), (false, true)];
        let models: Vec<Mlp> = variants
            .iter()
            .map(|_| Mlp::new(shape.clone(), 5, Device::Cpu).unwrap())
            .collect();
        let privacy = private(0.8, 1.0, GradSample::Vectorized);
        let mut steps: Vec<DpStep> = variants
            .iter()
            .map(|&(fused, _)| step_with(kind, &shape, 0.3, 30.0, privacy, fused))
            .collect();
        let mut prof = Profiler::new(false, Device::Cpu);
        for step in 0..40 {
            let k = rng.random_range(0..60);
            let idx: Vec<i64> = (0..k).map(|_| rng.random_range(0..n as i64)).collect();
            let rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
            let mut used = Vec::new();
            for ((s, m), &(_, read_first)) in steps.iter_mut().zip(&models).zip(&variants) {
                s.accumulate_rows(m, d, &rows, &mut prof);
                s.add_noise(&mut prof);
                if read_first {
                    let _ = s.grad();
                }
                s.update(m, &mut prof);
                // Only the first stepped on the host (its gradient still to be copied over).
                assert_eq!(s.host_pending.get(), !read_first && s.fused());
                used.push(s.grad().copy());
            }
            assert_eq!(steps[0].optimizer().steps(), step + 1);
            let max = |t: Tensor| t.abs().max().double_value(&[]);
            assert_eq!(
                max(&used[0] - &used[1]),
                0.0,
                "{kind} step {step}: the same gradient"
            );
            assert_eq!(
                max(models[0].flat() - models[1].flat()),
                0.0,
                "{kind} step {step}: the same model"
            );
            let diff = max(models[0].flat() - models[2].flat());
            assert!(
                diff < 1e-5,
                "{kind} step {step}: {diff} from the libtorch path"
            );
        }
    }

    /// Host steps whose parameters stay on the host ([`DpStep::update_deferred`]) give the
    /// model of steps that write them to the model every time, bit for bit, for SGD and Adam:
    /// with every fourth step on the libtorch path (which reads the model, so the parameters
    /// must reach it first) and the model read only after [`DpStep::sync_model`]. Before that
    /// the model is behind (the steps really were deferred); a dropped step writes its
    /// parameters too.
    #[test]
    fn deferred_host_steps_give_the_same_model() {
        use rand::{RngExt, SeedableRng};
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(23);
            let (n, d) = (200, 5);
            let data = random_examples(&mut rng, n, d, 0.4);
            let shape = Shape::new(d, &[6]);
            let models: Vec<Mlp> = (0..2)
                .map(|_| Mlp::new(shape.clone(), 8, Device::Cpu).unwrap())
                .collect();
            let privacy = private(0.7, 1.0, GradSample::Vectorized);
            let mut steps: Vec<DpStep> = (0..2)
                .map(|_| step_with(kind, &shape, 0.2, 25.0, privacy, true))
                .collect();
            let mut prof = Profiler::new(false, Device::Cpu);
            let mut behind = 0;
            for step in 0..30 {
                let k = rng.random_range(1..50);
                let idx: Vec<i64> = (0..k).map(|_| rng.random_range(0..n as i64)).collect();
                let rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
                let mut grads = Vec::new();
                for (i, (s, m)) in steps.iter_mut().zip(&models).enumerate() {
                    let before = m.flat().copy();
                    if step % 4 == 3 {
                        let w = d as i64;
                        let (x, y, norms) = (
                            rows.narrow(1, 0, w + 1),
                            rows.narrow(1, w + 1, 1),
                            rows.narrow(1, w + 2, 1),
                        );
                        s.accumulate(m, &x, &y, &norms, &mut prof);
                    } else {
                        s.accumulate_rows(m, d, &rows, &mut prof);
                    }
                    s.add_noise(&mut prof);
                    if i == 0 {
                        s.update(m, &mut prof);
                    } else {
                        s.update_deferred(m, &mut prof);
                        if step % 4 != 3 && m.flat().equal(&before) {
                            behind += 1;
                        }
                    }
                    grads.push(s.grad().copy());
                }
                assert!(grads[0].equal(&grads[1]), "{kind} step {step}: gradients");
            }
            assert_eq!(behind, 23, "{kind}: the host steps were deferred");
            let pending = models[1].flat().copy();
            steps[1].sync_model();
            assert!(!models[1].flat().equal(&pending), "{kind}: synced");
            assert!(
                models[0].flat().equal(models[1].flat()),
                "{kind}: the same model"
            );
            // One more deferred step each, then the second step is dropped unsynced.
            let rows = data.rows().narrow(0, 0, 20);
            for (s, m) in steps.iter_mut().zip(&models) {
                s.accumulate_rows(m, d, &rows, &mut prof);
                s.add_noise(&mut prof);
                s.update_deferred(m, &mut prof);
            }
            steps[0].sync_model();
            drop(steps);
            assert!(
                models[0].flat().equal(models[1].flat()),
                "{kind}: a dropped step's parameters"
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

    /// Quiet coordinates ([`crate::mechanism::quiet`]) on both paths (plain Rust and
    /// libtorch): the model's gradient and update are those of a step without them; no real
    /// row reaches them; the quiet rows there are clipped and scaled like every row; the noise
    /// is drawn over the model's and the quiet coordinates together (the quiet coordinates
    /// hold the last values of the same draw) with the std of every parameter's.
    #[test]
    fn quiet_coordinates_hold_only_the_quiet_rows_and_the_noise() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let (d, n, quiet) = (5, 200, 40);
        let data = random_examples(&mut rng, n, d, 0.5);
        let shape = Shape::new(d, &[8]);
        let numel = shape.numel() as i64;
        let (clip, batch) = (0.5, 20.0);
        let rows = QuietRows {
            coords: &[3, 7, 39, 7],
            values: &[30.0, -40.0, 0.1, 0.2],
            width: 2,
        };
        for fused in [false, true] {
            for sigma in [0.0, 2.0] {
                let privacy = private(clip, sigma, GradSample::Vectorized);
                let models = [
                    Mlp::new(shape.clone(), 1, Device::Cpu).unwrap(),
                    Mlp::new(shape.clone(), 1, Device::Cpu).unwrap(),
                ];
                let opt = || Optimizer::new(OptimizerKind::Sgd, 0.5, shape.numel(), Device::Cpu);
                let mut plain = DpStep::new(&shape, Device::Cpu, batch, privacy, opt()).unwrap();
                let mut with =
                    DpStep::with_quiet(&shape, Device::Cpu, batch, privacy, opt(), quiet).unwrap();
                for s in [&mut plain, &mut with] {
                    s.set_fused(fused, &shape);
                    s.start_epoch(0);
                }
                let mut prof = Profiler::new(false, Device::Cpu);
                let mut seen = Vec::new();
                for step in 0..20 {
                    let idx = random_batch(&mut rng, step, n);
                    let batch_rows = data.rows().index_select(0, &Tensor::from_slice(&idx));
                    plain.accumulate_rows(&models[0], d, &batch_rows, &mut prof);
                    with.accumulate_rows(&models[1], d, &batch_rows, &mut prof);
                    with.read_quiet(&mut seen);
                    assert!(seen.iter().all(|&v| v == 0.0), "no real row reaches them");
                    with.add_quiet_rows(&rows);
                    if sigma == 0.0 {
                        with.read_quiet(&mut seen);
                        // Row 0 (norm 50) is clipped to C = 0.5, row 1 (norm 0.22) kept; both
                        // divided by B.
                        let f = (clip / batch) as f32 / (50.0 + 1e-6);
                        let kept = (1.0 / batch) as f32;
                        let mut want = vec![0f32; quiet];
                        want[3] = 30.0 * f;
                        want[7] = -40.0 * f + 0.2 * kept;
                        want[39] = 0.1 * kept;
                        for (g, w) in seen.iter().zip(&want) {
                            assert!((g - w).abs() < 1e-7, "{seen:?}");
                        }
                    }
                    plain.add_noise(&mut prof);
                    with.add_noise(&mut prof);
                    let g = with.grad();
                    if sigma == 0.0 {
                        // The model's part is the plain step's, exactly.
                        assert_eq!(
                            (g.narrow(0, 0, numel) - plain.grad())
                                .abs()
                                .max()
                                .double_value(&[]),
                            0.0
                        );
                    } else {
                        let q = g.narrow(0, numel, quiet as i64);
                        let std = q.std(true).double_value(&[]);
                        let want = sigma * clip / batch;
                        // 40 values a step: a wide band, tightened over the steps below.
                        assert!(std > 0.4 * want && std < 1.8 * want, "{std} vs {want}");
                    }
                    plain.update(&models[0], &mut prof);
                    with.update(&models[1], &mut prof);
                }
                if sigma == 0.0 {
                    let diff = (models[0].flat() - models[1].flat()).abs().max();
                    assert_eq!(diff.double_value(&[]), 0.0, "fused {fused}: the same model");
                }
            }
        }
        // The noise's std on the quiet coordinates over many steps: sigma C / B.
        let privacy = private(1.0, 1.0, GradSample::Vectorized);
        let opt = Optimizer::new(OptimizerKind::Sgd, 0.1, shape.numel(), Device::Cpu);
        let mut s = DpStep::with_quiet(&shape, Device::Cpu, 4.0, privacy, opt, 1000).unwrap();
        s.start_epoch(0);
        let mlp = Mlp::new(shape.clone(), 2, Device::Cpu).unwrap();
        let mut prof = Profiler::new(false, Device::Cpu);
        let mut all = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..20 {
            s.accumulate_rows(&mlp, d, &data.rows().narrow(0, 0, 0), &mut prof);
            s.add_noise(&mut prof);
            s.read_quiet(&mut seen);
            all.extend_from_slice(&seen);
        }
        let t = Tensor::from_slice(&all);
        let (mean, std) = (
            t.mean(Kind::Float).double_value(&[]),
            t.std(true).double_value(&[]),
        );
        // 20,000 values of std 0.25: standard errors 0.0018 (mean) and 0.0013 (std).
        assert!(
            mean.abs() < 0.01 && (std - 0.25).abs() < 0.007,
            "{mean} {std}"
        );
    }
}
