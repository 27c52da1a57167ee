//! Local output commit protocol and reading shards back.

mod common;

use std::fs;
use std::io::Write;

use common::manifest;
use shards::store::open_output;
use shards::{Dataset, Error, Location, S3Options};

fn write_output(dir: &std::path::Path) -> Location {
    let loc = Location::Local(dir.into());
    let out = open_output(&loc, &S3Options::default()).unwrap();
    out.prepare(false).unwrap();
    let mut infos = Vec::new();
    for (i, body) in ["key,y,a\n3,1,0.5\n9,0,2\n", "key,y,a\n4,1,1\n"]
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
    let table = Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(table.keys, [3, 9, 4]);
    assert_eq!(table.labels, [1.0, 0.0, 1.0]);
    assert_eq!(table.features, [0.5, 2.0, 1.0]);
    assert_eq!(
        (table.label_name.as_str(), table.feature_names.clone()),
        ("y", vec!["a".to_string()])
    );
}

/// Every name in `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn existing_output_needs_overwrite_and_foreign_files_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);
    let before = names(&dir);
    let out = open_output(&loc, &S3Options::default()).unwrap();
    assert!(matches!(
        out.prepare(false),
        Err(Error::OutputExists { .. })
    ));
    // Preparing to overwrite touches nothing: the old output stays complete until the new one
    // replaces it, and a run given up on leaves it as it was.
    out.prepare(true).unwrap();
    assert_eq!(names(&dir), before);
    out.abort();
    assert_eq!(names(&dir), before);
    assert_eq!(
        names(tmp.path()),
        ["out"],
        "no staging or lock left beside it"
    );
    fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = out.prepare(true).unwrap_err().to_string();
    assert!(err.contains("notes.txt"), "{err}");
    assert!(dir.join("notes.txt").exists());
}

#[test]
fn dropped_part_writer_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = open_output(
        &Location::Local(tmp.path().join("o")),
        &S3Options::default(),
    )
    .unwrap();
    out.prepare(false).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(b"key,y,a\n").unwrap();
    drop(w);
    out.abort();
    assert_eq!(names(tmp.path()), Vec::<String>::new());
}

/// A second commit replaces the first output whole, and leaves nothing beside it.
#[test]
fn overwrite_replaces_the_whole_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);
    let out = open_output(&loc, &S3Options::default()).unwrap();
    out.prepare(true).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(b"key,y,a\n7,0,1\n").unwrap();
    let mut info = w.finish().unwrap();
    info.rows = 1;
    out.commit(&manifest(vec![info])).unwrap();
    assert_eq!(names(&dir), ["_SUCCESS", "_manifest.json", "part-00000"]);
    assert_eq!(names(tmp.path()), ["out"]);
    assert_eq!(
        Dataset::open(&loc, &S3Options::default())
            .unwrap()
            .load()
            .unwrap()
            .keys,
        [7]
    );
}

/// `--overwrite` removes only an output this project wrote: not a directory of other part-*
/// files without a manifest or `_SUCCESS`, not a part-* directory, not through a symlink.
#[test]
fn overwrite_refuses_what_this_project_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let no_marker = tmp.path().join("a");
    fs::create_dir(&no_marker).unwrap();
    fs::write(no_marker.join("part-00000"), "key,y,a\n").unwrap();
    let err = open_output(&Location::Local(no_marker.clone()), &S3Options::default())
        .unwrap()
        .prepare(true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("_SUCCESS") && err.contains("refusing"),
        "{err}"
    );

    let dir = tmp.path().join("b");
    write_output(&dir);
    fs::create_dir(dir.join("part-archive-2023")).unwrap();
    fs::write(dir.join("part-archive-2023/important.txt"), "keep").unwrap();
    let err = open_output(&Location::Local(dir.clone()), &S3Options::default())
        .unwrap()
        .prepare(true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("part-archive-2023"), "{err}");
    fs::remove_dir_all(dir.join("part-archive-2023")).unwrap();
    fs::write(dir.join("part-notes.txt"), "keep").unwrap();
    let err = open_output(&Location::Local(dir.clone()), &S3Options::default())
        .unwrap()
        .prepare(true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("part-notes.txt"), "{err}");
    fs::remove_file(dir.join("part-notes.txt")).unwrap();

    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let err = open_output(&Location::Local(link.clone()), &S3Options::default())
        .unwrap()
        .prepare(true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert!(dir.join("_SUCCESS").exists() && link.exists());
    assert_eq!(names(&no_marker), ["part-00000"]);
}

#[test]
fn an_output_without_a_name_is_refused() {
    for dir in [".", "..", "/", "a/.."] {
        let err = open_output(&Location::Local(dir.into()), &S3Options::default())
            .unwrap()
            .prepare(true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("name of its own"), "{dir}: {err}");
    }
}

/// The input lying inside the output is refused before anything is touched.
#[test]
fn input_inside_the_output_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    write_output(&dir);
    let input = dir.join("part-00000");
    let err = shards::local::check_input_outside(&input, &dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds the input"), "{err}");
    shards::local::check_input_outside(&tmp.path().join("in.csv"), &dir).unwrap();
}

/// A second writer of one output is refused, naming the run that holds it.
#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let loc = Location::Local(tmp.path().join("out"));
    let first = open_output(&loc, &S3Options::default()).unwrap();
    first.prepare(false).unwrap();
    let err = open_output(&loc, &S3Options::default())
        .unwrap()
        .prepare(false)
        .unwrap_err();
    assert!(matches!(err, Error::OutputBusy { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("process {}", std::process::id())),
        "{msg}"
    );
    first.abort();
    let second = open_output(&loc, &S3Options::default()).unwrap();
    second.prepare(false).unwrap();
    second.abort();
}

/// Readers trust only committed outputs.
#[test]
fn readers_refuse_uncommitted_or_tampered_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);

    fs::remove_file(dir.join("_SUCCESS")).unwrap();
    let err = Dataset::open(&loc, &S3Options::default()).unwrap_err();
    assert!(matches!(err, Error::NotCommitted { .. }), "{err}");
    fs::write(dir.join("_SUCCESS"), "").unwrap();

    // With a manifest, an unlisted part is refused.
    fs::copy(dir.join("part-00001"), dir.join("part-00002")).unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("part-00002"), "{err}");
    fs::remove_file(dir.join("part-00002")).unwrap();

    // Copies and compressed parts are named as such.
    fs::copy(dir.join("part-00001"), dir.join("part-00001.bak")).unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("part-00001.bak") && err.contains("stray"),
        "{err}"
    );
    fs::rename(dir.join("part-00001.bak"), dir.join("part-00000.gz")).unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("compressed"), "{err}");
    fs::remove_file(dir.join("part-00000.gz")).unwrap();

    // A manifest whose schema was edited is named as the side that disagrees.
    let m = fs::read_to_string(dir.join("_manifest.json")).unwrap();
    fs::write(dir.join("_manifest.json"), m.replace("\"y\"", "\"z\"")).unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("the manifest _manifest.json says"), "{err}");
    fs::write(dir.join("_manifest.json"), m).unwrap();

    // Without a manifest (Hadoop output), a duplicate key is refused, even when the worker
    // loads only one of the two parts that hold it.
    fs::remove_file(dir.join("_manifest.json")).unwrap();
    Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap();
    fs::write(dir.join("part-00002"), "key,y,a\n9,0,2\n").unwrap();
    let ds = Dataset::open(&loc, &S3Options::default()).unwrap();
    for subset in [vec![0, 1, 2], vec![2], vec![1]] {
        let err = ds.load_parts(&subset).unwrap_err();
        assert!(
            matches!(&err, Error::DuplicateKey { key: 9, first, second, .. }
                if first == "part-00000" && second == "part-00002"),
            "{subset:?}: {err}"
        );
    }
}

#[test]
fn checksum_mismatch_and_malformed_lines_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);
    fs::write(dir.join("part-00001"), "key,y,a\n4,1,7\n").unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap_err();
    assert!(
        matches!(err, Error::ChecksumMismatch { what: "crc32", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("part-00001"));

    // Hadoop-style output: no manifest, trailing tabs; a bad line is reported with its number.
    fs::remove_file(dir.join("_manifest.json")).unwrap();
    fs::write(dir.join("part-00001"), "key,y,a\t\n4,1,7\t\n5,1,x\t\n").unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("part-00001:3"), "{err}");

    // An older output, keyed by byte offsets: refused, saying why and what to do.
    fs::write(dir.join("part-00001"), "offset,y,a\n4,1,7\n").unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("part-00001:1") && err.contains("byte offset") && err.contains("again"),
        "{err}"
    );
}

#[test]
fn units_are_read_with_their_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir(&dir).unwrap();
    fs::write(
        dir.join("part-00000"),
        "key,unit:hh,y,a\n4,77,1,0.5\n9,77,0,1\n12,78,1,2\n",
    )
    .unwrap();
    fs::write(dir.join("_SUCCESS"), "").unwrap();
    let table = Dataset::open(&Location::Local(dir), &S3Options::default())
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(table.unit_name.as_deref(), Some("hh"));
    assert_eq!(table.keys, [4, 9, 12]);
    assert_eq!(table.units, [77, 77, 78]);
    assert_eq!(table.features, [0.5, 1.0, 2.0]);
    // Rows of a unit share its side of the split: the split is drawn from the unit's hash.
    for seed in 0..50 {
        assert_eq!(table.is_test(0, seed, 0.5), table.is_test(1, seed, 0.5));
        assert_eq!(table.is_test(0, seed, 0.5), shards::is_test(77, seed, 0.5));
    }
}

#[test]
fn empty_directory_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err =
        Dataset::open(&Location::Local(tmp.path().into()), &S3Options::default()).unwrap_err();
    assert!(matches!(err, Error::NoShards { .. }));
}

#[test]
fn commit_with_a_missing_part_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = Location::Local(dir.clone());
    let out = open_output(&loc, &S3Options::default()).unwrap();
    out.prepare(false).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(b"key,y,a\n").unwrap();
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

/// A manifest that claims far more rows than its parts hold is a mismatch, named, not an
/// allocation of what it claims (the loader sizes its columns from the manifest).
#[test]
fn a_manifest_that_overstates_the_rows_is_a_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = write_output(&dir);
    let path = dir.join("_manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    m["shards"][0]["rows"] = serde_json::json!(u64::MAX / 4);
    fs::write(&path, serde_json::to_string(&m).unwrap()).unwrap();
    let err = Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap_err();
    assert!(
        matches!(err, Error::ChecksumMismatch { what: "rows", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("part-00000"), "{err}");
}

/// Shards with a manifest are read part by part on several threads into one table: the same
/// table (keys, units, labels, features, in the order of the indices asked for) as reading the
/// same parts without the manifest, one after another; and of several bad parts, the first in
/// that order is the one named, whichever thread read it.
#[test]
fn parts_read_in_parallel_give_the_table_read_in_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let loc = Location::Local(dir.clone());
    let out = open_output(&loc, &S3Options::default()).unwrap();
    out.prepare(false).unwrap();
    let parts = 7;
    let mut infos = Vec::new();
    for p in 0..parts {
        let mut body = String::from("key,unit:hh,y,a,b\n");
        // Parts of 0 to 300 rows; a blank line and a repeated header inside one.
        for r in 0..(p * 50) {
            let key = p * 1000 + r;
            body.push_str(&format!(
                "{key},{},{},{},{}\n",
                key * 7 % 13,
                r % 2,
                r % 3,
                p
            ));
            if r == 10 {
                body.push_str("\nkey,unit:hh,y,a,b\n");
            }
        }
        let mut w = out.create_part(&format!("part-{p:05}")).unwrap();
        w.write_all(body.as_bytes()).unwrap();
        let mut info = w.finish().unwrap();
        info.rows = (p * 50) as u64;
        infos.push(info);
    }
    let mut m = manifest(infos);
    m.schema.unit = Some("hh".into());
    m.schema.features = vec!["a".into(), "b".into()];
    out.commit(&m).unwrap();
    let orders: [&[usize]; 4] = [&[0, 1, 2, 3, 4, 5, 6], &[6, 5, 4, 3, 2, 1, 0], &[3, 1], &[]];
    let with: Vec<_> = {
        let ds = Dataset::open(&loc, &S3Options::default()).unwrap();
        assert!(ds.manifest().is_some());
        orders.iter().map(|o| ds.load_parts(o).unwrap()).collect()
    };
    fs::remove_file(dir.join("_manifest.json")).unwrap();
    let ds = Dataset::open(&loc, &S3Options::default()).unwrap();
    assert!(ds.manifest().is_none());
    for (o, with) in orders.iter().zip(&with) {
        let without = ds.load_parts(o).unwrap();
        if o.is_empty() {
            assert_eq!(with.len(), 0);
            continue;
        }
        assert_eq!(*with, without, "parts {o:?}");
        assert_eq!(with.units.len(), with.len(), "parts {o:?}: units read");
    }
    assert_eq!(with[0].len(), 50 * (0..parts).sum::<usize>());

    // Two bad parts: the one asked for first is named.
    drop(ds);
    fs::remove_dir_all(&dir).unwrap();
    let loc = write_many_bad(&dir);
    let ds = Dataset::open(&loc, &S3Options::default()).unwrap();
    for (order, named) in [([2usize, 5], "part-00002"), ([5, 2], "part-00005")] {
        let err = ds.load_parts(&order).unwrap_err().to_string();
        assert!(err.contains(named), "{order:?}: {err}");
    }
}

/// Six committed parts of one row each, then parts 2 and 5 changed after the commit.
fn write_many_bad(dir: &std::path::Path) -> Location {
    let loc = Location::Local(dir.into());
    let out = open_output(&loc, &S3Options::default()).unwrap();
    out.prepare(false).unwrap();
    let mut infos = Vec::new();
    for p in 0..6 {
        let mut w = out.create_part(&format!("part-{p:05}")).unwrap();
        w.write_all(format!("key,y,a\n{p},1,0\n").as_bytes())
            .unwrap();
        let mut info = w.finish().unwrap();
        info.rows = 1;
        infos.push(info);
    }
    out.commit(&manifest(infos)).unwrap();
    for p in [2, 5] {
        fs::write(dir.join(format!("part-{p:05}")), "key,y,a\n9,1,1\n").unwrap();
    }
    loc
}
