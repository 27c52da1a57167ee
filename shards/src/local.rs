//! Local and NFS storage: byte-range input, shard output staged and published by one rename,
//! shard listing.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fault;
use crate::location::Location;
use crate::manifest::{MANIFEST_NAME, Manifest, SUCCESS_NAME, ShardInfo, crc_hex};
use crate::store::{Checksummed, Input, Output, PartWriter, ShardSource};

/// The directory, inside an S3 output (and a local one of older versions), where parts are
/// written before the commit.
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
        let refuse =
            |kind, why: &str| Err(Error::io(path.display(), std::io::Error::new(kind, why)));
        if path.as_os_str() == "-" {
            return refuse(
                std::io::ErrorKind::Unsupported,
                "standard input cannot be the input: each worker reads its own byte range of \
                 a file (save the stream to a file first)",
            );
        }
        let meta = fs::metadata(path).map_err(|e| Error::io(path.display(), e))?;
        if meta.is_dir() {
            return refuse(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a file",
            );
        }
        if !meta.is_file() {
            return refuse(
                std::io::ErrorKind::Unsupported,
                "is not a regular file (a pipe, FIFO or device?): each worker reads its own \
                 byte range of a file (save the stream to a file first)",
            );
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

/// A local output directory of shards, staged beside the target and published by one rename.
///
/// For the output `dir/name`, process 0 holds the lock `dir/.name.lock` from
/// [`Output::prepare`] to the end of [`Output::commit`] (a second run is refused, naming the
/// first). Every process writes its parts into the staging directory `dir/.name.staging`; the
/// commit adds `_manifest.json` and `_SUCCESS` there, syncs it, and publishes it with one
/// rename (an atomic exchange when it replaces an older output), so a crash at any moment leaves
/// the old output or the new one, complete, at `dir/name`. Where the file system cannot
/// exchange (EINVAL), the old output is moved aside to `dir/.name.old` first; the next run
/// restores it if a crash came between the two renames.
#[derive(Debug)]
pub struct LocalOutput {
    dir: PathBuf,
    location: Location,
    lock: std::sync::Mutex<Option<OutputLock>>,
}

impl LocalOutput {
    /// The output at `dir` (nothing is touched until [`Output::prepare`]).
    pub fn new(dir: PathBuf) -> Self {
        LocalOutput {
            location: Location::Local(dir.clone()),
            dir,
            lock: std::sync::Mutex::new(None),
        }
    }

    /// `dir/.name.<suffix>`: the staging directory, the lock, the old output moved aside.
    fn beside(&self, suffix: &str) -> PathBuf {
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        parent_of(&self.dir).join(format!(".{name}.{suffix}"))
    }

    /// Where parts are written before the commit.
    pub fn staging(&self) -> PathBuf {
        self.beside("staging")
    }

    fn aside(&self) -> PathBuf {
        self.beside("old")
    }

    fn exists(&self, reason: impl Into<String>) -> Error {
        Error::OutputExists {
            path: self.dir.clone(),
            reason: reason.into(),
        }
    }

    /// Restores an output a crash left moved aside, and clears an interrupted run's staging.
    fn recover(&self) -> Result<()> {
        let aside = self.aside();
        if is_real_dir(&aside)? {
            if fs::symlink_metadata(&self.dir).is_err() {
                fault::point("restore the old output moved aside");
                fs::rename(&aside, &self.dir).map_err(|e| Error::io(aside.display(), e))?;
            } else {
                remove_output(&aside)?;
            }
        }
        let staging = self.staging();
        if is_real_dir(&staging)? {
            fs::remove_dir_all(&staging).map_err(|e| Error::io(staging.display(), e))?;
        }
        Ok(())
    }

    /// Checks what is at the target: nothing, an empty directory, or (with `overwrite`) an
    /// output this project wrote.
    fn check_target(&self, overwrite: bool) -> Result<()> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(self.dir.display(), e)),
        };
        if meta.file_type().is_symlink() {
            return Err(self.exists(
                "is a symbolic link; refusing to replace it (give the directory it points to)",
            ));
        }
        if !meta.is_dir() {
            return Err(self.exists("exists and is not a directory"));
        }
        let names = entries(&self.dir)?;
        if names.is_empty() {
            return Ok(());
        }
        if !overwrite {
            return Err(
                self.exists("output directory is not empty (use --overwrite to replace it)")
            );
        }
        check_ours(&self.dir, &names).map_err(|reason| self.exists(reason))
    }

    /// Moves the staged output to the target: one exchange, or one rename when there is no
    /// target; where exchange is unsupported, the old output is moved aside first.
    fn publish(&self, staging: &Path) -> Result<()> {
        let io = |p: &Path, e| Error::io(p.display(), e);
        if fs::symlink_metadata(&self.dir).is_err() {
            fault::point("publish: rename the staging directory to the target");
            fs::rename(staging, &self.dir).map_err(|e| io(&self.dir, e))?;
            fault::point("published");
            return Ok(());
        }
        fault::point("publish: exchange the staging directory and the old output");
        let exchanged = if fault::no_exchange() {
            Err(rustix::io::Errno::INVAL)
        } else {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                staging,
                rustix::fs::CWD,
                &self.dir,
                rustix::fs::RenameFlags::EXCHANGE,
            )
        };
        match exchanged {
            Ok(()) => {
                fault::point("published; the old output is in the staging directory");
                // `staging` now holds the old output.
                remove_output(staging)
            }
            Err(e)
                if e == rustix::io::Errno::INVAL
                    || e == rustix::io::Errno::NOSYS
                    || e == rustix::io::Errno::NOTSUP =>
            {
                let aside = self.aside();
                fs::rename(&self.dir, &aside).map_err(|e| io(&self.dir, e))?;
                fault::point("publish: old output moved aside");
                fs::rename(staging, &self.dir).map_err(|e| io(&self.dir, e))?;
                fault::point("published; the old output is aside");
                remove_output(&aside)
            }
            Err(e) => Err(io(&self.dir, e.into())),
        }
    }

    fn unlock(&self) {
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The parent directory of `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether `path` is a directory (not a symlink to one); a missing path is `false`.
fn is_real_dir(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(Error::OutputExists {
            path: path.to_path_buf(),
            reason: "is in the way of the output's staging (not a directory); remove it".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path.display(), e)),
    }
}

/// The names in `dir` and their types, sorted by name.
fn entries(dir: &Path) -> Result<Vec<(String, fs::FileType)>> {
    let io = |e| Error::io(dir.display(), e);
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        names.push((
            e.file_name().to_string_lossy().into_owned(),
            e.file_type().map_err(io)?,
        ));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(names)
}

/// Whether `name` is a part file's name as this project and Hadoop write them:
/// `part-NNNNN`, `part-r-NNNNN` or `part-m-NNNNN`.
pub fn is_part_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("part-") else {
        return false;
    };
    let digits = rest
        .strip_prefix("r-")
        .or_else(|| rest.strip_prefix("m-"))
        .unwrap_or(rest);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `name` is something a shard output holds (and `--overwrite` may delete): part
/// files, the manifest, `_SUCCESS`, and the temporaries of older versions.
pub(crate) fn is_output_entry(name: &str) -> bool {
    is_part_name(name)
        || name == MANIFEST_NAME
        || name == SUCCESS_NAME
        || name == TEMPORARY_DIR
        || name.starts_with(".tmp-")
}

/// Why an output holding `names` is not one this project wrote, if it is not: nothing but
/// output entries, and part files only beside a manifest or `_SUCCESS` (temporaries alone are
/// what a failed run left).
pub(crate) fn check_ours_names<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
) -> std::result::Result<(), String> {
    if let Some(foreign) = names.clone().find(|n| !is_output_entry(n)) {
        return Err(format!(
            "holds '{foreign}', which is not part of a shard output; refusing to overwrite it"
        ));
    }
    let parts = names.clone().any(is_part_name);
    if parts
        && !names
            .clone()
            .any(|n| n == MANIFEST_NAME || n == SUCCESS_NAME)
    {
        return Err(format!(
            "has no {MANIFEST_NAME} or {SUCCESS_NAME}, so it is not an output this project \
             wrote; refusing to overwrite it (remove it yourself if it is one)"
        ));
    }
    Ok(())
}

/// [`check_ours_names`] for a directory, where part files must also be plain files (never
/// symlinks or directories).
fn check_ours(dir: &Path, names: &[(String, fs::FileType)]) -> std::result::Result<(), String> {
    if let Some((n, _)) = names
        .iter()
        .find(|(n, t)| !(t.is_file() || (n == TEMPORARY_DIR && t.is_dir())))
    {
        return Err(format!(
            "holds '{}', which is not a plain file of a shard output; refusing to overwrite it",
            dir.join(n).display()
        ));
    }
    check_ours_names(names.iter().map(|(n, _)| n.as_str()))
}

/// Removes an output directory this project wrote: its output entries one by one (never
/// following a symlink), then the directory if that left it empty.
fn remove_output(dir: &Path) -> Result<()> {
    for (n, t) in entries(dir)? {
        if !is_output_entry(&n) {
            continue;
        }
        let p = dir.join(&n);
        let res = if t.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        res.map_err(|e| Error::io(p.display(), e))?;
        fault::point("removed a file of the old output");
    }
    let _ = fs::remove_dir(dir);
    Ok(())
}

/// Writes `bytes` to the new file `path` and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| Error::io(path.display(), e);
    let mut f = Limited::new(File::create(path).map_err(io)?);
    f.write_all(bytes).map_err(io)?;
    f.file.sync_all().map_err(io)
}

/// A file that fails a write which would take it past the process's file size limit
/// (`ulimit -f`, RLIMIT_FSIZE) with an error, where the kernel would kill the process with
/// SIGXFSZ and leave its temporaries behind.
#[derive(Debug)]
struct Limited {
    file: File,
    written: u64,
    limit: Option<u64>,
}

impl Limited {
    fn new(file: File) -> Limited {
        Limited {
            file,
            written: 0,
            limit: rustix::process::getrlimit(rustix::process::Resource::Fsize).current,
        }
    }
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(limit) = self.limit
            && self.written + buf.len() as u64 > limit
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "would grow past the file size limit of {limit} bytes (ulimit -f); raise \
                     it, or write more, smaller shards"
                ),
            ));
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Syncs a directory's entries (the renames into it) to disk.
fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(path.display(), e))
}

/// Checks that the local input `input` does not lie inside the local output `output`
/// (replacing the output would delete it). Paths that do not exist yet cannot overlap.
pub fn check_input_outside(input: &Path, output: &Path) -> Result<()> {
    let (Ok(i), Ok(o)) = (fs::canonicalize(input), fs::canonicalize(output)) else {
        return Ok(());
    };
    if i.starts_with(&o) {
        return Err(Error::OutputExists {
            path: output.to_path_buf(),
            reason: format!(
                "holds the input {}; writing the output there would delete it (write elsewhere, \
                 then move the result)",
                input.display()
            ),
        });
    }
    Ok(())
}

impl Output for LocalOutput {
    fn prepare(&self, overwrite: bool) -> Result<()> {
        if self.dir.file_name().is_none() {
            return Err(self.exists(
                "an output needs a name of its own (not `.`, `..` or `/`): it is staged beside \
                 its target and renamed into place",
            ));
        }
        let parent = parent_of(&self.dir);
        fs::create_dir_all(parent).map_err(|e| Error::io(parent.display(), e))?;
        let lock = OutputLock::acquire(&self.beside("lock"), &self.dir)?;
        self.recover()?;
        self.check_target(overwrite)?;
        let staging = self.staging();
        fs::create_dir(&staging).map_err(|e| Error::io(staging.display(), e))?;
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(lock);
        Ok(())
    }

    fn create_part(&self, name: &str) -> Result<Box<dyn PartWriter>> {
        // Written under a temporary name in the staging directory, renamed to its own name
        // there when finished, and published with the rest by `commit`.
        Ok(Box::new(LocalFile::create(
            &self.staging().join(name),
            true,
        )?))
    }

    fn commit(&self, manifest: &Manifest) -> Result<()> {
        let staging = self.staging();
        // Check every part first: a missing or short one fails the commit, which publishes
        // nothing.
        for shard in &manifest.shards {
            let from = staging.join(&shard.name);
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
        fault::point("commit: write the manifest");
        write_synced(&staging.join(MANIFEST_NAME), manifest.to_json().as_bytes())?;
        fault::point("commit: write _SUCCESS");
        // Empty: syncing the directory below makes it durable.
        File::create(staging.join(SUCCESS_NAME))
            .map_err(|e| Error::io(staging.join(SUCCESS_NAME).display(), e))?;
        fault::point("commit: sync the staging directory");
        sync_dir(&staging)?;
        self.publish(&staging)?;
        sync_dir(parent_of(&self.dir))?;
        self.unlock();
        Ok(())
    }

    fn abort(&self) {
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if lock.is_some() {
            let _ = fs::remove_dir_all(self.staging());
        }
        lock.take();
    }

    fn location(&self) -> &Location {
        &self.location
    }
}

/// An exclusive lock on an output, held by the run that writes it. The lock file says who
/// holds it, so a second run can name the first.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    /// Takes the lock file `path` for the output `output`, or fails naming the run that holds it.
    pub fn acquire(path: &Path, output: &Path) -> Result<OutputLock> {
        use std::os::unix::fs::MetadataExt;
        let io = |e| Error::io(path.display(), e);
        loop {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    return Err(Error::OutputBusy {
                        path: output.to_path_buf(),
                        holder: describe_holder(holder.trim()),
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            // The run before us may have removed the file after we opened it: then this lock
            // is on a file nobody else will see; take the new one.
            let ours = file.metadata().map_err(io)?;
            match fs::metadata(path) {
                Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => {}
                _ => continue,
            }
            let since = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            file.set_len(0).map_err(io)?;
            writeln!(file, "{} {} {}", std::process::id(), since, host.trim()).map_err(io)?;
            return Ok(OutputLock {
                path: path.to_path_buf(),
                _file: file,
            });
        }
    }
}

/// "process 123 on host, started 5 s ago" from the lock file's `pid since host`.
fn describe_holder(line: &str) -> String {
    let mut it = line.split_whitespace();
    let (Some(pid), Some(since)) = (it.next(), it.next().and_then(|s| s.parse::<u64>().ok()))
    else {
        return "another run".into();
    };
    let host = it.next().unwrap_or("this machine");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "process {pid} on {host}, started {} s ago",
        now.saturating_sub(since)
    )
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked: a run that opened the old file sees it is gone.
        let _ = fs::remove_file(&self.path);
    }
}

/// A single file written under a temporary name and renamed into place by `finish`.
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<Checksummed<BufWriter<Limited>>>,
}

impl LocalFile {
    /// Starts writing `path`; an existing file is an error unless `overwrite`.
    pub fn create(path: &Path, overwrite: bool) -> Result<Self> {
        let exists = |reason: &str| Error::OutputExists {
            path: path.to_path_buf(),
            reason: reason.into(),
        };
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(exists(
                    "is a symbolic link; refusing to replace it (give the file it points to)",
                ));
            }
            Ok(m) if !m.is_file() => {
                return Err(exists(
                    "is not a regular file (a directory, FIFO or device); refusing to replace it",
                ));
            }
            Ok(_) if !overwrite => {
                return Err(exists("already exists (use --overwrite to replace it)"));
            }
            _ => {}
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
            writer: Some(Checksummed::new(BufWriter::with_capacity(
                1 << 20,
                Limited::new(file),
            ))),
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
            .map_err(|e| io(e.into_error()))?
            .file;
        file.sync_all().map_err(io)?;
        fault::point("rename a finished file into place");
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
    fn read_into(&self, name: &str, buf: &mut Vec<u8>) -> Result<()> {
        let p = self.dir.join(name);
        buf.clear();
        File::open(&p)
            .and_then(|mut f| f.read_to_end(buf))
            .map_err(|e| Error::io(p.display(), e))?;
        Ok(())
    }
    fn location(&self) -> &Location {
        &self.location
    }
}
