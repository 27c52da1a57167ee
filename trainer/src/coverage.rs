//! What epsilon covers, field by field: the model card's fields, and the per-epoch metrics'
//! fields that a checkpoint keeps and `trainer report --public` may show, each with why
//! (docs/design.md, "What is released, and what epsilon covers"). The releases are built from
//! these lists ([`public_card`], [`public_metrics`]) and the tests hold them to them.

use serde_json::Value;

use crate::metrics::EpochMetrics;

/// The model card's top-level fields epsilon covers, and why: what is public (chosen before the
/// data is seen, or a function of the options alone), or a release composed in the accountant.
pub const CARD: &[(&str, &str)] = &[
    (
        "architecture",
        "public: the model's shape, from the options",
    ),
    (
        "feature_names",
        "public: the columns, after the public feature spec",
    ),
    ("label_name", "public: a column's name"),
    ("options", "public: the run's settings"),
    ("private", "public: whether the run is private"),
    (
        "privacy",
        "the guarantee and its mechanism (q, sigma, steps, delta): public parameters; q reveals \
         the training count N, which is treated as public unless --population gives it",
    ),
    ("steps", "public: steps per epoch times epochs"),
    (
        "test_accuracy_release",
        "the held-out counts' Gaussian release (right predictions, records, records labelled \
         1: the accuracy and its yardstick, the majority share), composed with the steps in the \
         accountant",
    ),
    (
        "feature_transform",
        "public bounds and levels; the DP quantile bounds (exponential mechanisms) and the \
         standardized columns' Gaussian release, composed with the steps in the accountant",
    ),
    (
        "exact_statistics",
        "a sentence saying where exact figures are",
    ),
    (
        "tuning",
        "trainer tune: the grid and each point's planned noise, the distribution of the number \
         of runs (public, fixed before the data is seen) and the theorem's epsilon; not how many \
         runs there were nor the others' scores (Papernot and Steinke 2022 covers the best \
         run's output only)",
    ),
];

/// Card fields that epsilon does not cover, allowed only as an object that says so
/// (`"covered_by_epsilon": false`): the exact held-out figures of `--test-accuracy-release
/// exact-not-covered`, or of a run without DP (which nothing covers).
pub const MARKED_NOT_COVERED: &[&str] = &["held_out"];

/// The per-epoch metrics' fields epsilon covers, and why. The others (held-out loss, accuracy
/// and attack; everything under `non_private`) are exact statistics of the data: the
/// operator's.
pub const METRICS: &[(&str, &str)] = &[
    ("epoch", "public: the epoch's number"),
    ("steps", "public: the steps taken so far"),
    (
        "epsilon",
        "the accountant's bound, a function of the public mechanism",
    ),
    ("delta", "public"),
    ("accountant", "public"),
    (
        "rdp_order",
        "the accountant's, a function of the public mechanism",
    ),
    (
        "noise_multiplier",
        "public, or calibrated from public parameters",
    ),
    ("workers", "public: the run's layout"),
];

fn covered(list: &[(&str, &str)], key: &str) -> bool {
    list.iter().any(|(k, _)| *k == key)
}

/// The card's top-level fields that are neither covered ([`CARD`]) nor a marked uncovered
/// object ([`MARKED_NOT_COVERED`] with `covered_by_epsilon: false`): empty for a card that
/// holds nothing epsilon does not cover unmarked.
pub fn unmarked_uncovered(card: &Value) -> Vec<String> {
    let Some(map) = card.as_object() else {
        return vec!["(not an object)".into()];
    };
    map.iter()
        .filter(|(k, v)| {
            !covered(CARD, k)
                && !(MARKED_NOT_COVERED.contains(&k.as_str())
                    && (v.is_null() || v["covered_by_epsilon"] == Value::Bool(false)))
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The card with only the fields epsilon covers ([`CARD`]).
pub fn public_card(card: &Value) -> Value {
    match card {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| covered(CARD, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// An epoch's metrics with only the fields epsilon covers ([`METRICS`]); the others absent.
pub fn public_metrics(m: &EpochMetrics) -> EpochMetrics {
    let Value::Object(map) = serde_json::to_value(m).expect("metrics serialize") else {
        unreachable!("a struct serializes to an object")
    };
    let kept: serde_json::Map<String, Value> = map
        .into_iter()
        .filter(|(k, _)| covered(METRICS, k))
        .collect();
    serde_json::from_value(Value::Object(kept)).expect("the covered fields make metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_views_keep_the_covered_fields_only() {
        let card = serde_json::json!({
            "architecture": "a", "privacy": {"epsilon": 1.0}, "held_out": {"test_accuracy": 0.7},
            "new_field": 3
        });
        assert_eq!(
            public_card(&card),
            serde_json::json!({"architecture": "a", "privacy": {"epsilon": 1.0}})
        );
        let mut found = unmarked_uncovered(&card);
        found.sort();
        assert_eq!(found, ["held_out", "new_field"]);
        let marked = serde_json::json!({"steps": 3, "held_out": {"covered_by_epsilon": false}});
        assert!(unmarked_uncovered(&marked).is_empty());
    }
}
