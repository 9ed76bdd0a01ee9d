//! The event log and webhooks on the wire (issue 21): an event's public form (made
//! here and nowhere else: the API, the SSE stream and webhook bodies all use
//! [`EventView`]) and the webhook API's answers.

use super::enum_of;
use crate::store::{EventKind, TenantEvent, Webhook, WebhookAttempt, WebhookState};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The type tenants see for a stored kind.
pub fn public_type(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Accepted => "message.accepted",
        EventKind::Routed => "message.routed",
        EventKind::Attempted => "message.attempted",
        EventKind::Delivered => "message.delivered",
        EventKind::Deferred => "message.deferred",
        EventKind::Bounced => "message.bounced",
        EventKind::Failed => "message.failed",
        EventKind::Expired => "message.expired",
        EventKind::Held => "message.held",
        EventKind::Released => "message.released",
        EventKind::Requeued => "message.requeued",
        EventKind::PluginError => "plugin.error",
        EventKind::Suppressed => "message.suppressed",
        EventKind::Delayed => "message.delayed",
        EventKind::Complained => "message.complained",
        EventKind::BounceNote => "message.bounce_note",
        EventKind::PluginSuspended => "plugin.suspended",
        EventKind::LowBalance => "billing.low_balance",
        EventKind::WebhookPaused => "webhook.paused",
    }
}

fn event_type() -> utoipa::openapi::Object {
    enum_of(&EventKind::ALL.map(public_type), "the event's type")
}

fn webhook_state() -> utoipa::openapi::Object {
    enum_of(
        &[
            WebhookState::Active,
            WebhookState::Paused,
            WebhookState::Disabled,
        ],
        "`active` sends; `paused` keeps its cursor (by its owner, or after failing past the retry window); `disabled` is off",
    )
}

/// One event of a tenant's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// `evt_` and a store-wide number: stable.
    #[schema(example = "evt_42")]
    pub id: String,
    /// The tenant's cursor: 1, 2, 3, … with no gaps.
    pub cursor: i64,
    #[serde(rename = "type")]
    #[schema(schema_with = event_type)]
    pub kind: &'static str,
    /// `null` for an event about the tenant, not a message.
    pub message_id: Option<String>,
    pub recipient: Option<String>,
    pub tags: Vec<String>,
    pub at_ms: i64,
    /// What the event records: `relay`, the SMTP `reply`, `attempt`, `latency_ms`, a
    /// bounce's `hard` and `class`, …
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl From<&TenantEvent> for EventView {
    fn from(e: &TenantEvent) -> EventView {
        let mut details = match &e.detail {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), other.clone());
                m
            }
        };
        if let Some(relay) = &e.relay {
            details
                .entry("relay")
                .or_insert_with(|| serde_json::Value::String(relay.clone()));
        }
        EventView {
            id: format!("evt_{}", e.seq),
            cursor: e.cursor,
            kind: public_type(e.kind),
            message_id: e.message_id.clone(),
            recipient: e.recipient.clone(),
            tags: e.tags.clone(),
            at_ms: e.at_ms,
            details,
        }
    }
}

/// `GET /v1/events`: a page of events after a cursor.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// The cursor to ask after next time (the last event's, or `after` when none).
    pub next: i64,
}

/// A webhook as answered: never its secret, except once at creation and rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// `wh_…`
    pub id: String,
    pub url: String,
    /// Public event types, or `*` for all.
    pub events: Vec<String>,
    pub description: String,
    #[schema(schema_with = webhook_state)]
    pub state: WebhookState,
    pub paused_reason: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    pub failing_since_ms: Option<i64>,
    /// Not before this (a retry's backoff).
    pub next_attempt_ms: Option<i64>,
    /// While the previous secret still signs (after a rotation).
    pub previous_secret_expires_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// A tenant's webhook read alone: its cursor; every event up to it was delivered
    /// (events of other messages past it may have been too, and are sent again after a
    /// crash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    /// A platform webhook read alone: its cursor per tenant (as `cursor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursors: Option<BTreeMap<String, i64>>,
    /// `whsec_…`: only in the answers of create and rotate-secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl WebhookView {
    /// `w` as answered at `now_ms`; with `cursors` (a read of one webhook) its cursor
    /// (a tenant's) or cursors (the platform's).
    pub fn new(w: &Webhook, cursors: Option<&[(String, i64)]>, now_ms: i64) -> WebhookView {
        let (mut cursor, mut by_tenant) = (None, None);
        if let Some(c) = cursors {
            match &w.tenant_id {
                Some(t) => {
                    cursor = Some(c.iter().find(|(x, _)| x == t).map_or(0, |(_, n)| *n));
                }
                None => by_tenant = Some(c.iter().cloned().collect()),
            }
        }
        WebhookView {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            description: w.description.clone(),
            state: w.state,
            paused_reason: w.paused_reason.clone(),
            failures: w.failures,
            failing_since_ms: w.failing_since_ms,
            next_attempt_ms: w.next_attempt_ms,
            previous_secret_expires_ms: w.previous_expires_ms.filter(|t| *t > now_ms),
            created_ms: w.created_ms,
            updated_ms: w.updated_ms,
            cursor,
            cursors: by_tenant,
            secret: None,
        }
    }
}

/// `GET …/webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// `POST …/webhooks/{id}/test`: how the test send went (it is kept as an attempt).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookTested {
    /// Whether the receiver answered 2xx.
    pub ok: bool,
    /// The receiver's HTTP status; `null` when none came.
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// `POST …/webhooks/{id}/replay`: the events after `after` are sent again.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayStarted {
    pub webhook_id: String,
    pub tenant_id: String,
    pub after: i64,
    /// The tenant's last cursor now.
    pub last: i64,
}

/// One delivery attempt (or test send).
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub at_ms: i64,
    /// The tenant whose events it carried (`null` for a test send).
    pub tenant_id: Option<String>,
    pub first_cursor: Option<i64>,
    pub last_cursor: Option<i64>,
    /// Events in the body.
    pub events: u32,
    /// The receiver's HTTP status; `null` when none came.
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

impl From<WebhookAttempt> for AttemptView {
    fn from(a: WebhookAttempt) -> AttemptView {
        AttemptView {
            at_ms: a.at_ms,
            tenant_id: a.tenant_id,
            first_cursor: a.first_cursor,
            last_cursor: a.last_cursor,
            events: a.events,
            status: a.status,
            latency_ms: a.latency_ms,
            error: a.error,
        }
    }
}

/// `GET …/webhooks/{id}/attempts`: the last attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptView>,
}
