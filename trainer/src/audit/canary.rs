//! The audit's canaries, inserted into one run: gradient canaries (white-box: a fixed gradient
//! of norm C whenever the sampler draws the canary, scored by the noisy gradients the run
//! produced) or input canaries (black-box: crafted rows, scored by the final model's loss).

use std::fmt;
use std::str::FromStr;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use crate::audit::mia::{self, MiaReport};
use crate::config::{GradSample, NoiseRng};
use crate::data::{Data, Examples};
use crate::mechanism::dp_step::{DpStep, StepPrivacy};
use crate::mechanism::optim::{Optimizer, OptimizerKind};
use crate::mlp::{Mlp, Shape};
use crate::profile::Profiler;
use crate::{Error, Result};

/// What the canaries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CanaryKind {
    /// White-box: each canary is a row without features whose clipped gradient is a fixed
    /// direction of norm C (a Dirac on its own parameter when there are at most as many
    /// canaries as parameters, a random unit vector otherwise).
    Gradient,
    /// Black-box: each canary is a crafted row (features drawn far outside the data's binary
    /// values, a random label), trained on like any other row.
    Input,
}

impl FromStr for CanaryKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gradient" => Ok(CanaryKind::Gradient),
            "input" => Ok(CanaryKind::Input),
            _ => Err(Error::Config(format!(
                "--canary-kind '{s}': expected gradient or input"
            ))),
        }
    }
}

impl fmt::Display for CanaryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CanaryKind::Gradient => "gradient",
            CanaryKind::Input => "input",
        })
    }
}

/// Input canaries' features are N(0, INPUT_SCALE^2): far from the data's 0/1 values, so each
/// canary sits where few real rows pull the model.
const INPUT_SCALE: f64 = 10.0;

/// The directions of gradient canaries.
#[derive(Debug)]
enum Directions {
    /// Canary i is the unit vector on parameter `coords[i]` (distinct parameters).
    Dirac(Tensor),
    /// Canary i is row i, a random unit vector `[m, numel]`.
    Dense(Tensor),
}

/// Gradient canaries during the run.
#[derive(Debug)]
struct GradientState {
    directions: Directions,
    /// Slot j (sampled as row `real_rows + j`) is canary j, included or not; its contribution
    /// to the gradient buffer when drawn is `weights[j]` along its direction: C over the
    /// expected batch size when included, 0 when not.
    weights: Tensor,
    /// The sum over steps of the noisy gradients.
    sum: Tensor,
    /// The real rows' expected share of a step's gradient, and how it is estimated.
    correction: Correction,
    /// The canary slots sampled this step, if any.
    sampled: Option<Tensor>,
}

/// The real rows' expected contribution to a step's gradient, `q * sum_j clip(g_j(theta)) / B`
/// over every real row j: a function of the parameters before the step (which the white-box
/// auditor sees) and the fixed data, not of the canaries or of the sampler's draws. Subtracting
/// it from the noisy gradient leaves the canaries and the noise (and, at q < 1, the sampling's
/// fluctuation); without it the real rows' gradient, hundreds of times a canary's, swamps the
/// scores, and the model learns to cancel the canaries' steady push.
///
/// At q = 1 it is computed exactly every step (every real row is in every step). At q < 1 it is
/// estimated every [`WINDOW`] steps from the next `WINDOW * B * ESTIMATE_SHARE` rows of the
/// auditor's own shuffled order of the real rows (its own random stream, independent of the
/// sampler's), scaled by `q N / rows`: unbiased, with 1 / [`ESTIMATE_SHARE`] times the variance
/// of the sampling itself, for that share of the training's gradient work.
#[derive(Debug)]
struct Correction {
    /// The step code, without noise, that computes a clipped sum divided by B.
    step: DpStep,
    prof: Profiler,
    /// Steps between estimates (1: exact).
    window: u64,
    /// Rows per estimate, and the factor `q N / rows`.
    rows: usize,
    scale: f64,
    /// The auditor's order of the real rows, and where the next estimate starts in it.
    order: Vec<i64>,
    cursor: usize,
    /// The current estimate, the steps it has been used for since it was last added to
    /// `total`, and the steps taken.
    estimate: Tensor,
    pending: u64,
    steps: u64,
    /// The sum of the estimates over the steps taken (up to `pending`).
    total: Tensor,
}

/// Steps between two estimates of the real rows' expected gradient when q < 1.
const WINDOW: u64 = 64;
/// Rows per estimate, as a share of the rows the window's steps draw (`WINDOW * B`): the
/// estimate costs this share of the training's gradient work.
const ESTIMATE_SHARE: f64 = 0.125;

impl Correction {
    fn new(
        shape: &Shape,
        clip: f64,
        rate: f64,
        real_rows: usize,
        expected_batch: f64,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let exact = StepPrivacy::Private {
            clip,
            noise_multiplier: 0.0,
            grad_sample: GradSample::Vectorized,
            // No noise is drawn (multiplier 0): the key does not matter.
            noise_rng: NoiseRng::Seeded(0),
        };
        let numel = shape.numel();
        let opt = Optimizer::new(OptimizerKind::Sgd, 1.0, numel, device);
        let step = DpStep::new(shape, device, expected_batch, exact, opt)?;
        let (window, rows) = if rate >= 1.0 {
            (1, real_rows)
        } else {
            let rows = (WINDOW as f64 * expected_batch * ESTIMATE_SHARE).ceil() as usize;
            (WINDOW, rows.clamp(1, real_rows.max(1)))
        };
        let mut order: Vec<i64> = (0..real_rows as i64).collect();
        let mut r = rng(seed, 4);
        for i in (1..order.len()).rev() {
            let j = r.random_range(0..=i);
            order.swap(i, j);
        }
        Ok(Correction {
            step,
            prof: Profiler::new(false, device),
            window,
            rows,
            scale: rate * real_rows as f64 / rows.max(1) as f64,
            order,
            cursor: 0,
            estimate: Tensor::zeros([numel as i64], (Kind::Float, device)),
            pending: 0,
            steps: 0,
            total: Tensor::zeros([numel as i64], (Kind::Float, device)),
        })
    }

    /// Accounts for one step's expected real-row gradient, with the model before the step (a
    /// new estimate at the start of each window; added up lazily, one operation per window).
    fn step(&mut self, mlp: &Mlp, train: &Examples) {
        if self.steps.is_multiple_of(self.window) && !self.order.is_empty() {
            self.flush();
            let take: Vec<i64> = if self.rows == self.order.len() {
                self.order.clone()
            } else {
                (0..self.rows)
                    .map(|k| self.order[(self.cursor + k) % self.order.len()])
                    .collect()
            };
            self.cursor = (self.cursor + self.rows) % self.order.len();
            let idx = Tensor::from_slice(&take).to_device(train.device());
            let rows = train.rows().index_select(0, &idx);
            self.step.accumulate(
                mlp,
                &train.inputs(&rows),
                &train.labels(&rows),
                &train.input_norms(&rows),
                &mut self.prof,
            );
            self.estimate = self.step.grad() * self.scale;
        }
        self.steps += 1;
        self.pending += 1;
    }

    fn flush(&mut self) {
        if self.pending > 0 {
            let _ = self.total.g_add_(&(&self.estimate * self.pending as f64));
            self.pending = 0;
        }
    }

    /// The sum over the steps taken of their expected real-row gradients.
    fn total(&mut self) -> &Tensor {
        self.flush();
        &self.total
    }
}

/// The canaries of one audit and, after the run, their scores.
#[derive(Debug)]
pub struct Canaries {
    kind: CanaryKind,
    included: Vec<bool>,
    seed: u64,
    real_rows: usize,
    input_rows: Option<Examples>,
    /// Input canaries: which training rows train (the real rows and the included canaries).
    input_keep: Option<Tensor>,
    /// Input canaries' losses under the initial model (which the seed alone determines).
    initial_losses: Option<Tensor>,
    gradient: Option<GradientState>,
    scores: Option<Vec<f64>>,
    mia: Option<MiaReport>,
    /// Tests only: the noise the step really adds, as a share of what the accountant is told.
    #[cfg(test)]
    noise_factor: f64,
}

/// A stream for one purpose of the audit's seed.
fn rng(seed: u64, purpose: u64) -> ChaCha20Rng {
    let mut r = ChaCha20Rng::seed_from_u64(shards::splitmix64(seed ^ 0x6175_6469_7400_0000));
    r.set_stream(purpose);
    r
}

impl Canaries {
    /// `m` canaries of `kind`, each included with probability 1/2, drawn from `seed`.
    pub fn new(kind: CanaryKind, m: usize, seed: u64) -> Self {
        let mut r = rng(seed, 1);
        let included = (0..m).map(|_| r.random_bool(0.5)).collect();
        Canaries {
            kind,
            included,
            seed,
            real_rows: 0,
            input_rows: None,
            input_keep: None,
            initial_losses: None,
            gradient: None,
            scores: None,
            mia: None,
            #[cfg(test)]
            noise_factor: 1.0,
        }
    }

    /// Which canaries are in the training set (the secret the audit guesses).
    pub fn included(&self) -> &[bool] {
        &self.included
    }

    /// The scores (higher: more likely included), once the run has finished.
    pub fn scores(&self) -> Option<&[f64]> {
        self.scores.as_deref()
    }

    /// Gradient canaries' directions once the run has started: `dirac` (one parameter each) or
    /// `random` (unit vectors, when there are more canaries than parameters).
    pub fn directions(&self) -> Option<&'static str> {
        self.gradient.as_ref().map(|g| match g.directions {
            Directions::Dirac(_) => "dirac",
            Directions::Dense(_) => "random",
        })
    }

    /// The LOSS attack on the real rows, once the run has finished.
    pub fn mia(&self) -> Option<&MiaReport> {
        self.mia.as_ref()
    }

    /// Adds the canaries to the loaded data: input canaries as rows after the real training
    /// rows; gradient canaries as the returned number of extra rows the sampler draws from.
    /// Either way every canary has a row, included or not (an excluded canary's row adds
    /// nothing when drawn: [`Canaries::take_sampled`]), so that the sampling rate, the steps
    /// and the divisor do not depend on which canaries are in: each canary's inclusion is then
    /// exactly an add/remove neighbour of the sampled Gaussian mechanism the accountant
    /// composes.
    pub(crate) fn insert(&mut self, data: &mut Data) -> Result<usize> {
        self.real_rows = data.train.len();
        match self.kind {
            CanaryKind::Gradient => Ok(self.included.len()),
            CanaryKind::Input => {
                let k = data.train.width();
                let m = self.included.len();
                let mut r = rng(self.seed, 2);
                let features: Vec<f32> = (0..m * k)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut r);
                        (INPUT_SCALE * z) as f32
                    })
                    .collect();
                let labels: Vec<f32> = (0..m).map(|_| f32::from(r.random_bool(0.5))).collect();
                let device = data.train.device();
                let all = Examples::new(&features, &labels, k, device)?;
                // Every canary's row, in canary order, after the real rows; which of them train
                // is kept here.
                data.train.extend(&all)?;
                let keep: Vec<bool> = std::iter::repeat_n(true, self.real_rows)
                    .chain(self.included.iter().copied())
                    .collect();
                self.input_keep = Some(Tensor::from_slice(&keep).to_device(device));
                self.input_rows = Some(all);
                Ok(0)
            }
        }
    }

    /// Sets up gradient canaries for a model of `shape`, once the step is known.
    pub(crate) fn start(
        &mut self,
        mlp: &Mlp,
        shape: &Shape,
        rate: f64,
        privacy: StepPrivacy,
        expected_batch: f64,
        device: Device,
    ) -> Result<()> {
        if let Some(rows) = &self.input_rows {
            self.initial_losses = Some(losses(mlp, rows, rows.len()));
        }
        if self.kind != CanaryKind::Gradient {
            return Ok(());
        }
        let StepPrivacy::Private { clip, .. } = privacy else {
            return Err(Error::Config(
                "gradient canaries need clipping (drop --no-dp; --noise-multiplier 0 audits \
                 clipping without noise)"
                    .into(),
            ));
        };
        let numel = shape.numel();
        let m = self.included.len();
        let mut r = rng(self.seed, 3);
        let directions = if m <= numel {
            // m distinct parameters, uniformly (a partial Fisher-Yates shuffle).
            let mut coords: Vec<i64> = (0..numel as i64).collect();
            for i in 0..m {
                let j = r.random_range(i..numel);
                coords.swap(i, j);
            }
            coords.truncate(m);
            Directions::Dirac(Tensor::from_slice(&coords).to_device(device))
        } else {
            let mut v: Vec<f32> = Vec::with_capacity(m * numel);
            for _ in 0..m {
                let row: Vec<f64> = (0..numel).map(|_| StandardNormal.sample(&mut r)).collect();
                let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.extend(row.iter().map(|x| (x / norm) as f32));
            }
            Directions::Dense(
                Tensor::from_slice(&v)
                    .view([m as i64, numel as i64])
                    .to_device(device),
            )
        };
        let correction = Correction::new(
            shape,
            clip,
            rate,
            self.real_rows,
            expected_batch,
            self.seed,
            device,
        )?;
        self.gradient = Some(GradientState {
            directions,
            weights: Tensor::from_slice(
                &self
                    .included
                    .iter()
                    .map(|&i| {
                        if i {
                            (clip / expected_batch) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect::<Vec<f32>>(),
            )
            .to_device(device),
            sum: Tensor::zeros([numel as i64], (Kind::Float, device)),
            correction,
            sampled: None,
        });
        Ok(())
    }

    /// Splits a step's sorted sample: returns the rows among the first `rows` (real rows and
    /// input canaries) and keeps the gradient canaries' slots for [`Canaries::add_gradients`].
    /// An excluded input canary's row is drawn like any row but dropped here: it trains nothing.
    pub(crate) fn take_sampled(&mut self, idx: &Tensor, rows: usize) -> Tensor {
        if let Some(keep) = &self.input_keep {
            return idx.masked_select(&keep.index_select(0, idx));
        }
        let Some(g) = &mut self.gradient else {
            return idx.shallow_clone();
        };
        let n = idx.size()[0];
        // Sorted: canary slots, numbered after the rows, come last (most steps have none).
        if n == 0 || idx.int64_value(&[n - 1]) < rows as i64 {
            g.sampled = None;
            return idx.shallow_clone();
        }
        let real = idx.lt(rows as i64).sum(Kind::Int64).int64_value(&[]);
        g.sampled = Some(idx.narrow(0, real, n - real) - rows as i64);
        idx.narrow(0, 0, real)
    }

    /// Adds the sampled gradient canaries' gradients (norm C each, divided by the expected
    /// batch size like every row's; nothing for an excluded canary) to the step's clipped sum,
    /// before the noise.
    pub(crate) fn add_gradients(&mut self, grad: &Tensor) {
        let Some(g) = &mut self.gradient else {
            return;
        };
        let Some(sampled) = &g.sampled else {
            return;
        };
        let values = g.weights.index_select(0, sampled);
        match &g.directions {
            Directions::Dirac(coords) => {
                let at = coords.index_select(0, sampled);
                let _ = grad.shallow_clone().index_add_(0, &at, &values);
            }
            Directions::Dense(dirs) => {
                let sum = (dirs.index_select(0, sampled) * values.view([-1, 1])).sum_dim_intlist(
                    0i64,
                    false,
                    Kind::Float,
                );
                let _ = grad.shallow_clone().g_add_(&sum);
            }
        }
    }

    /// Reads a step's noisy gradient (what the optimizer is given), with the model before the
    /// update.
    pub(crate) fn observe(&mut self, mlp: &Mlp, train: &Examples, noisy: &Tensor) {
        let Some(g) = &mut self.gradient else {
            return;
        };
        let _ = g.sum.g_add_(noisy);
        g.correction.step(mlp, train);
    }

    /// Scores every canary and runs the LOSS attack on the real rows, with the final model.
    pub(crate) fn finish(&mut self, mlp: &Mlp, data: &Data) -> Result<()> {
        let scores = match (&mut self.gradient, &self.input_rows) {
            (Some(g), _) => {
                // The noisy gradients less the real rows' expected part: canaries and noise.
                let signal = &g.sum - g.correction.total();
                match &g.directions {
                    Directions::Dirac(coords) => signal.index_select(0, coords),
                    Directions::Dense(dirs) => dirs.mv(&signal),
                }
            }
            // How much training lowered each canary's loss.
            (None, Some(rows)) => match &self.initial_losses {
                Some(before) => before - losses(mlp, rows, rows.len()),
                None => -losses(mlp, rows, rows.len()),
            },
            (None, None) => {
                return Err(Error::Config(
                    "the canaries were never inserted into the run".into(),
                ));
            }
        };
        let scores = Vec::<f32>::try_from(scores.to_device(Device::Cpu).to_kind(Kind::Float))?;
        self.scores = Some(scores.into_iter().map(f64::from).collect());
        let members = Vec::<f32>::try_from(losses(mlp, &data.train, self.real_rows))?;
        let nonmembers = Vec::<f32>::try_from(losses(mlp, &data.test, data.test.len()))?;
        self.mia = Some(mia::loss_attack(&members, &nonmembers));
        Ok(())
    }

    /// Tests only: the step will add `factor` times the noise the accountant is told about.
    #[cfg(test)]
    pub(crate) fn with_noise_factor(mut self, factor: f64) -> Self {
        self.noise_factor = factor;
        self
    }

    /// Tests only: the step adds `noise_factor` times the noise the accountant is told about.
    #[cfg(test)]
    pub(crate) fn tamper(&self, privacy: StepPrivacy) -> StepPrivacy {
        match privacy {
            StepPrivacy::Private {
                clip,
                noise_multiplier,
                grad_sample,
                noise_rng,
            } => StepPrivacy::Private {
                clip,
                noise_multiplier: noise_multiplier * self.noise_factor,
                grad_sample,
                noise_rng,
            },
            p => p,
        }
    }
}

/// Per-row BCE losses of the first `rows` examples, `[rows]` on the CPU.
fn losses(mlp: &Mlp, examples: &Examples, rows: usize) -> Tensor {
    if rows == 0 {
        return Tensor::zeros([0], (Kind::Float, Device::Cpu));
    }
    let chunk = 1i64 << 16;
    let mut out = Vec::new();
    let mut start = 0i64;
    while start < rows as i64 {
        let r = examples
            .rows()
            .narrow(0, start, chunk.min(rows as i64 - start));
        let logits = mlp.forward(&examples.inputs(&r));
        let loss = logits.binary_cross_entropy_with_logits::<Tensor>(
            &examples.labels(&r),
            None,
            None,
            Reduction::None,
        );
        out.push(loss.view([-1]).to_device(Device::Cpu));
        start += chunk;
    }
    Tensor::cat(&out, 0)
}
