//! Direct sockets between the worker threads of a multi-process cluster, for the all-reduce: a
//! round is one write and one read per peer made by the worker thread itself, instead of four
//! thread hand-offs through timely's network threads (worker -> send thread -> socket -> receive
//! thread -> worker), each a wake-up that, on a busy machine, waits for a core.
//!
//! Sockets are non-blocking, so two workers sending each other more than a socket buffer holds
//! keep reading while they write. A worker that finds nothing to read blocks in `read` for at
//! most [`BLOCK`] at a time, checking the peers' health in between: the kernel wakes it when the
//! message arrives. It does not poll first: on the busy 2-core machine, polling (with or without
//! yielding the core, for 10-200 us, or only after rounds whose peers came within that) made a
//! round 1.5-3x slower than blocking at once (`allreduce_latency`, bench/RESULTS.md): the
//! kernel's wake-up gets the woken thread a core sooner than a polling one gets it back.
//!
//! Each link starts with the cluster's handshake ([`crate::handshake`], bound to both workers'
//! indices and to the addresses every worker exchanged), and with a key its traffic is sealed
//! ([`crate::sealed`]): a round's message is encrypted once per peer when it starts, and
//! records are opened into the same receive buffer the sum reads from, so a round is still one
//! write and one read per peer and the values are added where they land. A record that does not
//! open fails the round at once, naming the worker.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::allreduce::Summand;
use crate::connect::{AcceptFailed, accept};
use crate::error::{Error, Result};
use crate::handshake::{self, Purpose, Secured};
use crate::health::Health;
use crate::sealed::{LEN, MAX_RECORD, Receiver, Sender};

/// A message: round and value count (each a little-endian u64), then the values.
const HEADER: usize = 16;

/// The longest a worker blocks in one `read` before checking health and the deadline again.
const BLOCK: Duration = Duration::from_millis(1);

/// This worker's end of the link to one other worker.
#[derive(Debug)]
struct Link {
    worker: usize,
    stream: TcpStream,
    /// Bytes received, `buf[..filled]`; they may run into the peer's next round.
    buf: Vec<u8>,
    filled: usize,
    /// Bytes of this round's outgoing message written so far.
    sent: usize,
    /// Bytes of this round's outgoing message on the wire (sealed, it is longer).
    to_send: usize,
    /// Why nothing more will arrive (the peer closed its end, or the link failed).
    eof: Option<String>,
    /// Whether what came cannot be trusted (a record that did not open): the round fails at
    /// once.
    fatal: bool,
    /// With a key: the link's record layer.
    sealed: Option<SealedLink>,
}

/// A keyed link's record layer.
#[derive(Debug)]
struct SealedLink {
    sender: Sender,
    receiver: Receiver,
    /// Records read and not yet opened, `raw[..raw_filled]`.
    raw: Vec<u8>,
    raw_filled: usize,
    /// This round's message, sealed for this peer.
    out: Vec<u8>,
}

/// Links from this worker to every other worker of the cluster.
#[derive(Debug)]
pub(crate) struct Links {
    index: usize,
    links: Vec<Link>,
    health: Arc<Health>,
    /// This round's outgoing message (this worker's values, kept while `data` is overwritten
    /// with the sum).
    out: Vec<u8>,
}

/// What a round needs to know about the cluster to fail well.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoundContext {
    pub(crate) round: u64,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
}

impl Links {
    /// The address this worker listens on: the IP this process uses towards its peers (that of
    /// its connections to them), any free port.
    pub(crate) fn listen(health: &Health) -> Result<(TcpListener, SocketAddr)> {
        let ip = health
            .local_ip()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        let listener = TcpListener::bind((ip, 0)).map_err(|e| Error::Connect {
            process: health.process(),
            address: ip.to_string(),
            message: format!("cannot listen for the all-reduce's links: {e}"),
        })?;
        let address = listener.local_addr().map_err(|e| Error::Connect {
            process: health.process(),
            address: ip.to_string(),
            message: format!("cannot read the all-reduce's listening address: {e}"),
        })?;
        Ok((listener, address))
    }

    /// Connects worker `index` to every other worker, listening at `addresses[index]` on
    /// `listener`: it connects to each lower worker and accepts each higher one, by `deadline`,
    /// each link starting with the cluster's handshake.
    pub(crate) fn connect(
        index: usize,
        listener: TcpListener,
        addresses: &[SocketAddr],
        health: Arc<Health>,
        deadline: Instant,
    ) -> Result<Links> {
        let fail = |worker: usize, message: String| Error::Connect {
            process: health.process_of(worker),
            address: addresses[worker].to_string(),
            message: format!("all-reduce link from worker {index} to worker {worker}: {message}"),
        };
        let security = health.security().clone();
        let context: Vec<u8> = addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes();
        let purpose = Purpose {
            what: "allreduce",
            context: &context,
        };
        let mut streams: Vec<(usize, TcpStream, Secured)> = Vec::with_capacity(addresses.len());
        for (worker, address) in addresses.iter().enumerate().take(index) {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut stream =
                TcpStream::connect_timeout(address, left.max(Duration::from_millis(1)))
                    .map_err(|e| fail(worker, format!("cannot connect: {e}")))?;
            stream
                .set_nodelay(true)
                .map_err(|e| fail(worker, e.to_string()))?;
            let secured =
                handshake::initiate(&mut stream, &security, purpose, index, worker, deadline)
                    .map_err(|why| fail(worker, format!("it did not authenticate: {why}")))?;
            streams.push((worker, stream, secured));
        }
        let me = addresses[index];
        match accept(
            &listener,
            &security,
            "allreduce",
            &context,
            index,
            index + 1..addresses.len(),
            deadline,
        ) {
            Ok(accepted) => streams.extend(accepted),
            Err(AcceptFailed::Listen(e)) => {
                return Err(fail(index, format!("accepting links: {e}")));
            }
            Err(AcceptFailed::Late { missing, refused }) => {
                return Err(fail(
                    missing,
                    format!(
                        "it did not connect to {me} and authenticate in time{}",
                        AcceptFailed::refused_note(&refused)
                    ),
                ));
            }
        }
        streams.sort_unstable_by_key(|(w, _, _)| *w);
        let links = streams
            .into_iter()
            .map(|(worker, stream, secured)| {
                stream.set_read_timeout(Some(BLOCK))?;
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                let sealed = match secured {
                    Secured::Plain => None,
                    Secured::Keyed(sender, receiver) => Some(SealedLink {
                        sender,
                        receiver,
                        raw: vec![0; 2 * (LEN + MAX_RECORD)],
                        raw_filled: 0,
                        out: Vec::new(),
                    }),
                };
                Ok(Link {
                    worker,
                    stream,
                    buf: Vec::new(),
                    filled: 0,
                    sent: 0,
                    to_send: 0,
                    eof: None,
                    fatal: false,
                    sealed,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| fail(index, format!("cannot set up a link: {e}")))?;
        Ok(Links {
            index,
            links,
            health,
            out: Vec::new(),
        })
    }

    /// Starts round `round`: writes `data` to every peer as far as their sockets take it now
    /// ([`Links::finish`] writes the rest).
    pub(crate) fn start<T: Summand>(&mut self, data: &[T], round: u64) {
        self.out.clear();
        self.out.extend_from_slice(&round.to_le_bytes());
        self.out
            .extend_from_slice(&(data.len() as u64).to_le_bytes());
        for x in data {
            x.write_le(&mut self.out);
        }
        for link in &mut self.links {
            link.sent = 0;
            link.to_send = match &mut link.sealed {
                Some(sealed) => {
                    sealed.out.clear();
                    sealed.sender.seal(&self.out, &mut sealed.out);
                    sealed.out.len()
                }
                None => self.out.len(),
            };
            link.write(&self.out);
        }
    }

    /// Finishes the round [`Links::start`] began: replaces `data` (as long as the one started)
    /// by the sum over all workers of their values, in worker order.
    pub(crate) fn finish<T: Summand>(&mut self, data: &mut [T], cx: RoundContext) -> Result<()> {
        let need = self.out.len();
        let mut grace: Option<Instant> = None;
        let mut ended_since: Option<Instant> = None;
        loop {
            let mut moved = false;
            for link in &mut self.links {
                // A write that finished needs no other pass; one that did not, does.
                moved |= link.write(&self.out) && link.sent < link.to_send;
                if !link.has(need, data.len(), cx.round)? {
                    moved |= link.read(need);
                }
            }
            let mut done = true;
            let mut ended = Vec::new();
            for link in &self.links {
                if link.has(need, data.len(), cx.round)? {
                    done &= link.sent == link.to_send;
                } else {
                    done = false;
                    if link.eof.is_some() {
                        ended.push(link.worker);
                    }
                }
            }
            if done {
                break;
            }
            if !ended.is_empty() {
                self.ended(&ended, cx.round, &mut ended_since)?;
            }
            if moved {
                continue;
            }
            self.check(cx, Instant::now(), &mut grace)?;
            // Block on a peer still missing, unless something remains to write (writing waits
            // for the peers to read: keep polling both).
            let all_sent = self.links.iter().all(|l| l.sent == l.to_send);
            match self
                .links
                .iter_mut()
                .find(|l| l.filled < need && l.eof.is_none())
            {
                Some(link) if all_sent => link.read_blocking(need),
                Some(_) => thread::sleep(Duration::from_micros(20)),
                // Only ended links are missing: wait for the cluster's health to say why.
                None => thread::sleep(BLOCK),
            }
        }
        // sum = w0 + w1 + ... in worker order, this worker's own values in their place.
        data.fill(T::default());
        let me = self.links.partition_point(|l| l.worker < self.index);
        let payloads = self.links[..me]
            .iter()
            .map(|l| &l.buf[HEADER..need])
            .chain(std::iter::once(&self.out[HEADER..]))
            .chain(self.links[me..].iter().map(|l| &l.buf[HEADER..need]));
        for bytes in payloads {
            for (d, b) in data.iter_mut().zip(bytes.chunks_exact(T::BYTES)) {
                *d = d.plus(T::read_le(b));
            }
        }
        for link in &mut self.links {
            link.buf.copy_within(need..link.filled, 0);
            link.filled -= need;
        }
        Ok(())
    }

    /// Fails the round when a missing peer is gone (after a grace for what it sent before
    /// leaving) or the deadline has passed.
    fn check(&self, cx: RoundContext, now: Instant, grace: &mut Option<Instant>) -> Result<()> {
        let need = self.out.len();
        let missing: Vec<usize> = self
            .links
            .iter()
            .filter(|l| l.filled < need)
            .map(|l| l.worker)
            .collect();
        if grace.is_none() && missing.iter().any(|w| self.health.gone(*w).is_some()) {
            *grace = Some(now + crate::allreduce::GRACE);
        }
        if grace.is_some_and(|g| now > g) {
            return Err(crate::allreduce::gone_error(
                &self.health,
                &missing,
                cx.round,
            ));
        }
        if now > cx.deadline {
            // Cut silent peers off, so this process's network threads can end.
            for w in &missing {
                self.health.cut(
                    self.health.process_of(*w),
                    "it sent nothing within the timeout",
                );
            }
            return Err(Error::PeerTimeout {
                round: cx.round,
                workers: missing,
                timeout: cx.timeout,
            });
        }
        Ok(())
    }

    /// Fails the round for `ended` workers, whose links ended before their message came: at
    /// once, with the reason the cluster's health gives (their process's connection is gone,
    /// or their thread here stopped), as soon as it gives one; with the link's own reason if it
    /// gives none within the grace (their thread ended in a process that goes on).
    fn ended(&self, ended: &[usize], round: u64, since: &mut Option<Instant>) -> Result<()> {
        if let Some(link) = self.links.iter().find(|l| l.fatal) {
            // What it sent cannot be trusted: stop listening to its process at once.
            let process = self.health.process_of(link.worker);
            let reason = format!(
                "its all-reduce link: {}",
                link.eof.clone().unwrap_or_default()
            );
            self.health.cut(process, reason.clone());
            return Err(Error::PeerGone {
                round,
                workers: vec![link.worker],
                process,
                reason,
            });
        }
        if ended.iter().any(|w| self.health.gone(*w).is_some()) {
            return Err(crate::allreduce::gone_error(&self.health, ended, round));
        }
        let now = Instant::now();
        if now - *since.get_or_insert(now) < crate::allreduce::GRACE {
            return Ok(());
        }
        let worker = ended[0];
        let link = self.links.iter().find(|l| l.worker == worker);
        let reason = link.and_then(|l| l.eof.clone()).unwrap_or_default();
        let process = self.health.process_of(worker);
        if process != self.health.process() {
            self.health.lose(process, reason.clone());
        }
        Err(Error::PeerGone {
            round,
            workers: vec![worker],
            process,
            reason,
        })
    }
}

impl Link {
    /// Writes what is left of this round's message (`out`, or its sealed copy); whether bytes
    /// moved.
    fn write(&mut self, out: &[u8]) -> bool {
        if self.sent == self.to_send {
            return false;
        }
        let wire: &[u8] = match &self.sealed {
            Some(sealed) => &sealed.out,
            None => out,
        };
        match (&self.stream).write(&wire[self.sent..self.to_send]) {
            Ok(n) => {
                self.sent += n;
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
            Err(_) => {
                // The peer is gone: what it would have received no longer matters, and reading
                // its end tells why.
                self.sent = self.to_send;
                true
            }
        }
    }

    /// Whether this round's message (`need` bytes, `count` values) is here in whole; an error
    /// if the peer sent another round or another length.
    fn has(&self, need: usize, count: usize, round: u64) -> Result<bool> {
        if self.filled < HEADER {
            return Ok(false);
        }
        let got_round = u64::from_le_bytes(self.buf[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(self.buf[8..HEADER].try_into().expect("8 bytes"));
        if got_round != round {
            return Err(Error::Timely(format!(
                "all-reduce: worker {} sent round {got_round}, expected round {round}",
                self.worker
            )));
        }
        if len != count as u64 {
            return Err(Error::Timely(format!(
                "all-reduce: worker {} sent {len} values, expected {count}",
                self.worker
            )));
        }
        Ok(self.filled >= need)
    }

    /// Reads what has arrived, without blocking; whether bytes moved.
    fn read(&mut self, need: usize) -> bool {
        self.read_some(need, false)
    }

    /// Waits up to [`BLOCK`] for bytes.
    fn read_blocking(&mut self, need: usize) {
        self.read_some(need, true);
    }

    /// Reads (and, sealed, opens) what has arrived, waiting up to [`BLOCK`] when `block`;
    /// whether bytes moved.
    fn read_some(&mut self, need: usize, block: bool) -> bool {
        if self.eof.is_some() {
            return false;
        }
        self.reserve(need);
        if self.open_records() {
            return true;
        }
        if self
            .sealed
            .as_ref()
            .is_some_and(|s| s.raw_filled == s.raw.len())
        {
            // Whole records wait for room (not while a round's message is missing).
            return false;
        }
        if block && let Err(e) = self.stream.set_nonblocking(false) {
            self.eof = Some(format!("its all-reduce link failed: {e}"));
            return false;
        }
        let read = match &mut self.sealed {
            None => (&self.stream).read(&mut self.buf[self.filled..]),
            Some(sealed) => (&self.stream).read(&mut sealed.raw[sealed.raw_filled..]),
        };
        if block && let Err(e) = self.stream.set_nonblocking(true) {
            self.eof = Some(format!("its all-reduce link failed: {e}"));
        }
        self.took(read)
    }

    /// Opens the whole records read so far, as far as the buffer has room; whether any opened.
    fn open_records(&mut self) -> bool {
        let Link {
            sealed,
            buf,
            filled,
            eof,
            fatal,
            ..
        } = self;
        let Some(sealed) = sealed else {
            return false;
        };
        let mut at = 0;
        let mut moved = false;
        loop {
            match Receiver::whole(&sealed.raw[at..sealed.raw_filled]) {
                Ok(None) => break,
                Ok(Some(len)) if buf.len() - *filled < len - LEN => break,
                Ok(Some(len)) => {
                    match sealed
                        .receiver
                        .open(&sealed.raw[at..at + len], &mut buf[*filled..])
                    {
                        Ok(n) => {
                            *filled += n;
                            at += len;
                            moved = true;
                        }
                        Err(why) => {
                            *eof = Some(why);
                            *fatal = true;
                            break;
                        }
                    }
                }
                Err(why) => {
                    *eof = Some(why);
                    *fatal = true;
                    break;
                }
            }
        }
        sealed.raw.copy_within(at..sealed.raw_filled, 0);
        sealed.raw_filled -= at;
        moved
    }

    /// Records the outcome of a read; whether bytes moved.
    fn took(&mut self, read: std::io::Result<usize>) -> bool {
        match read {
            Ok(0) => {
                self.eof =
                    Some("its all-reduce link closed mid-run (its process or thread ended)".into());
                false
            }
            Ok(n) => {
                match &mut self.sealed {
                    None => self.filled += n,
                    Some(sealed) => {
                        sealed.raw_filled += n;
                        self.open_records();
                    }
                }
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                false
            }
            Err(e) => {
                self.eof = Some(format!("its all-reduce link failed: {e}"));
                false
            }
        }
    }

    /// Room to read (and open) the rest of this round's message and some of the next: the
    /// peers are at most one round ahead, so this bounds what a link holds.
    fn reserve(&mut self, need: usize) {
        let want = 2 * need + MAX_RECORD;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }
}
