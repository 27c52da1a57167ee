//! The cleaning rules: which input lines become records, and why the others are dropped.

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::fields::Fields;
use crate::schema::Schema;

/// Why a line was dropped. Every dropped line has exactly one reason, checked in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// An empty (or all-whitespace) line.
    BlankLine,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line has a different number of fields than the header.
    FieldCount,
    /// Some field (any column) is a missing value (`NA` or empty by default).
    Missing,
    /// A selected feature is not a finite number.
    NotNumeric,
    /// The label is not 0 or 1.
    LabelNotBinary,
}

impl DropReason {
    /// Every reason, in check order.
    pub const ALL: [DropReason; 6] = [
        DropReason::BlankLine,
        DropReason::InvalidUtf8,
        DropReason::FieldCount,
        DropReason::Missing,
        DropReason::NotNumeric,
        DropReason::LabelNotBinary,
    ];

    /// The reason's name in reports, counters and the manifest.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::BlankLine => "blank_line",
            DropReason::InvalidUtf8 => "invalid_utf8",
            DropReason::FieldCount => "field_count",
            DropReason::Missing => "missing",
            DropReason::NotNumeric => "not_numeric",
            DropReason::LabelNotBinary => "label_not_binary",
        }
    }

    /// Position in [`DropReason::ALL`], for counting in arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What became of one input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A record: read it with [`Cleaner::label`], [`Cleaner::features`], [`Cleaner::write_record`].
    Kept,
    /// A header line (equal to the column names), skipped wherever it appears and not a row.
    Header,
    /// A dropped row.
    Dropped(DropReason),
}

/// Applies the cleaning rules of a [`Schema`] to lines, reusing its buffers across lines.
#[derive(Debug)]
pub struct Cleaner {
    schema: Schema,
    fields: Fields,
    label: u8,
    values: Vec<f64>,
    digits_fast_path: bool,
    /// The last record kept came through the one-digit fast path: its features are these
    /// digits (ASCII), written as they are by [`Cleaner::write_record`].
    digits: Vec<u8>,
    from_digits: bool,
    /// The last record kept's unit hash (with a privacy unit).
    unit: Option<u64>,
}

impl Cleaner {
    /// A cleaner for `schema`.
    pub fn new(schema: Schema) -> Cleaner {
        let k = schema.features.len();
        // A single digit can only be missing if an NA value is a single digit.
        let digits_fast_path = !schema
            .na_values
            .iter()
            .any(|v| v.len() == 1 && v[0].is_ascii_digit());
        Cleaner {
            schema,
            fields: Fields::default(),
            label: 0,
            values: Vec::with_capacity(k),
            digits_fast_path,
            digits: Vec::with_capacity(k),
            from_digits: false,
            unit: None,
        }
    }

    /// The schema it applies.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Cleans one line (without its terminator; a leading BOM is ignored).
    pub fn clean(&mut self, line: &[u8]) -> Outcome {
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        match self.check(line) {
            Ok(()) => Outcome::Kept,
            Err(_) if self.is_header() => Outcome::Header,
            Err(reason) => Outcome::Dropped(reason),
        }
    }

    fn check(&mut self, line: &[u8]) -> Result<(), DropReason> {
        if self.digits_fast_path && self.check_digits(line) {
            self.from_digits = true;
            self.unit = self
                .schema
                .unit
                .map(|u| crate::keys::unit_hash(&line[2 * u..2 * u + 1]));
            return Ok(());
        }
        self.from_digits = false;
        if line.trim_ascii().is_empty() {
            self.fields.split(b"");
            return Err(DropReason::BlankLine);
        }
        if !line.is_ascii() && std::str::from_utf8(line).is_err() {
            self.fields.split(b"");
            return Err(DropReason::InvalidUtf8);
        }
        self.fields.split(line);
        if self.fields.len() != self.schema.columns.len() {
            return Err(DropReason::FieldCount);
        }
        if self
            .fields
            .iter()
            .any(|f| self.schema.na_values.iter().any(|na| na == f))
        {
            return Err(DropReason::Missing);
        }
        self.values.clear();
        for &i in &self.schema.features {
            match parse_number(self.fields.get(i)) {
                Some(v) => self.values.push(v),
                None => return Err(DropReason::NotNumeric),
            }
        }
        self.label = match parse_number(self.fields.get(self.schema.label)) {
            Some(0.0) => 0,
            Some(1.0) => 1,
            _ => return Err(DropReason::LabelNotBinary),
        };
        self.unit = self
            .schema
            .unit
            .map(|u| crate::keys::unit_hash(self.fields.get(u)));
        Ok(())
    }

    /// The common case of census extracts, `1,0,1,...` with one digit per field, kept without
    /// splitting. Returns false (and leaves the line to the general rules) unless the line is
    /// kept under them: same rules, same result, just fewer steps.
    #[inline]
    fn check_digits(&mut self, line: &[u8]) -> bool {
        let n = self.schema.columns.len();
        if line.len() != 2 * n - 1 {
            return false;
        }
        // Without a branch per byte: a digit then a comma, n - 1 times, then a digit.
        let mut ok = line[line.len() - 1].is_ascii_digit();
        for pair in line.chunks_exact(2) {
            ok &= pair[0].is_ascii_digit() & (pair[1] == b',');
        }
        if !ok {
            return false;
        }
        let label = line[2 * self.schema.label];
        if label != b'0' && label != b'1' {
            return false;
        }
        self.label = label - b'0';
        self.digits.clear();
        self.digits
            .extend(self.schema.features.iter().map(|&i| line[2 * i]));
        self.values.clear();
        self.values
            .extend(self.digits.iter().map(|&d| f64::from(d - b'0')));
        true
    }

    /// Whether the last line cleaned is a header line (its fields equal the column names).
    fn is_header(&self) -> bool {
        self.fields.len() == self.schema.columns.len()
            && self
                .fields
                .iter()
                .zip(&self.schema.columns)
                .all(|(f, c)| f == c.as_bytes())
    }

    /// The label of the last record kept.
    #[inline]
    pub fn label(&self) -> u8 {
        self.label
    }

    /// The features of the last record kept as their ASCII digits, when each is one digit and
    /// the line took the one-digit fast path (the common case); `None` otherwise.
    #[inline]
    pub fn digits(&self) -> Option<&[u8]> {
        self.from_digits.then_some(&self.digits[..])
    }

    /// The feature values of the last record kept, in output order.
    #[inline]
    pub fn features(&self) -> &[f64] {
        &self.values
    }

    /// The last record kept's unit hash ([`crate::keys::unit_hash`] of its unit column), with a
    /// privacy unit.
    #[inline]
    pub fn unit(&self) -> Option<u64> {
        self.unit
    }

    /// Appends the last record kept as a transit line `offset,[unit,]label,f1,...,fk\n`
    /// ([`crate::keys::Transit`]): the shard line with the record's input offset in place of its
    /// key, which the shard's writer assigns ([`crate::keys::ShardKeyer`]).
    pub fn write_record(&self, offset: u64, out: &mut Vec<u8>) {
        if self.from_digits {
            // A one-digit value is written as that digit (see `write_value`).
            crate::format::write_digits_record(out, offset, self.unit, self.label, &self.digits);
        } else {
            crate::format::write_record(out, offset, self.unit, self.label, &self.values);
        }
    }

    /// Appends the last record kept's content `[unit,]label,f1,...,fk` (its shard line without
    /// the key, without `\n`): what [`Cleaner::write_record`] writes after the offset's comma.
    pub fn write_content(&self, out: &mut Vec<u8>) {
        if self.from_digits {
            crate::format::write_digits_content(out, self.unit, self.label, &self.digits);
        } else {
            crate::format::write_content(out, self.unit, self.label, &self.values);
        }
    }

    /// The hash the last record kept is placed by ([`crate::keys::unit_hash`]): its unit's, or
    /// its content's (the transit line `line`, as [`Cleaner::write_record`] wrote it, after the
    /// offset) when each line is its own unit.
    #[inline]
    pub fn placement(&self, line: &[u8]) -> u64 {
        match self.unit {
            Some(u) => u,
            None => {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let comma = memchr::memchr(b',', line).expect("a transit line has an offset");
                crate::keys::content_hash(&line[comma + 1..])
            }
        }
    }
}

/// Parses a finite number (integer, decimal, exponent notation) that is also finite as an
/// `f32`; `None` otherwise.
#[inline]
pub fn parse_number(field: &[u8]) -> Option<f64> {
    match field {
        b"0" => Some(0.0),
        b"1" => Some(1.0),
        _ => {
            // Rust's float parser also takes "inf"/"nan" spellings: reject those by finiteness,
            // and reject a leading '+' sign only if followed by nothing numeric (parser handles it).
            let s = std::str::from_utf8(field).ok()?;
            let v: f64 = s.parse().ok()?;
            // The trainer works in f32: a value that overflows it is not a usable number.
            (v.is_finite() && (v as f32).is_finite()).then_some(v)
        }
    }
}

/// Writes a feature value in the shard format: integers without a fractional part, others in
/// the shortest form that reads back to the same `f64`. `-0` is written as `0`.
#[inline]
pub fn write_value(out: &mut Vec<u8>, v: f64) {
    if v == 0.0 {
        out.push(b'0');
    } else if v == 1.0 {
        out.push(b'1');
    } else if v.fract() == 0.0 && (2.0..10.0).contains(&v) {
        out.push(b'0' + v as u8);
    } else {
        write!(out, "{v}").expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{CAPUMS_COLUMNS, SchemaOptions};

    fn cleaner() -> Cleaner {
        let header = CAPUMS_COLUMNS.join(",");
        Cleaner::new(Schema::from_header(header.as_bytes(), &SchemaOptions::default()).unwrap())
    }

    fn record(c: &mut Cleaner, line: &str) -> Result<String, Outcome> {
        match c.clean(line.as_bytes()) {
            Outcome::Kept => {
                let mut out = Vec::new();
                c.write_record(7, &mut out);
                Ok(String::from_utf8(out).unwrap())
            }
            other => Err(other),
        }
    }

    #[test]
    fn keeps_a_clean_row() {
        let mut c = cleaner();
        // columns: sex,married,black,asian,collegedegree,employed,militaryservice,uscitizen,
        //          disability,englishability,blackfemale,targetted
        assert_eq!(
            record(&mut c, "1,0,1,0,1,1,0,1,0,1,1,0").unwrap(),
            "7,1,1,0,1,0,1,0,1,0,1\n"
        );
        assert_eq!(
            record(&mut c, "\"1\",0,1,0,1,0,0,1,0,1,1,0").unwrap(),
            "7,0,1,0,1,0,1,0,1,0,1\n"
        );
    }

    #[test]
    fn numbers_are_normalised() {
        let mut c = cleaner();
        let got = record(&mut c, "1.00E+05,0.5,-0,1e0,0,1.0,0,1,0,1,1,0").unwrap();
        assert_eq!(got, "7,1,100000,0.5,0,1,0,0,1,0,1\n");
    }

    #[test]
    fn drop_reasons() {
        let mut c = cleaner();
        let cases = [
            ("", DropReason::BlankLine),
            ("   ", DropReason::BlankLine),
            ("1,0,1,0,1,1,0,1,0,1,1", DropReason::FieldCount),
            ("1,0,1,0,1,1,0,1,0,1,1,0,0", DropReason::FieldCount),
            ("NA,0,1,0,1,1,0,1,0,1,1,0", DropReason::Missing),
            ("1,0,1,0,1,1,0,1,0,1,1,", DropReason::Missing),
            ("1,0,1,0,1,1,0,1,0,1,NA,0", DropReason::Missing),
            ("x,0,1,0,1,1,0,1,0,1,1,0", DropReason::NotNumeric),
            ("inf,0,1,0,1,1,0,1,0,1,1,0", DropReason::NotNumeric),
            ("NaN,0,1,0,1,1,0,1,0,1,1,0", DropReason::NotNumeric),
            ("1.7e308,0,1,0,1,1,0,1,0,1,1,0", DropReason::NotNumeric),
            ("1e39,0,1,0,1,1,0,1,0,1,1,0", DropReason::NotNumeric),
            ("1,0,1,0,1,2,0,1,0,1,1,0", DropReason::LabelNotBinary),
            ("1,0,1,0,1,yes,0,1,0,1,1,0", DropReason::LabelNotBinary),
        ];
        for (line, reason) in cases {
            assert_eq!(
                c.clean(line.as_bytes()),
                Outcome::Dropped(reason),
                "{line:?}"
            );
        }
        assert_eq!(
            c.clean(b"\xff,0,1,0,1,1,0,1,0,1,1,0"),
            Outcome::Dropped(DropReason::InvalidUtf8)
        );
        // An unselected column that is not numeric does not matter (but NA anywhere does).
        assert_eq!(c.clean(b"1,0,1,0,1,1,0,1,0,1,x,0"), Outcome::Kept);
    }

    /// The one-digit fast path gives exactly what the general rules give.
    #[test]
    fn digit_fast_path_agrees_with_general_rules() {
        let mut fast = cleaner();
        let mut general = cleaner();
        general.digits_fast_path = false;
        let mut state = 12345u64;
        let alphabet = [b'0', b'1', b'2', b'9', b',', b'x', b' '];
        let mut kept = 0;
        for _ in 0..20_000 {
            let mut line = Vec::new();
            for i in 0..23 {
                state = crate::hash::splitmix64(state);
                let pick = if !state.is_multiple_of(50) {
                    if i % 2 == 0 {
                        [b'0', b'1', b'3'][(state >> 8) as usize % 3]
                    } else {
                        b','
                    }
                } else {
                    alphabet[(state >> 8) as usize % alphabet.len()]
                };
                line.push(pick);
            }
            let (a, b) = (fast.clean(&line), general.clean(&line));
            assert_eq!(a, b, "{}", String::from_utf8_lossy(&line));
            if a == Outcome::Kept {
                kept += 1;
                let (mut x, mut y) = (Vec::new(), Vec::new());
                fast.write_record(1, &mut x);
                general.write_record(1, &mut y);
                assert_eq!(x, y);
            }
        }
        assert!(
            kept > 1000 && kept < 20_000,
            "both branches exercised: {kept} kept"
        );
    }

    #[test]
    fn header_lines_are_recognised_quoted_or_not() {
        let mut c = cleaner();
        assert_eq!(
            c.clean(CAPUMS_COLUMNS.join(",").as_bytes()),
            Outcome::Header
        );
        let quoted: Vec<String> = CAPUMS_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
        assert_eq!(c.clean(quoted.join(",").as_bytes()), Outcome::Header);
        let mut bom = b"\xEF\xBB\xBF".to_vec();
        bom.extend_from_slice(quoted.join(",").as_bytes());
        assert_eq!(c.clean(&bom), Outcome::Header);
    }
}
