//! `pipeline generate`: deterministic synthetic rows shaped like `CaPUMS5full.csv`.
//!
//! Twelve 0/1 columns with plausible marginals for California adults, `blackfemale = black AND
//! sex` (sex 1 = female), and an `employed` label drawn from a logistic model of the other
//! columns, so a model can learn it (about 0.7 accuracy is reachable). A share of rows
//! (`na_rate`) has `NA` in one to three fields.

use std::io::Write;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shards::manifest::ShardInfo;
use shards::schema::CAPUMS_COLUMNS;
use shards::store::create_file;
use shards::{Location, S3Options};

use crate::error::{Error, Result};

/// Options of `pipeline generate`.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Number of data rows.
    pub rows: u64,
    /// Random seed: the same seed gives the same file.
    pub seed: u64,
    /// Share of rows with `NA` in one or more fields.
    pub na_rate: f64,
    /// Where to write the CSV.
    pub output: Location,
    /// Replace an existing file.
    pub overwrite: bool,
    /// How an S3 output is reached (unused for a local one).
    pub s3: S3Options,
}

/// Writes the synthetic file; returns its size and checksum.
pub fn generate(config: &GenerateConfig) -> Result<ShardInfo> {
    if !(0.0..=1.0).contains(&config.na_rate) {
        return Err(Error::Config(format!(
            "--na-rate {} is not between 0 and 1",
            config.na_rate
        )));
    }
    let mut out = create_file(&config.output, config.overwrite, &config.s3)?;
    let io = |e| shards::Error::io(&config.output, e);
    let header: Vec<String> = CAPUMS_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
    writeln!(out, "{}", header.join(",")).map_err(io)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut buf = Vec::with_capacity(1 << 20);
    for _ in 0..config.rows {
        let row = person(&mut rng);
        let na_fields = if rng.random_bool(config.na_rate) {
            1 + rng.random_range(0..3usize)
        } else {
            0
        };
        let mut na = [false; 12];
        for _ in 0..na_fields {
            na[rng.random_range(0..12usize)] = true;
        }
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            if na[i] {
                buf.extend_from_slice(b"NA");
            } else {
                buf.push(b'0' + *v);
            }
        }
        buf.push(b'\n');
        if buf.len() >= 1 << 20 {
            out.write_all(&buf).map_err(io)?;
            buf.clear();
        }
    }
    out.write_all(&buf).map_err(io)?;
    Ok(out.finish()?)
}

/// One person's twelve columns, in `CAPUMS_COLUMNS` order.
fn person(rng: &mut ChaCha8Rng) -> [u8; 12] {
    let mut b = |p: f64| u8::from(rng.random_bool(p.clamp(0.0, 1.0)));
    let sex = b(0.5);
    let black = b(0.06);
    let asian = if black == 1 { 0 } else { b(0.15) };
    let married = b(0.47);
    let collegedegree = b(0.30 + 0.15 * f64::from(asian) - 0.08 * f64::from(black));
    let militaryservice = b(if sex == 1 { 0.01 } else { 0.08 });
    let uscitizen = b(0.86 - 0.22 * f64::from(asian));
    let disability = b(0.11);
    let englishability = b(if uscitizen == 1 { 0.92 } else { 0.55 });
    let blackfemale = black & sex;
    let targetted = b(0.18 + 0.2 * f64::from(black));
    let z = -0.55 + 1.05 * f64::from(collegedegree) + 0.45 * f64::from(married)
        - 2.1 * f64::from(disability)
        + 0.75 * f64::from(englishability)
        + 0.35 * f64::from(uscitizen)
        - 0.5 * f64::from(sex)
        - 0.35 * f64::from(black)
        + 0.25 * f64::from(militaryservice)
        + 0.1 * f64::from(asian);
    let employed = b(1.0 / (1.0 + (-z).exp()));
    [
        sex,
        married,
        black,
        asian,
        collegedegree,
        employed,
        militaryservice,
        uscitizen,
        disability,
        englishability,
        blackfemale,
        targetted,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_file_and_consistent_columns() {
        let dir = tempfile::tempdir().unwrap();
        let mk = |name: &str, seed| {
            let output = Location::Local(dir.path().join(name));
            generate(&GenerateConfig {
                rows: 2000,
                seed,
                na_rate: 0.05,
                output,
                overwrite: false,
                s3: Default::default(),
            })
            .unwrap()
        };
        let (a, b, c) = (mk("a.csv", 1), mk("b.csv", 1), mk("c.csv", 2));
        assert_eq!(a.crc32, b.crc32);
        assert_ne!(a.crc32, c.crc32);
        let text = std::fs::read_to_string(dir.path().join("a.csv")).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("\"sex\",\"married\""));
        let (mut na_rows, mut rows) = (0, 0);
        for line in lines {
            rows += 1;
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 12);
            if f.contains(&"NA") {
                na_rows += 1;
                continue;
            }
            // blackfemale = black AND sex
            assert_eq!(f[10] == "1", f[2] == "1" && f[0] == "1", "{line}");
        }
        assert_eq!(rows, 2000);
        assert!((50..160).contains(&na_rows), "{na_rows} NA rows");
    }
}
