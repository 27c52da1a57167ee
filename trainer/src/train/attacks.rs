//! [`Attacks`]: the model-inversion attack a run reports after each epoch, set up over every
//! worker's rows.

use crate::Result;
use crate::attack::{Attack, Imputer};
use crate::data::Data;

/// The model-inversion attack on a run's leading training rows and leading held-out rows, and
/// the baseline imputer's accuracy on those held-out rows (fitted on them once: it does not
/// depend on the model).
pub(super) struct Attacks {
    /// On the leading training rows.
    pub train: Attack,
    /// On the leading held-out rows.
    pub held_out: Attack,
    /// The baseline imputer's accuracy on the held-out rows (none without any).
    pub imputer: Option<f64>,
}

impl Attacks {
    /// The attack on feature `name` of up to `rows` leading rows of each split; this worker's
    /// rows of the splits start at global positions `starts`; `sum` adds up over workers.
    pub fn new(
        data: &Data,
        name: &str,
        rows: usize,
        starts: (usize, usize),
        n_test: usize,
        mut sum: impl FnMut(&mut [f64]) -> Result<()>,
    ) -> Result<Self> {
        let j = data.feature_index(name, "--attack-feature")?;
        let (train_rows, test_rows) =
            (rows.saturating_sub(starts.0), rows.saturating_sub(starts.1));
        let mut train = Attack::new(&data.train, j, name, train_rows)?;
        let mut held_out = Attack::new(&data.test, j, name, test_rows)?;
        let mut v = [
            train.counts().0,
            train.counts().1,
            held_out.counts().0,
            held_out.counts().1,
        ];
        sum(&mut v)?;
        train.set_majority(v[0], v[1]);
        held_out.set_majority(v[2], v[3]);
        let imputer = if n_test > 0 {
            let imp = Imputer::fit(&data.test, j, test_rows, &mut sum)?;
            let mut v = [imp.correct(&data.test, test_rows), held_out.counts().1];
            sum(&mut v)?;
            Some(v[0] / v[1].max(1.0))
        } else {
            None
        };
        Ok(Attacks {
            train,
            held_out,
            imputer,
        })
    }
}
