//! `pipeline generate`: deterministic synthetic rows shaped like `CaPUMS5full.csv`.
//!
//! Twelve 0/1 columns with plausible marginals for California adults, `blackfemale = black AND
//! sex` (sex 1 = female), and an `employed` label drawn from a logistic model of the other
//! columns, so a model can learn it (about 0.7 accuracy is reachable). A share of rows
//! (`na_rate`) has `NA` in one to three fields.
//!
//! With `households`, people come in households (a first column `household`, the household's
//! number): 1 to 8 people in the shares of the 2020 US census (28% alone, 35% two, ...), who
//! share their race, their citizenship mostly, and a household term in the employment model, so
//! what one household's rows say is correlated, as in real census files.

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
    /// People in households, with a first column `household`.
    pub households: bool,
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
    let mut header: Vec<String> = CAPUMS_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
    if config.households {
        header.insert(0, "\"household\"".into());
    }
    writeln!(out, "{}", header.join(",")).map_err(io)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut buf = Vec::with_capacity(1 << 20);
    // With households: the current one's number, traits and members still to write.
    let (mut number, mut left) = (0u64, 0u32);
    let mut home = Household::default();
    for _ in 0..config.rows {
        let row = if config.households {
            if left == 0 {
                number += 1;
                home = Household::draw(&mut rng);
                left = home.size;
            }
            left -= 1;
            write!(buf, "{number},").map_err(io)?;
            person_at(&mut rng, Some(&home))
        } else {
            person(&mut rng)
        };
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

/// Shares of US households of 1 to 8 people (2020 census: 27.6% one, 34.9% two, 15.2% three,
/// 12.7% four, 5.9% five, 2.3% six, 1.4% seven or more, split here 0.9% / 0.5%).
const HOUSEHOLD_SIZES: [f64; 8] = [0.276, 0.349, 0.152, 0.127, 0.059, 0.023, 0.009, 0.005];

/// What the people of one household share.
#[derive(Debug, Clone, Copy, Default)]
struct Household {
    size: u32,
    black: bool,
    asian: bool,
    /// Its members are mostly not citizens.
    immigrant: bool,
    /// Added to each member's employment logit.
    employment: f64,
}

impl Household {
    fn draw(rng: &mut ChaCha8Rng) -> Household {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut size = HOUSEHOLD_SIZES.len() as u32;
        for (i, p) in HOUSEHOLD_SIZES.iter().enumerate() {
            acc += p;
            if u < acc {
                size = i as u32 + 1;
                break;
            }
        }
        let black = rng.random_bool(0.06);
        let asian = !black && rng.random_bool(0.15);
        let immigrant = rng.random_bool(if asian { 0.35 } else { 0.12 });
        // A household term: three uniforms summed and centred (sd 0.5).
        let employment = rng.random::<f64>() + rng.random::<f64>() + rng.random::<f64>() - 1.5;
        Household {
            size,
            black,
            asian,
            immigrant,
            employment,
        }
    }
}

/// One person's twelve columns, in `CAPUMS_COLUMNS` order.
fn person(rng: &mut ChaCha8Rng) -> [u8; 12] {
    person_at(rng, None)
}

/// One person of `home` (or of no household), in `CAPUMS_COLUMNS` order.
fn person_at(rng: &mut ChaCha8Rng, home: Option<&Household>) -> [u8; 12] {
    let mut b = |p: f64| u8::from(rng.random_bool(p.clamp(0.0, 1.0)));
    let sex = b(0.5);
    let (black, asian, uscitizen_p, married_p, shared) = match home {
        None => {
            let black = b(0.06);
            let asian = if black == 1 { 0 } else { b(0.15) };
            (black, asian, 0.86 - 0.22 * f64::from(asian), 0.47, 0.0)
        }
        Some(h) => (
            u8::from(h.black),
            u8::from(h.asian),
            if h.immigrant { 0.3 } else { 0.95 },
            if h.size >= 2 { 0.62 } else { 0.15 },
            h.employment,
        ),
    };
    let married = b(married_p);
    let collegedegree = b(0.30 + 0.15 * f64::from(asian) - 0.08 * f64::from(black));
    let militaryservice = b(if sex == 1 { 0.01 } else { 0.08 });
    let uscitizen = b(uscitizen_p);
    let disability = b(0.11);
    let englishability = b(if uscitizen == 1 { 0.92 } else { 0.55 });
    let blackfemale = black & sex;
    let targetted = b(0.18 + 0.2 * f64::from(black));
    let z = -0.55 + shared + 1.05 * f64::from(collegedegree) + 0.45 * f64::from(married)
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
                households: false,
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

    #[test]
    fn households_come_in_census_sizes_and_share_their_race() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.csv");
        generate(&GenerateConfig {
            rows: 40_000,
            seed: 3,
            na_rate: 0.0,
            households: true,
            output: Location::Local(path.clone()),
            overwrite: false,
            s3: Default::default(),
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("\"household\",\"sex\""));
        let mut sizes: std::collections::BTreeMap<u64, (u32, String)> = Default::default();
        let mut last = 0;
        for line in lines {
            let (id, rest) = line.split_once(',').unwrap();
            let id: u64 = id.parse().unwrap();
            assert!(
                id == last || id == last + 1,
                "households are numbered in order"
            );
            last = id;
            let f: Vec<&str> = rest.split(',').collect();
            assert_eq!(f.len(), 12);
            let race = format!("{}{}", f[2], f[3]);
            let e = sizes.entry(id).or_insert((0, race.clone()));
            e.0 += 1;
            assert_eq!(e.1, race, "household {id} shares its race");
        }
        let n = sizes.len() as f64;
        // Every household but the last (cut at --rows) has 1 to 8 people, in census shares.
        let full: Vec<u32> = sizes.values().map(|v| v.0).collect();
        assert!(full.iter().all(|&s| (1..=8).contains(&s)));
        let share = |k: u32| full.iter().filter(|&&s| s == k).count() as f64 / n;
        assert!((share(1) - 0.276).abs() < 0.02, "alone: {}", share(1));
        assert!((share(2) - 0.349).abs() < 0.02, "two: {}", share(2));
        assert!(share(8) > 0.0);
    }
}
