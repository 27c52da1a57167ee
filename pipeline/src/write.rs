//! Writing the shards a worker owns: its records gathered by shard, in offset order, in memory
//! up to a budget and in sorted runs spilled to disk beyond it, merged when the shards are
//! written.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use shards::format::{header_line, part_name};
use shards::manifest::ShardInfo;
use shards::{Error, Output, shard_of};

use crate::ingest::Batch;

/// The default memory budget of a process's held records (`--buffer-mb`), shared by its
/// worker threads.
pub const DEFAULT_BUFFER_BYTES: usize = 64 << 20;

/// Bytes of each spilled run read at a time while merging, and of a part written at a time.
const READ_BUFFER: usize = 64 << 10;
const WRITE_BUFFER: usize = 1 << 20;

/// Whether worker `index` of `peers` owns `shard`.
pub fn owner(shard: u32, peers: usize) -> usize {
    shard as usize % peers
}

/// (offset, batch, start, end) of a held record.
type Held = (u64, u32, u32, u32);

/// A sorted run on disk: the held records of one spill, grouped by owned shard in shard order,
/// each group in offset order.
#[derive(Debug)]
struct Run {
    /// An unnamed temporary file: it goes when the run is dropped, or the process dies.
    file: File,
    /// `[start, end)` of each owned shard's records in `file`.
    segments: Vec<(u64, u64)>,
}

/// The records a worker receives for the shards it owns. They are held in memory up to
/// `budget` bytes; beyond it, the held records are sorted by (shard, offset) and spilled as one
/// run, so memory does not grow with the input. [`ShardSink::write`] merges the runs and what
/// is still held into the part files.
#[derive(Debug)]
pub struct ShardSink {
    num_shards: u32,
    index: usize,
    peers: usize,
    budget: usize,
    spill_dir: PathBuf,
    batches: Vec<Batch>,
    held: usize,
    runs: Vec<Run>,
    /// The first spill failure: reported by [`ShardSink::write`].
    failure: Option<std::io::Error>,
}

impl ShardSink {
    /// A sink for worker `index` of `peers`, holding up to `budget` bytes of records in memory
    /// and spilling runs to unnamed files in `spill_dir`.
    pub fn new(
        num_shards: u32,
        index: usize,
        peers: usize,
        budget: usize,
        spill_dir: PathBuf,
    ) -> ShardSink {
        ShardSink {
            num_shards,
            index,
            peers,
            budget: budget.max(1),
            spill_dir,
            batches: Vec::new(),
            held: 0,
            runs: Vec::new(),
            failure: None,
        }
    }

    /// Number of batches received so far (a count of progress for the waits).
    pub fn received(&self) -> usize {
        self.batches.len() + self.runs.len()
    }

    /// Number of runs spilled so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Takes in received batches, spilling when the held records pass the budget.
    pub fn extend(&mut self, batches: &mut Vec<Batch>) {
        for mut b in batches.drain(..) {
            b.text.shrink_to_fit();
            self.held += b.text.len();
            self.batches.push(b);
        }
        if self.held >= self.budget
            && self.failure.is_none()
            && let Err(e) = self.spill()
        {
            self.failure = Some(e);
        }
    }

    /// The held records of each owned shard, in offset order.
    fn groups(&self) -> Vec<Vec<Held>> {
        let owned = (0..self.num_shards)
            .filter(|&s| owner(s, self.peers) == self.index)
            .count();
        // Shard s is the (s / peers)-th shard this worker owns.
        let mut groups: Vec<Vec<Held>> = vec![Vec::new(); owned];
        for (b, batch) in self.batches.iter().enumerate() {
            for (offset, start, end) in batch.records() {
                let shard = shard_of(offset, self.num_shards);
                debug_assert_eq!(
                    owner(shard, self.peers),
                    self.index,
                    "records are routed to their owner"
                );
                groups[shard as usize / self.peers].push((
                    offset,
                    b as u32,
                    start as u32,
                    end as u32,
                ));
            }
        }
        for g in &mut groups {
            g.sort_unstable_by_key(|r| r.0);
        }
        groups
    }

    /// Writes the held records as one sorted run and lets them go.
    fn spill(&mut self) -> std::io::Result<()> {
        let groups = self.groups();
        let file = tempfile::tempfile_in(&self.spill_dir)?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut segments = Vec::with_capacity(groups.len());
        let mut at = 0u64;
        for records in groups {
            let start = at;
            for (_, b, s, e) in records {
                let line = &self.batches[b as usize].text[s as usize..e as usize];
                out.write_all(line)?;
                at += line.len() as u64;
            }
            segments.push((start, at));
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        self.runs.push(Run { file, segments });
        self.batches = Vec::new();
        self.held = 0;
        Ok(())
    }

    /// Writes every shard owned by this worker (including empty ones), merging the spilled
    /// runs with the records still held, and returns their infos in shard order.
    pub fn write(self, output: &dyn Output, header: &str) -> shards::Result<Vec<ShardInfo>> {
        let spill_name = format!("a spilled run in {}", self.spill_dir.display());
        let spill_error = |e| Error::io(&spill_name, e);
        if let Some(e) = self.failure {
            return Err(spill_error(e));
        }
        let owned: Vec<u32> = (0..self.num_shards)
            .filter(|&s| owner(s, self.peers) == self.index)
            .collect();
        let groups = self.groups();
        let mut infos = Vec::with_capacity(owned.len());
        for (slot, (shard, held)) in owned.into_iter().zip(groups).enumerate() {
            let name = part_name(shard);
            let part = output.create_part(&name)?;
            let mut part = BufWriter::with_capacity(WRITE_BUFFER, part);
            let write_error = |e| Error::io(output.location().join(&name), e);
            part.write_all(header.as_bytes()).map_err(write_error)?;
            let rows = self
                .write_slot(slot, &held, &mut part)
                .map_err(|e| match e {
                    MergeError::Read(e) => spill_error(e),
                    MergeError::Write(e) => write_error(e),
                })?;
            let part = part
                .into_inner()
                .map_err(|e| Error::io(output.location().join(&name), e.into_error()))?;
            let mut info = part.finish()?;
            info.rows = rows;
            infos.push(info);
        }
        // The parts may still be uploading (S3): reported only once stored.
        output.sync_parts()?;
        Ok(infos)
    }
}

impl ShardSink {
    /// Writes the records of owned shard `slot` in offset order (`held`: its records still in
    /// memory, from [`ShardSink::groups`]) and returns their number.
    fn write_slot(
        &self,
        slot: usize,
        held: &[Held],
        out: &mut impl Write,
    ) -> Result<u64, MergeError> {
        if self.runs.is_empty() {
            for &(_, b, s, e) in held {
                out.write_all(&self.batches[b as usize].text[s as usize..e as usize])
                    .map_err(MergeError::Write)?;
            }
            Ok(held.len() as u64)
        } else {
            merge(&self.runs, slot, held, &self.batches, out)
        }
    }
}

/// A failure while merging: reading a spilled run, or writing the part.
enum MergeError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Reads `[pos, end)` of a file with positional reads, so that many readers share one file.
struct Segment<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Segment<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The offset a record line starts with.
fn offset_of(line: &[u8]) -> u64 {
    line.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'))
}

/// Writes the records of owned shard `slot` in offset order: a k-way merge of its segment in
/// every run and the records still held. Returns the number of records.
fn merge(
    runs: &[Run],
    slot: usize,
    held: &[Held],
    batches: &[Batch],
    out: &mut impl Write,
) -> Result<u64, MergeError> {
    let mut readers: Vec<BufReader<Segment<'_>>> = runs
        .iter()
        .map(|r| {
            let (pos, end) = r.segments[slot];
            BufReader::with_capacity(
                READ_BUFFER,
                Segment {
                    file: &r.file,
                    pos,
                    end,
                },
            )
        })
        .collect();
    let mut lines: Vec<Vec<u8>> = vec![Vec::new(); readers.len()];
    // (offset, source): sources are the runs, then the held records (source runs.len()).
    let mut heap = BinaryHeap::with_capacity(readers.len() + 1);
    let next = |reader: &mut BufReader<Segment<'_>>, line: &mut Vec<u8>| {
        line.clear();
        reader.read_until(b'\n', line).map(|n| n > 0)
    };
    for (i, (reader, line)) in readers.iter_mut().zip(&mut lines).enumerate() {
        match next(reader, line) {
            Ok(true) => heap.push(Reverse((offset_of(line), i))),
            Ok(false) => {}
            Err(e) => return Err(MergeError::Read(e)),
        }
    }
    let mine = runs.len();
    let mut held_at = 0;
    if let Some(r) = held.first() {
        heap.push(Reverse((r.0, mine)));
    }
    let mut rows = 0u64;
    while let Some(Reverse((_, source))) = heap.pop() {
        rows += 1;
        if source == mine {
            let (_, b, s, e) = held[held_at];
            if let Err(e) = out.write_all(&batches[b as usize].text[s as usize..e as usize]) {
                return Err(MergeError::Write(e));
            }
            held_at += 1;
            if let Some(r) = held.get(held_at) {
                heap.push(Reverse((r.0, mine)));
            }
        } else {
            if let Err(e) = out.write_all(&lines[source]) {
                return Err(MergeError::Write(e));
            }
            match next(&mut readers[source], &mut lines[source]) {
                Ok(true) => heap.push(Reverse((offset_of(&lines[source]), source))),
                Ok(false) => {}
                Err(e) => return Err(MergeError::Read(e)),
            }
        }
    }
    Ok(rows)
}

/// The shard header line for a schema.
pub fn shard_header(schema: &shards::Schema) -> String {
    header_line(schema.label_name(), &schema.feature_names())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of records for worker `dest`, one line `offset,x` per offset.
    fn batch(dest: u32, offsets: &[u64]) -> Batch {
        let mut text = Vec::new();
        for o in offsets {
            text.extend_from_slice(format!("{o},{}\n", o * 7).as_bytes());
        }
        Batch { dest, text }
    }

    /// Everything a sink would write for each owned shard, as text.
    fn written(sink: &ShardSink) -> Vec<String> {
        sink.groups()
            .iter()
            .enumerate()
            .map(|(slot, held)| {
                let mut out = Vec::new();
                let rows = sink.write_slot(slot, held, &mut out).ok().unwrap();
                let text = String::from_utf8(out).unwrap();
                assert_eq!(rows as usize, text.lines().count());
                text
            })
            .collect()
    }

    #[test]
    fn spilled_runs_merge_into_the_order_held_records_have() {
        // Worker 1 of 2 over 5 shards owns shards 1 and 3. Batches arrive out of offset order
        // (as from several senders), with records of both owned shards in each.
        let (num_shards, index, peers) = (5, 1, 2);
        let mine: Vec<u64> = (0..4000u64)
            .filter(|&o| owner(shard_of(o, num_shards), peers) == index)
            .collect();
        let mut chunks: Vec<Vec<u64>> = mine.chunks(37).map(<[u64]>::to_vec).collect();
        // A fixed shuffle: reverse every other chunk's position.
        let n = chunks.len();
        for i in (0..n / 2).step_by(2) {
            chunks.swap(i, n - 1 - i);
        }
        let feed = |budget: usize| {
            let mut sink = ShardSink::new(num_shards, index, peers, budget, std::env::temp_dir());
            for c in &chunks {
                sink.extend(&mut vec![batch(index as u32, c)]);
            }
            sink
        };
        let in_memory = feed(usize::MAX);
        assert_eq!(in_memory.runs(), 0);
        // A budget below one batch: a run per batch.
        let spilled = feed(1);
        assert_eq!(spilled.runs(), chunks.len());
        let expected = written(&in_memory);
        assert_eq!(written(&spilled), expected);
        // Offset order within each shard, and every record once.
        let mut all = Vec::new();
        for text in &expected {
            let offsets: Vec<u64> = text.lines().map(|l| offset_of(l.as_bytes())).collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]));
            all.extend(offsets);
        }
        all.sort_unstable();
        assert_eq!(all, mine);
    }
}
