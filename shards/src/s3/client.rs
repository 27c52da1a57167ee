//! The S3 client: aws-config's default chain plus [`S3Options`], and the tokio runtime it runs on.
#![cfg(feature = "s3")]

use std::future::Future;
use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::Region;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::commit::S3Output;
use super::input::S3Input;
use super::options::S3Options;
use super::progress::Transfers;
use super::sdk_error;
use super::source::S3Source;
use super::upload::Upload;
use crate::error::{Error, Result};
use crate::location::Location;

/// The smallest part S3 accepts in a multipart upload (all but the last).
pub(crate) const MIN_PART_SIZE: usize = 5 << 20;

/// An S3 client with the tokio runtime it runs on. Cheap to clone; the runtime shuts down
/// (and the progress callback hears each direction's total) when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct S3 {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    endpoint: String,
    runtime: Runtime,
    options: S3Options,
    transfers: Transfers,
    /// Permits for the requests in flight ([`S3Options::concurrency`]): uploads and copies.
    limit: Arc<Semaphore>,
}

/// A runtime that never panics on drop (tokio's does when dropped inside an async context).
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl S3 {
    /// A client built from aws-config's default chain and `options`.
    pub fn new(options: S3Options) -> Result<S3> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shards-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime for S3", e))?;
        let runtime = Runtime(Some(runtime));
        let (client, endpoint) = block_on(runtime.handle(), load_client(&options));
        Ok(S3 {
            inner: Arc::new(Inner {
                client,
                endpoint,
                runtime,
                transfers: Transfers::new(options.progress.clone()),
                limit: Arc::new(Semaphore::new(options.concurrency.max(1))),
                options,
            }),
        })
    }

    /// The SDK client, for what the stores do not cover (tests create buckets with it).
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The endpoint it talks to, for messages (`AWS_ENDPOINT_URL` or the region's AWS one).
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The options it was built with.
    pub fn options(&self) -> &S3Options {
        &self.inner.options
    }

    /// Runs `fut` on this client's runtime and waits for it. Safe to call from any thread,
    /// including from inside another tokio runtime (it then blocks on a helper thread, since
    /// tokio forbids nesting `block_on`).
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        block_on(self.inner.runtime.handle(), fut)
    }

    /// Starts `fut` on this client's runtime.
    pub(crate) fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.handle().spawn(fut)
    }

    /// The object or prefix `key` of `bucket` as an input (reads its size with a HEAD).
    pub fn input(&self, bucket: &str, key: &str) -> Result<S3Input> {
        S3Input::open(self.clone(), bucket, key)
    }

    /// The prefix `key` of `bucket` as a shard output.
    pub fn output(&self, bucket: &str, key: &str) -> S3Output {
        S3Output::new(self.clone(), bucket, key)
    }

    /// The prefix `key` of `bucket` as a source of shards to read back.
    pub fn source(&self, bucket: &str, key: &str) -> S3Source {
        S3Source::new(self.clone(), bucket, key)
    }

    /// Starts writing the single object `key`, visible only once `finish` succeeds. An
    /// existing object is an error unless `overwrite`.
    pub fn create_object(&self, bucket: &str, key: &str, overwrite: bool) -> Result<Upload> {
        if key.is_empty() {
            return Err(Error::Location(
                format!("s3://{bucket}/"),
                "an object needs a key, not just a bucket".into(),
            ));
        }
        if !overwrite && self.exists(bucket, key)? {
            return Err(Error::OutputExists {
                path: format!("s3://{bucket}/{key}").into(),
                reason: "already exists (use --overwrite to replace it)".into(),
            });
        }
        Ok(Upload::new(self.clone(), bucket, key, base_name(key), None))
    }

    /// Whether the object exists (a missing bucket is an error).
    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool> {
        let head = self.block_on(self.client().head_object().bucket(bucket).key(key).send());
        match head {
            Ok(_) => Ok(true),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                self.check_bucket(bucket, key)?;
                Ok(false)
            }
            Err(e) => Err(sdk_error(self, "HeadObject", bucket, key, e)),
        }
    }

    /// Turns a 404 on `key` into "no such bucket" when the bucket is what is missing.
    pub(crate) fn check_bucket(&self, bucket: &str, key: &str) -> Result<()> {
        self.block_on(self.client().head_bucket().bucket(bucket).send())
            .map(|_| ())
            .map_err(|e| sdk_error(self, "HeadBucket", bucket, key, e))
    }

    /// A permit for one more request in flight, waiting (this thread) while
    /// [`S3Options::concurrency`] are; released when dropped, i.e. when the request's task ends.
    pub(crate) fn permit(&self) -> OwnedSemaphorePermit {
        self.block_on(self.acquire())
    }

    /// [`S3::permit`] for async code.
    pub(crate) async fn acquire(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.inner.limit)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    pub(crate) fn transfers(&self) -> &Transfers {
        &self.inner.transfers
    }
}

/// Leaves an upload's payload unsigned where [`signs_payload`] says signing it adds nothing,
/// judged on the request's own URI once the SDK has resolved the endpoint (from the options,
/// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, a profile, or AWS's own).
#[derive(Debug)]
pub(crate) struct UnsignedWhereSafe;

impl Intercept for UnsignedWhereSafe {
    fn name(&self) -> &'static str {
        "UnsignedWhereSafe"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !signs_payload(context.request().uri()) {
            cfg.interceptor_state()
                .store_put(PayloadSigningOverride::unsigned_payload());
        }
        Ok(())
    }
}

/// Whether an upload to `uri` signs its body's SHA-256 into the request signature (SigV4's
/// `x-amz-content-sha256`): only over plain `http://` to another machine.
///
/// Every upload carries the CRC-32 of its body (`x-amz-checksum-crc32`, which the server checks
/// and refuses the upload on a mismatch), and that header is signed; each part's CRC-32 is
/// also in the manifest, which readers check. So a body corrupted on the way is refused either
/// way. What the SHA-256 adds is protection against someone on the path replacing the body by
/// one with the same CRC-32 (easy to forge, unlike a SHA-256): over `https://` TLS already
/// rules that out (the AWS SDKs for other languages send unsigned payloads over TLS for the
/// same reason), and on a loopback address nobody else is on the path. Elsewhere over plain
/// HTTP the payload is signed, at a second pass over every byte uploaded on each side.
pub(crate) fn signs_payload(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("http://") else {
        // https:// (or anything unexpected, which the SDK refuses anyway).
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

fn block_on<F>(handle: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| handle.block_on(fut))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    } else {
        handle.block_on(fut)
    }
}

impl Runtime {
    fn handle(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until drop")
    }
}

/// The client and the endpoint it talks to.
async fn load_client(options: &S3Options) -> (Client, String) {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(n) = options.max_attempts {
        loader = loader.retry_config(RetryConfig::standard().with_max_attempts(n.max(1)));
    }
    loader = loader.timeout_config(
        TimeoutConfig::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .operation_timeout(options.operation_timeout)
            .build(),
    );
    let sdk = loader.load().await;
    let path_style = options
        .force_path_style
        .unwrap_or(sdk.endpoint_url().is_some());
    let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style);
    if sdk.region().is_none() {
        conf = conf.region(Region::from_static("us-east-1"));
    }
    let conf = conf.build();
    let endpoint = match sdk.endpoint_url() {
        Some(url) => url.to_string(),
        None => format!(
            "https://s3.{}.amazonaws.com",
            conf.region().map_or("us-east-1", |r| r.as_ref())
        ),
    };
    (Client::from_conf(conf), endpoint)
}

/// The last `/`-separated segment of `key`.
pub(crate) fn base_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// `prefix/name`, or `name` at the bucket's root.
pub(crate) fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

pub(crate) fn bucket_key(loc: &Location) -> (&str, &str) {
    match loc {
        Location::S3 { bucket, key } => (bucket, key),
        Location::Local(_) => unreachable!("only S3 locations are dispatched here"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(join_key("", "a"), "a");
        assert_eq!(join_key("p/q", "a"), "p/q/a");
        assert_eq!(base_name("p/q/data.csv"), "data.csv");
        assert_eq!(base_name("data.csv"), "data.csv");
    }

    #[test]
    fn payload_signed_only_over_plain_http_off_this_machine() {
        for unsigned in [
            "https://s3.us-east-1.amazonaws.com",
            "https://minio.example:9000/",
            "http://127.0.0.1:9000",
            "http://127.3.4.5",
            "http://localhost:9000/x",
            "http://LOCALHOST",
            "http://[::1]:9000",
            "http://user@127.0.0.1:9000",
        ] {
            assert!(!signs_payload(unsigned), "{unsigned}");
        }
        for signed in [
            "http://minio.example:9000",
            "http://10.0.0.7",
            "http://[fe80::1]:9000",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
        ] {
            assert!(signs_payload(signed), "{signed}");
        }
    }

    #[test]
    fn block_on_inside_another_runtime() {
        let s3 = S3::new(S3Options {
            endpoint_url: Some("http://127.0.0.1:9".into()),
            region: Some("us-east-1".into()),
            ..S3Options::default()
        })
        .unwrap();
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let n = outer.block_on(async { s3.block_on(async { 41 + 1 }) });
        assert_eq!(n, 42);
        // Dropped inside an async context: no panic either.
        outer.block_on(async move { drop(s3) });
    }
}
