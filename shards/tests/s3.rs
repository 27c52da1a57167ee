//! The S3 store against a local S3-compatible server (run through `scripts/with-s3.sh`).
//!
//! The server is found through `AWS_ENDPOINT_URL`; without it every test prints that it
//! skipped, except under `CI=true`, where a missing server is a failure.
#![cfg(all(feature = "s3", feature = "test-support"))]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::manifest;
use shards::lines::{LineReader, split_ranges};
use shards::s3::{S3, S3Options};
use shards::store::{Input, Output, PartWriter, create_file, open_input, open_output};
use shards::{Dataset, Error, Location};

/// A client for the test server, or `None` (after saying so) when there is none.
fn server() -> Option<S3> {
    shards::s3::test_server()
}

/// A fresh bucket with a name unique to this test and process.
fn bucket(s3: &S3, test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "shards-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    s3.block_on(s3.client().create_bucket().bucket(&name).send())
        .expect("create bucket");
    name
}

fn s3loc(bucket: &str, key: &str) -> Location {
    Location::S3 {
        bucket: bucket.into(),
        key: key.into(),
    }
}

const BODIES: [&str; 2] = ["key,y,a\n3,1,0.5\n9,0,2\n", "key,y,a\n4,1,1\n"];

/// Writes and commits the two-part output of the local store's tests through `out`.
fn write_output(out: &dyn Output, overwrite: bool) -> shards::Result<()> {
    out.prepare(overwrite)?;
    let mut infos = Vec::new();
    for (i, body) in BODIES.iter().enumerate() {
        let mut w = out.create_part(&format!("part-0000{i}"))?;
        w.write_all(body.as_bytes())
            .map_err(|e| Error::io(out.location(), e))?;
        let mut info = w.finish()?;
        info.rows = body.lines().count() as u64 - 1;
        infos.push(info);
    }
    out.commit(&manifest(infos))
}

fn keys(s3: &S3, bucket: &str, prefix: &str) -> Vec<String> {
    let mut k = s3.list_all(bucket, prefix).unwrap();
    k.sort();
    k
}

/// Fails if an error message could leak the test credentials.
fn assert_no_credentials(msg: &str) {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        if let Ok(v) = std::env::var(var) {
            assert!(
                !v.is_empty() && !msg.contains(&v),
                "{var} leaked into: {msg}"
            );
        }
    }
}

/// The `io::ErrorKind` and text of an `Error::Io`.
fn io_error(e: &Error) -> (ErrorKind, String) {
    let msg = e.to_string();
    assert_no_credentials(&msg);
    match e {
        Error::Io { cause, .. } => (cause.kind(), msg),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn commit_then_read_back() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "commit");
    let loc = s3loc(&b, "runs/1/shards");
    let out = open_output(&loc, &S3Options::default()).unwrap();
    out.prepare(false).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(BODIES[0].as_bytes()).unwrap();
    w.finish().unwrap();
    // `finish` may leave the PUT in flight; `sync_parts` waits for it.
    out.sync_parts().unwrap();
    assert_eq!(
        keys(&s3, &b, "runs/1/shards"),
        ["runs/1/shards/_temporary/part-00000"],
        "parts are published only by commit"
    );
    write_output(out.as_ref(), true).unwrap();
    assert_eq!(
        keys(&s3, &b, "runs/1/shards"),
        [
            "runs/1/shards/_SUCCESS",
            "runs/1/shards/_manifest.json",
            "runs/1/shards/part-00000",
            "runs/1/shards/part-00001"
        ]
    );
    let ds = Dataset::open(&loc, &S3Options::default()).unwrap();
    assert!(ds.manifest().is_some());
    let table = ds.load().unwrap();
    assert_eq!(table.keys, [3, 9, 4]);
    assert_eq!(table.labels, [1.0, 0.0, 1.0]);
    assert_eq!(table.features, [0.5, 2.0, 1.0]);
}

#[test]
fn existing_output_needs_overwrite_and_foreign_objects_are_kept() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "overwrite");
    let loc = s3loc(&b, "out");
    let out = open_output(&loc, &S3Options::default()).unwrap();
    write_output(out.as_ref(), false).unwrap();
    let err = out.prepare(false).unwrap_err();
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains(&format!("s3://{b}/out")), "{err}");
    write_output(out.as_ref(), true).unwrap();
    assert_eq!(keys(&s3, &b, "out").len(), 4);

    // A sibling prefix that merely starts the same is not part of the output.
    let mut w = create_file(&s3loc(&b, "out2/notes.txt"), false, &S3Options::default()).unwrap();
    w.write_all(b"mine").unwrap();
    w.finish().unwrap();
    write_output(out.as_ref(), true).unwrap();

    let mut w = create_file(&s3loc(&b, "out/notes.txt"), false, &S3Options::default()).unwrap();
    w.write_all(b"mine").unwrap();
    w.finish().unwrap();
    let err = out.prepare(true).unwrap_err().to_string();
    assert!(err.contains("notes.txt"), "{err}");
    assert!(keys(&s3, &b, "out").contains(&"out/notes.txt".to_string()));
    assert!(keys(&s3, &b, "out").contains(&"out/_SUCCESS".to_string()));
}

#[test]
fn dropped_writers_and_abort_leave_nothing() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "abort");
    let out = s3.output(&b, "o");
    out.prepare(false).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(b"key,y,a\n").unwrap();
    drop(w);
    let mut w = out.create_part("part-00001").unwrap();
    w.write_all(b"key,y,a\n").unwrap();
    w.finish().unwrap();
    // `finish` may leave the PUT in flight; `sync_parts` waits for it.
    out.sync_parts().unwrap();
    assert_eq!(keys(&s3, &b, "o"), ["o/_temporary/part-00001"]);
    out.abort();
    assert!(keys(&s3, &b, "").is_empty());
}

#[test]
fn single_objects_are_created_once() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "file");
    let loc = s3loc(&b, "data/in.csv");
    let mut w = create_file(&loc, false, &S3Options::default()).unwrap();
    w.write_all(b"a,b\n1,2\n").unwrap();
    let info = w.finish().unwrap();
    assert_eq!((info.name.as_str(), info.bytes), ("in.csv", 8));
    assert_eq!(
        info.crc32,
        format!("{:08x}", crc32fast::hash(b"a,b\n1,2\n"))
    );
    let err = create_file(&loc, false, &S3Options::default())
        .err()
        .expect("exists");
    assert!(matches!(err, Error::OutputExists { .. }), "{err}");
    let mut w = create_file(&loc, true, &S3Options::default()).unwrap();
    w.write_all(b"x\n").unwrap();
    drop(w);
    assert_eq!(s3.get_all(&b, "data/in.csv").unwrap(), b"a,b\n1,2\n");
}

/// Bytes that look like a CSV, with every kind of line end and no final newline.
fn sample(lines: usize) -> Vec<u8> {
    let mut v = b"\"sex\",\"married\",\"employed\"\n".to_vec();
    for i in 0..lines {
        let end: &[u8] = match i % 7 {
            0 => b"\r\n",
            3 => b"\r",
            _ => b"\n",
        };
        v.extend_from_slice(format!("{},{},{}", i % 2, i % 3, i * 7919 % 1000).as_bytes());
        v.extend_from_slice(end);
    }
    v.extend_from_slice(b"1,1,1");
    v
}

fn lines_of(input: &dyn Input, parts: usize) -> Vec<(u64, Vec<u8>)> {
    let mut all = Vec::new();
    for (start, end) in split_ranges(input.len().unwrap(), parts) {
        let r = input.open_at(start.saturating_sub(1), end).unwrap();
        let mut lines = LineReader::for_range(r, start, end).unwrap();
        while let Some((off, line)) = lines.next_line().unwrap() {
            all.push((off, line.to_vec()));
        }
    }
    all
}

#[test]
fn ranged_reads_give_the_lines_of_the_local_file() {
    let Some(_) = server() else { return };
    let data = sample(30_000);
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("in.csv");
    std::fs::write(&local, &data).unwrap();
    let local = open_input(&Location::Local(local), &S3Options::default()).unwrap();
    // Tiny slack and no slack force follow-up GETs for the last line of every range.
    for slack in [0, 5, shards::s3::DEFAULT_RANGE_SLACK] {
        let s3 = S3::new(S3Options {
            range_slack: slack,
            ..S3Options::default()
        })
        .unwrap();
        let b = bucket(&s3, "ranges");
        let mut w = s3.create_object(&b, "in.csv", false).unwrap();
        w.write_all(&data).unwrap();
        Box::new(w).finish().unwrap();
        let remote = s3.input(&b, "in.csv").unwrap();
        assert_eq!(remote.len().unwrap(), data.len() as u64);
        for parts in [1, 2, 3, 7, 64] {
            assert_eq!(
                lines_of(&remote, parts),
                lines_of(local.as_ref(), parts),
                "{parts} ranges, slack {slack}"
            );
        }
        // Reading on past the hint reaches the end of the object.
        let mut all = Vec::new();
        remote
            .open_at(10, 20)
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, data[10..]);
        let mut none = Vec::new();
        let n = data.len() as u64;
        remote
            .open_at(n, n)
            .unwrap()
            .read_to_end(&mut none)
            .unwrap();
        assert!(none.is_empty());
    }
}

#[test]
fn large_objects_go_up_in_parts() {
    let Some(_) = server() else { return };
    let s3 = S3::new(S3Options {
        multipart_threshold: 5 << 20,
        ..S3Options::default()
    })
    .unwrap();
    let b = bucket(&s3, "multipart");
    let data: Vec<u8> = (0..(12 << 20) + 12345u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut w = s3.create_object(&b, "big.bin", false).unwrap();
    for piece in data.chunks(100_000) {
        w.write_all(piece).unwrap();
    }
    let info = Box::new(w).finish().unwrap();
    assert_eq!(info.bytes, data.len() as u64);
    let head = s3
        .block_on(s3.client().head_object().bucket(&b).key("big.bin").send())
        .unwrap();
    assert!(
        head.e_tag().unwrap_or_default().contains("-3"),
        "a 3-part upload: {:?}",
        head.e_tag()
    );
    assert!(s3.get_all(&b, "big.bin").unwrap() == data);

    // Dropped midway: the upload is aborted and no object appears.
    let mut w = s3.create_object(&b, "dropped.bin", false).unwrap();
    w.write_all(&data).unwrap();
    drop(w);
    let uploads = s3
        .block_on(s3.client().list_multipart_uploads().bucket(&b).send())
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());
    assert_eq!(keys(&s3, &b, ""), ["big.bin"]);
}

#[test]
fn listing_pages_through_1500_objects() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "list");
    let n = 1_550;
    let client = s3.client().clone();
    let bb = b.clone();
    s3.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let (client, b) = (client.clone(), bb.clone());
            set.spawn(async move {
                client
                    .put_object()
                    .bucket(b)
                    .key(format!("many/part-{i:05}"))
                    .body(format!("key,y,a\n{i},1,0\n").into_bytes().into())
                    .send()
                    .await
                    .unwrap();
            });
            while set.len() >= 32 {
                set.join_next().await.unwrap().unwrap();
            }
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        client
            .put_object()
            .bucket(&bb)
            .key("many/_SUCCESS")
            .body(Vec::new().into())
            .send()
            .await
            .unwrap();
    });
    let ds = Dataset::open(&s3loc(&b, "many"), &S3Options::default()).unwrap();
    let names: Vec<String> = ds.parts().iter().map(|p| p.name.clone()).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("part-{i:05}")).collect();
    assert_eq!(names, expected);
    // Overwrite deletes them all (batched deletes).
    let out = s3.output(&b, "many");
    out.prepare(true).unwrap();
    assert!(keys(&s3, &b, "many").is_empty());
}

#[test]
fn missing_bucket_and_key_are_named() {
    let Some(s3) = server() else { return };
    let gone = format!("shards-no-such-bucket-{}", std::process::id());
    let err = open_input(&s3loc(&gone, "in.csv"), &S3Options::default()).unwrap_err();
    let (kind, msg) = io_error(&err);
    assert_eq!(kind, ErrorKind::NotFound, "{msg}");
    assert!(msg.contains(&format!("no such bucket '{gone}'")), "{msg}");

    let err = open_output(&s3loc(&gone, "out"), &S3Options::default())
        .unwrap()
        .prepare(false)
        .unwrap_err();
    let (kind, msg) = io_error(&err);
    assert_eq!(kind, ErrorKind::NotFound, "{msg}");
    assert!(msg.contains(&gone), "{msg}");

    let err = create_file(&s3loc(&gone, "x.csv"), false, &S3Options::default())
        .err()
        .unwrap();
    assert!(io_error(&err).1.contains(&gone));

    let err = Dataset::open(&s3loc(&gone, "shards"), &S3Options::default()).unwrap_err();
    assert!(io_error(&err).1.contains(&gone));

    let b = bucket(&s3, "nokey");
    let err = open_input(&s3loc(&b, "missing/in.csv"), &S3Options::default()).unwrap_err();
    let (kind, msg) = io_error(&err);
    assert_eq!(kind, ErrorKind::NotFound, "{msg}");
    assert!(msg.contains(&format!("s3://{b}/missing/in.csv")), "{msg}");
    assert!(msg.contains("no such key"), "{msg}");

    let err = Dataset::open(&s3loc(&b, "nothing"), &S3Options::default()).unwrap_err();
    assert!(matches!(err, Error::NoShards { .. }), "{err}");
}

#[test]
fn a_shard_deleted_before_reading_is_named_and_a_rewrite_recovers() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "deleted");
    let loc = s3loc(&b, "out");
    let out = open_output(&loc, &S3Options::default()).unwrap();
    write_output(out.as_ref(), false).unwrap();

    // Deleted after the listing: the read names the object.
    let ds = Dataset::open(&loc, &S3Options::default()).unwrap();
    s3.delete_keys(&b, vec!["out/part-00001".into()]).unwrap();
    let err = ds.load().unwrap_err();
    let (kind, msg) = io_error(&err);
    assert_eq!(kind, ErrorKind::NotFound, "{msg}");
    assert!(msg.contains(&format!("s3://{b}/out/part-00001")), "{msg}");

    // Deleted before the listing: the manifest disagrees with the prefix.
    let err = Dataset::open(&loc, &S3Options::default()).unwrap_err();
    assert!(matches!(err, Error::Manifest { .. }), "{err}");
    assert!(err.to_string().contains("part-00001"), "{err}");

    write_output(out.as_ref(), true).unwrap();
    assert_eq!(
        Dataset::open(&loc, &S3Options::default())
            .unwrap()
            .load()
            .unwrap()
            .len(),
        3
    );
}

/// A moto server of the test's own, on a free port, killed on drop.
struct PrivateServer {
    child: Child,
    port: u16,
}

impl PrivateServer {
    fn start(port: Option<u16>) -> PrivateServer {
        let moto = std::env::var("MOTO_SERVER").expect("MOTO_SERVER (set by scripts/s3-server.sh)");
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child = Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        PrivateServer { child, port }
    }

    fn client(&self) -> S3 {
        S3::new(S3Options {
            endpoint_url: Some(format!("http://127.0.0.1:{}", self.port)),
            max_attempts: Some(2),
            ..S3Options::default()
        })
        .unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn server_stopped_between_parts() {
    let Some(_) = server() else { return };
    let mut moto = PrivateServer::start(None);
    let s3 = moto.client();
    let b = bucket(&s3, "stopped");
    let out = s3.output(&b, "out");
    out.prepare(false).unwrap();
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(BODIES[0].as_bytes()).unwrap();
    w.finish().unwrap();
    out.sync_parts().unwrap();

    moto.kill();
    let started = Instant::now();
    let mut w = out.create_part("part-00001").unwrap();
    w.write_all(BODIES[1].as_bytes()).unwrap();
    // The PUT may still be in flight when `finish` returns: its failure comes by `sync_parts`.
    let err = w.finish().and_then(|_| out.sync_parts()).unwrap_err();
    let (kind, msg) = io_error(&err);
    assert_eq!(kind, ErrorKind::ConnectionRefused, "{msg}");
    assert!(
        msg.contains(&format!("s3://{b}/out/_temporary/part-00001")),
        "{msg}"
    );
    let err = out.commit(&manifest(vec![])).unwrap_err();
    assert_eq!(io_error(&err).0, ErrorKind::ConnectionRefused);
    out.abort(); // cannot reach the server: gives up quietly
    assert!(started.elapsed() < Duration::from_secs(30));

    // Restarted (moto keeps objects in memory, so it comes back empty), the rerun succeeds.
    let moto = PrivateServer::start(Some(moto.port));
    let s3 = moto.client();
    assert!(s3.list_dir(&b, "out").is_err(), "a fresh server");
    let b2 = bucket(&s3, "stopped");
    let out = s3.output(&b2, "out");
    write_output(&out, false).unwrap();
    assert!(s3.exists(&b2, "out/_SUCCESS").unwrap());
}

/// The reader (`trainer --data`'s `Dataset`) on an endpoint that accepts connections and never
/// answers: it fails within its timeouts, naming the endpoint, instead of hanging.
#[test]
fn a_silent_endpoint_fails_the_reader_naming_it() {
    // The credentials come from the test server's environment.
    let Some(_) = server() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let s3 = S3::new(S3Options {
        endpoint_url: Some(endpoint.clone()),
        read_timeout: Duration::from_secs(1),
        max_attempts: Some(2),
        ..S3Options::default()
    })
    .unwrap();
    let err = Dataset::from_source(Box::new(s3.source("b", "shards")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&endpoint) && err.contains("timed out"),
        "{err}"
    );
}

/// The head (request line and headers) of one request to a listener that answers it with an
/// empty 200, read whole (body included) before answering.
fn one_request_head(listener: std::net::TcpListener) -> String {
    let (mut conn, _) = listener.accept().unwrap();
    let head = read_head(&mut conn).expect("a request");
    let body_len: usize = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; body_len];
    conn.read_exact(&mut body).unwrap();
    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    head
}

/// The value of header `name` (any case) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A PUT carries the CRC-32 we computed while the bytes were written (the manifest's, so the
/// SDK does not hash the body again) for the server to check, and to a loopback endpoint an
/// unsigned payload: SigV4's SHA-256 of the body, a second pass over every byte on both
/// sides, adds nothing there (see `signs_payload`: over plain HTTP to another machine it
/// is still signed).
#[test]
fn a_put_carries_our_crc32_and_an_unsigned_payload_on_loopback() {
    // The credentials come from the test server's environment.
    let Some(_) = server() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::thread::spawn(move || one_request_head(listener));
    let s3 = S3::new(S3Options {
        endpoint_url: Some(endpoint),
        max_attempts: Some(1),
        ..S3Options::default()
    })
    .unwrap();
    let mut up = Box::new(s3.create_object("b", "x.csv", true).unwrap());
    up.write_all(b"offset,y,a\n3,1,0.5\n").unwrap();
    let info = up.finish().unwrap();
    let head = seen.join().unwrap();
    assert!(head.starts_with("PUT /b/x.csv"), "{head}");
    // zlib.crc32(b"offset,y,a\n3,1,0.5\n") == 0x445789a0, big-endian in base64.
    assert_eq!(info.crc32, "445789a0");
    assert_eq!(
        header(&head, "x-amz-checksum-crc32"),
        Some("RFeJoA=="),
        "{head}"
    );
    assert_eq!(
        header(&head, "x-amz-content-sha256"),
        Some("UNSIGNED-PAYLOAD"),
        "{head}"
    );
    // The checksum is covered by the signature.
    let auth = header(&head, "authorization").expect("signed");
    assert!(auth.contains("x-amz-checksum-crc32"), "{auth}");
}

/// Reads one request's head (up to its blank line) from `conn`; `None` once the client closed
/// the connection.
fn read_head(conn: &mut std::net::TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        got.push(byte[0]);
    }
    String::from_utf8(got).ok()
}

/// A GET body that breaks midway is resumed from the byte it reached, and one that goes silent
/// fails after the read timeout and its resumes, naming the endpoint and the byte.
#[test]
fn a_broken_body_is_resumed_and_a_silent_one_fails() {
    // The credentials come from the test server's environment.
    let Some(_) = server() else { return };
    const DATA: &[u8] = b"offset,y\n1,0\n2,1\n3,0\n4,1\n5,0\n";
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Every GET: (key, first byte). `broken.csv` from byte 0 sends 10 bytes and closes the
    // connection; `silent.csv` sends 10 bytes from byte 0, none from elsewhere, and then
    // keeps the connection open.
    let gets = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, usize)>::new()));
    let seen = std::sync::Arc::clone(&gets);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let seen = std::sync::Arc::clone(&seen);
            std::thread::spawn(move || {
                while let Some(head) = read_head(&mut conn) {
                    if head.starts_with("HEAD ") {
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\netag: \"e1\"\r\n\r\n",
                            DATA.len()
                        );
                        conn.write_all(answer.as_bytes()).unwrap();
                        continue;
                    }
                    let key = head.split(' ').nth(1).unwrap().rsplit('/').next().unwrap();
                    let key = key.split('?').next().unwrap().to_string();
                    let range = header(&head, "range").expect("a ranged GET");
                    let (from, to) = range
                        .strip_prefix("bytes=")
                        .and_then(|r| r.split_once('-'))
                        .expect("bytes=a-b");
                    let (from, to): (usize, usize) = (from.parse().unwrap(), to.parse().unwrap());
                    let to = to.min(DATA.len() - 1);
                    seen.lock().unwrap().push((key.clone(), from));
                    let answer = format!(
                        "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\n\
                         content-range: bytes {from}-{to}/{}\r\netag: \"e1\"\r\n\r\n",
                        to + 1 - from,
                        DATA.len()
                    );
                    conn.write_all(answer.as_bytes()).unwrap();
                    match (key.as_str(), from) {
                        ("broken.csv", 0) => {
                            conn.write_all(&DATA[..10]).unwrap();
                            return; // closed mid-body
                        }
                        ("silent.csv", _) => {
                            if from == 0 {
                                conn.write_all(&DATA[..10]).unwrap();
                            }
                            std::thread::sleep(Duration::from_secs(30));
                            return;
                        }
                        _ => conn.write_all(&DATA[from..=to]).unwrap(),
                    }
                }
            });
        }
    });
    let options = S3Options {
        endpoint_url: Some(endpoint.clone()),
        max_attempts: Some(1),
        read_timeout: Duration::from_secs(1),
        ..S3Options::default()
    };
    let read = |key: &str| {
        let input = open_input(&s3loc("b", key), &options).unwrap();
        let mut got = Vec::new();
        input
            .open_at(0, DATA.len() as u64)
            .unwrap()
            .read_to_end(&mut got)
            .map(|_| got)
    };
    assert_eq!(read("broken.csv").unwrap(), DATA);
    let err = read("silent.csv").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&endpoint) && msg.contains("at byte 10"),
        "{msg}"
    );
    let gets = gets.lock().unwrap().clone();
    let expected: Vec<(String, usize)> = [
        ("broken.csv", 0),
        ("broken.csv", 10),
        ("silent.csv", 0),
        ("silent.csv", 10),
        ("silent.csv", 10),
        ("silent.csv", 10),
    ]
    .iter()
    .map(|&(k, f)| (k.to_string(), f))
    .collect();
    assert_eq!(gets, expected);
}

/// On S3 too, the reader trusts only a committed prefix: without `_SUCCESS` it refuses.
#[test]
fn the_reader_requires_success_on_s3() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "uncommitted");
    let loc = s3loc(&b, "out");
    let out = open_output(&loc, &S3Options::default()).unwrap();
    write_output(out.as_ref(), false).unwrap();
    Dataset::open(&loc, &S3Options::default())
        .unwrap()
        .load()
        .unwrap();
    s3.delete_keys(&b, vec!["out/_SUCCESS".into()]).unwrap();
    let err = Dataset::open(&loc, &S3Options::default()).unwrap_err();
    assert!(matches!(err, Error::NotCommitted { .. }), "{err}");
}

/// Options are passed to each store, not set for the process: a store built with an endpoint
/// other than the environment's (`AWS_ENDPOINT_URL`, the test server) talks to that endpoint,
/// while a store built with the defaults in the same process still reaches the test server.
#[test]
fn each_store_uses_the_options_it_is_given() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "explicit");
    // A port nobody listens on: connections are refused at once.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let elsewhere = S3Options {
        endpoint_url: Some(endpoint.clone()),
        max_attempts: Some(1),
        ..S3Options::default()
    };
    let err = open_output(&s3loc(&b, "out"), &elsewhere)
        .unwrap()
        .prepare(false)
        .unwrap_err();
    let (kind, msg) = io_error(&err);
    assert_eq!(kind, ErrorKind::ConnectionRefused, "{msg}");
    assert!(msg.contains(&endpoint), "{msg}");
    let err = create_file(&s3loc(&b, "x.csv"), true, &elsewhere)
        .and_then(|mut w| {
            w.write_all(b"a\n").unwrap();
            w.finish()
        })
        .expect_err("the other endpoint refuses");
    assert!(io_error(&err).1.contains(&endpoint), "{err}");
    // The defaults, in the same process and afterwards: the environment's server.
    let out = open_output(&s3loc(&b, "out"), &S3Options::default()).unwrap();
    write_output(&*out, false).unwrap();
    assert!(s3.exists(&b, "out/_SUCCESS").unwrap());
}

/// Every transfer event, in order.
#[derive(Debug, Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<(shards::s3::Direction, &'static str, u64)>>,
}

impl shards::s3::TransferProgress for Recorder {
    fn transferred(&self, direction: shards::s3::Direction, bytes: u64) {
        self.events
            .lock()
            .unwrap()
            .push((direction, "bytes", bytes));
    }
    fn finished(&self, direction: shards::s3::Direction, total: u64, _: Duration) {
        self.events
            .lock()
            .unwrap()
            .push((direction, "finished", total));
    }
}

/// The progress callback of the options receives the bytes uploaded (a single PUT and a
/// multipart upload) and downloaded, and each direction's total once, when the store closes.
#[test]
fn the_progress_callback_receives_the_transfer_counts() {
    use shards::s3::Direction::{Get, Put};
    let Some(_) = server() else { return };
    let recorder = std::sync::Arc::new(Recorder::default());
    let s3 = S3::new(S3Options {
        multipart_threshold: 5 << 20,
        progress: Some(recorder.clone()),
        ..S3Options::default()
    })
    .unwrap();
    let b = bucket(&s3, "progress");
    let big: Vec<u8> = (0..(11 << 20) + 7u32).map(|i| (i % 251) as u8).collect();
    for (key, data) in [("small", &b"0123456789"[..]), ("big", &big)] {
        let mut w = s3.create_object(&b, key, false).unwrap();
        w.write_all(data).unwrap();
        Box::new(w).finish().unwrap();
    }
    assert_eq!(s3.get_all(&b, "big").unwrap(), big);
    let events = |d, what| -> Vec<u64> {
        let events = recorder.events.lock().unwrap();
        let mine = events.iter().filter(|(e, w, _)| *e == d && *w == what);
        mine.map(|(_, _, n)| *n).collect()
    };
    let uploaded = 10 + big.len() as u64;
    assert_eq!(events(Put, "bytes").iter().sum::<u64>(), uploaded);
    assert!(
        events(Put, "bytes").len() >= 3,
        "one PUT and at least two parts"
    );
    assert_eq!(events(Get, "bytes").iter().sum::<u64>(), big.len() as u64);
    assert!(
        events(Put, "finished").is_empty(),
        "reported when the store closes"
    );
    drop(s3);
    assert_eq!(events(Put, "finished"), [uploaded]);
    assert_eq!(events(Get, "finished"), [big.len() as u64]);
}

/// A stand-in S3 endpoint that answers every request with 200 after `delay`, and records the
/// most requests it was handling at once.
fn slow_endpoint(delay: Duration) -> (String, std::sync::Arc<AtomicU32>) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (now, most) = (
        std::sync::Arc::new(AtomicU32::new(0)),
        std::sync::Arc::new(AtomicU32::new(0)),
    );
    let seen = std::sync::Arc::clone(&most);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (now, most) = (std::sync::Arc::clone(&now), std::sync::Arc::clone(&most));
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(delay);
                    now.fetch_sub(1, Ordering::SeqCst);
                    let answer = "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n";
                    if conn.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, seen)
}

/// The parts of an output go up several at a time, never more than `concurrency`: 12 parts
/// finished one after another by one writer are all in flight, 3 at a time, until
/// `sync_parts` (on the old code, `finish` waited for each PUT: one at a time).
#[test]
fn part_uploads_keep_at_most_the_concurrency_in_flight() {
    // The credentials come from the test server's environment.
    let Some(_) = server() else { return };
    let (endpoint, most) = slow_endpoint(Duration::from_millis(150));
    let s3 = S3::new(S3Options {
        endpoint_url: Some(endpoint),
        concurrency: 3,
        max_attempts: Some(1),
        ..S3Options::default()
    })
    .unwrap();
    let out = s3.output("b", "out");
    let started = Instant::now();
    for i in 0..12 {
        let mut w = out.create_part(&format!("part-{i:05}")).unwrap();
        w.write_all(&vec![b'x'; 1000]).unwrap();
        w.finish().unwrap();
    }
    out.sync_parts().unwrap();
    let took = started.elapsed();
    assert_eq!(most.load(Ordering::SeqCst), 3, "requests in flight at most");
    // 4 rounds of 3, not 12 one after another.
    assert!(took < Duration::from_millis(12 * 150), "{took:?}");
}

/// A part whose upload fails after `finish` returned fails `sync_parts` and the commit, naming
/// the object, and nothing is published.
#[test]
fn a_failed_part_upload_is_named_and_nothing_is_published() {
    let Some(s3) = server() else { return };
    let b = bucket(&s3, "failed-upload");
    let out = s3.output(&b, "out");
    out.prepare(false).unwrap();
    // The bucket goes away after the output was prepared: every upload fails.
    s3.block_on(s3.client().delete_bucket().bucket(&b).send())
        .unwrap();
    let mut infos = Vec::new();
    for name in ["part-00000", "part-00001"] {
        let mut w = out.create_part(name).unwrap();
        w.write_all(b"key,y,a\n3,1,0.5\n").unwrap();
        infos.push(w.finish().unwrap());
    }
    let err = out.sync_parts().unwrap_err();
    let (_, msg) = io_error(&err);
    assert!(
        msg.contains(&format!("s3://{b}/out/_temporary/part-0000")),
        "{msg}"
    );
    assert!(msg.contains("no such bucket"), "{msg}");
    // A commit without the wait fails the same way, before publishing anything.
    let mut w = out.create_part("part-00000").unwrap();
    w.write_all(b"key,y,a\n").unwrap();
    w.finish().unwrap();
    let err = out.commit(&manifest(infos)).unwrap_err();
    assert!(
        io_error(&err).1.contains(&format!("s3://{b}/out/")),
        "{err}"
    );
    s3.block_on(s3.client().create_bucket().bucket(&b).send())
        .unwrap();
    assert!(keys(&s3, &b, "out").is_empty());
}
