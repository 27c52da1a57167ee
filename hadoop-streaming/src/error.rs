//! The error type of the streaming mapper and reducer.

/// Everything that can stop a mapper or reducer task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading standard input or writing standard output or error failed.
    #[error("{stream}: {source}")]
    Io {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The column selection does not fit the input (from the `shards` contract).
    #[error(transparent)]
    Schema(#[from] shards::Error),
    /// In a split job without `--columns`, the input's header is not the default (CaPUMS)
    /// schema that the other map tasks, which never see the header, would assume.
    #[error(
        "the input's columns are {found}, but map tasks that do not see the header line would \
         assume the CaPUMS columns; pass --columns {found}"
    )]
    HeaderNeedsColumns {
        /// The header's columns, comma-separated.
        found: String,
    },
    /// Offset-keyed input (`offset<TAB>line`) had a line without a byte-offset key.
    #[error(
        "stdin line {line}: expected 'offset<TAB>line' (Hadoop with \
         -D stream.map.input.ignoreKey=false); use --input-keys none for plain lines"
    )]
    MissingOffsetKey {
        /// 1-based line number in this task's input.
        line: u64,
    },
    /// A reducer input line is not a mapper entry.
    #[error("stdin line {line}: not a mapper entry 'shard<TAB>offset<TAB>record': {reason}")]
    BadEntry {
        /// 1-based line number in this task's input.
        line: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A shard's entries came in two separate runs: the reducer input is not sorted by key.
    #[error(
        "stdin line {line}: shard {shard} appears again after other shards: the reducer input \
         must be sorted by key (mapper | sort | reducer)"
    )]
    NotGrouped {
        /// 1-based line number in this task's input.
        line: u64,
        /// The shard seen twice.
        shard: u32,
    },
    /// The same record offset appears twice in a shard (the same input read twice?).
    #[error("shard {shard}: record offset {offset} appears twice (was the input given twice?)")]
    DuplicateOffset {
        /// The shard.
        shard: u32,
        /// The repeated record key.
        offset: u64,
    },
    /// A record of a shard could not be keyed (it is not what a mapper writes), or the options
    /// do not fit the records.
    #[error("shard {shard}: {reason}")]
    BadRecord {
        /// The shard.
        shard: u32,
        /// What is wrong.
        reason: String,
    },
    /// Map tasks sent different shard header lines (they ran with different options).
    #[error(
        "stdin line {line}: shard header {found:?} differs from {first:?}: \
         all map tasks must run with the same options"
    )]
    HeaderConflict {
        /// 1-based line number in this task's input.
        line: u64,
        /// The header seen first.
        first: String,
        /// The differing header.
        found: String,
    },
    /// Records of a shard arrived with no shard header entry from any mapper.
    #[error("shard {shard}: records but no header entry (was the input made by this mapper?)")]
    NoHeader {
        /// The shard.
        shard: u32,
    },
}

impl Error {
    /// Wraps an I/O error on a named standard stream.
    pub fn io(stream: &'static str, source: std::io::Error) -> Error {
        Error::Io { stream, source }
    }

    /// Whether this is a closed pipe on standard output, which ends a task normally
    /// (`mapper < big.csv | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
