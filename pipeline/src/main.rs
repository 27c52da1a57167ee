//! `pipeline`: preprocess census microdata into shards with timely dataflow, or generate
//! synthetic input. Parses flags, validates them into a config, calls the library.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use cluster::Children;
use pipeline::{GenerateConfig, RunConfig};
use shards::{Location, SchemaOptions};

/// Preprocess a census CSV into training shards (timely dataflow), or generate synthetic input.
///
/// With no subcommand, `run` is assumed: `pipeline --workers 2 --threads 4` reads
/// `CaPUMS5full.csv` and writes `shards/`, like `spark-submit --num-executors 2
/// --executor-cores 4 process_spark.py`.
#[derive(Debug, Parser)]
#[command(name = "pipeline", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// How S3 locations are reached (flags of both subcommands).
#[derive(Debug, Clone, Args)]
struct S3Args {
    /// S3 path-style addressing (http://host/bucket/key); `--s3-path-style=false` forces
    /// virtual-hosted style [default: on with a custom endpoint such as AWS_ENDPOINT_URL].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    s3_path_style: Option<bool>,
    /// Seconds connecting to the S3 endpoint may take.
    #[arg(long, env = "FASTDP_S3_CONNECT_TIMEOUT", value_name = "SECS",
          default_value_t = S3_TIMEOUTS[0], value_parser = clap::value_parser!(u64).range(1..=3600))]
    s3_connect_timeout: u64,
    /// Seconds the S3 endpoint may stay silent (before an answer, or within an object being
    /// read) before the attempt fails.
    #[arg(long, env = "FASTDP_S3_READ_TIMEOUT", value_name = "SECS",
          default_value_t = S3_TIMEOUTS[1], value_parser = clap::value_parser!(u64).range(1..=3600))]
    s3_read_timeout: u64,
    /// Seconds one S3 operation may take, retries included.
    #[arg(long, env = "FASTDP_S3_OPERATION_TIMEOUT", value_name = "SECS",
          default_value_t = S3_TIMEOUTS[2], value_parser = clap::value_parser!(u64).range(1..=86400))]
    s3_operation_timeout: u64,
    /// Attempts per S3 request, the first included [default: AWS_MAX_ATTEMPTS, or 3].
    #[arg(long, env = "FASTDP_S3_MAX_ATTEMPTS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=20))]
    s3_max_attempts: Option<u32>,
    /// S3 requests a store keeps in flight at most: part uploads (each holds up to 8 MiB in
    /// memory) and the commit's copies and deletes.
    #[arg(long, env = "FASTDP_S3_CONCURRENCY", value_name = "N",
          default_value_t = shards::s3::DEFAULT_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    s3_concurrency: u16,
}

/// The library's default S3 timeouts in seconds: connect, read, operation.
const S3_TIMEOUTS: [u64; 3] = [
    shards::s3::DEFAULT_CONNECT_TIMEOUT.as_secs(),
    shards::s3::DEFAULT_READ_TIMEOUT.as_secs(),
    shards::s3::DEFAULT_OPERATION_TIMEOUT.as_secs(),
];

#[derive(Debug, Subcommand)]
enum Command {
    /// Clean the input and write it as shards (the default).
    Run(Box<RunArgs>),
    /// Write a deterministic synthetic CaPUMS5full-like CSV.
    Generate(GenerateArgs),
    /// Render a finished output's manifest as one self-contained HTML page (rows read, kept and
    /// dropped by reason, label balance, feature means, rows and bytes per shard).
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The output of `pipeline run` (a directory or s3://bucket/prefix).
    #[arg(value_name = "OUTPUT")]
    output: String,
    /// Where to write the page (a path or s3://bucket/key).
    #[arg(long, default_value = "pipeline-report.html")]
    out: String,
    /// Replace an existing page.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Input CSV with a header line (`.gz` is decompressed); a path or s3://bucket/key.
    #[arg(long, default_value = "CaPUMS5full.csv")]
    input: String,
    /// Output directory (or s3://bucket/prefix) for part files, `_manifest.json` and `_SUCCESS`.
    #[arg(long, default_value = "shards")]
    output: String,
    /// Number of shards (1 to 10000): a record goes to shard splitmix64(offset) % shards.
    #[arg(long, default_value_t = 16)]
    shards: u32,
    /// Processes. With more than one and no --hostfile, the others are started on this machine.
    #[arg(long)]
    workers: Option<usize>,
    /// Timely worker threads per process.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Join a timely cluster: one host:port per line, in process order (with --process).
    #[arg(long)]
    hostfile: Option<PathBuf>,
    /// This process's index in the cluster (0 is the one that commits the output).
    #[arg(long)]
    process: Option<usize>,
    /// Seconds to wait for the other processes to connect.
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
    /// Seconds a worker waiting for the other processes may go without anything from them
    /// before the run fails (a process stopped or hung). A peer whose machine acknowledges
    /// nothing, not even keepalive probes, for half of it (its link or machine is down) fails
    /// the run sooner, named as unreachable.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    peer_timeout: u64,
    /// Commit the output even when every row is dropped (otherwise that is an error).
    #[arg(long)]
    allow_empty: bool,
    /// Megabytes of records a process holds in memory (shared by its threads) before it spills
    /// sorted runs to unnamed files in $TMPDIR (merged when the shards are written). Peak
    /// memory follows this figure, not the input's size.
    #[arg(long, default_value_t = (pipeline::write::DEFAULT_BUFFER_BYTES >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    buffer_mb: u64,
    /// Addresses of a local multi-process run (set by the process that starts the others).
    #[arg(long, hide = true, value_delimiter = ',')]
    cluster_addresses: Option<Vec<String>>,
    /// Label column (must hold 0/1).
    #[arg(long, default_value = shards::schema::DEFAULT_LABEL)]
    label: String,
    /// Feature columns, comma-separated, in output order [default: all but the label and --exclude].
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// Columns left out of the default features, comma-separated [default: blackfemale,targetted].
    #[arg(long, value_delimiter = ',')]
    exclude: Option<Vec<String>>,
    /// Column names for input without a header line, comma-separated.
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// Field values that mean "missing", comma-separated (an empty field is missing by default).
    #[arg(long, value_delimiter = ',', default_values_t = ["NA".to_string(), String::new()])]
    na_values: Vec<String>,
    /// Replace an existing output (only shard outputs are ever deleted).
    #[arg(long)]
    overwrite: bool,
    /// No progress display and no summary.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Number of data rows.
    #[arg(long, default_value_t = 1_200_000)]
    rows: u64,
    /// Random seed; the same seed writes the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of rows with NA in one or more fields.
    #[arg(long, default_value_t = 0.01)]
    na_rate: f64,
    /// Where to write the CSV (a path or s3://bucket/key).
    #[arg(long, default_value = "CaPUMS5full.csv")]
    output: String,
    /// Replace an existing file.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    s3: S3Args,
}

/// What `run` needs beyond the library config: whether to start the other local processes.
struct Launch {
    config: RunConfig,
    spawn: Option<Vec<String>>,
    quiet: bool,
}

impl TryFrom<RunArgs> for Launch {
    type Error = anyhow::Error;

    fn try_from(a: RunArgs) -> anyhow::Result<Launch> {
        if !(1..=pipeline::config::MAX_SHARDS).contains(&a.shards) {
            bail!(
                "--shards {} is out of range: 1 to {} shards",
                a.shards,
                pipeline::config::MAX_SHARDS
            );
        }
        let layout = cluster::Layout {
            workers: a.workers,
            threads: a.threads,
            hostfile: a.hostfile.clone(),
            process: a.process,
            cluster_addresses: a.cluster_addresses.clone(),
        };
        let (cluster, spawn) = layout.resolve()?;
        let schema = SchemaOptions {
            label: a.label,
            features: a.features,
            exclude: a.exclude,
            columns: a.columns,
            na_values: a.na_values,
        };
        let quiet = a.quiet || cluster.process() != 0;
        let config = RunConfig {
            input: Location::parse(&a.input)?,
            output: Location::parse(&a.output)?,
            shards: a.shards,
            schema,
            cluster,
            overwrite: a.overwrite,
            connect_timeout: std::time::Duration::from_secs(a.connect_timeout),
            peer_timeout: std::time::Duration::from_secs(a.peer_timeout),
            allow_empty: a.allow_empty,
            buffer_bytes: (a.buffer_mb as usize) << 20,
            progress: !quiet && std::io::stderr().is_terminal(),
            s3: s3_options(&a.s3, quiet),
        };
        Ok(Launch {
            config,
            spawn,
            quiet,
        })
    }
}

/// How S3 locations are reached: addressing style, timeouts, attempts and requests in flight,
/// and transfer progress bars sharing the terminal with the run's own (none when quiet).
fn s3_options(a: &S3Args, quiet: bool) -> shards::S3Options {
    shards::S3Options {
        force_path_style: a.s3_path_style,
        connect_timeout: std::time::Duration::from_secs(a.s3_connect_timeout),
        read_timeout: std::time::Duration::from_secs(a.s3_read_timeout),
        operation_timeout: std::time::Duration::from_secs(a.s3_operation_timeout),
        max_attempts: a.s3_max_attempts,
        concurrency: a.s3_concurrency.into(),
        progress: (!quiet).then(|| pipeline::progress::TransferBars::new() as _),
        ..shards::S3Options::default()
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let launch = Launch::try_from(args)?;
    shards::fault::set_process(launch.config.cluster.process());
    // Everything that can fail on its own (input, schema, output) fails before others start.
    let prepared = pipeline::prepare(&launch.config)?;
    let children = match &launch.spawn {
        Some(addresses) => {
            let exe = std::env::current_exe()
                .context("cannot find this program to start its other processes")?;
            let forwarded: Vec<OsString> = std::env::args_os().skip(1).collect();
            let abort = prepared.abort_handle();
            Some(Children::spawn_until(
                &exe,
                &forwarded,
                addresses,
                Box::new(abort),
            )?)
        }
        None => None,
    };
    let result = prepared.run();
    if result.is_ok() {
        shards::fault::point("this process's part of the run is done");
    }
    let report = match (result, children) {
        (Ok(report), Some(children)) => {
            // Process 0 committed only after every worker's shards and counts reached it, so
            // the output is complete: a process failing after that is reported, not fatal.
            if let Err(e) = children.wait() {
                eprintln!(
                    "warning: {e} after the output was committed; the output is complete \
                     (every worker reported before the commit)"
                );
            }
            report
        }
        (Err(e), Some(children)) => {
            children.kill();
            return Err(e.into());
        }
        (report, None) => report?,
    };
    if !launch.quiet {
        print!(
            "{}",
            pipeline::summary::summary(&report, &launch.config.output)
        );
    }
    Ok(())
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let config = GenerateConfig {
        rows: a.rows,
        seed: a.seed,
        na_rate: a.na_rate,
        output: Location::parse(&a.output)?,
        overwrite: a.overwrite,
        s3: s3_options(&a.s3, false),
    };
    let info = pipeline::generate(&config)?;
    println!(
        "generate: {} rows, {} bytes -> {}",
        config.rows, info.bytes, config.output
    );
    Ok(())
}

fn report(a: ReportArgs) -> anyhow::Result<()> {
    let config = pipeline::ReportConfig {
        output: Location::parse(&a.output)?,
        page: Location::parse(&a.out)?,
        overwrite: a.overwrite,
        s3: s3_options(&a.s3, true),
    };
    let bytes = pipeline::report(&config)?;
    println!(
        "report: {} ({bytes} bytes) <- {}",
        config.page, config.output
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run(args)) => run(*args),
        Some(Command::Generate(args)) => generate(args),
        Some(Command::Report(args)) => report(args),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_style(argv: &[&str]) -> Option<bool> {
        match Cli::try_parse_from(argv).unwrap() {
            Cli {
                command: Some(Command::Run(a)),
                ..
            } => a.s3.s3_path_style,
            Cli {
                command: Some(Command::Generate(a)),
                ..
            } => a.s3.s3_path_style,
            Cli {
                command: Some(Command::Report(a)),
                ..
            } => a.s3.s3_path_style,
            Cli { run, .. } => run.s3.s3_path_style,
        }
    }

    #[test]
    fn s3_path_style_flag() {
        assert_eq!(path_style(&["pipeline"]), None);
        assert_eq!(
            path_style(&["pipeline", "--s3-path-style", "--quiet"]),
            Some(true)
        );
        assert_eq!(
            path_style(&["pipeline", "run", "--s3-path-style=false"]),
            Some(false)
        );
        assert_eq!(
            path_style(&["pipeline", "generate", "--s3-path-style", "true"]),
            Some(true)
        );
        assert!(Cli::try_parse_from(["pipeline", "--s3-path-style=maybe"]).is_err());
    }
}
