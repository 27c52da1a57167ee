//! Connecting the processes of a cluster to each other: process i connects to every lower
//! process and accepts every higher one, retrying briefly, until a deadline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Sent first on every connection, so a stray connection is not taken for a peer.
const MAGIC: u64 = u64::from_be_bytes(*b"fastdp01");

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
                let mut hello = [0u8; 16];
                hello[..8].copy_from_slice(&MAGIC.to_be_bytes());
                hello[8..].copy_from_slice(&(me as u64).to_be_bytes());
                stream
                    .write_all(&hello)
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
                stream.set_nonblocking(false).map_err(listen_error)?;
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(100));
                stream.set_read_timeout(Some(left)).map_err(listen_error)?;
                let mut hello = [0u8; 16];
                if stream.read_exact(&mut hello).is_err() {
                    continue;
                }
                let magic = u64::from_be_bytes(hello[..8].try_into().expect("8 bytes"));
                let peer = u64::from_be_bytes(hello[8..].try_into().expect("8 bytes")) as usize;
                if magic != MAGIC
                    || peer <= me
                    || peer >= n
                    || accepted.iter().any(|(p, _)| *p == peer)
                {
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
}
