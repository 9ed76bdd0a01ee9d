//! Batching matched transfers through the rater plugin on a second thread,
//! and summing its charges per tenant.
//!
//! A transfer whose key was already seen in this run (the same log given
//! twice, overlapping rotations) is skipped and reported, never rated again:
//! the rater would bill it twice across batches, or refuse a batch holding it
//! twice. Keys are remembered as 128-bit SHA-256 prefixes (24 bytes a
//! transfer with where it was first seen), so a recipient address chosen to
//! collide cannot make another transfer look like a duplicate.

use super::totals::{ServiceTotal, TenantTotals};
use super::{Matcher, TariffDoc};
use crate::billing::rounding::{format_minor, round_lines};
use crate::maillog::hash::FxHashMap;
use crate::maillog::{Transfer, syslog_time};
use crate::runtime::{Plugin, PluginError};
use crate::stage::{BillInput, Counter, Direction, Micros, Outcome, UsageEvent};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Events per plugin call: large enough to amortise the call, small enough
/// to keep memory flat.
pub const DEFAULT_BATCH: usize = 2_000;

/// Events reserved up front for a queue that has filled a batch before
/// (a new queue grows as it fills: a million tenants with one transfer
/// each must not reserve a batch each).
const PREALLOCATE: usize = 4_096;

/// Events waiting in all queues together: past this, every queue is sent to
/// the rater as it is (smaller batches, same charges), so memory stays flat
/// however many tenants and months a log holds.
const MAX_PENDING: usize = 200_000;

/// Batches queued between the reader and the rating thread.
const QUEUE: usize = 4;

/// Duplicates reported one by one; the rest are counted.
pub const DUPLICATE_SAMPLES: usize = 10;

/// Where a transfer was read: the index of its log among those given and the
/// line whose reading completed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub file: u16,
    pub line: u64,
}

const LINE_BITS: u32 = 48;

impl Place {
    fn pack(self) -> u64 {
        (u64::from(self.file) << LINE_BITS) | self.line.min((1 << LINE_BITS) - 1)
    }

    fn unpack(v: u64) -> Place {
        Place {
            file: (v >> LINE_BITS) as u16,
            line: v & ((1 << LINE_BITS) - 1),
        }
    }
}

/// A transfer skipped because its key was seen before in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub key: String,
    pub at: Place,
    pub first: Place,
}

/// Why rating stopped.
#[derive(Debug, thiserror::Error)]
pub enum BillError {
    #[error("tenant {tenant:?}: the rater refused the tariff from {origin}: {error}")]
    Tariff {
        tenant: String,
        origin: String,
        error: PluginError,
    },
    #[error("tenant {tenant:?}: rating a batch of {events} events failed: {error}")]
    Rate {
        tenant: String,
        events: usize,
        error: PluginError,
    },
    #[error("tenant {tenant:?}: the rater answered in {got:?}, the tariff is in {expected:?}")]
    Currency {
        tenant: String,
        expected: String,
        got: String,
    },
    #[error("tenant {tenant:?}: an amount overflowed")]
    Overflow { tenant: String },
    #[error("the rating thread stopped without an answer")]
    Thread,
}

struct Batch {
    tenant: usize,
    period_start_ms: i64,
    events: Vec<UsageEvent>,
}

struct Tenant {
    id: String,
    tariff: Arc<str>,
    currency: String,
    minor_units: u8,
}

#[derive(Default)]
struct Acc {
    transfers: u64,
    outbound: u64,
    inbound: u64,
    bytes: u64,
    services: BTreeMap<String, (u64, Micros)>,
}

/// What rating came to.
#[derive(Debug)]
pub struct Rated {
    pub tenants: Vec<TenantTotals>,
    /// Calls of the rater: one per distinct tariff, one per batch.
    pub rater_calls: u64,
}

/// Matches transfers to tenants and rates them in batches.
pub struct Biller {
    matcher: Matcher,
    tenants: Vec<String>,
    pending: FxHashMap<(usize, i64), Vec<UsageEvent>>,
    /// Events in `pending`.
    pending_events: usize,
    batch: usize,
    tx: Option<SyncSender<Batch>>,
    worker: Option<JoinHandle<Result<Rated, BillError>>>,
    /// Plugin calls that checked a tariff.
    checks: u64,
    unmatched: u64,
    /// Every key seen (a SHA-256 prefix) → where it was first seen (packed).
    seen: FxHashMap<[u64; 2], u64>,
    duplicates: u64,
    duplicate_samples: Vec<Duplicate>,
}

impl std::fmt::Debug for Biller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Biller")
            .field("tenants", &self.tenants)
            .finish()
    }
}

/// Start of the calendar month (UTC) holding `ms`.
fn month_start_ms(ms: i64) -> i64 {
    let (y, m, _) = syslog_time::civil_from_days(ms.div_euclid(86_400_000));
    syslog_time::days_from_civil(y, m, 1) * 86_400_000
}

/// `minor_units` of a TOML tariff (2 when absent or not TOML).
fn minor_units_of(tariff: &str) -> u8 {
    tariff
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("minor_units")?.as_integer())
        .and_then(|v| u8::try_from(v).ok())
        .filter(|&v| v <= 6)
        .unwrap_or(2)
}

impl Biller {
    /// Checks every tenant's tariff with the plugin (an empty batch) and
    /// starts the rating thread.
    pub fn new(
        plugin: Plugin,
        matcher: Matcher,
        tariffs: Vec<TariffDoc>,
        batch: usize,
    ) -> Result<Biller, BillError> {
        let mut tenants = Vec::new();
        // Each distinct tariff is checked once: a million tenants on the
        // default tariff cost one plugin call, not a million.
        let mut checked: HashMap<Arc<str>, (String, u8)> = HashMap::new();
        let mut checks = 0;
        for (id, doc) in matcher.tenants().iter().zip(tariffs) {
            let (currency, minor_units) = match checked.get(&doc.text) {
                Some(c) => c.clone(),
                None => {
                    let out = plugin
                        .bill(&BillInput {
                            tariff: doc.text.to_string(),
                            period_start_ms: 0,
                            period_to_date: Vec::new(),
                            events: Vec::new(),
                        })
                        .map_err(|error| BillError::Tariff {
                            tenant: id.clone(),
                            origin: doc.origin.clone(),
                            error,
                        })?;
                    checks += 1;
                    let c = (out.currency, minor_units_of(&doc.text));
                    checked.insert(doc.text.clone(), c.clone());
                    c
                }
            };
            tenants.push(Tenant {
                id: id.clone(),
                minor_units,
                tariff: doc.text,
                currency,
            });
        }
        let ids = tenants.iter().map(|t| t.id.clone()).collect();
        let (tx, rx) = sync_channel(QUEUE);
        let worker = std::thread::Builder::new()
            .name("sluice-rater".into())
            .spawn(move || rate_all(plugin, tenants, rx))
            .map_err(|_| BillError::Thread)?;
        Ok(Biller {
            checks,
            matcher,
            tenants: ids,
            pending: FxHashMap::default(),
            pending_events: 0,
            batch: batch.max(1),
            tx: Some(tx),
            worker: Some(worker),
            unmatched: 0,
            seen: FxHashMap::default(),
            duplicates: 0,
            duplicate_samples: Vec::new(),
        })
    }

    /// Transfers that matched no login so far.
    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }

    /// Transfers skipped as duplicates so far, and the first few.
    pub fn duplicates(&self) -> (u64, &[Duplicate]) {
        (self.duplicates, &self.duplicate_samples)
    }

    /// Skips a transfer whose key was seen before; true if it is new.
    fn first_sight(&mut self, key: &str, at: Place) -> bool {
        let d = Sha256::digest(key.as_bytes());
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&d[i..i + 8]);
            u64::from_le_bytes(w)
        };
        match self.seen.entry([word(0), word(8)]) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(at.pack());
                true
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                self.duplicates += 1;
                if self.duplicate_samples.len() < DUPLICATE_SAMPLES {
                    self.duplicate_samples.push(Duplicate {
                        key: key.to_owned(),
                        at,
                        first: Place::unpack(*o.get()),
                    });
                }
                false
            }
        }
    }

    /// Matches one transfer read at `at` and queues it for rating, unless it
    /// was seen before.
    pub fn add(&mut self, t: Transfer, at: Place) -> Result<(), BillError> {
        if !self.first_sight(&t.key, at) {
            return Ok(());
        }
        let Some((tenant, direction)) = self.matcher.classify(&t.sender, &t.recipient) else {
            self.unmatched += 1;
            return Ok(());
        };
        let period = month_start_ms(t.delivered_ms);
        let event = UsageEvent {
            key: t.key,
            tenant: self.tenants[tenant].clone(),
            message_id: t.message_id,
            recipient: t.recipient,
            outcome: match direction {
                Direction::Outbound => Outcome::Delivered,
                Direction::Inbound => Outcome::Received,
            },
            direction,
            size: t.size,
            relay: Some(t.relay),
            at_ms: t.delivered_ms,
        };
        let batch = self.batch;
        let queue = self.pending.entry((tenant, period)).or_default();
        queue.push(event);
        self.pending_events += 1;
        if queue.len() >= batch {
            let events = std::mem::replace(queue, Vec::with_capacity(batch.min(PREALLOCATE)));
            self.pending_events -= events.len();
            self.send(Batch {
                tenant,
                period_start_ms: period,
                events,
            })?;
        } else if self.pending_events >= MAX_PENDING {
            self.send_pending()?;
        }
        Ok(())
    }

    /// Sends every queue as it is, oldest period first, and forgets the
    /// queues (their capacity with them).
    fn send_pending(&mut self) -> Result<(), BillError> {
        let mut rest: Vec<_> = self
            .pending
            .drain()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        self.pending_events = 0;
        rest.sort_by_key(|&((t, p), _)| (p, t));
        for ((tenant, period_start_ms), events) in rest {
            self.send(Batch {
                tenant,
                period_start_ms,
                events,
            })?;
        }
        Ok(())
    }

    fn send(&mut self, batch: Batch) -> Result<(), BillError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if sent {
            return Ok(());
        }
        // The worker stopped: its error says why.
        self.tx = None;
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(Err(e))) => Err(e),
            _ => Err(BillError::Thread),
        }
    }

    /// Rates what is still queued and returns the totals of every tenant.
    pub fn finish(mut self) -> Result<Rated, BillError> {
        self.send_pending()?;
        self.tx = None;
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(r)) => r.map(|mut rated| {
                rated.rater_calls += self.checks;
                rated
            }),
            _ => Err(BillError::Thread),
        }
    }
}

fn rate_all(plugin: Plugin, tenants: Vec<Tenant>, rx: Receiver<Batch>) -> Result<Rated, BillError> {
    let mut acc: Vec<Acc> = tenants.iter().map(|_| Acc::default()).collect();
    let mut to_date: HashMap<(usize, i64), BTreeMap<String, u64>> = HashMap::new();
    let mut input = BillInput {
        tariff: String::new(),
        period_start_ms: 0,
        period_to_date: Vec::new(),
        events: Vec::new(),
    };
    let mut rater_calls = 0u64;
    for batch in rx {
        let tenant = &tenants[batch.tenant];
        let a = &mut acc[batch.tenant];
        for e in &batch.events {
            a.transfers += 1;
            a.bytes += e.size;
            match e.direction {
                Direction::Outbound => a.outbound += 1,
                Direction::Inbound => a.inbound += 1,
            }
        }
        let counters = to_date
            .entry((batch.tenant, batch.period_start_ms))
            .or_default();
        input.tariff.clear();
        input.tariff.push_str(&tenant.tariff);
        input.period_start_ms = batch.period_start_ms;
        input.period_to_date = counters
            .iter()
            .map(|(service, &quantity)| Counter {
                service: service.clone(),
                quantity,
            })
            .collect();
        let events = batch.events.len();
        input.events = batch.events;
        rater_calls += 1;
        let out = plugin.bill(&input).map_err(|error| BillError::Rate {
            tenant: tenant.id.clone(),
            events,
            error,
        })?;
        if out.currency != tenant.currency {
            return Err(BillError::Currency {
                tenant: tenant.id.clone(),
                expected: tenant.currency.clone(),
                got: out.currency,
            });
        }
        let overflow = || BillError::Overflow {
            tenant: tenant.id.clone(),
        };
        for c in out.charges {
            let q = counters.entry(c.service.clone()).or_default();
            *q = q.saturating_add(c.quantity);
            let s = a.services.entry(c.service).or_default();
            s.0 = s.0.saturating_add(c.quantity);
            s.1 = s.1.checked_add(c.amount).ok_or_else(overflow)?;
        }
    }
    let tenants = tenants
        .into_iter()
        .zip(acc)
        .map(|(t, a)| {
            let overflow = || BillError::Overflow {
                tenant: t.id.clone(),
            };
            let total_micros = a
                .services
                .values()
                .try_fold(0i64, |sum, &(_, amount)| sum.checked_add(amount))
                .ok_or_else(overflow)?;
            // The one invoice rule: each service rounded, the total their sum.
            let (rounded, total) = round_lines(
                a.services.values().map(|&(_, amount)| amount),
                t.minor_units,
            )
            .ok_or_else(overflow)?;
            Ok(TenantTotals {
                services: a
                    .services
                    .into_iter()
                    .zip(rounded)
                    .map(|((service, (quantity, amount)), minor)| ServiceTotal {
                        service,
                        quantity,
                        amount_micros: amount,
                        amount: format_minor(minor, t.minor_units),
                    })
                    .collect(),
                total_micros,
                total: format_minor(total, t.minor_units),
                tenant: t.id,
                currency: t.currency,
                minor_units: t.minor_units,
                transfers: a.transfers,
                outbound: a.outbound,
                inbound: a.inbound,
                bytes: a.bytes,
            })
        })
        .collect::<Result<Vec<_>, BillError>>()?;
    Ok(Rated {
        tenants,
        rater_calls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_pack_into_one_word() {
        let p = Place {
            file: 65_535,
            line: 123_456_789,
        };
        assert_eq!(Place::unpack(p.pack()), p);
        let huge = Place {
            file: 1,
            line: u64::MAX,
        };
        assert_eq!(Place::unpack(huge.pack()).file, 1);
    }

    #[test]
    fn month_starts_and_minor_units() {
        // 2007-05-01T00:40:40Z
        assert_eq!(month_start_ms(1_177_980_040_081), 1_177_977_600_000);
        assert_eq!(minor_units_of("id = \"t\"\nminor_units = 3\n"), 3);
        assert_eq!(minor_units_of("not toml ["), 2);
    }
}
