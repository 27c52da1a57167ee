//! The reduce task: writes its shards' records in offset order under one shard header line,
//! each record keyed as the pipeline keys it ([`shards::keys::ShardKeyer`]: every record of a
//! content, and of a unit, is in one shard).
//!
//! Entries arrive grouped by shard (any sort does that, see [`crate::frame`]); within a
//! shard they may come in any order, so each shard is buffered and sorted by offset before it
//! is keyed and written. One reducer may get several shards: its output is then one header line and the
//! records of each shard in turn, which still reads as shards (`shards::Dataset`).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use shards::LineReader;
use shards::keys::{ShardKeyer, UnitRule};

use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::frame::{self, Entry};
use crate::memo::HashMemo;

/// Everything a reduce task needs.
#[derive(Debug, Clone)]
pub struct ReducerConfig {
    /// How often counters are reported while running.
    pub counter_interval: Duration,
    /// `--max-rows-per-unit`: the most rows a privacy unit keeps (the shards must have units).
    pub max_rows_per_unit: Option<u32>,
}

const RECORDS: usize = 0;
const SHARDS: usize = 1;
const OVER_UNIT_CAP: usize = 2;
const NAMES: &[(&str, &str)] = &[
    ("reducer", "records"),
    ("reducer", "shards"),
    ("reducer", "over_unit_cap"),
];

/// What a reduce task did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReduceSummary {
    /// Records written.
    pub records: u64,
    /// Shards written (groups of entries with one shard).
    pub shards: u64,
    /// Records `--max-rows-per-unit` let go.
    pub over_unit_cap: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for ReduceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "reducer: {} records in {} shard{}; {:.2} s",
            self.records,
            self.shards,
            if self.shards == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64()
        )
    }
}

/// The records of the shard being read: lines (with `\n`) back to back, and their keys.
#[derive(Debug, Default)]
struct Group {
    shard: u32,
    text: Vec<u8>,
    /// `(offset, start, end)` of each record line in `text`.
    records: Vec<(u64, usize, usize)>,
    sorted: bool,
}

impl Group {
    fn reset(&mut self, shard: u32) {
        self.shard = shard;
        self.text.clear();
        self.records.clear();
        self.sorted = true;
    }

    fn push(&mut self, offset: u64, line: &[u8]) {
        if let Some(&(last, _, _)) = self.records.last() {
            self.sorted &= last < offset;
        }
        let start = self.text.len();
        self.text.extend_from_slice(line);
        self.text.push(b'\n');
        self.records.push((offset, start, self.text.len()));
    }
}

/// Where the reducer is: the header it writes, the shards it has finished, the one it reads.
struct State<W> {
    output: W,
    max_rows: Option<u32>,
    header: Option<Vec<u8>>,
    header_written: bool,
    done: HashSet<u32>,
    group: Option<Group>,
    spare: Group,
    /// Keyed lines not yet written.
    keyed: Vec<u8>,
    /// The hashes of the contents seen.
    hashes: HashMemo,
}

/// Keyed lines are written in chunks of about this many bytes.
const OUTPUT_CHUNK: usize = 1 << 16;

impl<W: Write> State<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.output
            .write_all(bytes)
            .map_err(|e| Error::io("stdout", e))
    }

    /// Writes the current shard: the header line first if it is the output's first shard.
    fn finish_group(&mut self, counters: &mut Counters) -> Result<()> {
        let Some(mut group) = self.group.take() else {
            return Ok(());
        };
        if !self.header_written {
            match self.header.take() {
                Some(header) => {
                    self.write(&header)?;
                    self.write(b"\n")?;
                    self.header = Some(header);
                    self.header_written = true;
                }
                None if group.records.is_empty() => {}
                None => return Err(Error::NoHeader { shard: group.shard }),
            }
        }
        if !group.sorted {
            group.records.sort_unstable_by_key(|r| r.0);
            for pair in group.records.windows(2) {
                if pair[0].0 == pair[1].0 {
                    return Err(Error::DuplicateOffset {
                        shard: group.shard,
                        offset: pair[0].0,
                    });
                }
            }
        }
        let rule = self.unit_rule(group.shard, group.records.is_empty())?;
        let mut keyer = ShardKeyer::new(rule);
        let bad = |reason| Error::BadRecord {
            shard: group.shard,
            reason,
        };
        if keyer.two_passes() {
            for &(_, s, e) in &group.records {
                keyer.observe(&group.text[s..e]).map_err(bad)?;
            }
        }
        // The keyed lines go out a chunk at a time through one buffer kept from shard to shard
        // (a fresh buffer the size of each shard cost a page fault every 4 KiB of output).
        let mut keyed = std::mem::take(&mut self.keyed);
        keyed.clear();
        let mut written = 0;
        for &(_, s, e) in &group.records {
            let line = &group.text[s..e];
            written += u64::from(if keyer.rule().unit {
                keyer.write(line, &mut keyed).map_err(bad)?
            } else {
                // Without a unit, the content's hash comes from the memo (the same hash the
                // keyer would compute, `write`'s plain way).
                let content = shards::keys::content_of(line).map_err(bad)?;
                let at = e - 1 - content.len();
                let h = self.hashes.hash(&group.text[at..], content.len());
                keyer.write_content(h, None, content, &mut keyed)
            });
            if keyed.len() >= OUTPUT_CHUNK {
                self.write(&keyed)?;
                keyed.clear();
            }
        }
        self.write(&keyed)?;
        self.keyed = keyed;
        counters.add(RECORDS, written);
        counters.add(OVER_UNIT_CAP, keyer.capped());
        counters.add(SHARDS, 1);
        self.done.insert(group.shard);
        self.spare = group;
        Ok(())
    }
}

impl<W> State<W> {
    /// How the records of `shard` are keyed: by unit when the shard header names one.
    fn unit_rule(&self, shard: u32, empty: bool) -> Result<UnitRule> {
        let unit = match &self.header {
            Some(h) => shards::format::parse_header(&String::from_utf8_lossy(h))
                .map_err(|reason| Error::BadRecord { shard, reason })?
                .unit
                .is_some(),
            None => false,
        };
        if self.max_rows.is_some() && !unit && !empty {
            return Err(Error::BadRecord {
                shard,
                reason: "--max-rows-per-unit bounds the rows of a privacy unit, but the \
                         mapper's records have none (give the mapper --privacy-unit COLUMN)"
                    .into(),
            });
        }
        Ok(UnitRule {
            unit,
            max_rows: self.max_rows.filter(|_| unit),
        })
    }
}

/// Runs a reduce task: reads sorted entries from `input`, writes shard text to `output` and
/// counters to `report`.
pub fn run(
    config: &ReducerConfig,
    input: impl Read,
    output: impl Write,
    report: &mut impl Write,
) -> Result<ReduceSummary> {
    let started = Instant::now();
    let mut lines = LineReader::new(input, 0);
    let mut counters = Counters::new(NAMES, config.counter_interval);
    let mut state = State {
        output,
        max_rows: config.max_rows_per_unit,
        header: None,
        header_written: false,
        done: HashSet::new(),
        group: None,
        spare: Group::default(),
        keyed: Vec::with_capacity(OUTPUT_CHUNK + 4096),
        hashes: HashMemo::default(),
    };
    let mut line_no = 0u64;
    while let Some((_, line)) = lines.next_line().map_err(|e| Error::io("stdin", e))? {
        line_no += 1;
        if line.is_empty() {
            continue;
        }
        let entry = frame::parse_entry(line).map_err(|reason| Error::BadEntry {
            line: line_no,
            reason,
        })?;
        let shard = entry.shard();
        if state.group.as_ref().map(|g| g.shard) != Some(shard) {
            state.finish_group(&mut counters)?;
            if state.done.contains(&shard) {
                return Err(Error::NotGrouped {
                    line: line_no,
                    shard,
                });
            }
            let mut group = std::mem::take(&mut state.spare);
            group.reset(shard);
            state.group = Some(group);
        }
        match entry {
            Entry::Record { offset, line, .. } => {
                let group = state.group.as_mut().expect("a group was just started");
                group.push(offset, line);
            }
            Entry::Header { line, .. } => match &state.header {
                None => state.header = Some(line.to_vec()),
                Some(first) if first.as_slice() == line => {}
                Some(first) => {
                    return Err(Error::HeaderConflict {
                        line: line_no,
                        first: String::from_utf8_lossy(first).into_owned(),
                        found: String::from_utf8_lossy(line).into_owned(),
                    });
                }
            },
        }
        if line_no.is_multiple_of(1 << 16) {
            counters.tick(report).map_err(|e| Error::io("stderr", e))?;
        }
    }
    state.finish_group(&mut counters)?;
    state.output.flush().map_err(|e| Error::io("stdout", e))?;
    counters
        .report(report)
        .map_err(|e| Error::io("stderr", e))?;
    Ok(ReduceSummary {
        records: counters.get(RECORDS),
        shards: counters.get(SHARDS),
        over_unit_cap: counters.get(OVER_UNIT_CAP),
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce(input: &str) -> Result<String> {
        reduce_capped(input, None)
    }

    fn reduce_capped(input: &str, max_rows_per_unit: Option<u32>) -> Result<String> {
        let cfg = ReducerConfig {
            counter_interval: Duration::from_secs(3600),
            max_rows_per_unit,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(&cfg, input.as_bytes(), &mut out, &mut err)?;
        Ok(String::from_utf8(out).unwrap())
    }

    /// The key of the `rank`-th record of `content`.
    fn key(content: &str, rank: u64) -> u64 {
        shards::keys::record_key(shards::keys::content_hash(content.as_bytes()), rank)
    }

    #[test]
    fn sorts_each_shard_keys_and_writes_one_header() {
        let input = "00001\t00000000000000000050\t50,1,0\n\
                     00001\tH\tkey,y,a\n\
                     00001\t00000000000000000007\t7,1,0\n\
                     00003\tH\tkey,y,a\n\
                     00003\t00000000000000000002\t2,1,1\n\
                     00003\t00000000000000000009\t9,0,0\n";
        assert_eq!(
            reduce(input).unwrap(),
            format!(
                "key,y,a\n{},1,0\n{},1,0\n{},1,1\n{},0,0\n",
                key("1,0", 0),
                key("1,0", 1),
                key("1,1", 0),
                key("0,0", 0)
            )
        );
    }

    #[test]
    fn a_unit_over_the_cap_keeps_its_smallest_keys() {
        let input = "00001\tH\tkey,unit:hh,y,a\n\
                     00001\t00000000000000000001\t1,77,1,0\n\
                     00001\t00000000000000000002\t2,77,0,0\n\
                     00001\t00000000000000000003\t3,77,1,1\n\
                     00001\t00000000000000000004\t4,78,1,1\n";
        let all = reduce(input).unwrap();
        assert_eq!(all.lines().count(), 5);
        let capped = reduce_capped(input, Some(2)).unwrap();
        let mut smallest: Vec<u64> = ["77,1,0", "77,0,0", "77,1,1"]
            .iter()
            .map(|c| key(c, 0))
            .collect();
        smallest.sort_unstable();
        let kept: Vec<u64> = capped
            .lines()
            .skip(1)
            .filter(|l| l.contains(",77,"))
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|k| smallest[..2].contains(k)), "{capped}");
        assert!(capped.contains(&format!("{},78,1,1", key("78,1,1", 0))));
        // A cap without units is an error that says what to do.
        let err = reduce_capped(
            "00001\tH\tkey,y,a\n00001\t00000000000000000001\t1,1,0\n",
            Some(2),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--privacy-unit"), "{err}");
    }

    #[test]
    fn header_only_and_empty() {
        assert_eq!(reduce("00002\tH\tkey,y,a\n").unwrap(), "key,y,a\n");
        assert_eq!(reduce("").unwrap(), "");
    }

    #[test]
    fn errors() {
        let h = "00001\tH\tkey,y,a\n";
        let r = |o: u64| format!("00001\t{o:020}\t{o},1,0\n");
        let ungrouped = format!("{h}{}00002\tH\tkey,y,a\n{}", r(1), r(2));
        assert!(matches!(
            reduce(&ungrouped),
            Err(Error::NotGrouped { line: 4, shard: 1 })
        ));
        let dup = format!("{h}{}{}{}", r(5), r(3), r(5));
        assert!(matches!(
            reduce(&dup),
            Err(Error::DuplicateOffset {
                shard: 1,
                offset: 5
            })
        ));
        let dup_sorted = format!("{h}{}{}", r(5), r(5));
        assert!(matches!(
            reduce(&dup_sorted),
            Err(Error::DuplicateOffset { .. })
        ));
        assert!(matches!(reduce(&r(1)), Err(Error::NoHeader { shard: 1 })));
        let conflict = format!("{h}00001\tH\tkey,y,b\n");
        assert!(matches!(
            reduce(&conflict),
            Err(Error::HeaderConflict { line: 2, .. })
        ));
        assert!(matches!(
            reduce("1,0,1,0\n"),
            Err(Error::BadEntry { line: 1, .. })
        ));
    }
}
