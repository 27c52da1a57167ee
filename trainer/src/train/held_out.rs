//! [`HeldOut`]: the held-out accuracy's release across a run (whether one is made, the
//! checkpoint's when a resumed run reuses it, how many the accountant composes), agreed by
//! every worker.

use super::peers::Peers;
use super::resume::Start;
use crate::config::{NoiseRng, TrainConfig};
use crate::data::Units;
use crate::evaluate::Totals;
use crate::mechanism::held_out::{HeldOutMechanism, HeldOutRelease};
use crate::{Error, Result};

/// The run's held-out release.
#[derive(Debug)]
pub(super) struct HeldOut {
    /// Its mechanism, when the run makes one (a private run with a test split and
    /// `--test-accuracy-release noisy`).
    mechanism: Option<HeldOutMechanism>,
    /// Its noise's key.
    rng: NoiseRng,
    /// The release once made, or the checkpoint's that this run reuses (worker 0's).
    pub release: Option<HeldOutRelease>,
    /// Releases made so far by this run and the runs it continues.
    pub made: u32,
    /// Whether this run is still to make one.
    pending: bool,
}

impl HeldOut {
    /// The release of a run of `config` (whose privacy unit is `units`, `None` for a line) from
    /// `start`, whose last step is step `final_steps`:
    /// worker 0 keeps the checkpoint's release if it was made at that step (a run resumed after
    /// its last epoch, which must not release again) and tells every worker whether it did and
    /// how many releases were made before.
    pub fn exchange(
        config: &TrainConfig,
        units: Option<&Units>,
        start: &mut Start,
        final_steps: u64,
        rng: NoiseRng,
        peers: &mut Peers,
    ) -> Result<Self> {
        let mut words = [0u64; 2];
        let mut release = start.test_release.take();
        if peers.lead() {
            release = release.filter(|r| r.steps == final_steps);
            words = [u64::from(release.is_some()), u64::from(start.test_releases)];
        }
        peers.broadcast_counts(&mut words)?;
        let mechanism = match config.test_release_noise() {
            Some(noise_multiplier) => Some(HeldOutMechanism {
                noise_multiplier,
                rows_per_unit: rows_per_unit(
                    units,
                    "--test-accuracy-release noisy",
                    "--test-accuracy-release withheld (or exact-not-covered)",
                )?,
            }),
            None => None,
        };
        Ok(HeldOut {
            pending: mechanism.is_some() && words[0] == 0,
            mechanism,
            rng,
            release,
            made: words[1] as u32,
        })
    }

    /// The releases the whole run makes (what the accountant composes for its epsilon).
    pub fn total(&self) -> u32 {
        self.made + u32::from(self.pending)
    }

    /// The releases made once the current epoch is evaluated (the last makes it).
    pub fn after_epoch(&self, last: bool) -> u32 {
        self.made + u32::from(last && self.pending)
    }

    /// Whether the run is still to make its release.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// Makes the release from the exact held-out `test` totals (summed over every worker) of
    /// the model after `steps` steps, `positives` of the test records labelled 1: worker 0
    /// (`lead`) draws the noise; every worker counts it.
    pub fn release(&mut self, lead: bool, test: &Totals, positives: f64, steps: u64) -> Result<()> {
        let Some(m) = self.mechanism.filter(|_| self.pending) else {
            return Ok(());
        };
        if lead {
            self.release = Some(m.release(test.correct, test.count, positives, steps, self.rng)?);
        }
        self.made += 1;
        self.pending = false;
        Ok(())
    }
}

/// The most records one privacy unit has in a split, the sensitivity in records of a release
/// that counts or sums them (`release` names it): 1 for a line, a unit's public bound; a unit
/// without one is an error (the release would have no sensitivity), which says what else to
/// pass (`instead`).
pub(super) fn rows_per_unit(units: Option<&Units>, release: &str, instead: &str) -> Result<u32> {
    match units {
        None => Ok(1),
        Some(Units {
            max_rows: Some(k), ..
        }) => Ok(*k),
        Some(u) => Err(Error::Config(format!(
            "{release}: a unit ('{}') without a bound on its rows gives the release no \
             sensitivity; bound it (--max-rows-per-unit K, or shards written with it), or pass \
             {instead}",
            u.column
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The held-out counts' sensitivity in records: 1 for a line, K for units of at most K
    /// rows; units without a bound are refused, naming the way out.
    #[test]
    fn rows_per_unit_is_a_lines_one_or_a_units_bound() {
        let rows_per_unit = |u: Option<&Units>| {
            rows_per_unit(
                u,
                "--test-accuracy-release noisy",
                "--test-accuracy-release withheld (or exact-not-covered)",
            )
        };
        assert_eq!(rows_per_unit(None).unwrap(), 1);
        let unit = |max_rows| Units {
            column: "household".into(),
            max_rows,
        };
        assert_eq!(rows_per_unit(Some(&unit(Some(5)))).unwrap(), 5);
        let e = rows_per_unit(Some(&unit(None))).unwrap_err().to_string();
        assert!(
            e.contains("'household'")
                && e.contains("--max-rows-per-unit")
                && e.contains("--test-accuracy-release withheld"),
            "{e}"
        );
    }
}
