//! No hang: a silent S3 endpoint, a parent killed under its child, a stopped child, a child
//! that dies after the output was committed. Each is a real fault (a listener that never
//! answers, SIGKILL, SIGSTOP); the bounds asserted are minutes, far above what the runs take.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn pipeline(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.current_dir(dir)
        .env_remove("FASTDP_CRASH_AT")
        .env_remove("FASTDP_CRASH_HOW")
        .env_remove("FASTDP_CRASH_PROCESS");
    c
}

fn generate(dir: &Path, rows: &str) {
    let o = pipeline(dir)
        .args(["generate", "--rows", rows, "--output", "in.csv"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A TCP listener on loopback that accepts every connection and never sends a byte.
fn silent_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            held.lock().unwrap().push(s);
        }
    });
    format!("http://{addr}")
}

/// Waits for `child` up to `limit`; kills it and fails if it is still running then.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

/// Pipeline input and output on an endpoint that accepts and never answers: each fails in
/// bounded time, naming the endpoint.
#[test]
fn a_silent_s3_endpoint_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "50");
    let endpoint = silent_endpoint();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--input", "s3://b/in.csv", "--output", "out"],
            "fast timeouts, input",
        ),
        (
            &["--input", "in.csv", "--output", "s3://b/out"],
            "fast timeouts, output",
        ),
        (&[], "the default timeouts, input"),
    ];
    for (args, what) in cases {
        let mut cmd = pipeline(dir);
        cmd.args(["run", "--quiet"])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .stderr(Stdio::piped());
        if args.is_empty() {
            cmd.args(["--input", "s3://b/in.csv", "--output", "out"]);
        } else {
            cmd.args(args)
                .args(["--s3-read-timeout", "1", "--s3-max-attempts", "2"]);
        }
        let mut child = cmd.spawn().unwrap();
        // The defaults allow 3 attempts of 15 s; a minute and a half is far beyond either.
        let status = wait_bounded(&mut child, Duration::from_secs(90), what);
        let err = stderr_of(&mut child);
        assert!(!status.success(), "{what}");
        assert!(
            err.contains(&endpoint) && err.contains("timed out"),
            "{what}: {err}"
        );
    }
}

/// Process ids of the children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
    {
        let path = task.unwrap().path().join("children");
        if let Ok(s) = std::fs::read_to_string(path) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Starts `pipeline run --workers 2` with process `process` set to stop (hang) at its crash
/// point `pause_at`: 1 is its first part file, written once the processes have connected and
/// the dataflow runs.
fn start_two_processes(dir: &Path, extra: &[&str], process: &str, pause_at: &str) -> (Child, u32) {
    let parent = pipeline(dir)
        .args(["run", "--quiet", "--workers", "2", "--threads", "1"])
        .args(["--shards", "4", "--input", "in.csv", "--output", "out"])
        .args(extra)
        .env("FASTDP_CRASH_AT", pause_at)
        .env("FASTDP_CRASH_HOW", "pause")
        .env("FASTDP_CRASH_PROCESS", process)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let child = loop {
        if let Some(&c) = children_of(parent.id()).first() {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no child process"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (parent, child)
}

/// Waits until `path` exists (or fails after a bound far above what it takes).
fn wait_for_file(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the shared stderr until the paused process says so, and returns what it read; the
/// rest stays readable with [`err_rest`].
fn wait_until_paused_keeping(parent: &mut Child) -> String {
    let stderr = parent.stderr.as_mut().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1];
    while !seen.contains("fault: paused") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "stderr closed before the pause: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

fn err_rest(parent: &mut Child) -> String {
    let mut rest = Vec::new();
    let _ = parent.stderr.take().unwrap().read_to_end(&mut rest);
    String::from_utf8_lossy(&rest).into_owned()
}

/// The paused process says so on the shared stderr; wait for its line before acting.
fn wait_until_paused(parent: &mut Child) -> String {
    let mut stderr = parent.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("fault: paused") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "stderr closed before the pause: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Keep draining in the background so no process blocks on a full pipe.
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
    });
    seen
}

/// Killing the parent of `pipeline --workers 2` ends its child too: the child sees the
/// connection to process 0 close and stops instead of waiting forever.
#[test]
fn a_child_exits_when_its_parent_dies() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), "2000");
    // The parent hangs writing its first part; the child finishes its own part and waits.
    let (mut parent, child) = start_two_processes(tmp.path(), &[], "0", "1");
    wait_until_paused(&mut parent);
    signal(parent.id(), "-KILL");
    parent.wait().unwrap();
    let started = Instant::now();
    while alive(child) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the child {child} outlived its parent by 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CPU seconds (user and system, all threads) process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let per_second: f64 = String::from_utf8_lossy(&per_second.stdout)
        .trim()
        .parse()
        .unwrap();
    ticks as f64 / per_second
}

/// A stopped child (SIGSTOP) does not hang its parent: after --peer-timeout without anything
/// from it, the run fails naming the timeout, and the stopped child is killed. While it waits,
/// the parent sleeps: it used about 90% of a core when its wait spun.
#[test]
fn a_stopped_child_does_not_hang_its_parent() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), "2000");
    // The child hangs at its first part, then is stopped outright; the parent has written its
    // own parts and waits for the child's.
    let (mut parent, child) = start_two_processes(tmp.path(), &["--peer-timeout", "5"], "1", "1");
    let mut err = wait_until_paused_keeping(&mut parent);
    signal(child, "-STOP");
    let before = cpu_seconds(parent.id());
    std::thread::sleep(Duration::from_secs(2));
    let waiting = cpu_seconds(parent.id()) - before;
    assert!(
        waiting < 0.2,
        "the waiting parent used {waiting:.2} CPU-seconds in 2 s"
    );
    let status = wait_bounded(&mut parent, Duration::from_secs(120), "the parent");
    err.push_str(&err_rest(&mut parent));
    assert!(!status.success());
    assert!(err.contains("--peer-timeout"), "{err}");
    assert!(!tmp.path().join("out").exists(), "nothing published");
    let started = Instant::now();
    while alive(child) {
        assert!(started.elapsed() < Duration::from_secs(30), "child left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child that dies after process 0 committed: the output is complete (every worker
/// reported before the commit), so the run succeeds with a warning naming the process.
#[test]
fn a_child_dying_after_the_commit_leaves_a_successful_run() {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), "2000");
    // Process 1 writes two parts (two crash points), then hangs when its run is done.
    let (mut parent, child) = start_two_processes(tmp.path(), &[], "1", "3");
    wait_until_paused(&mut parent);
    wait_for_file(&tmp.path().join("out/_SUCCESS"));
    signal(child, "-KILL");
    let status = wait_bounded(&mut parent, Duration::from_secs(60), "the parent");
    assert!(status.success(), "{status}");
    let table = shards::Dataset::open(
        &shards::Location::Local(tmp.path().join("out")),
        &shards::S3Options::default(),
    )
    .unwrap()
    .load()
    .unwrap();
    assert!(table.len() > 1900, "{} rows", table.len());
}
