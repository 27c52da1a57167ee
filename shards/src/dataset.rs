//! Reading shards back: a directory or prefix of part files, with or without a manifest.

use crate::error::{Error, Result};
use crate::format::{ShardHeader, is_header, parse_header, parse_record, trim_line};
use crate::local::is_part_name;
use crate::location::Location;
use crate::manifest::{MANIFEST_NAME, Manifest, SUCCESS_NAME, crc_hex};
use crate::s3::S3Options;
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
    /// The privacy unit's column, when the records carry their unit's hash.
    pub unit_name: Option<String>,
    /// Record keys (docs/design.md, "Record key").
    pub keys: Vec<u64>,
    /// Each record's unit hash, when the shards have a privacy unit (empty otherwise).
    pub units: Vec<u64>,
    /// Labels, 0.0 or 1.0.
    pub labels: Vec<f32>,
    /// Features, `len() x feature_names.len()`, row-major.
    pub features: Vec<f32>,
}

impl Table {
    /// Takes the column names from a shard header.
    fn name_columns(&mut self, header: ShardHeader) {
        self.unit_name = header.unit;
        self.label_name = header.label;
        self.feature_names = header.features;
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// Number of features per record.
    pub fn width(&self) -> usize {
        self.feature_names.len()
    }

    /// What record `i`'s side of the train/test split is drawn from (docs/design.md,
    /// "Train/test split"): its unit's hash when the records have units, else its key.
    pub fn split_key(&self, i: usize) -> u64 {
        if self.units.is_empty() {
            self.keys[i]
        } else {
            self.units[i]
        }
    }

    /// Whether record `i` is in the test split for `split_seed` and `test_fraction`.
    pub fn is_test(&self, i: usize, split_seed: u64, test_fraction: f64) -> bool {
        crate::hash::is_test(self.split_key(i), split_seed, test_fraction)
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
    ///
    /// Only a committed output is read: it must hold `_SUCCESS`; with a manifest, the part
    /// files must be exactly those it lists; without one (Hadoop output), [`Dataset::load_parts`]
    /// refuses duplicate record keys. Names starting with `part-` that are not part names
    /// (`part-00001.bak`, `part-00000.gz`) are refused.
    ///
    /// `s3`: how an S3 location is reached (unused for local paths).
    pub fn open(location: &Location, s3: &S3Options) -> Result<Dataset> {
        Dataset::from_source(open_source(location, s3)?)
    }

    /// Like [`Dataset::open`], over any [`ShardSource`].
    pub fn from_source(source: Box<dyn ShardSource>) -> Result<Dataset> {
        let listing = source.list()?;
        let location = source.location();
        if let Some((odd, _)) = listing
            .iter()
            .find(|(n, _)| n.starts_with("part-") && !is_part_name(n))
        {
            let reason = if odd.ends_with(".gz") || odd.ends_with(".bz2") || odd.ends_with(".zst") {
                "is a compressed part file; shards are read as plain text (decompress it, e.g. \
                 with gunzip, or write the output uncompressed)"
            } else {
                "is not a part file's name (part-NNNNN); a copy or a stray file? remove or \
                 rename it"
            };
            return Err(Error::NotAPart {
                path: location.join(odd).to_string(),
                reason: reason.into(),
            });
        }
        let parts: Vec<PartFile> = listing
            .iter()
            .filter(|(n, _)| is_part_name(n))
            .map(|(n, b)| PartFile {
                name: n.clone(),
                bytes: *b,
            })
            .collect();
        if parts.is_empty() {
            return Err(Error::NoShards {
                path: location.to_string(),
            });
        }
        if !listing.iter().any(|(n, _)| n == SUCCESS_NAME) {
            return Err(Error::NotCommitted {
                path: location.to_string(),
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

    /// The privacy unit's column the records were written with (`None`: each line is its own
    /// unit) and the bound on a unit's rows they were written with: from the manifest, or
    /// without one from the first part's header line.
    pub fn unit(&self) -> Result<(Option<String>, Option<u32>)> {
        if let Some(m) = &self.manifest {
            return Ok((m.schema.unit.clone(), m.options.max_rows_per_unit));
        }
        let name = &self.parts[0].name;
        let bytes = self.source.read(name)?;
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let header = parse_header(&String::from_utf8_lossy(first)).map_err(|reason| {
            Error::MalformedShard {
                path: self.source.location().join(name).to_string(),
                line: 1,
                reason,
            }
        })?;
        Ok((header.unit, None))
    }

    /// Loads every part.
    pub fn load(&self) -> Result<Table> {
        let all: Vec<usize> = (0..self.parts.len()).collect();
        self.load_parts(&all)
    }

    /// Loads the parts with the given indices (into [`Dataset::parts`]), in that order,
    /// checking sizes, checksums and row counts against the manifest when there is one. Without
    /// a manifest, the record keys of every part (not only these) must be distinct.
    pub fn load_parts(&self, indices: &[usize]) -> Result<Table> {
        if let Some(m) = &self.manifest {
            return self.load_listed_parts(m, indices);
        }
        let mut ends = Vec::with_capacity(indices.len());
        let table = self.load_unlisted_parts(indices, &mut ends)?;
        self.check_unique_keys(indices, &table, &ends)?;
        Ok(table)
    }

    /// Fails on the first record key that appears twice, reading the keys of the parts that
    /// were not loaded. `ends[j]` is where the records of part `indices[j]` end in `table`.
    fn check_unique_keys(&self, indices: &[usize], table: &Table, ends: &[usize]) -> Result<()> {
        let mut keys: Vec<(u64, u32)> = Vec::with_capacity(table.len());
        let mut start = 0;
        for (&i, &end) in indices.iter().zip(ends) {
            keys.extend(table.keys[start..end].iter().map(|&o| (o, i as u32)));
            start = end;
        }
        for i in (0..self.parts.len()).filter(|i| !indices.contains(i)) {
            let name = &self.parts[i].name;
            let bytes = self.source.read(name)?;
            for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
                let line = String::from_utf8_lossy(line);
                let line = trim_line(&line);
                if line.is_empty() || is_header(line) {
                    continue;
                }
                let key = line.split(',').next().unwrap_or_default().trim();
                let key = key.parse::<u64>().map_err(|_| Error::MalformedShard {
                    path: self.source.location().join(name).to_string(),
                    line: n as u64 + 1,
                    reason: format!("record key '{key}' is not a non-negative integer"),
                })?;
                keys.push((key, i as u32));
            }
        }
        keys.sort_unstable();
        if let Some(pair) = keys.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::DuplicateKey {
                path: self.source.location().to_string(),
                key: pair[0].0,
                first: self.parts[pair[0].1 as usize].name.clone(),
                second: self.parts[pair[1].1 as usize].name.clone(),
            });
        }
        Ok(())
    }

    /// [`Dataset::load_parts`] without a manifest (Hadoop output): the parts in turn, the header
    /// taken from the first that has one; `ends[j]` is where part `indices[j]`'s records end.
    fn load_unlisted_parts(&self, indices: &[usize], ends: &mut Vec<usize>) -> Result<Table> {
        let mut table = Table::default();
        let mut header: Option<ShardHeader> = None;
        for &i in indices {
            let part = &self.parts[i];
            let path = self.source.location().join(&part.name).to_string();
            let bytes = self.source.read(&part.name)?;
            let text = utf8(&bytes, &path)?;
            for (n, line) in text.lines().enumerate() {
                let malformed = malformed_at(&path, n);
                let line = match part_line(line).map_err(&malformed)? {
                    PartLine::Blank => continue,
                    PartLine::Header(h) => {
                        match &header {
                            Some(prev) => same_header(&h, prev, "the shards before it have")
                                .map_err(&malformed)?,
                            None => header = Some(h),
                        }
                        continue;
                    }
                    PartLine::Record(line) => line,
                };
                let (unit, k) = match &header {
                    Some(h) => (h.unit.is_some(), h.features.len()),
                    None => return Err(malformed("record before the header line".into())),
                };
                let r = parse_record(line, unit, k, &mut table.features).map_err(malformed)?;
                table.keys.push(r.key);
                table.units.extend(r.unit);
                table.labels.push(f32::from(r.label));
            }
            ends.push(table.len());
        }
        if let Some(h) = header {
            table.name_columns(h);
        }
        Ok(table)
    }

    /// [`Dataset::load_parts`] with a manifest: its header and each part's row count are known
    /// before any part is read, so the columns are allocated once at their size and cut into
    /// one slice per part, and the parts are read, checked and parsed on up to as many threads
    /// as the machine has cores (each writes only its parts' slices; the columns' pages are
    /// first touched there too). The first error in the order of `indices` is the one
    /// returned, as reading them in turn would. A manifest that overstates a part's rows gets
    /// no more room than its listed bytes can hold (a record is at least a digit and a
    /// separator per column), and the part is a row-count mismatch.
    fn load_listed_parts(&self, m: &Manifest, indices: &[usize]) -> Result<Table> {
        let header = ShardHeader {
            unit: m.schema.unit.clone(),
            label: m.schema.label.clone(),
            features: m.schema.features.clone(),
        };
        let (k, has_unit) = (header.features.len(), header.unit.is_some());
        let room: Vec<usize> = indices
            .iter()
            .map(|&i| {
                let most = self.parts[i].bytes / (2 * (k as u64 + 2));
                usize::try_from(m.shards[i].rows.min(most)).unwrap_or(0)
            })
            .collect();
        let total: usize = room.iter().sum();
        let mut table = Table {
            keys: vec![0; total],
            units: if has_unit { vec![0; total] } else { Vec::new() },
            labels: vec![0.0; total],
            features: vec![0.0; total * k],
            ..Table::default()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, indices.len().max(1));
        // Part j's slices go to thread j % threads.
        let mut jobs: Vec<Vec<(usize, PartRows<'_>)>> = (0..threads).map(|_| Vec::new()).collect();
        {
            let (mut keys, mut units, mut labels, mut features) = (
                &mut table.keys[..],
                &mut table.units[..],
                &mut table.labels[..],
                &mut table.features[..],
            );
            for (j, &n) in room.iter().enumerate() {
                let (k_here, k_rest) = std::mem::take(&mut keys).split_at_mut(n);
                let (u_here, u_rest) =
                    std::mem::take(&mut units).split_at_mut(if has_unit { n } else { 0 });
                let (l_here, l_rest) = std::mem::take(&mut labels).split_at_mut(n);
                let (f_here, f_rest) = std::mem::take(&mut features).split_at_mut(n * k);
                (keys, units, labels, features) = (k_rest, u_rest, l_rest, f_rest);
                let rows = PartRows {
                    keys: k_here,
                    units: u_here,
                    labels: l_here,
                    features: f_here,
                };
                jobs[j % threads].push((j, rows));
            }
        }
        let mut results: Vec<(usize, Result<()>)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|jobs| {
                    let header = &header;
                    s.spawn(move || {
                        let mut bytes = Vec::new();
                        jobs.into_iter()
                            .map(|(j, rows)| {
                                let i = indices[j];
                                (j, self.load_listed_part(m, i, header, rows, &mut bytes))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        results.sort_by_key(|r| r.0);
        for (_, r) in results {
            r?;
        }
        table.name_columns(header);
        Ok(table)
    }

    /// Reads part `i` into `bytes` (a thread's buffer, reused), checks it against the
    /// manifest's size, checksum, header and row count, and parses its records into `rows`
    /// (which has room for the rows the manifest counts).
    fn load_listed_part(
        &self,
        m: &Manifest,
        i: usize,
        header: &ShardHeader,
        rows: PartRows<'_>,
        bytes: &mut Vec<u8>,
    ) -> Result<()> {
        let part = &self.parts[i];
        let info = &m.shards[i];
        let path = self.source.location().join(&part.name).to_string();
        self.source.read_into(&part.name, bytes)?;
        let bytes = &bytes[..];
        if info.bytes != bytes.len() as u64 {
            return Err(mismatch(&path, "bytes", info.bytes, bytes.len()));
        }
        let crc = crc_hex(crc32fast::hash(bytes));
        if info.crc32 != crc {
            return Err(mismatch(&path, "crc32", &info.crc32, crc));
        }
        let text = utf8(bytes, &path)?;
        let (k, has_unit) = (header.features.len(), header.unit.is_some());
        let whose = format!("the manifest {MANIFEST_NAME} says");
        let mut features = Vec::with_capacity(k);
        let mut count = 0;
        for (n, line) in text.lines().enumerate() {
            let malformed = malformed_at(&path, n);
            let line = match part_line(line).map_err(&malformed)? {
                PartLine::Blank => continue,
                PartLine::Header(h) => {
                    same_header(&h, header, &whose).map_err(&malformed)?;
                    continue;
                }
                PartLine::Record(line) => line,
            };
            features.clear();
            let r = parse_record(line, has_unit, k, &mut features).map_err(malformed)?;
            // Past the manifest's count the records are still parsed (a malformed one is
            // named first, as it would be) but only counted.
            if count < rows.keys.len() {
                rows.keys[count] = r.key;
                if let Some(u) = r.unit {
                    rows.units[count] = u;
                }
                rows.labels[count] = f32::from(r.label);
                rows.features[count * k..(count + 1) * k].copy_from_slice(&features);
            }
            count += 1;
        }
        if info.rows != count as u64 {
            return Err(mismatch(&path, "rows", info.rows, count));
        }
        Ok(())
    }
}

/// One part's rows in the columns of a [`Table`] being loaded.
struct PartRows<'a> {
    keys: &'a mut [u64],
    units: &'a mut [u64],
    labels: &'a mut [f32],
    features: &'a mut [f32],
}

/// What a line of a part is.
enum PartLine<'a> {
    /// Empty or only a line end.
    Blank,
    /// A header line, parsed.
    Header(ShardHeader),
    /// A record, to be parsed.
    Record(&'a str),
}

fn part_line(line: &str) -> std::result::Result<PartLine<'_>, String> {
    if trim_line(line).is_empty() {
        Ok(PartLine::Blank)
    } else if is_header(line) {
        parse_header(line).map(PartLine::Header)
    } else {
        Ok(PartLine::Record(line))
    }
}

/// The error for line `n` (from 0) of the part at `path`.
fn malformed_at(path: &str, n: usize) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::MalformedShard {
        path: path.to_string(),
        line: n as u64 + 1,
        reason,
    }
}

/// `bytes` as text, or the line where they stop being UTF-8.
fn utf8<'a>(bytes: &'a [u8], path: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| Error::MalformedShard {
        path: path.to_string(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64,
        reason: "not valid UTF-8".into(),
    })
}

/// Fails where header `h` names another unit, label or features than `expected`, which
/// `whose` names.
fn same_header(
    h: &ShardHeader,
    expected: &ShardHeader,
    whose: &str,
) -> std::result::Result<(), String> {
    if h == expected {
        return Ok(());
    }
    Err(format!(
        "header names unit, label and features {:?}, but {whose} {:?}",
        (&h.unit, &h.label, &h.features),
        (&expected.unit, &expected.label, &expected.features)
    ))
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
