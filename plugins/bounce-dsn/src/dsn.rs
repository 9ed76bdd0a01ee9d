//! RFC 3464 delivery status notifications: the per-recipient field groups
//! of a `message/delivery-status` part (or of DSN fields pasted into the
//! text, as some MTAs do), completed from the human-readable part when the
//! report leaves out the server's reply.

use crate::addr;
use crate::found::Found;
use crate::mail::Mail;
use crate::mime::{self, Fields};
use crate::plain;
use sluice_sdk::bounce::Reason;

/// The reason of a PowerMTA bounce category (`X-PowerMTA-BounceCategory`).
fn powermta_reason(category: &str) -> Option<Reason> {
    Some(match category.trim().to_ascii_lowercase().as_str() {
        "bad-mailbox" => Reason::Userunknown,
        "bad-domain" => Reason::Hostunknown,
        "bad-connection" => Reason::Blocked,
        "content-related" => Reason::Contenterror,
        "inactive-mailbox" => Reason::Suspend,
        "invalid-sender" => Reason::Rejected,
        "message-expired" => Reason::Expired,
        "no-answer-from-host" | "routing-errors" => Reason::Networkerror,
        "policy-related" => Reason::Policyviolation,
        "protocol-errors" => Reason::Syntaxerror,
        "quota-issues" => Reason::Mailboxfull,
        "relaying-issues" => Reason::Norelaying,
        "spam-related" => Reason::Spamdetected,
        "virus-related" => Reason::Virusdetected,
        _ => return None,
    })
}

/// Field groups of a delivery-status body, the per-message group first.
fn groups(body: &str) -> Vec<Fields<'_>> {
    let mut groups = Vec::new();
    let mut rest = body;
    while !rest.trim().is_empty() {
        rest = rest.trim_start_matches(['\n', ' ', '\t']);
        let (fields, after) = mime::parse_fields(rest);
        if !fields.is_empty() {
            groups.push(fields);
        }
        if after.len() >= rest.len() {
            break;
        }
        rest = after;
    }
    groups
}

fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((t, v)) if !t.contains(' ') && !t.contains('@') => v.trim(),
        _ => value.trim(),
    }
}

/// Where the first `\n` followed by `field` (lower case, any case in the
/// text) is: `text.to_ascii_lowercase().find("\n" + field)` without a copy.
fn find_line_start(text: &str, field: &str) -> Option<usize> {
    text.match_indices('\n').map(|(i, _)| i).find(|&i| {
        text.as_bytes()[i + 1..]
            .get(..field.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(field.as_bytes()))
    })
}

/// The recipients of the DSN part, or of DSN fields found in the text.
pub fn read(mail: &Mail) -> Vec<Found> {
    let body: &str = match mail.part(&["message/delivery-status", "message/global-delivery-status"])
    {
        Some(p) => &p.body,
        None => {
            // DSN fields pasted into the text of the report.
            let text = mail.report.as_str();
            let at = |field: &str| find_line_start(text, field);
            match at("final-recipient:").or_else(|| at("original-recipient:")) {
                Some(_) if at("status:").is_some() || at("action:").is_some() => {
                    let start = at("reporting-mta:")
                        .or_else(|| at("final-recipient:"))
                        .or_else(|| at("original-recipient:"))
                        .unwrap_or(0);
                    &mail.report[start..]
                }
                _ => return Vec::new(),
            }
        }
    };
    let mut out: Vec<Found> = Vec::new();
    let groups = groups(body);
    // PowerMTA classifies every bounce itself, in a field of its own.
    let category = mime::field(&mail.top.headers, "x-powermta-bouncecategory")
        .map(str::to_owned)
        .or_else(|| {
            groups
                .iter()
                .find_map(|g| mime::field(g, "x-powermta-bouncecategory").map(str::to_owned))
        })
        .and_then(|c| powermta_reason(&c));
    for g in groups.into_iter().take(crate::MAX_RECIPIENTS) {
        let get = |n: &str| mime::field(&g, n);
        let final_rcpt = get("final-recipient").and_then(addr::from_field);
        let original = get("original-recipient").and_then(addr::from_field);
        let recipient = match (final_rcpt, original) {
            (Some(f), Some(o)) if !f.contains('@') && o.contains('@') => o,
            (Some(f), _) => f,
            (None, Some(o)) => o,
            (None, None) => match get("x-actual-recipient").and_then(addr::from_field) {
                Some(a) => a,
                None => continue,
            },
        };
        let action = get("action")
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .split([' ', '('])
            .next()
            .unwrap_or("")
            .to_owned();
        // RFC 3464 2.3.3: "relayed" (passed on to where no DSN is made)
        // and "expanded" (delivered, then forwarded to several) are
        // success notices, as "delivered" is; one with a failure status is
        // not read as one.
        let relayed = matches!(action.as_str(), "relayed" | "expanded");
        let failed_status = get("status")
            .and_then(crate::classify::find_status)
            .is_some_and(|s| !s.starts_with('2'));
        if relayed && failed_status {
            continue;
        }
        let raw_diagnostic = get("diagnostic-code").unwrap_or("");
        let diagnostic = strip_type(raw_diagnostic).to_owned();
        let diagnostic_type = raw_diagnostic
            .split_once(';')
            .map(|(t, _)| t.trim().to_owned())
            .unwrap_or_default();
        let status = get("status")
            .and_then(crate::classify::find_status)
            .unwrap_or_default();
        let mut f = Found::new(&recipient, &diagnostic);
        f.status = status;
        f.action = action;
        f.diagnostic_type = diagnostic_type;
        // Delivered to a program (`|procmail ...`): what failed is the
        // local mailer, whatever the SMTP-ish status says.
        if get("x-actual-recipient").is_some_and(|a| strip_type(a).starts_with('|')) {
            f.diagnostic_type = "x-unix".into();
        }
        if f.action == "delivered" || relayed || f.status.starts_with("2.") {
            f.decide(Reason::Delivered, "dsn-action-delivered-or-status-2");
        } else {
            f.reason = category;
            f.reason_rule = "format-powermta-category";
        }
        out.push(f);
    }
    // Diagnostic-Code is optional: the server's words are then in the text.
    let needs_text = out
        .iter()
        .any(|f| f.diagnostic.trim().len() < 4 || !f.recipient.contains('@'));
    if !needs_text {
        return out;
    }
    let from_text = plain::scan(mail);
    // A recipient the report garbled ("@relay.example"): the text names it.
    if from_text.len() == 1 && out.len() == 1 && !out[0].recipient.contains('@') {
        out[0].recipient = from_text[0].recipient.clone();
    }
    for f in &mut out {
        if f.diagnostic.trim().is_empty() || f.diagnostic.trim().len() < 4 {
            if let Some(t) = from_text
                .iter()
                .find(|t| addr::same(&t.recipient, &f.recipient))
                .or_else(|| (from_text.len() == 1).then(|| &from_text[0]))
            {
                f.diagnostic = t.diagnostic.clone();
                f.general = t.general;
            } else if let Some(p) = mail.error_paragraph() {
                f.diagnostic = p.to_owned();
                f.general = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(action: &str, status: &str) -> String {
        format!(
            "From: MAILER-DAEMON@mx.example.org\nSubject: Delivery Status Notification\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nNotice.\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\nFinal-Recipient: rfc822; a@example.org\nAction: {action}\nStatus: {status}\n--b--\n"
        )
    }

    #[test]
    fn relayed_and_expanded_are_success_notices() {
        for action in ["relayed", "expanded", "delivered"] {
            let text = report(action, "2.0.0");
            let found = read(&Mail::parse(&text));
            assert_eq!(found.len(), 1, "{action}");
            assert_eq!(found[0].reason, Some(Reason::Delivered), "{action}");
        }
        // A relayed recipient with a failure status is not read as one.
        let text = report("relayed", "5.1.1");
        assert!(read(&Mail::parse(&text)).is_empty());
    }
}
