//! Key/value framing, in one place: the mapper's `offset<TAB>line` input and the
//! `shard<TAB>offset<TAB>value` entries between mapper and reducer.
//!
//! A record entry is `SSSSS<TAB>OOOOOOOOOOOOOOOOOOOO<TAB>offset,label,f1,...,fk`: the shard
//! zero-padded to a width fixed by the shard count, the record's byte offset zero-padded to
//! 20 digits (every `u64`), then the exact shard line of [`shards::format::write_record`].
//! Because every key is fixed-width digits, any `sort` (plain, `LC_ALL=C`, or Hadoop's byte
//! comparator) groups a shard's entries together and orders them by offset, and Hadoop's
//! `KeyFieldBasedPartitioner -k1,1` sends a whole shard to one reducer.
//!
//! A header entry `SSSSS<TAB>H<TAB>offset,label,f1,...,fk` carries the shard header line, so a
//! reducer knows its columns without being told; mappers send one per shard.

use shards::keys::read_eight_digits;

/// The offset field of a header entry.
const HEADER_MARK: &[u8] = b"H";

/// Width of the offset field: enough for every `u64`.
const OFFSET_WIDTH: usize = 20;

/// Width of the shard field for `num_shards` shards: 5 digits (as in part names), more if needed.
pub fn shard_width(num_shards: u32) -> usize {
    let mut width = 1;
    let mut max = num_shards.saturating_sub(1);
    while max >= 10 {
        max /= 10;
        width += 1;
    }
    width.max(5)
}

/// Appends `v` in decimal, zero-padded to `width` digits (at most 20): the last `width` of the
/// 24 digits [`shards::keys::decimal`] writes (branch-free, a word of eight digits at a time,
/// where a digit-by-digit loop cost the mapper a sixth of its time).
#[inline]
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut digits = [0; 24];
    let len = shards::keys::decimal(v, &mut digits).len();
    out.extend_from_slice(&digits[digits.len() - width.clamp(len, OFFSET_WIDTH)..]);
}

/// Appends the key of a record entry, `shard<TAB>offset<TAB>`; the record line follows.
#[inline]
pub fn write_record_key(out: &mut Vec<u8>, shard: u32, width: usize, offset: u64) {
    push_padded(out, u64::from(shard), width);
    out.push(b'\t');
    push_padded(out, offset, OFFSET_WIDTH);
    out.push(b'\t');
}

/// Appends a whole record entry: its key, then the transit line `offset,content` (see
/// [`shards::keys`]), `content_line` being the content and its `\n`.
#[inline]
pub fn write_record_entry(
    out: &mut Vec<u8>,
    shard: u32,
    width: usize,
    offset: u64,
    content_line: &[u8],
) {
    const E8: u64 = 100_000_000;
    if width == 5 && shard < 100_000 && offset < E8 {
        // Every line of an input under 100 MB to at most 100,000 shards: each number is one
        // word of eight digits, kept in a register and written whole (a stack buffer of digits
        // read back in pieces stalled on every line), the unpadded offset shifted down to its
        // first digit and the bytes past it cut off again.
        let shard = shards::keys::eight_digits(u64::from(shard)) >> 24 | u64::from(b'\t') << 40;
        out.extend_from_slice(&shard.to_le_bytes()[..6]);
        let digits = shards::keys::eight_digits(offset);
        out.extend_from_slice(&[b'0'; OFFSET_WIDTH - 8]);
        out.extend_from_slice(&digits.to_le_bytes());
        out.push(b'\t');
        let len = offset.checked_ilog10().map_or(1, |l| l as usize + 1);
        let end = out.len() + len;
        out.extend_from_slice(&(digits >> (8 * (8 - len))).to_le_bytes());
        out.truncate(end);
    } else {
        push_padded(out, u64::from(shard), width);
        out.push(b'\t');
        let mut digits = [0; 24];
        let short = shards::keys::decimal(offset, &mut digits).len();
        // The offset's decimal is the tail of its zero-padded key.
        out.extend_from_slice(&digits[digits.len() - OFFSET_WIDTH..]);
        out.push(b'\t');
        out.extend_from_slice(&digits[digits.len() - short..]);
    }
    out.push(b',');
    out.extend_from_slice(content_line);
}

/// Appends a header entry for `shard`; `header` is a shard header line with its `\n`.
pub fn write_header_entry(out: &mut Vec<u8>, shard: u32, width: usize, header: &str) {
    push_padded(out, u64::from(shard), width);
    out.push(b'\t');
    out.extend_from_slice(HEADER_MARK);
    out.push(b'\t');
    out.extend_from_slice(header.as_bytes());
}

/// One reducer input line, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A record of `shard`: its key and its shard line (no terminator).
    Record {
        /// The record's shard.
        shard: u32,
        /// The record key.
        offset: u64,
        /// The shard line.
        line: &'a [u8],
    },
    /// The shard header line (no terminator) for `shard`.
    Header {
        /// The shard.
        shard: u32,
        /// The header line.
        line: &'a [u8],
    },
}

impl Entry<'_> {
    /// The entry's shard.
    pub fn shard(&self) -> u32 {
        match self {
            Entry::Record { shard, .. } | Entry::Header { shard, .. } => *shard,
        }
    }
}

/// Parses 1 to 20 ASCII digits into a `u64`; `None` if empty, not digits, or too large.
/// The mapper's offsets are always 20 digits: those are read in three words
/// ([`twenty_digits`]), the rest (shards, Hadoop's offsets) by [`shards::keys::parse_digits`].
#[inline]
fn parse_digits(s: &[u8]) -> Option<u64> {
    match s.try_into() {
        Ok(twenty) => twenty_digits(twenty),
        Err(_) => shards::keys::parse_digits(s),
    }
}

/// Twenty ASCII digits as a `u64`; `None` if one is not a digit or the value is too large.
#[inline]
fn twenty_digits(s: &[u8; 20]) -> Option<u64> {
    let word = |at: usize| -> [u8; 8] { s[at..at + 8].try_into().expect("eight bytes") };
    // The first four digits, behind four zeros.
    let mut top = *b"0000\0\0\0\0";
    top[4..].copy_from_slice(&s[..4]);
    let high = read_eight_digits(top)?;
    let value = read_eight_digits(word(4))? * 100_000_000 + read_eight_digits(word(12))?;
    high.checked_mul(10_000_000_000_000_000)?.checked_add(value)
}

/// Decodes a reducer input line (without its terminator).
#[inline]
pub fn parse_entry(line: &[u8]) -> Result<Entry<'_>, &'static str> {
    parse_record_entry(line).map_or_else(|| parse_entry_plain(line), Ok)
}

/// The common entry, a record of a 5-digit shard: its fields are where the mapper puts them, so
/// no search for the tabs. `None` for any other line, which [`parse_entry_plain`] then reads
/// (what this returns is what that returns: the fields it reads hold only digits, so no tab
/// comes before the ones it checks).
#[inline]
fn parse_record_entry(line: &[u8]) -> Option<Entry<'_>> {
    const VALUE: usize = 5 + 1 + OFFSET_WIDTH + 1;
    if line.len() <= VALUE || line[5] != b'\t' || line[VALUE - 1] != b'\t' {
        return None;
    }
    let shard = shards::keys::parse_digits(&line[..5])?;
    let offset = twenty_digits(line[6..VALUE - 1].try_into().expect("20 bytes"))?;
    Some(Entry::Record {
        shard: u32::try_from(shard).ok()?,
        offset,
        line: &line[VALUE..],
    })
}

/// [`parse_entry`] the plain way, field by field.
fn parse_entry_plain(line: &[u8]) -> Result<Entry<'_>, &'static str> {
    let (shard, rest) = split_tab(line).ok_or("no tab after the shard")?;
    let shard = parse_digits(shard)
        .and_then(|s| u32::try_from(s).ok())
        .ok_or("shard is not a number")?;
    let (offset, value) = split_tab(rest).ok_or("no tab after the offset")?;
    if value.is_empty() {
        return Err("empty value");
    }
    if offset == HEADER_MARK {
        return Ok(Entry::Header { shard, line: value });
    }
    let offset = parse_digits(offset).ok_or("offset is not a number")?;
    Ok(Entry::Record {
        shard,
        offset,
        line: value,
    })
}

/// Splits Hadoop's offset-keyed input line `offset<TAB>line` into the offset and the line.
/// `None` when the text before the first tab is not a byte offset.
#[inline]
pub fn split_offset_key(line: &[u8]) -> Option<(u64, &[u8])> {
    let (key, rest) = split_tab(line)?;
    Some((parse_digits(key)?, rest))
}

#[inline]
fn split_tab(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = memchr::memchr(b'\t', line)?;
    Some((&line[..i], &line[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The padding as first written, one digit at a time: the reference for [`push_padded`].
    fn padded_plain(v: u64, width: usize) -> Vec<u8> {
        let s = v.to_string();
        let zeros = width.saturating_sub(s.len());
        [vec![b'0'; zeros], s.into_bytes()].concat()
    }

    #[test]
    fn padding_agrees_with_the_plain_way() {
        let mut values = vec![0, 1, 9, 10, 99_999, 100_000, u64::from(u32::MAX), u64::MAX];
        let mut p = 1u64;
        while let Some(q) = p.checked_mul(10) {
            values.extend([p - 1, p, p + 1]);
            p = q;
        }
        values.extend((0..10_000).map(|i| shards::hash::splitmix64(i) >> (i % 64)));
        for v in values {
            for width in [5, 6, 10, OFFSET_WIDTH] {
                if v.checked_ilog10().map_or(1, |l| l as usize + 1) > width {
                    continue;
                }
                let mut out = Vec::new();
                push_padded(&mut out, v, width);
                assert_eq!(out, padded_plain(v, width), "{v} in {width}");
            }
            // The whole entry is its key and then the transit line, whichever way it is
            // written (the shard takes `v`'s place too).
            let shard = u32::try_from(v).unwrap_or(u32::MAX);
            for (shard, width) in [(7, 5), (shard, 5), (shard, 10), (7, 6), (99_999, 5)] {
                if shard.checked_ilog10().map_or(1, |l| l as usize + 1) > width {
                    continue;
                }
                let (mut entry, mut want) = (b"x".to_vec(), b"x".to_vec());
                write_record_entry(&mut entry, shard, width, v, b"1,0\n");
                want.extend_from_slice(&padded_plain(u64::from(shard), width));
                want.extend_from_slice(
                    format!("\t{}\t{v},1,0\n", padded_plain(v, 20).escape_ascii()).as_bytes(),
                );
                assert_eq!(entry, want, "{v} in shard {shard} of width {width}");
            }
        }
    }

    /// The three words of a 20-digit field agree with the general reader: every byte in every
    /// place of a 20-digit field, the overflow boundary, and many random values, padded or not.
    #[test]
    fn parsing_agrees_with_the_plain_way() {
        let mut fields: Vec<Vec<u8>> = vec![
            b"18446744073709551615".to_vec(),
            b"18446744073709551616".to_vec(),
            b"99999999999999999999".to_vec(),
            b"00000000000000000000".to_vec(),
            b"1844674407370955161".to_vec(),
            b"184467440737095516150".to_vec(),
        ];
        for i in 0..20_000u64 {
            let v = shards::hash::splitmix64(i) >> (i % 64);
            fields.push(format!("{v:020}").into_bytes());
            fields.push(v.to_string().into_bytes());
        }
        let base = b"01234567890123456789";
        for at in 0..20 {
            for b in 0..=255u8 {
                let mut f = base.to_vec();
                f[at] = b;
                fields.push(f);
            }
        }
        // The general reader is tested against `str::parse` where it lives.
        for f in &fields {
            let general = shards::keys::parse_digits(f);
            assert_eq!(parse_digits(f), general, "{}", f.escape_ascii());
        }
        assert_eq!(parse_digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_digits(b"18446744073709551616"), None);
        assert_eq!(parse_digits(b"00000000000000001234"), Some(1234));
    }

    #[test]
    fn widths() {
        assert_eq!(shard_width(1), 5);
        assert_eq!(shard_width(16), 5);
        assert_eq!(shard_width(100_000), 5);
        assert_eq!(shard_width(100_001), 6);
        assert_eq!(shard_width(u32::MAX), 10);
    }

    #[test]
    fn record_round_trip() {
        let mut out = Vec::new();
        write_record_key(&mut out, 3, 5, 1234);
        out.extend_from_slice(b"1234,1,0,1\n");
        assert_eq!(out, b"00003\t00000000000000001234\t1234,1,0,1\n");
        let line = &out[..out.len() - 1];
        assert_eq!(
            parse_entry(line).unwrap(),
            Entry::Record {
                shard: 3,
                offset: 1234,
                line: b"1234,1,0,1"
            }
        );
        out.clear();
        write_record_key(&mut out, 0, 5, u64::MAX);
        assert_eq!(&out, b"00000\t18446744073709551615\t");
    }

    #[test]
    fn header_round_trip() {
        let mut out = Vec::new();
        write_header_entry(&mut out, 12, 5, "offset,y,a\n");
        assert_eq!(out, b"00012\tH\toffset,y,a\n");
        assert_eq!(
            parse_entry(b"00012\tH\toffset,y,a").unwrap(),
            Entry::Header {
                shard: 12,
                line: b"offset,y,a"
            }
        );
    }

    /// Keys sort like (shard, offset) as plain bytes, whatever the digit counts.
    #[test]
    fn keys_sort_by_shard_then_offset() {
        let keys = [
            (1u32, 5u64),
            (0, 100),
            (1, 40),
            (0, 9),
            (10, 0),
            (2, u64::MAX),
        ];
        let mut lines: Vec<Vec<u8>> = keys
            .iter()
            .map(|&(s, o)| {
                let mut v = Vec::new();
                write_record_key(&mut v, s, 5, o);
                v
            })
            .collect();
        lines.sort();
        let mut want = keys.to_vec();
        want.sort();
        let got: Vec<(u32, u64)> = lines
            .iter()
            .map(
                |l| match parse_entry(&[l.as_slice(), b"x"].concat()).unwrap() {
                    Entry::Record { shard, offset, .. } => (shard, offset),
                    Entry::Header { .. } => unreachable!("only records here"),
                },
            )
            .collect();
        assert_eq!(got, want);
    }

    /// The fast path for record entries decodes what the plain way decodes, on good entries
    /// and on every byte of them changed.
    #[test]
    fn entries_agree_with_the_plain_way() {
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for (shard, width, offset) in [(3, 5, 1234), (0, 5, u64::MAX), (12, 6, 7), (99_999, 5, 0)] {
            let mut l = Vec::new();
            write_record_entry(&mut l, shard, width, offset, b"1,0,1\n");
            l.pop();
            lines.push(l);
        }
        lines.push(b"00001\tH\tkey,y,a".to_vec());
        lines.push(b"00001\t00000000000000000005\t".to_vec());
        lines.push(b"1\t00000000000000000005\t5,1".to_vec());
        let good = lines.clone();
        for l in &good {
            for at in 0..l.len() {
                for b in [b'\t', b'0', b'9', b'/', b':', b'H', b',', 0] {
                    let mut bad = l.clone();
                    bad[at] = b;
                    lines.push(bad);
                }
            }
            lines.push(l[..l.len() - 1].to_vec());
        }
        for l in &lines {
            assert_eq!(
                parse_entry(l),
                parse_entry_plain(l),
                "{:?}",
                String::from_utf8_lossy(l)
            );
        }
    }

    #[test]
    fn malformed_entries() {
        for bad in [
            &b""[..],
            b"00001",
            b"00001\t5",
            b"x\t5\tv",
            b"00001\t\tv",
            b"00001\t5x\tv",
            b"00001\t5\t",
            b"00001\t123456789012345678901\tv",
            b"99999999999\t5\tv",
        ] {
            assert!(
                parse_entry(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn offset_keys() {
        assert_eq!(split_offset_key(b"42\ta,b"), Some((42, &b"a,b"[..])));
        assert_eq!(split_offset_key(b"0\t"), Some((0, &b""[..])));
        assert_eq!(split_offset_key(b"7\ta\tb"), Some((7, &b"a\tb"[..])));
        assert_eq!(split_offset_key(b"1,0\t1"), None);
        assert_eq!(split_offset_key(b"a,b"), None);
        assert_eq!(split_offset_key(b"\tx"), None);
        assert_eq!(split_offset_key(b"-1\tx"), None);
    }
}
