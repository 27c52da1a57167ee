//! Connecting the processes of a cluster to each other: process i connects to every lower
//! process and accepts every higher one, each link starting with a handshake
//! ([`crate::handshake`]), until one deadline for the whole set-up.
//!
//! The accepting side runs each incoming handshake in a thread of its own with its own
//! deadline, so a connection that dawdles or fails (a stray client, an impostor without the
//! key, a greeting sent a byte at a time) neither holds up the real peers nor takes their
//! place: only a connection that completes the handshake as an expected process counts. The
//! connecting side fails at once, naming the address, when what listens there does not
//! authenticate as the process it wants.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::handshake::{self, Purpose, Secured};
use crate::key::Security;
use crate::sealed::{Sealed, Wire};

/// The longest one incoming handshake may take (a real peer's takes milliseconds).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Incoming handshakes in progress at once; connections beyond are closed unread.
const MAX_PENDING: usize = 64;
/// Refused connections named in an error.
const NAMED: usize = 3;

/// What the handshakes of a cluster's process links are bound to besides the run: the number
/// of processes.
fn context(processes: usize) -> String {
    format!("{processes} processes")
}

/// A link after its handshake, as timely's threads use it.
pub(crate) fn wire(stream: TcpStream, secured: Secured) -> Wire {
    match secured {
        Secured::Plain => Wire::Plain(stream),
        Secured::Keyed(sender, receiver) => Wire::Sealed(Sealed::new(stream, sender, receiver)),
    }
}

/// One stream per other process, in process order, with `None` at `me`. `me` accepts the
/// higher processes on `listener` (bound by whoever started it), or on a listener bound here at
/// `addresses[me]`.
pub fn connect(
    addresses: &[String],
    me: usize,
    listener: Option<&TcpListener>,
    security: &Security,
    timeout: Duration,
) -> Result<Vec<Option<Wire>>> {
    let n = addresses.len();
    let deadline = Instant::now() + timeout;
    let acceptor = if me + 1 < n {
        let listen_error = |e: std::io::Error| Error::Connect {
            process: me,
            address: addresses[me].clone(),
            message: format!("cannot listen: {e}"),
        };
        let listener = match listener {
            Some(l) => l.try_clone().map_err(listen_error)?,
            None => TcpListener::bind(&addresses[me]).map_err(listen_error)?,
        };
        let addrs = addresses.to_vec();
        let security = security.clone();
        Some(thread::spawn(move || {
            accept_all(&listener, &addrs, me, &security, deadline)
        }))
    } else {
        None
    };
    let mut streams: Vec<Option<Wire>> = (0..n).map(|_| None).collect();
    for (process, address) in addresses.iter().enumerate().take(me) {
        streams[process] = Some(dial_by(
            address, me, process, n, security, deadline, timeout,
        )?);
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

/// Connects to process `to` of `processes` at `address` as process `me` and completes the
/// handshake, retrying a refused connection until `timeout`: the link a real process makes
/// (also for tests that play a process).
pub fn dial(
    address: &str,
    me: usize,
    to: usize,
    processes: usize,
    security: &Security,
    timeout: Duration,
) -> Result<Wire> {
    dial_by(
        address,
        me,
        to,
        processes,
        security,
        Instant::now() + timeout,
        timeout,
    )
}

fn dial_by(
    address: &str,
    me: usize,
    to: usize,
    processes: usize,
    security: &Security,
    deadline: Instant,
    timeout: Duration,
) -> Result<Wire> {
    let fail = |message: String| Error::Connect {
        process: to,
        address: address.to_string(),
        message,
    };
    let targets: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve the address: {e}")))?
        .collect();
    let Some(target) = targets.first().copied() else {
        return Err(fail("the address resolves to nothing".into()));
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match TcpStream::connect_timeout(&target, left.max(Duration::from_millis(1))) {
            Ok(mut stream) => {
                stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
                let context = context(processes);
                let purpose = Purpose {
                    what: "process",
                    context: context.as_bytes(),
                };
                let secured = handshake::initiate(&mut stream, security, purpose, me, to, deadline)
                    .map_err(|reason| {
                        fail(format!(
                            "what listens there did not authenticate as process {to} of this                              run: {reason}. Another program, or a process of another run or                              with another cluster key, may hold that address"
                        ))
                    })?;
                return Ok(wire(stream, secured));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(fail(format!("not reachable within {timeout:?}: {e}")));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Why accepting peers failed.
#[derive(Debug)]
pub(crate) enum AcceptFailed {
    /// The listener failed.
    Listen(std::io::Error),
    /// `missing` did not connect and authenticate by the deadline; `refused` says what came
    /// instead (the first few connections that were not taken, and why).
    Late {
        missing: usize,
        refused: Vec<String>,
    },
}

impl AcceptFailed {
    /// What to say about `refused` after "did not connect in time".
    pub(crate) fn refused_note(refused: &[String]) -> String {
        if refused.is_empty() {
            return String::new();
        }
        format!(
            "; {} connection(s) here were refused: {}",
            refused.len(),
            refused[..refused.len().min(NAMED)].join("; ")
        )
    }
}

/// What one incoming connection's handshake came to.
type Outcome = std::result::Result<(usize, TcpStream, Secured), String>;

/// Accepts on `listener` one connection from each index in `from` that completes the handshake
/// for `me` (as `what`, bound to `context`), by `deadline`: each incoming handshake in a thread
/// of its own, with its own deadline.
pub(crate) fn accept(
    listener: &TcpListener,
    security: &Security,
    what: &'static str,
    context: &[u8],
    me: usize,
    from: std::ops::Range<usize>,
    deadline: Instant,
) -> std::result::Result<Vec<(usize, TcpStream, Secured)>, AcceptFailed> {
    listener
        .set_nonblocking(true)
        .map_err(AcceptFailed::Listen)?;
    let context: std::sync::Arc<[u8]> = context.into();
    let (done, outcomes) = mpsc::channel::<Outcome>();
    let mut pending = 0usize;
    let mut refused: Vec<String> = Vec::new();
    let mut accepted: Vec<(usize, TcpStream, Secured)> = Vec::new();
    let wanted = from.len();
    let mut take = |outcome: Outcome, accepted: &mut Vec<(usize, TcpStream, Secured)>| match outcome
    {
        Ok((peer, stream, secured)) if accepted.iter().all(|(p, _, _)| *p != peer) => {
            accepted.push((peer, stream, secured));
        }
        Ok((peer, _, _)) => refused.push(format!("a second connection as {peer}")),
        Err(why) => refused.push(why),
    };
    while accepted.len() < wanted {
        match listener.accept() {
            Ok((mut stream, address)) => {
                if pending >= MAX_PENDING {
                    continue; // closed unread: too many handshakes in progress
                }
                pending += 1;
                let (done, security) = (done.clone(), security.clone());
                let (context, from) = (std::sync::Arc::clone(&context), from.clone());
                let own_deadline = deadline.min(Instant::now() + HANDSHAKE_LIMIT);
                thread::spawn(move || {
                    let purpose = Purpose {
                        what,
                        context: &context,
                    };
                    let outcome = stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.set_nodelay(true))
                        .map_err(|e| e.to_string())
                        .and_then(|()| {
                            handshake::respond(
                                &mut stream,
                                &security,
                                purpose,
                                me,
                                |p| from.contains(&p),
                                own_deadline,
                            )
                        })
                        .map(|(peer, secured)| (peer, stream, secured))
                        .map_err(|why| format!("from {address}: {why}"));
                    // The set-up may be over (with or without this one).
                    let _ = done.send(outcome);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    break;
                }
                if let Ok(outcome) = outcomes.recv_timeout(Duration::from_millis(5)) {
                    pending -= 1;
                    take(outcome, &mut accepted);
                }
            }
            Err(e) => return Err(AcceptFailed::Listen(e)),
        }
        while let Ok(outcome) = outcomes.try_recv() {
            pending -= 1;
            take(outcome, &mut accepted);
        }
    }
    if accepted.len() < wanted {
        let missing = from
            .clone()
            .find(|p| accepted.iter().all(|(q, _, _)| q != p))
            .expect("one is missing");
        return Err(AcceptFailed::Late { missing, refused });
    }
    Ok(accepted)
}

fn accept_all(
    listener: &TcpListener,
    addresses: &[String],
    me: usize,
    security: &Security,
    deadline: Instant,
) -> Result<Vec<(usize, Wire)>> {
    let n = addresses.len();
    let context = context(n);
    match accept(
        listener,
        security,
        "process",
        context.as_bytes(),
        me,
        me + 1..n,
        deadline,
    ) {
        Ok(accepted) => Ok(accepted
            .into_iter()
            .map(|(peer, stream, secured)| (peer, wire(stream, secured)))
            .collect()),
        Err(AcceptFailed::Listen(e)) => Err(Error::Connect {
            process: me,
            address: addresses[me].clone(),
            message: format!("accepting connections: {e}"),
        }),
        Err(AcceptFailed::Late { missing, refused }) => Err(Error::Connect {
            process: missing,
            address: addresses[missing].clone(),
            message: format!(
                "did not connect and authenticate in time{}",
                AcceptFailed::refused_note(&refused)
            ),
        }),
    }
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
    use std::io::{Read, Write};

    use super::*;
    use crate::execute::{Cluster, Network};
    use crate::key::ClusterKey;

    /// The addresses and each process's network of an in-process cluster of `n`.
    fn members(n: usize) -> (Vec<String>, Vec<Network>) {
        let clusters = crate::local::in_process(n, 1).unwrap();
        let mut addresses = Vec::new();
        let networks = clusters
            .into_iter()
            .map(|c| match c {
                Cluster::Member {
                    addresses: a,
                    network,
                    ..
                } => {
                    addresses = a;
                    network
                }
                Cluster::Single { .. } => unreachable!(),
            })
            .collect();
        (addresses, networks)
    }

    fn connect_as(
        addrs: &[String],
        me: usize,
        net: &Network,
        timeout: Duration,
    ) -> Result<Vec<Option<Wire>>> {
        connect(addrs, me, net.listener(), &net.security, timeout)
    }

    /// Two connected processes' first link carries bytes both ways.
    fn talk(a: &mut Wire, b: &mut Wire) {
        a.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").unwrap();
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
    }

    #[test]
    fn three_processes_connect_in_any_start_order() {
        let (addrs, nets) = members(3);
        let handles: Vec<_> = [2usize, 0, 1]
            .into_iter()
            .map(|me| {
                let (addrs, net) = (addrs.clone(), nets[me].clone());
                thread::spawn(move || {
                    (
                        me,
                        connect_as(&addrs, me, &net, Duration::from_secs(20)).unwrap(),
                    )
                })
            })
            .collect();
        let mut all: Vec<(usize, Vec<Option<Wire>>)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        all.sort_by_key(|(me, _)| *me);
        for (me, streams) in &all {
            for (p, s) in streams.iter().enumerate() {
                assert_eq!(s.is_some(), p != *me);
                assert!(matches!(s, None | Some(Wire::Sealed(_))), "keyed links");
            }
        }
        let (left, right) = all.split_at_mut(1);
        let a = left[0].1[1].as_mut().unwrap();
        let b = right[0].1[0].as_mut().unwrap();
        talk(a, b);
    }

    /// Whatever the peer's absence looks like (nothing listens, or a listener that never
    /// answers), set-up fails within the timeout naming the missing process.
    #[test]
    fn missing_peer_is_an_error_in_bounded_time() {
        let (addrs, nets) = members(2);
        let started = Instant::now();
        // Process 0's listener is bound (held by `nets`) but nobody answers on it.
        let err = connect_as(&addrs, 1, &nets[1], Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::Connect { process: 0, .. }), "{err}");
        let err = connect_as(&addrs, 0, &nets[0], Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Error::Connect { process: 1, .. }), "{err}");
        assert!(
            err.to_string()
                .contains("did not connect and authenticate in time"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Connections that do not authenticate (an impostor with the magic bytes but another key,
    /// one greeting a byte at a time, another program) neither hold up the set-up nor take the
    /// place of the real process, which arrives after them.
    #[test]
    fn impostors_neither_join_nor_displace_the_real_peer() {
        let (addrs, nets) = members(2);
        let target = addrs[0].clone();
        let zero = {
            let (addrs, net) = (addrs.clone(), nets[0].clone());
            thread::spawn(move || connect_as(&addrs, 0, &net, Duration::from_secs(20)))
        };
        // An impostor who knows the protocol but not the key connects first.
        let wrong = Security::Keyed {
            key: ClusterKey::generate().unwrap(),
            run: [0; 16],
        };
        let err = dial(&target, 1, 0, 2, &wrong, Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("did not authenticate"), "{err}");
        // Another dribbles a greeting; a third speaks HTTP.
        let mut slow = TcpStream::connect(&target).unwrap();
        slow.write_all(&crate::handshake::hello(true, 1, 0)[..3])
            .unwrap();
        let mut http = TcpStream::connect(&target).unwrap();
        http.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        // The real process 1 arrives last and is taken.
        let mut ones = connect_as(&addrs, 1, &nets[1], Duration::from_secs(20)).unwrap();
        let mut zeros = zero.join().unwrap().unwrap();
        talk(zeros[1].as_mut().unwrap(), ones[0].as_mut().unwrap());
        drop((slow, http));
    }

    /// A stray listener on a peer's address (here one that answers like a web server, and one
    /// that accepts and stays silent) fails the run at once or at the timeout, naming the
    /// address and saying it did not authenticate.
    #[test]
    fn a_stray_listener_is_never_a_peer() {
        for answer in [&b"HTTP/1.1 200 OK\r\n\r\n"[..], b""] {
            let stray = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = stray.local_addr().unwrap().to_string();
            let server = thread::spawn(move || {
                let (mut s, _) = stray.accept().unwrap();
                s.write_all(answer).unwrap();
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            });
            let started = Instant::now();
            let err = dial(
                &address,
                1,
                0,
                2,
                &Security::Keyed {
                    key: ClusterKey::generate().unwrap(),
                    run: [0; 16],
                },
                Duration::from_secs(1),
            )
            .unwrap_err();
            let said = err.to_string();
            assert!(
                said.contains(&address) && said.contains("did not authenticate"),
                "{said}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
            drop(err);
            server.join().unwrap();
        }
    }
}
