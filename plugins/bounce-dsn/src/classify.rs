//! From status codes and reply texts to Sisimai's reasons.

use sluice_sdk::bounce::{BounceResult, Reason};

/// Text fragments that decide the reason before the status code does,
/// because many servers send a generic 5.0.0 or 5.7.1 with a telling text.
const TEXT_RULES: &[(&str, Reason)] = &[
    ("spam", Reason::Spamdetected),
    ("virus", Reason::Virusdetected),
    ("mailbox full", Reason::Mailboxfull),
    ("mailbox is full", Reason::Mailboxfull),
    ("quota", Reason::Mailboxfull),
    ("over quota", Reason::Mailboxfull),
    ("user unknown", Reason::Userunknown),
    ("unknown user", Reason::Userunknown),
    ("no such user", Reason::Userunknown),
    ("does not exist", Reason::Userunknown),
    ("no mailbox", Reason::Userunknown),
    ("mailbox unavailable", Reason::Userunknown),
    ("recipient address rejected", Reason::Userunknown),
    ("host not found", Reason::Hostunknown),
    ("domain not found", Reason::Hostunknown),
    ("relay access denied", Reason::Norelaying),
    ("relaying denied", Reason::Norelaying),
    ("too large", Reason::Mesgtoobig),
    ("size exceeds", Reason::Mesgtoobig),
    ("blacklist", Reason::Blocked),
    ("blocklist", Reason::Blocked),
    ("blocked", Reason::Blocked),
    ("reverse dns", Reason::Requireptr),
    ("ptr record", Reason::Requireptr),
    ("too many connections", Reason::Toomanyconn),
    ("rate limit", Reason::Speeding),
    ("disabled", Reason::Suspend),
    ("suspended", Reason::Suspend),
    ("dmarc", Reason::Authfailure),
    ("spf", Reason::Authfailure),
    ("dkim", Reason::Authfailure),
    ("timed out", Reason::Expired),
    ("expired", Reason::Expired),
];

/// The reason an RFC 3463 status implies on its own.
fn from_status(status: &str) -> Reason {
    let detail = status.get(2..).unwrap_or("");
    match detail {
        "1.1" | "1.0" | "1.3" => Reason::Userunknown,
        "1.2" => Reason::Hostunknown,
        "1.6" => Reason::Hasmoved,
        "1.8" => Reason::Rejected,
        "2.1" => Reason::Suspend,
        "2.2" => Reason::Mailboxfull,
        "2.3" => Reason::Exceedlimit,
        "3.1" => Reason::Systemfull,
        "3.4" => Reason::Mesgtoobig,
        "3.0" | "3.2" | "3.5" => Reason::Systemerror,
        "4.7" => Reason::Expired,
        "4.0" | "4.1" | "4.2" | "4.3" | "4.4" | "4.5" | "4.6" => Reason::Networkerror,
        "5.0" | "5.1" | "5.2" | "5.3" | "5.4" | "5.5" => Reason::Syntaxerror,
        "6.0" | "6.1" | "6.2" | "6.3" | "6.4" | "6.5" => Reason::Contenterror,
        "7.1" => Reason::Rejected,
        "7.0" | "7.2" | "7.3" => Reason::Securityerror,
        "7.7" | "7.6" => Reason::Contenterror,
        "7.25" => Reason::Requireptr,
        "7.23" | "7.24" | "7.26" | "7.27" => Reason::Authfailure,
        _ => Reason::Undefined,
    }
}

/// Whether a failure is permanent: a 5.x status or 5xx code, except reasons
/// that clear up by themselves.
fn is_hard(status: &str, code: Option<u16>, reason: Reason) -> bool {
    let permanent =
        status.starts_with('5') || (status.is_empty() && code.is_some_and(|c| c >= 500));
    permanent
        && !matches!(
            reason,
            Reason::Mailboxfull
                | Reason::Exceedlimit
                | Reason::Systemfull
                | Reason::Toomanyconn
                | Reason::Speeding
                | Reason::Expired
                | Reason::Networkerror
                | Reason::Systemerror
        )
}

/// Builds a result, classifying by text first, then by status.
pub fn result(
    recipient: String,
    status: &str,
    code: Option<u16>,
    diagnostic: String,
    action: &str,
) -> BounceResult {
    let lower = diagnostic.to_ascii_lowercase();
    let by_text = TEXT_RULES
        .iter()
        .find(|(frag, _)| lower.contains(frag))
        .map(|(_, r)| *r);
    let reason = by_text.unwrap_or_else(|| from_status(status));
    let hard = is_hard(status, code, reason);
    let action = if action.is_empty() {
        if status.starts_with('4') || code.is_some_and(|c| (400..500).contains(&c)) {
            "delayed"
        } else {
            "failed"
        }
    } else {
        action
    };
    BounceResult {
        recipient,
        status: status.to_owned(),
        reply_code: code,
        reason,
        hard,
        action: action.to_ascii_lowercase(),
        diagnostic,
        original_message_id: None,
        verp_token: None,
    }
}

/// The first `d.d.d` status in `text` whose class is 2, 4 or 5.
pub fn find_status(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| {
            let p: Vec<&str> = w.split('.').collect();
            p.len() == 3
                && matches!(p[0], "2" | "4" | "5")
                && (1..=3).contains(&p[1].len())
                && (1..=3).contains(&p[2].len())
                && p.iter().all(|x| x.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

/// The first three-digit reply code (2xx, 4xx, 5xx) standing alone in `text`.
pub fn find_reply_code(text: &str) -> Option<u16> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|w| w.len() == 3)
        .filter_map(|w| w.parse::<u16>().ok())
        .find(|c| matches!(c / 100, 2 | 4 | 5))
}

fn strip_type(value: &str) -> &str {
    value
        .split_once(';')
        .map(|(_, v)| v)
        .unwrap_or(value)
        .trim()
}

/// One recipient's DSN fields; `None` for a recipient that was delivered.
pub fn from_dsn_fields(fields: &[(String, String)]) -> Option<BounceResult> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let recipient = get("final-recipient")
        .or_else(|| get("original-recipient"))
        .map(strip_type)?;
    let recipient = recipient.trim_matches(['<', '>']).to_owned();
    let action = get("action")
        .unwrap_or("failed")
        .trim()
        .to_ascii_lowercase();
    if matches!(action.as_str(), "delivered" | "relayed" | "expanded") {
        return None;
    }
    let diagnostic = get("diagnostic-code")
        .map(strip_type)
        .unwrap_or("")
        .to_owned();
    let status = get("status")
        .and_then(find_status)
        .or_else(|| find_status(&diagnostic))
        .unwrap_or_default();
    let code = find_reply_code(&diagnostic);
    Some(result(recipient, &status, code, diagnostic, &action))
}

/// Plain-text bounces: a line `<addr>:` (qmail) or `<addr>: text` (Postfix
/// without a DSN, Exim's `addr` + indented reply) followed by the reply.
pub fn from_plain_text(text: &str) -> Vec<BounceResult> {
    let lines: Vec<&str> = text.lines().collect();
    let mut results: Vec<BounceResult> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("--- Below this line") || line.starts_with("------ This is a copy") {
            break;
        }
        let t = line.trim();
        let Some(rest) = t.strip_prefix('<') else {
            continue;
        };
        let Some((addr, after)) = rest.split_once('>') else {
            continue;
        };
        if !addr.contains('@')
            || !after.starts_with(':')
            || results.iter().any(|r| r.recipient == addr)
        {
            continue;
        }
        let mut detail = after[1..].trim().to_owned();
        for next in lines.iter().skip(i + 1).take(8) {
            let n = next.trim();
            if n.is_empty() || n.starts_with('<') {
                break;
            }
            detail.push(' ');
            detail.push_str(n);
        }
        let detail = detail.trim().to_owned();
        let status = find_status(&detail).unwrap_or_default();
        let code = find_reply_code(&detail);
        results.push(result(addr.to_owned(), &status, code, detail, ""));
    }
    results
}
