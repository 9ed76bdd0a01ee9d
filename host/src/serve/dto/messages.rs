//! Messages (`/v1/messages…`), retries and suppression lists on the wire.

use super::enum_of;
use crate::store::{EventKind, MessageView, RecipientState, Suppression};
use serde::Serialize;
use utoipa::ToSchema;

fn recipient_state() -> utoipa::openapi::Object {
    enum_of(&RecipientState::ALL, "the recipient's delivery state")
}

fn event_kind() -> utoipa::openapi::Object {
    enum_of(&EventKind::ALL, "what happened (the stored kind)")
}

/// `POST /v1/messages`: 202 when accepted, 200 (`Idempotent-Replayed: true`) for a
/// repeat of an idempotency key.
#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    /// The message's id (a ULID).
    pub id: String,
    /// Its `Message-ID` header (the stored one for a repeat).
    pub message_id: Option<String>,
    /// Every recipient: those accepted (`queued`, or `delivering` when handed over at
    /// once), then those left out because they are suppressed.
    pub recipients: Vec<SubmittedRecipient>,
}

/// One recipient of a submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmittedRecipient {
    pub address: String,
    /// A delivery state, or `suppressed` (not accepted).
    #[schema(example = "queued")]
    pub status: String,
    /// Why it is suppressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the suppression came from (`dsn`, `smtp`, `manual`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Since when it is suppressed (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
}

impl SubmittedRecipient {
    pub fn accepted(address: String, state: RecipientState) -> SubmittedRecipient {
        SubmittedRecipient {
            address,
            status: state.as_str().to_owned(),
            reason: None,
            source: None,
            since_ms: None,
        }
    }
}

/// `GET /v1/messages/{id}`: a message, its recipients' states and its timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDetail {
    pub id: String,
    /// The envelope sender.
    pub sender: String,
    /// Bytes as stored.
    pub size: u64,
    pub tags: Vec<String>,
    pub created_at_ms: i64,
    pub recipients: Vec<RecipientStatus>,
    /// Oldest first (kept for `[events] retention_days`).
    pub events: Vec<MessageEvent>,
}

/// One recipient of a message as its status page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientStatus {
    pub address: String,
    #[schema(schema_with = recipient_state)]
    pub state: RecipientState,
    pub attempts: u32,
    /// The relay of its last attempt.
    pub relay: Option<String>,
    /// The last SMTP reply.
    pub last_reply: Option<String>,
    pub next_attempt_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

/// One event of a message's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageEvent {
    pub at_ms: i64,
    #[schema(schema_with = event_kind)]
    pub kind: EventKind,
    /// The recipient it is about; `null` for the whole message.
    pub recipient: Option<String>,
    pub relay: Option<String>,
    /// What the event records (SMTP reply, attempt, latency, bounce class, …).
    pub detail: serde_json::Value,
}

impl From<MessageView> for MessageDetail {
    fn from(m: MessageView) -> MessageDetail {
        let events = m
            .events
            .into_iter()
            .map(|e| MessageEvent {
                at_ms: e.at_ms,
                kind: e.kind,
                recipient: e
                    .recipient_idx
                    .and_then(|i| m.recipients.iter().find(|r| r.recipient_idx == i))
                    .map(|r| r.address.clone()),
                relay: e.relay,
                detail: e.detail,
            })
            .collect();
        MessageDetail {
            id: m.id,
            sender: m.sender,
            size: m.size,
            tags: m.tags,
            created_at_ms: m.created_at_ms,
            recipients: m
                .recipients
                .into_iter()
                .map(|r| RecipientStatus {
                    address: r.address,
                    state: r.state,
                    attempts: r.attempts,
                    relay: r.last_relay,
                    last_reply: r.last_reply,
                    next_attempt_at_ms: r.next_attempt_at_ms,
                    updated_at_ms: r.updated_at_ms,
                })
                .collect(),
            events,
        }
    }
}

/// `POST …/retry`: how many deferred recipients are due now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    pub retried: usize,
}

/// One entry of a suppression list.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionView {
    pub address: String,
    pub reason: String,
    /// `dsn`, `smtp`, `complaint`, `manual`, …
    pub source: String,
    /// What the suppression was made from (a bounce's status, a note).
    pub detail: serde_json::Value,
    /// The message whose bounce or complaint suppressed it.
    pub message_id: Option<String>,
    /// `platform` or `tenant`: a tenant cannot remove the platform's.
    pub added_by: &'static str,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl From<&Suppression> for SuppressionView {
    fn from(s: &Suppression) -> SuppressionView {
        SuppressionView {
            address: s.address.clone(),
            reason: s.reason.clone(),
            source: s.source.clone(),
            detail: s.detail.clone(),
            message_id: s.message_id.clone(),
            added_by: s.added_by.as_str(),
            created_at_ms: s.created_at_ms,
            updated_at_ms: s.updated_at_ms,
        }
    }
}

/// A page of a suppression list, by address.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionPage {
    pub suppressions: Vec<SuppressionView>,
    /// The `after` of the next page; `null` on the last.
    pub next_after: Option<String>,
}

/// A suppression added (201).
#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionAdded {
    /// As stored (lower-cased).
    pub address: String,
    pub tenant: String,
}
