//! The error type of the `trainer` crate.

use std::path::PathBuf;

/// Everything that can stop a training run or a privacy computation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the shards failed (the message names the file and line).
    #[error(transparent)]
    Shards(#[from] shards::Error),
    /// The accountant rejected its inputs. (No `#[from]`: that would make the accountant's error
    /// also the source, and `{:#}` would print its message twice.)
    #[error("privacy accounting: {0}")]
    Accountant(accountant::Error),
    /// libtorch reported an error (its message in full, not again as a source).
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
    /// A file the trainer writes or reads (model, metrics, checkpoint) failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// An option is out of range or options contradict each other.
    #[error("invalid option: {0}")]
    Config(String),
    /// The requested device cannot be used.
    #[error("device {device}: {reason}")]
    Device {
        /// The device as requested (`cuda`, `cuda:1`).
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The data cannot be trained on (too few rows, a missing column).
    #[error("data {location}: {reason}")]
    Data {
        /// The shards' location.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A data-parallel run could not connect, or a worker stopped taking part.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// A worker thread panicked (its message went to stderr).
    #[error("worker {worker} panicked: {message}")]
    WorkerPanicked {
        /// The worker's index.
        worker: usize,
        /// What the thread's join reported.
        message: String,
    },
    /// The processes of a data-parallel run were started with different settings.
    #[error(
        "process {process} and process 0 were started with different `{setting}` (this \
         process, {this_process}, has {value}): every process of a run needs the same options, \
         data and trainer version"
    )]
    SettingsDiffer {
        /// The setting's name (a field of [`crate::settings::Settings`]).
        setting: String,
        /// The process that differs from process 0.
        process: usize,
        /// The process reporting it.
        this_process: usize,
        /// This process's value.
        value: String,
    },
    /// A checkpoint is missing, unreadable or from an incompatible run.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl From<accountant::Error> for Error {
    fn from(e: accountant::Error) -> Self {
        Error::Accountant(e)
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Torch(e)
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is a worker's reaction to another worker leaving (not a cause itself).
    pub fn is_peer_gone(&self) -> bool {
        matches!(self, Error::Cluster(cluster::Error::PeerGone { .. }))
    }

    /// Wraps an I/O error with the file it concerns.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `main` prints (`{:#}`, the error and its sources) says each thing once.
    #[test]
    fn wrapped_errors_are_printed_once() {
        let e = Error::from(accountant::Error::Delta(2.0));
        let shown = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(shown.matches("delta = 2").count(), 1, "{shown}");
    }
}
