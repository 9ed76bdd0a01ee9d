//! The five stages and the plain data each one takes and returns.
//!
//! These types mirror the WIT contract (`plugin-sdk/wit/`) field for field
//! but know nothing of WebAssembly: the pipeline works with them, and only
//! `runtime` converts them to and from the component model. Their serde form
//! is the JSON form of `sluice plugin run` (snake_case fields; variants as
//! one-key objects; unit variants and enums as strings; decimals as strings).

mod bill;
mod bounce;
mod ingest;
pub mod period;
mod route;
pub mod samples;
mod send;
pub mod validate;

pub use bill::{BillInput, BillOutput, Charge, Counter, Outcome, UsageEvent};
pub use bounce::{BounceInput, BounceOutput, BounceResult, Reason, ReplyInput};
pub use ingest::{Acceptance, IngestDecision, Rejection, Submission};
pub use route::{Deferral, MessageSummary, Relay, RelayWindow, RouteDecision, RouteInput};
pub use send::{Attempt, Retry, SendDecision};
pub use sluice_money::{Decimal, DecimalError, Micros};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One stage of the pipeline; each has its own WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Ingest,
    Route,
    Send,
    Bounce,
    Bill,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 5] = [
        Stage::Ingest,
        Stage::Route,
        Stage::Send,
        Stage::Bounce,
        Stage::Bill,
    ];

    /// The stage's name in TOML, URLs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Route => "route",
            Stage::Send => "send",
            Stage::Bounce => "bounce",
            Stage::Bill => "bill",
        }
    }

    /// The interface a component must export to serve this stage.
    pub fn export_name(self) -> &'static str {
        match self {
            Stage::Ingest => "sluice:plugin/ingest-filter@0.1.0",
            Stage::Route => "sluice:plugin/router@0.1.0",
            Stage::Send => "sluice:plugin/send-policy@0.1.0",
            Stage::Bounce => "sluice:plugin/bounce-parser@0.1.0",
            Stage::Bill => "sluice:plugin/rater@0.1.0",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stage name that is not one of the five.
#[derive(Debug, thiserror::Error)]
#[error("unknown stage {0:?} (expected one of ingest, route, send, bounce, bill)")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownStage(s.to_owned()))
    }
}

/// A header field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// Which way mail flowed relative to the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outbound,
    Inbound,
}

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpReply {
    pub code: u16,
    #[serde(default)]
    pub enhanced: Option<String>,
    pub text: String,
}
