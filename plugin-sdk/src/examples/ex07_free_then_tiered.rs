//! Bill: the first 1,000 messages a month are free, then tiered: 0.0008 each
//! up to 100,000, 0.0005 beyond.
//!
//! Export it with `sluice_sdk::export_rater!(FreeThenTiered);`. The host
//! passes how many messages were already rated this month
//! (`period_to_date`), so a batch continues where the last one stopped.

use crate::bill::*;

/// Graduated tiers over the month's delivered messages.
pub struct FreeThenTiered;

const SERVICE: &str = "outbound-message";
/// (up to and including this many messages in the month, unit price)
const TIERS: [(u64, &str); 3] = [(1_000, "0"), (100_000, "0.0008"), (u64::MAX, "0.0005")];

fn unit_price(nth_message: u64) -> Result<Decimal, String> {
    let (_, price) = TIERS
        .iter()
        .find(|(up_to, _)| nth_message <= *up_to)
        .ok_or("no tier")?;
    Decimal::parse(price).map_err(|e| e.to_string())
}

impl Rater for FreeThenTiered {
    fn rate(input: BillInput) -> Result<BillOutput, String> {
        let mut count: u64 = input
            .period_to_date
            .iter()
            .filter(|c| c.service == SERVICE)
            .map(|c| c.quantity)
            .sum();
        let mut charges = Vec::new();
        for e in input
            .events
            .into_iter()
            .filter(|e| e.outcome == Outcome::Delivered)
        {
            count += 1;
            let price = unit_price(count)?;
            let amount = price.times_in_micros(1).ok_or("amount overflows")?;
            let (event_key, service) = (e.key, SERVICE.into());
            charges.push(Charge {
                event_key,
                service,
                quantity: 1,
                unit_price: price,
                amount,
            });
        }
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
    fn free_up_to_a_thousand_then_the_first_tier() {
        let events = (0..3)
            .map(|i| testing::usage_event(&format!("k{i}"), Outcome::Delivered, 10))
            .collect();
        let mut input = testing::bill_input("", events);
        input.period_to_date = vec![Counter {
            service: SERVICE.into(),
            quantity: 999,
        }];
        let amounts: Vec<i64> = FreeThenTiered::rate(input)
            .unwrap()
            .charges
            .iter()
            .map(|c| c.amount)
            .collect();
        assert_eq!(
            amounts,
            vec![0, 800, 800],
            "the 1,000th is free, the 1,001st is not"
        );
        assert_eq!(unit_price(100_001).unwrap().times_in_micros(1), Some(500));
    }
}
