//! Writing the trainer's outputs so that a crash never leaves one half-written under its final
//! name (stage beside the target, rename; sync too for what is written once per run), and
//! checking before training that they can be written at all.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The staging name of `path`: `path` with `.tmp` appended, in the same directory (so the
/// rename that publishes it stays within one file system).
pub fn staging(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

/// Creates the parent directory of `path` when it has one.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` and syncs it to disk (the file is created or truncated).
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Syncs a file written by someone else (libtorch's safetensors writer) to disk.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Renames `from` to `to` (replacing it), naming `to` on failure.
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(to, e))
}

/// Syncs the directory holding `path`, so the renames into it survive a power cut (best effort:
/// some file systems cannot sync a directory).
pub fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to `path` atomically against a crash of this process (kill -9): staged under
/// [`staging`], then renamed into place. Not synced: after a power cut the file may hold the
/// previous version (or, on some file systems, nothing); see [`write_durable`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = staging(path);
    fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    rename(&tmp, path)
}

/// [`write_atomic`], and durable against a power cut too: the staged file is synced before the
/// rename and the directory after it. For files written once per run; the per-epoch
/// checkpoints use [`write_atomic`], because an fsync per epoch on a busy or network disk costs
/// more than the 10% of an epoch the happy path may lose.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = staging(path);
    write_synced(&tmp, bytes)?;
    rename(&tmp, path)?;
    sync_parent(path);
    Ok(())
}

/// Checks, before any work is spent, that the file `path` (given as `flag`) can be written: its
/// directory is created if missing and must accept a new file (its staging file is created and
/// removed), and `path` itself must not be a directory.
pub fn check_writable_file(flag: &str, path: &Path) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::Config(format!(
            "{flag} {}: {reason}",
            path.display()
        )))
    };
    if path.as_os_str().is_empty() {
        return refuse("an empty path".into());
    }
    if path.is_dir() {
        return refuse("is a directory (give a file name)".into());
    }
    if let Err(e) = create_parent(path) {
        return refuse(format!("cannot create its directory: {e}"));
    }
    let probe = staging(path);
    match File::create(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => refuse(format!("cannot be written: {e}")),
    }
}

/// Checks, before any work is spent, that the directory `dir` (given as `flag`) can be created
/// and written to.
pub fn check_writable_dir(flag: &str, dir: &Path) -> Result<()> {
    let refuse = |reason: String| Err(Error::Config(format!("{flag} {}: {reason}", dir.display())));
    if dir.exists() && !dir.is_dir() {
        return refuse("is not a directory".into());
    }
    if let Err(e) = fs::create_dir_all(dir) {
        return refuse(format!("cannot be created: {e}"));
    }
    let probe = dir.join(".write-probe.tmp");
    match File::create(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => refuse(format!("cannot be written to: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_staging_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_durable(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!staging(&p).exists());
    }

    #[test]
    fn writability_is_checked_without_leaving_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/model.safetensors");
        check_writable_file("--save", &p).unwrap();
        assert!(dir.path().join("sub").is_dir() && !p.exists() && !staging(&p).exists());
        let err = check_writable_file("--save", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--save") && err.contains("is a directory"),
            "{err}"
        );
        // A parent that is a file cannot be created.
        fs::write(dir.path().join("f"), b"").unwrap();
        let err = check_writable_file("--save", &dir.path().join("f/model.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--save") && err.contains("f/model"), "{err}");
        let err = check_writable_dir("--checkpoint-dir", &dir.path().join("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
        check_writable_dir("--checkpoint-dir", &dir.path().join("ck")).unwrap();
    }
}
