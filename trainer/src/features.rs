//! The feature spec: public bounds (clip, scale to [0, 1]), public categories (one-hot), and
//! standardization by noisy estimates, applied to every record before the split so training,
//! evaluation and the card all see the same transform.
//!
//! Public bounds and levels cost no privacy: they are given, not computed from the records.
//! Standardization needs each column's mean and variance; those are released by the Gaussian
//! mechanism on the training split ([`Standardizer`]) and composed with DP-SGD's steps in the
//! run's accountant (trainer/README.md, "Preprocessing inside the budget").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shards::Table;

use crate::mechanism::quantiles::{QuantileSpec, ReleasedBounds};
use crate::{Error, Result};

/// What a categorical column does with a value outside its levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// The record is left out (of training and of testing), and counted.
    Drop,
    /// The record gets a 1 in the column's `=other` input, and is counted.
    Other,
}

/// How one input column becomes model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ColumnSpec {
    /// Public bounds: clipped to `[lo, hi]`, then scaled to [0, 1] by `(x - lo) / (hi - lo)`.
    Bounds {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// Public levels: one input `name=level` per level (1 when the value is that level), and
    /// with [`Unknown::Other`] one more, `name=other`.
    Categories {
        /// The levels, in input order.
        levels: Vec<f64>,
        /// What a value outside them does.
        unknown: Unknown,
    },
    /// A coarse public range: clipped to `[lo, hi]`, then standardized by a noisy mean and
    /// standard deviation of the clipped training values ([`Standardizer`]).
    Standardize {
        /// Lower end of the range.
        lo: f64,
        /// Upper end of the range.
        hi: f64,
    },
}

/// The transform of every column the spec names (other columns pass through unchanged).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Column name -> transform.
    pub columns: BTreeMap<String, ColumnSpec>,
    /// The Gaussian mechanism's noise multiplier for the standardized columns' statistics
    /// (noise std over the L2 sensitivity of what it releases).
    pub standardize_noise: f64,
    /// The columns the spec does not name: with this, each gets bounds from two DP quantiles
    /// ([`crate::mechanism::quantiles`]) and, unless both lie within [0, 1], is clipped to them
    /// and standardized like a `standardize` column; `None` (the seed's way): they are used as
    /// they are.
    #[serde(default)]
    pub auto_bounds: Option<QuantileSpec>,
}

/// The default [`FeatureSpec::standardize_noise`].
pub const DEFAULT_STANDARDIZE_NOISE: f64 = 10.0;

/// A spec file: `{"bounds": {"age": [18, 100]}, "categories": {"educ": {"levels": [1, 2],
/// "unknown": "other"}}, "standardize": {"income": [-20000, 1000000]}}` (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default, deserialize_with = "unique_columns")]
    bounds: BTreeMap<String, (f64, f64)>,
    #[serde(default, deserialize_with = "unique_columns")]
    categories: BTreeMap<String, FileCategories>,
    #[serde(default, deserialize_with = "unique_columns")]
    standardize: BTreeMap<String, (f64, f64)>,
}

/// A JSON object of column names, refusing a name given twice (JSON allows it, and a map would
/// silently keep the last).
fn unique_columns<'de, D, V>(d: D) -> std::result::Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Columns<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Columns<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object of column names")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, V>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "the column '{name}' is named twice"
                    )));
                }
                out.insert(name, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Columns(std::marker::PhantomData))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCategories {
    levels: Vec<f64>,
    #[serde(default = "drop")]
    unknown: Unknown,
}

fn drop() -> Unknown {
    Unknown::Drop
}

impl FeatureSpec {
    /// No transform (every column as it is), with the default noise for standardization.
    pub fn new() -> Self {
        FeatureSpec {
            columns: BTreeMap::new(),
            standardize_noise: DEFAULT_STANDARDIZE_NOISE,
            auto_bounds: None,
        }
    }

    /// Whether the spec names no column.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The columns standardized by noisy estimates.
    pub fn standardized(&self) -> impl Iterator<Item = (&str, f64, f64)> {
        self.columns.iter().filter_map(|(n, c)| match c {
            ColumnSpec::Standardize { lo, hi } => Some((n.as_str(), *lo, *hi)),
            _ => None,
        })
    }

    /// The noise multiplier of the Gaussian release the spec needs on data with `features`
    /// (`None` when no column is standardized, nor bounded by DP quantiles: a bounded column
    /// may need it, which is known only after its release, so it is declared beforehand).
    pub fn gaussian_release(&self, features: &[String]) -> Option<f64> {
        (self.standardized().next().is_some() || !self.bounded(features).is_empty())
            .then_some(self.standardize_noise)
    }

    /// The columns of `features` that get DP quantile bounds: those the spec does not name,
    /// when [`FeatureSpec::auto_bounds`] is set.
    pub fn bounded<'a>(&self, features: &'a [String]) -> Vec<&'a str> {
        match self.auto_bounds {
            Some(_) => features
                .iter()
                .filter(|f| !self.columns.contains_key(*f))
                .map(String::as_str)
                .collect(),
            None => Vec::new(),
        }
    }

    fn add(&mut self, source: &str, name: &str, spec: ColumnSpec) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("{source} '{name}': {m}")));
        if name.is_empty() {
            return bad("no column name".into());
        }
        match &spec {
            ColumnSpec::Bounds { lo, hi } | ColumnSpec::Standardize { lo, hi } => {
                if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                    return bad(format!("bounds {lo}:{hi} must be finite with lo < hi"));
                }
            }
            ColumnSpec::Categories { levels, .. } => {
                if levels.is_empty() {
                    return bad("no levels".into());
                }
                if levels.len() > 4096 {
                    return bad(format!("{} levels; the limit is 4096", levels.len()));
                }
                if let Some(l) = levels.iter().find(|l| !l.is_finite()) {
                    return bad(format!("level {l} must be finite"));
                }
                let mut sorted = levels.clone();
                sorted.sort_by(f64::total_cmp);
                if sorted.windows(2).any(|w| w[0] == w[1]) {
                    return bad("a level is listed twice".into());
                }
            }
        }
        if self.columns.insert(name.to_string(), spec).is_some() {
            return bad("the column has two specs".into());
        }
        Ok(())
    }

    /// Adds `--feature-bounds age=18:100,income=-20000:1000000`.
    pub fn add_bounds(&mut self, flag: &str) -> Result<()> {
        for (name, value) in pairs("--feature-bounds", flag)? {
            let (lo, hi) = range("--feature-bounds", name, value)?;
            self.add("--feature-bounds", name, ColumnSpec::Bounds { lo, hi })?;
        }
        Ok(())
    }

    /// Adds `--standardize income=-100000:2000000` (coarse public ranges).
    pub fn add_standardize(&mut self, flag: &str) -> Result<()> {
        for (name, value) in pairs("--standardize", flag)? {
            let (lo, hi) = range("--standardize", name, value)?;
            self.add("--standardize", name, ColumnSpec::Standardize { lo, hi })?;
        }
        Ok(())
    }

    /// Adds `--feature-categories educ=1..16:other,sex=0|1`: levels as an integer range `a..b`
    /// (both ends included) or a `|`-separated list, then `:drop` (the default) or `:other`.
    pub fn add_categories(&mut self, flag: &str) -> Result<()> {
        const FLAG: &str = "--feature-categories";
        for (name, value) in pairs(FLAG, flag)? {
            let bad = |m: String| Error::Config(format!("{FLAG} '{name}={value}': {m}"));
            let (levels, unknown) = match value.rsplit_once(':') {
                Some((l, "drop")) => (l, Unknown::Drop),
                Some((l, "other")) => (l, Unknown::Other),
                Some((_, u)) => return Err(bad(format!("'{u}' is not drop or other"))),
                None => (value, Unknown::Drop),
            };
            let levels: Vec<f64> = match levels.split_once("..") {
                Some((a, b)) => {
                    let int = |s: &str| {
                        s.trim()
                            .parse::<i64>()
                            .map_err(|_| bad(format!("'{s}' is not an integer")))
                    };
                    let (a, b) = (int(a)?, int(b)?);
                    if b < a || b - a >= 4096 {
                        return Err(bad(format!("{a}..{b} is not a range of 1 to 4096 levels")));
                    }
                    (a..=b).map(|v| v as f64).collect()
                }
                None => levels
                    .split('|')
                    .map(|s| {
                        s.trim()
                            .parse::<f64>()
                            .map_err(|_| bad(format!("'{s}' is not a number")))
                    })
                    .collect::<Result<_>>()?,
            };
            self.add(FLAG, name, ColumnSpec::Categories { levels, unknown })?;
        }
        Ok(())
    }

    /// Adds the columns of a spec file's JSON text (`path` names it in errors).
    pub fn add_file(&mut self, path: &str, text: &str) -> Result<()> {
        let source = format!("--feature-spec {path}");
        let file: SpecFile =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("{source}: {e}")))?;
        for (name, (lo, hi)) in file.bounds {
            self.add(&source, &name, ColumnSpec::Bounds { lo, hi })?;
        }
        for (name, c) in file.categories {
            let spec = ColumnSpec::Categories {
                levels: c.levels,
                unknown: c.unknown,
            };
            self.add(&source, &name, spec)?;
        }
        for (name, (lo, hi)) in file.standardize {
            self.add(&source, &name, ColumnSpec::Standardize { lo, hi })?;
        }
        Ok(())
    }

    /// Transforms `table` (every record of it, before the split): the output's features are
    /// the model's inputs. Errors name a spec column that is not a feature of the data.
    ///
    /// Without categorical columns every record is kept and has as many inputs as features, so
    /// the rows are transformed in place (at 1.2M census rows, 57 MB less to allocate and fault
    /// in at start); with them a new table is built. Both run the same transform of a row.
    pub fn apply(&self, mut table: Table) -> Result<Transformed> {
        for name in self.columns.keys() {
            if !table.feature_names.contains(name) {
                return Err(Error::Config(format!(
                    "the feature spec names '{name}', which is not a feature of the data{}; its \
                     features are: {}",
                    if *name == table.label_name {
                        " (it is the label)"
                    } else {
                        ""
                    },
                    table.feature_names.join(", ")
                )));
            }
        }
        let k = table.width();
        let specs: Vec<Option<&ColumnSpec>> = table
            .feature_names
            .iter()
            .map(|n| self.columns.get(n))
            .collect();
        let mut names = Vec::new();
        let mut raw = Vec::new();
        let mut bounded = Vec::new();
        let mut standardized = Vec::new();
        for (name, spec) in table.feature_names.iter().zip(&specs) {
            match spec {
                None if self.auto_bounds.is_some() => {
                    bounded.push(names.len());
                    names.push(name.clone());
                }
                None => {
                    raw.push(names.len());
                    names.push(name.clone());
                }
                Some(ColumnSpec::Bounds { .. }) => names.push(name.clone()),
                Some(ColumnSpec::Standardize { .. }) => {
                    standardized.push(names.len());
                    names.push(name.clone());
                }
                Some(ColumnSpec::Categories { levels, unknown }) => {
                    names.extend(levels.iter().map(|l| format!("{name}={l}")));
                    if *unknown == Unknown::Other {
                        names.push(format!("{name}=other"));
                    }
                }
            }
        }
        let width = names.len();
        let mut unknown = vec![0u64; k];
        let mut row = Vec::with_capacity(width);
        // The model's inputs of a record's features `x` into `row`; false: the record is dropped.
        let mut transform = |x: &[f32], row: &mut Vec<f32>| {
            row.clear();
            for (j, (&x, spec)) in x.iter().zip(&specs).enumerate() {
                match spec {
                    None => row.push(x),
                    Some(ColumnSpec::Bounds { lo, hi }) => {
                        row.push(((f64::from(x).clamp(*lo, *hi) - lo) / (hi - lo)) as f32)
                    }
                    Some(ColumnSpec::Standardize { lo, hi }) => row.push(to_unit(x, *lo, *hi)),
                    Some(ColumnSpec::Categories { levels, unknown: u }) => {
                        let hit = levels.iter().position(|&l| l as f32 == x);
                        if hit.is_none() {
                            unknown[j] += 1;
                            if *u == Unknown::Drop {
                                return false;
                            }
                        }
                        row.extend(
                            levels.iter().enumerate().map(
                                |(l, _)| {
                                    if hit == Some(l) { 1.0 } else { 0.0 }
                                },
                            ),
                        );
                        if *u == Unknown::Other {
                            row.push(if hit.is_none() { 1.0 } else { 0.0 });
                        }
                    }
                }
            }
            true
        };
        let input_names = std::mem::take(&mut table.feature_names);
        let categorical = specs
            .iter()
            .any(|s| matches!(s, Some(ColumnSpec::Categories { .. })));
        let out = if categorical {
            let mut out = Table {
                label_name: table.label_name.clone(),
                feature_names: names,
                keys: Vec::with_capacity(table.len()),
                units: Vec::with_capacity(table.units.len()),
                unit_name: table.unit_name.clone(),
                labels: Vec::with_capacity(table.len()),
                features: Vec::with_capacity(table.len() * width),
            };
            for i in 0..table.len() {
                if transform(&table.features[i * k..(i + 1) * k], &mut row) {
                    out.features.extend_from_slice(&row);
                    out.keys.push(table.keys[i]);
                    out.units.extend(table.units.get(i));
                    out.labels.push(table.labels[i]);
                }
            }
            out
        } else {
            debug_assert_eq!(width, k, "a column in, a column out");
            for x in table.features.chunks_exact_mut(k) {
                let kept = transform(x, &mut row);
                debug_assert!(kept, "only a categorical column drops records");
                x.copy_from_slice(&row);
            }
            Table {
                feature_names: names,
                ..table
            }
        };
        let unknown = input_names
            .iter()
            .zip(unknown)
            .zip(&specs)
            .filter_map(|((n, c), s)| match s {
                Some(ColumnSpec::Categories { unknown, .. }) => Some((n.clone(), *unknown, c)),
                _ => None,
            })
            .collect();
        let out_of_range = raw
            .iter()
            .map(|&j| {
                (0..out.len()).any(|i| {
                    let x = out.features[i * width + j];
                    !(0.0..=1.0).contains(&x)
                })
            })
            .collect();
        Ok(Transformed {
            table: out,
            unknown,
            raw,
            out_of_range,
            bounded,
            standardized,
        })
    }
}

impl FeatureSpec {
    /// The whole transform on the host, as a trained model expects its inputs: [`apply`],
    /// then each column bounded by DP quantiles clipped to its released bounds `bounds` (the
    /// card's `feature_transform.bounds_release`) and mapped onto [-1, 1] (unless used as it
    /// is), then, for the standardized columns, `(u - mean) / std` from the run's release `release`
    /// (the card's `feature_transform.standardization_release`). What the trainer does to the
    /// test split, for scoring new records with a released model.
    ///
    /// [`apply`]: FeatureSpec::apply
    pub fn apply_with(
        &self,
        table: Table,
        release: Option<&Standardizer>,
        bounds: &[ReleasedBounds],
    ) -> Result<Table> {
        let mut t = self.apply(table)?;
        let wide = bounded_wide(&t.table.feature_names, &t.bounded, bounds)?;
        let width = t.table.width();
        for row in t.table.features.chunks_exact_mut(width) {
            for &(j, lo, hi) in &wide {
                row[j] = to_unit(row[j], lo, hi);
            }
        }
        let cols: Vec<usize> = t
            .standardized
            .iter()
            .copied()
            .chain(wide.iter().map(|w| w.0))
            .collect();
        if cols.is_empty() {
            return Ok(t.table);
        }
        let release = release.ok_or_else(|| {
            Error::Config(
                "the spec standardizes columns: the run's standardization release is needed".into(),
            )
        })?;
        let moments = release.unit_moments();
        if moments.len() != cols.len() {
            return Err(Error::Config(format!(
                "the release has {} standardized columns, the spec and bounds {}",
                moments.len(),
                cols.len()
            )));
        }
        for row in t.table.features.chunks_exact_mut(width) {
            for (&j, &(m, s)) in cols.iter().zip(&moments) {
                row[j] = ((f64::from(row[j]) - m) / s) as f32;
            }
        }
        t.standardized = cols;
        Ok(t.table)
    }
}

/// The columns of `bounded` (output positions, names in `names`) that `bounds` clips and
/// standardizes (those not used as they are), with their bounds; an error when a bounded column
/// has no released bounds.
pub fn bounded_wide(
    names: &[String],
    bounded: &[usize],
    bounds: &[ReleasedBounds],
) -> Result<Vec<(usize, f64, f64)>> {
    let mut wide = Vec::new();
    for &j in bounded {
        let b = bounds.iter().find(|b| b.name == names[j]).ok_or_else(|| {
            Error::Config(format!(
                "column '{}' is bounded by DP quantiles, and the release has no bounds for it",
                names[j]
            ))
        })?;
        if !b.as_is() {
            wide.push((j, b.lo, if b.hi > b.lo { b.hi } else { b.lo + 1.0 }));
        }
    }
    Ok(wide)
}

/// `x` clipped to `[lo, hi]` and mapped onto [-1, 1] (the centre of the range to 0).
pub fn to_unit(x: f32, lo: f64, hi: f64) -> f32 {
    let half = (hi - lo) / 2.0;
    ((f64::from(x).clamp(lo, hi) - (lo + half)) / half) as f32
}

/// `a=x,b=y` -> [(a, x), (b, y)].
fn pairs<'a>(flag: &str, s: &'a str) -> Result<Vec<(&'a str, &'a str)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| Error::Config(format!("{flag} '{p}': expected NAME=VALUE")))
        })
        .collect()
}

/// `lo:hi` (either may be negative).
fn range(flag: &str, name: &str, s: &str) -> Result<(f64, f64)> {
    let bad = || Error::Config(format!("{flag} '{name}={s}': expected LO:HI, two numbers"));
    let (lo, hi) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    ))
}

/// A table after [`FeatureSpec::apply`], and what the operator is told about it.
#[derive(Debug)]
pub struct Transformed {
    /// The records kept, with the model's inputs as features.
    pub table: Table,
    /// Each categorical column, its unknown-level policy and how many records had a value
    /// outside its levels (an exact count: for the operator, never for the card).
    pub unknown: Vec<(String, Unknown, u64)>,
    /// The output columns passed through untransformed.
    pub raw: Vec<usize>,
    /// For each of `raw`: whether a value lies outside [0, 1].
    pub out_of_range: Vec<bool>,
    /// The output columns that get DP quantile bounds (their values as they are here).
    pub bounded: Vec<usize>,
    /// The output columns standardized by noisy estimates (their values are on [-1, 1] here).
    pub standardized: Vec<usize>,
}

/// The noisy statistics of the standardized columns and what they cost.
///
/// Each standardized value is first clipped to its public range `[lo, hi]` and mapped onto
/// `u = (x - (lo + hi) / 2) / ((hi - lo) / 2)` in [-1, 1]. The release is the vector
/// `(n, sum u_1, .., sum u_d, sum u_1^2, .., sum u_d^2)` over the training split plus
/// Gaussian noise of std `sigma * sqrt(1 + 2d)`: adding or removing one record changes it by
/// `(1, u_1, .., u_d, u_1^2, .., u_d^2)`, whose L2 norm is at most `sqrt(1 + 2d)` since every
/// `|u_j| <= 1`. That is one Gaussian mechanism of noise multiplier `sigma`, released once.
/// Means and variances are post-processing of the noisy vector (the noisy count is the
/// denominator, so no exact count is used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// The Gaussian mechanism's noise multiplier.
    pub noise_multiplier: f64,
    /// Its L2 sensitivity, `K sqrt(1 + 2d)` for units of at most K rows (K = 1 for a line).
    pub sensitivity: f64,
    /// The noisy released vector `(n, sums, sums of squares)` (the card shows these).
    pub noisy_sums: Vec<f64>,
    /// The columns, in the vector's order, and the ranges their values were clipped to
    /// (public, or released by DP quantiles); empty in releases of earlier versions, whose
    /// columns are the spec's standardized ones.
    #[serde(default)]
    pub columns: Vec<StandardizedRange>,
}

/// A standardized column and the range its values were clipped to and mapped onto [-1, 1] from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandardizedRange {
    /// The column.
    pub name: String,
    /// The range's lower end.
    pub lo: f64,
    /// Its upper end.
    pub hi: f64,
}

/// The smallest standard deviation of a standardized column, as a share of its range's half
/// width (a noisy variance can be near zero or negative).
const MIN_STD: f64 = 0.01;

impl Standardizer {
    /// The L2 sensitivity of the released vector for `d` columns when one privacy unit has
    /// at most `rows_per_unit` rows: each row moves it by at most `sqrt(1 + 2d)`, so a unit by
    /// at most K times that.
    pub fn sensitivity(d: usize, rows_per_unit: u32) -> f64 {
        f64::from(rows_per_unit) * (1.0 + 2.0 * d as f64).sqrt()
    }

    /// Exact sums over `rows` of a table's training records (`(1, u, u^2)` per record, the
    /// standardized columns `cols`): the mechanism's input, to be added up over the workers.
    pub fn sums(features: &[f32], width: usize, cols: &[usize]) -> Vec<f64> {
        let d = cols.len();
        let mut s = vec![0.0f64; 1 + 2 * d];
        for row in features.chunks_exact(width) {
            s[0] += 1.0;
            for (c, &j) in cols.iter().enumerate() {
                let u = f64::from(row[j]);
                s[1 + c] += u;
                s[1 + d + c] += u * u;
            }
        }
        s
    }

    /// The mean and standard deviation of each column on [-1, 1], from the noisy vector.
    pub fn unit_moments(&self) -> Vec<(f64, f64)> {
        let d = (self.noisy_sums.len() - 1) / 2;
        let n = self.noisy_sums[0].max(1.0);
        (0..d)
            .map(|c| {
                let mean = (self.noisy_sums[1 + c] / n).clamp(-1.0, 1.0);
                let square = (self.noisy_sums[1 + d + c] / n).clamp(0.0, 1.0);
                (mean, (square - mean * mean).max(MIN_STD * MIN_STD).sqrt())
            })
            .collect()
    }

    /// The card's view: each standardized column's range and noisy mean and standard
    /// deviation in the column's own units.
    pub fn card(&self, spec: &FeatureSpec) -> Vec<StandardizedColumn> {
        let ranges: Vec<(&str, f64, f64)> = if self.columns.is_empty() {
            spec.standardized().collect()
        } else {
            self.columns
                .iter()
                .map(|c| (c.name.as_str(), c.lo, c.hi))
                .collect()
        };
        ranges
            .into_iter()
            .zip(self.unit_moments())
            .map(|((name, lo, hi), (mean, std))| {
                let half = (hi - lo) / 2.0;
                StandardizedColumn {
                    name: name.to_string(),
                    lo,
                    hi,
                    noisy_mean: lo + half + half * mean,
                    noisy_std: half * std,
                }
            })
            .collect()
    }
}

/// One standardized column as the card states it: the model's input is
/// `(clip(x, lo, hi) - noisy_mean) / noisy_std`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StandardizedColumn {
    /// The column.
    pub name: String,
    /// The public range's lower end.
    pub lo: f64,
    /// Its upper end.
    pub hi: f64,
    /// The noisy mean of the clipped values.
    pub noisy_mean: f64,
    /// The noisy standard deviation of the clipped values.
    pub noisy_std: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            label_name: "employed".into(),
            feature_names: vec!["age".into(), "educ".into(), "sex".into(), "income".into()],
            keys: vec![0, 10, 20, 30],
            labels: vec![1.0, 0.0, 1.0, 0.0],
            features: vec![
                10.0, 1.0, 0.0, 0.0, //
                59.0, 3.0, 1.0, 500.0, //
                200.0, 9.0, 1.0, 2000.0, //
                100.0, 2.0, 0.0, -10.0,
            ],
            ..Table::default()
        }
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let mut s = FeatureSpec::new();
        s.add_bounds("age=18:100, income=-20000:1000000").unwrap();
        s.add_categories("educ=1..3:other,sex=0|1").unwrap();
        assert_eq!(
            s.columns["age"],
            ColumnSpec::Bounds {
                lo: 18.0,
                hi: 100.0
            }
        );
        assert_eq!(
            s.columns["educ"],
            ColumnSpec::Categories {
                levels: vec![1.0, 2.0, 3.0],
                unknown: Unknown::Other
            }
        );
        assert_eq!(
            s.columns["sex"],
            ColumnSpec::Categories {
                levels: vec![0.0, 1.0],
                unknown: Unknown::Drop
            }
        );
        for (f, bad, want) in [
            (0, "age=18", "expected LO:HI"),
            (0, "age=100:18", "lo < hi"),
            (0, "age", "NAME=VALUE"),
            (1, "educ=1..3:maybe", "'maybe' is not drop or other"),
            (1, "educ=1|1", "twice"),
            (1, "educ=a..3", "'a' is not an integer"),
            (2, "x=0:1,x=0:2", "two specs"),
        ] {
            let mut s = FeatureSpec::new();
            let err = match f {
                0 => s.add_bounds(bad),
                1 => s.add_categories(bad),
                _ => s.add_standardize(bad),
            }
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
        let mut s = FeatureSpec::new();
        s.add_bounds("age=0:1").unwrap();
        let err = s.add_standardize("age=0:1").unwrap_err().to_string();
        assert!(err.contains("two specs"), "{err}");
    }

    #[test]
    fn a_spec_file_reads_like_the_flags() {
        let mut a = FeatureSpec::new();
        a.add_file(
            "spec.json",
            r#"{"bounds": {"age": [18, 100]}, "categories": {"educ": {"levels": [1, 2, 3],
            "unknown": "other"}}, "standardize": {"income": [-100, 3000]}}"#,
        )
        .unwrap();
        let mut b = FeatureSpec::new();
        b.add_bounds("age=18:100").unwrap();
        b.add_categories("educ=1..3:other").unwrap();
        b.add_standardize("income=-100:3000").unwrap();
        assert_eq!(a, b);
        let err = FeatureSpec::new()
            .add_file("spec.json", r#"{"bound": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.json") && err.contains("bound"), "{err}");
    }

    /// A column named twice (in one section of a spec file, in two sections, in two flags, or
    /// a section given twice) is refused, never resolved by keeping the last.
    #[test]
    fn a_column_named_twice_is_refused() {
        for (text, said) in [
            (
                r#"{"bounds": {"age": [18, 100], "age": [0, 1]}}"#,
                "'age' is named twice",
            ),
            (
                r#"{"categories": {"educ": {"levels": [1]}, "educ": {"levels": [2]}}}"#,
                "'educ' is named twice",
            ),
            (
                r#"{"standardize": {"inc": [0, 1]}, "bounds": {"inc": [0, 1]}}"#,
                "two specs",
            ),
            (
                r#"{"bounds": {"age": [0, 1]}, "bounds": {"inc": [0, 1]}}"#,
                "duplicate field",
            ),
        ] {
            let err = FeatureSpec::new()
                .add_file("spec.json", text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("spec.json") && err.contains(said),
                "{text}: {err}"
            );
        }
        let err = FeatureSpec::new()
            .add_bounds("age=0:1,age=2:3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("two specs"), "{err}");
    }

    #[test]
    fn bounds_scale_categories_encode_and_unknown_levels_follow_the_spec() {
        let mut s = FeatureSpec::new();
        s.add_bounds("age=18:100").unwrap();
        s.add_categories("educ=1..3:other").unwrap();
        let t = s.apply(table()).unwrap();
        assert_eq!(
            t.table.feature_names,
            [
                "age",
                "educ=1",
                "educ=2",
                "educ=3",
                "educ=other",
                "sex",
                "income"
            ]
        );
        let row = |i: usize| t.table.features[i * 7..(i + 1) * 7].to_vec();
        assert_eq!(row(0), [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(row(1)[..5], [0.5, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(
            row(2)[..5],
            [1.0, 0.0, 0.0, 0.0, 1.0],
            "200 clipped; 9 is other"
        );
        assert_eq!(t.unknown, [("educ".to_string(), Unknown::Other, 1)]);
        assert_eq!(t.raw, [5, 6]);
        assert_eq!(t.out_of_range, [false, true], "income is not in [0, 1]");

        let mut s = FeatureSpec::new();
        s.add_categories("educ=1..3").unwrap();
        let t = s.apply(table()).unwrap();
        assert_eq!(
            t.table.keys,
            [0, 10, 30],
            "the record with educ 9 is dropped"
        );
        assert_eq!(t.table.labels, [1.0, 0.0, 0.0]);
        assert_eq!(t.unknown, [("educ".to_string(), Unknown::Drop, 1)]);
    }

    /// Without a categorical column the rows are transformed where they lie: every record
    /// kept with its key and label, each value as the categorical path transforms it.
    #[test]
    fn a_spec_without_categories_transforms_in_place() {
        let mut s = FeatureSpec::new();
        s.add_bounds("age=18:100").unwrap();
        s.add_standardize("income=0:1000").unwrap();
        let t = s.apply(table()).unwrap();
        assert_eq!(t.table.feature_names, ["age", "educ", "sex", "income"]);
        assert_eq!(t.table.keys, [0, 10, 20, 30]);
        assert_eq!(t.table.labels, [1.0, 0.0, 1.0, 0.0]);
        assert_eq!(
            t.table.features,
            [
                0.0, 1.0, 0.0, -1.0, //
                0.5, 3.0, 1.0, 0.0, //
                1.0, 9.0, 1.0, 1.0, //
                1.0, 2.0, 0.0, -1.0,
            ]
        );
        assert_eq!((t.raw, t.standardized), (vec![1, 2], vec![3]));
        assert_eq!(t.out_of_range, [true, false], "educ is not in [0, 1]");
        // The same columns beside a categorical one (a new table): the same values.
        s.add_categories("sex=0|1").unwrap();
        let built = s.apply(table()).unwrap();
        let kept: Vec<f32> = built
            .table
            .features
            .chunks_exact(5)
            .flat_map(|r| [r[0], r[1], r[4]])
            .collect();
        let in_place: Vec<f32> = t
            .table
            .features
            .chunks_exact(4)
            .flat_map(|r| [r[0], r[1], r[3]])
            .collect();
        assert_eq!(kept, in_place);
    }

    #[test]
    fn a_spec_naming_no_feature_is_refused() {
        let mut s = FeatureSpec::new();
        s.add_bounds("employed=0:1").unwrap();
        let err = s.apply(table()).unwrap_err().to_string();
        assert!(
            err.contains("'employed'") && err.contains("it is the label") && err.contains("age"),
            "{err}"
        );
    }

    /// The host transform of a released model equals what the trainer does on the device.
    #[test]
    fn host_and_device_standardization_agree() {
        let mut s = FeatureSpec::new();
        s.add_standardize("income=0:1000,age=0:120").unwrap();
        s.add_categories("educ=1..3:other").unwrap();
        let t = s.apply(table()).unwrap();
        let st = Standardizer {
            noise_multiplier: 1.0,
            sensitivity: Standardizer::sensitivity(2, 1),
            noisy_sums: vec![4.2, -0.5, 0.7, 2.1, 1.9],
            columns: Vec::new(),
        };
        let k = t.table.width();
        let mut ex =
            crate::data::Examples::new(&t.table.features, &t.table.labels, k, tch::Device::Cpu)
                .unwrap();
        ex.standardize(&t.standardized, &st.unit_moments()).unwrap();
        let device: Vec<f32> =
            Vec::try_from(ex.inputs(ex.rows()).narrow(1, 0, k as i64).reshape([-1])).unwrap();
        let host = s.apply_with(table(), Some(&st), &[]).unwrap();
        assert_eq!(host.feature_names, t.table.feature_names);
        for (a, b) in host.features.iter().zip(&device) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let norms: Vec<f32> = Vec::try_from(ex.input_norms(ex.rows()).reshape([-1])).unwrap();
        for (i, n) in norms.iter().enumerate() {
            let want = (host.features[i * k..(i + 1) * k]
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                + 1.0)
                .sqrt();
            assert!((n - want).abs() < 1e-4, "row {i}: {n} vs {want}");
        }
        assert!(s.apply_with(table(), None, &[]).is_err());
    }

    /// The sums and what the card shows from them (noise-free here, to check the arithmetic).
    #[test]
    fn standardization_sums_and_moments() {
        let mut s = FeatureSpec::new();
        s.add_standardize("income=0:1000").unwrap();
        let t = s.apply(table()).unwrap();
        assert_eq!(t.standardized, [3]);
        // Clipped incomes 0, 500, 1000, 0 -> u = -1, 0, 1, -1.
        let sums = Standardizer::sums(&t.table.features, 4, &t.standardized);
        assert_eq!(sums, [4.0, -1.0, 3.0]);
        let st = Standardizer {
            noise_multiplier: 1.0,
            sensitivity: Standardizer::sensitivity(1, 1),
            noisy_sums: sums,
            columns: Vec::new(),
        };
        assert_eq!(st.sensitivity, 3f64.sqrt());
        let card = st.card(&s);
        assert_eq!(card[0].noisy_mean, 375.0);
        let var: f64 = [0.0f64, 500.0, 1000.0, 0.0]
            .iter()
            .map(|x| (x - 375.0).powi(2))
            .sum::<f64>()
            / 4.0;
        assert!((card[0].noisy_std - var.sqrt()).abs() < 1e-9, "{card:?}");
    }
}
