//! What crosses the network between the processes of a run, captured: a 2-process `pipeline`
//! and a 2-process DP `trainer` run in a network namespace of their own while a raw packet
//! socket records every TCP segment on its loopback. Run in clear (`--insecure-plaintext`),
//! the capture holds record lines and the all-reduce's gradient messages (which proves it sees
//! them); run as by default, the same seeded runs send the same values, and no record (its
//! content, as written in the shards after its key) and no run of three consecutive gradient
//! values (as f32, either byte order) appears in it.
//!
//! The capturer is this test binary started again inside the namespace (`FASTDP_CAPTURE_TO`).
//! Where namespaces cannot be made (not root, no `ip`) the test skips saying why; under
//! `CI=true` it fails instead, as the namespace tests do.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fastdp_tests::{assert_ok as ok, exec, pipeline, pipeline_generate, trainer};

const CAPTURE_TO: &str = "FASTDP_CAPTURE_TO";
const TEST: &str = "no_record_or_gradient_crosses_in_clear";

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|u| u.split_whitespace().nth(1).map(|u| u == "0"))
            .unwrap_or(false)
    })
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`ip` cannot be started ({e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A network namespace with only loopback, deleted (with what runs in it) when dropped.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// TCP payload per flow (`src > dst`), reassembled by sequence number (each segment is seen
/// twice on loopback, going out and coming in).
type Flows = BTreeMap<String, Vec<u8>>;

/// The capturer: records every TCP segment on this namespace's interfaces until `{to}.stop`
/// exists, then writes the reassembled flows to `to`.
fn capture(to: &Path) {
    use socket2::{Domain, Protocol, Socket, Type};
    // ETH_P_ALL, in network byte order.
    let socket = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(0x0003u16.to_be()))),
    )
    .expect("a packet socket (root)");
    let _ = socket.set_recv_buffer_size(64 << 20);
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    println!("capturing");
    let stop = to.with_extension("stop");
    let mut segments: BTreeMap<String, (u32, BTreeMap<u32, Vec<u8>>)> = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 17];
    while !stop.exists() {
        let n = match (&socket).read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let frame = &buf[..n];
        // Ethernet header (loopback's too), IPv4, TCP.
        if n < 14 + 20 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ipv4 = &frame[14..];
        let ihl = usize::from(ipv4[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ipv4[2], ipv4[3]])).min(ipv4.len());
        if ipv4[9] != 6 || total < ihl + 20 {
            continue;
        }
        let tcp = &ipv4[ihl..total];
        let offset = usize::from(tcp[12] >> 4) * 4;
        let (sport, dport) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        let seq = u32::from_be_bytes(tcp[4..8].try_into().unwrap());
        let syn = tcp[13] & 0x02 != 0;
        let key = format!("{sport} > {dport}");
        let flow = segments.entry(key).or_insert((seq, BTreeMap::new()));
        if syn {
            flow.0 = seq.wrapping_add(1);
        }
        if tcp.len() > offset {
            let at = seq.wrapping_sub(flow.0);
            flow.1.insert(at, tcp[offset..].to_vec());
        }
    }
    let mut out = Vec::new();
    for (key, (_, parts)) in segments {
        let mut bytes = Vec::new();
        for (at, payload) in parts {
            let at = at as usize;
            if at + payload.len() > bytes.len() {
                bytes.resize(at + payload.len(), 0);
            }
            bytes[at..at + payload.len()].copy_from_slice(&payload);
        }
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    std::fs::write(to, out).unwrap();
}

fn read_flows(path: &Path) -> Flows {
    let data = std::fs::read(path).unwrap();
    let (mut at, mut flows) = (0, Flows::new());
    while at < data.len() {
        let klen = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let key = String::from_utf8(data[at + 4..at + 4 + klen].to_vec()).unwrap();
        at += 4 + klen;
        let len = u64::from_le_bytes(data[at..at + 8].try_into().unwrap()) as usize;
        flows.insert(key, data[at + 8..at + 8 + len].to_vec());
        at += 8 + len;
    }
    flows
}

/// `bin args` inside namespace `ns`, in `cwd`.
fn in_ns(ns: &str, bin: &str, cwd: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, bin])
        .args(args)
        .current_dir(cwd)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null());
    c
}

/// Runs the jobs inside `ns` (with `extra` flags) while the capturer records; its flows.
fn captured(ns: &str, d: &Path, name: &str, extra: &[&str]) -> Flows {
    let to = d.join(format!("{name}.capture"));
    let exe = std::env::current_exe().unwrap();
    let mut capturer = in_ns(
        ns,
        exe.to_str().unwrap(),
        d,
        &["--exact", TEST, "--nocapture"],
    )
    .env(CAPTURE_TO, &to)
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(capturer.stdout.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("capturing") {}
    let output = format!("{name}-out");
    let pipeline_args = [
        &["run", "--input", "input.csv", "--shards", "4", "--quiet"][..],
        &["--workers", "2", "--output", &output],
        extra,
    ]
    .concat();
    let out = in_ns(ns, pipeline(), d, &pipeline_args).output().unwrap();
    ok(&format!("pipeline ({name})"), &out);
    let trainer_args = [
        &["--data", "shards", "--epochs", "1", "--batch-size", "256"][..],
        &["--seed", "5", "--no-progress", "--workers", "2"],
        extra,
    ]
    .concat();
    let out = in_ns(ns, trainer(), d, &trainer_args).output().unwrap();
    ok(&format!("trainer ({name})"), &out);
    std::fs::write(to.with_extension("stop"), b"").unwrap();
    // Wait on the capturer itself (in a thread, so that a hang is a failure, not a stuck test).
    let pid = capturer.id();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || exited.send(capturer.wait()));
    match exit.recv_timeout(Duration::from_secs(60)) {
        Ok(status) => assert!(status.unwrap().success(), "the capturer failed"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the capturer hangs: no exit 60 s after {}", to.display());
        }
    }
    read_flows(&to)
}

/// Runs (as bits) of three consecutive values of every all-reduce message of `count` f32 (a round and
/// a count, each a little-endian u64, then the values) in `flows`, skipping runs with a zero.
fn gradient_runs(flows: &Flows, count: u64) -> HashSet<[u32; 3]> {
    let mut runs = HashSet::new();
    let marker = count.to_le_bytes();
    for bytes in flows.values() {
        let mut at = 8;
        while at + 8 <= bytes.len() {
            if bytes[at..at + 8] == marker {
                let round = u64::from_le_bytes(bytes[at - 8..at].try_into().unwrap());
                let values = at + 8;
                let end = values + 4 * count as usize;
                if round < 1 << 20 && end <= bytes.len() {
                    let v: Vec<f32> = bytes[values..end]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    for w in v.windows(3) {
                        if w.iter().all(|x| *x != 0.0 && x.is_finite()) {
                            runs.insert([w[0].to_bits(), w[1].to_bits(), w[2].to_bits()]);
                        }
                    }
                    at = end;
                    continue;
                }
            }
            at += 1;
        }
    }
    runs
}

/// Every window of `haystack` as long as one of `needles`: a needle occurs in the haystack
/// exactly when the set holds it (one pass per length, where a search per needle took minutes
/// for the lines that are not there).
fn windows_like<'a>(haystack: &'a [u8], needles: &[Vec<u8>]) -> HashSet<&'a [u8]> {
    let lengths: BTreeSet<usize> = needles.iter().map(Vec::len).collect();
    lengths.iter().flat_map(|&n| haystack.windows(n)).collect()
}

#[test]
fn no_record_or_gradient_crosses_in_clear() {
    if let Some(to) = std::env::var_os(CAPTURE_TO) {
        capture(&PathBuf::from(to));
        return;
    }
    if !is_root() {
        assert!(
            !in_ci(),
            "CI=true but not root; CI runs these tests as root"
        );
        eprintln!("skipped {TEST}: not root (a network namespace and a packet socket need it)");
        return;
    }
    let ns = format!("fdpcap{}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &ns]) {
        assert!(!in_ci(), "CI=true but no network namespace: {e}");
        eprintln!("skipped {TEST}: no network namespace: {e}");
        return;
    }
    let _ns = Namespace(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"]).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    pipeline_generate(&d.join("input.csv"), 6_000, 11, 0.01);
    ok(
        "pipeline (shards)",
        &exec(
            pipeline(),
            d,
            &[
                "run",
                "--input",
                "input.csv",
                "--output",
                "shards",
                "--quiet",
            ],
        ),
    );
    let clear = captured(&ns, d, "clear", &["--insecure-plaintext"]);
    let sealed = captured(&ns, d, "sealed", &[]);

    // The model is 9-50-1: 551 parameters, the length of every gradient message.
    let runs = gradient_runs(&clear, 551);
    assert!(
        runs.len() > 500,
        "the capture in clear shows {} gradient runs: it does not see the all-reduce",
        runs.len()
    );
    let lines: Vec<Vec<u8>> = std::fs::read_dir(d.join("clear-out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("part-")
        })
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .skip(1)
                // A record as it crosses: its content, `\n`-terminated, after the record
                // before it in its batch (the key is given where the shard is written, so
                // nothing key-like crosses with it).
                .map(|l| format!("\n{}\n", l.split_once(',').unwrap().1).into_bytes())
                .collect::<Vec<_>>()
        })
        .collect();
    let all = |flows: &Flows| flows.values().flatten().copied().collect::<Vec<u8>>();
    let (clear_bytes, sealed_bytes) = (all(&clear), all(&sealed));
    let in_clear = windows_like(&clear_bytes, &lines);
    let seen_in_clear = lines
        .iter()
        .take(2_000)
        .filter(|l| in_clear.contains(l.as_slice()))
        .count();
    assert!(
        seen_in_clear > 100,
        "only {seen_in_clear} record lines in the capture in clear: it does not see the records"
    );
    assert!(
        sealed_bytes.len() > clear_bytes.len() / 2,
        "the sealed capture holds {} bytes, the clear one {}",
        sealed_bytes.len(),
        clear_bytes.len()
    );
    let in_sealed = windows_like(&sealed_bytes, &lines);
    let leaked: Vec<&Vec<u8>> = lines
        .iter()
        .filter(|l| l.len() > 12 && in_sealed.contains(l.as_slice()))
        .take(3)
        .collect();
    assert!(
        leaked.is_empty(),
        "record lines in the encrypted traffic: {leaked:?}"
    );
    let mut needles: HashSet<Vec<u8>> = HashSet::new();
    for run in &runs {
        needles.insert(run.iter().flat_map(|x| x.to_le_bytes()).collect());
        needles.insert(run.iter().flat_map(|x| x.to_be_bytes()).collect());
        // (the bits of an f32 in little- and big-endian byte order)
    }
    let windows: HashSet<&[u8]> = sealed_bytes.windows(12).collect();
    let found = needles
        .iter()
        .filter(|n| windows.contains(n.as_slice()))
        .count();
    assert_eq!(
        found,
        0,
        "{found} of {} gradient runs appear in the encrypted traffic",
        needles.len()
    );
    eprintln!(
        "{TEST}: {} bytes in clear, {} encrypted; {} gradient runs and {seen_in_clear} record \
         lines seen in clear, none encrypted",
        clear_bytes.len(),
        sealed_bytes.len(),
        runs.len()
    );
}
