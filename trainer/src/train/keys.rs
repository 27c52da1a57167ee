//! The run's keys ([`Keys`]): the sampler's and the initialisation's, from `--seed` (the
//! sampler's mixed with the run's settings), or drawn from the OS by worker 0 and handed to the
//! others ([`SecretKeys`]), written nowhere.

use rand::rngs::SysRng;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::peers::Peers;
use crate::settings::Settings;
use crate::{Error, Result};

/// Where the sampler's randomness comes from: the run's seed mixed with its settings
/// ([`Settings::sampler_seed`]), or (the default) a secret key drawn from the OS by worker 0
/// and shared with the others, so all draw the same sample.
#[derive(Debug, Clone, Copy)]
pub(super) enum SamplerKey {
    Seed(u64),
    Secret([u8; 32]),
}

impl SamplerKey {
    /// The sampler's random stream for `epoch`: stream `epoch + 1` of the key (stream 0 of the
    /// seed initialises the model). Per-epoch streams make a resumed run draw exactly the
    /// batches an uninterrupted one would.
    pub fn rng(self, epoch: u32) -> ChaCha20Rng {
        let mut rng = match self {
            SamplerKey::Seed(seed) => ChaCha20Rng::seed_from_u64(seed),
            SamplerKey::Secret(key) => ChaCha20Rng::from_seed(key),
        };
        rng.set_stream(u64::from(epoch) + 1);
        rng
    }
}

/// The keys worker 0 draws from the OS and hands to the others when there is no seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SecretKeys {
    /// The sampler's ChaCha20 key.
    pub sampler: [u8; 32],
    /// The model's initialisation seed.
    pub init_seed: u64,
}

impl SecretKeys {
    /// Fresh keys from the OS's CSPRNG.
    fn draw() -> Result<Self> {
        let mut os = ChaCha20Rng::try_from_rng(&mut SysRng)
            .map_err(|e| Error::Config(format!("no OS entropy for the run's keys: {e}")))?;
        Ok(Self::from_words(std::array::from_fn(|_| os.next_u64())))
    }

    /// As five words for the exchange: the sampler's key (little-endian), then the seed.
    pub fn to_words(self) -> [u64; 5] {
        let mut words = [0u64; 5];
        for (w, chunk) in words.iter_mut().zip(self.sampler.chunks_exact(8)) {
            *w = u64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes"));
        }
        words[4] = self.init_seed;
        words
    }

    /// From [`SecretKeys::to_words`]'s layout.
    pub fn from_words(words: [u64; 5]) -> Self {
        let mut sampler = [0u8; 32];
        for (chunk, w) in sampler.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        SecretKeys {
            sampler,
            init_seed: words[4],
        }
    }
}

/// The sampler's key and the initialisation's seed, the same on every worker.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keys {
    pub sampler: SamplerKey,
    pub init_seed: u64,
}

impl Keys {
    /// From `seed` (the sampler's mixed with the run's `settings`, so that seeded runs with
    /// other settings draw independent batches), or from the OS (worker 0 draws them and sends
    /// them to the others).
    pub fn exchange(seed: Option<u64>, settings: &Settings, peers: &mut Peers) -> Result<Self> {
        if let Some(seed) = seed {
            return Ok(Keys {
                sampler: SamplerKey::Seed(settings.sampler_seed(seed)),
                init_seed: seed,
            });
        }
        let mut words = [0u64; 5];
        if peers.lead() {
            words = SecretKeys::draw()?.to_words();
        }
        peers.broadcast_counts(&mut words)?;
        let keys = SecretKeys::from_words(words);
        Ok(Keys {
            sampler: SamplerKey::Secret(keys.sampler),
            init_seed: keys.init_seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words worker 0 sends are the keys every worker gets back, byte for byte.
    #[test]
    fn secret_keys_round_trip_through_their_words() {
        let words = [1, u64::MAX, 0x0102_0304_0506_0708, 0, 42];
        let keys = SecretKeys::from_words(words);
        assert_eq!(keys.to_words(), words);
        assert_eq!(keys.sampler[16..24], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(keys.init_seed, 42);
        let drawn = SecretKeys::draw().unwrap();
        assert_eq!(SecretKeys::from_words(drawn.to_words()), drawn);
    }
}
