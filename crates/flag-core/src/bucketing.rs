//! Percentage rollouts, bucketed exactly as flagd's `fractional` operator (v2) does.
//!
//! A user keeps their bucket when a team migrates from flagd: MurmurHash3 x86 32-bit with seed 0
//! over the UTF-8 bytes of `flagKey + targetingKey` (no separator), then
//! `bucket = (hash as u64 * total_weight) >> 32`, and the first variant whose cumulative weight
//! exceeds the bucket wins. The test vectors below come from flagd's shared testbed
//! (`evaluator/gherkin/fractional.feature`, `@fractional-v2`).

use crate::flag::Rollout;

/// MurmurHash3, x86 32-bit variant (Austin Appleby's reference `MurmurHash3_x86_32`).
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;

    fn mix(k: u32) -> u32 {
        k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
    }

    let mut hash = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        hash ^= mix(k);
        hash = hash
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail
            .iter()
            .rev()
            .fold(0u32, |k, &byte| (k << 8) | u32::from(byte));
        hash ^= mix(k);
    }
    // The reference folds in the length as a 32-bit value.
    hash ^= data.len() as u32;
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^= hash >> 16;
    hash
}

/// The bucket in `0..total_weight` that `hash_input` falls in.
pub fn bucket(hash_input: &[u8], total_weight: u64) -> u64 {
    (u64::from(murmur3_x86_32(hash_input, 0)) * total_weight) >> 32
}

/// Where a user falls in a rollout: the hash of flag key and bucketing value, and the entry
/// (slot) of the rollout it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// MurmurHash3 of the flag key followed by the bucketing value.
    pub(crate) hash: u32,
    /// The index of the chosen entry; `None` only for an empty rollout (which validation never
    /// lets a flag hold).
    pub(crate) slot: Option<usize>,
}

impl Placement {
    /// The bucket as flagd shows it, a percentage from 0 to 99.99 (two decimals, rounded down).
    pub(crate) fn percent(self) -> f64 {
        // Exact in integers first: (hash / 2^32) of 10,000 hundredths.
        let hundredths = (u64::from(self.hash) * 10_000) >> 32;
        hundredths as f64 / 100.0
    }
}

/// Where the user `targeting_key` falls in `rollout` for the flag `flag_key`.
pub(crate) fn place(rollout: &Rollout, flag_key: &str, targeting_key: &str) -> Placement {
    let mut input = Vec::with_capacity(flag_key.len() + targeting_key.len());
    input.extend_from_slice(flag_key.as_bytes());
    input.extend_from_slice(targeting_key.as_bytes());
    let hash = murmur3_x86_32(&input, 0);
    let bucket = (u64::from(hash) * rollout.total_weight()) >> 32;
    let mut cumulative = 0u64;
    let slot = rollout.entries().iter().position(|entry| {
        cumulative += u64::from(entry.weight());
        bucket < cumulative
    });
    Placement { hash, slot }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Keys that flagd's testbed found by exhaustive search to hash to boundary values.
    #[rstest]
    #[case("ejOoVL", 0)]
    #[case("bY9fO-", 1)]
    #[case("SI7p-", 2_147_483_647)]
    #[case("6LvT0", 2_147_483_648)]
    #[case("ceQdGm", 4_294_967_295)]
    fn murmur3_matches_flagd_boundary_preimages(#[case] input: &str, #[case] expected: u32) {
        assert_eq!(murmur3_x86_32(input.as_bytes(), 0), expected);
    }

    /// Published reference values of MurmurHash3_x86_32 (SMHasher), covering every tail length.
    #[rstest]
    #[case(b"", 0, 0)]
    #[case(b"", 1, 0x514e_28b7)]
    #[case(b"", 0xffff_ffff, 0x81f1_6f39)]
    #[case(b"\0\0\0\0", 0, 0x2362_f9de)]
    #[case(b"aaaa", 0x9747_b28c, 0x5a97_808a)]
    #[case(b"aaa", 0x9747_b28c, 0x283e_0130)]
    #[case(b"aa", 0x9747_b28c, 0x5d21_1726)]
    #[case(b"a", 0x9747_b28c, 0x7fa0_9ea6)]
    #[case(b"Hello, world!", 0x9747_b28c, 0x2488_4cba)]
    #[case(
        b"The quick brown fox jumps over the lazy dog",
        0x9747_b28c,
        0x2fa8_26cd
    )]
    fn murmur3_matches_reference_vectors(
        #[case] input: &[u8],
        #[case] seed: u32,
        #[case] expected: u32,
    ) {
        assert_eq!(murmur3_x86_32(input, seed), expected);
    }

    /// flagd's boundary vectors, through the bucket formula with a total weight of 100
    /// (`lower` 50 / `upper` 50 in the testbed's `fractional-hash-edge-flag`).
    #[rstest]
    #[case("ejOoVL", 0)]
    #[case("bY9fO-", 0)]
    #[case("SI7p-", 49)]
    #[case("6LvT0", 50)]
    #[case("ceQdGm", 99)]
    fn bucket_of_boundary_hashes(#[case] input: &str, #[case] expected: u64) {
        assert_eq!(bucket(input.as_bytes(), 100), expected);
    }

    /// The testbed comment: `jon@company.com` falls in bucket 36 of 100, `user1` in 76.
    #[test]
    fn bucket_of_testbed_targeting_keys() {
        assert_eq!(bucket(b"jon@company.com", 100), 36);
        assert_eq!(bucket(b"user1", 100), 76);
    }
}
