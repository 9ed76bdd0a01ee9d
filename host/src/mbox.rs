//! Splitting an mbox file into its messages.
//!
//! A bounce parser reads one e-mail; files and mail spools may hold many,
//! each introduced by an envelope line `From sender date` (mboxo/mboxrd).
//! The split is done here, in the host, so that plugins only ever see one
//! message. Rules:
//!
//! - a separator is a line starting with `From ` followed by a sender and a
//!   date: at the start of the file or after an empty line any word with a
//!   digit will do as the date; elsewhere (writers that forget the empty
//!   line) the date must have the asctime form `Thu Apr 29 23:34:45 2015`,
//!   so that a body line "From here on..." is not one;
//! - text before the first separator is a message of its own when it is not
//!   blank (a file may start with a message that lacks its envelope line);
//! - the separator line itself is not part of the message.
//!
//! Line endings may be LF, CRLF or CR; a file with no separator is one
//! message, an empty file none.

/// The messages of `bytes`, in order, as slices of it.
pub fn split(bytes: &[u8]) -> Vec<&[u8]> {
    let mut messages = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    let mut previous_blank = true;
    while pos < bytes.len() {
        let end = line_end(bytes, pos);
        let line = trim_eol(&bytes[pos..end]);
        if is_separator(line, previous_blank) {
            push_if_content(&mut messages, &bytes[start..pos]);
            start = end;
        }
        previous_blank = line.is_empty();
        pos = end;
    }
    push_if_content(&mut messages, &bytes[start..]);
    messages
}

/// Whether `bytes` holds more than one message (so callers can say so).
pub fn is_mbox(bytes: &[u8]) -> bool {
    split(bytes).len() > 1
}

/// Index just past the line starting at `pos` (its LF, CRLF or CR included).
fn line_end(bytes: &[u8], pos: usize) -> usize {
    match bytes[pos..].iter().position(|&b| b == b'\n' || b == b'\r') {
        None => bytes.len(),
        Some(i) => {
            let at = pos + i;
            if bytes[at] == b'\r' && bytes.get(at + 1) == Some(&b'\n') {
                at + 2
            } else {
                at + 1
            }
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r'] = l {
        l = rest;
    }
    l
}

fn is_separator(line: &[u8], after_blank: bool) -> bool {
    let Some(rest) = line.strip_prefix(b"From ") else {
        return false;
    };
    let words: Vec<&[u8]> = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let Some((_sender, date)) = words.split_first() else {
        return false;
    };
    if after_blank {
        date.iter().any(|w| w.iter().any(u8::is_ascii_digit))
    } else {
        is_asctime(date)
    }
}

/// `Www Mmm d hh:mm:ss yyyy`, possibly followed by a zone.
fn is_asctime(words: &[&[u8]]) -> bool {
    let alpha3 = |w: &[u8]| w.len() == 3 && w.iter().all(u8::is_ascii_alphabetic);
    let digits = |w: &[u8], n: std::ops::RangeInclusive<usize>| {
        n.contains(&w.len()) && w.iter().all(u8::is_ascii_digit)
    };
    let time = |w: &[u8]| {
        w.split(|&b| b == b':').count() >= 2 && w.split(|&b| b == b':').all(|p| digits(p, 2..=2))
    };
    match words {
        [day, month, date, clock, year, ..] => {
            alpha3(day)
                && alpha3(month)
                && digits(date, 1..=2)
                && time(clock)
                && digits(year, 4..=4)
        }
        _ => false,
    }
}

fn push_if_content<'a>(messages: &mut Vec<&'a [u8]>, message: &'a [u8]) {
    if message.iter().any(|b| !b.is_ascii_whitespace()) {
        messages.push(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_without_envelope_line() {
        let m = b"Subject: x\n\nbody\n";
        assert_eq!(split(m), vec![&m[..]]);
        assert!(!is_mbox(m));
    }

    #[test]
    fn envelope_line_is_dropped() {
        let m = b"From MAILER-DAEMON  Fri Feb 13 05:04:57 2015\nSubject: x\n\nbody\n";
        assert_eq!(split(m), vec![&b"Subject: x\n\nbody\n"[..]]);
    }

    #[test]
    fn splits_at_separators_after_blank_lines_only() {
        let m = b"From a@b  Thu Apr 29 23:34:45 2015\nSubject: 1\n\nFrom here on it is text\n\nFrom c@d  Thu Apr 29 23:34:46 2015\nSubject: 2\n\nb\n";
        let parts = split(m);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], b"Subject: 1\n\nFrom here on it is text\n\n");
        assert_eq!(parts[1], b"Subject: 2\n\nb\n");
    }

    #[test]
    fn without_blank_line_only_an_asctime_envelope_splits() {
        let m = b"Subject: 1\n\ntext\nFrom 12 to 14 we are out\n";
        assert_eq!(split(m).len(), 1);
        let m = b"Subject: 1\n\ntext\n-----\nFrom MAILER-DAEMON  Thu Apr 29 23:34:45 2015\nSubject: 2\n\n";
        assert_eq!(split(m).len(), 2);
    }

    #[test]
    fn leading_message_without_envelope_is_kept() {
        let m = b"Subject: 1\n\na\n\nFrom x@y  Thu Apr 29 23:34:45 2015\nSubject: 2\n\nb\n";
        let parts = split(m);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with(b"Subject: 1"));
        assert!(parts[1].starts_with(b"Subject: 2"));
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        for eol in ["\r\n", "\r"] {
            let m = "From a@b Mon Jan 1 00:00:00 2024\nSubject: 1\n\nx\n\nFrom c@d Mon Jan 1 00:00:01 2024\nSubject: 2\n\ny\n"
                .replace('\n', eol);
            let parts = split(m.as_bytes());
            assert_eq!(parts.len(), 2, "{eol:?}");
            assert_eq!(parts[1], format!("Subject: 2{eol}{eol}y{eol}").as_bytes());
        }
    }

    #[test]
    fn empty_and_blank_files_hold_no_message() {
        assert!(split(b"").is_empty());
        assert!(split(b"\n\n  \n").is_empty());
    }
}
