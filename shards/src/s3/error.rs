//! SDK errors mapped to [`crate::Error::Io`] naming the bucket and key, with an
//! [`std::io::ErrorKind`] callers can match (`NotFound`, `PermissionDenied`,
//! `ConnectionRefused`, `TimedOut`). Messages are built from the service's error code and
//! message and the connector's error chain, never from request headers, so credentials cannot
//! leak into them.
#![cfg(feature = "s3")]

use std::error::Error as StdError;
use std::io::ErrorKind;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::error::Error;

/// Maps a failed SDK call `op` on `s3://bucket/key` by the client `s3` (whose endpoint a
/// connection failure or timeout names).
pub(crate) fn sdk_error<E>(
    s3: &super::S3,
    op: &'static str,
    bucket: &str,
    key: &str,
    err: SdkError<E>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (kind, what) = match &err {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let code = err.code().unwrap_or_default();
            let (kind, what) = classify(op, code, status, bucket);
            let detail = match (code, err.message()) {
                ("", _) => format!("HTTP {}", status.unwrap_or_default()),
                (c, Some(m)) if !m.is_empty() => format!("{c}: {m}"),
                (c, _) => c.to_string(),
            };
            (kind, format!("{what} ({detail})"))
        }
        SdkError::DispatchFailure(d) => {
            let kind = io_kind(&err).unwrap_or(if d.is_timeout() {
                ErrorKind::TimedOut
            } else {
                ErrorKind::Other
            });
            let what = match kind {
                ErrorKind::ConnectionRefused => "connection refused by the S3 endpoint",
                ErrorKind::TimedOut => "timed out reaching the S3 endpoint",
                _ => "cannot reach the S3 endpoint",
            };
            (kind, format!("{what} {} ({})", s3.endpoint(), chain(&err)))
        }
        SdkError::TimeoutError(_) => (
            ErrorKind::TimedOut,
            format!(
                "no answer from the S3 endpoint {} within {} s, retries included ({}; \
                 --s3-operation-timeout)",
                s3.endpoint(),
                s3.options().operation_timeout.as_secs(),
                chain(&err)
            ),
        ),
        _ => (ErrorKind::Other, chain(&err)),
    };
    s3_io(bucket, key, kind, format!("{op}: {what}"))
}

/// An [`Error::Io`] on `s3://bucket/key`.
pub(crate) fn s3_io(bucket: &str, key: &str, kind: ErrorKind, message: String) -> Error {
    Error::io(
        format_args!("s3://{bucket}/{key}"),
        std::io::Error::new(kind, message),
    )
}

fn classify(op: &str, code: &str, status: Option<u16>, bucket: &str) -> (ErrorKind, String) {
    let bucket_op = op.ends_with("Bucket");
    match (code, status) {
        ("NoSuchBucket", _) | (_, Some(404)) if code == "NoSuchBucket" || bucket_op => {
            (ErrorKind::NotFound, format!("no such bucket '{bucket}'"))
        }
        ("NoSuchKey" | "NotFound", _) | (_, Some(404)) => {
            (ErrorKind::NotFound, "no such key".into())
        }
        (
            "AccessDenied"
            | "AllAccessDisabled"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken",
            _,
        )
        | (_, Some(401 | 403)) => (ErrorKind::PermissionDenied, "access denied".into()),
        ("PreconditionFailed", _) | (_, Some(412)) => (
            ErrorKind::Other,
            "the object changed while it was being read".into(),
        ),
        ("SlowDown" | "ServiceUnavailable" | "InternalError", _) | (_, Some(500..)) => {
            (ErrorKind::Other, "server error (retries exhausted)".into())
        }
        _ => (ErrorKind::Other, "request failed".into()),
    }
}

/// An [`Error`] as the `std::io::Error` a `Read` or `Write` must return, keeping its kind and
/// location.
pub(crate) fn to_io(e: Error) -> std::io::Error {
    match e {
        Error::Io { path, cause } => std::io::Error::new(cause.kind(), format!("{path}: {cause}")),
        other => std::io::Error::other(other.to_string()),
    }
}

/// The messages of `err` and its sources, joined by `: ` (the SDK's own `DisplayErrorContext`
/// appends a debug dump that is no use to a user).
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !msg.is_empty() && parts.last() != Some(&msg) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The kind of the first I/O error in `err`'s source chain.
fn io_kind(err: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let get = |code, status| classify("GetObject", code, Some(status), "b");
        assert_eq!(get("NoSuchBucket", 404).0, ErrorKind::NotFound);
        assert!(get("NoSuchBucket", 404).1.contains("'b'"));
        assert_eq!(get("", 404).1, "no such key");
        assert!(
            classify("HeadBucket", "NotFound", Some(404), "b")
                .1
                .contains("bucket 'b'")
        );
        assert_eq!(get("AccessDenied", 403).0, ErrorKind::PermissionDenied);
        assert_eq!(get("", 403).0, ErrorKind::PermissionDenied);
    }
}
