//! `reducer`: the reduce side of the Hadoop-streaming job: sorted shard entries on stdin,
//! shard text (one header line, records in offset order) on stdout.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use hadoop_streaming::counters::DEFAULT_INTERVAL;
use hadoop_streaming::{ReducerConfig, reducer};
use shards::cli::UnitCapArgs;

/// Writes the shards of the mapper's entries, sorted by key: one shard header line, then each
/// shard's records in offset order, each keyed by its content and its rank among equal records.
/// Counters go to stderr as `reporter:counter:` lines.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    cap: UnitCapArgs,
}

impl From<Args> for ReducerConfig {
    fn from(a: Args) -> ReducerConfig {
        ReducerConfig {
            counter_interval: DEFAULT_INTERVAL,
            max_rows_per_unit: a.cap.max_rows_per_unit,
        }
    }
}

fn main() -> ExitCode {
    let config = ReducerConfig::from(Args::parse());
    let stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut stderr = std::io::stderr().lock();
    match reducer::run(&config, std::io::stdin().lock(), stdout, &mut stderr) {
        Ok(summary) => {
            let _ = writeln!(stderr, "{summary}");
            ExitCode::SUCCESS
        }
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(stderr, "reducer: error: {e}");
            ExitCode::FAILURE
        }
    }
}
