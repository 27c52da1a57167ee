//! The error type of the `pipeline` crate.

/// What can stop a pipeline run or a generation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the data contract or storage.
    #[error(transparent)]
    Shards(#[from] shards::Error),
    /// A worker failed; the run was aborted.
    #[error("worker {worker} failed: {message}")]
    Worker {
        /// Global index of the worker.
        worker: usize,
        /// Its error.
        message: String,
    },
    /// Timely could not start or a worker thread died.
    #[error("dataflow: {0}")]
    Dataflow(String),
    /// Connecting or running the processes failed.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// Every row was dropped, and an empty output was not asked for.
    #[error(
        "{input}: no row was kept of {rows} (dropped: {dropped}); nothing was written (--allow-empty commits an empty output)"
    )]
    NothingKept {
        /// The input.
        input: String,
        /// Its rows (header lines not counted).
        rows: u64,
        /// Rows dropped, by reason.
        dropped: String,
    },
    /// An invalid option combination.
    #[error("{0}")]
    Config(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
