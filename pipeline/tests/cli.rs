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
