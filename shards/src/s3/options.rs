//! How S3 stores are reached: plain data a binary builds from its flags and hands to every
//! store it opens (compiled with or without the `s3` feature, so configurations carry it either
//! way), and the callback that receives transfer counts.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Objects larger than this go up as multipart uploads (S3 needs parts of at least 5 MiB).
pub const DEFAULT_MULTIPART_THRESHOLD: usize = 8 << 20;
/// Bytes read past a range's end in the first GET, so the range's last line rarely needs a
/// second request.
pub const DEFAULT_RANGE_SLACK: u64 = 64 << 10;
/// How long connecting to the endpoint may take ([`S3Options::connect_timeout`]).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the endpoint may stay silent while an answer is awaited
/// ([`S3Options::read_timeout`]).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one operation may take, retries included ([`S3Options::operation_timeout`]).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts per request, the first included, when neither the options nor the environment
/// (`AWS_MAX_ATTEMPTS`) say otherwise. With the read timeout this bounds how long a silent
/// endpoint can hold a request: 3 x 15 s plus backoff, under a minute.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Uploads and commit requests (copies, deletes) one store keeps in flight at most
/// ([`S3Options::concurrency`]).
pub const DEFAULT_CONCURRENCY: usize = 16;

/// How S3 stores are built. `Default` follows the SDK's defaults everywhere. Plain data: a
/// binary fills it from its flags (`..S3Options::default()` for the rest) and passes it to
/// [`crate::store::open_input`] and friends, or to `S3::new`.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Path-style addressing (`http://host/bucket/key`) instead of virtual-hosted style
    /// (`http://bucket.host/key`). `None`: on exactly when a custom endpoint is configured.
    pub force_path_style: Option<bool>,
    /// An endpoint overriding aws-config's (which honours `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// A region overriding aws-config's. When neither gives one, `us-east-1`.
    pub region: Option<String>,
    /// Attempts per request, first try included, overriding the SDK's retry configuration
    /// (which reads `AWS_MAX_ATTEMPTS`, default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: Option<u32>,
    /// How long connecting to the endpoint may take.
    pub connect_timeout: Duration,
    /// How long the endpoint may stay silent: before the first byte of an answer, and between
    /// two pieces of an object being read. A silent endpoint fails each attempt after this.
    pub read_timeout: Duration,
    /// How long one operation may take, every attempt included (the body of a download is
    /// guarded by `read_timeout` instead).
    pub operation_timeout: Duration,
    /// Objects larger than this are uploaded in parts of this size (at least 5 MiB).
    pub multipart_threshold: usize,
    /// Extra bytes fetched past a range's end (see [`DEFAULT_RANGE_SLACK`]).
    pub range_slack: u64,
    /// Requests one store keeps in flight at most for uploads (whole objects and parts of
    /// multipart uploads, from all threads writing through it) and for the commit's copies and
    /// deletes. At least 1; each upload in flight holds its data in memory (at most
    /// `multipart_threshold` bytes).
    pub concurrency: usize,
    /// Receives the bytes transferred (e.g. to draw progress bars); `None`: nothing is shown.
    pub progress: Option<Arc<dyn TransferProgress>>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            force_path_style: None,
            endpoint_url: None,
            region: None,
            max_attempts: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            range_slack: DEFAULT_RANGE_SLACK,
            concurrency: DEFAULT_CONCURRENCY,
            progress: None,
        }
    }
}

/// The same settings, and the same progress callback (the same object, or none on both sides).
impl PartialEq for S3Options {
    fn eq(&self, other: &Self) -> bool {
        let S3Options {
            force_path_style,
            endpoint_url,
            region,
            max_attempts,
            connect_timeout,
            read_timeout,
            operation_timeout,
            multipart_threshold,
            range_slack,
            concurrency,
            progress,
        } = self;
        let same_progress = match (progress, &other.progress) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        *force_path_style == other.force_path_style
            && *endpoint_url == other.endpoint_url
            && *region == other.region
            && *max_attempts == other.max_attempts
            && *connect_timeout == other.connect_timeout
            && *read_timeout == other.read_timeout
            && *operation_timeout == other.operation_timeout
            && *multipart_threshold == other.multipart_threshold
            && *range_slack == other.range_slack
            && *concurrency == other.concurrency
            && same_progress
    }
}

/// Which way bytes moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Downloaded (GetObject).
    Get,
    /// Uploaded (PutObject, UploadPart).
    Put,
}

impl Direction {
    /// `"s3 get"` or `"s3 put"`, for labels.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Get => "s3 get",
            Direction::Put => "s3 put",
        }
    }
}

/// Receives the transfer counts of S3 stores, from any thread. Each store reports its own
/// transfers, and when it closes (its last clone is dropped), [`TransferProgress::finished`]
/// once per direction that moved bytes.
pub trait TransferProgress: Send + Sync + Debug {
    /// `bytes` more moved in `direction`.
    fn transferred(&self, direction: Direction, bytes: u64);
    /// A store closed after moving `total` bytes in `direction` over `active` (from its first
    /// byte to its last).
    fn finished(&self, direction: Direction, total: u64, active: Duration);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Quiet;

    impl TransferProgress for Quiet {
        fn transferred(&self, _: Direction, _: u64) {}
        fn finished(&self, _: Direction, _: u64, _: Duration) {}
    }

    /// Options are equal when every setting is, and they report to the same callback.
    #[test]
    fn equal_settings_and_the_same_callback_are_equal() {
        let base = S3Options::default();
        assert_eq!(base, S3Options::default());
        let slower = S3Options {
            read_timeout: Duration::from_secs(99),
            ..S3Options::default()
        };
        assert_ne!(base, slower);
        let bars: Arc<dyn TransferProgress> = Arc::new(Quiet);
        let with = |p: &Arc<dyn TransferProgress>| S3Options {
            progress: Some(Arc::clone(p)),
            ..S3Options::default()
        };
        assert_eq!(with(&bars), with(&bars));
        assert_ne!(with(&bars), base);
        let other: Arc<dyn TransferProgress> = Arc::new(Quiet);
        assert_ne!(with(&bars), with(&other));
    }
}
