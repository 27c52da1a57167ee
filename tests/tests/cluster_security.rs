//! Nothing from outside gets into a cluster run, on the real binaries: an impostor who knows
//! the protocol but not the key neither joins nor displaces a process, a stray listener on a
//! peer's address is named as not authenticating, a relay that changes one byte fails the run
//! before anything is committed, and each malformed frame (a wrapping length, a target outside
//! the process, a huge length, a greeting sent a byte at a time) ends `pipeline` and `trainer`
//! with an error naming the peer within their timeouts, with a key and without.
//!
//! Every listener is bound here and handed over ([`LoopbackCluster`]): no port is released and
//! bound again.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cluster::{ClusterKey, Security};
use fastdp_tests::{
    LoopbackCluster, assert_ok as ok, assert_same_files, dir_files, exec, pipeline,
    pipeline_generate, trainer, wait_bounded,
};

/// `bin args` in `cwd`, output piped.
fn command(bin: &str, cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .current_dir(cwd)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("FASTDP_CLUSTER_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits (bounded) for `child` and returns its output.
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let mut stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let status = wait_bounded(&mut child, limit, what);
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one-process `pipeline run` arguments (output added by the caller).
const RUN: &[&str] = &["run", "--shards", "4", "--threads", "1", "--quiet"];

/// A pipeline input of `rows` generated rows in `d/input.csv`.
fn input(d: &Path, rows: u64) -> String {
    let csv = d.join("input.csv");
    pipeline_generate(&csv, rows, 3, 0.01);
    csv.to_str().unwrap().to_string()
}

/// Impostors that know the greeting (with another key, without any, or with the keyed magic
/// and garbage) connect to process 0 before the real process 1 starts: none is taken, and the
/// run the real one then forms writes the one-process output byte for byte.
#[test]
fn impostors_neither_join_nor_displace_a_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = input(d, 5_000);
    let one = [RUN, &["--input", &csv, "--output", "one"]].concat();
    ok("pipeline (one process)", &exec(pipeline(), d, &one));
    let mut hosts = LoopbackCluster::new(d, "hosts", 2);
    let args = [
        RUN,
        &[
            "--input",
            &csv,
            "--output",
            "cluster",
            "--connect-timeout",
            "60",
        ],
    ]
    .concat();
    let zero = hosts
        .member(0, &mut command(pipeline(), d, &args))
        .spawn()
        .unwrap();
    let address = hosts.address(0).to_string();
    // Another key: the handshake fails on both sides.
    let wrong = Security::Keyed {
        key: ClusterKey::generate().unwrap(),
        run: [0; 16],
    };
    let err = cluster::connect::dial(&address, 1, 0, 2, &wrong, Duration::from_secs(30))
        .unwrap_err()
        .to_string();
    assert!(err.contains("did not authenticate"), "{err}");
    // No key at all (the plaintext greeting), and the keyed magic followed by garbage: both are
    // closed without an answer that would let them in.
    let mut plain = TcpStream::connect(&address).unwrap();
    plain.write_all(b"fastdpP1\0\0\0\x01\0\0\0\0").unwrap();
    let mut garbage = TcpStream::connect(&address).unwrap();
    garbage
        .write_all(b"fastdpK1\0\0\0\x01\0\0\0\0\0\x30")
        .unwrap();
    garbage.write_all(&[0x55; 48]).unwrap();
    for s in [&mut plain, &mut garbage] {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(answer.is_empty(), "an impostor got an answer: {answer:?}");
    }
    let one_proc = hosts
        .member(1, &mut command(pipeline(), d, &args))
        .spawn()
        .unwrap();
    ok(
        "pipeline process 0",
        &finish(zero, Duration::from_secs(120), "process 0"),
    );
    ok(
        "pipeline process 1",
        &finish(one_proc, Duration::from_secs(120), "process 1"),
    );
    assert_same_files(
        "a run impostors tried to join",
        &dir_files(&d.join("one")),
        &dir_files(&d.join("cluster")),
    );
}

/// An unrelated server on process 0's address (one that answers like a web server, one that
/// accepts and says nothing): process 1 fails within its connect timeout, naming the address
/// and saying that what listens there did not authenticate.
#[test]
fn a_stray_listener_on_a_peers_address_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = input(d, 500);
    for answer in [&b"HTTP/1.1 200 OK\r\n\r\n"[..], b""] {
        let mut hosts = LoopbackCluster::new(d, "hosts", 2);
        let stray = hosts.take_listener(0);
        let address = hosts.address(0).to_string();
        let server = thread::spawn(move || {
            let (mut s, _) = stray.accept().unwrap();
            let _ = s.write_all(answer);
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        });
        let args = [
            RUN,
            &["--input", &csv, "--output", "out", "--connect-timeout", "5"],
        ]
        .concat();
        let started = Instant::now();
        let child = hosts
            .member(1, &mut command(pipeline(), d, &args))
            .spawn()
            .unwrap();
        let out = finish(child, Duration::from_secs(120), "process 1");
        let took = started.elapsed();
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&address) && err.contains("did not authenticate"),
            "{err}"
        );
        assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
        server.join().unwrap();
    }
}

/// A 48-byte timely message header: channel, source, target range, length, sequence number.
fn header(words: [u64; 6]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// What the fake process 1 sends once it has joined.
#[derive(Debug, Clone, Copy)]
enum Frame {
    /// A length that wraps the header arithmetic (2^64 - 48): timely looped forever.
    WrappingLength,
    /// A target outside process 0's workers: timely's receive thread panicked.
    BadTarget,
    /// 2^40 bytes announced, then a stream of bytes: timely buffered them all.
    HugeLength,
    /// The greeting itself, a byte every half second, never finished (so however late
    /// process 0 starts reading, what it reads is never a whole greeting).
    SlowGreeting,
}

/// Plays process 1 of `hosts` against the real process 0 (started with `args`) and sends
/// `frame`: process 0 must fail within its timeouts, naming process 1 and why.
fn hostile_peer(bin: &str, d: &Path, args: &[&str], keyed: bool, frame: Frame) {
    let what = format!("{bin} process 0, {frame:?}, keyed {keyed}");
    let mut hosts = if keyed {
        LoopbackCluster::new(d, "hosts", 2)
    } else {
        LoopbackCluster::plaintext(d, "hosts", 2)
    };
    let address = hosts.address(0).to_string();
    let started = Instant::now();
    let zero = hosts.member(0, &mut command(bin, d, args)).spawn().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let security = hosts.security();
    let fake = thread::spawn(move || {
        if let Frame::SlowGreeting = frame {
            let mut s = TcpStream::connect(&address).unwrap();
            let greeting = if keyed { b"fastdpK1" } else { b"fastdpP1" };
            // 15 of its 16 bytes, then silence until process 0 has given up.
            for b in greeting.iter().chain(&[0, 0, 0, 1, 0, 0, 0]) {
                if stopped.load(Ordering::SeqCst) || s.write_all(&[*b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(500));
            }
            while !stopped.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        let mut wire =
            cluster::connect::dial(&address, 1, 0, 2, &security, Duration::from_secs(60))
                .expect("the fake process 1 joins");
        let bytes = match frame {
            Frame::WrappingLength => header([0, 1, 0, 1, u64::MAX - 47, 0]),
            Frame::BadTarget => [header([0, 1, 5, 6, 8, 0]), vec![0; 8]].concat(),
            Frame::HugeLength => header([0, 1, 0, 1, 1 << 40, 0]),
            Frame::SlowGreeting => unreachable!(),
        };
        let _ = wire.write_all(&bytes);
        // Keep sending (as a peer streaming a huge message would) until told to stop.
        let filler = vec![0x42u8; 1 << 16];
        while !stopped.load(Ordering::SeqCst) && wire.write_all(&filler).is_ok() {}
    });
    let out = finish(zero, Duration::from_secs(120), &what);
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    fake.join().unwrap();
    let err = stderr(&out);
    eprintln!("{what} ended after {took:?}: {}", err.trim());
    assert!(!out.status.success(), "{what} succeeded: {err}");
    let why = match frame {
        Frame::WrappingLength | Frame::HugeLength => "beyond the limit",
        Frame::BadTarget => "not among this process's workers",
        Frame::SlowGreeting => "did not connect and authenticate in time",
    };
    assert!(
        err.contains("process 1") && err.contains(why),
        "{what}: {err}"
    );
    assert!(took < Duration::from_secs(60), "{what}: took {took:?}");
    assert!(
        !d.join("out/_SUCCESS").exists() && !d.join("model.safetensors").exists(),
        "{what}: something was committed"
    );
}

const FRAMES: [Frame; 4] = [
    Frame::WrappingLength,
    Frame::BadTarget,
    Frame::HugeLength,
    Frame::SlowGreeting,
];

#[test]
fn malformed_frames_end_a_pipeline_run_naming_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = input(d, 2_000);
    let args = [
        RUN,
        &[
            "--input",
            &csv,
            "--output",
            "out",
            "--connect-timeout",
            "4",
            "--peer-timeout",
            "20",
        ],
    ]
    .concat();
    for keyed in [true, false] {
        for frame in FRAMES {
            hostile_peer(pipeline(), d, &args, keyed, frame);
        }
    }
}

#[test]
fn malformed_frames_end_a_trainer_run_naming_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = input(d, 2_000);
    ok(
        "pipeline",
        &exec(
            pipeline(),
            d,
            &[RUN, &["--input", &csv, "--output", "shards"]].concat(),
        ),
    );
    let args = [
        "--data",
        "shards",
        "--epochs",
        "1",
        "--no-progress",
        "--threads",
        "1",
        "--save",
        "model.safetensors",
        "--connect-timeout",
        "4",
        "--peer-timeout",
        "20",
    ];
    for keyed in [true, false] {
        for frame in FRAMES {
            hostile_peer(trainer(), d, &args, keyed, frame);
        }
    }
}

/// A relay on process 0's hostfile address passes both directions through, changing one byte
/// of what process 1 sends once the handshake is long done: the record holding it fails to
/// open, both processes fail, and nothing is committed.
#[test]
fn a_relay_that_changes_one_byte_fails_the_run_before_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let csv = input(d, 20_000);
    let mut hosts = LoopbackCluster::new(d, "hosts", 2);
    // The relay holds process 0's hostfile address; process 0 listens behind it.
    let front = hosts.take_listener(0);
    let behind = TcpListener::bind("127.0.0.1:0").unwrap();
    let behind_address = behind.local_addr().unwrap();
    let relay = thread::spawn(move || {
        let (client, _) = front.accept().unwrap();
        let server = TcpStream::connect(behind_address).unwrap();
        let pump = |mut from: TcpStream, mut to: TcpStream, flip_at: Option<usize>| {
            thread::spawn(move || {
                let (mut seen, mut buf) = (0usize, vec![0u8; 1 << 16]);
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(at) = flip_at
                        && (seen..seen + n).contains(&at)
                    {
                        buf[at - seen] ^= 0x01;
                    }
                    seen += n;
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Both);
                seen
            })
        };
        let up = pump(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            Some(20_000),
        );
        let down = pump(server, client, None);
        (up.join().unwrap(), down.join().unwrap())
    });
    let args = [
        RUN,
        &[
            "--input",
            &csv,
            "--output",
            "out",
            "--connect-timeout",
            "60",
            "--peer-timeout",
            "60",
        ],
    ]
    .concat();
    let zero = hosts
        .member_on(0, behind, &mut command(pipeline(), d, &args))
        .spawn()
        .unwrap();
    let one = hosts
        .member(1, &mut command(pipeline(), d, &args))
        .spawn()
        .unwrap();
    let zero = finish(zero, Duration::from_secs(180), "process 0");
    let one = finish(one, Duration::from_secs(180), "process 1");
    let (up, _) = relay.join().unwrap();
    assert!(
        up > 20_000,
        "process 1 sent only {up} bytes: the byte was never changed"
    );
    let errs = format!("{}\n{}", stderr(&zero), stderr(&one));
    eprintln!("the relayed run: {errs}");
    assert!(
        !zero.status.success() && !one.status.success(),
        "a changed byte went unnoticed: {errs}"
    );
    assert!(errs.contains("failed authentication"), "{errs}");
    assert!(!d.join("out").exists(), "something was committed: {errs}");
}
