//! Message bytes as the SMTP wire needs them, whoever supplied them: line ends, line
//! lengths, header fields, and the DATA transparency of RFC 5321 §4.5.2.
//!
//! Why this matters: a relay reads lines, and a body whose lines we read differently
//! from the relay can end its DATA early. `hello\n.\r\nMAIL FROM:<…>` has no line
//! starting with `.` for a CRLF-only reader, but a relay that also ends lines at a bare
//! LF sees the end of the data and then a second transaction — with a forged sender,
//! past every check of ours ("SMTP smuggling"). So every body leaves with CRLF line
//! ends only ([`crlf`], at acceptance and again at send time), a dot is doubled after
//! any line end ([`stuff_for_data`]), and what a tenant puts in a header is checked to
//! be one field ([`header_name_problem`], [`header_value_problem`]).
//!
//! Everything here is plain functions on bytes, one linear pass each (`memchr`), and
//! borrows the input when it is already clean: the accept path runs them for every
//! message.
//!
//! [`relay_spec`] says what a relay definition may say (its URL and TLS mode, id rule,
//! defaults and pool), for everything that reads relays: the pipeline file, the admin API,
//! the store and the relay client.

pub mod relay_spec;

use std::borrow::Cow;

/// The longest line RFC 5321 §4.5.3.1.6 and RFC 5322 §2.1.1 allow, without its CRLF.
pub const MAX_LINE_OCTETS: usize = 998;

/// Whether every CR and LF of `body` is part of a CRLF: every LF follows a CR, and
/// there are as many CRs as LFs. Two `memchr` passes (LFs are few, CRs are counted).
fn is_crlf_only(body: &[u8]) -> bool {
    let mut lfs = 0;
    for at in memchr::memchr_iter(b'\n', body) {
        if at == 0 || body[at - 1] != b'\r' {
            return false;
        }
        lfs += 1;
    }
    memchr::memchr_iter(b'\r', body).count() == lfs
}

/// `body` with every bare CR, bare LF and CRLF written as CRLF.
fn crlf_owned(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 2);
    let mut from = 0;
    let mut pos = 0;
    while let Some(i) = memchr::memchr2(b'\r', b'\n', &body[pos..]) {
        let at = pos + i;
        out.extend_from_slice(&body[from..at]);
        out.extend_from_slice(b"\r\n");
        pos = if body[at] == b'\r' && body.get(at + 1) == Some(&b'\n') {
            at + 2
        } else {
            at + 1
        };
        from = pos;
    }
    out.extend_from_slice(&body[from..]);
    out
}

/// `body` with every line ending in CRLF: a bare LF or a bare CR becomes CRLF (RFC 5322
/// §2.3 allows CR and LF only together). Borrowed when it already is so.
pub fn crlf(body: &[u8]) -> Cow<'_, [u8]> {
    if is_crlf_only(body) {
        Cow::Borrowed(body)
    } else {
        Cow::Owned(crlf_owned(body))
    }
}

/// Appends `body` to `out` as the text of SMTP DATA (RFC 5321 §4.5.2): a second `.` at
/// the start of every line that starts with one. A line starts at the start and after
/// any CR or LF, not only after a CRLF: the body should be CRLF-only already ([`crlf`]),
/// but if a bare line end got through, no relay, however it reads lines, can see the
/// end of the data in it. The closing `.` is the caller's.
pub fn stuff_for_data(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 2);
    let mut from = 0;
    for at in memchr::memchr_iter(b'.', body) {
        if at == 0 || matches!(body[at - 1], b'\n' | b'\r') {
            out.extend_from_slice(&body[from..=at]);
            out.push(b'.');
            from = at + 1;
        }
    }
    out.extend_from_slice(&body[from..]);
}

/// What makes a message's bytes unfit for the wire, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error(
        "line {line} is {octets} octets long; SMTP allows at most {MAX_LINE_OCTETS} (RFC 5321 §4.5.3.1.6): fold the header or encode the part (quoted-printable or base64)"
    )]
    TooLong { line: usize, octets: usize },
    #[error("line {line} holds a NUL byte, which SMTP does not carry: encode the part (base64)")]
    Nul { line: usize },
}

/// The line (1-based) that byte `at` of `body` is on.
fn line_of(body: &[u8], at: usize) -> usize {
    memchr::memchr_iter(b'\n', &body[..at]).count() + 1
}

/// Checks a CRLF body (see [`crlf`]) for lines over [`MAX_LINE_OCTETS`] and NUL bytes.
pub fn check_lines(body: &[u8]) -> Result<(), LineProblem> {
    let mut start = 0;
    let mut line = 1;
    for at in memchr::memchr_iter(b'\n', body) {
        let end = if at > start && body[at - 1] == b'\r' {
            at - 1
        } else {
            at
        };
        too_long(end - start, line)?;
        start = at + 1;
        line += 1;
    }
    too_long(body.len() - start, line)?;
    no_nul(body)
}

fn too_long(octets: usize, line: usize) -> Result<(), LineProblem> {
    if octets > MAX_LINE_OCTETS {
        return Err(LineProblem::TooLong { line, octets });
    }
    Ok(())
}

fn no_nul(body: &[u8]) -> Result<(), LineProblem> {
    match memchr::memchr(0, body) {
        Some(at) => Err(LineProblem::Nul {
            line: line_of(body, at),
        }),
        None => Ok(()),
    }
}

/// [`crlf`] and [`check_lines`] at once, as acceptance needs them: a clean body costs
/// one pass over its line ends, one count of its CRs and one search for NUL, and is
/// borrowed. Line numbers are those of the CRLF form (a bare LF or CR ends a line).
pub fn crlf_checked(body: &[u8]) -> Result<Cow<'_, [u8]>, LineProblem> {
    let mut start = 0;
    let mut lfs = 0;
    let mut clean = true;
    for at in memchr::memchr_iter(b'\n', body) {
        // A bare LF, or a line too long as it stands (a bare CR in it may split it):
        // the rare cases, left to the two steps below.
        if at == 0 || body[at - 1] != b'\r' || at - 1 - start > MAX_LINE_OCTETS {
            clean = false;
            break;
        }
        start = at + 1;
        lfs += 1;
    }
    let clean = clean
        && body.len() - start <= MAX_LINE_OCTETS
        && memchr::memchr_iter(b'\r', body).count() == lfs;
    if clean {
        no_nul(body)?;
        return Ok(Cow::Borrowed(body));
    }
    let body = crlf(body);
    check_lines(&body)?;
    Ok(body)
}

/// Headers an application may not set: Sluice or the envelope owns them.
pub const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
];

/// Whether `name` is one of the [`RESERVED_HEADERS`], in any case.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// What is wrong with a header field name, if anything: RFC 5322 §2.2 allows printable
/// US-ASCII (33..=126) except `:`, and at least one character.
pub fn header_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a header name cannot be empty".into());
    }
    let bad = name
        .bytes()
        .position(|b| !(33..=126).contains(&b) || b == b':')?;
    Some(format!(
        "{name:?} is not a valid header name: byte {bad} ({:?}) is not printable ASCII other than ':' (RFC 5322 §2.2)",
        char::from(name.as_bytes()[bad])
    ))
}

/// What is wrong with a header field value, if anything: no control character but the
/// tab of folding white space (so no CR, LF or NUL: a value is one field).
pub fn header_value_problem(value: &str) -> Option<String> {
    let bad = value
        .bytes()
        .position(|b| (b < 0x20 && b != b'\t') || b == 0x7f)?;
    Some(format!(
        "the value holds control character {:?} at byte {bad}; a value is one line of text",
        char::from(value.as_bytes()[bad])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(body: &[u8]) -> String {
        let mut out = Vec::new();
        stuff_for_data(body, &mut out);
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn clean_bodies_are_borrowed_and_bare_line_ends_become_crlf() {
        let clean = b"a\r\nb\r\n\r\nc";
        assert!(matches!(crlf(clean), Cow::Borrowed(_)));
        assert!(matches!(crlf(b""), Cow::Borrowed(_)));
        assert_eq!(&*crlf(b"a\nb\rc\r\nd\r"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(&*crlf(b"\n\r\r\n\n\r"), b"\r\n\r\n\r\n\r\n\r\n");
        assert_eq!(&*crlf(b"x\r\r\ny"), b"x\r\n\r\ny");
    }

    #[test]
    fn a_dot_starting_any_line_is_doubled_and_no_other() {
        assert_eq!(stuffed(b""), "");
        assert_eq!(stuffed(b"."), "..");
        assert_eq!(
            stuffed(b".a\r\n..b\r\nc.d.\r\n.\r\n"),
            "..a\r\n...b\r\nc.d.\r\n..\r\n"
        );
        assert_eq!(stuffed(b"no dots\r\nat all\r\n"), "no dots\r\nat all\r\n");
        // A bare LF or CR starts a line for some relays: the dot after it is doubled
        // too, so no relay can read an end of data there.
        assert_eq!(
            stuffed(b"hello\n.\r\nMAIL FROM:<ceo@bank.example>\r\n"),
            "hello\n..\r\nMAIL FROM:<ceo@bank.example>\r\n"
        );
        assert_eq!(stuffed(b"a\r.b\n.c\r\r\n.d"), "a\r..b\n..c\r\r\n..d");
        // As the relay client sends it: made CRLF, then stuffed.
        let mut out = Vec::new();
        stuff_for_data(&crlf(b"hello\n.\nQUIT"), &mut out);
        assert_eq!(out, b"hello\r\n..\r\nQUIT");
    }

    #[test]
    fn crlf_checked_is_crlf_then_check_lines() {
        let long = "x".repeat(MAX_LINE_OCTETS + 1);
        let cases: Vec<Vec<u8>> = vec![
            b"a\r\nb\r\n".to_vec(),
            b"".to_vec(),
            b"a\nb\rc\r\n".to_vec(),
            format!("a\r\n{long}\r\nb").into_bytes(),
            format!("a\n{long}").into_bytes(),
            format!("a\r\n{long}\nb").into_bytes(),
            format!("a\rb\r\n{long}").into_bytes(),
            b"a\r\nb\0\r\n".to_vec(),
            b"a\rb\0".to_vec(),
            // Two lines of 600 octets, split by a bare CR: not one too long.
            format!("{}\r{}\r\n", "y".repeat(600), "z".repeat(600)).into_bytes(),
        ];
        for body in cases {
            let expected = check_lines(&crlf(&body)).map(|()| crlf(&body).into_owned());
            let got = crlf_checked(&body).map(Cow::into_owned);
            assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(&body));
        }
        assert!(matches!(crlf_checked(b"a\r\nb"), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn long_lines_and_nul_are_found_with_their_line() {
        let ok = format!("a\r\n{}\r\nb", "x".repeat(MAX_LINE_OCTETS));
        assert_eq!(check_lines(ok.as_bytes()), Ok(()));
        let long = format!("a\r\nb\r\n{}\r\nc", "x".repeat(MAX_LINE_OCTETS + 1));
        assert_eq!(
            check_lines(long.as_bytes()),
            Err(LineProblem::TooLong {
                line: 3,
                octets: 999
            })
        );
        let last = format!("a\r\n{}", "x".repeat(100_000));
        assert_eq!(
            check_lines(last.as_bytes()),
            Err(LineProblem::TooLong {
                line: 2,
                octets: 100_000
            })
        );
        assert_eq!(
            check_lines(b"a\r\nb\r\nc\0d\r\n"),
            Err(LineProblem::Nul { line: 3 })
        );
        assert!(
            LineProblem::TooLong {
                line: 7,
                octets: 1200
            }
            .to_string()
            .starts_with("line 7 is 1200 octets long")
        );
    }

    #[test]
    fn header_names_and_values_are_one_field() {
        assert_eq!(header_name_problem("X-Campaign"), None);
        assert_eq!(header_name_problem("X~!#$%"), None);
        for bad in ["", "X-Test\r\nBcc", "Bcc ", "X:Y", "X\0", "Ümlaut", "X\x7f"] {
            assert!(header_name_problem(bad).is_some(), "{bad:?}");
        }
        assert_eq!(header_value_problem("plain, with\ttab and ü"), None);
        for bad in [
            "a\r\nBcc: x@evil.example",
            "a\nb",
            "a\rb",
            "nul\0",
            "esc\x1b",
            "del\x7f",
        ] {
            assert!(header_value_problem(bad).is_some(), "{bad:?}");
        }
    }
}
