//! The error type of the `cluster` crate.

/// What can go wrong setting up or running a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad hostfile or cluster option.
    #[error("{0}")]
    Config(String),
    /// A peer could not be reached or did not connect in time.
    #[error("process {process} ({address}): {message}")]
    Connect {
        /// The peer's process index.
        process: usize,
        /// Its address.
        address: String,
        /// What happened.
        message: String,
    },
    /// Another local process failed.
    #[error("process {process}: {message}")]
    Process {
        /// Its index.
        process: usize,
        /// What happened.
        message: String,
    },
    /// Another local process failed before the run was done, and the run was stopped.
    #[error("process {process} failed ({status}); the run is stopped")]
    Stopped {
        /// Its index.
        process: usize,
        /// How it ended.
        status: String,
    },
    /// Workers stopped taking part in a collective operation: their process died, closed its
    /// connection, or (in this process) their thread returned.
    #[error(
        "all-reduce round {round}: worker(s) {workers:?} of process {process} stopped taking part: {reason}"
    )]
    PeerGone {
        /// The round that could not complete.
        round: u64,
        /// The workers that left.
        workers: Vec<usize>,
        /// Their process.
        process: usize,
        /// What happened.
        reason: String,
    },
    /// Workers sent nothing within the timeout.
    #[error(
        "all-reduce round {round}: no contribution from worker(s) {workers:?} within {timeout:?}; a process may have died or hung"
    )]
    PeerTimeout {
        /// The round that could not complete.
        round: u64,
        /// The workers that did not contribute.
        workers: Vec<usize>,
        /// How long the round waited.
        timeout: std::time::Duration,
    },
    /// Timely could not start the workers.
    #[error("timely: {0}")]
    Timely(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
