//! A deterministic all-reduce (sum) over timely's communication: every worker sends its vector to
//! every worker, and each sums the contributions in worker order, so all end with the same bits.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::error::{Error, Result};

type Contribution = (u32, u32, Vec<f32>);
type Discard = timely::container::CapacityContainerBuilder<Vec<()>>;
/// Contributions received: (round, from worker, values).
type Received = Rc<RefCell<Vec<(u64, u32, Vec<f32>)>>>;

/// Sums equal-length `f32` vectors across all workers, one round per call.
#[derive(Debug)]
pub struct AllReduce {
    input: InputHandleVec<u64, Contribution>,
    probe: ProbeHandle<u64>,
    received: Received,
    index: usize,
    peers: usize,
    timeout: Duration,
    /// Time spent waiting in [`AllReduce::sum`] so far.
    pub waited: Duration,
    /// Rounds completed.
    pub rounds: u64,
}

impl AllReduce {
    /// Builds the all-reduce dataflow on this worker (every worker must build it, in the same
    /// order as its other dataflows). A round that does not complete within `timeout` fails.
    pub fn new(worker: &mut Worker, timeout: Duration) -> AllReduce {
        let mut input = InputHandleVec::<u64, Contribution>::new();
        let probe = ProbeHandle::new();
        let received: Received = Rc::default();
        let sink = Rc::clone(&received);
        worker.dataflow::<u64, _, _>(|scope| {
            input
                .to_stream(scope)
                .unary::<Discard, _, _, _>(
                    Exchange::new(|c: &Contribution| u64::from(c.0)),
                    "AllReduce",
                    |_, _| {
                        move |input, _output| {
                            input.for_each(|cap, data| {
                                let round = *cap.least().expect("a message has a time");
                                sink.borrow_mut()
                                    .extend(data.drain(..).map(|(_, from, v)| (round, from, v)));
                            });
                        }
                    },
                )
                .probe_with(&probe);
        });
        AllReduce {
            input,
            probe,
            received,
            index: worker.index(),
            peers: worker.peers(),
            timeout,
            waited: Duration::ZERO,
            rounds: 0,
        }
    }

    /// Replaces `data` by the sum over all workers of their `data`, added in worker order.
    pub fn sum(&mut self, worker: &mut Worker, data: &mut [f32]) -> Result<()> {
        let started = Instant::now();
        for dest in 0..self.peers {
            self.input
                .send((dest as u32, self.index as u32, data.to_vec()));
        }
        let round = *self.input.time();
        let next = round + 1;
        self.input.advance_to(next);
        let deadline = started + self.timeout;
        while self.probe.less_than(self.input.time()) {
            worker.step_or_park(Some(Duration::from_millis(1)));
            if Instant::now() > deadline {
                let got = self.received.borrow();
                let missing: Vec<usize> = (0..self.peers)
                    .filter(|w| !got.iter().any(|(r, f, _)| *r == round && *f as usize == *w))
                    .collect();
                return Err(Error::Timely(format!(
                    "all-reduce round {}: no contribution from worker(s) {missing:?} within {:?}; a process may have died",
                    self.rounds, self.timeout
                )));
            }
        }
        // Faster workers may already have sent the next round: keep theirs for later.
        let (mut got, later): (Vec<_>, Vec<_>) = std::mem::take(&mut *self.received.borrow_mut())
            .into_iter()
            .partition(|(r, _, _)| *r == round);
        *self.received.borrow_mut() = later;
        if got.len() != self.peers {
            let missing: Vec<usize> = (0..self.peers)
                .filter(|w| !got.iter().any(|(_, f, _)| *f as usize == *w))
                .collect();
            return Err(Error::Timely(format!(
                "all-reduce round {round}: no contribution from worker(s) {missing:?}; it stopped or its process died"
            )));
        }
        got.sort_unstable_by_key(|(_, from, _)| *from);
        data.fill(0.0);
        for (_, from, v) in &got {
            if v.len() != data.len() {
                return Err(Error::Timely(format!(
                    "all-reduce: worker {from} sent {} values, expected {}",
                    v.len(),
                    data.len()
                )));
            }
            for (d, x) in data.iter_mut().zip(v) {
                *d += *x;
            }
        }
        self.rounds += 1;
        self.waited += started.elapsed();
        Ok(())
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
}
