//! Record keys from content and rank (docs/design.md, "Record key"): what makes adding or
//! removing one line (or one unit) change no other record's key, shard, split or microbatch.
//!
//! The engines carry each kept record between reader and writer as a *transit line*
//! `offset,content\n`, where `content` is the shard line without its key (`label,f1,...,fk`, or
//! `unit,label,f1,...,fk` with a privacy unit). The writer of a shard sees every record of each
//! content (records are placed by their unit's hash, [`unit_hash`]) in input order, and turns
//! each transit line into the shard line `key,content\n` with a [`ShardKeyer`], which counts the
//! ranks and applies `--max-rows-per-unit`. The pipeline's shard owners and the Hadoop reducers
//! both call it, so the two engines key records by the same code.

use std::collections::HashMap;

use crate::hash::splitmix64;

/// SplitMix64's increment (the golden gamma): successive outputs of a generator seeded with
/// `s` are `splitmix64(s + r * GAMMA)`.
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// `H`: XXH3-64 (seed 0) of `bytes`, the hash of a record's content and of a unit's value.
///
/// ```
/// assert_eq!(shards::keys::content_hash(b""), 0x2D06_8005_38D3_94C2);
/// ```
#[inline]
pub fn content_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The hash a record is placed by: its unit value's [`content_hash`] with a privacy unit, else
/// that of its content (each line its own unit).
#[inline]
pub fn unit_hash(value: &[u8]) -> u64 {
    content_hash(value)
}

/// The key of the record with content hash `h` and rank `rank` among the records of the same
/// content: the `rank`-th output of SplitMix64 seeded with `h`.
#[inline]
pub fn record_key(h: u64, rank: u64) -> u64 {
    splitmix64(h.wrapping_add(rank.wrapping_mul(GAMMA)))
}

/// The ASCII digits of `n < 10^8`, eight of them (leading zeros kept), most significant first
/// when the word is stored little-endian: each step splits every lane of the word in two
/// (`/ 10^4`, `/ 100`, `/ 10`) with a multiply and a shift exact on the lane's range.
///
/// ```
/// assert_eq!(shards::keys::eight_digits(1234).to_le_bytes(), *b"00001234");
/// ```
#[inline]
pub fn eight_digits(n: u64) -> u64 {
    debug_assert!(n < 100_000_000);
    // Two 32-bit lanes of four digits, the high half in the low lane.
    let v = (n / 10_000) | ((n % 10_000) << 32);
    // x / 100 == x * 5243 >> 19 for x < 43699: four 16-bit lanes of two digits.
    let q = ((v * 5243) >> 19) & 0x0000_007F_0000_007F;
    let v = q | ((v - q * 100) << 16);
    // x / 10 == x * 103 >> 10 for x < 179: eight bytes of one digit.
    let q = ((v * 103) >> 10) & 0x000F_000F_000F_000F;
    q | ((v - q * 10) << 8) | 0x3030_3030_3030_3030
}

/// A buffer [`decimal`] writes a `u64` into.
pub type DecimalBuf = [u8; 24];

/// `v` in decimal (what `itoa` and `to_string` write), written into `buf`: three words of eight
/// digits each, with no loop or branch per digit, and a slice from the first significant one.
/// The whole of `buf` holds `v` zero-padded to 24 digits.
///
/// ```
/// let mut buf = [0; 24];
/// assert_eq!(shards::keys::decimal(1_000_000_007, &mut buf), b"1000000007");
/// ```
#[inline]
pub fn decimal(v: u64, buf: &mut DecimalBuf) -> &[u8] {
    const E8: u64 = 100_000_000;
    const E16: u64 = E8 * E8;
    if v < E8 {
        // Byte offsets and shard numbers (the streaming mapper writes two a line, zero-padded
        // from these 24 digits): one word of digits, not three.
        buf[..16].fill(b'0');
        buf[16..].copy_from_slice(&eight_digits(v).to_le_bytes());
    } else {
        buf[..8].copy_from_slice(&eight_digits(v / E16).to_le_bytes());
        buf[8..16].copy_from_slice(&eight_digits(v / E8 % E8).to_le_bytes());
        buf[16..].copy_from_slice(&eight_digits(v % E8).to_le_bytes());
    }
    let len = v.checked_ilog10().map_or(1, |l| l as usize + 1);
    &buf[24 - len..]
}

/// Appends `v` in decimal to `out`, as [`decimal`] writes it. Numbers of 17 to 20 digits (every
/// record key but one in thousands) go out as three words kept in registers, the first shifted
/// down to its first significant digit and the bytes past it cut off again: a buffer of digits
/// read back in pieces made the load wait on the stores before it, once a record.
#[inline]
pub fn push_decimal(out: &mut Vec<u8>, v: u64) {
    const E8: u64 = 100_000_000;
    const E16: u64 = E8 * E8;
    if v >= E16 {
        let top = v / E16;
        let len = top.ilog10() as usize + 1;
        let end = out.len() + len;
        out.extend_from_slice(&(eight_digits(top) >> (8 * (8 - len))).to_le_bytes());
        out.truncate(end);
        out.extend_from_slice(&eight_digits(v / E8 % E8).to_le_bytes());
        out.extend_from_slice(&eight_digits(v % E8).to_le_bytes());
    } else {
        let mut digits = [0; 24];
        out.extend_from_slice(decimal(v, &mut digits));
    }
}

/// How an output's records are keyed: one line a unit, or the rows sharing a unit column's
/// value, at most `max_rows` of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitRule {
    /// Transit lines carry a unit hash before the label.
    pub unit: bool,
    /// `--max-rows-per-unit`: a unit keeps at most this many rows (those with the smallest
    /// keys). Only with `unit`.
    pub max_rows: Option<u32>,
}

impl UnitRule {
    /// Whether a shard's records must be read twice (a unit cap: [`ShardKeyer::observe`] first).
    pub fn two_passes(&self) -> bool {
        self.unit && self.max_rows.is_some()
    }
}

/// A transit line taken apart: `offset,content` (no terminator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transit<'a> {
    /// The record's byte offset in the input: its place in input order.
    pub offset: u64,
    /// The record's unit hash (with a unit), read from the content's first field.
    pub unit: Option<u64>,
    /// Everything after the offset's comma: the shard line without its key.
    pub content: &'a [u8],
}

impl<'a> Transit<'a> {
    /// Parses a transit line (with or without its `\n`); `unit` says whether the content
    /// starts with a unit hash.
    pub fn parse(line: &'a [u8], unit: bool) -> Result<Transit<'a>, String> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let comma = memchr::memchr(b',', line).ok_or("a record line without a comma")?;
        let offset =
            parse_digits(&line[..comma]).ok_or("a record line's offset is not a number")?;
        let content = &line[comma + 1..];
        let unit = if unit {
            let end = memchr::memchr(b',', content).ok_or("a record line without its unit")?;
            Some(parse_digits(&content[..end]).ok_or("a record line's unit is not a number")?)
        } else {
            None
        };
        Ok(Transit {
            offset,
            unit,
            content,
        })
    }
}

/// The content of a transit line (after its offset), checked only for the offset's comma and a
/// non-empty content.
#[inline]
pub fn content_of(line: &[u8]) -> Result<&[u8], String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    // The comma ends the offset, a few bytes in: a plain loop finds it sooner than a call to
    // memchr.
    match line.iter().position(|&b| b == b',') {
        Some(comma) if comma > 0 && comma + 1 < line.len() => Ok(&line[comma + 1..]),
        _ => Err("a record line without an offset and a content".into()),
    }
}

/// Decimal digits as a `u64`: `None` if empty, longer than 20 digits, not all ASCII digits, or
/// past `u64::MAX` (leading zeros allowed, no sign). Up to seven leading digits one at a time,
/// the rest eight at a time ([`read_eight_digits`]): record keys and offsets have 17 to 20
/// digits, and one at a time, each with its checked multiply and add, they were a sixth of the
/// reducer's time and the largest part of reading a shard's keys.
#[inline]
pub fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (head, words) = s.split_at(s.len() % 8);
    // At most seven digits: no overflow.
    let mut v = 0u64;
    for &b in head {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    for word in words.chunks_exact(8) {
        let word = read_eight_digits(word.try_into().expect("eight bytes"))?;
        v = v.checked_mul(100_000_000)?.checked_add(word)?;
    }
    Some(v)
}

/// Eight ASCII digits (the most significant first) as a number below 10^8, or `None` if one
/// is not a digit: [`eight_digits`] the other way.
///
/// ```
/// assert_eq!(shards::keys::read_eight_digits(*b"00001234"), Some(1234));
/// assert_eq!(shards::keys::read_eight_digits(*b"0000123x"), None);
/// ```
#[inline]
pub fn read_eight_digits(bytes: [u8; 8]) -> Option<u64> {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let x = u64::from_le_bytes(bytes);
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 does not carry out of it.
    if (x & HIGH) | ((x.wrapping_add(0x0606_0606_0606_0606) & HIGH) >> 4) != 0x3333_3333_3333_3333 {
        return None;
    }
    // Fold neighbouring digits, then pairs, then fours (the first digit is the lowest byte).
    let d = x - 0x3030_3030_3030_3030;
    let d = (d * 10 + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let d = (d * 100 + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((d & 0xFFFF) * 10_000 + (d >> 32))
}

/// The hash maps here: keyed by hashes already, so a fast fixed hasher is plenty.
type Map<V> = HashMap<u64, V, foldhash::fast::FixedState>;

/// Keys one shard's records, given in input order: each transit line becomes `key,content\n`.
///
/// With a cap on rows per unit, the shard is read twice: [`ShardKeyer::observe`] every record
/// (to find each unit's smallest keys), then [`ShardKeyer::write`] every record again, in the
/// same order. Without one, only `write`.
#[derive(Debug)]
pub struct ShardKeyer {
    rule: UnitRule,
    ranks: Map<u64>,
    /// With a cap: each unit's K smallest keys so far (sorted) and its number of rows.
    smallest: Map<(Vec<u64>, u64)>,
    /// With a cap, after the first pass: the largest key a unit keeps, for units over the cap.
    threshold: Map<u64>,
    writing: bool,
    capped: u64,
}

impl ShardKeyer {
    /// A keyer for one shard under `rule`.
    pub fn new(rule: UnitRule) -> ShardKeyer {
        ShardKeyer {
            rule,
            ranks: Map::default(),
            smallest: Map::default(),
            threshold: Map::default(),
            writing: false,
            capped: 0,
        }
    }

    /// How it keys.
    pub fn rule(&self) -> UnitRule {
        self.rule
    }

    /// Whether the shard must be read twice ([`ShardKeyer::observe`] first).
    pub fn two_passes(&self) -> bool {
        self.rule.two_passes()
    }

    /// The key of the next record of the content whose hash is `h` (counting its rank).
    #[inline]
    fn next_key(&mut self, h: u64) -> u64 {
        let rank = self.ranks.entry(h).or_insert(0);
        let key = record_key(h, *rank);
        *rank += 1;
        key
    }

    /// First pass (with a cap): sees one record.
    pub fn observe(&mut self, line: &[u8]) -> Result<(), String> {
        assert!(!self.writing, "observe comes before write");
        let t = Transit::parse(line, self.rule.unit)?;
        self.observe_content(content_hash(t.content), t.unit);
        Ok(())
    }

    /// [`ShardKeyer::observe`] for a record already taken apart: its content's hash and, with a
    /// unit, the unit's hash.
    pub fn observe_content(&mut self, h: u64, unit: Option<u64>) {
        assert!(!self.writing, "observe comes before write");
        let key = self.next_key(h);
        if let (Some(unit), Some(k)) = (unit, self.rule.max_rows) {
            let (keys, rows) = self.smallest.entry(unit).or_default();
            *rows += 1;
            let at = keys.partition_point(|&x| x < key);
            if at < k as usize {
                keys.insert(at, key);
                keys.truncate(k as usize);
            }
        }
    }

    /// Appends the shard line of one record, given as a transit line, to `out`, unless the cap
    /// lets it go; returns whether it was written.
    pub fn write(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        // Without a unit the offset is only skipped (the common, large case).
        let (content, unit) = if self.rule.unit {
            let t = Transit::parse(line, true)?;
            (t.content, t.unit)
        } else {
            (content_of(line)?, None)
        };
        Ok(self.write_content(content_hash(content), unit, content, out))
    }

    /// [`ShardKeyer::write`] for a record already taken apart: its `content`, the content's
    /// hash `h` (which must be [`content_hash`]`(content)`: a reader that computed it to place
    /// the record hands it on rather than hashing twice) and, with a unit, the unit's hash.
    #[inline]
    pub fn write_content(
        &mut self,
        h: u64,
        unit: Option<u64>,
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        debug_assert_eq!(h, content_hash(content));
        if !self.writing {
            self.start_writing();
        }
        let key = self.next_key(h);
        if let Some(&largest) = unit.and_then(|u| self.threshold.get(&u))
            && key > largest
        {
            self.capped += 1;
            return false;
        }
        push_decimal(out, key);
        out.push(b',');
        out.extend_from_slice(content);
        out.push(b'\n');
        true
    }

    /// Ends the first pass: each unit over the cap keeps the keys up to its K-th smallest.
    #[cold]
    fn start_writing(&mut self) {
        self.writing = true;
        if self.two_passes() {
            let k = self.rule.max_rows.expect("two passes have a cap") as u64;
            self.threshold = std::mem::take(&mut self.smallest)
                .into_iter()
                .filter(|(_, (_, rows))| *rows > k)
                .map(|(unit, (keys, _))| (unit, *keys.last().expect("a unit over the cap")))
                .collect();
            self.ranks.clear();
        }
    }

    /// Rows the cap let go.
    pub fn capped(&self) -> u64 {
        self.capped
    }
}

/// The design's rule written plainly, for the tests' sequential references to hold the writers
/// against: the keys of one shard's records, given in input order as (unit hash, content), or
/// `None` for the rows `max_rows` lets go. Counts ranks with a map of contents (not of their
/// hashes) and caps by sorting each unit's keys.
pub fn plain_keys(records: &[(Option<u64>, &[u8])], max_rows: Option<u32>) -> Vec<Option<u64>> {
    let mut seen: HashMap<&[u8], u64> = HashMap::new();
    let keys: Vec<u64> = records
        .iter()
        .map(|(_, content)| {
            let rank = seen.entry(content).or_insert(0);
            *rank += 1;
            record_key(content_hash(content), *rank - 1)
        })
        .collect();
    let mut by_unit: HashMap<u64, Vec<u64>> = HashMap::new();
    for ((unit, _), &key) in records.iter().zip(&keys) {
        if let Some(u) = unit {
            by_unit.entry(*u).or_default().push(key);
        }
    }
    let mut largest_kept: HashMap<u64, u64> = HashMap::new();
    if let Some(k) = max_rows {
        for (unit, mut unit_keys) in by_unit {
            unit_keys.sort_unstable();
            if unit_keys.len() > k as usize {
                largest_kept.insert(unit, unit_keys[k as usize - 1]);
            }
        }
    }
    records
        .iter()
        .zip(keys)
        .map(|((unit, _), key)| {
            let over = unit
                .and_then(|u| largest_kept.get(&u))
                .is_some_and(|&l| key > l);
            (!over).then_some(key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`parse_digits`] is `str::parse::<u64>` on plain digits (and `None` past 20 of them, a
    /// sign, or anything else): every length to 22, every byte in every place, the overflow
    /// boundary, random values with and without zero padding.
    #[test]
    fn parse_digits_is_str_parse_on_plain_digits() {
        let plain = |f: &[u8]| {
            let digits = !f.is_empty() && f.len() <= 20 && f.iter().all(u8::is_ascii_digit);
            digits.then(|| std::str::from_utf8(f).ok()?.parse::<u64>().ok())?
        };
        let mut fields: Vec<Vec<u8>> = [
            "",
            "0",
            "+1",
            "-1",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "000000000000000000001",
            "1844674407370955161",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let base = b"1234567890123456789012";
        for len in 0..=22 {
            for at in 0..len {
                for b in [b'/', b'0', b'9', b':', b' ', 0, 0xff, b'a'] {
                    let mut f = base[..len].to_vec();
                    f[at] = b;
                    fields.push(f);
                }
            }
        }
        for i in 0..20_000u64 {
            let v = crate::hash::splitmix64(i) >> (i % 64);
            fields.push(format!("{v:020}").into_bytes());
            fields.push(v.to_string().into_bytes());
        }
        for f in &fields {
            assert_eq!(
                parse_digits(f),
                plain(f),
                "{:?}",
                String::from_utf8_lossy(f)
            );
        }
        assert_eq!(parse_digits(b"18446744073709551615"), Some(u64::MAX));
    }

    fn keyed(rule: UnitRule, lines: &[&str]) -> (Vec<String>, u64) {
        let mut k = ShardKeyer::new(rule);
        if k.two_passes() {
            for l in lines {
                k.observe(l.as_bytes()).unwrap();
            }
        }
        let mut out = Vec::new();
        for l in lines {
            k.write(l.as_bytes(), &mut out).unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        (text.lines().map(String::from).collect(), k.capped())
    }

    /// The word-at-a-time formatter writes what `itoa` writes, on every power of ten and its
    /// neighbours and on a million SplitMix64 outputs.
    #[test]
    fn decimal_agrees_with_itoa() {
        let mut values = vec![0, 1, 9, u64::MAX, u64::MAX - 1];
        let mut p = 1u64;
        while let Some(q) = p.checked_mul(10) {
            values.extend([p - 1, p, p + 1, q - 1]);
            p = q;
        }
        values.extend([p - 1, p, p + 1]);
        values.extend((0..1_000_000).map(splitmix64));
        values.extend((0..1_000).map(|i| splitmix64(i) >> (i % 64)));
        let mut buf = [0; 24];
        for v in values {
            assert_eq!(
                decimal(v, &mut buf),
                itoa::Buffer::new().format(v).as_bytes(),
                "{v}"
            );
            assert_eq!(buf, *format!("{v:024}").as_bytes(), "{v} padded");
            let mut pushed = b"x".to_vec();
            push_decimal(&mut pushed, v);
            assert_eq!(
                pushed[1..],
                *itoa::Buffer::new().format(v).as_bytes(),
                "{v} pushed"
            );
        }
    }

    /// XXH3-64 reference values, from the xxHash project's Python binding (`xxhash.xxh3_64`).
    #[test]
    fn content_hash_is_xxh3_64() {
        assert_eq!(content_hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(content_hash(b"a"), 0xE6C6_32B6_1E96_4E1F);
    }

    #[test]
    fn key_is_the_rank_th_splitmix_output() {
        // SplitMix64 seeded with s yields splitmix64(s), splitmix64(s + GAMMA), ...
        let h = content_hash(b"1,0,1");
        assert_eq!(record_key(h, 0), splitmix64(h));
        assert_eq!(
            record_key(h, 2),
            splitmix64(h.wrapping_add(GAMMA).wrapping_add(GAMMA))
        );
        let keys: std::collections::HashSet<u64> = (0..10_000).map(|r| record_key(h, r)).collect();
        assert_eq!(keys.len(), 10_000);
    }

    #[test]
    fn equal_contents_take_successive_ranks() {
        let (lines, capped) = keyed(UnitRule::default(), &["3,1,0", "9,1,0", "12,0,0", "20,1,0"]);
        assert_eq!(capped, 0);
        let h10 = content_hash(b"1,0");
        let h00 = content_hash(b"0,0");
        assert_eq!(
            lines,
            [
                format!("{},1,0", record_key(h10, 0)),
                format!("{},1,0", record_key(h10, 1)),
                format!("{},0,0", record_key(h00, 0)),
                format!("{},1,0", record_key(h10, 2)),
            ]
        );
    }

    /// Deleting any one line leaves every other record's key as it was, as a multiset: the two
    /// key sets differ by exactly one key, whose record has the deleted line's content.
    #[test]
    fn deleting_a_line_removes_exactly_one_key() {
        let contents = ["1,0", "1,0", "0,1", "1,0", "0,1", "1,1"];
        let all: Vec<String> = contents
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{},{c}", i * 10))
            .collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let (full, _) = keyed(UnitRule::default(), &refs);
        for (gone, gone_content) in contents.iter().enumerate() {
            let fewer: Vec<&str> = refs
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != gone)
                .map(|(_, l)| *l)
                .collect();
            let (less, _) = keyed(UnitRule::default(), &fewer);
            let mut missing: Vec<&String> = full.iter().filter(|l| !less.contains(l)).collect();
            assert_eq!(missing.len(), 1, "deleting line {gone}");
            let line = missing.pop().unwrap();
            assert_eq!(line.split_once(',').unwrap().1, *gone_content);
            assert!(less.iter().all(|l| full.contains(l)));
        }
    }

    #[test]
    fn a_unit_over_the_cap_keeps_its_smallest_keys() {
        let rule = UnitRule {
            unit: true,
            max_rows: Some(2),
        };
        // Unit 7 has four rows (two alike), unit 8 one.
        let lines = ["1,7,1,0", "2,7,1,0", "3,8,0,0", "4,7,0,1", "5,7,1,1"];
        let (kept, capped) = keyed(rule, &lines);
        assert_eq!(capped, 2);
        assert_eq!(kept.len(), 3);
        let mut unit7: Vec<u64> = ["7,1,0", "7,1,0", "7,0,1", "7,1,1"]
            .iter()
            .enumerate()
            .map(|(i, c)| record_key(content_hash(c.as_bytes()), u64::from(i == 1)))
            .collect();
        unit7.sort_unstable();
        let kept_keys: Vec<u64> = kept
            .iter()
            .filter(|l| l.split(',').nth(1) == Some("7"))
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        let mut sorted = kept_keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, unit7[..2]);
        // Unit 8 is untouched, and order is input order.
        assert!(kept.iter().any(|l| l.ends_with(",8,0,0")));
        // No cap: all rows.
        let (all, none) = keyed(
            UnitRule {
                unit: true,
                max_rows: None,
            },
            &lines,
        );
        assert_eq!((all.len(), none), (5, 0));
    }

    /// The writers' keyer gives what the plain rule gives, on many small random shards with
    /// repeats, with and without units and caps.
    #[test]
    fn keyer_agrees_with_the_plain_rule() {
        let mut state = 7u64;
        let mut next = |m: u64| {
            state = splitmix64(state);
            state % m
        };
        for case in 0..300 {
            let unit = case % 3 != 0;
            let cap = (unit && case % 2 == 0).then(|| 1 + next(4) as u32);
            let n = 1 + next(60) as usize;
            let lines: Vec<String> = (0..n)
                .map(|i| {
                    let body = format!("{},{}", next(2), next(3));
                    if unit {
                        format!("{i},{},{body}", next(5))
                    } else {
                        format!("{i},{body}")
                    }
                })
                .collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let rule = UnitRule {
                unit,
                max_rows: cap,
            };
            let (got, capped) = keyed(rule, &refs);
            let records: Vec<(Option<u64>, &[u8])> = lines
                .iter()
                .map(|l| {
                    let t = Transit::parse(l.as_bytes(), unit).unwrap();
                    (t.unit, t.content)
                })
                .collect();
            let want: Vec<String> = plain_keys(&records, cap)
                .into_iter()
                .zip(&records)
                .filter_map(|(k, (_, c))| k.map(|k| format!("{k},{}", String::from_utf8_lossy(c))))
                .collect();
            assert_eq!(got, want, "case {case}");
            assert_eq!(capped as usize, n - want.len());
        }
    }

    #[test]
    fn malformed_transit_lines_are_errors() {
        let mut k = ShardKeyer::new(UnitRule {
            unit: true,
            max_rows: None,
        });
        let mut out = Vec::new();
        for bad in ["", "12", "x,1,0", "1,y,1,0", "1,2"] {
            assert!(k.write(bad.as_bytes(), &mut out).is_err(), "{bad:?}");
        }
        assert!(out.is_empty());
    }
}
