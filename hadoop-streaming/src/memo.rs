//! The reducer's memo of content hashes: a census shard holds a few hundred distinct contents in
//! hundreds of thousands of records, so each content is hashed once, not once a record.

use shards::keys::content_hash;

/// Contents up to this many bytes are remembered (a census content of 12 one-digit fields is
/// 23); longer ones are hashed every time.
pub const MAX_LEN: usize = 32;
/// Slots of the memo (direct-mapped: a content whose slot another holds takes it over).
const SLOTS: usize = 4096;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The content's bytes, zero-padded to [`MAX_LEN`], as little-endian words.
    words: [u64; 4],
    /// Its length plus one (0: an empty slot).
    len: usize,
    hash: u64,
}

/// A cache of [`content_hash`] for short contents: what it returns is always `content_hash`
/// of the content (a pure function of its bytes, compared whole), only faster when it has seen
/// the content before.
#[derive(Debug)]
pub struct HashMemo {
    slots: Vec<Slot>,
}

impl Default for HashMemo {
    fn default() -> HashMemo {
        HashMemo {
            slots: vec![Slot::default(); SLOTS],
        }
    }
}

impl HashMemo {
    /// [`content_hash`] of `text[..len]`; the bytes of `text` after `len` are ignored. When
    /// `text` holds at least [`MAX_LEN`] bytes, the content is read as four words without a
    /// copy (the reducer hands it a record with the records after it).
    #[inline]
    pub fn hash(&mut self, text: &[u8], len: usize) -> u64 {
        let content = &text[..len];
        if len > MAX_LEN {
            return content_hash(content);
        }
        let window: [u8; MAX_LEN] = match text.get(..MAX_LEN) {
            Some(w) => w.try_into().expect("MAX_LEN bytes"),
            None => {
                let mut w = [0; MAX_LEN];
                w[..len].copy_from_slice(content);
                w
            }
        };
        // Four words, each a scalar: an array of them compared at once went through the stack
        // and waited on its own stores.
        let word = |i: usize| {
            let bytes: [u8; 8] = window[8 * i..8 * i + 8].try_into().expect("8 bytes");
            // Only the content's own bytes: those past `len` are cleared.
            let bits = (8 * len).saturating_sub(64 * i);
            let mask = if bits >= 64 { !0 } else { (1u64 << bits) - 1 };
            u64::from_le_bytes(bytes) & mask
        };
        let (w0, w1, w2, w3) = (word(0), word(1), word(2), word(3));
        let mixed = (w0 ^ w1.rotate_left(16) ^ w2.rotate_left(32)).wrapping_add(w3 ^ len as u64);
        let at =
            (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize;
        let slot = &mut self.slots[at];
        let [s0, s1, s2, s3] = slot.words;
        if slot.len != len + 1 || ((s0 ^ w0) | (s1 ^ w1) | (s2 ^ w2) | (s3 ^ w3)) != 0 {
            let words = [w0, w1, w2, w3];
            *slot = Slot {
                words,
                len: len + 1,
                hash: content_hash(content),
            };
        }
        slot.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo returns `content_hash` of the content: short and long contents, every length,
    /// repeats, contents differing only past a word boundary or in a trailing zero byte, whatever
    /// follows the content in `text`, and enough distinct contents to evict slots.
    #[test]
    fn agrees_with_content_hash() {
        let mut memo = HashMemo::default();
        let mut state = 1u64;
        let mut next = || {
            state = shards::hash::splitmix64(state);
            state
        };
        let mut contents: Vec<Vec<u8>> = Vec::new();
        for len in 0..=MAX_LEN + 8 {
            contents.push(vec![b'1'; len]);
            contents.push(vec![0; len]);
            let mut v: Vec<u8> = (0..len).map(|i| b"0,1"[i % 3]).collect();
            contents.push(v.clone());
            if let Some(last) = v.last_mut() {
                *last = b'9';
                contents.push(v);
            }
        }
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            contents.push((0..len).map(|_| b"01,"[(next() % 3) as usize]).collect());
        }
        for round in 0..3 {
            for c in &contents {
                let want = content_hash(c);
                assert_eq!(memo.hash(c, c.len()), want, "{c:?}");
                // Followed by other bytes, long enough to be read in place, or not.
                for tail in [
                    &b"\n"[..],
                    b"\n123,1,0,1,0,1\n00000000000000000000000000000000",
                ] {
                    let text = [c.as_slice(), tail].concat();
                    assert_eq!(memo.hash(&text, c.len()), want, "{c:?} round {round}");
                }
            }
        }
    }
}
