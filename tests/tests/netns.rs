//! A cluster of machines without leaving the machine: three network namespaces joined by veth
//! links to a bridge, one `pipeline` (then `trainer`) process in each joined by a hostfile of
//! the namespaces' addresses, the input and output in a directory all three see (the NFS case)
//! and on an S3 server inside the namespaces: the outputs equal one process's (the pipeline's
//! byte for byte, the trainer's model within 1e-4 and the same epsilon). Then real faults: one
//! member SIGKILLed, or its link taken down mid-run, and the other two must fail naming it,
//! with nothing committed.
//!
//! The network: a hub namespace holds a bridge with 10.213.0.254/24 (where the S3 server
//! listens); member namespace i holds one end of a veth pair, `eth0` with 10.213.0.(i+1)/24,
//! whose other end is a port of the bridge. Every address lives inside these namespaces, none
//! has a route off the bridge, and the root namespace gets no address and no route, so no
//! traffic can leave the machine. The names carry this test run's process id; a guard kills
//! whatever still runs inside them and deletes them, also when the test fails.
//!
//! Where namespaces cannot be made (not root, no `ip`) the tests skip with a message saying
//! why. Under `CI=true` (CI runs as root on machines where `ip netns` works) they fail instead,
//! except when the kernel refuses outright (`Operation not permitted` as root: a container without
//! CAP_SYS_ADMIN, or a seccomp filter), which no setting of ours can change.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fastdp_tests::{
    assert_ok as ok, assert_same_files, assert_same_model, dir_files, exec, pipeline,
    pipeline_generate, trainer, wait_bounded,
};

/// The members of every cluster here.
const MEMBERS: usize = 3;

/// The hub's address, where the S3 server listens.
const HUB: &str = "10.213.0.254";

/// Member `i`'s address.
fn member_address(i: usize) -> String {
    format!("10.213.0.{}", i + 1)
}

/// The key file beside the hostfile `hosts` ([`Net::hostfile`] writes it).
fn key_of(hosts: &str) -> std::path::PathBuf {
    Path::new(&format!("{hosts}.key")).to_path_buf()
}

/// Whether the tests run in CI, where skipping is not allowed.
fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Runs `ip args..`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`ip` cannot be started ({e}): install iproute2"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether this process runs as root (effective uid 0).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1).map(|u| u == "0"))
            .unwrap_or(false)
    })
}

/// Whether an `ip` error says the kernel refuses (rather than a mistake of ours or a missing
/// tool): no permission as root, or no veth/bridge support.
fn kernel_forbids(err: &str) -> bool {
    [
        "Operation not permitted",
        "Permission denied",
        "Operation not supported",
        "Unknown device type",
    ]
    .iter()
    .any(|m| err.contains(m))
}

/// The namespaces of one test: created by [`Net::new`], deleted (with everything still
/// running inside) when dropped.
struct Net {
    hub: String,
    members: Vec<String>,
    /// The namespaces created so far, for the guard.
    made: Vec<String>,
}

impl Net {
    /// Three member namespaces and a hub, wired as the file's doc says; `None` (after saying
    /// why) where namespaces cannot be made here.
    fn new(test: &str) -> Option<Net> {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "fdp{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::SeqCst)
        );
        let mut net = Net {
            hub: format!("{prefix}-hub"),
            members: (0..MEMBERS).map(|i| format!("{prefix}-m{i}")).collect(),
            made: Vec::new(),
        };
        if !is_root() {
            let why = "not root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)";
            assert!(
                !in_ci(),
                "{test}: CI=true but {why}; CI runs these tests as root"
            );
            eprintln!("skipped {test}: {why}");
            return None;
        }
        if let Err(e) = ip(&["netns", "add", &net.hub]) {
            if kernel_forbids(&e) {
                eprintln!("skipped {test}: the kernel refuses network namespaces here: {e}");
                return None;
            }
            assert!(!in_ci(), "{test}: CI=true but no network namespace: {e}");
            eprintln!("skipped {test}: no network namespace: {e}");
            return None;
        }
        net.made.push(net.hub.clone());
        if let Err(e) = net.wire() {
            if kernel_forbids(&e) {
                eprintln!("skipped {test}: the kernel refuses the test network: {e}");
                return None;
            }
            panic!("{test}: setting up the namespaces: {e}");
        }
        Some(net)
    }

    /// The bridge in the hub and a veth link from each member to it, with the addresses.
    fn wire(&mut self) -> Result<(), String> {
        let hub = self.hub.clone();
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, ns) in self.members.clone().iter().enumerate() {
            ip(&["netns", "add", ns])?;
            self.made.push(ns.clone());
            let port = format!("v{i}");
            // Both ends are made inside their namespaces: no name in the root namespace.
            ip(&[
                "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &port, "netns",
                &hub,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &hub, "link", "set", &port, "up"])?;
            let address = format!("{}/24", member_address(i));
            ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// `bin` inside namespace `ns`, with no crash point armed and no inherited library path.
    fn command(ns: &str, bin: &str, cwd: &Path) -> Command {
        let mut c = Command::new("ip");
        // `ip netns exec` enters the namespace and execs `bin`: the child's pid is `bin`'s.
        c.args(["netns", "exec", ns, bin])
            .current_dir(cwd)
            .env_remove("LD_LIBRARY_PATH")
            .env_remove("FASTDP_CRASH_AT")
            .env_remove("FASTDP_CRASH_HOW")
            .env_remove("FASTDP_CRASH_PROCESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// `bin` in member `i`'s namespace.
    fn member(&self, i: usize, bin: &str, cwd: &Path) -> Command {
        Net::command(&self.members[i], bin, cwd)
    }

    /// Writes a hostfile of the members' addresses with `port` into `path`, and beside it
    /// (`path.key`) a fresh cluster key, readable by its owner only: addresses beyond loopback
    /// need one. (Fixed ports are safe here: nothing else runs in the test's namespaces.)
    fn hostfile(&self, path: &Path, port: u16) -> String {
        let lines: Vec<String> = (0..MEMBERS)
            .map(|i| format!("{}:{port}", member_address(i)))
            .collect();
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
        fastdp_tests::write_key_file(
            &key_of(path.to_str().unwrap()),
            &cluster::ClusterKey::generate().unwrap(),
        );
        path.to_str().unwrap().to_string()
    }

    /// Takes member `i`'s link down: its peers hear nothing more from it, and no connection
    /// closes (no reset, no end of stream).
    fn cut(&self, i: usize) {
        ip(&["-n", &self.members[i], "link", "set", "eth0", "down"]).unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Only processes this test started run in its namespaces.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let started = Instant::now();
            while ip(&["netns", "del", ns]).is_err() && started.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Starts one process per member with `args` and `--hostfile hosts --process i`, and waits for
/// all of them.
fn cluster(net: &Net, bin: &str, cwd: &Path, args: &[&str], hosts: &str, env: &[(&str, &str)]) {
    let children: Vec<Child> = (0..MEMBERS)
        .map(|i| {
            net.member(i, bin, cwd)
                .args(args)
                .args(["--hostfile", hosts, "--process", &i.to_string()])
                .arg("--cluster-key-file")
                .arg(key_of(hosts))
                .envs(env.iter().copied())
                .spawn()
                .unwrap_or_else(|e| panic!("{bin} starts in {}: {e}", net.members[i]))
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let what = format!("{bin} process {i} in {}", net.members[i]);
        ok(&what, &child.wait_with_output().unwrap());
    }
}

/// The one-process `pipeline run` arguments on `input` (without the output).
fn run_args(input: &str) -> Vec<&str> {
    vec![
        "run",
        "--shards",
        "4",
        "--threads",
        "1",
        "--quiet",
        "--input",
        input,
    ]
}

/// Three `pipeline` processes in three namespaces, input and output in a directory all three
/// see, write the one-process output byte for byte; then the same on an S3 server in the hub.
#[test]
fn pipeline_over_three_namespaces_writes_the_one_process_output() {
    let Some(net) = Net::new("pipeline_over_three_namespaces_writes_the_one_process_output") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = d.join("input.csv");
    pipeline_generate(&csv, 5_000, 7, 0.01);
    let run = run_args(csv.to_str().unwrap());

    ok(
        "pipeline run (one process)",
        &exec(pipeline(), d, &[&run[..], &["--output", "one"]].concat()),
    );
    let hosts = net.hostfile(&d.join("hosts"), 7000);
    cluster(
        &net,
        pipeline(),
        d,
        &[&run[..], &["--output", "cluster"]].concat(),
        &hosts,
        &[],
    );
    assert_same_files(
        "the shared directory",
        &dir_files(&d.join("one")),
        &dir_files(&d.join("cluster")),
    );

    s3_variant(&net, d, &run);
}

/// The S3 half of the test above: a moto server in the hub namespace (the binary that
/// scripts/with-s3.sh names in MOTO_SERVER), the one-process run in member 0 and the cluster in
/// all three, each reading `s3://netns/input.csv` and writing under `s3://netns/`.
fn s3_variant(net: &Net, d: &Path, local_run: &[&str]) {
    let Some(moto) = std::env::var_os("MOTO_SERVER") else {
        assert!(
            !in_ci(),
            "CI=true but MOTO_SERVER is unset: run the tests through scripts/with-s3.sh"
        );
        eprintln!("skipped the S3 half: MOTO_SERVER is unset (run through scripts/with-s3.sh)");
        return;
    };
    let endpoint = format!("http://{HUB}:5000");
    let mut server = Net::command(&net.hub, moto.to_str().unwrap(), d)
        .args(["-H", HUB, "-p", "5000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto starts in the hub namespace");
    // curl in the hub: the server is reachable only from the namespaces.
    let curl = |args: &[&str]| {
        Net::command(&net.hub, "curl", d)
            .args([
                "-fsS",
                "--max-time",
                "30",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
            ])
            .args(["--user", "test:test"])
            .args(args)
            .output()
            .expect("curl starts")
    };
    let started = Instant::now();
    while !curl(&[&format!("{endpoint}/")]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "moto did not answer on {endpoint} within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // curl signs its requests as the SDK does (SigV4), with the test credentials.
    ok(
        "create the bucket",
        &curl(&["-X", "PUT", &format!("{endpoint}/netns")]),
    );
    ok(
        "upload the input",
        &curl(&["-T", "input.csv", &format!("{endpoint}/netns/input.csv")]),
    );
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let mut run: Vec<&str> = local_run.to_vec();
    *run.last_mut().unwrap() = "s3://netns/input.csv";
    let one = net
        .member(0, pipeline(), d)
        .args(&run)
        .args(["--output", "s3://netns/one"])
        .envs(env)
        .output()
        .unwrap();
    ok("pipeline run (one process, S3)", &one);
    let hosts = net.hostfile(&d.join("hosts-s3"), 7001);
    let args = [&run[..], &["--output", "s3://netns/cluster"]].concat();
    cluster(net, pipeline(), d, &args, &hosts, &env);

    let objects = |prefix: &str| -> Vec<(String, Vec<u8>)> {
        let list = curl(&[&format!("{endpoint}/netns?list-type=2&prefix={prefix}/")]);
        ok("list the bucket", &list);
        let xml = String::from_utf8(list.stdout).unwrap();
        let mut keys: Vec<&str> = xml
            .split("<Key>")
            .skip(1)
            .map(|k| k.split("</Key>").next().unwrap())
            .collect();
        keys.sort();
        keys.iter()
            .map(|k| {
                let get = curl(&[&format!("{endpoint}/netns/{k}")]);
                ok(&format!("get {k}"), &get);
                (
                    k.strip_prefix(prefix)
                        .unwrap()
                        .trim_start_matches('/')
                        .to_string(),
                    get.stdout,
                )
            })
            .collect()
    };
    let (one, clustered) = (objects("one"), objects("cluster"));
    assert_same_files("S3", &one, &clustered);
    // The same bytes as on the shared directory too, but for the manifest, which names where
    // the input was.
    let local: Vec<_> = dir_files(&d.join("one"))
        .into_iter()
        .filter(|f| f.0.starts_with("part-"))
        .collect();
    let parts: Vec<_> = one
        .into_iter()
        .filter(|f| f.0.starts_with("part-"))
        .collect();
    assert!(
        local == parts,
        "the S3 part files differ from the shared directory's"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// How a member is taken out of a running cluster.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL: the kernel closes its connections.
    Kill,
    /// Its link goes down: no connection closes, nothing more arrives.
    LinkDown,
}

/// The job a fault test runs.
#[derive(Debug, Clone, Copy)]
enum Job {
    Pipeline,
    Trainer,
}

/// Starts a three-namespace cluster of `job` and takes its process 2 out by `fault` mid-run:
/// a `pipeline` once process 2 stops at its first part file (the fault-injection pause of the
/// test builds), a `trainer` once the first epoch's metrics are out. Processes 0 and 1 must
/// fail within bounded time naming process 2, and nothing is committed (no `_SUCCESS`, no
/// model).
fn member_lost(test: &str, job: Job, fault: Fault) {
    let Some(net) = Net::new(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = d.join("input.csv");
    pipeline_generate(&csv, 3_000, 8, 0.01);
    let hosts = net.hostfile(&d.join("hosts"), 7000);
    let run = run_args(csv.to_str().unwrap());
    // Unreachable after half of it: 5 s, well before the 10 s of silence that would fail the
    // run without naming a process.
    let peer_timeout = ["--peer-timeout", "10"];
    let (bin, args): (&str, Vec<&str>) = match job {
        Job::Pipeline => (pipeline(), [&run[..], &["--output", "out"]].concat()),
        Job::Trainer => {
            ok(
                "pipeline run",
                &exec(pipeline(), d, &[&run[..], &["--output", "shards"]].concat()),
            );
            let train = ["--data", "shards", "--epochs", "1000", "--no-progress"];
            let out = ["--metrics-out", "m.jsonl", "--save", "model.safetensors"];
            (trainer(), [&train[..], &out[..]].concat())
        }
    };
    let mut children: Vec<Child> = (0..MEMBERS)
        .map(|i| {
            net.member(i, bin, d)
                .args(&args)
                .args(peer_timeout)
                .args(["--hostfile", &hosts, "--process", &i.to_string()])
                .arg("--cluster-key-file")
                .arg(key_of(&hosts))
                .env("FASTDP_CRASH_AT", "1")
                .env("FASTDP_CRASH_HOW", "pause")
                .env("FASTDP_CRASH_PROCESS", "2")
                .spawn()
                .unwrap()
        })
        .collect();
    let mut lost = children.pop().unwrap();
    // Process 2's stderr after the pause, read to its end (a closed pipe would fail its writes).
    let mut lost_err = None;
    match job {
        Job::Pipeline => {
            let mut stderr = lost.stderr.take().unwrap();
            let mut seen = String::new();
            let mut buf = [0u8; 1];
            while !seen.contains("fault: paused") {
                let n = stderr.read(&mut buf).unwrap();
                assert!(
                    n > 0,
                    "process 2 ended before its pause ({:?}; a pipeline built without the \
                     fault-injection feature? `cargo test --workspace` builds it with it): {seen}",
                    lost.wait()
                );
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            lost_err = Some(std::thread::spawn(move || {
                let mut rest = String::new();
                let _ = stderr.read_to_string(&mut rest);
                rest
            }));
        }
        Job::Trainer => {
            let metrics = d.join("m.jsonl");
            let started = Instant::now();
            while std::fs::read_to_string(&metrics).map_or(true, |m| !m.ends_with('\n')) {
                if let Some(status) = lost.try_wait().unwrap() {
                    panic!("trainer process 2 ended before the first epoch's metrics: {status}");
                }
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "no epoch in 5 minutes"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    match fault {
        Fault::Kill => {
            lost.kill().unwrap();
            lost.wait().unwrap();
        }
        Fault::LinkDown => net.cut(2),
    }
    let named = match job {
        Job::Pipeline => "process 2 is gone (",
        Job::Trainer => "of process 2 stopped taking part",
    };
    let (mut failures, mut named_by) = (Vec::new(), 0);
    for (i, mut child) in children.into_iter().enumerate() {
        let what = format!("process {i}, after process 2 was taken out");
        let status = wait_bounded(&mut child, Duration::from_secs(120), &what);
        let mut err = String::new();
        let mut stderr = child.stderr.take().unwrap();
        stderr.read_to_string(&mut err).unwrap();
        eprintln!("{test}: process {i} ended ({status}): {}", err.trim());
        // The other survivor may give up first and close its connections; one that hears that
        // before its own loss of process 2 names the survivor, whose error names process 2.
        let other_closed =
            err.contains(&format!("process {}", 1 - i)) && err.contains("it closed its connection");
        if status.success() {
            failures.push(format!("process {i} succeeded without process 2"));
        } else if err.contains(named) {
            named_by += 1;
        } else if !other_closed {
            failures.push(format!(
                "process {i} names neither process 2 nor {}: {err}",
                1 - i
            ));
        }
    }
    if named_by == 0 {
        failures.push("no process names process 2".to_string());
    }
    let _ = lost.kill();
    let _ = lost.wait();
    if let Some(rest) = lost_err {
        let rest = rest.join().unwrap();
        if !failures.is_empty() {
            failures.push(format!("process 2's stderr after its pause: {rest}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        !d.join("out/_SUCCESS").exists() && !d.join("model.safetensors").exists(),
        "a run without process 2 was committed"
    );
}

/// Killing one namespace's `pipeline` fails the other two, naming it; nothing is committed.
#[test]
fn a_killed_pipeline_member_fails_the_others_naming_it() {
    member_lost(
        "a_killed_pipeline_member_fails_the_others_naming_it",
        Job::Pipeline,
        Fault::Kill,
    );
}

/// Taking one namespace's link down (no connection closes, nothing is acknowledged) fails the
/// other two `pipeline` processes within the peer timeout, naming it (as unreachable, or
/// reset); nothing is committed.
#[test]
fn a_pipeline_member_cut_off_fails_the_others_naming_it() {
    member_lost(
        "a_pipeline_member_cut_off_fails_the_others_naming_it",
        Job::Pipeline,
        Fault::LinkDown,
    );
}

/// Killing one namespace's `trainer` mid-run fails the other two, naming it; no model.
#[test]
fn a_killed_trainer_member_fails_the_others_naming_it() {
    member_lost(
        "a_killed_trainer_member_fails_the_others_naming_it",
        Job::Trainer,
        Fault::Kill,
    );
}

/// Taking one namespace's link down mid-training fails the other two `trainer` processes
/// within the peer timeout, naming it (as unreachable, or reset); no model.
#[test]
fn a_trainer_member_cut_off_fails_the_others_naming_it() {
    member_lost(
        "a_trainer_member_cut_off_fails_the_others_naming_it",
        Job::Trainer,
        Fault::LinkDown,
    );
}

/// Three `trainer` processes in three namespaces on shards in the shared directory train the
/// one-process model (within float summation order) with the same epsilon.
#[test]
fn trainer_over_three_namespaces_trains_the_one_process_model() {
    let Some(net) = Net::new("trainer_over_three_namespaces_trains_the_one_process_model") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = d.join("input.csv");
    pipeline_generate(&csv, 4_000, 9, 0.01);
    let run = run_args(csv.to_str().unwrap());
    ok(
        "pipeline run",
        &exec(pipeline(), d, &[&run[..], &["--output", "shards"]].concat()),
    );
    let train = [
        "--data",
        "shards",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--seed",
        "3",
    ];
    let quiet = ["--no-progress"];
    let out = [
        "--save",
        "single.safetensors",
        "--metrics-out",
        "single.jsonl",
    ];
    let single = exec(trainer(), d, &[&train[..], &quiet[..], &out[..]].concat());
    ok("trainer (one process)", &single);
    let hosts = net.hostfile(&d.join("hosts"), 7100);
    let save = [
        "--save",
        "hosts.safetensors",
        "--metrics-out",
        "hosts.jsonl",
    ];
    cluster(
        &net,
        trainer(),
        d,
        &[&train[..], &quiet[..], &save[..]].concat(),
        &hosts,
        &[],
    );
    assert_same_model(
        (&d.join("single.safetensors"), &d.join("single.jsonl")),
        (&d.join("hosts.safetensors"), &d.join("hosts.jsonl")),
    );
}
