//! Reading one worker's share of the input: lines of a byte range, cleaned into record batches.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use shards::lines::split_ranges;
use shards::{Cleaner, Input, LineReader, Outcome, shard_of};

use crate::stats::LocalStats;

/// Records bound for one worker: their shard lines back to back. Each line starts with the
/// record's offset, from which the owner recomputes the shard, so a batch is plain bytes (cheap
/// to send between processes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The worker that owns these records' shards.
    pub dest: u32,
    /// The shard lines, each `\n`-terminated.
    #[serde(with = "serde_bytes")]
    pub text: Vec<u8>,
}

impl Batch {
    /// A batch for worker `dest` with room for a full batch.
    fn for_worker(dest: u32) -> Batch {
        Batch {
            dest,
            text: Vec::with_capacity(BATCH_BYTES + 4096),
        }
    }

    /// Each record's offset and the `[start, end)` of its line (with the `\n`) in `text`.
    pub fn records(&self) -> impl Iterator<Item = (u64, usize, usize)> + '_ {
        let mut start = 0;
        memchr::memchr_iter(b'\n', &self.text).map(move |nl| {
            let offset = self.text[start..nl]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
            let range = (offset, start, nl + 1);
            start = nl + 1;
            range
        })
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
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

/// Cleans the worker's share of the input, handing full batches (one per destination worker)
/// to `emit`, and returns the worker's counts.
pub fn ingest(
    input: &dyn Input,
    share: Share,
    mut cleaner: Cleaner,
    num_shards: u32,
    peers: usize,
    counters: &Counters,
    emit: &mut dyn FnMut(Batch),
) -> shards::Result<LocalStats> {
    let mut stats = LocalStats::default();
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
    let mut batches: Vec<Batch> = (0..peers).map(|d| Batch::for_worker(d as u32)).collect();
    let mut last_pos = lines.position();
    let mut since_report = 0u32;
    while let Some((offset, line)) = lines.next_line().map_err(io)? {
        match cleaner.clean(line) {
            Outcome::Kept => {
                let shard = shard_of(offset, num_shards);
                let batch = &mut batches[crate::write::owner(shard, peers)];
                let start = batch.text.len();
                cleaner.write_record(offset, &mut batch.text);
                stats.kept(cleaner.label(), &batch.text[start..]);
                if batch.text.len() >= BATCH_BYTES {
                    let fresh = Batch::for_worker(batch.dest);
                    emit(std::mem::replace(batch, fresh));
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
    for b in batches.into_iter().filter(|b| !b.is_empty()) {
        emit(b);
    }
    Ok(stats)
}
