//! Train/val/test assignment that is a pure function of a key and the seed, so every dataset
//! built with the same seed puts the same sentence (or image) in the same split, and no key can
//! ever land in two.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// Fractions of keys that go to val and test; the rest is train.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fractions {
    pub val: f64,
    pub test: f64,
}

impl Default for Fractions {
    fn default() -> Self {
        Fractions {
            val: 0.1,
            test: 0.1,
        }
    }
}

impl Fractions {
    /// The split of `key`: a seeded 64-bit hash mapped to `[0, 1)`.
    pub fn split_of(&self, seed: u64, key: &[u8]) -> Split {
        let u = (stable_hash(seed, key) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.test {
            Split::Test
        } else if u < self.test + self.val {
            Split::Val
        } else {
            Split::Train
        }
    }
}

/// FNV-1a over the seed and the key, then a SplitMix64 finaliser: stable across platforms,
/// releases and thread counts (unlike `std`'s hasher).
pub fn stable_hash(seed: u64, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_roughly_honoured_and_stable() {
        let f = Fractions {
            val: 0.2,
            test: 0.1,
        };
        let mut counts = [0usize; 3];
        for i in 0..10_000u32 {
            let s = f.split_of(7, &i.to_le_bytes());
            assert_eq!(s, f.split_of(7, &i.to_le_bytes()));
            counts[s as usize] += 1;
        }
        assert!((6700..7300).contains(&counts[0]), "{counts:?}");
        assert!((1800..2200).contains(&counts[1]), "{counts:?}");
        assert!((800..1200).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn another_seed_gives_another_assignment() {
        let f = Fractions::default();
        let differ = (0..1000u32)
            .filter(|i| f.split_of(1, &i.to_le_bytes()) != f.split_of(2, &i.to_le_bytes()))
            .count();
        assert!(differ > 100, "{differ}");
    }
}
