//! The trained model on disk: safetensors under PyTorch `nn.Sequential` names, and next to it
//! the model card, a JSON file with the options, the privacy guarantee (what it protects, at
//! which epsilon and delta, by which accountant) and the held-out accuracy's noisy release.
//! The card holds only what epsilon covers ([`crate::coverage::CARD`]): no training-set
//! statistic, no realized batch size, no timing, no exact held-out figure, except under
//! `--test-accuracy-release exact-not-covered` (or without DP) the exact held-out figures in
//! `held_out`, marked as not covered.
//!
//! **A release is complete when its card is there.** Both files are written and synced under
//! staging names (`model.safetensors.tmp`, `model.json.tmp`); then the previous card is
//! removed, the weights are renamed into place, and the card is renamed last. A card therefore
//! only ever sits beside the weights it was written with: a crash leaves the previous release
//! (both files), the new one, or weights without a card, which a reader must not take for a
//! release (no card, no privacy statement). [`is_complete`] is that rule.

use std::path::{Path, PathBuf};

use accountant::PrivacySpent;
use serde::Serialize;
use tch::Tensor;

use crate::config::{Privacy, TestRelease, TrainConfig};
use crate::features::{ColumnSpec, FeatureSpec, StandardizedColumn, Standardizer};
use crate::mechanism::held_out::HeldOutRelease;
use crate::mechanism::privacy::Accounting;
use crate::mechanism::quantiles::ReleasedBounds;
use crate::metrics::EpochMetrics;
use crate::mlp::Mlp;
use crate::publish::{self, create_parent, staging};
use crate::{Error, Result};

/// Where the exact statistics are, and that they are not for publishing.
pub const EXACT_STATISTICS: &str = "Exact statistics of the data are not covered by epsilon and \
    are not for publishing: the operator's metrics file (--metrics-out) holds the exact \
    held-out figures (test loss and accuracy, the attack on held-out rows) and, under \
    \"non_private\", training-set figures (train loss and accuracy, the attack on training \
    rows, realized batch sizes, timings); the trainer's lines on stdout and stderr show some \
    of them; and the pipeline's _manifest.json in the shards folder holds exact row and label \
    counts and feature means.";

/// The JSON written next to the model.
#[derive(Debug, Serialize)]
pub struct ModelCard<'a> {
    /// How to rebuild the module in PyTorch.
    pub architecture: String,
    /// The feature columns, in input order.
    pub feature_names: &'a [String],
    /// The label column.
    pub label_name: &'a str,
    /// The run's options.
    pub options: &'a TrainConfig,
    /// Whether the model was trained with DP-SGD.
    pub private: bool,
    /// The guarantee (absent with `--no-dp`).
    pub privacy: Option<PrivacyStatement>,
    /// Steps taken.
    pub steps: u64,
    /// The held-out accuracy's Gaussian release, covered by epsilon (absent without one).
    pub test_accuracy_release: Option<TestAccuracyRelease>,
    /// The last epoch's exact figures on held-out rows, NOT covered by epsilon: only with
    /// `--test-accuracy-release exact-not-covered`, or without DP (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_out: Option<HeldOut>,
    /// How the data's columns became `feature_names`: what to apply to a record before the
    /// model sees it.
    pub feature_transform: FeatureTransform<'a>,
    /// [`EXACT_STATISTICS`].
    pub exact_statistics: &'static str,
    /// How `trainer tune` chose this run and what the whole search spent (absent for a run of
    /// its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning: Option<crate::tune::TuningStatement>,
}

/// What epsilon protects, and how it was computed.
#[derive(Debug, Serialize)]
pub struct PrivacyStatement {
    /// The privacy unit.
    pub unit: String,
    /// Epsilon spent by the whole run, at `delta`.
    pub epsilon: f64,
    /// The delta.
    pub delta: f64,
    /// The accountant that computed epsilon (`pld` or `rdp`).
    pub accountant: String,
    /// The best RDP order (RDP only).
    pub rdp_order: Option<f64>,
    /// The mechanism: rate, noise, sensitivity.
    pub mechanism: Accounting,
    /// Steps composed.
    pub steps: u64,
    /// `os` (noise, sampling and initialisation keyed by the operating system, keys written
    /// nowhere) or `seed` (reproducible from `options.seed`).
    pub randomness: &'static str,
    /// False for a seeded run: anyone who knows the seed can replay its noise and batches and
    /// tell whether a record was trained on, whatever epsilon says.
    pub private_against_seed_holders: bool,
    /// What the guarantee covers, in words.
    pub statement: String,
}

/// The feature spec as the card states it, with the noisy statistics the standardized columns
/// use and the DP quantile bounds of the columns without public ones (never exact ones).
#[derive(Debug, Serialize)]
pub struct FeatureTransform<'a> {
    /// The spec: public bounds, public levels, standardized columns' public ranges, and whether
    /// the other columns get DP quantile bounds (`auto_bounds`).
    pub spec: &'a FeatureSpec,
    /// How each column the spec names or the run bounded became the model's inputs, in words.
    pub columns: Vec<ColumnTransform>,
    /// Each standardized column's noisy mean and standard deviation.
    pub standardized: Vec<StandardizedColumn>,
    /// The Gaussian release they come from (noisy sums, noise multiplier, sensitivity).
    pub standardization_release: Option<Standardizer>,
    /// The DP quantile bounds of the columns the spec gives none (exponential mechanisms).
    pub bounds_release: Vec<ReleasedBounds>,
    /// What the transform costs, in words.
    pub statement: String,
}

/// One column's transform, as the card states it.
#[derive(Debug, Serialize)]
pub struct ColumnTransform {
    /// The column.
    pub name: String,
    /// What was done to it, and what that cost.
    pub how: String,
}

impl<'a> FeatureTransform<'a> {
    /// The transform of `spec`, with the DP quantile `bounds` of the columns it does not name
    /// and standardized by `standardizer` when it has such columns.
    pub fn new(
        spec: &'a FeatureSpec,
        standardizer: Option<&Standardizer>,
        bounds: &[ReleasedBounds],
        private: bool,
    ) -> Self {
        let covered = if private {
            ", composed with the DP-SGD steps in the accountant: epsilon covers it"
        } else {
            " (a --no-dp run: no guarantee)"
        };
        let mut statement = String::from(
            "A column in spec.columns as bounds is clipped to [lo, hi] and scaled to [0, 1]; \
             as categories it becomes one input name=level per level (1 for its level), plus \
             name=other with unknown \"other\" (with \"drop\" a record with another value \
             was not used). Bounds and levels are public (given, not computed from the data): \
             they cost no privacy.",
        );
        if let (Some(q), false) = (spec.auto_bounds, bounds.is_empty()) {
            statement.push_str(&format!(
                " Every other column got bounds from two DP quantiles of the training split \
                 (the {} and {} quantiles, each released by the exponential mechanism over a \
                 public grid of candidates, epsilon {} each{covered}): a column whose two \
                 bounds lie within [0, 1] is used as it is, any other is clipped to them and \
                 standardized (bounds_release).",
                q.low, q.high, q.epsilon
            ));
        } else {
            statement.push_str(" Other columns are used as they are.");
        }
        if let Some(st) = standardizer {
            statement.push_str(&format!(
                " A standardized column is clipped to [lo, hi], then (x - noisy_mean) / \
                 noisy_std; the means and standard deviations come from one Gaussian release \
                 on the training split (noise multiplier {}, L2 sensitivity {:.4}){covered}.",
                st.noise_multiplier, st.sensitivity,
            ));
        }
        let mut columns: Vec<ColumnTransform> = spec
            .columns
            .iter()
            .map(|(name, c)| ColumnTransform {
                name: name.clone(),
                how: match c {
                    ColumnSpec::Bounds { lo, hi } => format!(
                        "public bounds [{lo}, {hi}] (the spec): clipped, scaled to [0, 1]; no \
                         privacy cost"
                    ),
                    ColumnSpec::Categories { levels, unknown } => format!(
                        "public levels (the spec, {} of them, unknown: {unknown:?}): one-hot; \
                         no privacy cost",
                        levels.len()
                    ),
                    ColumnSpec::Standardize { lo, hi } => format!(
                        "public range [{lo}, {hi}] (the spec): clipped, standardized by the \
                         noisy mean and standard deviation"
                    ),
                },
            })
            .collect();
        columns.extend(bounds.iter().map(|b| ColumnTransform {
            name: b.name.clone(),
            how: if b.as_is() {
                format!(
                    "DP quantile bounds [{}, {}] lie within [0, 1]: used as it is",
                    b.lo, b.hi
                )
            } else {
                format!(
                    "DP quantile bounds [{}, {}]: clipped, standardized by the noisy mean and \
                     standard deviation",
                    b.lo, b.hi
                )
            },
        }));
        FeatureTransform {
            spec,
            columns,
            standardized: standardizer.map(|s| s.card(spec)).unwrap_or_default(),
            standardization_release: standardizer.cloned(),
            bounds_release: bounds.to_vec(),
            statement,
        }
    }
}

/// The held-out accuracy as the card releases it: noisy counts, covered by epsilon
/// ([`crate::mechanism::held_out`]).
#[derive(Debug, Serialize)]
pub struct TestAccuracyRelease {
    /// Always true.
    pub covered_by_epsilon: bool,
    /// The release.
    #[serde(flatten)]
    pub release: HeldOutRelease,
    /// What it is, in words.
    pub statement: String,
}

/// Exact figures computed on held-out rows: not covered by epsilon (they are exact statistics of
/// the test split), released only when asked (`--test-accuracy-release exact-not-covered`) or
/// by a run without DP.
#[derive(Debug, Serialize)]
pub struct HeldOut {
    /// Always false.
    pub covered_by_epsilon: bool,
    /// Why they are here, in words.
    pub statement: String,
    /// Which rows.
    pub rows: String,
    /// Mean loss on the test split.
    pub test_loss: Option<f64>,
    /// Accuracy on the test split.
    pub test_accuracy: Option<f64>,
    /// The share of the test split's more common label (always guessing it).
    pub test_majority: Option<f64>,
    /// The feature the attack recovers.
    pub attack_feature: Option<String>,
    /// The model-inversion attack's accuracy on held-out rows.
    pub attack_accuracy: Option<f64>,
    /// Always guessing the majority value, on the same rows.
    pub attack_majority_baseline: Option<f64>,
    /// The logistic-regression imputer fitted on held-out rows, on the same rows.
    pub attack_imputer_baseline: Option<f64>,
}

impl<'a> ModelCard<'a> {
    /// The card of a run with `config`, after `steps` steps, with the final `spent` budget, the
    /// held-out release `test_release` and the last epoch's metrics (whose exact held-out
    /// figures only `--test-accuracy-release exact-not-covered`, or a run without DP, keeps).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &'a TrainConfig,
        feature_names: &'a [String],
        label_name: &'a str,
        accounting: Option<Accounting>,
        spent: Option<PrivacySpent>,
        steps: u64,
        last: Option<&EpochMetrics>,
        standardizer: Option<&Standardizer>,
        bounds: &[ReleasedBounds],
        test_release: Option<&HeldOutRelease>,
    ) -> Self {
        let privacy = accounting.zip(spent).map(|(mechanism, spent)| {
            let seeded = config.seed.is_some();
            let unit = privacy_unit(config);
            PrivacyStatement {
                statement: format!(
                    "({:.4}, {:e})-differential privacy by the {} accountant for {unit}: it \
                     covers the released weights and every figure of this card{}{}. {}{}",
                    spent.epsilon,
                    spent.delta,
                    spent.accountant,
                    match config.test_release {
                        TestRelease::ExactNotCovered => {
                            " except the held_out figures, exact statistics of the test split \
                             released by --test-accuracy-release exact-not-covered"
                        }
                        _ => "",
                    },
                    composed(&mechanism),
                    match config.population {
                        None => "The number of training records N is treated as public (the \
                                 sampling rate q = B / N, the steps and epsilon itself reveal it)."
                            .to_string(),
                        Some(p) => format!(
                            "The number of training records is not released: the sampling rate \
                             q = B / {p}, the steps and the scaling come from the public \
                             population {p} (--population), not from the training data."
                        ),
                    },
                    if seeded {
                        " Seeded run: NOT private against anyone who knows the seed."
                    } else {
                        ""
                    }
                ),
                unit,
                epsilon: spent.epsilon,
                delta: spent.delta,
                accountant: spent.accountant.to_string(),
                rdp_order: spent.rdp_order,
                mechanism,
                steps,
                randomness: if seeded { "seed" } else { "os" },
                private_against_seed_holders: !seeded,
            }
        });
        let test_accuracy_release = test_release.map(|r| TestAccuracyRelease {
            covered_by_epsilon: true,
            release: r.clone(),
            statement: format!(
                "The accuracy on the test split, released with its own noise: the numbers of \
                 right predictions and of test records, each plus Gaussian noise of std {:.4} \
                 (noise multiplier {} times their L2 sensitivity {:.4}: adding or removing one \
                 privacy unit, with at most {} record(s) in the test split, moves each by at \
                 most that many), composed with the DP-SGD steps in the accountant, so epsilon \
                 covers it. accuracy is noisy_correct / noisy_count clamped to [0, 1].",
                r.noise_std, r.noise_multiplier, r.l2_sensitivity, r.rows_per_unit
            ),
        });
        let exact = match (&config.privacy, config.test_release) {
            (_, TestRelease::Withheld) => None,
            (Privacy::NonPrivate, _) => {
                Some("Exact figures of a run without differential privacy: nothing covers them.")
            }
            (_, TestRelease::ExactNotCovered) => Some(
                "NOT covered by epsilon: exact statistics of the test split, in the card because \
                 the run was asked for them (--test-accuracy-release exact-not-covered). \
                 Publishing them releases more than epsilon says.",
            ),
            (_, TestRelease::Noisy { .. }) => None,
        };
        let held_out = last.zip(exact).map(|(m, statement)| HeldOut {
            covered_by_epsilon: false,
            statement: statement.into(),
            rows: format!(
                "the test split (records, or units, with splitmix64(u ^ splitmix64({})) below \
                 {} * 2^64, u the record's key or its unit's hash), never trained on; the \
                 attack on up to {} of them",
                config.split_seed, config.test_fraction, config.attack_rows
            ),
            test_loss: m.test_loss,
            test_accuracy: m.test_accuracy,
            test_majority: m.test_majority,
            attack_feature: m.attack_feature.clone(),
            attack_accuracy: m.attack_accuracy,
            attack_majority_baseline: m.attack_baseline,
            attack_imputer_baseline: m.attack_imputer,
        });
        let private = privacy.is_some();
        ModelCard {
            architecture: architecture(feature_names.len(), &config.hidden),
            feature_names,
            label_name,
            options: config,
            private,
            privacy,
            steps,
            test_accuracy_release,
            held_out,
            feature_transform: FeatureTransform::new(
                &config.features,
                standardizer,
                bounds,
                private,
            ),
            exact_statistics: EXACT_STATISTICS,
            tuning: None,
        }
    }
}

/// ", and composes the DP-SGD steps with ..." for every release the accountant composed with
/// the steps (empty with none).
fn composed(m: &Accounting) -> String {
    let mut parts = Vec::new();
    if let Some(e) = m.quantile_epsilon {
        parts.push(format!(
            "the DP quantile bounds ({} exponential mechanisms of epsilon {e} each, \
             feature_transform)",
            m.quantiles
        ));
    }
    if m.preprocessing_noise_multiplier.is_some() {
        parts.push(
            "the Gaussian release of the standardized columns' statistics (feature_transform)"
                .to_string(),
        );
    }
    if m.test_release_noise_multiplier.is_some() {
        parts.push(format!(
            "the Gaussian release of the held-out accuracy (test_accuracy_release){}",
            match m.test_releases {
                0 | 1 => String::new(),
                n => format!(
                    ", counted {n} times (this run continues runs that released it before)"
                ),
            }
        ));
    }
    match parts.len() {
        0 => String::new(),
        1 => format!(", and composes the DP-SGD steps with {}", parts[0]),
        n => format!(
            ", and composes the DP-SGD steps with {} and {}",
            parts[..n - 1].join(", "),
            parts[n - 1]
        ),
    }
}

/// The privacy unit of a run, in words: one line of the input file, or one unit (all its
/// rows), with the neighbouring relation and the split.
pub fn privacy_unit(config: &TrainConfig) -> String {
    let split = format!(
        "is in the training split when splitmix64(u ^ splitmix64({})) is at least {} * 2^64",
        config.split_seed, config.test_fraction
    );
    match &config.privacy_unit {
        None => format!(
            "one line of the input file (add/remove neighbours: the file with or without it); a \
             record, keyed by its content and its rank among equal records (u, its key), {split}"
        ),
        Some(column) => format!(
            "one {column} (every row sharing a value of the column '{column}'{}; add/remove \
             neighbours: the file with or without all of its rows); a {column}, by the hash of \
             its value (u), {split}",
            match config.max_rows_per_unit {
                Some(k) => format!(", at most {k} of them: the {k} with the smallest keys"),
                None => String::new(),
            }
        ),
    }
}

/// The options file's path for model path `model`: the same name with `.json`.
pub fn card_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

/// Whether the model at `path` is a complete release: its card is there (see the module
/// documentation for why that suffices).
pub fn is_complete(path: &Path) -> bool {
    path.is_file() && card_path(path).is_file()
}

/// Checks that `path` can take a model and its card (before training spends its budget).
pub fn check_writable(path: &Path) -> Result<()> {
    if card_path(path) == path {
        return Err(Error::Config(format!(
            "--save {}: the card goes to the same name with .json; give the model another \
             extension (model.safetensors)",
            path.display()
        )));
    }
    publish::check_writable_file("--save", path)?;
    publish::check_writable_file("--save", &card_path(path))
}

/// Publishes the model at `path` and its card at [`card_path`] together (module documentation).
pub fn save(path: &Path, mlp: &Mlp, card: &ModelCard<'_>) -> Result<()> {
    create_parent(path)?;
    let card_file = card_path(path);
    let (model_tmp, card_tmp) = (staging(path), staging(&card_file));
    Tensor::write_safetensors(&mlp.state_dict(), &model_tmp)?;
    publish::sync_file(&model_tmp)?;
    let json = serde_json::to_string_pretty(card).expect("model card serializes");
    publish::write_synced(&card_tmp, json.as_bytes())?;
    match std::fs::remove_file(&card_file) {
        Ok(()) => publish::sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(card_file, e)),
    }
    publish::rename(&model_tmp, path)?;
    publish::rename(&card_tmp, &card_file)?;
    publish::sync_parent(path);
    Ok(())
}

/// `nn.Sequential(nn.Linear(9, 50), nn.ReLU(), nn.Linear(50, 1))` for an MLP of these sizes.
pub fn architecture(inputs: usize, hidden: &[usize]) -> String {
    let mut sizes = vec![inputs];
    sizes.extend_from_slice(hidden);
    sizes.push(1);
    let layers: Vec<String> = sizes
        .windows(2)
        .map(|w| format!("nn.Linear({}, {})", w[0], w[1]))
        .collect();
    format!("nn.Sequential({})", layers.join(", nn.ReLU(), "))
}

#[cfg(test)]
mod tests {
    use accountant::AccountantKind;
    use serde_json::Value;

    use super::*;
    use crate::config::TestRelease;
    use crate::coverage::{CARD, MARKED_NOT_COVERED, unmarked_uncovered};
    use crate::mechanism::held_out::HeldOutMechanism;
    use crate::metrics::NonPrivate;

    /// A card with every part there is (DP, the standardization, the held-out release, the
    /// last epoch's exact figures), for `config`.
    fn full_card(config: &TrainConfig, names: &[String]) -> Value {
        let accounting = Accounting {
            accountant: AccountantKind::Pld,
            sampling_rate: 0.01,
            noise_multiplier: 1.1,
            sensitivity: 1.0,
            effective_noise_multiplier: 1.1,
            delta: 1e-5,
            preprocessing_noise_multiplier: Some(10.0),
            test_release_noise_multiplier: config.test_release_noise(),
            test_releases: 1,
            quantile_epsilon: Some(0.05),
            quantiles: 2,
        };
        let spent = PrivacySpent {
            epsilon: 1.5,
            delta: 1e-5,
            accountant: AccountantKind::Pld,
            rdp_order: None,
        };
        let last = EpochMetrics {
            epoch: 2,
            steps: 200,
            test_loss: Some(0.5),
            test_accuracy: Some(0.7),
            test_majority: None,
            epsilon: Some(1.5),
            delta: Some(1e-5),
            accountant: Some("pld".into()),
            rdp_order: None,
            noise_multiplier: Some(1.1),
            attack_feature: None,
            attack_accuracy: Some(0.6),
            attack_baseline: Some(0.8),
            attack_imputer: Some(0.81),
            workers: 1,
            non_private: Some(NonPrivate {
                private: false,
                examples: 100,
                gradients_zeroed: 1,
                non_finite_logits: 1,
                train_loss: 0.4,
                train_accuracy: 0.75,
                attack_train_accuracy: Some(0.65),
                attack_leakage: Some(0.05),
                seconds: 1.0,
                cpu_seconds: None,
                comm_seconds: None,
                eval_seconds: 0.1,
                examples_per_second: 100.0,
                phases: None,
            }),
        };
        let standardizer = Standardizer {
            noise_multiplier: 10.0,
            sensitivity: 3f64.sqrt(),
            noisy_sums: vec![100.0, 5.0, 4.0],
            columns: Vec::new(),
        };
        let bounds = [ReleasedBounds {
            name: "income".into(),
            lo: 0.0,
            hi: 320_000.0,
        }];
        let release = config.test_release_noise().map(|noise_multiplier| {
            HeldOutMechanism {
                noise_multiplier,
                rows_per_unit: 1,
            }
            .release(70.0, 100.0, 40.0, 200, crate::NoiseRng::Seeded(1))
            .unwrap()
        });
        let card = ModelCard::new(
            config,
            names,
            "employed",
            matches!(config.privacy, Privacy::Private(_)).then_some(accounting),
            Some(spent),
            200,
            Some(&last),
            Some(&standardizer),
            &bounds,
            release.as_ref(),
        );
        serde_json::to_value(&card).unwrap()
    }

    /// Every field a card can have is classified in `crate::coverage` (a field added to the
    /// card without saying whether epsilon covers it fails here), and the card of each
    /// `--test-accuracy-release` holds nothing uncovered unmarked: the default (noisy) holds
    /// the release and no exact held-out figure; `exact-not-covered` the exact figures marked,
    /// and no release; `withheld` neither; a run without DP its exact figures, marked.
    #[test]
    fn every_card_field_is_classified_and_nothing_uncovered_goes_unmarked() {
        let names = vec!["sex".to_string(), "age".to_string()];
        let mut config = TrainConfig::new(shards::Location::parse("shards").unwrap());
        config.features.add_standardize("age=0:120").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (release, private, release_there, exact_there) in [
            (None, true, true, false),
            (Some(TestRelease::ExactNotCovered), true, false, true),
            (Some(TestRelease::Withheld), true, false, false),
            (None, false, false, true),
        ] {
            let mut c = config.clone();
            if let Some(r) = release {
                c.test_release = r;
            }
            if !private {
                c.privacy = Privacy::NonPrivate;
            }
            let card = full_card(&c, &names);
            let what = format!("{release:?} private {private}");
            assert_eq!(unmarked_uncovered(&card), Vec::<String>::new(), "{what}");
            assert_eq!(
                card["test_accuracy_release"].is_object(),
                release_there,
                "{what}"
            );
            assert_eq!(card["held_out"].is_object(), exact_there, "{what}");
            for key in card.as_object().unwrap().keys() {
                assert!(
                    CARD.iter().any(|(k, _)| k == key)
                        || MARKED_NOT_COVERED.contains(&key.as_str()),
                    "{key} is neither covered nor marked in crate::coverage"
                );
                seen.insert(key.clone());
            }
        }
        // A tune's card: a run's, with the search's account (ModelCard::tuning).
        let mut tuned = full_card(&config, &names);
        tuned["tuning"] = serde_json::to_value(crate::tune::TuningStatement {
            method: "Papernot and Steinke 2022".into(),
            candidates: Vec::new(),
            runs: "logarithmic of mean 4".into(),
            run_epsilon: 2.0,
            epsilon: 3.0,
            statement: String::new(),
        })
        .unwrap();
        assert_eq!(unmarked_uncovered(&tuned), Vec::<String>::new());
        seen.extend(tuned.as_object().unwrap().keys().cloned());
        let listed: std::collections::BTreeSet<String> = CARD
            .iter()
            .map(|(k, _)| k.to_string())
            .chain(MARKED_NOT_COVERED.iter().map(|k| k.to_string()))
            .collect();
        assert_eq!(seen, listed, "the lists name fields the card does not have");
        let card = full_card(&config, &names);
        assert_eq!(card["test_accuracy_release"]["covered_by_epsilon"], true);
        assert!(
            card["privacy"]["statement"]
                .as_str()
                .unwrap()
                .contains("standardized columns' statistics (feature_transform) and the Gaussian release of the held-out accuracy"),
            "{}",
            card["privacy"]["statement"]
        );
    }

    #[test]
    fn architecture_names_the_pytorch_module() {
        assert_eq!(
            architecture(9, &[50]),
            "nn.Sequential(nn.Linear(9, 50), nn.ReLU(), nn.Linear(50, 1))"
        );
        assert_eq!(architecture(3, &[]), "nn.Sequential(nn.Linear(3, 1))");
    }
}
