//! `trainer tune` through the binary: one model released, its card holding nothing epsilon does
//! not cover, the whole search's epsilon recomputed from the card alone, and a seed replaying the
//! search.

mod common;

use accountant::Releases;
use accountant::rdp;
use common::{generated_shards, ok, trainer};
use serde_json::Value;
use trainer::coverage::unmarked_uncovered;

fn tune(dir: &std::path::Path, out: &str) -> (String, Value, Vec<u8>) {
    let stdout = ok(&trainer(
        dir,
        &[
            "tune",
            "--data",
            "shards",
            "--target-epsilon",
            "3",
            "--grid-lr",
            "0.005,0.02",
            "--grid-clip",
            "1",
            "--grid-epochs",
            "1,2",
            "--runs-distribution",
            "logarithmic",
            "--runs-mean",
            "3",
            "--seed",
            "4",
            "--out",
            out,
            "--no-progress",
        ],
    ));
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(out).join("model.json")).unwrap())
            .unwrap();
    let weights = std::fs::read(dir.join(out).join("model.safetensors")).unwrap();
    (stdout, card, weights)
}

/// Every object key in `v`, at any depth.
fn all_keys(v: &Value) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                out.extend(m.keys().cloned());
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out
}

#[test]
fn a_tune_releases_the_best_run_with_the_whole_searchs_epsilon() {
    let dir = tempfile::tempdir().unwrap();
    generated_shards(dir.path(), 4000, 3);
    let (stdout, card, weights) = tune(dir.path(), "t");
    assert!(stdout.contains("privacy spent: epsilon = "), "{stdout}");
    assert!(stdout.contains("for the whole search"), "{stdout}");
    assert!(
        stdout.contains("not released (only the best run is)"),
        "{stdout}"
    );
    assert!(unmarked_uncovered(&card).is_empty(), "{card:#}");
    let tuning = &card["tuning"];
    let epsilon = card["privacy"]["epsilon"].as_f64().unwrap();
    assert_eq!(tuning["epsilon"].as_f64().unwrap(), epsilon);
    assert!(epsilon <= 3.0 && epsilon > 2.9, "{epsilon}");
    assert_eq!(card["privacy"]["accountant"], "rdp");
    // Nothing about how many runs there were, nor the other runs: no such field anywhere.
    let keys = all_keys(&card);
    for k in ["k", "runs_made", "score", "scores", "test_accuracy"] {
        assert!(!keys.contains(k), "{k} in {card:#}");
    }
    // The whole search's epsilon from the card alone: every grid point's curve (its steps, the
    // feature releases and the held-out release the released run's mechanism lists), their
    // maximum, repeated and selected over the stated distribution of runs.
    let m = &card["privacy"]["mechanism"];
    let q = m["sampling_rate"].as_f64().unwrap();
    let mut releases = Releases::default();
    if let Some(g) = m["preprocessing_noise_multiplier"].as_f64() {
        releases.gaussians.push(g);
    }
    releases
        .gaussians
        .push(m["test_release_noise_multiplier"].as_f64().unwrap());
    if let Some(e) = m["quantile_epsilon"].as_f64() {
        releases.exponential = vec![e; m["quantiles"].as_u64().unwrap() as usize];
    }
    let orders = rdp::default_orders();
    let candidates = tuning["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 4);
    let curves: Vec<Vec<f64>> = candidates
        .iter()
        .map(|c| {
            rdp::composed_rdp_as_dp_accounting(
                q,
                c["noise_multiplier"].as_f64().unwrap(),
                c["steps"].as_u64().unwrap(),
                &releases,
                &orders,
            )
        })
        .collect();
    let runs = rdp::Runs::TruncatedNegativeBinomial {
        mean: 3.0,
        shape: 0.0,
    };
    assert_eq!(tuning["runs"], "logarithmic of mean 3");
    let want = trainer::tune::tune_epsilon(&orders, &curves, runs, 1e-5).unwrap();
    assert_eq!(epsilon, want);
    // The released run is one of the grid's points, with its planned noise.
    let lr = card["options"]["lr"].as_f64().unwrap();
    let sigma = m["noise_multiplier"].as_f64().unwrap();
    assert!(
        candidates
            .iter()
            .any(|c| c["lr"].as_f64() == Some(lr) && c["noise_multiplier"].as_f64() == Some(sigma)),
        "{card:#}"
    );
    // A seed replays the whole search: the same model.
    let (_, again, weights_again) = tune(dir.path(), "t2");
    assert_eq!(weights, weights_again);
    assert_eq!(again["tuning"], card["tuning"]);
}
