//! Exact money: parsing decimal prices and turning quantity × price into
//! micro-units without floats.

use crate::types::{Decimal, Micros};
use std::fmt;

/// Micro-units in one unit of a currency.
pub const MICROS_PER_UNIT: i64 = 1_000_000;

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalError {
    /// The text that was refused.
    pub input: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid decimal {:?}: {}", self.input, self.problem)
    }
}

impl std::error::Error for DecimalError {}

impl Decimal {
    /// Parses `"12"`, `"0.0004"` or `"-1.5"`; at most 18 digits after the point.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let err = |problem| DecimalError {
            input: text.to_owned(),
            problem,
        };
        let t = text.trim();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(err("no digits"));
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(err("only digits and one '.' are allowed"));
        }
        if frac.len() > 18 {
            return Err(err("more than 18 digits after the point"));
        }
        let mut mantissa: i64 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(|| err("too many digits"))?;
        }
        Ok(Decimal {
            mantissa: if negative { -mantissa } else { mantissa },
            scale: frac.len() as u8,
        })
    }

    /// `quantity × self` in micro-units, rounded half away from zero.
    /// `None` when the result does not fit.
    pub fn times_in_micros(&self, quantity: u64) -> Option<Micros> {
        let exact = i128::from(self.mantissa)
            .checked_mul(i128::from(quantity))?
            .checked_mul(i128::from(MICROS_PER_UNIT))?;
        let divisor = 10i128.checked_pow(u32::from(self.scale))?;
        let (q, r) = (exact / divisor, exact % divisor);
        let rounded = if r.abs() * 2 >= divisor {
            q + exact.signum()
        } else {
            q
        };
        i64::try_from(rounded).ok()
    }

    /// The canonical text form (`"0.0004"`).
    pub fn to_text(&self) -> String {
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        let sign = if self.mantissa < 0 { "-" } else { "" };
        if scale == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for text in ["0.0004", "12", "-1.50", "0.000000001", "100000.25"] {
            assert_eq!(Decimal::parse(text).unwrap().to_text(), text);
        }
        assert_eq!(Decimal::parse(".5").unwrap().to_text(), "0.5");
    }

    #[test]
    fn refuses_bad_text_and_says_why() {
        let e = Decimal::parse("1,5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid decimal \"1,5\": only digits and one '.' are allowed"
        );
        assert!(Decimal::parse("").is_err());
        assert!(Decimal::parse("99999999999999999999").is_err());
    }

    #[test]
    fn multiplies_into_micros_with_half_up_rounding() {
        let p = Decimal::parse("0.0004").unwrap();
        assert_eq!(p.times_in_micros(1), Some(400));
        assert_eq!(p.times_in_micros(2500), Some(1_000_000));
        let tiny = Decimal::parse("0.00000025").unwrap(); // 0.25 micros
        assert_eq!(tiny.times_in_micros(1), Some(0));
        assert_eq!(tiny.times_in_micros(2), Some(1)); // 0.5 rounds up
        assert_eq!(tiny.times_in_micros(4_000_000), Some(1_000_000));
        let neg = Decimal::parse("-0.0000005").unwrap();
        assert_eq!(neg.times_in_micros(1), Some(-1));
    }
}
