//! Text and HTML parts' bodies, byte for byte what lettre's `Body::new` makes, in
//! linear time.
//!
//! lettre turns bare LFs into CRLF by inserting each `\r` into the string in place,
//! moving the rest of the body every time: quadratic, 280 moves of ~10 KiB for a 20 KiB
//! text of 72-character lines, and in a profile the largest single cost of a 20 KiB
//! submission. Here the line endings are converted in one pass; lettre's pass then finds
//! nothing to insert. The transfer encoding is chosen on the text as given, as lettre
//! does (the chooser counts a line's `\r`, so choosing on the converted text could turn a
//! 74-character line from 7bit into quoted-printable).

use email_encoding::body::Encoding;
use lettre::message::Body;
use lettre::message::header::ContentTransferEncoding;

/// `text` as the body of a MIME part: encoded as lettre's `Body::new(text)` encodes it.
pub(super) fn text_body(text: &str) -> Body {
    let encoding = match Encoding::choose(text, false) {
        Encoding::SevenBit => ContentTransferEncoding::SevenBit,
        Encoding::EightBit => ContentTransferEncoding::EightBit,
        Encoding::QuotedPrintable => ContentTransferEncoding::QuotedPrintable,
        Encoding::Base64 => ContentTransferEncoding::Base64,
    };
    let crlf = crlf_line_endings(text);
    match encoding {
        // Nothing more to do for these: the body is the text with CRLF line endings.
        ContentTransferEncoding::SevenBit | ContentTransferEncoding::EightBit => {
            Body::dangerous_pre_encoded(crlf.into_bytes(), encoding)
        }
        // lettre encodes these itself; any encoding is accepted for such text.
        _ => Body::new_with_encoding(crlf, encoding)
            .unwrap_or_else(|_| unreachable!("quoted-printable and base64 take any text")),
    }
}

/// `text` with a `\r` before every `\n` that lacks one.
fn crlf_line_endings(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 32 + 2);
    let mut from = 0;
    for at in memchr::memchr_iter(b'\n', bytes) {
        out.push_str(&text[from..at]);
        if at == 0 || bytes[at - 1] != b'\r' {
            out.push('\r');
        }
        out.push('\n');
        from = at + 1;
    }
    out.push_str(&text[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lettres(text: &str) -> (ContentTransferEncoding, Vec<u8>) {
        let body = Body::new(text.to_string());
        (body.encoding(), body.into_vec())
    }

    fn ours(text: &str) -> (ContentTransferEncoding, Vec<u8>) {
        let body = text_body(text);
        (body.encoding(), body.into_vec())
    }

    #[test]
    fn bodies_are_lettres_byte_for_byte() {
        let line = |n: usize| "x".repeat(n);
        let cases = [
            String::new(),
            "one line".to_string(),
            "a\nb\nc\n".to_string(),
            "\nstarts with a line feed".to_string(),
            "a\r\nb\r\n".to_string(),
            "mixed\r\nand bare\nendings\r\n\n".to_string(),
            "a lone \r in a line\n".to_string(),
            ".leading dot\n..two\n".to_string(),
            // Around the chooser's limit, with LF and with CRLF endings.
            format!("{}\n{}\n", line(74), line(74)),
            format!("{}\n{}\n", line(75), line(10)),
            format!("{}\r\n{}\r\n", line(73), line(73)),
            format!("{}\r\n", line(74)),
            line(2000),
            "héllo wörld\n".repeat(40),
            format!("{}\nüber\n", line(90)),
            "=3D and = signs\n".to_string(),
        ];
        for text in &cases {
            assert_eq!(ours(text), lettres(text), "for {text:?}");
        }
    }

    #[test]
    fn a_twenty_kib_text_is_converted_once() {
        let text = format!("{}\n", "y".repeat(71)).repeat(285);
        let (encoding, bytes) = ours(&text);
        assert_eq!(encoding, ContentTransferEncoding::SevenBit);
        assert_eq!(bytes.len(), text.len() + 285);
        assert_eq!((encoding, bytes), lettres(&text));
    }

    #[test]
    fn line_endings_gain_a_carriage_return_only_where_missing() {
        assert_eq!(crlf_line_endings("a\nb\r\nc\n"), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf_line_endings("\n"), "\r\n");
        assert_eq!(crlf_line_endings("\r\n\r\n"), "\r\n\r\n");
        assert_eq!(crlf_line_endings("no ending"), "no ending");
        assert_eq!(crlf_line_endings("\r\r\n"), "\r\r\n");
    }
}
