//! What the bounce stage's answers mean to the pipeline: the event a bounce e-mail
//! becomes, the classification of a synchronous SMTP reply, and VERP sending (one
//! transaction per recipient, each with its own signed return path).
//!
//! The reason vocabulary is the bounce stage's (Sisimai's). Reasons that say the
//! receiver refused the *relay* rather than the recipient are the `blocked` class,
//! which relay stats count per window so a router can steer around a relay whose
//! mail is being blocked.

use super::state::Server;
use super::tenant_live::CallFailure;
use crate::logging::Chain;
use crate::relay::{RelayClient, RelayReply};
use crate::stage::{BounceInput, BounceResult, Reason, ReplyInput, SmtpReply, Stage};
use crate::store::{EventKind, Lease, NewSuppression};
use serde_json::{Value, json};
use std::sync::Arc;

/// Reasons that point at the sending relay (its IP, reputation, policy), not at
/// the recipient.
pub fn is_blocking(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::Blocked
            | Reason::Spamdetected
            | Reason::Badreputation
            | Reason::Policyviolation
            | Reason::Requireptr
    )
}

/// The stage's name of a reason, e.g. `userunknown`.
pub fn reason_name(reason: Reason) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "undefined".into())
}

/// What one bounce e-mail means for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub kind: EventKind,
    pub detail: Value,
    /// (reason, source) to suppress the address with.
    pub suppress: Option<(String, String)>,
}

/// The result about `address` among a bounce's results: the one naming it, else the
/// first (the e-mail came to this recipient's own return path, so a forwarded
/// address is still about it).
pub fn pick<'a>(results: &'a [BounceResult], address: &str) -> Option<&'a BounceResult> {
    results
        .iter()
        .find(|r| r.recipient.eq_ignore_ascii_case(address))
        .or_else(|| results.first())
}

/// The event a bounce e-mail becomes: `bounced` (a failure: the recipient becomes
/// `bounced`; suppressed when hard), `delayed`, `complained` (a feedback report;
/// suppressed) or `bounce_note` (a success report, an auto-reply, or nothing read).
pub fn verdict(result: Option<&BounceResult>, notes: &[String]) -> Verdict {
    let Some(r) = result else {
        let note = if notes.is_empty() {
            "no recipient found in the bounce".to_string()
        } else {
            notes.join("; ")
        };
        return Verdict {
            kind: EventKind::BounceNote,
            detail: json!({"source": "dsn", "note": note}),
            suppress: None,
        };
    };
    let reason = reason_name(r.reason);
    let action = r.action.to_ascii_lowercase();
    let complaint = r.reason == Reason::Feedback;
    let mut detail = json!({
        "source": if complaint { "complaint" } else { "dsn" },
        "reason": reason,
        "hard": r.hard,
        "status": r.status,
        "reply_code": r.reply_code,
        "action": r.action,
        "diagnostic": r.diagnostic,
        "reported_recipient": r.recipient,
    });
    if let Some(id) = &r.original_message_id {
        detail["original_message_id"] = json!(id);
    }
    if is_blocking(r.reason) {
        detail["class"] = json!("blocked");
    }
    let (kind, suppress) = if complaint {
        (
            EventKind::Complained,
            Some((reason.clone(), "complaint".into())),
        )
    } else if matches!(r.reason, Reason::Delivered | Reason::Vacation)
        || matches!(action.as_str(), "delivered" | "relayed" | "expanded")
    {
        (EventKind::BounceNote, None)
    } else if action == "delayed" {
        (EventKind::Delayed, None)
    } else {
        let suppress = r.hard.then(|| (reason.clone(), "dsn".to_string()));
        (EventKind::Bounced, suppress)
    };
    Verdict {
        kind,
        detail,
        suppress,
    }
}

/// The bounce stage's reading of one SMTP reply received while sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyClass {
    pub reason: String,
    pub hard: bool,
    pub status: String,
    pub blocked: bool,
}

/// Classifies a 4xx/5xx reply through the tenant's bounce plugin when it has a live
/// one, else (or after it failed) the pipeline's; `None` for a 2xx or when no plugin
/// could classify it (the send stage's reading then stands alone). Also the failures,
/// for `plugin_error` events.
pub async fn classify_reply(
    server: &Server,
    tenant_id: &str,
    recipient: &str,
    reply: &SmtpReply,
) -> (Option<ReplyClass>, Vec<CallFailure>) {
    if reply.code < 400 {
        return (None, Vec::new());
    }
    let input = BounceInput::Reply(ReplyInput {
        recipient: recipient.to_owned(),
        reply: reply.clone(),
    });
    let pipeline = server.plugins.stage(Stage::Bounce);
    let called = server
        .plugins
        .tenants
        .call_stage(
            &server.store,
            tenant_id,
            Stage::Bounce,
            pipeline.clone(),
            pipeline,
            move |p| p.bounce(&input),
        )
        .await;
    let class = match called.result {
        Ok(out) => out.results.first().map(|r| ReplyClass {
            reason: reason_name(r.reason),
            hard: r.hard,
            status: r.status.clone(),
            blocked: is_blocking(r.reason),
        }),
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "bounce plugin failed on a reply; recording it unclassified");
            None
        }
    };
    (class, called.failures)
}

/// Adds a reply's class to an attempt event's detail. `final_failure`: the attempt
/// ended the recipient (bounced/failed), so hard/soft is the classifier's.
pub fn annotate(detail: &mut Value, class: Option<&ReplyClass>, final_failure: bool) {
    let Some(c) = class else { return };
    // The send stage's words stay, beside the bounce stage's reason.
    if let Some(said) = detail.get("reason").cloned() {
        detail["send_reason"] = said;
    }
    detail["reason"] = json!(c.reason);
    detail["status"] = json!(c.status);
    if final_failure {
        detail["hard"] = json!(c.hard);
    }
    if c.blocked {
        detail["class"] = json!("blocked");
    }
}

/// Suppresses the address of a recipient refused hard while sending.
pub async fn suppress_refused(server: &Server, lease: &Lease, class: &ReplyClass, reply: &str) {
    let new = NewSuppression {
        tenant_id: lease.tenant_id.clone(),
        address: lease.address.clone(),
        reason: class.reason.clone(),
        source: "reply".into(),
        detail: json!({"status": class.status, "reply": reply}),
        message_id: Some(lease.message_id.clone()),
        added_by: crate::store::AddedBy::Platform,
    };
    if let Err(e) = server.store.suppress(new, super::state::now_ms()).await {
        tracing::warn!(
            error = %Chain(&e),
            message_id = %lease.message_id,
            tenant = %lease.tenant_id,
            recipient = lease.recipient_idx,
            domain = %lease.domain,
            "cannot suppress a hard-bounced address"
        );
    }
}

/// Sends one message to each recipient in its own transaction with its own VERP
/// return path (concurrently; the relay's pool and limits bound it). Replies in
/// the order of `recipients`.
pub async fn send_verp(
    server: &Server,
    client: &Arc<RelayClient>,
    sender: &str,
    recipients: &[&Lease],
    body: &Arc<Vec<u8>>,
) -> Vec<RelayReply> {
    let verp = server.verp.as_ref();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, l) in recipients.iter().enumerate() {
        let return_path = verp
            .and_then(|v| v.return_path(&l.message_id, l.recipient_idx))
            .unwrap_or_else(|| sender.to_owned());
        let (client, body, to) = (client.clone(), body.clone(), l.address.clone());
        tasks.spawn(async move { (i, client.send(&return_path, &[to], &body).await) });
    }
    let mut replies: Vec<Option<RelayReply>> = vec![None; recipients.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, mut r)) = done {
            replies[i] = r.pop();
        }
    }
    replies
        .into_iter()
        .map(|r| {
            r.unwrap_or(RelayReply {
                reply: None,
                transport_error: Some("the sending task failed".into()),
                latency_ms: 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(reason: Reason, hard: bool, action: &str) -> BounceResult {
        BounceResult {
            recipient: "bob@example.net".into(),
            status: "5.1.1".into(),
            reply_code: Some(550),
            reason,
            hard,
            action: action.into(),
            diagnostic: "550 5.1.1 no such user".into(),
            original_message_id: None,
            verp_token: None,
        }
    }

    #[test]
    fn a_hard_failure_bounces_and_suppresses() {
        let v = verdict(Some(&result(Reason::Userunknown, true, "failed")), &[]);
        assert_eq!(v.kind, EventKind::Bounced);
        assert_eq!(v.suppress, Some(("userunknown".into(), "dsn".into())));
        assert_eq!(v.detail["reason"], "userunknown");
        assert_eq!(v.detail["source"], "dsn");
        assert!(v.detail.get("class").is_none());
    }

    #[test]
    fn soft_failures_delays_complaints_and_notes() {
        let soft = verdict(Some(&result(Reason::Mailboxfull, false, "failed")), &[]);
        assert_eq!((soft.kind, soft.suppress), (EventKind::Bounced, None));
        let delayed = verdict(Some(&result(Reason::Expired, false, "delayed")), &[]);
        assert_eq!((delayed.kind, delayed.suppress), (EventKind::Delayed, None));
        let fbl = verdict(Some(&result(Reason::Feedback, false, "")), &[]);
        assert_eq!(fbl.kind, EventKind::Complained);
        assert_eq!(fbl.suppress, Some(("feedback".into(), "complaint".into())));
        assert_eq!(fbl.detail["source"], "complaint");
        let ok = verdict(Some(&result(Reason::Delivered, false, "delivered")), &[]);
        assert_eq!(ok.kind, EventKind::BounceNote);
        let none = verdict(None, &["nothing here".into()]);
        assert_eq!(none.kind, EventKind::BounceNote);
        assert_eq!(none.detail["note"], "nothing here");
    }

    #[test]
    fn blocking_reasons_are_the_blocked_class() {
        let v = verdict(Some(&result(Reason::Badreputation, true, "failed")), &[]);
        assert_eq!(v.detail["class"], "blocked");
        let mut detail = json!({"hard": true, "reason": "gave up"});
        let class = ReplyClass {
            reason: "mailboxfull".into(),
            hard: false,
            status: "5.2.2".into(),
            blocked: false,
        };
        annotate(&mut detail, Some(&class), true);
        assert_eq!(
            detail,
            json!({"hard": false, "reason": "mailboxfull", "send_reason": "gave up", "status": "5.2.2"})
        );
    }

    #[test]
    fn the_result_naming_the_recipient_wins() {
        let mut a = result(Reason::Userunknown, true, "failed");
        a.recipient = "other@example.net".into();
        let b = result(Reason::Mailboxfull, false, "failed");
        let results = vec![a, b];
        assert_eq!(
            pick(&results, "BOB@example.net").unwrap().reason,
            Reason::Mailboxfull
        );
        assert_eq!(pick(&results, "x@y").unwrap().reason, Reason::Userunknown);
        assert!(pick(&[], "x@y").is_none());
    }
}
