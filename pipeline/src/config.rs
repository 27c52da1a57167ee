//! Validated configuration of a `pipeline run`.

use std::time::Duration;

pub use cluster::Cluster;
use shards::{Location, SchemaOptions};

/// Everything a `pipeline run` needs, checked.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The input CSV (optionally `.gz`).
    pub input: Location,
    /// The output directory or prefix.
    pub output: Location,
    /// Number of shards (at least 1).
    pub shards: u32,
    /// Column selection and missing values.
    pub schema: SchemaOptions,
    /// Processes and threads.
    pub cluster: Cluster,
    /// Replace an existing output.
    pub overwrite: bool,
    /// How long to wait for the other processes to connect.
    pub connect_timeout: Duration,
    /// Show a progress bar on stderr (process 0 only).
    pub progress: bool,
}
