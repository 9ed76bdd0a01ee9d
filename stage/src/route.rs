//! Route: a message summary and candidate relays in, an ordered relay list,
//! a deferral or a rejection out.

use serde::{Deserialize, Serialize};

/// Counters of one relay over one sliding window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayWindow {
    pub window_secs: u32,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub deferred: u64,
    #[serde(default)]
    pub hard_bounced: u64,
    #[serde(default)]
    pub soft_bounced: u64,
    #[serde(default)]
    pub blocked: u64,
    #[serde(default)]
    pub mean_latency_ms: u32,
}

/// A relay the message may use, with its live figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    pub id: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub in_flight: u32,
    #[serde(default = "default_connection_limit")]
    pub connection_limit: u32,
    #[serde(default = "default_up")]
    pub up: bool,
    #[serde(default)]
    pub windows: Vec<RelayWindow>,
}

fn default_weight() -> u32 {
    100
}
fn default_connection_limit() -> u32 {
    10
}
fn default_up() -> bool {
    true
}

/// What the router knows of the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageSummary {
    pub id: String,
    pub tenant: String,
    pub sender: String,
    #[serde(default)]
    pub recipient_domains: Vec<String>,
    #[serde(default = "one")]
    pub recipient_count: u32,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "one")]
    pub attempt: u32,
    #[serde(default)]
    pub age_secs: u64,
}

fn one() -> u32 {
    1
}

/// The route stage's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteInput {
    pub message: MessageSummary,
    pub relays: Vec<Relay>,
    #[serde(default)]
    pub now_ms: i64,
}

/// Not now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deferral {
    pub delay_secs: u32,
    pub reason: String,
}

/// The router's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteDecision {
    Relays(Vec<String>),
    Defer(Deferral),
    Reject(String),
}
