//! A prefix of shards read back (what [`crate::Dataset`] reads through).
#![cfg(feature = "s3")]

use super::{S3, join_key};
use crate::error::Result;
use crate::location::Location;
use crate::store::ShardSource;

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
