//! A tenant's rater for the billing tests: every event costs `price` (default 0.0123)
//! as service `service` (default `tenant-flat`), in `currency` (default EUR), so a test
//! can tell its charges from the platform rater's. `mode` makes it misbehave:
//! `panic` traps on every call, `unknown` also charges an event it was not given,
//! `misprice` charges twice `quantity × price`.

use sluice_sdk::bill::*;

/// The plugin.
pub struct TenantBill;

impl Rater for TenantBill {
    fn rate(input: BillInput) -> Result<BillOutput, String> {
        let mode = sluice_sdk::config::get("mode").unwrap_or_default();
        if mode == "panic" {
            panic!("tenant bill plugin panics on purpose");
        }
        let price = sluice_sdk::config::get("price").unwrap_or_else(|| "0.0123".into());
        let price = Decimal::parse(&price).map_err(|e| format!("setting price: {e}"))?;
        let service = sluice_sdk::config::get("service").unwrap_or_else(|| "tenant-flat".into());
        let mut amount = price.times_in_micros(1).ok_or("the price overflows")?;
        if mode == "misprice" {
            amount = amount.checked_mul(2).ok_or("the price overflows")?;
        }
        let mut charges: Vec<Charge> = input
            .events
            .into_iter()
            .map(|e| Charge {
                event_key: e.key,
                service: service.clone(),
                quantity: 1,
                unit_price: price,
                amount,
            })
            .collect();
        if mode == "unknown" {
            charges.push(Charge {
                event_key: "an event nobody sent".into(),
                service: service.clone(),
                quantity: 1,
                unit_price: price,
                amount,
            });
        }
        Ok(BillOutput {
            charges,
            currency: sluice_sdk::config::get("currency").unwrap_or_else(|| "EUR".into()),
        })
    }
}

sluice_sdk::export_rater!(TenantBill);
