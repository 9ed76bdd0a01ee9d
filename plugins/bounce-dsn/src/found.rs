//! What a format reader found about one recipient, and how it becomes a
//! result: reply code and status read from the diagnostic when the report
//! lacks them, the reason classified, Sisimai's pseudo status filled in.
//! Each field's deciding rule is recorded ([`Why`]) for `--explain`.

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
    /// The reader that found the recipient (`dsn`, `text-scan`, ...).
    pub via: &'static str,
    /// The rule that set `reason`, when a reader or format rule set it.
    pub reason_rule: &'static str,
}

impl Found {
    pub fn new(recipient: &str, diagnostic: &str) -> Found {
        Found {
            recipient: recipient.to_owned(),
            diagnostic: diagnostic.to_owned(),
            ..Found::default()
        }
    }

    /// Sets the reason a format decides, and the rule that decided it.
    pub fn decide(&mut self, reason: Reason, rule: &'static str) {
        self.reason = Some(reason);
        self.reason_rule = rule;
    }
}

/// Which rule decided each field of one result (rule names, not prose:
/// `sluice bounce parse --explain` prints them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Why {
    pub recipient: &'static str,
    pub reply_code: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub hard: &'static str,
}

impl Why {
    /// The note that carries this record out of the plugin:
    /// `rule <recipient>: recipient=...; replycode=...; status=...;
    /// reason=...; hard=...`.
    pub fn note(&self, recipient: &str) -> String {
        format!(
            "rule {recipient}: recipient={}; replycode={}; status={}; reason={}; hard={}",
            self.recipient, self.reply_code, self.status, self.reason, self.hard
        )
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
#[cfg(test)]
fn prefer_status(reported: &str, diagnostic: &str, reply_code: Option<u16>) -> String {
    prefer_status_why(reported, diagnostic, reply_code).0
}

/// [`prefer_status`] and the rule that chose.
fn prefer_status_why(
    reported: &str,
    diagnostic: &str,
    reply_code: Option<u16>,
) -> (String, &'static str) {
    let Some(in_reply) = classify::find_status(diagnostic) else {
        let rule = if reported.is_empty() {
            "none"
        } else {
            "dsn-status-field"
        };
        return (reported.to_owned(), rule);
    };
    if reported.is_empty() {
        return (in_reply, "status-in-diagnostic");
    }
    let class = |s: &str| s.as_bytes()[0];
    let reply_agrees = reply_code.is_none_or(|c| (c / 100) as u8 + b'0' == class(&in_reply));
    if class(&in_reply) == class(reported) && reply_agrees && !is_generic(&in_reply) {
        let rule = if in_reply == reported {
            "dsn-status-field"
        } else {
            "reply-status-more-specific-than-dsn"
        };
        (in_reply, rule)
    } else if class(&in_reply) != class(reported) && reply_code.is_some() && reply_agrees {
        // The server's reply and its status agree on a class the report
        // does not: the report guessed, the server knows.
        (in_reply, "reply-class-over-dsn-class")
    } else {
        (reported.to_owned(), "dsn-status-field")
    }
}

/// Classifies a found recipient, and says which rule decided each field.
/// `context` is the SMTP command the report's text names, for when the
/// diagnostic does not.
pub fn finish_why(f: Found, context: &dyn Fn() -> Option<Command>) -> (BounceResult, Why) {
    let diagnostic = clean(&f.diagnostic);
    let recipient: String = f
        .recipient
        .trim()
        .trim_matches(['<', '>'])
        .chars()
        .take(320)
        .collect();
    let mut why = Why {
        recipient: if f.via.is_empty() { "reader" } else { f.via },
        ..Why::default()
    };
    let reply_code = match f.reply_code {
        Some(c) => {
            why.reply_code = "report-field";
            Some(c)
        }
        None => {
            let c = classify::find_reply_code(&diagnostic);
            why.reply_code = if c.is_some() {
                "reply-in-diagnostic"
            } else {
                "none"
            };
            c
        }
    };
    let (status, status_rule) = prefer_status_why(&f.status, &diagnostic, reply_code);
    why.status = status_rule;
    // The SMTP phase: the command the reader saw, the one the diagnostic
    // names, then the one the report's text names.
    let command = || {
        f.command
            .or_else(|| classify::find_command(&diagnostic))
            .or_else(context)
            .or_else(|| classify::find_command_verb(&diagnostic))
    };
    let action = f.action.to_ascii_lowercase();
    let (reason, reason_rule) = match f.reason {
        Some(r) => (
            r,
            if f.reason_rule.is_empty() {
                "format"
            } else {
                f.reason_rule
            },
        ),
        None => classify::reason_why(&Facts {
            status: &status,
            reply_code,
            diagnostic: &diagnostic,
            action: &action,
            command: Deferred::new(&command),
            diagnostic_type: &f.diagnostic_type,
            specific: !f.general,
        }),
    };
    why.reason = reason_rule;
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
        why.status = if temporary {
            "pseudo-status-of-reason-temporary"
        } else {
            "pseudo-status-of-reason"
        };
    }
    let (hard, hard_rule) = classify::is_hard_why(reason, &status, reply_code);
    why.hard = hard_rule;
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
    let result = BounceResult {
        recipient,
        status,
        reply_code,
        reason,
        hard,
        action,
        diagnostic,
        original_message_id: None,
        verp_token: None,
    };
    (result, why)
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
