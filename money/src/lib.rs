//! Exact money for Sluice: decimal prices written as text, amounts in integer
//! micro-units, and the one rounding rule every ledger and invoice uses.
//!
//! This crate is a leaf: it depends on nothing of Sluice's, so the host and the
//! plugin SDK (which is compiled into tenants' WebAssembly plugins) share one
//! implementation instead of two copies that could drift apart.
//!
//! No floats anywhere: a price is `mantissa × 10^-scale`, a product is worked
//! out in `i128` and rounded once.

mod decimal;
mod rounding;

pub use decimal::{Decimal, DecimalError};
pub use rounding::{
    ROUNDING_RULE, format_minor, round_half_away_from_zero, round_lines, round_to_minor,
};

/// An amount of money in millionths of the currency's unit (1 EUR = 1,000,000).
pub type Micros = i64;

/// Micro-units in one unit of a currency.
pub const MICROS_PER_UNIT: i64 = 1_000_000;
