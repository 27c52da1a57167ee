//! `pipeline run`: resolve the schema, prepare the output, run the dataflow, commit the shards.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shards::store::{open_input, open_output};
use shards::{Input, LineReader, Manifest, Output, Schema, SchemaOptions};

use crate::config::RunConfig;
use crate::dataflow::{Job, run_worker};
use crate::error::{Error, Result};
use crate::ingest::Counters;
use crate::progress::Progress;
use crate::stats::build_manifest;

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    /// The committed output's manifest (process 0 only).
    pub manifest: Option<Manifest>,
    /// Wall time of the run in this process.
    pub elapsed: Duration,
    /// Number of worker threads over all processes.
    pub workers: usize,
}

/// Reads the header line and resolves the schema. With `columns` given, the input may lack a
/// header (and may be empty).
pub fn read_schema(input: &dyn Input, options: &SchemaOptions) -> Result<Schema> {
    // A hint of 64 KiB: on S3 this fetches the head of the object, not all of it.
    let stream = shards::store::open_stream_hinted(input, 1 << 16)?;
    let mut lines = LineReader::new(stream, 0);
    let first = lines
        .next_line()
        .map_err(|e| shards::Error::io(input.location(), e))?;
    match (first, &options.columns) {
        (_, Some(cols)) => Ok(Schema::from_columns(cols.clone(), options)?),
        (Some((_, header)), None) => Ok(Schema::from_header(header, options)?),
        (None, None) => Err(shards::Error::EmptyInput {
            path: input.location().to_string(),
        }
        .into()),
    }
}

/// Runs this process's part of the job; process 0 commits the output.
pub fn run(config: &RunConfig) -> Result<RunReport> {
    prepare(config)?.run()
}

/// [`run`] over an already opened input and output (any storage backend).
pub fn run_with(
    config: &RunConfig,
    input: Box<dyn Input>,
    output: Box<dyn Output>,
) -> Result<RunReport> {
    prepare_with(config, input, output)?.run()
}

/// A run whose input is open, schema resolved and output prepared: everything that can fail
/// before other processes are involved has been checked.
#[derive(Debug)]
pub struct Prepared {
    config: RunConfig,
    input: Box<dyn Input>,
    output: Arc<dyn Output>,
    schema: Schema,
    input_len: u64,
    started: Instant,
    phase: Arc<Mutex<Phase>>,
}

/// Opens the input and output of `config` and prepares the run.
pub fn prepare(config: &RunConfig) -> Result<Prepared> {
    prepare_with(
        config,
        open_input(&config.input, &config.s3)?,
        open_output(&config.output, &config.s3)?,
    )
}

/// [`prepare`] over an already opened input and output.
pub fn prepare_with(
    config: &RunConfig,
    input: Box<dyn Input>,
    output: Box<dyn Output>,
) -> Result<Prepared> {
    let started = Instant::now();
    if !(1..=crate::config::MAX_SHARDS).contains(&config.shards) {
        return Err(Error::Config(format!(
            "--shards {} is out of range: 1 to {} shards",
            config.shards,
            crate::config::MAX_SHARDS
        )));
    }
    let input_len = input.len()?;
    let schema = read_schema(&*input, &config.schema)?;
    if config.cluster.process() == 0 {
        shards::store::check_input_outside(input.location(), output.location())?;
        output.prepare(config.overwrite)?;
    }
    Ok(Prepared {
        config: config.clone(),
        input,
        output: Arc::from(output),
        schema,
        input_len,
        started,
        phase: Arc::new(Mutex::new(Phase::Running)),
    })
}

/// Where a run stands, so that giving up from another thread and committing exclude each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Committed,
    Stopped,
}

impl Prepared {
    /// A function for a caller that must give up on the run from another thread (a local
    /// child process died): unless the output is already committed, it stops the commit from
    /// happening, removes what the run wrote under temporary names, and returns `true`. Once
    /// the output is committed it returns `false`: every worker's shards and counts reached
    /// process 0 before the commit, so the output is complete whatever happens to the others.
    pub fn abort_handle(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let output = Arc::clone(&self.output);
        let phase = Arc::clone(&self.phase);
        move || {
            let mut phase = phase.lock().unwrap_or_else(|e| e.into_inner());
            if *phase == Phase::Committed {
                return false;
            }
            *phase = Phase::Stopped;
            output.abort();
            true
        }
    }

    /// Runs this process's part of the job; process 0 commits the output.
    pub fn run(self) -> Result<RunReport> {
        let Prepared {
            config,
            input,
            output,
            schema,
            input_len,
            started,
            phase,
        } = self;
        let config = &config;
        let process = config.cluster.process();
        let counters = Arc::new(Counters::default());
        let progress = Progress::start(
            Arc::clone(&counters),
            input_len,
            config.progress && process == 0,
        );
        let job = Arc::new(Job {
            input,
            input_len,
            output,
            schema,
            num_shards: config.shards,
            units: config.unit_rule(),
            counters,
            peer_timeout: config.peer_timeout,
            worker_budget: config.buffer_bytes / config.cluster.threads().max(1),
            spill_dir: std::env::temp_dir(),
            // A chunk a worker for S3 input (one ranged request each), small chunks for local
            // files (what an owner holds while the chunk before is written).
            chunk_bytes: config.chunk_bytes.unwrap_or(match &config.input {
                shards::Location::Local(_) => crate::ingest::LOCAL_CHUNK_BYTES,
                shards::Location::S3 { .. } => u64::MAX,
            }),
        });
        let worker_job = Arc::clone(&job);
        // A peer whose machine stops acknowledging (link or machine down) is named unreachable
        // after half the peer timeout, before the timeout's own error, which cannot tell which
        // peer went silent.
        let unreachable = (config.peer_timeout / 2).max(Duration::from_secs(1));
        let guards = cluster::execute_watching(
            &config.cluster,
            config.connect_timeout,
            Some(unreachable),
            move |worker| run_worker(worker, &worker_job),
        )
        .map_err(Error::from);
        let guards = match guards {
            Ok(g) => g,
            Err(e) => {
                job.output.abort();
                return Err(e);
            }
        };
        let results = guards.join();
        drop(progress);
        let workers = config.cluster.workers();
        let mut reports = None;
        for (thread, result) in results.into_iter().enumerate() {
            match result {
                Ok(Ok(Some(r))) => reports = Some(r),
                Ok(Ok(None)) => {}
                Ok(Err(message)) => {
                    job.output.abort();
                    return Err(Error::Worker {
                        worker: process * config.cluster.threads() + thread,
                        message,
                    });
                }
                Err(panic) => {
                    job.output.abort();
                    return Err(Error::Dataflow(format!(
                        "worker thread {thread} of process {process} died: {panic}"
                    )));
                }
            }
        }
        if process != 0 {
            return Ok(RunReport {
                manifest: None,
                elapsed: started.elapsed(),
                workers,
            });
        }
        let reports = reports.expect("worker 0 runs in process 0 and always reports");
        let manifest = (|| {
            if reports.len() != workers {
                return Err(Error::Dataflow(format!(
                    "{} of {workers} workers reported",
                    reports.len()
                )));
            }
            let mut infos = Vec::new();
            let mut totals = Vec::new();
            let mut reports = reports;
            reports.sort_by_key(|r| r.worker);
            for r in reports {
                match r.outcome {
                    Ok((i, t)) => {
                        infos.extend(i);
                        totals.extend(t);
                    }
                    Err(message) => {
                        return Err(Error::Worker {
                            worker: r.worker,
                            message,
                        });
                    }
                }
            }
            let manifest = build_manifest(
                &job.schema,
                &config.input.to_string(),
                config.shards,
                config.max_rows_per_unit,
                totals,
                infos,
            );
            if manifest.rows.kept == 0 && !config.allow_empty {
                return Err(Error::NothingKept {
                    input: config.input.to_string(),
                    rows: manifest.rows.input_rows,
                    dropped: manifest
                        .rows
                        .dropped
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(r, n)| format!("{} {n}", r.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            let mut phase = phase.lock().unwrap_or_else(|e| e.into_inner());
            if *phase == Phase::Stopped {
                return Err(Error::Dataflow(
                    "the run was stopped (another process failed) before the commit".into(),
                ));
            }
            job.output.commit(&manifest)?;
            *phase = Phase::Committed;
            Ok(manifest)
        })();
        match manifest {
            Ok(m) => Ok(RunReport {
                manifest: Some(m),
                elapsed: started.elapsed(),
                workers,
            }),
            Err(e) => {
                job.output.abort();
                Err(e)
            }
        }
    }
}
