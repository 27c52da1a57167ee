//! The audit's canaries, inserted into one run: gradient canaries (white-box: rows whose gradient
//! lies on quiet coordinates of their own, [`crate::mechanism::quiet`], scored from every
//! step's noisy gradient there, [`super::score`]) or input canaries (black-box: crafted rows,
//! scored by the final model's loss).

use std::fmt;
use std::str::FromStr;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use crate::audit::mia::{self, MiaReport};
#[cfg(any(test, feature = "audit-mutations"))]
use crate::audit::mutation::Mutation;
use crate::audit::score::{Claim, Codes, ScoreKind, Scorer};
use crate::data::{Data, Examples};
use crate::mechanism::dp_step::{DpStep, StepPrivacy};
use crate::mechanism::quiet::QuietRows;
use crate::mlp::Mlp;
use crate::{Error, Result};

/// What the canaries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CanaryKind {
    /// White-box: each canary is a row without features whose gradient is a fixed vector on
    /// the quiet coordinates, parameters no real row touches ([`crate::mechanism::quiet`]).
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

/// A gradient canary's norm over the clip bound it is set up with: far above any clip bound the
/// step may really use, so the step's own clipping decides what it contributes (C when the
/// step clips at the C the accountant is told).
const CANARY_NORM: f64 = 1e3;

/// One quiet coordinate per this many per-example gradient values a step computes (expected
/// batch x parameters): its noise (four Gaussian draws) then costs a few percent of the step.
const QUIET_WORK: f64 = 1024.0;
/// The fewest quiet coordinates (when there are at least as many canaries).
const QUIET_MIN: usize = 64;
/// Quiet coordinates per canary drawn in a step (q m), at least: the other canaries' share of
/// a canary's observation in a step then has a variance of at most `1 / (2 CROSS_TALK)` of
/// one canary's.
const CROSS_TALK: f64 = 20.0;
/// The most the other canaries' share of a window's observation may vary, in units of one
/// canary's squared contribution: windows are cut short to keep it (a canary drawn once then
/// still stands 1.4 standard deviations above it when the noise is gone, and each further
/// draw adds as much).
const WINDOW_CROSS_TALK: f64 = 0.5;
/// Canary scores per step: one per this many per-example gradient values, and at least one per
/// quiet coordinate; with more canaries the LLR takes windows of steps
/// ([`super::score::Scorer`]). Measured at the defaults (batch 256, 551 parameters, release
/// build, thread CPU time): a step costs about 52 us, the noise of a quiet coordinate about
/// 20 ns (four Gaussian draws from ChaCha20) and a canary's score for a window about 30 ns,
/// so the quiet coordinates' noise adds about 5% and the scores about 8%.
const SCORE_WORK: f64 = 1024.0;

/// How gradient canaries are laid out and scored: chosen from public settings only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// Quiet coordinates d.
    pub quiet_coordinates: usize,
    /// Nonzero coordinates per canary code (1: a coordinate of its own).
    pub code_width: usize,
    /// Steps per LLR window (1: per step).
    pub score_window: usize,
}

impl Layout {
    /// The layout for `m` canaries sampled at rate `q` by a step of `expected_batch` rows on
    /// `numel` parameters: `d = min(m, max(64, B numel / 1024, 20 q m))` quiet coordinates
    /// (unless `quiet` says), and windows of `ceil(m / max(d, B numel / 1024))` steps, at most
    /// `d / (q m)` when codes share coordinates (unless `window` says).
    pub fn choose(
        m: usize,
        q: f64,
        expected_batch: f64,
        numel: usize,
        quiet: Option<usize>,
        window: Option<usize>,
    ) -> Self {
        let work = expected_batch * numel as f64;
        let d = quiet
            .unwrap_or_else(|| {
                let budget = (work / QUIET_WORK).ceil() as usize;
                let apart = (CROSS_TALK * q * m as f64).ceil() as usize;
                budget.max(apart).max(QUIET_MIN)
            })
            .clamp(1, m.max(1));
        let scored = ((work / SCORE_WORK).ceil() as usize).max(d);
        let code_width = if m <= d {
            1
        } else {
            super::score::CODE_WIDTH.min(d)
        };
        let by_cost = m.div_ceil(scored);
        // A window's cross-talk: K q (m / 2) / d (none on coordinates of their own).
        let by_cross_talk = if code_width == 1 {
            usize::MAX
        } else {
            (WINDOW_CROSS_TALK * 2.0 * d as f64 / (q * m as f64)).floor() as usize
        };
        Layout {
            quiet_coordinates: d,
            code_width,
            score_window: window.unwrap_or(by_cost.min(by_cross_talk)).max(1),
        }
    }
}

/// Gradient canaries during the run.
#[derive(Debug)]
struct GradientState {
    scorer: Scorer,
    /// Canary j's gradient values on its code's coordinates (`CANARY_NORM C u_j`).
    raw: Vec<f32>,
    /// This step's drawn included canaries, as quiet rows.
    coords: Vec<u32>,
    values: Vec<f32>,
    /// The step's quiet coordinates, read after the noise.
    quiet: Vec<f32>,
}

/// The canaries of one audit and, after the run, their scores.
#[derive(Debug)]
pub struct Canaries {
    kind: CanaryKind,
    score: ScoreKind,
    included: Vec<bool>,
    seed: u64,
    real_rows: usize,
    /// Requested quiet coordinates and LLR window, if any.
    quiet: Option<usize>,
    window: Option<usize>,
    layout: Option<Layout>,
    input_rows: Option<Examples>,
    /// Input canaries: which training rows train (the real rows and the included canaries),
    /// on the device and on the host.
    input_keep: Option<(Tensor, Vec<bool>)>,
    /// Input canaries' losses under the initial model (which the seed alone determines).
    initial_losses: Option<Tensor>,
    gradient: Option<GradientState>,
    /// This step's training rows, on the host path.
    host_idx: Vec<i64>,
    scores: Option<Vec<f64>>,
    /// Gradient canaries: the noise's std seen on the quiet coordinates over the told one.
    noise_ratio: Option<f64>,
    mia: Option<MiaReport>,
    /// The audit's tests and mutation benchmark only: how the step is broken.
    #[cfg(any(test, feature = "audit-mutations"))]
    mutation: Mutation,
}

/// A stream for one purpose of the audit's seed.
fn rng(seed: u64, purpose: u64) -> ChaCha20Rng {
    let mut r = ChaCha20Rng::seed_from_u64(shards::splitmix64(seed ^ 0x6175_6469_7400_0000));
    r.set_stream(purpose);
    r
}

impl Canaries {
    /// `m` canaries of `kind`, each included with probability 1/2, drawn from `seed`; gradient
    /// canaries scored by `score`.
    pub fn new(kind: CanaryKind, m: usize, seed: u64) -> Self {
        let mut r = rng(seed, 1);
        let included = (0..m).map(|_| r.random_bool(0.5)).collect();
        Canaries {
            kind,
            score: ScoreKind::Llr,
            included,
            seed,
            real_rows: 0,
            quiet: None,
            window: None,
            layout: None,
            input_rows: None,
            input_keep: None,
            initial_losses: None,
            gradient: None,
            host_idx: Vec::new(),
            scores: None,
            noise_ratio: None,
            mia: None,
            #[cfg(any(test, feature = "audit-mutations"))]
            mutation: Mutation::default(),
        }
    }

    /// Scores gradient canaries with `score`, over `quiet` quiet coordinates and LLR windows of
    /// `window` steps where given (else [`Layout::choose`]'s).
    pub fn scored(mut self, score: ScoreKind, quiet: Option<usize>, window: Option<usize>) -> Self {
        self.score = score;
        self.quiet = quiet;
        self.window = window;
        self
    }

    /// Which canaries are in the training set (the secret the audit guesses).
    pub fn included(&self) -> &[bool] {
        &self.included
    }

    /// The scores (higher: more likely included), once the run has finished.
    pub fn scores(&self) -> Option<&[f64]> {
        self.scores.as_deref()
    }

    /// Gradient canaries' layout, once the run has started.
    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }

    /// Gradient canaries, once the run has finished: the std of the noise seen on the quiet
    /// coordinates over the std the accountant was told (about 1 when the code adds the noise
    /// it claims; `None` when it was told none).
    pub fn noise_ratio(&self) -> Option<f64> {
        self.noise_ratio
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
    ///
    /// With privacy units, each gradient canary is a canary *unit*: a unit whose clipped
    /// gradient is the canary's vector, sampled at the units' rate (its slot is numbered after
    /// the training units). Input canaries, rows of their own, are refused there.
    pub(crate) fn insert(&mut self, data: &mut Data) -> Result<usize> {
        self.real_rows = data.train.len();
        match self.kind {
            CanaryKind::Gradient => Ok(self.included.len()),
            CanaryKind::Input if data.units.is_some() => Err(Error::Config(
                "trainer audit --canary-kind input adds rows of their own, which a run with a privacy \
                 unit would have to group into units: audit it with gradient canaries (the \
                 default), which are canary units"
                    .into(),
            )),
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
                self.input_keep = Some((Tensor::from_slice(&keep).to_device(device), keep));
                self.input_rows = Some(all);
                Ok(0)
            }
        }
    }

    /// The quiet coordinates the step needs ([`Layout::choose`]; none for input canaries), for
    /// a step that samples at rate `q` (as the accountant is told), `expected_batch` rows on
    /// `numel` parameters.
    pub(crate) fn quiet_coordinates(&mut self, q: f64, expected_batch: f64, numel: usize) -> usize {
        if self.kind != CanaryKind::Gradient {
            return 0;
        }
        let layout = Layout::choose(
            self.included.len(),
            q,
            expected_batch,
            numel,
            self.quiet,
            self.window,
        );
        self.layout = Some(layout);
        layout.quiet_coordinates
    }

    /// Sets up the canaries once the step is known: input canaries' initial losses; gradient
    /// canaries' codes and scorer, under the `claim` the accountant was told, with the
    /// step's clip bound and expected batch.
    pub(crate) fn start(
        &mut self,
        mlp: &Mlp,
        claim: Claim,
        privacy: StepPrivacy,
        expected_batch: f64,
    ) -> Result<()> {
        if let Some(rows) = &self.input_rows {
            self.initial_losses = Some(losses(mlp, rows, rows.len()));
        }
        let Some(layout) = self.layout else {
            return Ok(());
        };
        let StepPrivacy::Private { clip, .. } = privacy else {
            return Err(Error::Config(
                "gradient canaries need clipping (drop --no-dp; --noise-multiplier 0 audits \
                 clipping without noise)"
                    .into(),
            ));
        };
        let m = self.included.len();
        let codes = Codes::new(m, layout.quiet_coordinates, &mut rng(self.seed, 3));
        let norm = (CANARY_NORM * clip) as f32;
        let raw = (0..m)
            .flat_map(|i| codes.code(i).1.iter().map(move |v| v * norm))
            .collect();
        self.gradient = Some(GradientState {
            scorer: Scorer::new(
                self.score,
                codes,
                claim,
                clip,
                expected_batch,
                layout.score_window,
            ),
            raw,
            coords: Vec::new(),
            values: Vec::new(),
            quiet: Vec::new(),
        });
        Ok(())
    }

    /// Splits a step's sorted sample: returns the rows among the first `rows` (real rows and
    /// input canaries) and keeps the drawn gradient canaries for [`Canaries::add_rows`]. An
    /// excluded canary's row is drawn like any row but dropped here: it trains nothing.
    pub(crate) fn take_sampled(&mut self, idx: &Tensor, rows: usize) -> Tensor {
        if let Some((keep, _)) = &self.input_keep {
            return idx.masked_select(&keep.index_select(0, idx));
        }
        if self.gradient.is_none() {
            return idx.shallow_clone();
        }
        let n = idx.size()[0];
        // Sorted: canary slots, numbered after the rows, come last.
        let real = idx.lt(rows as i64).sum(Kind::Int64).int64_value(&[]);
        let slots = Vec::<i64>::try_from(idx.narrow(0, real, n - real).to_device(Device::Cpu))
            .expect("int64 indices");
        self.draw(&slots, rows);
        idx.narrow(0, 0, real)
    }

    /// [`Canaries::take_sampled`] on the host: the step's training rows among the sorted
    /// sample `idx`.
    pub(crate) fn take_sampled_host(&mut self, idx: &[i64], rows: usize) -> &[i64] {
        self.host_idx.clear();
        if let Some((_, keep)) = &self.input_keep {
            let kept = idx.iter().copied().filter(|&i| keep[i as usize]);
            self.host_idx.extend(kept);
            return &self.host_idx;
        }
        let real = idx.partition_point(|&i| i < rows as i64);
        self.host_idx.extend_from_slice(&idx[..real]);
        if self.gradient.is_some() {
            self.draw(&idx[real..], rows);
        }
        &self.host_idx
    }

    /// Keeps the drawn included gradient canaries (slots `rows + j`) as this step's quiet rows.
    fn draw(&mut self, slots: &[i64], rows: usize) {
        let g = self.gradient.as_mut().expect("gradient canaries");
        g.coords.clear();
        g.values.clear();
        let codes = g.scorer.codes();
        let w = codes.width();
        for &slot in slots {
            let j = (slot - rows as i64) as usize;
            if self.included[j] {
                g.coords.extend_from_slice(codes.code(j).0);
                g.values.extend_from_slice(&g.raw[j * w..(j + 1) * w]);
            }
        }
    }

    /// Adds the drawn included gradient canaries to the step's clipped sum (clipped by the
    /// step like every row), before the noise.
    pub(crate) fn add_rows(&mut self, dp: &mut DpStep) {
        let Some(g) = &self.gradient else {
            return;
        };
        dp.add_quiet_rows(&QuietRows {
            coords: &g.coords,
            values: &g.values,
            width: g.scorer.codes().width(),
        });
    }

    /// Reads a step's noisy gradient on the quiet coordinates (what the auditor sees).
    pub(crate) fn observe(&mut self, dp: &DpStep) {
        let Some(g) = &mut self.gradient else {
            return;
        };
        dp.read_quiet(&mut g.quiet);
        g.scorer.observe(&g.quiet);
    }

    /// Scores every canary and runs the LOSS attack on the real rows, with the final model.
    pub(crate) fn finish(&mut self, mlp: &Mlp, data: &Data) -> Result<()> {
        let scores = match (self.gradient.take(), &self.input_rows) {
            (Some(mut g), _) => {
                let scores = g.scorer.finish();
                self.noise_ratio = g.scorer.noise_ratio().filter(|r| r.is_finite());
                scores
            }
            // How much training lowered each canary's loss.
            (None, Some(rows)) => {
                let drop = match &self.initial_losses {
                    Some(before) => before - losses(mlp, rows, rows.len()),
                    None => -losses(mlp, rows, rows.len()),
                };
                Vec::<f32>::try_from(drop.to_device(Device::Cpu).to_kind(Kind::Float))?
                    .into_iter()
                    .map(f64::from)
                    .collect()
            }
            (None, None) => {
                return Err(Error::Config(
                    "the canaries were never inserted into the run".into(),
                ));
            }
        };
        self.scores = Some(scores);
        let members = Vec::<f32>::try_from(losses(mlp, &data.train, self.real_rows))?;
        let nonmembers = Vec::<f32>::try_from(losses(mlp, &data.test, data.test.len()))?;
        self.mia = Some(mia::loss_attack(&members, &nonmembers));
        Ok(())
    }

    /// The audit's tests and mutation benchmark only: the step will be broken by `mutation`.
    #[cfg(any(test, feature = "audit-mutations"))]
    pub fn with_mutation(mut self, mutation: Mutation) -> Self {
        self.mutation = mutation;
        self
    }

    /// The audit's tests and mutation benchmark only: how the step is broken.
    #[cfg(any(test, feature = "audit-mutations"))]
    pub(crate) fn mutation(&self) -> Mutation {
        self.mutation
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_follows_the_steps_work() {
        let layout = |m, q, b, d, w| {
            let l = Layout::choose(m, q, b, 551, d, w);
            (l.quiet_coordinates, l.code_width, l.score_window)
        };
        // The defaults on 960,000 rows: batch 256, 551 parameters (141,056 values a step).
        let q = 256.0 / 970_000.0;
        // 10,000 canaries over 138 scores a step would take windows of 73; 2.6 canaries a step
        // on 138 coordinates allow 52.
        assert_eq!(layout(10_000, q, 256.0, None, None), (138, 8, 52));
        assert_eq!(layout(1000, q, 256.0, None, None), (138, 8, 8));
        // Few canaries: a coordinate each, scored every step.
        assert_eq!(layout(100, q, 256.0, None, None), (100, 1, 1));
        // On 16,000 rows 1000 canaries are 15 of a step's rows: 302 coordinates keep them
        // apart.
        assert_eq!(
            layout(1000, 256.0 / 17_000.0, 256.0, None, None),
            (302, 8, 4)
        );
        // On 1,560 rows they are 40% of the rows: a coordinate each.
        assert_eq!(
            layout(1000, 128.0 / 2_560.0, 128.0, None, None),
            (1000, 1, 1)
        );
        // Full batch: the step is large, the canaries cheap.
        assert_eq!(layout(20_000, 1.0, 36_000.0, None, None), (20_000, 1, 1));
        // Asked for.
        assert_eq!(layout(1000, q, 256.0, Some(2000), Some(3)), (1000, 1, 3));
    }
}
