//! The dataflow against the plain sequential reference: byte-identical output at 1, 2 and 4
//! threads, with 2 processes (local and from a hostfile), and for gzip input.

mod common;

use std::io::Write;
use std::process::Command;

use common::{assert_same_output, config, messy_csv};
use pipeline::Cluster;
use pipeline::reference::run_sequential;

#[test]
fn threads_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let input = messy_csv(dir.path(), 20_000);
    let reference = dir.path().join("reference");
    let expected = run_sequential(&config(
        &input,
        &reference,
        16,
        Cluster::Single { threads: 1 },
    ))
    .unwrap();
    // Every awkward line is accounted for.
    let dropped = &expected.rows.dropped;
    let by = |name: &str| {
        dropped
            .iter()
            .find(|(r, _)| r.name() == name)
            .map(|(_, n)| *n)
            .unwrap()
    };
    assert_eq!(by("blank_line"), 1);
    assert_eq!(by("field_count"), 2);
    assert_eq!(by("not_numeric"), 1);
    assert_eq!(by("label_not_binary"), 1);
    assert_eq!(by("invalid_utf8"), 1);
    assert_eq!(expected.rows.header_lines, 2);
    for threads in [1, 2, 4] {
        let out = dir.path().join(format!("t{threads}"));
        let report = pipeline::run(&config(&input, &out, 16, Cluster::Single { threads })).unwrap();
        assert_eq!(
            report.manifest.as_ref(),
            Some(&expected),
            "{threads} threads"
        );
        assert_same_output(&reference, &out);
    }
}

/// Households as privacy units, capped at 3 rows: the same output as the reference at 1, 2 and
/// 4 threads, held in memory and spilled (the cap reads each shard twice).
#[test]
fn units_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("households.csv");
    pipeline::generate(&pipeline::GenerateConfig {
        rows: 30_000,
        seed: 4,
        na_rate: 0.02,
        households: true,
        output: shards::Location::Local(input.clone()),
        overwrite: false,
        s3: Default::default(),
    })
    .unwrap();
    let with_units = |out: &std::path::Path, threads| {
        let mut c = config(&input, out, 8, Cluster::Single { threads });
        c.schema.unit = Some("household".into());
        c.max_rows_per_unit = Some(3);
        c
    };
    let reference = dir.path().join("reference");
    let expected = run_sequential(&with_units(&reference, 1)).unwrap();
    assert!(
        expected.rows.over_unit_cap > 0,
        "some households are over 3"
    );
    assert_eq!(expected.schema.unit.as_deref(), Some("household"));
    for threads in [1, 2, 4] {
        for budget in [usize::MAX, 1] {
            let out = dir.path().join(format!("t{threads}-{budget}"));
            let mut c = with_units(&out, threads);
            c.buffer_bytes = budget;
            let report = pipeline::run(&c).unwrap();
            assert_eq!(
                report.manifest.as_ref(),
                Some(&expected),
                "{threads} threads"
            );
            assert_same_output(&reference, &out);
        }
    }
}

#[test]
fn odd_shard_counts_and_more_workers_than_shards() {
    let dir = tempfile::tempdir().unwrap();
    let input = messy_csv(dir.path(), 3_000);
    for shards in [1, 3] {
        let reference = dir.path().join(format!("ref{shards}"));
        run_sequential(&config(
            &input,
            &reference,
            shards,
            Cluster::Single { threads: 1 },
        ))
        .unwrap();
        let out = dir.path().join(format!("out{shards}"));
        pipeline::run(&config(
            &input,
            &out,
            shards,
            Cluster::Single { threads: 4 },
        ))
        .unwrap();
        assert_same_output(&reference, &out);
    }
}

#[test]
fn gzip_input_matches_plain() {
    let dir = tempfile::tempdir().unwrap();
    let input = messy_csv(dir.path(), 5_000);
    let gz = dir.path().join("messy.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(&input).unwrap()).unwrap();
    enc.finish().unwrap();
    let plain = dir.path().join("plain");
    pipeline::run(&config(&input, &plain, 8, Cluster::Single { threads: 1 })).unwrap();
    let zipped = dir.path().join("zipped");
    let m = pipeline::run(&config(&gz, &zipped, 8, Cluster::Single { threads: 3 }))
        .unwrap()
        .manifest
        .unwrap();
    assert!(m.options.input.ends_with(".gz"));
    // Only the manifest's record of the input name differs.
    for (name, bytes) in common::read_dir(&plain) {
        if name != "_manifest.json" {
            assert!(
                bytes == std::fs::read(zipped.join(&name)).unwrap(),
                "{name} differs"
            );
        }
    }
}

fn pipeline_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

#[test]
fn two_processes_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let input = messy_csv(dir.path(), 20_000);
    let reference = dir.path().join("reference");
    run_sequential(&config(
        &input,
        &reference,
        16,
        Cluster::Single { threads: 1 },
    ))
    .unwrap();

    // Processes started by `pipeline` itself.
    let local = dir.path().join("local");
    let status = pipeline_cmd()
        .args([
            "--input",
            input.to_str().unwrap(),
            "--output",
            local.to_str().unwrap(),
        ])
        .args(["--workers", "2", "--threads", "2", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());
    assert_same_output(&reference, &local);

    // A cluster from a hostfile, each process started separately (as on separate machines).
    let mut hosts = fastdp_tests::LoopbackCluster::new(dir.path(), "hosts", 2);
    let out = dir.path().join("cluster");
    let children: Vec<_> = (0..2)
        .map(|p| {
            hosts
                .member(
                    p,
                    pipeline_cmd()
                        .arg("run")
                        .args([
                            "--input",
                            input.to_str().unwrap(),
                            "--output",
                            out.to_str().unwrap(),
                        ])
                        .args(["--threads", "1", "--quiet"]),
                )
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_same_output(&reference, &out);
}

#[test]
fn a_tiny_buffer_spills_runs_and_changes_nothing() {
    // A 1-byte budget makes every worker spill what it holds for each batch it takes, so the
    // shards are put together from many spilled pieces on disk.
    let dir = tempfile::tempdir().unwrap();
    let input = messy_csv(dir.path(), 60_000);
    let reference = dir.path().join("reference");
    let expected = run_sequential(&config(
        &input,
        &reference,
        7,
        Cluster::Single { threads: 1 },
    ))
    .unwrap();
    for threads in [1, 3] {
        let out = dir.path().join(format!("t{threads}"));
        let mut c = config(&input, &out, 7, Cluster::Single { threads });
        c.buffer_bytes = 1;
        let report = pipeline::run(&c).unwrap();
        assert_eq!(
            report.manifest.as_ref(),
            Some(&expected),
            "{threads} threads"
        );
        assert_same_output(&reference, &out);
    }
    // Two processes of two threads each, through the command line's --buffer-mb (1 MB a
    // process, 512 KiB a worker: a few runs each).
    let out = dir.path().join("processes");
    let status = pipeline_cmd()
        .args(["--input", input.to_str().unwrap()])
        .args(["--output", out.to_str().unwrap(), "--shards", "7"])
        .args([
            "--workers",
            "2",
            "--threads",
            "2",
            "--buffer-mb",
            "1",
            "--quiet",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_same_output(&reference, &out);
}
