//! A phrase set indexed at compile time: which groups of phrases occur in
//! a text, found in one pass over it.
//!
//! Phrases are bucketed by their first two bytes in a `const` table, so no
//! work is done per call (a Wasm call may run in a fresh instance) and each
//! position of the text is compared only with the few phrases that start
//! with its two bytes, and only with those whose first four bytes are
//! there too: a whole comparison is made for likely matches only.

/// Buckets of the first-two-bytes index (6 low bits of each byte).
const BUCKETS: usize = 1 << 12;

const fn bucket(a: u8, b: u8) -> usize {
    ((a as usize & 0x3f) << 6) | (b as usize & 0x3f)
}

/// `N` phrases, each tagged with the bit of its group.
pub struct Index<const N: usize> {
    /// `phrases[start[k]..start[k + 1]]` start with bytes of bucket `k`.
    start: [u16; BUCKETS + 1],
    phrases: [&'static str; N],
    bits: [u64; N],
    /// The first (up to) four bytes of each phrase, little-endian, and the
    /// mask of the bytes it has.
    heads: [(u32, u32); N],
}

/// Up to four bytes of `b` from `at`, little-endian, zeros past its end.
const fn head(b: &[u8], at: usize) -> u32 {
    let mut out = 0u32;
    let mut k = 0;
    while k < 4 && at + k < b.len() {
        out |= (b[at + k] as u32) << (8 * k);
        k += 1;
    }
    out
}

impl<const N: usize> Index<N> {
    /// Indexes `(bit, phrase)` pairs; every phrase has at least two bytes.
    pub const fn new(pairs: &[(u64, &'static str); N]) -> Self {
        assert!(N < u16::MAX as usize);
        let mut start = [0u16; BUCKETS + 1];
        let mut i = 0;
        while i < N {
            let p = pairs[i].1.as_bytes();
            assert!(p.len() >= 2, "a phrase needs two bytes");
            start[bucket(p[0], p[1]) + 1] += 1;
            i += 1;
        }
        let mut k = 1;
        while k <= BUCKETS {
            start[k] += start[k - 1];
            k += 1;
        }
        let mut next = start;
        let mut phrases = [""; N];
        let mut bits = [0u64; N];
        let mut heads = [(0u32, 0u32); N];
        i = 0;
        while i < N {
            let p = pairs[i].1.as_bytes();
            let at = &mut next[bucket(p[0], p[1])];
            phrases[*at as usize] = pairs[i].1;
            bits[*at as usize] = pairs[i].0;
            let mask = if p.len() >= 4 {
                u32::MAX
            } else {
                (1 << (8 * p.len())) - 1
            };
            heads[*at as usize] = (head(p, 0), mask);
            *at += 1;
            i += 1;
        }
        Index {
            start,
            phrases,
            bits,
            heads,
        }
    }

    /// The bits of every group with a phrase somewhere in `text`.
    pub fn groups_in(&self, text: &[u8]) -> u64 {
        let mut found = 0u64;
        for (i, pair) in text.windows(2).enumerate() {
            let k = bucket(pair[0], pair[1]);
            let candidates = self.start[k] as usize..self.start[k + 1] as usize;
            if candidates.is_empty() {
                continue;
            }
            let here = match text.get(i..i + 4) {
                Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                None => head(text, i),
            };
            for at in candidates {
                let bit = self.bits[at];
                let (head, mask) = self.heads[at];
                if found & bit == 0
                    && here & mask == head
                    && text[i..].starts_with(self.phrases[at].as_bytes())
                {
                    found |= bit;
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: Index<3> = Index::new(&[(1, "over quota"), (1, "full"), (2, "no such user")]);

    #[test]
    fn finds_groups_anywhere() {
        assert_eq!(INDEX.groups_in(b"user is over quota"), 1);
        assert_eq!(INDEX.groups_in(b"no such user; box full"), 3);
        assert_eq!(INDEX.groups_in(b"fu"), 0);
        assert_eq!(INDEX.groups_in(b""), 0);
        // Phrases shorter than the four bytes compared first, at the end.
        const SHORT: Index<2> = Index::new(&[(1, "ab"), (2, "xyz")]);
        assert_eq!(SHORT.groups_in(b"ab"), 1);
        assert_eq!(SHORT.groups_in(b"..xyz"), 2);
        assert_eq!(SHORT.groups_in(b"abxy"), 1);
    }
}
