//! Just enough MIME to read a bounce: line endings normalised, headers
//! unfolded (encoded-words decoded), multipart bodies split by boundary,
//! quoted-printable and base64 parts decoded, and every charset read as
//! lossy UTF-8 (a bounce's telling parts are ASCII; the rest only has to
//! survive).
//!
//! Zero-copy where it can be: field names and values and part bodies
//! borrow the e-mail's text, and only an unfolded value or a decoded body
//! is a string of its own (allocation is dear, the more so in Wasm).

use crate::bytes;
use std::borrow::Cow;
use std::cell::OnceCell;

/// Decodes bytes as UTF-8 (lossy) and turns CRLF and lone CR into LF.
pub fn normalize(bytes: &[u8]) -> Cow<'_, str> {
    // `from_utf8` checks valid text much faster than the lossy decoder.
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    if bytes::find(text.as_bytes(), b'\r').is_none() {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(at) = bytes::find(rest.as_bytes(), b'\r') {
        out.push_str(&rest[..at]);
        out.push('\n');
        let after = &rest[at + 1..];
        rest = after.strip_prefix('\n').unwrap_or(after);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// One `name: value` header field.
#[derive(Debug, Clone)]
pub struct Field<'a> {
    /// As written: compare it without regard to ASCII case.
    pub name: Cow<'a, str>,
    /// The trimmed value, or when `folded` its lines as written.
    raw: Cow<'a, str>,
    folded: bool,
    /// A folded value unfolded, on first read: most folded fields
    /// (`Received`, `DKIM-Signature`) are never read.
    unfolded: OnceCell<String>,
}

impl Field<'_> {
    /// The value, unfolded and trimmed.
    pub fn value(&self) -> &str {
        if !self.folded {
            return &self.raw;
        }
        self.unfolded.get_or_init(|| {
            let mut lines = self.raw.split('\n');
            let mut value = bytes::trim(lines.next().unwrap_or("")).to_owned();
            for l in lines {
                if l.starts_with([' ', '\t']) {
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(bytes::trim(l));
                } else if l.contains('=') {
                    // A parameter line that lost its indentation; the
                    // other lines [`parse_fields_where`] left out.
                    value.push(' ');
                    value.push_str(bytes::trim(l));
                }
            }
            value
        })
    }

    /// The value as written, continuation lines and all (trimmed when it
    /// has none).
    pub fn written(&self) -> &str {
        &self.raw
    }

    fn into_owned(self) -> Field<'static> {
        Field {
            name: Cow::Owned(self.name.into_owned()),
            raw: Cow::Owned(self.raw.into_owned()),
            folded: self.folded,
            unfolded: self.unfolded,
        }
    }
}

/// Header fields in their order.
pub type Fields<'a> = Vec<Field<'a>>;

/// `fields` owning their text, to outlive what they were read from.
pub fn owned_fields(fields: Fields<'_>) -> Fields<'static> {
    fields.into_iter().map(Field::into_owned).collect()
}

/// Parses header fields up to the first blank line; returns them and the rest.
pub fn parse_fields(text: &str) -> (Fields<'_>, &str) {
    parse_fields_where(text, |_| true)
}

/// [`parse_fields`] keeping only the fields whose (trimmed) name `keep`
/// accepts: the others, and their continuation lines, are skipped.
pub fn parse_fields_where(text: &str, mut keep: impl FnMut(&str) -> bool) -> (Fields<'_>, &str) {
    let mut fields: Fields = Vec::new();
    let mut pos = 0;
    // Where the value of the last field kept starts.
    let mut value_at = 0;
    // The last field was dropped: its continuation lines go with it.
    let mut dropped = false;
    while pos < text.len() {
        let start = pos;
        let end = bytes::line_end(text, pos);
        let l = &text[pos..end];
        pos = (end + 1).min(text.len());
        // Most lines start with a visible ASCII byte: no need to trim them.
        let first = l.as_bytes().first().copied().unwrap_or(b' ');
        if (first <= b' ' || !first.is_ascii()) && bytes::trim(l).is_empty() {
            return (fields, &text[pos..]);
        }
        // A line that continues the last field kept: its value now runs
        // to the end of this line (unfolded when read).
        let continues = if first == b' ' || first == b'\t' {
            !dropped
        } else {
            // Names are short: a byte loop beats a search for the colon.
            let name = l
                .bytes()
                .position(|b| b == b':')
                .map(|c| (bytes::trim(&l[..c]), c));
            match name {
                Some((name, colon))
                    if !name.is_empty() && !name.bytes().any(|b| b == b' ' || b == b'=') =>
                {
                    dropped = !keep(name);
                    if !dropped {
                        // A header has a score of fields or so: the list
                        // grows from 16, not from 4.
                        if fields.is_empty() {
                            fields.reserve(16);
                        }
                        value_at = start + colon + 1;
                        fields.push(Field {
                            name: name.into(),
                            raw: bytes::trim(&l[colon + 1..]).into(),
                            folded: false,
                            unfolded: OnceCell::new(),
                        });
                    }
                    false
                }
                // A parameter line that lost its indentation (`boundary=...`).
                _ => !dropped && l.contains('='),
            }
        };
        if continues && let Some(last) = fields.last_mut() {
            last.raw = text[value_at..end].into();
            last.folded = true;
        }
    }
    (fields, "")
}

/// The first field called `name` (lower case; any case in `fields`).
pub fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(Field::value)
}

/// One MIME entity, borrowing the text it was read from.
#[derive(Debug, Default)]
pub struct Part<'a> {
    pub headers: Fields<'a>,
    /// Lower-case media type, `text/plain` when absent.
    pub content_type: Cow<'a, str>,
    /// The decoded body (leaves only).
    pub body: Cow<'a, str>,
    pub children: Vec<Part<'a>>,
}

/// A leaf of the tree with where it sits.
#[derive(Debug)]
pub struct Leaf<'p, 'a> {
    pub part: &'p Part<'a>,
    /// Inside a returned message (`message/rfc822`, `text/rfc822-headers`).
    pub returned: bool,
}

/// The fields of a returned message anything reads.
pub const RETURNED_FIELDS: &[&str] = &[
    "message-id",
    "to",
    "from",
    "return-path",
    "envelope-to",
    "x-original-to",
    "x-hmxmroriginalrecipient",
    "content-type",
    "subject",
];

/// Deep multiparts are not worth following (and bound the work).
const MAX_DEPTH: usize = 8;

/// The lower-case media type of a `Content-Type` value, `text/plain` when
/// it names none; the usual types are not copied.
fn media_type(value: &str) -> Cow<'static, str> {
    const COMMON: &[&str] = &[
        "text/plain",
        "text/html",
        "multipart/report",
        "multipart/mixed",
        "multipart/alternative",
        "message/delivery-status",
        "message/rfc822",
        "text/rfc822-headers",
        "message/feedback-report",
    ];
    let t = value.split(';').next().unwrap_or("").trim();
    if t.is_empty() {
        return Cow::Borrowed("text/plain");
    }
    match COMMON.iter().find(|c| c.eq_ignore_ascii_case(t)) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(t.to_ascii_lowercase()),
    }
}

impl<'a> Part<'a> {
    pub fn parse(text: &'a str) -> Part<'a> {
        Part::parse_at(text, 0)
    }

    /// A returned message: only its headers matter (Message-ID, To), so
    /// its body, often the largest part, is neither split nor decoded.
    fn returned(text: &'a str) -> Part<'a> {
        let (headers, _) = parse_fields_where(text, |name| {
            RETURNED_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
        });
        let content_type = media_type(field(&headers, "content-type").unwrap_or(""));
        Part {
            headers,
            content_type,
            ..Part::default()
        }
    }

    /// The part inside a `message/*` part, whose decoded body is `inner`.
    fn inner(inner: &'a str, depth: usize) -> Part<'a> {
        let inner = inner.trim_start_matches('\n');
        let child = Part::returned(inner);
        // A forwarded bounce carries the report inside: read it all.
        if child.content_type == "multipart/report" {
            Part::parse_at(inner, depth + 1)
        } else {
            child
        }
    }

    /// The part owning all its text (for one read from decoded text).
    fn into_owned(self) -> Part<'static> {
        Part {
            headers: owned_fields(self.headers),
            content_type: Cow::Owned(self.content_type.into_owned()),
            body: Cow::Owned(self.body.into_owned()),
            children: self.children.into_iter().map(Part::into_owned).collect(),
        }
    }

    fn parse_at(text: &'a str, depth: usize) -> Part<'a> {
        let (headers, body) = parse_fields(text);
        let raw_type = field(&headers, "content-type").unwrap_or("text/plain");
        let mut part = Part {
            content_type: media_type(raw_type),
            ..Part::default()
        };
        if depth < MAX_DEPTH {
            if part.content_type.starts_with("multipart/") {
                let mut pieces = param(raw_type, "boundary")
                    .map(|b| split_multipart(body, &b))
                    .unwrap_or_default();
                // Some MTAs declare one boundary and use another: take the
                // first "--token" line that comes back later.
                if pieces.is_empty()
                    && let Some(b) = guess_boundary(body)
                {
                    pieces = split_multipart(body, b);
                }
                part.children = pieces
                    .into_iter()
                    .map(|c| Part::parse_at(c, depth + 1))
                    .collect();
                // A "multipart" without parts is read as the text it is.
                if part.children.is_empty() {
                    part.content_type = "text/plain".into();
                }
            } else if part.content_type == "message/rfc822" || part.content_type == "message/global"
            {
                part.children = vec![match decode_body(&headers, body) {
                    Cow::Borrowed(inner) => Part::inner(inner, depth),
                    Cow::Owned(inner) => Part::inner(&inner, depth).into_owned(),
                }];
            }
        }
        // Only text says anything about a bounce: images and other
        // attachments are not decoded.
        let readable = part.content_type.starts_with("text/")
            || part.content_type.starts_with("message/")
            || part.content_type.starts_with("multipart/");
        if part.children.is_empty() && readable {
            part.body = decode_body(&headers, body);
        }
        part.headers = headers;
        part
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        field(&self.headers, name)
    }

    /// Every leaf, depth first, marked when it belongs to a returned message.
    pub fn leaves(&self) -> Vec<Leaf<'_, 'a>> {
        let mut out = Vec::new();
        self.collect(false, &mut out, true);
        out
    }

    fn collect<'p>(&'p self, returned: bool, out: &mut Vec<Leaf<'p, 'a>>, top: bool) {
        let inner_returned = returned
            || (!top
                && (self.content_type == "message/rfc822"
                    || self.content_type == "message/global"
                    || self.content_type == "text/rfc822-headers"
                    || self.content_type == "text/rfc822-header"
                    || self.content_type == "message/rfc822-headers"));
        if self.children.is_empty() {
            out.push(Leaf {
                part: self,
                returned: inner_returned,
            });
        }
        for c in &self.children {
            c.collect(inner_returned, out, false);
        }
    }
}

/// A parameter of a structured header value (`boundary`, `charset`, ...).
pub fn param(value: &str, name: &str) -> Option<String> {
    let lower = value.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || matches!(lower.as_bytes()[at - 1], b';' | b' ' | b'\t');
        let rest = lower[from..].trim_start();
        if !before_ok || !rest.starts_with('=') {
            continue;
        }
        let start = value.len() - rest.len() + 1;
        let raw = value[start..].trim_start();
        let v = match raw.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or(""),
            None => raw.split([';', ' ', '\t']).next().unwrap_or(""),
        };
        return (!v.is_empty()).then(|| v.to_owned());
    }
    None
}

fn guess_boundary(body: &str) -> Option<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for line in body.lines() {
        let l = line.trim_end();
        if let Some(token) = l.strip_prefix("--") {
            let token = token.strip_suffix("--").unwrap_or(token);
            if token.len() >= 4 && !token.contains(' ') {
                if seen.contains(&token) {
                    return Some(token);
                }
                seen.push(token);
            }
        }
    }
    None
}

/// The parts between `--boundary` lines, up to the closing `--boundary--`.
/// Only lines starting with `-` are compared with the delimiter.
fn split_multipart<'a>(body: &'a str, boundary: &str) -> Vec<&'a str> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < body.len() {
        let end = (bytes::line_end(body, at) + 1).min(body.len());
        let line = &body[at..end];
        if line.starts_with('-') {
            let l = line.trim_end();
            if l.starts_with(&delimiter) {
                if let Some(s) = start.take() {
                    parts.push(&body[s..at]);
                }
                if l[delimiter.len()..].starts_with("--") {
                    return parts;
                }
                start = Some(end);
            }
        }
        at = end;
    }
    if let Some(s) = start {
        parts.push(&body[s..]);
    }
    parts
}

fn decode_body<'a>(headers: &Fields, body: &'a str) -> Cow<'a, str> {
    let encoding = field(headers, "content-transfer-encoding")
        .unwrap_or("")
        .trim();
    if encoding.eq_ignore_ascii_case("base64") {
        let bytes = base64(body);
        // A "base64" part that does not decode is left as it was.
        if bytes.is_empty() && !body.trim().is_empty() {
            Cow::Borrowed(body)
        } else {
            normalize(&bytes).into_owned().into()
        }
    } else if encoding.eq_ignore_ascii_case("quoted-printable") {
        normalize(&quoted_printable(body, false))
            .into_owned()
            .into()
    } else {
        Cow::Borrowed(body)
    }
}

/// Base64 with whitespace and junk skipped; stops at padding.
pub fn base64(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable; `underscore_space` for the Q encoding of encoded-words.
pub fn quoted_printable(text: &str, underscore_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'=' {
            if bytes.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            // "=  \n": a soft break with trailing blanks.
            let rest = &bytes[i + 1..];
            let blanks = rest
                .iter()
                .take_while(|c| **c == b' ' || **c == b'\t')
                .count();
            if rest.get(blanks) == Some(&b'\n') {
                i += 2 + blanks;
                continue;
            }
            out.push(b);
        } else if b == b'_' && underscore_space {
            out.push(b' ');
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// Decodes RFC 2047 encoded-words (`=?charset?B|Q?...?=`), charset-agnostic.
pub fn decode_words(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, after) = rest.split_at(start);
        let decoded = (|| {
            let inner = &after[2..];
            let (_charset, inner) = inner.split_once('?')?;
            let (enc, inner) = inner.split_once('?')?;
            let end = inner.find("?=")?;
            let data = &inner[..end];
            let bytes = match enc {
                "B" | "b" => base64(data),
                "Q" | "q" => quoted_printable(data, true),
                _ => return None,
            };
            let used = 2 + (after.len() - 2 - inner.len()) + end + 2;
            Some((String::from_utf8_lossy(&bytes).into_owned(), used))
        })();
        match decoded {
            Some((text, used)) => {
                // Whitespace between adjacent encoded-words is dropped.
                if !(last_was_word && before.trim().is_empty()) {
                    out.push_str(before);
                }
                out.push_str(&text);
                rest = &after[used..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &after[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_quoted_printable() {
        assert_eq!(base64("aGVs\nbG8="), b"hello");
        assert_eq!(quoted_printable("a=3Db=\nc", false), b"a=bc");
        assert_eq!(quoted_printable("a_b", true), b"a b");
    }

    #[test]
    fn encoded_words() {
        assert_eq!(
            decode_words("=?UTF-8?B?VW5kZWxpdmVyZWQ=?= =?utf-8?Q?_Mail?= x"),
            "Undelivered Mail x"
        );
        assert_eq!(decode_words("no =? words"), "no =? words");
    }

    #[test]
    fn multipart_with_encoded_leaf_and_returned_message() {
        let m = "Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Transfer-Encoding: base64\n\naGVsbG8=\n--b\nContent-Type: message/rfc822\n\nSubject: orig\n\nbody\n--b--\n";
        let p = Part::parse(m);
        let leaves = p.leaves();
        assert_eq!(leaves.len(), 2);
        assert_eq!(leaves[0].part.body, "hello");
        assert!(!leaves[0].returned && leaves[1].returned);
        assert_eq!(leaves[1].part.header("subject"), Some("orig"));
    }

    #[test]
    fn params() {
        assert_eq!(
            param(
                "multipart/report; report-type=delivery-status;\tboundary=\"x y\"",
                "boundary"
            )
            .as_deref(),
            Some("x y")
        );
        assert_eq!(
            param("text/plain; charset=utf-8", "charset").as_deref(),
            Some("utf-8")
        );
    }
}
