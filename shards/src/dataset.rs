//! Reading shards back: a directory or prefix of part files, with or without a manifest.

use crate::error::{Error, Result};
use crate::format::{is_header, parse_header, parse_record, trim_line};
use crate::location::Location;
use crate::manifest::{MANIFEST_NAME, Manifest, crc_hex};
use crate::store::{ShardSource, open_source};

/// One part file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartFile {
    /// Name inside the directory or prefix.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Records loaded into memory, column-major per kind, row-major for features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// The label column's name.
    pub label_name: String,
    /// The feature columns' names.
    pub feature_names: Vec<String>,
    /// Record keys (input byte offsets).
    pub offsets: Vec<u64>,
    /// Labels, 0.0 or 1.0.
    pub labels: Vec<f32>,
    /// Features, `len() x feature_names.len()`, row-major.
    pub features: Vec<f32>,
}

impl Table {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
    /// Number of features per record.
    pub fn width(&self) -> usize {
        self.feature_names.len()
    }
}

/// A set of shards at a location.
#[derive(Debug)]
pub struct Dataset {
    source: Box<dyn ShardSource>,
    parts: Vec<PartFile>,
    manifest: Option<Manifest>,
}

impl Dataset {
    /// Lists the part files at `location` and reads its manifest when there is one.
    pub fn open(location: &Location) -> Result<Dataset> {
        Dataset::from_source(open_source(location)?)
    }

    /// Like [`Dataset::open`], over any [`ShardSource`].
    pub fn from_source(source: Box<dyn ShardSource>) -> Result<Dataset> {
        let listing = source.list()?;
        let parts: Vec<PartFile> = listing
            .iter()
            .filter(|(n, _)| n.starts_with("part-"))
            .map(|(n, b)| PartFile {
                name: n.clone(),
                bytes: *b,
            })
            .collect();
        if parts.is_empty() {
            return Err(Error::NoShards {
                path: source.location().to_string(),
            });
        }
        let manifest = if listing.iter().any(|(n, _)| n == MANIFEST_NAME) {
            let path = source.location().join(MANIFEST_NAME).to_string();
            let bytes = source.read(MANIFEST_NAME)?;
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let listed: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
            let named: Vec<&str> = m.shards.iter().map(|s| s.name.as_str()).collect();
            if listed != named {
                return Err(Error::Manifest {
                    path,
                    reason: format!("it names shards {named:?} but the directory holds {listed:?}"),
                });
            }
            Some(m)
        } else {
            None
        };
        Ok(Dataset {
            source,
            parts,
            manifest,
        })
    }

    /// The part files, sorted by name.
    pub fn parts(&self) -> &[PartFile] {
        &self.parts
    }

    /// The manifest, when the output has one.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Loads every part.
    pub fn load(&self) -> Result<Table> {
        let all: Vec<usize> = (0..self.parts.len()).collect();
        self.load_parts(&all)
    }

    /// Loads the parts with the given indices (into [`Dataset::parts`]), in that order,
    /// checking sizes, checksums and row counts against the manifest when there is one.
    pub fn load_parts(&self, indices: &[usize]) -> Result<Table> {
        let mut table = Table::default();
        let mut header: Option<(String, Vec<String>)> = self
            .manifest
            .as_ref()
            .map(|m| (m.schema.label.clone(), m.schema.features.clone()));
        for &i in indices {
            let part = &self.parts[i];
            let path = self.source.location().join(&part.name).to_string();
            let bytes = self.source.read(&part.name)?;
            let expected = self.manifest.as_ref().map(|m| &m.shards[i]);
            if let Some(info) = expected {
                let crc = crc_hex(crc32fast::hash(&bytes));
                if info.bytes != bytes.len() as u64 {
                    return Err(mismatch(&path, "bytes", info.bytes, bytes.len()));
                }
                if info.crc32 != crc {
                    return Err(mismatch(&path, "crc32", &info.crc32, crc));
                }
            }
            let text = std::str::from_utf8(&bytes).map_err(|e| Error::MalformedShard {
                path: path.clone(),
                line: 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count() as u64,
                reason: "not valid UTF-8".into(),
            })?;
            let before = table.len();
            for (n, line) in text.lines().enumerate() {
                let malformed = |reason: String| Error::MalformedShard {
                    path: path.clone(),
                    line: n as u64 + 1,
                    reason,
                };
                if trim_line(line).is_empty() {
                    continue;
                }
                if is_header(line) {
                    let h = parse_header(line).map_err(malformed)?;
                    match &header {
                        Some(prev) if *prev != h => {
                            return Err(malformed(format!(
                                "header names columns {:?}, other shards have {:?}",
                                h, prev
                            )));
                        }
                        Some(_) => {}
                        None => header = Some(h),
                    }
                    continue;
                }
                let k = match &header {
                    Some((_, f)) => f.len(),
                    None => return Err(malformed("record before the header line".into())),
                };
                let (offset, label) =
                    parse_record(line, k, &mut table.features).map_err(malformed)?;
                table.offsets.push(offset);
                table.labels.push(f32::from(label));
            }
            if let Some(info) = expected {
                let rows = table.len() - before;
                if info.rows != rows as u64 {
                    return Err(mismatch(&path, "rows", info.rows, rows));
                }
            }
        }
        if let Some((label, features)) = header {
            table.label_name = label;
            table.feature_names = features;
        }
        Ok(table)
    }
}

fn mismatch(
    path: &str,
    what: &'static str,
    expected: impl ToString,
    actual: impl ToString,
) -> Error {
    Error::ChecksumMismatch {
        path: path.to_string(),
        what,
        expected: expected.to_string(),
        actual: actual.to_string(),
    }
}
