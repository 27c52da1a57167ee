//! The trained model on disk: safetensors under PyTorch `nn.Sequential` names, and next to it
//! a JSON file with the options, the privacy spent and the final metrics, published together.
//!
//! **A release is complete when its card is there.** Both files are written and synced under
//! staging names (`model.safetensors.tmp`, `model.json.tmp`); then the previous card is
//! removed, the weights are renamed into place, and the card is renamed last. A card therefore
//! only ever sits beside the weights it was written with: a crash leaves the previous release
//! (both files), the new one, or weights without a card, which a reader must not take for a
//! release (no card, no privacy statement). [`is_complete`] is that rule.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::Tensor;

use crate::config::TrainConfig;
use crate::metrics::EpochMetrics;
use crate::mlp::Mlp;
use crate::privacy::Accounting;
use crate::publish::{self, create_parent, staging};
use crate::{Error, Result};

/// The JSON written next to the model.
#[derive(Debug, Serialize)]
pub struct ModelCard<'a> {
    /// How to rebuild the module in PyTorch.
    pub architecture: String,
    /// The feature columns, in input order.
    pub feature_names: &'a [String],
    /// The label column.
    pub label_name: &'a str,
    /// The run's options.
    pub options: &'a TrainConfig,
    /// The mechanism's parameters (absent with `--no-dp`).
    pub accounting: Option<Accounting>,
    /// Steps taken.
    pub steps: u64,
    /// The last epoch's metrics, final epsilon included.
    pub metrics: Option<&'a EpochMetrics>,
}

/// The options file's path for model path `model`: the same name with `.json`.
pub fn card_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

/// Whether the model at `path` is a complete release: its card is there (see the module
/// documentation for why that suffices).
pub fn is_complete(path: &Path) -> bool {
    path.is_file() && card_path(path).is_file()
}

/// Checks that `path` can take a model and its card (before training spends its budget).
pub fn check_writable(path: &Path) -> Result<()> {
    if card_path(path) == path {
        return Err(Error::Config(format!(
            "--save {}: the card goes to the same name with .json; give the model another \
             extension (model.safetensors)",
            path.display()
        )));
    }
    publish::check_writable_file("--save", path)?;
    publish::check_writable_file("--save", &card_path(path))
}

/// Publishes the model at `path` and its card at [`card_path`] together (module documentation).
pub fn save(path: &Path, mlp: &Mlp, card: &ModelCard<'_>) -> Result<()> {
    create_parent(path)?;
    let card_file = card_path(path);
    let (model_tmp, card_tmp) = (staging(path), staging(&card_file));
    Tensor::write_safetensors(&mlp.state_dict(), &model_tmp)?;
    publish::sync_file(&model_tmp)?;
    let json = serde_json::to_string_pretty(card).expect("model card serializes");
    publish::write_synced(&card_tmp, json.as_bytes())?;
    match std::fs::remove_file(&card_file) {
        Ok(()) => publish::sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(card_file, e)),
    }
    publish::rename(&model_tmp, path)?;
    publish::rename(&card_tmp, &card_file)?;
    publish::sync_parent(path);
    Ok(())
}

/// `nn.Sequential(nn.Linear(9, 50), nn.ReLU(), nn.Linear(50, 1))` for an MLP of these sizes.
pub fn architecture(inputs: usize, hidden: &[usize]) -> String {
    let mut sizes = vec![inputs];
    sizes.extend_from_slice(hidden);
    sizes.push(1);
    let layers: Vec<String> = sizes
        .windows(2)
        .map(|w| format!("nn.Linear({}, {})", w[0], w[1]))
        .collect();
    format!("nn.Sequential({})", layers.join(", nn.ReLU(), "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_names_the_pytorch_module() {
        assert_eq!(
            architecture(9, &[50]),
            "nn.Sequential(nn.Linear(9, 50), nn.ReLU(), nn.Linear(50, 1))"
        );
        assert_eq!(architecture(3, &[]), "nn.Sequential(nn.Linear(3, 1))");
    }
}
