//! What a format reader found about one recipient, and how it becomes a
//! result: reply code and status read from the diagnostic when the report
//! lacks them, the reason classified, Sisimai's pseudo status filled in.

use crate::classify::{self, Command, Deferred, Facts};
use sluice_sdk::bounce::{BounceResult, Reason};

/// Longest diagnostic passed back (the host accepts 16 KiB).
const MAX_DIAGNOSTIC: usize = 8 * 1024;

/// One recipient as a format reader saw it.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub recipient: String,
    pub status: String,
    pub reply_code: Option<u16>,
    pub diagnostic: String,
    pub action: String,
    pub command: Option<Command>,
    /// A reason the format itself decides (feedback, vacation, ...).
    pub reason: Option<Reason>,
    /// The type of a DSN's Diagnostic-Code (`smtp`, `x-unix`, ...).
    pub diagnostic_type: String,
    /// The diagnostic is only the report's general error paragraph, not
    /// words said about this recipient.
    pub general: bool,
}

impl Found {
    pub fn new(recipient: &str, diagnostic: &str) -> Found {
        Found {
            recipient: recipient.to_owned(),
            diagnostic: diagnostic.to_owned(),
            ..Found::default()
        }
    }
}

/// A multi-line reply's continuation prefix: `550-5.1.1` or `550-`.
fn is_continuation(word: &str) -> bool {
    let b = word.as_bytes();
    if b.len() < 4 || !matches!(b[0], b'2' | b'4' | b'5') || b[3] != b'-' {
        return false;
    }
    if !b[1..3].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let rest = &word[4..];
    rest.is_empty() || classify::find_status(rest).as_deref() == Some(rest)
}

/// Whitespace runs collapsed to one space, trimmed, bounded; the
/// continuation prefixes of a multi-line reply dropped but for the first.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DIAGNOSTIC));
    // The first continuation prefix ("550-5.7.1"), whose later repetitions
    // (including the last line's "550 5.7.1") are dropped.
    let mut prefix: Option<(&str, &str)> = None;
    let mut words = crate::bytes::words(text).peekable();
    while let Some(word) = words.next() {
        if is_continuation(word) {
            let (code, status) = word.split_at(3);
            let pair = (code, &status[1..]);
            match prefix {
                Some(p) if p.0 == pair.0 => continue,
                Some(_) => {}
                None => prefix = Some(pair),
            }
        } else if let Some((code, status)) = prefix {
            // "550 5.7.1" on the last line of the reply.
            if word == code && (status.is_empty() || words.peek() == Some(&status)) {
                if !status.is_empty() {
                    words.next();
                }
                continue;
            }
        }
        if out.len() + word.len() + 1 > MAX_DIAGNOSTIC {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn is_generic(status: &str) -> bool {
    status.len() == 5 && status.ends_with(".0.0")
}

/// The status to report: the report's `Status:`, unless the server's own
/// reply carries a more specific one of the same class (reports often say
/// 5.0.0 or a generic 4.4.7 where the reply says 4.7.1).
fn prefer_status(reported: &str, diagnostic: &str, reply_code: Option<u16>) -> String {
    let Some(in_reply) = classify::find_status(diagnostic) else {
        return reported.to_owned();
    };
    if reported.is_empty() {
        return in_reply;
    }
    let class = |s: &str| s.as_bytes()[0];
    let reply_agrees = reply_code.is_none_or(|c| (c / 100) as u8 + b'0' == class(&in_reply));
    if class(&in_reply) == class(reported) && reply_agrees && !is_generic(&in_reply) {
        in_reply
    } else if class(&in_reply) != class(reported) && reply_code.is_some() && reply_agrees {
        // The server's reply and its status agree on a class the report
        // does not: the report guessed, the server knows.
        in_reply
    } else {
        reported.to_owned()
    }
}

/// Classifies a found recipient.
/// `context` is the SMTP command the report's text names, for when the
/// diagnostic does not.
pub fn finish(f: Found, context: &dyn Fn() -> Option<Command>) -> BounceResult {
    let diagnostic = clean(&f.diagnostic);
    let recipient: String = f
        .recipient
        .trim()
        .trim_matches(['<', '>'])
        .chars()
        .take(320)
        .collect();
    let reply_code = f
        .reply_code
        .or_else(|| classify::find_reply_code(&diagnostic));
    let status = prefer_status(&f.status, &diagnostic, reply_code);
    let command = || {
        f.command
            .or_else(|| classify::find_command(&diagnostic))
            .or_else(context)
    };
    let action = f.action.to_ascii_lowercase();
    let reason = f.reason.unwrap_or_else(|| {
        classify::reason(&Facts {
            status: &status,
            reply_code,
            diagnostic: &diagnostic,
            action: &action,
            command: Deferred::new(&command),
            diagnostic_type: &f.diagnostic_type,
            specific: !f.general,
        })
    });
    let mut status = status;
    let temporary = status.starts_with('4')
        || (status.is_empty() && reply_code.is_some_and(|c| (400..500).contains(&c)))
        || action.starts_with("delayed");
    if status.is_empty()
        && !matches!(
            reason,
            Reason::Feedback | Reason::Vacation | Reason::Delivered
        )
    {
        status = classify::pseudo_status(reason, if temporary { '4' } else { '5' });
    }
    let hard = classify::is_hard(reason, &status, reply_code);
    let action = if !action.is_empty() {
        action
    } else {
        match reason {
            Reason::Feedback | Reason::Vacation => String::new(),
            Reason::Delivered => "delivered".into(),
            _ if temporary => "delayed".into(),
            _ => "failed".into(),
        }
    };
    BounceResult {
        recipient,
        status,
        reply_code,
        reason,
        hard,
        action,
        diagnostic,
        original_message_id: None,
        verp_token: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_read_as_one_sentence() {
        assert_eq!(
            clean(
                "550-5.7.1 Messages with multiple\n  550-5.7.1 addresses in From: 550 5.7.1 header are not accepted."
            ),
            "550-5.7.1 Messages with multiple addresses in From: header are not accepted."
        );
        // Codes that are not the reply's own prefix stay.
        assert_eq!(
            clean("554 <a@b.example>... 550 Host unknown"),
            "554 <a@b.example>... 550 Host unknown"
        );
    }

    #[test]
    fn the_reply_status_wins_over_a_generic_report_status() {
        assert_eq!(
            prefer_status("5.0.0", "550 5.1.1 no such user", Some(550)),
            "5.1.1"
        );
        assert_eq!(
            prefer_status("4.4.7", "450 4.7.1 try later", Some(450)),
            "4.7.1"
        );
        // A 5xx reply that quotes a 4.x.x status does not override the report.
        assert_eq!(
            prefer_status("4.4.1", "550 4.4.7 QUEUE.Expired", Some(550)),
            "4.4.1"
        );
        assert_eq!(prefer_status("", "no status here", None), "");
    }
}
