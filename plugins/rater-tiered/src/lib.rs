//! The default rater: flat, graduated and volume tariffs, exact to the
//! micro-unit.
//!
//! The tariff is TOML (see `tariff.rs` for every key). For each event, in
//! order, every service whose direction and outcomes match charges the
//! event's quantity in the service's unit (`message` = 1, `byte`, `kib` and
//! `mib` rounded up). Period-to-date counters advance as the batch is rated,
//! so tiers are crossed inside a batch exactly where they would be one event
//! at a time.
//!
//! - flat: `quantity × price`.
//! - graduated: each part of the quantity is priced by the tier it falls in.
//! - volume: the tier reached by the period-to-date total prices the whole
//!   event. Earlier events of the period keep the price they were charged;
//!   the host settles the difference at period end.
//!
//! An amount is computed exactly and rounded once, half away from zero, to a
//! micro-unit. Rounding to the currency's minor unit happens on invoices.

mod tariff;

use sluice_sdk::bill::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tariff::{Mode, Service, Tariff};

/// The plugin.
pub struct TieredRater;

/// Parsed tariffs kept, by their text. The host calls the rater once per (account,
/// period) of a batch with the same tariff text, and reuses an instance across calls:
/// parsing the TOML again for each call was a fixed cost per account (issue 17). A few,
/// because one instance rates for several tenants in turn.
const KEPT_TARIFFS: usize = 8;
/// A tariff longer than this (a tenant's may be up to 256 KiB) is parsed every call
/// rather than kept: what the cache holds stays under 8 × 64 KiB of text.
const KEPT_TARIFF_BYTES: usize = 64 * 1024;

thread_local! {
    /// Oldest first; a text found moves nowhere (the set is small and changes rarely).
    static KEPT: RefCell<Vec<(String, Rc<Tariff>)>> = const { RefCell::new(Vec::new()) };
}

/// The tariff `text` parsed: kept from an earlier call with the same text, or parsed
/// now (and kept, if short enough). A text that does not parse is parsed, and refused,
/// every time.
fn parsed(text: &str) -> Result<Rc<Tariff>, String> {
    let kept = KEPT.with_borrow(|k| {
        k.iter()
            .find(|(t, _)| t == text)
            .map(|(_, tariff)| Rc::clone(tariff))
    });
    if let Some(tariff) = kept {
        return Ok(tariff);
    }
    let tariff = Rc::new(Tariff::parse(text)?);
    if text.len() <= KEPT_TARIFF_BYTES {
        KEPT.with_borrow_mut(|k| {
            if k.len() >= KEPT_TARIFFS {
                k.remove(0);
            }
            k.push((text.to_owned(), Rc::clone(&tariff)));
        });
    }
    Ok(tariff)
}

impl Rater for TieredRater {
    fn rate(input: BillInput) -> Result<BillOutput, String> {
        let tariff = parsed(&input.tariff)?;
        let mut to_date: HashMap<&str, u64> = HashMap::new();
        for c in &input.period_to_date {
            to_date.insert(c.service.as_str(), c.quantity);
        }
        let mut charges = Vec::new();
        for event in &input.events {
            for service in tariff.services.iter().filter(|s| s.applies_to(event)) {
                let quantity = service.unit.quantity(event.size);
                let before = to_date.get(service.name.as_str()).copied().unwrap_or(0);
                let (unit_price, amount) = price(service, before, quantity).ok_or_else(|| {
                    format!(
                        "service {:?}: amount for event {:?} overflows",
                        service.name, event.key
                    )
                })?;
                to_date.insert(service.name.as_str(), before.saturating_add(quantity));
                charges.push(Charge {
                    event_key: event.key.clone(),
                    service: service.name.clone(),
                    quantity,
                    unit_price,
                    amount,
                });
            }
        }
        Ok(BillOutput {
            charges,
            currency: tariff.currency.clone(),
        })
    }
}

/// Exact amounts are summed at this many decimals before the one rounding.
const EXACT_SCALE: u32 = 18;

/// `(unit price, amount in micros)` for `quantity` units when `before` were
/// already rated this period. The unit price of a graduated charge that
/// spans tiers is the last tier's.
fn price(service: &Service, before: u64, quantity: u64) -> Option<(Decimal, Micros)> {
    match &service.mode {
        Mode::Flat(p) => Some((*p, p.times_in_micros(quantity)?)),
        Mode::Volume(tiers) => {
            let p = tariff::tier_for(tiers, before.saturating_add(quantity).max(1))?.price;
            Some((p, p.times_in_micros(quantity)?))
        }
        Mode::Graduated(tiers) => {
            let mut exact: i128 = 0;
            let mut last = tiers.first()?.price;
            let mut at = before;
            let end = before.saturating_add(quantity);
            let mut lower = 0u64;
            for tier in tiers {
                let upper = tier.up_to.unwrap_or(u64::MAX);
                let (from, to) = (at.max(lower), end.min(upper));
                if to > from {
                    let part = i128::from(to - from);
                    let scaled = i128::from(tier.price.mantissa)
                        .checked_mul(10i128.pow(EXACT_SCALE - u32::from(tier.price.scale)))?;
                    exact = exact.checked_add(scaled.checked_mul(part)?)?;
                    last = tier.price;
                    at = to;
                }
                lower = upper;
                if at >= end {
                    break;
                }
            }
            Some((last, round_to_micros(exact)?))
        }
    }
}

fn round_to_micros(exact: i128) -> Option<Micros> {
    let divisor = 10i128.pow(EXACT_SCALE - 6);
    i64::try_from(sluice_sdk::money::round_half_away_from_zero(exact, divisor)).ok()
}

sluice_sdk::export_rater!(TieredRater);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    const TARIFF: &str = r#"
id = "standard-2026"
currency = "EUR"
minor_units = 2

[[service]]
name = "outbound-message"
unit = "message"
direction = "outbound"
mode = "graduated"
tier = [
  { up_to = 2, price = "0.01" },
  { up_to = 4, price = "0.005" },
  { price = "0.001" },
]

[[service]]
name = "outbound-traffic"
unit = "kib"
direction = "outbound"
price = "0.0000125"

[[service]]
name = "bounce-fee"
unit = "message"
direction = "outbound"
outcomes = ["bounced"]
mode = "volume"
tier = [{ up_to = 1, price = "0.10" }, { price = "0.05" }]
"#;

    fn delivered(n: usize) -> Vec<UsageEvent> {
        (0..n)
            .map(|i| testing::usage_event(&format!("k{i}"), Outcome::Delivered, 2048))
            .collect()
    }

    fn amounts(out: &BillOutput, service: &str) -> Vec<i64> {
        out.charges
            .iter()
            .filter(|c| c.service == service)
            .map(|c| c.amount)
            .collect()
    }

    #[test]
    fn a_kept_tariff_answers_as_a_fresh_parse_and_a_changed_text_is_read_at_once() {
        let first = TieredRater::rate(testing::bill_input(TARIFF, delivered(6))).unwrap();
        let again = TieredRater::rate(testing::bill_input(TARIFF, delivered(6))).unwrap();
        assert_eq!(
            amounts(&again, "outbound-message"),
            amounts(&first, "outbound-message")
        );
        let dearer = TARIFF.replace("\"0.001\"", "\"0.002\"");
        let out = TieredRater::rate(testing::bill_input(&dearer, delivered(6))).unwrap();
        assert_eq!(
            amounts(&out, "outbound-message"),
            [10_000, 10_000, 5_000, 5_000, 2_000, 2_000]
        );
        // More texts than are kept, then the first again: still right.
        for n in 0..KEPT_TARIFFS + 2 {
            let other = TARIFF.replace("standard-2026", &format!("other-{n}"));
            TieredRater::rate(testing::bill_input(&other, delivered(1))).unwrap();
        }
        assert!(KEPT.with_borrow(|k| k.len()) <= KEPT_TARIFFS);
        let back = TieredRater::rate(testing::bill_input(TARIFF, delivered(6))).unwrap();
        assert_eq!(
            amounts(&back, "outbound-message"),
            amounts(&first, "outbound-message")
        );
        // Too long to keep: parsed, not kept.
        let long = format!("{TARIFF}\n# {}\n", "x".repeat(KEPT_TARIFF_BYTES));
        TieredRater::rate(testing::bill_input(&long, delivered(1))).unwrap();
        assert!(KEPT.with_borrow(|k| k.iter().all(|(t, _)| t.len() <= KEPT_TARIFF_BYTES)));
    }

    #[test]
    fn graduated_tiers_are_crossed_inside_a_batch() {
        let out = TieredRater::rate(testing::bill_input(TARIFF, delivered(6))).unwrap();
        assert_eq!(
            amounts(&out, "outbound-message"),
            [10_000, 10_000, 5_000, 5_000, 1_000, 1_000]
        );
        assert_eq!(out.currency, "EUR");
    }

    #[test]
    fn period_to_date_counters_pick_the_starting_tier() {
        let mut input = testing::bill_input(TARIFF, delivered(1));
        input.period_to_date = vec![Counter {
            service: "outbound-message".into(),
            quantity: 3,
        }];
        let out = TieredRater::rate(input).unwrap();
        assert_eq!(amounts(&out, "outbound-message"), [5_000]);
    }

    #[test]
    fn sub_cent_traffic_prices_are_exact() {
        let out = TieredRater::rate(testing::bill_input(TARIFF, delivered(1))).unwrap();
        // 2 KiB × 0.0000125 = 0.000025 = 25 micros
        assert_eq!(amounts(&out, "outbound-traffic"), [25]);
        assert_eq!(
            out.charges
                .iter()
                .find(|c| c.service == "outbound-traffic")
                .unwrap()
                .quantity,
            2
        );
    }

    #[test]
    fn volume_mode_and_outcome_filter() {
        let events = vec![
            testing::usage_event("b1", Outcome::Bounced, 10),
            testing::usage_event("b2", Outcome::Bounced, 10),
        ];
        let out = TieredRater::rate(testing::bill_input(TARIFF, events)).unwrap();
        assert_eq!(amounts(&out, "bounce-fee"), [100_000, 50_000]);
        assert!(amounts(&out, "outbound-message").is_empty());
    }

    #[test]
    fn a_graduated_charge_spanning_tiers_is_split_exactly() {
        let tariff = "id = \"t\"\ncurrency = \"EUR\"\n[[service]]\nname = \"traffic\"\nunit = \"byte\"\ndirection = \"outbound\"\nmode = \"graduated\"\ntier = [{ up_to = 1000, price = \"0.000001\" }, { price = \"0.0000001\" }]\n";
        let events = vec![testing::usage_event("k", Outcome::Delivered, 1500)];
        let out = TieredRater::rate(testing::bill_input(tariff, events)).unwrap();
        // 1000 × 1 micro + 500 × 0.1 micro = 1050 micros
        assert_eq!(amounts(&out, "traffic"), [1_050]);
    }

    #[test]
    fn bad_tariffs_are_refused_with_the_place() {
        let err = TieredRater::rate(testing::bill_input(
            "id = \"t\"\ncurrency = \"EUR\"\ncolour = 1\n",
            vec![],
        ))
        .unwrap_err();
        assert!(err.contains("colour"), "{err}");
        let err = TieredRater::rate(testing::bill_input("id = \"t\"\ncurrency = \"EUR\"\n[[service]]\nname = \"m\"\nunit = \"message\"\ndirection = \"outbound\"\nprice = \"cheap\"\n", vec![])).unwrap_err();
        assert!(err.contains("\"cheap\""), "{err}");
    }

    #[test]
    fn a_negative_price_needs_a_credit_service() {
        let refund = |credit: &str| {
            format!(
                "id = \"t\"\ncurrency = \"EUR\"\n[[service]]\nname = \"refund\"\nunit = \"message\"\ndirection = \"outbound\"\noutcomes = [\"bounced\"]\nprice = \"-0.05\"\n{credit}"
            )
        };
        let err = TieredRater::rate(testing::bill_input(&refund(""), vec![])).unwrap_err();
        assert!(err.contains("credit = true"), "{err}");
        let tiered = "id = \"t\"\ncurrency = \"EUR\"\n[[service]]\nname = \"m\"\nunit = \"message\"\ndirection = \"outbound\"\nmode = \"graduated\"\ntier = [{ up_to = 1, price = \"0.1\" }, { price = \"-0.1\" }]\n";
        let err = TieredRater::rate(testing::bill_input(tiered, vec![])).unwrap_err();
        assert!(err.contains("credit = true"), "{err}");
        TieredRater::rate(testing::bill_input(&refund("credit = true\n"), vec![])).unwrap();
    }
}
