//! `_manifest.json`: what a finished output holds, written just before `_SUCCESS`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clean::DropReason;

/// The manifest's file name.
pub const MANIFEST_NAME: &str = "_manifest.json";
/// The marker written last, when the output is complete.
pub const SUCCESS_NAME: &str = "_SUCCESS";
/// The format identifier in every manifest.
/// `/2`: records keyed by content and rank, placed by their unit (docs/design.md); `/1` outputs
/// were keyed by byte offset and are refused (their header starts `offset,`).
pub const FORMAT: &str = "fastdp-shards/2";

/// The whole manifest. Everything in it depends only on the input and the options, never on the
/// number of workers or threads, so outputs compare byte for byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Input and output columns.
    pub schema: ManifestSchema,
    /// The options that shaped the output.
    pub options: ManifestOptions,
    /// Line and row counts.
    pub rows: RowCounts,
    /// Clean rows by label value (`"0"`, `"1"`), before `--max-rows-per-unit` lets any go.
    pub labels: BTreeMap<String, u64>,
    /// Mean of each feature over the clean rows (before the unit cap), by feature name.
    pub feature_means: BTreeMap<String, f64>,
    /// Number of distinct feature vectors among the kept rows.
    pub distinct_feature_vectors: u64,
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardInfo>,
}

/// The columns of the input and of the shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSchema {
    /// The input's columns.
    pub input_columns: Vec<String>,
    /// The label column.
    pub label: String,
    /// The feature columns, in shard order.
    pub features: Vec<String>,
    /// The privacy unit's column (`--privacy-unit`); `None`: each line is its own unit.
    pub unit: Option<String>,
}

/// The options that shaped the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestOptions {
    /// The input, as given.
    pub input: String,
    /// Number of shards.
    pub shards: u32,
    /// Values counted as missing.
    pub na_values: Vec<String>,
    /// `--max-rows-per-unit`: the most rows a unit keeps (a public bound).
    pub max_rows_per_unit: Option<u32>,
}

/// Line and row counts. `input_rows = kept + over_unit_cap + sum(dropped)`; header lines are
/// not rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowCounts {
    /// Header lines skipped (the first line, and any repeats).
    pub header_lines: u64,
    /// Lines that are not headers.
    pub input_rows: u64,
    /// Rows written to shards.
    pub kept: u64,
    /// Dropped rows by reason (every reason listed, zeros included).
    pub dropped: BTreeMap<DropReason, u64>,
    /// Clean rows let go because their unit had more than `--max-rows-per-unit` rows.
    pub over_unit_cap: u64,
}

impl RowCounts {
    /// Total dropped rows.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// One shard's name, size and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File or object name, e.g. `part-00003`.
    pub name: String,
    /// Records in it (the header line not counted).
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file, as 8 lowercase hex digits.
    pub crc32: String,
}

impl Manifest {
    /// The manifest as pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a manifest always serialises");
        s.push('\n');
        s
    }
}

/// Formats a CRC-32 as in the manifest.
pub fn crc_hex(crc: u32) -> String {
    format!("{crc:08x}")
}
