//! `trainer audit` end to end: the report's lines, determinism under a seed, and the saved
//! model's card marking it as an audit model.

mod common;

use common::{generated_shards, ok, trainer};

/// The last line of an audit's stdout, parsed.
fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON")
}

#[test]
fn audit_prints_a_human_line_and_a_json_line_and_repeats_under_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 3_000, 4);
    let args = [
        "audit",
        "--data",
        shards.to_str().unwrap(),
        "--batch-size",
        "1000000",
        "--epochs",
        "4",
        "--hidden",
        "100",
        "--noise-multiplier",
        "2",
        "--canaries",
        "400",
        "--attack-feature",
        "none",
        "--seed",
        "5",
        "--no-progress",
    ];
    let out = ok(&trainer(dir.path(), &args));
    let human = out.lines().rev().nth(1).unwrap();
    assert!(human.starts_with("audit: epsilon >= "), "{out}");
    let r = report(&out);
    for key in [
        "audited_epsilon",
        "accounted_epsilon",
        "delta",
        "alpha",
        "canary_kind",
        "canaries",
        "guesses",
        "correct",
        "membership_inference",
    ] {
        assert!(!r[key].is_null(), "{key} missing: {r}");
    }
    assert_eq!(r["canaries"], 400);
    assert_eq!(r["canary_kind"], "gradient");
    // 1,101 parameters for 400 canaries: a parameter each.
    assert_eq!(r["canary_directions"], "dirac");
    assert_eq!(
        (r["alpha"].as_f64(), r["delta"].as_f64()),
        (Some(0.05), Some(1e-5))
    );
    let (audited, accounted) = (
        r["audited_epsilon"].as_f64().unwrap(),
        r["accounted_epsilon"].as_f64().unwrap(),
    );
    assert!(audited <= accounted, "{r}");
    let mia = &r["membership_inference"];
    assert!(mia["members"].as_u64().unwrap() > 2000, "{mia}");
    assert_eq!(mia["tpr_at_fpr"].as_array().unwrap().len(), 2);
    // The same seed, the same audit; nothing written unless asked.
    assert_eq!(report(&ok(&trainer(dir.path(), &args))), r);
    assert!(!dir.path().join("run").exists(), "an audit wrote run/");
}

#[test]
fn a_saved_audit_model_is_marked_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 6);
    let save = dir.path().join("audit.safetensors");
    let out = ok(&trainer(
        dir.path(),
        &[
            "audit",
            "--data",
            shards.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--canary-kind",
            "input",
            "--canaries",
            "100",
            "--attack-feature",
            "none",
            "--save",
            save.to_str().unwrap(),
            "--no-progress",
        ],
    ));
    assert_eq!(report(&out)["canary_kind"], "input");
    assert!(save.exists());
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("audit.json")).unwrap())
            .unwrap();
    assert_eq!(card["audit_model"], true, "{card}");
    assert!(card["warning"].as_str().unwrap().contains("not a release"));
    assert_eq!(card["audit"]["canaries"], 100);
}
