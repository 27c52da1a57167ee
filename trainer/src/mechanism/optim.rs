//! Optimizers applied to the flat (noisy) gradient, with PyTorch's update rules and defaults.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// `--optimizer sgd|adam|adagrad|rmsprop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain SGD: `p -= lr g`.
    Sgd,
    /// Adam (betas 0.9, 0.999, eps 1e-8).
    Adam,
    /// Adagrad (eps 1e-10, no learning-rate decay).
    Adagrad,
    /// RMSprop (alpha 0.99, eps 1e-8, no momentum).
    Rmsprop,
}

impl FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" => Ok(OptimizerKind::Adam),
            "adagrad" => Ok(OptimizerKind::Adagrad),
            "rmsprop" => Ok(OptimizerKind::Rmsprop),
            _ => Err(Error::Config(format!(
                "--optimizer '{s}': expected sgd, adam, adagrad or rmsprop"
            ))),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adagrad => "adagrad",
            OptimizerKind::Rmsprop => "rmsprop",
        })
    }
}

const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
const ADAM_EPS: f64 = 1e-8;
const ADAGRAD_EPS: f64 = 1e-10;
const RMSPROP_ALPHA: f64 = 0.99;
const RMSPROP_EPS: f64 = 1e-8;

/// An optimizer with its state, over one flat parameter tensor.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    /// `-lr` as a 0-dim tensor (SGD's whole step is one `addcmul_`).
    neg_lr: Tensor,
    /// Adam: first and second moments; Adagrad: sum of squares; RMSprop: square average.
    state: Vec<Tensor>,
    /// The host steps' copy of `state` ([`Optimizer::step_host`]).
    host: Vec<Vec<f32>>,
    /// `host` holds `state`'s values (or newer ones): false until a host step reads the
    /// tensors, and again once [`Optimizer::state`] hands them out (a caller may write them).
    host_valid: Cell<bool>,
    /// `host` is newer than `state`: copied over before the tensors are read.
    host_newer: Cell<bool>,
    /// Adam's host step: the square roots of its second moment.
    roots: Vec<f32>,
    steps: u64,
}

impl Optimizer {
    /// A fresh optimizer for `numel` parameters on `device`.
    pub fn new(kind: OptimizerKind, lr: f64, numel: usize, device: Device) -> Self {
        let zeros = || Tensor::zeros([numel as i64], (Kind::Float, device));
        let state = match kind {
            OptimizerKind::Sgd => vec![],
            OptimizerKind::Adam => vec![zeros(), zeros()],
            OptimizerKind::Adagrad | OptimizerKind::Rmsprop => vec![zeros()],
        };
        Optimizer {
            kind,
            lr,
            neg_lr: Tensor::full([], -lr, (Kind::Float, device)),
            host: vec![Vec::new(); state.len()],
            state,
            host_valid: Cell::new(false),
            host_newer: Cell::new(false),
            roots: Vec::new(),
            steps: 0,
        }
    }

    /// Copies the host steps' state into the state tensors if it is newer, and forgets it
    /// (the next host step reads the tensors again).
    fn settle(&self) {
        if self.host_newer.replace(false) {
            for (t, h) in self.state.iter().zip(&self.host) {
                t.shallow_clone().copy_(&Tensor::from_slice(h));
            }
        }
        self.host_valid.set(false);
    }

    /// Updates `params` in place from `grad`.
    pub fn step(&mut self, params: &Tensor, grad: &Tensor) {
        self.settle();
        self.steps += 1;
        let mut p = params.shallow_clone();
        match self.kind {
            OptimizerKind::Sgd => {
                let _ = p.addcmul_(grad, &self.neg_lr);
            }
            OptimizerKind::Adam => {
                let (b1, b2) = ADAM_BETAS;
                let t = self.steps as i32;
                let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                let (m, v) = self.state.split_at_mut(1);
                let _ = m[0].lerp_(grad, 1.0 - b1);
                let _ = v[0].lerp_(&grad.square(), 1.0 - b2);
                let mut denom = v[0].sqrt();
                let _ = denom.g_div_scalar_(bc2.sqrt());
                let _ = denom.g_add_scalar_(ADAM_EPS);
                let _ = p.g_sub_(&(&m[0] / denom).g_mul_scalar_(self.lr / bc1));
            }
            OptimizerKind::Adagrad => {
                let sum = &mut self.state[0];
                let _ = sum.addcmul_(grad, grad);
                let mut std = sum.sqrt();
                let _ = std.g_add_scalar_(ADAGRAD_EPS);
                let _ = p.g_sub_(&(grad / std).g_mul_scalar_(self.lr));
            }
            OptimizerKind::Rmsprop => {
                let sq = &mut self.state[0];
                let _ = sq.lerp_(&grad.square(), 1.0 - RMSPROP_ALPHA);
                let mut avg = sq.sqrt();
                let _ = avg.g_add_scalar_(RMSPROP_EPS);
                let _ = p.g_sub_(&(grad / avg).g_mul_scalar_(self.lr));
            }
        }
    }

    /// Whether [`Optimizer::step_host`] takes this optimizer's steps: plain SGD and Adam (the
    /// defaults of the two presets).
    pub fn has_host_step(&self) -> bool {
        matches!(self.kind, OptimizerKind::Sgd | OptimizerKind::Adam)
    }

    /// [`Optimizer::step`] on host buffers (for the fused CPU path, without most of libtorch's
    /// calls a step: three for SGD, eleven for Adam, each costing more than the arithmetic on
    /// ~550 parameters; Adam keeps libtorch's square root, two calls): the same `f32`
    /// operations in the same order, so the same parameters. libtorch's `addcmul_` (SGD) and
    /// `lerp_` (Adam's moments) round once, as a fused multiply-add: here the product of two
    /// `f32`s is exact in `f64` and the sum is rounded to `f64`, then to `f32`, which gives the
    /// same value but in the rare case that the first rounding lands on a tie of the second
    /// (and does not need an FMA instruction, which this crate's portable build cannot
    /// assume). Adam's moments live on the host between steps; [`Optimizer::state`] copies them
    /// back.
    pub fn step_host(&mut self, params: &mut [f32], grad: &[f32]) {
        assert!(self.has_host_step(), "a host step is SGD's or Adam's");
        self.steps += 1;
        let fma = |a: f32, b: f32, c: f32| (f64::from(a) * f64::from(b) + f64::from(c)) as f32;
        match self.kind {
            OptimizerKind::Sgd => {
                let neg_lr = (-self.lr) as f32;
                for (p, &g) in params.iter_mut().zip(grad) {
                    *p = fma(g, neg_lr, *p);
                }
            }
            OptimizerKind::Adam => {
                if !self.host_valid.get() {
                    for (h, t) in self.host.iter_mut().zip(&self.state) {
                        h.resize(params.len(), 0.0);
                        t.copy_data(h, params.len());
                    }
                    self.host_valid.set(true);
                }
                let (b1, b2) = ADAM_BETAS;
                let t = self.steps as i32;
                let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                // libtorch takes each scalar as an f32 in an f32 tensor's arithmetic.
                let (w1, w2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
                let (root_bc2, eps) = (bc2.sqrt() as f32, ADAM_EPS as f32);
                let step = (self.lr / bc1) as f32;
                let [m, v] = &mut self.host[..] else {
                    unreachable!("Adam has two moments")
                };
                for ((&g, m), v) in grad.iter().zip(m.iter_mut()).zip(v.iter_mut()) {
                    // `lerp_` with a weight under 1/2: start + weight (end - start), fused.
                    *m = fma(w1, g - *m, *m);
                    *v = fma(w2, g * g - *v, *v);
                }
                // libtorch's f32 square root (MKL's) is not IEEE's, one ulp off for about one
                // value in 200: it is taken from libtorch, so the parameters stay its own.
                let roots = &mut self.roots;
                roots.resize(v.len(), 0.0);
                Tensor::from_slice(v).sqrt().copy_data(roots, v.len());
                for ((p, m), &root) in params.iter_mut().zip(m.iter()).zip(roots.iter()) {
                    let denom = root / root_bc2 + eps;
                    *p -= *m / denom * step;
                }
                self.host_newer.set(true);
            }
            OptimizerKind::Adagrad | OptimizerKind::Rmsprop => unreachable!("checked above"),
        }
    }

    /// Sets the steps taken (a resumed run's other workers, whose state comes from worker 0).
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// Steps taken so far (Adam's bias correction depends on it).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state tensors, named for a checkpoint (or to be written into, as a resumed run's
    /// broadcast does: the host steps read them again after).
    pub fn state(&self) -> Vec<(String, &Tensor)> {
        self.settle();
        self.state
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("optimizer.{i}"), t))
            .collect()
    }

    /// Restores state saved by [`Optimizer::state`] after `steps` steps.
    pub fn restore(&mut self, state: &[(String, Tensor)], steps: u64) -> Result<()> {
        self.settle();
        for (i, t) in self.state.iter_mut().enumerate() {
            let name = format!("optimizer.{i}");
            let saved = state.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                Error::Config(format!("checkpoint lacks the {} state '{name}'", self.kind))
            })?;
            t.f_copy_(&saved.1)?;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's update rules in plain f64, for three elements over four steps.
    fn reference(kind: OptimizerKind, lr: f64, grads: &[[f64; 3]]) -> [f64; 3] {
        let mut p = [0.5, -1.0, 2.0];
        let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..3 {
                match kind {
                    OptimizerKind::Sgd => p[i] -= lr * g[i],
                    OptimizerKind::Adam => {
                        let (b1, b2) = ADAM_BETAS;
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        let denom = v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + ADAM_EPS;
                        p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
                    }
                    OptimizerKind::Adagrad => {
                        v[i] += g[i] * g[i];
                        p[i] -= lr * g[i] / (v[i].sqrt() + ADAGRAD_EPS);
                    }
                    OptimizerKind::Rmsprop => {
                        let a = RMSPROP_ALPHA;
                        v[i] = a * v[i] + (1.0 - a) * g[i] * g[i];
                        p[i] -= lr * g[i] / (v[i].sqrt() + RMSPROP_EPS);
                    }
                }
            }
        }
        p
    }

    #[test]
    fn updates_match_pytorch_rules() {
        let grads = [
            [0.1, -0.2, 0.3],
            [0.05, 0.0, -0.4],
            [1.0, 0.2, 0.1],
            [-0.3, 0.3, 0.0],
        ];
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Adam,
            OptimizerKind::Adagrad,
            OptimizerKind::Rmsprop,
        ] {
            let params = Tensor::from_slice(&[0.5f32, -1.0, 2.0]);
            let mut opt = Optimizer::new(kind, 0.01, 3, Device::Cpu);
            for g in &grads {
                let g: Vec<f32> = g.iter().map(|&x| x as f32).collect();
                opt.step(&params, &Tensor::from_slice(&g));
            }
            let got = Vec::<f32>::try_from(&params).unwrap();
            let want = reference(kind, 0.01, &grads);
            for i in 0..3 {
                assert!(
                    (f64::from(got[i]) - want[i]).abs() < 1e-6,
                    "{kind} {got:?} vs {want:?}"
                );
            }
        }
    }

    /// The host steps take libtorch's steps: SGD and Adam over 300 steps of 551 parameters
    /// (the default model's size) with gradients of every scale, one optimizer on tensors and
    /// one on host buffers: the same parameters after every step, and the same moments.
    /// Halfway, the host one's state is read (as a checkpoint does) and written (as a resumed
    /// run's broadcast does): both paths see it.
    #[test]
    fn host_steps_take_libtorchs_steps() {
        use rand::{RngExt, SeedableRng};
        let n = 551;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
            let start: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let params = Tensor::from_slice(&start);
            let mut host = start.clone();
            let mut on_tensors = Optimizer::new(kind, 0.005, n, Device::Cpu);
            let mut on_host = Optimizer::new(kind, 0.005, n, Device::Cpu);
            let (mut differing, mut worst) = (0usize, 0.0f64);
            for step in 0..300 {
                let scale = 10f32.powi(step % 9 - 6);
                let g: Vec<f32> = (0..n)
                    .map(|_| rng.random_range(-1.0f32..1.0) * scale)
                    .collect();
                on_tensors.step(&params, &Tensor::from_slice(&g));
                on_host.step_host(&mut host, &g);
                if step == 150 {
                    let read: Vec<Vec<f32>> = on_host
                        .state()
                        .iter()
                        .map(|(_, t)| Vec::<f32>::try_from(*t).unwrap())
                        .collect();
                    let want: Vec<Vec<f32>> = on_tensors
                        .state()
                        .iter()
                        .map(|(_, t)| Vec::<f32>::try_from(*t).unwrap())
                        .collect();
                    assert!(read == want, "{kind}: the host state read back differs");
                    // Written through the tensors, as a broadcast writes them: both halved.
                    for (_, t) in on_host.state().into_iter().chain(on_tensors.state()) {
                        t.shallow_clone().copy_(&(t * 0.5));
                    }
                }
                let got = Vec::<f32>::try_from(&params).unwrap();
                let largest = got.iter().fold(0.0f64, |l, a| l.max(f64::from(a.abs())));
                for (a, b) in got.iter().zip(&host) {
                    if a != b {
                        differing += 1;
                        worst = worst.max((f64::from(*a) - f64::from(*b)).abs() / largest);
                    }
                }
            }
            eprintln!(
                "{kind}: {differing} of {} values differ, worst by {worst:e}",
                300 * n
            );
            assert_eq!(differing, 0, "{kind}: worst by {worst:e}");
        }
    }

    #[test]
    fn parses_names() {
        assert_eq!(
            "RMSprop".parse::<OptimizerKind>().unwrap(),
            OptimizerKind::Rmsprop
        );
        assert_eq!(OptimizerKind::Adagrad.to_string(), "adagrad");
        assert!("lbfgs".parse::<OptimizerKind>().is_err());
    }
}
