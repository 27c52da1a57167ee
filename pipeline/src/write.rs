//! Writing the shards a worker owns. Each owned shard's records come from every reader (worker)
//! as a stream in offset order, and readers read disjoint byte ranges in worker order, so a
//! shard is its streams concatenated in worker order: no sort and no merge. The streams are
//! held in memory up to a budget and appended to a spill file beyond it. As a shard is written,
//! each record gets its key ([`shards::keys::ShardKeyer`]: every record of a content, and of a
//! unit, is in this shard, in input order).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use shards::format::{header_line, part_name};
use shards::keys::{ShardKeyer, UnitRule};
use shards::manifest::ShardInfo;
use shards::{Error, Output};

use crate::ingest::Batch;

/// The default memory budget of a process's held records (`--buffer-mb`), shared by its
/// worker threads.
pub const DEFAULT_BUFFER_BYTES: usize = 64 << 20;

/// Bytes of the spill file read at a time while writing the parts, and of a part or the spill
/// file written at a time.
const READ_BUFFER: usize = 1 << 20;
const WRITE_BUFFER: usize = 1 << 20;

/// Whether worker `index` of `peers` owns `shard`.
pub fn owner(shard: u32, peers: usize) -> usize {
    shard as usize % peers
}

/// The records one reader sent for one owned shard, in offset order: first what was spilled
/// (`[start, end)` ranges of the spill file), then what is held (batch, start, end).
#[derive(Debug, Default)]
struct Stream {
    spilled: Vec<(u64, u64)>,
    held: Vec<(u32, u32, u32)>,
    rows: u64,
    /// The first and last offsets taken so far.
    first: Option<u64>,
    last: Option<u64>,
}

/// The records a worker receives for the shards it owns, as one [`Stream`] per (owned shard,
/// reader). They are held in memory up to `budget` bytes; beyond it, every stream's held
/// records are appended to one unnamed spill file, so memory does not grow with the input.
/// [`ShardSink::write`] writes each shard as its streams in reader order.
#[derive(Debug)]
pub struct ShardSink {
    num_shards: u32,
    index: usize,
    peers: usize,
    budget: usize,
    spill_dir: PathBuf,
    /// Stream of owned shard `slot` from reader `source` at `slot * peers + source`.
    streams: Vec<Stream>,
    /// The texts of the held batches.
    batches: Vec<Vec<u8>>,
    held: usize,
    /// The next `seq` expected from each reader, and batches that came before their turn.
    next_seq: Vec<u64>,
    early: BTreeMap<(u32, u64), Batch>,
    taken: usize,
    spill: Option<BufWriter<File>>,
    spilled: u64,
    spills: usize,
    /// The first failure (a spill that could not be written, a batch that breaks the order):
    /// reported by [`ShardSink::write`].
    failure: Option<String>,
}

impl ShardSink {
    /// A sink for worker `index` of `peers`, holding up to `budget` bytes of records in memory
    /// and spilling to an unnamed file in `spill_dir`.
    pub fn new(
        num_shards: u32,
        index: usize,
        peers: usize,
        budget: usize,
        spill_dir: PathBuf,
    ) -> ShardSink {
        let owned = (0..num_shards)
            .filter(|&s| owner(s, peers) == index)
            .count();
        ShardSink {
            num_shards,
            index,
            peers,
            budget: budget.max(1),
            spill_dir,
            streams: (0..owned * peers).map(|_| Stream::default()).collect(),
            batches: Vec::new(),
            held: 0,
            next_seq: vec![0; peers],
            early: BTreeMap::new(),
            taken: 0,
            spill: None,
            spilled: 0,
            spills: 0,
            failure: None,
        }
    }

    /// Number of batches received so far (a count of progress for the waits).
    pub fn received(&self) -> usize {
        self.taken + self.early.len()
    }

    /// Number of times the held records were spilled.
    pub fn runs(&self) -> usize {
        self.spills
    }

    /// Takes in received batches in each reader's order, spilling when the held records pass
    /// the budget.
    pub fn extend(&mut self, batches: &mut Vec<Batch>) {
        for b in batches.drain(..) {
            let source = b.source as usize;
            if source >= self.peers || b.dest as usize != self.index {
                self.fail(format!(
                    "a batch from worker {} for worker {} reached worker {}",
                    b.source, b.dest, self.index
                ));
                continue;
            }
            if b.seq != self.next_seq[source] {
                // Channels deliver in order, so this does not happen; if it does, the batch
                // waits for its turn.
                self.early.insert((b.source, b.seq), b);
                continue;
            }
            self.take(b);
            while let Some(b) = self.early.remove(&(source as u32, self.next_seq[source])) {
                self.take(b);
            }
        }
    }

    fn fail(&mut self, message: String) {
        self.failure.get_or_insert(message);
    }

    /// Appends a batch, the next from its reader, to its streams.
    fn take(&mut self, b: Batch) {
        let source = b.source as usize;
        self.next_seq[source] += 1;
        self.taken += 1;
        let at = self.batches.len() as u32;
        for (shard, start, end, rows) in b.parts() {
            if shard >= self.num_shards || owner(shard, self.peers) != self.index || start >= end {
                self.fail(format!(
                    "worker {} received records of shard {shard}, which it does not own",
                    self.index
                ));
                return;
            }
            let lines = &b.text[start..end];
            let first = offset_of(lines);
            let last = offset_of(last_line(lines));
            let stream = &mut self.streams[shard as usize / self.peers * self.peers + source];
            if stream.last.is_some_and(|l| l >= first) {
                self.fail(format!(
                    "records of shard {shard} from worker {source} arrived out of offset order"
                ));
                return;
            }
            stream.first.get_or_insert(first);
            stream.last = Some(last);
            stream.rows += u64::from(rows);
            stream.held.push((at, start as u32, end as u32));
        }
        self.held += b.text.len();
        self.batches.push(b.text);
        if self.held >= self.budget
            && self.failure.is_none()
            && let Err(e) = self.spill()
        {
            self.fail(format!(
                "could not write a spill file in {}: {e}",
                self.spill_dir.display()
            ));
        }
    }

    /// Appends every stream's held records to the spill file and lets them go.
    fn spill(&mut self) -> std::io::Result<()> {
        if self.spill.is_none() {
            let file = tempfile::tempfile_in(&self.spill_dir)?;
            self.spill = Some(BufWriter::with_capacity(WRITE_BUFFER, file));
        }
        let out = self.spill.as_mut().expect("opened above");
        for stream in &mut self.streams {
            let start = self.spilled;
            for (b, s, e) in stream.held.drain(..) {
                let lines = &self.batches[b as usize][s as usize..e as usize];
                out.write_all(lines)?;
                self.spilled += lines.len() as u64;
            }
            if self.spilled > start {
                stream.spilled.push((start, self.spilled));
            }
        }
        self.batches = Vec::new();
        self.held = 0;
        self.spills += 1;
        Ok(())
    }

    /// Writes every shard owned by this worker (including empty ones), each as its streams in
    /// reader order with the records keyed under `rule`, and returns their infos in shard order
    /// and the rows the unit cap let go.
    pub fn write(
        mut self,
        output: &dyn Output,
        header: &str,
        rule: UnitRule,
    ) -> shards::Result<(Vec<ShardInfo>, u64)> {
        let spill_name = format!("the spill file in {}", self.spill_dir.display());
        if self.failure.is_none() && !self.early.is_empty() {
            let (source, seq) = self.early.keys().next().expect("not empty");
            self.fail(format!(
                "batch {} from worker {source} never arrived (batch {seq} did)",
                self.next_seq[*source as usize]
            ));
        }
        self.check_order();
        if let Some(message) = self.failure.take() {
            return Err(Error::io(
                &spill_name,
                std::io::Error::other(format!("worker {}: {message}", self.index)),
            ));
        }
        let spill = match self.spill.take() {
            Some(w) => Some(
                w.into_inner()
                    .map_err(|e| Error::io(&spill_name, e.into_error()))?,
            ),
            None => None,
        };
        let owned: Vec<u32> = (0..self.num_shards)
            .filter(|&s| owner(s, self.peers) == self.index)
            .collect();
        let mut buf = Vec::new();
        let mut infos = Vec::with_capacity(owned.len());
        let mut capped = 0;
        for (slot, shard) in owned.into_iter().enumerate() {
            let name = part_name(shard);
            let part = output.create_part(&name)?;
            let mut part = BufWriter::with_capacity(WRITE_BUFFER, part);
            let write_error = |e| Error::io(output.location().join(&name), e);
            part.write_all(header.as_bytes()).map_err(write_error)?;
            let mut keyer = ShardKeyer::new(rule);
            let rows = self
                .write_slot(slot, spill.as_ref(), &mut buf, &mut keyer, &mut part)
                .map_err(|e| match e {
                    CopyError::Read(e) => Error::io(&spill_name, e),
                    CopyError::Write(e) => write_error(e),
                    CopyError::Record(reason) => Error::io(
                        &spill_name,
                        std::io::Error::other(format!("a record of shard {shard}: {reason}")),
                    ),
                })?;
            capped += keyer.capped();
            let part = part
                .into_inner()
                .map_err(|e| Error::io(output.location().join(&name), e.into_error()))?;
            let mut info = part.finish()?;
            info.rows = rows;
            infos.push(info);
        }
        // The parts may still be uploading (S3): reported only once stored.
        output.sync_parts()?;
        Ok((infos, capped))
    }

    /// Fails unless each owned shard's streams, in reader order, are in offset order.
    fn check_order(&mut self) {
        for (slot, streams) in self.streams.chunks(self.peers.max(1)).enumerate() {
            let mut last: Option<u64> = None;
            for s in streams {
                if let (Some(l), Some(f)) = (last, s.first)
                    && l >= f
                {
                    let shard = slot * self.peers + self.index;
                    self.fail(format!(
                        "the readers' records of shard {shard} overlap in offsets"
                    ));
                    return;
                }
                last = s.last.or(last);
            }
        }
    }

    /// Writes the records of owned shard `slot` (its streams in reader order), keyed by
    /// `keyer`, and returns the number written.
    fn write_slot(
        &self,
        slot: usize,
        spill: Option<&File>,
        buf: &mut Vec<u8>,
        keyer: &mut ShardKeyer,
        out: &mut impl Write,
    ) -> Result<u64, CopyError> {
        if keyer.two_passes() {
            self.each_chunk(slot, spill, buf, &mut |chunk| {
                for line in lines(chunk) {
                    keyer.observe(line).map_err(CopyError::Record)?;
                }
                Ok(())
            })?;
        }
        let mut rows = 0;
        let mut keyed = Vec::with_capacity(WRITE_BUFFER);
        self.each_chunk(slot, spill, buf, &mut |chunk| {
            for line in lines(chunk) {
                rows += u64::from(keyer.write(line, &mut keyed).map_err(CopyError::Record)?);
            }
            if keyed.len() >= WRITE_BUFFER {
                out.write_all(&keyed).map_err(CopyError::Write)?;
                keyed.clear();
            }
            Ok(())
        })?;
        out.write_all(&keyed).map_err(CopyError::Write)?;
        Ok(rows)
    }

    /// Calls `f` on the records of owned shard `slot` (its streams in reader order), in chunks
    /// of whole transit lines.
    fn each_chunk(
        &self,
        slot: usize,
        spill: Option<&File>,
        buf: &mut Vec<u8>,
        f: &mut dyn FnMut(&[u8]) -> Result<(), CopyError>,
    ) -> Result<(), CopyError> {
        for stream in &self.streams[slot * self.peers..(slot + 1) * self.peers] {
            for &(start, end) in &stream.spilled {
                let file = spill.expect("a stream with spilled records has a spill file");
                read_lines(file, start, end, buf, f)?;
            }
            for &(b, s, e) in &stream.held {
                f(&self.batches[b as usize][s as usize..e as usize])?;
            }
        }
        Ok(())
    }
}

/// The `\n`-ended lines of `chunk` (the last one may lack its `\n`), without their `\n`.
fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', chunk)
        .map(Some)
        .chain(std::iter::once(None))
        .filter_map(move |end| {
            let from = start;
            match end {
                Some(end) => {
                    start = end + 1;
                    Some(&chunk[from..end])
                }
                None => (from < chunk.len()).then(|| &chunk[from..]),
            }
        })
}

/// A failure while writing a part: reading the spill file, a record that is not a transit line,
/// or writing the part.
enum CopyError {
    Read(std::io::Error),
    Record(String),
    Write(std::io::Error),
}

/// Calls `f` on `[start, end)` of `file` (whole lines, as spilled), in chunks of whole lines read
/// through `buf`.
fn read_lines(
    file: &File,
    mut start: u64,
    end: u64,
    buf: &mut Vec<u8>,
    f: &mut dyn FnMut(&[u8]) -> Result<(), CopyError>,
) -> Result<(), CopyError> {
    buf.resize(READ_BUFFER.max(buf.len()), 0);
    // `buf[..carry]` is the start of a line whose end is not read yet.
    let mut carry = 0;
    while start < end {
        if carry == buf.len() {
            // A line longer than the buffer: make room.
            buf.resize(2 * buf.len(), 0);
        }
        let want = (buf.len() - carry).min((end - start) as usize);
        file.read_exact_at(&mut buf[carry..carry + want], start)
            .map_err(CopyError::Read)?;
        start += want as u64;
        let filled = carry + want;
        match memchr::memrchr(b'\n', &buf[..filled]) {
            Some(last) => {
                f(&buf[..=last])?;
                buf.copy_within(last + 1..filled, 0);
                carry = filled - last - 1;
            }
            None => carry = filled,
        }
    }
    if carry > 0 {
        return Err(CopyError::Record(
            "the spill file ends inside a record".into(),
        ));
    }
    Ok(())
}

/// The offset a record line starts with.
fn offset_of(line: &[u8]) -> u64 {
    line.iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'))
}

/// The last of `\n`-terminated lines.
fn last_line(lines: &[u8]) -> &[u8] {
    let body = lines.strip_suffix(b"\n").unwrap_or(lines);
    match memchr::memrchr(b'\n', body) {
        Some(i) => &body[i + 1..],
        None => body,
    }
}

/// The shard header line for a schema.
pub fn shard_header(schema: &shards::Schema) -> String {
    header_line(
        schema.unit_name(),
        schema.label_name(),
        &schema.feature_names(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::shard_of;

    /// Batch `seq` from worker `source` for worker `dest`, one line `offset,x` per offset,
    /// grouped by shard as `ingest` sends them.
    fn batch(dest: u32, source: u32, seq: u64, offsets: &[u64], num_shards: u32) -> Batch {
        let mut text = Vec::new();
        let mut parts = Vec::new();
        for shard in 0..num_shards {
            let mut rows = 0;
            for &o in offsets
                .iter()
                .filter(|&&o| shard_of(o, num_shards) == shard)
            {
                text.extend_from_slice(format!("{o},{}\n", o * 7).as_bytes());
                rows += 1;
            }
            if rows > 0 {
                parts.push((shard, text.len() as u32, rows));
            }
        }
        Batch {
            dest,
            source,
            seq,
            text,
            parts,
        }
    }

    /// Everything a sink would write for each owned shard, as text (each record keyed).
    fn written(sink: &mut ShardSink) -> Vec<String> {
        assert!(sink.failure.is_none(), "{:?}", sink.failure);
        if let Some(w) = sink.spill.as_mut() {
            w.flush().unwrap();
        }
        let sink = &*sink;
        let spill = sink.spill.as_ref().map(BufWriter::get_ref);
        (0..sink.streams.len() / sink.peers)
            .map(|slot| {
                let mut out = Vec::new();
                let mut keyer = ShardKeyer::new(UnitRule::default());
                let rows = sink
                    .write_slot(slot, spill, &mut Vec::new(), &mut keyer, &mut out)
                    .ok()
                    .unwrap();
                let text = String::from_utf8(out).unwrap();
                assert_eq!(rows as usize, text.lines().count());
                text
            })
            .collect()
    }

    #[test]
    fn spilled_runs_merge_into_the_order_held_records_have() {
        // Worker 1 of 2 over 5 shards owns shards 1 and 3. Batches arrive out of offset order
        // (as from several senders), with records of both owned shards in each: the first
        // half of the offsets read by worker 0, the second by worker 1.
        let (num_shards, index, peers) = (5, 1, 2);
        let mine: Vec<u64> = (0..4000u64)
            .filter(|&o| owner(shard_of(o, num_shards), peers) == index)
            .collect();
        let mut seqs = [0u64; 2];
        let mut chunks: Vec<Batch> = mine
            .chunks(37)
            .map(|c| {
                let source = u32::from(c[0] >= 2000);
                let seq = &mut seqs[source as usize];
                *seq += 1;
                batch(index as u32, source, *seq - 1, c, num_shards)
            })
            .collect();
        // A fixed shuffle: reverse every other chunk's position.
        let n = chunks.len();
        for i in (0..n / 2).step_by(2) {
            chunks.swap(i, n - 1 - i);
        }
        let feed = |budget: usize| {
            let mut sink = ShardSink::new(num_shards, index, peers, budget, std::env::temp_dir());
            for c in &chunks {
                sink.extend(&mut vec![c.clone()]);
            }
            sink
        };
        let mut in_memory = feed(usize::MAX);
        assert_eq!(in_memory.runs(), 0);
        // A budget below one batch: a run per batch.
        let mut spilled = feed(1);
        assert_eq!(spilled.runs(), chunks.len());
        let expected = written(&mut in_memory);
        assert_eq!(written(&mut spilled), expected);
        // Each shard is its records in offset order, keyed by the design's rule, every record
        // once (a record `o,7o` has content `7o`, unique here, so its key is rank 0's).
        for (slot, text) in expected.iter().enumerate() {
            let shard = (slot * peers + index) as u32;
            let want: Vec<String> = mine
                .iter()
                .filter(|&&o| shard_of(o, num_shards) == shard)
                .map(|o| {
                    let content = (o * 7).to_string();
                    let h = shards::keys::content_hash(content.as_bytes());
                    format!("{},{content}", shards::keys::record_key(h, 0))
                })
                .collect();
            assert_eq!(text.lines().collect::<Vec<_>>(), want, "shard {shard}");
        }
    }

    #[test]
    fn records_out_of_offset_order_fail_the_write() {
        // Two batches from worker 0 whose offsets go backwards (not what a reader sends).
        let mut sink = ShardSink::new(1, 0, 1, usize::MAX, std::env::temp_dir());
        sink.extend(&mut vec![
            batch(0, 0, 0, &[50, 60], 1),
            batch(0, 0, 1, &[10], 1),
        ]);
        assert!(
            sink.failure
                .as_deref()
                .is_some_and(|f| f.contains("out of offset order")),
            "{:?}",
            sink.failure
        );
        // A batch that never came.
        let mut sink = ShardSink::new(1, 0, 1, usize::MAX, std::env::temp_dir());
        sink.extend(&mut vec![batch(0, 0, 1, &[10], 1)]);
        assert_eq!(sink.received(), 1);
        assert_eq!(sink.taken, 0);
    }
}
