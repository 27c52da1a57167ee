//! The timely dataflow each worker runs: clean its byte range, route records to the owners of
//! their shards, count statistics with differential dataflow, write owned shards, report to worker 0.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::input::Input as _;
use serde::{Deserialize, Serialize};
use shards::manifest::ShardInfo;
use shards::scan::Scanner;
use shards::{Input, Output, Schema};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::ingest::{Batch, Counters, Plan, ingest};
use crate::stats::StatKey;
use crate::write::{Destination, ShardSink, shard_header};

/// The output of operators that only collect: nothing.
type Discard = timely::container::CapacityContainerBuilder<Vec<()>>;

/// What a run shares among its worker threads.
#[derive(Debug)]
pub struct Job {
    /// The input.
    pub input: Box<dyn Input>,
    /// The input's size in bytes.
    pub input_len: u64,
    /// The output.
    pub output: std::sync::Arc<dyn Output>,
    /// The resolved schema.
    pub schema: Schema,
    /// Number of shards.
    pub num_shards: u32,
    /// How records are keyed: by line or by unit, and the unit cap.
    pub units: shards::keys::UnitRule,
    /// Progress counters.
    pub counters: Arc<Counters>,
    /// How long a worker waits for the other processes without any progress from them.
    pub peer_timeout: Duration,
    /// Bytes of received records each worker holds in memory before it spills them.
    pub worker_budget: usize,
    /// Where spilled runs go (unnamed files).
    pub spill_dir: std::path::PathBuf,
    /// About how many bytes of the input each chunk holds ([`Plan`]).
    pub chunk_bytes: u64,
}

/// A worker's shards and its part of the statistics.
pub type WorkerOutput = (Vec<ShardInfo>, Vec<(StatKey, i64)>);

/// What each worker tells worker 0 at the end: its shards and its part of the statistics, or
/// why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Global worker index.
    pub worker: usize,
    /// Shard infos and statistics, or the worker's error.
    pub outcome: Result<WorkerOutput, String>,
}

/// How long a wait goes on after another process is seen gone, for what it sent before leaving
/// (a process that finished closes its connections; its last messages may still be queued).
const GRACE: Duration = Duration::from_millis(500);

/// How many batches a reader sends ahead of what the owners have taken in (each up to about
/// 256 KB of records: 4 MB a reader). Unbounded, they piled up in the channels whenever the
/// writers fell behind (peak RSS 94-176 MiB at 120M rows, 1x2); bounded at 16, 51-52 MiB in
/// the same time (bench/RESULTS.md, "On a quiet box").
const IN_FLIGHT: usize = 16;

/// How long a waiting worker sleeps at most before it looks at the clock and its peers again.
const LOOK: Duration = Duration::from_millis(50);

/// Steps `worker` until `done`, failing when another process is gone, or when `progress` (a
/// count of what has arrived) stands still for `timeout`: a peer that was stopped or hangs
/// would otherwise keep this worker waiting forever. A worker with nothing to do sleeps (timely
/// parks its thread until a message arrives, after polling for a few microseconds), so waiting
/// costs no CPU.
fn wait_for(
    worker: &mut Worker,
    done: impl Fn() -> bool,
    progress: impl Fn() -> usize,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    let health = cluster::health::current();
    let (mut last, mut since) = (progress(), Instant::now());
    let mut looked = since;
    let mut lost_at: Option<Instant> = None;
    while !done() {
        worker.step_or_park(Some(LOOK));
        let now = Instant::now();
        if now < looked + Duration::from_millis(5) {
            continue;
        }
        looked = now;
        if let Some((process, reason)) = health.as_ref().and_then(|h| h.lost_process()) {
            let at = *lost_at.get_or_insert(now);
            if now > at + GRACE && !done() {
                return Err(format!("{what}: process {process} is gone ({reason})"));
            }
        }
        let seen = progress();
        if seen != last {
            (last, since) = (seen, now);
        } else if now > since + timeout {
            // Cut the connections, as the trainer's all-reduce does: this process's network
            // threads would otherwise wait on the silent peers when the run ends.
            if let Some(h) = &health {
                h.cut_all("it sent nothing within --peer-timeout");
            }
            return Err(format!(
                "{what}: nothing from the other processes for {} s (--peer-timeout); one of \
                 them may be stopped or hung",
                timeout.as_secs()
            ));
        }
    }
    Ok(())
}

/// Runs one worker; worker 0 returns every worker's report. An error means this worker could
/// not finish with the others (a process gone or silent).
pub fn run_worker(worker: &mut Worker, job: &Job) -> Result<Option<Vec<Report>>, String> {
    let index = worker.index();
    let peers = worker.peers();

    let plan = Plan::new(
        job.input_len,
        peers,
        job.input.location().is_gzip(),
        job.chunk_bytes,
    );
    let dest = Destination {
        output: Arc::clone(&job.output),
        header: shard_header(&job.schema),
        rule: job.units,
    };
    let received = Rc::new(RefCell::new(Some(ShardSink::new(
        job.num_shards,
        index,
        peers,
        plan.clone(),
        dest,
        job.worker_budget,
        job.spill_dir.clone(),
    ))));
    let counted: Rc<RefCell<Vec<(StatKey, i64)>>> = Rc::default();
    let reports: Rc<RefCell<Vec<Report>>> = Rc::default();
    let probe = ProbeHandle::new();
    let records_probe = ProbeHandle::new();
    let report_probe = ProbeHandle::new();
    let mut records_in = InputHandleVec::<u64, Batch>::new();
    let mut reports_in = InputHandleVec::<u64, Report>::new();

    let mut stats_in = worker.dataflow::<u64, _, _>(|scope| {
        let sink = Rc::clone(&received);
        records_in
            .to_stream(scope)
            .unary::<Discard, _, _, _>(
                Exchange::new(|b: &Batch| u64::from(b.dest)),
                "CollectShards",
                |_, _| {
                    move |input, _output| {
                        input.for_each(|_cap, data| {
                            if let Some(s) = sink.borrow_mut().as_mut() {
                                s.extend(data)
                            }
                        });
                    }
                },
            )
            .probe_with(&records_probe)
            .probe_with(&probe);

        let (stats_in, stats) = scope.new_collection::<StatKey, i64>();
        let sink = Rc::clone(&counted);
        stats
            .count()
            .inspect(move |((key, count), _time, _diff)| {
                sink.borrow_mut().push((key.clone(), *count))
            })
            .probe_with(&probe);

        let sink = Rc::clone(&reports);
        reports_in
            .to_stream(scope)
            .unary::<Discard, _, _, _>(Exchange::new(|_: &Report| 0), "GatherReports", |_, _| {
                move |input, _output| {
                    input.for_each(|_cap, data| sink.borrow_mut().append(data));
                }
            })
            .probe_with(&report_probe);
        stats_in
    });

    // Phase 1: read, clean and route records, each owner writing its shards' records as the
    // chunks before them are written; count statistics.
    let scanner = Scanner::new(job.schema.clone());
    let mut emitted = 0usize;
    let mut stalled = None;
    let local = ingest(
        &*job.input,
        &plan,
        index,
        scanner,
        job.num_shards,
        peers,
        &job.counters,
        &mut |b| {
            records_in.send(b);
            emitted += 1;
            // A new epoch per batch flushes it through the exchange at once: the input handle
            // and the exchange otherwise buffer up to 256 batches (64 MB) per destination.
            records_in.advance_to(emitted as u64);
            if stalled.is_some() || emitted <= IN_FLIGHT {
                if emitted.is_multiple_of(2) {
                    worker.step();
                }
                return;
            }
            // At most IN_FLIGHT batches a reader ahead of what the owners have taken in: past
            // that, the reader waits (parked) for every batch of every reader sent IN_FLIGHT
            // before this one, so batches in the channels do not pile up beside the owners'
            // budget when the writers fall behind.
            let behind = (emitted - IN_FLIGHT) as u64;
            if let Err(e) = wait_for(
                worker,
                || !records_probe.less_than(&behind),
                || received.borrow().as_ref().map_or(0, ShardSink::received),
                job.peer_timeout,
                "waiting for the owners to take in the records sent",
            ) {
                stalled = Some(e);
            }
        },
    );
    drop(records_in);
    if let Some(e) = stalled {
        // A peer gone or silent: as the waits below.
        return Err(e);
    }
    let mut failure = None;
    match local {
        Ok(stats) => {
            for (key, count) in stats.into_updates() {
                stats_in.update(key, count);
            }
        }
        Err(e) => failure = Some(e.to_string()),
    }
    stats_in.close();
    wait_for(
        worker,
        || probe.done(),
        || received.borrow().as_ref().map_or(0, ShardSink::received) + counted.borrow().len(),
        job.peer_timeout,
        "waiting for the other workers' records",
    )?;

    // Phase 2: write the owned shards and report.
    let outcome = match failure {
        Some(message) => Err(message),
        None => {
            let sink = received.borrow_mut().take().expect("taken once");
            sink.finish()
                .map(|(infos, capped)| {
                    let mut stats: Vec<_> = counted.borrow_mut().drain(..).collect();
                    if capped > 0 {
                        stats.push((StatKey::OverUnitCap, capped as i64));
                    }
                    (infos, stats)
                })
                .map_err(|e| e.to_string())
        }
    };
    reports_in.send(Report {
        worker: index,
        outcome,
    });
    drop(reports_in);
    wait_for(
        worker,
        || report_probe.done(),
        || reports.borrow().len(),
        job.peer_timeout,
        "waiting for the other workers' shards",
    )?;

    Ok((index == 0).then(|| reports.borrow_mut().drain(..).collect()))
}
