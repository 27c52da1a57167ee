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
    for words in [
        "audit: 400 gradient canaries (white-box) on 400 quiet coordinates",
        "audit (Steinke et al. 2023, any (epsilon, delta)-DP mechanism): epsilon >= ",
        "audit (f-DP, Mahloujifar et al. 2024, Gaussian trade-off curve, exact at full batch)",
        "audit: the noise on the quiet coordinates is ",
    ] {
        assert!(out.contains(words), "{words}: {out}");
    }
    let r = report(&out);
    for key in [
        "audited_epsilon",
        "fdp_epsilon",
        "fdp_mu",
        "accounted_epsilon",
        "caught",
        "delta",
        "alpha",
        "canary_kind",
        "canaries",
        "guesses",
        "correct",
        "audited",
        "assumptions",
        "quiet_noise_ratio",
        "membership_inference",
    ] {
        assert!(!r[key].is_null(), "{key} missing: {r}");
    }
    for bound in ["steinke", "fdp"] {
        for key in [
            "epsilon",
            "guesses",
            "correct",
            "abstentions",
            "max_epsilon",
        ] {
            assert!(r[bound][key].is_number(), "{bound}.{key} missing: {r}");
        }
    }
    assert_eq!(r["canaries"], 400);
    assert_eq!(r["canary_kind"], "gradient");
    assert_eq!(r["score"], "llr");
    // Full batch: the step is large, so 400 canaries get a quiet coordinate each.
    assert_eq!(
        r["layout"],
        serde_json::json!({"quiet_coordinates": 400, "code_width": 1, "score_window": 1})
    );
    assert_eq!(r["fdp_exact"], true);
    assert_eq!(r["caught"], false, "{r}");
    // The code adds the noise it tells the accountant about.
    // (Estimated from 1,200 changes between steps: a standard error of about 4%.)
    let ratio = r["quiet_noise_ratio"].as_f64().unwrap();
    assert!((ratio - 1.0).abs() < 0.2, "{ratio} {out}");
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

/// The audit through the binary, fast enough for every build: on 2,000 generated rows, the
/// correct step is not caught, and the same run with its noise removed
/// (`--noise-multiplier 0`: clipping kept) audits far above the correct run's accounted
/// epsilon, at full batch (10 steps, sigma 4: accounted 3.3, audited about 1) and at batch 128
/// (q about 0.05, 4 epochs, sigma 1.5: accounted 1.5, audited 0.1 to 0.3). A step that lost its
/// noise while still telling the accountant sigma would fail the first assertions: without
/// noise the same runs audit 4.3 and 3.7.
#[test]
fn the_audit_passes_the_correct_step_and_catches_one_without_noise() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 9);
    for (batch, epochs, sigma) in [("1000000", "10", "4"), ("128", "4", "1.5")] {
        let run = |sigma: &str| {
            report(&ok(&trainer(
                dir.path(),
                &[
                    "audit",
                    "--data",
                    shards.to_str().unwrap(),
                    "--batch-size",
                    batch,
                    "--epochs",
                    epochs,
                    "--noise-multiplier",
                    sigma,
                    "--attack-feature",
                    "none",
                    "--seed",
                    "2",
                    "--no-progress",
                ],
            )))
        };
        let correct = run(sigma);
        let accounted = correct["accounted_epsilon"].as_f64().unwrap();
        let steinke = correct["audited_epsilon"].as_f64().unwrap();
        let fdp = correct["fdp_epsilon"].as_f64().unwrap();
        assert!((1.0..3.5).contains(&accounted), "batch {batch}: {correct}");
        assert!(steinke <= accounted, "batch {batch}: {correct}");
        if correct["fdp_exact"] == true {
            // (Only at full batch is the f-DP bound's Gaussian curve the mechanism's.)
            assert!(fdp <= accounted, "batch {batch}: {correct}");
        }
        assert_eq!(correct["caught"], false, "batch {batch}: {correct}");
        let broken = run("0");
        let audited = broken["audited_epsilon"].as_f64().unwrap();
        assert!(
            audited > accounted + 1.0 && audited >= 2.0,
            "batch {batch}: without noise {audited} against {accounted}: {broken}"
        );
    }
}

/// With households as the privacy unit the audit's gradient canaries are canary units, sampled
/// at the households' rate: the correct unit-level step passes, one without noise is caught,
/// and input canaries (rows of their own) are refused with a reason.
#[test]
fn canary_units_audit_a_household_level_run() {
    let dir = tempfile::tempdir().unwrap();
    let shards = common::household_shards(dir.path(), 3_000, 6, Some(4));
    let run = |sigma: &str, extra: &[&str]| {
        let mut args = vec![
            "audit",
            "--data",
            shards.to_str().unwrap(),
            "--batch-size",
            "1000000",
            "--epochs",
            "10",
            "--noise-multiplier",
            sigma,
            "--attack-feature",
            "none",
            "--seed",
            "2",
            "--no-progress",
        ];
        args.extend_from_slice(extra);
        trainer(dir.path(), &args)
    };
    let correct = report(&ok(&run("4", &[])));
    let accounted = correct["accounted_epsilon"].as_f64().unwrap();
    assert!((1.0..3.5).contains(&accounted), "{correct}");
    assert!(
        correct["audited_epsilon"].as_f64().unwrap() <= accounted,
        "{correct}"
    );
    assert_eq!(correct["caught"], false, "{correct}");
    let broken = report(&ok(&run("0", &[])));
    let audited = broken["audited_epsilon"].as_f64().unwrap();
    assert!(
        audited > accounted + 1.0 && audited >= 2.0,
        "without noise {audited} against {accounted}: {broken}"
    );
    let err = common::fails(&run("4", &["--canary-kind", "input"]));
    assert!(err.contains("gradient canaries"), "{err}");
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
