//! Writing the shards a worker owns. The input is read in chunks, in input order, the chunks
//! dealt round the workers ([`crate::ingest::Plan`]), so a shard is its records from chunk 0,
//! then those from chunk 1, and so on, each chunk's in the order they were read: no sort and no
//! merge. The owner writes each chunk's records as soon as every chunk before it is written
//! (each record keyed as it goes, [`shards::keys::ShardKeyer`]: every record of a content, and
//! of a unit, is in this shard, in input order), and holds the records of later chunks until
//! then: in memory up to a budget, in one unnamed spill file beyond it.
//!
//! Two cases hold every chunk until all have arrived, then write each shard whole: an S3
//! output (a part is uploaded in pieces of several MB, so writing all parts at once would hold
//! a piece of each in memory) and `--max-rows-per-unit` (the keyer reads a shard twice).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use shards::format::{header_line, part_name};
use shards::keys::{ShardKeyer, Transit, UnitRule, content_hash};
use shards::manifest::ShardInfo;
use shards::{Error, Output, PartWriter};

use crate::ingest::{Batch, Part, Plan};

/// The default memory budget of a process's held records (`--buffer-mb`), shared by its
/// worker threads. Peak RSS is at most about the budget plus the batches in flight (bounded,
/// [`crate::dataflow`]), the open parts' buffers and the readers' chunks; the owners rarely fill
/// it when the disk keeps up (bench/RESULTS.md, "On a quiet box": 51-52 MiB at 120M rows,
/// 1x2).
pub const DEFAULT_BUFFER_BYTES: usize = 32 << 20;

/// Bytes of the spill file read at a time.
const READ_BUFFER: usize = 1 << 20;
/// Bytes of the spill file written at a time, and of a part's keyed lines handed to it at a
/// time (one such buffer per open part: 16 parts at the default shard count).
const WRITE_BUFFER: usize = 256 << 10;

/// Whether worker `index` of `peers` owns `shard`.
pub fn owner(shard: u32, peers: usize) -> usize {
    shard as usize % peers
}

/// Records of one shard from one batch, not written yet: in memory, or in the spill file.
#[derive(Debug)]
enum Held {
    Memory(Part),
    Spilled {
        /// `[start, end)` of the spill file: the contents, `\n`-terminated (their hashes are
        /// computed again when they are read back).
        start: u64,
        end: u64,
        first: u64,
        last: u64,
    },
}

impl Held {
    fn offsets(&self) -> (u64, u64) {
        match self {
            Held::Memory(p) => (p.first, p.last),
            Held::Spilled { first, last, .. } => (*first, *last),
        }
    }
}

/// One owned shard being written.
struct Shard {
    shard: u32,
    keyer: ShardKeyer,
    /// Its part, created when its first record (or, for an empty shard, the end) comes.
    writer: Option<Box<dyn PartWriter>>,
    /// Keyed lines not yet handed to the part.
    out: Vec<u8>,
    rows: u64,
    /// The offset of the last record written: the next must come after it.
    last: Option<u64>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard", &self.shard)
            .field("rows", &self.rows)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// Where the shards go and how their records are keyed.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The output the parts are written to.
    pub output: Arc<dyn Output>,
    /// The shard header line, with its `\n`.
    pub header: String,
    /// How records are keyed.
    pub rule: UnitRule,
}

/// The records a worker receives for the shards it owns, written to their parts chunk by chunk
/// in input order (or, see the module's page, all at the end).
#[derive(Debug)]
pub struct ShardSink {
    index: usize,
    peers: usize,
    num_shards: u32,
    plan: Plan,
    dest: Destination,
    /// Whether chunks are written as they complete.
    stream: bool,
    /// The owned shards, in shard order (owned shard `slot` is shard `slot * peers + index`).
    shards: Vec<Shard>,
    /// The first chunk not yet written (streaming).
    next: u32,
    /// Whether each chunk's last batch (for this worker) came.
    ended: Vec<bool>,
    /// Records of chunks not yet written, per chunk and owned shard, in arrival order.
    waiting: BTreeMap<u32, Vec<Vec<Held>>>,
    /// Bytes of `waiting` in memory.
    held: usize,
    budget: usize,
    spill_dir: PathBuf,
    spill: Option<BufWriter<File>>,
    spilled: u64,
    spills: usize,
    /// The next `seq` expected from each reader, and batches that came before their turn.
    next_seq: Vec<u64>,
    early: BTreeMap<(u32, u64), Batch>,
    taken: usize,
    /// A scratch buffer for reading the spill file.
    buf: Vec<u8>,
    /// The first failure (a part or spill that could not be written, a batch that breaks the
    /// order): reported by [`ShardSink::finish`]; nothing is written after it.
    failure: Option<Error>,
}

impl ShardSink {
    /// A sink for worker `index` of `peers`, reading by `plan`, writing to `dest`, holding up to
    /// `budget` bytes of records in memory and spilling to an unnamed file in `spill_dir`.
    pub fn new(
        num_shards: u32,
        index: usize,
        peers: usize,
        plan: Plan,
        dest: Destination,
        budget: usize,
        spill_dir: PathBuf,
    ) -> ShardSink {
        let stream =
            !dest.rule.two_passes() && matches!(dest.output.location(), shards::Location::Local(_));
        let shards = (0..num_shards)
            .filter(|&s| owner(s, peers) == index)
            .map(|shard| Shard {
                shard,
                keyer: ShardKeyer::new(dest.rule),
                writer: None,
                out: Vec::new(),
                rows: 0,
                last: None,
            })
            .collect();
        ShardSink {
            index,
            peers,
            num_shards,
            ended: vec![false; plan.len() as usize],
            plan,
            dest,
            stream,
            shards,
            next: 0,
            waiting: BTreeMap::new(),
            held: 0,
            budget: budget.max(1),
            spill_dir,
            spill: None,
            spilled: 0,
            spills: 0,
            next_seq: vec![0; peers],
            early: BTreeMap::new(),
            taken: 0,
            buf: Vec::new(),
            failure: None,
        }
    }

    /// Number of batches received so far (a count of progress for the waits).
    pub fn received(&self) -> usize {
        self.taken + self.early.len()
    }

    /// Number of times held records were spilled.
    pub fn runs(&self) -> usize {
        self.spills
    }

    /// Takes in received batches in each reader's order.
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
        if self.failure.is_none() {
            self.failure = Some(protocol(self.index, message));
        }
    }

    /// Takes a batch, the next from its reader: writes its records if its chunk is the next to
    /// be written, holds them otherwise.
    fn take(&mut self, b: Batch) {
        let source = b.source as usize;
        self.next_seq[source] += 1;
        self.taken += 1;
        if self.failure.is_some() {
            return;
        }
        let chunk = b.chunk;
        if chunk >= self.plan.len() || self.plan.reader(chunk) != source {
            return self.fail(format!(
                "worker {source} sent records of chunk {chunk}, which is not one it reads"
            ));
        }
        if self.ended[chunk as usize] {
            return self.fail(format!(
                "records of chunk {chunk} from worker {source} arrived after its end"
            ));
        }
        let slots = self.shards.len();
        for part in b.parts {
            let shard = part.shard;
            if shard >= self.num_shards
                || owner(shard, self.peers) != self.index
                || part.hashes.is_empty()
                || part.first > part.last
            {
                return self.fail(format!(
                    "worker {} received records of shard {shard} it does not own, or none",
                    self.index
                ));
            }
            let slot = shard as usize / self.peers;
            if self.stream && chunk == self.next {
                self.write(slot, Held::Memory(part));
            } else {
                self.held += part.text.len() + 8 * part.hashes.len();
                self.waiting
                    .entry(chunk)
                    .or_insert_with(|| (0..slots).map(|_| Vec::new()).collect())[slot]
                    .push(Held::Memory(part));
            }
        }
        if b.ends_chunk {
            self.ended[chunk as usize] = true;
            if self.stream && chunk == self.next {
                self.advance();
            }
        }
        if self.held >= self.budget
            && self.failure.is_none()
            && let Err(e) = self.spill()
        {
            self.failure = Some(Error::io(self.spill_name(), e));
        }
    }

    /// Moves past the chunks that have ended, writing what was held of each next chunk.
    fn advance(&mut self) {
        while self.next < self.plan.len() && self.ended[self.next as usize] {
            self.next += 1;
            if let Some(slots) = self.waiting.remove(&self.next) {
                for (slot, held) in slots.into_iter().enumerate() {
                    for h in held {
                        if let Held::Memory(p) = &h {
                            self.held -= p.text.len() + 8 * p.hashes.len();
                        }
                        self.write(slot, h);
                    }
                }
            }
        }
    }

    /// Appends every held record still in memory to the spill file and lets it go.
    fn spill(&mut self) -> std::io::Result<()> {
        if self.spill.is_none() {
            let file = tempfile::tempfile_in(&self.spill_dir)?;
            self.spill = Some(BufWriter::with_capacity(WRITE_BUFFER, file));
        }
        let out = self.spill.as_mut().expect("opened above");
        for slots in self.waiting.values_mut() {
            for held in slots.iter_mut().flatten() {
                if let Held::Memory(p) = held {
                    out.write_all(&p.text)?;
                    let start = self.spilled;
                    self.spilled += p.text.len() as u64;
                    *held = Held::Spilled {
                        start,
                        end: self.spilled,
                        first: p.first,
                        last: p.last,
                    };
                }
            }
        }
        // Written through, so that what was spilled can be read back at any time.
        out.flush()?;
        self.held = 0;
        self.spills += 1;
        Ok(())
    }

    fn spill_name(&self) -> String {
        format!("the spill file in {}", self.spill_dir.display())
    }

    /// Writes records of owned shard `slot` (after those written so far).
    fn write(&mut self, slot: usize, held: Held) {
        if self.failure.is_some() {
            return;
        }
        let spill = self.spill.as_ref().map(BufWriter::get_ref);
        let result = write_held(
            &mut self.shards[slot],
            &held,
            spill,
            &mut self.buf,
            &self.dest,
        );
        if let Err(e) = result {
            self.failure = Some(self.copy_error(slot, e));
        }
    }

    fn copy_error(&self, slot: usize, e: CopyError) -> Error {
        let shard = self.shards[slot].shard;
        match e {
            CopyError::Read(e) => Error::io(self.spill_name(), e),
            CopyError::Write(e) => {
                Error::io(self.dest.output.location().join(&part_name(shard)), e)
            }
            CopyError::Part(e) => e,
            CopyError::Record(reason) => {
                protocol(self.index, format!("a record of shard {shard}: {reason}"))
            }
        }
    }

    /// Writes what is left of every owned shard (including empty ones) and finishes their
    /// parts; returns their infos in shard order and the rows the unit cap let go.
    pub fn finish(mut self) -> shards::Result<(Vec<ShardInfo>, u64)> {
        if self.failure.is_none()
            && let Some((source, seq)) = self.early.keys().next()
        {
            let message = format!(
                "batch {} from worker {source} never arrived (batch {seq} did)",
                self.next_seq[*source as usize]
            );
            self.fail(message);
        }
        if self.failure.is_none()
            && let Some(chunk) = self.ended.iter().position(|e| !e)
        {
            let message = format!(
                "the records of chunk {chunk} from worker {} never all arrived",
                self.plan.reader(chunk as u32)
            );
            self.fail(message);
        }
        if !self.stream && self.failure.is_none() {
            self.write_held_shards();
        }
        if let Some(e) = self.failure.take() {
            return Err(e);
        }
        debug_assert!(self.waiting.is_empty());
        let mut infos = Vec::with_capacity(self.shards.len());
        let mut capped = 0;
        for s in &mut self.shards {
            let name = part_name(s.shard);
            let write_error = |e| Error::io(self.dest.output.location().join(&name), e);
            let mut writer = match s.writer.take() {
                Some(w) => w,
                None => open_part(&self.dest, s.shard)?,
            };
            writer.write_all(&s.out).map_err(write_error)?;
            let mut info = writer.finish()?;
            info.rows = s.rows;
            capped += s.keyer.capped();
            infos.push(info);
        }
        // The parts may still be uploading (S3): reported only once stored.
        self.dest.output.sync_parts()?;
        Ok((infos, capped))
    }

    /// Without streaming: writes each owned shard whole, its records from every chunk in
    /// order (read twice with a unit cap).
    fn write_held_shards(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        let spill = match self.spill.take().map(BufWriter::into_inner) {
            None => None,
            Some(Ok(file)) => Some(file),
            Some(Err(e)) => {
                self.failure = Some(Error::io(self.spill_name(), e.into_error()));
                return;
            }
        };
        for slot in 0..self.shards.len() {
            let shard = &mut self.shards[slot];
            let held = waiting.values().flat_map(|slots| &slots[slot]);
            let buf = &mut self.buf;
            let dest = &self.dest;
            let result = (|| {
                if shard.keyer.two_passes() {
                    let mut last = None;
                    for h in held.clone() {
                        let (first, end) = h.offsets();
                        if last.is_some_and(|l| l >= first) {
                            return Err(CopyError::Record(OUT_OF_ORDER.into()));
                        }
                        last = Some(end);
                        each_record(h, spill.as_ref(), buf, &mut |h, content| {
                            shard.keyer.observe_content(h, unit_of(content)?);
                            Ok(())
                        })?;
                    }
                }
                for h in held {
                    write_held(shard, h, spill.as_ref(), buf, dest)?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                self.failure = Some(self.copy_error(slot, e));
                return;
            }
        }
    }
}

const OUT_OF_ORDER: &str = "records arrived out of offset order";

/// A failure of the run's own protocol (batches and chunks between its workers).
fn protocol(index: usize, message: String) -> Error {
    Error::io(
        format!("the records of worker {index}"),
        std::io::Error::other(format!("worker {index}: {message}")),
    )
}

/// Creates the part of `shard` and writes its header line.
fn open_part(dest: &Destination, shard: u32) -> shards::Result<Box<dyn PartWriter>> {
    let name = part_name(shard);
    let mut w = dest.output.create_part(&name)?;
    w.write_all(dest.header.as_bytes())
        .map_err(|e| Error::io(dest.output.location().join(&name), e))?;
    Ok(w)
}

/// The unit's hash a content starts with.
fn unit_of(content: &[u8]) -> Result<Option<u64>, CopyError> {
    // A content is a transit line without its offset: parse it as one with offset 0.
    let mut line = Vec::with_capacity(content.len() + 2);
    line.extend_from_slice(b"0,");
    line.extend_from_slice(content);
    Transit::parse(&line, true)
        .map(|t| t.unit)
        .map_err(CopyError::Record)
}

/// Keys and writes held records to their shard's part.
fn write_held(
    shard: &mut Shard,
    held: &Held,
    spill: Option<&File>,
    buf: &mut Vec<u8>,
    dest: &Destination,
) -> Result<(), CopyError> {
    let (first, last) = held.offsets();
    if shard.last.is_some_and(|l| l >= first) {
        return Err(CopyError::Record(OUT_OF_ORDER.into()));
    }
    shard.last = Some(last);
    if shard.writer.is_none() {
        shard.writer = Some(open_part(dest, shard.shard).map_err(CopyError::Part)?);
    }
    let capped = dest.rule.two_passes();
    let (keyer, out, rows) = (&mut shard.keyer, &mut shard.out, &mut shard.rows);
    each_record(held, spill, buf, &mut |h, content| {
        let unit = if capped { unit_of(content)? } else { None };
        *rows += u64::from(keyer.write_content(h, unit, content, out));
        Ok(())
    })?;
    if shard.out.len() >= WRITE_BUFFER {
        let w = shard.writer.as_mut().expect("opened above");
        w.write_all(&shard.out).map_err(CopyError::Write)?;
        shard.out.clear();
    }
    Ok(())
}

/// Calls `f` on each record (its content's hash and its content) of held records.
fn each_record<F>(
    held: &Held,
    spill: Option<&File>,
    buf: &mut Vec<u8>,
    f: &mut F,
) -> Result<(), CopyError>
where
    F: FnMut(u64, &[u8]) -> Result<(), CopyError>,
{
    match held {
        Held::Memory(p) => {
            let mut hashes = p.hashes.iter();
            for line in lines(&p.text) {
                let h = hashes.next().ok_or_else(mismatch)?;
                f(*h, line)?;
            }
            if hashes.next().is_some() {
                return Err(mismatch());
            }
            Ok(())
        }
        Held::Spilled { start, end, .. } => {
            let file = spill.expect("records were spilled, so there is a spill file");
            read_lines(file, *start, *end, buf, &mut |chunk| {
                for line in lines(chunk) {
                    f(content_hash(line), line)?;
                }
                Ok(())
            })
        }
    }
}

fn mismatch() -> CopyError {
    CopyError::Record("a batch's records and their hashes differ in number".into())
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

/// A failure while writing a part: reading the spill file, a record that breaks the protocol,
/// creating or writing the part.
#[derive(Debug)]
enum CopyError {
    Read(std::io::Error),
    Record(String),
    Part(Error),
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
    use shards::keys::record_key;
    use shards::shard_of;
    use shards::store::open_output;

    const NUM_SHARDS: u32 = 5;

    /// Batch `seq` from worker `source` for worker `dest` of chunk `chunk`, with a record of
    /// content `7o` for each offset `o`, grouped by shard as `ingest` sends them (placed here by
    /// the offset, which is all the sink looks at).
    fn batch(dest: u32, source: u32, seq: u64, chunk: u32, ends: bool, offsets: &[u64]) -> Batch {
        batch_of(NUM_SHARDS, dest, source, seq, chunk, ends, offsets)
    }

    fn batch_of(
        num_shards: u32,
        dest: u32,
        source: u32,
        seq: u64,
        chunk: u32,
        ends: bool,
        offsets: &[u64],
    ) -> Batch {
        let mut parts = Vec::new();
        for shard in 0..num_shards {
            let mine: Vec<u64> = offsets
                .iter()
                .copied()
                .filter(|&o| shard_of(o, num_shards) == shard)
                .collect();
            if let (Some(&first), Some(&last)) = (mine.first(), mine.last()) {
                let mut text = Vec::new();
                let mut hashes = Vec::new();
                for o in mine {
                    let content = (o * 7).to_string();
                    hashes.push(content_hash(content.as_bytes()));
                    text.extend_from_slice(content.as_bytes());
                    text.push(b'\n');
                }
                parts.push(Part {
                    shard,
                    first,
                    last,
                    text,
                    hashes,
                });
            }
        }
        Batch {
            dest,
            source,
            seq,
            chunk,
            ends_chunk: ends,
            parts,
        }
    }

    fn local_output(dir: &std::path::Path) -> Arc<dyn Output> {
        let output: Arc<dyn Output> = Arc::from(
            open_output(&shards::Location::Local(dir.join("o")), &Default::default()).unwrap(),
        );
        output.prepare(true).unwrap();
        output
    }

    fn destination(output: Arc<dyn Output>) -> Destination {
        Destination {
            output,
            header: "key,x\n".into(),
            rule: UnitRule::default(),
        }
    }

    /// Owner `index` of 2 fed `feed` (the batches of a 6-chunk input); returns each owned part's
    /// text (staged, not committed).
    fn run(index: usize, budget: usize, feed: &[Batch], dir: &std::path::Path) -> Vec<String> {
        let dest = destination(local_output(dir));
        let plan = Plan::new(6000, 2, false, 1000);
        let mut sink = ShardSink::new(NUM_SHARDS, index, 2, plan, dest, budget, dir.into());
        for b in feed {
            sink.extend(&mut vec![b.clone()]);
        }
        let spills = sink.runs();
        let (infos, _) = sink.finish().unwrap();
        assert!(budget > 1 << 30 || spills > 0, "a small budget spills");
        let staged = dir.join(".o.staging");
        infos
            .iter()
            .map(|i| std::fs::read_to_string(staged.join(&i.name)).unwrap())
            .collect()
    }

    /// Each reader's batches of 6 chunks of 1000 offsets (chunk c read by worker c % 2) for
    /// owner `index`.
    fn batches(index: usize) -> [Vec<Batch>; 2] {
        let mut by_reader = [Vec::new(), Vec::new()];
        let mut seq = [0u64; 2];
        for chunk in 0..6u32 {
            let reader = chunk as usize % 2;
            let mine: Vec<u64> = (u64::from(chunk) * 1000..u64::from(chunk + 1) * 1000)
                .filter(|&o| owner(shard_of(o, NUM_SHARDS), 2) == index)
                .collect();
            let pieces: Vec<&[u64]> = mine.chunks(97).collect();
            for (i, piece) in pieces.iter().enumerate() {
                let ends = i + 1 == pieces.len();
                let b = batch(index as u32, reader as u32, seq[reader], chunk, ends, piece);
                by_reader[reader].push(b);
                seq[reader] += 1;
            }
        }
        by_reader
    }

    /// However the two readers' batches interleave (one reader far ahead of the other, or turn
    /// and turn about), and whether records are written as their chunk comes, held, or spilled,
    /// each shard is its records in offset order, keyed by the design's rule.
    #[test]
    fn shards_are_their_records_in_offset_order_however_batches_arrive() {
        let dir = tempfile::tempdir().unwrap();
        for index in 0..2 {
            let [a, b] = batches(index);
            let ahead: Vec<Batch> = b.iter().chain(&a).cloned().collect();
            let behind: Vec<Batch> = a.iter().chain(&b).cloned().collect();
            let mut turns = Vec::new();
            for i in 0..a.len().max(b.len()) {
                turns.extend(b.get(i).cloned());
                turns.extend(a.get(i).cloned());
            }
            let want: Vec<String> = (0..NUM_SHARDS)
                .filter(|&s| owner(s, 2) == index)
                .map(|shard| {
                    let mut text = String::from("key,x\n");
                    for o in (0..6000u64).filter(|&o| shard_of(o, NUM_SHARDS) == shard) {
                        let content = (o * 7).to_string();
                        let key = record_key(content_hash(content.as_bytes()), 0);
                        text.push_str(&format!("{key},{content}\n"));
                    }
                    text
                })
                .collect();
            for feed in [&ahead, &behind, &turns] {
                for budget in [usize::MAX, 1] {
                    let _ = std::fs::remove_dir_all(dir.path().join(".o.staging"));
                    assert_eq!(run(index, budget, feed, dir.path()), want, "owner {index}");
                }
            }
        }
    }

    #[test]
    fn records_out_of_offset_order_or_missing_fail_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let dest = destination(local_output(dir.path()));
        let plan = Plan::new(100, 1, false, 1000);
        let sink = || {
            let spill = dir.path().to_path_buf();
            ShardSink::new(1, 0, 1, plan.clone(), dest.clone(), usize::MAX, spill)
        };
        // Two batches of chunk 0 whose offsets go backwards (not what a reader sends).
        let mut s = sink();
        s.extend(&mut vec![
            batch_of(1, 0, 0, 0, 0, false, &[50, 60]),
            batch_of(1, 0, 0, 1, 0, true, &[10]),
        ]);
        let err = s.finish().unwrap_err().to_string();
        assert!(err.contains("out of offset order"), "{err}");
        // A batch that never came, and a chunk that never ended.
        let mut s = sink();
        s.extend(&mut vec![batch(0, 0, 1, 0, true, &[])]);
        assert_eq!((s.received(), s.taken), (1, 0));
        let err = s.finish().unwrap_err().to_string();
        assert!(err.contains("batch 0 from worker 0 never arrived"), "{err}");
        let mut s = sink();
        s.extend(&mut vec![batch(0, 0, 0, 0, false, &[])]);
        let err = s.finish().unwrap_err().to_string();
        assert!(
            err.contains("chunk 0 from worker 0 never all arrived"),
            "{err}"
        );
    }
}
