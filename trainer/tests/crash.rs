//! Real kills (SIGKILL injected by strace at the Nth write, rename or unlink) at every step of
//! publishing the model and of checkpointing, and what a reader or a resumed run finds after.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{generated_shards, metrics, ok, trainer};

/// Whether `strace` can trace here (it needs ptrace: root or a permissive Yama scope). Skipped
/// locally without it; under CI (`CI` set) its absence is a failure.
fn strace_works() -> bool {
    let works = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace cannot trace here, and CI needs these tests"
        );
        eprintln!("skipped: strace cannot trace here");
    }
    works
}

/// Runs `trainer args..` in `cwd` under strace, SIGKILLed at the `n`th call (per thread) of the
/// system calls `calls`.
fn trainer_killed_at(cwd: &Path, calls: &str, n: u32, args: &[&str]) -> Output {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("trace={calls}"))
        .arg("-e")
        .arg(format!("inject={calls}:signal=SIGKILL:when={n}"))
        .arg(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("strace runs")
}

fn killed(out: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(9) || out.status.code() == Some(137)
}

/// The system calls a kill is injected at: every write, every rename and every unlink.
const FAULTS: [&str; 3] = [
    "write,pwrite64,writev",
    "rename,renameat,renameat2",
    "unlink,unlinkat",
];

/// A kill at any write, rename or unlink of a run that publishes a new model over an old one
/// leaves the old release or the new one, or weights without a card (not a release), and never
/// a card beside weights it was not written with.
#[test]
fn model_and_card_are_published_together() {
    if !strace_works() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 1_000, 12);
    let data = shards.to_str().unwrap();
    let run = |seed: &'static str| {
        vec![
            "--data",
            data,
            "--epochs",
            "1",
            "--seed",
            seed,
            "--attack-feature",
            "none",
            "--no-progress",
            "--metrics-out",
            "m.jsonl",
            "--save",
            "rel/model.safetensors",
        ]
    };
    let (model, card) = (
        dir.path().join("rel/model.safetensors"),
        dir.path().join("rel/model.json"),
    );
    let seed_of = |card: &[u8]| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(card).expect("a complete card");
        v["options"]["seed"]
            .as_u64()
            .expect("the card names its seed")
    };
    // The new release (seed 2), then the old one (seed 1) that every kill starts from.
    ok(&trainer(dir.path(), &run("2")));
    let new = (fs::read(&model).unwrap(), fs::read(&card).unwrap());
    ok(&trainer(dir.path(), &run("1")));
    let old = (fs::read(&model).unwrap(), fs::read(&card).unwrap());
    assert_ne!(old.0, new.0);

    let (mut kills, mut left_old, mut left_new, mut left_incomplete) = (0, 0, 0, 0);
    for calls in FAULTS {
        for n in 1.. {
            fs::write(&model, &old.0).unwrap();
            fs::write(&card, &old.1).unwrap();
            let out = trainer_killed_at(dir.path(), calls, n, &run("2"));
            let weights = fs::read(&model).ok();
            let text = fs::read(&card).ok();
            match &text {
                Some(c) => {
                    let want = if seed_of(c) == 1 { &old.0 } else { &new.0 };
                    assert!(
                        weights.as_ref() == Some(want),
                        "killed at {calls} #{n}: the card of seed {} beside other weights",
                        seed_of(c)
                    );
                    if seed_of(c) == 1 {
                        left_old += 1;
                    } else {
                        left_new += 1;
                    }
                }
                None => {
                    left_incomplete += 1;
                    let w = weights.expect("weights without a card are whole");
                    assert!(
                        w == old.0 || w == new.0,
                        "killed at {calls} #{n}: torn weights"
                    );
                }
            }
            assert_eq!(
                text.is_some(),
                trainer::export::is_complete(&model),
                "the reader's rule"
            );
            if !killed(&out) {
                ok(&out);
                assert_eq!(
                    seed_of(text.as_ref().unwrap()),
                    2,
                    "a finished run published"
                );
                break;
            }
            kills += 1;
        }
    }
    eprintln!(
        "{kills} kills: {left_old} left the old release, {left_new} the new one, \
         {left_incomplete} weights without a card"
    );
    assert!(
        kills >= 8 && left_old > 0 && left_new > 0 && left_incomplete > 0,
        "{kills} kills: {left_old} old, {left_new} new, {left_incomplete} without a card"
    );
}

/// A kill at any write (the epoch's line on stdout and in the metrics file among them) or
/// rename of a checkpointed run, then `--resume`: no epoch was printed or logged before its
/// checkpoint was written (issue 23 D: it was, so a resume trained a printed epoch again), and
/// every epoch's line is in the metrics file once.
#[test]
fn resume_after_a_kill_logs_each_epoch_once() {
    if !strace_works() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shards = generated_shards(dir.path(), 1_000, 13);
    let data = shards.to_str().unwrap();
    let args = |epochs: &'static str, resume: bool| {
        let mut a = vec![
            "--data",
            data,
            "--epochs",
            epochs,
            "--attack-feature",
            "none",
            "--no-progress",
            "--metrics-out",
            "m.jsonl",
            "--save",
            "model.safetensors",
            "--checkpoint-dir",
            "ck",
            "--seed",
            "7",
        ];
        if resume {
            a.push("--resume");
        }
        a
    };
    let epochs_done = |ck: &Path| -> Option<u64> {
        let text = fs::read_to_string(ck.join("checkpoint.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["epochs_done"].as_u64()
    };
    // The model of an uninterrupted 3-epoch run, which every killed-and-resumed run must end with
    // (seeded runs, so the two can be compared).
    let straight = [
        "--data",
        data,
        "--epochs",
        "3",
        "--attack-feature",
        "none",
        "--no-progress",
        "--metrics-out",
        "s.jsonl",
        "--save",
        "straight.safetensors",
        "--seed",
        "7",
    ];
    ok(&trainer(dir.path(), &straight));
    let want = fs::read(dir.path().join("straight.safetensors")).unwrap();
    let printed = |stdout: &[u8]| -> u64 {
        String::from_utf8_lossy(stdout)
            .lines()
            .filter(|l| l.starts_with("epoch "))
            .count() as u64
    };
    let mut kills = 0;
    let mut announced = 0;
    for calls in [FAULTS[0], FAULTS[1]] {
        for n in 1.. {
            let _ = fs::remove_dir_all(dir.path().join("ck"));
            let _ = fs::remove_file(dir.path().join("m.jsonl"));
            let out = trainer_killed_at(dir.path(), calls, n, &args("2", false));
            if !killed(&out) {
                ok(&out);
                break;
            }
            kills += 1;
            let before = fs::read_to_string(dir.path().join("m.jsonl")).unwrap_or_default();
            let logged = before.lines().count() as u64;
            let done = epochs_done(&dir.path().join("ck"));
            let shown = printed(&out.stdout);
            assert!(
                shown <= done.unwrap_or(0) && logged <= done.unwrap_or(0),
                "killed at {calls} #{n}: {shown} epoch(s) printed and {logged} logged, but \
                 {done:?} checkpointed"
            );
            announced += shown;
            if done.is_none() {
                let err = common::fails(&trainer(dir.path(), &args("3", true)));
                assert!(err.contains("checkpoint ck: --resume"), "{err}");
                ok(&trainer(dir.path(), &args("3", false)));
            } else {
                ok(&trainer(dir.path(), &args("3", true)));
            }
            let epochs: Vec<u64> = metrics(&dir.path().join("m.jsonl"))
                .iter()
                .map(|m| m["epoch"].as_u64().unwrap())
                .collect();
            assert_eq!(epochs, [1, 2, 3], "killed at {calls} #{n}, then resumed");
            // The checkpointed epochs keep the lines first written, byte for byte.
            let kept = logged as usize;
            let after = fs::read_to_string(dir.path().join("m.jsonl")).unwrap();
            assert_eq!(
                after.lines().take(kept).collect::<Vec<_>>(),
                before.lines().take(kept).collect::<Vec<_>>()
            );
            assert!(
                fs::read(dir.path().join("model.safetensors")).unwrap() == want,
                "killed at {calls} #{n}: the resumed model is the uninterrupted one"
            );
        }
    }
    eprintln!("{kills} kills, {announced} epoch lines printed before them");
    assert!(
        kills >= 8 && announced > 0,
        "{kills} kills, {announced} epochs printed: no kill fell after an epoch's line"
    );
}
