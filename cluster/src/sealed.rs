//! The record layer of a keyed link: after the handshake every byte travels in records
//! `length (u16, big-endian) | ciphertext`, each encrypted and authenticated with the link's key
//! for its direction and the next nonce of that direction (so a record dropped, replayed,
//! reordered or changed fails to open), and [`Wire`], the stream timely's network threads read
//! and write: a plain `TcpStream`, or [`Sealed`] over one.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

use snow::StatelessTransportState;
use timely::communication::allocator::zero_copy::stream::Stream;

/// Bytes of a record's authentication tag.
pub(crate) const TAG: usize = 16;
/// The most ciphertext one record holds (Noise's message limit).
pub(crate) const MAX_RECORD: usize = 65535;
/// The most plaintext one record holds.
pub(crate) const MAX_PLAIN: usize = MAX_RECORD - TAG;
/// Bytes of a record's length prefix.
pub(crate) const LEN: usize = 2;

/// Why a record could not be opened.
pub(crate) const FAILED: &str = "a message failed authentication: it was changed on the way, or \
                                 was not sent by the peer that completed the handshake";

/// A link's two directions' keys, shared by its sending and receiving halves.
pub(crate) struct Keys(StatelessTransportState);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(redacted)")
    }
}

/// The sending half of a keyed link.
#[derive(Debug)]
pub(crate) struct Sender {
    keys: Arc<Keys>,
    nonce: u64,
}

/// The receiving half of a keyed link.
#[derive(Debug)]
pub(crate) struct Receiver {
    keys: Arc<Keys>,
    nonce: u64,
}

/// Both halves of a keyed link, fresh from its handshake.
pub(crate) fn halves(state: StatelessTransportState) -> (Sender, Receiver) {
    let keys = Arc::new(Keys(state));
    (
        Sender {
            keys: Arc::clone(&keys),
            nonce: 0,
        },
        Receiver { keys, nonce: 0 },
    )
}

impl Sender {
    /// Appends `plain` to `out` as records (one empty record when `plain` is empty).
    pub(crate) fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let mut rest = plain;
        loop {
            let (chunk, after) = rest.split_at(rest.len().min(MAX_PLAIN));
            let at = out.len();
            out.resize(at + LEN + chunk.len() + TAG, 0);
            out[at..at + LEN].copy_from_slice(&((chunk.len() + TAG) as u16).to_be_bytes());
            self.keys
                .0
                .write_message(self.nonce, chunk, &mut out[at + LEN..])
                .expect("a record within Noise's limits, with room for it");
            self.nonce += 1;
            rest = after;
            if rest.is_empty() {
                return;
            }
        }
    }
}

impl Receiver {
    /// The bytes of the record at the start of `raw` (prefix included) when all of it is
    /// there; an error for a length no record can have.
    pub(crate) fn whole(raw: &[u8]) -> Result<Option<usize>, String> {
        let Some(prefix) = raw.get(..LEN) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len < TAG {
            return Err(format!(
                "a record of {len} bytes, shorter than its authentication tag"
            ));
        }
        Ok((raw.len() >= LEN + len).then_some(LEN + len))
    }

    /// Opens the whole `record` (prefix included) into `out`, which must have room for its
    /// ciphertext; the plaintext's length.
    pub(crate) fn open(&mut self, record: &[u8], out: &mut [u8]) -> Result<usize, String> {
        let n = self
            .keys
            .0
            .read_message(self.nonce, &record[LEN..], out)
            .map_err(|_| FAILED.to_string())?;
        self.nonce += 1;
        Ok(n)
    }
}

/// What timely's threads need of one connection's receiving half.
#[derive(Debug)]
struct Incoming {
    receiver: Receiver,
    /// Bytes read from the socket, `raw[start..end]` not yet opened.
    raw: Vec<u8>,
    start: usize,
    end: usize,
    /// The last record's plaintext, `plain[pos..len]` not yet handed out.
    plain: Vec<u8>,
    pos: usize,
    len: usize,
}

/// What timely's threads need of one connection's sending half.
#[derive(Debug)]
struct Outgoing {
    sender: Sender,
    buf: Vec<u8>,
}

/// A keyed connection as a blocking stream: writes go out as records, reads return the
/// plaintext of records that opened. A record that does not open is an `InvalidData` error,
/// and the stream ending inside a record an `UnexpectedEof` one.
///
/// Clones share the halves, so however timely splits its reading and writing among threads,
/// each direction's nonces stay in order.
#[derive(Debug)]
pub struct Sealed {
    stream: TcpStream,
    incoming: Arc<Mutex<Incoming>>,
    outgoing: Arc<Mutex<Outgoing>>,
}

/// Plaintext bytes sealed per write: a few records, so one write is one system call for
/// what timely's 64 KiB buffer hands over.
const WRITE_PLAIN: usize = 4 * MAX_PLAIN;

impl Sealed {
    /// `stream` after its handshake gave `sender` and `receiver`.
    pub(crate) fn new(stream: TcpStream, sender: Sender, receiver: Receiver) -> Sealed {
        Sealed {
            stream,
            incoming: Arc::new(Mutex::new(Incoming {
                receiver,
                raw: vec![0; 2 * (LEN + MAX_RECORD)],
                start: 0,
                end: 0,
                plain: vec![0; MAX_RECORD],
                pos: 0,
                len: 0,
            })),
            outgoing: Arc::new(Mutex::new(Outgoing {
                sender,
                buf: Vec::with_capacity(WRITE_PLAIN + 4 * (LEN + TAG)),
            })),
        }
    }
}

impl Read for Sealed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut guard = self.incoming.lock().expect("not poisoned");
        let inc = &mut *guard;
        loop {
            if inc.pos < inc.len {
                let n = out.len().min(inc.len - inc.pos);
                out[..n].copy_from_slice(&inc.plain[inc.pos..inc.pos + n]);
                inc.pos += n;
                return Ok(n);
            }
            let waiting = &inc.raw[inc.start..inc.end];
            if let Some(len) = Receiver::whole(waiting)
                .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?
            {
                inc.len = inc
                    .receiver
                    .open(&inc.raw[inc.start..inc.start + len], &mut inc.plain)
                    .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, m))?;
                inc.pos = 0;
                inc.start += len;
                continue;
            }
            if inc.start > 0 {
                inc.raw.copy_within(inc.start..inc.end, 0);
                inc.end -= inc.start;
                inc.start = 0;
            }
            match self.stream.read(&mut inc.raw[inc.end..]) {
                Ok(0) if inc.end == 0 => return Ok(0),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a record",
                    ));
                }
                Ok(n) => inc.end += n,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Sealed {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut guard = self.outgoing.lock().expect("not poisoned");
        let out = &mut *guard;
        let n = data.len().min(WRITE_PLAIN);
        out.buf.clear();
        out.sender.seal(&data[..n], &mut out.buf);
        self.stream.write_all(&out.buf)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// One connection between processes as timely's threads use it.
#[derive(Debug)]
pub enum Wire {
    /// In clear (`--insecure-plaintext`, or loopback without a key).
    Plain(TcpStream),
    /// Encrypted and authenticated.
    Sealed(Sealed),
}

impl Wire {
    /// The socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            Wire::Sealed(s) => &s.stream,
        }
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.read(buf),
            Wire::Sealed(s) => s.read(buf),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => s.write(buf),
            Wire::Sealed(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Wire::Plain(s) => s.flush(),
            Wire::Sealed(s) => s.flush(),
        }
    }
}

impl Stream for Wire {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Wire::Plain(s) => Wire::Plain(s.try_clone()?),
            Wire::Sealed(s) => Wire::Sealed(Sealed {
                stream: s.stream.try_clone()?,
                incoming: Arc::clone(&s.incoming),
                outgoing: Arc::clone(&s.outgoing),
            }),
        })
    }

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.socket().set_nonblocking(nonblocking)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket().shutdown(how)
    }
}
