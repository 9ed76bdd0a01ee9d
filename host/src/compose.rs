//! From what an application submits to the RFC 5322 bytes Sluice stores:
//! the JSON form (built into MIME with lettre) or a raw message with its
//! envelope given beside it. Every refusal names the field.

use base64::Engine as _;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde::Deserialize;
use std::borrow::Cow;

use crate::wire;

mod text_body;
use text_body::text_body;

/// The JSON body of `POST /v1/messages`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonMessage {
    pub from: String,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    #[serde(default)]
    pub reply_to: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<JsonAttachment>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The tenant's own account (`/v1/accounts`) this message is billed to, before
    /// its logins are matched.
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A file attached to a JSON message.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonAttachment {
    pub filename: String,
    pub content_type: String,
    pub content_base64: String,
}

/// A submission refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// A message ready to store: envelope, bytes, the headers the ingest stage sees.
#[derive(Debug, Clone)]
pub struct Composed {
    pub sender: String,
    pub recipients: Vec<String>,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub message_id: String,
}

/// Whether `name` is a header an application or a plugin may not set, in any case.
pub fn is_reserved(name: &str) -> bool {
    wire::is_reserved_header(name)
}

/// Header fields that name who wrote or sent a message (RFC 5322 §3.6.2) or who
/// resent it (§3.6.6): each is what a reader takes for the sender, so each must be
/// the tenant's.
const AUTHOR_FIELDS: [&str; 4] = ["from", "sender", "resent-from", "resent-sender"];

/// Header fields that name blind recipients (RFC 5322 §3.6.3, §3.6.6): a submission
/// server removes them before the message goes out (RFC 6409 §8), the recipients
/// staying in the envelope only.
const BLIND_FIELDS: [&str; 2] = ["bcc", "resent-bcc"];

/// The domains of a message's authors as its header says: every address of `From:`,
/// `Sender:`, `Resent-From:` and `Resent-Sender:`, each with the header it is in. An
/// address that cannot be read is an error naming the header.
pub fn author_domains(headers: &[(String, String)]) -> Result<Vec<(String, String)>, FieldError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if !AUTHOR_FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            continue;
        }
        let field = format!("headers.{name}");
        let list = value.parse::<lettre::message::Mailboxes>().map_err(|e| {
            field_err(
                &field,
                format!("{value:?} is not a list of addresses ({e})"),
            )
        })?;
        let mut any = false;
        for mb in list {
            any = true;
            out.push((field.clone(), mb.email.domain().to_ascii_lowercase()));
        }
        if !any {
            return Err(field_err(field, "names no address"));
        }
    }
    Ok(out)
}

/// Whether `domain` (lower case) is among a tenant's allowed sender domains, read as the
/// default ingest plugin reads them for the envelope sender: `example.com`, a domain and
/// its subdomains (`*.example.com` or `.example.com`), or `*` for any; case ignored.
pub fn domain_allowed(domain: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.trim();
        if entry == "*" {
            return true;
        }
        match entry.strip_prefix("*.").or_else(|| entry.strip_prefix('.')) {
            Some(parent) => {
                let (d, p) = (domain.as_bytes(), parent.as_bytes());
                d.eq_ignore_ascii_case(p)
                    || d.len() > p.len()
                        && d[d.len() - p.len() - 1] == b'.'
                        && d[d.len() - p.len()..].eq_ignore_ascii_case(p)
            }
            None => domain.eq_ignore_ascii_case(entry),
        }
    })
}

/// Whether `value` is an address a message may be sent to (what [`from_raw`] takes as
/// a recipient): SMTP submission answers a recipient at RCPT with it.
pub fn valid_address(value: &str) -> bool {
    value.parse::<Mailbox>().is_ok()
}

fn mailbox(field: &str, value: &str) -> Result<Mailbox, FieldError> {
    value
        .parse::<Mailbox>()
        .map_err(|e| field_err(field, format!("{value:?} is not an e-mail address ({e})")))
}

/// A new Message-ID: unique, and naming this host.
pub fn new_message_id(domain: &str) -> String {
    format!(
        "<{}@{domain}>",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// Builds the JSON form into MIME.
pub fn from_json(m: &JsonMessage, message_id_domain: &str) -> Result<Composed, FieldError> {
    let from = mailbox("from", &m.from)?;
    if m.to.is_empty() && m.cc.is_empty() && m.bcc.is_empty() {
        return Err(field_err(
            "to",
            "at least one recipient is needed in to, cc or bcc",
        ));
    }
    let message_id = new_message_id(message_id_domain);
    let mut b = lettre::Message::builder()
        .from(from.clone())
        .message_id(Some(message_id.clone()))
        .date_now();
    let mut recipients = Vec::new();
    for (i, to) in m.to.iter().enumerate() {
        let mb = mailbox(&format!("to[{i}]"), to)?;
        recipients.push(mb.email.to_string());
        b = b.to(mb);
    }
    for (i, cc) in m.cc.iter().enumerate() {
        let mb = mailbox(&format!("cc[{i}]"), cc)?;
        recipients.push(mb.email.to_string());
        b = b.cc(mb);
    }
    for (i, bcc) in m.bcc.iter().enumerate() {
        // Envelope only: a Bcc recipient never appears in the headers.
        recipients.push(mailbox(&format!("bcc[{i}]"), bcc)?.email.to_string());
    }
    if let Some(r) = &m.reply_to {
        b = b.reply_to(mailbox("reply_to", r)?);
    }
    if let Some(s) = &m.subject {
        if s.contains(['\r', '\n']) {
            return Err(field_err("subject", "must be one line"));
        }
        if let Some(problem) = wire::header_value_problem(s) {
            return Err(field_err("subject", problem));
        }
        b = b.subject(s.clone());
    }
    let mut headers: Vec<(String, String)> = vec![
        ("From".into(), m.from.clone()),
        ("Message-ID".into(), message_id.clone()),
    ];
    if let Some(s) = &m.subject {
        headers.push(("Subject".into(), s.clone()));
    }
    for (name, value) in &m.headers {
        let key = format!("headers.{name}");
        // The name first: `X-Test\r\nBcc` is not a name, and no spelling of a reserved
        // one gets past the list below.
        if let Some(problem) = wire::header_name_problem(name) {
            return Err(field_err(key, problem));
        }
        if is_reserved(name) {
            return Err(field_err(key, "is set by Sluice or from the fields above"));
        }
        if let Some(problem) = wire::header_value_problem(value) {
            return Err(field_err(key, problem));
        }
        // lettre folds a long value at its spaces only: a longer word stays one line.
        let longest_word = value.split([' ', '\t']).map(str::len).max().unwrap_or(0);
        if name.len() + 2 + longest_word > wire::MAX_LINE_OCTETS {
            return Err(field_err(
                key,
                format!(
                    "has a word of {longest_word} octets, which cannot be folded onto a line of at most {} octets",
                    wire::MAX_LINE_OCTETS
                ),
            ));
        }
        let hn = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| field_err(&key, format!("{name:?} is not a valid header name")))?;
        b = b.raw_header(HeaderValue::new(hn, value.clone()));
        headers.push((name.clone(), value.clone()));
    }

    if m.text.is_none() && m.html.is_none() && m.attachments.is_empty() {
        return Err(field_err("text", "give text, html or attachments"));
    }
    // The text parts, built only for the shape they go into.
    let text_parts = || match (&m.text, &m.html) {
        (Some(t), Some(h)) => Some(MultiPart::alternative_plain_html(
            text_body(t),
            text_body(h),
        )),
        (Some(t), None) => Some(MultiPart::mixed().singlepart(SinglePart::plain(text_body(t)))),
        (None, Some(h)) => Some(MultiPart::mixed().singlepart(SinglePart::html(text_body(h)))),
        (None, None) => None,
    };
    let message = if m.attachments.is_empty() {
        match (&m.text, &m.html) {
            (Some(t), None) => b.singlepart(SinglePart::plain(text_body(t))),
            (None, Some(h)) => b.singlepart(SinglePart::html(text_body(h))),
            _ => b.multipart(text_parts().expect("text and html")),
        }
    } else {
        let mut mixed = MultiPart::mixed().build();
        if let Some(p) = text_parts() {
            mixed = mixed.multipart(p);
        }
        for (i, a) in m.attachments.iter().enumerate() {
            let key = format!("attachments[{i}]");
            let ct = ContentType::parse(&a.content_type).map_err(|_| {
                field_err(
                    format!("{key}.content_type"),
                    format!("{:?} is not a MIME type", a.content_type),
                )
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(a.content_base64.trim())
                .map_err(|e| {
                    field_err(format!("{key}.content_base64"), format!("not base64: {e}"))
                })?;
            let unsafe_name = a.filename.contains(['/', '\\'])
                || wire::header_value_problem(&a.filename).is_some();
            if a.filename.is_empty() || unsafe_name {
                return Err(field_err(
                    format!("{key}.filename"),
                    format!("{:?} is not a plain file name", a.filename),
                ));
            }
            mixed = mixed.singlepart(Attachment::new(a.filename.clone()).body(bytes, ct));
        }
        b.multipart(mixed)
    }
    .map_err(|e| field_err("from", e.to_string()))?;

    // lettre keeps a 7-bit attachment's bytes as given, bare LFs and CRs included: the
    // whole message leaves with CRLF line ends only (see `wire`).
    let mut body = message.formatted();
    match wire::crlf_checked(&body) {
        Ok(Cow::Borrowed(_)) => {}
        Ok(Cow::Owned(clean)) => body = clean,
        Err(e) => return Err(field_err("message", e.to_string())),
    }
    Ok(Composed {
        sender: from.email.to_string(),
        recipients,
        body,
        headers,
        message_id,
    })
}

/// Takes a raw RFC 5322 message as submitted: checks its header section,
/// adds `Message-ID` (and `Date`) when missing, and keeps the envelope the
/// application gave beside it.
pub fn from_raw(
    raw: &[u8],
    sender: &str,
    recipients: &[String],
    message_id_domain: &str,
) -> Result<Composed, FieldError> {
    if !sender.is_empty() {
        mailbox("from", sender)?;
    }
    if recipients.is_empty() {
        return Err(field_err(
            "to",
            "give the envelope recipients (query `to=` or header `Sluice-Envelope-To`)",
        ));
    }
    let mut rcpts = Vec::new();
    for (i, r) in recipients.iter().enumerate() {
        rcpts.push(mailbox(&format!("to[{i}]"), r)?.email.to_string());
    }
    // Bare LFs and CRs are made CRLF rather than refused: LF-only clients are common
    // and mean no harm, and once every line end is CRLF the relay and we agree on where
    // each line starts, so a lone `.` after a bare LF is stuffed like any other.
    // Lines over 998 octets and NUL bytes are refused: only a re-encoding of the MIME
    // part could carry them, and rewriting a raw message would break its signatures.
    let raw = wire::crlf_checked(raw).map_err(|e| field_err("message", e.to_string()))?;
    let (mut headers, header_len) = parse_header_section(&raw)?;
    // Blind recipients are in the envelope the application gave; their header would
    // tell every recipient who else got the message.
    let raw = match without_blind_fields(&raw, header_len) {
        Some(stripped) => {
            headers.retain(|(name, _)| !BLIND_FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f)));
            Cow::Owned(stripped)
        }
        None => raw,
    };
    for (name, value) in &headers {
        if let Some(problem) = wire::header_value_problem(value) {
            return Err(field_err(format!("headers.{name}"), problem));
        }
    }
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("from") {
        return Err(field_err("message", "has no From header"));
    }
    let mut prefix = String::new();
    let message_id = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("message-id"))
    {
        Some((_, v)) => v.trim().to_owned(),
        None => {
            let id = new_message_id(message_id_domain);
            prefix.push_str(&format!("Message-ID: {id}\r\n"));
            id
        }
    };
    if !has("date") {
        prefix.push_str(&format!("Date: {}\r\n", httpdate_rfc2822()));
    }
    let mut body = Vec::with_capacity(prefix.len() + raw.len());
    body.extend_from_slice(prefix.as_bytes());
    body.extend_from_slice(&raw);
    Ok(Composed {
        sender: sender.to_owned(),
        recipients: rcpts,
        body,
        headers,
        message_id,
    })
}

fn httpdate_rfc2822() -> String {
    // lettre formats a Date header for us; borrow it.
    let m = lettre::Message::builder()
        .from("a@b.c".parse().expect("valid"))
        .to("a@b.c".parse().expect("valid"))
        .date_now()
        .body(String::new())
        .expect("builds");
    let formatted = String::from_utf8_lossy(&m.formatted()).into_owned();
    formatted
        .lines()
        .find_map(|l| l.strip_prefix("Date: ").map(str::to_owned))
        .unwrap_or_default()
}

/// The message without its `Bcc:` and `Resent-Bcc:` fields (each with its folded
/// lines), or `None` when it has none. `raw` has CRLF line ends and a header section
/// of `header_len` bytes, as [`parse_header_section`] read it.
fn without_blind_fields(raw: &[u8], header_len: usize) -> Option<Vec<u8>> {
    without_fields(raw, header_len, &BLIND_FIELDS)
}

/// Whether a header line starts the field of one of `names` (case ignored).
fn names_field(line: &[u8], names: &[&str]) -> bool {
    names.iter().any(|f| {
        line.len() > f.len()
            && line[..f.len()].eq_ignore_ascii_case(f.as_bytes())
            && line[f.len()] == b':'
    })
}

/// The message without the fields of `names` (each with its folded lines), or `None`
/// when it has none of them. `raw`'s header section is `header_len` bytes, as
/// [`parse_header_section`] read it.
fn without_fields(raw: &[u8], header_len: usize, names: &[&str]) -> Option<Vec<u8>> {
    let header = &raw[..header_len];
    // Lines of the header section, each with its line end.
    let lines = || header.split_inclusive(|&b| b == b'\n');
    if !lines().any(|l| names_field(l, names)) {
        return None;
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut dropping = false;
    for line in lines() {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            dropping = names_field(line, names);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&raw[header_len..]);
    Some(out)
}

/// Takes the header fields of `names` (case ignored) out of a raw message as submitted:
/// their names and values in order, and the message without them (`None`: it has none
/// of them, or its header section cannot be read, which [`from_raw`] then reports).
/// What a transport reads for Sluice from the header, such as SMTP submission's
/// `X-Sluice-Tags`, so it is neither stored nor sent.
pub fn take_fields(raw: &[u8], names: &[&str]) -> (Vec<(String, String)>, Option<Vec<u8>>) {
    // Most messages have none of them: a look along the header's lines, nothing parsed.
    let mut header_lines = raw
        .split_inclusive(|&b| b == b'\n')
        .take_while(|l| !matches!(*l, b"\r\n" | b"\n"));
    if !header_lines.any(|l| names_field(l, names)) {
        return (Vec::new(), None);
    }
    let Ok((headers, header_len)) = parse_header_section(raw) else {
        return (Vec::new(), None);
    };
    let taken = headers
        .into_iter()
        .filter(|(n, _)| names.iter().any(|f| n.eq_ignore_ascii_case(f)))
        .collect();
    (taken, without_fields(raw, header_len, names))
}

/// The header fields of a raw message and the length of its header section.
pub fn parse_header_section(raw: &[u8]) -> Result<(Vec<(String, String)>, usize), FieldError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    loop {
        if pos >= raw.len() {
            return Err(field_err(
                "message",
                "ends inside its header section (no blank line before the body)",
            ));
        }
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        line_no += 1;
        let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        pos = end;
        if trimmed.is_empty() {
            break;
        }
        if trimmed[0] == b' ' || trimmed[0] == b'\t' {
            match headers.last_mut() {
                Some(last) => last.1.push_str(&String::from_utf8_lossy(trimmed)),
                None => {
                    return Err(field_err(
                        "message",
                        format!("header line {line_no} is a continuation with nothing before it"),
                    ));
                }
            }
            continue;
        }
        let colon = trimmed.iter().position(|&b| b == b':');
        let valid_name = colon.is_some_and(|c| {
            c > 0
                && trimmed[..c]
                    .iter()
                    .all(|b| b.is_ascii_graphic() && *b != b':')
        });
        if !valid_name {
            let shown = String::from_utf8_lossy(&trimmed[..trimmed.len().min(60)]).into_owned();
            return Err(field_err(
                "message",
                format!("header line {line_no} is not `Name: value`: {shown:?}"),
            ));
        }
        let c = colon.expect("checked");
        headers.push((
            String::from_utf8_lossy(&trimmed[..c]).into_owned(),
            String::from_utf8_lossy(&trimmed[c + 1..]).trim().to_owned(),
        ));
    }
    Ok((headers, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: serde_json::Value) -> JsonMessage {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn json_becomes_mime_with_bcc_only_in_the_envelope() {
        let m = json(serde_json::json!({
            "from": "Acme <news@acme.example>", "to": ["ann@example.org"], "bcc": ["audit@acme.example"],
            "subject": "Hello", "text": "plain", "html": "<p>rich</p>", "headers": {"X-Campaign": "nov"}
        }));
        let c = from_json(&m, "mx.test").unwrap();
        let text = String::from_utf8(c.body).unwrap();
        assert_eq!(c.recipients, ["ann@example.org", "audit@acme.example"]);
        assert_eq!(c.sender, "news@acme.example");
        assert!(text.contains("Subject: Hello"), "{text}");
        assert!(text.contains("X-Campaign: nov"), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(!text.to_ascii_lowercase().contains("audit@"), "{text}");
        assert!(
            text.contains(&format!("Message-ID: {}", c.message_id)),
            "{text}"
        );
    }

    #[test]
    fn attachments_are_decoded_and_named() {
        let m = json(
            serde_json::json!({"from": "a@acme.example", "to": ["b@x.org"], "text": "see",
            "attachments": [{"filename": "r.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="}]}),
        );
        let text = String::from_utf8(from_json(&m, "h").unwrap().body).unwrap();
        assert!(text.contains("filename=\"r.txt\""), "{text}");
        let bad = json(
            serde_json::json!({"from": "a@acme.example", "to": ["b@x.org"], "text": "x",
            "attachments": [{"filename": "r.txt", "content_type": "text/plain", "content_base64": "***"}]}),
        );
        assert_eq!(
            from_json(&bad, "h").unwrap_err().field,
            "attachments[0].content_base64"
        );
        for name in ["a/b.txt", "a\r\nBcc: x@evil.example", "nul\0.txt", ""] {
            let bad = json(
                serde_json::json!({"from": "a@acme.example", "to": ["b@x.org"], "text": "x",
                "attachments": [{"filename": name, "content_type": "text/plain", "content_base64": "aGVsbG8="}]}),
            );
            assert_eq!(
                from_json(&bad, "h").unwrap_err().field,
                "attachments[0].filename",
                "{name:?}"
            );
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let e = from_json(
            &json(serde_json::json!({"from": "nobody", "to": ["b@x.org"], "text": "x"})),
            "h",
        )
        .unwrap_err();
        assert_eq!(e.field, "from");
        assert!(e.message.contains("\"nobody\""), "{e}");
        let e = from_json(
            &json(serde_json::json!({"from": "a@b.c", "to": ["ok@x.org", "bad"], "text": "x"})),
            "h",
        )
        .unwrap_err();
        assert_eq!(e.field, "to[1]");
        let e = from_json(
            &json(serde_json::json!({"from": "a@b.c", "text": "x"})),
            "h",
        )
        .unwrap_err();
        assert_eq!(e.field, "to");
        let e = from_json(&json(serde_json::json!({"from": "a@b.c", "to": ["x@y.z"], "text": "x", "headers": {"Date": "now"}})), "h").unwrap_err();
        assert_eq!(e.field, "headers.Date");
    }

    #[test]
    fn header_names_and_values_cannot_smuggle_a_field() {
        let with = |headers: serde_json::Value| {
            from_json(
                &json(
                    serde_json::json!({"from": "a@acme.example", "to": ["b@x.org"], "text": "x", "headers": headers}),
                ),
                "h",
            )
        };
        let e = with(serde_json::json!({"X-Test\r\nBcc": "x@evil.example"})).unwrap_err();
        assert_eq!(e.field, "headers.X-Test\r\nBcc");
        assert!(e.message.contains("not a valid header name"), "{e}");
        assert_eq!(
            with(serde_json::json!({"BCC": "x@evil.example"}))
                .unwrap_err()
                .field,
            "headers.BCC"
        );
        assert_eq!(
            with(serde_json::json!({"Bcc ": "x"})).unwrap_err().field,
            "headers.Bcc "
        );
        let e = with(serde_json::json!({"X-A": "one\0two"})).unwrap_err();
        assert_eq!(e.field, "headers.X-A");
        assert!(e.message.contains("control character"), "{e}");
        assert!(with(serde_json::json!({"X-A": "tab\there, ü"})).is_ok());
    }

    #[test]
    fn long_header_values_are_folded_or_refused() {
        let with = |value: String| {
            from_json(
                &json(
                    serde_json::json!({"from": "a@acme.example", "to": ["b@x.org"], "text": "x",
                "headers": {"X-Long": value}}),
                ),
                "h",
            )
        };
        let words = with("word ".repeat(1000)).unwrap();
        assert_eq!(wire::check_lines(&words.body), Ok(()));
        let e = with("y".repeat(5000)).unwrap_err();
        assert_eq!(e.field, "headers.X-Long");
        assert!(e.message.contains("a word of 5000 octets"), "{e}");
    }

    #[test]
    fn a_seven_bit_attachment_leaves_with_crlf_line_ends_only() {
        // "hello\n.\r\nMAIL FROM:<ceo@bank.example>\r\n"
        let m = json(
            serde_json::json!({"from": "a@acme.example", "to": ["b@x.org"],
            "attachments": [{"filename": "a.txt", "content_type": "text/plain",
            "content_base64": "aGVsbG8KLg0KTUFJTCBGUk9NOjxjZW9AYmFuay5leGFtcGxlPg0K"}]}),
        );
        let body = from_json(&m, "h").unwrap().body;
        assert_eq!(wire::crlf(&body), Cow::Borrowed(&body[..]));
    }

    #[test]
    fn raw_line_ends_are_made_crlf_and_long_lines_and_nul_refused() {
        let to = ["b@x.org".to_string()];
        let c = from_raw(
            b"From: a@acme.example\nSubject: hi\n\nhello\n.\r\nMAIL FROM:<x@y>\n",
            "a@acme.example",
            &to,
            "h",
        )
        .unwrap();
        assert!(c.body.ends_with(
            b"From: a@acme.example\r\nSubject: hi\r\n\r\nhello\r\n.\r\nMAIL FROM:<x@y>\r\n"
        ));
        let long = format!(
            "From: a@acme.example\r\n\r\nok\r\n{}\r\n",
            "x".repeat(100_000)
        );
        let e = from_raw(long.as_bytes(), "a@acme.example", &to, "h").unwrap_err();
        assert_eq!(e.field, "message");
        assert!(e.message.starts_with("line 4 is 100000 octets long"), "{e}");
        let e = from_raw(
            b"From: a@acme.example\r\n\r\nn\0l\r\n",
            "a@acme.example",
            &to,
            "h",
        )
        .unwrap_err();
        assert!(e.message.contains("line 3 holds a NUL"), "{e}");
        let e = from_raw(
            b"From: a@acme.example\r\nX-A: b\x1bc\r\n\r\nx",
            "a@acme.example",
            &to,
            "h",
        )
        .unwrap_err();
        assert_eq!(e.field, "headers.X-A");
    }

    #[test]
    fn authors_are_read_from_from_and_sender() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            author_domains(&h(&[
                ("Subject", "x"),
                ("From", "\"Doe, J\" <j@Acme.example>, k@b.example"),
                ("Sender", "s@c.example")
            ]))
            .unwrap(),
            [
                ("headers.From".to_string(), "acme.example".to_string()),
                ("headers.From".into(), "b.example".into()),
                ("headers.Sender".into(), "c.example".into())
            ]
        );
        assert_eq!(
            author_domains(&h(&[("From", "not an address")]))
                .unwrap_err()
                .field,
            "headers.From"
        );
        let allowed = ["acme.example".to_string(), "*.corp.example".to_string()];
        assert!(domain_allowed("acme.example", &allowed));
        assert!(domain_allowed("mail.corp.example", &allowed));
        assert!(domain_allowed("corp.example", &allowed));
        assert!(!domain_allowed("evilcorp.example", &allowed));
        assert!(!domain_allowed("bank.example", &allowed));
        assert!(domain_allowed("bank.example", &["*".to_string()]));
    }

    #[test]
    fn raw_messages_lose_their_blind_fields_and_keep_everything_else() {
        let raw = b"From: a@acme.example\r\nBcc: hidden@x.org,\r\n  other@x.org\r\nTo: b@x.org\r\n\
                    RESENT-BCC: r@x.org\r\nBccx: kept\r\nSubject: Bcc: not a field\r\n\r\n\
                    Bcc: in the body stays\r\n";
        let c = from_raw(
            raw,
            "a@acme.example",
            &["b@x.org".into(), "hidden@x.org".into()],
            "h",
        )
        .unwrap();
        let text = String::from_utf8(c.body).unwrap();
        let (_, rest) = text.split_once("From:").unwrap();
        assert_eq!(
            format!("From:{rest}"),
            "From: a@acme.example\r\nTo: b@x.org\r\nBccx: kept\r\nSubject: Bcc: not a field\r\n\
             \r\nBcc: in the body stays\r\n"
        );
        assert_eq!(c.recipients, ["b@x.org", "hidden@x.org"]);
        assert!(
            c.headers
                .iter()
                .all(|(n, _)| !n.eq_ignore_ascii_case("bcc")
                    && !n.eq_ignore_ascii_case("resent-bcc")),
            "{:?}",
            c.headers
        );
        // A message without one keeps its bytes as they were.
        let raw = b"From: a@acme.example\r\n\r\nbody\r\n";
        let c = from_raw(raw, "a@acme.example", &["b@x.org".into()], "h").unwrap();
        assert!(c.body.ends_with(raw));
    }

    #[test]
    fn fields_for_sluice_are_taken_out_of_the_header_only() {
        let names = ["x-sluice-tags", "x-sluice-idempotency-key"];
        let raw = b"From: a@acme.example\r\nX-Sluice-Tags: a,\r\n b\r\nTo: b@x.org\r\n\
                    x-sluice-idempotency-key: k1\r\nX-Sluice-Tagsx: kept\r\n\r\n\
                    X-Sluice-Tags: in the body stays\r\n";
        let (taken, stripped) = take_fields(raw, &names);
        assert_eq!(
            taken,
            [
                ("X-Sluice-Tags".to_string(), "a, b".to_string()),
                ("x-sluice-idempotency-key".to_string(), "k1".to_string())
            ]
        );
        assert_eq!(
            String::from_utf8(stripped.unwrap()).unwrap(),
            "From: a@acme.example\r\nTo: b@x.org\r\nX-Sluice-Tagsx: kept\r\n\r\n\
             X-Sluice-Tags: in the body stays\r\n"
        );
        // None in the header (one in the body does not count), and LF-only lines.
        let raw = b"From: a@acme.example\n\nX-Sluice-Tags: body\n";
        assert_eq!(take_fields(raw, &names), (Vec::new(), None));
        let (taken, stripped) = take_fields(b"X-Sluice-Tags: t\nFrom: a@b.c\n\nx\n", &names);
        assert_eq!(taken.len(), 1);
        assert_eq!(stripped.unwrap(), b"From: a@b.c\n\nx\n");
    }

    #[test]
    fn resent_authors_are_authors() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            author_domains(&h(&[
                ("Resent-From", "r@Bank.example"),
                ("resent-sender", "s@c.example"),
                ("Resent-To", "t@d.example")
            ]))
            .unwrap(),
            [
                (
                    "headers.Resent-From".to_string(),
                    "bank.example".to_string()
                ),
                ("headers.resent-sender".into(), "c.example".into())
            ]
        );
    }

    #[test]
    fn raw_messages_get_a_message_id_and_keep_their_bytes() {
        let raw = b"From: a@acme.example\r\nSubject: hi\r\n\r\nbody\r\n";
        let c = from_raw(raw, "a@acme.example", &["b@x.org".into()], "h").unwrap();
        assert!(c.body.starts_with(b"Message-ID: <"));
        assert!(c.body.ends_with(raw));
        let e = from_raw(
            b"From a@b\r\n\r\n",
            "a@acme.example",
            &["b@x.org".into()],
            "h",
        )
        .unwrap_err();
        assert!(
            e.message.contains("header line 1 is not `Name: value`"),
            "{e}"
        );
        let e = from_raw(
            b"Subject: x\r\n\r\n",
            "a@acme.example",
            &["b@x.org".into()],
            "h",
        )
        .unwrap_err();
        assert_eq!(e.message, "has no From header");
    }
}
