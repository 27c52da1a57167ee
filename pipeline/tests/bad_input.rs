//! Bad input and failures: clear errors, every dropped row counted, nothing half-written.

mod common;

use common::config;
use pipeline::Cluster;
use shards::store::open_output;
use shards::{Location, Manifest, Output, PartWriter};

fn run_on(text: &[u8], threads: usize) -> pipeline::Result<Manifest> {
    run_allowing_empty(text, threads, false)
}

fn run_allowing_empty(
    text: &[u8],
    threads: usize,
    allow_empty: bool,
) -> pipeline::Result<Manifest> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("out");
    let mut cfg = config(&input, &out, 4, Cluster::Single { threads });
    cfg.allow_empty = allow_empty;
    pipeline::run(&cfg).map(|r| r.manifest.unwrap())
}

const HEADER: &str = "\"sex\",\"married\",\"black\",\"asian\",\"collegedegree\",\"employed\",\"militaryservice\",\"uscitizen\",\"disability\",\"englishability\",\"blackfemale\",\"targetted\"";

#[test]
fn empty_file_is_an_error() {
    let err = run_on(b"", 2).unwrap_err().to_string();
    assert!(err.contains("empty") && err.contains("in.csv"), "{err}");
}

/// A header and no row: an error, unless an empty output is asked for (`--allow-empty`).
#[test]
fn header_only_gives_empty_shards_when_allowed() {
    for text in [
        format!("{HEADER}\n"),
        HEADER.to_string(),
        format!("{HEADER}\r\n"),
    ] {
        let err = run_on(text.as_bytes(), 2).unwrap_err();
        assert!(matches!(err, pipeline::Error::NothingKept { .. }), "{err}");
        let m = run_allowing_empty(text.as_bytes(), 2, true).unwrap();
        assert_eq!(
            (m.rows.input_rows, m.rows.kept, m.rows.header_lines),
            (0, 0, 1)
        );
        assert_eq!(m.shards.len(), 4);
        assert!(m.shards.iter().all(|s| s.rows == 0));
    }
}

#[test]
fn missing_label_names_the_columns() {
    let err = run_on(b"a,b,c\n1,0,1\n", 1).unwrap_err().to_string();
    assert!(err.contains("'employed'") && err.contains("a,b,c"), "{err}");
}

#[test]
fn nonexistent_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let err = pipeline::run(&config(
        &missing,
        &dir.path().join("o"),
        4,
        Cluster::Single { threads: 1 },
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope.csv"), "{err}");
    assert!(
        !dir.path().join("o").exists(),
        "nothing is created for a failed start"
    );
}

#[test]
fn line_endings_and_missing_final_newline() {
    let row = "1,0,1,0,1,1,0,1,0,1,1,0";
    for sep in ["\n", "\r\n", "\r"] {
        for final_newline in [true, false] {
            let mut text = format!("{HEADER}{sep}{row}{sep}{row}{sep}{row}");
            if final_newline {
                text.push_str(sep);
            }
            for threads in [1, 3] {
                let m = run_on(text.as_bytes(), threads).unwrap();
                assert_eq!(
                    (m.rows.kept, m.rows.dropped_total()),
                    (3, 0),
                    "{sep:?} {final_newline}"
                );
            }
        }
    }
}

/// An output that fails when asked for one particular part.
#[derive(Debug)]
struct FailingOutput {
    inner: Box<dyn Output>,
    fail_on: &'static str,
}

impl Output for FailingOutput {
    fn prepare(&self, overwrite: bool) -> shards::Result<()> {
        self.inner.prepare(overwrite)
    }
    fn create_part(&self, name: &str) -> shards::Result<Box<dyn PartWriter>> {
        if name == self.fail_on {
            return Err(shards::Error::io(
                name,
                std::io::Error::other("disk full (injected)"),
            ));
        }
        self.inner.create_part(name)
    }
    fn sync_parts(&self) -> shards::Result<()> {
        self.inner.sync_parts()
    }
    fn commit(&self, manifest: &Manifest) -> shards::Result<()> {
        self.inner.commit(manifest)
    }
    fn abort(&self) {
        self.inner.abort()
    }
    fn location(&self) -> &Location {
        self.inner.location()
    }
}

#[test]
fn a_failure_mid_run_leaves_no_output_under_final_names() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::messy_csv(dir.path(), 5_000);
    let out = dir.path().join("out");
    let cfg = config(&input, &out, 8, Cluster::Single { threads: 2 });
    let output = Box::new(FailingOutput {
        inner: open_output(&cfg.output, &cfg.s3).unwrap(),
        fail_on: "part-00005",
    });
    let input_store = shards::store::open_input(&cfg.input, &cfg.s3).unwrap();
    let err = pipeline::run_with(&cfg, input_store, output)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("worker 1") && err.contains("injected"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".csv"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A rerun after the fault succeeds.
    pipeline::run(&cfg).unwrap();
    assert!(out.join("_SUCCESS").exists());
}

#[test]
fn existing_output_needs_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let input = common::messy_csv(dir.path(), 1_000);
    let out = dir.path().join("out");
    let mut cfg = config(&input, &out, 4, Cluster::Single { threads: 1 });
    pipeline::run(&cfg).unwrap();
    let err = pipeline::run(&cfg).unwrap_err().to_string();
    assert!(err.contains("--overwrite"), "{err}");
    cfg.overwrite = true;
    cfg.shards = 2;
    let m = pipeline::run(&cfg).unwrap().manifest.unwrap();
    assert_eq!(m.shards.len(), 2);
    assert!(!out.join("part-00003").exists(), "old shards are removed");
}

/// The real PUMS rows of another county, with another schema: the kept rows and label counts
/// match a count made here independently of the cleaning code.
#[test]
fn fulton_pums_with_selected_columns() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/FultonPUMS5full.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the fixture is in the repository)", path.display()));
    let features = [
        "sex",
        "black",
        "asian",
        "married",
        "uscitizen",
        "disability",
        "militaryservice",
        "englishability",
    ];
    // Independent count.
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|h| h.trim_matches('"'))
        .collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let (label_col, feature_cols): (usize, Vec<usize>) =
        (col("employed"), features.iter().map(|f| col(f)).collect());
    let (mut kept, mut ones) = (0u64, 0u64);
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != header.len() || f.iter().any(|v| v.is_empty() || *v == "NA") {
            continue;
        }
        if feature_cols.iter().any(|&c| f[c].parse::<f64>().is_err()) {
            continue;
        }
        match f[label_col] {
            "0" => kept += 1,
            "1" => {
                kept += 1;
                ones += 1
            }
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &path,
        &dir.path().join("out"),
        4,
        Cluster::Single { threads: 2 },
    );
    cfg.schema.features = Some(features.iter().map(|s| s.to_string()).collect());
    let m = pipeline::run(&cfg).unwrap().manifest.unwrap();
    assert_eq!(m.rows.kept, kept);
    assert_eq!(m.labels["1"], ones);
    assert_eq!(m.labels["0"], kept - ones);
    assert_eq!(m.schema.features, features);
    assert!(kept > 20_000, "most Fulton rows are clean ({kept})");
}

/// This process's peak resident memory so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb << 10
}

/// A gzip input (under a megabyte) that inflates to a 400 MB line, as the header and as a row:
/// each is refused with an error naming the input and the line's offset, and the run's memory
/// grows by a few megabytes, not by the line (which took 1.9 GB, or aborted, before lines were
/// bounded as they are read).
#[test]
fn a_huge_line_is_refused_with_bounded_memory() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    for (name, before) in [("header", ""), ("row", "a,b,employed\n1,2,1\n")] {
        let input = dir.path().join(format!("{name}.csv.gz"));
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&input).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(before.as_bytes()).unwrap();
        let chunk = vec![b'7'; 1 << 20];
        for _ in 0..400 {
            gz.write_all(&chunk).unwrap();
        }
        gz.write_all(b"\n").unwrap();
        gz.finish().unwrap();
        assert!(std::fs::metadata(&input).unwrap().len() < 4 << 20);
        let out = dir.path().join(format!("{name}-out"));
        let mut cfg = config(&input, &out, 4, Cluster::Single { threads: 1 });
        cfg.schema.label = "employed".into();
        let peak = peak_rss();
        let err = pipeline::run(&cfg).unwrap_err().to_string();
        let grew = peak_rss().saturating_sub(peak);
        assert!(
            err.contains(&format!("{name}.csv.gz")) && err.contains("longer than 1048576 bytes"),
            "{name}: {err}"
        );
        let at = if before.is_empty() { 0 } else { before.len() };
        assert!(
            err.contains(&format!("line at byte {at} ")),
            "{name}: {err}"
        );
        assert!(grew < 100 << 20, "{name}: memory grew by {grew} bytes");
        assert!(!out.exists(), "{name}: nothing published");
    }
}
