//! Splitting one CSV line into fields: a comma split for plain lines, `csv-core` for quoted ones.
//!
//! Why line by line, and not the `csv` crate's reader over the whole stream: a record here is
//! a line, Hadoop's rule (its `LineReader` ends a record at `\n`, `\r\n` or a bare `\r`, even
//! inside quotes), because the mapper only ever sees lines and both engines must keep and key
//! exactly the same records. [`crate::LineReader`] finds the lines and their byte offsets (the
//! record keys); this module splits one line. The `csv` crate would join a quoted field across
//! line ends and lose the per-line offsets, so the engines would disagree on such input.

/// Reusable field splitter: the fields of the last line split live in its buffer.
#[derive(Debug, Default)]
pub struct Fields {
    buf: Vec<u8>,
    spans: Vec<(u32, u32)>,
    csv_ends: Vec<usize>,
    reader: Option<csv_core::Reader>,
}

impl Fields {
    /// Splits `line` (no line terminator) into fields, unquoting quoted ones.
    pub fn split(&mut self, line: &[u8]) {
        self.buf.clear();
        self.spans.clear();
        if line.contains(&b'"') {
            self.split_quoted(line);
            return;
        }
        self.buf.extend_from_slice(line);
        let mut start = 0u32;
        for (i, &b) in line.iter().enumerate() {
            if b == b',' {
                self.spans.push((start, i as u32));
                start = i as u32 + 1;
            }
        }
        self.spans.push((start, line.len() as u32));
    }

    fn split_quoted(&mut self, line: &[u8]) {
        let reader = self.reader.get_or_insert_with(csv_core::Reader::new);
        reader.reset();
        // Unquoted output is never longer than the input; one end per field at most.
        self.buf.resize(line.len() + 1, 0);
        self.csv_ends.clear();
        self.csv_ends.resize(line.len() + 2, 0);
        let (mut input, mut out, mut nends) = (line, 0usize, 0usize);
        loop {
            let (res, nin, nout, nend) =
                reader.read_record(input, &mut self.buf[out..], &mut self.csv_ends[nends..]);
            input = &input[nin..];
            out += nout;
            nends += nend;
            match res {
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
                // InputEmpty: the next call with empty input tells csv-core the line ended.
                _ => {}
            }
        }
        self.buf.truncate(out);
        let mut start = 0u32;
        for &end in &self.csv_ends[..nends] {
            self.spans.push((start, end as u32));
            start = end as u32;
        }
        if self.spans.is_empty() {
            self.spans.push((0, 0));
        }
    }

    /// Number of fields in the last line split.
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the last line split had no fields (never: an empty line has one empty field).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Field `i`, unquoted, with surrounding ASCII whitespace trimmed.
    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let (s, e) = self.spans[i];
        self.buf[s as usize..e as usize].trim_ascii()
    }

    /// All fields, unquoted and trimmed.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Splits a header or column list into names (unquoted, trimmed, BOM removed). A name that is
/// not valid UTF-8 is an error naming its column (1-based) and showing it decoded lossily.
pub fn split_names(line: &[u8]) -> crate::Result<Vec<String>> {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let mut f = Fields::default();
    f.split(line);
    f.iter()
        .enumerate()
        .map(|(i, n)| {
            String::from_utf8(n.to_vec()).map_err(|_| crate::Error::InvalidHeader {
                column: i + 1,
                name: String::from_utf8_lossy(n).into_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Vec<String> {
        let mut f = Fields::default();
        f.split(line.as_bytes());
        f.iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn plain_and_quoted() {
        assert_eq!(fields("1,0, 1 ,"), ["1", "0", "1", ""]);
        assert_eq!(fields("\"a\",\"b,c\",d"), ["a", "b,c", "d"]);
        assert_eq!(fields("\"sex\",\"married\""), ["sex", "married"]);
        assert_eq!(fields(""), [""]);
        assert_eq!(fields("\"\""), [""]);
        assert_eq!(fields("\"x\"\"y\",1"), ["x\"y", "1"]);
    }

    #[test]
    fn names_drop_bom() {
        assert_eq!(
            split_names(b"\xEF\xBB\xBF\"sex\",age").unwrap(),
            ["sex", "age"]
        );
        let err = split_names(b"sex,targetted\xff").unwrap_err().to_string();
        assert!(
            err.contains("column 2") && err.contains("targetted"),
            "{err}"
        );
    }
}
