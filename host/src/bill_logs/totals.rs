//! Per-tenant totals of a run and the report printed at the end.

use crate::maillog::{Counters, LinePlace};
use crate::stage::Micros;
use serde::Serialize;

/// Quantity and amount of one service for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceTotal {
    pub service: String,
    pub quantity: u64,
    /// Exact amount in micro-units of the currency.
    pub amount_micros: Micros,
    /// The amount rounded to the currency's minor unit (`billing::rounding`).
    pub amount: String,
}

/// Everything billed to one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantTotals {
    pub tenant: String,
    pub currency: String,
    /// Digits of the minor unit the amounts are rounded to.
    pub minor_units: u8,
    pub transfers: u64,
    pub outbound: u64,
    pub inbound: u64,
    pub bytes: u64,
    pub services: Vec<ServiceTotal>,
    pub total_micros: Micros,
    /// The sum of the rounded service amounts, as on an invoice.
    pub total: String,
}

/// A transfer read again and skipped: where, and where it was first read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicatePlace {
    pub key: String,
    pub file: String,
    pub line: u64,
    pub first_file: String,
    pub first_line: u64,
}

/// The report of `sluice bill`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tenants: Vec<TenantTotals>,
    /// Transfers whose sender and recipient match no login (not billed).
    pub unmatched_transfers: u64,
    /// Transfers whose key was read before in this run (the same log twice,
    /// overlapping rotations): skipped, not billed again.
    pub duplicate_transfers: u64,
    /// The first few of them.
    pub duplicates: Vec<DuplicatePlace>,
    /// Lines not in the log format given (other programs, garbage).
    pub unmatched_lines: u64,
    /// Calls of the rater: one per distinct tariff, one per batch.
    pub rater_calls: u64,
    pub rounding: &'static str,
    pub log: Counters,
    /// The first few unparseable lines.
    pub unparseable_lines: Vec<LinePlace>,
}
