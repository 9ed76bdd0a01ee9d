//! Byte search eight bytes at a time. Core's `memchr` reads `usize` words,
//! four bytes on wasm32 (whose integers go to 64 bits natively), and the
//! parser's hot loops look for one byte in short lines: the header fields,
//! the multipart delimiters and the report's lines.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Where the first `needle` is in `hay`.
pub fn find(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap()) ^ pattern;
        // The lowest high bit set marks the first zero byte (a borrow only
        // runs upwards from one).
        let zero = word.wrapping_sub(LO) & !word & HI;
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

/// The end of the line starting at `from` in `text`: where its `\n` is, or
/// the end of the text.
pub fn line_end(text: &str, from: usize) -> usize {
    find(&text.as_bytes()[from..], b'\n').map_or(text.len(), |i| from + i)
}

/// `text.split_inclusive('\n')`, searched as [`find`] does.
pub fn lines_inclusive(text: &str) -> impl Iterator<Item = &str> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let start = pos;
        pos = (line_end(text, pos) + 1).min(text.len());
        Some(&text[start..pos])
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
    fn lines_like_split_inclusive() {
        for text in [
            "",
            "a",
            "a\n",
            "a\n\nb",
            "\n\n",
            "long line of text\nshort\n",
        ] {
            let want: Vec<&str> = text.split_inclusive('\n').collect();
            assert_eq!(lines_inclusive(text).collect::<Vec<_>>(), want, "{text:?}");
        }
    }
}
