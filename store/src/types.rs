//! The store's domain types: plain data passed in and out of [`super::Store`].
//!
//! They derive `Serialize` where an API shows them; the store itself encodes them
//! column by column, never as one serialised blob, so SQL can filter on them.

use serde::{Deserialize, Serialize};

/// A customer of the platform; every message and API key belongs to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Domains the tenant may send from (the part after `@` of the envelope sender).
    pub allowed_sender_domains: Vec<String>,
    /// Relay tags (pools) the tenant may route through, besides its own relays.
    pub pools: Vec<String>,
    /// Name of the tenant's active route plugin; `None` = the platform default.
    pub route_plugin: Option<String>,
    /// Whether the header `From:` and `Sender:` must be in `allowed_sender_domains` too.
    pub header_from_check: bool,
    pub created_at_ms: i64,
}

/// What [`super::Store::create_tenant`] needs; the id is chosen by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewTenant {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub allowed_sender_domains: Vec<String>,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default)]
    pub route_plugin: Option<String>,
    #[serde(default = "yes")]
    pub header_from_check: bool,
}

fn yes() -> bool {
    true
}

/// A partial change of a tenant: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TenantUpdate {
    pub name: Option<String>,
    pub allowed_sender_domains: Option<Vec<String>>,
    pub pools: Option<Vec<String>>,
    /// `Some(None)` clears the route plugin (back to the platform default).
    pub route_plugin: Option<Option<String>>,
    pub header_from_check: Option<bool>,
}

/// An API key as listed; the secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub tenant_id: String,
    /// The first characters of the secret, so an operator can tell keys apart.
    pub prefix: String,
    /// The account of the tenant the key is issued to (its scope); `None` for a key of
    /// the whole tenant.
    pub account_id: Option<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// What a key may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyScope {
    /// The whole tenant (keys made through the admin API).
    Tenant,
    /// One account of the tenant: its mail and its own books only.
    Account(String),
}

/// Whose a live key is: its tenant, and its scope within the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub tenant: Tenant,
    pub scope: KeyScope,
    /// The key's id (what its listing shows, never the secret): SMTP submission takes it
    /// as a user name beside the tenant's id.
    pub key_id: String,
}

/// Whether a relay takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    /// Takes new work.
    Active,
    /// Finishes what it has, takes nothing new.
    Draining,
}

/// An SMTP server Sluice hands mail to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relay {
    pub id: String,
    /// `smtp://host:port` (STARTTLS when offered) or `smtps://host:port`.
    pub url: String,
    pub auth_user: Option<String>,
    /// Where the AUTH secret lives: `env:NAME` or `file:PATH`; never the secret itself.
    pub auth_secret_ref: Option<String>,
    pub connection_limit: u32,
    pub rate_limit_per_sec: Option<u32>,
    pub weight: u32,
    pub tags: Vec<String>,
    /// The tenant that brought this relay; `None` = a platform relay.
    pub owner: Option<String>,
    pub state: RelayState,
    pub created_at_ms: i64,
    /// A PEM file of CA certificates the relay's TLS is checked against instead of the
    /// public roots; read by each host at this path.
    pub tls_ca_file: Option<String>,
}

/// What [`super::Store::upsert_relay`] writes: a relay without its creation time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewRelay {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub auth_user: Option<String>,
    #[serde(default)]
    pub auth_secret_ref: Option<String>,
    pub connection_limit: u32,
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
    pub weight: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub owner: Option<String>,
    pub state: RelayState,
    #[serde(default)]
    pub tls_ca_file: Option<String>,
}

/// A partial change of a relay: `None` leaves a field as it is; for optional fields
/// `Some(None)` clears them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RelayUpdate {
    pub url: Option<String>,
    pub auth_user: Option<Option<String>>,
    pub auth_secret_ref: Option<Option<String>>,
    pub connection_limit: Option<u32>,
    pub rate_limit_per_sec: Option<Option<u32>>,
    pub weight: Option<u32>,
    pub tags: Option<Vec<String>>,
    pub owner: Option<Option<String>>,
    pub state: Option<RelayState>,
    pub tls_ca_file: Option<Option<String>>,
}

/// A message handed in by an application, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub tenant_id: String,
    /// The same (tenant, key) twice is the same message: the second accept writes nothing.
    pub idempotency_key: Option<String>,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
    /// The full RFC 5322 message, stored once for all recipients; shared, so the API
    /// hands the same bytes to the dispatcher without a copy of a large message.
    pub body: std::sync::Arc<Vec<u8>>,
    pub tags: Vec<String>,
    /// After this long since acceptance the message expires instead of being retried.
    pub max_age_secs: u32,
    /// The body's `Message-ID` header, kept so a repeat (the same idempotency key) is
    /// answered with it.
    pub header_message_id: Option<String>,
}

/// Which deferred recipients [`Store::retry_deferred`](super::Store::retry_deferred)
/// makes due: every field given must match; none given selects every deferred recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryFilter {
    pub tenant: Option<String>,
    pub message: Option<String>,
    /// The relay of the recipient's last attempt, or the relay it waits for.
    pub relay: Option<String>,
    /// The recipient's domain, lower case.
    pub domain: Option<String>,
}

/// The answer to an accept: durable once returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub id: String,
    pub recipients: Vec<(String, RecipientState)>,
    /// The recipients' leases when they were accepted leased ([`super::Store::accept_leased`]);
    /// empty otherwise and for a duplicate.
    pub leases: Vec<Lease>,
    /// True when the idempotency key matched an earlier message (whose id this is).
    pub duplicate: bool,
    /// The stored message's `Message-ID` header: for a repeat, the first submission's
    /// (`None` for a message stored before it was kept).
    pub header_message_id: Option<String>,
}

/// Where one recipient of one message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// Waiting for its first attempt (`next_attempt_at`).
    Queued,
    /// Leased by a host that is working on it.
    Delivering,
    /// Waiting for a retry (`next_attempt_at`).
    Deferred,
    Delivered,
    Bounced,
    /// Given up; in the exception queue.
    Failed,
    /// Too old to retry; in the exception queue.
    Expired,
    /// Kept back (e.g. prepaid funds short) until released.
    Held,
}

impl RecipientState {
    /// Every state, for parsing and tests.
    pub const ALL: [RecipientState; 8] = [
        Self::Queued,
        Self::Delivering,
        Self::Deferred,
        Self::Delivered,
        Self::Bounced,
        Self::Failed,
        Self::Expired,
        Self::Held,
    ];

    /// The snake_case name, as stored and as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivering => "delivering",
            Self::Deferred => "deferred",
            Self::Delivered => "delivered",
            Self::Bounced => "bounced",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Held => "held",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What happened, as an append-only event.
///
/// # Attempt outcomes and the detail fields relay stats read
///
/// One SMTP attempt on a relay is recorded as ONE event that names the relay and whose
/// kind is the attempt's result: `delivered` (2xx), `deferred` (temporary, retried
/// later), `bounced` (rejected), `failed` (given up) or `attempted` (the attempt did not
/// succeed but the recipient stays in flight, e.g. rerouted to the next relay). Its
/// `detail` object carries, when known:
///
/// - `latency_ms` (integer): time from connecting to the final reply of the attempt;
/// - `hard` (bool): the failure is permanent (a hard bounce);
/// - `class` (string): the reason class from the bounce stage, e.g. `"blocked"` when the
///   receiver refused the relay itself (reputation, block list).
///
/// [`super::Store::relay_stats`] counts per relay (added up as the events are appended,
/// in 10-second buckets): `sent` = attempt outcomes;
/// `delivered`; `deferred` = `deferred`, and `attempted` that is not `hard`;
/// `hard_bounced` = `bounced`/`failed`/`attempted` with `hard: true`; `soft_bounced` =
/// `bounced`/`failed` without `hard: true`; `blocked` = `class == "blocked"`;
/// `mean_latency_ms` over the attempts that carry `latency_ms`.
///
/// A bounce e-mail that arrives later (see [`super::Store::record_bounce`]) is a
/// `bounced` event naming the relay that carried the message, with `source: "dsn"` in
/// its detail: it counts in `hard_bounced`/`soft_bounced`/`blocked` but not in `sent`
/// or `delivered` (it was not another attempt). An outcome recorded
/// through [`super::Store::record`] counts as an attempt (and increments the
/// recipient's `attempts`) only when it names a relay.
///
/// A `routed` event that names a relay (via [`super::Store::append_events`]) marks the
/// recipient as in flight on that relay for [`super::Store::in_flight_by_relay`]; one
/// recorded with its outcome ([`super::Store::record_with_events`]) does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Accepted,
    Routed,
    Attempted,
    Delivered,
    Deferred,
    Bounced,
    Failed,
    Expired,
    Held,
    Released,
    Requeued,
    PluginError,
    Suppressed,
    /// A delivery status notification said delivery is delayed (no state change).
    Delayed,
    /// A feedback (ARF) report: the recipient complained.
    Complained,
    /// A bounce e-mail about the recipient that reports no failure (a success DSN, an
    /// auto-reply) or could not be read; its detail says which.
    BounceNote,
    /// A tenant's plugin version was suspended after failing too often (about no
    /// message: its `message_id` is NULL). Written once per suspension, with it.
    PluginSuspended,
    /// A prepaid tenant's balance fell below its low-balance threshold (about no
    /// message). Written once per crossing, with the charge that crossed it.
    LowBalance,
    /// A webhook kept failing past its retry window and was paused (about no message).
    /// Written once per pause, with it.
    WebhookPaused,
}

impl EventKind {
    /// Every kind, for parsing and tests.
    pub const ALL: [EventKind; 19] = [
        Self::Accepted,
        Self::Routed,
        Self::Attempted,
        Self::Delivered,
        Self::Deferred,
        Self::Bounced,
        Self::Failed,
        Self::Expired,
        Self::Held,
        Self::Released,
        Self::Requeued,
        Self::PluginError,
        Self::Suppressed,
        Self::Delayed,
        Self::Complained,
        Self::BounceNote,
        Self::PluginSuspended,
        Self::LowBalance,
        Self::WebhookPaused,
    ];

    /// The snake_case name, as stored and as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Routed => "routed",
            Self::Attempted => "attempted",
            Self::Delivered => "delivered",
            Self::Deferred => "deferred",
            Self::Bounced => "bounced",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Held => "held",
            Self::Released => "released",
            Self::Requeued => "requeued",
            Self::PluginError => "plugin_error",
            Self::Suppressed => "suppressed",
            Self::Delayed => "delayed",
            Self::Complained => "complained",
            Self::BounceNote => "bounce_note",
            Self::PluginSuspended => "plugin_suspended",
            Self::LowBalance => "low_balance",
            Self::WebhookPaused => "webhook_paused",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this kind can be the result of an SMTP attempt (see the type's doc).
    pub fn is_attempt_outcome(self) -> bool {
        matches!(
            self,
            Self::Attempted | Self::Delivered | Self::Deferred | Self::Bounced | Self::Failed
        )
    }
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Increases with every append (per database). On PostgreSQL, transactions that
    /// overlap may commit out of `seq` order, so a reader that follows events by `seq`
    /// must not assume that no smaller `seq` can still appear just behind its cursor;
    /// tenants follow events by their cursors instead ([`super::TenantEvent`]).
    pub seq: i64,
    pub message_id: String,
    pub recipient_idx: Option<i32>,
    pub tenant_id: String,
    pub kind: EventKind,
    pub relay: Option<String>,
    pub detail: serde_json::Value,
    pub at_ms: i64,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub message_id: String,
    pub recipient_idx: Option<i32>,
    pub tenant_id: String,
    pub kind: EventKind,
    pub relay: Option<String>,
    pub detail: serde_json::Value,
    pub at_ms: i64,
}

/// One recipient handed to a host to work on until `lease_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub message_id: String,
    pub tenant_id: String,
    pub recipient_idx: i32,
    pub address: String,
    /// The part after the last `@` of `address`, lower-cased.
    pub domain: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the message was accepted.
    pub created_at_ms: i64,
    pub max_age_secs: u32,
    pub sender: String,
    /// Size of the stored body in bytes.
    pub size: u64,
    pub tags: Vec<String>,
    pub lease_until_ms: i64,
}

impl Lease {
    /// The (message, recipient) pair that names this lease in `renew_leases`.
    pub fn key(&self) -> LeaseKey {
        LeaseKey {
            message_id: self.message_id.clone(),
            recipient_idx: self.recipient_idx,
        }
    }
}

/// Names one leased recipient.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    pub message_id: String,
    pub recipient_idx: i32,
}

/// The result of working on a leased recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub message_id: String,
    pub recipient_idx: i32,
    pub new_state: RecipientState,
    /// For `Queued`/`Deferred`: when to try again; `None` keeps the previous time.
    pub next_attempt_at_ms: Option<i64>,
    /// The relay the attempt went to, if there was an attempt.
    pub relay: Option<String>,
    /// The last SMTP reply text.
    pub reply: Option<String>,
    pub event: EventKind,
    pub detail: serde_json::Value,
    /// For `Deferred`: the relay this recipient waits for — it was deferred only because
    /// that relay did not answer — or [`ANY_RELAY`] when no relay it may use was up.
    /// [`Store::wake_waiting_for_relay`](super::Store::wake_waiting_for_relay) makes it
    /// due when the relay answers again. `None` for every other outcome.
    pub waiting_for_relay: Option<String>,
}

/// The tag by which a message names the tenant's account it is billed to
/// (`account:ID`); the API adds it from a submission's `account`.
pub const ACCOUNT_TAG: &str = "account:";

/// [`Outcome::waiting_for_relay`] of work deferred because no relay it may use was up,
/// or none was there: any relay that answers again, or is added, makes it due.
pub const ANY_RELAY: &str = "*";

/// A recipient as a status page or the exception queue shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientView {
    pub message_id: String,
    pub tenant_id: String,
    pub recipient_idx: i32,
    pub address: String,
    pub state: RecipientState,
    pub attempts: u32,
    pub last_relay: Option<String>,
    pub last_reply: Option<String>,
    pub next_attempt_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

/// A message with its recipients and its event timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageView {
    pub id: String,
    pub tenant_id: String,
    pub idempotency_key: Option<String>,
    pub sender: String,
    pub size: u64,
    pub tags: Vec<String>,
    pub max_age_secs: u32,
    pub created_at_ms: i64,
    pub recipients: Vec<RecipientView>,
    pub events: Vec<Event>,
}

/// Counts for one relay over one window `[since, now]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    pub since_ms: i64,
    pub sent: u64,
    pub delivered: u64,
    pub deferred: u64,
    pub hard_bounced: u64,
    pub soft_bounced: u64,
    pub blocked: u64,
    /// Integer mean over attempts that reported a latency; `None` when none did.
    pub mean_latency_ms: Option<u64>,
}
