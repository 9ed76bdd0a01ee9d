//! The one rounding rule of every amount Sluice works out and every invoice it
//! prints: live invoices (`GET /v1/invoices/{YYYY-MM}`), account invoices,
//! offline bills (`sluice bill`), the host's `price × quantity` and the default
//! rater all round here, and nowhere else.
//!
//! Amounts are kept exact in micro-units; only an invoice line is rounded, to
//! the currency's minor unit, **half away from zero** (commercial rounding).
//! The total is the sum of the rounded lines, so the lines on the page add
//! up to the total on the page.
//!
//! Why half away from zero and not half to even: invoices in accounting use
//! commercial rounding. It is the rule of the euro conversion regulation (EC
//! 1103/97, art. 5: a half is rounded up), of DIN 1333's "kaufmännisches
//! Runden", of spreadsheets' `ROUND` and of most ledgers and tax returns, so
//! a customer who checks a line by hand gets our figure. Half to even
//! (banker's rounding) removes the upward drift when very many rounded
//! values are added; we round once per invoice line, not per event, so the
//! drift is at most half a minor unit per line, and checkability wins.
//! Credits (negative amounts) round symmetrically: −0.005 is −0.01.

use crate::{MICROS_PER_UNIT, Micros};

/// The rule as stated on every invoice and offline report.
pub const ROUNDING_RULE: &str = "amounts are exact in micro-units (amount_micros); each line's amount is rounded to the currency's minor unit half away from zero (commercial rounding); the total is the sum of the rounded lines";

/// `exact / divisor` rounded half away from zero; `divisor` must be positive.
pub fn round_half_away_from_zero(exact: i128, divisor: i128) -> i128 {
    // Truncating division: q rounds toward zero, r carries the sign of exact.
    let (q, r) = (exact / divisor, exact % divisor);
    // Saturating: |r| * 2 could only overflow for a divisor near i128::MAX.
    if r.abs().saturating_mul(2) >= divisor {
        q + exact.signum()
    } else {
        q
    }
}

/// `micros` in minor units of `minor_units` digits (at most 6; more is taken
/// as 6), rounded half away from zero: `round_to_minor(1_235_000, 2)` is 124
/// (1.235 → 1.24), `round_to_minor(-5_000, 2)` is −1.
pub fn round_to_minor(micros: Micros, minor_units: u8) -> i64 {
    let step = MICROS_PER_UNIT / 10i64.pow(u32::from(minor_units.min(6)));
    // The quotient of an i64 by a step ≥ 1, plus at most one, fits an i64:
    // for step 1 the remainder is 0.
    round_half_away_from_zero(i128::from(micros), i128::from(step)) as i64
}

/// Minor units as a decimal string (`1234`, 2 → `"12.34"`; `-5`, 2 → `"-0.05"`).
pub fn format_minor(units: i64, minor_units: u8) -> String {
    let digits = minor_units.min(6);
    let sign = if units < 0 { "-" } else { "" };
    let abs = units.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10u64.pow(u32::from(digits));
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = usize::from(digits)
    )
}

/// The invoice lines' amounts rounded, and their total (the sum of the
/// rounded lines); `None` if the total overflows.
pub fn round_lines(
    amounts: impl IntoIterator<Item = Micros>,
    minor_units: u8,
) -> Option<(Vec<i64>, i64)> {
    let mut total = 0i64;
    let mut lines = Vec::new();
    for micros in amounts {
        let rounded = round_to_minor(micros, minor_units);
        total = total.checked_add(rounded)?;
        lines.push(rounded);
    }
    Some((lines, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_away_from_zero_at_the_cent() {
        // x.xx5 exactly: up, whatever the parity of the cent below.
        assert_eq!(round_to_minor(1_235_000, 2), 124);
        assert_eq!(round_to_minor(1_245_000, 2), 125);
        assert_eq!(round_to_minor(5_000, 2), 1); // half a cent is a cent
        assert_eq!(round_to_minor(15_000, 2), 2);
        assert_eq!(round_to_minor(25_000, 2), 3);
        // one micro-unit either side of the half
        assert_eq!(round_to_minor(1_234_999, 2), 123);
        assert_eq!(round_to_minor(1_235_001, 2), 124);
        assert_eq!(round_to_minor(4_999, 2), 0);
    }

    #[test]
    fn credits_round_symmetrically() {
        assert_eq!(round_to_minor(-5_000, 2), -1);
        assert_eq!(round_to_minor(-4_999, 2), 0);
        assert_eq!(round_to_minor(-1_235_000, 2), -124);
        assert_eq!(round_to_minor(-1_245_000, 2), -125);
        assert_eq!(round_to_minor(-1_234_999, 2), -123);
        assert_eq!(format_minor(round_to_minor(-5_000, 2), 2), "-0.01");
        assert_eq!(format_minor(round_to_minor(-4_999, 2), 2), "0.00");
    }

    #[test]
    fn micro_units_to_cents_and_other_minor_units() {
        assert_eq!(round_to_minor(0, 2), 0);
        assert_eq!(round_to_minor(1, 2), 0);
        assert_eq!(round_to_minor(10_000, 2), 1);
        assert_eq!(round_to_minor(12_345_678, 2), 1_235);
        assert_eq!(format_minor(round_to_minor(12_345_678, 2), 2), "12.35");
        // JPY (0 digits), BHD (3), and micro-units themselves (6)
        assert_eq!(round_to_minor(2_500_000, 0), 3);
        assert_eq!(round_to_minor(-2_500_000, 0), -3);
        assert_eq!(round_to_minor(1_500, 3), 2);
        assert_eq!(round_to_minor(25, 6), 25);
        assert_eq!(round_to_minor(25, 9), 25); // more than 6 digits is 6
        // the extremes do not overflow
        assert_eq!(round_to_minor(i64::MAX, 2), i64::MAX / 10_000 + 1);
        assert_eq!(round_to_minor(i64::MIN, 2), i64::MIN / 10_000 - 1);
        assert_eq!(round_to_minor(i64::MAX, 6), i64::MAX);
        assert_eq!(format_minor(7, 0), "7");
        assert_eq!(format_minor(1234, 3), "1.234");
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn the_total_is_the_sum_of_the_rounded_lines() {
        // 0.005 + 0.005 exact is 0.01; rounded per line it is 0.01 + 0.01.
        assert_eq!(round_lines([5_000, 5_000], 2), Some((vec![1, 1], 2)));
        assert_eq!(round_lines([], 2), Some((vec![], 0)));
        assert_eq!(round_lines([i64::MAX, i64::MAX], 6), None);
    }

    #[test]
    fn exact_quotients_round_half_away_from_zero() {
        assert_eq!(round_half_away_from_zero(15, 10), 2);
        assert_eq!(round_half_away_from_zero(-15, 10), -2);
        assert_eq!(round_half_away_from_zero(14, 10), 1);
        assert_eq!(round_half_away_from_zero(-14, 10), -1);
        assert_eq!(round_half_away_from_zero(7, 1), 7);
    }
}
