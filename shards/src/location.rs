//! `Location`: where input and shards live, a local (or NFS) path or `s3://bucket/prefix`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// A file, directory, object or prefix, parsed once at the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A local or NFS-mounted path.
    Local(PathBuf),
    /// An S3 object or prefix.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key or key prefix, without a leading `/` (may be empty).
        key: String,
    },
}

impl Location {
    /// Parses `s3://bucket/key` or a path.
    ///
    /// ```
    /// use shards::Location;
    /// assert_eq!(
    ///     Location::parse("s3://data/pums/shards/").unwrap(),
    ///     Location::S3 { bucket: "data".into(), key: "pums/shards".into() }
    /// );
    /// assert_eq!(Location::parse("out/shards").unwrap(), Location::Local("out/shards".into()));
    /// ```
    pub fn parse(s: &str) -> Result<Location> {
        if s.is_empty() {
            return Err(Error::Location(s.into(), "empty".into()));
        }
        match s.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::Location(s.into(), "no bucket name".into()));
                }
                Ok(Location::S3 {
                    bucket: bucket.to_string(),
                    key: key.trim_matches('/').to_string(),
                })
            }
            None if s.contains("://") => Err(Error::Location(
                s.into(),
                "only local paths and s3:// are supported".into(),
            )),
            None => Ok(Location::Local(normalize(s))),
        }
    }

    /// The location of `name` inside this directory or prefix.
    pub fn join(&self, name: &str) -> Location {
        match self {
            Location::Local(p) => Location::Local(p.join(name)),
            Location::S3 { bucket, key } if key.is_empty() => Location::S3 {
                bucket: bucket.clone(),
                key: name.to_string(),
            },
            Location::S3 { bucket, key } => Location::S3 {
                bucket: bucket.clone(),
                key: format!("{key}/{name}"),
            },
        }
    }

    /// Whether the name ends in `.gz` (gzip input).
    pub fn is_gzip(&self) -> bool {
        match self {
            Location::Local(p) => p.extension().is_some_and(|e| e == "gz"),
            Location::S3 { key, .. } => key.ends_with(".gz"),
        }
    }
}

/// `s` without `.` components, repeated or trailing separators, so that `./tr/base`,
/// `tr//base` and `tr/base/` name one location (`..` is kept: it may cross a symlink).
fn normalize(s: &str) -> PathBuf {
    let p: PathBuf = Path::new(s)
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    if p.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        p
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = Error;
    fn from_str(s: &str) -> Result<Location> {
        Location::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_join() {
        let s3 = Location::parse("s3://b").unwrap();
        assert_eq!(s3.join("x").to_string(), "s3://b/x");
        assert_eq!(
            Location::parse("s3://b/p/").unwrap().join("x").to_string(),
            "s3://b/p/x"
        );
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("hdfs://nn/x").is_err());
        assert!(Location::parse("").is_err());
        assert!(Location::parse("a/b.csv.gz").unwrap().is_gzip());
        let same = Location::parse("tr/base").unwrap();
        for s in ["./tr/base", "tr//base", "tr/base/", "./tr/./base"] {
            assert_eq!(Location::parse(s).unwrap(), same, "{s}");
        }
        assert_eq!(Location::parse(".").unwrap().to_string(), ".");
        assert_eq!(Location::parse("./").unwrap().to_string(), ".");
        assert_eq!(Location::parse("/a/../b").unwrap().to_string(), "/a/../b");
    }
}
