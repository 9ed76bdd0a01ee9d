//! One bounce e-mail, read once: its MIME tree, the human-readable report
//! text (cut where the returned message starts), and the headers of the
//! returned message.

use crate::bytes;
use crate::mime::{self, Fields, Part};
use crate::phrase;
use crate::plain;
use std::borrow::Cow;
use std::cell::OnceCell;

/// Lines (lower case, trimmed) after which the returned message follows.
const RETURNED_MARKERS: &[&str] = &[
    "--- below this line is a copy of the message",
    "------ this is a copy of the message",
    "----- original message -----",
    "-----original message-----",
    "original message follows",
    "----- unsent message follows",
    "------ original message ------",
    "--- the header of the original message is following",
    "----- message header follows",
    "------ returned message",
    "----- the following is the original message",
    "--------original message--------",
    "original message:",
    "the original message headers are:",
    "the original message was:",
    "--- original message ---",
    "content-type: message/rfc822",
    "content-type: text/rfc822-headers",
    "------ this is a copy of your message",
    "------- returned message --------",
    "-------- original message --------",
    "---------- original message -----------",
    "--- message follows",
    "-- original mail --",
    "|------------------------- message text follows",
    "----- message text follows",
    "the headers of the message",
    "headers of the original message",
    "received: from",
];

/// A parsed bounce, borrowing the e-mail's text.
#[derive(Debug)]
pub struct Mail<'a> {
    pub top: Part<'a>,
    pub subject: String,
    pub from: String,
    /// Human-readable text of the report, before the returned message.
    pub report: String,
    /// Headers of the returned message, when it is there.
    pub original: Fields<'a>,
    /// [`plain::error_paragraph`] of the report, wanted by several readers.
    paragraph: OnceCell<Option<String>>,
}

fn strip_html(html: &str) -> String {
    /// Tags that break the line.
    const BREAKS: &[&str] = &[
        "<br", "<p", "</p", "<div", "</div", "<tr", "</tr", "<li", "</h",
    ];
    let mut out = String::with_capacity(html.len());
    let b = html.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Text up to a tag is copied as it is.
        let tag = bytes::find(&b[i..], b'<').map_or(b.len(), |k| i + k);
        out.push_str(&html[i..tag]);
        if tag == b.len() {
            break;
        }
        if BREAKS.iter().any(|t| {
            b[tag..]
                .get(..t.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(t.as_bytes()))
        }) {
            out.push('\n');
        }
        // A tag is dropped up to its '>', which leaves a space.
        match bytes::find(&b[tag + 1..], b'>') {
            Some(k) => {
                out.push(' ');
                i = tag + 1 + k + 1;
            }
            None => break,
        }
    }
    if !out.contains('&') {
        return out;
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// The words every marker has one of, each with a letter of it that is
/// rare in text and where that letter is: only the lines where a word is
/// around such a letter are tried (a test checks the markers have them).
const MARKER_WORDS: [(&str, usize); 5] = [
    ("message", 5),
    ("original", 3),
    ("header", 3),
    ("content-type", 9),
    ("received:", 5),
];

/// The letters of [`MARKER_WORDS`] searched for.
const MARKER_LETTERS: [u8; 4] = [b'g', b'd', b'y', b'v'];

/// Whether a marker word, any case, is around the letter at `at`.
fn names_marker_word(text: &[u8], at: usize) -> bool {
    let letter = text[at] | 0x20;
    MARKER_WORDS.iter().any(|&(word, k)| {
        word.as_bytes()[k] == letter
            && at >= k
            && text[at - k..]
                .get(..word.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    })
}

/// The markers also looked for inside a line (longer than 20 bytes).
const LONG_MARKERS: [(u64, &str); long_markers()] = {
    let mut out = [(1, ""); long_markers()];
    let (mut i, mut n) = (0, 0);
    while i < RETURNED_MARKERS.len() {
        if RETURNED_MARKERS[i].len() > 20 {
            out[n].1 = RETURNED_MARKERS[i];
            n += 1;
        }
        i += 1;
    }
    out
};

const fn long_markers() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < RETURNED_MARKERS.len() {
        if RETURNED_MARKERS[i].len() > 20 {
            n += 1;
        }
        i += 1;
    }
    n
}

/// [`LONG_MARKERS`] indexed at compile time.
static LONG_MARKER_INDEX: phrase::Index<{ LONG_MARKERS.len() }> = phrase::Index::new(&LONG_MARKERS);

/// Where the returned message starts in `text`, if a marker says so: the
/// first line that is one.
fn returned_at(text: &str) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    // Lines before this one are done with.
    let mut next = 0;
    for at in bytes::letters(b, MARKER_LETTERS) {
        if at < next || !names_marker_word(b, at) {
            continue;
        }
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        next = (bytes::line_end(text, at) + 1).min(text.len());
        if let Some(after) = marker_line(&text[start..next], start) {
            return Some((start, after));
        }
    }
    None
}

/// Whether `line`, at `offset` in the text, is a marker: where the
/// returned message starts after it if so.
fn marker_line(line: &str, offset: usize) -> Option<usize> {
    // Lower-cased into a buffer on the stack (most lines fit): a line is
    // tried whenever it has "message" in it.
    let line_t = line.trim();
    let mut buf = [0u8; 256];
    let long;
    let t: &[u8] = match buf.get_mut(..line_t.len()) {
        Some(b) => {
            b.copy_from_slice(line_t.as_bytes());
            b.make_ascii_lowercase();
            b
        }
        None => {
            long = line_t.to_ascii_lowercase();
            long.as_bytes()
        }
    };
    let t = &t[t
        .iter()
        .position(|&c| c != b'>' && c != b' ')
        .unwrap_or(t.len())..];
    // The first byte first: most markers are compared no further.
    let marks = RETURNED_MARKERS.iter().any(|m| {
        t.first() == m.as_bytes().first()
            && t.starts_with(m.as_bytes())
            && (offset > 0 || *m != "received: from")
    }) || LONG_MARKER_INDEX.groups_in(t) != 0;
    marks.then(|| {
        if t.starts_with(b"received: from") {
            offset
        } else {
            offset + line.len()
        }
    })
}

impl<'a> Mail<'a> {
    pub fn parse(text: &'a str) -> Mail<'a> {
        let top = Part::parse(text);
        let subject = mime::decode_words(top.header("subject").unwrap_or(""));
        let from = mime::decode_words(top.header("from").unwrap_or(""));
        let mut report = String::new();
        let mut original: Fields = Vec::new();
        for leaf in top.leaves() {
            let ct = &*leaf.part.content_type;
            if leaf.returned {
                if original.is_empty() {
                    original = returned_headers(&top);
                }
                continue;
            }
            let text: Cow<str> = match ct {
                "text/html" => strip_html(&leaf.part.body).into(),
                t if t.starts_with("text/") || t.is_empty() => (*leaf.part.body).into(),
                "message/delivery-status"
                | "message/global-delivery-status"
                | "message/feedback-report"
                | "message/disposition-notification" => continue,
                _ => continue,
            };
            // An HTML alternative repeats the plain text.
            if ct == "text/html" && !report.trim().is_empty() {
                continue;
            }
            report.push_str(&text);
            report.push('\n');
        }
        if let Some((cut, after)) = returned_at(&report) {
            if original.is_empty() {
                let rest = report[after..].trim_start_matches('\n');
                // The report is a string of its own: the fields are copied,
                // so only those anything reads, and the first (whether
                // there are any fields at all is read too).
                let mut first = true;
                let (fields, _) = mime::parse_fields_where(rest, |name| {
                    let keep = first
                        || mime::RETURNED_FIELDS
                            .iter()
                            .any(|f| f.eq_ignore_ascii_case(name));
                    first = false;
                    keep
                });
                original = mime::owned_fields(fields);
            }
            report.truncate(cut);
        }
        if original.is_empty() {
            original = returned_headers(&top);
        }
        Mail {
            top,
            subject,
            from,
            report,
            original,
            paragraph: OnceCell::new(),
        }
    }

    /// The paragraph of the report that best says what went wrong
    /// (computed once).
    pub fn error_paragraph(&self) -> Option<&str> {
        self.paragraph
            .get_or_init(|| plain::error_paragraph(&self.report))
            .as_deref()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.top.header(name)
    }

    /// Whether the report is a delay notice (the message is still queued
    /// and will be tried again), said in the words MTAs document for it:
    /// the subjects of Exchange's and Gmail's "(Delay)" DSNs, Postfix's
    /// "Delayed Mail (still being retried)", Sendmail's "Warning: could not
    /// send message for past ..." and Exim's "Warning: message ... delayed",
    /// or the report's "THIS IS A WARNING MESSAGE ONLY" and "will keep
    /// trying". RFC 3464 calls this action `delayed`.
    pub fn is_delay_notice(&self) -> bool {
        let subject = self.subject.to_ascii_lowercase();
        let subject = subject.trim();
        if subject.contains("(delay)")
            || subject.contains("delayed mail")
            || subject.contains("still being retried")
            || subject.starts_with("delivery delayed")
            || subject.starts_with("delayed:")
            || (subject.starts_with("warning:")
                && (subject.contains("delayed")
                    || subject.contains("could not send message for past")))
        {
            return true;
        }
        let report = self.report.to_ascii_lowercase();
        [
            "this is a warning message only",
            "you do not need to resend",
            "will keep trying",
            "will continue to try",
            "delivery attempts will continue",
            "still being retried",
        ]
        .iter()
        .any(|p| report.contains(p))
    }

    /// The first part whose type is one of `types`.
    pub fn part(&self, types: &[&str]) -> Option<&Part<'a>> {
        fn find<'p, 'a>(p: &'p Part<'a>, types: &[&str]) -> Option<&'p Part<'a>> {
            if types.contains(&&*p.content_type) {
                return Some(p);
            }
            p.children.iter().find_map(|c| find(c, types))
        }
        find(&self.top, types)
    }

    /// A header of the returned message.
    pub fn original_header(&self, name: &str) -> Option<&str> {
        mime::field(&self.original, name)
    }
}

/// Headers of the first returned message part in the tree.
fn returned_headers<'a>(top: &Part<'a>) -> Fields<'a> {
    fn find<'a>(p: &Part<'a>) -> Option<Fields<'a>> {
        match &*p.content_type {
            "message/rfc822" | "message/global" => p.children.first().map(|c| c.headers.clone()),
            "text/rfc822-headers" | "text/rfc822-header" | "message/rfc822-headers" => {
                // Borrowed from the e-mail unless the body was decoded.
                Some(match &p.body {
                    Cow::Borrowed(body) => mime::parse_fields(body.trim_start_matches('\n')).0,
                    Cow::Owned(body) => {
                        mime::owned_fields(mime::parse_fields(body.trim_start_matches('\n')).0)
                    }
                })
            }
            _ => p.children.iter().find_map(find),
        }
    }
    find(top).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_has_a_marker_word() {
        for m in RETURNED_MARKERS {
            let b = m.as_bytes();
            assert!(
                (0..b.len()).any(|i| MARKER_LETTERS.contains(&b[i]) && names_marker_word(b, i)),
                "{m}"
            );
        }
    }

    #[test]
    fn html_is_read_as_text() {
        assert_eq!(
            strip_html("<P>Hello<br/>World &amp;lt; &amp;quot;</p><b>x<i"),
            "\n Hello\n World &lt; \"\n  x"
        );
        assert_eq!(strip_html("a > b, é"), "a > b, é");
    }

    #[test]
    fn the_first_marker_line_cuts_the_report() {
        let text =
            "Sorry.\nYour Message was not sent.\n> ------ Original Message ------\nSubject: x\n";
        let at = text.find("> ---").unwrap();
        assert_eq!(
            returned_at(text),
            Some((at, at + "> ------ Original Message ------\n".len()))
        );
        let received = "Sorry.\nReceived: from mx by mx\n";
        assert_eq!(returned_at(received), Some((7, 7)));
        assert_eq!(returned_at("Received: from mx by mx\n"), None);
        assert_eq!(returned_at("no marker here\n"), None);
    }
}
