//! The shards loaded once, split into train and test by the design's hash rule, and kept on
//! the device as one tensor per split (steps gather their rows with `index_select` there, or,
//! for the plain-Rust CPU step, from a host copy of the training rows).

use std::ops::Range;

use shards::{Dataset, Location, Table};
use tch::{Device, Kind, Tensor};

use crate::features::{FeatureSpec, Standardizer, Unknown};
use crate::{Error, Result};

/// Rows are padded to a multiple of this many `f32`s (64 bytes, a cache line).
const ROW_ALIGN: usize = 16;

/// Examples on the device: one row per example, `[x_1 .. x_k, 1, y, sqrt(|x|^2 + 1), 0..]`.
///
/// The constant 1 makes the first layer's bias part of its weight matrix, and the next but
/// one column is the norm of that augmented input, which every step's per-example gradient
/// norm needs (it never changes, so it is computed once here). Rows are padded with zeros to
/// a multiple of 64 bytes, so gathering a random row touches one cache line, not two.
#[derive(Debug)]
pub struct Examples {
    rows: Tensor,
    len: usize,
    width: usize,
}

impl Examples {
    /// Builds the row tensor from row-major features and labels, on `device`.
    pub fn new(features: &[f32], labels: &[f32], width: usize, device: Device) -> Result<Self> {
        let len = labels.len();
        assert_eq!(features.len(), len * width, "features are len x width");
        let stride = (width + 3).next_multiple_of(ROW_ALIGN);
        let mut rows = vec![0.0f32; len * stride];
        for (i, (row, &y)) in rows.chunks_exact_mut(stride).zip(labels).enumerate() {
            let x = &features[i * width..(i + 1) * width];
            row[..width].copy_from_slice(x);
            row[width] = 1.0;
            row[width + 1] = y;
            row[width + 2] = (x.iter().map(|v| v * v).sum::<f32>() + 1.0).sqrt();
        }
        let rows = Tensor::f_from_slice(&rows)?
            .f_view([len as i64, stride as i64])?
            .f_to_device(device)?;
        Ok(Examples { rows, len, width })
    }

    /// The same examples in a tensor of their own.
    pub fn copy(&self) -> Result<Examples> {
        let mut rows = self.rows.f_zeros_like()?;
        rows.f_copy_(&self.rows)?;
        Ok(Examples {
            rows,
            len: self.len,
            width: self.width,
        })
    }

    /// Appends `other`'s rows (same width) after these (an audit's input canaries).
    pub fn extend(&mut self, other: &Examples) -> Result<()> {
        assert_eq!(
            self.width, other.width,
            "appended rows have the same features"
        );
        self.rows = Tensor::f_cat(&[&self.rows, &other.rows], 0)?;
        self.len += other.len;
        Ok(())
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of features k.
    pub fn width(&self) -> usize {
        self.width
    }

    /// All rows, `[n, stride]` (`stride >= k + 3`).
    pub fn rows(&self) -> &Tensor {
        &self.rows
    }

    /// A host copy of all rows, row-major `[n, stride]` (`stride` = [`Examples::stride`]), for
    /// the plain-Rust step to gather its batches from
    /// ([`crate::mechanism::dp_step::DpStep::accumulate_gathered`]): as much memory again as the rows
    /// (`4 * stride` bytes an example, 64 for the census's 9 features: 61 MB for 960k).
    pub fn host_rows(&self) -> Result<Vec<f32>> {
        Ok(Vec::<f32>::try_from(self.rows.f_reshape([-1])?)?)
    }

    /// Floats per row (`k + 3` padded to a multiple of 16).
    pub fn stride(&self) -> usize {
        self.rows.size()[1] as usize
    }

    /// The device the rows live on.
    pub fn device(&self) -> Device {
        self.rows.device()
    }

    /// The augmented inputs `[x, 1]` of `rows` (a view).
    pub fn inputs(&self, rows: &Tensor) -> Tensor {
        rows.narrow(1, 0, self.width as i64 + 1)
    }

    /// The labels of `rows`, `[n, 1]` (a view).
    pub fn labels(&self, rows: &Tensor) -> Tensor {
        rows.narrow(1, self.width as i64 + 1, 1)
    }

    /// The norms of the augmented inputs of `rows`, `[n, 1]` (a view).
    pub fn input_norms(&self, rows: &Tensor) -> Tensor {
        rows.narrow(1, self.width as i64 + 2, 1)
    }

    /// Up to `n` leading rows (a view).
    pub fn head(&self, n: usize) -> Tensor {
        self.rows.narrow(0, 0, n.min(self.len) as i64)
    }

    /// Standardizes the inputs `cols` (on [-1, 1]): input `cols[c]` becomes `(u - m) / s` for
    /// `(m, s) = moments[c]`, and the rows' input norms are recomputed.
    pub fn standardize(&mut self, cols: &[usize], moments: &[(f64, f64)]) -> Result<()> {
        if self.len == 0 || cols.is_empty() {
            return Ok(());
        }
        for (&j, &(m, s)) in cols.iter().zip(moments) {
            let mut col = self.rows.narrow(1, j as i64, 1);
            let z = (&col - m).f_div_scalar(s)?;
            col.f_copy_(&z)?;
        }
        let x = self.rows.narrow(1, 0, self.width as i64);
        let norm = (x.square().sum_dim_intlist(1, true, Kind::Float) + 1.0).sqrt();
        self.rows
            .narrow(1, self.width as i64 + 2, 1)
            .f_copy_(&norm)?;
        Ok(())
    }

    /// The mean of feature `j` over all rows (for the attack's baseline).
    pub fn feature_mean(&self, j: usize) -> f64 {
        self.rows
            .narrow(1, j as i64, 1)
            .mean(Kind::Float)
            .double_value(&[])
    }
}

/// The part files worker `worker` of `workers` owns: the `worker`-th of `workers` contiguous,
/// near-equal blocks of the part list. Blocks keep the global order of training examples (part
/// order, then record order) contiguous, so each worker's examples are one range of it, and that
/// order, like the sample drawn from it, does not depend on the number of workers.
pub fn share_of(parts: usize, worker: usize, workers: usize) -> Range<usize> {
    worker * parts / workers..(worker + 1) * parts / workers
}

/// The training and test splits and the column names.
#[derive(Debug)]
pub struct Data {
    /// Examples trained on.
    pub train: Examples,
    /// Held-out examples (may be empty with `--test-fraction 0`).
    pub test: Examples,
    /// The record keys of the training examples, in their order.
    pub train_keys: Vec<u64>,
    /// A hash of the whole dataset's listing (every part's name and size, and the manifest),
    /// the same in every process that reads the same shards (0 for a table split in memory).
    pub fingerprint: u64,
    /// The label column.
    pub label_name: String,
    /// The model's inputs, in order (the feature columns after the feature spec).
    pub feature_names: Vec<String>,
    /// What the feature spec did to this share, for the operator and the standardization.
    pub transform: TransformInfo,
}

/// What [`FeatureSpec::apply`] found in a worker's share (exact figures: the operator's, never
/// the card's).
#[derive(Debug, Clone, Default)]
pub struct TransformInfo {
    /// Each categorical column, its policy, and the records with a level outside the spec.
    pub unknown: Vec<(String, Unknown, u64)>,
    /// The inputs passed through untransformed, and whether a value of one is outside [0, 1].
    pub raw_out_of_range: Vec<(String, bool)>,
    /// The standardized inputs (on [-1, 1] until [`Examples::standardize`]).
    pub standardized: Vec<usize>,
    /// [`Standardizer::sums`] over this share's training records (empty without
    /// standardized inputs).
    pub train_sums: Vec<f64>,
}

impl Data {
    /// Reads every shard at `location` (checking the manifest when there is one; on S3 through
    /// a store built with `s3`) and splits it: a record is a test record when
    /// [`shards::Table::is_test`] (by the record's key, or its unit's hash with units).
    pub fn load(
        location: &Location,
        s3: &shards::S3Options,
        test_fraction: f64,
        split_seed: u64,
        spec: &FeatureSpec,
        device: Device,
    ) -> Result<Self> {
        let data = Data::load_share(location, s3, 0, 1, test_fraction, split_seed, spec, device)?;
        if data.train.is_empty() {
            return Err(Error::Data {
                location: location.to_string(),
                reason: format!(
                    "no training records ({} test records, test fraction {test_fraction})",
                    data.test.len()
                ),
            });
        }
        Ok(data)
    }

    /// Worker `worker`'s share of the shards at `location` out of `workers` ([`share_of`]),
    /// loaded, transformed by `spec` and split as [`Data::load`] does (either split may be
    /// empty here).
    #[allow(clippy::too_many_arguments)]
    pub fn load_share(
        location: &Location,
        s3: &shards::S3Options,
        worker: usize,
        workers: usize,
        test_fraction: f64,
        split_seed: u64,
        spec: &FeatureSpec,
        device: Device,
    ) -> Result<Self> {
        if let Location::Local(dir) = location
            && !dir.exists()
        {
            return Err(Error::Data {
                location: location.to_string(),
                reason: "no such directory (write shards there with `pipeline`, or point --data \
                         at them)"
                    .into(),
            });
        }
        let dataset = Dataset::open(location, s3)?;
        let parts = dataset.parts().len();
        if workers > parts {
            return Err(Error::Data {
                location: location.to_string(),
                reason: format!(
                    "{parts} shard(s) cannot be shared by {workers} workers (each needs at least \
                     one): run fewer workers, or write more shards (`pipeline --shards`)"
                ),
            });
        }
        let mine = share_of(parts, worker, workers);
        let indices: Vec<usize> = mine.clone().collect();
        let table = dataset.load_parts(&indices)?;
        if table.feature_names.is_empty() {
            return Err(Error::Data {
                location: location.to_string(),
                reason: format!(
                    "shards {:?} have no header line naming the columns",
                    dataset.parts()[mine]
                        .iter()
                        .map(|p| &p.name)
                        .collect::<Vec<_>>()
                ),
            });
        }
        let t = spec.apply(&table)?;
        let mut data = Data::split(&t.table, test_fraction, split_seed, device)?;
        data.fingerprint = fingerprint(&dataset);
        data.transform = TransformInfo {
            raw_out_of_range: t
                .raw
                .iter()
                .zip(&t.out_of_range)
                .map(|(&j, &o)| (t.table.feature_names[j].clone(), o))
                .collect(),
            train_sums: if t.standardized.is_empty() {
                Vec::new()
            } else {
                let k = t.table.width();
                let train: Vec<f32> = (0..t.table.len())
                    .filter(|&i| !t.table.is_test(i, split_seed, test_fraction))
                    .flat_map(|i| t.table.features[i * k..(i + 1) * k].iter().copied())
                    .collect();
                Standardizer::sums(&train, k, &t.standardized)
            },
            unknown: t.unknown,
            standardized: t.standardized,
        };
        Ok(data)
    }

    /// The same data in tensors of its own (a run may change its examples in place).
    pub fn copy(&self) -> Result<Data> {
        Ok(Data {
            train: self.train.copy()?,
            test: self.test.copy()?,
            train_keys: self.train_keys.clone(),
            fingerprint: self.fingerprint,
            label_name: self.label_name.clone(),
            feature_names: self.feature_names.clone(),
            transform: self.transform.clone(),
        })
    }

    /// Splits a loaded table (see [`Data::load`]).
    pub fn split(
        table: &Table,
        test_fraction: f64,
        split_seed: u64,
        device: Device,
    ) -> Result<Self> {
        let k = table.width();
        let (mut train_x, mut train_y, mut test_x, mut test_y) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut train_keys = Vec::new();
        for i in 0..table.len() {
            let x = &table.features[i * k..(i + 1) * k];
            let y = table.labels[i];
            if table.is_test(i, split_seed, test_fraction) {
                test_x.extend_from_slice(x);
                test_y.push(y);
            } else {
                train_x.extend_from_slice(x);
                train_y.push(y);
                train_keys.push(table.keys[i]);
            }
        }
        Ok(Data {
            train: Examples::new(&train_x, &train_y, k, device)?,
            test: Examples::new(&test_x, &test_y, k, device)?,
            train_keys,
            fingerprint: 0,
            label_name: table.label_name.clone(),
            feature_names: table.feature_names.clone(),
            transform: TransformInfo::default(),
        })
    }

    /// The index of feature `name`, or an error listing the features there are.
    pub fn feature_index(&self, name: &str, option: &str) -> Result<usize> {
        self.feature_names
            .iter()
            .position(|f| f == name)
            .ok_or_else(|| {
                Error::Config(format!(
                    "{option} '{name}' is not a feature of the data; its features are: {}",
                    self.feature_names.join(", ")
                ))
            })
    }
}

/// [`Data::fingerprint`] of an opened dataset.
fn fingerprint(dataset: &Dataset) -> u64 {
    let mut h = 0u64;
    let mut add = |bytes: &[u8]| {
        h = bytes.iter().fold(shards::splitmix64(h), |h, &b| {
            shards::splitmix64(h ^ u64::from(b))
        });
    };
    for part in dataset.parts() {
        add(part.name.as_bytes());
        add(&part.bytes.to_le_bytes());
    }
    if let Some(manifest) = dataset.manifest() {
        add(serde_json::to_string(manifest)
            .expect("a manifest serializes")
            .as_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            label_name: "employed".into(),
            feature_names: vec!["a".into(), "b".into()],
            keys: (0..1000).map(|i| i * 17).collect(),
            labels: (0..1000).map(|i| (i % 2) as f32).collect(),
            features: (0..2000).map(|i| (i % 3) as f32).collect(),
            ..Table::default()
        }
    }

    #[test]
    fn rows_hold_inputs_label_and_input_norm() {
        let e = Examples::new(&[3.0, 0.0, 1.0, 1.0], &[1.0, 0.0], 2, Device::Cpu).unwrap();
        let r = e.rows();
        assert_eq!(r.size(), [2, 16]);
        assert_eq!(
            Vec::<f32>::try_from(e.inputs(r).reshape([-1])).unwrap(),
            [3.0, 0.0, 1.0, 1.0, 1.0, 1.0]
        );
        assert_eq!(
            Vec::<f32>::try_from(e.labels(r).reshape([-1])).unwrap(),
            [1.0, 0.0]
        );
        let norms = Vec::<f32>::try_from(e.input_norms(r).reshape([-1])).unwrap();
        assert!((norms[0] - 10f32.sqrt()).abs() < 1e-6 && (norms[1] - 3f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn split_follows_the_hash_rule_and_keeps_every_record() {
        let t = table();
        let d = Data::split(&t, 0.2, 7, Device::Cpu).unwrap();
        let expected_test = t
            .keys
            .iter()
            .filter(|&&o| shards::is_test(o, 7, 0.2))
            .count();
        assert_eq!(d.test.len(), expected_test);
        assert_eq!(d.train.len() + d.test.len(), 1000);
        assert!((150..250).contains(&expected_test), "{expected_test}");
        let other = Data::split(&t, 0.2, 8, Device::Cpu).unwrap();
        assert_ne!(other.test.len(), 0);
        assert_eq!(d.feature_index("b", "--attack-feature").unwrap(), 1);
        let err = d
            .feature_index("sex", "--attack-feature")
            .unwrap_err()
            .to_string();
        assert!(err.contains("'sex'") && err.contains("a, b"), "{err}");
    }

    #[test]
    fn shares_are_contiguous_blocks_covering_every_part() {
        for parts in 1..20 {
            for workers in 1..=parts {
                let blocks: Vec<_> = (0..workers).map(|w| share_of(parts, w, workers)).collect();
                assert_eq!(blocks[0].start, 0);
                assert_eq!(blocks[workers - 1].end, parts);
                for pair in blocks.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                assert!(blocks.iter().all(|b| !b.is_empty()), "{parts} / {workers}");
            }
        }
        assert_eq!(share_of(16, 1, 3), 5..10);
    }
}
