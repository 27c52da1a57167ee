//! Reading the input: it is cut into chunks in input order, worker `w` of `peers` reads chunks
//! `w`, `w + peers`, ..., each chunk's lines cleaned into records ([`shards::scan::Scanner`]) and
//! sent in batches to the owners of their shards.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use shards::lines::split_ranges;
use shards::scan::{Scanned, Scanner};
use shards::{Input, LineReader, shard_of};

use crate::stats::LocalStats;

/// One shard's records in a batch: their contents, each `\n`-terminated, in offset order, and
/// each content's hash ([`shards::keys::content_hash`], which the reader computed to place the
/// record, handed on so that the writer does not hash again).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The shard.
    pub shard: u32,
    /// The input offsets of its first and last records: the owner checks that a shard's
    /// records come in offset order.
    pub first: u64,
    /// See `first`.
    pub last: u64,
    /// The contents, `[unit,]label,f1,...,fk\n` each.
    #[serde(with = "serde_bytes")]
    pub text: Vec<u8>,
    /// The contents' hashes, one a line.
    pub hashes: Vec<u64>,
}

/// Records bound for one worker, from one chunk of the input, grouped by shard. Plain bytes and
/// numbers: cheap to move between threads and to send between processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The worker that owns these records' shards.
    pub dest: u32,
    /// The worker that read them.
    pub source: u32,
    /// Its place among the batches from `source` to `dest` (0, 1, ...): the owner takes them
    /// in this order whatever order they arrive in.
    pub seq: u64,
    /// The chunk of the input the records come from.
    pub chunk: u32,
    /// This is the last batch of `chunk` for `dest` (it may hold no records).
    pub ends_chunk: bool,
    /// The records, by shard, in shard order.
    pub parts: Vec<Part>,
}

/// How the input is cut into chunks, in input order; chunk `c` is read by worker `c % peers`.
/// Every worker computes the same plan from the input's size and the worker count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Each chunk's byte range (`[0, u64::MAX)`: the whole decompressed stream, for gzip).
    pub chunks: Vec<(u64, u64)>,
    peers: usize,
}

/// Chunks of a local input: small enough that what a worker holds while the chunk before it is
/// written stays small, large enough that a chunk's fixed costs (an open, a batch to each owner)
/// do not count.
pub const LOCAL_CHUNK_BYTES: u64 = 4 << 20;

impl Plan {
    /// The plan for an input of `len` bytes read by `peers` workers, in chunks of about
    /// `chunk_bytes` (at least one chunk a worker); gzip input is one chunk, read by worker 0.
    pub fn new(len: u64, peers: usize, gzip: bool, chunk_bytes: u64) -> Plan {
        let peers = peers.max(1);
        let chunks = if gzip {
            vec![(0, u64::MAX)]
        } else {
            let n = len.div_ceil(chunk_bytes.max(1)).max(peers as u64);
            split_ranges(len, n as usize)
        };
        Plan { chunks, peers }
    }

    /// Number of chunks.
    pub fn len(&self) -> u32 {
        self.chunks.len() as u32
    }

    /// Whether there are none (never: an empty input is one empty chunk a worker).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The worker that reads chunk `chunk`.
    pub fn reader(&self, chunk: u32) -> usize {
        chunk as usize % self.peers
    }

    /// The chunks worker `index` reads, in input order.
    pub fn of_worker(&self, index: usize) -> impl Iterator<Item = u32> + '_ {
        (index..self.chunks.len())
            .step_by(self.peers)
            .map(|c| c as u32)
    }
}

/// Records waiting to be sent, by shard, so that each batch goes out grouped by shard.
struct Pending {
    peers: usize,
    source: u32,
    /// Each shard's records so far.
    shards: Vec<Part>,
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
            shards: (0..num_shards)
                .map(|shard| Part {
                    shard,
                    ..Part::default()
                })
                .collect(),
            bytes: vec![0; peers],
            seq: vec![0; peers],
        }
    }

    /// The records of worker `dest`'s shards as one batch (empty shards left out).
    fn take(&mut self, dest: usize, chunk: u32, ends_chunk: bool) -> Batch {
        let mut parts = Vec::new();
        for shard in (dest..self.shards.len()).step_by(self.peers) {
            let part = &mut self.shards[shard];
            if !part.hashes.is_empty() {
                // The next batch's buffers are as large as these were: no growing.
                let text = Vec::with_capacity(part.text.len());
                let hashes = Vec::with_capacity(part.hashes.len());
                parts.push(Part {
                    shard: shard as u32,
                    first: part.first,
                    last: part.last,
                    text: std::mem::replace(&mut part.text, text),
                    hashes: std::mem::replace(&mut part.hashes, hashes),
                });
            }
        }
        self.bytes[dest] = 0;
        let seq = self.seq[dest];
        self.seq[dest] += 1;
        Batch {
            dest: dest as u32,
            source: self.source,
            seq,
            chunk,
            ends_chunk,
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

/// Cleans the chunks of worker `index` of the input, handing batches to `emit`: full ones as
/// they fill, and at the end of each chunk one to every worker that ends the chunk for it (so
/// an owner knows when it has all of a chunk's records). Returns the worker's counts. On a read
/// error the worker still ends each of its chunks, so the owners are not left waiting, and
/// returns the error.
#[allow(clippy::too_many_arguments)]
pub fn ingest(
    input: &dyn Input,
    plan: &Plan,
    index: usize,
    mut scanner: Scanner,
    num_shards: u32,
    peers: usize,
    counters: &Counters,
    emit: &mut dyn FnMut(Batch),
) -> shards::Result<LocalStats> {
    let mut stats = LocalStats::default();
    let mut pending = Pending::new(num_shards, peers, index);
    let mut failure = None;
    for chunk in plan.of_worker(index) {
        if failure.is_none()
            && let Err(e) = read_chunk(
                input,
                plan.chunks[chunk as usize],
                chunk,
                &mut scanner,
                &mut pending,
                &mut stats,
                counters,
                emit,
            )
        {
            failure = Some(e);
        }
        for dest in 0..peers {
            emit(pending.take(dest, chunk, true));
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

/// Cleans one chunk, `[start, end)` (the lines starting in it).
#[allow(clippy::too_many_arguments)]
fn read_chunk(
    input: &dyn Input,
    (start, end): (u64, u64),
    chunk: u32,
    scanner: &mut Scanner,
    pending: &mut Pending,
    stats: &mut LocalStats,
    counters: &Counters,
    emit: &mut dyn FnMut(Batch),
) -> shards::Result<()> {
    let io = |e| shards::Error::io(input.location(), e);
    let mut lines: LineReader<Box<dyn Read + Send>> = if end == u64::MAX {
        LineReader::new(shards::store::open_stream(input)?, 0)
    } else if start >= end {
        return Ok(());
    } else {
        LineReader::for_range(input.open_at(start.saturating_sub(1), end)?, start, end)
            .map_err(io)?
    };
    let peers = pending.peers;
    let first = lines.position();
    let mut rows = 0u64;
    let mut last = first;
    scanner
        .scan(&mut lines, |offset, outcome| {
            rows += 1;
            match outcome {
                Scanned::Kept(r) => {
                    let shard = shard_of(r.place, pending.shards.len() as u32);
                    let part = &mut pending.shards[shard as usize];
                    if part.hashes.is_empty() {
                        part.first = offset;
                    }
                    part.last = offset;
                    part.text.extend_from_slice(r.content_line);
                    part.hashes.push(r.hash);
                    stats.kept(r.label, r.vector);
                    let dest = crate::write::owner(shard, peers);
                    pending.bytes[dest] += r.content_line.len() + 8;
                    if pending.bytes[dest] >= BATCH_BYTES {
                        emit(pending.take(dest, chunk, false));
                    }
                }
                Scanned::Header => stats.header(),
                Scanned::Dropped(reason) => stats.dropped(reason),
            }
            if rows.is_multiple_of(16_384) {
                counters.bytes.fetch_add(offset - last, Ordering::Relaxed);
                counters.rows.fetch_add(16_384, Ordering::Relaxed);
                last = offset;
            }
        })
        .map_err(io)?;
    counters
        .bytes
        .fetch_add(lines.position() - last, Ordering::Relaxed);
    counters.rows.fetch_add(rows % 16_384, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_input_in_order_and_alternate() {
        let plan = Plan::new(100, 2, false, 30);
        assert_eq!(plan.chunks, [(0, 25), (25, 50), (50, 75), (75, 100)]);
        assert_eq!(plan.of_worker(1).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(plan.reader(2), 0);
        // At least one chunk a worker, even for a tiny input.
        assert_eq!(Plan::new(3, 4, false, 1 << 20).len(), 4);
        // Gzip: one chunk, worker 0's.
        let gz = Plan::new(100, 3, true, 30);
        assert_eq!(gz.chunks, [(0, u64::MAX)]);
        assert_eq!(gz.of_worker(0).count(), 1);
        assert_eq!(gz.of_worker(2).count(), 0);
    }
}
