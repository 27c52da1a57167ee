//! A deterministic all-reduce (sum): every worker sends its vector to every other worker, and
//! each sums the contributions in worker order, so all end with the same bits. A round fails at
//! once, naming the worker, when one that has not contributed is gone ([`crate::health`]), or
//! after the timeout.
//!
//! Within one process the vectors go through timely's channels, and a round waits for the
//! contributions themselves, not for timely's progress tracking. Across processes they go over
//! direct sockets between the worker threads ([`crate::links`], set up in the first round with
//! one exchange of addresses through timely): a round is then one write and one read per peer,
//! with no hand-off to timely's network threads.

use std::cell::RefCell;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::ExchangeData;
use timely::dataflow::InputHandleVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::worker::Worker;

use crate::error::{Error, Result};
use crate::health::{self, Health};
use crate::links::{Links, RoundContext};

/// How long a round keeps going after a peer is seen gone, for what it sent before leaving.
pub(crate) const GRACE: Duration = Duration::from_millis(200);

/// Values an [`AllReduce`] can sum.
pub trait Summand: ExchangeData + Copy + Default + Debug {
    /// Bytes of one value on a link between processes.
    const BYTES: usize;
    /// `self + other` (wrapping for integers, so a sum never panics).
    fn plus(self, other: Self) -> Self;
    /// Appends the value's little-endian bytes to `out`.
    fn write_le(self, out: &mut Vec<u8>);
    /// The value from [`Summand::BYTES`] little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! summand {
    ($t:ty, $plus:expr) => {
        impl Summand for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn plus(self, other: $t) -> $t {
                $plus(self, other)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> $t {
                <$t>::from_le_bytes(bytes.try_into().expect("BYTES bytes"))
            }
        }
    };
}

summand!(f32, |a: f32, b: f32| a + b);
summand!(f64, |a: f64, b: f64| a + b);
summand!(u64, u64::wrapping_add);

/// (to worker, from worker, values).
type Contribution<T> = (u32, u32, Vec<T>);
/// Contributions received: (round, from worker, values).
type Received<T> = Rc<RefCell<Vec<(u64, u32, Vec<T>)>>>;

/// Sums equal-length vectors across all workers, one round per call.
#[derive(Debug)]
pub struct AllReduce<T: Summand = f32> {
    transport: Transport<T>,
    health: Option<Arc<Health>>,
    index: usize,
    peers: usize,
    timeout: Duration,
    /// Time spent in [`AllReduce::sum`], [`AllReduce::start`] and [`AllReduce::finish`] so far
    /// (sending, waiting and adding; not the caller's work between a start and its finish).
    pub waited: Duration,
    /// Rounds completed.
    pub rounds: u64,
    /// The round started and not yet finished.
    pending: Option<Pending>,
    /// This worker's values in the pending round, within one process (across processes the
    /// links keep them).
    own: Vec<T>,
}

/// A round [`AllReduce::start`] began.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When it started (its deadline counts from then).
    started: Instant,
    /// Timely's round, within one process.
    round: u64,
    /// Values in it.
    len: usize,
}

/// How the vectors travel.
#[derive(Debug)]
enum Transport<T: Summand> {
    /// Through timely (one process).
    Timely(Channel<T>),
    /// Over direct links between the workers (several processes), set up in the first round
    /// by exchanging their addresses, as text, through timely.
    Direct {
        setup: Channel<u8>,
        links: Option<Links>,
    },
}

/// A timely dataflow that hands each worker the vectors the others send it, by round.
#[derive(Debug)]
struct Channel<D: ExchangeData + Clone + Debug> {
    input: InputHandleVec<u64, Contribution<D>>,
    received: Received<D>,
}

impl<D: ExchangeData + Clone + Debug> Channel<D> {
    fn new(worker: &mut Worker) -> Channel<D> {
        let mut input = InputHandleVec::<u64, Contribution<D>>::new();
        let received: Received<D> = Rc::default();
        let sink = Rc::clone(&received);
        worker.dataflow::<u64, _, _>(|scope| {
            input.to_stream(scope).sink(
                Exchange::new(|c: &Contribution<D>| u64::from(c.0)),
                "AllReduce",
                move |(input, _frontier)| {
                    input.for_each(|cap, data| {
                        let round = *cap.least().expect("a message has a time");
                        sink.borrow_mut()
                            .extend(data.drain(..).map(|(_, from, v)| (round, from, v)));
                    });
                },
            );
        });
        Channel { input, received }
    }

    /// Sends `data` to every other worker and returns theirs, in worker order (this worker's
    /// own left out).
    fn exchange(
        &mut self,
        worker: &mut Worker,
        who: &Who,
        data: &[D],
    ) -> Result<Vec<(u32, Vec<D>)>> {
        let started = Instant::now();
        let round = self.send(who, data);
        self.receive(worker, who, round, started)
    }

    /// Sends `data` to every other worker for the next round; which round that is.
    fn send(&mut self, who: &Who, data: &[D]) -> u64 {
        let round = *self.input.time();
        for dest in (0..who.peers).filter(|d| *d != who.index) {
            self.input
                .send((dest as u32, who.index as u32, data.to_vec()));
        }
        self.input.advance_to(round + 1);
        round
    }

    /// The other workers' vectors for `round` (sent at `started`), in worker order.
    fn receive(
        &mut self,
        worker: &mut Worker,
        who: &Who,
        round: u64,
        started: Instant,
    ) -> Result<Vec<(u32, Vec<D>)>> {
        let deadline = started + who.timeout;
        let mut grace: Option<Instant> = None;
        let arrived = |received: &Received<D>| {
            received
                .borrow()
                .iter()
                .filter(|(r, _, _)| *r == round)
                .count()
        };
        while arrived(&self.received) + 1 < who.peers {
            worker.step_or_park(Some(Duration::from_millis(1)));
            let now = Instant::now();
            if arrived(&self.received) + 1 == who.peers {
                break;
            }
            if grace.is_none()
                && let Some(h) = &who.health
                && self
                    .missing(who, round)
                    .iter()
                    .any(|w| h.gone(*w).is_some())
            {
                grace = Some(now + GRACE);
            }
            if grace.is_some_and(|g| now > g) {
                let health = who.health.as_ref().expect("only with health");
                return Err(gone_error(health, &self.missing(who, round), round));
            }
            if now > deadline {
                let workers = self.missing(who, round);
                if let Some(h) = &who.health {
                    // Cut silent peers off, so this process's network threads can end.
                    for w in &workers {
                        h.cut(h.process_of(*w), "it sent nothing within the timeout");
                    }
                }
                return Err(Error::PeerTimeout {
                    round,
                    workers,
                    timeout: who.timeout,
                });
            }
        }
        // Faster workers may already have sent the next round: keep theirs for later.
        let mut got: Vec<(u32, Vec<D>)> = Vec::with_capacity(who.peers);
        self.received.borrow_mut().retain_mut(|(r, from, v)| {
            if *r == round {
                got.push((*from, std::mem::take(v)));
                false
            } else {
                true
            }
        });
        got.sort_unstable_by_key(|(from, _)| *from);
        Ok(got)
    }

    /// The workers whose contribution to `round` has not arrived.
    fn missing(&self, who: &Who, round: u64) -> Vec<usize> {
        let got = self.received.borrow();
        (0..who.peers)
            .filter(|w| {
                *w != who.index && !got.iter().any(|(r, f, _)| *r == round && *f as usize == *w)
            })
            .collect()
    }
}

/// This worker's place in the cluster, for a round.
#[derive(Debug)]
struct Who {
    health: Option<Arc<Health>>,
    index: usize,
    peers: usize,
    timeout: Duration,
}

impl<T: Summand> AllReduce<T> {
    /// Builds the all-reduce on this worker (every worker must build it, in the same order as
    /// its other dataflows). A round that does not complete within `timeout` fails.
    pub fn new(worker: &mut Worker, timeout: Duration) -> AllReduce<T> {
        let health = health::current();
        let processes = health.as_ref().map_or(1, |h| h.processes());
        let transport = if processes > 1 {
            Transport::Direct {
                setup: Channel::new(worker),
                links: None,
            }
        } else {
            Transport::Timely(Channel::new(worker))
        };
        AllReduce {
            transport,
            health,
            index: worker.index(),
            peers: worker.peers(),
            timeout,
            waited: Duration::ZERO,
            rounds: 0,
            pending: None,
            own: Vec::new(),
        }
    }

    /// Changes the time a round may take (e.g. longer while peers load their data).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Replaces `data` by the sum over all workers of their `data`, added in worker order.
    pub fn sum(&mut self, worker: &mut Worker, data: &mut [T]) -> Result<()> {
        self.start(worker, data)?;
        self.finish(worker, data)
    }

    /// Starts a round: sends `data` to the other workers and returns without waiting for
    /// theirs, so the caller's work until [`AllReduce::finish`] overlaps the exchange. Every
    /// worker starts and finishes the same rounds in the same order; a round must be finished
    /// before the next starts.
    pub fn start(&mut self, worker: &mut Worker, data: &[T]) -> Result<()> {
        let started = Instant::now();
        if self.pending.is_some() {
            return Err(Error::Timely(
                "all-reduce: a round was started before the last one finished".into(),
            ));
        }
        let who = self.who();
        let round = match &mut self.transport {
            Transport::Timely(channel) => {
                self.own.clear();
                self.own.extend_from_slice(data);
                channel.send(&who, data)
            }
            Transport::Direct { setup, links } => {
                if links.is_none() {
                    *links = Some(connect(worker, &who, setup, started + self.timeout)?);
                }
                let links = links.as_mut().expect("just set up");
                links.start(data, self.rounds);
                self.rounds
            }
        };
        self.pending = Some(Pending {
            started,
            round,
            len: data.len(),
        });
        self.waited += started.elapsed();
        Ok(())
    }

    /// Finishes the round [`AllReduce::start`] began: waits for the other workers' vectors and
    /// writes into `data` (as long as the one started) the sum of all, in worker order.
    pub fn finish(&mut self, worker: &mut Worker, data: &mut [T]) -> Result<()> {
        let resumed = Instant::now();
        let Some(pending) = self.pending.take() else {
            return Err(Error::Timely(
                "all-reduce: a round was finished that was not started".into(),
            ));
        };
        if data.len() != pending.len {
            return Err(Error::Timely(format!(
                "all-reduce: a round started with {} values was finished with {}",
                pending.len,
                data.len()
            )));
        }
        let who = self.who();
        match &mut self.transport {
            Transport::Timely(channel) => {
                let got = channel.receive(worker, &who, pending.round, pending.started)?;
                add_in_order(&who, got, &self.own, data)?;
            }
            Transport::Direct { links, .. } => {
                let cx = RoundContext {
                    round: self.rounds,
                    deadline: pending.started + self.timeout,
                    timeout: self.timeout,
                };
                links
                    .as_mut()
                    .expect("set up when the round started")
                    .finish(data, cx)?;
            }
        }
        self.rounds += 1;
        self.waited += resumed.elapsed();
        Ok(())
    }

    fn who(&self) -> Who {
        Who {
            health: self.health.clone(),
            index: self.index,
            peers: self.peers,
            timeout: self.timeout,
        }
    }

    /// Replaces `data` on every worker by `root`'s (the others' values are ignored).
    pub fn broadcast(&mut self, worker: &mut Worker, root: usize, data: &mut [T]) -> Result<()> {
        if worker.index() != root {
            data.fill(T::default());
        }
        self.sum(worker, data)
    }
}

/// Writes into `data` `w0 + w1 + ...` in worker order, from the others' vectors `got` (in
/// worker order) and this worker's `mine`.
fn add_in_order<T: Summand>(
    who: &Who,
    got: Vec<(u32, Vec<T>)>,
    mine: &[T],
    data: &mut [T],
) -> Result<()> {
    let own = got.partition_point(|(from, _)| (*from as usize) < who.index);
    for (from, v) in &got {
        if v.len() != data.len() {
            return Err(Error::Timely(format!(
                "all-reduce: worker {from} sent {} values, expected {}",
                v.len(),
                data.len()
            )));
        }
    }
    let ordered = got[..own]
        .iter()
        .map(|(_, v)| v.as_slice())
        .chain(std::iter::once(mine))
        .chain(got[own..].iter().map(|(_, v)| v.as_slice()));
    data.fill(T::default());
    for v in ordered {
        for (d, x) in data.iter_mut().zip(v) {
            *d = d.plus(*x);
        }
    }
    Ok(())
}

/// Sets up this worker's direct links: listens, learns every worker's address through
/// `setup`, and connects.
fn connect(
    worker: &mut Worker,
    who: &Who,
    setup: &mut Channel<u8>,
    deadline: Instant,
) -> Result<Links> {
    let health = who.health.as_ref().expect("several processes have health");
    let (listener, address) = Links::listen(health)?;
    let got = setup.exchange(worker, who, address.to_string().as_bytes())?;
    let mut addresses: Vec<SocketAddr> = Vec::with_capacity(who.peers);
    for (from, text) in got {
        if addresses.len() == who.index {
            addresses.push(address);
        }
        let parsed = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| {
                Error::Timely(format!(
                    "all-reduce: worker {from} sent an unreadable address {:?}",
                    String::from_utf8_lossy(&text)
                ))
            })?;
        addresses.push(parsed);
    }
    if addresses.len() == who.index {
        addresses.push(address);
    }
    Links::connect(
        who.index,
        listener,
        &addresses,
        Arc::clone(health),
        deadline,
    )
}

/// The error for a round that `missing` workers can no longer complete: those gone from the
/// same process as the first gone one, and why.
pub(crate) fn gone_error(health: &Health, missing: &[usize], round: u64) -> Error {
    let gone: Vec<_> = missing.iter().filter_map(|w| health.gone(*w)).collect();
    let first = &gone[0];
    Error::PeerGone {
        round,
        workers: gone
            .iter()
            .filter(|g| g.process == first.process)
            .map(|g| g.worker)
            .collect(),
        process: first.process,
        reason: first.reason.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cluster;
    use crate::execute::execute;

    fn contributions(cluster: &Cluster) -> Vec<Vec<f32>> {
        let guards = execute(cluster, Duration::from_secs(20), |worker| {
            let mut ar = AllReduce::new(worker, Duration::from_secs(20));
            let mut out = Vec::new();
            for round in 0..50u32 {
                let mut v: Vec<f32> = (0..7)
                    .map(|i| (worker.index() as f32 + 1.0) * 0.1 + (i * round) as f32)
                    .collect();
                ar.sum(worker, &mut v).unwrap();
                out.push(v);
            }
            out
        })
        .unwrap();
        let results: Vec<_> = guards.join().into_iter().map(|r| r.unwrap()).collect();
        for r in &results[1..] {
            assert_eq!(r, &results[0], "every worker ends with the same bits");
        }
        results
            .into_iter()
            .next()
            .unwrap()
            .into_iter()
            .flatten()
            .collect::<Vec<f32>>()
            .chunks(7)
            .map(<[f32]>::to_vec)
            .collect()
    }

    fn expected(workers: usize) -> Vec<Vec<f32>> {
        (0..50u32)
            .map(|round| {
                (0..7)
                    .map(|i| {
                        let mut s = 0f32;
                        for w in 0..workers {
                            s += (w as f32 + 1.0) * 0.1 + (i * round) as f32;
                        }
                        s
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn threads_sum_in_worker_order() {
        for threads in [1, 2, 3] {
            assert_eq!(
                contributions(&Cluster::Single { threads }),
                expected(threads)
            );
        }
    }

    #[test]
    fn processes_sum_in_worker_order() {
        let handles: Vec<_> = crate::in_process(2, 2)
            .unwrap()
            .into_iter()
            .map(|cluster| std::thread::spawn(move || contributions(&cluster)))
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected(4));
        }
    }

    #[test]
    fn a_vanished_peer_is_an_error_in_bounded_time() {
        let handles: Vec<_> = crate::in_process(2, 1)
            .unwrap()
            .into_iter()
            .map(|cluster| {
                let process = cluster.process();
                std::thread::spawn(move || {
                    let guards = execute(&cluster, Duration::from_secs(20), move |worker| {
                        let mut ar = AllReduce::new(worker, Duration::from_millis(1500));
                        let mut v = vec![1.0f32; 3];
                        ar.sum(worker, &mut v).unwrap();
                        // Process 1 stops after one round; process 0 wants a second.
                        (process == 0).then(|| {
                            let started = Instant::now();
                            (ar.sum(worker, &mut v), started.elapsed())
                        })
                    })
                    .unwrap();
                    guards.join().into_iter().next().unwrap().unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        let (outcome, waited) = results[0]
            .as_ref()
            .unwrap()
            .as_ref()
            .expect("process 0 reports");
        let err = outcome.as_ref().unwrap_err().to_string();
        assert!(err.contains("worker(s) [1]"), "{err}");
        assert!(*waited < Duration::from_secs(5));
    }

    /// Runs `func` on every worker of a cluster of `processes` x `threads` (each process a
    /// thread here), and returns worker 0's result.
    fn on_members<R: Send + 'static>(
        processes: usize,
        threads: usize,
        func: fn(&mut Worker, usize) -> R,
    ) -> Vec<R> {
        let handles: Vec<_> = crate::in_process(processes, threads)
            .unwrap()
            .into_iter()
            .map(|cluster| {
                let process = cluster.process();
                std::thread::spawn(move || {
                    let guards = execute(&cluster, Duration::from_secs(20), move |worker| {
                        func(worker, process)
                    })
                    .unwrap();
                    guards
                        .join()
                        .into_iter()
                        .map(|r| r.unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    }

    /// 50 rounds begun with [`AllReduce::start`], with work between the start and the finish
    /// (sleeping; the last worker longest) that overwrites the caller's buffer.
    fn overlapped(worker: &mut Worker, _process: usize) -> Vec<Vec<f32>> {
        let mut ar = AllReduce::<f32>::new(worker, Duration::from_secs(20));
        let mut out = Vec::new();
        let mut buf = vec![0f32; 7];
        for round in 0..50u32 {
            for (i, x) in buf.iter_mut().enumerate() {
                *x = (worker.index() as f32 + 1.0) * 0.1 + (i as u32 * round) as f32;
            }
            ar.start(worker, &buf).unwrap();
            buf.fill(f32::NAN);
            if worker.index() + 1 == worker.peers() && round % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            ar.finish(worker, &mut buf).unwrap();
            out.push(buf.clone());
        }
        assert_eq!(ar.rounds, 50);
        out
    }

    /// A round started, then finished after other work, sums what was started, in worker order,
    /// within a process and across processes.
    #[test]
    fn started_rounds_finish_with_the_sum_of_what_was_started() {
        for (processes, threads) in [(1, 3), (3, 1), (2, 2)] {
            for (w, got) in on_members(processes, threads, overlapped)
                .into_iter()
                .enumerate()
            {
                assert_eq!(
                    got,
                    expected(processes * threads),
                    "{processes}x{threads}, worker {w}"
                );
            }
        }
    }

    /// A finish with no round started, a second start before the finish, and a finish with
    /// another length are errors, not hangs or wrong sums.
    #[test]
    fn rounds_out_of_order_are_errors() {
        let guards = execute(
            &Cluster::Single { threads: 1 },
            Duration::from_secs(20),
            |worker| {
                let mut ar = AllReduce::<f32>::new(worker, Duration::from_secs(20));
                let mut errors = vec![ar.finish(worker, &mut [1.0]).unwrap_err().to_string()];
                ar.start(worker, &[1.0, 2.0]).unwrap();
                errors.push(ar.start(worker, &[1.0, 2.0]).unwrap_err().to_string());
                errors.push(ar.finish(worker, &mut [0.0]).unwrap_err().to_string());
                ar.start(worker, &[1.0, 2.0]).unwrap();
                let mut v = [0.0, 0.0];
                ar.finish(worker, &mut v).unwrap();
                (errors, v)
            },
        )
        .unwrap();
        let (errors, v) = guards.join().into_iter().next().unwrap().unwrap();
        assert!(errors[0].contains("not started"), "{}", errors[0]);
        assert!(
            errors[1].contains("before the last one finished"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].contains("started with 2 values was finished with 1"),
            "{}",
            errors[2]
        );
        assert_eq!(v, [1.0, 2.0], "one worker's sum is its own values");
    }

    fn large(worker: &mut Worker, _process: usize) -> Vec<f32> {
        let mut ar = AllReduce::<f32>::new(worker, Duration::from_secs(20));
        let me = worker.index() + 1;
        let mut v: Vec<f32> = (0..1 << 20)
            .map(|i| ((i * me) % 997) as f32 * 0.1)
            .collect();
        ar.sum(worker, &mut v).unwrap();
        v.iter_mut().for_each(|x| *x *= 0.3);
        ar.sum(worker, &mut v).unwrap();
        v
    }

    /// Vectors far larger than the sockets' buffers, sent both ways at once between processes,
    /// arrive whole (no deadlock) and add to the same bits as between threads of one process.
    #[test]
    fn large_vectors_across_processes_sum_as_in_one_process() {
        let guards = execute(
            &Cluster::Single { threads: 3 },
            Duration::from_secs(20),
            |worker| large(worker, 0),
        )
        .unwrap();
        let single: Vec<Vec<f32>> = guards.join().into_iter().map(|r| r.unwrap()).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (processes, threads) in [(3, 1), (1, 3)] {
            for got in on_members(processes, threads, large) {
                assert!(bits(&got) == bits(&single[0]), "{processes} x {threads}");
            }
        }
    }

    /// A peer process that is alive but stops taking part is named when the round times out
    /// (0.8 s), long before it comes back (6 s, far enough that a worker kept off the cores of
    /// a busy machine for seconds still times out first: it would otherwise see the peer leave).
    #[test]
    fn a_silent_peer_process_is_named_at_the_timeout() {
        let results = on_members(2, 1, |worker, process| {
            let mut ar = AllReduce::<f32>::new(worker, Duration::from_millis(800));
            ar.sum(worker, &mut [1.0]).unwrap();
            if process == 1 {
                std::thread::sleep(Duration::from_secs(6));
                return None;
            }
            let started = Instant::now();
            let err = ar.sum(worker, &mut [1.0]).unwrap_err();
            Some((err, started.elapsed()))
        });
        let (err, waited) = results[0].as_ref().unwrap();
        assert!(
            matches!(err, Error::PeerTimeout { workers, round: 1, .. } if workers == &[1]),
            "{err}"
        );
        assert!(*waited < Duration::from_secs(5), "{waited:?}");
    }

    /// Integer and f64 sums are exact, and broadcast hands every worker the root's values.
    #[test]
    fn sums_u64_and_f64_and_broadcasts() {
        let guards = execute(
            &Cluster::Single { threads: 3 },
            Duration::from_secs(20),
            |worker| {
                let mut ints = AllReduce::<u64>::new(worker, Duration::from_secs(20));
                let mut floats = AllReduce::<f64>::new(worker, Duration::from_secs(20));
                let me = worker.index() as u64;
                let mut v = vec![me, 1 << 40, u64::MAX];
                ints.sum(worker, &mut v).unwrap();
                let mut f = vec![0.1 * me as f64];
                floats.sum(worker, &mut f).unwrap();
                let mut b = vec![10 + me, 20 + me];
                ints.broadcast(worker, 2, &mut b).unwrap();
                (v, f, b, ints.rounds)
            },
        )
        .unwrap();
        for r in guards.join() {
            let (v, f, b, rounds) = r.unwrap();
            assert_eq!(v, [3, 3 << 40, u64::MAX - 2], "wrapping sum");
            assert_eq!(f, [0.0 + 0.1 + 0.2]);
            assert_eq!(b, [12, 22]);
            assert_eq!(rounds, 2);
        }
    }

    /// A worker of this process that returns without taking part is named at once, long
    /// before the timeout.
    #[test]
    fn a_stopped_thread_is_named_without_waiting_for_the_timeout() {
        let guards = execute(
            &Cluster::Single { threads: 2 },
            Duration::from_secs(20),
            |worker| {
                let mut ar = AllReduce::<f32>::new(worker, Duration::from_secs(60));
                if worker.index() == 1 {
                    return None;
                }
                let started = Instant::now();
                let err = ar.sum(worker, &mut [1.0]).unwrap_err();
                Some((err, started.elapsed()))
            },
        )
        .unwrap();
        let (err, waited) = guards.join().remove(0).unwrap().unwrap();
        assert!(
            matches!(&err, Error::PeerGone { workers, process: 0, .. } if workers == &[1]),
            "{err}"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
