//! How every link between two processes (or two workers) starts, with a deadline on the whole
//! exchange, not on each read: the connecting side greets with its index and the one it wants,
//! then, with a key, both prove they hold it.
//!
//! With a key the proof is the Noise handshake `NNpsk0` (X25519 ephemerals, the cluster key as
//! the pre-shared key, AES-256-GCM and SHA-256), whose prologue binds it to the link's purpose,
//! the run and both indices: the greeting `hello` and the initiator's ephemeral key (its
//! challenge) go one way, the responder's ephemeral key and a tag only a key holder can make
//! for this transcript come back, and the initiator's first record (a tag under keys that
//! depend on both fresh ephemerals) answers the responder's challenge. A replayed greeting
//! cannot make that record, a replayed answer does not match a fresh challenge, and each
//! direction's records are then encrypted under its own key ([`crate::sealed`]).
//!
//! Without a key (`--insecure-plaintext`) the greeting is answered by the same greeting back,
//! so a stray listener is not taken for a peer; nothing is proven.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::key::Security;
use crate::sealed::{self, Receiver, Sender};

/// The Noise protocol every keyed link speaks.
pub(crate) const NOISE: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";

/// First bytes of a keyed greeting.
const MAGIC_KEYED: [u8; 8] = *b"fastdpK1";
/// First bytes of a plaintext greeting.
const MAGIC_PLAIN: [u8; 8] = *b"fastdpP1";
/// A greeting: magic, the sender's index, the index it wants (each a big-endian u32).
pub(crate) const HELLO: usize = 16;
/// The longest handshake message (an ephemeral key and a tag, with room to spare).
const MAX_HANDSHAKE: usize = 256;
/// What the initiator's first record says.
const CONFIRM: &[u8] = b"fastdp: key confirmed";

/// What a link is for (bound into its handshake): which kind of link, and what both ends
/// know about the run that a link of another run or purpose would not share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Purpose<'a> {
    /// `process` (timely's connections) or `allreduce` (the workers' direct links).
    pub(crate) what: &'static str,
    /// What else both ends agree on (the number of processes, the exchanged addresses).
    pub(crate) context: &'a [u8],
}

/// A link after its handshake.
#[derive(Debug)]
pub(crate) enum Secured {
    /// In clear.
    Plain,
    /// Keyed: the halves of its record layer.
    Keyed(Sender, Receiver),
}

/// The greeting `from` sends to `to`.
pub(crate) fn hello(keyed: bool, from: usize, to: usize) -> [u8; HELLO] {
    let mut out = [0u8; HELLO];
    out[..8].copy_from_slice(if keyed { &MAGIC_KEYED } else { &MAGIC_PLAIN });
    out[8..12].copy_from_slice(&(from as u32).to_be_bytes());
    out[12..].copy_from_slice(&(to as u32).to_be_bytes());
    out
}

/// The Noise prologue of a link from `from` to `to`.
fn prologue(run: &[u8], purpose: Purpose<'_>, from: usize, to: usize) -> Vec<u8> {
    let mut p = b"fastdp cluster link v1\0".to_vec();
    p.extend_from_slice(purpose.what.as_bytes());
    p.push(0);
    p.extend_from_slice(run);
    p.extend_from_slice(&(purpose.context.len() as u64).to_be_bytes());
    p.extend_from_slice(purpose.context);
    p.extend_from_slice(&(from as u64).to_be_bytes());
    p.extend_from_slice(&(to as u64).to_be_bytes());
    p
}

/// Reads `buf` whole by `deadline`.
fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(if got == 0 {
                "it sent nothing before the deadline".into()
            } else {
                "it did not complete its message before the deadline".into()
            });
        }
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err("it closed the connection".into()),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Writes `buf` whole by `deadline`.
fn write_by(stream: &mut TcpStream, buf: &[u8], deadline: Instant) -> Result<(), String> {
    let mut sent = 0;
    while sent < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("it did not take our message before the deadline".into());
        }
        stream
            .set_write_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        match stream.write(&buf[sent..]) {
            Ok(0) => return Err("it closed the connection".into()),
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Reads one length-prefixed handshake message by `deadline`.
fn read_message(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 2];
    read_by(stream, &mut len, deadline)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HANDSHAKE {
        return Err(format!(
            "it sent a handshake message of {len} bytes (at most {MAX_HANDSHAKE})"
        ));
    }
    let mut msg = vec![0u8; len];
    read_by(stream, &mut msg, deadline)?;
    Ok(msg)
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

/// Resets the socket's timeouts once the handshake is over.
fn settle(stream: &TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|e| e.to_string())
}

fn builder(params: &snow::params::NoiseParams) -> snow::Builder<'_> {
    snow::Builder::new(params.clone())
}

fn noise_params() -> snow::params::NoiseParams {
    NOISE.parse().expect("a valid Noise protocol name")
}

/// The connecting side: `from` greets `to` on `stream`, and with a key both prove they hold it,
/// all by `deadline`. An error says why the other end is not `to` (for the caller to name it).
pub(crate) fn initiate(
    stream: &mut TcpStream,
    security: &Security,
    purpose: Purpose<'_>,
    from: usize,
    to: usize,
    deadline: Instant,
) -> Result<Secured, String> {
    let Security::Keyed { key, run } = security else {
        write_by(stream, &hello(false, from, to), deadline)?;
        let mut answer = [0u8; HELLO];
        read_by(stream, &mut answer, deadline)?;
        if answer != hello(false, to, from) {
            return Err(refusal(&answer, false));
        }
        settle(stream)?;
        return Ok(Secured::Plain);
    };
    let params = noise_params();
    let prologue = prologue(run, purpose, from, to);
    let mut noise = builder(&params)
        .psk(0, key.bytes())
        .and_then(|b| b.prologue(&prologue))
        .and_then(snow::Builder::build_initiator)
        .map_err(|e| format!("cannot start the handshake: {e}"))?;
    let mut msg = [0u8; MAX_HANDSHAKE];
    let n = noise
        .write_message(&[], &mut msg)
        .map_err(|e| format!("cannot start the handshake: {e}"))?;
    let mut first = hello(true, from, to).to_vec();
    first.extend_from_slice(&framed(&msg[..n]));
    write_by(stream, &first, deadline)?;
    let answer = read_message(stream, deadline).map_err(|m| match m.as_str() {
        "it closed the connection" => "it closed the connection without proving it holds the \
                                       cluster key (it refused ours: a different key, or not a \
                                       process of this run)"
            .to_string(),
        _ => m,
    })?;
    noise.read_message(&answer, &mut msg).map_err(|_| {
        "it did not prove it holds the cluster key for this run and link (a different key, \
         another run, or not one of ours)"
            .to_string()
    })?;
    let transport = noise
        .into_stateless_transport_mode()
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, receiver) = sealed::halves(transport);
    let mut confirm = Vec::new();
    sender.seal(CONFIRM, &mut confirm);
    write_by(stream, &confirm, deadline)?;
    settle(stream)?;
    Ok(Secured::Keyed(sender, receiver))
}

/// Why a greeting is not the one expected.
fn refusal(got: &[u8; HELLO], keyed: bool) -> String {
    let magic = &got[..8];
    if magic == MAGIC_PLAIN && keyed {
        "it greets without a cluster key (started with --insecure-plaintext?) while this process \
         has one"
            .into()
    } else if magic == MAGIC_KEYED && !keyed {
        "it greets with a cluster key while this process has none (--insecure-plaintext, or a \
         loopback hostfile without a key)"
            .into()
    } else if magic == MAGIC_PLAIN || magic == MAGIC_KEYED {
        let from = u32::from_be_bytes(got[8..12].try_into().expect("4 bytes"));
        let to = u32::from_be_bytes(got[12..].try_into().expect("4 bytes"));
        format!("its greeting names process {from} to process {to}, not the link expected")
    } else {
        "its first bytes are not a fastdp greeting (another program?)".into()
    }
}

/// The accepting side: reads a greeting on `stream` for `me` from an index `expected` accepts,
/// and with a key has the other end prove it holds it, all by `deadline`. The other end's
/// index, or why it is not taken for a peer.
pub(crate) fn respond(
    stream: &mut TcpStream,
    security: &Security,
    purpose: Purpose<'_>,
    me: usize,
    expected: impl Fn(usize) -> bool,
    deadline: Instant,
) -> Result<(usize, Secured), String> {
    let keyed = security.is_keyed();
    let mut got = [0u8; HELLO];
    read_by(stream, &mut got, deadline)?;
    let from = u32::from_be_bytes(got[8..12].try_into().expect("4 bytes")) as usize;
    let to = u32::from_be_bytes(got[12..].try_into().expect("4 bytes")) as usize;
    if got[..8] != hello(keyed, 0, 0)[..8] {
        return Err(refusal(&got, keyed));
    }
    if to != me || !expected(from) {
        return Err(format!(
            "it claims to be {from} and asks for {to}; this end is {me} and does not expect it"
        ));
    }
    let Security::Keyed { key, run } = security else {
        write_by(stream, &hello(false, me, from), deadline)?;
        settle(stream)?;
        return Ok((from, Secured::Plain));
    };
    let params = noise_params();
    let prologue = prologue(run, purpose, from, me);
    let mut noise = builder(&params)
        .psk(0, key.bytes())
        .and_then(|b| b.prologue(&prologue))
        .and_then(snow::Builder::build_responder)
        .map_err(|e| format!("cannot start the handshake: {e}"))?;
    let challenge = read_message(stream, deadline)?;
    let mut msg = [0u8; MAX_HANDSHAKE];
    noise.read_message(&challenge, &mut msg).map_err(|_| {
        format!(
            "its greeting as {from} does not prove it holds the cluster key for this run (a \
             different key, or another run)"
        )
    })?;
    let n = noise
        .write_message(&[], &mut msg)
        .map_err(|e| format!("handshake: {e}"))?;
    write_by(stream, &framed(&msg[..n]), deadline)?;
    let transport = noise
        .into_stateless_transport_mode()
        .map_err(|e| format!("handshake: {e}"))?;
    let (sender, mut receiver) = sealed::halves(transport);
    let mut record = [0u8; sealed::LEN + MAX_HANDSHAKE];
    read_by(stream, &mut record[..sealed::LEN], deadline)?;
    let len = usize::from(u16::from_be_bytes([record[0], record[1]]));
    if !(sealed::TAG..=MAX_HANDSHAKE).contains(&len) {
        return Err("its key confirmation is not a record".into());
    }
    read_by(
        stream,
        &mut record[sealed::LEN..sealed::LEN + len],
        deadline,
    )?;
    let mut plain = [0u8; MAX_HANDSHAKE];
    let n = receiver
        .open(&record[..sealed::LEN + len], &mut plain)
        .map_err(|_| {
            "it did not answer our challenge (a replayed greeting, or not a key holder)".to_string()
        })?;
    if &plain[..n] != CONFIRM {
        return Err("its key confirmation says something else".into());
    }
    settle(stream)?;
    Ok((from, Secured::Keyed(sender, receiver)))
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::key::ClusterKey;

    fn keyed(key: u8, run: u8) -> Security {
        Security::Keyed {
            key: ClusterKey::from_bytes([key; 32]),
            run: [run; 16],
        }
    }

    const PURPOSE: Purpose<'static> = Purpose {
        what: "test",
        context: b"2 processes",
    };

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// A responder's outcome, from its thread.
    type Responding = std::thread::JoinHandle<Result<(usize, Secured), String>>;

    /// Runs a responder (as 0, expecting 1) on a fresh listener in a thread; its outcome.
    fn responder(security: Security) -> (std::net::SocketAddr, Responding) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            respond(&mut s, &security, PURPOSE, 0, |p| p == 1, soon())
        });
        (address, handle)
    }

    /// Both ends with the same key and run agree, and the records they then exchange open on
    /// the other side (in both directions).
    #[test]
    fn holders_of_the_key_agree_and_their_records_open() {
        let (address, handle) = responder(keyed(7, 1));
        let mut s = TcpStream::connect(address).unwrap();
        let Secured::Keyed(mut tx, _rx) =
            initiate(&mut s, &keyed(7, 1), PURPOSE, 1, 0, soon()).unwrap()
        else {
            panic!("keyed")
        };
        let (from, secured) = handle.join().unwrap().unwrap();
        assert_eq!(from, 1);
        let Secured::Keyed(_, mut rx) = secured else {
            panic!("keyed")
        };
        let mut out = Vec::new();
        tx.seal(b"hello", &mut out);
        let len = Receiver::whole(&out).unwrap().unwrap();
        let mut plain = [0u8; 64];
        let n = rx.open(&out[..len], &mut plain).unwrap();
        assert_eq!(&plain[..n], b"hello");
        // The same record again (a replay) does not open: the nonce has moved on.
        assert!(rx.open(&out[..len], &mut plain).is_err());
    }

    /// Another key, another run, another purpose or a lie about the index: neither end takes
    /// the other for a peer.
    #[test]
    fn any_difference_fails_both_ends() {
        let cases: [(Security, Purpose<'static>, usize); 4] = [
            (keyed(8, 1), PURPOSE, 1),
            (keyed(7, 2), PURPOSE, 1),
            (
                keyed(7, 1),
                Purpose {
                    what: "test",
                    context: b"3 processes",
                },
                1,
            ),
            (keyed(7, 1), PURPOSE, 2),
        ];
        for (i, (theirs, purpose, from)) in cases.into_iter().enumerate() {
            let (address, handle) = responder(keyed(7, 1));
            let mut s = TcpStream::connect(address).unwrap();
            let ours = initiate(&mut s, &theirs, purpose, from, 0, soon());
            assert!(ours.is_err(), "case {i}: the initiator was satisfied");
            drop(s);
            let err = handle.join().unwrap().unwrap_err();
            assert!(!err.is_empty(), "case {i}");
        }
    }

    /// A recorded handshake replayed to a fresh responder fails (the responder's challenge is
    /// new), and a recorded answer replayed to a fresh initiator fails too.
    #[test]
    fn a_replayed_handshake_fails() {
        // Record both directions of a real handshake through a relay.
        let (address, handle) = responder(keyed(7, 1));
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_address = relay.local_addr().unwrap();
        let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
        let answered: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (s2, a2) = (Arc::clone(&sent), Arc::clone(&answered));
        let pump = std::thread::spawn(move || {
            let (client, _) = relay.accept().unwrap();
            let server = TcpStream::connect(address).unwrap();
            let copy = |mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                })
            };
            let up = copy(client.try_clone().unwrap(), server.try_clone().unwrap(), s2);
            let down = copy(server, client, a2);
            up.join().unwrap();
            down.join().unwrap();
        });
        let mut s = TcpStream::connect(relay_address).unwrap();
        initiate(&mut s, &keyed(7, 1), PURPOSE, 1, 0, soon()).unwrap();
        handle.join().unwrap().unwrap();
        drop(s);
        pump.join().unwrap();
        let (sent, answered) = (
            sent.lock().unwrap().clone(),
            answered.lock().unwrap().clone(),
        );
        assert!(sent.len() > HELLO && !answered.is_empty());

        // The initiator's bytes, replayed to a responder with the same key and run.
        let (address, handle) = responder(keyed(7, 1));
        let mut s = TcpStream::connect(address).unwrap();
        s.write_all(&sent).unwrap();
        let err = handle.join().unwrap().unwrap_err();
        assert!(err.contains("did not answer our challenge"), "{err}");

        // The responder's bytes, replayed to an initiator.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut greeting = [0u8; 128];
            let _ = s.read(&mut greeting);
            s.write_all(&answered).unwrap();
            s
        });
        let mut s = TcpStream::connect(address).unwrap();
        let err = initiate(&mut s, &keyed(7, 1), PURPOSE, 1, 0, soon()).unwrap_err();
        assert!(
            err.contains("did not prove it holds the cluster key"),
            "{err}"
        );
        drop(fake.join().unwrap());
    }

    /// A greeting sent a byte at a time (a byte a second, never finished) is cut off at the
    /// deadline of the whole exchange (0.5 s), not waited for read by read (which would take
    /// its 15 bytes, 15 s, and more).
    #[test]
    fn a_slow_greeting_ends_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        let dribble = std::thread::spawn(move || {
            for b in &hello(true, 1, 0)[..HELLO - 1] {
                if client.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let started = Instant::now();
        let deadline = started + Duration::from_millis(500);
        let err = respond(&mut s, &keyed(7, 1), PURPOSE, 0, |_| true, deadline).unwrap_err();
        assert!(err.contains("deadline"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        drop(s);
        dribble.join().unwrap();
    }

    /// Without a key the greeting is answered; a listener that answers anything else is not a
    /// peer, and a mismatch of modes is named.
    #[test]
    fn plaintext_greetings_and_mismatched_modes() {
        let (address, handle) = responder(Security::Plaintext);
        let mut s = TcpStream::connect(address).unwrap();
        assert!(matches!(
            initiate(&mut s, &Security::Plaintext, PURPOSE, 1, 0, soon()),
            Ok(Secured::Plain)
        ));
        assert_eq!(handle.join().unwrap().unwrap().0, 1);

        let (address, handle) = responder(Security::Plaintext);
        let mut s = TcpStream::connect(address).unwrap();
        assert!(initiate(&mut s, &keyed(7, 1), PURPOSE, 1, 0, soon()).is_err());
        let err = handle.join().unwrap().unwrap_err();
        assert!(err.contains("greets with a cluster key"), "{err}");

        let (address, handle) = responder(keyed(7, 1));
        let mut s = TcpStream::connect(address).unwrap();
        assert!(initiate(&mut s, &Security::Plaintext, PURPOSE, 1, 0, soon()).is_err());
        let err = handle.join().unwrap().unwrap_err();
        assert!(err.contains("greets without a cluster key"), "{err}");

        let (address, handle) = responder(keyed(7, 1));
        let mut s = TcpStream::connect(address).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let err = handle.join().unwrap().unwrap_err();
        assert!(err.contains("not a fastdp greeting"), "{err}");
    }
}
