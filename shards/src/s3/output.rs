//! A prefix of shards on S3: written under `<prefix>/_temporary/` and published by
//! [`Output::commit`] (server-side copy of every part to its final key, then `_manifest.json`,
//! then `_SUCCESS`), and read back with paginated listings.
//!
//! `_SUCCESS` is the commit point, which [`crate::Dataset`] requires. Why copy on commit rather
//! than uploading straight to the final keys: the parts of a run in progress, or of one that
//! died, never appear under the output prefix, so even a reader that does not check `_SUCCESS`
//! can never pick up a half-written dataset, and the commit works across processes (any process can
//! commit parts that others uploaded). The price is one server-side CopyObject per part (no
//! data passes through the client; 16 run concurrently) and one batched delete.

use std::collections::HashMap;
use std::io::ErrorKind;

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use tokio::task::JoinSet;

use super::error::s3_io;
use super::upload::Upload;
use super::{S3, join_key, sdk_error};
use crate::error::{Error, Result};
use crate::local::{TEMPORARY_DIR, check_ours_names};
use crate::location::Location;
use crate::manifest::{MANIFEST_NAME, Manifest, SUCCESS_NAME};
use crate::store::{Output, PartWriter, ShardSource};

/// CopyObject's limit; larger parts would need a multipart copy.
const MAX_COPY: u64 = 5 << 30;
/// Server-side copies (and deletes) in flight during a commit.
const CONCURRENT_COPIES: usize = 16;
/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// A shard output under an S3 prefix.
#[derive(Debug)]
pub struct S3Output {
    s3: S3,
    bucket: String,
    prefix: String,
    location: Location,
}

impl S3Output {
    /// The output at `s3://bucket/prefix` (nothing is touched until [`Output::prepare`]).
    pub fn new(s3: S3, bucket: &str, prefix: &str) -> S3Output {
        S3Output {
            s3,
            bucket: bucket.into(),
            prefix: prefix.into(),
            location: Location::S3 {
                bucket: bucket.into(),
                key: prefix.into(),
            },
        }
    }

    fn temporary(&self) -> String {
        join_key(&self.prefix, TEMPORARY_DIR)
    }

    fn exists_error(&self, reason: String) -> Error {
        Error::OutputExists {
            path: self.location.to_string().into(),
            reason,
        }
    }

    /// Takes back the parts a failed commit published, so it leaves no part under its final
    /// name (best effort: the server may be what failed).
    fn unpublish(&self, keys: Vec<String>) {
        let _ = self.s3.delete_keys(&self.bucket, keys);
    }

    fn put_small(&self, name: &str, body: &[u8]) -> Result<()> {
        let key = join_key(&self.prefix, name);
        let mut up = Box::new(Upload::new(self.s3.clone(), &self.bucket, &key, name));
        std::io::Write::write_all(&mut up, body).map_err(|e| Error::io(&self.location, e))?;
        up.finish().map(|_| ())
    }
}

impl Output for S3Output {
    fn prepare(&self, overwrite: bool) -> Result<()> {
        let Listing { files, dirs } = self.s3.list_dir(&self.bucket, &self.prefix)?;
        let mut names: Vec<&str> = files
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(dirs.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        if names.is_empty() {
            return Ok(());
        }
        if !overwrite {
            return Err(self.exists_error(
                "output prefix is not empty (use --overwrite to replace it)".into(),
            ));
        }
        check_ours_names(names.iter().copied()).map_err(|reason| self.exists_error(reason))?;
        // Unpublish first, so a crash in between never leaves a stale output looking complete.
        if names.contains(&SUCCESS_NAME) {
            self.s3
                .delete_keys(&self.bucket, vec![join_key(&self.prefix, SUCCESS_NAME)])?;
        }
        let all = self.s3.list_all(&self.bucket, &self.prefix)?;
        self.s3.delete_keys(&self.bucket, all)
    }

    fn create_part(&self, name: &str) -> Result<Box<dyn PartWriter>> {
        let key = join_key(&self.temporary(), name);
        Ok(Box::new(Upload::new(
            self.s3.clone(),
            &self.bucket,
            &key,
            name,
        )))
    }

    fn commit(&self, manifest: &Manifest) -> Result<()> {
        let tmp = self.temporary();
        let files = self.s3.list_dir(&self.bucket, &tmp)?.files;
        let listed: HashMap<&str, u64> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        let mut copies = Vec::with_capacity(manifest.shards.len());
        for shard in &manifest.shards {
            let from = join_key(&tmp, &shard.name);
            match listed.get(shard.name.as_str()) {
                None => {
                    return Err(s3_io(
                        &self.bucket,
                        &from,
                        ErrorKind::NotFound,
                        "commit: the part was never uploaded (or was deleted)".into(),
                    ));
                }
                Some(&b) if b != shard.bytes => {
                    return Err(Error::ChecksumMismatch {
                        path: format!("s3://{}/{from}", self.bucket),
                        what: "bytes",
                        expected: shard.bytes.to_string(),
                        actual: b.to_string(),
                    });
                }
                Some(&b) if b > MAX_COPY => {
                    return Err(s3_io(
                        &self.bucket,
                        &from,
                        ErrorKind::Unsupported,
                        format!(
                            "commit: a part of {b} bytes is over CopyObject's 5 GiB limit; use more shards"
                        ),
                    ));
                }
                Some(_) => copies.push((from, join_key(&self.prefix, &shard.name))),
            }
        }
        let published: Vec<String> = copies.iter().map(|(_, to)| to.clone()).collect();
        if let Err(e) = self.s3.copy_keys(&self.bucket, copies) {
            self.unpublish(published);
            return Err(e);
        }
        // The temporaries go while the manifest goes up. Best effort, as locally: leftovers
        // under _temporary/ do not make the output wrong.
        let temporaries: Vec<String> = files.iter().map(|(n, _)| join_key(&tmp, n)).collect();
        let cleanup = {
            let (s3, bucket) = (self.s3.clone(), self.bucket.clone());
            std::thread::spawn(move || {
                let _ = s3.delete_keys(&bucket, temporaries);
            })
        };
        let manifest_written = self.put_small(MANIFEST_NAME, manifest.to_json().as_bytes());
        let _ = cleanup.join();
        if let Err(e) = manifest_written {
            self.unpublish(published);
            return Err(e);
        }
        self.put_small(SUCCESS_NAME, b"")
    }

    fn abort(&self) {
        if let Ok(keys) = self.s3.list_all(&self.bucket, &self.temporary()) {
            let _ = self.s3.delete_keys(&self.bucket, keys);
        }
    }

    fn location(&self) -> &Location {
        &self.location
    }
}

/// A prefix of shards to read back.
#[derive(Debug)]
pub struct S3Source {
    s3: S3,
    bucket: String,
    prefix: String,
    location: Location,
}

impl S3Source {
    /// The shards under `s3://bucket/prefix`.
    pub fn new(s3: S3, bucket: &str, prefix: &str) -> S3Source {
        S3Source {
            s3,
            bucket: bucket.into(),
            prefix: prefix.into(),
            location: Location::S3 {
                bucket: bucket.into(),
                key: prefix.into(),
            },
        }
    }
}

impl ShardSource for S3Source {
    fn list(&self) -> Result<Vec<(String, u64)>> {
        let mut files = self.s3.list_dir(&self.bucket, &self.prefix)?.files;
        files.sort();
        Ok(files)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.s3.get_all(&self.bucket, &join_key(&self.prefix, name))
    }

    fn location(&self) -> &Location {
        &self.location
    }
}

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
        let dir = dir_prefix(prefix);
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&dir)
            .delimiter("/")
            .into_paginator()
            .send();
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        while let Some(page) = self.block_on(pages.next()) {
            let page = page.map_err(|e| sdk_error(self, "ListObjectsV2", bucket, &dir, e))?;
            for o in page.contents() {
                let name = o
                    .key()
                    .unwrap_or_default()
                    .strip_prefix(&dir)
                    .unwrap_or_default();
                if !name.is_empty() {
                    files.push((name.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
            for p in page.common_prefixes() {
                let name = p
                    .prefix()
                    .unwrap_or_default()
                    .strip_prefix(&dir)
                    .unwrap_or_default();
                dirs.push(name.trim_end_matches('/').to_string());
            }
        }
        Ok(Listing { files, dirs })
    }

    /// Every key under the "directory" `prefix`, at any depth.
    pub fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let dir = dir_prefix(prefix);
        let mut pages = self
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&dir)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = self.block_on(pages.next()) {
            let page = page.map_err(|e| sdk_error(self, "ListObjectsV2", bucket, &dir, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        Ok(keys)
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

    /// Server-side copies of `(from, to)` keys within `bucket`, several at a time.
    pub fn copy_keys(&self, bucket: &str, pairs: Vec<(String, String)>) -> Result<()> {
        let client = self.client().clone();
        let bucket = bucket.to_string();
        let s3 = self.clone();
        let copies = async move {
            let mut set = JoinSet::new();
            let mut pending = pairs.into_iter();
            loop {
                while set.len() < CONCURRENT_COPIES {
                    let Some((from, to)) = pending.next() else {
                        break;
                    };
                    let (client, bucket, s3) = (client.clone(), bucket.clone(), s3.clone());
                    set.spawn(async move {
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
        self.block_on(self.inner.runtime.handle().spawn(copies))
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
