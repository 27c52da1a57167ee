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
//!
//! No row can stop the run: rows whose feature is not 0 or 1, or whose values are too large for
//! the model's `f32` (the input's norm is not finite), are skipped and counted ([`Attack::skipped`], an operator's diagnostic), and the imputer's
//! Newton solver fails soft, leaving the baseline absent with its reason
//! ([`Imputer::failure`]).

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::Result;
use crate::data::Examples;
use crate::mlp::Mlp;

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
    skipped: usize,
    baseline: f64,
}

impl Attack {
    /// Prepares the attack on the leading `rows` rows of `examples` whose feature `feature` is
    /// 0 or 1 and whose input's norm is finite; the others are skipped ([`Attack::skipped`]).
    pub fn new(examples: &Examples, feature: usize, rows: usize) -> Result<Self> {
        let head = examples.head(rows)?;
        let rows = attackable(examples, &head, feature as i64);
        let column = rows.narrow(1, feature as i64, 1);
        let ones = column.sum(Kind::Float).double_value(&[]);
        let mut attack = Attack {
            feature: feature as i64,
            truth: column.gt(0.5),
            ones,
            skipped: (head.size()[0] - rows.size()[0]) as usize,
            baseline: 0.0,
            rows,
        };
        let (ones, n) = attack.counts();
        attack.set_majority(ones, n);
        Ok(attack)
    }

    /// The rows attacked (`[n, stride]`, a copy of the attackable leading rows).
    pub fn rows(&self) -> &Tensor {
        &self.rows
    }

    /// Leading rows skipped: the feature not 0 or 1, or values too large (the input's norm not
    /// finite in `f32`).
    pub fn skipped(&self) -> usize {
        self.skipped
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

/// The rows of `rows` (of `examples`) the attack can run on: feature `feature` is 0 or 1 and
/// the input's norm is finite in `f32` (the rows whose gradients training zeroes: values past
/// about 1.8e19 would give the model NaN predictions, and swamp the imputer's fit).
fn attackable(examples: &Examples, rows: &Tensor, feature: i64) -> Tensor {
    if rows.size()[0] == 0 {
        return rows.copy();
    }
    let column = rows.select(1, feature);
    let keep = column
        .eq(0.0)
        .logical_or(&column.eq(1.0))
        .logical_and(&examples.input_norms(rows).isfinite().view([-1]));
    rows.index_select(0, &keep.nonzero().view([-1]))
}

/// Iterations of Newton's method for [`Imputer`] (a fixed number, so every worker of a
/// data-parallel run takes part in the same all-reduces, failed or not).
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
    failure: Option<String>,
}

impl Imputer {
    /// Fits the imputer on `rows` of `examples` (an [`Attack::rows`]); `sum` adds a vector up
    /// over every worker of the run (each fits on its own rows, the sums of gradients and
    /// Hessians make the fit of all the rows). A solve that fails, or sums or a step that are
    /// not finite, end the fit soft ([`Imputer::failure`]): the worker still takes part in
    /// every later sum (with zeros), so the workers stay in step.
    pub fn fit(
        examples: &Examples,
        feature: usize,
        rows: &Tensor,
        mut sum: impl FnMut(&mut [f64]) -> Result<()>,
    ) -> Result<Self> {
        let feature = feature as i64;
        let (x, t) = design(examples, rows, feature);
        let d = x.size()[1];
        let device = x.device();
        let mut w = Tensor::zeros([d], (Kind::Double, device));
        let mut host = vec![0f64; (d * d + d) as usize];
        let mut failure = None;
        for _ in 0..NEWTON_STEPS {
            if failure.is_none() {
                let p = x.mv(&w).sigmoid();
                let g = x.tr().mv(&(&t - &p));
                let h = (&x * (&p - p.square()).unsqueeze(1)).tr().mm(&x);
                let both = Tensor::cat(&[h.reshape([-1]), g], 0).to_device(tch::Device::Cpu);
                let len = host.len();
                both.f_copy_data(&mut host, len)?;
            } else {
                host.fill(0.0);
            }
            sum(&mut host)?;
            if failure.is_some() {
                continue;
            }
            if host.iter().any(|v| !v.is_finite()) {
                failure = Some("its gradient or Hessian is not finite".to_string());
                continue;
            }
            let both = Tensor::from_slice(&host).to_device(device);
            let h = both.narrow(0, 0, d * d).view([d, d])
                + Tensor::eye(d, (Kind::Double, device)) * RIDGE;
            let g = both.narrow(0, d * d, d);
            match Tensor::f_linalg_solve(&h, &g, true) {
                Ok(step) if step.isfinite().all().int64_value(&[]) == 1 => w += step,
                Ok(_) => failure = Some("a Newton step is not finite".to_string()),
                Err(e) => failure = Some(format!("the Newton solve failed: {e}")),
            }
        }
        Ok(Imputer {
            feature,
            weights: w,
            failure,
        })
    }

    /// Why the fit failed, if it did (the baseline is then absent).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The number of `rows` of `examples` whose feature the imputer predicts (probability above
    /// one half predicts 1); 0 after a failed fit.
    pub fn correct(&self, examples: &Examples, rows: &Tensor) -> f64 {
        if self.failure.is_some() || rows.size()[0] == 0 {
            return 0.0;
        }
        let (x, t) = design(examples, rows, self.feature);
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
        let attack = Attack::new(&e, 0, 10_000).unwrap();
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
        let attack = Attack::new(&e, 0, 10_000).unwrap();
        let r = attack.run(&blind, &e);
        assert_eq!((r.accuracy, r.baseline), (3.0 / 8.0, 5.0 / 8.0));
        // Feature 1 is 0.5 everywhere: every row is skipped, none is attacked.
        let none = Attack::new(&e, 1, 100).unwrap();
        assert_eq!((none.counts(), none.skipped()), ((0.0, 0.0), 8));
        assert_eq!(none.run(&blind, &e).accuracy, 0.0);
    }

    /// One row cannot stop the attack (issue 23 B): a row whose feature is 2, and rows of huge
    /// values, are skipped and counted, and the rest is attacked as without them; the imputer
    /// fits on the same rows, and where its sums are not finite it fails soft, naming why.
    #[test]
    fn rows_it_cannot_attack_are_skipped_and_the_imputer_fails_soft() {
        let n = 60;
        let labels: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let clean: Vec<f32> = (0..n)
            .flat_map(|i| [((i * 5 / 7) % 2) as f32, ((i * 7) % 3) as f32])
            .collect();
        let mut bad = clean.clone();
        bad[2 * 3] = 2.0; // row 3: feature 0 is 2
        bad[2 * 10 + 1] = 3e38; // row 10: a huge value
        bad[2 * 20] = 3e38; // row 20: the feature itself huge
        bad[2 * 21 + 1] = f32::INFINITY; // row 21: infinite
        let model = Mlp::new(Shape::new(2, &[4]), 1, Device::Cpu).unwrap();
        let e = Examples::new(&bad, &labels, 2, Device::Cpu).unwrap();
        let attack = Attack::new(&e, 0, n).unwrap();
        assert_eq!(attack.skipped(), 4);
        assert_eq!(attack.counts().1, (n - 4) as f64);
        // The same as attacking the clean rows without those four.
        let keep: Vec<usize> = (0..n).filter(|i| ![3, 10, 20, 21].contains(i)).collect();
        let rows_of = |v: &[f32]| -> Vec<f32> {
            keep.iter()
                .flat_map(|&i| [v[2 * i], v[2 * i + 1]])
                .collect()
        };
        let kept_labels: Vec<f32> = keep.iter().map(|&i| labels[i]).collect();
        let e2 = Examples::new(&rows_of(&clean), &kept_labels, 2, Device::Cpu).unwrap();
        let reference = Attack::new(&e2, 0, n).unwrap();
        assert_eq!(reference.skipped(), 0);
        assert_eq!(attack.run(&model, &e), reference.run(&model, &e2));
        let imp = Imputer::fit(&e, 0, attack.rows(), |_| Ok(())).unwrap();
        let want = Imputer::fit(&e2, 0, reference.rows(), |_| Ok(())).unwrap();
        assert!(imp.failure().is_none());
        assert_eq!(
            imp.correct(&e, attack.rows()),
            want.correct(&e2, reference.rows())
        );
        // Sums that are not finite (another worker's, say): no panic, a reason, no baseline,
        // and every later sum still taken part in.
        let mut calls = 0;
        let failed = Imputer::fit(&e, 0, attack.rows(), |v| {
            calls += 1;
            v[0] = f64::NAN;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, NEWTON_STEPS);
        assert!(failed.failure().unwrap().contains("not finite"));
        assert_eq!(failed.correct(&e, attack.rows()), 0.0);
        // A singular system (every Hessian entry 1e300: the ridge is lost, the rank is 1) is
        // the solver's error, unwrapped before (a panic): now the failure's reason.
        let singular = Imputer::fit(&e, 0, attack.rows(), |v| {
            let d = 3;
            assert_eq!(v.len(), d * d + d);
            v[..d * d].fill(1e300);
            v[d * d..].fill(1.0);
            Ok(())
        })
        .unwrap();
        let why = singular.failure().expect("a singular system fails the fit");
        assert!(why.contains("solve") || why.contains("not finite"), "{why}");
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
        let rows = Attack::new(&e, 0, n).unwrap().rows().shallow_clone();
        let imp = Imputer::fit(&e, 0, &rows, |_| Ok(())).unwrap();
        assert_eq!(imp.correct(&e, &rows), 0.9 * n as f64);
        // Summing with a second worker's identical rows doubles the data, not the fit.
        let twice = Imputer::fit(&e, 0, &rows, |v| {
            v.iter_mut().for_each(|x| *x *= 2.0);
            Ok(())
        })
        .unwrap();
        assert_eq!(twice.correct(&e, &rows), imp.correct(&e, &rows));
    }
}
