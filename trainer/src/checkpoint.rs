//! Per-epoch checkpoints: parameters, optimizer state and the steps taken, so a rerun with
//! `--resume` continues where the last complete epoch ended and its privacy budget keeps
//! counting from there, never from zero.
//!
//! A checkpoint is `epoch-NNNN.safetensors` plus `checkpoint.json`, which names it and is
//! renamed into place last: a crash mid-write leaves the previous checkpoint intact.
//!
//! A checkpoint is read as untrusted: its tensors file must be the one its epoch count names,
//! in its own directory (never a path elsewhere, to load or to delete), and its epochs, steps
//! and metrics must agree with each other ([`CheckpointMeta::check`]); the resuming run checks
//! the steps against its own epoch length and epsilon, and the metrics file
//! (`train::resume`).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::features::Standardizer;
use crate::mechanism::held_out::HeldOutRelease;
use crate::mechanism::quantiles::ReleasedBounds;
use crate::metrics::EpochMetrics;
use crate::publish;
use crate::{Error, Result};

const META: &str = "checkpoint.json";

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Epochs completed.
    pub epochs_done: u32,
    /// Steps taken in all (what the accountant counts).
    pub steps: u64,
    /// The noise multiplier the run uses (calibrated once, at the start of the first run).
    pub noise_multiplier: Option<f64>,
    /// The options that must not change across a resume.
    pub fingerprint: serde_json::Value,
    /// The file holding the tensors.
    pub tensors: String,
    /// The metrics of every completed epoch.
    pub metrics: Vec<EpochMetrics>,
    /// The standardized columns' noisy statistics, released once before the first epoch: a
    /// resumed run uses these rather than releasing (and spending) them again.
    #[serde(default)]
    pub standardizer: Option<Standardizer>,
    /// The held-out accuracy's release, once made (after the run's last epoch): a resumed run
    /// at the same steps uses it rather than releasing (and spending) it again.
    #[serde(default)]
    pub test_release: Option<HeldOutRelease>,
    /// Held-out releases made so far by this run and the runs it continues (each counts
    /// towards the budget).
    #[serde(default)]
    pub test_releases: u32,
    /// The DP quantile bounds of the columns without public ones, released once before the
    /// first epoch: a resumed run uses these rather than releasing them again.
    #[serde(default)]
    pub bounds: Option<Vec<ReleasedBounds>>,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// Named tensors: `params` and the optimizer's state.
    pub tensors: Vec<(String, Tensor)>,
}

impl Checkpoint {
    /// The tensor named `name`.
    pub fn tensor(&self, dir: &Path, name: &str) -> Result<&Tensor> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| bad(dir, format!("no tensor '{name}'")))
    }
}

/// The tensors file of a checkpoint after `epochs_done` epochs (a name in its directory).
fn tensors_name(epochs_done: u32) -> String {
    format!("epoch-{epochs_done:04}.safetensors")
}

/// Whether `name` is a tensors file this module writes: `epoch-NNNN.safetensors`, a bare name.
fn is_tensors_name(name: &str) -> bool {
    name.strip_prefix("epoch-")
        .and_then(|n| n.strip_suffix(".safetensors"))
        .is_some_and(|n| n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

impl CheckpointMeta {
    /// Checks the metadata against itself: the tensors file is the one its epoch count names
    /// (a bare name, so it is looked for in the checkpoint's own directory), and there is one
    /// metrics line per epoch done, numbered in order, with steps that never decrease and end
    /// at the checkpoint's steps (so lowering `steps`, or an epoch, shows).
    pub fn check(&self) -> std::result::Result<(), String> {
        let want = tensors_name(self.epochs_done);
        if self.tensors != want {
            return Err(format!(
                "it names its tensors {:?}; after {} epochs they are {want:?}, beside it (a \
                 checkpoint names only its own file in its own directory)",
                self.tensors, self.epochs_done
            ));
        }
        if self.metrics.len() != self.epochs_done as usize {
            return Err(format!(
                "it says {} epochs are done but holds the metrics of {}",
                self.epochs_done,
                self.metrics.len()
            ));
        }
        let mut steps = 0;
        for (i, m) in self.metrics.iter().enumerate() {
            if m.epoch as usize != i + 1 || m.steps < steps {
                return Err(format!(
                    "its metrics line {} is epoch {} after {} steps, out of order",
                    i + 1,
                    m.epoch,
                    m.steps
                ));
            }
            steps = m.steps;
        }
        if steps != self.steps {
            return Err(format!(
                "it says {} steps were taken, but its last epoch ended after {steps}",
                self.steps
            ));
        }
        Ok(())
    }
}

fn bad(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// Whether `dir` holds a checkpoint.
pub fn exists(dir: &Path) -> bool {
    dir.join(META).is_file()
}

/// Checks that `dir` holds a checkpoint to continue (`--resume`): a missing, mistyped or empty
/// directory is an error naming it, never a silent start from epoch 1 with the budget at zero.
pub fn check_resumable(dir: &Path) -> Result<()> {
    let reason = if !dir.exists() {
        "--resume: no such directory, so nothing to resume (check the path, or drop --resume to \
         start a new run)"
    } else if !dir.is_dir() {
        "--resume: not a directory"
    } else if !exists(dir) {
        "--resume: it holds no checkpoint (no checkpoint.json: no epoch was completed there); \
         check the path, or drop --resume to start a new run"
    } else {
        return Ok(());
    };
    Err(bad(dir, reason))
}

/// Writes a checkpoint into `dir` (created if missing) and removes the previous one's tensors.
pub fn save(dir: &Path, meta: &CheckpointMeta, tensors: &[(String, &Tensor)]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let previous = load_meta(dir).ok().map(|m| m.tensors);
    let file = tensors_name(meta.epochs_done);
    let tmp = dir.join(format!("{file}.tmp"));
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&cpu, &tmp)?;
    publish::rename(&tmp, &dir.join(&file))?;
    let meta = CheckpointMeta {
        tensors: file.clone(),
        ..meta.clone()
    };
    let json = serde_json::to_string_pretty(&meta).expect("checkpoint metadata serializes");
    publish::write_atomic(&dir.join(META), json.as_bytes())?;
    // Only a file this module wrote, beside the checkpoint, is ever removed.
    if let Some(old) = previous.filter(|old| *old != file && is_tensors_name(old)) {
        let _ = fs::remove_file(dir.join(old));
    }
    Ok(())
}

/// The options that differ between `saved` and `ours`, as `key: saved vs ours` (nested keys
/// joined with dots), so a refused resume says what changed.
pub fn differences(saved: &serde_json::Value, ours: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    let none = serde_json::Value::Null;
                    walk(
                        &sub,
                        x.get(k).unwrap_or(&none),
                        y.get(k).unwrap_or(&none),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{path}: {a} in the checkpoint, {b} now")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", saved, ours, &mut out);
    out
}

fn load_meta(dir: &Path) -> Result<CheckpointMeta> {
    let path = dir.join(META);
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| bad(dir, format!("{META}: {e}")))
}

/// Loads the checkpoint in `dir`, checking it was written by a run with `fingerprint`.
pub fn load(dir: &Path, fingerprint: &serde_json::Value) -> Result<Checkpoint> {
    let meta = load_meta(dir)?;
    if meta.fingerprint != *fingerprint {
        return Err(bad(
            dir,
            format!(
                "written by a run with other options ({}); resume with the same options, or \
                 choose another directory",
                differences(&meta.fingerprint, fingerprint).join("; ")
            ),
        ));
    }
    meta.check()
        .map_err(|m| bad(dir, format!("{META} does not hold together: {m}")))?;
    let tensors = Tensor::read_safetensors(dir.join(&meta.tensors))
        .map_err(|e| bad(dir, format!("{}: {e}", meta.tensors)))?;
    Ok(Checkpoint { meta, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(epochs_done: u32) -> CheckpointMeta {
        CheckpointMeta {
            epochs_done,
            steps: 10 * u64::from(epochs_done),
            noise_multiplier: Some(1.1),
            fingerprint: serde_json::json!({"lr": 0.01}),
            tensors: String::new(),
            metrics: (1..=epochs_done)
                .map(|e| {
                    serde_json::from_value(serde_json::json!({"epoch": e, "steps": 10 * e}))
                        .unwrap()
                })
                .collect(),
            standardizer: None,
            test_release: None,
            test_releases: 0,
            bounds: None,
        }
    }

    /// A checkpoint edited after it was written: its steps lowered, an epoch dropped, or its
    /// tensors pointed elsewhere (an absolute path, a path up and out). Each is refused naming
    /// what does not hold together, the file elsewhere is neither loaded nor, at the next
    /// save, deleted.
    #[test]
    fn a_tampered_checkpoint_is_refused_and_its_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ck");
        let p = Tensor::from_slice(&[1.0f32, 2.0]);
        save(&d, &meta(2), &[("params".into(), &p)]).unwrap();
        let outside = dir.path().join("precious.safetensors");
        Tensor::write_safetensors(&[("params".to_string(), p.shallow_clone())], &outside).unwrap();
        let fp = serde_json::json!({"lr": 0.01});
        let good = load_meta(&d).unwrap();
        type Edit = Box<dyn Fn(&mut CheckpointMeta)>;
        let edits: [(&str, Edit); 5] = [
            ("10 steps were taken", Box::new(|m| m.steps = 10)),
            (
                "metrics of 2",
                Box::new(|m| {
                    m.epochs_done = 1;
                    m.tensors = tensors_name(1);
                }),
            ),
            ("out of order", Box::new(|m| m.metrics[1].steps = 5)),
            (
                "names only its own file",
                Box::new(move |m| m.tensors = "../precious.safetensors".into()),
            ),
            (
                "names only its own file",
                Box::new({
                    let outside = outside.clone();
                    move |m| m.tensors = outside.to_str().unwrap().into()
                }),
            ),
        ];
        for (said, edit) in edits {
            let mut m = good.clone();
            edit(&mut m);
            std::fs::write(d.join(META), serde_json::to_string(&m).unwrap()).unwrap();
            let err = load(&d, &fp).unwrap_err().to_string();
            assert!(err.contains(said) && err.contains("ck"), "{said}: {err}");
            // The next checkpoint replaces it without touching the file it named.
            save(&d, &meta(3), &[("params".into(), &p)]).unwrap();
            assert!(outside.exists(), "{said}: the file outside was deleted");
            std::fs::write(d.join(META), serde_json::to_string(&good).unwrap()).unwrap();
        }
        save(&d, &meta(4), &[("params".into(), &p)]).unwrap();
        assert!(load(&d, &fp).is_ok());
    }

    #[test]
    fn round_trips_and_replaces_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ck");
        assert!(!exists(&d));
        let p = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        save(&d, &meta(1), &[("params".into(), &p)]).unwrap();
        let p2 = &p * 2.0;
        save(&d, &meta(2), &[("params".into(), &p2)]).unwrap();
        assert!(exists(&d));
        let ck = load(&d, &serde_json::json!({"lr": 0.01})).unwrap();
        assert_eq!((ck.meta.epochs_done, ck.meta.steps), (2, 20));
        assert!(ck.tensor(&d, "params").unwrap().equal(&p2));
        let files: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        let err = load(&d, &serde_json::json!({"lr": 0.1}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other options (lr: 0.01 in the checkpoint, 0.1 now)"),
            "{err}"
        );
    }

    #[test]
    fn differences_name_the_nested_key() {
        let a = serde_json::json!({"seed": 1, "privacy": {"private": {"l2_norm_clip": 3.0}}});
        let b = serde_json::json!({"seed": 1, "privacy": {"private": {"l2_norm_clip": 1.0}},
            "hidden": [50]});
        assert_eq!(
            differences(&a, &b),
            [
                "hidden: null in the checkpoint, [50] now",
                "privacy.private.l2_norm_clip: 3.0 in the checkpoint, 1.0 now"
            ]
        );
    }

    #[test]
    fn resume_needs_a_checkpoint_and_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("chekpoints");
        let err = check_resumable(&missing).unwrap_err().to_string();
        assert!(
            err.contains("chekpoints") && err.contains("no such directory"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let err = check_resumable(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty") && err.contains("no checkpoint"),
            "{err}"
        );
        let p = Tensor::from_slice(&[1.0f32]);
        save(&empty, &meta(1), &[("params".into(), &p)]).unwrap();
        check_resumable(&empty).unwrap();
    }

    /// A calibrated noise multiplier (17 significant digits) must read back as the same f64, or
    /// the resumed run would refuse its own checkpoint.
    #[test]
    fn long_floats_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = Tensor::from_slice(&[1.0f32]);
        for i in 1..200u32 {
            let sigma = 0.5 + f64::from(i) / 7.0 * std::f64::consts::PI;
            let m = CheckpointMeta {
                noise_multiplier: Some(sigma),
                ..meta(i)
            };
            save(dir.path(), &m, &[("params".into(), &p)]).unwrap();
            let back = load(dir.path(), &m.fingerprint).unwrap().meta;
            assert_eq!(back.noise_multiplier, Some(sigma), "{sigma:e}");
        }
    }
}
