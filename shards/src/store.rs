//! Storage seams: an input to read by byte range, an output to write shards into and commit,
//! and a directory of shards to read back. Local (and NFS) paths are built in; S3 plugs in here.

use std::fmt::Debug;
use std::io::{Read, Write};

#[cfg(not(feature = "s3"))]
use crate::error::Error;
use crate::error::Result;
use crate::location::Location;
use crate::manifest::{Manifest, ShardInfo};
use crate::s3::S3Options;

/// An input file or object, read in byte ranges.
pub trait Input: Send + Sync + Debug {
    /// Its size in bytes.
    fn len(&self) -> Result<u64>;
    /// Whether it is empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// A reader from byte `start` to the end. `end_hint` is where the caller expects to stop
    /// reading (give or take a line), so remote stores can fetch just that range first.
    fn open_at(&self, start: u64, end_hint: u64) -> Result<Box<dyn Read + Send>>;
    /// The location, for messages.
    fn location(&self) -> &Location;
}

/// A destination for one output's shards, written under temporary names and committed at once.
pub trait Output: Send + Sync + Debug {
    /// Checks the destination (with `overwrite`, that what is there is an output this project
    /// wrote) and gets it ready for parts: locally it takes the output's lock and leaves the old
    /// output in place until the commit replaces it; on S3 it deletes the old output. Called
    /// once, by one process, before any part is written.
    fn prepare(&self, overwrite: bool) -> Result<()>;
    /// Starts writing the part named `name` (e.g. `part-00003`) under a temporary name.
    fn create_part(&self, name: &str) -> Result<Box<dyn PartWriter>>;
    /// Waits until every part this process finished through this output is stored, and
    /// returns the first failure, naming its object. A writer calls it before it reports its
    /// parts as written (the commit may run in another process). Local parts are stored when
    /// `finish` returns; S3 uploads them in the background, a bounded number at a time.
    fn sync_parts(&self) -> Result<()> {
        Ok(())
    }
    /// Publishes the finished parts, the manifest and `_SUCCESS` so that a reader sees the whole
    /// output or none of it: locally by one rename of the staged directory, on S3 with
    /// `_SUCCESS` written last.
    fn commit(&self, manifest: &Manifest) -> Result<()>;
    /// Removes whatever a failed run left under temporary names.
    fn abort(&self);
    /// The location, for messages.
    fn location(&self) -> &Location;
}

/// A part being written. Dropped without [`PartWriter::finish`], it leaves nothing behind.
pub trait PartWriter: Write + Send {
    /// Flushes and closes it; returns its name, size and checksum (`rows` left at 0).
    fn finish(self: Box<Self>) -> Result<ShardInfo>;
}

/// A directory or prefix of shards to read back.
pub trait ShardSource: Send + Sync + Debug {
    /// Names (relative to the location) and sizes of every object in it, sorted by name.
    fn list(&self) -> Result<Vec<(String, u64)>>;
    /// Reads the object `name` whole.
    fn read(&self, name: &str) -> Result<Vec<u8>>;
    /// Reads the object `name` whole into `buf`, replacing what it held, in its allocation
    /// where the source can (a loader reading many parts in turn then faults in one buffer's
    /// pages, not every part's).
    fn read_into(&self, name: &str, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.read(name)?;
        Ok(())
    }
    /// The location, for messages.
    fn location(&self) -> &Location;
}

/// Counts bytes and computes the CRC-32 of what passes through to `inner`.
#[derive(Debug)]
pub struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Checksummed<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Checksummed {
            inner,
            hasher: crc32fast::Hasher::new(),
            bytes: 0,
        }
    }
    /// Bytes written so far and their CRC-32.
    pub fn summary(&self) -> (u64, u32) {
        (self.bytes, self.hasher.clone().finalize())
    }
    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Opens an input location; an S3 one with the options `s3` (unused for local paths).
pub fn open_input(loc: &Location, s3: &S3Options) -> Result<Box<dyn Input>> {
    match loc {
        Location::Local(p) => Ok(Box::new(crate::local::LocalInput::open(p)?)),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => crate::s3::open_input(loc, s3),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(s3_unsupported(loc, s3)),
    }
}

/// The whole (decompressed, for `.gz`) content of an input as a stream from its first byte.
pub fn open_stream(input: &dyn Input) -> Result<Box<dyn Read + Send>> {
    open_stream_hinted(input, input.len()?)
}

/// Like [`open_stream`], for a caller that expects to read only about the first `end_hint`
/// (stored) bytes, e.g. for the header line: a remote store then fetches just those first, not
/// the whole object. Reading further still works.
pub fn open_stream_hinted(input: &dyn Input, end_hint: u64) -> Result<Box<dyn Read + Send>> {
    let raw = input.open_at(0, end_hint)?;
    Ok(if input.location().is_gzip() {
        Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 20, raw),
        ))
    } else {
        raw
    })
}

/// Checks that `input` does not lie inside `output` (replacing the output would delete it):
/// a local file under the output directory (symlinks resolved), or an object under the output
/// prefix of the same bucket.
///
/// ```
/// use shards::Location;
/// use shards::store::check_input_outside;
/// let out = Location::parse("s3://b/shards").unwrap();
/// assert!(check_input_outside(&Location::parse("s3://b/shards/part-00000").unwrap(), &out).is_err());
/// assert!(check_input_outside(&Location::parse("s3://b/shards2/x.csv").unwrap(), &out).is_ok());
/// assert!(check_input_outside(&Location::parse("s3://b/x.csv").unwrap(), &Location::parse("s3://b").unwrap()).is_err());
/// ```
pub fn check_input_outside(input: &Location, output: &Location) -> Result<()> {
    match (input, output) {
        (Location::Local(i), Location::Local(o)) => crate::local::check_input_outside(i, o),
        (
            Location::S3 {
                bucket: bi,
                key: ki,
            },
            Location::S3 {
                bucket: bo,
                key: ko,
            },
        ) if bi == bo && (ko.is_empty() || ki.starts_with(&format!("{ko}/"))) => {
            Err(crate::error::Error::OutputExists {
                path: output.to_string().into(),
                reason: format!(
                    "holds the input {input}; writing the output there would delete it (write \
                     elsewhere, then move the result)"
                ),
            })
        }
        _ => Ok(()),
    }
}

/// An output for a directory or prefix of shards (`s3`: as for [`open_input`]).
pub fn open_output(loc: &Location, s3: &S3Options) -> Result<Box<dyn Output>> {
    match loc {
        Location::Local(p) => Ok(Box::new(crate::local::LocalOutput::new(p.clone()))),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => crate::s3::open_output(loc, s3),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(s3_unsupported(loc, s3)),
    }
}

/// A source of shards to read back (`s3`: as for [`open_input`]).
pub fn open_source(loc: &Location, s3: &S3Options) -> Result<Box<dyn ShardSource>> {
    match loc {
        Location::Local(p) => Ok(Box::new(crate::local::LocalSource::new(p.clone()))),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => crate::s3::open_source(loc, s3),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(s3_unsupported(loc, s3)),
    }
}

/// Creates a single file or object (e.g. generated input), published atomically on `finish`
/// (`s3`: as for [`open_input`]).
pub fn create_file(loc: &Location, overwrite: bool, s3: &S3Options) -> Result<Box<dyn PartWriter>> {
    match loc {
        Location::Local(p) => Ok(Box::new(crate::local::LocalFile::create(p, overwrite)?)),
        #[cfg(feature = "s3")]
        Location::S3 { .. } => crate::s3::create_file(loc, overwrite, s3),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => Err(s3_unsupported(loc, s3)),
    }
}

#[cfg(not(feature = "s3"))]
fn s3_unsupported(loc: &Location, _: &S3Options) -> Error {
    Error::Unsupported(format!("{loc}: this build has no S3 support"))
}
