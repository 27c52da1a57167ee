//! The commit promise where it breaks: `pipeline run` killed (SIGKILL) at every write and
//! rename of the commit, a full disk, a second run on the same output, an input inside the
//! output. Each time the output is the old one or the new one, complete, never a mix.
//!
//! The crash points come from `shards::fault` (the `fault-injection` feature, on in this
//! crate's test builds only): `FASTDP_CRASH_AT=N` kills the process at the N-th point.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shards::{Dataset, Location};

/// Every file under `dir` (relative name -> bytes); `None` when `dir` does not exist.
type Snapshot = Option<BTreeMap<String, Vec<u8>>>;

fn snapshot(dir: &Path) -> Snapshot {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut out = BTreeMap::new();
    for e in entries {
        let e = e.unwrap();
        assert!(
            e.file_type().unwrap().is_file(),
            "{}: only files in an output",
            e.path().display()
        );
        out.insert(
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        );
    }
    Some(out)
}

fn restore(dir: &Path, snap: &Snapshot) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(files) = snap {
        std::fs::create_dir(dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

fn pipeline(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    c.current_dir(dir)
        .env_remove("FASTDP_CRASH_AT")
        .env_remove("FASTDP_NO_EXCHANGE");
    c
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn generate(dir: &Path, name: &str, rows: &str, seed: &str) {
    check(
        &pipeline(dir)
            .args(["generate", "--rows", rows, "--seed", seed, "--output", name])
            .output()
            .unwrap(),
        "generate",
    );
}

/// `pipeline run --input INPUT --output out` with the options every run here shares.
fn run(dir: &Path, input: &str, extra: &[&str]) -> Command {
    let mut c = pipeline(dir);
    c.args(["run", "--quiet", "--shards", "4", "--threads", "1"])
        .args(["--input", input, "--output", "out"])
        .args(extra);
    c
}

/// The names beside the output (the working directory), other than the inputs.
fn beside(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".csv"))
        .collect();
    v.sort();
    v
}

/// Kills `run --input new.csv --output out --overwrite` at each crash point in turn, over an
/// old output `old` (or none), and checks after each kill that `out` is the old output or the
/// new one, and that the next run cleans up and publishes the new one.
fn kill_at_every_step(move_aside: bool, old: &Snapshot) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "old.csv", "400", "1");
    generate(dir, "new.csv", "600", "2");
    check(
        &run(dir, "new.csv", &["--overwrite"]).output().unwrap(),
        "new output",
    );
    let new = snapshot(&dir.join("out"));
    assert!(new.is_some());
    let out = dir.join("out");
    for n in 1..500 {
        restore(&out, old);
        let mut cmd = run(dir, "new.csv", &["--overwrite"]);
        cmd.env("FASTDP_CRASH_AT", n.to_string());
        if move_aside {
            cmd.env("FASTDP_NO_EXCHANGE", "1");
        }
        let o = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            assert_eq!(snapshot(&out), new, "the run that was not killed");
            assert_eq!(beside(dir), ["out"], "nothing left beside the output");
            assert!(n > 5, "only {n} crash points were reached");
            return n - 1;
        }
        assert_eq!(o.status.signal(), Some(9), "crash point {n}: {stderr}");
        assert!(stderr.contains("fault: killed at crash point"), "{stderr}");
        let point = stderr.lines().last().unwrap_or_default().to_string();
        let after = snapshot(&out);
        if after.is_none() && move_aside && old.is_some() {
            // Killed between moving the old output aside and renaming the new one in: the old
            // one is complete beside it, and the next run puts it back before anything else.
            let o = pipeline(dir)
                .args(["run", "--quiet", "--input", "old.csv", "--output", "out"])
                .output()
                .unwrap();
            assert!(!o.status.success());
            assert_eq!(&snapshot(&out), old, "{point}: restored by the next run");
        } else {
            assert!(
                after == *old || after == new,
                "{point}: the output is neither the old one nor the new one: {:?}",
                after.as_ref().map(|f| f.keys().collect::<Vec<_>>())
            );
        }
        if after.is_some() {
            // Whatever is there is complete: the reader takes it.
            Dataset::open(&Location::Local(out.clone()), &shards::S3Options::default())
                .and_then(|d| d.load())
                .unwrap_or_else(|e| panic!("{point}: {e}"));
        }
        // The next run finds the leftovers of the killed one, clears them, and publishes.
        check(
            &run(dir, "new.csv", &["--overwrite"]).output().unwrap(),
            &format!("the run after {point}"),
        );
        assert_eq!(snapshot(&out), new, "{point}: the run after it");
        assert_eq!(beside(dir), ["out"], "{point}: leftovers beside the output");
    }
    panic!("the run never got past its crash points");
}

/// The old output, written by a run of `old.csv` (the same as `kill_at_every_step` makes).
fn old_output() -> Snapshot {
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path(), "old.csv", "400", "1");
    check(&run(tmp.path(), "old.csv", &[]).output().unwrap(), "old");
    snapshot(&tmp.path().join("out"))
}

#[test]
fn a_kill_at_any_step_of_an_overwrite_leaves_the_old_output_or_the_new_one() {
    let points = kill_at_every_step(false, &old_output());
    eprintln!("{points} crash points");
}

#[test]
fn a_kill_at_any_step_of_a_first_run_leaves_no_output_or_the_new_one() {
    kill_at_every_step(false, &None);
}

/// Where the file system cannot exchange two directories, the old output is moved aside for a
/// moment; a kill then leaves it beside the target, and the next run puts it back.
#[test]
fn a_kill_at_any_step_without_exchange_is_recovered_by_the_next_run() {
    kill_at_every_step(true, &old_output());
}

/// A small file system of its own (tmpfs), or `None` when this machine does not allow mounting
/// one (not root, or in a container without the capability).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk fails the run with a message and leaves the old output as it was, with no
/// temporaries.
#[test]
fn a_full_disk_leaves_the_old_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "small.csv", "200", "1");
    generate(dir, "big.csv", "40000", "2");
    let disk = dir.join("disk");
    let Some(_mounted) = Tmpfs::mount(&disk, "256k") else {
        eprintln!("skipped: cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)");
        return;
    };
    let run_on_disk = |input: &str, overwrite: bool| {
        let mut c = pipeline(dir);
        c.args(["run", "--quiet", "--shards", "4", "--input", input])
            .args(["--output", "disk/out"]);
        if overwrite {
            c.arg("--overwrite");
        }
        c.output().unwrap()
    };
    check(&run_on_disk("small.csv", false), "small output");
    let old = snapshot(&disk.join("out"));
    let o = run_on_disk("big.csv", true);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the big output fit in 256 KiB?");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(snapshot(&disk.join("out")), old, "{err}");
    let mut left: Vec<_> = std::fs::read_dir(&disk)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["out"], "temporaries left after ENOSPC");
}

/// Two runs writing one output: the second is refused, naming the first.
#[test]
fn a_second_run_on_one_output_names_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "in.csv", "100", "1");
    // This test process holds the lock, as a run in progress would.
    let lock =
        shards::local::OutputLock::acquire(&dir.join(".out.lock"), &dir.join("out")).unwrap();
    let o = run(dir, "in.csv", &[]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("another run is writing")
            && err.contains(&format!("process {}", std::process::id())),
        "{err}"
    );
    assert!(!dir.join("out").exists());
    drop(lock);
    check(&run(dir, "in.csv", &[]).output().unwrap(), "after the lock");
}

/// `--overwrite` with the input inside the output is refused, and both survive.
#[test]
fn an_input_inside_the_output_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("d")).unwrap();
    generate(dir, "d/part-input.csv", "100", "1");
    let o = pipeline(dir)
        .args(["run", "--quiet", "--input", "d/part-input.csv"])
        .args(["--output", "d", "--overwrite"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("holds the input"), "{err}");
    assert!(dir.join("d/part-input.csv").exists());

    // Re-sharding an output in place: its part is the input.
    check(
        &run(dir, "d/part-input.csv", &[]).output().unwrap(),
        "shards",
    );
    let before = snapshot(&dir.join("out"));
    let o = run(dir, "out/part-00000", &["--overwrite"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds the input"));
    assert_eq!(snapshot(&dir.join("out")), before);
}

/// A run that keeps no row is an error unless asked for, and writes nothing.
#[test]
fn keeping_no_row_is_an_error_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("in.csv"), "a,b,employed\n1,2,7\nx,1,0\n").unwrap();
    let o = run(dir, "in.csv", &[]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("no row was kept") && err.contains("label_not_binary 1"),
        "{err}"
    );
    assert_eq!(beside(dir), Vec::<String>::new(), "nothing written");
    check(
        &run(dir, "in.csv", &["--allow-empty"]).output().unwrap(),
        "--allow-empty",
    );
    assert!(dir.join("out/_SUCCESS").exists());
}

/// A file size limit (`ulimit -f`) below a shard's size: an error naming it, where the kernel
/// would kill the run with SIGXFSZ, and no temporaries left.
#[test]
fn a_file_size_limit_is_an_error_with_nothing_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "in.csv", "5000", "1");
    let o = Command::new("bash")
        .current_dir(dir)
        .arg("-c")
        .arg(format!(
            "ulimit -f 16 && exec {} run --quiet --shards 1 --input in.csv --output out",
            env!("CARGO_BIN_EXE_pipeline")
        ))
        .env_remove("FASTDP_CRASH_AT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("file size limit of 16384 bytes"), "{err}");
    assert_eq!(beside(dir), Vec::<String>::new(), "left behind");
}
