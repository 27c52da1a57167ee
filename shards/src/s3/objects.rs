//! Object operations shared by the output, the source and the commit: paginated listings,
//! whole-object reads, batched deletes and server-side copies several at a time.
#![cfg(feature = "s3")]

use std::io::ErrorKind;

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use tokio::task::JoinSet;

use super::error::s3_io;
use super::{S3, sdk_error};
use crate::error::{Error, Result};

/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// What is directly under a "directory" prefix.
#[derive(Debug, Default)]
pub struct Listing {
    /// Objects: names relative to the prefix, and sizes.
    pub files: Vec<(String, u64)>,
    /// Sub-"directories": names relative to the prefix, without the trailing `/`.
    pub dirs: Vec<String>,
}

/// Listing, whole-object reads, copies and deletes, shared by the output and the source.
impl S3 {
    /// The objects and sub-"directories" directly under the "directory" `prefix`, over every
    /// page of the listing.
    pub fn list_dir(&self, bucket: &str, prefix: &str) -> Result<Listing> {
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        self.each_page(bucket, prefix, true, |dir, page| {
            for o in page.contents() {
                let name = o
                    .key()
                    .unwrap_or_default()
                    .strip_prefix(dir)
                    .unwrap_or_default();
                if !name.is_empty() {
                    files.push((name.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
            for p in page.common_prefixes() {
                let name = p
                    .prefix()
                    .unwrap_or_default()
                    .strip_prefix(dir)
                    .unwrap_or_default();
                dirs.push(name.trim_end_matches('/').to_string());
            }
        })?;
        Ok(Listing { files, dirs })
    }

    /// Every key under the "directory" `prefix`, at any depth.
    pub fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        self.each_page(bucket, prefix, false, |_, page| {
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        })?;
        Ok(keys)
    }

    /// Hands every page of the listing under the "directory" `prefix` (one level of it with
    /// `one_level`, every depth without) to `visit`, with the prefix as listed.
    fn each_page(
        &self,
        bucket: &str,
        prefix: &str,
        one_level: bool,
        mut visit: impl FnMut(&str, ListObjectsV2Output),
    ) -> Result<()> {
        let dir = dir_prefix(prefix);
        let mut request = self.client().list_objects_v2().bucket(bucket).prefix(&dir);
        if one_level {
            request = request.delimiter("/");
        }
        let mut pages = request.into_paginator().send();
        while let Some(page) = self.block_on(pages.next()) {
            let page = page.map_err(|e| sdk_error(self, "ListObjectsV2", bucket, &dir, e))?;
            visit(&dir, page);
        }
        Ok(())
    }

    /// Reads a whole object.
    pub fn get_all(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        self.block_on(async {
            let out = self
                .client()
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| sdk_error(self, "GetObject", bucket, key, e))?;
            let mut data = Vec::with_capacity(out.content_length().unwrap_or(0).max(0) as usize);
            let mut body = out.body;
            let wait = self.options().read_timeout;
            loop {
                let Ok(next) = tokio::time::timeout(wait, body.try_next()).await else {
                    return Err(s3_io(
                        bucket,
                        key,
                        ErrorKind::TimedOut,
                        format!(
                            "GetObject: no data from the S3 endpoint {} for {} s at byte {} \
                             (--s3-read-timeout)",
                            self.endpoint(),
                            wait.as_secs(),
                            data.len()
                        ),
                    ));
                };
                match next {
                    Ok(Some(chunk)) => {
                        self.transfers().get.add(chunk.len() as u64);
                        data.extend_from_slice(&chunk);
                    }
                    Ok(None) => return Ok(data),
                    Err(e) => {
                        return Err(s3_io(
                            bucket,
                            key,
                            ErrorKind::Other,
                            format!("GetObject: body stream broke at byte {}: {e}", data.len()),
                        ));
                    }
                }
            }
        })
    }

    /// Deletes `keys` in batches.
    pub fn delete_keys(&self, bucket: &str, keys: Vec<String>) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .expect("every identifier has a key");
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .expect("the object list is set");
            let out = self
                .block_on(
                    self.client()
                        .delete_objects()
                        .bucket(bucket)
                        .delete(delete)
                        .send(),
                )
                .map_err(|e| sdk_error(self, "DeleteObjects", bucket, &batch[0], e))?;
            if let Some(err) = out.errors().first() {
                return Err(s3_io(
                    bucket,
                    err.key().unwrap_or_default(),
                    ErrorKind::Other,
                    format!(
                        "DeleteObjects: {} ({})",
                        err.code().unwrap_or_default(),
                        err.message().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Server-side copies of `(from, to)` keys within `bucket`, [`super::S3Options::concurrency`]
    /// at a time.
    pub fn copy_keys(&self, bucket: &str, pairs: Vec<(String, String)>) -> Result<()> {
        let client = self.client().clone();
        let bucket = bucket.to_string();
        let s3 = self.clone();
        let limit = self.options().concurrency.max(1);
        let copies = async move {
            let mut set = JoinSet::new();
            let mut pending = pairs.into_iter();
            loop {
                while set.len() < limit {
                    let Some((from, to)) = pending.next() else {
                        break;
                    };
                    let (client, bucket, s3) = (client.clone(), bucket.clone(), s3.clone());
                    set.spawn(async move {
                        let _permit = s3.acquire().await;
                        client
                            .copy_object()
                            .bucket(&bucket)
                            .key(&to)
                            .copy_source(format!("{bucket}/{}", encode_key(&from)))
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| sdk_error(&s3, "CopyObject", &bucket, &from, e))
                    });
                }
                match set.join_next().await {
                    None => return Ok(()),
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => return Err(e),
                    Some(Err(e)) => {
                        return Err(s3_io(
                            &bucket,
                            "",
                            ErrorKind::Other,
                            format!("CopyObject task failed: {e}"),
                        ));
                    }
                }
            }
        };
        self.block_on(self.spawn(copies))
            .unwrap_or_else(|e| Err(Error::io("S3 commit", std::io::Error::other(e.to_string()))))
    }
}

/// `prefix/` (the "directory" `prefix`), or `""` for the bucket's root.
fn dir_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (everything but unreserved characters and `/`).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_encoding() {
        assert_eq!(encode_key("a/b c/part-00001"), "a/b%20c/part-00001");
        assert_eq!(encode_key("x+y=é"), "x%2By%3D%C3%A9");
        assert_eq!(dir_prefix(""), "");
        assert_eq!(dir_prefix("p"), "p/");
    }
}
