//! [`Settings`]: every option of a run that matters to the mechanism or the model, as one typed
//! struct. The processes of a run agree on it before the first step, and a checkpoint is
//! continued only by a run with the same settings (but for the data's fingerprint, which a
//! checkpoint does not record: [`Settings::for_checkpoint`]).

use serde::Serialize;

use crate::config::{GradSample, NoiseSpec, Privacy, Sampling, TrainConfig};
use crate::mechanism::optim::OptimizerKind;
use crate::{Error, Result};

/// The most settings [`Settings::agree`] compares (slots per worker in its exchange).
const SLOTS: usize = 32;

/// What the mechanism and the model depend on: the data's identity (which a checkpoint does
/// not record) and the [`RunSettings`] (which it does). Adding a field to either is all it
/// takes for the processes of a run to compare it (and, in [`RunSettings`], for a checkpoint to
/// be refused by a run that differs in it); the options left out (device, threads, files
/// written, the attack) change neither. Serialized flat: one object of every setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// A hash of the dataset's listing and manifest ([`crate::data::Data::fingerprint`]).
    pub data_fingerprint: String,
    /// Training records in all.
    pub train_rows: u64,
    /// The rest.
    #[serde(flatten)]
    pub run: RunSettings,
}

/// The settings a checkpoint records, but for the number of training rows ([`Checkpointed`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSettings {
    /// The trainer's version (a process running another binary may compute another mechanism).
    pub version: &'static str,
    /// The public size of the training split the mechanism is computed from (`--population`),
    /// if given instead of `train_rows`.
    pub population: Option<u64>,
    /// The label then the feature columns.
    pub columns: Vec<String>,
    /// Planned epochs (left out of a checkpoint's settings unless the noise was calibrated for
    /// them: more epochs may follow).
    pub epochs: Option<u32>,
    /// Expected batch size.
    pub batch_size: u32,
    /// How batches are drawn.
    pub sampling: Sampling,
    /// Learning rate.
    pub lr: f64,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// The privacy unit's column (`None`: each line).
    pub privacy_unit: Option<String>,
    /// The bound on a unit's rows.
    pub max_rows_per_unit: Option<u32>,
    /// The split rule's fraction.
    pub test_fraction: f64,
    /// The split rule's seed.
    pub split_seed: u64,
    /// The held-out release's noise multiplier, when it is composed in the accountant.
    pub test_release_noise: Option<f64>,
    /// The seed policy: a seed, or `None` for keys from the operating system.
    pub seed: Option<u64>,
    /// DP-SGD (true) or the non-private baseline.
    pub private: bool,
    /// The clip bound C.
    pub l2_norm_clip: Option<f64>,
    /// The noise multiplier or the target epsilon.
    pub noise: Option<NoiseSpec>,
    /// The delta of (epsilon, delta).
    pub delta: Option<f64>,
    /// The accountant.
    pub accountant: Option<String>,
    /// Per-example or microbatch clipping.
    pub grad_sample: Option<GradSample>,
    /// The feature spec (bounds, levels, standardized ranges and their noise), as JSON.
    pub features: String,
}

/// What a checkpoint records of the [`Settings`] ([`Settings::for_checkpoint`]): no data
/// fingerprint (the type has none), and the training rows only without `--population`.
#[derive(Debug, Serialize)]
struct Checkpointed {
    /// Training records in all, absent given a public population.
    #[serde(skip_serializing_if = "Option::is_none")]
    train_rows: Option<u64>,
    #[serde(flatten)]
    run: RunSettings,
}

impl RunSettings {
    /// These settings, without the epochs unless the noise was calibrated for them (more epochs
    /// may follow a checkpoint).
    fn without_epochs(&self) -> RunSettings {
        let calibrated = matches!(self.noise, Some(NoiseSpec::TargetEpsilon(_)));
        RunSettings {
            epochs: self.epochs.filter(|_| calibrated),
            ..self.clone()
        }
    }
}

impl Settings {
    /// The settings of `config` on data with `fingerprint`, `train_rows` training records and
    /// `columns` (label first).
    pub fn new(
        config: &TrainConfig,
        fingerprint: u64,
        train_rows: u64,
        columns: Vec<String>,
    ) -> Self {
        let dp = match &config.privacy {
            Privacy::Private(dp) => Some(dp),
            Privacy::NonPrivate => None,
        };
        let run = RunSettings {
            version: env!("CARGO_PKG_VERSION"),
            population: config.population,
            columns,
            epochs: Some(config.epochs),
            batch_size: config.batch_size,
            sampling: config.sampling,
            lr: config.lr,
            optimizer: config.optimizer,
            hidden: config.hidden.clone(),
            privacy_unit: config.privacy_unit.clone(),
            max_rows_per_unit: config.max_rows_per_unit,
            test_fraction: config.test_fraction,
            split_seed: config.split_seed,
            test_release_noise: config.test_release_noise(),
            seed: config.seed,
            private: dp.is_some(),
            l2_norm_clip: dp.map(|d| d.l2_norm_clip),
            noise: dp.map(|d| d.noise),
            delta: dp.map(|d| d.delta),
            accountant: dp.map(|d| d.accountant.to_string()),
            grad_sample: dp.map(|d| d.grad_sample),
            features: serde_json::to_string(&config.features).expect("a spec serializes"),
        };
        Settings {
            data_fingerprint: format!("{fingerprint:016x}"),
            train_rows,
            run,
        }
    }

    /// What a checkpoint records and a resumed run must match: these settings, without the
    /// epochs unless the noise was calibrated for them, and without the data's fingerprint.
    ///
    /// A checkpoint may be shipped like the card, and the fingerprint is a hash of the shards'
    /// listing and manifest (checksums, feature means): a function of every record that anyone
    /// who knows the other records can recompute for each candidate, so it would identify the
    /// training data exactly. The number of training rows stays unless `--population` is given
    /// (without it, N is treated as public: q = B / N and epsilon are functions of it; with it,
    /// N is exactly what neighbouring datasets differ in, so it goes too). A resume on other
    /// data of the same columns (and size, without `--population`) is therefore not refused; it
    /// is still accounted right, since every step, on whatever data, is the same sampled
    /// Gaussian mechanism and the accountant composes them all.
    pub fn for_checkpoint(&self) -> serde_json::Value {
        let kept = Checkpointed {
            train_rows: Some(self.train_rows).filter(|_| self.run.population.is_none()),
            run: self.run.without_epochs(),
        };
        serde_json::to_value(kept).expect("settings serialize")
    }

    /// The key of a seeded run's noise: `seed` mixed with a hash of these settings, the data's
    /// fingerprint included, but not the epochs unless calibrated (so a resumed run draws the
    /// same noise), so that runs with the same seed but other settings or data do not share
    /// their noise.
    pub fn noise_seed(&self, seed: u64) -> u64 {
        self.keyed(seed, "settings")
    }

    /// The key of a seeded run's batch sampler: `seed` mixed with a hash of these settings, as
    /// [`Settings::noise_seed`] (under another name, so the two keys differ). Runs with the same
    /// seed and settings replay the same batches; runs with other settings, such as a sweep's
    /// points, draw independent ones (sharing them, their epsilons would not add up).
    pub fn sampler_seed(&self, seed: u64) -> u64 {
        self.keyed(seed, "sampler")
    }

    /// `seed` mixed with a hash of these settings (the epochs only if calibrated) under `name`.
    fn keyed(&self, seed: u64, name: &str) -> u64 {
        let kept = Settings {
            run: self.run.without_epochs(),
            ..self.clone()
        };
        let text = serde_json::to_value(kept)
            .expect("settings serialize")
            .to_string();
        shards::splitmix64(seed ^ hash(name, &text))
    }

    /// Each setting's name and value, in the struct's order.
    pub fn fields(&self) -> Vec<(String, String)> {
        let value = serde_json::to_value(self).expect("settings serialize");
        let serde_json::Value::Object(map) = value else {
            unreachable!("a struct serializes to an object")
        };
        map.into_iter().map(|(k, v)| (k, v.to_string())).collect()
    }

    /// Checks that every worker of the run has these settings: each worker puts a hash of
    /// each setting in its slots, `sum` adds the slots up over the workers (so every worker
    /// sees all of them), and any difference from worker 0 fails this worker with the setting
    /// and the process named (`threads` workers per process). Every worker reaches the same
    /// verdict, so every process fails.
    pub fn agree(
        &self,
        me: usize,
        workers: usize,
        threads: usize,
        sum: impl FnOnce(&mut [u64]) -> Result<()>,
    ) -> Result<()> {
        let mut slots = self.slots(me, workers);
        sum(&mut slots)?;
        self.check(me, threads, &slots)
    }

    /// Worker `me`'s share of the exchange: its hashes in its slots, zeros elsewhere.
    fn slots(&self, me: usize, workers: usize) -> Vec<u64> {
        let fields = self.fields();
        assert!(fields.len() <= SLOTS, "Settings has at most {SLOTS} fields");
        let mut slots = vec![0u64; workers * SLOTS];
        for (i, (name, value)) in fields.iter().enumerate() {
            slots[me * SLOTS + i] = hash(name, value);
        }
        slots
    }

    /// The verdict on every worker's slots.
    fn check(&self, me: usize, threads: usize, all: &[u64]) -> Result<()> {
        let fields = self.fields();
        let workers = all.len() / SLOTS;
        // The version first: another binary may name its settings differently.
        let mut order: Vec<usize> = (0..fields.len()).collect();
        order.sort_by_key(|&i| fields[i].0 != "version");
        for i in order {
            for w in 1..workers {
                if all[w * SLOTS + i] != all[i] {
                    let (setting, value) = &fields[i];
                    return Err(Error::SettingsDiffer {
                        setting: setting.clone(),
                        process: w / threads.max(1),
                        this_process: me / threads.max(1),
                        value: value.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn hash(name: &str, value: &str) -> u64 {
    name.bytes()
        .chain([0])
        .chain(value.bytes())
        .fold(shards::splitmix64(1), |h, b| {
            shards::splitmix64(h ^ u64::from(b))
        })
        .max(1)
}

#[cfg(test)]
mod tests {
    use shards::Location;

    use super::*;

    fn settings(config: &TrainConfig) -> Settings {
        Settings::new(config, 7, 100, vec!["y".into(), "x".into()])
    }

    /// Two workers with the given settings, the exchange played by hand: each one's verdict.
    fn exchange(a: &Settings, b: &Settings) -> [Result<()>; 2] {
        let all: Vec<u64> = a
            .slots(0, 2)
            .iter()
            .zip(b.slots(1, 2))
            .map(|(x, y)| x.wrapping_add(y))
            .collect();
        [a.check(0, 1, &all), b.check(1, 1, &all)]
    }

    #[test]
    fn agreeing_workers_pass_and_a_different_clip_fails_both_naming_it() {
        let base = TrainConfig::new(Location::parse("shards").unwrap());
        let a = settings(&base);
        assert!(exchange(&a, &a.clone()).iter().all(Result::is_ok));
        let mut other = base.clone();
        if let Privacy::Private(dp) = &mut other.privacy {
            dp.l2_norm_clip = 1e9;
        }
        for err in exchange(&a, &settings(&other)) {
            let msg = err.unwrap_err().to_string();
            assert!(
                msg.contains("l2_norm_clip") && msg.contains("process 1"),
                "{msg}"
            );
        }
    }

    /// Every option of a run is a setting, or is named here as one that changes neither the
    /// mechanism nor the model (float order aside). A new option must be placed: one left out
    /// of `Settings` by mistake would let processes that differ in it train together, let a
    /// checkpoint be resumed with another value, and give seeded runs that differ in it the
    /// same noise.
    #[test]
    fn every_option_is_a_setting_or_named_as_not_mattering() {
        // `data` is compared through the data's fingerprint, rows and columns, `test_release`
        // as `test_release_noise` (what the accountant composes: exact or withheld change only
        // what the card says); the rest only place the work, report, or write files.
        // `preset` and `attack_required` only choose defaults or whether a missing attack feature
        // is an error: their effects are settings of their own.
        const NOT_SETTINGS: &[&str] = &[
            "preset",
            "attack_required",
            "data",
            "test_release",
            "privacy",
            "device",
            "intra_op_threads",
            "attack_feature",
            "attack_rows",
            "metrics_out",
            "save",
            "checkpoint",
            "profile",
            "progress",
        ];
        let c = TrainConfig::new(Location::parse("shards").unwrap());
        let names: Vec<String> = settings(&c).fields().into_iter().map(|(n, _)| n).collect();
        let options = serde_json::to_value(&c).unwrap();
        let mut unplaced = Vec::new();
        for key in options.as_object().unwrap().keys() {
            if !names.contains(key) && !NOT_SETTINGS.contains(&key.as_str()) {
                unplaced.push(key.clone());
            }
        }
        // The DP options are settings one by one.
        for key in options["privacy"]["private"].as_object().unwrap().keys() {
            if !names.contains(key) {
                unplaced.push(format!("privacy.{key}"));
            }
        }
        assert!(
            unplaced.is_empty(),
            "options neither in Settings nor named as not mattering: {unplaced:?}"
        );
    }

    #[test]
    fn seeded_noise_depends_on_the_settings_but_not_on_more_epochs() {
        let mut c = TrainConfig::new(Location::parse("shards").unwrap());
        let key = settings(&c).noise_seed(5);
        c.epochs = 30;
        assert_eq!(settings(&c).noise_seed(5), key);
        assert_ne!(settings(&c).noise_seed(6), key);
        c.lr = 0.02;
        assert_ne!(settings(&c).noise_seed(5), key);
        let lr = settings(&c).noise_seed(5);
        c.features.add_bounds("x=0:10").unwrap();
        assert_ne!(
            settings(&c).noise_seed(5),
            lr,
            "the feature spec is a setting"
        );
        let other_data = Settings::new(&c, 8, 100, vec!["y".into(), "x".into()]);
        assert_ne!(other_data.noise_seed(5), settings(&c).noise_seed(5));
        // The sampler's key follows the same settings, under a key of its own.
        assert_ne!(settings(&c).sampler_seed(5), settings(&c).noise_seed(5));
        assert_ne!(other_data.sampler_seed(5), settings(&c).sampler_seed(5));
        let mut more = c.clone();
        more.epochs += 1;
        assert_eq!(
            settings(&more).sampler_seed(5),
            settings(&c).sampler_seed(5)
        );
        if let Privacy::Private(dp) = &mut more.privacy {
            dp.noise = NoiseSpec::TargetEpsilon(2.0);
        }
        assert_ne!(
            settings(&more).sampler_seed(5),
            settings(&c).sampler_seed(5)
        );
        // A checkpoint does not record the data's fingerprint (it would identify the data).
        assert_eq!(other_data.for_checkpoint(), settings(&c).for_checkpoint());
        assert!(
            settings(&c)
                .for_checkpoint()
                .get("data_fingerprint")
                .is_none()
        );
    }

    /// With `--population`, a checkpoint's settings do not carry the training count (which
    /// is what neighbouring datasets differ in); without it they do, as N is treated as public.
    #[test]
    fn checkpoints_drop_the_training_count_given_a_population() {
        let mut c = TrainConfig::new(Location::parse("shards").unwrap());
        let columns = || vec!["y".into(), "x".into()];
        assert_ne!(
            Settings::new(&c, 7, 100, columns()).for_checkpoint(),
            Settings::new(&c, 7, 101, columns()).for_checkpoint()
        );
        c.population = Some(5_000);
        let ours = Settings::new(&c, 7, 100, columns()).for_checkpoint();
        assert_eq!(ours, Settings::new(&c, 7, 101, columns()).for_checkpoint());
        assert!(ours.get("train_rows").is_none(), "{ours}");
        assert_eq!(ours["population"], 5_000);
    }

    /// A checkpoint records every setting of the run but the data's fingerprint (and the
    /// training rows given a population), under the names the processes compare them by.
    #[test]
    fn a_checkpoint_records_every_setting_but_the_datas_identity() {
        let mut c = TrainConfig::new(Location::parse("shards").unwrap());
        let names = |s: &Settings| -> Vec<String> { s.fields().into_iter().map(|f| f.0).collect() };
        let recorded = |s: &Settings| -> Vec<String> {
            let value = s.for_checkpoint();
            value.as_object().unwrap().keys().cloned().collect()
        };
        let s = settings(&c);
        let mut expected = names(&s);
        expected.retain(|n| n != "data_fingerprint");
        assert_eq!(recorded(&s), expected);
        c.population = Some(5_000);
        let s = settings(&c);
        expected.retain(|n| n != "train_rows");
        assert_eq!(recorded(&s), expected);
    }

    /// Processes running other binaries are told so first, whatever else differs (another
    /// version may name its settings differently).
    #[test]
    fn a_different_version_is_named_before_other_settings() {
        let base = TrainConfig::new(Location::parse("shards").unwrap());
        let a = settings(&base);
        let mut other = base.clone();
        other.lr = 0.5;
        let mut b = settings(&other);
        b.run.version = "0.0.0-other";
        for err in exchange(&a, &b) {
            let msg = err.unwrap_err().to_string();
            assert!(msg.contains("different `version`"), "{msg}");
        }
    }

    #[test]
    fn checkpoints_ignore_epochs_unless_calibrated() {
        let mut c = TrainConfig::new(Location::parse("shards").unwrap());
        let a = settings(&c).for_checkpoint();
        c.epochs = 20;
        assert_eq!(a, settings(&c).for_checkpoint());
        c.seed = Some(3);
        assert_ne!(a, settings(&c).for_checkpoint());
        if let Privacy::Private(dp) = &mut c.privacy {
            dp.noise = NoiseSpec::TargetEpsilon(1.0);
        }
        let mut d = c.clone();
        d.epochs = 30;
        assert_ne!(settings(&c).for_checkpoint(), settings(&d).for_checkpoint());
    }
}
