//! Column selection: which input column is the label and which are the features.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fields::split_names;

/// The columns of the California PUMS extract `CaPUMS5full.csv`.
pub const CAPUMS_COLUMNS: [&str; 12] = [
    "sex",
    "married",
    "black",
    "asian",
    "collegedegree",
    "employed",
    "militaryservice",
    "uscitizen",
    "disability",
    "englishability",
    "blackfemale",
    "targetted",
];

/// The default label column.
pub const DEFAULT_LABEL: &str = "employed";

/// Columns left out of the features unless `--exclude` says otherwise (the seed project's choice).
pub const DEFAULT_EXCLUDE: [&str; 2] = ["blackfemale", "targetted"];

/// The values that mean "missing" unless `--na-values` says otherwise.
pub const DEFAULT_NA_VALUES: [&str; 2] = ["NA", ""];

/// What the user asked for, before it is checked against the input's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaOptions {
    /// The label column.
    pub label: String,
    /// Explicit feature columns, in output order; `None` means every column but the label and
    /// the excluded ones, in input order.
    pub features: Option<Vec<String>>,
    /// Columns to leave out of the default feature list; `None` means [`DEFAULT_EXCLUDE`]
    /// (names absent from the input are then ignored).
    pub exclude: Option<Vec<String>>,
    /// The input's column names, for input without a header line.
    pub columns: Option<Vec<String>>,
    /// Field values that count as missing (compared after unquoting and trimming).
    pub na_values: Vec<String>,
    /// The privacy unit's column (`--privacy-unit`): rows sharing its value are one unit. Never
    /// a feature; `None`: every line is its own unit.
    pub unit: Option<String>,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        SchemaOptions {
            label: DEFAULT_LABEL.to_string(),
            features: None,
            exclude: None,
            columns: None,
            na_values: DEFAULT_NA_VALUES.iter().map(|s| s.to_string()).collect(),
            unit: None,
        }
    }
}

/// The longest header line read (1 MiB): a longer first line is not a header (a file without
/// line ends?), and its columns would only be echoed back in errors.
pub const MAX_HEADER_BYTES: usize = crate::lines::MAX_LINE_BYTES;

/// A resolved schema: the input's columns and the positions of the label and features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// All input column names, in input order.
    pub columns: Vec<String>,
    /// Index of the label column.
    pub label: usize,
    /// Indices of the feature columns, in output order.
    pub features: Vec<usize>,
    /// Values that count as missing.
    pub na_values: Vec<Vec<u8>>,
    /// Index of the privacy unit's column, if any.
    pub unit: Option<usize>,
}

impl Schema {
    /// Resolves the options against a header line (no terminator; quotes and a BOM allowed).
    /// When `options.columns` is set it wins and the line is only used if it has no columns.
    pub fn from_header(header: &[u8], options: &SchemaOptions) -> Result<Schema> {
        match &options.columns {
            Some(cols) => Schema::from_columns(cols.clone(), options),
            None if header.len() > MAX_HEADER_BYTES => Err(Error::HeaderTooLong {
                bytes: header.len(),
                limit: MAX_HEADER_BYTES,
            }),
            None => Schema::from_columns(split_names(header)?, options),
        }
    }

    /// Resolves the options against known column names.
    pub fn from_columns(columns: Vec<String>, options: &SchemaOptions) -> Result<Schema> {
        let mut seen = std::collections::HashSet::with_capacity(columns.len());
        if let Some(c) = columns.iter().find(|c| !seen.insert(c.as_str())) {
            return Err(Error::DuplicateColumn(c.clone()));
        }
        let available = if columns.len() > 40 {
            format!(
                "{},... ({} columns)",
                columns[..40].join(","),
                columns.len()
            )
        } else {
            columns.join(",")
        };
        let find = |role: &'static str, name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| Error::UnknownColumn {
                    role,
                    name: name.to_string(),
                    available: available.clone(),
                })
        };
        let label = find("label", &options.label)?;
        let unit = match &options.unit {
            Some(name) => {
                let i = find("privacy unit", name)?;
                if i == label {
                    return Err(Error::Selection(format!(
                        "'{name}' cannot be both the label and the privacy unit"
                    )));
                }
                Some(i)
            }
            None => None,
        };
        let features = match &options.features {
            Some(names) => {
                if options.exclude.is_some() {
                    return Err(Error::Selection(
                        "give either --features or --exclude, not both".into(),
                    ));
                }
                let mut idx = Vec::with_capacity(names.len());
                for n in names {
                    let i = find("feature", n)?;
                    if i == label {
                        return Err(Error::Selection(format!("'{n}' is both label and feature")));
                    }
                    if idx.contains(&i) {
                        return Err(Error::Selection(format!("feature '{n}' given twice")));
                    }
                    if Some(i) == unit {
                        return Err(Error::Selection(format!(
                            "'{n}' is the privacy unit, which is never a feature"
                        )));
                    }
                    idx.push(i);
                }
                idx
            }
            None => {
                let excluded: Vec<usize> = match &options.exclude {
                    Some(names) => names
                        .iter()
                        .map(|n| find("excluded", n))
                        .collect::<Result<_>>()?,
                    None => DEFAULT_EXCLUDE
                        .iter()
                        .filter_map(|n| columns.iter().position(|c| c == n))
                        .collect(),
                };
                (0..columns.len())
                    .filter(|i| *i != label && Some(*i) != unit && !excluded.contains(i))
                    .collect()
            }
        };
        if features.is_empty() {
            return Err(Error::Selection("no feature columns are left".into()));
        }
        Ok(Schema {
            columns,
            label,
            features,
            na_values: options
                .na_values
                .iter()
                .map(|s| s.trim().as_bytes().to_vec())
                .collect(),
            unit,
        })
    }

    /// The privacy unit column's name, if any.
    pub fn unit_name(&self) -> Option<&str> {
        self.unit.map(|i| self.columns[i].as_str())
    }

    /// The label column's name.
    pub fn label_name(&self) -> &str {
        &self.columns[self.label]
    }

    /// The feature columns' names, in output order.
    pub fn feature_names(&self) -> Vec<String> {
        self.features
            .iter()
            .map(|&i| self.columns[i].clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        CAPUMS_COLUMNS
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes()
    }

    #[test]
    fn default_selection_is_the_seed_projects() {
        let s = Schema::from_header(&header(), &SchemaOptions::default()).unwrap();
        assert_eq!(s.label_name(), "employed");
        assert_eq!(
            s.feature_names(),
            [
                "sex",
                "married",
                "black",
                "asian",
                "collegedegree",
                "militaryservice",
                "uscitizen",
                "disability",
                "englishability"
            ]
        );
    }

    #[test]
    fn unquoted_header_and_explicit_features() {
        let opts = SchemaOptions {
            features: Some(vec!["black".into(), "sex".into()]),
            ..SchemaOptions::default()
        };
        let s = Schema::from_header(CAPUMS_COLUMNS.join(",").as_bytes(), &opts).unwrap();
        assert_eq!(s.features, [2, 0]);
    }

    #[test]
    fn missing_label_names_the_columns() {
        let opts = SchemaOptions {
            label: "income".into(),
            ..SchemaOptions::default()
        };
        let err = Schema::from_header(b"a,b,c", &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'income'") && err.contains("a,b,c"), "{err}");
    }

    #[test]
    fn bad_selections_are_errors() {
        let h = CAPUMS_COLUMNS.join(",");
        let both = SchemaOptions {
            features: Some(vec!["sex".into()]),
            exclude: Some(vec!["black".into()]),
            ..SchemaOptions::default()
        };
        assert!(Schema::from_header(h.as_bytes(), &both).is_err());
        let label_as_feature = SchemaOptions {
            features: Some(vec!["employed".into()]),
            ..SchemaOptions::default()
        };
        assert!(Schema::from_header(h.as_bytes(), &label_as_feature).is_err());
        let typo = SchemaOptions {
            exclude: Some(vec!["blak".into()]),
            ..SchemaOptions::default()
        };
        assert!(Schema::from_header(h.as_bytes(), &typo).is_err());
        assert!(matches!(
            Schema::from_header(b"a,a,employed", &SchemaOptions::default()),
            Err(Error::DuplicateColumn(_))
        ));
    }

    #[test]
    fn the_unit_is_never_a_feature_nor_the_label() {
        let h = "serialno,employed,age,sex";
        let unit = |features: Option<Vec<String>>, unit: &str| SchemaOptions {
            features,
            unit: Some(unit.into()),
            ..SchemaOptions::default()
        };
        let s = Schema::from_header(h.as_bytes(), &unit(None, "serialno")).unwrap();
        assert_eq!(
            (s.unit, s.feature_names()),
            (Some(0), vec!["age".into(), "sex".into()])
        );
        assert_eq!(s.unit_name(), Some("serialno"));
        for bad in [
            unit(Some(vec!["serialno".into(), "age".into()]), "serialno"),
            unit(None, "employed"),
            unit(None, "household"),
        ] {
            let err = Schema::from_header(h.as_bytes(), &bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("privacy unit"), "{err}");
        }
    }

    #[test]
    fn explicit_columns_win() {
        let opts = SchemaOptions {
            columns: Some(vec!["x".into(), "employed".into()]),
            ..SchemaOptions::default()
        };
        let s = Schema::from_header(b"ignored", &opts).unwrap();
        assert_eq!((s.label, s.features.clone()), (1, vec![0]));
    }
}
