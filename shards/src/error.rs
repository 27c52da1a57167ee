//! The error type of the `shards` crate.

use std::path::PathBuf;

/// Everything that can go wrong reading input, cleaning, or reading and writing shards.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file or object.
    #[error("{path}: {cause}")]
    Io {
        /// The file, directory or object.
        path: String,
        /// The underlying error (shown in the message, so not chained as a source).
        cause: std::io::Error,
    },
    /// The input has no header line (and no `--columns` were given).
    #[error("{path}: input is empty: no header line")]
    EmptyInput {
        /// The input.
        path: String,
    },
    /// A requested column is not in the header.
    #[error("{role} column '{name}' is not in the input; its columns are: {available}")]
    UnknownColumn {
        /// Which option asked for it (label, feature, exclude).
        role: &'static str,
        /// The missing name.
        name: String,
        /// The columns the input has, comma-separated.
        available: String,
    },
    /// The column selection is inconsistent.
    #[error("invalid column selection: {0}")]
    Selection(String),
    /// The header names a column twice.
    #[error(
        "column '{0}' appears twice in the header (if the first line is data, not a header, name the columns with --columns)"
    )]
    DuplicateColumn(String),
    /// A header column's name is not valid UTF-8.
    #[error("column {column} of the header ('{name}') is not valid UTF-8")]
    InvalidHeader {
        /// 1-based column number.
        column: usize,
        /// The name, decoded lossily.
        name: String,
    },
    /// The first line is too long to be a header.
    #[error(
        "the first line is {bytes} bytes, over the {limit}-byte limit for a header line (not a CSV with line ends?)"
    )]
    HeaderTooLong {
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A shard file line does not parse.
    #[error("{path}:{line}: malformed shard record: {reason}")]
    MalformedShard {
        /// The shard file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A shard's checksum or size disagrees with the manifest.
    #[error("{path}: {what} mismatch: manifest says {expected}, file has {actual}")]
    ChecksumMismatch {
        /// The shard file.
        path: String,
        /// `crc32`, `bytes` or `rows`.
        what: &'static str,
        /// The manifest's value.
        expected: String,
        /// The value computed from the file.
        actual: String,
    },
    /// The manifest does not parse or disagrees with the files present.
    #[error("{path}: bad manifest: {reason}")]
    Manifest {
        /// The manifest file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// No shard files where shards were expected.
    #[error("{path}: no shard files (part-*) found")]
    NoShards {
        /// The directory or prefix.
        path: String,
    },
    /// The output exists and `--overwrite` was not given, or holds foreign files.
    #[error("{path}: {reason}")]
    OutputExists {
        /// The output directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A file named like a part file that is not one.
    #[error("{path}: {reason}")]
    NotAPart {
        /// The file or object.
        path: String,
        /// What it looks like instead.
        reason: String,
    },
    /// Another run holds the output's lock.
    #[error(
        "{path}: another run is writing this output ({holder}); wait for it to finish or stop it"
    )]
    OutputBusy {
        /// The output.
        path: PathBuf,
        /// Who holds the lock, as its lock file says.
        holder: String,
    },
    /// An output without `_SUCCESS`: a run still writing it, or one that failed.
    #[error(
        "{path}: no _SUCCESS, so the output is not complete (a run still writing it, or one that failed); refusing to read it"
    )]
    NotCommitted {
        /// The directory or prefix.
        path: String,
    },
    /// Two records with one key (input byte offset) in an output without a manifest.
    #[error(
        "{path}: record key {key} appears in both {first} and {second}; a copied or stray part file? refusing to read it"
    )]
    DuplicateKey {
        /// The directory or prefix.
        path: String,
        /// The key.
        key: u64,
        /// The part where it appears first (in name order).
        first: String,
        /// The part where it appears again.
        second: String,
    },
    /// A location string does not parse.
    #[error("invalid location '{0}': {1}")]
    Location(String, String),
    /// The operation needs a storage backend this build does not include.
    #[error("{0}")]
    Unsupported(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            cause: source,
        }
    }
}
