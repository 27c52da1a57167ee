//! A prefix of shards on S3: written under `<prefix>/_temporary/` and published by
//! [`Output::commit`] (server-side copy of every part to its final key, then `_manifest.json`,
//! then `_SUCCESS`). The object operations it uses are in `objects.rs`; reading the shards back
//! is `source.rs`.
//!
//! Parts go up while the workers keep writing (see `upload.rs`): `sync_parts`, which every
//! worker calls before reporting its parts to the committing process, waits for them, so a
//! failed upload fails the run naming its object before anything is published; `commit`
//! checks besides that every part of the manifest is there with its size.
//!
//! `_SUCCESS` is the commit point, which [`crate::Dataset`] requires. Why copy on commit rather
//! than uploading straight to the final keys: the parts of a run in progress, or of one that
//! died, never appear under the output prefix, so even a reader that does not check `_SUCCESS`
//! can never pick up a half-written dataset, and the commit works across processes (any process can
//! commit parts that others uploaded). The price is one server-side CopyObject per part (no
//! data passes through the client; [`super::S3Options::concurrency`] run at once) and one batched delete.
#![cfg(feature = "s3")]

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::Arc;

use super::error::s3_io;
use super::objects::Listing;
use super::upload::{Pending, Upload};
use super::{S3, join_key};
use crate::error::{Error, Result};
use crate::local::{TEMPORARY_DIR, check_ours_names};
use crate::location::Location;
use crate::manifest::{MANIFEST_NAME, Manifest, SUCCESS_NAME};
use crate::store::{Output, PartWriter};

/// CopyObject's limit; larger parts would need a multipart copy.
const MAX_COPY: u64 = 5 << 30;

/// A shard output under an S3 prefix.
#[derive(Debug)]
pub struct S3Output {
    s3: S3,
    bucket: String,
    prefix: String,
    location: Location,
    /// Parts whose `finish` returned with their PUT still in flight.
    pending: Arc<Pending>,
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
            pending: Arc::default(),
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
        let mut up = Box::new(Upload::new(self.s3.clone(), &self.bucket, &key, name, None));
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
            Some(Arc::clone(&self.pending)),
        )))
    }

    fn sync_parts(&self) -> Result<()> {
        self.pending.wait(&self.s3, &self.bucket)
    }

    fn commit(&self, manifest: &Manifest) -> Result<()> {
        // The parts this process wrote, in case the caller did not wait for them.
        self.sync_parts()?;
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
        // Nothing may land after the cleanup.
        let _ = self.pending.wait(&self.s3, &self.bucket);
        if let Ok(keys) = self.s3.list_all(&self.bucket, &self.temporary()) {
            let _ = self.s3.delete_keys(&self.bucket, keys);
        }
    }

    fn location(&self) -> &Location {
        &self.location
    }
}
