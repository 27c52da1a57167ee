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
    /// Timely could not start the workers.
    #[error("timely: {0}")]
    Timely(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
