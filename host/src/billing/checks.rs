//! The host's checks on a rater's charges, whoever wrote the rater: they run on every
//! answer before anything reaches a ledger, on top of `stage::validate` (which already
//! refuses charges for events the rater was not given and two charges for one event and
//! service).
//!
//! What the host knows of the tariff decides how much it can check. For a tariff in the
//! `rater-tiered` format it knows each service: a charge must name one of them, be
//! non-negative unless the service is declared `credit = true`, and for a service with
//! one price per charge (flat or volume) be `quantity × unit price` within the rater's
//! rounding to the micro-unit; a flat service's unit price must be the tariff's. A
//! tariff the host cannot read (a tenant's own rater may use any format) still gets
//! the sign rule, the currency when it names one, and the sum bound.
//!
//! A batch is all or nothing: the first failed check refuses the whole answer, so the
//! caller leaves every event of the batch unrated with the reason.

use super::times_in_micros;
use crate::stage::{BillOutput, Decimal, Micros};
use std::collections::HashMap;

/// What the host reads of one `[[service]]` of a tariff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    /// `credit = true`: the service may charge negative amounts (refunds, credits).
    pub credit: bool,
    /// The one price of a flat service (no `mode`, or `mode = "flat"`, and a `price`).
    pub flat_price: Option<Decimal>,
    /// Each charge has one price: flat or volume (graduated charges may span tiers).
    pub one_price_per_charge: bool,
}

/// The rules a tariff sets for its raters' answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TariffRules {
    /// `currency`, if the document names one.
    pub currency: Option<String>,
    /// The services by name; `None` when the document is not a tariff the host can
    /// read (not TOML, or no `[[service]]` list), so any service name is taken.
    pub services: Option<HashMap<String, ServiceRule>>,
}

impl TariffRules {
    /// Reads the rules of a tariff document; never fails (what it cannot read it does
    /// not check, except the sign rule, which needs nothing).
    pub fn read(tariff: &str) -> TariffRules {
        let Ok(table) = tariff.parse::<toml::Table>() else {
            return TariffRules::default();
        };
        let currency = table
            .get("currency")
            .and_then(toml::Value::as_str)
            .map(str::to_owned);
        let services = table
            .get("service")
            .and_then(toml::Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|s| {
                        let name = s.get("name")?.as_str()?.to_owned();
                        let mode = s.get("mode").and_then(toml::Value::as_str);
                        let flat = matches!(mode, None | Some("flat"))
                            && s.get("tier").is_none()
                            && s.get("price").is_some();
                        let flat_price = if flat {
                            s.get("price")
                                .and_then(toml::Value::as_str)
                                .and_then(|p| p.parse::<Decimal>().ok())
                        } else {
                            None
                        };
                        let rule = ServiceRule {
                            credit: s.get("credit").and_then(toml::Value::as_bool) == Some(true),
                            one_price_per_charge: flat || mode == Some("volume"),
                            flat_price,
                        };
                        Some((name, rule))
                    })
                    .collect()
            });
        TariffRules { currency, services }
    }
}

/// Why a rater's answer was refused; each names the event and service at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    #[error("the rater answered in {answered:?}, the tariff is in {tariff:?}")]
    Currency { answered: String, tariff: String },
    #[error("event {event:?}: service {service:?} is not in the tariff")]
    UnknownService { event: String, service: String },
    #[error(
        "event {event:?} service {service:?}: negative amount {amount} micro-units, and the tariff does not declare the service a credit (`credit = true`)"
    )]
    Negative {
        event: String,
        service: String,
        amount: Micros,
    },
    #[error(
        "event {event:?} service {service:?}: unit price {price} is not the tariff's flat price {tariff}"
    )]
    Price {
        event: String,
        service: String,
        price: Decimal,
        tariff: Decimal,
    },
    #[error(
        "event {event:?} service {service:?}: amount {amount} micro-units is not quantity {quantity} × unit price {price} (= {expected:?} micro-units, within rounding)"
    )]
    Amount {
        event: String,
        service: String,
        amount: Micros,
        quantity: u64,
        price: Decimal,
        expected: Option<Micros>,
    },
    #[error("the batch's charges add up past what a ledger can hold ({charges} charges)")]
    Overflow { charges: usize },
}

/// Checks a rater's answer against the tariff's rules; the first failure refuses it.
pub fn check_charges(rules: &TariffRules, out: &BillOutput) -> Result<(), ChargeError> {
    if let Some(c) = &rules.currency
        && *c != out.currency
    {
        return Err(ChargeError::Currency {
            answered: out.currency.clone(),
            tariff: c.clone(),
        });
    }
    let mut total: Micros = 0;
    let mut negative_total: Micros = 0;
    for c in &out.charges {
        let (event, service) = (&c.event_key, &c.service);
        let rule = match &rules.services {
            Some(services) => match services.get(service) {
                Some(rule) => Some(rule),
                None => {
                    return Err(ChargeError::UnknownService {
                        event: event.clone(),
                        service: service.clone(),
                    });
                }
            },
            None => None,
        };
        if c.amount < 0 && !rule.is_some_and(|r| r.credit) {
            return Err(ChargeError::Negative {
                event: event.clone(),
                service: service.clone(),
                amount: c.amount,
            });
        }
        if let Some(rule) = rule {
            if let Some(tariff) = rule.flat_price
                && !Decimal::same_value(tariff, c.unit_price)
            {
                return Err(ChargeError::Price {
                    event: event.clone(),
                    service: service.clone(),
                    price: c.unit_price,
                    tariff,
                });
            }
            if rule.one_price_per_charge {
                // The rater rounds the exact product to a micro-unit its own way (half
                // away from zero, half to even, down): any of them is at most one off.
                let expected = times_in_micros(c.unit_price, c.quantity);
                if expected.is_none_or(|e| e.abs_diff(c.amount) > 1) {
                    return Err(ChargeError::Amount {
                        event: event.clone(),
                        service: service.clone(),
                        amount: c.amount,
                        quantity: c.quantity,
                        price: c.unit_price,
                        expected,
                    });
                }
            }
        }
        // Charges and credits are summed apart, so that neither side of a ledger can
        // be pushed past i64 by a batch that nets out.
        let overflow = || ChargeError::Overflow {
            charges: out.charges.len(),
        };
        if c.amount >= 0 {
            total = total.checked_add(c.amount).ok_or_else(overflow)?;
        } else {
            negative_total = negative_total.checked_add(c.amount).ok_or_else(overflow)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Charge;

    const TARIFF: &str = "id = \"t\"\ncurrency = \"EUR\"\n\
        [[service]]\nname = \"msg\"\nunit = \"message\"\ndirection = \"outbound\"\nprice = \"0.10\"\n\
        [[service]]\nname = \"bytes\"\nunit = \"byte\"\ndirection = \"outbound\"\nmode = \"graduated\"\ntier = [{ up_to = 10, price = \"0.01\" }, { price = \"0.001\" }]\n\
        [[service]]\nname = \"vol\"\nunit = \"message\"\ndirection = \"outbound\"\nmode = \"volume\"\ntier = [{ up_to = 10, price = \"0.2\" }, { price = \"0.1\" }]\n\
        [[service]]\nname = \"refund\"\nunit = \"message\"\ndirection = \"outbound\"\noutcomes = [\"bounced\"]\nprice = \"-0.05\"\ncredit = true\n";

    fn charge(service: &str, quantity: u64, price: &str, amount: Micros) -> Charge {
        Charge {
            event_key: "e1".into(),
            service: service.into(),
            quantity,
            unit_price: price.parse().unwrap(),
            amount,
        }
    }

    fn check(charges: Vec<Charge>) -> Result<(), ChargeError> {
        check_charges(
            &TariffRules::read(TARIFF),
            &BillOutput {
                charges,
                currency: "EUR".into(),
            },
        )
    }

    #[test]
    fn honest_charges_pass() {
        check(vec![
            charge("msg", 1, "0.1", 100_000),
            charge("msg", 3, "0.10", 300_000),
            // A graduated charge spanning tiers carries the last tier's price only.
            charge("bytes", 20, "0.001", 110_000),
            charge("vol", 2, "0.1", 200_000),
            charge("refund", 1, "-0.05", -50_000),
        ])
        .unwrap();
        // Rounding to the micro-unit either way is within the rule.
        let t = "id = \"t\"\ncurrency = \"EUR\"\n[[service]]\nname = \"b\"\nunit = \"byte\"\ndirection = \"outbound\"\nprice = \"0.0000125\"\n";
        let out = |amount| BillOutput {
            charges: vec![charge("b", 3, "0.0000125", amount)],
            currency: "EUR".into(),
        };
        for amount in [37, 38] {
            check_charges(&TariffRules::read(t), &out(amount)).unwrap();
        }
        assert!(check_charges(&TariffRules::read(t), &out(40)).is_err());
    }

    #[test]
    fn negative_unknown_mispriced_and_wrong_currency_are_refused() {
        assert!(matches!(
            check(vec![charge("msg", 1, "-1000", -1_000_000_000)]),
            Err(ChargeError::Negative { .. })
        ));
        assert!(matches!(
            check(vec![charge("tenant-flat", 1, "0.1", 100_000)]),
            Err(ChargeError::UnknownService { .. })
        ));
        assert!(matches!(
            check(vec![charge("msg", 1, "0.2", 200_000)]),
            Err(ChargeError::Price { .. })
        ));
        assert!(matches!(
            check(vec![charge("msg", 1, "0.1", 200_000)]),
            Err(ChargeError::Amount { .. })
        ));
        assert!(matches!(
            check(vec![charge("vol", 2, "0.1", 2_000_000)]),
            Err(ChargeError::Amount { .. })
        ));
        // One bad charge refuses the batch, whatever came before it.
        assert!(matches!(
            check(vec![
                charge("msg", 1, "0.1", 100_000),
                charge("msg", 1, "0.1", -100_000)
            ]),
            Err(ChargeError::Negative { .. })
        ));
        let err = check_charges(
            &TariffRules::read(TARIFF),
            &BillOutput {
                charges: vec![],
                currency: "USD".into(),
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the rater answered in \"USD\", the tariff is in \"EUR\""
        );
    }

    #[test]
    fn huge_charges_that_overflow_a_sum_are_refused() {
        let t = "not a tariff the host reads";
        let out = BillOutput {
            charges: vec![
                charge("x", 1, "1", i64::MAX),
                Charge {
                    event_key: "e2".into(),
                    ..charge("x", 1, "1", i64::MAX)
                },
            ],
            currency: "EUR".into(),
        };
        assert!(matches!(
            check_charges(&TariffRules::read(t), &out),
            Err(ChargeError::Overflow { charges: 2 })
        ));
    }

    #[test]
    fn an_unreadable_tariff_still_gets_the_sign_rule() {
        let rules = TariffRules::read("whatever format a tenant's rater reads");
        let out = BillOutput {
            charges: vec![charge("anything", 1, "-1", -1_000_000)],
            currency: "EUR".into(),
        };
        assert!(matches!(
            check_charges(&rules, &out),
            Err(ChargeError::Negative { .. })
        ));
    }
}
