//! `pipeline generate` and `pipeline run` from and to S3 give the bytes of the local runs
//! (against the local test server: run through `scripts/with-s3.sh`; skipped without it, except
//! under `CI=true`).
#![cfg(feature = "s3")]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use shards::Manifest;
use shards::s3::S3;

fn server() -> Option<S3> {
    shards::s3::test_server()
}

fn bucket(s3: &S3, name: &str) -> String {
    let name = format!("pipeline-{name}-{}", std::process::id());
    s3.block_on(s3.client().create_bucket().bucket(&name).send())
        .expect("create bucket");
    name
}

fn pipeline(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        let secret = std::env::var(var).unwrap();
        assert!(!stderr.contains(&secret), "{var} in the output: {stderr}");
    }
    out
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn failed(out: Output) -> String {
    assert!(!out.status.success(), "succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every object under `prefix`, by name, with its bytes.
fn read_prefix(s3: &S3, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let listing = s3.list_dir(bucket, prefix).unwrap();
    assert!(listing.dirs.is_empty(), "left over: {:?}", listing.dirs);
    listing
        .files
        .into_iter()
        .map(|(name, _)| {
            let bytes = s3.get_all(bucket, &format!("{prefix}/{name}")).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Asserts an S3 output holds the local output's files with the same bytes; the manifests may
/// differ only in the input they name.
fn assert_same(local: &Path, remote: BTreeMap<String, Vec<u8>>) {
    let local = common::read_dir(local);
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        remote.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &local {
        if name == "_manifest.json" {
            let mut a: Manifest = serde_json::from_slice(bytes).unwrap();
            let mut b: Manifest = serde_json::from_slice(&remote[name]).unwrap();
            a.options.input.clear();
            b.options.input.clear();
            assert_eq!(a, b);
        } else {
            assert!(bytes == &remote[name], "{name} differs");
        }
    }
}

#[test]
fn generate_and_run_on_s3_match_the_local_runs() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "roundtrip");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let gen_args = ["generate", "--rows", "20000", "--seed", "3", "--output"];
    ok(pipeline(dir, &[&gen_args[..], &["gen.csv"]].concat()));
    let s3_gen = format!("s3://{b}/in/gen.csv");
    ok(pipeline(dir, &[&gen_args[..], &[&s3_gen]].concat()));
    assert!(s3.get_all(&b, "in/gen.csv").unwrap() == std::fs::read(dir.join("gen.csv")).unwrap());
    let err = failed(pipeline(dir, &[&gen_args[..], &[&s3_gen]].concat()));
    assert!(
        err.contains(&s3_gen) && err.contains("--overwrite"),
        "{err}"
    );

    // Awkward line ends across range boundaries, from S3, by 2 processes x 2 threads.
    std::fs::create_dir(dir.join("messy")).unwrap();
    let messy = common::messy_csv(&dir.join("messy"), 20_000);
    std::fs::copy(&messy, dir.join("messy.csv")).unwrap();
    let mut w = shards::store::create_file(
        &shards::Location::parse(&format!("s3://{b}/in/messy.csv")).unwrap(),
        false,
        &shards::S3Options::default(),
    )
    .unwrap();
    w.write_all(&std::fs::read(&messy).unwrap()).unwrap();
    w.finish().unwrap();
    let run = ["run", "--workers", "2", "--threads", "2", "--shards", "8"];
    for (input, remote_input) in [
        ("gen.csv", s3_gen.clone()),
        ("messy.csv", format!("s3://{b}/in/messy.csv")),
    ] {
        let local_out = dir.join(format!("out-{input}"));
        let local_out = local_out.to_str().unwrap();
        ok(pipeline(
            dir,
            &[&run[..], &["--input", input, "--output", local_out]].concat(),
        ));
        let remote_out = format!("s3://{b}/out-{input}");
        ok(pipeline(
            dir,
            &[
                &run[..],
                &["--input", &remote_input, "--output", &remote_out],
            ]
            .concat(),
        ));
        assert_same(
            Path::new(local_out),
            read_prefix(&s3, &b, &format!("out-{input}")),
        );
    }

    // Reading the S3 shards back through the Dataset gives the local records.
    let remote = shards::Dataset::open(
        &shards::Location::parse(&format!("s3://{b}/out-gen.csv")).unwrap(),
        &shards::S3Options::default(),
    )
    .unwrap()
    .load()
    .unwrap();
    let local = shards::Dataset::open(
        &shards::Location::Local(dir.join("out-gen.csv")),
        &shards::S3Options::default(),
    )
    .unwrap()
    .load()
    .unwrap();
    assert_eq!(remote, local);
}

#[test]
fn gzip_input_on_s3_is_read_by_one_worker() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "gzip");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(pipeline(
        dir,
        &["generate", "--rows", "15000", "--output", "gen.csv"],
    ));
    let plain = std::fs::read(dir.join("gen.csv")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let mut w = shards::store::create_file(
        &shards::Location::parse(&format!("s3://{b}/gen.csv.gz")).unwrap(),
        false,
        &shards::S3Options::default(),
    )
    .unwrap();
    w.write_all(&gz).unwrap();
    w.finish().unwrap();

    let run = ["run", "--workers", "2", "--threads", "2", "--shards", "5"];
    ok(pipeline(
        dir,
        &[&run[..], &["--input", "gen.csv", "--output", "local"]].concat(),
    ));
    let input = format!("s3://{b}/gen.csv.gz");
    let output = format!("s3://{b}/shards");
    ok(pipeline(
        dir,
        &[&run[..], &["--input", &input, "--output", &output]].concat(),
    ));
    assert_same(&dir.join("local"), read_prefix(&s3, &b, "shards"));
}

#[test]
fn missing_bucket_or_key_fails_clearly_and_a_rerun_succeeds() {
    let Some(s3) = server() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(pipeline(
        dir,
        &["generate", "--rows", "2000", "--output", "gen.csv"],
    ));
    let gone = format!("pipeline-later-{}", std::process::id());
    let output = format!("s3://{gone}/shards");
    let run = |input: &str, extra: &[&str]| {
        pipeline(
            dir,
            &[
                &[
                    "run",
                    "--threads",
                    "2",
                    "--input",
                    input,
                    "--output",
                    &output,
                ][..],
                extra,
            ]
            .concat(),
        )
    };

    let err = failed(run("gen.csv", &[]));
    assert!(err.contains(&format!("no such bucket '{gone}'")), "{err}");
    let err = failed(run(&format!("s3://{gone}/gen.csv"), &[]));
    assert!(err.contains(&format!("no such bucket '{gone}'")), "{err}");

    // The fault is fixed: the bucket exists now.
    s3.block_on(s3.client().create_bucket().bucket(&gone).send())
        .unwrap();
    let err = failed(run(&format!("s3://{gone}/nope.csv"), &[]));
    assert!(
        err.contains(&format!("s3://{gone}/nope.csv")) && err.contains("no such key"),
        "{err}"
    );
    assert!(!s3.exists(&gone, "shards/_SUCCESS").unwrap());
    ok(run("gen.csv", &[]));
    assert!(s3.exists(&gone, "shards/_SUCCESS").unwrap());
    let err = failed(run("gen.csv", &[]));
    assert!(err.contains("--overwrite"), "{err}");
    ok(run("gen.csv", &["--overwrite", "--s3-path-style"]));
}
