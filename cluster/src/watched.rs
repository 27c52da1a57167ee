//! A TCP stream for timely's network threads that turns a peer's death into an orderly end:
//! the loss is recorded in [`Health`] (so workers waiting for that peer fail naming it), the
//! receiving thread sees a clean end of stream instead of panicking, and writes to the dead
//! peer are dropped instead of panicking the sending thread.
//!
//! Timely frames its traffic as `(header, payload)*` ended by a zero-length header. A reader
//! here hands timely only whole messages, so when a connection breaks mid-message it can end
//! the stream with a zero-length header of its own at a message boundary.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use timely::communication::allocator::zero_copy::stream::Stream;
use timely::communication::networking::MessageHeader;

use crate::health::Health;

/// Bytes read from the socket at a time.
const CHUNK: usize = 1 << 16;

/// One end of the connection to process `peer`.
#[derive(Debug)]
pub struct Watched {
    stream: TcpStream,
    peer: usize,
    health: Arc<Health>,
    /// Bytes read and not yet handed out; `buf[start..start + ready]` are whole messages.
    buf: Vec<u8>,
    start: usize,
    ready: usize,
    /// Whether the peer's own end-of-stream header has been seen.
    clean: bool,
    /// Whether the stream has ended (after which reads return 0).
    ended: bool,
}

impl Watched {
    /// Watches `stream`, the connection to process `peer`.
    pub fn new(stream: TcpStream, peer: usize, health: Arc<Health>) -> Watched {
        Watched {
            stream,
            peer,
            health,
            buf: Vec::new(),
            start: 0,
            ready: 0,
            clean: false,
            ended: false,
        }
    }

    /// Extends `ready` over every whole message buffered after it.
    fn frame(&mut self) {
        let mut at = self.start + self.ready;
        while let Some(header) = MessageHeader::try_read(&self.buf[at..]) {
            if header.length == 0 {
                self.clean = true;
            }
            at += header.required_bytes();
        }
        self.ready = at - self.start;
    }

    /// Ends the stream after a loss: drops a partial message and appends an end header.
    fn end_abruptly(&mut self, reason: String) {
        self.health.lose(self.peer, reason);
        self.buf.truncate(self.start + self.ready);
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
        self.clean = true;
        self.frame();
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
                    self.ended = true;
                }
                Ok(_) => self.frame(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    self.end_abruptly(format!(
                        "unreachable: its machine acknowledged nothing, not even keepalive \
                         probes, for the timeout ({e}); its link or machine is down?"
                    ));
                    self.ended = true;
                }
                Err(e) => {
                    self.end_abruptly(format!("connection lost: {e}"));
                    self.ended = true;
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
        let _ = self.stream.shutdown(how);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn message(payload: &[u8], seqno: usize) -> Vec<u8> {
        let mut out = Vec::new();
        MessageHeader {
            channel: 1,
            source: 0,
            target_lower: 0,
            target_upper: 1,
            length: payload.len(),
            seqno,
        }
        .write_to(&mut out)
        .unwrap();
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
            Watched::new(receiver, 1, Arc::clone(&health)),
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
