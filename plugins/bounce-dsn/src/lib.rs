//! The default bounce parser.
//!
//! - E-mails: RFC 3464 `message/delivery-status` reports (per-recipient
//!   `Final-Recipient`, `Action`, `Status`, `Diagnostic-Code`), else the
//!   plain-text bounces of Postfix, qmail and Exim that name the recipient
//!   followed by the remote server's reply.
//! - SMTP replies and log lines: classified by reply code, enhanced status
//!   and text.
//!
//! Never fails: input it cannot read yields no results and a note.

mod classify;
mod mime;

use sluice_sdk::bounce::*;

/// The plugin.
pub struct DsnParser;

impl BounceParser for DsnParser {
    fn parse(input: BounceInput) -> BounceOutput {
        match input {
            BounceInput::Email(bytes) => parse_email(&bytes),
            BounceInput::Reply(r) => {
                let status = r.reply.enhanced.clone().unwrap_or_default();
                let result =
                    classify::result(r.recipient, &status, Some(r.reply.code), r.reply.text, "");
                BounceOutput {
                    results: vec![result],
                    notes: Vec::new(),
                }
            }
            BounceInput::LogLine(line) => parse_log_line(&line),
        }
    }
}

fn parse_email(bytes: &[u8]) -> BounceOutput {
    let text = mime::normalize(bytes);
    let message = mime::Part::parse(&text);
    let verp_token = message.header("to").and_then(|to| mime::verp_token(&to));
    let original_id = mime::original_message_id(&message);
    let mut results = match message.find_content_type("message/delivery-status") {
        Some(dsn) => mime::dsn_recipients(&dsn.body)
            .into_iter()
            .filter_map(|f| classify::from_dsn_fields(&f))
            .collect(),
        None => classify::from_plain_text(&message.all_text()),
    };
    for r in &mut results {
        r.verp_token = verp_token.clone();
        r.original_message_id = original_id.clone();
    }
    let notes = if results.is_empty() {
        vec!["no failed recipient found: not a delivery status report and no recipient with a reply in the text".into()]
    } else {
        Vec::new()
    };
    BounceOutput { results, notes }
}

/// Postfix `to=<r>, … status=bounced (…)` and qmail `delivery N: failure: …` lines.
fn parse_log_line(line: &str) -> BounceOutput {
    let recipient = line
        .split_once("to=<")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(r, _)| r.to_owned());
    let failed = line.contains("status=bounced")
        || line.contains("status=deferred")
        || line.contains(": failure: ")
        || line.contains(": deferral: ");
    match (recipient, failed) {
        (Some(recipient), true) => {
            let detail = line
                .split_once(" (")
                .map(|(_, d)| d.trim_end_matches(')').to_owned())
                .unwrap_or_else(|| line.to_owned());
            let status = classify::find_status(&detail).unwrap_or_default();
            let code = classify::find_reply_code(&detail);
            let mut r = classify::result(recipient, &status, code, detail, "");
            if line.contains("status=deferred") || line.contains(": deferral: ") {
                r.hard = false;
                r.action = "delayed".into();
            }
            BounceOutput {
                results: vec![r],
                notes: Vec::new(),
            }
        }
        _ => BounceOutput {
            results: Vec::new(),
            notes: vec![format!(
                "not a failed delivery line: {:?}",
                truncate(line, 120)
            )],
        },
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

sluice_sdk::export_bounce_parser!(DsnParser);

#[cfg(test)]
mod tests {
    use super::*;

    const POSTFIX_DSN: &str = "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r
To: bounces+abc123@bounce.example.com\r
Subject: Undelivered Mail Returned to Sender\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary=\"B1\"\r
\r
--B1\r
Content-Type: text/plain\r
\r
I'm sorry to have to inform you that your message could not be delivered.\r
--B1\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.example.org\r
\r
Final-Recipient: rfc822; nobody@example.org\r
Original-Recipient: rfc822;nobody@example.org\r
Action: failed\r
Status: 5.1.1\r
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: Recipient address\r
    rejected: User unknown in local recipient table\r
\r
Final-Recipient: rfc822; full@example.org\r
Action: failed\r
Status: 5.2.2\r
Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r
--B1\r
Content-Type: text/rfc822-headers\r
\r
Message-ID: <orig-1@example.com>\r
Subject: hello\r
--B1--\r
";

    #[test]
    fn reads_rfc3464_reports() {
        let out = DsnParser::parse(BounceInput::Email(POSTFIX_DSN.as_bytes().to_vec()));
        assert_eq!(out.results.len(), 2, "{out:?}");
        let a = &out.results[0];
        assert_eq!(a.recipient, "nobody@example.org");
        assert_eq!(
            (a.status.as_str(), a.reply_code, a.reason, a.hard),
            ("5.1.1", Some(550), Reason::Userunknown, true)
        );
        assert!(
            a.diagnostic
                .contains("User unknown in local recipient table"),
            "{}",
            a.diagnostic
        );
        assert_eq!(a.verp_token.as_deref(), Some("abc123"));
        assert_eq!(
            a.original_message_id.as_deref(),
            Some("<orig-1@example.com>")
        );
        assert_eq!(out.results[1].reason, Reason::Mailboxfull);
    }

    #[test]
    fn same_result_with_lf_and_cr_line_endings() {
        let lf = POSTFIX_DSN.replace("\r\n", "\n");
        let cr = POSTFIX_DSN.replace("\r\n", "\r");
        let want = DsnParser::parse(BounceInput::Email(POSTFIX_DSN.as_bytes().to_vec()));
        assert_eq!(DsnParser::parse(BounceInput::Email(lf.into_bytes())), want);
        assert_eq!(DsnParser::parse(BounceInput::Email(cr.into_bytes())), want);
    }

    #[test]
    fn reads_qmail_plain_text_bounces() {
        let qmail = "From: MAILER-DAEMON@q.example\nSubject: failure notice\n\nHi. This is the qmail-send program at q.example.\nI'm afraid I wasn't able to deliver your message to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n<gone@example.net>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 <gone@example.net>: user unknown\nGiving up on 192.0.2.1.\n\n--- Below this line is a copy of the message.\n";
        let out = DsnParser::parse(BounceInput::Email(qmail.as_bytes().to_vec()));
        assert_eq!(out.results.len(), 1, "{out:?}");
        assert_eq!(out.results[0].recipient, "gone@example.net");
        assert_eq!(out.results[0].reason, Reason::Userunknown);
    }

    #[test]
    fn garbage_gives_a_note_not_a_failure() {
        let out = DsnParser::parse(BounceInput::Email(vec![0xff, 0xfe, b'\n', b'x']));
        assert!(out.results.is_empty());
        assert_eq!(out.notes.len(), 1);
    }

    #[test]
    fn classifies_replies_and_log_lines() {
        let reply = SmtpReply {
            code: 452,
            enhanced: Some("4.2.2".into()),
            text: "mailbox full".into(),
        };
        let out = DsnParser::parse(BounceInput::Reply(ReplyInput {
            recipient: "a@b.c".into(),
            reply,
        }));
        assert_eq!(
            (out.results[0].reason, out.results[0].hard),
            (Reason::Mailboxfull, false)
        );
        let line = "Jan  1 00:00:00 mx postfix/smtp[1]: ABC: to=<x@y.z>, relay=mx.y.z[192.0.2.1]:25, delay=1, status=bounced (host mx.y.z said: 550 5.7.1 Message rejected as spam (in reply to end of DATA command))";
        let out = DsnParser::parse(BounceInput::LogLine(line.into()));
        assert_eq!(out.results[0].recipient, "x@y.z");
        assert_eq!(out.results[0].reason, Reason::Spamdetected);
    }
}
