//! Connecting the processes of a cluster to each other: process i connects to every lower
//! process and accepts every higher one, retrying briefly, until a deadline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Sent first on every connection, so a stray connection is not taken for a peer.
const MAGIC: u64 = u64::from_be_bytes(*b"fastdp01");

/// The 16 bytes a connecting side sends first: `magic`, then its index (both big-endian).
pub(crate) fn hello(magic: u64, index: usize) -> [u8; 16] {
    let mut hello = [0u8; 16];
    hello[..8].copy_from_slice(&magic.to_be_bytes());
    hello[8..].copy_from_slice(&(index as u64).to_be_bytes());
    hello
}

/// Reads [`hello`] from a freshly accepted `stream`, waiting until `deadline` (at least 100 ms):
/// the sender's index, or `None` for a connection that is not one of ours (wrong magic, or
/// closed or silent before 16 bytes). An error only where the socket cannot be set up.
pub(crate) fn read_hello(
    stream: &mut TcpStream,
    magic: u64,
    deadline: Instant,
) -> std::io::Result<Option<usize>> {
    stream.set_nonblocking(false)?;
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    stream.set_read_timeout(Some(left))?;
    let mut got = [0u8; 16];
    if stream.read_exact(&mut got).is_err() {
        return Ok(None);
    }
    let (theirs, index) = got.split_at(8);
    if u64::from_be_bytes(theirs.try_into().expect("8 bytes")) != magic {
        return Ok(None);
    }
    Ok(Some(
        u64::from_be_bytes(index.try_into().expect("8 bytes")) as usize
    ))
}

/// One stream per other process, in process order, with `None` at `me`.
pub fn connect(
    addresses: &[String],
    me: usize,
    timeout: Duration,
) -> Result<Vec<Option<TcpStream>>> {
    let n = addresses.len();
    let deadline = Instant::now() + timeout;
    let acceptor = if me + 1 < n {
        let listener = TcpListener::bind(&addresses[me]).map_err(|e| Error::Connect {
            process: me,
            address: addresses[me].clone(),
            message: format!("cannot listen: {e}"),
        })?;
        let addrs = addresses.to_vec();
        Some(thread::spawn(move || {
            accept_all(listener, &addrs, me, deadline)
        }))
    } else {
        None
    };
    let mut streams: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    for (process, address) in addresses.iter().enumerate().take(me) {
        streams[process] = Some(connect_one(address, process, me, deadline, timeout)?);
    }
    if let Some(handle) = acceptor {
        let accepted = handle
            .join()
            .map_err(|_| Error::Timely("the accepting thread died".into()))??;
        for (process, stream) in accepted {
            streams[process] = Some(stream);
        }
    }
    Ok(streams)
}

fn connect_one(
    address: &str,
    process: usize,
    me: usize,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream> {
    let fail = |message: String| Error::Connect {
        process,
        address: address.to_string(),
        message,
    };
    loop {
        match TcpStream::connect(address) {
            Ok(mut stream) => {
                stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
                stream
                    .write_all(&hello(MAGIC, me))
                    .map_err(|e| fail(format!("handshake failed: {e}")))?;
                return Ok(stream);
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(fail(format!("not reachable within {timeout:?}: {e}")));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn accept_all(
    listener: TcpListener,
    addresses: &[String],
    me: usize,
    deadline: Instant,
) -> Result<Vec<(usize, TcpStream)>> {
    let n = addresses.len();
    let listen_error = |e: std::io::Error| Error::Connect {
        process: me,
        address: addresses[me].clone(),
        message: format!("accepting connections: {e}"),
    };
    listener.set_nonblocking(true).map_err(listen_error)?;
    let mut accepted: Vec<(usize, TcpStream)> = Vec::new();
    while accepted.len() < n - me - 1 {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let Some(peer) = read_hello(&mut stream, MAGIC, deadline).map_err(listen_error)?
                else {
                    continue; // not one of ours: ignore it
                };
                if peer <= me || peer >= n || accepted.iter().any(|(p, _)| *p == peer) {
                    continue; // not one of ours: ignore it
                }
                stream.set_read_timeout(None).map_err(listen_error)?;
                stream.set_nodelay(true).map_err(listen_error)?;
                accepted.push((peer, stream));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing = (me + 1..n)
                        .find(|p| accepted.iter().all(|(q, _)| q != p))
                        .expect("one is missing");
                    return Err(Error::Connect {
                        process: missing,
                        address: addresses[missing].clone(),
                        message: "did not connect in time".into(),
                    });
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(listen_error(e)),
        }
    }
    Ok(accepted)
}

/// Keepalive probes on an idle connection, one a second.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Has the kernel end `stream` when its peer's machine acknowledges nothing for `after`:
/// keepalive probes every second while the connection is idle, and `TCP_USER_TIMEOUT` for
/// probes and data alike. A peer process that is stopped or busy is still answered by its
/// kernel; a machine that is off, or whose link is down, is not, and the next read fails with
/// `TimedOut` (which [`crate::watched::Watched`] records as the peer being unreachable).
pub fn end_when_unreachable(stream: &TcpStream, after: Duration) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(PROBE_EVERY)
        .with_interval(PROBE_EVERY);
    socket.set_tcp_keepalive(&probes)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(after))?;
    #[cfg(not(target_os = "linux"))]
    let _ = after;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_processes_connect_in_any_start_order() {
        let addrs = crate::local::free_loopback_addresses(3).unwrap();
        let handles: Vec<_> = [2usize, 0, 1]
            .into_iter()
            .map(|me| {
                let addrs = addrs.clone();
                thread::spawn(move || (me, connect(&addrs, me, Duration::from_secs(10)).unwrap()))
            })
            .collect();
        for h in handles {
            let (me, streams) = h.join().unwrap();
            for (p, s) in streams.iter().enumerate() {
                assert_eq!(s.is_some(), p != me);
            }
        }
    }

    #[test]
    fn missing_peer_is_an_error_in_bounded_time() {
        let addrs = crate::local::free_loopback_addresses(2).unwrap();
        let started = Instant::now();
        let err = connect(&addrs, 1, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::Connect { process: 0, .. }), "{err}");
        let err = connect(&addrs, 0, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::Connect { process: 1, .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// The greeting both the cluster's connections and the all-reduce links use: a peer's
    /// greeting gives its index; another program's bytes, a connection closed early and one
    /// silent past the deadline are not taken for a peer.
    #[test]
    fn only_a_greeting_with_our_magic_names_a_peer() {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let deadline = || Instant::now() + Duration::from_millis(300);
        let cases: [(&[u8], Option<usize>); 4] = [
            (&hello(MAGIC, 7), Some(7)),
            (&hello(0x1234, 7), None),
            (b"GET / HTTP/1.1\r\n\r\n", None),
            (&hello(MAGIC, 7)[..10], None),
        ];
        for (sent, expected) in cases {
            let mut client = TcpStream::connect(address).unwrap();
            client.write_all(sent).unwrap();
            if sent.len() < 16 {
                client.shutdown(std::net::Shutdown::Write).unwrap();
            }
            let (mut accepted, _) = listener.accept().unwrap();
            let got = read_hello(&mut accepted, MAGIC, deadline()).unwrap();
            assert_eq!(got, expected, "{sent:?}");
        }
        let _silent = TcpStream::connect(address).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        assert_eq!(read_hello(&mut accepted, MAGIC, deadline()).unwrap(), None);
    }
}
