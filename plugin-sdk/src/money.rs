//! Exact money for plugins: parsing decimal prices and turning quantity × price
//! into micro-units without floats.
//!
//! The arithmetic is `sluice-money`'s, the same crate the host rates and rounds
//! with, so a plugin's figures and the host's cannot disagree. This module
//! only adds it to the WIT `decimal` record plugins exchange with the host.

use crate::types::{Decimal, Micros};

pub use sluice_money::{DecimalError, MICROS_PER_UNIT, round_half_away_from_zero};

impl From<sluice_money::Decimal> for Decimal {
    fn from(d: sluice_money::Decimal) -> Self {
        Decimal {
            mantissa: d.mantissa,
            scale: d.scale,
        }
    }
}

impl From<Decimal> for sluice_money::Decimal {
    fn from(d: Decimal) -> Self {
        sluice_money::Decimal {
            mantissa: d.mantissa,
            scale: d.scale,
        }
    }
}

impl Decimal {
    /// Parses `"12"`, `"0.0004"` or `"-1.5"`; at most 18 digits after the point.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        sluice_money::Decimal::parse(text).map(Decimal::from)
    }

    /// `quantity × self` in micro-units, rounded half away from zero.
    /// `None` when the result does not fit.
    pub fn times_in_micros(&self, quantity: u64) -> Option<Micros> {
        sluice_money::Decimal::from(*self).times_in_micros(quantity)
    }

    /// The canonical text form (`"0.0004"`).
    pub fn to_text(&self) -> String {
        sluice_money::Decimal::from(*self).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wit_record_parses_prints_and_multiplies_as_the_host_does() {
        let p = Decimal::parse("0.0004").unwrap();
        assert_eq!((p.mantissa, p.scale), (4, 4));
        assert_eq!(p.to_text(), "0.0004");
        assert_eq!(p.times_in_micros(2500), Some(1_000_000));
        assert_eq!(
            Decimal::parse("1,5").unwrap_err().to_string(),
            "invalid decimal \"1,5\": only digits and one '.' are allowed"
        );
    }
}
