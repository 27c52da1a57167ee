//! [`HostRows`]: the training rows on the host for the plain-Rust step to gather its batches
//! from, as a table of the distinct rows and a 16-bit code per example where the data has few
//! distinct rows (the census file's 960k training rows have a few hundred: 0/1 features), and
//! as the plain `[n, stride]` copy otherwise.
//!
//! The plain copy is 64 bytes an example (61 MB for 960k rows), far past the caches, so each
//! of a batch's 256 random rows is a miss to memory; the coded table is 2 bytes an example
//! (1.9 MB) and a few tens of KB of distinct rows. A gather writes the same floats either way:
//! each code stands for one row's exact bits.

use std::collections::HashMap;

use foldhash::fast::FixedState;

/// The most distinct rows the coded layout holds (codes are `u16`).
const MAX_DISTINCT: usize = 1 << 16;

/// Every training example's data row (`[x, 1, y, |x, 1|, padding]`, see
/// [`crate::data::Examples`]) on the host.
#[derive(Debug, Clone)]
pub struct HostRows {
    stride: usize,
    len: usize,
    layout: Layout,
}

#[derive(Debug, Clone)]
enum Layout {
    /// Row `i` at `[i * stride, (i + 1) * stride)`.
    Plain(Vec<f32>),
    /// Row `i` is row `codes[i]` of `distinct` (`[d, stride]`); distinct row `c` has feature
    /// vector `vectors[c]`: rows equal but in column `label` have the same one.
    Coded {
        distinct: Vec<f32>,
        codes: Vec<u16>,
        label: usize,
        vectors: Vec<u16>,
    },
}

/// One distinct label of a feature vector in a batch grouped by vector
/// ([`HostRows::gather_by_vector`]): the examples of the batch with that vector and label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Labelled {
    /// The vector's place among the batch's vectors.
    pub vector: u32,
    /// The label.
    pub label: f32,
    /// How many of the batch's examples have this vector and label.
    pub count: f32,
}

impl HostRows {
    /// The rows `rows` (`[n, stride]`, row-major) as they are.
    pub fn plain(rows: Vec<f32>, stride: usize) -> Self {
        assert!(
            stride > 0 && rows.len().is_multiple_of(stride),
            "rows are [n, stride]"
        );
        HostRows {
            len: rows.len() / stride,
            stride,
            layout: Layout::Plain(rows),
        }
    }

    /// The rows `rows` (`[n, stride]`, the label in column `label`) coded against their
    /// distinct rows where there are at most 65,536 of them and they take at most half the
    /// memory; else [`HostRows::plain`].
    pub fn compact(rows: Vec<f32>, stride: usize, label: usize) -> Self {
        let mut coder = Coder::new(stride, label, rows.len() / stride.max(1));
        match coder.push(&rows) {
            true => coder.finish(),
            false => HostRows::plain(rows, stride),
        }
    }

    /// Floats per row.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the rows are coded against their distinct rows (else plain).
    pub fn coded(&self) -> bool {
        matches!(self.layout, Layout::Coded { .. })
    }

    /// The distinct rows (`[d, stride]`, row-major) and how many rows each stands for, where
    /// the rows are coded (`None` for the plain copy).
    pub fn distinct_counts(&self) -> Option<(&[f32], Vec<f64>)> {
        let Layout::Coded {
            distinct, codes, ..
        } = &self.layout
        else {
            return None;
        };
        let mut counts = vec![0.0; distinct.len() / self.stride];
        for &c in codes {
            counts[usize::from(c)] += 1.0;
        }
        Some((distinct, counts))
    }

    /// Bytes these rows take.
    pub fn bytes(&self) -> usize {
        match &self.layout {
            Layout::Plain(rows) => rows.len() * 4,
            Layout::Coded {
                distinct,
                codes,
                vectors,
                ..
            } => distinct.len() * 4 + (codes.len() + vectors.len()) * 2,
        }
    }

    /// Writes rows `idx` (in that order) into `out` (`[idx.len(), stride]`).
    ///
    /// # Panics
    ///
    /// If an index is outside the rows (as `index_select` does), or `out` is too short.
    pub fn gather(&self, idx: &[i64], out: &mut [f32]) {
        let stride = self.stride;
        let at = |i: i64| {
            let i = usize::try_from(i).expect("batch indices are non-negative");
            assert!(i < self.len, "row {i} of {}", self.len);
            i
        };
        match &self.layout {
            Layout::Plain(rows) => {
                for (row, &i) in out.chunks_exact_mut(stride).zip(idx) {
                    let from = at(i) * stride;
                    row.copy_from_slice(&rows[from..from + stride]);
                }
            }
            Layout::Coded {
                distinct, codes, ..
            } => {
                for (row, &i) in out.chunks_exact_mut(stride).zip(idx) {
                    let from = usize::from(codes[at(i)]) * stride;
                    row.copy_from_slice(&distinct[from..from + stride]);
                }
            }
        }
    }
}

impl HostRows {
    /// Rows `idx`, each distinct row once: writes the distinct rows among them into `out` in
    /// order of first appearance and how many of `idx` each stands for into `counts`
    /// (cleared first), and returns their number. Coded rows are grouped by code (a code is a
    /// row's exact bits); plain rows are not grouped (every count 1), the reference the grouped
    /// step is tested against. `slots` is scratch, reused across calls.
    ///
    /// # Panics
    ///
    /// As [`HostRows::gather`].
    pub fn gather_grouped(
        &self,
        idx: &[i64],
        out: &mut [f32],
        counts: &mut Vec<f32>,
        slots: &mut Vec<u32>,
    ) -> usize {
        counts.clear();
        let Layout::Coded {
            distinct, codes, ..
        } = &self.layout
        else {
            self.gather(idx, out);
            counts.resize(idx.len(), 1.0);
            return idx.len();
        };
        let stride = self.stride;
        slots.resize(distinct.len() / stride, u32::MAX);
        let code = |i: i64| {
            let i = usize::try_from(i).expect("batch indices are non-negative");
            assert!(i < self.len, "row {i} of {}", self.len);
            usize::from(codes[i])
        };
        for &i in idx {
            let c = code(i);
            match slots[c] {
                u32::MAX => {
                    let n = counts.len();
                    slots[c] = u32::try_from(n).expect("a batch's rows fit u32");
                    out[n * stride..(n + 1) * stride]
                        .copy_from_slice(&distinct[c * stride..(c + 1) * stride]);
                    counts.push(1.0);
                }
                n => counts[n as usize] += 1.0,
            }
        }
        for &i in idx {
            slots[code(i)] = u32::MAX;
        }
        counts.len()
    }

    /// Rows `idx`, each distinct feature vector once (rows equal but in the label column,
    /// `label`): writes a row of each vector among them into `out` in order of first
    /// appearance (its label column one of the vector's labels) and, into `labelled` (cleared
    /// first), each distinct (vector, label) of the batch with how many of `idx` have it, in
    /// order of first appearance; returns the number of vectors. `None` for plain rows, which
    /// are not grouped (nothing written). `slots` is scratch, reused across calls.
    ///
    /// # Panics
    ///
    /// As [`HostRows::gather`], and if `label` is not the column the rows were coded with.
    pub fn gather_by_vector(
        &self,
        label: usize,
        idx: &[i64],
        out: &mut [f32],
        labelled: &mut Vec<Labelled>,
        slots: &mut Vec<u32>,
    ) -> Option<usize> {
        labelled.clear();
        let Layout::Coded {
            distinct,
            codes,
            label: coded_label,
            vectors,
        } = &self.layout
        else {
            return None;
        };
        assert_eq!(label, *coded_label, "the rows' label column");
        let stride = self.stride;
        // Per distinct row, how many of the batch have it, less one (`u32::MAX`, the resting
        // value, is none); each vector's place among the vectors; the batch's codes; and the
        // batch's distinct rows in order of first appearance.
        let rows = vectors.len();
        slots.resize(rows + rows + 2 * idx.len(), u32::MAX);
        let (by_row, rest) = slots.split_at_mut(rows);
        let (by_vector, rest) = rest.split_at_mut(rows);
        let (batch, first) = rest.split_at_mut(idx.len());
        // The codes first, in a loop of their own: independent loads, most of them misses,
        // that overlap.
        for (b, &i) in batch.iter_mut().zip(idx) {
            let i = usize::try_from(i).expect("batch indices are non-negative");
            assert!(i < self.len, "row {i} of {}", self.len);
            *b = u32::from(codes[i]);
        }
        // Counted without a branch: whether a row is new is a coin flip to a predictor.
        let mut distinct_rows = 0;
        for &c in batch.iter() {
            let seen = by_row[c as usize];
            first[distinct_rows] = c;
            distinct_rows += usize::from(seen == u32::MAX);
            by_row[c as usize] = seen.wrapping_add(1);
        }
        let mut found = 0;
        for &c in &first[..distinct_rows] {
            let c = c as usize;
            let v = usize::from(vectors[c]);
            if by_vector[v] == u32::MAX {
                by_vector[v] = u32::try_from(found).expect("a batch's rows fit u32");
                out[found * stride..(found + 1) * stride]
                    .copy_from_slice(&distinct[c * stride..(c + 1) * stride]);
                found += 1;
            }
            labelled.push(Labelled {
                vector: by_vector[v],
                label: distinct[c * stride + label],
                // Exact: a batch has far fewer than 2^24 rows.
                count: (by_row[c] as f32) + 1.0,
            });
        }
        for &c in &first[..distinct_rows] {
            let c = c as usize;
            by_row[c] = u32::MAX;
            by_vector[usize::from(vectors[c])] = u32::MAX;
        }
        // Every slot is free again for the next call.
        slots.truncate(rows + rows);
        Some(found)
    }
}

/// Codes rows against their distinct rows as they come, chunk by chunk (so the plain copy of
/// every row need never exist at once): [`HostRows::compact`] in parts.
#[derive(Debug)]
pub struct Coder {
    stride: usize,
    /// The label's column (rows equal but there have the same feature vector).
    label: usize,
    /// The number of rows that will be pushed in all (for the half-the-memory rule).
    expected: usize,
    /// Rows by a hash of their bits; equal bits, the same code (a NaN row equals itself).
    seen: HashMap<u64, Vec<u16>, FixedState>,
    distinct: Vec<f32>,
    codes: Vec<u16>,
}

impl Coder {
    /// A coder for `expected` rows of `stride` floats, the label in column `label`.
    pub fn new(stride: usize, label: usize, expected: usize) -> Self {
        assert!(label < stride, "the label is a column of the rows");
        Coder {
            stride,
            label,
            expected,
            seen: HashMap::default(),
            distinct: Vec::new(),
            codes: Vec::with_capacity(expected),
        }
    }

    /// Codes the rows `rows` (`[m, stride]`) after those pushed before; false when the rows so
    /// far have too many distinct rows to be worth coding (then [`HostRows::plain`] it is).
    pub fn push(&mut self, rows: &[f32]) -> bool {
        let stride = self.stride;
        assert!(rows.len().is_multiple_of(stride), "rows are [m, stride]");
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
        for row in rows.chunks_exact(stride) {
            let candidates = self.seen.entry(row_hash(row)).or_default();
            let distinct = &self.distinct;
            let found = candidates.iter().copied().find(|&c| {
                let at = usize::from(c) * stride;
                same(&distinct[at..at + stride], row)
            });
            let code = match found {
                Some(c) => c,
                None => {
                    let count = self.distinct.len() / stride;
                    if count == MAX_DISTINCT || (count + 1) * 2 > self.expected {
                        return false;
                    }
                    let c = u16::try_from(count).expect("at most 2^16 distinct rows");
                    self.distinct.extend_from_slice(row);
                    candidates.push(c);
                    c
                }
            };
            self.codes.push(code);
        }
        true
    }

    /// The coded rows pushed.
    pub fn finish(self) -> HostRows {
        let vectors = feature_vectors(&self.distinct, self.stride, self.label);
        HostRows {
            stride: self.stride,
            len: self.codes.len(),
            layout: Layout::Coded {
                distinct: self.distinct,
                codes: self.codes,
                label: self.label,
                vectors,
            },
        }
    }
}

/// For each of the distinct rows `distinct` (`[d, stride]`), the number of its feature vector,
/// vectors numbered in order of first appearance: rows whose bits are equal in every column
/// but `label` share one.
fn feature_vectors(distinct: &[f32], stride: usize, label: usize) -> Vec<u16> {
    let features = |row: &[f32]| {
        let mut bits: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
        bits[label] = 0;
        bits
    };
    let mut seen: HashMap<Vec<u32>, u16> = HashMap::new();
    distinct
        .chunks_exact(stride)
        .map(|row| {
            let next = u16::try_from(seen.len()).expect("at most 2^16 distinct rows");
            *seen.entry(features(row)).or_insert(next)
        })
        .collect()
}

/// A hash of a row's bits (FxHash's multiply-rotate: the table only needs spread, and the
/// default SipHash would cost more than the rest of the coding).
fn row_hash(row: &[f32]) -> u64 {
    row.iter().fold(0u64, |h, v| {
        (h.rotate_left(5) ^ u64::from(v.to_bits())).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
    })
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Rows of `distinct` kinds (0/1 features, a label, a norm, padding) and random ones.
    fn rows(n: usize, stride: usize, kinds: u32, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = vec![0f32; n * stride];
        for row in out.chunks_exact_mut(stride) {
            let k = rng.random_range(0..kinds);
            for (j, v) in row.iter_mut().enumerate().take(stride - 1) {
                *v = if kinds == u32::MAX {
                    rng.random::<f32>()
                } else {
                    f32::from(u8::from((k >> (j % 16)) & 1 == 1))
                };
            }
            row[stride - 1] = (k as f32).sqrt();
        }
        out
    }

    /// The coded layout gathers the plain rows' exact bits, in the order asked, repeats
    /// included; data with too many distinct rows stays plain.
    #[test]
    fn coded_gathers_equal_plain_bit_for_bit() {
        for (n, stride, kinds) in [
            (5000, 16, 377),
            (3000, 16, 2),
            (100, 8, 1),
            (4000, 16, u32::MAX),
        ] {
            let all = rows(n, stride, kinds, n as u64);
            let plain = HostRows::plain(all.clone(), stride);
            let coded = HostRows::compact(all, stride, 3);
            assert_eq!(
                coded.coded(),
                kinds != u32::MAX,
                "{n} rows of {kinds} kinds"
            );
            assert_eq!(coded.len(), n);
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let mut idx: Vec<i64> = (0..700).map(|_| rng.random_range(0..n as i64)).collect();
            idx.extend([0, n as i64 - 1, 0]);
            let (mut a, mut b) = (
                vec![1f32; idx.len() * stride],
                vec![2f32; idx.len() * stride],
            );
            plain.gather(&idx, &mut a);
            coded.gather(&idx, &mut b);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{n} rows of {kinds} kinds");
            if coded.coded() {
                assert!(
                    coded.bytes() * 8 < plain.bytes(),
                    "{n} rows of {kinds} kinds"
                );
            }
        }
    }

    /// Rows that differ only in a sign of zero or a NaN's payload keep their own bits.
    #[test]
    fn codes_keep_every_bit() {
        let stride = 4;
        let all = vec![
            0.0,
            1.0,
            2.0,
            3.0, //
            -0.0,
            1.0,
            2.0,
            3.0, //
            f32::NAN,
            1.0,
            2.0,
            3.0, //
            0.0,
            1.0,
            2.0,
            3.0,
        ];
        let mut long = all.clone();
        long.extend(std::iter::repeat_n(all.iter().copied(), 10).flatten());
        let coded = HostRows::compact(long.clone(), stride, 1);
        assert!(coded.coded());
        let idx: Vec<i64> = (0..(long.len() / stride) as i64).collect();
        let mut out = vec![0f32; long.len()];
        coded.gather(&idx, &mut out);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&long));
    }

    /// Grouped gathers hold each distinct row of the batch once with its count, in order of
    /// first appearance; plain rows are not grouped; the scratch is left clean.
    #[test]
    fn grouped_gathers_count_each_distinct_row() {
        let stride = 16;
        let all = rows(3000, stride, 40, 9);
        let coded = HostRows::compact(all.clone(), stride, 3);
        let plain = HostRows::plain(all, stride);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut counts, mut slots) = (Vec::new(), Vec::new());
        for k in [0, 1, 256, 900] {
            let idx: Vec<i64> = (0..k).map(|_| rng.random_range(0..3000i64)).collect();
            let mut each = vec![0f32; k * stride];
            plain.gather(&idx, &mut each);
            let mut out = vec![0f32; k * stride];
            let n = coded.gather_grouped(&idx, &mut out, &mut counts, &mut slots);
            // The reference: distinct rows by bits, first appearance first.
            let mut want: Vec<(Vec<u32>, f32)> = Vec::new();
            for row in each.chunks_exact(stride) {
                let bits: Vec<u32> = row.iter().map(|x| x.to_bits()).collect();
                match want.iter_mut().find(|(b, _)| *b == bits) {
                    Some((_, c)) => *c += 1.0,
                    None => want.push((bits, 1.0)),
                }
            }
            assert_eq!(n, want.len(), "{k} rows");
            for (j, (bits, count)) in want.iter().enumerate() {
                let got: Vec<u32> = out[j * stride..(j + 1) * stride]
                    .iter()
                    .map(|x| x.to_bits())
                    .collect();
                assert_eq!(&got, bits, "{k} rows, group {j}");
                assert_eq!(counts[j], *count, "{k} rows, group {j}");
            }
            assert!(slots.iter().all(|&s| s == u32::MAX));
            let n = plain.gather_grouped(&idx, &mut out, &mut counts, &mut slots);
            assert_eq!(
                (n, &out[..], counts.iter().all(|&c| c == 1.0)),
                (k, &each[..], true)
            );
        }
    }

    /// Gathers by feature vector hold each vector of the batch once (rows equal but in the
    /// label column are one vector) and each of its labels with its count, in order of first
    /// appearance; plain rows are not grouped; the scratch is left clean.
    #[test]
    fn gathers_by_vector_count_each_label_of_each_vector() {
        let (stride, label) = (16, 5);
        let mut all = rows(3000, stride, 40, 11);
        // Labels of every kind, most vectors with two or more of them.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for row in all.chunks_exact_mut(stride) {
            row[label] = [0.0, 1.0, 1.0, 0.25, f32::NAN, -0.0][rng.random_range(0..6)];
        }
        let coded = HostRows::compact(all.clone(), stride, label);
        let plain = HostRows::plain(all, stride);
        assert!(coded.coded());
        let (mut labelled, mut slots) = (Vec::new(), Vec::new());
        for k in [0, 1, 256, 900] {
            let idx: Vec<i64> = (0..k).map(|_| rng.random_range(0..3000i64)).collect();
            let mut each = vec![0f32; k * stride];
            plain.gather(&idx, &mut each);
            let mut out = vec![0f32; k * stride];
            let n = coded
                .gather_by_vector(label, &idx, &mut out, &mut labelled, &mut slots)
                .unwrap();
            // The reference: vectors by the bits of all but the label, first appearance first.
            let bits = |row: &[f32]| row.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            let features = |row: &[f32]| {
                let mut b = bits(row);
                b[label] = 0;
                b
            };
            let mut vectors: Vec<Vec<u32>> = Vec::new();
            let mut want: Vec<(usize, u32, f32)> = Vec::new();
            for row in each.chunks_exact(stride) {
                let v = match vectors.iter().position(|f| *f == features(row)) {
                    Some(v) => v,
                    None => {
                        vectors.push(features(row));
                        vectors.len() - 1
                    }
                };
                let y = row[label].to_bits();
                match want.iter_mut().find(|(w, l, _)| (*w, *l) == (v, y)) {
                    Some((_, _, c)) => *c += 1.0,
                    None => want.push((v, y, 1.0)),
                }
            }
            assert_eq!(n, vectors.len(), "{k} rows");
            assert!(
                k < 256 || n < want.len(),
                "{k} rows: some vectors have two labels"
            );
            for (v, f) in vectors.iter().enumerate() {
                assert_eq!(&features(&out[v * stride..(v + 1) * stride]), f, "{k} rows");
            }
            let got: Vec<(usize, u32, f32)> = labelled
                .iter()
                .map(|l| (l.vector as usize, l.label.to_bits(), l.count))
                .collect();
            assert_eq!(got, want, "{k} rows");
            assert!(slots.iter().all(|&s| s == u32::MAX));
            assert_eq!(
                plain.gather_by_vector(label, &idx, &mut out, &mut labelled, &mut slots),
                None
            );
        }
    }

    #[test]
    #[should_panic(expected = "row 4 of 4")]
    fn an_index_past_the_rows_panics() {
        let coded = HostRows::compact(vec![0.0; 16], 4, 1);
        coded.gather(&[4], &mut [0.0; 4]);
    }
}
