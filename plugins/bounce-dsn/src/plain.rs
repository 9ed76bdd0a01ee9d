//! Bounces without a delivery-status part: the plain-text reports of
//! qmail, Exim, Postfix, Sendmail, Exchange, webmail providers and many
//! filters. They share a shape: a recipient on a line of its own (or at the
//! start of a line, in `<...>`, followed by `:` or `...`), then the reason
//! or the remote server's reply. Where no line names a recipient, the
//! `X-Failed-Recipients` header or the returned message's `To:` does.

use crate::addr;
use crate::classify::find_reply_code;
use crate::found::Found;
use crate::mail::Mail;
use std::cell::OnceCell;

/// Words of a Subject or From that make a message a bounce.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "delivery fail",
    "delivery status",
    "failure notice",
    "failure delivery",
    "returned mail",
    "mail delivery",
    "could not be delivered",
    "non-deliver",
    "nondeliver",
    "non deliver",
    "delivery notification",
    "delivery report",
    "not delivered",
    "unable to deliver",
    "mail system error",
    "mail could not",
    "message delivery",
    "delivery problem",
    "rejected",
    "bounce",
    "failed",
    "failure",
    "error",
    "warning",
    "returned",
    "delayed",
    "unzustellbar",
    "non remis",
    "no entregado",
    "devuelto",
    "falha",
    "permanent",
    "mail status",
    "delivery notice",
    "message status",
    "unsuccessful",
    "problem",
    "not be sent",
    "mensaje",
    "nicht zugestellt",
];

const BOUNCE_SENDERS: &[&str] = &[
    "mailer-daemon",
    "mailer_daemon",
    "mail-daemon",
    "maildaemon",
    "mailerdaemon",
    "postmaster",
    "post_master",
    "mail delivery",
    "mail-delivery",
    "maildelivery",
    "mail administrator",
    "mail system",
    "mailadmin",
    "double-bounce",
    "bounce",
    "nobody",
    "noreply",
    "no-reply",
    "daemon",
    "mail-router",
    "smtp",
    "returned",
    "mmsadmin",
    "administrator",
];

/// Whether the message looks like a bounce at all.
pub fn is_bounce(mail: &Mail) -> bool {
    is_bounce_by_words(mail) || mail.header("return-path").is_some_and(|r| r.trim() == "<>")
}

/// Whether the subject, the sender or an Exim header says "bounce".
pub fn is_bounce_by_words(mail: &Mail) -> bool {
    let subject = mail.subject.to_ascii_lowercase();
    let from = mail.from.to_ascii_lowercase();
    mail.header("x-failed-recipients").is_some()
        || BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s))
        || BOUNCE_SENDERS.iter().any(|s| from.contains(s))
}

/// Addresses that are not failed recipients: the bounce's own sender and
/// the original sender it is addressed to.
fn excluded(mail: &Mail) -> Vec<String> {
    let mut out = Vec::new();
    for v in [
        mail.header("from"),
        mail.header("to"),
        mail.original_header("from"),
        mail.original_header("return-path"),
    ]
    .into_iter()
    .flatten()
    {
        out.extend(
            addr::find_all(v)
                .into_iter()
                .map(|(_, a)| a.to_ascii_lowercase()),
        );
    }
    out.retain(|a| !a.is_empty());
    out
}

/// Prefixes before a recipient at the start of a line.
const LINE_PREFIXES: &[&str] = &[
    "rcpt to:",
    "recipient address:",
    "recipient:",
    "original recipient:",
    "failed recipient:",
    "to:",
    "address:",
    "destinataire:",
    "*",
    "-",
    "•",
    ">>>",
];

/// A recipient at the start of a line and what follows it on the line.
fn address_line(line: &str) -> Option<(String, String)> {
    // Most lines have no address at all.
    crate::bytes::find(line.as_bytes(), b'@')?;
    let t = line.trim();
    let mut rest = t;
    for p in LINE_PREFIXES {
        if t.len() >= p.len() && t.is_char_boundary(p.len()) && t[..p.len()].eq_ignore_ascii_case(p)
        {
            rest = t[p.len()..].trim_start();
            break;
        }
    }
    let quoted = rest.starts_with(['<', '"', '\'', '`']);
    // `'user@example.org' on <date>` (Exchange 2003) quotes as `<...>` does.
    let mut body = rest.trim_start_matches(['<', '\'', '`']);
    let (mut at, mut address) = addr::addresses(body).next()?;
    if at != 0 && body.starts_with('"') {
        body = body.trim_start_matches('"');
        (at, address) = addr::addresses(body).next()?;
    }
    if at != 0 {
        return None;
    }
    let mut after = &body[address.len()..];
    after = after.trim_start_matches(['>', '"', '\'']);
    let after_t = after.trim_start();
    // What may follow a recipient: nothing, ':' or '...' and a reason, a
    // parenthesised note (Exim's "generated from"), or "<<<" replies.
    let ok = after_t.is_empty()
        || after_t.starts_with(':')
        || after_t.starts_with("...")
        || after_t.starts_with('(')
        || after_t.starts_with(',')
        || after_t.starts_with('-')
        || after_t.starts_with(';')
        || (quoted && !after_t.starts_with('@'))
        || dated(after_t)
        || after_t.chars().next().is_some_and(|c| !c.is_ascii());
    if !ok {
        return None;
    }
    let detail = after_t
        .trim_start_matches([':', '.', ',', ';', '-', ' '])
        .to_owned();
    Some((address.to_owned(), detail))
}

/// Whether what follows an address is "on <date>": Exchange 5.5's
/// Internet Mail Service lists each recipient under "did not reach the
/// following recipient(s):" as `user@example.org on Thu, 24 Feb 2000
/// 11:14:44 -0500`, unquoted (Microsoft's descriptions of Exchange 5.5
/// NDRs), as Exchange 2003 does quoted.
fn dated(after: &str) -> bool {
    let Some(rest) = after.strip_prefix("on ") else {
        return false;
    };
    let rest = rest.trim_start().as_bytes();
    const DAYS: [&[u8]; 7] = [b"mon", b"tue", b"wed", b"thu", b"fri", b"sat", b"sun"];
    rest.first().is_some_and(u8::is_ascii_digit)
        || DAYS
            .iter()
            .any(|d| rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(d))
}

/// Lines a diagnostic block never includes.
fn ends_block(line: &str) -> bool {
    let l = line.trim();
    l.starts_with("-----") || l.starts_with("=====") || l.starts_with("*****")
}

/// Recipients found in the report text, each with the lines that explain it.
pub fn scan(mail: &Mail) -> Vec<Found> {
    scan_lines(mail)
}

fn scan_lines(mail: &Mail) -> Vec<Found> {
    let found = scan_excluding(mail, &excluded(mail));
    if found.is_empty() {
        // Someone may have written to themselves: the sender is the recipient.
        scan_excluding(mail, &[])
    } else {
        found
    }
}

fn scan_excluding(mail: &Mail, skip: &[String]) -> Vec<Found> {
    let lines: Vec<&str> = mail.report.lines().collect();
    let mut out: Vec<Found> = Vec::new();
    let mut i = 0;
    while i < lines.len() && out.len() < crate::MAX_RECIPIENTS {
        let Some((address, detail)) = address_line(lines[i]) else {
            i += 1;
            continue;
        };
        let lower = address.to_ascii_lowercase();
        if skip.contains(&lower) || lower.starts_with("mailer-daemon@") {
            i += 1;
            continue;
        }
        let mut diag = detail;
        let mut j = i + 1;
        let mut blank_run = 0;
        while j < lines.len() && j < i + 20 {
            let l = lines[j];
            if l.trim().is_empty() {
                blank_run += 1;
                // One blank line may separate a recipient from its reply,
                // or a heading ("For the following reason:") from the text.
                let heading = diag.trim_end().ends_with(':');
                // A paragraph headed "...was:" after the explanation
                // (Gmail's "The error that the other server returned
                // was:") holds the server's reply when none came yet.
                let reply_follows = || {
                    lines[j + 1..]
                        .iter()
                        .find(|l| !l.trim().is_empty())
                        .is_some_and(|l| {
                            l.trim_end().ends_with(':')
                                && !ends_block(l)
                                && address_line(l).is_none()
                        })
                        && !is_coded(&diag)
                };
                if blank_run > 1 || (!diag.trim().is_empty() && !heading && !reply_follows()) {
                    break;
                }
                j += 1;
                continue;
            }
            blank_run = 0;
            // A folded reply may name the recipient again ("said: 550\n
            // <r>: User unknown"): that line still belongs to it.
            let names_other = address_line(l).is_some_and(|(a, _)| !addr::same(&a, &address));
            if names_other || ends_block(l) {
                break;
            }
            diag.push(' ');
            diag.push_str(l.trim());
            j += 1;
        }
        match out.iter_mut().find(|f| addr::same(&f.recipient, &address)) {
            Some(f) => {
                if f.diagnostic.trim().is_empty() {
                    f.diagnostic = diag;
                } else if !is_coded(&f.diagnostic) && is_coded(&diag) {
                    // Named again with the server's reply (Exchange's
                    // "Diagnostic information for administrators").
                    f.diagnostic = format!("{} {}", f.diagnostic, diag);
                }
            }
            None => out.push(Found::new(&address, &diag)),
        }
        i = j.max(i + 1);
    }
    // Sendmail-style transcripts: ">>> RCPT To:<a>" then "<<< 550 ...".
    if out.iter().all(|f| f.diagnostic.trim().is_empty()) {
        for f in &mut out {
            if let Some(d) = transcript_reply(&lines, &f.recipient) {
                f.diagnostic = d;
            }
        }
    }
    // Recipients named inside a sentence: "... to <a@b>:" / "Unknown user: a@b".
    if out.is_empty() {
        for (k, line) in lines.iter().enumerate() {
            for (_, a) in addr::addresses(line) {
                let lower = a.to_ascii_lowercase();
                if skip.contains(&lower)
                    || lower.starts_with("mailer-daemon@")
                    || lower.starts_with("postmaster@")
                    || out.iter().any(|f| addr::same(&f.recipient, a))
                {
                    continue;
                }
                let mut diag = line.trim().to_owned();
                for next in lines.iter().skip(k + 1).take(6) {
                    if next.trim().is_empty() || ends_block(next) {
                        break;
                    }
                    diag.push(' ');
                    diag.push_str(next.trim());
                }
                if out.len() >= crate::MAX_RECIPIENTS {
                    break;
                }
                out.push(Found::new(a, &diag));
            }
        }
        // Sentences mention many addresses (senders, hosts): keep those
        // that come with an error.
        let with_error: Vec<Found> = out
            .iter()
            .filter(|f| looks_like_error(&f.diagnostic))
            .cloned()
            .collect();
        out = with_error;
    }
    for f in &mut out {
        if (f.diagnostic.trim().is_empty() || !looks_like_error(&f.diagnostic))
            && let Some(p) = mail.error_paragraph()
        {
            if f.diagnostic.trim().is_empty() {
                f.diagnostic = p.to_owned();
                f.general = true;
            } else if !f.diagnostic.contains(p) {
                f.diagnostic = format!("{} {}", f.diagnostic, p);
            }
        }
    }
    out
}

/// The reply after `RCPT To:<recipient>` in a session transcript.
fn transcript_reply(lines: &[&str], recipient: &str) -> Option<String> {
    let lower = recipient.to_ascii_lowercase();
    let at = lines.iter().position(|l| {
        let l = l.to_ascii_lowercase();
        l.contains("rcpt to:") && l.contains(&lower)
    })?;
    let mut reply = String::new();
    for l in &lines[at + 1..] {
        let t = l.trim();
        if t.starts_with("<<<") || find_reply_code(t).is_some_and(|_| reply.is_empty()) {
            reply.push_str(t.trim_start_matches("<<<").trim());
            reply.push(' ');
        } else {
            break;
        }
    }
    (!reply.trim().is_empty()).then_some(reply)
}

/// Words that say a paragraph is about a failure.
const ERROR_WORDS: &[&str] = &[
    "error",
    "fail",
    "reject",
    "denied",
    "unknown",
    "invalid",
    "not ",
    "no such",
    "unable",
    "refused",
    "blocked",
    "full",
    "quota",
    "exceed",
    "expired",
    "timed out",
    "undeliver",
    "does not",
    "doesn't",
    "couldn't",
    "could not",
    "cannot",
    "can't",
    "problem",
    "unavailable",
    "disabled",
    "suspended",
    "spam",
    "virus",
    "too ",
    "bounced",
];

fn looks_like_error(text: &str) -> bool {
    is_coded(text) || has_error_word(text)
}

/// A reply code or an enhanced status is in `text`.
fn is_coded(text: &str) -> bool {
    find_reply_code(text).is_some() || crate::classify::find_status(text).is_some()
}

/// [`ERROR_WORDS`] indexed at compile time: one pass, not one a word.
static ERROR_WORD_INDEX: crate::phrase::Index<{ ERROR_WORDS.len() }> =
    crate::phrase::Index::new(&{
        let mut out = [(1, ""); ERROR_WORDS.len()];
        let mut i = 0;
        while i < ERROR_WORDS.len() {
            out[i].1 = ERROR_WORDS[i];
            i += 1;
        }
        out
    });

fn has_error_word(text: &str) -> bool {
    ERROR_WORD_INDEX.groups_in(text.to_ascii_lowercase().as_bytes()) != 0
}

/// The paragraph of `report` that best says what went wrong: the first
/// with a reply code or status, else the first with an error word.
pub fn error_paragraph(report: &str) -> Option<String> {
    // Each paragraph is cleaned, and each test made, at most once and only
    // when a search gets that far (the reason phrases are many). Blank
    // paragraphs clean to nothing, which no test accepts.
    let raw: Vec<&str> = report.split("\n\n").collect();
    let cleaned: Vec<OnceCell<String>> = raw.iter().map(|_| OnceCell::new()).collect();
    let tests: Vec<[OnceCell<bool>; 2]> = raw.iter().map(|_| Default::default()).collect();
    let text = |i: usize| {
        cleaned[i]
            .get_or_init(|| crate::found::clean(raw[i]))
            .as_str()
    };
    let coded = |i: usize| *tests[i][0].get_or_init(|| !text(i).is_empty() && is_coded(text(i)));
    let known = |i: usize| {
        *tests[i][1].get_or_init(|| !text(i).is_empty() && crate::classify::names_a_reason(text(i)))
    };
    let all = || 0..raw.len();
    let best = all()
        .find(|&i| coded(i) && known(i))
        .or_else(|| all().find(|&i| known(i)))
        .or_else(|| all().find(|&i| coded(i)))
        // Not coded, as the search before found: an error word will do.
        .or_else(|| all().find(|&i| !text(i).is_empty() && has_error_word(text(i))))?;
    cleaned.into_iter().nth(best).and_then(OnceCell::into_inner)
}

/// The recipients of `X-Failed-Recipients`, each with what the text says
/// about it.
pub fn failed_recipients(mail: &Mail) -> Vec<Found> {
    let Some(v) = mail.header("x-failed-recipients") else {
        return Vec::new();
    };
    let from_text = scan(mail);
    let paragraph = mail.error_paragraph().unwrap_or_default();
    let mut out: Vec<Found> = Vec::new();
    for (_, a) in addr::find_all(v) {
        if out.iter().any(|f| addr::same(&f.recipient, &a)) {
            continue;
        }
        let said = from_text.iter().find(|f| addr::same(&f.recipient, &a));
        if out.len() >= crate::MAX_RECIPIENTS {
            break;
        }
        let mut f = Found::new(&a, said.map_or(paragraph, |f| f.diagnostic.as_str()));
        f.general = said.is_none_or(|f| f.general);
        out.push(f);
    }
    out
}

/// When no line names the recipient: the returned message's `To:` (one
/// recipient, the report's error text).
pub fn fallback(mail: &Mail) -> Vec<Found> {
    let diag = mail.error_paragraph().unwrap_or_default();
    if diag.is_empty() {
        return Vec::new();
    }
    let to = mail
        .original_header("to")
        .or_else(|| mail.original_header("envelope-to"))
        .or_else(|| mail.original_header("x-original-to"));
    match to.and_then(addr::first) {
        Some(a) => {
            let mut f = Found::new(&a, diag);
            f.general = true;
            vec![f]
        }
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folded_reply_naming_the_recipient_again_stays_with_it() {
        let m = "From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail Returned to Sender\n\n<u@example.org>: host\n    mx.example.org[192.0.2.22] said: 550\n    <u@example.org>: User unknown\n";
        let mail = Mail::parse(m);
        let found = scan(&mail);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].diagnostic.ends_with("User unknown"), "{found:?}");
    }

    #[test]
    fn recipient_lines() {
        assert_eq!(
            address_line("<kijitora@example.jp>:")
                .map(|(a, _)| a)
                .as_deref(),
            Some("kijitora@example.jp")
        );
        assert_eq!(
            address_line("  kijitora@example.jp")
                .map(|(a, _)| a)
                .as_deref(),
            Some("kijitora@example.jp")
        );
        let (a, d) = address_line("<a@example.org>... User unknown").unwrap();
        assert_eq!((a.as_str(), d.as_str()), ("a@example.org", "User unknown"));
        let (a, d) = address_line("      'nobody@example.org' on 12/7/2026 10:00 AM").unwrap();
        assert_eq!(
            (a.as_str(), d.as_str()),
            ("nobody@example.org", "on 12/7/2026 10:00 AM")
        );
        assert!(address_line("kijitora@example.jp wrote a message").is_none());
        assert!(address_line("Please contact postmaster@example.jp now").is_none());
        // Exchange 5.5's Internet Mail Service, unquoted.
        let (a, _) = address_line("gone@example.org on Thu, 24 Feb 2000 11:14:44 -0500").unwrap();
        assert_eq!(a, "gone@example.org");
        assert!(address_line("gone@example.org on the way out").is_none());
    }

    #[test]
    fn exchange_5_5_lists_each_recipient_with_the_date() {
        let m = "From: System Administrator <postmaster@ex.example.org>\nSubject: Undeliverable: hi\n\nYour message\n\n  To:      list@example.net\n  Subject: hi\n\ndid not reach the following recipient(s):\n\ngone@example.org on Thu, 24 Feb 2000 11:14:44 -0500\n    The recipient name is not recognized\n    MSEXCH:IMS:Example:Site:EX1 0 (000C05A6) Unknown Recipient\n";
        let found = scan(&Mail::parse(m));
        let gone = found.iter().find(|f| f.recipient == "gone@example.org");
        assert!(
            gone.is_some_and(|f| f.diagnostic.contains("not recognized")),
            "{found:?}"
        );
    }
}
