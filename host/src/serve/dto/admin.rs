//! The admin API's own answers (`/admin/v1/…`): relays, tenants and their keys, the
//! exception queue, and the nodes on the store.

use super::enum_of;
use crate::stage::RelayWindow;
use crate::store::{ApiKeyInfo, RecipientState, RecipientView, Relay, RelayState, Tenant};
use serde::Serialize;
use utoipa::ToSchema;

fn relay_state() -> utoipa::openapi::Object {
    enum_of(
        &[RelayState::Active, RelayState::Draining],
        "`active` takes new work; `draining` finishes what it has",
    )
}

fn recipient_state() -> utoipa::openapi::Object {
    enum_of(&RecipientState::ALL, "the recipient's delivery state")
}

/// A relay as stored (its secret never: only where the server reads it).
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayView {
    pub id: String,
    /// `smtp://host:port` (STARTTLS when offered) or `smtps://host:port`.
    pub url: String,
    pub auth_user: Option<String>,
    /// Where the AUTH secret lives: `env:NAME` or `file:PATH`.
    pub auth_secret_ref: Option<String>,
    pub connection_limit: u32,
    pub rate_limit_per_sec: Option<u32>,
    pub weight: u32,
    pub tags: Vec<String>,
    /// The tenant that brought it; `null`: a platform relay.
    pub owner: Option<String>,
    #[schema(schema_with = relay_state)]
    pub state: RelayState,
    pub created_at_ms: i64,
    /// A PEM file of CA certificates trusted for it instead of the public roots.
    pub tls_ca_file: Option<String>,
}

impl From<Relay> for RelayView {
    fn from(r: Relay) -> RelayView {
        RelayView {
            id: r.id,
            url: r.url,
            auth_user: r.auth_user,
            auth_secret_ref: r.auth_secret_ref,
            connection_limit: r.connection_limit,
            rate_limit_per_sec: r.rate_limit_per_sec,
            weight: r.weight,
            tags: r.tags,
            owner: r.owner,
            state: r.state,
            created_at_ms: r.created_at_ms,
            tls_ca_file: r.tls_ca_file,
        }
    }
}

/// A relay with what the answering node's client of it knows now.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayLive {
    #[serde(flatten)]
    pub relay: RelayView,
    /// Recipients in flight on this node.
    pub in_flight: u32,
    pub up: bool,
    /// Whether its transactions are pipelined; `null` before its first connection.
    pub pipelining: Option<bool>,
}

/// `GET /admin/v1/relays/{id}`: with the windows its route plugin sees.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayDetail {
    #[serde(flatten)]
    pub live: RelayLive,
    /// Counts per window (sent, delivered, deferred, bounces, blocked, latency).
    #[schema(value_type = Vec<Object>)]
    pub windows: Vec<RelayWindow>,
}

/// `GET /admin/v1/relays`: each relay live, with its windows.
#[derive(Debug, Serialize, ToSchema)]
pub struct RelayList {
    pub relays: Vec<RelayDetail>,
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    /// Domains it may send from.
    pub allowed_sender_domains: Vec<String>,
    /// Relay pools it may route through, besides its own relays.
    pub pools: Vec<String>,
    /// Its default route plugin; `null`: the platform's.
    pub route_plugin: Option<String>,
    /// Whether the header `From:`/`Sender:` must be in its domains too.
    pub header_from_check: bool,
    pub created_at_ms: i64,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> TenantView {
        TenantView {
            id: t.id,
            name: t.name,
            allowed_sender_domains: t.allowed_sender_domains,
            pools: t.pools,
            route_plugin: t.route_plugin,
            header_from_check: t.header_from_check,
            created_at_ms: t.created_at_ms,
        }
    }
}

/// `GET /admin/v1/tenants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// An API key as listed: never the secret, only its hash is stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    /// The account it is issued to; `null`: the whole tenant's.
    pub account_id: Option<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

impl From<ApiKeyInfo> for KeyView {
    fn from(k: ApiKeyInfo) -> KeyView {
        KeyView {
            id: k.id,
            tenant_id: k.tenant_id,
            prefix: k.prefix,
            account_id: k.account_id,
            created_at_ms: k.created_at_ms,
            revoked_at_ms: k.revoked_at_ms,
        }
    }
}

/// `GET /admin/v1/tenants/{id}/keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// A key made (201): its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewKey {
    #[serde(flatten)]
    pub info: KeyView,
    pub key: String,
    pub note: &'static str,
}

/// A recipient of the exception queue (failed or expired).
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedRecipient {
    pub message_id: String,
    pub tenant_id: String,
    /// What `…/requeue` names it by.
    pub recipient_idx: i32,
    pub address: String,
    #[schema(schema_with = recipient_state)]
    pub state: RecipientState,
    pub attempts: u32,
    pub last_relay: Option<String>,
    pub last_reply: Option<String>,
    pub next_attempt_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

impl From<RecipientView> for FailedRecipient {
    fn from(r: RecipientView) -> FailedRecipient {
        FailedRecipient {
            message_id: r.message_id,
            tenant_id: r.tenant_id,
            recipient_idx: r.recipient_idx,
            address: r.address,
            state: r.state,
            attempts: r.attempts,
            last_relay: r.last_relay,
            last_reply: r.last_reply,
            next_attempt_at_ms: r.next_attempt_at_ms,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

/// `GET /admin/v1/failed`, oldest change first.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedList {
    pub failed: Vec<FailedRecipient>,
}

/// One node as `GET /admin/v1/nodes` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    /// Where its HTTP API answers.
    pub address: String,
    pub started_at_ms: i64,
    pub last_heartbeat_at_ms: i64,
    /// How old its heartbeat is, by the answering node's clock.
    pub heartbeat_age_ms: i64,
    /// `alive`, `dead` (no heartbeat for the dead-after time: its leases are taken
    /// over) or `stopped` (stopped gracefully, its leases given back).
    pub state: &'static str,
    pub leases_held: u64,
    pub leader: bool,
}

/// `GET /admin/v1/nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// The node that answered.
    pub this_node: String,
    pub leader: Option<String>,
    pub heartbeat_ms: u64,
    pub dead_after_ms: i64,
    pub nodes: Vec<NodeView>,
}
