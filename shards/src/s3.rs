//! S3 storage (`s3://bucket/prefix`): a client with its own tokio runtime behind the blocking
//! [`Input`], [`Output`], [`PartWriter`] and [`ShardSource`] seams (cargo feature `s3`; the
//! options and the progress callback are compiled without it too, so configurations carry
//! them either way).
//!
//! Credentials, region and endpoint come from aws-config's default chain (environment,
//! `~/.aws` profiles, the instance role on EC2/EMR; `AWS_ENDPOINT_URL` points it at any
//! S3-compatible server). Path-style addressing is forced when a custom endpoint is in use, and
//! can be set either way with [`S3Options::force_path_style`].
//!
//! Options are passed explicitly: a binary builds one [`S3Options`] from its flags and hands it
//! to [`crate::store::open_input`] and friends (or to `S3::new`), so two stores in one process
//! can use different endpoints or timeouts.
//!
//! The rest of the code is synchronous (timely worker threads, not tokio tasks), so every store
//! owns a small multi-thread tokio runtime and blocks on it; see `S3::block_on`.
//!
//! Modules by concern: `client` (the SDK client and its runtime), `objects` (listing,
//! whole-object reads, bounded-concurrency copies and deletes), `upload` (one object being
//! written), `commit` (the shard output and its commit protocol), `source` (shards read back),
//! `input` (ranged reads of an input object).

mod options;

pub use options::{
    DEFAULT_CONCURRENCY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MULTIPART_THRESHOLD, DEFAULT_OPERATION_TIMEOUT, DEFAULT_RANGE_SLACK,
    DEFAULT_READ_TIMEOUT, Direction, S3Options, TransferProgress,
};

// Each of these files is compiled only with the `s3` feature (`#![cfg(feature = "s3")]`).
mod client;
mod commit;
mod error;
mod input;
mod objects;
mod progress;
mod source;
mod upload;

#[cfg(feature = "s3")]
pub use self::{
    client::S3, commit::S3Output, input::S3Input, objects::Listing, source::S3Source,
    upload::Upload,
};

#[cfg(feature = "s3")]
pub(crate) use error::sdk_error;
#[cfg(feature = "s3")]
use {
    crate::error::Result,
    crate::location::Location,
    crate::store::{Input, Output, PartWriter, ShardSource},
    client::{MIN_PART_SIZE, bucket_key, join_key},
};

/// The S3 server the tests use, found through `AWS_ENDPOINT_URL` (started by
/// `scripts/with-s3.sh`). Without it, tests skip (returning `None`), except under `CI=true`,
/// where a missing server fails them, so CI can never skip the S3 tests silently.
///
/// Test code only: compiled with the `test-support` feature (and `s3`), which only
/// dev-dependencies turn on.
#[cfg(all(feature = "s3", feature = "test-support"))]
pub fn test_server() -> Option<S3> {
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but AWS_ENDPOINT_URL is unset: run the S3 tests through scripts/with-s3.sh"
        );
        eprintln!("skipped: AWS_ENDPOINT_URL is unset (run through scripts/with-s3.sh)");
        return None;
    }
    Some(S3::new(S3Options::default()).expect("an S3 client for the test server"))
}

/// [`crate::store::open_input`] for S3.
#[cfg(feature = "s3")]
pub(crate) fn open_input(loc: &Location, options: &S3Options) -> Result<Box<dyn Input>> {
    let (bucket, key) = bucket_key(loc);
    Ok(Box::new(S3::new(options.clone())?.input(bucket, key)?))
}

/// [`crate::store::open_output`] for S3.
#[cfg(feature = "s3")]
pub(crate) fn open_output(loc: &Location, options: &S3Options) -> Result<Box<dyn Output>> {
    let (bucket, key) = bucket_key(loc);
    Ok(Box::new(S3::new(options.clone())?.output(bucket, key)))
}

/// [`crate::store::open_source`] for S3.
#[cfg(feature = "s3")]
pub(crate) fn open_source(loc: &Location, options: &S3Options) -> Result<Box<dyn ShardSource>> {
    let (bucket, key) = bucket_key(loc);
    Ok(Box::new(S3::new(options.clone())?.source(bucket, key)))
}

/// [`crate::store::create_file`] for S3.
#[cfg(feature = "s3")]
pub(crate) fn create_file(
    loc: &Location,
    overwrite: bool,
    options: &S3Options,
) -> Result<Box<dyn PartWriter>> {
    let (bucket, key) = bucket_key(loc);
    Ok(Box::new(
        S3::new(options.clone())?.create_object(bucket, key, overwrite)?,
    ))
}
