//! The timely dataflow each worker runs: clean its byte range, route records to the owners of
//! their shards, count statistics with differential dataflow, write owned shards, report to worker 0.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::input::Input as _;
use serde::{Deserialize, Serialize};
use shards::manifest::ShardInfo;
use shards::{Cleaner, Input, Output, Schema};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::ingest::{Batch, Counters, Share, ingest};
use crate::stats::StatKey;
use crate::write::{ShardSink, shard_header};

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

/// Steps `worker` until `done`, failing when another process is gone, or when `progress` (a
/// count of what has arrived) stands still for `timeout`: a peer that was stopped or hangs
/// would otherwise keep this worker waiting forever.
fn wait_for(
    worker: &mut Worker,
    done: impl Fn() -> bool,
    progress: impl Fn() -> usize,
    timeout: Duration,
    what: &str,
) -> Result<(), String> {
    let health = cluster::health::current();
    let (mut last, mut since) = (progress(), Instant::now());
    let mut lost_at: Option<Instant> = None;
    let mut steps = 0u32;
    while !done() {
        // Spin, as `step_while` does: parking the waiting workers doubled the run's time (see
        // bench/RESULTS.md). The clock and the peers are looked at every 256 steps.
        worker.step();
        steps = steps.wrapping_add(1);
        if !steps.is_multiple_of(256) {
            continue;
        }
        let now = Instant::now();
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

    let received = Rc::new(RefCell::new(ShardSink::new(
        job.num_shards,
        index,
        peers,
        job.worker_budget,
        job.spill_dir.clone(),
    )));
    let counted: Rc<RefCell<Vec<(StatKey, i64)>>> = Rc::default();
    let reports: Rc<RefCell<Vec<Report>>> = Rc::default();
    let probe = ProbeHandle::new();
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
                        input.for_each(|_cap, data| sink.borrow_mut().extend(data));
                    }
                },
            )
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

    // Phase 1: read, clean and route records; count statistics.
    let share = Share::of(index, peers, job.input_len, job.input.location().is_gzip());
    let cleaner = Cleaner::new(job.schema.clone());
    let mut emitted = 0usize;
    let local = ingest(
        &*job.input,
        index,
        share,
        cleaner,
        job.num_shards,
        peers,
        &job.counters,
        &mut |b| {
            records_in.send(b);
            emitted += 1;
            // A new epoch per batch flushes it through the exchange at once: the input handle
            // and the exchange otherwise buffer up to 256 batches (64 MB) per destination.
            records_in.advance_to(emitted as u64);
            if emitted.is_multiple_of(2) {
                worker.step();
            }
        },
    );
    drop(records_in);
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
        || received.borrow().received() + counted.borrow().len(),
        job.peer_timeout,
        "waiting for the other workers' records",
    )?;

    // Phase 2: write the owned shards and report.
    let outcome = match failure {
        Some(message) => Err(message),
        None => {
            let sink = received.replace(ShardSink::new(0, index, peers, 0, job.spill_dir.clone()));
            sink.write(&*job.output, &shard_header(&job.schema), job.units)
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
