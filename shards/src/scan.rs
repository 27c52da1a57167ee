//! The engines' reading loop: the lines of a stream, each cleaned into a record (its content,
//! the content's hash, the hash it is placed by) or counted as a header or a dropped row.
//!
//! The rules are [`Cleaner`]'s, applied to every line the [`Scanner`] cannot vouch for. Its fast
//! path is for the common census extract, a line of one-digit fields (`1,0,1,...`): such a line
//! is recognised a word at a time against a *template* (a digit, a comma, a digit, ..., a line
//! end), and its digits, four bits each, name it exactly. The outcome of cleaning a line depends on
//! its bytes alone, so the outcome of each distinct line (the record's content, its hashes, its
//! label) is computed once, by the [`Cleaner`], and remembered under that name: a file of twelve
//! 0/1 columns has at most 4,096 distinct lines, whatever its length. Lines that do not fit the
//! template (quotes, spaces, longer numbers, more than 16 columns, a BOM, a header, the last few
//! bytes of a block) go the plain way, line by line through the [`Cleaner`]. Tests hold the
//! scanner to that plain way on generated, real and odd input (`tests` below,
//! `pipeline/tests/dataflow_vs_reference.rs`).
//!
//! Lines end at `\n`, `\r\n` or a bare `\r`, found as [`LineReader::next_line`] finds them;
//! the template's line end is checked on its own, so the fast path takes all three.

use std::io::Read;

use crate::clean::{Cleaner, DropReason, Outcome};
use crate::keys::content_hash;
use crate::lines::LineReader;
use crate::schema::Schema;

/// The feature vector of a kept record, for the run's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vector<'a> {
    /// Features of one digit each (at most [`PACKED_DIGITS`]), four bits a digit under a
    /// leading 1 bit: `1,0,7` is `0x1107`.
    Packed(u64),
    /// The features as written in the content (`f1,...,fk`).
    Text(&'a [u8]),
}

/// The most one-digit features a [`Vector::Packed`] holds.
pub const PACKED_DIGITS: usize = 15;

/// A kept record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its content, `[unit,]label,f1,...,fk`: its shard line without the key (and `\n`).
    pub content: &'a [u8],
    /// The content and a `\n` after it.
    pub content_line: &'a [u8],
    /// [`content_hash`] of the content: what its key is made from.
    pub hash: u64,
    /// The hash it is placed by ([`crate::keys::unit_hash`]): its unit's, or `hash` when each
    /// line is its own unit.
    pub place: u64,
    /// With a privacy unit, the unit's hash.
    pub unit: Option<u64>,
    /// Its label, 0 or 1.
    pub label: u8,
    /// Its feature vector.
    pub vector: Vector<'a>,
}

/// What became of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned<'a> {
    /// A record.
    Kept(Record<'a>),
    /// A header line, skipped.
    Header,
    /// A dropped row.
    Dropped(DropReason),
}

/// Cleans lines into [`Scanned`] outcomes, by the [`Cleaner`]'s rules, remembering the outcome
/// of each distinct line of one-digit fields.
#[derive(Debug)]
pub struct Scanner {
    cleaner: Cleaner,
    template: Option<Template>,
    memo: Memo,
    /// The content of the last record the plain way kept.
    content: Vec<u8>,
    /// Lines that took the template (for the tests to see that they did).
    fast: u64,
}

/// Bytes the template reads at a time: four words.
const WINDOW: usize = 32;

impl Scanner {
    /// A scanner for `schema`.
    pub fn new(schema: Schema) -> Scanner {
        let template = Template::new(schema.columns.len());
        Scanner {
            cleaner: Cleaner::new(schema),
            template,
            memo: Memo::new(),
            content: Vec::with_capacity(256),
            fast: 0,
        }
    }

    /// The schema it applies.
    pub fn schema(&self) -> &Schema {
        self.cleaner.schema()
    }

    /// Cleans one line (without its terminator).
    pub fn line(&mut self, line: &[u8]) -> Scanned<'_> {
        if let Some(t) = &self.template
            && line.len() < WINDOW
        {
            // The template reads whole words: pad the line (the bytes after it are ignored).
            let mut window = [0u8; WINDOW];
            window[..line.len()].copy_from_slice(line);
            if let Some(key) = t.key(&window)
                && line.len() + 1 == t.width
            {
                return self.memoized(key, line);
            }
        }
        self.plain(line)
    }

    /// Cleans every line `lines` has left, handing each outcome and the line's offset to `f`,
    /// in input order.
    pub fn scan<R: Read>(
        &mut self,
        lines: &mut LineReader<R>,
        mut f: impl FnMut(u64, Scanned<'_>),
    ) -> std::io::Result<()> {
        // Lines the template takes are shorter than a window: within any sane limit.
        let limit = lines.limit();
        let template = self.template.is_some() && WINDOW <= limit;
        loop {
            let (base, end) = (lines.position(), lines.end());
            let block = lines.block()?;
            if block.is_empty() {
                return Ok(());
            }
            let mut p = 0;
            let mut done = false;
            while p < block.len() {
                let offset = base + p as u64;
                if offset >= end {
                    done = true;
                    break;
                }
                if template
                    && let Some(t) = &self.template
                    && let Some(window) = block.get(p..p + WINDOW)
                    && let Some(key) = t.key(window.try_into().expect("a window"))
                {
                    // The line's last byte is its terminator: `\n`, `\r` or `\r\n`.
                    let term = p + t.width - 1;
                    let next = match block[term] {
                        b'\n' => Some(term + 1),
                        b'\r' if block.get(term + 1) == Some(&b'\n') => Some(term + 2),
                        b'\r' => Some(term + 1),
                        _ => None,
                    };
                    if let Some(next) = next {
                        f(offset, self.memoized(key, &block[p..term]));
                        p = next;
                        continue;
                    }
                }
                let (line_end, next) = match memchr::memchr2(b'\n', b'\r', &block[p..]) {
                    Some(i) if block[p + i] == b'\r' && block.get(p + i + 1) == Some(&b'\n') => {
                        (p + i, p + i + 2)
                    }
                    Some(i) => (p + i, p + i + 1),
                    // The stream's last line, without a terminator.
                    None => (block.len(), block.len()),
                };
                if line_end - p > limit {
                    lines.consume(p);
                    return Err(lines.too_long());
                }
                f(offset, self.plain(&block[p..line_end]));
                p = next;
            }
            lines.consume(p);
            if done {
                return Ok(());
            }
        }
    }

    /// The outcome of a line that fits the template, whose digits are `key`.
    #[inline]
    fn memoized(&mut self, key: u64, line: &[u8]) -> Scanned<'_> {
        self.fast += 1;
        let slot = Memo::slot(key);
        if self.memo.slots[slot].key != key {
            self.remember(slot, key, line);
        }
        self.memo.outcome(slot)
    }

    /// Cleans `line` the plain way and remembers the outcome in `slot` under `key`.
    #[cold]
    fn remember(&mut self, slot: usize, key: u64, line: &[u8]) {
        let (outcome, len) = match self.plain(line) {
            Scanned::Kept(r) => (
                Remembered::Kept {
                    hash: r.hash,
                    place: r.place,
                    unit: r.unit,
                    label: r.label,
                    packed: match r.vector {
                        Vector::Packed(p) => Some(p),
                        Vector::Text(_) => None,
                    },
                    features_at: (r.content.len()
                        - match r.vector {
                            Vector::Text(t) => t.len(),
                            Vector::Packed(_) => 0,
                        }) as u8,
                },
                r.content_line.len(),
            ),
            Scanned::Header => (Remembered::Header, 0),
            Scanned::Dropped(reason) => (Remembered::Dropped(reason), 0),
        };
        let content = &self.content[..len];
        if len > STRIDE {
            // Too long to remember (not for lines of at most 16 one-digit fields).
            self.memo.slots[slot].key = EMPTY;
            return;
        }
        let s = &mut self.memo.slots[slot];
        s.key = key;
        s.outcome = outcome;
        s.len = len as u8;
        self.memo.contents[slot * STRIDE..slot * STRIDE + content.len()].copy_from_slice(content);
    }

    /// Cleans one line by the [`Cleaner`]'s rules.
    fn plain(&mut self, line: &[u8]) -> Scanned<'_> {
        match self.cleaner.clean(line) {
            Outcome::Kept => {}
            Outcome::Header => return Scanned::Header,
            Outcome::Dropped(reason) => return Scanned::Dropped(reason),
        }
        let c = &self.cleaner;
        self.content.clear();
        c.write_content(&mut self.content);
        let hash = content_hash(&self.content);
        let len = self.content.len();
        self.content.push(b'\n');
        let vector = match c.digits() {
            Some(d) if d.len() <= PACKED_DIGITS => Vector::Packed(pack(d)),
            _ => {
                let before = 1 + usize::from(c.unit().is_some());
                Vector::Text(features_text(&self.content[..len], before))
            }
        };
        Scanned::Kept(Record {
            content: &self.content[..len],
            content_line: &self.content,
            hash,
            place: c.unit().unwrap_or(hash),
            unit: c.unit(),
            label: c.label(),
            vector,
        })
    }
}

/// One-digit features (ASCII) packed four bits a digit under a leading 1.
pub fn pack(digits: &[u8]) -> u64 {
    debug_assert!(digits.len() <= PACKED_DIGITS);
    digits
        .iter()
        .fold(1u64, |key, &d| key << 4 | u64::from(d - b'0'))
}

/// The features in a content: after its first `before` fields (the label, and the unit).
fn features_text(content: &[u8], before: usize) -> &[u8] {
    let mut start = 0;
    for _ in 0..before {
        match memchr::memchr(b',', &content[start..]) {
            Some(i) => start += i + 1,
            None => return &[],
        }
    }
    &content[start..]
}

/// A line of `n` one-digit fields and its terminator, `d,d,...,d` then one byte, as four
/// little-endian words: what each byte must be (the digits' places hold `'0'`) and which
/// places are digits and which must match exactly.
#[derive(Debug, Clone)]
struct Template {
    /// The line and its (first) terminator byte: `2n` bytes.
    width: usize,
    pattern: [u64; 4],
    digits: [u64; 4],
    exact: [u64; 4],
}

impl Template {
    /// The template of lines of `n` one-digit fields, for 1 to 16 fields.
    fn new(n: usize) -> Option<Template> {
        if !(1..=16).contains(&n) {
            return None;
        }
        let width = 2 * n;
        let (mut pattern, mut digits, mut exact) = ([0u64; 4], [0u64; 4], [0u64; 4]);
        for i in 0..width - 1 {
            let (w, shift) = (i / 8, 8 * (i % 8));
            if i % 2 == 0 {
                pattern[w] |= u64::from(b'0') << shift;
                digits[w] |= 0xFF << shift;
            } else {
                pattern[w] |= u64::from(b',') << shift;
                exact[w] |= 0xFF << shift;
            }
        }
        Some(Template {
            width,
            pattern,
            digits,
            exact,
        })
    }

    /// The line's digits, four bits each (the first field's in the lowest bits), if the window
    /// starts with a line of the template's fields; its terminator (at `width - 1`) is for the
    /// caller to check.
    #[inline]
    fn key(&self, window: &[u8; WINDOW]) -> Option<u64> {
        const LOW: u64 = 0x0F0F_0F0F_0F0F_0F0F;
        let mut bad = 0;
        let mut key = 0;
        for w in 0..4 {
            let bytes: [u8; 8] = window[8 * w..8 * w + 8].try_into().expect("8 bytes");
            // Digits become 0..=9 and the commas 0.
            let x =
                (u64::from_le_bytes(bytes) ^ self.pattern[w]) & (self.digits[w] | self.exact[w]);
            // A digit's place holds 0..=9: no high nibble, and no carry out of `+ 6`.
            let not_digit =
                (x & !LOW) | ((x & LOW) + 0x0606_0606_0606_0606) & 0x1010_1010_1010_1010;
            bad |= (not_digit & self.digits[w]) | (x & self.exact[w]);
            // The digits sit in the even bytes: gather their low nibbles into 16 bits.
            let d = x & self.digits[w] & 0x000F_000F_000F_000F;
            let d = (d | d >> 12) & 0x0000_00FF_0000_00FF;
            key |= ((d | d >> 24) & 0xFFFF) << (16 * w);
        }
        (bad == 0).then_some(key)
    }
}

/// A key no line has: its digits would be 15s.
const EMPTY: u64 = u64::MAX;
/// Slots of the memo (direct-mapped): a line's slot is a hash of its key.
const SLOTS: usize = 4096;
/// Bytes of content a slot holds.
const STRIDE: usize = 64;

/// The outcome of one distinct line.
#[derive(Debug, Clone, Copy)]
enum Remembered {
    Kept {
        hash: u64,
        place: u64,
        unit: Option<u64>,
        label: u8,
        packed: Option<u64>,
        features_at: u8,
    },
    Header,
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: u64,
    outcome: Remembered,
    len: u8,
}

/// The outcomes of the distinct template lines seen, one slot each (a line whose slot another
/// line holds takes it over).
#[derive(Debug)]
struct Memo {
    slots: Vec<Slot>,
    contents: Vec<u8>,
}

impl Memo {
    fn new() -> Memo {
        Memo {
            slots: vec![
                Slot {
                    key: EMPTY,
                    outcome: Remembered::Header,
                    len: 0,
                };
                SLOTS
            ],
            contents: vec![0; SLOTS * STRIDE],
        }
    }

    #[inline]
    fn slot(key: u64) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize
    }

    #[inline]
    fn outcome(&self, slot: usize) -> Scanned<'_> {
        let s = &self.slots[slot];
        match s.outcome {
            Remembered::Kept {
                hash,
                place,
                unit,
                label,
                packed,
                features_at,
            } => {
                let line = &self.contents[slot * STRIDE..slot * STRIDE + s.len as usize];
                let content = &line[..line.len() - 1];
                Scanned::Kept(Record {
                    content,
                    content_line: line,
                    hash,
                    place,
                    unit,
                    label,
                    vector: match packed {
                        Some(p) => Vector::Packed(p),
                        None => Vector::Text(&content[features_at as usize..]),
                    },
                })
            }
            Remembered::Header => Scanned::Header,
            Remembered::Dropped(reason) => Scanned::Dropped(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{CAPUMS_COLUMNS, SchemaOptions};
    use std::io::Cursor;

    fn schema(columns: &[&str], options: &SchemaOptions) -> Schema {
        Schema::from_header(columns.join(",").as_bytes(), options).unwrap()
    }

    /// An outcome as owned values, to compare.
    #[derive(Debug, PartialEq)]
    enum Owned {
        Kept(Vec<u8>, Vec<u8>, u64, u64, Option<u64>, u8, Vec<u8>),
        Header,
        Dropped(DropReason),
    }

    fn own(s: Scanned<'_>) -> Owned {
        match s {
            Scanned::Kept(r) => Owned::Kept(
                r.content_line.to_vec(),
                r.content.to_vec(),
                r.hash,
                r.place,
                r.unit,
                r.label,
                match r.vector {
                    Vector::Packed(p) => p.to_le_bytes().to_vec(),
                    Vector::Text(t) => t.to_vec(),
                },
            ),
            Scanned::Header => Owned::Header,
            Scanned::Dropped(r) => Owned::Dropped(r),
        }
    }

    /// The plain way, written out: each line from `next_line`, cleaned by a `Cleaner`, its
    /// content written by `write_record` (after the offset's comma) and hashed.
    fn reference(schema: &Schema, data: &[u8], start: u64, end: u64) -> Vec<(u64, Owned)> {
        let from = start.saturating_sub(1) as usize;
        let mut lines = LineReader::for_range(Cursor::new(&data[from..]), start, end).unwrap();
        let mut cleaner = Cleaner::new(schema.clone());
        let mut out = Vec::new();
        while let Some((offset, line)) = lines.next_line().unwrap() {
            let o = match cleaner.clean(line) {
                Outcome::Kept => {
                    let mut record = Vec::new();
                    cleaner.write_record(offset, &mut record);
                    let content = record[record.iter().position(|&b| b == b',').unwrap() + 1..]
                        .strip_suffix(b"\n")
                        .unwrap()
                        .to_vec();
                    let hash = content_hash(&content);
                    let before = 1 + usize::from(cleaner.unit().is_some());
                    let vector = match cleaner.digits() {
                        Some(d) if d.len() <= PACKED_DIGITS => pack(d).to_le_bytes().to_vec(),
                        _ => features_text(&content, before).to_vec(),
                    };
                    Owned::Kept(
                        [&content[..], b"\n"].concat(),
                        content,
                        hash,
                        cleaner.unit().unwrap_or(hash),
                        cleaner.unit(),
                        cleaner.label(),
                        vector,
                    )
                }
                Outcome::Header => Owned::Header,
                Outcome::Dropped(r) => Owned::Dropped(r),
            };
            out.push((offset, o));
        }
        out
    }

    fn scanned(scanner: &mut Scanner, data: &[u8], start: u64, end: u64) -> Vec<(u64, Owned)> {
        let from = start.saturating_sub(1) as usize;
        let mut lines = LineReader::for_range(Cursor::new(&data[from..]), start, end).unwrap();
        let mut out = Vec::new();
        scanner
            .scan(&mut lines, |offset, s| out.push((offset, own(s))))
            .unwrap();
        out
    }

    /// Random files of one-digit lines with every kind of damage the template must turn away
    /// (a wrong byte anywhere, quotes, spaces, NA, long numbers, short and long lines, all three
    /// line ends, a BOM, header lines): the scanner gives what the plain way gives, line for
    /// line, over every schema here, whole and in ranges.
    #[test]
    fn scanner_agrees_with_the_plain_way() {
        let mut state = 99u64;
        let mut next = |m: u64| {
            state = crate::hash::splitmix64(state);
            state % m
        };
        let options = [
            SchemaOptions::default(),
            SchemaOptions {
                unit: Some("married".into()),
                ..SchemaOptions::default()
            },
            SchemaOptions {
                na_values: vec!["9".into(), "NA".into()],
                ..SchemaOptions::default()
            },
        ];
        for (case, opts) in (0..60).flat_map(|c| options.iter().map(move |o| (c, o))) {
            let s = schema(&CAPUMS_COLUMNS, opts);
            let n = CAPUMS_COLUMNS.len();
            let mut data = Vec::new();
            if case % 4 == 0 {
                data.extend_from_slice(b"\xEF\xBB\xBF");
                data.extend_from_slice(CAPUMS_COLUMNS.join(",").as_bytes());
                data.push(b'\n');
            }
            for _ in 0..600 {
                let mut line: Vec<u8> = (0..n)
                    .flat_map(|_| {
                        [
                            b'0' + [0, 1, 0, 1, 0, 1, 0, 1, 2, 9][next(10) as usize],
                            b',',
                        ]
                    })
                    .collect();
                line.pop();
                match next(24) {
                    0 => {
                        let at = next(line.len() as u64) as usize;
                        line[at] = b"x \"9,.-+\t\xff"[next(10) as usize];
                    }
                    1 => line.truncate(next(line.len() as u64) as usize),
                    2 => line.extend_from_slice(b",1"),
                    3 => line = CAPUMS_COLUMNS.join(",").into_bytes(),
                    4 => line[2 * next(n as u64) as usize..][..1].copy_from_slice(b"7"),
                    5 => line.splice(0..1, b"10".iter().copied()).for_each(drop),
                    6 => line.splice(0..0, b" ".iter().copied()).for_each(drop),
                    _ => {}
                }
                data.extend_from_slice(&line);
                data.extend_from_slice([&b"\n"[..], b"\r\n", b"\r"][(case / 4 % 3) as usize]);
            }
            if case % 3 == 1 {
                // A last line without a terminator.
                data.extend_from_slice(b"1,0,1,0,1,1,0,1,0,1,1,0");
            }
            let len = data.len() as u64;
            let mut scanner = Scanner::new(s.clone());
            let want = reference(&s, &data, 0, len);
            let before = scanner.fast;
            assert!(
                want.iter()
                    .filter(|(_, o)| matches!(o, Owned::Kept(..)))
                    .count()
                    > 50
            );
            assert_eq!(scanned(&mut scanner, &data, 0, len), want, "case {case}");
            // Most lines took the template (a fifth of them are damaged).
            assert!(
                scanner.fast - before > 400,
                "case {case}: {}",
                scanner.fast - before
            );
            let cut = next(len);
            let mut halves = scanned(&mut scanner, &data, 0, cut);
            halves.extend(scanned(&mut scanner, &data, cut, len));
            assert_eq!(halves, want, "case {case} cut at {cut}");
        }
    }

    /// Lines past the reader's limit, with every line end, found inside a block or past its
    /// end, in the middle or last: the scan gives the lines before the long one as the plain
    /// way does, then the same error (naming the same offset).
    #[test]
    fn a_line_past_the_limit_fails_as_the_plain_way_does() {
        let s = schema(&CAPUMS_COLUMNS, &SchemaOptions::default());
        let row = b"1,0,1,0,1,1,0,1,0,1,1,0";
        let limit = 40;
        for end in [&b"\n"[..], b"\r\n", b"\r"] {
            for long in [limit, limit + 1, limit + 7, 3 * limit] {
                for last in [false, true] {
                    for cap in [8, 64, 4096] {
                        let mut data = Vec::new();
                        for _ in 0..5 {
                            data.extend_from_slice(row);
                            data.extend_from_slice(end);
                        }
                        data.extend(std::iter::repeat_n(b'1', long));
                        if !last {
                            data.extend_from_slice(end);
                            data.extend_from_slice(row);
                            data.extend_from_slice(end);
                        }
                        let what = format!("{end:?} line of {long}, last {last}, buffer {cap}");
                        let reader = || {
                            LineReader::with_capacity(Cursor::new(&data), 0, cap).with_limit(limit)
                        };
                        let mut lines = reader();
                        let mut cleaner = Scanner::new(s.clone());
                        cleaner.template = None;
                        let mut want = Vec::new();
                        let want_end = loop {
                            match lines.next_line() {
                                Ok(Some((offset, line))) => {
                                    want.push((offset, own(cleaner.line(line))))
                                }
                                Ok(None) => break None,
                                Err(e) => break Some(e.to_string()),
                            }
                        };
                        let mut got = Vec::new();
                        let got_end = Scanner::new(s.clone())
                            .scan(&mut reader(), |offset, o| got.push((offset, own(o))))
                            .err()
                            .map(|e| e.to_string());
                        assert_eq!(got_end, want_end, "{what}");
                        assert_eq!(got, want, "{what}");
                        assert_eq!(want_end.is_some(), long > limit, "{what}");
                    }
                }
            }
        }
    }

    /// One line at a time gives the same as the scan.
    #[test]
    fn single_lines_agree() {
        let s = schema(&CAPUMS_COLUMNS, &SchemaOptions::default());
        let mut scanner = Scanner::new(s.clone());
        let mut cleaner_scanner = Scanner::new(s);
        cleaner_scanner.template = None;
        for line in [
            &b"1,0,1,0,1,1,0,1,0,1,1,0"[..],
            b"1,0,1,0,1,2,0,1,0,1,1,0",
            b"1,0,1,0,1,1,0,1,0,1,1",
            b"1,0,1,0,1,1,0,1,0,1,1,0,1",
            b"",
            b"1,0,1,0,1,1,0,1,0,1,1,x",
        ] {
            assert_eq!(own(scanner.line(line)), own(cleaner_scanner.line(line)));
        }
    }

    /// Real data with multi-digit values (the Fulton extract) takes the plain way and agrees.
    #[test]
    fn real_file_agrees() {
        let data = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/FultonPUMS5full.csv"
        ))
        .unwrap();
        let header = &data[..memchr::memchr(b'\n', &data).unwrap()];
        let s = Schema::from_header(header, &SchemaOptions::default()).unwrap();
        let mut scanner = Scanner::new(s.clone());
        let len = data.len() as u64;
        let want = reference(&s, &data, 0, len);
        assert!(want.len() > 10_000);
        assert_eq!(scanned(&mut scanner, &data, 0, len), want);
    }

    /// A template line's key is its digits; a line with any other byte in a digit's or a
    /// comma's place has none.
    #[test]
    fn template_keys() {
        let t = Template::new(3).unwrap();
        let mut w = [b'\n'; WINDOW];
        w[..5].copy_from_slice(b"1,9,3");
        assert_eq!(t.key(&w), Some(0x391));
        for (at, byte) in [(0, b'a'), (1, b';'), (2, b':'), (4, b'/'), (3, b' ')] {
            let mut bad = w;
            bad[at] = byte;
            assert_eq!(t.key(&bad), None, "{at} {byte}");
        }
        // The terminator and what follows are not the template's business.
        w[5] = b'x';
        w[9] = b'"';
        assert_eq!(t.key(&w), Some(0x391));
        assert!(Template::new(0).is_none() && Template::new(17).is_none());
    }
}
