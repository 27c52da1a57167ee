//! `pipeline run`: resolve the schema, prepare the output, run the dataflow, commit the shards.

use std::sync::Arc;
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
    let stream = shards::store::open_stream(input)?;
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
}

/// Opens the input and output of `config` and prepares the run.
pub fn prepare(config: &RunConfig) -> Result<Prepared> {
    prepare_with(
        config,
        open_input(&config.input)?,
        open_output(&config.output)?,
    )
}

/// [`prepare`] over an already opened input and output.
pub fn prepare_with(
    config: &RunConfig,
    input: Box<dyn Input>,
    output: Box<dyn Output>,
) -> Result<Prepared> {
    let started = Instant::now();
    if config.shards == 0 {
        return Err(Error::Config("--shards must be at least 1".into()));
    }
    let input_len = input.len()?;
    let schema = read_schema(&*input, &config.schema)?;
    if config.cluster.process() == 0 {
        output.prepare(config.overwrite)?;
    }
    Ok(Prepared {
        config: config.clone(),
        input,
        output: Arc::from(output),
        schema,
        input_len,
        started,
    })
}

impl Prepared {
    /// A function that removes what this run has written under temporary names; for a caller
    /// that must give up on the run from another thread.
    pub fn abort_handle(&self) -> impl Fn() + Send + Sync + 'static {
        let output = Arc::clone(&self.output);
        move || output.abort()
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
            counters,
        });
        let worker_job = Arc::clone(&job);
        let guards = cluster::execute(&config.cluster, config.connect_timeout, move |worker| {
            run_worker(worker, &worker_job)
        })
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
                Ok(Some(r)) => reports = Some(r),
                Ok(None) => {}
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
                totals,
                infos,
            );
            job.output.commit(&manifest)?;
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
