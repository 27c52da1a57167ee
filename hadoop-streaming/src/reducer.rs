//! The reduce task: writes its shards' records in offset order under one shard header line.
//!
//! Entries arrive grouped by shard (any sort does that, see [`crate::frame`]); within a
//! shard they may come in any order, so each shard is buffered and sorted by offset before it
//! is written. One reducer may get several shards: its output is then one header line and the
//! records of each shard in turn, which still reads as shards (`shards::Dataset`).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use shards::LineReader;

use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::frame::{self, Entry};

/// Everything a reduce task needs.
#[derive(Debug, Clone)]
pub struct ReducerConfig {
    /// How often counters are reported while running.
    pub counter_interval: Duration,
}

const RECORDS: usize = 0;
const SHARDS: usize = 1;
const NAMES: &[(&str, &str)] = &[("reducer", "records"), ("reducer", "shards")];

/// What a reduce task did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReduceSummary {
    /// Records written.
    pub records: u64,
    /// Shards written (groups of entries with one shard).
    pub shards: u64,
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
    header: Option<Vec<u8>>,
    header_written: bool,
    done: HashSet<u32>,
    group: Option<Group>,
    spare: Group,
}

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
        if group.sorted {
            self.write(&group.text)?;
        } else {
            group.records.sort_unstable_by_key(|r| r.0);
            for pair in group.records.windows(2) {
                if pair[0].0 == pair[1].0 {
                    return Err(Error::DuplicateOffset {
                        shard: group.shard,
                        offset: pair[0].0,
                    });
                }
            }
            for &(_, s, e) in &group.records {
                self.output
                    .write_all(&group.text[s..e])
                    .map_err(|e| Error::io("stdout", e))?;
            }
        }
        counters.add(RECORDS, group.records.len() as u64);
        counters.add(SHARDS, 1);
        self.done.insert(group.shard);
        self.spare = group;
        Ok(())
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
        header: None,
        header_written: false,
        done: HashSet::new(),
        group: None,
        spare: Group::default(),
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
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce(input: &str) -> Result<String> {
        let cfg = ReducerConfig {
            counter_interval: Duration::from_secs(3600),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(&cfg, input.as_bytes(), &mut out, &mut err)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn sorts_each_shard_and_writes_one_header() {
        let input = "00001\t00000000000000000050\t50,1,0\n\
                     00001\tH\toffset,y,a\n\
                     00001\t00000000000000000007\t7,0,1\n\
                     00003\tH\toffset,y,a\n\
                     00003\t00000000000000000002\t2,1,1\n\
                     00003\t00000000000000000009\t9,0,0\n";
        assert_eq!(
            reduce(input).unwrap(),
            "offset,y,a\n7,0,1\n50,1,0\n2,1,1\n9,0,0\n"
        );
    }

    #[test]
    fn header_only_and_empty() {
        assert_eq!(reduce("00002\tH\toffset,y,a\n").unwrap(), "offset,y,a\n");
        assert_eq!(reduce("").unwrap(), "");
    }

    #[test]
    fn errors() {
        let h = "00001\tH\toffset,y,a\n";
        let r = |o: u64| format!("00001\t{o:020}\t{o},1,0\n");
        let ungrouped = format!("{h}{}00002\tH\toffset,y,a\n{}", r(1), r(2));
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
        let conflict = format!("{h}00001\tH\toffset,y,b\n");
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
