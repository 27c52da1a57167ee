//! The seed project's model-inversion attack: recover a sensitive binary feature of training
//! rows from the model and the other columns.
//!
//! For each row, the attacker sets the feature to 0 and to 1, asks the model for both
//! predictions and guesses the value whose prediction is closer to the row's true label (a tie,
//! e.g. a model that ignores the feature, is guessed as the majority value). The baseline
//! guesses the majority value for every row.

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::data::Examples;
use crate::mlp::Mlp;
use crate::{Error, Result};

/// The attack's accuracy next to its baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AttackResult {
    /// Share of rows whose feature the attack recovers.
    pub accuracy: f64,
    /// Share recovered by always guessing the majority value.
    pub baseline: f64,
}

/// The attack on feature `feature` of up to `rows` leading rows of `examples`.
///
/// In a data-parallel run each worker attacks the rows it holds of the run's leading training
/// rows, and the counts are summed: [`Attack::counts`], [`Attack::set_majority`] (the majority
/// over every worker's rows decides ties) and [`Attack::correct`].
#[derive(Debug)]
pub struct Attack {
    feature: i64,
    rows: Tensor,
    truth: Tensor,
    ones: f64,
    majority: f64,
    baseline: f64,
}

impl Attack {
    /// Prepares the attack; the feature must be 0/1 on those rows.
    pub fn new(examples: &Examples, feature: usize, name: &str, rows: usize) -> Result<Self> {
        let rows = examples.head(rows);
        let column = rows.narrow(1, feature as i64, 1);
        let binary = column
            .eq(0.0)
            .logical_or(&column.eq(1.0))
            .all()
            .int64_value(&[])
            == 1;
        if !binary {
            return Err(Error::Config(format!(
                "--attack-feature '{name}' is not a 0/1 feature of the training rows"
            )));
        }
        let ones = column.sum(Kind::Float).double_value(&[]);
        let mut attack = Attack {
            feature: feature as i64,
            truth: column.gt(0.5),
            ones,
            majority: 0.0,
            baseline: 0.0,
            rows,
        };
        let (ones, n) = attack.counts();
        attack.set_majority(ones, n);
        Ok(attack)
    }

    /// Rows here whose feature is 1, and rows here.
    pub fn counts(&self) -> (f64, f64) {
        (self.ones, self.rows.size()[0] as f64)
    }

    /// Sets the majority value and the baseline from the counts over all rows attacked.
    pub fn set_majority(&mut self, ones: f64, rows: f64) {
        let share = ones / rows.max(1.0);
        self.majority = if share > 0.5 { 1.0 } else { 0.0 };
        self.baseline = share.max(1.0 - share);
    }

    /// Runs it against `mlp`.
    pub fn run(&self, mlp: &Mlp, examples: &Examples) -> AttackResult {
        let (_, n) = self.counts();
        AttackResult {
            accuracy: self.correct(mlp, examples) / n.max(1.0),
            baseline: self.baseline,
        }
    }

    /// The number of rows here whose feature the attack recovers.
    pub fn correct(&self, mlp: &Mlp, examples: &Examples) -> f64 {
        if self.rows.size()[0] == 0 {
            return 0.0;
        }
        let _guard = tch::no_grad_guard();
        let inputs = examples.inputs(&self.rows);
        let labels = examples.labels(&self.rows);
        let predict = |value: f64| {
            let x = inputs.copy();
            let _ = x.narrow(1, self.feature, 1).fill_(value);
            mlp.forward(&x).sigmoid()
        };
        let d0 = (predict(0.0) - &labels).abs();
        let d1 = (predict(1.0) - &labels).abs();
        let guess = d1
            .lt_tensor(&d0)
            .logical_or(&d1.eq_tensor(&d0).logical_and(&Tensor::full(
                [],
                i64::from(self.majority > 0.5),
                (Kind::Bool, d0.device()),
            )));
        guess
            .eq_tensor(&self.truth)
            .sum(Kind::Int64)
            .int64_value(&[]) as f64
    }

    /// The baseline's accuracy: always guessing the majority value.
    pub fn baseline(&self) -> f64 {
        self.baseline
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::mlp::Shape;

    /// A model whose logit is +10 when feature 0 is 1 and -10 when it is 0 reveals the feature
    /// exactly when the label equals it; a model that ignores it scores the baseline.
    #[test]
    fn recovers_a_feature_the_model_leaks_and_falls_back_to_the_baseline() {
        // 8 rows, feature 0 = [1,1,1,0,0,0,0,0], label = feature 0.
        let f0 = [1.0f32, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let features: Vec<f32> = f0.iter().flat_map(|&v| [v, 0.5]).collect();
        let e = Examples::new(&features, &f0, 2, Device::Cpu).unwrap();
        // Logistic regression: z = 20 x0 - 10.
        let leaky = Mlp::from_flat(
            Shape::new(2, &[]),
            Tensor::from_slice(&[20.0f32, 0.0, -10.0]),
        )
        .unwrap();
        let attack = Attack::new(&e, 0, "f0", 10_000).unwrap();
        let r = attack.run(&leaky, &e);
        assert_eq!(r.accuracy, 1.0);
        assert_eq!(r.baseline, 5.0 / 8.0);
        let blind =
            Mlp::from_flat(Shape::new(2, &[]), Tensor::from_slice(&[0.0f32, 1.0, 0.0])).unwrap();
        assert_eq!(attack.run(&blind, &e).accuracy, 5.0 / 8.0);
        assert!(
            Attack::new(&e, 1, "f1", 100)
                .unwrap_err()
                .to_string()
                .contains("not a 0/1")
        );
    }
}
