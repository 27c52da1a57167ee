//! `trainer --data s3://bucket/prefix` trains exactly as on the same shards on local disk
//! (against the local test server: run through `scripts/with-s3.sh`; skipped without it, except
//! under `CI=true`).
#![cfg(feature = "s3")]

mod common;

use std::time::Duration;

use shards::s3::S3;
use shards::{Location, SchemaOptions};

fn server() -> Option<S3> {
    shards::s3::test_server()
}

#[test]
fn trains_on_shards_in_s3_as_on_local_disk() {
    let Some(s3) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let local = common::generated_shards(dir.path(), 3_000, 5);
    let bucket = format!("trainer-{}", std::process::id());
    s3.block_on(s3.client().create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    pipeline::run(&pipeline::RunConfig {
        input: Location::Local(dir.path().join("input.csv")),
        output: Location::S3 {
            bucket: bucket.clone(),
            key: "shards".into(),
        },
        shards: 4,
        schema: SchemaOptions::default(),
        cluster: pipeline::Cluster::Single { threads: 1 },
        overwrite: false,
        connect_timeout: Duration::from_secs(10),
        peer_timeout: Duration::from_secs(120),
        allow_empty: false,
        progress: false,
    })
    .expect("pipeline run to S3");

    let remote = format!("s3://{bucket}/shards");
    let train = |name: &str, data: &str| {
        let out = dir.path().join(name);
        std::fs::create_dir(&out).unwrap();
        let args = [
            "--data",
            data,
            "--epochs",
            "1",
            "--batch-size",
            "64",
            "--seed",
            "3",
        ];
        common::ok(&common::trainer(
            &out,
            &[&args[..], &["--no-progress", "--save", "m.safetensors"]].concat(),
        ));
        std::fs::read(out.join("m.safetensors")).unwrap()
    };
    let on_disk = train("local", local.to_str().unwrap());
    let on_s3 = train("s3", &remote);
    assert!(
        on_disk == on_s3,
        "the model trained from S3 differs from the local one"
    );

    let missing = common::fails(&common::trainer(
        dir.path(),
        &["--data", &format!("s3://{bucket}/nothing")],
    ));
    assert!(missing.contains(&bucket), "{missing}");
}
