//! Billing from MTA logs, offline: transfers are matched to tenant logins
//! and rated in batches through the bill stage's plugin.
//!
//! The sender is tried first (the tenant sent it: outbound, outcome
//! `delivered`), then the recipient (the tenant received it: inbound,
//! outcome `received`); a login is a full address or a domain. Unmatched
//! transfers are counted, not billed. Period-to-date counters are kept per
//! tenant and calendar month (UTC) of delivery, so tiers are crossed where
//! they would be one event at a time.
//!
//! Rating runs on its own thread so that parsing and the plugin overlap.

mod config;
mod matcher;
mod rater;
mod totals;

pub use config::{ConfigError, Logins, TariffDoc, load_tariffs};
pub use matcher::Matcher;
pub use rater::{BillError, Biller, DEFAULT_BATCH, DUPLICATE_SAMPLES, Duplicate, Place, Rated};
pub use totals::{DuplicatePlace, ServiceTotal, Summary, TenantTotals};
