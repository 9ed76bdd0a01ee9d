//! The tariff document of the default rater.
//!
//! ```toml
//! id = "standard-2026"
//! currency = "EUR"          # ISO 4217
//! minor_units = 2           # digits of the minor unit, used on invoices (default 2)
//!
//! [[service]]
//! name = "outbound-message"
//! unit = "message"          # message | byte | kib | mib
//! direction = "outbound"    # outbound | inbound
//! outcomes = ["delivered"]  # default: delivered (outbound), received (inbound)
//! price = "0.0004"          # a flat price per unit, or:
//! # mode = "graduated"      # graduated | volume, with tiers:
//! # tier = [{ up_to = 10000, price = "0.0005" }, { price = "0.0003" }]
//! # credit = true          # only then may a price be negative (refunds)
//! ```
//!
//! `up_to` is the period-to-date quantity where a tier ends (exclusive of
//! what follows); the last tier has none.

use serde::Deserialize;
use sluice_sdk::bill::{Decimal, Direction, Outcome, UsageEvent};

/// A parsed tariff.
pub struct Tariff {
    pub currency: String,
    pub services: Vec<Service>,
}

pub struct Service {
    pub name: String,
    pub unit: Unit,
    direction: Direction,
    outcomes: Vec<Outcome>,
    pub mode: Mode,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Message,
    Byte,
    Kib,
    Mib,
}

pub enum Mode {
    Flat(Decimal),
    Graduated(Vec<Tier>),
    Volume(Vec<Tier>),
}

pub struct Tier {
    pub up_to: Option<u64>,
    pub price: Decimal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTariff {
    #[allow(dead_code)]
    id: String,
    currency: String,
    #[serde(default)]
    #[allow(dead_code)]
    minor_units: Option<u8>,
    #[serde(default)]
    service: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    unit: Unit,
    direction: RawDirection,
    #[serde(default)]
    outcomes: Option<Vec<RawOutcome>>,
    #[serde(default)]
    price: Option<String>,
    #[serde(default)]
    mode: Option<RawMode>,
    #[serde(default)]
    tier: Vec<RawTier>,
    /// A credit service may have negative prices; the host refuses negative charges
    /// of any other service, so the tariff is refused here first.
    #[serde(default)]
    credit: bool,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawDirection {
    Outbound,
    Inbound,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawOutcome {
    Delivered,
    Bounced,
    Failed,
    Expired,
    Received,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum RawMode {
    Flat,
    Graduated,
    Volume,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    #[serde(default)]
    up_to: Option<u64>,
    price: String,
}

impl Unit {
    /// The quantity of a message of `size` bytes in this unit (rounded up).
    pub fn quantity(self, size: u64) -> u64 {
        match self {
            Unit::Message => 1,
            Unit::Byte => size,
            Unit::Kib => size.div_ceil(1024),
            Unit::Mib => size.div_ceil(1024 * 1024),
        }
    }
}

impl Service {
    pub fn applies_to(&self, event: &UsageEvent) -> bool {
        self.direction == event.direction && self.outcomes.contains(&event.outcome)
    }
}

/// The tier whose range holds period-to-date quantity `total`.
pub fn tier_for(tiers: &[Tier], total: u64) -> Option<&Tier> {
    tiers
        .iter()
        .find(|t| t.up_to.is_none_or(|u| total <= u))
        .or(tiers.last())
}

fn parse_price(service: &str, text: &str) -> Result<Decimal, String> {
    Decimal::parse(text).map_err(|e| format!("tariff: service {service:?}: {e}"))
}

impl Tariff {
    pub fn parse(text: &str) -> Result<Tariff, String> {
        let raw: RawTariff = toml::from_str(text).map_err(|e| format!("tariff: {e}"))?;
        let services = raw
            .service
            .into_iter()
            .map(Service::from_raw)
            .collect::<Result<_, _>>()?;
        Ok(Tariff {
            currency: raw.currency,
            services,
        })
    }
}

impl Service {
    fn from_raw(raw: RawService) -> Result<Service, String> {
        let name = raw.name;
        let direction = match raw.direction {
            RawDirection::Outbound => Direction::Outbound,
            RawDirection::Inbound => Direction::Inbound,
        };
        let outcomes = match raw.outcomes {
            Some(list) => list
                .into_iter()
                .map(|o| match o {
                    RawOutcome::Delivered => Outcome::Delivered,
                    RawOutcome::Bounced => Outcome::Bounced,
                    RawOutcome::Failed => Outcome::Failed,
                    RawOutcome::Expired => Outcome::Expired,
                    RawOutcome::Received => Outcome::Received,
                })
                .collect(),
            None if direction == Direction::Inbound => vec![Outcome::Received],
            None => vec![Outcome::Delivered],
        };
        let mode = raw.mode.unwrap_or(if raw.tier.is_empty() {
            RawMode::Flat
        } else {
            RawMode::Graduated
        });
        let mode = match mode {
            RawMode::Flat => {
                let price = raw.price.ok_or_else(|| {
                    format!("tariff: service {name:?}: a flat service needs `price`")
                })?;
                if !raw.tier.is_empty() {
                    return Err(format!(
                        "tariff: service {name:?}: `tier` needs mode \"graduated\" or \"volume\""
                    ));
                }
                Mode::Flat(parse_price(&name, &price)?)
            }
            tiered => {
                if raw.tier.is_empty() {
                    return Err(format!(
                        "tariff: service {name:?}: mode needs at least one `tier`"
                    ));
                }
                let mut tiers = Vec::new();
                let mut previous = 0u64;
                let last = raw.tier.len() - 1;
                for (i, t) in raw.tier.into_iter().enumerate() {
                    match t.up_to {
                        Some(u) if u <= previous && i > 0 => {
                            return Err(format!(
                                "tariff: service {name:?}: tier {} up_to {u} is not above the previous tier's {previous}",
                                i + 1
                            ));
                        }
                        Some(u) => previous = u,
                        None if i != last => {
                            return Err(format!(
                                "tariff: service {name:?}: only the last tier may leave out up_to"
                            ));
                        }
                        None => {}
                    }
                    tiers.push(Tier {
                        up_to: t.up_to,
                        price: parse_price(&name, &t.price)?,
                    });
                }
                if tiered == RawMode::Volume {
                    Mode::Volume(tiers)
                } else {
                    Mode::Graduated(tiers)
                }
            }
        };
        let negative = match &mode {
            Mode::Flat(p) => p.mantissa < 0,
            Mode::Graduated(tiers) | Mode::Volume(tiers) => {
                tiers.iter().any(|t| t.price.mantissa < 0)
            }
        };
        if negative && !raw.credit {
            return Err(format!(
                "tariff: service {name:?}: a negative price needs `credit = true`"
            ));
        }
        Ok(Service {
            name,
            unit: raw.unit,
            direction,
            outcomes,
            mode,
        })
    }
}
