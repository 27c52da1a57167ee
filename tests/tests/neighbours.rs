//! The neighbouring relation the printed epsilon is stated for (docs/design.md, "The privacy
//! unit"): delete one line, or one household, from a file, and the two outputs' training sets,
//! test sets and microbatch groups, as multisets of records, differ by exactly that line (that
//! household) and nothing else, through `pipeline` (one and three threads, two processes) and
//! `mapper | sort | reducer`.

use std::collections::BTreeMap;
use std::path::Path;

use fastdp_tests::*;
use shards::{Dataset, Location, S3Options};

/// The trainer's split options (its defaults).
const SPLIT_SEED: u64 = 42;
const TEST_FRACTION: f64 = 0.2;
/// Microbatch groups, as the trainer would hash records into at `--microbatch`.
const GROUPS: u32 = 7;

/// A record as the trainer sees it: its unit (when the shards have units) and its content.
type Record = String;
/// Where a record went: train or test, and its microbatch group; with how many of it.
type Placed = BTreeMap<(bool, u32, Record), i64>;

/// Every record of the shards in `dir`, by side of the split and microbatch group.
fn placed(dir: &Path) -> Placed {
    std::fs::write(dir.join("_SUCCESS"), "").ok();
    let location = Location::parse(dir.to_str().unwrap()).unwrap();
    let table = Dataset::open(&location, &S3Options::default())
        .unwrap()
        .load()
        .unwrap();
    let k = table.width();
    let mut out = Placed::new();
    for i in 0..table.len() {
        let test = table.is_test(i, SPLIT_SEED, TEST_FRACTION);
        let group = shards::hash::microbatch_of(table.keys[i], GROUPS);
        let features: Vec<String> = table.features[i * k..(i + 1) * k]
            .iter()
            .map(|v| v.to_string())
            .collect();
        let unit = table
            .units
            .get(i)
            .map(|u| format!("{u}:"))
            .unwrap_or_default();
        let record = format!("{unit}{},{}", table.labels[i], features.join(","));
        *out.entry((test, group, record)).or_default() += 1;
    }
    out
}

/// `full - less`, as multisets (what deleting lines took away), with no negative counts.
fn difference(full: &Placed, less: &Placed) -> Placed {
    let mut diff = full.clone();
    for (k, n) in less {
        *diff.entry(k.clone()).or_default() -= n;
    }
    diff.retain(|_, n| *n != 0);
    assert!(
        diff.values().all(|&n| n > 0),
        "the smaller file's output holds records the full one has not: {diff:?}"
    );
    diff
}

/// The outputs of every engine on `csv`, written under `dir/<tag>-<engine>`, with `args`.
fn every_engine(dir: &Path, csv: &Path, tag: &str, args: &[&str]) -> Vec<(String, Placed)> {
    let mut outs = Vec::new();
    for (engine, extra) in [
        ("t1", &["--threads", "1"][..]),
        ("t3", &["--threads", "3"][..]),
        ("w2", &["--workers", "2", "--threads", "2"][..]),
    ] {
        let out = dir.join(format!("{tag}-{engine}"));
        pipeline_run(csv, &out, &[args, extra].concat());
        outs.push((format!("pipeline {engine}"), placed(&out)));
    }
    let streaming = dir.join(format!("{tag}-streaming"));
    std::fs::create_dir(&streaming).unwrap();
    let (map_args, reduce_args) = split_args(args);
    sh(
        dir,
        &format!(
            "\"$MAPPER\" {map_args} < '{}' | LC_ALL=C sort | \"$REDUCER\" {reduce_args} > '{}'",
            csv.display(),
            streaming.join("part-00000").display()
        ),
        &[],
    );
    outs.push(("mapper | sort | reducer".into(), placed(&streaming)));
    outs
}

/// The mapper's and the reducer's share of the pipeline's flags (the reducer takes the cap).
fn split_args(args: &[&str]) -> (String, String) {
    let (mut map, mut reduce) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().expect("every flag here takes a value");
        let to = if *a == "--max-rows-per-unit" {
            &mut reduce
        } else {
            &mut map
        };
        to.push(format!("{a} '{v}'"));
    }
    (map.join(" "), reduce.join(" "))
}

/// The data lines of `csv` (the header first), and `csv` without the lines `gone` (indices of
/// data lines) written to `out`.
fn without(csv: &Path, out: &Path, gone: &dyn Fn(usize, &str) -> bool) -> Vec<String> {
    let text = std::fs::read_to_string(csv).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut kept = vec![header.to_string()];
    let mut removed = Vec::new();
    for (i, line) in lines.enumerate() {
        if gone(i, line) {
            removed.push(line.to_string());
        } else {
            kept.push(line.to_string());
        }
    }
    std::fs::write(out, kept.join("\n") + "\n").unwrap();
    removed
}

/// Every engine's output on the full file and on the smaller one: equal within an engine
/// across engines, and differing by exactly `expected` records (counted by content).
fn check(dir: &Path, full: &Path, less: &Path, args: &[&str], expected: usize) {
    let fulls = every_engine(dir, full, "full", args);
    let lesses = every_engine(dir, less, "less", args);
    for ((engine, f), (_, l)) in fulls.iter().zip(&lesses) {
        assert_eq!(f, &fulls[0].1, "{engine} places records as the others do");
        let diff = difference(f, l);
        let taken: i64 = diff.values().sum();
        assert_eq!(
            taken as usize, expected,
            "{engine}: deleting took away {diff:?}"
        );
        // One unit's rows, all on one side of the split.
        let units: std::collections::BTreeSet<(bool, &str)> = diff
            .keys()
            .map(|(test, _, record)| (*test, record.split(':').next().unwrap()))
            .collect();
        assert_eq!(units.len(), 1, "{engine}: {diff:?}");
    }
}

#[test]
fn deleting_one_line_changes_exactly_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("full.csv");
    pipeline_generate(&csv, 6_000, 11, 0.01);
    // The first data line (every later offset moves), and one in the middle whose content
    // repeats (ranks move).
    for gone_at in [0usize, 2_345] {
        let less = dir.path().join(format!("less{gone_at}.csv"));
        let removed = without(&csv, &less, &|i, _| i == gone_at);
        let work = dir.path().join(format!("w{gone_at}"));
        std::fs::create_dir(&work).unwrap();
        let fulls = every_engine(&work, &csv, "full", &[]);
        let lesses = every_engine(&work, &less, "less", &[]);
        for ((engine, f), (_, l)) in fulls.iter().zip(&lesses) {
            assert_eq!(f, &fulls[0].1, "{engine} places records as the others do");
            let diff = difference(f, l);
            assert_eq!(
                diff.len(),
                1,
                "{engine}: deleting line {gone_at} took {diff:?}"
            );
            let ((_, _, record), n) = diff.iter().next().unwrap();
            assert_eq!(*n, 1);
            // It is the deleted line's record: label then the default features, as read.
            let fields: Vec<&str> = removed[0].split(',').collect();
            let label = fields[5];
            assert!(
                record.starts_with(&format!("{label},")),
                "{engine}: took {record}, deleted {}",
                removed[0]
            );
        }
    }
}

#[test]
fn deleting_one_household_changes_exactly_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("full.csv");
    let out = std::process::Command::new(pipeline())
        .args(["generate", "--households", "--rows", "6000", "--seed", "5"])
        .args(["--na-rate", "0", "--output"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_ok("pipeline generate --households", &out);
    // A household of five in the middle of the file.
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for line in text.lines().skip(1) {
        *sizes.entry(line.split(',').next().unwrap()).or_default() += 1;
    }
    let household = sizes
        .iter()
        .filter(|(id, n)| **n == 5 && id.parse::<u64>().unwrap() > 500)
        .map(|(id, _)| id.to_string())
        .next()
        .expect("a household of five");
    let less = dir.path().join("less.csv");
    let removed = without(&csv, &less, &|_, line| {
        line.split(',').next() == Some(household.as_str())
    });
    assert_eq!(removed.len(), 5);
    let unit = ["--privacy-unit", "household"];
    let work = dir.path().join("all");
    std::fs::create_dir(&work).unwrap();
    check(&work, &csv, &less, &unit, 5);
    // Capped at 3 rows a unit: the household loses its 3 kept rows, nothing else moves.
    let work = dir.path().join("capped");
    std::fs::create_dir(&work).unwrap();
    check(
        &work,
        &csv,
        &less,
        &[&unit[..], &["--max-rows-per-unit", "3"]].concat(),
        3,
    );
}
