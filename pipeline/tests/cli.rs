//! The `pipeline` binary as a user runs it: defaults, subcommands, errors.

use std::process::Command;

fn pipeline(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.current_dir(dir);
    c
}

#[test]
fn bare_pipeline_reads_capums_and_writes_shards() {
    let dir = tempfile::tempdir().unwrap();
    let generated = pipeline(dir.path())
        .args(["generate", "--rows", "3000"])
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    assert!(dir.path().join("CaPUMS5full.csv").exists());
    let run = pipeline(dir.path())
        .args(["--workers", "1", "--threads", "2"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = String::from_utf8(run.stdout).unwrap();
    assert!(
        summary.contains("3000 rows read") && summary.contains("16 shards"),
        "{summary}"
    );
    assert!(dir.path().join("shards/_SUCCESS").exists());
    assert!(dir.path().join("shards/part-00015").exists());
}

#[test]
fn errors_are_clear_and_exit_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--input", "missing.csv"], "missing.csv"),
        (&["--threads", "0"], "--threads"),
        (&["--shards", "0"], "--shards"),
        (&["--process", "1"], "--hostfile"),
        (&["--input", "hdfs://x/y"], "only local paths and s3://"),
        (&["generate", "--na-rate", "2"], "--na-rate"),
    ];
    for (args, needle) in cases {
        let out = pipeline(dir.path()).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Process 0's own failure is reported at once, not hidden behind its children's.
#[test]
fn a_multi_process_run_reports_process_zero_errors_first() {
    let dir = tempfile::tempdir().unwrap();
    let generated = pipeline(dir.path())
        .args(["generate", "--rows", "100"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    std::fs::create_dir(dir.path().join("shards")).unwrap();
    std::fs::write(dir.path().join("shards/part-00000"), "old").unwrap();
    let started = std::time::Instant::now();
    let out = pipeline(dir.path())
        .args(["--workers", "2", "--connect-timeout", "30"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not empty"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

/// Inputs and outputs that are not what they seem, and absurd flags: each a clear error that
/// names what is wrong, before anything is written.
#[test]
fn odd_inputs_outputs_and_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let header = "sex,married,black,asian,collegedegree,employed,militaryservice,uscitizen,disability,englishability,blackfemale";
    let mut bad_utf8 = format!("{header},targetted").into_bytes();
    bad_utf8.insert(bad_utf8.len(), 0xff);
    bad_utf8.extend_from_slice(b"\n1,0,1,0,1,1,0,1,0,1,1,0\n");
    std::fs::write(d.join("bad-header.csv"), bad_utf8).unwrap();
    std::fs::write(d.join("no-header.csv"), "1,0,1\n0,1,1\n").unwrap();
    std::fs::write(d.join("long.csv"), vec![b'a'; 2 << 20]).unwrap();
    let wide: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
    std::fs::write(d.join("wide.csv"), wide.join(",") + "\n").unwrap();
    let fifo = Command::new("mkfifo").arg(d.join("fifo")).status().unwrap();
    assert!(fifo.success());
    std::fs::write(d.join("real.csv"), "keep").unwrap();
    std::os::unix::fs::symlink(d.join("real.csv"), d.join("link.csv")).unwrap();

    let cases: [(&[&str], &str); 11] = [
        (
            &["run", "--input", "bad-header.csv"],
            "column 12 of the header ('targetted\u{FFFD}') is not valid UTF-8",
        ),
        (&["run", "--input", "no-header.csv"], "--columns"),
        (&["run", "--input", "long.csv"], "longer than 1048576 bytes"),
        (&["run", "--input", "wide.csv"], "(100000 columns)"),
        (&["run", "--input", "-"], "standard input"),
        (&["run", "--input", "fifo"], "not a regular file"),
        (
            &["run", "--threads", "100000"],
            "--threads 100000 is out of range",
        ),
        (
            &["run", "--workers", "1000"],
            "--workers 1000 is out of range",
        ),
        (
            &["run", "--shards", "20000"],
            "--shards 20000 is out of range",
        ),
        (
            &[
                "generate",
                "--rows",
                "5",
                "--output",
                "link.csv",
                "--overwrite",
            ],
            "symbolic link",
        ),
        (
            &["generate", "--rows", "5", "--output", "fifo", "--overwrite"],
            "not a regular file",
        ),
    ];
    for (args, needle) in cases {
        let out = pipeline(d).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.len() < 10_000, "{args:?}: a {} byte message", err.len());
    }
    assert_eq!(std::fs::read_to_string(d.join("real.csv")).unwrap(), "keep");
    assert!(!d.join("shards").exists());
}
