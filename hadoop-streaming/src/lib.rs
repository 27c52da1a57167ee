//! Hadoop-streaming mapper and reducer: `pipeline run`'s job as `mapper | sort | reducer`,
//! built on the `shards` contract only, so the binaries build small and portable for EMR.
//!
//! The mapper cleans lines with [`shards::Cleaner`] and writes one entry per record (see
//! [`frame`]), keyed so that any sort groups a shard and orders it by record offset; the
//! reducer writes each shard's records in offset order under one shard header line.
#![deny(missing_docs)]

pub mod counters;
pub mod error;
pub mod frame;
pub mod mapper;
pub mod memo;
pub mod reducer;

pub use error::{Error, Result};
pub use mapper::{InputKeys, MapSummary, MapperConfig};
pub use reducer::{ReduceSummary, ReducerConfig};
