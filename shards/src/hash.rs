//! SplitMix64 hashing: the unit-to-shard rule and the train/test split rule.

/// The standard SplitMix64 finalizer applied to `x + 0x9E3779B97F4A7C15`.
///
/// ```
/// assert_eq!(shards::hash::splitmix64(0), 0xE220A8397B1DCDAF);
/// ```
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shard of a record whose unit hash ([`crate::keys::unit_hash`]) is `unit`:
/// `splitmix64(unit) % num_shards`.
#[inline]
pub fn shard_of(unit: u64, num_shards: u32) -> u32 {
    debug_assert!(num_shards > 0, "num_shards is validated to be positive");
    (splitmix64(unit) % u64::from(num_shards)) as u32
}

/// Whether a record is in the test set, from `u`, its key or with a privacy unit its unit's
/// hash: `splitmix64(u ^ splitmix64(split_seed))` falls below `test_fraction * 2^64`.
/// Independent of engine, shard count and every other unit.
#[inline]
pub fn is_test(u: u64, split_seed: u64, test_fraction: f64) -> bool {
    if test_fraction >= 1.0 {
        return true;
    }
    if test_fraction <= 0.0 || test_fraction.is_nan() {
        return false;
    }
    // Exact for fractions whose product with 2^64 is representable; monotone in the fraction.
    let threshold = (test_fraction * 18_446_744_073_709_551_616.0) as u64;
    splitmix64(u ^ splitmix64(split_seed)) < threshold
}

/// The microbatch of the record with key `key` out of `count` (the trainer's `--microbatch`
/// groups): a hash of the key alone, so adding or removing a record moves no other record
/// between groups.
#[inline]
pub fn microbatch_of(key: u64, count: u32) -> u32 {
    debug_assert!(count > 0, "there is at least one microbatch");
    (splitmix64(key ^ 0x6d69_6372_6f62_6174) % u64::from(count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference outputs of SplitMix64 seeded with 0 (Vigna's `splitmix64.c`: the state
    /// advances by the golden gamma before mixing, so successive outputs are
    /// `splitmix64(k * gamma)` for k = 0, 1, 2).
    #[test]
    fn matches_reference_sequence() {
        let gamma = 0x9E37_79B9_7F4A_7C15u64;
        let expected = [
            0xE220_A839_7B1D_CDAF,
            0x6E78_9E6A_A1B9_65F4,
            0x06C4_5D18_8009_454F,
        ];
        for (k, want) in expected.into_iter().enumerate() {
            assert_eq!(splitmix64(gamma.wrapping_mul(k as u64)), want, "output {k}");
        }
    }

    #[test]
    fn shard_is_in_range_and_spread() {
        let mut counts = [0u32; 16];
        for offset in 0..160_000u64 {
            counts[shard_of(offset * 37, 16) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "unbalanced shard count {c}");
        }
    }

    #[test]
    fn test_fraction_is_respected() {
        let n = 200_000u64;
        let hits = (0..n).filter(|&o| is_test(o * 25, 7, 0.2)).count() as f64;
        assert!(
            (hits / n as f64 - 0.2).abs() < 0.005,
            "rate {}",
            hits / n as f64
        );
        assert!((0..1000).all(|o| is_test(o, 1, 1.0)));
        assert!((0..1000).all(|o| !is_test(o, 1, 0.0)));
        // A different seed gives a different split.
        assert!((0..1000u64).any(|o| is_test(o, 1, 0.5) != is_test(o, 2, 0.5)));
    }
}
