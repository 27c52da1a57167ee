//! Per-epoch checkpoints: parameters, optimizer state and the steps taken, so a rerun with
//! `--resume` continues where the last complete epoch ended and its privacy budget keeps
//! counting from there, never from zero.
//!
//! A checkpoint is `epoch-NNNN.safetensors` plus `checkpoint.json`, which names it and is
//! renamed into place last: a crash mid-write leaves the previous checkpoint intact.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::metrics::EpochMetrics;
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

/// Writes a checkpoint into `dir` (created if missing) and removes the previous one's tensors.
pub fn save(dir: &Path, meta: &CheckpointMeta, tensors: &[(String, &Tensor)]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let previous = load_meta(dir).ok().map(|m| m.tensors);
    let file = format!("epoch-{:04}.safetensors", meta.epochs_done);
    let tmp = dir.join(format!("{file}.tmp"));
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_device(tch::Device::Cpu)))
        .collect();
    Tensor::write_safetensors(&cpu, &tmp)?;
    rename(&tmp, &dir.join(&file))?;
    let meta = CheckpointMeta {
        tensors: file.clone(),
        ..meta.clone()
    };
    let json = serde_json::to_string_pretty(&meta).expect("checkpoint metadata serializes");
    let tmp = dir.join(format!("{META}.tmp"));
    fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
    rename(&tmp, &dir.join(META))?;
    if let Some(old) = previous.filter(|old| *old != file) {
        let _ = fs::remove_file(dir.join(old));
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(PathBuf::from(to), e))
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
                "written by a run with other options; it has {}, this run {}",
                meta.fingerprint, fingerprint
            ),
        ));
    }
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
            metrics: vec![],
        }
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
        assert!(err.contains("other options"), "{err}");
    }
}
