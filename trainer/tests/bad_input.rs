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
    ] {
        let err = fails(&trainer(dir.path(), args));
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
