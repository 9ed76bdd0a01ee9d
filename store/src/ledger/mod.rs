//! Live billing's tables: usage events (written with the outcome), the immutable ledger
//! of charges, period-to-date counters, credits, prepaid reservations and each tenant's
//! billing settings.
//!
//! Invariants:
//! - A final outcome and its usage event commit together (`usage_events::insert_usages`
//!   runs inside `record`'s transaction), so no delivered recipient goes unbilled.
//! - A ledger row is never updated or deleted. Its key (message, recipient, outcome,
//!   service) is unique and rows are inserted with `ON CONFLICT DO NOTHING`, so a
//!   replayed or concurrently rated batch charges once. Counters advance only for rows
//!   actually inserted, in the same transaction.
//! - Balance = credits − charges, summed as integers. Reservations of a recipient are
//!   deleted in the transaction that writes its charges.
//!
//! One file per concern: `usage_queue` (usage waiting to be rated, claims, retries, usage
//! from MTA logs), `charges` (ledger rows, period counters, settlements), `statement`
//! (reading the ledger back for listings and invoices), `prepaid` (balance, credits,
//! reservations, held recipients), `settings` (how a tenant pays). Each adds its part of
//! the `Store` API in an `impl Store` block of its own.

mod charges;
mod prepaid;
mod settings;
mod statement;
mod usage_queue;

pub use super::books::{Balance, ChargeSum};
pub use charges::{NewCharge, RatedUsage, Settlement};
pub use prepaid::{Credited, Reservation};
pub use settings::{BalanceMode, BillingSettings};
pub use statement::LedgerEntry;
pub use usage_queue::{ExternalUsage, PendingUsage};
