//! Amazon SES notifications: the JSON documents SES publishes for a
//! bounce, a complaint or a delivery (AWS's "Amazon SNS notification
//! contents for Amazon SES"), read from an e-mail's text, either as SES
//! wrote them or inside the `Message` string of an SNS envelope.
//!
//! A bounce names each recipient with its `action`, `status` and the
//! receiving server's `diagnosticCode`; those are classified like a DSN's
//! fields. Only when none is given does SES's own `bounceSubType` decide.
//! A complaint is a feedback report; a delivery is no failure.
//!
//! The JSON reader is small and bounded: nesting deeper than
//! [`MAX_DEPTH`], more than [`MAX_VALUES`] values or malformed text is not
//! a notification, and only the first few `{` of the text are tried.

use crate::found::Found;
use crate::mail::Mail;
use sluice_sdk::bounce::Reason;

/// Deepest nesting read (a notification nests five levels at most).
const MAX_DEPTH: usize = 32;
/// Places in the text where a document is tried.
const MAX_STARTS: usize = 4;
/// Values read per document at most: a notification has a few dozen, and
/// the bound keeps a document of millions of tiny values (a few bytes each)
/// from costing a Wasm instance's memory.
const MAX_VALUES: usize = 100_000;

/// A JSON value; numbers are not needed and kept as nothing.
#[derive(Debug)]
enum Json {
    Null,
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn items(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            _ => &[],
        }
    }

    fn text(&self, key: &str) -> &str {
        self.get(key).and_then(Json::str).unwrap_or("")
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    /// Values still to be read (see [`MAX_VALUES`]).
    left: usize,
}

impl<'a> Reader<'a> {
    fn at(b: &'a [u8], i: usize) -> Self {
        Reader {
            b,
            i,
            left: MAX_VALUES,
        }
    }
}

impl Reader<'_> {
    fn space(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.space();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH || self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.space();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                if self.eat(b'}').is_some() {
                    return Some(Json::Obj(fields));
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    self.eat(b':')?;
                    let v = self.value(depth + 1)?;
                    fields.push((key, v));
                    if self.eat(b',').is_none() {
                        self.eat(b'}')?;
                        return Some(Json::Obj(fields));
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                if self.eat(b']').is_some() {
                    return Some(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b',').is_none() {
                        self.eat(b']')?;
                        return Some(Json::Arr(items));
                    }
                }
            }
            b'"' => self.string().map(Json::Str),
            _ => {
                // A number, true, false or null: skipped to its end.
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.'))
                {
                    self.i += 1;
                }
                (self.i > start).then_some(Json::Null)
            }
        }
    }

    /// A string at the cursor; raw line breaks inside it (a wrapped
    /// e-mail line) are kept as they are.
    fn string(&mut self) -> Option<String> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' | b'f' => out.push(b' '),
                        b'u' => {
                            let hex = self.b.get(self.i..self.i + 4)?;
                            self.i += 4;
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            let ch = char::from_u32(code).unwrap_or('\u{fffd}');
                            let mut buf = [0; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                _ => out.push(c),
            }
        }
    }
}

/// The first JSON object of `text` that is an SES notification, or whose
/// `Message` (an SNS envelope) is one.
fn notification(text: &str) -> Option<Json> {
    let mut from = 0;
    for _ in 0..MAX_STARTS {
        let at = from + text[from..].find('{')?;
        from = at + 1;
        let mut r = Reader::at(text.as_bytes(), at);
        let Some(doc) = r.value(0) else { continue };
        if is_notification(&doc) {
            return Some(doc);
        }
        let inner = doc.text("Message");
        if inner.contains("Type") {
            let mut r = Reader::at(inner.as_bytes(), inner.find('{')?);
            if let Some(doc) = r.value(0).filter(is_notification) {
                return Some(doc);
            }
        }
    }
    None
}

fn is_notification(doc: &Json) -> bool {
    let kind = kind(doc);
    matches!(kind, "Bounce" | "Complaint" | "Delivery") && doc.get("mail").is_some()
}

/// `notificationType`, or `eventType` in SES's event publishing.
fn kind(doc: &Json) -> &str {
    let t = doc.text("notificationType");
    if t.is_empty() {
        doc.text("eventType")
    } else {
        t
    }
}

/// The reason SES's bounce subtype names, for a recipient the receiving
/// server said nothing about.
fn subtype_reason(bounce_type: &str, subtype: &str) -> Option<Reason> {
    Some(match (bounce_type, subtype) {
        // "NoEmail": the address does not exist; "Suppressed": it is on
        // SES's list for a recent history of bouncing as invalid.
        ("Permanent", "NoEmail" | "Suppressed") => Reason::Userunknown,
        ("Transient", "MailboxFull") => Reason::Mailboxfull,
        ("Transient", "MessageTooLarge") => Reason::Mesgtoobig,
        ("Transient", "ContentRejected" | "AttachmentRejected") => Reason::Contenterror,
        _ => return None,
    })
}

/// The recipients of an SES notification in the mail's text.
pub fn read(mail: &Mail) -> Option<Vec<Found>> {
    if !mail.report.contains("notificationType") && !mail.report.contains("eventType") {
        return None;
    }
    let doc = notification(&mail.report)?;
    let mut out: Vec<Found> = Vec::new();
    match kind(&doc) {
        "Bounce" => {
            let bounce = doc.get("bounce")?;
            let (bounce_type, subtype) = (bounce.text("bounceType"), bounce.text("bounceSubType"));
            for r in bounce.get("bouncedRecipients")?.items() {
                let raw = r.text("diagnosticCode");
                let (kind, diagnostic) = match raw.split_once(';') {
                    Some((t, d)) if !t.contains(' ') => (t.trim(), d.trim()),
                    _ => ("", raw.trim()),
                };
                let mut f = Found::new(r.text("emailAddress"), diagnostic);
                f.diagnostic_type = kind.to_owned();
                f.status = crate::classify::find_status(r.text("status")).unwrap_or_default();
                f.action = r.text("action").to_ascii_lowercase();
                f.via = "ses-bounced-recipient";
                if diagnostic.is_empty()
                    && f.status.is_empty()
                    && let Some(reason) = subtype_reason(bounce_type, subtype)
                {
                    f.decide(reason, "ses-bounce-subtype");
                }
                if bounce_type == "Transient" && f.action.is_empty() {
                    f.action = "delayed".into();
                }
                out.push(f);
            }
        }
        "Complaint" => {
            for r in doc.get("complaint")?.get("complainedRecipients")?.items() {
                let mut f = Found::new(r.text("emailAddress"), "");
                f.via = "ses-complained-recipient";
                f.decide(Reason::Feedback, "ses-complaint");
                out.push(f);
            }
        }
        _ => {
            let delivery = doc.get("delivery")?;
            for r in delivery.get("recipients")?.items() {
                let mut f = Found::new(r.str().unwrap_or(""), delivery.text("smtpResponse"));
                f.via = "ses-delivered-recipient";
                f.decide(Reason::Delivered, "ses-delivery");
                out.push(f);
            }
        }
    }
    out.retain(|f| f.recipient.contains('@'));
    out.truncate(crate::MAX_RECIPIENTS);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Found> {
        let mail = Mail::parse(text);
        read(&mail).unwrap_or_default()
    }

    const BOUNCE: &str = r#"{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{"emailAddress":"gone@example.org","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"},{"emailAddress":"nobody@example.net"}],"timestamp":"2016-01-27T14:59:38.237Z","feedbackId":"x","reportingMTA":"dns; a.example"},"mail":{"timestamp":"2016-01-27T14:59:38.237Z","source":"s@example.com","destination":["gone@example.org"]}}"#;

    #[test]
    fn reads_a_bounce_with_its_recipients_fields() {
        let mail = format!(
            "From: no-reply@sns.amazonaws.com\nSubject: AWS Notification Message\n\n{BOUNCE}\n"
        );
        let found = parse(&mail);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].recipient, "gone@example.org");
        assert_eq!(found[0].status, "5.1.1");
        assert_eq!(found[0].diagnostic, "550 5.1.1 user unknown");
        assert_eq!(found[0].diagnostic_type, "smtp");
        assert_eq!(found[1].reason, None);
    }

    #[test]
    fn reads_the_message_of_an_sns_envelope() {
        let escaped = BOUNCE.replace('"', "\\\"");
        let mail = format!(
            "Subject: AWS Notification Message\n\n{{\"Type\" : \"Notification\", \"Message\" : \"{escaped}\", \"Timestamp\" : \"x\"}}\n"
        );
        let found = parse(&mail);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].status, "5.1.1");
    }

    #[test]
    fn subtypes_decide_only_when_the_server_said_nothing() {
        let doc = BOUNCE
            .replace("\"Permanent\"", "\"Transient\"")
            .replace("\"General\"", "\"MailboxFull\"");
        let found = parse(&format!("Subject: x\n\n{doc}\n"));
        assert_eq!(found[0].reason, None);
        assert_eq!(found[1].reason, Some(Reason::Mailboxfull));
        assert_eq!(found[1].action, "delayed");
    }

    #[test]
    fn complaints_and_deliveries() {
        let complaint = r#"{"notificationType":"Complaint","complaint":{"complainedRecipients":[{"emailAddress":"c@example.org"}],"complaintFeedbackType":"abuse"},"mail":{"source":"s@example.com"}}"#;
        let found = parse(&format!("Subject: x\n\n{complaint}\n"));
        assert_eq!(found[0].reason, Some(Reason::Feedback));
        let delivery = r#"{"notificationType":"Delivery","delivery":{"recipients":["d@example.org"],"smtpResponse":"250 2.6.0 ok"},"mail":{"source":"s@example.com"}}"#;
        let found = parse(&format!("Subject: x\n\n{delivery}\n"));
        assert_eq!(found[0].reason, Some(Reason::Delivered));
    }

    #[test]
    fn hostile_json_is_not_a_notification() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&format!("Subject: x\n\n{{\"mail\":{deep}, \"Type\":1}}\n")).is_empty());
        assert!(parse("Subject: x\n\n{\"notificationType\":\"Bounce\",\"mail\":{\n").is_empty());
        let many = format!(
            "{{\"notificationType\":\"Bounce\",\"mail\":{{}},\"bounce\":{{\"bouncedRecipients\":[{}{{\"emailAddress\":\"a@b.example\"}}]}}}}",
            "{},".repeat(MAX_VALUES)
        );
        assert!(parse(&format!("Subject: x\n\n{many}\n")).is_empty());
        assert!(
            parse("Subject: x\n\n{\"notificationType\":\"Bounce\",\"mail\":{},\"bounce\":\"x\"}\n")
                .is_empty()
        );
    }
}
