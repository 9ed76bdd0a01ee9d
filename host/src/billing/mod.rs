//! Live billing's plain logic: billing periods (`sluice-stage`'s `period`, re-exported),
//! money parsing and invoice rounding, invoices built from the ledger's sums (the store's
//! `ChargeSum`), prepaid estimates and volume-mode settlement.
//!
//! No I/O here: the store keeps the ledger (`store::ledger`), `serve::billing` runs the
//! rating task and the prepaid check, `serve::billing_api` speaks HTTP. Everything is
//! integer micro-units (`i64`) until an invoice rounds a line to the currency's minor
//! unit — the only rounding after the rater's own, by the rule in `rounding` that
//! `sluice bill` (`bill_logs`) uses too. `checks` holds what every rater's answer must
//! satisfy before it reaches a ledger.

mod checks;
mod invoice;
pub mod rounding;
mod tariff;

pub use crate::stage::period::{PeriodError, period_bounds, period_of};
pub use checks::{ChargeError, ServiceRule, TariffRules, check_charges};
pub use invoice::{Invoice, InvoiceLine, TierLine};
pub use rounding::{ROUNDING_RULE, format_minor, round_to_minor};
pub use tariff::{TariffInfo, VolumeService, volume_services};

use crate::maillog::syslog_time::days_from_civil;
use crate::stage::{BillOutput, Decimal, Micros};

/// The platform's default tariff (rater-tiered format), used for tenants without one.
pub const DEFAULT_TARIFF: &str =
    include_str!("../../../pipelines/billing/tariffs/standard-2026.toml");

/// Bad billing input; the text quotes the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    #[error("amount {0:?}: {1}")]
    Amount(String, &'static str),
    #[error("time {0:?} is not YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or milliseconds since 1970")]
    Time(String),
}

const DAY_MS: i64 = 86_400_000;

/// A time in a query: `YYYY-MM-DD` (midnight UTC), `YYYY-MM-DDTHH:MM:SSZ`, or
/// milliseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, BillingError> {
    let bad = || BillingError::Time(text.to_owned());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let y: i32 = y.parse().map_err(|_| bad())?;
    let m: u8 = m.parse().map_err(|_| bad())?;
    let d: u8 = d.parse().map_err(|_| bad())?;
    let days_in = |y: i32, m: u8| {
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
    };
    if !(1..=12).contains(&m) || d == 0 || i64::from(d) > days_in(y, m) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, m, d) * DAY_MS;
    if let Some(t) = time {
        let t = t.strip_suffix('Z').ok_or_else(bad)?;
        let hms: Vec<&str> = t.split(':').collect();
        let [h, mi, s] = hms.as_slice() else {
            return Err(bad());
        };
        let field = |v: &str, max: i64| -> Result<i64, BillingError> {
            let n: i64 = (v.len() == 2)
                .then(|| v.parse().ok())
                .flatten()
                .ok_or_else(bad)?;
            if n > max { Err(bad()) } else { Ok(n) }
        };
        ms += (field(h, 23)? * 3600 + field(mi, 59)? * 60 + field(s, 59)?) * 1000;
    }
    Ok(ms)
}

/// A positive amount of money as a decimal string (`"12.50"`) in micro-units; at most
/// six decimals, so nothing is rounded away.
pub fn parse_amount(text: &str) -> Result<Micros, BillingError> {
    let err = |why| BillingError::Amount(text.to_owned(), why);
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(err(
            "expected digits with an optional '.' and decimals, e.g. \"12.50\"",
        ));
    }
    if frac.len() > 6 {
        return Err(err("more than 6 decimals (the ledger counts micro-units)"));
    }
    let int: i64 = int.parse().map_err(|_| err("too large"))?;
    let frac_micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")
            .parse()
            .map_err(|_| err("bad decimals"))?
    };
    let micros = int
        .checked_mul(1_000_000)
        .and_then(|m| m.checked_add(frac_micros))
        .ok_or_else(|| err("too large"))?;
    if micros <= 0 {
        return Err(err("must be more than zero"));
    }
    Ok(micros)
}

/// Micro-units as an exact decimal string with six decimals (`"0.000025"`).
pub fn format_micros(micros: Micros) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

/// The estimated cost of each synthetic event of a rater's answer (keys in
/// `keys` order), and their total. Events without a charge cost nothing.
pub fn estimate(keys: &[String], out: &BillOutput) -> Option<(Vec<Micros>, Micros)> {
    let mut each = vec![0i64; keys.len()];
    for c in &out.charges {
        let i = keys.iter().position(|k| *k == c.event_key)?;
        each[i] = each[i].checked_add(c.amount)?;
    }
    let total = each.iter().try_fold(0i64, |s, &a| s.checked_add(a))?;
    Some((each, total))
}

/// `price × quantity` in micro-units, rounded once half away from zero (as the
/// default rater rounds).
pub fn times_in_micros(price: Decimal, quantity: u64) -> Option<Micros> {
    price.times_in_micros(quantity)
}

/// Volume mode, settled at period end: the whole period's `quantity` at the price of
/// the tier it reached, minus what its charges came to.
pub fn settlement(final_price: Decimal, quantity: u64, charged_micros: Micros) -> Option<Micros> {
    times_in_micros(final_price, quantity)?.checked_sub(charged_micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::{Charge, Decimal};

    #[test]
    fn times_in_queries() {
        assert_eq!(parse_time("1970-01-02"), Ok(DAY_MS));
        assert_eq!(parse_time("1970-01-01T01:00:01Z"), Ok(3_601_000));
        assert_eq!(parse_time("12345"), Ok(12_345));
        for bad in [
            "yesterday",
            "2026-02-30",
            "2026-01-01T25:00:00Z",
            "2026-01-01T10:00:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_are_exact_micro_units() {
        assert_eq!(parse_amount("12.50"), Ok(12_500_000));
        assert_eq!(parse_amount("0.000001"), Ok(1));
        assert_eq!(parse_amount("3"), Ok(3_000_000));
        assert!(
            parse_amount("0.0000001")
                .unwrap_err()
                .to_string()
                .contains("\"0.0000001\"")
        );
        for bad in ["", "-1", "1,5", ".5", "0", "0.00", "1e3", "99999999999999"] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(format_micros(25), "0.000025");
        assert_eq!(format_micros(-12_500_000), "-12.500000");
    }

    #[test]
    fn estimates_sum_charges_per_synthetic_event() {
        let charge = |k: &str, amount| Charge {
            event_key: k.into(),
            service: format!("s-{amount}"),
            quantity: 1,
            unit_price: Decimal {
                mantissa: 1,
                scale: 3,
            },
            amount,
        };
        let keys = vec!["e0".to_string(), "e1".to_string()];
        let out = BillOutput {
            charges: vec![charge("e0", 1_000), charge("e0", 25), charge("e1", 600)],
            currency: "EUR".into(),
        };
        assert_eq!(estimate(&keys, &out), Some((vec![1_025, 600], 1_625)));
        let stray = BillOutput {
            charges: vec![charge("other", 1)],
            currency: "EUR".into(),
        };
        assert_eq!(estimate(&keys, &stray), None);
    }

    #[test]
    fn volume_settlement_reprices_the_whole_period() {
        let p = |t: &str| t.parse::<Decimal>().unwrap();
        // 100 messages at 0.0008 and 5 at 0.0005; the period reached the 0.0005 tier.
        let charged = 100 * 800 + 5 * 500;
        assert_eq!(settlement(p("0.0005"), 105, charged), Some(52_500 - 82_500));
        assert_eq!(times_in_micros(p("0.00000025"), 2), Some(1)); // 0.5 rounds up
        assert_eq!(times_in_micros(p("-0.0000005"), 1), Some(-1));
    }
}
