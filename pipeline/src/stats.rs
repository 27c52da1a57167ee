//! Run statistics: what each worker counts while cleaning, and the manifest built from the totals.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};

use serde::{Deserialize, Serialize};
use shards::manifest::{FORMAT, ManifestOptions, ManifestSchema, RowCounts, ShardInfo};
use shards::scan::Vector;
use shards::{DropReason, Manifest, Schema};

/// One thing counted. Each worker pre-aggregates locally; the totals are formed by
/// differential dataflow's `count` over these keys with the local counts as differences.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StatKey {
    /// A header line.
    Header,
    /// A dropped row, by reason.
    Dropped(DropReason),
    /// A kept row, by label.
    Label(u8),
    /// A kept row, by feature vector (its shard-format text, which is canonical).
    Vector(Vec<u8>),
    /// Clean rows let go by `--max-rows-per-unit` (counted by the shards' writers).
    OverUnitCap,
}

/// The counts one worker gathers while it cleans its part of the input.
#[derive(Debug, Default)]
pub struct LocalStats {
    headers: u64,
    dropped: [u64; DropReason::ALL.len()],
    labels: [u64; 2],
    vectors: HashMap<Box<[u8]>, u64, FastHash>,
    /// Feature vectors of one-digit values (at most [`PACKED_DIGITS`]), packed four bits a digit
    /// under a leading 1: cheaper to hash and compare than their text.
    packed: HashMap<u64, u64, FastHash>,
}

/// A multiply-rotate hash (FxHash's step, eight bytes at a time) with a per-process random
/// seed: SipHash, std's default, cost about a tenth of the run's CPU time on the feature
/// vectors (short keys, one lookup per kept row).
#[derive(Debug, Clone, Copy)]
struct FastHash(u64);

impl Default for FastHash {
    fn default() -> Self {
        FastHash(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }
}

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.0)
    }
}

/// The hasher of [`FastHash`].
#[derive(Debug)]
struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The last multiply leaves the low bits weakest; hashbrown takes its bucket from them.
        self.0.rotate_left(26)
    }
}

impl LocalStats {
    /// Counts a header line.
    pub fn header(&mut self) {
        self.headers += 1;
    }

    /// Counts a dropped row.
    pub fn dropped(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    /// Counts a kept row with label `label` and feature vector `vector`.
    #[inline]
    pub fn kept(&mut self, label: u8, vector: Vector<'_>) {
        self.labels[usize::from(label)] += 1;
        match vector {
            Vector::Packed(key) => *self.packed.entry(key).or_default() += 1,
            Vector::Text(features) => match self.vectors.get_mut(features) {
                Some(c) => *c += 1,
                None => {
                    self.vectors.insert(features.into(), 1);
                }
            },
        }
    }

    /// The non-zero counts as `(key, count)` updates.
    pub fn into_updates(mut self) -> Vec<(StatKey, i64)> {
        for (key, count) in std::mem::take(&mut self.packed) {
            *self.vectors.entry(unpack(key).into()).or_default() += count;
        }
        let mut out = Vec::with_capacity(self.vectors.len() + 10);
        if self.headers > 0 {
            out.push((StatKey::Header, self.headers as i64));
        }
        for r in DropReason::ALL {
            if self.dropped[r.index()] > 0 {
                out.push((StatKey::Dropped(r), self.dropped[r.index()] as i64));
            }
        }
        for (l, &c) in self.labels.iter().enumerate() {
            if c > 0 {
                out.push((StatKey::Label(l as u8), c as i64));
            }
        }
        out.extend(
            self.vectors
                .into_iter()
                .map(|(k, c)| (StatKey::Vector(k.into_vec()), c as i64)),
        );
        out
    }
}

/// The feature text (`d1,d2,...`) of a packed key.
fn unpack(mut key: u64) -> Vec<u8> {
    let mut digits = Vec::new();
    while key > 1 {
        digits.push(b'0' + (key & 15) as u8);
        key >>= 4;
    }
    let mut text = Vec::with_capacity(2 * digits.len());
    for d in digits.into_iter().rev() {
        if !text.is_empty() {
            text.push(b',');
        }
        text.push(d);
    }
    text
}

/// Builds the manifest from the schema, options, totals and shard infos.
///
/// `totals` may come in any order and with repeated keys; means are computed over the distinct
/// vectors in sorted order, so the result does not depend on how the work was split.
pub fn build_manifest(
    schema: &Schema,
    input: &str,
    num_shards: u32,
    max_rows_per_unit: Option<u32>,
    totals: Vec<(StatKey, i64)>,
    mut shards: Vec<ShardInfo>,
) -> Manifest {
    let mut merged: BTreeMap<StatKey, i64> = BTreeMap::new();
    for (k, c) in totals {
        *merged.entry(k).or_default() += c;
    }
    let mut rows = RowCounts::default();
    for r in DropReason::ALL {
        rows.dropped.insert(r, 0);
    }
    let mut labels = BTreeMap::new();
    labels.insert("0".to_string(), 0);
    labels.insert("1".to_string(), 0);
    let k = schema.features.len();
    let mut sums = vec![0f64; k];
    let mut distinct = 0u64;
    for (key, count) in &merged {
        let count = *count as u64;
        match key {
            StatKey::Header => rows.header_lines += count,
            StatKey::Dropped(r) => *rows.dropped.entry(*r).or_default() += count,
            StatKey::Label(l) => {
                *labels.entry(l.to_string()).or_default() += count;
                rows.kept += count;
            }
            StatKey::OverUnitCap => rows.over_unit_cap += count,
            StatKey::Vector(text) => {
                distinct += 1;
                let text = std::str::from_utf8(text).expect("feature text is written as ASCII");
                for (s, v) in sums.iter_mut().zip(text.split(',')) {
                    *s += v.parse::<f64>().expect("feature text holds numbers") * count as f64;
                }
            }
        }
    }
    // The labels and vectors count every clean row (the means are theirs); the unit cap let
    // some of them go after.
    let clean = rows.kept;
    rows.input_rows = clean + rows.dropped_total();
    rows.kept = clean - rows.over_unit_cap.min(clean);
    let names = schema.feature_names();
    let feature_means = names
        .iter()
        .zip(&sums)
        .map(|(n, s)| (n.clone(), if clean > 0 { s / clean as f64 } else { 0.0 }))
        .collect();
    shards.sort_by(|a, b| a.name.cmp(&b.name));
    Manifest {
        format: FORMAT.to_string(),
        schema: ManifestSchema {
            input_columns: schema.columns.clone(),
            label: schema.label_name().to_string(),
            features: names,
            unit: schema.unit_name().map(str::to_string),
        },
        options: ManifestOptions {
            input: input.to_string(),
            shards: num_shards,
            na_values: schema
                .na_values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            max_rows_per_unit,
        },
        rows,
        labels,
        feature_means,
        distinct_feature_vectors: distinct,
        shards,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_do_not_depend_on_the_split() {
        let schema = Schema::from_columns(
            vec!["y".into(), "a".into(), "b".into()],
            &shards::SchemaOptions {
                label: "y".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let mut one = LocalStats::default();
        let mut left = LocalStats::default();
        let mut right = LocalStats::default();
        // (label, features)
        let rows: [(u8, &[u8]); 4] = [(1, b"0,1"), (0, b"0.1,2"), (1, b"0,1"), (0, b"0.2,3")];
        for (i, &(label, features)) in rows.iter().enumerate() {
            one.kept(label, Vector::Text(features));
            if i % 2 == 0 {
                left.kept(label, Vector::Text(features))
            } else {
                right.kept(label, Vector::Text(features))
            }
        }
        one.dropped(DropReason::Missing);
        // The same rows counted from their digits where they have them: the same totals.
        let mut digits = LocalStats::default();
        for &(label, features) in &rows {
            if features == b"0,1" {
                digits.kept(label, Vector::Packed(shards::scan::pack(b"01")));
            } else {
                digits.kept(label, Vector::Text(features));
            }
        }
        digits.dropped(DropReason::Missing);
        let c = build_manifest(&schema, "x", 2, None, digits.into_updates(), vec![]);
        right.dropped(DropReason::Missing);
        let a = build_manifest(&schema, "x", 2, None, one.into_updates(), vec![]);
        let mut split = left.into_updates();
        split.extend(right.into_updates());
        let b = build_manifest(&schema, "x", 2, None, split, vec![]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(unpack(0x1907), b"9,0,7");
        assert_eq!(a.rows.kept, 4);
        assert_eq!(a.rows.input_rows, 5);
        assert_eq!(a.distinct_feature_vectors, 3);
        assert!((a.feature_means["b"] - 7.0 / 4.0).abs() < 1e-12);
    }
}
