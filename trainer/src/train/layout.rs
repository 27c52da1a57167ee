//! The first exchange ([`Counts`]): every worker's train and test counts and columns, and from
//! them where this worker's examples (and units) sit in the run's global order ([`Layout`]).

use std::ops::Range;

use super::peers::Peers;
use crate::config::TrainConfig;
use crate::data::Data;
use crate::{Error, Result};

/// What each worker tells the others first: its share's sizes and its columns. Summed over the
/// workers, each worker's sizes stay in their own slots, and the columns add up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Counts {
    /// Training examples per worker, in worker order (an audit's canaries included).
    pub train: Vec<u64>,
    /// Training units per worker (the sampler's population; equal to `train` without units).
    pub units: Vec<u64>,
    /// Held-out examples per worker, in worker order.
    pub test: Vec<u64>,
    /// The workers' numbers of feature columns, added up.
    pub width: u64,
    /// The workers' hashes of their column names, added up (wrapping).
    pub names: u64,
}

impl Counts {
    /// Worker `me`'s share of the exchange: its sizes (`[train, units, test]`) in its slots,
    /// zeros in the others'.
    pub fn mine(me: usize, workers: usize, sizes: [u64; 3], width: u64, names: u64) -> Self {
        let mut counts = Counts {
            train: vec![0; workers],
            units: vec![0; workers],
            test: vec![0; workers],
            width,
            names,
        };
        counts.train[me] = sizes[0];
        counts.units[me] = sizes[1];
        counts.test[me] = sizes[2];
        counts
    }

    /// As one vector for the all-reduce: the train, unit and test counts, the width, the names.
    pub fn to_vec(&self) -> Vec<u64> {
        let mut v = Vec::with_capacity(3 * self.train.len() + 2);
        v.extend(&self.train);
        v.extend(&self.units);
        v.extend(&self.test);
        v.extend([self.width, self.names]);
        v
    }

    /// From [`Counts::to_vec`]'s layout (3 x workers + 2 values).
    pub fn from_slice(v: &[u64]) -> Self {
        assert!(
            v.len() >= 2 && (v.len() - 2).is_multiple_of(3),
            "the counts of W workers are 3 W + 2 values"
        );
        let workers = (v.len() - 2) / 3;
        Counts {
            train: v[..workers].to_vec(),
            units: v[workers..2 * workers].to_vec(),
            test: v[2 * workers..3 * workers].to_vec(),
            width: v[3 * workers],
            names: v[3 * workers + 1],
        }
    }
}

/// Where this worker's examples sit among the run's (from every worker's [`Counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    /// Training examples in all.
    pub train_rows: usize,
    /// Training units in all (N, the sampler's population; `train_rows` without units).
    pub train_units: usize,
    /// Held-out examples in all.
    pub test_rows: usize,
    /// The global numbers of this worker's training units (its examples, without units).
    pub share: Range<i64>,
    /// The global position of this worker's first training example.
    pub train_start: usize,
    /// The global position of this worker's first held-out example.
    pub test_start: usize,
}

impl Layout {
    /// Exchanges the workers' counts (this worker holds `data` and `extra` rows of gradient
    /// canaries): refuses shards whose columns differ between workers, and a run with no
    /// training records.
    pub fn exchange(
        peers: &mut Peers,
        config: &TrainConfig,
        data: &Data,
        extra: usize,
    ) -> Result<Self> {
        let (me, workers) = (peers.me, peers.workers);
        let names = names_hash(data);
        let train = data.train.len() + extra;
        let units = data.train_units() + extra;
        let mine = Counts::mine(
            me,
            workers,
            [train as u64, units as u64, data.test.len() as u64],
            data.train.width() as u64,
            names,
        );
        let mut v = mine.to_vec();
        peers.sum_counts(&mut v)?;
        peers.set_counts_timeout(config.peer_timeout);
        let all = Counts::from_slice(&v);
        if all.width != (workers * data.train.width()) as u64
            || all.names != names.wrapping_mul(workers as u64)
        {
            return Err(Error::Data {
                location: config.data.to_string(),
                reason: "the shards do not all have the same columns".into(),
            });
        }
        let n = all.train.iter().sum::<u64>() as usize;
        let n_test = all.test.iter().sum::<u64>() as usize;
        if n == 0 {
            return Err(Error::Data {
                location: config.data.to_string(),
                reason: format!(
                    "no training records ({n_test} test records, test fraction {})",
                    config.test_fraction
                ),
            });
        }
        let share_start = all.units[..me].iter().sum::<u64>() as i64;
        Ok(Layout {
            train_rows: n,
            train_units: all.units.iter().sum::<u64>() as usize,
            test_rows: n_test,
            share: share_start..share_start + units as i64,
            train_start: all.train[..me].iter().sum::<u64>() as usize,
            test_start: all.test[..me].iter().sum::<u64>() as usize,
        })
    }
}

/// A hash of the feature columns' names then the label's.
fn names_hash(data: &Data) -> u64 {
    data.feature_names
        .iter()
        .chain([&data.label_name])
        .fold(0u64, |h, name| {
            name.bytes().fold(shards::splitmix64(h), |h, b| {
                shards::splitmix64(h ^ u64::from(b))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each worker's sizes travel in their own slots, so the sum of every worker's share is
    /// every worker's sizes; the layout comes back from the vector unchanged.
    #[test]
    fn counts_round_trip_and_add_up_by_worker() {
        let a = Counts::mine(0, 3, [10, 6, 2], 7, 5);
        assert_eq!(a.to_vec(), [10, 0, 0, 6, 0, 0, 2, 0, 0, 7, 5]);
        assert_eq!(Counts::from_slice(&a.to_vec()), a);
        let shares = [
            a,
            Counts::mine(1, 3, [11, 7, 3], 7, 5),
            Counts::mine(2, 3, [12, 8, 4], 7, 5),
        ];
        let mut sum = vec![0u64; 11];
        for s in &shares {
            for (x, y) in sum.iter_mut().zip(s.to_vec()) {
                *x = x.wrapping_add(y);
            }
        }
        let all = Counts::from_slice(&sum);
        assert_eq!(all.train, [10, 11, 12]);
        assert_eq!(all.units, [6, 7, 8]);
        assert_eq!(all.test, [2, 3, 4]);
        assert_eq!((all.width, all.names), (21, 15));
        assert_eq!(Counts::from_slice(&all.to_vec()), all);
        let one = Counts::mine(0, 1, [u64::MAX, 1, 0], 1, u64::MAX);
        assert_eq!(Counts::from_slice(&one.to_vec()), one);
    }
}
