//! The HTTP API's wire types (issues 20 and 22): what every route answers, as typed
//! structs that derive `Serialize` and `utoipa::ToSchema`, so the JSON a handler sends
//! and the schema `GET /openapi.json` publishes (`openapi.rs`) come from one definition.
//!
//! Invariants:
//! - Store, runtime and billing types are not the API's JSON: a handler converts them
//!   into a type of this module (`From` impls here), so a store change cannot change
//!   the wire form unseen, and a serialisation failure cannot turn a field into `null`.
//! - This module imports no handler module of `serve` (only the crate's plain data),
//!   so every handler module may use it without an import cycle.
//! - Request bodies stay beside their handlers (`Deserialize + ToSchema`); what
//!   several routes answer lives here, one file per part of the API.

pub mod admin;
pub mod billing;
pub mod dkim;
pub mod events;
pub mod messages;
pub mod plugins;
pub mod queue;

use serde::Serialize;
use utoipa::ToSchema;

/// Every error answer: `{"error": {"code", "message", "field"?, "limit"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `bad_json`, `bad_request`, `invalid`,
    /// `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `conflict`,
    /// `too_large`, `unsupported_media_type`, `too_many_requests_in_flight`,
    /// `accept_rate_exceeded`, `store_unavailable`, `store_outcome_unknown`,
    /// `internal`, … (each route's own are named in its description).
    #[schema(example = "invalid")]
    pub code: String,
    /// For people: what was wrong and, where it helps, what to do.
    pub message: String,
    /// The request field, query parameter or header that was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The configuration key of the limit a 429 or 503 ran into.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "admission.accepts_per_sec")]
    pub limit: Option<String>,
}

/// `GET /healthz`: the process is alive.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `draining` while it shuts down.
    pub status: &'static str,
    /// This node's id.
    pub node: String,
}

/// `GET /readyz`: whether this node takes work.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`, `not_ready` (503) or `draining` (503).
    pub status: &'static str,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub node: String,
}

/// A string schema whose values are those `all` serialises to (an enum of the crate
/// whose serde form is the wire form), for `#[schema(schema_with = …)]`.
pub(crate) fn enum_of<T: Serialize>(all: &[T], description: &str) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(
            all.iter().filter_map(|v| serde_json::to_value(v).ok()),
        ))
        .description(Some(description))
        .build()
}
