//! `pipeline`: preprocess census microdata into shards with timely dataflow, or generate
//! synthetic input. Parses flags, validates them into a config, calls the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use cluster::{Children, ClusterArgs, Watch};
use pipeline::{GenerateConfig, RunConfig};
use shards::Location;
use shards::cli::{S3Args, SchemaArgs, UnitCapArgs};

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
    /// Number of shards (1 to 10000): a record goes to shard splitmix64(u) % shards, u being the
    /// hash of its unit (its privacy unit's value, or with none its own content).
    #[arg(long, default_value_t = 16)]
    shards: u32,
    #[command(flatten)]
    cluster: ClusterArgs<120>,
    /// Commit the output even when every row is dropped (otherwise that is an error).
    #[arg(long)]
    allow_empty: bool,
    /// Megabytes of records a process holds in memory (shared by its threads) before it spills
    /// them to an unnamed file in $TMPDIR (read back when the shards are written). Peak
    /// memory follows this figure, not the input's size.
    #[arg(long, default_value_t = (pipeline::write::DEFAULT_BUFFER_BYTES >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    buffer_mb: u64,
    #[command(flatten)]
    schema: SchemaArgs,
    #[command(flatten)]
    cap: UnitCapArgs,
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
    /// Write people in households: a first column `household` (an id), households of 1 to 8
    /// people in the shares of US census households, members sharing some traits; try it with
    /// `pipeline run --privacy-unit household`.
    #[arg(long)]
    households: bool,
    /// Replace an existing file.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    s3: S3Args,
}

/// What `run` needs beyond the library config: whether to start the other local processes.
struct Launch {
    config: RunConfig,
    spawn: Option<cluster::Handoff>,
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
        if a.cap.max_rows_per_unit.is_some() && a.schema.privacy_unit.is_none() {
            bail!(
                "--max-rows-per-unit bounds the rows of a privacy unit: give --privacy-unit \
                 COLUMN too (without one, each line is its own unit of one row)"
            );
        }
        let (cluster, spawn) = a.cluster.resolve()?;
        let quiet = a.quiet || cluster.process() != 0;
        let config = RunConfig {
            input: Location::parse(&a.input)?,
            output: Location::parse(&a.output)?,
            shards: a.shards,
            schema: a.schema.into(),
            max_rows_per_unit: a.cap.max_rows_per_unit,
            cluster,
            overwrite: a.overwrite,
            connect_timeout: a.cluster.connect_timeout(),
            peer_timeout: a.cluster.peer_timeout(),
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
        progress: (!quiet).then(|| pipeline::progress::TransferBars::new() as _),
        ..a.to_options()
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let launch = Launch::try_from(args)?;
    shards::fault::set_process(launch.config.cluster.process());
    // Everything that can fail on its own (input, schema, output) fails before others start.
    let prepared = pipeline::prepare(&launch.config)?;
    let abort = prepared.abort_handle();
    let children = Children::start_this_program(
        launch.spawn,
        std::env::args_os().skip(1),
        Watch {
            on_failure: Box::new(abort),
            stop: Box::new(stop_run),
        },
    )?;
    let result = prepared.run();
    if result.is_ok() {
        shards::fault::point("this process's part of the run is done");
    }
    let (report, children) = cluster::local::finish(children, result)?;
    // Process 0 committed only after every worker's shards and counts reached it, so the
    // output is complete: a process failing after that is reported, not fatal.
    if let Err(e) = children {
        eprintln!(
            "warning: {e} after the output was committed; the output is complete \
             (every worker reported before the commit)"
        );
    }
    if !launch.quiet {
        print!(
            "{}",
            pipeline::summary::summary(&report, &launch.config.output)
        );
    }
    Ok(())
}

/// A process this one started failed before the run was done (its others are killed by
/// now): end this one too, as its workers would wait for the dead process.
fn stop_run(e: cluster::Error) {
    eprintln!("error: {e}");
    std::process::exit(1);
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    let config = GenerateConfig {
        rows: a.rows,
        seed: a.seed,
        na_rate: a.na_rate,
        households: a.households,
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
    use shards::SchemaOptions;

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

    /// The shared flag groups read as each group alone reads them (and as `trainer` and
    /// `mapper` read them: they run the same checks), in `run` and in the bare form.
    #[test]
    fn shared_flags_read_alike() {
        use fastdp_tests::flags;
        for head in [&["pipeline"][..], &["pipeline", "run"]] {
            let argv = [head, flags::CLUSTER, flags::SCHEMA, flags::S3].concat();
            let a = match Cli::try_parse_from(&argv).unwrap() {
                Cli {
                    command: Some(Command::Run(a)),
                    ..
                } => *a,
                Cli { run, .. } => run,
            };
            flags::assert_cluster(&a.cluster);
            flags::assert_schema(&a.schema);
            flags::assert_s3(&a.s3);
        }
        for head in [
            &["pipeline", "generate"][..],
            &["pipeline", "report", "shards"],
        ] {
            let argv = [head, flags::S3].concat();
            match Cli::try_parse_from(&argv).unwrap().command {
                Some(Command::Generate(a)) => flags::assert_s3(&a.s3),
                Some(Command::Report(a)) => flags::assert_s3(&a.s3),
                _ => panic!("{head:?}"),
            }
        }
        let a = Cli::try_parse_from(["pipeline"]).unwrap().run;
        assert_eq!(a.cluster.peer_timeout, 120, "the pipeline's own default");
        assert_eq!(SchemaOptions::from(a.schema), SchemaOptions::default());
    }
}
