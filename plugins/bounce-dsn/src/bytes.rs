//! Byte search eight bytes at a time. Core's `memchr` reads `usize` words,
//! four bytes on wasm32 (whose integers go to 64 bits natively), and the
//! parser's hot loops look for one byte in short lines (the header fields,
//! the multipart delimiters) or for a few rare letters in the report.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Where the first `needle` is in `hay`.
pub fn find(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap()) ^ pattern;
        // The lowest bit set marks the first zero byte.
        let zero = zero_bytes(word);
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| at + i)
}

/// The bits of the zero bytes of `v`, and maybe of bytes above one (a
/// borrow only runs upwards from a zero byte).
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(LO) & !v & HI
}

/// Where the bytes of `hay` that are one of `letters` (lower-case ASCII)
/// in either case are, in order.
pub fn letters<const N: usize>(hay: &[u8], letters: [u8; N]) -> impl Iterator<Item = usize> {
    let mut base = 0;
    let mut hits = 0u64;
    std::iter::from_fn(move || {
        loop {
            if hits != 0 {
                let at = base - 8 + (hits.trailing_zeros() / 8) as usize;
                hits &= hits - 1;
                // Bytes above a hit may be flagged too, or lie past the end.
                if at < hay.len() && letters.contains(&(hay[at] | 0x20)) {
                    return Some(at);
                }
                continue;
            }
            if base >= hay.len() {
                return None;
            }
            let word = match hay.get(base..base + 8) {
                Some(w) => u64::from_le_bytes(w.try_into().unwrap()),
                None => {
                    let mut w = [0u8; 8];
                    w[..hay.len() - base].copy_from_slice(&hay[base..]);
                    u64::from_le_bytes(w)
                }
            };
            // Setting 0x20 folds ASCII capitals (and no other byte) onto
            // the lower-case letters.
            let word = word | (LO * 0x20);
            hits = letters
                .iter()
                .fold(0, |h, &l| h | zero_bytes(word ^ (LO * u64::from(l))));
            base += 8;
        }
    })
}

/// The end of the line starting at `from` in `text`: where its `\n` is, or
/// the end of the text.
pub fn line_end(text: &str, from: usize) -> usize {
    find(&text.as_bytes()[from..], b'\n').map_or(text.len(), |i| from + i)
}

/// Whether the character at byte `at` of `text` is whitespace
/// (`char::is_whitespace`), and its width.
pub fn space_at(text: &str, at: usize) -> (bool, usize) {
    let b = text.as_bytes()[at];
    if b.is_ascii() {
        (ascii_space(b), 1)
    } else {
        let c = text[at..].chars().next().unwrap_or('x');
        (c.is_whitespace(), c.len_utf8())
    }
}

fn ascii_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

/// `text.trim()`, without decoding ASCII as characters (`str::trim` takes
/// a few dozen instructions even for a field name).
pub fn trim(text: &str) -> &str {
    let b = text.as_bytes();
    let start = b.iter().position(|&c| !ascii_space(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !ascii_space(c))
        .map_or(start, |i| i + 1);
    let t = &text[start..end];
    // A character beyond ASCII at either end may be whitespace too.
    match (t.as_bytes().first(), t.as_bytes().last()) {
        (Some(f), Some(l)) if !f.is_ascii() || !l.is_ascii() => t.trim(),
        _ => t,
    }
}

/// `text.split_whitespace()`, without decoding ASCII as characters.
pub fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at < text.len() {
            let (space, width) = space_at(text, at);
            if !space {
                break;
            }
            at += width;
        }
        let start = at;
        while at < text.len() {
            let (space, width) = space_at(text, at);
            if space {
                break;
            }
            at += width;
        }
        (at > start).then(|| &text[start..at])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bytes_at_every_place() {
        let hay = b"abcdefghijklmnopqrstuvwxyz\xc3\xa9\n";
        for (i, &b) in hay.iter().enumerate() {
            assert_eq!(find(hay, b), Some(i), "{i}");
        }
        assert_eq!(find(hay, b'!'), None);
        assert_eq!(find(b"", b'a'), None);
        // A byte just above the needle must not be taken for it.
        assert_eq!(find(b"\x01\x01\x01\x01\x01\x01\x01\x01\x00", 0), Some(8));
    }

    #[test]
    fn words_like_split_whitespace() {
        for text in [
            "",
            "  ",
            "a",
            " a  b\t\nc ",
            "x\u{a0}y\u{3000} z\u{85}",
            "é ü\x0b!",
        ] {
            let want: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(words(text).collect::<Vec<_>>(), want, "{text:?}");
        }
    }

    #[test]
    fn trims_like_str_trim() {
        for text in [
            "",
            " ",
            "a",
            " a b ",
            "\t\x0b\x0ca\r\n",
            "\u{a0} x \u{3000}",
            "é",
            " \u{85}",
        ] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn letters_in_either_case() {
        let hay = b"aGbDc\x47\x67 zz...................gd@`D";
        let want: Vec<usize> = (0..hay.len())
            .filter(|&i| matches!(hay[i], b'g' | b'G' | b'd' | b'D'))
            .collect();
        assert_eq!(letters(hay, [b'g', b'd']).collect::<Vec<_>>(), want);
        assert_eq!(letters(b"", [b'g']).count(), 0);
    }
}
