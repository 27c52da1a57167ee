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

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::allreduce::Summand;
use crate::connect::{hello, read_hello};
use crate::error::{Error, Result};
use crate::health::Health;

/// Sent first on every link, so a stray connection is not taken for a peer.
const MAGIC: u64 = u64::from_be_bytes(*b"fastdpAR");

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
    /// Why nothing more will arrive (the peer closed its end, or the link failed).
    eof: Option<String>,
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
    /// `listener`: it connects to each lower worker and accepts each higher one, by `deadline`.
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
        let mut streams: Vec<(usize, TcpStream)> = Vec::with_capacity(addresses.len());
        for (worker, address) in addresses.iter().enumerate().take(index) {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut stream =
                TcpStream::connect_timeout(address, left.max(Duration::from_millis(1)))
                    .map_err(|e| fail(worker, format!("cannot connect: {e}")))?;
            stream
                .write_all(&hello(MAGIC, index))
                .map_err(|e| fail(worker, format!("handshake failed: {e}")))?;
            streams.push((worker, stream));
        }
        let higher = addresses.len() - index - 1;
        let me = addresses[index];
        let listen_error = |e: std::io::Error| fail(index, format!("accepting links: {e}"));
        listener.set_nonblocking(true).map_err(listen_error)?;
        while streams.len() < index + higher {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let Some(peer) =
                        read_hello(&mut stream, MAGIC, deadline).map_err(listen_error)?
                    else {
                        continue; // not one of ours: ignore it
                    };
                    if peer <= index
                        || peer >= addresses.len()
                        || streams.iter().any(|(w, _)| *w == peer)
                    {
                        continue; // not one of ours: ignore it
                    }
                    streams.push((peer, stream));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing = (index + 1..addresses.len())
                            .find(|w| streams.iter().all(|(s, _)| s != w))
                            .expect("one is missing");
                        return Err(fail(missing, format!("it did not connect to {me} in time")));
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(listen_error(e)),
            }
        }
        streams.sort_unstable_by_key(|(w, _)| *w);
        let links = streams
            .into_iter()
            .map(|(worker, stream)| {
                stream.set_read_timeout(Some(BLOCK))?;
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                Ok(Link {
                    worker,
                    stream,
                    buf: Vec::new(),
                    filled: 0,
                    sent: 0,
                    eof: None,
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
                moved |= link.write(&self.out) && link.sent < need;
                if !link.has(need, data.len(), cx.round)? {
                    moved |= link.read(need);
                }
            }
            let mut done = true;
            let mut ended = Vec::new();
            for link in &self.links {
                if link.has(need, data.len(), cx.round)? {
                    done &= link.sent == need;
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
            let all_sent = self.links.iter().all(|l| l.sent == need);
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
    /// Writes what is left of `out`; whether bytes moved.
    fn write(&mut self, out: &[u8]) -> bool {
        if self.sent == out.len() {
            return false;
        }
        match self.stream.write(&out[self.sent..]) {
            Ok(n) => {
                self.sent += n;
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
            Err(_) => {
                // The peer is gone: what it would have received no longer matters, and reading
                // its end tells why.
                self.sent = out.len();
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
        if self.eof.is_some() {
            return false;
        }
        self.reserve(need);
        let read = self.stream.read(&mut self.buf[self.filled..]);
        self.took(read)
    }

    /// Waits up to [`BLOCK`] for bytes.
    fn read_blocking(&mut self, need: usize) {
        if self.eof.is_some() {
            return;
        }
        self.reserve(need);
        if let Err(e) = self.stream.set_nonblocking(false) {
            self.eof = Some(format!("its all-reduce link failed: {e}"));
            return;
        }
        let read = self.stream.read(&mut self.buf[self.filled..]);
        if let Err(e) = self.stream.set_nonblocking(true) {
            self.eof = Some(format!("its all-reduce link failed: {e}"));
        }
        self.took(read);
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
                self.filled += n;
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

    /// Room to read the rest of this round's message and some of the next.
    fn reserve(&mut self, need: usize) {
        let want = (2 * need).max(1 << 16);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }
}
