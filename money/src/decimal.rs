//! Exact decimals: `mantissa × 10^-scale`, parsed from and printed as text.

use std::fmt;
use std::str::FromStr;

use crate::{MICROS_PER_UNIT, Micros, round_half_away_from_zero};

/// An exact decimal number, such as a unit price of `0.0004`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// The digits, with the sign.
    pub mantissa: i64,
    /// How many of the digits are after the point (at most 18).
    pub scale: u8,
}

/// Text that is not a decimal, and why.
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
    /// Parses `"12"`, `"0.0004"`, `"-1.5"` or `".5"`; at most 18 digits after
    /// the point and 18 in all.
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
            // At most 18, checked above.
            scale: frac.len() as u8,
        })
    }

    /// `quantity × self` in micro-units, rounded once, half away from zero.
    /// `None` when the result does not fit in an `i64`.
    pub fn times_in_micros(&self, quantity: u64) -> Option<Micros> {
        let exact = i128::from(self.mantissa)
            .checked_mul(i128::from(quantity))?
            .checked_mul(i128::from(MICROS_PER_UNIT))?;
        let divisor = 10i128.checked_pow(u32::from(self.scale))?;
        i64::try_from(round_half_away_from_zero(exact, divisor)).ok()
    }

    /// Whether two decimals are the same number (`0.10` is `0.1`).
    pub fn same_value(self, other: Decimal) -> bool {
        let scale = self.scale.max(other.scale);
        let widen = |d: Decimal| {
            10i128
                .checked_pow(u32::from(scale - d.scale))
                .and_then(|f| i128::from(d.mantissa).checked_mul(f))
        };
        matches!((widen(self), widen(other)), (Some(x), Some(y)) if x == y)
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Decimal::parse(text)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = usize::from(self.scale);
        let sign = if self.mantissa < 0 { "-" } else { "" };
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for text in ["0.0004", "12", "-1.50", "0.000000001", "100000.25"] {
            assert_eq!(Decimal::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Decimal::parse(".5").unwrap().to_string(), "0.5");
        assert_eq!(Decimal::parse("+7").unwrap().to_string(), "7");
    }

    #[test]
    fn refuses_bad_text_and_says_why() {
        assert_eq!(
            "1,5".parse::<Decimal>().unwrap_err().to_string(),
            "invalid decimal \"1,5\": only digits and one '.' are allowed"
        );
        assert_eq!(Decimal::parse("").unwrap_err().problem, "no digits");
        assert_eq!(Decimal::parse("-").unwrap_err().problem, "no digits");
        assert_eq!(
            Decimal::parse("99999999999999999999").unwrap_err().problem,
            "too many digits"
        );
        assert_eq!(
            Decimal::parse("0.0000000000000000001").unwrap_err().problem,
            "more than 18 digits after the point"
        );
    }

    #[test]
    fn multiplies_into_micros_rounding_half_away_from_zero() {
        let p = Decimal::parse("0.0004").unwrap();
        assert_eq!(p.times_in_micros(1), Some(400));
        assert_eq!(p.times_in_micros(2500), Some(1_000_000));
        let tiny = Decimal::parse("0.00000025").unwrap(); // 0.25 micros
        assert_eq!(tiny.times_in_micros(1), Some(0));
        assert_eq!(tiny.times_in_micros(2), Some(1)); // 0.5 rounds up
        assert_eq!(tiny.times_in_micros(4_000_000), Some(1_000_000));
        let neg = Decimal::parse("-0.0000005").unwrap();
        assert_eq!(neg.times_in_micros(1), Some(-1));
        let huge = Decimal::parse("9000000000000").unwrap();
        assert_eq!(huge.times_in_micros(u64::MAX), None);
    }

    #[test]
    fn equal_values_at_different_scales_are_the_same() {
        let d = |t| Decimal::parse(t).unwrap();
        assert!(d("0.10").same_value(d("0.1")));
        assert!(d("5").same_value(d("5.000")));
        assert!(!d("0.1").same_value(d("0.01")));
        assert!(!d("-1").same_value(d("1")));
    }
}
