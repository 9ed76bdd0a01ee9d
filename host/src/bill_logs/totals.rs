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
    /// The amount rounded to the currency's minor unit (half away from zero).
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
    /// The exact total rounded once (not the sum of rounded services).
    pub total: String,
}

/// The report of `sluice bill`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub tenants: Vec<TenantTotals>,
    /// Transfers whose sender and recipient match no login (not billed).
    pub unmatched_transfers: u64,
    pub rounding: &'static str,
    pub log: Counters,
    /// The first few unparseable lines.
    pub unparseable_lines: Vec<LinePlace>,
}

/// Micro-units as a decimal of `minor_units` digits, rounded half away from zero.
pub fn format_amount(micros: Micros, minor_units: u8) -> String {
    let digits = u32::from(minor_units.min(6));
    let step = 10i128.pow(6 - digits);
    let m = i128::from(micros);
    let (q, r) = (m / step, m % step);
    let rounded = if r.abs() * 2 >= step {
        q + m.signum()
    } else {
        q
    };
    let sign = if rounded < 0 { "-" } else { "" };
    let abs = rounded.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let unit = 10u128.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_half_away_from_zero() {
        assert_eq!(format_amount(1_234_999, 2), "1.23");
        assert_eq!(format_amount(1_235_000, 2), "1.24");
        assert_eq!(format_amount(-1_235_000, 2), "-1.24");
        assert_eq!(format_amount(5, 2), "0.00");
        assert_eq!(format_amount(500_000, 0), "1");
        assert_eq!(format_amount(25, 6), "0.000025");
        assert_eq!(format_amount(1_500, 3), "0.002");
    }
}
