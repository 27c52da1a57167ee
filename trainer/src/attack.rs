//! The seed project's model-inversion attack: recover a sensitive binary feature of a row from
//! the model, the row's other columns and its label.
//!
//! For each row, the attacker sets the feature to 0 and to 1, asks the model for both
//! predictions and guesses the value whose prediction is closer to the row's true label (a tie,
//! e.g. a model that ignores the feature, is guessed as 0, the seed's rule). The run attacks
//! training rows and held-out rows: on held-out rows the attack measures what the model says
//! about the population; the difference on training rows is what it leaks about the rows it was
//! trained on. Two baselines use no model: always guessing the majority value, and
//! [`Imputer`], a logistic regression of the feature on the other columns and the label.

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
/// In a data-parallel run each worker attacks the rows it holds of the run's leading rows, and
/// the counts are summed: [`Attack::counts`], [`Attack::set_majority`] (the majority baseline
/// over every worker's rows) and [`Attack::correct`].
#[derive(Debug)]
pub struct Attack {
    feature: i64,
    rows: Tensor,
    truth: Tensor,
    ones: f64,
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
                "--attack-feature '{name}' is not a 0/1 feature of the rows attacked"
            )));
        }
        let ones = column.sum(Kind::Float).double_value(&[]);
        let mut attack = Attack {
            feature: feature as i64,
            truth: column.gt(0.5),
            ones,
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

    /// Sets the majority baseline from the counts over all rows attacked.
    pub fn set_majority(&mut self, ones: f64, rows: f64) {
        let share = ones / rows.max(1.0);
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
        // Strictly closer to guess 1: a tie guesses 0.
        let guess = d1.lt_tensor(&d0);
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

/// Iterations of Newton's method for [`Imputer`] (a fixed number, so every worker of a
/// data-parallel run takes part in the same all-reduces).
const NEWTON_STEPS: usize = 25;
/// A small ridge term, so a constant or separable column leaves the fit finite.
const RIDGE: f64 = 1e-4;

/// The baseline imputer: logistic regression of the attack feature on the other features and
/// the label (the attacker's knowledge, without the model), fitted by Newton's method on rows
/// of a split. Its accuracy on held-out rows is what the attack has to beat to show that the
/// model, not the population's correlations, tells it something.
#[derive(Debug)]
pub struct Imputer {
    feature: i64,
    weights: Tensor,
}

impl Imputer {
    /// Fits the imputer on the leading `rows` rows of `examples`; `sum` adds a vector up over
    /// every worker of the run (each fits on its own rows, the sums of gradients and Hessians
    /// make the fit of all the rows).
    pub fn fit(
        examples: &Examples,
        feature: usize,
        rows: usize,
        mut sum: impl FnMut(&mut [f64]) -> Result<()>,
    ) -> Result<Self> {
        let feature = feature as i64;
        let (x, t) = design(examples, &examples.head(rows), feature);
        let d = x.size()[1];
        let device = x.device();
        let mut w = Tensor::zeros([d], (Kind::Double, device));
        let mut host = vec![0f64; (d * d + d) as usize];
        for _ in 0..NEWTON_STEPS {
            let p = x.mv(&w).sigmoid();
            let g = x.tr().mv(&(&t - &p));
            let h = (&x * (&p - p.square()).unsqueeze(1)).tr().mm(&x);
            let both = Tensor::cat(&[h.reshape([-1]), g], 0).to_device(tch::Device::Cpu);
            let len = host.len();
            both.f_copy_data(&mut host, len)?;
            sum(&mut host)?;
            let both = Tensor::from_slice(&host).to_device(device);
            let h = both.narrow(0, 0, d * d).view([d, d])
                + Tensor::eye(d, (Kind::Double, device)) * RIDGE;
            let g = both.narrow(0, d * d, d);
            w += Tensor::linalg_solve(&h, &g, true);
        }
        Ok(Imputer {
            feature,
            weights: w,
        })
    }

    /// The number of the leading `rows` rows of `examples` whose feature the imputer predicts
    /// (probability above one half predicts 1).
    pub fn correct(&self, examples: &Examples, rows: usize) -> f64 {
        let (x, t) = design(examples, &examples.head(rows), self.feature);
        x.mv(&self.weights)
            .gt(0.0)
            .to_kind(Kind::Double)
            .eq_tensor(&t)
            .sum(Kind::Int64)
            .int64_value(&[]) as f64
    }
}

/// The imputer's inputs `[x with the feature's column replaced by the label, 1]` and target
/// (the feature), in f64.
fn design(examples: &Examples, rows: &Tensor, feature: i64) -> (Tensor, Tensor) {
    let x = examples.inputs(rows).to_kind(Kind::Double);
    let t = x.select(1, feature).copy();
    let labels = examples.labels(rows).to_kind(Kind::Double);
    x.narrow(1, feature, 1).copy_(&labels);
    (x, t)
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::mlp::Shape;

    /// A model whose logit is +10 when feature 0 is 1 and -10 when it is 0 reveals the feature
    /// exactly when the label equals it; a model that ignores it guesses 0 everywhere (the
    /// seed's tie rule), whatever the majority.
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
        // Feature 0 mostly 1: ties still guess 0, below the majority baseline.
        let f0 = [1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        let features: Vec<f32> = f0.iter().flat_map(|&v| [v, 0.5]).collect();
        let e = Examples::new(&features, &f0, 2, Device::Cpu).unwrap();
        let attack = Attack::new(&e, 0, "f0", 10_000).unwrap();
        let r = attack.run(&blind, &e);
        assert_eq!((r.accuracy, r.baseline), (3.0 / 8.0, 5.0 / 8.0));
        assert!(
            Attack::new(&e, 1, "f1", 100)
                .unwrap_err()
                .to_string()
                .contains("not a 0/1")
        );
    }

    /// The imputer learns a feature the label determines, and fitting on two halves whose
    /// sums are added gives the fit on all rows.
    #[test]
    fn imputer_recovers_a_feature_the_label_predicts() {
        let n = 200;
        // Feature 0 equals the label on 90% of rows; feature 1 is noise.
        let labels: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let features: Vec<f32> = (0..n)
            .flat_map(|i| {
                let y = (i % 2) as f32;
                let f = if i % 10 == 3 { 1.0 - y } else { y };
                [f, ((i * 7) % 3) as f32]
            })
            .collect();
        let e = Examples::new(&features, &labels, 2, Device::Cpu).unwrap();
        let imp = Imputer::fit(&e, 0, n, |_| Ok(())).unwrap();
        assert_eq!(imp.correct(&e, n), 0.9 * n as f64);
        // Summing with a second worker's identical rows doubles the data, not the fit.
        let twice = Imputer::fit(&e, 0, n, |v| {
            v.iter_mut().for_each(|x| *x *= 2.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(twice.correct(&e, n), imp.correct(&e, n));
    }
}
