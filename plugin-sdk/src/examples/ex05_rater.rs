//! Bill: a flat price per delivered message, read from the tariff text.
//!
//! Export it with `sluice_sdk::export_rater!(FlatPrice);`.
//! The tariff document here is just a decimal, e.g. `"0.0004"`.

use crate::bill::*;

/// Charges every delivered recipient the tariff's price.
pub struct FlatPrice;

impl Rater for FlatPrice {
    fn rate(input: BillInput) -> Result<BillOutput, String> {
        let price = Decimal::parse(&input.tariff).map_err(|e| e.to_string())?;
        let charges = input
            .events
            .into_iter()
            .filter(|e| e.outcome == Outcome::Delivered)
            .map(|e| {
                let amount = price.times_in_micros(1).ok_or("price overflows")?;
                Ok(Charge {
                    event_key: e.key,
                    service: "outbound-message".into(),
                    quantity: 1,
                    unit_price: price,
                    amount,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(BillOutput {
            charges,
            currency: "EUR".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn charges_delivered_only() {
        let events = vec![
            testing::usage_event("k1", Outcome::Delivered, 1000),
            testing::usage_event("k2", Outcome::Bounced, 1000),
        ];
        let out = FlatPrice::rate(testing::bill_input("0.0004", events)).unwrap();
        assert_eq!(out.charges.len(), 1);
        assert_eq!(out.charges[0].amount, 400);
        assert!(
            FlatPrice::rate(testing::bill_input("free", vec![]))
                .unwrap_err()
                .contains("\"free\"")
        );
    }
}
