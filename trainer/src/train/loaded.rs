//! [`Loaded`]: the shards of a single-process run, loaded once for several runs with the same
//! data (`trainer sweep`).

use std::sync::Mutex;

use crate::config::TrainConfig;
use crate::data::Data;
use crate::{Error, Result};

/// The shards of a single-process run, loaded once for several runs with the same data, split
/// and workers ([`super::run_loaded`]): each worker's share on its device.
#[derive(Debug)]
pub struct Loaded {
    /// What the shares were loaded for: data, split, feature spec, device, threads.
    key: String,
    shares: Vec<Mutex<Data>>,
}

impl Loaded {
    /// Loads every worker's share of `config.data` as `config`'s run would (one process only).
    pub fn load(config: &TrainConfig) -> Result<Self> {
        if config.cluster.processes() != 1 {
            return Err(Error::Config(
                "shards loaded once serve the runs of one process (no --workers, --hostfile)"
                    .into(),
            ));
        }
        let threads = config.cluster.threads();
        let shares = (0..threads)
            .map(|me| {
                let device = config.device.resolve_for(me)?;
                let data = Data::load_share(&config.data_spec(), me, threads, device)?;
                Ok(Mutex::new(data))
            })
            .collect::<Result<_>>()?;
        Ok(Loaded {
            key: Self::key(config),
            shares,
        })
    }

    fn key(config: &TrainConfig) -> String {
        format!(
            "{} {} {} {:?} {:?} {:?} {:?} {:?}",
            config.data,
            config.test_fraction,
            config.split_seed,
            config.features,
            config.privacy_unit,
            config.max_rows_per_unit,
            config.device,
            config.cluster
        )
    }

    /// Refuses a run whose data, split, device or workers are not those loaded.
    pub(super) fn check(&self, config: &TrainConfig) -> Result<()> {
        if Self::key(config) == self.key {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "the shards were loaded for {}, not for this run's {}",
                self.key,
                Self::key(config)
            )))
        }
    }

    /// A copy of worker `me`'s share: a run changes its data in place (standardization), so
    /// each run gets its own tensors.
    pub(super) fn share(&self, me: usize) -> Result<Data> {
        self.shares[me]
            .lock()
            .expect("a share is only copied under its lock")
            .copy()
    }

    /// The loaded shares (worker order).
    pub fn with_shares<T>(&self, f: impl FnOnce(&[&Data]) -> T) -> T {
        let guards: Vec<_> = self
            .shares
            .iter()
            .map(|s| s.lock().expect("a share is only copied under its lock"))
            .collect();
        let shares: Vec<&Data> = guards.iter().map(|g| &**g).collect();
        f(&shares)
    }
}
