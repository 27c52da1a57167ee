//! The trained model on disk: safetensors under PyTorch `nn.Sequential` names, and next to it
//! a JSON file with the options, the privacy spent and the final metrics.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::Tensor;

use crate::config::TrainConfig;
use crate::metrics::{EpochMetrics, create_parent};
use crate::mlp::Mlp;
use crate::privacy::Accounting;
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

/// Writes the model to `path` and its card to [`card_path`].
pub fn save(path: &Path, mlp: &Mlp, card: &ModelCard<'_>) -> Result<()> {
    create_parent(path)?;
    let tensors = mlp.state_dict();
    Tensor::write_safetensors(&tensors, path)?;
    let json = serde_json::to_string_pretty(card).expect("model card serializes");
    let card_file = card_path(path);
    std::fs::write(&card_file, json).map_err(|e| Error::io(card_file, e))
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
