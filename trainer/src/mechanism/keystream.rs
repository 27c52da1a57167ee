//! The cryptographic streams the noise's Gaussian draws read their 32-bit words from: AES-256 in
//! counter mode (the default, hardware AES where the CPU has it) or ChaCha20 (the stream of
//! issues 10-26, kept as the reference the seeded tests and the epoch example compare with).
//!
//! Both are keyed with 256 bits and addressed by a 64-bit stream number and a position, so a
//! seeded run can restart a block's stream at the start of each epoch. Why AES-CTR is as good a
//! source for the noise as ChaCha20: docs/design.md, "The noise's keystream".

use aes::Aes256;
use ctr::Ctr64BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::rngs::SysRng;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::{Error, Result};

/// Which cipher's keystream a noise source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-CTR: the 16-byte counter block is the 64-bit stream number (big-endian), then a
    /// 64-bit block counter from 0; words are the keystream's bytes read as little-endian `u32`.
    Aes256Ctr,
    /// ChaCha20 (`rand_chacha`), the stream number its 64-bit stream and the word position its
    /// position.
    ChaCha20,
}

/// A source of uniformly random 32-bit words.
pub trait Words {
    /// Fills `out` with the stream's next words.
    fn fill_words(&mut self, out: &mut [u32]);
}

impl Words for ChaCha20Rng {
    fn fill_words(&mut self, out: &mut [u32]) {
        self.fill(out);
    }
}

/// AES-256-CTR keyed once, positioned at a stream's start by [`AesCtr::restart`].
pub struct AesCtr {
    key: [u8; 32],
    cipher: Ctr64BE<Aes256>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for AesCtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("AesCtr").finish_non_exhaustive()
    }
}

impl AesCtr {
    /// The keystream of `key` at the start of stream `stream`.
    pub fn new(key: [u8; 32], stream: u64) -> Self {
        AesCtr {
            cipher: Ctr64BE::<Aes256>::new(&key.into(), &Self::iv(stream).into()),
            key,
            bytes: Vec::new(),
        }
    }

    fn iv(stream: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&stream.to_be_bytes());
        iv
    }

    /// Moves to the start of stream `stream`.
    pub fn restart(&mut self, stream: u64) {
        self.cipher = Ctr64BE::<Aes256>::new(&self.key.into(), &Self::iv(stream).into());
    }
}

impl Words for AesCtr {
    fn fill_words(&mut self, out: &mut [u32]) {
        self.bytes.clear();
        self.bytes.resize(out.len() * 4, 0);
        self.cipher.apply_keystream(&mut self.bytes);
        for (w, b) in out.iter_mut().zip(self.bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes(b.try_into().expect("chunks of four"));
        }
    }
}

/// One block's keystream, of either cipher.
#[derive(Debug)]
pub enum Keystream {
    /// [`Cipher::Aes256Ctr`].
    Aes(Box<AesCtr>),
    /// [`Cipher::ChaCha20`].
    ChaCha(Box<ChaCha20Rng>),
}

impl Keystream {
    /// The keystream of `cipher` keyed from the 64-bit `seed`, at the start of stream
    /// `stream`: ChaCha20 keyed by `rand`'s `seed_from_u64`, AES by the first 32 bytes of that
    /// ChaCha20 key's stream `u64::MAX` (a stream no noise block uses).
    pub fn seeded(cipher: Cipher, seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        match cipher {
            Cipher::ChaCha20 => {
                rng.set_stream(stream);
                Keystream::ChaCha(Box::new(rng))
            }
            Cipher::Aes256Ctr => {
                rng.set_stream(u64::MAX);
                let mut key = [0u8; 32];
                rng.fill(&mut key[..]);
                Keystream::Aes(Box::new(AesCtr::new(key, stream)))
            }
        }
    }

    /// The keystream of `cipher` with a fresh key from the operating system (never replayed;
    /// the key never leaves this process).
    pub fn from_os(cipher: Cipher) -> Result<Self> {
        let no_entropy = |e| Error::Config(format!("no OS entropy for the noise's key: {e}"));
        Ok(match cipher {
            Cipher::ChaCha20 => Keystream::ChaCha(Box::new(
                ChaCha20Rng::try_from_rng(&mut SysRng).map_err(no_entropy)?,
            )),
            Cipher::Aes256Ctr => {
                let mut kdf = ChaCha20Rng::try_from_rng(&mut SysRng).map_err(no_entropy)?;
                let mut key = [0u8; 32];
                kdf.fill(&mut key[..]);
                Keystream::Aes(Box::new(AesCtr::new(key, 0)))
            }
        })
    }

    /// Moves to the start of stream `stream` (a seeded run's epoch and block).
    pub fn restart(&mut self, stream: u64) {
        match self {
            Keystream::Aes(a) => a.restart(stream),
            Keystream::ChaCha(c) => {
                c.set_stream(stream);
                c.set_word_pos(0);
            }
        }
    }
}

impl Words for Keystream {
    #[inline]
    fn fill_words(&mut self, out: &mut [u32]) {
        match self {
            Keystream::Aes(a) => a.fill_words(out),
            Keystream::ChaCha(c) => c.fill_words(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use aes::cipher::{BlockEncrypt, KeyInit};

    use super::*;

    /// The words are AES-256 of the counter blocks `stream || i` (FIPS-197's cipher, checked
    /// here through the block API), little-endian, and a restart replays a stream.
    #[test]
    fn aes_words_are_the_encrypted_counter_blocks() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let mut ks = AesCtr::new(key, 5);
        let mut words = vec![0u32; 4 * 40];
        ks.fill_words(&mut words[..12]);
        ks.fill_words(&mut words[12..]);
        let aes = Aes256::new(&key.into());
        for i in 0..40u64 {
            let mut block = [0u8; 16];
            block[..8].copy_from_slice(&5u64.to_be_bytes());
            block[8..].copy_from_slice(&i.to_be_bytes());
            let mut b = block.into();
            aes.encrypt_block(&mut b);
            for w in 0..4 {
                let want = u32::from_le_bytes(b[4 * w..4 * w + 4].try_into().unwrap());
                assert_eq!(words[4 * i as usize + w], want, "block {i} word {w}");
            }
        }
        ks.restart(5);
        let mut again = vec![0u32; 4 * 40];
        ks.fill_words(&mut again);
        assert_eq!(again, words);
        ks.restart(6);
        ks.fill_words(&mut again);
        assert_ne!(again[..4], words[..4]);
    }

    /// FIPS-197 appendix C.3's AES-256 example, so the cipher under the stream is AES-256.
    #[test]
    fn aes_is_fips_197() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let plain: [u8; 16] = std::array::from_fn(|i| (i as u8) * 0x11);
        let mut b = plain.into();
        Aes256::new(&key.into()).encrypt_block(&mut b);
        let want = [
            0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf, 0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49,
            0x60, 0x89,
        ];
        assert_eq!(b[..], want[..]);
    }

    #[test]
    fn seeded_streams_repeat_and_differ_by_seed_stream_and_cipher() {
        let words = |cipher, seed, stream| {
            let mut k = Keystream::seeded(cipher, seed, stream);
            let mut w = vec![0u32; 64];
            k.fill_words(&mut w);
            w
        };
        for cipher in [Cipher::Aes256Ctr, Cipher::ChaCha20] {
            assert_eq!(words(cipher, 1, 2), words(cipher, 1, 2));
            assert_ne!(words(cipher, 1, 2), words(cipher, 1, 3));
            assert_ne!(words(cipher, 1, 2), words(cipher, 2, 2));
        }
        assert_ne!(
            words(Cipher::Aes256Ctr, 1, 2),
            words(Cipher::ChaCha20, 1, 2)
        );
        // ChaCha20's is rand_chacha's stream as before.
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        rng.set_stream(2);
        let mut want = vec![0u32; 64];
        rng.fill(&mut want[..]);
        assert_eq!(words(Cipher::ChaCha20, 1, 2), want);
    }
}
