//! Queue inspection and controls on the wire (issue 22): the answers of
//! `GET /v1/messages`, `GET /admin/v1/queue`, the hold, release and cancel routes and
//! the tenant and relay suspensions (`serve/queue_api.rs`). Made from the store's
//! `MessageSummary`, `QueueSummary`, `Held` and `Cancelled` here only, so a store change
//! cannot change the JSON unseen; the request bodies stay beside their handlers.

use super::enum_of;
use crate::store::{
    Cancelled, Held, MessageSummary, QueueGroup, QueueSummary, RecipientState, RelayState,
    TopGroups,
};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

fn recipient_state() -> utoipa::openapi::Object {
    enum_of(
        &RecipientState::ALL,
        "the least advanced state of its recipients",
    )
}

fn relay_state() -> utoipa::openapi::Object {
    enum_of(
        &[RelayState::Active, RelayState::Draining],
        "`draining` (suspended: no new work) or `active`",
    )
}

/// One message of a page.
#[derive(Serialize, ToSchema)]
pub struct MessageItem {
    pub id: String,
    /// The `Message-ID` header (`null` for a message stored before it was kept apart).
    pub message_id: Option<String>,
    /// The least advanced state of its recipients.
    #[schema(schema_with = recipient_state)]
    pub state: RecipientState,
    pub from: String,
    pub recipients: RecipientsSummary,
    pub tags: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct RecipientsSummary {
    pub total: u32,
    /// Recipients by delivery state.
    #[schema(value_type = BTreeMap<String, u32>)]
    pub by_state: BTreeMap<&'static str, u32>,
}

#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageItem>,
    /// Give it as `after` for the next page; `null` on the last page.
    pub next_after: Option<String>,
}

impl From<MessageSummary> for MessageItem {
    fn from(m: MessageSummary) -> Self {
        MessageItem {
            state: m.state(),
            recipients: RecipientsSummary {
                total: m.recipients(),
                by_state: m.by_state.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
            },
            id: m.id,
            message_id: m.header_message_id,
            from: m.sender,
            tags: m.tags,
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HeldDto {
    pub held: usize,
    /// Recipients in flight now, marked: held if their attempt does not finish them.
    pub in_flight_marked: usize,
}

impl From<Held> for HeldDto {
    fn from(h: Held) -> Self {
        HeldDto {
            held: h.held,
            in_flight_marked: h.in_flight,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReleasedDto {
    pub released: usize,
}

#[derive(Serialize, ToSchema)]
pub struct CancelledDto {
    pub cancelled: usize,
    /// Recipients in flight now, left to finish their attempt (cancel again after).
    pub in_flight: usize,
}

impl From<Cancelled> for CancelledDto {
    fn from(c: Cancelled) -> Self {
        CancelledDto {
            cancelled: c.cancelled,
            in_flight: c.in_flight,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TenantSuspension {
    pub tenant: String,
    pub suspended: bool,
    /// Suspend: recipients held now. Resume: recipients released.
    pub recipients: usize,
    /// Suspend: recipients in flight, marked (held if their attempt does not finish them).
    pub in_flight_marked: usize,
}

#[derive(Serialize, ToSchema)]
pub struct RelaySuspension {
    pub relay: String,
    /// `draining` (suspended: no new work) or `active`.
    #[schema(schema_with = relay_state)]
    pub state: RelayState,
}

#[derive(Serialize, ToSchema)]
pub struct GroupDto {
    pub key: String,
    pub recipients: i64,
    /// Age of the oldest message among them, by this node's clock; `null` when none.
    pub oldest_age_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct TopDto {
    pub top: Vec<GroupDto>,
    /// Groups in all (`top` shows the largest).
    pub groups: usize,
    /// The groups past `top`, summed (`key` is `"(other)"`); `null` when none.
    pub other: Option<GroupDto>,
}

#[derive(Serialize, ToSchema)]
pub struct SuspendedDto {
    pub tenant: String,
    pub since_ms: i64,
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct QueueDto {
    pub at_ms: i64,
    pub by_state: Vec<GroupDto>,
    pub held_by: Vec<GroupDto>,
    pub by_tenant: TopDto,
    pub by_relay: TopDto,
    pub by_domain: TopDto,
    pub suspended_tenants: Vec<SuspendedDto>,
}

impl GroupDto {
    /// A group as seen at `now` (ages, not times: the caller's clock need not agree).
    fn at(g: QueueGroup, now: i64) -> Self {
        GroupDto {
            key: g.key,
            recipients: g.recipients,
            oldest_age_ms: g.oldest_accepted_ms.map(|t| (now - t).max(0)),
        }
    }
}

impl TopDto {
    fn at(t: TopGroups, now: i64) -> Self {
        TopDto {
            top: t.top.into_iter().map(|g| GroupDto::at(g, now)).collect(),
            groups: t.groups,
            other: t.rest.map(|g| GroupDto::at(g, now)),
        }
    }
}

impl QueueDto {
    /// The queue as summed by the store, with ages as of `now`.
    pub fn at(q: QueueSummary, now: i64) -> Self {
        QueueDto {
            at_ms: now,
            by_state: q
                .by_state
                .into_iter()
                .map(|g| GroupDto::at(g, now))
                .collect(),
            held_by: q
                .held_by
                .into_iter()
                .map(|g| GroupDto::at(g, now))
                .collect(),
            by_tenant: TopDto::at(q.by_tenant, now),
            by_relay: TopDto::at(q.by_relay, now),
            by_domain: TopDto::at(q.by_domain, now),
            suspended_tenants: q
                .suspended_tenants
                .into_iter()
                .map(|(tenant, since_ms, reason)| SuspendedDto {
                    tenant,
                    since_ms,
                    reason,
                })
                .collect(),
        }
    }
}
