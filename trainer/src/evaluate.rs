//! Loss and accuracy of the model over a whole split, in chunks, with one device sync.

use serde::Serialize;
use tch::{Kind, Reduction, Tensor};

use crate::data::Examples;
use crate::mlp::Mlp;

/// Rows per forward pass in evaluation (bounds memory; large enough to keep launches few).
const CHUNK: i64 = 1 << 16;

/// Mean BCE-with-logits loss and accuracy (logit > 0 predicts 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// Mean loss.
    pub loss: f64,
    /// Share of correct predictions.
    pub accuracy: f64,
}

/// Sums over a set of examples that add up across workers: total loss, correct predictions
/// and examples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Sum of the BCE-with-logits losses.
    pub loss: f64,
    /// Number of correct predictions.
    pub correct: f64,
    /// Number of examples.
    pub count: f64,
}

impl Totals {
    /// Mean loss and accuracy (`None` over no examples).
    pub fn evaluation(&self) -> Option<Evaluation> {
        (self.count > 0.0).then(|| Evaluation {
            loss: self.loss / self.count,
            accuracy: self.correct / self.count,
        })
    }

    /// As three values, for an all-reduce.
    pub fn to_array(self) -> [f64; 3] {
        [self.loss, self.correct, self.count]
    }

    /// From three values (see [`Totals::to_array`]).
    pub fn from_slice(v: &[f64]) -> Self {
        Totals {
            loss: v[0],
            correct: v[1],
            count: v[2],
        }
    }
}

/// Evaluates `mlp` on every example (`None` when there are none).
pub fn evaluate(mlp: &Mlp, examples: &Examples) -> Option<Evaluation> {
    totals(mlp, examples).evaluation()
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
    let mut start = 0;
    while start < n {
        let rows = examples.rows().narrow(0, start, CHUNK.min(n - start));
        let logits = mlp.forward(&examples.inputs(&rows));
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
}
