//! Data-parallel training: the model does not depend on processes x threads, the noise is added
//! once, a killed process stops the run with its name, and a resumed run keeps the budget.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{generated_shards, metrics, ok, relative_difference, weights};
use fastdp_tests::LoopbackCluster;
use shards::Location;
use tch::Device;
use trainer::mlp::{Mlp, Shape};
use trainer::{NoiseSpec, Privacy, TrainConfig};

/// `trainer` as process `process` of `cluster` (a hostfile cluster on loopback, each process
/// handed its listener), in the background.
fn member(cwd: &Path, cluster: &mut LoopbackCluster, process: usize, args: &[&str]) -> Child {
    cluster
        .member(
            process,
            Command::new(env!("CARGO_BIN_EXE_trainer"))
                .args(args)
                .current_dir(cwd)
                .env_remove("LD_LIBRARY_PATH")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .expect("trainer starts")
}

/// A hostfile cluster of two processes on loopback.
fn hostfile(dir: &Path) -> LoopbackCluster {
    LoopbackCluster::new(dir, "hosts", 2)
}

/// W x T in {1x1, 1x2, 2x1, 2x2}, and 2 processes joined through a hostfile, train the same
/// model (up to the order of float additions) to the same epsilon.
#[test]
fn any_processes_by_threads_give_the_single_worker_model() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 10_000, 5);
    let common = [
        "--data",
        shards.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        // q = 0.064: the sampler cuts the 8,000 training rows into two blocks of 4,096, and
        // the two workers' shares meet inside the first.
        "512",
        "--seed",
        "0",
        "--no-progress",
    ];
    let run = |name: &str, extra: &[&str]| {
        let save = dir.path().join(format!("{name}.safetensors"));
        let m = dir.path().join(format!("{name}.jsonl"));
        let mut args = common.to_vec();
        args.extend_from_slice(&[
            "--save",
            save.to_str().unwrap(),
            "--metrics-out",
            m.to_str().unwrap(),
        ]);
        args.extend_from_slice(extra);
        let out = ok(&common::trainer(dir.path(), &args));
        (weights(&save), metrics(&m), out)
    };
    let (one, one_m, _) = run("1x1", &[]);
    let mut runs = vec![
        ("1x2", run("1x2", &["--threads", "2"])),
        ("2x1", run("2x1", &["--workers", "2"])),
        ("2x2", run("2x2", &["--workers", "2", "--threads", "2"])),
    ];

    // The same job as two processes joined by a hostfile, each started on its own.
    let mut hosts = hostfile(dir.path());
    let save = dir.path().join("hosts.safetensors");
    let m = dir.path().join("hosts.jsonl");
    let mut args = common.to_vec();
    args.extend_from_slice(&[
        "--save",
        save.to_str().unwrap(),
        "--metrics-out",
        m.to_str().unwrap(),
    ]);
    let second = member(dir.path(), &mut hosts, 1, &args);
    let first = member(dir.path(), &mut hosts, 0, &args);
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    let out = ok(&first);
    ok(&second);
    assert!(
        String::from_utf8_lossy(&second.stdout).is_empty(),
        "only process 0 prints"
    );
    runs.push(("hostfile", (weights(&save), metrics(&m), out)));

    for (name, (w, m, out)) in &runs {
        let d = relative_difference(&one, w);
        assert!(d <= 1e-4, "{name}: weights differ by {d:e} relative");
        assert_eq!(m.len(), one_m.len());
        for (a, b) in m.iter().zip(&one_m) {
            assert_eq!(a["epsilon"], b["epsilon"], "{name}");
            assert_eq!(a["steps"], b["steps"], "{name}");
            assert_eq!(
                a["non_private"]["examples"], b["non_private"]["examples"],
                "{name}: the same sample"
            );
            let (x, y) = (
                a["test_accuracy"].as_f64().unwrap(),
                b["test_accuracy"].as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-3, "{name}: test accuracy {x} vs {y}");
        }
        let last = m.last().unwrap();
        assert!(
            last["non_private"]["comm_seconds"].as_f64().unwrap() >= 0.0,
            "{name}"
        );
        assert!(out.contains("workers"), "{name}: {out}");
    }
    assert!(one_m[1]["non_private"]["comm_seconds"].is_null());
}

/// Process 1 of 2 is killed mid-epoch: process 0 stops within seconds with an error naming
/// it. Rerun with --resume, the job continues from the last complete epoch and ends with the
/// steps, epsilon and model of a run that was never interrupted.
#[test]
fn a_killed_process_stops_the_run_and_a_resumed_run_keeps_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 10_000, 6);
    let ck = dir.path().join("ck");
    let args = |name: &str| -> Vec<String> {
        [
            "--data",
            shards.to_str().unwrap(),
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--seed",
            "0",
            "--no-progress",
            "--save",
            dir.path()
                .join(format!("{name}.safetensors"))
                .to_str()
                .unwrap(),
            "--metrics-out",
            dir.path().join(format!("{name}.jsonl")).to_str().unwrap(),
            "--peer-timeout",
            "30",
        ]
        .map(String::from)
        .to_vec()
    };
    let straight = args("straight");
    let straight: Vec<&str> = straight.iter().map(String::as_str).collect();
    ok(&common::trainer(dir.path(), &straight));

    let mut hosts = hostfile(dir.path());
    let mut run = args("broken");
    run.extend(["--checkpoint-dir", ck.to_str().unwrap()].map(String::from));
    let run: Vec<&str> = run.iter().map(String::as_str).collect();
    let mut second = member(dir.path(), &mut hosts, 1, &run);
    let first = member(dir.path(), &mut hosts, 0, &run);
    // Kill process 1 once epoch 1's checkpoint is written, while epoch 2 trains.
    let started = Instant::now();
    while !ck.join("checkpoint.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    second.kill().unwrap();
    let killed = Instant::now();
    second.wait().unwrap();
    let out = first.wait_with_output().unwrap();
    let stopped = killed.elapsed();
    let err = common::fails(&out);
    assert!(
        stopped < Duration::from_secs(10),
        "process 0 took {stopped:?} to stop"
    );
    assert!(
        err.contains("process 1") && err.contains("worker(s) [1]"),
        "the error names the dead process: {err}"
    );
    let done: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("checkpoint.json")).unwrap())
            .unwrap();
    let epochs_done = done["epochs_done"].as_u64().unwrap();
    assert!(epochs_done < 3, "killed before the end");

    // Resume on two local processes (any worker count may resume).
    let mut resume = args("broken");
    resume.extend(
        [
            "--checkpoint-dir",
            ck.to_str().unwrap(),
            "--resume",
            "--workers",
            "2",
        ]
        .map(String::from),
    );
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    let out = ok(&common::trainer(dir.path(), &resume));
    assert!(out.contains("resuming"), "{out}");

    let want = metrics(&dir.path().join("straight.jsonl"));
    let got = metrics(&dir.path().join("broken.jsonl"));
    let (last, want_last) = (got.last().unwrap(), want.last().unwrap());
    assert_eq!(last["epoch"], 3);
    assert_eq!(last["steps"], want_last["steps"], "every step counts once");
    assert_eq!(last["epsilon"], want_last["epsilon"]);
    assert_eq!(
        got.len(),
        3,
        "the metrics file holds each epoch once: {got:?}"
    );
    let d = relative_difference(
        &weights(&dir.path().join("straight.safetensors")),
        &weights(&dir.path().join("broken.safetensors")),
    );
    assert!(d <= 1e-4, "resumed model differs by {d:e}");
}

/// With one example (always sampled, B = 1), clipping at C = 1 and noise multiplier 1, an SGD
/// step with lr 1 moves each parameter by its clipped gradient (norm at most 1 over 1601
/// parameters) plus N(0, 1): across seeds the update's mean square is about (sigma C)^2 = 1 with
/// 2 workers as with 1, not 2 (noise added by each worker).
#[test]
fn the_noise_is_added_once() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("one");
    std::fs::create_dir(&shards).unwrap();
    let header = "key,employed,sex,disability\n";
    std::fs::write(shards.join("part-00000"), format!("{header}7,1,1,0\n")).unwrap();
    std::fs::write(shards.join("part-00001"), header).unwrap();
    // Committed, as a Hadoop job's output would be (readers require _SUCCESS).
    std::fs::write(shards.join("_SUCCESS"), "").unwrap();

    let mean_square = |threads: usize| {
        let mut sum = 0.0;
        let mut count = 0;
        for seed in 0..4 {
            let mut c = TrainConfig::new(Location::Local(shards.clone()));
            c.epochs = 1;
            c.batch_size = 1;
            c.lr = 1.0;
            c.test_fraction = 0.0;
            c.attack_feature = None;
            c.hidden = vec![400];
            c.seed = Some(seed);
            if let Privacy::Private(dp) = &mut c.privacy {
                dp.l2_norm_clip = 1.0;
                dp.noise = NoiseSpec::Multiplier(1.0);
                dp.accountant = accountant::AccountantKind::Rdp;
            }
            c.cluster = cluster::Cluster::Single { threads };
            let report = trainer::run(&c).unwrap();
            assert_eq!(report.steps, 1);
            let before = Mlp::new(Shape::new(2, &[400]), seed, Device::Cpu).unwrap();
            let update = report.model.flat() - before.flat();
            sum += update.square().sum(tch::Kind::Double).double_value(&[]);
            count += update.numel();
        }
        sum / count as f64
    };
    let (one, two) = (mean_square(1), mean_square(2));
    // 4 x 1601 draws: the standard error of the mean square is ~2.5%.
    assert!((0.88..1.12).contains(&one), "1 worker: {one}");
    assert!(
        (0.88..1.12).contains(&two),
        "2 workers: {two} (2 if each added noise)"
    );
}

/// Process 1 joins process 0 with another clip bound: both fail before the first step, naming
/// the setting and the process, instead of training half the data unclipped.
#[test]
fn processes_with_different_settings_both_fail_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 2_000, 7);
    let mut hosts = hostfile(dir.path());
    let args = |clip: &'static str| {
        vec![
            "--data".to_string(),
            shards.to_str().unwrap().to_string(),
            "--epochs".into(),
            "1".into(),
            "--no-progress".into(),
            "--l2-norm-clip".into(),
            clip.into(),
            "--connect-timeout".into(),
            "30".into(),
        ]
    };
    let (a, b) = (args("3"), args("1e9"));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let second = member(dir.path(), &mut hosts, 1, &b);
    let first = member(dir.path(), &mut hosts, 0, &a);
    for (process, out) in [
        (0, first.wait_with_output().unwrap()),
        (1, second.wait_with_output().unwrap()),
    ] {
        let err = common::fails(&out);
        assert!(
            err.contains("`l2_norm_clip`") && err.contains("process 1"),
            "process {process}: {err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("epoch"),
            "process {process} trained"
        );
    }
}
