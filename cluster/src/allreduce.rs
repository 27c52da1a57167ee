//! A deterministic all-reduce (sum) over timely's communication: every worker sends its vector to
//! every other worker, and each sums the contributions in worker order, so all end with the same
//! bits. A round waits for the contributions themselves, not for timely's progress tracking (one
//! exchange of messages instead of two), and fails at once, naming the worker, when one that has
//! not contributed is gone ([`crate::health`]), or after the timeout.

use std::cell::RefCell;
use std::fmt::Debug;
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

/// How long a round keeps going after a peer is seen gone, for what it sent before leaving.
const GRACE: Duration = Duration::from_millis(200);

/// Values an [`AllReduce`] can sum.
pub trait Summand: ExchangeData + Copy + Default + Debug {
    /// `self + other` (wrapping for integers, so a sum never panics).
    fn plus(self, other: Self) -> Self;
}

impl Summand for f32 {
    fn plus(self, other: f32) -> f32 {
        self + other
    }
}

impl Summand for f64 {
    fn plus(self, other: f64) -> f64 {
        self + other
    }
}

impl Summand for u64 {
    fn plus(self, other: u64) -> u64 {
        self.wrapping_add(other)
    }
}

/// (to worker, from worker, values).
type Contribution<T> = (u32, u32, Vec<T>);
/// Contributions received: (round, from worker, values).
type Received<T> = Rc<RefCell<Vec<(u64, u32, Vec<T>)>>>;

/// Sums equal-length vectors across all workers, one round per call.
#[derive(Debug)]
pub struct AllReduce<T: Summand = f32> {
    input: InputHandleVec<u64, Contribution<T>>,
    received: Received<T>,
    health: Option<Arc<Health>>,
    index: usize,
    peers: usize,
    timeout: Duration,
    /// Time spent in [`AllReduce::sum`] so far (sending, waiting and adding).
    pub waited: Duration,
    /// Rounds completed.
    pub rounds: u64,
}

impl<T: Summand> AllReduce<T> {
    /// Builds the all-reduce dataflow on this worker (every worker must build it, in the same
    /// order as its other dataflows). A round that does not complete within `timeout` fails.
    pub fn new(worker: &mut Worker, timeout: Duration) -> AllReduce<T> {
        let mut input = InputHandleVec::<u64, Contribution<T>>::new();
        let received: Received<T> = Rc::default();
        let sink = Rc::clone(&received);
        worker.dataflow::<u64, _, _>(|scope| {
            input.to_stream(scope).sink(
                Exchange::new(|c: &Contribution<T>| u64::from(c.0)),
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
        AllReduce {
            input,
            received,
            health: health::current(),
            index: worker.index(),
            peers: worker.peers(),
            timeout,
            waited: Duration::ZERO,
            rounds: 0,
        }
    }

    /// Changes the time a round may take (e.g. longer while peers load their data).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Replaces `data` by the sum over all workers of their `data`, added in worker order.
    pub fn sum(&mut self, worker: &mut Worker, data: &mut [T]) -> Result<()> {
        let started = Instant::now();
        let round = *self.input.time();
        for dest in (0..self.peers).filter(|d| *d != self.index) {
            self.input
                .send((dest as u32, self.index as u32, data.to_vec()));
        }
        self.input.advance_to(round + 1);
        let deadline = started + self.timeout;
        let mut grace: Option<Instant> = None;
        let arrived = |received: &Received<T>| {
            received
                .borrow()
                .iter()
                .filter(|(r, _, _)| *r == round)
                .count()
        };
        while arrived(&self.received) + 1 < self.peers {
            worker.step_or_park(Some(Duration::from_millis(1)));
            let now = Instant::now();
            if arrived(&self.received) + 1 == self.peers {
                break;
            }
            if grace.is_none()
                && let Some(h) = &self.health
                && self.missing(round).iter().any(|w| h.gone(*w).is_some())
            {
                grace = Some(now + GRACE);
            }
            if grace.is_some_and(|g| now > g) {
                return Err(self.gone_error(round));
            }
            if now > deadline {
                let workers = self.missing(round);
                if let Some(h) = &self.health {
                    // Cut silent peers off, so this process's network threads can end.
                    for w in &workers {
                        h.cut(h.process_of(*w), "it sent nothing within the timeout");
                    }
                }
                return Err(Error::PeerTimeout {
                    round,
                    workers,
                    timeout: self.timeout,
                });
            }
        }
        // Faster workers may already have sent the next round: keep theirs for later.
        let mut got: Vec<(u32, Vec<T>)> = Vec::with_capacity(self.peers);
        self.received.borrow_mut().retain_mut(|(r, from, v)| {
            if *r == round {
                got.push((*from, std::mem::take(v)));
                false
            } else {
                true
            }
        });
        got.sort_unstable_by_key(|(from, _)| *from);
        let own = got.partition_point(|(from, _)| (*from as usize) < self.index);
        for (from, v) in &got {
            if v.len() != data.len() {
                return Err(Error::Timely(format!(
                    "all-reduce: worker {from} sent {} values, expected {}",
                    v.len(),
                    data.len()
                )));
            }
        }
        // sum = w0 + w1 + ... in worker order, this worker's own values in their place.
        let mine = data.to_vec();
        let ordered = got[..own]
            .iter()
            .map(|(_, v)| v.as_slice())
            .chain(std::iter::once(mine.as_slice()))
            .chain(got[own..].iter().map(|(_, v)| v.as_slice()));
        data.fill(T::default());
        for v in ordered {
            for (d, x) in data.iter_mut().zip(v) {
                *d = d.plus(*x);
            }
        }
        self.rounds += 1;
        self.waited += started.elapsed();
        Ok(())
    }

    /// Replaces `data` on every worker by `root`'s (the others' values are ignored).
    pub fn broadcast(&mut self, worker: &mut Worker, root: usize, data: &mut [T]) -> Result<()> {
        if worker.index() != root {
            data.fill(T::default());
        }
        self.sum(worker, data)
    }

    /// The workers whose contribution to `round` has not arrived.
    fn missing(&self, round: u64) -> Vec<usize> {
        let got = self.received.borrow();
        (0..self.peers)
            .filter(|w| {
                *w != self.index && !got.iter().any(|(r, f, _)| *r == round && *f as usize == *w)
            })
            .collect()
    }

    fn gone_error(&self, round: u64) -> Error {
        let health = self.health.as_ref().expect("only with health");
        let gone: Vec<_> = self
            .missing(round)
            .into_iter()
            .filter_map(|w| health.gone(w))
            .collect();
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
        let addresses = crate::free_loopback_addresses(2).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|process| {
                let cluster = Cluster::Member {
                    threads: 2,
                    process,
                    addresses: addresses.clone(),
                };
                std::thread::spawn(move || contributions(&cluster))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), expected(4));
        }
    }

    #[test]
    fn a_vanished_peer_is_an_error_in_bounded_time() {
        let addresses = crate::free_loopback_addresses(2).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|process| {
                let cluster = Cluster::Member {
                    threads: 1,
                    process,
                    addresses: addresses.clone(),
                };
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
