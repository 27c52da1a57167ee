//! Local output commit protocol and reading shards back.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;

use shards::manifest::{FORMAT, ManifestOptions, ManifestSchema, RowCounts};
use shards::store::open_output;
use shards::{Dataset, Error, Location, Manifest};

fn manifest(shards: Vec<shards::manifest::ShardInfo>) -> Manifest {
    Manifest {
        format: FORMAT.into(),
        schema: ManifestSchema {
            input_columns: vec!["y".into(), "a".into()],
            label: "y".into(),
            features: vec!["a".into()],
        },
        options: ManifestOptions {
            input: "in.csv".into(),
            shards: 2,
            na_values: vec![],
        },
        rows: RowCounts::default(),
        labels: BTreeMap::new(),
        feature_means: BTreeMap::new(),
        distinct_feature_vectors: 0,
        shards,
    }
}

fn write_output(dir: &std::path::Path) -> Location {
    let loc = Location::Local(dir.into());
    let out = open_output(&loc).unwrap();
    out.prepare(false).unwrap();
    let mut infos = Vec::new();
    for (i, body) in ["offset,y,a\n3,1,0.5\n9,0,2\n", "offset,y,a\n4,1,1\n"]
        .iter()
        .enumerate()
    {
        let mut w = out.create_part(&format!("part-0000{i}")).unwrap();
        w.write_all(body.as_bytes()).unwrap();
        let mut info = w.finish().unwrap();
        info.rows = body.lines().count() as u64 - 1;
        infos.push(info);
    }
    assert!(
        !dir.join("part-00000").exists(),
        "parts are published only by commit"
    );
    out.commit(&manifest(infos)).unwrap();
    loc
}

#[test]
fn commit_then_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);
    assert!(dir.join("_SUCCESS").exists() && !dir.join("_temporary").exists());
    let table = Dataset::open(&loc).unwrap().load().unwrap();
    assert_eq!(table.offsets, [3, 9, 4]);
    assert_eq!(table.labels, [1.0, 0.0, 1.0]);
    assert_eq!(table.features, [0.5, 2.0, 1.0]);
    assert_eq!(
        (table.label_name.as_str(), table.feature_names.clone()),
        ("y", vec!["a".to_string()])
    );
}

#[test]
fn existing_output_needs_overwrite_and_foreign_files_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);
    let out = open_output(&loc).unwrap();
    assert!(matches!(
        out.prepare(false),
        Err(Error::OutputExists { .. })
    ));
    out.prepare(true).unwrap();
    assert!(!dir.join("_SUCCESS").exists() && !dir.join("part-00000").exists());
    fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = out.prepare(true).unwrap_err().to_string();
    assert!(err.contains("notes.txt"), "{err}");
    assert!(dir.join("notes.txt").exists());
}

#[test]
fn dropped_part_writer_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = open_output(&Location::Local(tmp.path().join("o"))).unwrap();
    out.prepare(false).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(b"offset,y,a\n").unwrap();
    drop(w);
    out.abort();
    assert_eq!(fs::read_dir(tmp.path().join("o")).unwrap().count(), 0);
}

#[test]
fn checksum_mismatch_and_malformed_lines_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);
    fs::write(dir.join("part-00001"), "offset,y,a\n4,1,7\n").unwrap();
    let err = Dataset::open(&loc).unwrap().load().unwrap_err();
    assert!(
        matches!(err, Error::ChecksumMismatch { what: "crc32", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("part-00001"));

    // Hadoop-style output: no manifest, trailing tabs; a bad line is reported with its number.
    fs::remove_file(dir.join("_manifest.json")).unwrap();
    fs::write(dir.join("part-00001"), "offset,y,a\t\n4,1,7\t\n5,1,x\t\n").unwrap();
    let err = Dataset::open(&loc).unwrap().load().unwrap_err().to_string();
    assert!(err.contains("part-00001:3"), "{err}");
}

#[test]
fn empty_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Dataset::open(&Location::Local(tmp.path().into())).unwrap_err();
    assert!(matches!(err, Error::NoShards { .. }));
}

#[test]
fn commit_with_a_missing_part_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = Location::Local(dir.clone());
    let out = open_output(&loc).unwrap();
    out.prepare(false).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(b"offset,y,a\n").unwrap();
    let first = w.finish().unwrap();
    let mut missing = first.clone();
    missing.name = "part-00001".into();
    let err = out
        .commit(&manifest(vec![first, missing]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("part-00001"), "{err}");
    assert!(!dir.join("part-00000").exists() && !dir.join("_SUCCESS").exists());
}
