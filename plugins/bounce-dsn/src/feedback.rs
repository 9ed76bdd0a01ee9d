//! Reports that are not failures: ARF feedback reports (RFC 5965, reason
//! `feedback`) and RFC 3834 auto-replies (reason `vacation`).

use crate::addr;
use crate::found::Found;
use crate::mail::Mail;
use crate::mime;
use sluice_sdk::bounce::Reason;

/// Sisimai's stand-in when a complaint names no recipient at all.
const UNDISCLOSED: &str = "undisclosed-recipient-in-headers@libsisimai.org.invalid";

fn is_arf(mail: &Mail) -> bool {
    let ct = mail
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let subject = mail.subject.to_ascii_lowercase();
    mail.part(&["message/feedback-report"]).is_some()
        || (ct.contains("multipart/report") && ct.contains("feedback-report"))
        // Hotmail's complaints (JMRP) are not ARF but say what they are.
        || (subject.contains("complaint about message from") && !mail.original.is_empty())
        // Apple Mail's one-click unsubscribe is a complaint by the recipient.
        || mail
            .header("x-apple-unsubscribe")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The recipients a feedback report complains about.
pub fn arf(mail: &Mail) -> Option<Vec<Found>> {
    if !is_arf(mail) {
        return None;
    }
    let fields = mail
        .part(&["message/feedback-report"])
        .map(|p| mime::parse_fields(p.body.trim_start_matches('\n')).0)
        .unwrap_or_default();
    let mut recipients: Vec<String> = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("original-rcpt-to"))
        .filter_map(|f| addr::from_field(f.value()))
        .collect();
    if mail.header("x-apple-unsubscribe").is_some() {
        recipients.extend(mail.header("from").and_then(addr::from_field));
    }
    if recipients.is_empty() {
        let to = mail
            .original_header("x-hmxmroriginalrecipient")
            .and_then(addr::first)
            .or_else(|| mail.original_header("to").and_then(addr::first));
        recipients.push(to.unwrap_or_else(|| UNDISCLOSED.to_owned()));
    }
    recipients.dedup_by(|a, b| addr::same(a, b));
    let diagnostic = mail
        .report
        .split("\n\n")
        .map(crate::found::clean)
        .find(|p| !p.is_empty())
        .unwrap_or_default();
    let feedback_type = mime::field(&fields, "feedback-type")
        .unwrap_or("")
        .to_owned();
    Some(
        recipients
            .into_iter()
            .map(|r| {
                let mut f = Found::new(&r, &diagnostic);
                f.decide(Reason::Feedback, "format-arf-feedback-report");
                f.action = feedback_type.clone();
                f
            })
            .collect(),
    )
}

const AUTO_SUBJECTS: &[&str] = &[
    "auto:",
    "auto reply",
    "auto-reply",
    "autoreply",
    "automatic reply",
    "automatische antwort",
    "out of office",
    "out of the office",
    "away until",
    "away from",
    "on vacation",
    "vacation",
    "absence",
    "abwesenheit",
    "réponse automatique",
    "reponse automatique",
    "respuesta automática",
    "risposta automatica",
    "auto response",
    "autoresponse",
    "i am away",
    "i'm away",
    "out-of-office",
];

/// Whether headers (not only the subject) mark an automatic reply.
pub fn marked_auto_reply(mail: &Mail) -> bool {
    mail.header("auto-submitted")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("auto-replied"))
        || mail.header("x-autoreply").is_some()
        || mail.header("x-autorespond").is_some()
        || mail
            .header("precedence")
            .is_some_and(|v| v.eq_ignore_ascii_case("auto_reply"))
}

/// An RFC 3834 automatic reply: the person who is away, as `vacation`.
pub fn vacation(mail: &Mail) -> Option<Vec<Found>> {
    let auto = mail
        .header("auto-submitted")
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("auto-replied"));
    let precedence = mail
        .header("precedence")
        .is_some_and(|v| v.eq_ignore_ascii_case("auto_reply"));
    let flagged = mail.header("x-autoreply").is_some()
        || mail.header("x-autorespond").is_some()
        || mail.header("x-auto-response-suppress").is_some_and(|_| {
            let s = mail.subject.to_ascii_lowercase();
            AUTO_SUBJECTS.iter().any(|a| s.contains(a))
        });
    let subject = mail.subject.to_ascii_lowercase();
    let by_subject = AUTO_SUBJECTS.iter().any(|a| subject.contains(a));
    if !(auto || precedence || flagged || by_subject) {
        return None;
    }
    let who = addr::from_field(mail.header("from").unwrap_or(""))
        .or_else(|| mail.header("reply-to").and_then(addr::first))?;
    let diagnostic = mail
        .report
        .split("\n\n")
        .map(crate::found::clean)
        .find(|p| !p.is_empty())
        .unwrap_or_else(|| mail.subject.clone());
    let mut f = Found::new(&who, &diagnostic);
    f.decide(Reason::Vacation, "format-rfc3834-auto-reply");
    Some(vec![f])
}
