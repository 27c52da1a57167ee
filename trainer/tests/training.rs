//! End-to-end runs of the `trainer` binary on shards made by the pipeline.

mod common;

use common::{generated_shards, metrics, ok, trainer};

/// Test accuracy under DP at epsilon about 3 is within 2 points of the non-private baseline
/// trained the same way.
#[test]
fn dp_at_epsilon_3_is_within_two_points_of_no_dp() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 100_000, 1);
    let data = shards.to_str().unwrap();
    let common = [
        "--data",
        data,
        "--epochs",
        "4",
        "--lr",
        "0.05",
        "--attack-feature",
        "none",
        "--no-progress",
    ];
    let run = |name: &str, extra: &[&str]| {
        let m = dir.path().join(format!("{name}.jsonl"));
        let save = dir.path().join(format!("{name}.safetensors"));
        let mut args = common.to_vec();
        args.extend_from_slice(&[
            "--metrics-out",
            m.to_str().unwrap(),
            "--save",
            save.to_str().unwrap(),
        ]);
        args.extend_from_slice(extra);
        ok(&trainer(dir.path(), &args));
        metrics(&m).pop().expect("an epoch")
    };
    let plain = run("plain", &["--no-dp"]);
    let private = run("private", &["--target-epsilon", "3"]);
    let eps = private["epsilon"].as_f64().unwrap();
    assert!((2.9..=3.0).contains(&eps), "epsilon {eps}");
    assert!(plain["epsilon"].is_null());
    let (a, b) = (
        plain["test_accuracy"].as_f64().unwrap(),
        private["test_accuracy"].as_f64().unwrap(),
    );
    assert!(a > 0.6, "the baseline learns something: {a}");
    assert!(b > a - 0.02, "private {b} vs non-private {a}");
}

/// The same seed gives the same model, byte for byte; another seed another model.
#[test]
fn same_seed_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 20_000, 2);
    let model = |name: &str, seed: &str| {
        let save = dir.path().join(format!("{name}.safetensors"));
        ok(&trainer(
            dir.path(),
            &[
                "--data",
                shards.to_str().unwrap(),
                "--epochs",
                "2",
                "--seed",
                seed,
                "--save",
                save.to_str().unwrap(),
                "--no-progress",
            ],
        ));
        std::fs::read(save).unwrap()
    };
    let a = model("a", "7");
    assert_eq!(a, model("b", "7"));
    assert_ne!(a, model("c", "8"));
}

/// A run stopped after 2 epochs and resumed for a third ends with the model, step count and
/// epsilon of an uninterrupted 3-epoch run: the budget keeps counting across the restart.
#[test]
fn resume_carries_the_steps_taken() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 20_000, 3);
    let data = shards.to_str().unwrap();
    let ck = dir.path().join("ck");
    let ck = ck.to_str().unwrap();
    let run = |epochs: &str, name: &str, extra: &[&str]| {
        let save = dir.path().join(format!("{name}.safetensors"));
        let m = dir.path().join(format!("{name}.jsonl"));
        let mut args = vec![
            "--data",
            data,
            "--epochs",
            epochs,
            "--no-progress",
            "--save",
            save.to_str().unwrap(),
            "--metrics-out",
            m.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = ok(&trainer(dir.path(), &args));
        (std::fs::read(save).unwrap(), metrics(&m), out)
    };
    let (straight, straight_m, _) = run("3", "straight", &[]);
    run("2", "first", &["--checkpoint-dir", ck]);
    // Without --resume an existing checkpoint is not silently replaced.
    let refused = trainer(
        dir.path(),
        &["--data", data, "--checkpoint-dir", ck, "--no-progress"],
    );
    assert!(common::fails(&refused).contains("--resume"));
    let first_m = metrics(&dir.path().join("first.jsonl"));
    let (resumed, resumed_m, out) = run("3", "resumed", &["--checkpoint-dir", ck, "--resume"]);
    assert!(out.contains("resuming"), "{out}");
    assert!(
        !out.contains("epoch   1") && !out.contains("epoch   2"),
        "only epoch 3 is trained again: {out}"
    );
    // The metrics file of a resumed run holds every epoch: the checkpoint's, then its own.
    let epochs: Vec<_> = resumed_m.iter().map(|m| m["epoch"].as_u64()).collect();
    assert_eq!(epochs, [Some(1), Some(2), Some(3)]);
    for (r, f) in resumed_m.iter().zip(&first_m) {
        assert_eq!((&r["steps"], &r["epsilon"]), (&f["steps"], &f["epsilon"]));
    }
    let (last, want) = (&resumed_m[2], &straight_m[2]);
    assert_eq!(last["epoch"], 3);
    assert_eq!(last["steps"], want["steps"]);
    assert_eq!(last["epsilon"], want["epsilon"]);
    assert_eq!(
        resumed, straight,
        "resumed model equals the uninterrupted one"
    );
}

/// The saved model is safetensors under PyTorch names with a JSON card; metrics are JSON lines
/// with every field the issue lists; --profile shows the phases.
#[test]
fn saves_model_card_metrics_and_profile() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 20_000, 4);
    let out = ok(&trainer(
        dir.path(),
        &[
            "--data",
            shards.to_str().unwrap(),
            "--epochs",
            "2",
            "--profile",
            "--hidden",
            "16,8",
            "--no-progress",
        ],
    ));
    for phase in [
        "sampling",
        "forward+backward",
        "clipping",
        "noise",
        "optimizer step",
        "evaluation",
    ] {
        assert!(out.contains(phase), "profile lacks {phase}: {out}");
    }
    // Defaults: run/model.safetensors, run/model.json, run/metrics.jsonl.
    let bytes = std::fs::read(dir.path().join("run/model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    for (name, shape) in [
        ("0.weight", [16, 9]),
        ("2.weight", [8, 16]),
        ("4.weight", [1, 8]),
    ] {
        assert_eq!(header[name]["dtype"], "F32");
        assert_eq!(header[name]["shape"], serde_json::json!(shape), "{name}");
    }
    assert_eq!(header["4.bias"]["shape"], serde_json::json!([1]));
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run/model.json")).unwrap())
            .unwrap();
    assert_eq!(
        card["architecture"],
        "nn.Sequential(nn.Linear(9, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))"
    );
    assert_eq!(card["label_name"], "employed");
    assert!(card["metrics"]["epsilon"].as_f64().unwrap() > 0.0);
    assert_eq!(card["options"]["epochs"], 2);
    let lines = metrics(&dir.path().join("run/metrics.jsonl"));
    assert_eq!(lines.len(), 2);
    for key in [
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
        "epsilon",
        "delta",
        "attack_accuracy",
        "attack_baseline",
        "seconds",
        "examples_per_second",
    ] {
        assert!(lines[1][key].is_number(), "{key} in {}", lines[1]);
    }
    assert!(lines[1]["epsilon"].as_f64() > lines[0]["epsilon"].as_f64());
    assert!(lines[1]["phases"].is_array());
}

/// The other code paths run end to end: logistic regression, two hidden layers with Adam,
/// Adagrad and RMSprop, microbatches, secure noise, no test set, a batch larger than the data.
#[test]
fn option_combinations_train() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 5_000, 9);
    for extra in [
        &["--hidden", ""][..],
        &["--hidden", "16,8", "--optimizer", "adam"],
        &["--optimizer", "adagrad"],
        &["--optimizer", "rmsprop", "--accountant", "rdp"],
        &["--microbatch-size", "3"],
        &["--secure-rng"],
        &["--test-fraction", "0"],
        &["--batch-size", "100000"],
        &["--no-dp", "--optimizer", "adam"],
    ] {
        let m = dir.path().join("m.jsonl");
        let mut args = vec![
            "--data",
            shards.to_str().unwrap(),
            "--epochs",
            "1",
            "--no-progress",
            "--metrics-out",
            m.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&trainer(dir.path(), &args));
        let last = metrics(&m).pop().unwrap();
        let loss = last["train_loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss < 1.0, "{extra:?}: {last}");
        assert_eq!(
            last["test_accuracy"].is_null(),
            extra.contains(&"--test-fraction"),
            "{extra:?}"
        );
    }
}
