//! A phrase set indexed at compile time: which groups of phrases occur in
//! a text, found in one pass over it.
//!
//! Phrases are bucketed in a `const` table, so no work is done per call (a
//! Wasm call may run in a fresh instance): those of four bytes or more by a
//! hash of their first four, the few shorter ones by their first. Each place
//! of the text is compared only with the phrases of its buckets, and then
//! whole only when their first (up to) four bytes are there.

/// Buckets of the four-byte hash; the first byte of a shorter phrase adds
/// 256 more.
const BUCKETS: usize = 1 << 12;
const ALL_BUCKETS: usize = BUCKETS + 256;

/// The bucket of a phrase of four bytes or more: a hash of those four.
const fn long_key(head: u32) -> usize {
    (head.wrapping_mul(0x9e37_79b1) >> 20) as usize
}

/// The bucket of a shorter phrase: its first byte.
const fn short_key(first: u8) -> usize {
    BUCKETS + first as usize
}

const fn key(p: &[u8]) -> usize {
    if p.len() >= 4 {
        long_key(head(p, 0))
    } else {
        short_key(p[0])
    }
}

/// `N` phrases, each tagged with the bit of its group.
pub struct Index<const N: usize> {
    /// `phrases[start[k]..start[k + 1]]` are the phrases of bucket `k`.
    start: [u16; ALL_BUCKETS + 1],
    /// Whether any phrase is shorter than four bytes.
    short: bool,
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
        let mut start = [0u16; ALL_BUCKETS + 1];
        let mut short = false;
        let mut i = 0;
        while i < N {
            let p = pairs[i].1.as_bytes();
            assert!(p.len() >= 2, "a phrase needs two bytes");
            short |= p.len() < 4;
            start[key(p) + 1] += 1;
            i += 1;
        }
        let mut k = 1;
        while k <= ALL_BUCKETS {
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
            let at = &mut next[key(p)];
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
            short,
            phrases,
            bits,
            heads,
        }
    }

    /// The bits of every group with a phrase somewhere in `text`.
    pub fn groups_in(&self, text: &[u8]) -> u64 {
        let mut found = 0u64;
        for (i, pair) in text.windows(2).enumerate() {
            let here = match text.get(i..i + 4) {
                Some(w) => {
                    let here = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                    found |= self.found_at(long_key(here), here, &text[i..], found);
                    here
                }
                None => head(text, i),
            };
            if self.short {
                found |= self.found_at(short_key(pair[0]), here, &text[i..], found);
            }
        }
        found
    }

    /// The groups, not in `found` yet, of the phrases of bucket `k` that
    /// `text` starts with (`here`: its first four bytes).
    fn found_at(&self, k: usize, here: u32, text: &[u8], found: u64) -> u64 {
        let mut more = 0;
        for at in self.start[k] as usize..self.start[k + 1] as usize {
            let bit = self.bits[at];
            let (head, mask) = self.heads[at];
            if (found | more) & bit == 0
                && here & mask == head
                && text.starts_with(self.phrases[at].as_bytes())
            {
                more |= bit;
            }
        }
        more
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
