//! The shards loaded once and split into train and test by the design's hash rule; each split's
//! example rows are laid out from the table's columns when read, as a tensor on the device
//! where a libtorch path gathers them with `index_select`, or as the plain-Rust CPU step's
//! host copy of the training rows.

use std::cell::{OnceCell, RefCell};
use std::ops::Range;
use std::sync::Arc;

use shards::{Dataset, Location, Table};
use tch::{Device, Kind, Tensor};

use crate::features::{FeatureSpec, Standardizer, Unknown};
use crate::host_rows::{Coder, HostRows};
use crate::{Error, Result};

/// Rows are padded to a multiple of this many `f32`s (64 bytes, a cache line).
const ROW_ALIGN: usize = 16;

/// Rows laid out at a time (into the row tensor, or into the host rows' coder).
const CHUNK_ROWS: usize = 1 << 14;

/// The features and labels of a table's rows, row-major, which the examples of its splits are
/// laid out from ([`Examples`]); shared by the splits.
struct Columns {
    /// `width` features a row.
    features: Vec<f32>,
    /// One label a row.
    labels: Vec<f32>,
    /// Features a row.
    width: usize,
}

/// Examples laid out from [`Columns`]: row `i` of the examples is row `rows[i]` of the
/// columns.
#[derive(Clone)]
struct Source {
    columns: Arc<Columns>,
    rows: Vec<usize>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Source({} of {} rows)",
            self.rows.len(),
            self.columns.labels.len()
        )
    }
}

/// Writes example row `row` (`stride` floats) from one record's features `x` and label `y`:
/// `[x_1 .. x_k, 1, y, sqrt(|x|^2 + 1), 0..]`.
fn lay_out_row(x: &[f32], y: f32, row: &mut [f32]) {
    let width = x.len();
    row[..width].copy_from_slice(x);
    row[width] = 1.0;
    row[width + 1] = y;
    row[width + 2] = (x.iter().map(|v| v * v).sum::<f32>() + 1.0).sqrt();
    row[width + 3..].fill(0.0);
}

/// Examples: one row per example, `[x_1 .. x_k, 1, y, sqrt(|x|^2 + 1), 0..]`.
///
/// The constant 1 makes the first layer's bias part of its weight matrix, and the next but
/// one column is the norm of that augmented input, which every step's per-example gradient
/// norm needs (it never changes, so it is computed once here). Rows are padded with zeros to
/// a multiple of 64 bytes, so gathering a random row touches one cache line, not two.
///
/// On the CPU the row tensor is laid out from the table's columns only when something asks
/// for it ([`Examples::rows`]): the plain-Rust step trains from [`Examples::host_rows`] and
/// the evaluation from the distinct rows, both made straight from the columns, so a run on
/// that path never allocates and faults in the 64-byte rows (61 MB at the census's 960k
/// training rows). Until the tensor exists the columns are the examples; once it does, it
/// is (it may be changed in place: [`Examples::standardize`]), and the columns are let go.
/// Either way the rows are the same bits: both are laid out by one function.
/// On another device the tensor is made at once.
#[derive(Debug)]
pub struct Examples {
    /// The rows, `[len, stride]` on `device`, once laid out.
    tensor: OnceCell<Tensor>,
    /// What the rows are laid out from until then (`None` once they are).
    source: RefCell<Option<Source>>,
    len: usize,
    width: usize,
    device: Device,
}

impl Examples {
    /// Examples from row-major features and labels, on `device` (a copy of both).
    pub fn new(features: &[f32], labels: &[f32], width: usize, device: Device) -> Result<Self> {
        assert_eq!(
            features.len(),
            labels.len() * width,
            "features are len x width"
        );
        let columns = Columns {
            features: features.to_vec(),
            labels: labels.to_vec(),
            width,
        };
        Examples::of_rows(Arc::new(columns), (0..labels.len()).collect(), device)
    }

    /// The examples of `columns`' rows `rows`, in that order (a split of a table, without
    /// gathering it first).
    fn of_rows(columns: Arc<Columns>, rows: Vec<usize>, device: Device) -> Result<Self> {
        let examples = Examples {
            tensor: OnceCell::new(),
            len: rows.len(),
            width: columns.width,
            source: RefCell::new(Some(Source { columns, rows })),
            device,
        };
        if device != Device::Cpu {
            examples.materialize()?;
        }
        Ok(examples)
    }

    /// Calls `f` with the rows laid out, [`CHUNK_ROWS`] at a time, in order, from the tensor
    /// where it exists and from the columns otherwise; stops early where `f` returns false.
    fn for_each_chunk(&self, mut f: impl FnMut(&[f32]) -> Result<bool>) -> Result<()> {
        let stride = self.stride();
        let mut buf = vec![0f32; CHUNK_ROWS.min(self.len) * stride];
        let mut start = 0;
        let source = self.source.borrow();
        while start < self.len {
            let n = CHUNK_ROWS.min(self.len - start);
            let chunk = &mut buf[..n * stride];
            match (self.tensor.get(), source.as_ref()) {
                (Some(rows), _) => rows
                    .f_narrow(0, start as i64, n as i64)?
                    .f_to_device(Device::Cpu)?
                    .f_contiguous()?
                    .f_copy_data(chunk, n * stride)?,
                (None, Some(s)) => {
                    let (c, k) = (&s.columns, s.columns.width);
                    for (row, &r) in chunk.chunks_exact_mut(stride).zip(&s.rows[start..]) {
                        lay_out_row(&c.features[r * k..(r + 1) * k], c.labels[r], row);
                    }
                }
                (None, None) => unreachable!("examples are laid out from their tensor or source"),
            }
            if !f(chunk)? {
                return Ok(());
            }
            start += n;
        }
        Ok(())
    }

    /// Makes the row tensor now if it is not there yet (its errors here rather than at the
    /// first use of [`Examples::rows`]), and lets the columns go.
    pub fn materialize(&self) -> Result<()> {
        if self.tensor.get().is_some() {
            return Ok(());
        }
        let stride = self.stride() as i64;
        // Every element is written below: the chunks cover every row, padding included.
        let rows = Tensor::f_empty([self.len as i64, stride], (Kind::Float, Device::Cpu))?;
        let mut start = 0;
        self.for_each_chunk(|chunk| {
            let n = chunk.len() as i64 / stride;
            rows.f_narrow(0, start, n)?
                .f_copy_(&Tensor::f_from_slice(chunk)?.f_view([n, stride])?)?;
            start += n;
            Ok(true)
        })?;
        let rows = rows.f_to_device(self.device)?;
        let _ = self.tensor.set(rows);
        self.source.borrow_mut().take();
        Ok(())
    }

    /// The same examples, in a tensor of their own where they have one (the columns, which
    /// nothing changes, are shared).
    pub fn copy(&self) -> Result<Examples> {
        let tensor = OnceCell::new();
        if let Some(rows) = self.tensor.get() {
            let mut copy = rows.f_zeros_like()?;
            copy.f_copy_(rows)?;
            let _ = tensor.set(copy);
        }
        Ok(Examples {
            tensor,
            source: RefCell::new(self.source.borrow().clone()),
            len: self.len,
            width: self.width,
            device: self.device,
        })
    }

    /// Appends `other`'s rows (same width) after these (an audit's input canaries).
    pub fn extend(&mut self, other: &Examples) -> Result<()> {
        assert_eq!(
            self.width, other.width,
            "appended rows have the same features"
        );
        self.materialize()?;
        other.materialize()?;
        let rows = Tensor::f_cat(&[self.rows(), other.rows()], 0)?;
        self.tensor = OnceCell::from(rows);
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

    /// All rows, `[n, stride]` (`stride >= k + 3`), laid out now if they are not yet
    /// ([`Examples::materialize`] returns the error that this panics with: libtorch failing to
    /// allocate them).
    pub fn rows(&self) -> &Tensor {
        if let Err(e) = self.materialize() {
            panic!("laying out {} example rows: {e}", self.len);
        }
        self.tensor.get().expect("materialized just above")
    }

    /// A host copy of all rows for the plain-Rust step to gather its batches from
    /// ([`crate::mechanism::dp_step::DpStep::accumulate_gathered`]), coded against the distinct
    /// rows where they are few ([`HostRows::compact`]: 2 bytes an example, 1.9 MB for the
    /// census's 960k training rows, against 64 bytes, 61 MB, for the plain copy).
    /// The rows are coded a chunk at a time, so the plain copy exists only where it is kept.
    pub fn host_rows(&self) -> Result<HostRows> {
        let stride = self.stride();
        let mut coder = Coder::new(stride, self.width + 1, self.len);
        let mut coded = true;
        self.for_each_chunk(|chunk| {
            coded = coder.push(chunk);
            Ok(coded)
        })?;
        if coded {
            return Ok(coder.finish());
        }
        let mut rows = Vec::with_capacity(self.len * stride);
        self.for_each_chunk(|chunk| {
            rows.extend_from_slice(chunk);
            Ok(true)
        })?;
        Ok(HostRows::plain(rows, stride))
    }

    /// Floats per row (`k + 3` padded to a multiple of 16).
    pub fn stride(&self) -> usize {
        (self.width + 3).next_multiple_of(ROW_ALIGN)
    }

    /// The device the rows live on.
    pub fn device(&self) -> Device {
        self.device
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

    /// Up to `n` leading rows (a view of the tensor where it exists; else those rows alone,
    /// laid out from the columns).
    pub fn head(&self, n: usize) -> Result<Tensor> {
        let n = n.min(self.len);
        if let Some(rows) = self.tensor.get() {
            return Ok(rows.narrow(0, 0, n as i64));
        }
        let stride = self.stride();
        let mut head = Vec::with_capacity(n * stride);
        self.for_each_chunk(|chunk| {
            let take = (n * stride - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            Ok(head.len() < n * stride)
        })?;
        Ok(Tensor::f_from_slice(&head)?
            .f_view([n as i64, stride as i64])?
            .f_to_device(self.device)?)
    }

    /// Standardizes the inputs `cols` (on [-1, 1]): input `cols[c]` becomes `(u - m) / s` for
    /// `(m, s) = moments[c]`, and the rows' input norms are recomputed.
    pub fn standardize(&mut self, cols: &[usize], moments: &[(f64, f64)]) -> Result<()> {
        if self.len == 0 || cols.is_empty() {
            return Ok(());
        }
        self.materialize()?;
        let rows = self.rows();
        for (&j, &(m, s)) in cols.iter().zip(moments) {
            let mut col = rows.narrow(1, j as i64, 1);
            let z = (&col - m).f_div_scalar(s)?;
            col.f_copy_(&z)?;
        }
        let x = rows.narrow(1, 0, self.width as i64);
        let norm = (x.square().sum_dim_intlist(1, true, Kind::Float) + 1.0).sqrt();
        rows.narrow(1, self.width as i64 + 2, 1).f_copy_(&norm)?;
        Ok(())
    }

    /// Clips each input `cols[c].0` to `[cols[c].1, cols[c].2]` and maps it onto [-1, 1] (as
    /// [`crate::features::to_unit`] on the host), before it is standardized; the input norms
    /// are recomputed then.
    pub fn to_unit(&mut self, cols: &[(usize, f64, f64)]) -> Result<()> {
        if self.len == 0 || cols.is_empty() {
            return Ok(());
        }
        self.materialize()?;
        let rows = self.rows();
        for &(j, lo, hi) in cols {
            let mut col = rows.narrow(1, j as i64, 1);
            let half = (hi - lo) / 2.0;
            let u = col
                .to_kind(Kind::Double)
                .f_clamp(lo, hi)?
                .f_sub_scalar(lo + half)?
                .f_div_scalar(half)?
                .to_kind(Kind::Float);
            col.f_copy_(&u)?;
        }
        Ok(())
    }

    /// The sums of `(u, u^2)` of each input of `cols` over all rows, in f64 and row order (as
    /// [`Standardizer::sums`] adds them on the host): `[sum u_1, .., sum u_d, sum u_1^2, ..]`.
    pub fn column_sums(&self, cols: &[usize]) -> Result<Vec<f64>> {
        let d = cols.len();
        let mut sums = vec![0.0; 2 * d];
        if d == 0 {
            return Ok(sums);
        }
        let stride = self.stride();
        self.for_each_chunk(|chunk| {
            for row in chunk.chunks_exact(stride) {
                for (c, &j) in cols.iter().enumerate() {
                    let u = f64::from(row[j]);
                    sums[c] += u;
                    sums[d + c] += u * u;
                }
            }
            Ok(true)
        })?;
        Ok(sums)
    }

    /// The number of rows labelled 1 (labels are 0 or 1).
    pub fn label_sum(&self) -> Result<f64> {
        let (stride, y) = (self.stride(), self.width + 1);
        let mut sum = 0.0;
        self.for_each_chunk(|chunk| {
            sum += chunk
                .chunks_exact(stride)
                .map(|row| f64::from(row[y]))
                .sum::<f64>();
            Ok(true)
        })?;
        Ok(sum)
    }
}

/// The part files worker `worker` of `workers` owns: the `worker`-th of `workers` contiguous,
/// near-equal blocks of the part list. Blocks keep the global order of training examples (part
/// order, then record order) contiguous, so each worker's examples are one range of it, and that
/// order, like the sample drawn from it, does not depend on the number of workers.
pub fn share_of(parts: usize, worker: usize, workers: usize) -> Range<usize> {
    worker * parts / workers..(worker + 1) * parts / workers
}

/// What loading a run's records takes ([`crate::TrainConfig::data_spec`]), in the order the
/// records go through it: where they are, their privacy unit (and its bound on rows), the
/// feature transform, the split.
#[derive(Debug, Clone)]
pub struct DataSpec {
    /// The shards.
    pub location: Location,
    /// How S3 shards are reached.
    pub s3: shards::S3Options,
    /// Share of records (of units) held out.
    pub test_fraction: f64,
    /// Seed of the split.
    pub split_seed: u64,
    /// The feature transform.
    pub features: FeatureSpec,
    /// `--privacy-unit`: the unit column the shards must have been written with (`None`: the
    /// shards' own).
    pub privacy_unit: Option<String>,
    /// `--max-rows-per-unit` (`None`: the shards' own bound).
    pub max_rows_per_unit: Option<u32>,
}

/// A run's privacy unit, when it is not one line: the column whose value makes rows one unit,
/// and the public bound on a unit's rows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Units {
    /// The unit's column (as the shards were written with `--privacy-unit`).
    pub column: String,
    /// At most this many rows a unit (its smallest keys); `None`: no bound.
    pub max_rows: Option<u32>,
}

impl Units {
    /// The unit of shards with `unit_name` (in their header) and the bound `written_cap` their
    /// manifest records, for a run asking for `wanted` and `wanted_cap`.
    pub fn resolve(
        location: &Location,
        unit_name: Option<&str>,
        written_cap: Option<u32>,
        wanted: Option<&str>,
        wanted_cap: Option<u32>,
    ) -> Result<Option<Units>> {
        let bad = |reason: String| {
            Err(Error::Data {
                location: location.to_string(),
                reason,
            })
        };
        let column = match (unit_name, wanted) {
            (None, None) => {
                if wanted_cap.is_some() {
                    return Err(Error::Config(
                        "--max-rows-per-unit bounds the rows of a privacy unit, and these shards                          have none (each line is its own unit): write them with `pipeline                          --privacy-unit COLUMN`"
                            .into(),
                    ));
                }
                return Ok(None);
            }
            (None, Some(w)) => {
                return bad(format!(
                    "--privacy-unit {w}: these shards were written without a privacy unit, so                      each line is its own unit and a {w}'s rows may sit apart; write them again                      with `pipeline --privacy-unit {w}` (or mapper --privacy-unit {w})"
                ));
            }
            (Some(u), Some(w)) if u != w => {
                return bad(format!(
                    "--privacy-unit {w}: these shards were written with --privacy-unit {u}"
                ));
            }
            (Some(u), _) => u.to_string(),
        };
        let max_rows = match (written_cap, wanted_cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Some(Units { column, max_rows }))
    }
}

/// Keeps, of each unit of `table` with more than `k` rows, the `k` with the smallest keys (the
/// writers' rule, docs/design.md "At most K rows a unit"); returns the rows let go.
pub fn cap_units(table: &mut Table, k: u32) -> usize {
    if table.units.is_empty() {
        return 0;
    }
    let mut by_unit: std::collections::HashMap<u64, Vec<u64>> = Default::default();
    for (&u, &key) in table.units.iter().zip(&table.keys) {
        by_unit.entry(u).or_default().push(key);
    }
    let largest: std::collections::HashMap<u64, u64> = by_unit
        .into_iter()
        .filter(|(_, keys)| keys.len() > k as usize)
        .map(|(u, mut keys)| {
            keys.select_nth_unstable(k as usize - 1);
            (u, keys[k as usize - 1])
        })
        .collect();
    if largest.is_empty() {
        return 0;
    }
    let width = table.width();
    let before = table.len();
    let keep: Vec<bool> = (0..before)
        .map(|i| {
            largest
                .get(&table.units[i])
                .is_none_or(|&l| table.keys[i] <= l)
        })
        .collect();
    let mut at = 0;
    for (i, keep) in keep.into_iter().enumerate() {
        if keep {
            table.keys[at] = table.keys[i];
            table.units[at] = table.units[i];
            table.labels[at] = table.labels[i];
            table
                .features
                .copy_within(i * width..(i + 1) * width, at * width);
            at += 1;
        }
    }
    table.keys.truncate(at);
    table.units.truncate(at);
    table.labels.truncate(at);
    table.features.truncate(at * width);
    before - at
}

/// The training and test splits and the column names.
#[derive(Debug)]
pub struct Data {
    /// Examples trained on (with a privacy unit, each unit's rows together, units in the order
    /// of [`Data::unit_starts`]).
    pub train: Examples,
    /// Held-out examples (may be empty with `--test-fraction 0`).
    pub test: Examples,
    /// The record keys of the training examples, in their order.
    pub train_keys: Vec<u64>,
    /// The run's privacy unit, when it is not one line.
    pub units: Option<Units>,
    /// With units: where each training unit's rows start in `train`, and the end (one more
    /// entry than units). Empty without units: each row is its own unit.
    pub unit_starts: Vec<usize>,
    /// A hash of the whole dataset's listing (every part's name and size, and the manifest but
    /// for the input's path), the same in every process that reads the same shards, and for the
    /// same file preprocessed from another directory (0 for a table split in memory).
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
    /// The inputs bounded by DP quantiles (as they are until the release).
    pub bounded: Vec<usize>,
    /// For each of them, in order, [`crate::mechanism::quantiles::counts`] of this share's
    /// training values on the public grid.
    pub bound_counts: Vec<Vec<u64>>,
}

/// A table's rows by split: a record (a unit's records) is in the test split by
/// [`shards::Table::is_test`]; the training rows grouped by unit, units in the order they first
/// appear, each unit's rows in theirs (a unit lies in one part, so this order is the parts' in
/// turn, whichever parts a worker holds); the test rows in table order.
struct Rows {
    train: Vec<usize>,
    test: Vec<usize>,
    /// With units: where each unit's rows start in `train`, and the end.
    unit_starts: Vec<usize>,
}

impl Rows {
    fn of(table: &Table, test_fraction: f64, split_seed: u64) -> Rows {
        // Room for every row in both (only what is written is ever touched): the lists grow
        // without being copied and faulted in again at each doubling.
        let n = table.len();
        let (mut train, mut test) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            match table.is_test(i, split_seed, test_fraction) {
                false => train.push(i),
                true => test.push(i),
            }
        }
        let mut unit_starts = Vec::new();
        if !table.units.is_empty() {
            let mut first: std::collections::HashMap<u64, usize> = Default::default();
            for &i in &train {
                let n = first.len();
                first.entry(table.units[i]).or_insert(n);
            }
            train.sort_by_key(|&i| first[&table.units[i]]);
            for (at, &i) in train.iter().enumerate() {
                if at == 0 || table.units[train[at - 1]] != table.units[i] {
                    unit_starts.push(at);
                }
            }
            unit_starts.push(train.len());
        }
        test.sort_unstable();
        Rows {
            train,
            test,
            unit_starts,
        }
    }
}

impl Data {
    /// Reads every shard of `spec` (checking the manifest when there is one) and splits it: a
    /// record (a unit's records) is in the test split by [`shards::Table::is_test`].
    pub fn load(spec: &DataSpec, device: Device) -> Result<Self> {
        let data = Data::load_share(spec, 0, 1, device)?;
        if data.train.is_empty() {
            return Err(Error::Data {
                location: spec.location.to_string(),
                reason: format!(
                    "no training records ({} test records, test fraction {})",
                    data.test.len(),
                    spec.test_fraction
                ),
            });
        }
        Ok(data)
    }

    /// Worker `worker`'s share of the shards of `spec` out of `workers` ([`share_of`]), taken
    /// as [`Data::load`] takes all of them, one way: read, bound each unit's rows, transform
    /// the features, split (either split may be empty here).
    pub fn load_share(
        spec: &DataSpec,
        worker: usize,
        workers: usize,
        device: Device,
    ) -> Result<Self> {
        let location = &spec.location;
        let dataset = open_dataset(location, &spec.s3)?;
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
        let mut table = dataset.load_parts(&indices)?;
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
        let units = Units::resolve(
            location,
            table.unit_name.as_deref(),
            dataset.manifest().and_then(|m| m.options.max_rows_per_unit),
            spec.privacy_unit.as_deref(),
            spec.max_rows_per_unit,
        )?;
        if let Some(k) = units.as_ref().and_then(|u| u.max_rows) {
            cap_units(&mut table, k);
        }
        let t = spec.features.apply(table)?;
        // The split, decided once: the examples and the releases' statistics of the training
        // rows both take these rows.
        let rows = Rows::of(&t.table, spec.test_fraction, spec.split_seed);
        let transform = TransformInfo {
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
                let train: Vec<f32> = rows
                    .train
                    .iter()
                    .flat_map(|&i| t.table.features[i * k..(i + 1) * k].iter().copied())
                    .collect();
                Standardizer::sums(&train, k, &t.standardized)
            },
            bound_counts: if t.bounded.is_empty() {
                Vec::new()
            } else {
                let k = t.table.width();
                let grid: Vec<f32> = crate::mechanism::quantiles::grid()
                    .iter()
                    .map(|&c| c as f32)
                    .collect();
                let rows = rows
                    .train
                    .iter()
                    .map(|&i| &t.table.features[i * k..(i + 1) * k]);
                crate::mechanism::quantiles::column_counts(rows, &t.bounded, &grid)
            },
            bounded: t.bounded,
            unknown: t.unknown,
            standardized: t.standardized,
        };
        // The examples are laid out from the table's own columns, moved, not copied.
        let mut table = t.table;
        let columns = Columns {
            width: table.width(),
            features: std::mem::take(&mut table.features),
            labels: std::mem::take(&mut table.labels),
        };
        let mut data = Data::from_rows(&table, columns, rows, device)?;
        data.units = units;
        data.fingerprint = fingerprint(&dataset);
        data.transform = transform;
        Ok(data)
    }

    /// The same data in tensors of its own (a run may change its examples in place).
    pub fn copy(&self) -> Result<Data> {
        Ok(Data {
            train: self.train.copy()?,
            test: self.test.copy()?,
            train_keys: self.train_keys.clone(),
            units: self.units.clone(),
            unit_starts: self.unit_starts.clone(),
            fingerprint: self.fingerprint,
            label_name: self.label_name.clone(),
            feature_names: self.feature_names.clone(),
            transform: self.transform.clone(),
        })
    }

    /// Splits a loaded table (see [`Data::load`]). With units (the table's records carry
    /// their unit's hash), the training rows are grouped by unit, units in the order they
    /// first appear ([`Data::unit_starts`]), so the global order of units does not depend on
    /// how many workers share the parts.
    pub fn split(
        table: &Table,
        test_fraction: f64,
        split_seed: u64,
        device: Device,
    ) -> Result<Self> {
        let rows = Rows::of(table, test_fraction, split_seed);
        let columns = Columns {
            features: table.features.clone(),
            labels: table.labels.clone(),
            width: table.width(),
        };
        Data::from_rows(table, columns, rows, device)
    }

    /// The examples of `table`'s rows as `rows` splits them, laid out from `columns` (the
    /// table's features and labels).
    fn from_rows(table: &Table, columns: Columns, rows: Rows, device: Device) -> Result<Self> {
        let Rows {
            train,
            test,
            unit_starts,
        } = rows;
        let train_keys = train.iter().map(|&i| table.keys[i]).collect();
        let columns = Arc::new(columns);
        Ok(Data {
            train: Examples::of_rows(Arc::clone(&columns), train, device)?,
            test: Examples::of_rows(columns, test, device)?,
            train_keys,
            units: None,
            unit_starts,
            fingerprint: 0,
            label_name: table.label_name.clone(),
            feature_names: table.feature_names.clone(),
            transform: TransformInfo::default(),
        })
    }

    /// The training rows of `units` (local unit numbers, sorted) into `rows`, and where each
    /// unit's rows start in `rows` (and the end) into `starts`: what a step gathers and clips
    /// by. Without units, each row is its own.
    pub fn unit_rows(&self, units: &[i64], rows: &mut Vec<i64>, starts: &mut Vec<usize>) {
        rows.clear();
        starts.clear();
        if self.unit_starts.is_empty() {
            rows.extend_from_slice(units);
            starts.extend(0..=units.len());
            return;
        }
        starts.push(0);
        for &u in units {
            let (start, end) = (
                self.unit_starts[u as usize],
                self.unit_starts[u as usize + 1],
            );
            rows.extend(start as i64..end as i64);
            starts.push(rows.len());
        }
    }

    /// Number of training units: the sampler's population (rows without units).
    pub fn train_units(&self) -> usize {
        match self.unit_starts.len() {
            0 => self.train.len(),
            n => n - 1,
        }
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

/// The shards at `location` ([`Dataset::open`]), or an error saying what to do when a local
/// directory is not there.
pub fn open_dataset(location: &Location, s3: &shards::S3Options) -> Result<Dataset> {
    if let Location::Local(dir) = location
        && !dir.exists()
    {
        return Err(Error::Data {
            location: location.to_string(),
            reason: "no such directory (write shards there with `pipeline`, or point --data at \
                     them)"
                .into(),
        });
    }
    Ok(Dataset::open(location, s3)?)
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
        // Where the input lay is not the data: the same file preprocessed from another
        // directory, or on another machine, gives the same seeded run.
        let mut manifest = manifest.clone();
        manifest.options.input.clear();
        add(serde_json::to_string(&manifest)
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

    /// Rows built a chunk at a time, from a mapping into a table, are the rows laid out in
    /// one buffer: within one chunk, across several and a partial last one, padding zero, the
    /// mapping followed. Every reader gives the same answer from the columns (before the row
    /// tensor is made) as from the tensor: the host rows (coded, and plain where the rows are
    /// too many to code), the head, the label and column sums.
    #[test]
    fn rows_from_the_columns_are_the_rows_of_the_tensor() {
        let width = 3usize;
        let stride = (width + 3).next_multiple_of(ROW_ALIGN);
        for (n, levels) in [
            (0, 7),
            (1, 7),
            (23, 7),
            (CHUNK_ROWS, 7),
            (2 * CHUNK_ROWS + 7, 7),
            (2 * CHUNK_ROWS + 7, 1_000_003),
        ] {
            let features: Vec<f32> = (0..n * width)
                .map(|i| ((i * 7919) % levels) as f32 - 2.5)
                .collect();
            let labels: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
            let picked: Vec<usize> = (0..n).rev().filter(|i| i % 3 != 1).collect();
            let mut plain = vec![0.0f32; picked.len() * stride];
            for (row, &r) in plain.chunks_exact_mut(stride).zip(&picked) {
                let x = &features[r * width..(r + 1) * width];
                row[..width].copy_from_slice(x);
                row[width] = 1.0;
                row[width + 1] = labels[r];
                row[width + 2] = (x.iter().map(|v| v * v).sum::<f32>() + 1.0).sqrt();
            }
            let columns = Arc::new(Columns {
                features,
                labels,
                width,
            });
            let lazy =
                Examples::of_rows(Arc::clone(&columns), picked.clone(), Device::Cpu).unwrap();
            let laid = Examples::of_rows(columns, picked.clone(), Device::Cpu).unwrap();
            laid.materialize().unwrap();
            assert!(lazy.tensor.get().is_none() && laid.source.borrow().is_none());
            let host = |e: &Examples| {
                let h = e.host_rows().unwrap();
                let mut out = vec![0.0f32; h.len() * stride];
                let idx: Vec<i64> = (0..h.len() as i64).collect();
                h.gather(&idx, &mut out);
                (h.coded(), out)
            };
            let (coded, from_columns) = host(&lazy);
            if n > CHUNK_ROWS {
                assert_eq!(coded, levels < 1000, "{n} rows of {levels} levels");
            }
            assert!(
                from_columns == plain,
                "{n} rows, host rows from the columns"
            );
            assert!(
                host(&laid) == (coded, plain.clone()),
                "{n} rows, host rows from the tensor"
            );
            for e in [&lazy, &laid] {
                let head = Vec::<f32>::try_from(e.head(40).unwrap().reshape([-1])).unwrap();
                assert!(
                    head == plain[..picked.len().min(40) * stride],
                    "{n} rows, head"
                );
                let ones = picked.iter().filter(|&&r| r % 2 == 1).count() as f64;
                assert_eq!(e.label_sum().unwrap(), ones, "{n} rows");
            }
            assert_eq!(
                lazy.column_sums(&[2, 0]).unwrap(),
                laid.column_sums(&[2, 0]).unwrap()
            );
            assert!(lazy.tensor.get().is_none(), "the readers leave the columns");
            assert_eq!(lazy.rows().size(), [picked.len() as i64, stride as i64]);
            let got = Vec::<f32>::try_from(lazy.rows().reshape([-1])).unwrap();
            assert!(got == plain, "{n} rows");
            assert!(lazy.source.borrow().is_none(), "the columns are let go");
        }
    }

    /// A transform with nothing to do (no column to clip or standardize, the usual census run)
    /// leaves the examples in their columns: the row tensor is made only when read.
    #[test]
    fn transforms_with_nothing_to_do_leave_the_columns() {
        let mut e = Examples::new(&[3.0, 0.0, 1.0, 1.0], &[1.0, 0.0], 2, Device::Cpu).unwrap();
        e.to_unit(&[]).unwrap();
        e.standardize(&[], &[]).unwrap();
        assert_eq!(e.column_sums(&[0]).unwrap(), [4.0, 10.0]);
        assert!(e.tensor.get().is_none() && e.source.borrow().is_some());
        e.to_unit(&[(0, 0.0, 2.0)]).unwrap();
        assert!(e.tensor.get().is_some() && e.source.borrow().is_none());
        assert_eq!(e.column_sums(&[0]).unwrap(), [1.0, 1.0]);
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

    /// 40 units of 1 to 7 rows, records keyed as the pipeline keys them.
    fn unit_table() -> Table {
        let mut t = Table {
            label_name: "employed".into(),
            feature_names: vec!["a".into()],
            unit_name: Some("household".into()),
            ..Table::default()
        };
        let mut ranks: std::collections::HashMap<String, u64> = Default::default();
        for u in 0..40u64 {
            let unit = shards::keys::unit_hash(u.to_string().as_bytes());
            for r in 0..1 + u % 7 {
                let content = format!("{unit},{},{}", r % 2, r % 3);
                let rank = ranks.entry(content.clone()).or_insert(0);
                *rank += 1;
                let h = shards::keys::content_hash(content.as_bytes());
                let key = shards::keys::record_key(h, *rank - 1);
                t.keys.push(key);
                t.units.push(unit);
                t.labels.push((r % 2) as f32);
                t.features.push((r % 3) as f32);
            }
        }
        t
    }

    /// A unit over the cap keeps its K smallest keys (the writers' rule), the same rows
    /// whatever order they come in.
    #[test]
    fn capping_keeps_each_units_smallest_keys() {
        let full = unit_table();
        let mut capped = full.clone();
        let gone = cap_units(&mut capped, 3);
        let over: usize = (0..40u64)
            .map(|u| (1 + u % 7).saturating_sub(3) as usize)
            .sum();
        assert_eq!(gone, over);
        let mut by_unit: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        for (k, u) in full.keys.iter().zip(&full.units) {
            by_unit.entry(*u).or_default().push(*k);
        }
        let mut want: Vec<u64> = by_unit
            .values_mut()
            .flat_map(|keys| {
                keys.sort_unstable();
                keys[..keys.len().min(3)].to_vec()
            })
            .collect();
        want.sort_unstable();
        let mut got = capped.keys.clone();
        got.sort_unstable();
        assert_eq!(got, want);
        // Reversed input order: the same rows kept.
        let mut reversed = full.clone();
        reversed.keys.reverse();
        reversed.units.reverse();
        reversed.labels.reverse();
        reversed.features.reverse();
        cap_units(&mut reversed, 3);
        let mut again = reversed.keys.clone();
        again.sort_unstable();
        assert_eq!(again, want);
        // Features stay with their records.
        for i in 0..capped.len() {
            let j = full.keys.iter().position(|&k| k == capped.keys[i]).unwrap();
            assert_eq!(capped.features[i], full.features[j]);
            assert_eq!(capped.units[i], full.units[j]);
        }
    }

    /// With units, each unit's rows are on one side of the split and together in the training
    /// rows; a step's units expand to exactly their rows.
    #[test]
    fn units_are_split_and_kept_together() {
        let t = unit_table();
        let d = Data::split(&t, 0.25, 3, Device::Cpu).unwrap();
        assert_eq!(d.train.len() + d.test.len(), t.len());
        let test_units = (0..t.len())
            .filter(|&i| t.is_test(i, 3, 0.25))
            .map(|i| t.units[i])
            .collect::<std::collections::BTreeSet<_>>();
        let train_units = (0..t.len())
            .filter(|&i| !t.is_test(i, 3, 0.25))
            .map(|i| t.units[i])
            .collect::<std::collections::BTreeSet<_>>();
        assert!(test_units.is_disjoint(&train_units));
        assert_eq!(d.train_units(), train_units.len());
        assert_eq!(*d.unit_starts.last().unwrap(), d.train.len());
        // Each training unit's rows are one run of the training keys.
        let unit_of_key: std::collections::HashMap<u64, u64> = t
            .keys
            .iter()
            .copied()
            .zip(t.units.iter().copied())
            .collect();
        for w in d.unit_starts.windows(2) {
            let units: std::collections::BTreeSet<u64> = d.train_keys[w[0]..w[1]]
                .iter()
                .map(|k| unit_of_key[k])
                .collect();
            assert_eq!(units.len(), 1);
        }
        let (mut rows, mut starts) = (Vec::new(), Vec::new());
        d.unit_rows(&[0, 2], &mut rows, &mut starts);
        let (a, b) = (
            d.unit_starts[1] - d.unit_starts[0],
            d.unit_starts[3] - d.unit_starts[2],
        );
        assert_eq!(rows.len(), a + b);
        // Unit u of the batch is rows[starts[u]..starts[u + 1]].
        assert_eq!(starts, [0, a, a + b]);
        let first = d.unit_starts[2] as i64;
        assert_eq!(rows[a..], (first..first + b as i64).collect::<Vec<_>>());
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
    /// The fingerprint (which keys a seeded run's sampler and noise) is the data's: the same
    /// file preprocessed from two directories gives the same one, a file with one value
    /// changed another.
    #[test]
    fn the_fingerprint_is_the_datas_not_where_it_lay() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("input.csv");
        pipeline::generate(&pipeline::GenerateConfig {
            households: false,
            rows: 300,
            seed: 4,
            na_rate: 0.0,
            output: Location::Local(csv.clone()),
            overwrite: true,
            s3: Default::default(),
        })
        .unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut changed: Vec<String> = text.lines().map(String::from).collect();
        let last = changed.last_mut().unwrap();
        // The first column, `sex`, is a feature (the last one is in no shard).
        let flipped = if last.starts_with('0') { "1" } else { "0" };
        last.replace_range(..1, flipped);
        let fingerprint_of = |name: &str, content: &str| {
            let sub = dir.path().join(name);
            std::fs::create_dir(&sub).unwrap();
            let input = sub.join("census.csv");
            std::fs::write(&input, content).unwrap();
            let out = sub.join("shards");
            pipeline::run(&pipeline::RunConfig {
                shards: 3,
                ..pipeline::RunConfig::new(Location::Local(input), Location::Local(out.clone()))
            })
            .unwrap();
            fingerprint(&Dataset::open(&Location::Local(out), &Default::default()).unwrap())
        };
        let a = fingerprint_of("a", &text);
        assert_eq!(a, fingerprint_of("b", &text));
        assert_ne!(a, fingerprint_of("c", &(changed.join("\n") + "\n")));
    }
}
