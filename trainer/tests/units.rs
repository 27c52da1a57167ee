//! Privacy units in the trainer (user-level DP-SGD): households sampled by Poisson sampling at
//! q = B / (training households), each household's rows clipped as one, the same model for any
//! workers x threads, and epsilon stated per household.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{household_shards, ok, relative_difference, weights};
use shards::{Dataset, Location, S3Options};

/// The training households of the shards at `dir` for the trainer's default split (seed 0,
/// fraction 0.2), counted from the shards alone.
fn training_units(dir: &Path) -> usize {
    let table = Dataset::open(&Location::Local(dir.to_path_buf()), &S3Options::default())
        .unwrap()
        .load()
        .unwrap();
    (0..table.len())
        .filter(|&i| !table.is_test(i, 0, 0.2))
        .map(|i| table.units[i])
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn households_are_sampled_at_their_own_rate_and_any_layout_gives_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let shards = household_shards(dir.path(), 12_000, 3, Some(5));
    let units = training_units(&shards);
    let run = |name: &str, extra: &[&str]| {
        let save = dir.path().join(format!("{name}.safetensors"));
        let mut args = vec![
            "--data",
            shards.to_str().unwrap(),
            "--epochs",
            "2",
            "--batch-size",
            "256",
            "--seed",
            "3",
            "--no-progress",
            "--save",
            save.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = ok(&common::trainer(dir.path(), &args));
        let card: serde_json::Value =
            serde_json::from_slice(&std::fs::read(save.with_extension("json")).unwrap()).unwrap();
        (weights(&save), card, out)
    };
    let (one, card, out) = run("1x1", &[]);
    // q is B over the number of training households, not of rows.
    let q = card["privacy"]["mechanism"]["sampling_rate"]
        .as_f64()
        .unwrap();
    assert_eq!(q, 256.0 / units as f64, "{out}");
    assert!(
        out.contains("privacy unit: one household") && out.contains("at most 5"),
        "{out}"
    );
    let unit = card["privacy"]["unit"].as_str().unwrap();
    assert!(unit.starts_with("one household"), "{unit}");
    // The flag names the unit the shards were written with; another is refused.
    let wrong = common::trainer(
        dir.path(),
        &[
            "--data",
            shards.to_str().unwrap(),
            "--privacy-unit",
            "person",
        ],
    );
    let err = common::fails(&wrong);
    assert!(err.contains("--privacy-unit household"), "{err}");
    for (name, extra) in [
        ("1x2", &["--threads", "2"][..]),
        ("2x1", &["--workers", "2"][..]),
        ("flag", &["--privacy-unit", "household"][..]),
    ] {
        let (w, c, _) = run(name, extra);
        let d = relative_difference(&one, &w);
        assert!(d <= 1e-4, "{name}: weights differ by {d:e} relative");
        assert_eq!(
            c["privacy"]["epsilon"], card["privacy"]["epsilon"],
            "{name}"
        );
    }
}

/// Line-level shards cannot be trained at the household level (their rows of a household may
/// sit in different shards and sides of the split), and a bound on a unit's rows needs units.
#[test]
fn units_the_shards_do_not_have_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shards = common::generated_shards(dir.path(), 2_000, 1);
    let err = common::fails(&common::trainer(
        dir.path(),
        &[
            "--data",
            shards.to_str().unwrap(),
            "--privacy-unit",
            "household",
        ],
    ));
    assert!(
        err.contains("without a privacy unit") && err.contains("pipeline --privacy-unit household"),
        "{err}"
    );
    let err = common::fails(&common::trainer(
        dir.path(),
        &[
            "--data",
            shards.to_str().unwrap(),
            "--max-rows-per-unit",
            "3",
        ],
    ));
    assert!(err.contains("--max-rows-per-unit"), "{err}");
}
