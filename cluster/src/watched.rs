//! A connection for timely's network threads that turns a peer's death into an orderly end and
//! checks every message header before timely sees it: the loss is recorded in [`Health`] (so
//! workers waiting for that peer fail naming it), the receiving thread sees a clean end of
//! stream instead of panicking, and writes to the dead peer are dropped instead of panicking
//! the sending thread.
//!
//! Timely frames its traffic as `(header, payload)*` ended by a zero-length header, and trusts
//! what it reads: a length that wraps loops forever, a target outside the process panics its
//! receiving thread, a huge length is buffered whole. A reader here hands timely only whole
//! messages whose header holds up (a length within [`MAX_MESSAGE`], the sender among the peer's
//! workers, targets among this process's), so when a connection breaks mid-message, or a
//! header does not hold up, or a record fails to open ([`crate::sealed`]), it ends the stream
//! with a zero-length header of its own at a message boundary, and the loss names the peer
//! and why. What it holds is at most one message and one read.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::ops::Range;
use std::sync::Arc;

use timely::communication::allocator::zero_copy::stream::Stream;
use timely::communication::networking::MessageHeader;

use crate::health::Health;
use crate::sealed::Wire;

/// Bytes read from the socket at a time.
const CHUNK: usize = 1 << 16;

/// Bytes of a message header (six big-endian u64: channel, source, target lower and upper,
/// length, sequence number).
const HEADER: usize = 48;

/// The longest message a peer may send: far above what any job here sends in one (the
/// pipeline's batches of records are at most a few tens of MiB, everything else far less).
pub const MAX_MESSAGE: usize = 256 << 20;

/// One end of the connection to process `peer`.
#[derive(Debug)]
pub struct Watched {
    stream: Wire,
    peer: usize,
    health: Arc<Health>,
    /// The workers a message from the peer may come from (the peer's).
    sources: Range<usize>,
    /// The workers a message may be for (this process's).
    targets: Range<usize>,
    /// Bytes read and not yet handed out; `buf[start..start + ready]` are whole messages.
    buf: Vec<u8>,
    start: usize,
    ready: usize,
    /// Whether the peer's own end-of-stream header has been seen.
    clean: bool,
    /// Whether the stream has ended (after which reads return 0).
    ended: bool,
}

/// The six fields of a message header.
fn header(bytes: &[u8]) -> [u64; 6] {
    let mut words = [0u64; 6];
    for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_be_bytes(b.try_into().expect("8 bytes"));
    }
    words
}

impl Watched {
    /// Watches `stream`, the connection to process `peer`.
    pub fn new(stream: Wire, peer: usize, health: Arc<Health>) -> Watched {
        let threads = health.threads();
        let me = health.process();
        Watched {
            stream,
            peer,
            sources: peer * threads..(peer + 1) * threads,
            targets: me * threads..(me + 1) * threads,
            health,
            buf: Vec::new(),
            start: 0,
            ready: 0,
            clean: false,
            ended: false,
        }
    }

    /// Extends `ready` over every whole message buffered after it whose header holds up; an
    /// error for the first that does not.
    fn frame(&mut self) -> Result<(), String> {
        let at = self.start + self.ready;
        let checked = self.check(at);
        self.ready = checked.as_ref().map_or_else(|(at, _)| *at, |at| *at) - self.start;
        checked.map(|_| ()).map_err(|(_, why)| why)
    }

    /// Checks the messages from `at` on: where the whole ones that hold up end, and (as an
    /// error, with that place) why the next does not hold up.
    fn check(&mut self, mut at: usize) -> Result<usize, (usize, String)> {
        while !self.clean && self.buf.len() - at >= HEADER {
            let [channel, source, lower, upper, length, _] = header(&self.buf[at..at + HEADER]);
            if length > MAX_MESSAGE as u64 {
                return Err((
                    at,
                    format!(
                        "it sent a message header announcing {length} bytes, beyond the limit of \
                     {MAX_MESSAGE} (a corrupt or hostile peer)"
                    ),
                ));
            }
            if length == 0 {
                self.clean = true;
                at += HEADER;
                break;
            }
            let within = |r: &Range<usize>, x: u64| x >= r.start as u64 && x < r.end as u64;
            if !within(&self.sources, source) {
                return Err((
                    at,
                    format!(
                        "it sent a message (channel {channel}) from worker {source}, not one of its \
                     workers {:?}",
                        self.sources
                    ),
                ));
            }
            if !(lower < upper && within(&self.targets, lower) && within(&self.targets, upper - 1))
            {
                return Err((
                    at,
                    format!(
                        "it sent a message (channel {channel}) for workers {lower}..{upper}, not \
                     among this process's workers {:?}",
                        self.targets
                    ),
                ));
            }
            let whole = HEADER + length as usize;
            if self.buf.len() - at < whole {
                break;
            }
            at += whole;
        }
        Ok(at)
    }

    /// Ends the stream after a loss: drops a partial message and appends an end header.
    fn end_abruptly(&mut self, reason: String) {
        self.health.lose(self.peer, reason);
        // The peer is not to be listened to any more (and should hear so).
        let _ = self.stream.socket().shutdown(Shutdown::Both);
        self.buf.truncate(self.start + self.ready);
        if !self.clean {
            let end = MessageHeader {
                channel: 0,
                source: 0,
                target_lower: 0,
                target_upper: 0,
                length: 0,
                seqno: 0,
            };
            end.write_to(&mut self.buf)
                .expect("writing to a Vec cannot fail");
            self.ready += HEADER;
            self.clean = true;
        }
        self.ended = true;
    }
}

impl Read for Watched {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.ready > 0 {
                let n = self.ready.min(out.len());
                out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                self.ready -= n;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            if self.clean && self.buf.len() > self.start {
                // Timely has seen the end of the stream: nothing may follow it.
                self.end_abruptly("it sent data after the end of its stream".into());
                continue;
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + CHUNK, 0);
            let read = self.stream.read(&mut self.buf[len..]);
            self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) if self.clean => {
                    self.health.lose(self.peer, "it closed its connection");
                    self.ended = true;
                }
                Ok(0) => {
                    self.end_abruptly("its connection closed mid-run (the process died?)".into());
                }
                Ok(_) if self.clean => {
                    // Timely has seen the end of the stream: nothing may follow it.
                    self.end_abruptly("it sent data after the end of its stream".into());
                }
                Ok(_) => {
                    if let Err(why) = self.frame() {
                        self.end_abruptly(why);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    self.end_abruptly(format!(
                        "unreachable: its machine acknowledged nothing, not even keepalive \
                         probes, for the timeout ({e}); its link or machine is down?"
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.end_abruptly(e.to_string());
                }
                Err(e) => {
                    self.end_abruptly(format!("connection lost: {e}"));
                }
            }
        }
    }
}

impl Write for Watched {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.stream.write(data) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                // The peer is gone: what it would have received no longer matters.
                self.health.lose(self.peer, format!("connection lost: {e}"));
                Ok(data.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Err(e) = self.stream.flush() {
            self.health.lose(self.peer, format!("connection lost: {e}"));
        }
        Ok(())
    }
}

impl Stream for Watched {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(Watched::new(
            self.stream.try_clone()?,
            self.peer,
            Arc::clone(&self.health),
        ))
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.stream.set_nonblocking(nonblocking)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        // Shutting down a connection the peer already dropped is not a failure here.
        let _ = Stream::shutdown(&self.stream, how);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    fn raw_header(words: [u64; 6]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    /// A message from worker 1 (process 1's) to worker 0 (process 0's).
    fn message(payload: &[u8], seqno: usize) -> Vec<u8> {
        let mut out = raw_header([1, 1, 0, 1, payload.len() as u64, seqno as u64]);
        out.extend_from_slice(payload);
        out
    }

    fn pair() -> (TcpStream, Watched, Arc<Health>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (receiver, _) = listener.accept().unwrap();
        let health = Arc::new(Health::new(0, 2, 1));
        (
            sender,
            Watched::new(Wire::Plain(receiver), 1, Arc::clone(&health)),
            health,
        )
    }

    /// A peer that dies mid-message: whole messages pass, the partial one is dropped, and the
    /// stream ends with an end header and a recorded loss.
    #[test]
    fn a_broken_connection_ends_at_a_message_boundary() {
        let (mut sender, mut watched, health) = pair();
        let first = message(b"hello", 0);
        let second = message(b"world, partly", 1);
        sender.write_all(&first).unwrap();
        sender.write_all(&second[..second.len() - 4]).unwrap();
        drop(sender);
        let mut got = Vec::new();
        watched.read_to_end(&mut got).unwrap();
        assert_eq!(&got[..first.len()], &first[..]);
        let end = MessageHeader::try_read(&got[first.len()..]).unwrap();
        assert_eq!(end.length, 0);
        assert_eq!(got.len(), first.len() + end.required_bytes());
        let gone = health.gone(1).unwrap();
        assert!(gone.reason.contains("mid-run"), "{gone:?}");
    }

    /// A clean end passes through unchanged, and still records that the peer has left.
    #[test]
    fn a_clean_end_passes_through() {
        let (mut sender, mut watched, health) = pair();
        let mut bytes = message(b"data", 0);
        bytes.extend(message(b"", 1));
        sender.write_all(&bytes).unwrap();
        drop(sender);
        let mut got = Vec::new();
        watched.read_to_end(&mut got).unwrap();
        assert_eq!(got, bytes);
        assert!(health.gone(1).unwrap().reason.contains("closed"));
    }

    /// Each malformed header timely would loop on, panic on or buffer without bound ends the
    /// stream at the last good message, naming why, without waiting for more bytes: a length
    /// that wraps (2^64 - 48), one of 2^40 bytes, a target outside this process, a source
    /// outside the peer, an empty target range, and data after the end of the stream.
    #[test]
    fn malformed_headers_end_the_stream_naming_why() {
        let good = message(b"fine", 0);
        let cases: [(Vec<u8>, &str); 6] = [
            (
                raw_header([1, 1, 0, 1, u64::MAX - 47, 0]),
                "beyond the limit",
            ),
            (raw_header([1, 1, 0, 1, 1 << 40, 0]), "beyond the limit"),
            (
                raw_header([1, 1, 5, 6, 8, 0]),
                "not among this process's workers",
            ),
            (raw_header([1, 0, 0, 1, 8, 0]), "not one of its workers"),
            (
                raw_header([1, 1, 1, 1, 8, 0]),
                "not among this process's workers",
            ),
            (
                [message(b"", 1), b"more".to_vec()].concat(),
                "data after the end of its stream",
            ),
        ];
        for (bad, why) in cases {
            let (mut sender, mut watched, health) = pair();
            sender.write_all(&good).unwrap();
            sender.write_all(&bad).unwrap();
            // The sender stays open: the stream must end on the header alone.
            let mut got = Vec::new();
            watched.read_to_end(&mut got).unwrap();
            assert_eq!(&got[..good.len()], &good[..], "{why}");
            let end = MessageHeader::try_read(&got[good.len()..]).unwrap();
            assert_eq!(end.length, 0, "{why}");
            let gone = health.gone(1).unwrap();
            assert!(gone.reason.contains(why), "{why}: {gone:?}");
            drop(sender);
        }
    }

    #[test]
    fn writes_to_a_dead_peer_are_dropped() {
        let (sender, watched, health) = pair();
        drop(sender);
        let mut w = watched.try_clone().unwrap();
        // The first writes may still be accepted by the kernel; later ones fail and are dropped.
        for _ in 0..100 {
            assert_eq!(w.write(&[0u8; 4096]).unwrap(), 4096);
            w.flush().unwrap();
        }
        assert!(health.gone(1).is_some());
        Stream::shutdown(&w, Shutdown::Write).unwrap();
    }
}
