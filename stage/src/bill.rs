//! Bill: usage events and a tariff in, charges out.

use super::{Decimal, Direction, Micros};
use serde::{Deserialize, Serialize};

/// The final outcome a usage event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Delivered,
    Bounced,
    Failed,
    Expired,
    Received,
}

/// Something billable that happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    pub key: String,
    pub tenant: String,
    pub message_id: String,
    pub recipient: String,
    pub outcome: Outcome,
    pub direction: Direction,
    pub size: u64,
    #[serde(default)]
    pub relay: Option<String>,
    pub at_ms: i64,
}

/// Quantity of a service already rated this period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    pub service: String,
    pub quantity: u64,
}

/// The bill stage's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillInput {
    pub tariff: String,
    #[serde(default)]
    pub period_start_ms: i64,
    #[serde(default)]
    pub period_to_date: Vec<Counter>,
    pub events: Vec<UsageEvent>,
}

/// One charge for one event and service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    pub event_key: String,
    pub service: String,
    pub quantity: u64,
    pub unit_price: Decimal,
    pub amount: Micros,
}

/// The rater's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillOutput {
    pub charges: Vec<Charge>,
    pub currency: String,
}
