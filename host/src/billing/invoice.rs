//! A period's invoice from the ledger's sums: one line per service, with its tiers
//! (one per unit price charged), rounded to the currency's minor unit here and only
//! here.

use super::rounding::{ROUNDING_RULE, format_minor, round_to_minor};
use crate::stage::Micros;
use crate::store::ChargeSum;
use serde::Serialize;
use std::fmt::Write as _;

/// Charges of one service at one unit price (a tier), or a volume settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierLine {
    pub unit_price: String,
    pub quantity: u64,
    pub amount_micros: Micros,
    /// A volume-mode settlement at period end (quantity 0: it re-prices the units
    /// above at `unit_price`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub settlement: bool,
}

/// One service on an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub service: String,
    pub quantity: u64,
    /// The unit price when the service was charged at one price only.
    pub unit_price: Option<String>,
    pub tiers: Vec<TierLine>,
    /// Exact.
    pub amount_micros: Micros,
    /// Rounded to the minor unit (`billing::rounding`).
    pub amount: String,
}

/// A tenant's invoice for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub tenant: String,
    pub period: String,
    pub currency: String,
    pub minor_units: u8,
    pub lines: Vec<InvoiceLine>,
    /// The exact sum of the lines (before rounding).
    pub total_micros: Micros,
    /// The sum of the rounded lines.
    pub total: String,
    pub rounding: &'static str,
}

impl Invoice {
    /// Builds the invoice from the ledger's sums (ordered by service, then by when each
    /// price was first charged). `None` if an amount overflows.
    pub fn build(
        tenant: &str,
        period: &str,
        currency: &str,
        minor_units: u8,
        sums: &[ChargeSum],
    ) -> Option<Invoice> {
        let minor_units = minor_units.min(6);
        let mut lines: Vec<InvoiceLine> = Vec::new();
        for s in sums {
            let tier = TierLine {
                unit_price: s.unit_price.clone(),
                quantity: s.quantity,
                amount_micros: s.amount_micros,
                settlement: s.settlement,
            };
            match lines.last_mut() {
                Some(l) if l.service == s.service => l.tiers.push(tier),
                _ => lines.push(InvoiceLine {
                    service: s.service.clone(),
                    quantity: 0,
                    unit_price: None,
                    tiers: vec![tier],
                    amount_micros: 0,
                    amount: String::new(),
                }),
            }
        }
        let (mut total_micros, mut total_minor) = (0i64, 0i64);
        for l in &mut lines {
            l.quantity = l.tiers.iter().map(|t| t.quantity).sum();
            l.amount_micros = l
                .tiers
                .iter()
                .try_fold(0i64, |a, t| a.checked_add(t.amount_micros))?;
            if let [only] = l.tiers.as_slice() {
                l.unit_price = Some(only.unit_price.clone());
            }
            let rounded = round_to_minor(l.amount_micros, minor_units);
            l.amount = format_minor(rounded, minor_units);
            total_micros = total_micros.checked_add(l.amount_micros)?;
            total_minor = total_minor.checked_add(rounded)?;
        }
        Some(Invoice {
            tenant: tenant.to_owned(),
            period: period.to_owned(),
            currency: currency.to_owned(),
            minor_units,
            lines,
            total_micros,
            total: format_minor(total_minor, minor_units),
            rounding: ROUNDING_RULE,
        })
    }

    /// The invoice as CSV: a header, one row per service (tiers as
    /// `quantity×price` joined by `; `), and a `total` row.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("service,quantity,unit_price,tiers,amount,currency\n");
        for l in &self.lines {
            let tiers: Vec<String> = l
                .tiers
                .iter()
                .map(|t| {
                    if t.settlement {
                        format!("settlement {}", super::format_micros(t.amount_micros))
                    } else {
                        format!("{}x{}", t.quantity, t.unit_price)
                    }
                })
                .collect();
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                csv_field(&l.service),
                l.quantity,
                l.unit_price.as_deref().unwrap_or(""),
                csv_field(&tiers.join("; ")),
                l.amount,
                self.currency
            );
        }
        let _ = writeln!(out, "total,,,,{},{}", self.total, self.currency);
        out
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(service: &str, price: &str, quantity: u64, amount_micros: i64) -> ChargeSum {
        ChargeSum {
            service: service.into(),
            unit_price: price.into(),
            quantity,
            amount_micros,
            settlement: false,
        }
    }

    #[test]
    fn lines_are_rounded_and_the_total_is_the_sum_of_rounded_lines() {
        let sums = [
            sum("outbound-message", "0.0010", 10_000, 10_000_000),
            sum("outbound-message", "0.0006", 5, 3_000),
            sum("outbound-traffic", "0.0002", 25, 5_000),
            sum("bounce-fee", "0.000005", 1, 5),
        ];
        let inv = Invoice::build("t", "2026-12", "EUR", 2, &sums).unwrap();
        let ob = &inv.lines[0];
        assert_eq!((ob.quantity, ob.amount_micros), (10_005, 10_003_000));
        assert_eq!(ob.unit_price, None);
        assert_eq!(ob.tiers.len(), 2);
        assert_eq!(ob.amount, "10.00");
        let traffic = &inv.lines[1];
        assert_eq!(traffic.unit_price.as_deref(), Some("0.0002"));
        assert_eq!(traffic.amount, "0.01"); // half a cent, away from zero
        assert_eq!(inv.lines[2].amount, "0.00");
        assert_eq!(inv.total_micros, 10_008_005);
        assert_eq!(inv.total, "10.01");
        assert_eq!(
            inv.to_csv(),
            "service,quantity,unit_price,tiers,amount,currency\n\
             outbound-message,10005,,10000x0.0010; 5x0.0006,10.00,EUR\n\
             outbound-traffic,25,0.0002,25x0.0002,0.01,EUR\n\
             bounce-fee,1,0.000005,1x0.000005,0.00,EUR\n\
             total,,,,10.01,EUR\n"
        );
    }

    #[test]
    fn an_empty_period_is_a_zero_invoice() {
        let inv = Invoice::build("t", "2026-11", "USD", 2, &[]).unwrap();
        assert!(inv.lines.is_empty());
        assert_eq!(inv.total, "0.00");
    }
}
