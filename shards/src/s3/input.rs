//! An S3 object as an [`Input`]: each reader streams one ranged GET of its byte range plus a
//! little slack, and issues further ranged GETs only if it reads past that (the last line of a
//! range may run over). Every GET is pinned to the ETag seen at open, so all readers see one
//! version of the object.
#![cfg(feature = "s3")]

use std::io::{ErrorKind, Read};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::error::{s3_io, to_io};
use super::{S3, sdk_error};
use crate::error::Result;
use crate::location::Location;
use crate::store::Input;

/// The window of a follow-up GET when a reader runs past its first range; it doubles each time.
const FOLLOW_UP_WINDOW: u64 = 1 << 20;
const MAX_WINDOW: u64 = 64 << 20;
/// Times a broken body stream is resumed with a new ranged GET before the error is returned.
const RESUMES: u32 = 3;

/// An input object.
#[derive(Debug)]
pub struct S3Input {
    s3: S3,
    bucket: String,
    key: String,
    location: Location,
    len: u64,
    etag: Option<String>,
}

impl S3Input {
    /// Reads the object's size and ETag (a missing bucket or key is an error naming it).
    pub fn open(s3: S3, bucket: &str, key: &str) -> Result<S3Input> {
        let head = s3.block_on(s3.client().head_object().bucket(bucket).key(key).send());
        let head = match head {
            Ok(h) => h,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                s3.check_bucket(bucket, key)?;
                return Err(sdk_error(&s3, "HeadObject", bucket, key, e));
            }
            Err(e) => return Err(sdk_error(&s3, "HeadObject", bucket, key, e)),
        };
        Ok(S3Input {
            len: head.content_length().unwrap_or(0).max(0) as u64,
            etag: head.e_tag().map(str::to_string),
            location: Location::S3 {
                bucket: bucket.into(),
                key: key.into(),
            },
            bucket: bucket.into(),
            key: key.into(),
            s3,
        })
    }
}

impl Input for S3Input {
    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }

    fn open_at(&self, start: u64, end_hint: u64) -> Result<Box<dyn Read + Send>> {
        let first_end = end_hint
            .max(start)
            .saturating_add(self.s3.options().range_slack)
            .min(self.len);
        let mut reader = RangeReader {
            s3: self.s3.clone(),
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            etag: self.etag.clone(),
            len: self.len,
            pos: start.min(self.len),
            body: None,
            body_end: start,
            chunk: Bytes::new(),
            window: FOLLOW_UP_WINDOW,
            resumes: 0,
        };
        // The first request goes out now, so a missing object fails here rather than mid-read.
        if reader.pos < first_end {
            reader.request(first_end)?;
        }
        Ok(Box::new(reader))
    }

    fn location(&self) -> &Location {
        &self.location
    }
}

/// A blocking reader over consecutive ranged GETs.
struct RangeReader {
    s3: S3,
    bucket: String,
    key: String,
    etag: Option<String>,
    len: u64,
    /// Object offset of the next byte `read` returns.
    pos: u64,
    /// The body of the current GET, which ends at `body_end`.
    body: Option<ByteStream>,
    body_end: u64,
    /// Bytes received and not yet returned; they start at `pos`.
    chunk: Bytes,
    window: u64,
    resumes: u32,
}

impl RangeReader {
    /// Starts a GET of `[pos, end)`.
    fn request(&mut self, end: u64) -> Result<()> {
        let mut req = self
            .s3
            .client()
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(format!("bytes={}-{}", self.pos, end - 1));
        if let Some(etag) = &self.etag {
            req = req.if_match(etag);
        }
        let out = self
            .s3
            .block_on(req.send())
            .map_err(|e| sdk_error(&self.s3, "GetObject", &self.bucket, &self.key, e))?;
        self.body = Some(out.body);
        self.body_end = end;
        Ok(())
    }

    /// The next piece of the current body; `None` at its end.
    fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        let body = self.body.as_mut().expect("called with a body");
        let wait = self.s3.options().read_timeout;
        match self
            .s3
            .block_on(async { tokio::time::timeout(wait, body.try_next()).await })
        {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(std::io::Error::other(format!(
                "s3://{}/{}: GetObject: body stream broke at byte {}: {e}",
                self.bucket, self.key, self.pos
            ))),
            Err(_) => Err(std::io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "s3://{}/{}: GetObject: no data from the S3 endpoint {} for {} s at byte {} \
                     (--s3-read-timeout)",
                    self.bucket,
                    self.key,
                    self.s3.endpoint(),
                    wait.as_secs(),
                    self.pos
                ),
            )),
        }
    }
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&self.chunk[..n]);
                let _ = self.chunk.split_to(n);
                self.pos += n as u64;
                return Ok(n);
            }
            if self.body.is_some() {
                match self.next_chunk() {
                    Ok(Some(c)) => {
                        self.s3.transfers().get.add(c.len() as u64);
                        self.chunk = c;
                    }
                    Ok(None) if self.pos >= self.body_end => self.body = None,
                    broken => {
                        let err = broken.err().unwrap_or_else(|| {
                            to_io(s3_io(
                                &self.bucket,
                                &self.key,
                                ErrorKind::UnexpectedEof,
                                format!("GetObject: body ended early at byte {}", self.pos),
                            ))
                        });
                        if self.resumes == RESUMES {
                            return Err(err);
                        }
                        // Resume from where the stream broke.
                        self.resumes += 1;
                        self.body = None;
                        self.request(self.body_end).map_err(to_io)?;
                    }
                }
                continue;
            }
            if self.pos >= self.len {
                return Ok(0);
            }
            let end = self.pos.saturating_add(self.window).min(self.len);
            self.window = (self.window * 2).min(MAX_WINDOW);
            self.request(end).map_err(to_io)?;
        }
    }
}
