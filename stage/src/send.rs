//! Send: an attempt's reply in, what it means out.

use super::SmtpReply;
use serde::{Deserialize, Serialize};

/// One delivery attempt of one recipient through one relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    pub message_id: String,
    pub tenant: String,
    pub recipient: String,
    pub relay: String,
    #[serde(default)]
    pub reply: Option<SmtpReply>,
    #[serde(default)]
    pub transport_error: Option<String>,
    pub attempt: u32,
    #[serde(default)]
    pub age_secs: u64,
    #[serde(default)]
    pub relays_left: u32,
}

/// Try again later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub after_secs: u32,
    pub reason: String,
}

/// The send policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendDecision {
    Delivered,
    Retry(Retry),
    NextRelay(String),
    Fail(String),
}
