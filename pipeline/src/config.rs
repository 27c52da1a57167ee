//! Validated configuration of a `pipeline run`.

use std::time::Duration;

pub use cluster::Cluster;
use shards::{Location, S3Options, SchemaOptions};

/// The most shards a run writes (part names have five digits, and sort in shard order).
pub const MAX_SHARDS: u32 = 10_000;

/// Everything a `pipeline run` needs, checked.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The input CSV (optionally `.gz`).
    pub input: Location,
    /// The output directory or prefix.
    pub output: Location,
    /// Number of shards (1 to [`MAX_SHARDS`]).
    pub shards: u32,
    /// Column selection, missing values and the privacy unit.
    pub schema: SchemaOptions,
    /// `--max-rows-per-unit`: the most rows a unit keeps (only with a privacy unit).
    pub max_rows_per_unit: Option<u32>,
    /// Processes and threads.
    pub cluster: Cluster,
    /// Replace an existing output.
    pub overwrite: bool,
    /// How long to wait for the other processes to connect.
    pub connect_timeout: Duration,
    /// How long a worker waiting for the other processes goes without any progress from them
    /// before it gives up (a process that was stopped, or hangs). A peer whose machine
    /// acknowledges nothing at all for half of it (link or machine down) fails the run sooner,
    /// named as unreachable.
    pub peer_timeout: Duration,
    /// Commit an output even when no row was kept (otherwise an error).
    pub allow_empty: bool,
    /// Show a progress bar on stderr (process 0 only).
    pub progress: bool,
    /// Bytes of records a process holds in memory (shared by its threads) before its workers
    /// spill them to disk.
    pub buffer_bytes: usize,
    /// How S3 locations are reached (unused for local ones).
    pub s3: S3Options,
    /// About how many input bytes a worker reads at a time before the next chunk, in input
    /// order, is another worker's ([`crate::ingest::Plan`]); `None`: 4 MiB for a local file,
    /// one chunk a worker for S3 (one ranged request each). Every process of a run must use the
    /// same value; the command line always leaves it at `None`.
    pub chunk_bytes: Option<u64>,
}

impl RunConfig {
    /// How records are keyed: by the privacy unit when there is one, capped at
    /// `max_rows_per_unit`.
    pub fn unit_rule(&self) -> shards::keys::UnitRule {
        shards::keys::UnitRule {
            unit: self.schema.unit.is_some(),
            max_rows: self.max_rows_per_unit,
        }
    }

    /// A one-worker run from `input` to `output` with the command line's defaults: 16 shards,
    /// default schema options, no overwrite, the default buffer and timeouts, no progress bar.
    /// Callers change what they need with struct update syntax.
    pub fn new(input: Location, output: Location) -> RunConfig {
        RunConfig {
            input,
            output,
            shards: 16,
            schema: SchemaOptions::default(),
            max_rows_per_unit: None,
            cluster: Cluster::Single { threads: 1 },
            overwrite: false,
            connect_timeout: Duration::from_secs(60),
            peer_timeout: Duration::from_secs(120),
            allow_empty: false,
            progress: false,
            buffer_bytes: crate::write::DEFAULT_BUFFER_BYTES,
            s3: S3Options::default(),
            chunk_bytes: None,
        }
    }
}
