//! Optimizers applied to the flat (noisy) gradient, with PyTorch's update rules and defaults.

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
            state,
            steps: 0,
        }
    }

    /// Updates `params` in place from `grad`.
    pub fn step(&mut self, params: &Tensor, grad: &Tensor) {
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

    /// Whether this is plain SGD, whose step [`Optimizer::sgd_step_host`] can take on host
    /// buffers.
    pub fn is_sgd(&self) -> bool {
        self.kind == OptimizerKind::Sgd
    }

    /// Plain SGD's [`Optimizer::step`] on host buffers: `params += grad * -lr` (for the fused
    /// CPU path, without three libtorch calls a step). libtorch's `addcmul_` rounds once, as
    /// a fused multiply-add; here the product of two `f32`s is exact in `f64` and the sum is
    /// rounded to `f64`, then to `f32`, which gives the same value but in the rare case that
    /// the first rounding lands on a tie of the second (and does not need an FMA
    /// instruction, which this crate's portable build cannot assume).
    pub fn sgd_step_host(&mut self, params: &mut [f32], grad: &[f32]) {
        assert!(self.is_sgd(), "a host step is plain SGD's");
        self.steps += 1;
        let neg_lr = f64::from((-self.lr) as f32);
        for (p, &g) in params.iter_mut().zip(grad) {
            *p = (f64::from(g) * neg_lr + f64::from(*p)) as f32;
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

    /// The state tensors, named for a checkpoint.
    pub fn state(&self) -> Vec<(String, &Tensor)> {
        self.state
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("optimizer.{i}"), t))
            .collect()
    }

    /// Restores state saved by [`Optimizer::state`] after `steps` steps.
    pub fn restore(&mut self, state: &[(String, Tensor)], steps: u64) -> Result<()> {
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
