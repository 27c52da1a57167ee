//! Loss and accuracy of the model over a whole split, in chunks, with one device sync.
//!
//! Where a split has few distinct rows (the census files' 0/1 features: a few hundred for a
//! million rows), [`Distinct`] evaluates each once and weighs it by how many rows it stands
//! for ([`totals_of`]); [`totals`], over every row, is the reference it is tested against.
//!
//! One row cannot poison the figures: each row's loss is taken at its logit clamped to
//! [-[`LOGIT_BOUND`], [`LOGIT_BOUND`]] (a NaN logit, from a row whose values overflow the
//! forward pass, as 0), so it adds at most about `LOGIT_BOUND` to a sum and a mean stays
//! finite. Predictions are the clamped logit's sign (a NaN logit predicts 0, as it did). Rows
//! whose logit was not finite are counted: an operator's diagnostic.

use serde::Serialize;
use tch::{Kind, Reduction, Tensor};

use crate::Result;
use crate::data::Examples;
use crate::host_rows::HostRows;
use crate::mlp::Mlp;

/// Rows per forward pass in evaluation (bounds memory; large enough to keep launches few).
const CHUNK: i64 = 1 << 16;

/// The largest logit magnitude a row's loss is taken at (BCE-with-logits then at most about
/// this much); far beyond any a useful model gives (`sigmoid(100)` is 1 in `f32`).
pub const LOGIT_BOUND: f64 = 100.0;

/// Mean BCE-with-logits loss and accuracy (logit > 0 predicts 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// Mean loss.
    pub loss: f64,
    /// Share of correct predictions.
    pub accuracy: f64,
}

/// Sums over a set of examples that add up across workers: total loss, correct predictions,
/// examples, and examples whose logit was not finite.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Sum of the BCE-with-logits losses (each at the logit clamped to [`LOGIT_BOUND`]).
    pub loss: f64,
    /// Number of correct predictions.
    pub correct: f64,
    /// Number of examples.
    pub count: f64,
    /// Examples whose logit was not finite (an operator's diagnostic).
    pub non_finite: f64,
}

impl Totals {
    /// Mean loss and accuracy (`None` over no examples).
    pub fn evaluation(&self) -> Option<Evaluation> {
        (self.count > 0.0).then(|| Evaluation {
            loss: self.loss / self.count,
            accuracy: self.correct / self.count,
        })
    }

    /// As four values, for an all-reduce.
    pub fn to_array(self) -> [f64; 4] {
        [self.loss, self.correct, self.count, self.non_finite]
    }

    /// From four values (see [`Totals::to_array`]).
    pub fn from_slice(v: &[f64]) -> Self {
        Totals {
            loss: v[0],
            correct: v[1],
            count: v[2],
            non_finite: v[3],
        }
    }
}

/// Evaluates `mlp` on every example (`None` when there are none).
pub fn evaluate(mlp: &Mlp, examples: &Examples) -> Option<Evaluation> {
    totals(mlp, examples).evaluation()
}

/// A split's distinct rows (inputs and label) and how many examples each stands for.
#[derive(Debug)]
pub struct Distinct {
    rows: Tensor,
    counts: Vec<f64>,
}

impl Distinct {
    /// The distinct rows of `examples`, `None` where they are too many to code.
    pub fn of(examples: &Examples) -> Result<Option<Self>> {
        Distinct::from_host(&examples.host_rows()?, examples)
    }

    /// [`Distinct::of`] from the host rows of `examples` already made.
    pub fn from_host(host: &HostRows, examples: &Examples) -> Result<Option<Self>> {
        let Some((distinct, counts)) = host.distinct_counts() else {
            return Ok(None);
        };
        let rows = Tensor::f_from_slice(distinct)?
            .f_view([-1, host.stride() as i64])?
            .f_to_device(examples.device())?;
        Ok(Some(Distinct { rows, counts }))
    }
}

/// [`totals`] over `examples`, each distinct row evaluated once where `distinct` (the
/// examples' own, [`Distinct::of`]) is given: the same sums, but for the order the losses are
/// added in.
pub fn totals_of(mlp: &Mlp, examples: &Examples, distinct: Option<&Distinct>) -> Totals {
    let Some(d) = distinct.filter(|_| !examples.is_empty()) else {
        return totals(mlp, examples);
    };
    let _guard = tch::no_grad_guard();
    let raw = mlp.forward(&examples.inputs(&d.rows)).view([-1]);
    let finite = Vec::<bool>::try_from(raw.isfinite()).expect("a host copy");
    let logits = raw
        .nan_to_num(0.0, Some(LOGIT_BOUND), Some(-LOGIT_BOUND))
        .clamp(-LOGIT_BOUND, LOGIT_BOUND);
    let labels = examples.labels(&d.rows).view([-1]);
    let losses =
        logits.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::None);
    let losses = Vec::<f32>::try_from(losses).expect("a host copy");
    let right =
        Vec::<bool>::try_from(logits.gt(0.0).eq_tensor(&labels.gt(0.5))).expect("a host copy");
    let mut t = Totals::default();
    for (((&n, &loss), &right), &finite) in d.counts.iter().zip(&losses).zip(&right).zip(&finite) {
        t.loss += n * f64::from(loss);
        t.correct += if right { n } else { 0.0 };
        t.count += n;
        t.non_finite += if finite { 0.0 } else { n };
    }
    t
}

/// Loss and correct predictions of `mlp` summed over every example.
pub fn totals(mlp: &Mlp, examples: &Examples) -> Totals {
    if examples.is_empty() {
        return Totals::default();
    }
    let _guard = tch::no_grad_guard();
    let n = examples.len() as i64;
    let mut loss = Tensor::zeros([], (Kind::Float, examples.device()));
    let mut correct = Tensor::zeros([], (Kind::Int64, examples.device()));
    let mut non_finite = Tensor::zeros([], (Kind::Int64, examples.device()));
    let mut start = 0;
    while start < n {
        let rows = examples.rows().narrow(0, start, CHUNK.min(n - start));
        let raw = mlp.forward(&examples.inputs(&rows));
        non_finite += raw.isfinite().logical_not().sum(Kind::Int64);
        let logits = raw
            .nan_to_num(0.0, Some(LOGIT_BOUND), Some(-LOGIT_BOUND))
            .clamp(-LOGIT_BOUND, LOGIT_BOUND);
        let labels = examples.labels(&rows);
        loss +=
            logits.binary_cross_entropy_with_logits::<Tensor>(&labels, None, None, Reduction::Sum);
        correct += logits.gt(0.0).eq_tensor(&labels.gt(0.5)).sum(Kind::Int64);
        start += CHUNK;
    }
    Totals {
        loss: loss.double_value(&[]),
        correct: correct.int64_value(&[]) as f64,
        count: n as f64,
        non_finite: non_finite.int64_value(&[]) as f64,
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::mlp::Shape;

    #[test]
    fn matches_a_direct_computation() {
        let features: Vec<f32> = (0..300).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let labels: Vec<f32> = (0..100).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let e = Examples::new(&features, &labels, 3, Device::Cpu).unwrap();
        let mlp = Mlp::new(Shape::new(3, &[4]), 2, Device::Cpu).unwrap();
        let got = evaluate(&mlp, &e).unwrap();
        let logits = Vec::<f32>::try_from(mlp.forward(&e.inputs(e.rows())).view([-1])).unwrap();
        let (mut loss, mut right) = (0.0, 0);
        for (z, y) in logits.iter().zip(&labels) {
            let (z, y) = (f64::from(*z), f64::from(*y));
            loss += z.max(0.0) - z * y + (-z.abs()).exp().ln_1p();
            right += usize::from((z > 0.0) == (y > 0.5));
        }
        assert!((got.loss - loss / 100.0).abs() < 1e-5, "{got:?}");
        assert_eq!(got.accuracy, right as f64 / 100.0);
        let empty = Examples::new(&[], &[], 3, Device::Cpu).unwrap();
        assert!(evaluate(&mlp, &empty).is_none());
    }

    /// Each distinct row evaluated once and weighed by its count gives the sums over every
    /// row: the same counts and correct predictions, the loss to float rounding, on rows with
    /// few distinct values, huge rows (non-finite logits) among them; rows too many to code
    /// give `None` (and [`totals_of`] then evaluates every row).
    #[test]
    fn distinct_rows_give_every_rows_sums() {
        let n = 5000;
        let mut features: Vec<f32> = (0..3 * n).map(|i| ((i * 7 + i / 11) % 3) as f32).collect();
        let labels: Vec<f32> = (0..n).map(|i| ((i * 13) % 5 < 2) as u8 as f32).collect();
        features[30..33].copy_from_slice(&[3e38, 0.0, 0.0]);
        features[300..303].copy_from_slice(&[f32::INFINITY, 1.0, f32::NEG_INFINITY]);
        let e = Examples::new(&features, &labels, 3, Device::Cpu).unwrap();
        let mlp = Mlp::new(Shape::new(3, &[6]), 4, Device::Cpu).unwrap();
        let d = Distinct::of(&e)
            .unwrap()
            .expect("few distinct rows are coded");
        assert!(d.counts.len() < 60, "{} distinct rows", d.counts.len());
        let (every, grouped) = (totals(&mlp, &e), totals_of(&mlp, &e, Some(&d)));
        assert_eq!(grouped.count, every.count);
        assert_eq!(grouped.correct, every.correct);
        assert_eq!(grouped.non_finite, every.non_finite);
        assert!(every.non_finite > 0.0);
        assert!(
            (grouped.loss - every.loss).abs() <= 1e-5 * every.loss,
            "{grouped:?} vs {every:?}"
        );
        // Every row its own: not coded.
        let distinct: Vec<f32> = (0..3 * 70_000).map(|i| i as f32).collect();
        let many = Examples::new(&distinct, &vec![0.0; 70_000], 3, Device::Cpu).unwrap();
        assert!(Distinct::of(&many).unwrap().is_none());
        let empty = Examples::new(&[], &[], 3, Device::Cpu).unwrap();
        assert_eq!(totals_of(&mlp, &empty, Some(&d)), Totals::default());
    }

    /// A row of huge values (its logit NaN or infinite) leaves the loss finite, moving the sum
    /// by at most about the bound, predicts as its logit's sign (0 for NaN) and is counted.
    #[test]
    fn a_row_of_huge_values_leaves_the_figures_finite() {
        let mut features: Vec<f32> = (0..300).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let labels: Vec<f32> = (0..100).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let mlp = Mlp::new(Shape::new(3, &[4]), 2, Device::Cpu).unwrap();
        let clean = totals(
            &mlp,
            &Examples::new(&features, &labels, 3, Device::Cpu).unwrap(),
        );
        assert_eq!(clean.non_finite, 0.0);
        for (row, values) in [
            (0, [3e38f32, 0.0, 0.0]),
            (57, [3e38, -3e38, 3e38]),
            (58, [f32::INFINITY, 1.0, f32::NEG_INFINITY]),
        ] {
            features[row * 3..row * 3 + 3].copy_from_slice(&values);
            let t = totals(
                &mlp,
                &Examples::new(&features, &labels, 3, Device::Cpu).unwrap(),
            );
            assert!(t.loss.is_finite(), "{t:?}");
            assert!(
                (t.loss - clean.loss).abs() <= 3.0 * (LOGIT_BOUND + 1.0),
                "{t:?}"
            );
            assert!((t.correct - clean.correct).abs() <= 3.0, "{t:?}");
            let e = Examples::new(&features, &labels, 3, Device::Cpu).unwrap();
            let raw = Vec::<f32>::try_from(mlp.forward(&e.inputs(e.rows())).view([-1])).unwrap();
            let want = raw.iter().filter(|z| !z.is_finite()).count();
            assert_eq!(t.non_finite, want as f64, "{raw:?}");
        }
    }
}
