//! Per-MTA and per-provider rules, after Sisimai's `Lhost::*` and `MDA`
//! modules: a bounce format recognised by its headers names its failures
//! in fixed sentences, and those decide the reason before the generic
//! phrase tables of [`crate::classify`] (which cannot tell, say, an
//! IMail "Unknown user" from a content filter's).
//!
//! Each rule only sets the reason (and, where the format puts the server's
//! words elsewhere, the diagnostic) of recipients whose reason no reader
//! decided; everything else is left to the classifier.

use crate::found::Found;
use crate::mail::Mail;
use sluice_sdk::bounce::Reason;

/// Applies the rules of the format `mail` is in to its recipients.
pub fn apply(mail: &Mail, found: &mut [Found]) {
    if found.iter().all(|f| f.reason.is_some()) {
        return;
    }
    let from = mail.from.to_ascii_lowercase();
    let subject = mail.subject.trim();
    if subject.starts_with("Returned mail: ")
        && mail
            .report
            .contains("----- Transcript of session follows -----")
    {
        sendmail_transcript(mail, found);
    }
    if mail.header("x-ymailisg").is_some() {
        // Yahoo quotes the remote reply without naming the command; one
        // that names the address answered RCPT (Sisimai's `Lhost::Yahoo`).
        for f in found.iter_mut().filter(|f| f.command.is_none()) {
            let d = &f.diagnostic;
            if d.find('<')
                .is_some_and(|i| d[i..].contains('@') && d[i..].contains('>'))
            {
                f.command = Some(crate::classify::Command::Rcpt);
            }
        }
    }
    let domino =
        subject.starts_with("DELIVERY FAILURE:") || subject.starts_with("DELIVERY_FAILURE:");
    if domino {
        domino_recipient(mail, found);
    }
    let open = found.iter_mut().filter(|f| f.reason.is_none());
    let format;
    if subject.eq_ignore_ascii_case("Undeliverable Mail")
        || mail
            .header("x-mailer")
            .is_some_and(|x| x.trim_start().starts_with("<SMTP32 v"))
    {
        format = "format-imail-sentence";
        imail(mail, open);
    } else if domino {
        format = "format-domino-sentence";
        by_table(open, DOMINO);
    } else if mail.header("x-ses-outgoing").is_some() {
        format = "format-amazon-ses-sentence";
        by_table(open, RECEIVING_SES);
    } else if is_ezweb(mail, &from, subject) {
        format = "format-ezweb-sentence";
        ezweb(mail, open);
    } else if is_verizon(mail) {
        format = "format-verizon-sentence";
        verizon(mail, open);
    } else if from.contains("\"interscan mss\"")
        || from.contains("\"interscan notification\"")
        || subject == "Mail could not be delivered"
    {
        format = "format-interscan-sentence";
        for f in open {
            if f.diagnostic.contains("Unable to deliver") {
                f.reason = Some(Reason::Userunknown);
            }
        }
    } else if !claimed_by_mta(mail, subject)
        && let Some((reason, line)) = mda(mail, &from)
    {
        format = "format-local-delivery-agent";
        for f in open {
            f.reason = Some(reason);
            f.diagnostic = line.clone();
        }
    } else {
        format = "format";
    }
    for f in found.iter_mut() {
        if f.reason.is_some() && f.reason_rule.is_empty() {
            f.reason_rule = format;
        }
    }
}

/// A Sendmail (V5 and later) session transcript: `554 <r>... text` names a
/// recipient; a `>>> COMMAND` and `<<< reply` of the conversation before
/// it are what the remote server said about that recipient (Sisimai's
/// `Lhost::V5sendmail`).
fn sendmail_transcript(mail: &Mail, found: &mut [Found]) {
    let text = match mail
        .report
        .split_once("----- Transcript of session follows -----")
    {
        Some((_, t)) => t,
        None => return,
    };
    let mut command: Option<crate::classify::Command> = None;
    let mut reply: Option<&str> = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix(">>>") {
            command = crate::classify::find_command(&format!(">>> {}", c.trim()));
            reply = None;
        } else if let Some(r) = line.strip_prefix("<<<") {
            reply = Some(r.trim());
        } else if let Some((address, said)) = transcript_recipient(line) {
            let Some(f) = found
                .iter_mut()
                .find(|f| f.reason.is_none() && crate::addr::same(&f.recipient, address))
            else {
                continue;
            };
            f.diagnostic = match reply.take() {
                Some(r) => format!("{said}: {r}"),
                None => said.to_owned(),
            };
            if command.is_some() {
                f.command = command.take();
            }
        } else if line.starts_with("----- ") {
            break;
        }
    }
}

/// `554 <r@example.org>... what went wrong`.
fn transcript_recipient(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    if b.len() < 6 || !b[..3].iter().all(u8::is_ascii_digit) || b[3] != b' ' {
        return None;
    }
    let rest = line[4..].trim_start().strip_prefix('<')?;
    let (address, after) = rest.split_once(">...")?;
    address.contains('@').then(|| (address, after.trim()))
}

/// Sentences (case-sensitive, as the format writes them) and their reason.
type Table = &'static [(&'static str, Reason)];

fn by_table<'a>(found: impl Iterator<Item = &'a mut Found>, table: Table) {
    for f in found {
        if let Some((_, r)) = table.iter().find(|(p, _)| f.diagnostic.contains(p)) {
            f.reason = Some(*r);
        }
    }
}

/// Domino's text names the recipient it failed ("was not delivered to:"
/// and the address on a line below); a DSN that relayed it may name
/// another (Sisimai reads the text).
fn domino_recipient(mail: &Mail, found: &mut [Found]) {
    let [only] = found else { return };
    let Some((_, after)) = mail.report.split_once("was not delivered to:") else {
        return;
    };
    let Some(line) = after.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return;
    };
    if let Some(a) = crate::addr::first(line)
        && line.len() == a.len()
        && !crate::addr::same(&a, &only.recipient)
    {
        only.recipient = a;
    }
}

/// fml mailing-list errors (Sisimai's `Lhost::FML`): the list manager
/// answers a post with a sentence ending in `<address>.`.
pub fn fml(mail: &Mail) -> Option<Vec<Found>> {
    mail.header("x-mlserver")?;
    if !mail.from.contains("-admin@") {
        return None;
    }
    const TEXT: Table = &[
        ("NOT MEMBER article from ", Reason::Rejected),
        (
            "You are not a member of this mailing list",
            Reason::Rejected,
        ),
        ("reject mail from ", Reason::Rejected),
        ("reject spammers:", Reason::Rejected),
        ("Duplicated Message-ID", Reason::Systemerror),
        ("has detected a loop condition so that", Reason::Systemerror),
        ("Loop Back Warning:", Reason::Systemerror),
        ("Security alert:", Reason::Securityerror),
    ];
    const SUBJECT: Table = &[
        ("NOT MEMBER article from ", Reason::Rejected),
        (" are not member", Reason::Rejected),
        ("Spam mail from a spammer is rejected", Reason::Rejected),
        ("fml system error message", Reason::Systemerror),
        ("Loop Alert: ", Reason::Systemerror),
        ("Loop Back Warning: ", Reason::Systemerror),
        ("WARNING: UNIX FROM Loop", Reason::Systemerror),
        ("Security Alert", Reason::Securityerror),
    ];
    let text = mail
        .report
        .split("Original mail as follows:")
        .next()
        .unwrap_or("");
    let mut out: Vec<Found> = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(body) = line.strip_suffix(">.") else {
            continue;
        };
        let Some((_, address)) = body.rsplit_once('<') else {
            continue;
        };
        if !address.contains('@') || address.contains(' ') || out.len() >= crate::MAX_RECIPIENTS {
            continue;
        }
        let mut f = Found::new(address, line);
        f.reason_rule = "format-fml-sentence";
        f.reason = TEXT
            .iter()
            .find(|(p, _)| line.contains(p))
            .or_else(|| SUBJECT.iter().find(|(p, _)| mail.subject.contains(p)))
            .map(|(_, r)| *r);
        out.push(f);
    }
    (!out.is_empty()).then_some(out)
}

/// Lotus Domino (Sisimai's `Lhost::Domino`).
const DOMINO: Table = &[
    ("not listed in Domino Directory", Reason::Userunknown),
    (
        "not listed in public Name & Address Book",
        Reason::Userunknown,
    ),
    ("non répertorié dans l'annuaire Domino", Reason::Userunknown),
    ("Domino ディレクトリには見つかりません", Reason::Userunknown),
    // The same, still in ISO-2022-JP (the report's charset left undecoded).
    ("%G%#%l%/%H%j$K$O8+$D$+$j$^$;$s", Reason::Userunknown),
    ("Cannot route mail to user", Reason::Filtered),
    (
        "Several matches found in Domino Directory",
        Reason::Systemerror,
    ),
];

/// Amazon SES receiving (Sisimai's `Lhost::ReceivingSES`): the replies of
/// its bounce action's templates (AWS SES developer guide, "Bounce
/// action"). "550 5.1.1 Mailbox does not exist" says what RFC 3463's
/// X.1.1 says, whoever chose to send it (Sisimai calls it `filtered`).
const RECEIVING_SES: Table = &[
    ("Mailbox does not exist", Reason::Userunknown),
    ("Message Filtered", Reason::Filtered),
    ("Message too large", Reason::Mesgtoobig),
    ("Mailbox full", Reason::Mailboxfull),
    ("Message content rejected", Reason::Contenterror),
];

/// Ipswitch IMail (Sisimai's `Lhost::IMailServer`): the server's reply
/// follows "... generated response:" after the recipient line.
fn imail<'a>(mail: &Mail, found: impl Iterator<Item = &'a mut Found>) {
    const RESPONSES: &[&str] = &[
        "Body of message generated response:",
        "DATA command generated response:",
        "Additional RCPT TO generated following response:",
        "Server response to MAIL FROM:",
        "Unexpected response to EHLO/HELO:",
        "Unexpected connection response from server:",
        "SMTP connection failed,",
    ];
    let response = RESPONSES
        .iter()
        .find_map(|m| mail.report.find(m))
        .map(|at| crate::found::clean(&mail.report[at..]));
    for f in found {
        let own = f.diagnostic.trim_start();
        let reason = if own.starts_with("Unknown user")
            || own.starts_with("Invalid final delivery userid")
        {
            Some(Reason::Userunknown)
        } else if own.starts_with("User mailbox exceeds allowed size") {
            Some(Reason::Mailboxfull)
        } else if own.starts_with("Requested action not taken: virus detected") {
            Some(Reason::Virusdetected)
        } else if own.starts_with("Delivery failed ") && own.contains(" attempts") {
            Some(Reason::Expired)
        } else if own.contains("Unknown host") {
            Some(Reason::Hostunknown)
        } else {
            None
        };
        match (reason, &response) {
            (Some(r), _) => f.reason = Some(r),
            // "undeliverable to x": the reason is in the server's response.
            (None, Some(resp)) => f.diagnostic = format!("{resp} {}", f.diagnostic),
            (None, None) => {}
        }
    }
}

/// au by KDDI / EZweb (Sisimai's `Lhost::EZweb`): two of its marks.
fn is_ezweb(mail: &Mail, from: &str, subject: &str) -> bool {
    let id = mail.header("message-id").unwrap_or("");
    let marks = [
        from.contains("postmaster@ezweb.ne.jp") || from.contains("postmaster@au.com"),
        subject == "Mail System Error - Returned Mail",
        received_with(mail, "ezweb.ne.jp").any(|r| r.contains("ezweb.ne.jp (EZweb Mail) with")),
        received_with(mail, ".au.com").any(|r| r.contains(".au.com (")),
        id.trim_end().ends_with(".ezweb.ne.jp>") || id.trim_end().ends_with(".au.com>"),
    ];
    marks.iter().filter(|m| **m).count() >= 2
}

fn ezweb<'a>(mail: &Mail, found: impl Iterator<Item = &'a mut Found>) {
    const SENTENCES: Table = &[
        (
            "The user(s) account is temporarily over quota",
            Reason::Mailboxfull,
        ),
        ("The user(s) account is disabled.", Reason::Suspend),
        (
            "The user(s) account is temporarily limited.",
            Reason::Suspend,
        ),
        ("Your message was not delivered within ", Reason::Expired),
        (
            "Each of the following recipients was rejected by a remote mail server",
            Reason::Filtered,
        ),
    ];
    // The sentence stands above the recipient lines, not next to them.
    let said = SENTENCES.iter().find(|(p, _)| mail.report.contains(p));
    for f in found {
        if let Some((p, r)) = said {
            f.reason = Some(*r);
            f.diagnostic = (*p).to_owned();
        }
    }
}

/// Verizon Wireless SMS/MMS gateways (Sisimai's `Lhost::Verizon`).
fn is_verizon(mail: &Mail) -> bool {
    received_with(mail, ".vtext.com").any(|r| r.contains(".vtext.com ("))
        || received_with(mail, ".vzwpix.com").any(|r| r.contains(".vzwpix.com"))
        || mail.from.contains("vtext.com")
        || mail.from.contains("vzwpix.com")
}

fn verizon<'a>(mail: &Mail, found: impl Iterator<Item = &'a mut Found>) {
    const SENTENCES: &[&str] = &[
        "Requested action not taken: no such user here",
        "No valid recipients for this MM",
    ];
    let line = mail
        .report
        .lines()
        .find(|l| SENTENCES.iter().any(|s| l.contains(s)));
    if let Some(line) = line {
        for f in found {
            f.reason = Some(Reason::Userunknown);
            f.diagnostic = line.trim().to_owned();
        }
    }
}

/// The `Received` values that may hold `word`, unfolded: a fold cannot
/// split a word without whitespace, so the fields are searched as written
/// first, and most are never unfolded.
fn received_with<'m>(mail: &'m Mail, word: &'static str) -> impl Iterator<Item = &'m str> {
    debug_assert!(!word.contains(char::is_whitespace));
    mail.top
        .headers
        .iter()
        .filter(move |f| f.name.eq_ignore_ascii_case("received") && f.written().contains(word))
        .map(crate::mime::Field::value)
}

/// Sendmail and Postfix reports quote a local delivery agent's words in
/// their transcript, and their own reading of it wins (Sisimai consults
/// its `MDA` table only for reports no MTA module claims): a report is
/// theirs by its subject and its own section lines.
fn claimed_by_mta(mail: &Mail, subject: &str) -> bool {
    let sendmail = (subject.ends_with("see transcript for details")
        || subject.starts_with("Warning: "))
        && (mail.report.contains("----- Transcript of session follows")
            || mail.report.contains("----- The following addresses had"));
    let postfix = subject.starts_with("Undelivered Mail Returned to Sender")
        && mail.report.contains("The mail system");
    sendmail || postfix
}

/// Local delivery agents: the line naming one, and what its words mean.
const MDA: &[(&str, &[(&str, Reason)])] = &[
    (
        "dovecot",
        &[
            ("mailbox doesn't exist: ", Reason::Userunknown),
            ("quota exceeded", Reason::Mailboxfull),
            ("not enough disk space", Reason::Mailboxfull),
        ],
    ),
    (
        "mail.local: ",
        &[
            (": unknown user:", Reason::Userunknown),
            (": user unknown", Reason::Userunknown),
            (": invalid mailbox path", Reason::Userunknown),
            (": user missing home directory", Reason::Userunknown),
            ("disc quota exceeded", Reason::Mailboxfull),
            ("mailbox full or quota exceeded", Reason::Mailboxfull),
            ("temporary file write error", Reason::Systemerror),
        ],
    ),
    (
        "procmail: ",
        &[
            ("quota exceeded while writing", Reason::Mailboxfull),
            ("no space left to finish writing", Reason::Systemfull),
        ],
    ),
    (
        "maildrop: ",
        &[
            ("invalid user specified.", Reason::Userunknown),
            ("cannot find system user", Reason::Userunknown),
            ("maildir over quota.", Reason::Mailboxfull),
        ],
    ),
    (
        "vdelivermail: ",
        &[
            ("sorry, no mailbox here by that name.", Reason::Userunknown),
            ("account is locked email bounced", Reason::Filtered),
            (
                "user does not exist, but will deliver to ",
                Reason::Filtered,
            ),
            ("domain is over quota", Reason::Mailboxfull),
            ("user is over quota", Reason::Mailboxfull),
        ],
    ),
    (
        "vdeliver: ",
        &[
            (
                "invalid or unknown base user or domain",
                Reason::Userunknown,
            ),
            ("invalid or unknown virtual user", Reason::Userunknown),
            (
                "user name does not refer to a virtual user",
                Reason::Userunknown,
            ),
            (
                "delivery failed due to system quota violation",
                Reason::Mailboxfull,
            ),
        ],
    ),
];

/// The reason and line of a local delivery agent's error in a report from
/// the mailer daemon (Sisimai's `MDA`): the agent's line and those after it
/// up to a blank line are searched.
fn mda(mail: &Mail, from: &str) -> Option<(Reason, String)> {
    let from = from.trim_start_matches(['"', ' ']);
    if !(from.starts_with("mail delivery subsystem")
        || from.starts_with("mailer-daemon")
        || from.starts_with("postmaster"))
    {
        return None;
    }
    let mut lines = mail.report.lines();
    let table = loop {
        let l = lines.next()?;
        let agent = if l.starts_with("Your message to ")
            && l.trim_end().ends_with("was automatically rejected:")
        {
            Some("dovecot")
        } else {
            MDA.iter()
                .map(|(a, _)| *a)
                .find(|a| *a != "dovecot" && l.starts_with(a))
        };
        if let Some(a) = agent {
            let table = MDA.iter().find(|(n, _)| *n == a).map(|(_, t)| *t)?;
            // The agent's own line counts too.
            if let Some(hit) = find_in(table, l) {
                return Some(hit);
            }
            break table;
        }
    };
    lines
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| find_in(table, l))
}

fn find_in(table: &[(&str, Reason)], line: &str) -> Option<(Reason, String)> {
    let lower = line.to_ascii_lowercase();
    table
        .iter()
        .find(|(p, _)| lower.contains(p))
        .map(|(_, r)| (*r, line.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use crate::DsnParser;
    use sluice_sdk::bounce::*;

    fn parse(mail: &str) -> Vec<BounceResult> {
        DsnParser::parse(BounceInput::Email(mail.as_bytes().to_vec())).results
    }

    #[test]
    fn imail_unknown_user_is_an_unknown_user() {
        let m = "From: postmaster@mx.example.org\nSubject: Undeliverable Mail\nX-Mailer: <SMTP32 v8.22>\n\nUnknown user: gone@example.org\n\nOriginal message follows.\n\nSubject: hi\n";
        let r = parse(m);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].reason, r[0].hard), (Reason::Userunknown, true));
        assert_eq!(r[0].status, "5.0.911");
    }

    #[test]
    fn imail_reads_the_server_response_block() {
        let m = "From: postmaster@mx.example.org\nSubject: Undeliverable Mail\n\nundeliverable to a@example.org\n\nBody of message generated response:\n550-REJECTED - message detected as spam\n550 see http://example.org\n\nOriginal message follows.\n";
        let r = parse(m);
        assert_eq!(r[0].reason, Reason::Spamdetected, "{r:?}");
    }

    #[test]
    fn domino_and_ses_sentences() {
        let m = "From: Postmaster <postmaster@notes.example.org>\nSubject: DELIVERY FAILURE: User x not listed in Domino Directory\n\nYour message\n\n  Subject: hi\n\nwas not delivered to:\n\n  x@example.org\n\nbecause:\n\n  User x (x@example.org) not listed in Domino Directory\n";
        let r = parse(m);
        assert_eq!(r[0].reason, Reason::Userunknown, "{r:?}");
        let ses = "From: MAILER-DAEMON@amazonses.com\nSubject: Delivery Status Notification (Failure)\nX-SES-Outgoing: 2016.01.01-1.1.1.1\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nThis message could not be delivered.\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; a.example\n\nFinal-Recipient: rfc822; u@example.org\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 Mailbox does not exist\n--b--\n";
        let r = parse(ses);
        assert_eq!(
            (r[0].reason, r[0].hard),
            (Reason::Userunknown, true),
            "{r:?}"
        );
    }

    #[test]
    fn sendmail_transcript_replies_belong_to_the_next_recipient() {
        let m = "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\nSubject: Returned mail: Host unknown\n\n   ----- Transcript of session follows -----\nWhile talking to mx.example.net:\n>>> MAIL From:<s@example.com>\n<<< 501 <s@example.com>... no access from mail server [192.0.2.5] which is an open relay.\n554 <a@example.net>... Remote protocol error\n550 example.org (smtp)... 550 Host unknown\n554 <b@example.org>... 550 Host unknown (Authoritative answer from name server)\n\n   ----- Unsent message follows -----\nFrom: s@example.com\n";
        let r = parse(m);
        let by = |a: &str| r.iter().find(|x| x.recipient == a).map(|x| x.reason);
        assert_eq!(by("a@example.net"), Some(Reason::Blocked), "{r:?}");
        assert_eq!(by("b@example.org"), Some(Reason::Hostunknown), "{r:?}");
    }

    #[test]
    fn yahoo_replies_naming_the_address_answered_rcpt() {
        let m = "From: MAILER-DAEMON@yahoo.com\nSubject: Failure Notice\nX-YMailISG: abc\n\nSorry, we were unable to deliver your message to the following address.\n\n<u@example.org>:\n550: <u@example.org>: User unknown\n\n--- Below this line is a copy of the message.\n";
        let r = parse(m);
        assert_eq!(
            (r[0].reason, r[0].hard),
            (Reason::Userunknown, true),
            "{r:?}"
        );
        // Without Yahoo's header the stage is unknown: the words decide.
        let r = parse(&m.replace("X-YMailISG: abc\n", ""));
        assert_eq!(r[0].reason, Reason::Userunknown, "{r:?}");
    }

    #[test]
    fn a_failed_pipe_is_a_mailer_error() {
        let m = "From: MAILER-DAEMON@mx.example.org\nSubject: Returned mail\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nfailed\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\nFinal-Recipient: RFC822; u@example.org\nX-Actual-Recipient: RFC822; |/usr/bin/procmail -f- #u\nAction: failed\nStatus: 5.5.0\nDiagnostic-Code: X-Postfix; 554 Service unavailable\n--b--\n";
        let r = parse(m);
        assert_eq!(r[0].reason, Reason::Mailererror, "{r:?}");
    }

    #[test]
    fn fml_list_errors_name_the_recipient_in_a_sentence() {
        let m = "From: list-admin@example.org\nTo: s@example.com\nSubject: Loop Alert: Duplicated Message-ID (list ML)\nX-MLServer: fml [fml 4.0.3 release]\n\nDuplicated Message-ID in <list@example.org>.\n\nOriginal mail as follows:\n\nFrom: s@example.com\n";
        let r = parse(m);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (r[0].recipient.as_str(), r[0].reason, r[0].status.as_str()),
            ("list@example.org", Reason::Systemerror, "5.0.930")
        );
    }

    #[test]
    fn domino_text_names_the_recipient() {
        let m = "From: Postmaster@example.edu\nSubject: DELIVERY FAILURE: Error transferring to relay.example.org; Maximum hop count exceeded.\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nYour message\n\n  Subject: hi\n\nwas not delivered to:\n\n  u@example.com\n\nbecause:\n\n  Error transferring to relay.example.org; Maximum hop count exceeded.\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns;relay.example.org\n\nFinal-Recipient: rfc822;u@example.org\nAction: failed\nStatus: 5.0.0\n--b--\n";
        let r = parse(m);
        assert_eq!(r[0].recipient, "u@example.com", "{r:?}");
    }

    #[test]
    fn local_delivery_agents_decide() {
        let m = "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.org>\nSubject: Returned mail: Service unavailable\n\n   ----- The following addresses had permanent fatal errors -----\n<u@example.org>\n\n   ----- Transcript of session follows -----\nmail.local: unknown user: u\n554 <u@example.org>... Service unavailable\n";
        let r = parse(m);
        assert_eq!(
            (r[0].reason, r[0].hard),
            (Reason::Userunknown, true),
            "{r:?}"
        );
        // Sendmail's own report of the same words is Sendmail's to read.
        let s = m.replace("Service unavailable\n\n", "see transcript for details\n\n");
        assert_ne!(parse(&s)[0].diagnostic, "mail.local: unknown user: u");
    }
}
