//! Bad input gives a clear error naming what is wrong, never a panic or a silent run.

mod common;

use std::fs;

use common::{fails, generated_shards, trainer};

#[test]
fn empty_shard_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("empty")).unwrap();
    let err = fails(&trainer(dir.path(), &["--data", "empty"]));
    assert!(
        err.contains("empty") && err.contains("no shard files"),
        "{err}"
    );
    let err = fails(&trainer(dir.path(), &["--data", "missing"]));
    assert!(err.contains("missing: no such directory"), "{err}");
}

/// A malformed line is reported with its file and line number (without a manifest, whose
/// checksum would catch the change first).
#[test]
fn malformed_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 5);
    fs::remove_file(shards.join("_manifest.json")).unwrap();
    let part = shards.join("part-00001");
    let text = fs::read_to_string(&part).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[3] = "123,1,0,1,oops";
    fs::write(&part, lines.join("\n") + "\n").unwrap();
    let err = fails(&trainer(dir.path(), &["--data", shards.to_str().unwrap()]));
    assert!(err.contains("part-00001:4"), "{err}");
}

#[test]
fn manifest_checksum_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 6);
    let part = shards.join("part-00002");
    let mut bytes = fs::read(&part).unwrap();
    let last_digit = bytes
        .iter()
        .rposition(|b| *b == b'0' || *b == b'1')
        .unwrap();
    bytes[last_digit] ^= 1; // 0 <-> 1: same size, other checksum
    fs::write(&part, bytes).unwrap();
    let err = fails(&trainer(dir.path(), &["--data", shards.to_str().unwrap()]));
    assert!(
        err.contains("part-00002") && err.contains("mismatch"),
        "{err}"
    );
}

#[test]
fn unknown_attack_feature_lists_the_features() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 7);
    let err = fails(&trainer(
        dir.path(),
        &[
            "--data",
            shards.to_str().unwrap(),
            "--attack-feature",
            "income",
        ],
    ));
    assert!(
        err.contains("'income'") && err.contains("disability"),
        "{err}"
    );
}

#[test]
fn cuda_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 8);
    let out = trainer(
        dir.path(),
        &[
            "--data",
            shards.to_str().unwrap(),
            "--device",
            "cuda",
            "--epochs",
            "1",
        ],
    );
    if tch::Cuda::is_available() {
        return; // a GPU machine: the run may succeed
    }
    let err = fails(&out);
    assert!(err.contains("device cuda: "), "{err}");
}

#[test]
fn bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (&["--optimizer", "lbfgs"][..], "--optimizer"),
        (&["--batch-size", "0"][..], "--batch-size"),
        (
            &["--no-dp", "--target-epsilon", "1"][..],
            "--target-epsilon",
        ),
        (&["--lr", "inf"][..], "--lr inf must be finite"),
        (&["--hidden", "1000000000"][..], "--hidden width 1000000000"),
        (&["--threads", "100000"][..], "--threads 100000"),
    ] {
        let err = fails(&trainer(dir.path(), args));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// `--resume` with a missing, mistyped or empty checkpoint directory is an error naming it, not
/// a new run from epoch 1 with the budget reset to zero.
#[test]
fn resume_without_a_checkpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 10);
    fs::create_dir(dir.path().join("empty")).unwrap();
    for (ck, needle) in [
        ("chekpoints", "no such directory"),
        ("empty", "no checkpoint"),
    ] {
        let out = trainer(
            dir.path(),
            &[
                "--data",
                shards.to_str().unwrap(),
                "--checkpoint-dir",
                ck,
                "--resume",
                "--no-progress",
            ],
        );
        let err = fails(&out);
        assert!(
            err.contains(&format!("checkpoint {ck}: --resume")) && err.contains(needle),
            "{err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("epoch"),
            "nothing was trained"
        );
    }
    assert!(!dir.path().join("chekpoints").exists());
}

/// An output that cannot be written is found before training spends the budget, not after.
#[test]
fn unwritable_outputs_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 11);
    fs::write(dir.path().join("file"), b"").unwrap();
    fs::create_dir(dir.path().join("adir")).unwrap();
    for (flag, value, needle) in [
        (
            "--save",
            "file/model.safetensors",
            "cannot create its directory",
        ),
        ("--save", "adir", "is a directory"),
        ("--save", "model.json", "the card goes to the same name"),
        (
            "--metrics-out",
            "file/m.jsonl",
            "cannot create its directory",
        ),
        ("--checkpoint-dir", "file", "not a directory"),
    ] {
        let out = trainer(
            dir.path(),
            &[
                "--data",
                shards.to_str().unwrap(),
                "--epochs",
                "1",
                "--no-progress",
                flag,
                value,
            ],
        );
        let err = fails(&out);
        assert!(
            err.contains(&format!("{flag} {value}")) && err.contains(needle),
            "{flag} {value}: {err}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("epoch"), "trained first: {stdout}");
    }
}

/// A checkpoint edited to understate the budget, or to point outside its directory, is refused
/// by `--resume` before any step, naming what does not hold together: the attack (steps
/// and every metrics line halved, so the resumed run would print a smaller epsilon), a changed
/// epsilon, a metrics file that logged other steps, and tensors named by an absolute path.
#[test]
fn a_tampered_checkpoint_is_refused_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shards = generated_shards(d, 2_000, 12);
    let args = |epochs: &'static str, resume: bool| {
        let mut a = vec![
            "--data",
            shards.to_str().unwrap(),
            "--epochs",
            epochs,
            "--batch-size",
            "100",
            "--seed",
            "1",
            "--checkpoint-dir",
            "ck",
            "--metrics-out",
            "m.jsonl",
            "--no-progress",
        ];
        if resume {
            a.push("--resume");
        }
        a
    };
    common::ok(&trainer(d, &args("2", false)));
    let meta_path = d.join("ck/checkpoint.json");
    let good = fs::read_to_string(&meta_path).unwrap();
    let metrics = fs::read_to_string(d.join("m.jsonl")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        fs::write(&meta_path, serde_json::to_string(&v).unwrap()).unwrap();
    };
    let halve = |v: &mut serde_json::Value| {
        let half = |x: &serde_json::Value| serde_json::json!(x.as_u64().unwrap() / 2);
        v["steps"] = half(&v["steps"]);
        for m in v["metrics"].as_array_mut().unwrap() {
            m["steps"] = half(&m["steps"]);
        }
    };
    let outside = d.join("elsewhere.safetensors");
    let tensors = d.join("ck").join(
        serde_json::from_str::<serde_json::Value>(&good).unwrap()["tensors"]
            .as_str()
            .unwrap(),
    );
    fs::copy(&tensors, &outside).unwrap();
    type Edit<'a> = &'a dyn Fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 3] = [
        (&halve, "an epoch of this run is"),
        (
            &|v| {
                let e = v["metrics"][1]["epsilon"].as_f64().unwrap();
                v["metrics"][1]["epsilon"] = serde_json::json!(e * 0.8);
            },
            "reports epsilon",
        ),
        (
            &|v| v["tensors"] = serde_json::json!(outside.to_str().unwrap()),
            "names only its own file",
        ),
    ];
    for (f, said) in cases {
        edit(f);
        let out = trainer(d, &args("3", true));
        let err = fails(&out);
        assert!(
            err.contains("checkpoint ck") && err.contains(said),
            "{said}: {err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("epoch 3"),
            "{said}: trained on"
        );
        assert!(outside.exists());
    }
    // The checkpoint as written, and a metrics file that logged other steps.
    fs::write(&meta_path, &good).unwrap();
    let altered = metrics.replacen("\"steps\":", "\"steps\":1", 1);
    fs::write(d.join("m.jsonl"), altered).unwrap();
    let err = fails(&trainer(d, &args("3", true)));
    assert!(
        err.contains("--metrics-out") && err.contains("altered"),
        "{err}"
    );
    // Untouched, it resumes.
    fs::write(d.join("m.jsonl"), &metrics).unwrap();
    common::ok(&trainer(d, &args("3", true)));
}

/// Nothing one row holds stops a run or poisons it (issue 23 B): rows of 3e38 in any number of
/// their fields (up to all eleven but the label, of either sign), and a row whose attack
/// feature `englishability` is 2, at lines all through the file (so on both sides of the
/// split). Each gradient path trains to the end (the plain-Rust step, libtorch's for a model
/// too large for it, microbatches): the model is finite, every logged figure is a number, the
/// rows' gradients were zeroed (counted, on the operator's line), and the attack skipped rows
/// of both splits instead of failing ("is not a 0/1 feature") or its imputer panicking.
#[test]
fn rows_of_huge_values_anywhere_neither_stop_nor_poison_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("input.csv");
    pipeline::generate(&pipeline::GenerateConfig {
        rows: 2_000,
        seed: 23,
        na_rate: 0.0,
        households: false,
        output: shards::Location::Local(csv.clone()),
        overwrite: true,
        s3: Default::default(),
    })
    .unwrap();
    let text = fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let label = header.iter().position(|h| *h == "\"employed\"").unwrap();
    let english = header
        .iter()
        .position(|h| *h == "\"englishability\"")
        .unwrap();
    let width = header.len();
    // 40 rows, replacing lines 1, 51, 101, ... (the first data line among them): row i has
    // 1 + i % 11 of its fields (never the label) at 3e38 or -3e38.
    for i in 0..40 {
        let line = 1 + i * 50;
        let mut fields: Vec<String> = lines[line].split(',').map(str::to_string).collect();
        let mut set = 0;
        for j in (0..width).map(|j| (j + i) % width) {
            if j != label && set < 1 + i % 11 {
                fields[j] = if (i + j) % 3 == 0 { "-3e38" } else { "3e38" }.into();
                set += 1;
            }
        }
        lines[line] = fields.join(",");
    }
    // englishability = 2 on every 97th line between them.
    for line in (30..lines.len()).step_by(97) {
        let mut fields: Vec<String> = lines[line].split(',').map(str::to_string).collect();
        fields[english] = "2".into();
        lines[line] = fields.join(",");
    }
    fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let shards = dir.path().join("shards");
    common::shard(&csv, &shards);
    for (name, extra) in [
        ("fused", &[][..]),
        ("libtorch", &["--hidden", "500"][..]),
        ("microbatch", &["--microbatch-size", "3"][..]),
    ] {
        let run = dir.path().join(name);
        let model = run.join("model.safetensors");
        let metrics_path = run.join("metrics.jsonl");
        // The columns as they are (the default's DP bounds would clip the huge values away
        // before any gradient saw them).
        let mut args = vec![
            "--data",
            shards.to_str().unwrap(),
            "--auto-bounds",
            "off",
            "--epochs",
            "3",
            "--batch-size",
            "128",
            "--seed",
            "5",
            "--no-progress",
            "--save",
            model.to_str().unwrap(),
            "--metrics-out",
            metrics_path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = trainer(dir.path(), &args);
        let stdout = common::ok(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tensors = tch::Tensor::read_safetensors(&model).unwrap();
        for (n, t) in &tensors {
            assert_eq!(
                t.isfinite().all().int64_value(&[]),
                1,
                "{name}: {n} is not finite"
            );
        }
        let lines = common::metrics(&metrics_path);
        assert_eq!(lines.len(), 3, "{name}");
        let mut zeroed = 0;
        for l in &lines {
            for key in ["test_loss", "test_accuracy", "epsilon", "attack_accuracy"] {
                assert!(l[key].as_f64().unwrap().is_finite(), "{name}: {key} in {l}");
            }
            let np = &l["non_private"];
            for key in ["train_loss", "train_accuracy"] {
                assert!(
                    np[key].as_f64().unwrap().is_finite(),
                    "{name}: {key} in {l}"
                );
            }
            zeroed += np["gradients_zeroed"].as_u64().unwrap();
        }
        assert!(zeroed > 0, "{name}: no huge row was ever sampled?");
        assert!(stdout.contains("not finite, zeroed"), "{name}: {stdout}");
        // The attack skipped rows on both sides of the split.
        let skips = stderr
            .lines()
            .find_map(|l| l.strip_prefix("trainer: the attack skips "))
            .unwrap_or_else(|| panic!("{name}: {stderr}"));
        let counts: Vec<u64> = skips
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(
            counts.len() >= 2 && counts[0] > 0 && counts[1] > 0,
            "{name}: {skips}"
        );
    }
}
