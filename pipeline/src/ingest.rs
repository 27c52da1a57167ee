//! Reading one worker's share of the input: lines of a byte range, cleaned into record batches.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use shards::lines::split_ranges;
use shards::{Cleaner, Input, LineReader, Outcome, shard_of};

use crate::stats::LocalStats;

/// Records bound for one worker, grouped by shard: each owned shard's transit lines
/// ([`shards::keys::Transit`]) back to back, in offset order. A batch is plain bytes and an index
/// (cheap to send between processes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The worker that owns these records' shards.
    pub dest: u32,
    /// The worker that read them. Workers read disjoint byte ranges in worker order, so a
    /// shard's records are those of worker 0, then worker 1's, and so on.
    pub source: u32,
    /// Its place among the batches from `source` to `dest` (0, 1, ...): the owner takes them
    /// in this order whatever order they arrive in.
    pub seq: u64,
    /// The shard lines, each `\n`-terminated.
    #[serde(with = "serde_bytes")]
    pub text: Vec<u8>,
    /// Each shard's lines in `text`, in shard order: (shard, end of its lines, rows); a part
    /// starts where the previous one ends.
    pub parts: Vec<(u32, u32, u32)>,
}

impl Batch {
    /// Each part's shard, `[start, end)` in `text` and number of rows.
    pub fn parts(&self) -> impl Iterator<Item = (u32, usize, usize, u32)> + '_ {
        let mut start = 0;
        self.parts.iter().map(move |&(shard, end, rows)| {
            let part = (shard, start, end as usize, rows);
            start = end as usize;
            part
        })
    }
}

/// Records waiting to be sent, by shard, so that each batch goes out grouped by shard.
struct Pending {
    peers: usize,
    source: u32,
    /// Each shard's lines and rows.
    shards: Vec<(Vec<u8>, u32)>,
    /// Bytes waiting for each destination worker.
    bytes: Vec<usize>,
    /// The next batch's `seq` for each destination worker.
    seq: Vec<u64>,
}

impl Pending {
    fn new(num_shards: u32, peers: usize, source: usize) -> Pending {
        Pending {
            peers,
            source: source as u32,
            shards: vec![(Vec::new(), 0); num_shards as usize],
            bytes: vec![0; peers],
            seq: vec![0; peers],
        }
    }

    /// The records of worker `dest`'s shards as one batch (empty shards left out).
    fn take(&mut self, dest: usize) -> Batch {
        let mut text = Vec::with_capacity(self.bytes[dest]);
        let mut parts = Vec::new();
        for shard in (dest..self.shards.len()).step_by(self.peers) {
            let (lines, rows) = &mut self.shards[shard];
            if *rows > 0 {
                text.extend_from_slice(lines);
                parts.push((shard as u32, text.len() as u32, *rows));
                lines.clear();
                *rows = 0;
            }
        }
        self.bytes[dest] = 0;
        let seq = self.seq[dest];
        self.seq[dest] += 1;
        Batch {
            dest: dest as u32,
            source: self.source,
            seq,
            text,
            parts,
        }
    }
}

/// Bytes and rows read so far, shared with the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Input bytes consumed.
    pub bytes: AtomicU64,
    /// Input rows cleaned.
    pub rows: AtomicU64,
}

/// Records are sent on once a batch holds this many bytes.
const BATCH_BYTES: usize = 256 * 1024;

/// Which part of the input a worker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// The lines starting in this byte range of an uncompressed input.
    Range(u64, u64),
    /// The whole (decompressed) stream: gzip input is read by one worker.
    Whole,
    /// Nothing.
    Nothing,
}

impl Share {
    /// The share of worker `index` of `peers` for an input of `len` bytes.
    pub fn of(index: usize, peers: usize, len: u64, gzip: bool) -> Share {
        match (gzip, index) {
            (true, 0) => Share::Whole,
            (true, _) => Share::Nothing,
            (false, _) => {
                let (s, e) = split_ranges(len, peers)[index];
                Share::Range(s, e)
            }
        }
    }
}

/// Cleans the share of worker `index` of the input, handing full batches (one per destination
/// worker) to `emit`, and returns the worker's counts.
#[allow(clippy::too_many_arguments)]
pub fn ingest(
    input: &dyn Input,
    index: usize,
    share: Share,
    mut cleaner: Cleaner,
    num_shards: u32,
    peers: usize,
    counters: &Counters,
    emit: &mut dyn FnMut(Batch),
) -> shards::Result<LocalStats> {
    let mut stats = LocalStats::new(cleaner.schema().unit.is_some());
    let io = |e| shards::Error::io(input.location(), e);
    let mut lines: LineReader<Box<dyn Read + Send>> = match share {
        Share::Nothing => return Ok(stats),
        Share::Whole => LineReader::new(shards::store::open_stream(input)?, 0),
        Share::Range(start, end) => {
            if start >= end {
                return Ok(stats);
            }
            let from = start.saturating_sub(1);
            LineReader::for_range(input.open_at(from, end)?, start, end).map_err(io)?
        }
    };
    let mut pending = Pending::new(num_shards, peers, index);
    let mut record = Vec::with_capacity(256);
    let mut last_pos = lines.position();
    let mut since_report = 0u32;
    while let Some((offset, line)) = lines.next_line().map_err(io)? {
        match cleaner.clean(line) {
            Outcome::Kept => {
                record.clear();
                cleaner.write_record(offset, &mut record);
                let shard = shard_of(cleaner.placement(&record), num_shards);
                let (lines, rows) = &mut pending.shards[shard as usize];
                lines.extend_from_slice(&record);
                *rows += 1;
                match cleaner.digits() {
                    Some(d) => stats.kept_digits(cleaner.label(), d, &record),
                    None => stats.kept(cleaner.label(), &record),
                }
                let dest = crate::write::owner(shard, peers);
                pending.bytes[dest] += record.len();
                if pending.bytes[dest] >= BATCH_BYTES {
                    emit(pending.take(dest));
                }
            }
            Outcome::Header => stats.header(),
            Outcome::Dropped(reason) => stats.dropped(reason),
        }
        since_report += 1;
        if since_report == 16_384 {
            since_report = 0;
            let pos = lines.position();
            counters.bytes.fetch_add(pos - last_pos, Ordering::Relaxed);
            counters.rows.fetch_add(16_384, Ordering::Relaxed);
            last_pos = pos;
        }
    }
    counters
        .bytes
        .fetch_add(lines.position() - last_pos, Ordering::Relaxed);
    counters
        .rows
        .fetch_add(u64::from(since_report), Ordering::Relaxed);
    for dest in 0..peers {
        if pending.bytes[dest] > 0 {
            emit(pending.take(dest));
        }
    }
    Ok(stats)
}
