//! One object being written: buffered and sent with a single PUT at `finish` when it stays
//! under the multipart threshold, otherwise as a multipart upload whose parts go up in the
//! background while the caller keeps writing. The object appears only when `finish` succeeds;
//! dropped before that, the multipart upload is aborted and nothing is left.
//!
//! Every PUT and UploadPart carries the CRC-32 of its body, which the server checks: ours,
//! computed while the bytes are written (the whole object's for a single PUT, also used for the
//! manifest), so the SDK does not compute its own. The body's SHA-256 is signed only where
//! [`super::client::signs_payload`] says of the request's URI (plain HTTP off this machine).
//!
//! Every PUT and UploadPart holds one of the store's permits ([`super::S3Options::concurrency`])
//! while in flight. A part of a shard output ([`super::S3Output`]) goes further: its single PUT
//! is started by `finish` and waited for by the output's `sync_parts` (or `commit`), so one
//! worker keeps several parts in flight instead of uploading them one at a time.
#![cfg(feature = "s3")]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::task::JoinHandle;

use super::client::UnsignedWhereSafe;
use super::error::to_io;
use super::{MIN_PART_SIZE, S3, sdk_error};
use crate::error::{Error, Result};
use crate::manifest::{ShardInfo, crc_hex};
use crate::store::PartWriter;

/// Parts of one upload in flight at once (each holds a part-sized buffer).
const IN_FLIGHT: usize = 2;

/// An object being written (see the module docs). Returned by [`S3::create_object`] and by
/// [`super::S3Output`]'s `create_part`.
#[derive(Debug)]
pub struct Upload {
    s3: S3,
    bucket: String,
    key: String,
    name: String,
    threshold: usize,
    part_size: usize,
    buf: Vec<u8>,
    hasher: crc32fast::Hasher,
    bytes: u64,
    multipart: Option<Multipart>,
    finished: bool,
    /// Where `finish` leaves a single PUT in flight; `None`: `finish` waits for it.
    pending: Option<Arc<Pending>>,
}

/// Single PUTs started by `finish` and not yet waited for (those of one output).
#[derive(Debug, Default)]
pub(crate) struct Pending(Mutex<Vec<(String, JoinHandle<Result<()>>)>>);

impl Pending {
    fn push(&self, key: String, upload: JoinHandle<Result<()>>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, upload));
    }

    /// Waits for every upload started so far, all of them even after a failure (so that
    /// none lands after an abort has cleaned up), and returns the first failure, which names
    /// its object.
    pub(crate) fn wait(&self, s3: &S3, bucket: &str) -> Result<()> {
        let uploads = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first = Ok(());
        for (key, upload) in uploads {
            let done = join(s3, upload, bucket, &key);
            if first.is_ok() {
                first = done;
            }
        }
        first
    }
}

#[derive(Debug)]
struct Multipart {
    upload_id: String,
    next_number: i32,
    in_flight: VecDeque<JoinHandle<Result<CompletedPart>>>,
    done: Vec<CompletedPart>,
}

impl Upload {
    /// `pending`: where `finish` leaves a single PUT in flight (a part of an output), or
    /// `None` for `finish` to wait for it.
    pub(crate) fn new(
        s3: S3,
        bucket: &str,
        key: &str,
        name: &str,
        pending: Option<Arc<Pending>>,
    ) -> Upload {
        let threshold = s3.options().multipart_threshold;
        Upload {
            part_size: threshold.max(MIN_PART_SIZE),
            threshold,
            s3,
            bucket: bucket.into(),
            key: key.into(),
            name: name.into(),
            buf: Vec::new(),
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
            multipart: None,
            finished: false,
            pending,
        }
    }

    /// Sends every full part in the buffer, starting the multipart upload if needed.
    fn send_full_parts(&mut self) -> Result<()> {
        if self.multipart.is_none() {
            let out = self
                .s3
                .block_on(
                    self.s3
                        .client()
                        .create_multipart_upload()
                        .bucket(&self.bucket)
                        .key(&self.key)
                        .send(),
                )
                .map_err(|e| {
                    sdk_error(
                        &self.s3,
                        "CreateMultipartUpload",
                        &self.bucket,
                        &self.key,
                        e,
                    )
                })?;
            self.multipart = Some(Multipart {
                upload_id: out.upload_id().unwrap_or_default().to_string(),
                next_number: 1,
                in_flight: VecDeque::new(),
                done: Vec::new(),
            });
        }
        while self.buf.len() >= self.part_size {
            let rest = self.buf.split_off(self.part_size);
            let part = std::mem::replace(&mut self.buf, rest);
            self.send_part(part)?;
        }
        Ok(())
    }

    /// Starts uploading `data` as the next part, first waiting for the oldest part in flight
    /// when there are too many.
    fn send_part(&mut self, data: Vec<u8>) -> Result<()> {
        let mp = self
            .multipart
            .as_mut()
            .expect("started before parts are sent");
        while mp.in_flight.len() >= IN_FLIGHT {
            let oldest = mp.in_flight.pop_front().expect("non-empty");
            mp.done
                .push(join(&self.s3, oldest, &self.bucket, &self.key)?);
        }
        let permit = self.s3.permit();
        let number = mp.next_number;
        mp.next_number += 1;
        let len = data.len() as u64;
        let req = self
            .s3
            .client()
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&mp.upload_id)
            .part_number(number)
            .checksum_crc32(crc_base64(crc32fast::hash(&data)))
            .body(ByteStream::from(data));
        let (s3, bucket, key) = (self.s3.clone(), self.bucket.clone(), self.key.clone());
        mp.in_flight.push_back(self.s3.spawn(async move {
            let _permit = permit;
            let out = req
                .customize()
                .interceptor(UnsignedWhereSafe)
                .send()
                .await
                .map_err(|e| sdk_error(&s3, "UploadPart", &bucket, &key, e))?;
            s3.transfers().put.add(len);
            let mut part = CompletedPart::builder().part_number(number);
            if let Some(etag) = out.e_tag() {
                part = part.e_tag(etag);
            }
            if let Some(crc) = out.checksum_crc32() {
                part = part.checksum_crc32(crc);
            }
            Ok(part.build())
        }));
        Ok(())
    }

    fn finish_upload(&mut self) -> Result<()> {
        let client = self.s3.client().clone();
        if self.multipart.is_none() {
            let data = std::mem::take(&mut self.buf);
            let len = data.len() as u64;
            let req = client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .checksum_crc32(crc_base64(self.hasher.clone().finalize()))
                .body(ByteStream::from(data));
            let permit = self.s3.permit();
            let (s3, bucket, key) = (self.s3.clone(), self.bucket.clone(), self.key.clone());
            let put = self.s3.spawn(async move {
                let _permit = permit;
                req.customize()
                    .interceptor(UnsignedWhereSafe)
                    .send()
                    .await
                    .map_err(|e| sdk_error(&s3, "PutObject", &bucket, &key, e))?;
                s3.transfers().put.add(len);
                Ok(())
            });
            return match &self.pending {
                Some(pending) => {
                    pending.push(self.key.clone(), put);
                    Ok(())
                }
                None => join(&self.s3, put, &self.bucket, &self.key),
            };
        }
        let last = std::mem::take(&mut self.buf);
        if !last.is_empty() {
            self.send_part(last)?;
        }
        let mp = self.multipart.as_mut().expect("checked above");
        while let Some(h) = mp.in_flight.pop_front() {
            mp.done.push(join(&self.s3, h, &self.bucket, &self.key)?);
        }
        mp.done.sort_by_key(|p| p.part_number());
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(mp.done.clone()))
            .build();
        self.s3
            .block_on(
                client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .upload_id(&mp.upload_id)
                    .multipart_upload(parts)
                    .send(),
            )
            .map_err(|e| {
                sdk_error(
                    &self.s3,
                    "CompleteMultipartUpload",
                    &self.bucket,
                    &self.key,
                    e,
                )
            })?;
        Ok(())
    }
}

/// A CRC-32 as S3's `x-amz-checksum-crc32` wants it: the big-endian bytes in base64.
fn crc_base64(crc: u32) -> String {
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

/// Waits for an upload's task (a PUT or an UploadPart of `s3://bucket/key`).
fn join<T: Send>(s3: &S3, handle: JoinHandle<Result<T>>, bucket: &str, key: &str) -> Result<T> {
    s3.block_on(handle).unwrap_or_else(|e| {
        Err(Error::io(
            format_args!("s3://{bucket}/{key}"),
            std::io::Error::other(format!("upload task failed: {e}")),
        ))
    })
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        let over = match self.multipart {
            Some(_) => self.buf.len() >= self.part_size,
            None => self.buf.len() > self.threshold,
        };
        if over {
            self.send_full_parts().map_err(to_io)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PartWriter for Upload {
    fn finish(mut self: Box<Self>) -> Result<ShardInfo> {
        self.finish_upload()?;
        self.finished = true;
        Ok(ShardInfo {
            name: self.name.clone(),
            rows: 0,
            bytes: self.bytes,
            crc32: crc_hex(self.hasher.clone().finalize()),
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(mp) = self.multipart.take() {
            for h in &mp.in_flight {
                h.abort();
            }
            let abort = self
                .s3
                .client()
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&mp.upload_id)
                .send();
            // Best effort: a server that is gone cannot be cleaned up, and the upload never
            // became an object (a bucket lifecycle rule reclaims its parts).
            let _ = self.s3.block_on(abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crc_base64;

    #[test]
    fn crc_in_base64() {
        // As S3 and Python's base64.b64encode(zlib.crc32(x).to_bytes(4, "big")) write them.
        assert_eq!(crc_base64(0), "AAAAAA==");
        assert_eq!(crc_base64(crc32fast::hash(b"a")), "6Le+Qw==");
        assert_eq!(crc_base64(0x4457_89a0), "RFeJoA==");
        assert_eq!(crc_base64(u32::MAX), "/////w==");
    }
}
