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
    /// The baseline imputer's accuracy on the held-out rows (none without any, or when its fit
    /// failed).
    pub imputer: Option<f64>,
}

impl Attacks {
    /// The attack on feature `name` of up to `rows` leading rows of each split; this worker's
    /// rows of the splits start at global positions `starts`; `sum` adds up over workers.
    /// Worker 0 (`lead`) tells the operator on stderr how many rows the attack skips (their
    /// feature not 0/1, or values too large for `f32`) and why the imputer failed, if it did: exact
    /// figures of the data, never released. Neither stops the run.
    pub fn new(
        data: &Data,
        name: &str,
        rows: usize,
        starts: (usize, usize),
        lead: bool,
        mut sum: impl FnMut(&mut [f64]) -> Result<()>,
    ) -> Result<Self> {
        let j = data.feature_index(name, "--attack-feature")?;
        let (train_rows, test_rows) =
            (rows.saturating_sub(starts.0), rows.saturating_sub(starts.1));
        let mut train = Attack::new(&data.train, j, train_rows)?;
        let mut held_out = Attack::new(&data.test, j, test_rows)?;
        let mut v = [
            train.counts().0,
            train.counts().1,
            held_out.counts().0,
            held_out.counts().1,
            train.skipped() as f64,
            held_out.skipped() as f64,
        ];
        sum(&mut v)?;
        train.set_majority(v[0], v[1]);
        held_out.set_majority(v[2], v[3]);
        if lead && v[4] + v[5] > 0.0 {
            eprintln!(
                "trainer: the attack skips {} training and {} held-out row(s) whose '{name}' is \
                 not 0 or 1 or whose values are too large (not private: a count of the data's \
                 rows)",
                v[4], v[5]
            );
        }
        // Every worker fits (and so takes part in the sums), on its rows of the held-out split.
        let imputer = if v[3] > 0.0 {
            let imp = Imputer::fit(&data.test, j, held_out.rows(), &mut sum)?;
            let mut v = [
                imp.correct(&data.test, held_out.rows()),
                held_out.counts().1,
                f64::from(u8::from(imp.failure().is_some())),
            ];
            sum(&mut v)?;
            if lead && let Some(why) = imp.failure() {
                eprintln!(
                    "trainer: the attack's imputer baseline is left out: its fit on the held-out \
                     rows failed ({why})"
                );
            }
            (v[2] == 0.0).then(|| v[0] / v[1].max(1.0))
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
