//! The whole job through the built binaries: `pipeline generate`, `pipeline run` to a local
//! directory and to S3, and `trainer` on each output; and the same job as a cluster of
//! processes joined by hostfiles, first `pipeline` then `trainer`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fastdp_tests::{
    LoopbackCluster, assert_ok as ok, assert_same_files, assert_same_model, dir_files, exec,
    pipeline, pipeline_generate, trainer, wait_bounded,
};

/// `bin args` in `cwd`, its output piped.
fn command(bin: &str, cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .current_dir(cwd)
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// `bin args` as process `p` of `cluster`.
fn spawn_member(
    bin: &str,
    cwd: &Path,
    args: &[&str],
    cluster: &mut LoopbackCluster,
    p: usize,
) -> Child {
    cluster
        .member(p, &mut command(bin, cwd, args))
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} starts: {e}"))
}

/// `pipeline generate` of `rows` synthetic rows into `dir/input.csv`.
fn generated_input(dir: &Path, rows: u64) -> PathBuf {
    let csv = dir.join("input.csv");
    pipeline_generate(&csv, rows, 5, 0.01);
    csv
}

/// The training flags every run here shares: seeded, so two runs can be compared.
const TRAIN: [&str; 7] = [
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--seed",
    "3",
    "--no-progress",
];

/// `pipeline run` to a local directory and to S3 (the local test server), then `trainer` on
/// each: the two models are byte-identical, and a prefix that holds no shards is named.
#[test]
fn shards_on_local_disk_and_in_s3_train_the_same_model() {
    let Some(s3) = shards::s3::test_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let csv = generated_input(dir.path(), 3_000);
    let bucket = format!("e2e-{}", std::process::id());
    s3.block_on(s3.client().create_bucket().bucket(&bucket).send())
        .expect("create bucket");
    let remote = format!("s3://{bucket}/shards");
    for output in ["local", remote.as_str()] {
        let args = ["run", "--shards", "4", "--quiet", "--input"];
        let out = exec(
            pipeline(),
            dir.path(),
            &[&args[..], &[csv.to_str().unwrap(), "--output", output]].concat(),
        );
        ok(&format!("pipeline run --output {output}"), &out);
    }

    let train = |name: &str, data: &str| {
        let save = format!("{name}.safetensors");
        let args = ["--data", data, "--save", &save];
        ok(
            &format!("trainer --data {data}"),
            &exec(trainer(), dir.path(), &[&args[..], &TRAIN[..]].concat()),
        );
        std::fs::read(dir.path().join(&save)).unwrap()
    };
    let on_disk = train("local", "local");
    let on_s3 = train("s3", &remote);
    assert!(
        on_disk == on_s3,
        "the model trained from S3 differs from the local one"
    );

    let missing = exec(
        trainer(),
        dir.path(),
        &["--data", &format!("s3://{bucket}/nothing")],
    );
    assert!(!missing.status.success(), "no shards, yet the trainer ran");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains(&bucket), "{stderr}");
}

/// `trainer --data s3://...` on an endpoint that accepts and never answers fails, naming the
/// endpoint, within what its `--s3-*` flags allow (one attempt of 1 s), far sooner than the
/// defaults (three attempts of 15 s): the flags reach the store the shards are read with.
#[test]
fn trainer_s3_flags_bound_a_silent_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(trainer())
        .args(["--data", "s3://silent/shards", "--no-progress"])
        .args(["--s3-read-timeout", "1", "--s3-max-attempts", "1"])
        .current_dir(dir.path())
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_MAX_ATTEMPTS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(
        &mut child,
        Duration::from_secs(90),
        "trainer on a silent S3",
    );
    let took = started.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "trained on a silent endpoint: {err}");
    assert!(err.contains(&endpoint), "{err}");
    assert!(
        took < Duration::from_secs(30),
        "took {took:?}: the flags did not reach the store (the defaults allow 45 s and more)\n{err}"
    );
}

/// A two-process `pipeline` joined by a hostfile writes the one-process output byte for byte,
/// and a two-process `trainer` joined by another hostfile trains on it the model (within float
/// summation order) and the epsilon of one process.
#[test]
fn hostfile_clusters_of_pipeline_and_trainer_match_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = generated_input(d, 6_000);
    let input = csv.to_str().unwrap();
    let hostfile = |name: &str| LoopbackCluster::new(d, name, 2);

    let run = ["run", "--shards", "4", "--quiet", "--input", input];
    ok(
        "pipeline run (one process)",
        &exec(pipeline(), d, &[&run[..], &["--output", "one"]].concat()),
    );
    let mut hosts = hostfile("pipeline-hosts");
    let members: Vec<Child> = (0..2)
        .map(|p| {
            let args = ["--output", "cluster", "--threads", "1"];
            spawn_member(
                pipeline(),
                d,
                &[&run[..], &args[..]].concat(),
                &mut hosts,
                p,
            )
        })
        .collect();
    for (p, child) in members.into_iter().enumerate() {
        ok(
            &format!("pipeline process {p}"),
            &child.wait_with_output().unwrap(),
        );
    }
    let (one, clustered) = (dir_files(&d.join("one")), dir_files(&d.join("cluster")));
    assert_same_files("pipeline over a hostfile", &one, &clustered);

    let train = ["--data", "one"];
    let single = [
        "--save",
        "single.safetensors",
        "--metrics-out",
        "single.jsonl",
    ];
    ok(
        "trainer (one process)",
        &exec(
            trainer(),
            d,
            &[&train[..], &TRAIN[..], &single[..]].concat(),
        ),
    );
    let mut hosts = hostfile("trainer-hosts");
    let save = [
        "--save",
        "hosts.safetensors",
        "--metrics-out",
        "hosts.jsonl",
    ];
    let members: Vec<Child> = (0..2)
        .map(|p| {
            let args = [&train[..], &TRAIN[..], &save[..]].concat();
            spawn_member(trainer(), d, &args, &mut hosts, p)
        })
        .collect();
    for (p, child) in members.into_iter().enumerate() {
        ok(
            &format!("trainer process {p}"),
            &child.wait_with_output().unwrap(),
        );
    }
    assert_same_model(
        (&d.join("single.safetensors"), &d.join("single.jsonl")),
        (&d.join("hosts.safetensors"), &d.join("hosts.jsonl")),
    );
}
