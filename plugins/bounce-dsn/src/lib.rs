//! The default bounce parser, modelled on Sisimai.
//!
//! - E-mails: ARF feedback reports (`feedback`); RFC 3464 delivery status
//!   notifications (per-recipient `Final-Recipient`, `Action`, `Status`,
//!   `Diagnostic-Code`, the reply taken from the text when the report has
//!   none); the plain-text bounces of qmail, Exim, Postfix, Sendmail,
//!   Exchange and the providers (recipient lines followed by the reason);
//!   RFC 3834 auto-replies (`vacation`); fml mailing-list errors; Amazon
//!   SES's JSON notifications (`ses`).
//! - Per-format rules (`lhost`, after Sisimai's `Lhost::*` and `MDA`): a
//!   format known by its headers decides the reason by its own sentences.
//! - SMTP replies and log lines: classified by reply code, enhanced status
//!   and text.
//!
//! Classification ([`classify`]) follows Sisimai's reason rules, so results
//! compare with that reference. Never fails: input it cannot read yields no
//! results and a note. With results, the notes say per recipient which
//! rule decided each field (`rule <recipient>: recipient=...; replycode=...;
//! status=...; reason=...; hard=...`), for `sluice bounce parse --explain`.

mod addr;
mod bytes;
mod classify;
mod dsn;
mod feedback;
mod found;
mod lhost;
mod mail;
mod mime;
mod phrase;
mod plain;
mod ses;

use found::Found;
use sluice_sdk::bounce::*;

/// The plugin.
pub struct DsnParser;

/// Recipients read from one e-mail at most: a report naming more is
/// abuse, and the bound keeps every call well inside its time limit.
pub(crate) const MAX_RECIPIENTS: usize = 1000;

impl BounceParser for DsnParser {
    fn parse(input: BounceInput) -> BounceOutput {
        match input {
            BounceInput::Email(bytes) => parse_email(&bytes),
            BounceInput::Reply(r) => {
                let mut f = Found::new(&r.recipient, &r.reply.text);
                f.status = r.reply.enhanced.clone().unwrap_or_default();
                f.reply_code = Some(r.reply.code);
                f.via = "smtp-reply-recipient";
                let (result, why) = found::finish_why(f, &|| None);
                BounceOutput {
                    notes: vec![why.note(&result.recipient)],
                    results: vec![result],
                }
            }
            BounceInput::LogLine(line) => parse_log_line(&line),
        }
    }
}

/// Marks what `reader` found with its name (the recipient's rule).
fn via(mut found: Vec<Found>, reader: &'static str) -> Vec<Found> {
    for f in &mut found {
        if f.via.is_empty() {
            f.via = reader;
        }
    }
    found
}

/// The reader that found the recipients, for the note of an empty answer.
fn read(mail: &mail::Mail) -> Vec<Found> {
    if let Some(found) = feedback::arf(mail) {
        return via(found, "arf-feedback-report");
    }
    if let Some(found) = ses::read(mail) {
        return found;
    }
    if let Some(found) = lhost::fml(mail) {
        return via(found, "fml-error-text");
    }
    let found = dsn::read(mail);
    if !found.is_empty() {
        return via(found, "dsn-final-recipient");
    }
    // An auto-reply says so in its headers; a bounce in its subject or sender.
    if feedback::marked_auto_reply(mail)
        && !plain::is_bounce_by_words(mail)
        && let Some(found) = feedback::vacation(mail)
    {
        return via(found, "rfc3834-auto-reply");
    }
    if plain::is_bounce(mail) {
        // Exim and Google name the failed recipients in a header: that
        // beats any address the text mentions.
        let mut found = via(plain::failed_recipients(mail), "x-failed-recipients");
        if found.is_empty() {
            found = via(plain::scan(mail), "text-recipient-line");
        }
        if found.is_empty() {
            found = via(plain::fallback(mail), "returned-message-to");
        }
        // Google Groups bounces a post to a group the sender may not post
        // to: the group is the recipient, the post was rejected.
        for f in &mut found {
            if f.recipient
                .to_ascii_lowercase()
                .ends_with("@googlegroups.com")
            {
                f.decide(Reason::Rejected, "format-google-groups-post-refused");
            }
        }
        if !found.is_empty() {
            return found;
        }
    }
    via(
        feedback::vacation(mail).unwrap_or_default(),
        "rfc3834-auto-reply",
    )
}

fn parse_email(bytes: &[u8]) -> BounceOutput {
    let text = mime::normalize(bytes);
    if text.trim().is_empty() {
        return BounceOutput {
            results: Vec::new(),
            notes: vec!["empty input: no e-mail to read".into()],
        };
    }
    let mail = mail::Mail::parse(&text);
    let verp_token = mail.header("to").and_then(verp_token);
    let original_id = mail
        .original_header("message-id")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let mut results: Vec<BounceResult> = Vec::new();
    let mut rules: Vec<String> = Vec::new();
    let mut found = read(&mail);
    lhost::apply(&mail, &mut found);
    // Read at most once per e-mail, and only when a diagnostic does not
    // name the command itself: the report can be long.
    let report_command = std::cell::OnceCell::new();
    let delay_notice = std::cell::OnceCell::new();
    for mut f in found {
        if f.recipient.trim().is_empty()
            || results
                .iter()
                .any(|r| addr::same(&r.recipient, f.recipient.trim()))
        {
            continue;
        }
        // A plain-text delay notice is what RFC 3464 calls `delayed`.
        if f.action.is_empty() && *delay_notice.get_or_init(|| mail.is_delay_notice()) {
            f.action = "delayed".into();
        }
        let context = || {
            *report_command.get_or_init(|| {
                classify::find_command(&mail.report)
                    .or_else(|| classify::find_labelled_command(&mail.report))
            })
        };
        let retry = f.reason.is_none().then(|| f.clone());
        let (mut r, mut why) = found::finish_why(f, &context);
        // Nothing said of this recipient names a cause: the report's own
        // explanation, said of all its recipients, may.
        if matches!(r.reason, Reason::Onhold | Reason::Undefined)
            && let Some(mut again) = retry
            && let Some(p) = mail.error_paragraph()
            && !again.diagnostic.contains(p)
        {
            again.diagnostic = format!("{} {p}", again.diagnostic);
            let (r2, why2) = found::finish_why(again, &context);
            if !matches!(
                r2.reason,
                Reason::Onhold | Reason::Undefined | Reason::Delivered
            ) {
                if why.status.starts_with("pseudo-status") {
                    r.status = r2.status;
                    why.status = why2.status;
                }
                (r.reason, r.hard) = (r2.reason, r2.hard);
                (why.reason, why.hard) = ("report-paragraph", why2.hard);
            }
        }
        r.verp_token = verp_token.clone();
        r.original_message_id = original_id.clone();
        rules.push(why.note(&r.recipient));
        results.push(r);
    }
    let notes = if results.is_empty() {
        vec![format!(
            "no failed recipient found in {:?}: not a delivery status report, feedback report or auto-reply, and no recipient with a reason in the text",
            truncate(&mail.subject, 80)
        )]
    } else {
        rules
    };
    BounceOutput { results, notes }
}

/// `TOKEN` of a `bounces+TOKEN@domain` return path.
fn verp_token(to: &str) -> Option<String> {
    let address = addr::from_field(to)?;
    let local = address.split_once('@')?.0;
    let token = local.split_once('+')?.1;
    (!token.is_empty()).then(|| token.to_owned())
}

/// Postfix `to=<r>, … status=bounced (…)`, Exim `** r …` and qmail
/// `delivery N: failure: …` lines.
fn parse_log_line(line: &str) -> BounceOutput {
    let recipient = line
        .split_once("to=<")
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(r, _)| r.to_owned())
        .or_else(|| {
            line.split_once(" ** ")
                .and_then(|(_, rest)| addr::first(rest.split(' ').next().unwrap_or("")))
        })
        .or_else(|| {
            line.contains(": failure: ")
                .then(|| addr::first(line))
                .flatten()
        });
    let deferred = line.contains("status=deferred") || line.contains(": deferral: ");
    let failed = deferred
        || line.contains("status=bounced")
        || line.contains(": failure: ")
        || line.contains(" ** ");
    match (recipient, failed) {
        (Some(recipient), true) => {
            let detail = line
                .split_once(" (")
                .map(|(_, d)| d.trim_end().trim_end_matches(')').to_owned())
                .or_else(|| line.split_once(": failure: ").map(|(_, d)| d.to_owned()))
                .or_else(|| line.split_once(": deferral: ").map(|(_, d)| d.to_owned()))
                .unwrap_or_else(|| line.to_owned());
            // qmail writes the remote reply with '_' for spaces.
            let detail = if line.contains(": failure: ") || line.contains(": deferral: ") {
                detail.replace('_', " ")
            } else {
                detail
            };
            let mut f = Found::new(&recipient, &detail);
            if deferred {
                f.action = "delayed".into();
            }
            f.via = "log-line-recipient";
            let (mut r, mut why) = found::finish_why(f, &|| None);
            if deferred {
                r.hard = false;
                why.hard = "log-line-deferred";
            }
            BounceOutput {
                notes: vec![why.note(&r.recipient)],
                results: vec![r],
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
    fn notes_say_which_rule_decided_each_field() {
        let out = DsnParser::parse(BounceInput::Email(POSTFIX_DSN.as_bytes().to_vec()));
        assert_eq!(out.notes.len(), 2, "{:?}", out.notes);
        assert_eq!(
            out.notes[0],
            "rule nobody@example.org: recipient=dsn-final-recipient; replycode=reply-in-diagnostic; status=dsn-status-field; reason=status-x.1.x-address; hard=hard-reason-address-gone"
        );
        assert!(
            out.notes[1].starts_with("rule full@example.org: ")
                && out.notes[1].contains("reason=status-narrow"),
            "{}",
            out.notes[1]
        );
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

    fn first(mail: &str) -> BounceResult {
        let out = DsnParser::parse(BounceInput::Email(mail.as_bytes().to_vec()));
        out.results.into_iter().next().expect("a result")
    }

    #[test]
    fn the_servers_reply_in_a_later_paragraph_or_a_later_mention_is_read() {
        // Gmail's plain notice: the reply follows "...returned was:".
        let gmail = "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nSubject: Delivery Status Notification (Failure)\n\nDelivery to the following recipient failed permanently:\n\n     gone@example.org\n\nTechnical details of permanent failure:\nGoogle tried to deliver your message, but it was rejected by the server for the recipient domain example.org by mx.example.org. [192.0.2.1].\n\nThe error that the other server returned was:\n550 5.1.1 <gone@example.org>... User Unknown (state 14).\n\n----- Original message -----\n";
        let r = first(gmail);
        assert_eq!(
            (r.status.as_str(), r.reason),
            ("5.1.1", Reason::Userunknown)
        );
        // Exchange names the recipient again under "Diagnostic information
        // for administrators", with the status.
        let exchange = "From: postmaster@ex.example.net\nSubject: Undeliverable: hi\n\nDelivery has failed to these recipients or groups:\n\ngone@example.org\nThe e-mail address you entered couldn't be found.\n\nDiagnostic information for administrators:\n\nGenerating server: ex.example.net\n\ngone@example.org\n#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##\n";
        let r = first(exchange);
        assert_eq!(
            (r.status.as_str(), r.reason),
            ("5.1.1", Reason::Userunknown)
        );
    }

    #[test]
    fn the_reports_own_explanation_decides_when_the_recipients_line_does_not() {
        let mail = "From: MAILER-DAEMON@mx.example.net\nSubject: Returned mail\n\nYour message could not be delivered for 5 days, the mail system gave up.\n\n<slow@example.org>: 451 please hold on\n";
        let out = DsnParser::parse(BounceInput::Email(mail.as_bytes().to_vec()));
        assert_eq!(out.results[0].reason, Reason::Expired, "{out:?}");
        assert!(
            out.notes[0].contains("reason=report-paragraph"),
            "{:?}",
            out.notes
        );
    }

    #[test]
    fn reports_that_name_the_recipient_step_in_their_own_words() {
        // Sun/Oracle Messaging Server and GMX's Exim.
        let sun = "From: Internet Mail Delivery <postmaster@ms.example.net>\nSubject: Delivery Notification: Delivery has failed\n\nYour message cannot be delivered to the following recipients:\n\n  Recipient address: gone@example.org\n  Reason: Remote SMTP server has rejected address\n  Diagnostic code: smtp;550 No such user\n";
        assert_eq!(first(sun).reason, Reason::Userunknown);
        let gmx = "From: \"Mail Delivery System\" <mailer-daemon@gmx.net>\nSubject: Mail delivery failed: returning message to sender\n\nThe following address(es)\nfailed:\n\n\"gone@example.org\":\nSMTP error from remote server after RCPT command:\nhost: mx.example.org\n550 no such user\n";
        assert_eq!(first(gmx).reason, Reason::Userunknown);
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

    fn reply(code: u16, enhanced: &str, text: &str) -> BounceResult {
        let out = DsnParser::parse(BounceInput::Reply(ReplyInput {
            recipient: "rcpt@example.org".into(),
            reply: SmtpReply {
                code,
                enhanced: (!enhanced.is_empty()).then(|| enhanced.into()),
                text: text.into(),
            },
        }));
        out.results
            .into_iter()
            .next()
            .expect("a reply always gives a result")
    }

    #[test]
    fn replies_are_classified_like_sisimai() {
        let cases: &[(u16, &str, &str, Reason, bool)] = &[
            (
                550,
                "5.1.1",
                "<a@b.example>: Recipient address rejected: User unknown in local recipient table",
                Reason::Userunknown,
                true,
            ),
            (552, "5.2.2", "Mailbox full", Reason::Mailboxfull, false),
            (
                550,
                "5.1.1",
                "The email account that you tried to reach is over quota",
                Reason::Mailboxfull,
                false,
            ),
            (
                554,
                "5.7.1",
                "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
                Reason::Blocked,
                false,
            ),
            (
                550,
                "5.7.1",
                "Message rejected as spam by Content Filtering",
                Reason::Spamdetected,
                false,
            ),
            (
                550,
                "5.7.26",
                "This message does not have authentication information or fails to pass authentication checks",
                Reason::Authfailure,
                false,
            ),
            (550, "5.1.6", "Recipient has moved", Reason::Hasmoved, true),
            (
                552,
                "5.3.4",
                "Message size exceeds fixed limit",
                Reason::Mesgtoobig,
                false,
            ),
            (
                550,
                "5.2.1",
                "The email account that you tried to reach is disabled",
                Reason::Suspend,
                false,
            ),
            (
                554,
                "5.7.1",
                "<a@b.example>: Relay access denied",
                Reason::Norelaying,
                false,
            ),
            (
                421,
                "4.7.0",
                "Try again later, closing connection. (EHLO) too many connections",
                Reason::Toomanyconn,
                false,
            ),
            (
                550,
                "5.7.25",
                "The IP address sending this message does not have a PTR record setup",
                Reason::Requireptr,
                false,
            ),
            (550, "", "Host unknown", Reason::Hostunknown, true),
            (
                556,
                "5.1.10",
                "Recipient address has null MX",
                Reason::Notaccept,
                true,
            ),
            (
                550,
                "5.1.10",
                "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
                Reason::Userunknown,
                true,
            ),
        ];
        for (code, status, text, reason, hard) in cases {
            let r = reply(*code, status, text);
            assert_eq!(
                (r.reason, r.hard),
                (*reason, *hard),
                "{code} {status} {text}"
            );
        }
    }

    #[test]
    fn status_and_reply_code_are_read_from_the_text_when_missing() {
        let r = reply(550, "", "550 5.1.1 <a@b.example>... User unknown");
        assert_eq!(r.status, "5.1.1");
        let r = reply(550, "", "Unknown user here");
        // No status anywhere: Sisimai's pseudo status for the reason (an
        // unknown user at an unnamed step is one, by RFC 3463 X.1.1).
        assert_eq!(
            (r.status.as_str(), r.reason),
            ("5.0.911", Reason::Userunknown)
        );
    }

    #[test]
    fn unknown_user_after_data_is_a_filter_before_data_an_unknown_user() {
        let after = reply(
            550,
            "",
            "host mx said: 550 Unknown user (in reply to end of DATA command)",
        );
        let before = reply(
            550,
            "",
            "host mx said: 550 Unknown user (in reply to RCPT TO command)",
        );
        assert_eq!(
            (after.reason, before.reason),
            (Reason::Filtered, Reason::Userunknown)
        );
        assert!(!after.hard && before.hard);
    }

    #[test]
    fn a_plain_text_delay_notice_is_temporary() {
        let m = "From: MAILER-DAEMON@mx.example.com\nSubject: Warning: could not send message for past 4 hours\n\n    **********************************************\n    **      THIS IS A WARNING MESSAGE ONLY      **\n    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n    **********************************************\n\nThe original message was received at Mon, 1 Jan 2001 00:00:00\n\n   ----- The following addresses had transient non-fatal errors -----\n<kim@example.org>\n\n   ----- Transcript of session follows -----\nkim@example.org... Deferred: Connection timed out with mx.example.org.\nWarning: message still undelivered after 4 hours\nWill keep trying until message is 5 days old\n";
        let r = first(m);
        assert_eq!(
            (r.reason, r.status.as_str(), r.action.as_str()),
            (Reason::Expired, "4.0.947", "delayed"),
            "{r:?}"
        );
    }

    #[test]
    fn reads_exim_plain_text_with_failed_recipients_header() {
        let exim = "From: Mail Delivery System <Mailer-Daemon@mx.example.net>\nTo: sender@example.com\nSubject: Mail delivery failed: returning message to sender\nX-Failed-Recipients: gone@example.org\n\nThis message was created automatically by mail delivery software.\n\nA message that you sent could not be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) failed:\n\n  gone@example.org\n    SMTP error from remote mail server after RCPT TO:<gone@example.org>:\n    host mx.example.org [192.0.2.9]: 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown\n\n------ This is a copy of the message, including all the headers. ------\n\nMessage-Id: <m1@example.com>\nTo: gone@example.org\nFrom: sender@example.com\n\nhi\n";
        let out = DsnParser::parse(BounceInput::Email(exim.as_bytes().to_vec()));
        assert_eq!(out.results.len(), 1, "{out:?}");
        let r = &out.results[0];
        assert_eq!(
            (r.recipient.as_str(), r.status.as_str(), r.reply_code),
            ("gone@example.org", "5.1.1", Some(550))
        );
        assert_eq!((r.reason, r.hard), (Reason::Userunknown, true));
        assert_eq!(r.original_message_id.as_deref(), Some("<m1@example.com>"));
    }

    #[test]
    fn reads_feedback_reports_and_auto_replies() {
        let arf = "From: abuse@isp.example\nTo: fbl@example.com\nSubject: FW: hi\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nThis is an email abuse report.\n--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: x/1\nVersion: 1\nOriginal-Rcpt-To: <complainer@isp.example>\n\n--b\nContent-Type: message/rfc822\n\nFrom: news@example.com\nTo: complainer@isp.example\nMessage-ID: <n1@example.com>\n\nbuy\n--b--\n";
        let out = DsnParser::parse(BounceInput::Email(arf.as_bytes().to_vec()));
        assert_eq!(out.results[0].recipient, "complainer@isp.example");
        assert_eq!(
            (out.results[0].reason, out.results[0].hard),
            (Reason::Feedback, false)
        );
        let away = "From: Kim <kim@example.org>\nTo: news@example.com\nSubject: Out of Office: hi\nAuto-Submitted: auto-replied\n\nI am away until Monday.\n";
        let out = DsnParser::parse(BounceInput::Email(away.as_bytes().to_vec()));
        assert_eq!(out.results[0].recipient, "kim@example.org");
        assert_eq!(out.results[0].reason, Reason::Vacation);
    }

    #[test]
    fn base64_delivery_status_and_wrong_boundary_are_read() {
        let dsn = "Reporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.2.2\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\n";
        let b64 = {
            const T: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for c in dsn.as_bytes().chunks(3) {
                let n = (u32::from(c[0]) << 16)
                    | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                    | u32::from(*c.get(2).unwrap_or(&0));
                for i in 0..4 {
                    if i <= c.len() {
                        s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char)
                    } else {
                        s.push('=')
                    }
                }
            }
            s
        };
        let mail = format!(
            "From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail\nContent-Type: multipart/report; boundary=\"declared\"\n\n--actual\nContent-Type: text/plain\n\nSorry.\n--actual\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n{b64}\n--actual--\n"
        );
        let out = DsnParser::parse(BounceInput::Email(mail.into_bytes()));
        assert_eq!(out.results.len(), 1, "{out:?}");
        assert_eq!(
            (out.results[0].reason, out.results[0].status.as_str()),
            (Reason::Mailboxfull, "5.2.2")
        );
    }

    #[test]
    fn ordinary_mail_is_not_a_bounce() {
        let m = "From: friend@example.org\nTo: me@example.com\nSubject: lunch?\n\nAre you free at noon? Write to bob@example.net.\n";
        let out = DsnParser::parse(BounceInput::Email(m.as_bytes().to_vec()));
        assert!(out.results.is_empty());
        assert_eq!(out.notes.len(), 1);
    }

    /// Every e-mail of the corpus beside the crate, cut short at many
    /// points and with bytes overwritten: the parser never panics and always
    /// answers with results or a note.
    #[test]
    fn damaged_corpus_mail_never_breaks_the_parser() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/bounces");
        let mut dirs = vec![root];
        let mut files = Vec::new();
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("corpus directory") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "eml") {
                    files.push(p);
                }
            }
        }
        assert!(files.len() > 400, "only {} corpus files", files.len());
        let mut runs = 0;
        for f in files.iter().step_by(7) {
            let bytes = std::fs::read(f).expect("corpus file");
            for cut in 1..8 {
                let end = bytes.len() * cut / 8;
                let mut damaged = bytes[..end].to_vec();
                for i in (0..damaged.len()).step_by(97) {
                    damaged[i] = [0xff, b'\r', b'-', b'=', 0][i % 5];
                }
                for input in [bytes[..end].to_vec(), damaged] {
                    let out = DsnParser::parse(BounceInput::Email(input));
                    assert!(
                        !out.results.is_empty() || !out.notes.is_empty(),
                        "{}",
                        f.display()
                    );
                    runs += 1;
                }
            }
        }
        assert!(runs > 500, "only {runs} runs");
    }

    #[test]
    fn deeply_nested_multiparts_are_bounded() {
        let mut m = String::from("Subject: Undelivered Mail\n");
        for i in 0..200 {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
            ));
        }
        m.push_str("\n<a@example.org>: 550 5.1.1 user unknown\n");
        let out = DsnParser::parse(BounceInput::Email(m.into_bytes()));
        assert!(!out.results.is_empty() || !out.notes.is_empty());
    }

    #[test]
    fn a_report_naming_very_many_recipients_is_bounded() {
        let mut m =
            String::from("From: MAILER-DAEMON@mx.example.org\nSubject: Undelivered Mail\n\n");
        for i in 0..50_000 {
            m.push_str(&format!("<user{i}@example.org>: 550 5.1.1 user unknown\n"));
        }
        let out = DsnParser::parse(BounceInput::Email(m.into_bytes()));
        assert_eq!(out.results.len(), MAX_RECIPIENTS);
    }
}
