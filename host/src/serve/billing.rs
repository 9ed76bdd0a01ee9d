//! The bill stage live: the rating task (pending usage events → the platform's rater in
//! batches → the platform → tenant ledger), volume-mode settlement at period end, and
//! the prepaid check at dispatch (estimate with the rater, reserve, or hold).
//!
//! The platform → tenant ledger is the platform's books: what it charges a tenant is
//! rated only by the pipeline's bill plugin with the tariff the platform assigned to
//! the tenant (`PUT /admin/v1/tenants/{id}/billing`). A tenant's own uploaded bill
//! plugin is never asked here — not for charges, not for the prepaid estimate, not for
//! settlement — so nothing a tenant uploads can change its balance, holds or invoices
//! (issue 17: a tenant rater at −1000 EUR per event raised its balance to +113,997 EUR).
//! Every answer passes `billing::check_charges` before it is used; an answer that
//! fails leaves the whole batch unrated with the reason, retried with backoff.

pub use super::billing_cache::TenantBilling;
use super::plugin_call::call;
use super::state::{Server, now_ms};
use crate::billing::{self, ChargeError, DEFAULT_TARIFF, TariffRules};
use crate::logging::Chain;
use crate::stage::{BillInput, BillOutput, Counter, Direction, Outcome, Stage, UsageEvent};
use crate::store::{
    BalanceMode, Lease, NewCharge, PendingUsage, RatedUsage, Reservation, Settlement, StoreError,
    Tenant,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Usage events claimed per round.
const CLAIM_BATCH: u32 = 500;
/// How long a claim keeps other raters off; a crashed rater's events are taken over after.
const CLAIM_MS: i64 = 60_000;
/// Pause when nothing is due.
const IDLE: Duration = Duration::from_millis(500);
/// Pause after a round that did not fill its batch: usage gathers into fewer, larger
/// rounds (each round is two commits on the store's one writer, which accepts and
/// outcomes wait behind), at the price of charges appearing this much later.
const GATHER: Duration = Duration::from_millis(250);
/// How often ended periods are checked for volume settlement.
const SETTLE_EVERY: Duration = Duration::from_secs(60);
/// How long a tenant's billing settings are cached on this host.
const SETTINGS_TTL: Duration = Duration::from_secs(2);

/// A tenant's mode and tariff document (the platform's when it has none).
pub async fn settings(server: &Server, tenant_id: &str) -> Result<TenantBilling, StoreError> {
    let cache = &server.billing;
    if let Some((b, at)) = cache
        .settings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(tenant_id)
        && at.elapsed() < SETTINGS_TTL
    {
        return Ok(b.clone());
    }
    let stored = server.store.get_billing(tenant_id).await?;
    let b = TenantBilling {
        mode: stored.as_ref().map_or(BalanceMode::Postpaid, |s| s.mode),
        tariff: stored
            .and_then(|s| s.tariff)
            .unwrap_or_else(|| DEFAULT_TARIFF.to_owned()),
    };
    cache
        .settings
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(tenant_id.to_owned(), (b.clone(), Instant::now()));
    Ok(b)
}

/// Rates `input` for the platform → tenant ledger with the platform's rater (the
/// pipeline's bill plugin) and checks its answer against the tariff. `Err` says why
/// there are no charges to write.
pub async fn rate(server: &Server, input: BillInput) -> Result<BillOutput, String> {
    let rater = server.plugins.stage(Stage::Bill);
    let name = rater.name().to_owned();
    let answer = {
        let input = input.clone();
        call(rater, move |p| p.bill(&input)).await
    };
    match answer {
        Ok(out) => checked(&input, out).map_err(|e| format!("{name}: charges refused: {e}")),
        Err(e) => Err(format!("{name}: {} ({e})", e.kind())),
    }
}

/// The host's checks on top of `stage::validate` (which the runtime ran): currency,
/// sign, services and prices against the tariff (`billing::check_charges`).
fn checked(input: &BillInput, out: BillOutput) -> Result<BillOutput, ChargeError> {
    billing::check_charges(&TariffRules::read(&input.tariff), &out)?;
    Ok(out)
}

fn stage_outcome(s: &str) -> Option<Outcome> {
    Some(match s {
        "delivered" => Outcome::Delivered,
        "bounced" => Outcome::Bounced,
        "failed" => Outcome::Failed,
        "expired" => Outcome::Expired,
        "received" => Outcome::Received,
        _ => return None,
    })
}

fn usage_key(u: &PendingUsage) -> String {
    format!("{}/{}/{}", u.message_id, u.recipient_idx, u.outcome)
}

async fn counters(
    server: &Server,
    tenant_id: &str,
    period: &str,
) -> Result<Vec<Counter>, StoreError> {
    Ok(server
        .store
        .period_counters(tenant_id, period)
        .await?
        .into_iter()
        .map(|(service, quantity, _)| Counter { service, quantity })
        .collect())
}

/// Rates what is due until shutdown.
pub async fn run(server: Arc<Server>) {
    let owner = server.node.id.clone();
    let mut last_settle: Option<Instant> = None;
    while !server.is_shutting_down() {
        // Settlement is written once whoever runs it; one node (the leader) runs it
        // so that the others do not scan every tenant's periods for nothing.
        if server.node.is_leader() && last_settle.is_none_or(|t| t.elapsed() >= SETTLE_EVERY) {
            last_settle = Some(Instant::now());
            if let Err(e) = settle_ended_periods(&server).await {
                tracing::warn!(error = %Chain(&*e), "volume settlement failed; retried later");
            }
        }
        let claimed = match server
            .store
            .claim_usage(&owner, now_ms(), CLAIM_MS, CLAIM_BATCH)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "claiming usage events failed; retrying");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        if claimed.is_empty() {
            tokio::time::sleep(IDLE).await;
            continue;
        }
        let full = claimed.len() as u32 == CLAIM_BATCH;
        // One rater call per (tenant, period), in the order the usage happened.
        let mut groups: BTreeMap<(String, String), Vec<PendingUsage>> = BTreeMap::new();
        for u in claimed {
            groups
                .entry((u.tenant_id.clone(), billing::period_of(u.at_ms)))
                .or_default()
                .push(u);
        }
        for ((tenant, period), events) in groups {
            let seqs: Vec<i64> = events.iter().map(|u| u.seq).collect();
            match rate_group(&server, &tenant, &period, events).await {
                Ok(n) => tracing::debug!(tenant, period, charges = n, "rated"),
                Err(why) => {
                    tracing::warn!(tenant, period, events = seqs.len(), error = %why, "rating failed; the events stay unrated and are retried");
                    if let Err(e) = server.store.defer_usage(&seqs, &why, now_ms()).await {
                        tracing::warn!(error = %Chain(&e), "cannot record the failed rating; the claim expires instead");
                    }
                }
            }
        }
        if !full {
            tokio::time::sleep(GATHER).await;
        }
    }
}

/// Rates one tenant's usage events of one period and writes the charges.
async fn rate_group(
    server: &Server,
    tenant_id: &str,
    period: &str,
    events: Vec<PendingUsage>,
) -> Result<usize, String> {
    let b = settings(server, tenant_id)
        .await
        .map_err(|e| e.to_string())?;
    let (period_start_ms, _) = billing::period_bounds(period).map_err(|e| e.to_string())?;
    let keys: Vec<String> = events.iter().map(usage_key).collect();
    let input = BillInput {
        tariff: b.tariff,
        period_start_ms,
        period_to_date: counters(server, tenant_id, period)
            .await
            .map_err(|e| e.to_string())?,
        events: events
            .iter()
            .zip(&keys)
            .map(|(u, key)| UsageEvent {
                key: key.clone(),
                tenant: u.tenant_id.clone(),
                message_id: u.message_id.clone(),
                recipient: u.recipient.clone(),
                outcome: stage_outcome(&u.outcome).unwrap_or(Outcome::Delivered),
                direction: if u.direction == "inbound" {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                size: u.size,
                relay: u.relay.clone(),
                at_ms: u.at_ms,
            })
            .collect(),
    };
    let rules = TariffRules::read(&input.tariff);
    let out = rate(server, input).await?;
    let credit = |service: &str| {
        rules
            .services
            .as_ref()
            .and_then(|s| s.get(service))
            .is_some_and(|r| r.credit)
    };
    let mut by_key: HashMap<&str, Vec<NewCharge>> = HashMap::new();
    for c in &out.charges {
        by_key
            .entry(c.event_key.as_str())
            .or_default()
            .push(NewCharge {
                service: c.service.clone(),
                quantity: c.quantity,
                unit_price: c.unit_price.to_string(),
                amount_micros: c.amount,
                credit: credit(&c.service),
            });
    }
    let rated: Vec<RatedUsage> = events
        .into_iter()
        .zip(&keys)
        .map(|(usage, key)| RatedUsage {
            charges: by_key.remove(key.as_str()).unwrap_or_default(),
            currency: out.currency.clone(),
            usage,
        })
        .collect();
    server
        .store
        .write_charges(&rated, now_ms())
        .await
        .map_err(|e| format!("writing the charges: {e}"))
}

/// Ended months looked at for settlement: a host that was down (or usage rated late)
/// still settles any of them; each is settled once.
const SETTLE_MONTHS: usize = 12;

/// Volume mode is settled at period end: once an ended month (of the last
/// [`SETTLE_MONTHS`]) has no unrated usage left, each volume service's period is
/// re-priced at the tier its total reached and the difference is written once as a
/// settlement row.
async fn settle_ended_periods(server: &Server) -> anyhow::Result<()> {
    let now = now_ms();
    let (mut end, _) = billing::period_bounds(&billing::period_of(now))?;
    let tenants = server.store.list_tenants().await?;
    for _ in 0..SETTLE_MONTHS {
        let period = billing::period_of(end - 1);
        let (start, _) = billing::period_bounds(&period)?;
        settle_period(server, &tenants, &period, start, end, now).await?;
        end = start;
    }
    Ok(())
}

async fn settle_period(
    server: &Server,
    tenants: &[Tenant],
    period: &str,
    period_start_ms: i64,
    period_end_ms: i64,
    now: i64,
) -> anyhow::Result<()> {
    for tenant in tenants {
        let b = settings(server, &tenant.id).await?;
        let services = billing::volume_services(&b.tariff);
        if services.is_empty() || server.store.has_pending_usage(&tenant.id, period).await? {
            continue;
        }
        let counters = server.store.period_counters(&tenant.id, period).await?;
        for vs in services {
            let Some((_, quantity, charged)) = counters.iter().find(|c| c.0 == vs.name).cloned()
            else {
                continue;
            };
            if quantity == 0 {
                continue;
            }
            // The price of the tier the total reached: the rater on one unit (a
            // one-byte event is one unit of every unit) after quantity − 1.
            let key = "settlement".to_string();
            let input = BillInput {
                tariff: b.tariff.clone(),
                period_start_ms,
                period_to_date: counters
                    .iter()
                    .map(|(service, q, _)| Counter {
                        service: service.clone(),
                        quantity: if *service == vs.name { q - 1 } else { *q },
                    })
                    .collect(),
                events: vec![UsageEvent {
                    key: key.clone(),
                    tenant: tenant.id.clone(),
                    message_id: key.clone(),
                    recipient: String::new(),
                    outcome: stage_outcome(&vs.outcome).unwrap_or(Outcome::Delivered),
                    direction: if vs.direction == "inbound" {
                        Direction::Inbound
                    } else {
                        Direction::Outbound
                    },
                    size: 1,
                    relay: None,
                    at_ms: period_end_ms - 1,
                }],
            };
            let out = rate(server, input)
                .await
                .map_err(|e| anyhow::anyhow!("tenant {:?}: {e}", tenant.id))?;
            let Some(price) = out
                .charges
                .iter()
                .find(|c| c.service == vs.name)
                .map(|c| c.unit_price)
            else {
                continue;
            };
            let Some(amount) = billing::settlement(price, quantity, charged) else {
                anyhow::bail!(
                    "tenant {:?} service {:?}: settlement overflows",
                    tenant.id,
                    vs.name
                );
            };
            if amount != 0
                && server
                    .store
                    .write_settlement(
                        &Settlement {
                            tenant_id: tenant.id.clone(),
                            period: period.to_owned(),
                            service: vs.name.clone(),
                            unit_price: price.to_string(),
                            amount_micros: amount,
                            currency: out.currency.clone(),
                        },
                        now,
                    )
                    .await?
            {
                tracing::info!(tenant = %tenant.id, period, service = %vs.name, amount_micros = amount, "volume settlement written");
            }
        }
    }
    Ok(())
}

/// What the prepaid check says about a group at dispatch.
pub enum Authorization {
    /// Send it (postpaid, or reserved).
    Go,
    /// Hold it: the balance cannot cover the estimate.
    Hold(String),
    /// Try again later: the estimate could not be made.
    Defer(String),
}

/// For a prepaid tenant: estimates the group's cost with the rater (one synthetic
/// `delivered` event per recipient, after the period's counters) and reserves it.
pub async fn authorize(server: &Server, tenant: &Tenant, group: &[Lease]) -> Authorization {
    let b = match settings(server, &tenant.id).await {
        Ok(b) => b,
        Err(e) => return Authorization::Defer(format!("billing settings unavailable: {e}")),
    };
    if b.mode != BalanceMode::Prepaid {
        return Authorization::Go;
    }
    let now = now_ms();
    let period = billing::period_of(now);
    let (period_start_ms, _) = billing::period_bounds(&period).unwrap_or((0, 0));
    let period_to_date = match counters(server, &tenant.id, &period).await {
        Ok(c) => c,
        Err(e) => return Authorization::Defer(format!("period counters unavailable: {e}")),
    };
    let keys: Vec<String> = group
        .iter()
        .map(|l| format!("estimate/{}/{}", l.message_id, l.recipient_idx))
        .collect();
    let input = BillInput {
        tariff: b.tariff.clone(),
        period_start_ms,
        period_to_date,
        events: group
            .iter()
            .zip(&keys)
            .map(|(l, key)| UsageEvent {
                key: key.clone(),
                tenant: tenant.id.clone(),
                message_id: l.message_id.clone(),
                recipient: l.address.clone(),
                outcome: Outcome::Delivered,
                direction: Direction::Outbound,
                size: l.size,
                relay: None,
                at_ms: now,
            })
            .collect(),
    };
    let out = match rate(server, input).await {
        Ok(o) => o,
        Err(e) => return Authorization::Defer(format!("cannot estimate the cost: {e}")),
    };
    let Some((each, total)) = billing::estimate(&keys, &out) else {
        return Authorization::Defer("the estimate overflows".into());
    };
    let items: Vec<(String, i32, i64)> = group
        .iter()
        .zip(each)
        .map(|(l, amount)| (l.message_id.clone(), l.recipient_idx, amount.max(0)))
        .collect();
    match server.store.reserve(&tenant.id, &items, now).await {
        Ok(Reservation::Reserved) => Authorization::Go,
        Ok(Reservation::Short {
            available_micros,
            needed_micros,
        }) => Authorization::Hold(format!(
            "prepaid balance short: {} {} available, the estimated cost is {} {} (estimate {} for {} recipients)",
            billing::format_micros(available_micros),
            out.currency,
            billing::format_micros(needed_micros),
            out.currency,
            billing::format_micros(total),
            group.len()
        )),
        Err(e) => Authorization::Defer(format!("cannot reserve the estimated cost: {e}")),
    }
}
