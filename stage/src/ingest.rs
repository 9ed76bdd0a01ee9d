//! Ingest: a submission in, accept or reject out.

use super::Header;
use serde::{Deserialize, Serialize};

/// A message as submitted, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    pub tenant: String,
    pub sender: String,
    pub recipients: Vec<String>,
    #[serde(default)]
    pub headers: Vec<Header>,
    pub size: u64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub allowed_sender_domains: Vec<String>,
    #[serde(default)]
    pub received_at_ms: i64,
}

/// Changes an accepting filter asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acceptance {
    #[serde(default)]
    pub add_headers: Vec<Header>,
    #[serde(default)]
    pub add_tags: Vec<String>,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
}

/// The ingest filter's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestDecision {
    Accept(Acceptance),
    Reject(Rejection),
}
