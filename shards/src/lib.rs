//! The data contract shared by the preprocessing engines and the trainer: input schema and
//! cleaning rules, record keys and shard hashing, the shard text format, the manifest, and
//! storage (local/NFS built in, S3 behind a feature).
#![deny(missing_docs)]

pub mod clean;
#[cfg(feature = "cli")]
pub mod cli;
pub mod dataset;
pub mod error;
pub mod fault;
pub mod fields;
pub mod format;
pub mod hash;
pub mod keys;
pub mod lines;
pub mod local;
pub mod location;
pub mod manifest;
pub mod s3;
pub mod scan;
pub mod schema;
pub mod store;

pub use clean::{Cleaner, DropReason, Outcome};
pub use dataset::{Dataset, PartFile, Table};
pub use error::{Error, Result};
pub use hash::{is_test, shard_of, splitmix64};
pub use lines::LineReader;
pub use location::Location;
pub use manifest::Manifest;
pub use s3::S3Options;
pub use schema::{Schema, SchemaOptions};
pub use store::{Input, Output, PartWriter, ShardSource};
