//! Local and NFS storage: byte-range input, shard output committed by rename, shard listing.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::location::Location;
use crate::manifest::{MANIFEST_NAME, Manifest, SUCCESS_NAME, ShardInfo, crc_hex};
use crate::store::{Checksummed, Input, Output, PartWriter, ShardSource};

/// The directory, inside an output, where parts are written before the commit.
pub const TEMPORARY_DIR: &str = "_temporary";

/// A local input file.
#[derive(Debug)]
pub struct LocalInput {
    path: PathBuf,
    location: Location,
    len: u64,
}

impl LocalInput {
    /// Opens `path` and reads its size.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).map_err(|e| Error::io(path.display(), e))?;
        if meta.is_dir() {
            return Err(Error::io(
                path.display(),
                std::io::Error::new(
                    std::io::ErrorKind::IsADirectory,
                    "is a directory, not a file",
                ),
            ));
        }
        Ok(LocalInput {
            path: path.to_path_buf(),
            location: Location::Local(path.into()),
            len: meta.len(),
        })
    }
}

impl Input for LocalInput {
    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }
    fn open_at(&self, start: u64, _end_hint: u64) -> Result<Box<dyn Read + Send>> {
        let mut f = File::open(&self.path).map_err(|e| Error::io(self.path.display(), e))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(self.path.display(), e))?;
        Ok(Box::new(f))
    }
    fn location(&self) -> &Location {
        &self.location
    }
}

/// A local output directory of shards.
#[derive(Debug)]
pub struct LocalOutput {
    dir: PathBuf,
    location: Location,
}

impl LocalOutput {
    /// The output at `dir` (nothing is touched until [`Output::prepare`]).
    pub fn new(dir: PathBuf) -> Self {
        LocalOutput {
            location: Location::Local(dir.clone()),
            dir,
        }
    }

    fn temporary(&self) -> PathBuf {
        self.dir.join(TEMPORARY_DIR)
    }
}

/// Whether `name` is something a shard output holds (and `--overwrite` may delete).
pub(crate) fn is_output_entry(name: &str) -> bool {
    name.starts_with("part-")
        || name == MANIFEST_NAME
        || name == SUCCESS_NAME
        || name == TEMPORARY_DIR
        || name.starts_with(".tmp-")
}

impl Output for LocalOutput {
    fn prepare(&self, overwrite: bool) -> Result<()> {
        let io = |e| Error::io(self.dir.display(), e);
        match fs::read_dir(&self.dir) {
            Ok(entries) => {
                let mut names = Vec::new();
                for e in entries {
                    names.push(e.map_err(io)?.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                if !names.is_empty() && !overwrite {
                    return Err(Error::OutputExists {
                        path: self.dir.clone(),
                        reason: "output directory is not empty (use --overwrite to replace it)"
                            .into(),
                    });
                }
                if let Some(foreign) = names.iter().find(|n| !is_output_entry(n)) {
                    return Err(Error::OutputExists {
                        path: self.dir.clone(),
                        reason: format!(
                            "holds '{foreign}', which is not part of a shard output; refusing to overwrite it"
                        ),
                    });
                }
                // Unpublish first, so a crash in between never leaves a stale output looking complete.
                let success = self.dir.join(SUCCESS_NAME);
                if success.exists() {
                    fs::remove_file(&success).map_err(io)?;
                }
                for n in names.iter().filter(|n| *n != SUCCESS_NAME) {
                    let p = self.dir.join(n);
                    let res = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                    res.map_err(|e| Error::io(p.display(), e))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(Error::OutputExists {
                    path: self.dir.clone(),
                    reason: "exists and is not a directory".into(),
                });
            }
            Err(e) => return Err(io(e)),
        }
        fs::create_dir_all(self.temporary()).map_err(io)
    }

    fn create_part(&self, name: &str) -> Result<Box<dyn PartWriter>> {
        // Written under a temporary name inside `_temporary/`, renamed to `_temporary/<name>`
        // when finished, and published by `commit`.
        Ok(Box::new(LocalFile::create(
            &self.temporary().join(name),
            true,
        )?))
    }

    fn commit(&self, manifest: &Manifest) -> Result<()> {
        let tmp = self.temporary();
        // Check every part first, so a missing or short one fails the commit before any part
        // appears under its final name.
        for shard in &manifest.shards {
            let from = tmp.join(&shard.name);
            let len = fs::metadata(&from)
                .map_err(|e| Error::io(from.display(), e))?
                .len();
            if len != shard.bytes {
                return Err(Error::ChecksumMismatch {
                    path: from.display().to_string(),
                    what: "bytes",
                    expected: shard.bytes.to_string(),
                    actual: len.to_string(),
                });
            }
        }
        let mut published: Vec<&str> = Vec::new();
        for shard in &manifest.shards {
            let from = tmp.join(&shard.name);
            if let Err(e) = fs::rename(&from, self.dir.join(&shard.name)) {
                // Put back what was published, so a failed commit leaves no part in place.
                for name in published {
                    let _ = fs::rename(self.dir.join(name), tmp.join(name));
                }
                return Err(Error::io(from.display(), e));
            }
            published.push(&shard.name);
        }
        write_atomically(&self.dir.join(MANIFEST_NAME), manifest.to_json().as_bytes())?;
        let _ = fs::remove_dir_all(&tmp);
        write_atomically(&self.dir.join(SUCCESS_NAME), b"")
    }

    fn abort(&self) {
        let _ = fs::remove_dir_all(self.temporary());
    }

    fn location(&self) -> &Location {
        &self.location
    }
}

/// Writes `bytes` to `path` through a temporary name in the same directory and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = LocalFile::create(path, true)?;
    f.write_all(bytes)
        .map_err(|e| Error::io(path.display(), e))?;
    Box::new(f).finish().map(|_| ())
}

/// A single file written under a temporary name and renamed into place by `finish`.
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<Checksummed<BufWriter<File>>>,
}

impl LocalFile {
    /// Starts writing `path`; an existing file is an error unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        if !overwrite && path.exists() {
            return Err(Error::OutputExists {
                path: path.to_path_buf(),
                reason: "already exists (use --overwrite to replace it)".into(),
            });
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(tmp.display(), e))?;
        Ok(LocalFile {
            path: path.to_path_buf(),
            tmp,
            writer: Some(Checksummed::new(BufWriter::with_capacity(1 << 20, file))),
        })
    }
}

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer
            .as_mut()
            .expect("written before finish")
            .write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer
            .as_mut()
            .expect("written before finish")
            .write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.as_mut().expect("flushed before finish").flush()
    }
}

impl PartWriter for LocalFile {
    fn finish(mut self: Box<Self>) -> Result<ShardInfo> {
        let mut w = self.writer.take().expect("finish is called once");
        let (bytes, crc) = w.summary();
        let io = |e| Error::io(self.tmp.display(), e);
        w.flush().map_err(io)?;
        let file = w
            .into_inner()
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(self.path.display(), e))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ShardInfo {
            name,
            rows: 0,
            bytes,
            crc32: crc_hex(crc),
        })
    }
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A local directory of shards.
#[derive(Debug)]
pub struct LocalSource {
    dir: PathBuf,
    location: Location,
}

impl LocalSource {
    /// The shards in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        LocalSource {
            location: Location::Local(dir.clone()),
            dir,
        }
    }
}

impl ShardSource for LocalSource {
    fn list(&self) -> Result<Vec<(String, u64)>> {
        let io = |e| Error::io(self.dir.display(), e);
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let meta = entry.metadata().map_err(io)?;
            if meta.is_file() {
                out.push((entry.file_name().to_string_lossy().into_owned(), meta.len()));
            }
        }
        out.sort();
        Ok(out)
    }
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.dir.join(name);
        fs::read(&p).map_err(|e| Error::io(p.display(), e))
    }
    fn location(&self) -> &Location {
        &self.location
    }
}
