//! The shard text format: a header line `key,[unit:<column>,]<label>,<f1>,...`, then record lines
//! `key,[unit,]label,f1,...` (docs/design.md, "Shard files"); and the transit lines
//! `offset,[unit,]label,f1,...` the engines carry records in before they are keyed
//! ([`crate::keys`]).

use crate::clean::write_value;

/// Name of the shard file (and reducer output) for shard `index`: `part-00003`.
pub fn part_name(index: u32) -> String {
    format!("part-{index:05}")
}

/// What a shard file's header line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    /// The privacy unit's column, when records carry their unit's hash.
    pub unit: Option<String>,
    /// The label column.
    pub label: String,
    /// The feature columns, in order.
    pub features: Vec<String>,
}

/// How the unit's column is named in a header: `unit:<column>`.
const UNIT_PREFIX: &str = "unit:";

/// The header line of a shard file, with its `\n`.
pub fn header_line(unit: Option<&str>, label: &str, features: &[String]) -> String {
    let mut s = String::from("key,");
    if let Some(unit) = unit {
        s.push_str(UNIT_PREFIX);
        s.push_str(unit);
        s.push(',');
    }
    s.push_str(label);
    for f in features {
        s.push(',');
        s.push_str(f);
    }
    s.push('\n');
    s
}

/// Appends one transit line `offset,[unit,]label,f1,...,fk\n`.
#[inline]
pub fn write_record(
    out: &mut Vec<u8>,
    offset: u64,
    unit: Option<u64>,
    label: u8,
    features: &[f64],
) {
    write_offset_label(out, offset, unit, label);
    for &v in features {
        out.push(b',');
        write_value(out, v);
    }
    out.push(b'\n');
}

/// Appends the transit line [`write_record`] writes for features that are each one decimal
/// digit, given as their ASCII digits.
#[inline]
pub fn write_digits_record(
    out: &mut Vec<u8>,
    offset: u64,
    unit: Option<u64>,
    label: u8,
    digits: &[u8],
) {
    // The line is put together on the stack and appended in one copy.
    const MOST: usize = 48;
    if digits.len() > MOST || unit.is_some() {
        write_offset_label(out, offset, unit, label);
        for &d in digits {
            out.extend_from_slice(&[b',', d]);
        }
        out.push(b'\n');
        return;
    }
    let mut line = [b','; 22 + 2 * MOST + 1];
    let start = put_offset(&mut line[..20], offset);
    line[21] = b'0' + label;
    for (i, &d) in digits.iter().enumerate() {
        debug_assert!(d.is_ascii_digit());
        line[23 + 2 * i] = d;
    }
    let end = 22 + 2 * digits.len();
    line[end] = b'\n';
    out.extend_from_slice(&line[start..=end]);
}

/// Appends the content of a record, `[unit,]label,f1,...,fk` (a shard line without its key and
/// its `\n`): what [`write_record`] writes after the offset's comma, without the `\n`.
#[inline]
pub fn write_content(out: &mut Vec<u8>, unit: Option<u64>, label: u8, features: &[f64]) {
    write_unit_label(out, unit, label);
    for &v in features {
        out.push(b',');
        write_value(out, v);
    }
}

/// [`write_content`] for features that are each one decimal digit, given as their ASCII digits.
#[inline]
pub fn write_digits_content(out: &mut Vec<u8>, unit: Option<u64>, label: u8, digits: &[u8]) {
    write_unit_label(out, unit, label);
    for &d in digits {
        out.extend_from_slice(&[b',', d]);
    }
}

/// Appends `[unit,]label`.
#[inline]
fn write_unit_label(out: &mut Vec<u8>, unit: Option<u64>, label: u8) {
    if let Some(unit) = unit {
        out.extend_from_slice(itoa::Buffer::new().format(unit).as_bytes());
        out.push(b',');
    }
    out.push(b'0' + label);
}

/// Appends `offset,[unit,]label`.
#[inline]
fn write_offset_label(out: &mut Vec<u8>, offset: u64, unit: Option<u64>, label: u8) {
    if let Some(unit) = unit {
        out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
        out.push(b',');
        out.extend_from_slice(itoa::Buffer::new().format(unit).as_bytes());
        out.extend_from_slice(&[b',', b'0' + label]);
        return;
    }
    let mut digits = [0u8; 22];
    digits[20] = b',';
    digits[21] = b'0' + label;
    let start = put_offset(&mut digits[..20], offset);
    out.extend_from_slice(&digits[start..]);
}

/// Writes `offset` in decimal at the end of `buf` (20 bytes hold any `u64`) and returns where
/// it starts.
#[inline]
fn put_offset(buf: &mut [u8], offset: u64) -> usize {
    let mut i = buf.len();
    let mut o = offset;
    loop {
        i -= 1;
        buf[i] = b'0' + (o % 10) as u8;
        o /= 10;
        if o == 0 {
            break;
        }
    }
    i
}

/// Removes what Hadoop's `TextOutputFormat` and Windows line ends may add: a trailing `\r`
/// and a trailing tab.
#[inline]
pub fn trim_line(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    line.strip_suffix('\t').unwrap_or(line)
}

/// Parses a shard header line.
pub fn parse_header(line: &str) -> Result<ShardHeader, String> {
    let mut names = trim_line(line).split(',');
    match names.next() {
        Some("key") => {}
        Some("offset") => {
            return Err(
                "this shard's records are keyed by their byte offset in the input (an \
                        output of an older version), and a byte offset moves when any earlier \
                        line is added or removed, so its split gives no privacy per line: \
                        write the shards again with this version's pipeline or mapper/reducer"
                    .into(),
            );
        }
        _ => return Err("header line must start with 'key,'".into()),
    }
    let mut first = names
        .next()
        .filter(|l| !l.is_empty())
        .ok_or("header names no label")?;
    let unit = match first.strip_prefix(UNIT_PREFIX) {
        Some(unit) if !unit.is_empty() => {
            first = names
                .next()
                .filter(|l| !l.is_empty())
                .ok_or("header names no label")?;
            Some(unit.to_string())
        }
        Some(_) => return Err("header names an empty unit column".into()),
        None => None,
    };
    let features: Vec<String> = names.map(str::to_string).collect();
    if features.is_empty() {
        return Err("header names no features".into());
    }
    Ok(ShardHeader {
        unit,
        label: first.to_string(),
        features,
    })
}

/// Whether a shard line is a header line (starts with `key,`, or an older output's `offset,`).
#[inline]
pub fn is_header(line: &str) -> bool {
    line.starts_with("key,") || line.starts_with("offset,")
}

/// One record line's key, unit hash (when the shard has units) and label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    /// The record key.
    pub key: u64,
    /// The unit's hash, in a shard with units.
    pub unit: Option<u64>,
    /// The label, 0 or 1.
    pub label: u8,
}

/// A field of a record line: whole UTF-8, as the line was split at an ASCII byte.
fn text(field: &[u8]) -> &str {
    std::str::from_utf8(field).expect("split at an ASCII byte")
}

/// The comma-separated fields of a line, as `split(|&b| b == b',')` gives them, looking first
/// for the comma right after a field's first byte: a census record is mostly one-digit fields,
/// whose end a byte-at-a-time search finds only after a call and a loop each.
struct Fields<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let end = if let [first, b',', ..] = rest
            && *first != b','
        {
            1
        } else if let Some(end) = rest.iter().position(|&b| b == b',') {
            end
        } else {
            self.rest = None;
            return Some(rest);
        };
        self.rest = Some(&rest[end + 1..]);
        Some(&rest[..end])
    }
}

/// A key or unit field as `str::parse::<u64>` reads it: plain digits by
/// [`crate::keys::parse_digits`], without a UTF-8 check or a second pass (anything else, a sign
/// or leading zeros past 20 digits, goes to `parse` itself).
#[inline]
fn parse_u64(field: &[u8]) -> Option<u64> {
    crate::keys::parse_digits(field).or_else(|| text(field).parse().ok())
}

/// Parses one record line, appending its `k` features to `features`; `unit` says whether the
/// shard's records carry a unit hash.
#[inline]
pub fn parse_record(
    line: &str,
    unit: bool,
    k: usize,
    features: &mut Vec<f32>,
) -> Result<RecordHead, String> {
    // Split on the byte, not the char: `str::split(',')` searches for each short field's end
    // with a memchr set-up that costs more than the field (a tenth of loading the census
    // shards). A comma is ASCII, so every piece is still whole UTF-8; the 0/1 fields of a
    // census file are matched as bytes, without a UTF-8 check each.
    let mut it = Fields {
        rest: Some(trim_line(line).as_bytes()),
    };
    let key = it
        .next()
        .and_then(parse_u64)
        .ok_or("key is not a non-negative integer")?;
    let unit = if unit {
        Some(
            it.next()
                .and_then(parse_u64)
                .ok_or("unit is not a non-negative integer")?,
        )
    } else {
        None
    };
    let label = match it.next() {
        Some(b"0") => 0,
        Some(b"1") => 1,
        Some(other) => return Err(format!("label '{}' is not 0 or 1", text(other))),
        None => return Err("no label".into()),
    };
    let before = features.len();
    for field in it {
        let v: f32 = match field {
            b"0" => 0.0,
            b"1" => 1.0,
            other => match text(other).parse::<f32>() {
                Ok(v) if v.is_finite() => v,
                _ => return Err(format!("feature '{}' is not a finite number", text(other))),
            },
        };
        features.push(v);
    }
    let got = features.len() - before;
    if got != k {
        features.truncate(before);
        return Err(format!("expected {k} features, found {got}"));
    }
    Ok(RecordHead { key, unit, label })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field splitter and the key reader agree with the plain ones they replace.
    #[test]
    fn fields_and_keys_match_the_plain_readers() {
        for line in [
            "",
            ",",
            "a",
            "a,",
            ",a",
            "1,0,1",
            "12,3,,4",
            "0,1,2,333,4,",
            "1,,",
            ",,1",
            "ab,c,d",
        ] {
            let fast: Vec<&[u8]> = Fields {
                rest: Some(line.as_bytes()),
            }
            .collect();
            let plain: Vec<&[u8]> = line.as_bytes().split(|&b| b == b',').collect();
            assert_eq!(fast, plain, "{line:?}");
        }
        for key in [
            "",
            "0",
            "7",
            "+7",
            "-7",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "1 ",
            " 1",
            "1e3",
            "12a",
        ] {
            assert_eq!(
                parse_u64(key.as_bytes()),
                key.parse::<u64>().ok(),
                "{key:?}"
            );
        }
    }

    #[test]
    fn round_trip() {
        let header = header_line(None, "employed", &["sex".into(), "age".into()]);
        assert_eq!(header, "key,employed,sex,age\n");
        let parsed = parse_header(&header).unwrap();
        assert_eq!(
            (parsed.unit, parsed.label, parsed.features),
            (None, "employed".into(), vec!["sex".into(), "age".into()])
        );
        let with_unit = header_line(Some("serialno"), "employed", &["age".into()]);
        assert_eq!(with_unit, "key,unit:serialno,employed,age\n");
        assert_eq!(
            parse_header(&with_unit).unwrap().unit.as_deref(),
            Some("serialno")
        );
        let mut out = Vec::new();
        write_record(&mut out, 1234567, None, 1, &[1.0, 42.5]);
        write_record(&mut out, 0, None, 0, &[0.0, 100000.0]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "1234567,1,1,42.5\n0,0,0,100000\n");
        let (mut digits, mut values) = (Vec::new(), Vec::new());
        write_digits_record(&mut digits, u64::MAX, None, 0, b"109");
        write_record(&mut values, u64::MAX, None, 0, &[1.0, 0.0, 9.0]);
        assert_eq!(digits, values);
        assert_eq!(digits, b"18446744073709551615,0,1,0,9\n");
        // Past the stack buffer's 48 features, and offset 0.
        let many: Vec<u8> = (0..60u8).map(|i| b'0' + i % 10).collect();
        let values: Vec<f64> = many.iter().map(|&d| f64::from(d - b'0')).collect();
        for n in [0, 1, 48, 49, 60] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_digits_record(&mut a, 0, None, 1, &many[..n]);
            write_record(&mut b, 0, None, 1, &values[..n]);
            assert_eq!(a, b, "{n} features");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            write_digits_record(&mut a, 5, Some(77), 1, &many[..n]);
            write_record(&mut b, 5, Some(77), 1, &values[..n]);
            assert_eq!(a, b, "{n} features with a unit");
            assert!(a.starts_with(b"5,77,1"));
        }
        let mut feats = Vec::new();
        let recs: Vec<_> = text
            .lines()
            .map(|l| {
                let h = parse_record(l, false, 2, &mut feats).unwrap();
                (h.key, h.label)
            })
            .collect();
        assert_eq!(recs, [(1234567, 1), (0, 0)]);
        assert_eq!(feats, [1.0, 42.5, 0.0, 100000.0]);
        let h = parse_record("9,77,1,0.5", true, 1, &mut feats).unwrap();
        assert_eq!((h.key, h.unit, h.label), (9, Some(77), 1));
    }

    #[test]
    fn tolerates_hadoop_tab_and_crlf() {
        let mut feats = Vec::new();
        assert_eq!(
            parse_record("5,1,0,1\t", false, 2, &mut feats).unwrap().key,
            5
        );
        assert_eq!(
            parse_record("5,1,0,1\r\n", false, 2, &mut feats)
                .unwrap()
                .label,
            1
        );
        assert!(parse_header("key,y,a\t\r\n").is_ok());
    }

    #[test]
    fn malformed_records() {
        let mut feats = Vec::new();
        for bad in [
            "x,1,0", "5,2,0", "5,1", "5,1,0,0", "5,1,z", "", "-1,0,0", "5,1,inf", "5,1,NaN",
            "5,1,1e39",
        ] {
            assert!(parse_record(bad, false, 1, &mut feats).is_err(), "{bad:?}");
        }
        assert!(parse_record("5,x,1,0", true, 1, &mut feats).is_err());
        assert!(feats.is_empty());
        // An older output keyed by byte offsets is refused, saying why.
        let old = parse_header("offset,y,a").unwrap_err();
        assert!(
            old.contains("byte offset") && old.contains("again"),
            "{old}"
        );
        assert!(parse_header("key,unit:,y,a").is_err());
        assert_eq!(part_name(3), "part-00003");
    }
}
