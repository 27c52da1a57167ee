//! Splitting a byte stream into lines with their offsets, and the byte-range ownership rule.
//!
//! `\n`, `\r\n` and a bare `\r` each end a line (as Hadoop's `LineReader`). A byte range
//! `[start, end)` owns the lines whose first byte lies inside it; the last line it owns may run
//! past `end`. A reader for a range starting after 0 begins one byte early and skips the partial
//! line there, which lands it on the first line starting at or after `start`.
//!
//! A line is bounded as it is read: one longer than [`MAX_LINE_BYTES`] is an error (kind
//! `InvalidData`, naming its offset) as soon as that many bytes of it are seen, so a file
//! without line ends (or with one huge line) never makes the reader hold more than about twice
//! the limit.

use std::io::Read;

const CHUNK: usize = 1 << 20;

/// The longest line a reader takes (the header's limit too, `MAX_HEADER_BYTES`): census rows
/// are tens of bytes, and a header of thousands of columns fits.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads lines from a stream, each with the byte offset of its first byte.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    pos: usize,
    /// End of valid data in `buf`.
    len: usize,
    /// Stream offset of `buf[pos]`.
    offset: u64,
    eof: bool,
    /// Lines starting at or after this offset are not returned.
    end: u64,
    /// The longest line returned; a longer one is an error.
    limit: usize,
}

impl<R: Read> LineReader<R> {
    /// Reads every line of `inner`, whose first byte is at stream offset `offset`.
    pub fn new(inner: R, offset: u64) -> Self {
        LineReader::with_capacity(inner, offset, CHUNK)
    }

    fn with_capacity(inner: R, offset: u64, cap: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; cap.max(2)],
            pos: 0,
            len: 0,
            offset,
            eof: false,
            end: u64::MAX,
            limit: MAX_LINE_BYTES,
        }
    }

    /// With lines of at most `limit` bytes (terminator excluded) instead of [`MAX_LINE_BYTES`].
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    fn too_long(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the line at byte {} is longer than {} bytes, the limit for one line (a file \
                 without line ends, or not a CSV file?)",
                self.offset, self.limit
            ),
        )
    }

    /// Reads the lines owned by the range `[start, end)`. `inner` must be positioned at
    /// `start - 1` when `start > 0` (so the reader can tell whether a line begins at `start`),
    /// and at 0 otherwise.
    pub fn for_range(inner: R, start: u64, end: u64) -> std::io::Result<Self> {
        let mut r = LineReader::new(inner, start.saturating_sub(1));
        r.end = end;
        if start > 0 {
            // Skip the partial line that contains byte start-1.
            r.next_line()?;
        }
        Ok(r)
    }

    /// Stream offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Ensures at least `want` unread bytes in the buffer unless at end of stream.
    fn fill(&mut self, want: usize) -> std::io::Result<()> {
        while self.len - self.pos < want && !self.eof {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            }
            if self.len == self.buf.len() {
                let grow = self.buf.len();
                self.buf.resize(grow * 2, 0);
            }
            match self.inner.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next line (without terminator) and its offset, or `None` at the end of the stream
    /// or of the range.
    pub fn next_line(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        if self.offset >= self.end {
            return Ok(None);
        }
        self.fill(1)?;
        if self.pos == self.len {
            return Ok(None);
        }
        let mut scanned = 0;
        loop {
            let data = &self.buf[self.pos + scanned..self.len];
            if let Some(i) = memchr::memchr2(b'\n', b'\r', data) {
                let term_at = self.pos + scanned + i;
                if term_at - self.pos > self.limit {
                    return Err(self.too_long());
                }
                let mut term_len = 1;
                if self.buf[term_at] == b'\r' {
                    // A `\r\n` pair is one terminator: make sure the next byte is visible.
                    if term_at + 1 == self.len && !self.eof {
                        let rel = term_at - self.pos;
                        self.fill(rel + 2)?;
                        scanned = rel;
                        continue;
                    }
                    if term_at + 1 < self.len && self.buf[term_at + 1] == b'\n' {
                        term_len = 2;
                    }
                }
                let start = self.pos;
                let line_offset = self.offset;
                let consumed = term_at + term_len - start;
                self.pos += consumed;
                self.offset += consumed as u64;
                return Ok(Some((line_offset, &self.buf[start..term_at])));
            }
            scanned = self.len - self.pos;
            if scanned > self.limit {
                return Err(self.too_long());
            }
            if self.eof {
                // The last line has no terminator.
                let start = self.pos;
                let line_offset = self.offset;
                self.pos = self.len;
                self.offset += scanned as u64;
                return Ok(Some((line_offset, &self.buf[start..self.len])));
            }
            self.fill(scanned + 1)?;
        }
    }
}

/// The byte ranges `[start, end)` that split `len` bytes among `parts` readers, as evenly as possible.
pub fn split_ranges(len: u64, parts: usize) -> Vec<(u64, u64)> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|i| (len * i / parts, len * (i + 1) / parts))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn all_lines(data: &[u8], cap: usize) -> Vec<(u64, Vec<u8>)> {
        let mut r = LineReader::with_capacity(Cursor::new(data), 0, cap);
        let mut out = Vec::new();
        while let Some((o, l)) = r.next_line().unwrap() {
            out.push((o, l.to_vec()));
        }
        out
    }

    fn range_lines(data: &[u8], start: u64, end: u64) -> Vec<(u64, Vec<u8>)> {
        let from = start.saturating_sub(1) as usize;
        let mut r = LineReader::for_range(Cursor::new(&data[from..]), start, end).unwrap();
        let mut out = Vec::new();
        while let Some((o, l)) = r.next_line().unwrap() {
            out.push((o, l.to_vec()));
        }
        out
    }

    #[test]
    fn all_terminators() {
        let data = b"ab\ncd\r\nef\rgh\n\nij";
        let want: Vec<(u64, Vec<u8>)> = vec![
            (0, b"ab".to_vec()),
            (3, b"cd".to_vec()),
            (7, b"ef".to_vec()),
            (10, b"gh".to_vec()),
            (13, b"".to_vec()),
            (14, b"ij".to_vec()),
        ];
        for cap in [2, 3, 4, 7, 64] {
            assert_eq!(all_lines(data, cap), want, "capacity {cap}");
        }
        assert!(all_lines(b"", 8).is_empty());
        assert_eq!(all_lines(b"x\n", 8), vec![(0, b"x".to_vec())]);
    }

    /// Every way of splitting the input into ranges yields each line exactly once.
    #[test]
    fn ranges_partition_the_lines() {
        let data = b"ab\ncd\r\nef\rgh\n\n\r\nij\r\r\nk";
        let whole = all_lines(data, 64);
        let n = data.len() as u64;
        for a in 0..=n {
            for b in a..=n {
                let mut got = range_lines(data, 0, a);
                got.extend(range_lines(data, a, b));
                got.extend(range_lines(data, b, n));
                assert_eq!(got, whole, "split at {a}, {b}");
            }
        }
        for parts in 1..8 {
            let got: Vec<_> = split_ranges(n, parts)
                .into_iter()
                .flat_map(|(s, e)| range_lines(data, s, e))
                .collect();
            assert_eq!(got, whole, "{parts} parts");
        }
    }

    /// A line past the limit is an error naming its offset, raised once the limit is passed
    /// (the reader holds at most about twice the limit), with or without a line end after it;
    /// lines up to the limit pass.
    #[test]
    fn a_line_past_the_limit_is_refused_as_it_is_read() {
        let limit = 100;
        let mut data = b"short\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', limit));
        data.extend(b"\nok\n");
        let mut r = LineReader::with_capacity(Cursor::new(&data), 0, 16).with_limit(limit);
        assert_eq!(r.next_line().unwrap().unwrap().1, b"short");
        assert_eq!(r.next_line().unwrap().unwrap().1.len(), limit);
        assert_eq!(r.next_line().unwrap().unwrap().1, b"ok");

        /// An endless line: a reader that counts what it hands out.
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(b'a');
                self.0 += buf.len();
                Ok(buf.len())
            }
        }
        let mut r = LineReader::new(Endless(0), 0);
        let err = r.next_line().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains("the line at byte 0 is longer than"),
            "{err}"
        );
        assert!(r.inner.0 <= 4 * MAX_LINE_BYTES, "read {} bytes", r.inner.0);
        for tail in [&b""[..], b"\n"] {
            let mut data = b"ab\n".to_vec();
            data.extend(std::iter::repeat_n(b'y', limit + 1));
            data.extend(tail);
            let mut r = LineReader::with_capacity(Cursor::new(&data), 0, 8).with_limit(limit);
            r.next_line().unwrap();
            let err = r.next_line().unwrap_err().to_string();
            assert!(err.contains("at byte 3 is longer than 100 bytes"), "{err}");
        }
    }
}
