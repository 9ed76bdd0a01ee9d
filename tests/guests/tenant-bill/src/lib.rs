//! A tenant's rater for the tenant plugin tests: every event costs `price` (default
//! 0.0123) as service `tenant-flat`, in `currency` (default EUR), so a test can tell its
//! charges from the platform rater's. With `mode=panic` it traps on every call.

use sluice_sdk::bill::*;

/// The plugin.
pub struct TenantBill;

impl Rater for TenantBill {
    fn rate(input: BillInput) -> Result<BillOutput, String> {
        if sluice_sdk::config::get("mode").as_deref() == Some("panic") {
            panic!("tenant bill plugin panics on purpose");
        }
        let price = sluice_sdk::config::get("price").unwrap_or_else(|| "0.0123".into());
        let price = Decimal::parse(&price).map_err(|e| format!("setting price: {e}"))?;
        let amount = price.times_in_micros(1).ok_or("the price overflows")?;
        Ok(BillOutput {
            charges: input
                .events
                .into_iter()
                .map(|e| Charge {
                    event_key: e.key,
                    service: "tenant-flat".into(),
                    quantity: 1,
                    unit_price: price,
                    amount,
                })
                .collect(),
            currency: sluice_sdk::config::get("currency").unwrap_or_else(|| "EUR".into()),
        })
    }
}

sluice_sdk::export_rater!(TenantBill);
