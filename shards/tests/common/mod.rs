//! What the store tests share: a minimal manifest for a two-shard output of columns `y,a`.
#![allow(dead_code)]

use std::collections::BTreeMap;

use shards::Manifest;
use shards::manifest::{FORMAT, ManifestOptions, ManifestSchema, RowCounts, ShardInfo};

/// The manifest of a two-shard output of `in.csv` (label `y`, feature `a`) listing `shards`.
pub fn manifest(shards: Vec<ShardInfo>) -> Manifest {
    Manifest {
        format: FORMAT.into(),
        schema: ManifestSchema {
            input_columns: vec!["y".into(), "a".into()],
            label: "y".into(),
            features: vec!["a".into()],
            unit: None,
        },
        options: ManifestOptions {
            input: "in.csv".into(),
            shards: 2,
            na_values: vec![],
            max_rows_per_unit: None,
        },
        rows: RowCounts::default(),
        labels: BTreeMap::new(),
        feature_means: BTreeMap::new(),
        distinct_feature_vectors: 0,
        shards,
    }
}
