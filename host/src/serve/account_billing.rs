//! The tenant → account books live (issue 17): the account rating task.
//!
//! A tenant with accounts (its own customers) has a cursor over its usage events. This
//! task claims the events after one tenant's cursor once they gathered into a batch
//! (`store::ACCOUNT_GATHER_MS`, or a full batch), matches each to an account by the
//! tenant's logins (sender first, else recipient; a full address before its domain —
//! the `sluice bill --logins` rules), rates them per (account, month) with the tenant's
//! own rater — its uploaded bill plugin, else the platform's rater with the tenant's
//! account tariff — checks every answer (`billing::check_charges`), and writes the
//! charges and the cursor's advance in one transaction. One refused answer leaves the
//! whole batch unrated: the cursor stays, the reason is kept
//! (`GET /v1/account-billing`), and the batch is retried with backoff.
//!
//! Nothing here writes the platform → tenant books (`serve/billing.rs`): whatever a
//! tenant's rater answers lands, if it passes the checks, in the tenant's own ledger.
//! Events that match no account are the tenant's own traffic, not a customer's: the
//! cursor passes them without a charge.

use super::accounts_cache::AccountRules;
use super::plugin_call::call;
use super::state::{Server, now_ms};
use super::tenant_live::{LiveCall, Pick};
use crate::billing::{self, TariffRules};
use crate::logging::Chain;
use crate::runtime::PluginError;
use crate::stage::{BillInput, BillOutput, Counter, Direction, Outcome, Stage, UsageEvent};
use crate::store::{AccountBatch, AccountCharge, AccountUsage, BalanceMode, Lease, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Usage events claimed per round (one tenant's).
const BATCH: u32 = 500;
/// How long a claim keeps other hosts off a tenant's cursor.
const CLAIM_MS: i64 = 60_000;
/// Pause when no tenant has usage to rate.
const IDLE: Duration = Duration::from_millis(500);
/// Pause when no tenant is due within [`ACTIVE`] of the last batch: its usage is
/// gathering (`store::ACCOUNT_GATHER_MS`) and is due within about this much.
const GATHERING: Duration = Duration::from_millis(100);
/// How long after a batch the task polls every [`GATHERING`] instead of [`IDLE`].
const ACTIVE: Duration = Duration::from_secs(1);
/// Why a tenant's usage has no account rater.
const NO_RATER: &str = "no account rater: upload a bill plugin (PUT /v1/plugins/bill) or set an account tariff (PUT /v1/account-billing)";

fn describe(plugin: &str, e: &PluginError) -> String {
    format!("{plugin}: {} ({e})", e.kind())
}

/// Rates `input` for a tenant's accounts: the tenant's live bill plugin, else (or after
/// its failure, unless it fails closed) the platform's rater with the tenant's account
/// tariff. `Err` says why there is no answer.
pub async fn rate_for_accounts(
    server: &Server,
    tenant_id: &str,
    has_tariff: bool,
    input: BillInput,
) -> Result<BillOutput, String> {
    let mut failures = Vec::new();
    let tenant_call = {
        let input = input.clone();
        server
            .plugins
            .tenants
            .call_live(&server.store, tenant_id, Stage::Bill, move |p| {
                p.bill(&input)
            })
            .await
    };
    match tenant_call {
        LiveCall::NoPlugin => {}
        LiveCall::Done(Ok(out)) => return Ok(out),
        LiveCall::Closed(why) => return Err(why),
        LiveCall::Done(Err(f)) if f.closed => return Err(f.closed_reason()),
        LiveCall::Done(Err(f)) => failures.push(describe(&f.plugin, &f.error)),
    }
    if !has_tariff {
        failures.push(NO_RATER.into());
        return Err(failures.join("; "));
    }
    let rater = server.plugins.stage(Stage::Bill);
    let name = rater.name().to_owned();
    match call(rater, move |p| p.bill(&input)).await {
        Ok(out) => Ok(out),
        Err(e) => {
            failures.push(describe(&name, &e));
            Err(failures.join("; "))
        }
    }
}

/// Rates each of a batch's inputs (one per account and period) for the tenant's
/// accounts, answers in the same order. With a live bill plugin of the tenant, each is
/// [`rate_for_accounts`] as before: the plugin's calls are counted and its failure
/// policy applied one by one. Without, the platform's rater with the tenant's account
/// tariff rates them all in one hand-off to the blocking pool (one call per input still:
/// the contract's period to date is one account's) instead of one hand-off per account.
async fn rate_inputs(
    server: &Server,
    tenant_id: &str,
    has_tariff: bool,
    inputs: Vec<BillInput>,
) -> Result<Vec<BillOutput>, String> {
    // Usage matching no account is passed without a rater.
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let platform = matches!(
        server
            .plugins
            .tenants
            .pick(&server.store, tenant_id, Stage::Bill)
            .await,
        Pick::Platform
    );
    if !platform {
        let mut outs = Vec::with_capacity(inputs.len());
        for input in inputs {
            outs.push(rate_for_accounts(server, tenant_id, has_tariff, input).await?);
        }
        return Ok(outs);
    }
    if !has_tariff {
        return Err(NO_RATER.into());
    }
    let rater = server.plugins.stage(Stage::Bill);
    let name = rater.name().to_owned();
    call(rater, move |p| {
        inputs
            .iter()
            .map(|input| p.bill(input))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| describe(&name, &e))
}

/// Rates accounts' usage until shutdown.
pub async fn run(server: Arc<Server>) {
    let owner = server.node.id.clone();
    let mut last_batch: Option<Instant> = None;
    while !server.is_shutting_down() {
        let claiming = Instant::now();
        let batch = match server
            .store
            .claim_account_batch(&owner, now_ms(), CLAIM_MS, BATCH)
            .await
        {
            Ok(Some(b)) => b,
            Ok(None) => {
                // Usage of a tenant rated a moment ago is gathering: it is due within
                // the gather window, so look again soon; otherwise poll slowly.
                let active = last_batch.is_some_and(|t| t.elapsed() < ACTIVE);
                tokio::time::sleep(if active { GATHERING } else { IDLE }).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "claiming account usage failed; retrying");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        let claim_us = claiming.elapsed().as_micros() as u64;
        last_batch = Some(Instant::now());
        let tenant = batch.tenant_id.clone();
        let events = batch.events.len();
        match rate_batch(&server, batch).await {
            Ok((n, t)) => tracing::debug!(
                tenant,
                events,
                charges = n,
                claim_us,
                read_us = t.read.as_micros() as u64,
                rate_us = t.rate.as_micros() as u64,
                write_us = t.write.as_micros() as u64,
                "accounts rated"
            ),
            Err(why) => {
                tracing::warn!(tenant, events, error = %why, "account rating failed; the batch stays unrated and is retried");
                if let Err(e) = server
                    .store
                    .defer_account_rating(&tenant, &why, now_ms())
                    .await
                {
                    tracing::warn!(error = %Chain(&e), "cannot record the failed account rating; the claim expires instead");
                }
            }
        }
    }
}

fn outcome_of(s: &str) -> Outcome {
    match s {
        "bounced" => Outcome::Bounced,
        "failed" => Outcome::Failed,
        "expired" => Outcome::Expired,
        "received" => Outcome::Received,
        _ => Outcome::Delivered,
    }
}

fn key_of(u: &AccountUsage) -> String {
    format!("{}/{}/{}", u.message_id, u.recipient_idx, u.outcome)
}

/// Where a rated batch's time went (logged at debug level, SLUICE_LOG).
#[derive(Default)]
struct Phases {
    /// Accounts, tariff and the groups' period-to-date quantities.
    read: Duration,
    /// The rater's calls and the checks of their answers.
    rate: Duration,
    /// The charges and the cursor's advance.
    write: Duration,
}

/// Rates one claimed batch and writes it; the number of account charges inserted.
async fn rate_batch(server: &Server, batch: AccountBatch) -> Result<(usize, Phases), String> {
    let mut phases = Phases::default();
    let started = Instant::now();
    let AccountBatch {
        tenant_id,
        after_seq,
        events,
        ..
    } = batch;
    let through = events.last().map_or(after_seq, |e| e.seq);
    let store = &server.store;
    // The rules dispatch reads (cached briefly, dropped on a change through the API):
    // reading every login of the tenant again for each batch cost more than the rating.
    let accounts = account_rules(server, &tenant_id)
        .await
        .map_err(|e| e.to_string())?;
    let tariff = store
        .get_account_tariff(&tenant_id)
        .await
        .map_err(|e| e.to_string())?;
    let rules = TariffRules::read(tariff.as_deref().unwrap_or(""));
    let mut groups: BTreeMap<(String, String), Vec<&AccountUsage>> = BTreeMap::new();
    for e in &events {
        // The account the message names, if the tenant has it; else its logins.
        let named = e
            .account
            .as_ref()
            .and_then(|a| accounts.accounts.iter().position(|(id, _)| id == a));
        let sender = e.sender.as_deref().unwrap_or("");
        let account = named
            .or_else(|| accounts.of(sender, &e.recipient))
            .map(|i| accounts.accounts[i].0.clone());
        if let Some(account) = account {
            groups
                .entry((account, billing::period_of(e.at_ms)))
                .or_default()
                .push(e);
        }
    }
    // Every group's period to date, read before any is rated: one statement per period
    // (a batch names up to hundreds of accounts, one query each cost a reader round trip
    // per group). The reads are advisory for tiers; exactly-once rests on the cursor's
    // compare and set in `write_account_charges`, as before.
    let mut by_period: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (account, period) in groups.keys() {
        by_period.entry(period).or_default().push(account);
    }
    let mut to_date: HashMap<(String, String), Vec<(String, u64)>> = HashMap::new();
    for (period, accounts) in by_period {
        for (account, quantities) in store
            .account_quantities(&tenant_id, period, &accounts)
            .await
            .map_err(|e| e.to_string())?
        {
            to_date.insert((account, period.to_owned()), quantities);
        }
    }
    phases.read = started.elapsed();
    let started = Instant::now();
    // One input per (account, period): the contract's period to date is one account's.
    let mut inputs = Vec::with_capacity(groups.len());
    let mut rated = Vec::with_capacity(groups.len());
    for ((account, period), group) in groups {
        let (period_start_ms, _) = billing::period_bounds(&period).map_err(|e| e.to_string())?;
        let period_to_date = to_date
            .remove(&(account.clone(), period))
            .unwrap_or_default()
            .into_iter()
            .map(|(service, quantity)| Counter { service, quantity })
            .collect();
        inputs.push(BillInput {
            tariff: tariff.clone().unwrap_or_default(),
            period_start_ms,
            period_to_date,
            events: group
                .iter()
                .map(|u| UsageEvent {
                    key: key_of(u),
                    // The rater sees whom it bills: the tenant's customer.
                    tenant: account.clone(),
                    message_id: u.message_id.clone(),
                    recipient: u.recipient.clone(),
                    outcome: outcome_of(&u.outcome),
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
        });
        rated.push((account, group));
    }
    let keys: Vec<Vec<String>> = inputs
        .iter()
        .map(|i| i.events.iter().map(|e| e.key.clone()).collect())
        .collect();
    let outs = rate_inputs(server, &tenant_id, tariff.is_some(), inputs).await?;
    if outs.len() != rated.len() {
        return Err(format!(
            "{} answers for {} accounts",
            outs.len(),
            rated.len()
        ));
    }
    let mut charges = Vec::new();
    for (((account, group), keys), out) in rated.into_iter().zip(&keys).zip(outs) {
        billing::check_charges(&rules, &out)
            .map_err(|e| format!("account {account:?}: charges refused: {e}"))?;
        let by_key: HashMap<&str, &AccountUsage> = keys
            .iter()
            .map(String::as_str)
            .zip(group.iter().copied())
            .collect();
        for c in out.charges {
            // `stage::validate` refused charges for events the rater was not given.
            let Some(u) = by_key.get(c.event_key.as_str()) else {
                return Err(format!(
                    "account {account:?}: charge for unknown event {:?}",
                    c.event_key
                ));
            };
            let credit = rules
                .services
                .as_ref()
                .and_then(|s| s.get(&c.service))
                .is_some_and(|r| r.credit);
            charges.push(AccountCharge {
                account_id: account.clone(),
                message_id: u.message_id.clone(),
                recipient_idx: u.recipient_idx,
                recipient: u.recipient.clone(),
                outcome: u.outcome.clone(),
                service: c.service,
                quantity: c.quantity,
                unit_price: c.unit_price.to_string(),
                amount_micros: c.amount,
                currency: out.currency.clone(),
                credit,
                at_ms: u.at_ms,
            });
        }
    }
    phases.rate = started.elapsed();
    let started = Instant::now();
    let n = store
        .write_account_charges(&tenant_id, after_seq, through, &charges, now_ms())
        .await
        .map_err(|e| format!("writing the account charges: {e}"))?;
    phases.write = started.elapsed();
    Ok((n, phases))
}

/// A tenant's accounts as the store has them now.
async fn read_rules(server: &Server, tenant_id: &str) -> Result<AccountRules, StoreError> {
    let mut rules = AccountRules::default();
    for (i, a) in server
        .store
        .list_accounts(tenant_id)
        .await?
        .into_iter()
        .enumerate()
    {
        for login in a.logins {
            rules.by_login.insert(login, i);
        }
        rules.accounts.push((a.id, a.mode));
    }
    Ok(rules)
}

async fn account_rules(server: &Server, tenant_id: &str) -> Result<Arc<AccountRules>, StoreError> {
    let cache = &server.accounts;
    if let Some(rules) = cache.fresh(tenant_id) {
        return Ok(rules);
    }
    let (read, expired) = {
        let mut slots = cache.slots();
        let slot = slots.entry(tenant_id.to_owned()).or_default();
        (
            slot.read.clone(),
            slot.rules.as_ref().map(|(r, _)| r.clone()),
        )
    };
    let _reading = match (read.clone().try_lock_owned(), expired) {
        (Ok(guard), _) => guard,
        // Another caller is reading them: until it is done, the expired rules serve.
        (Err(_), Some(rules)) => return Ok(rules),
        (Err(_), None) => read.lock_owned().await,
    };
    // The read this one waited for, or one that ended just before, may have kept them.
    if let Some(rules) = cache.fresh(tenant_id) {
        return Ok(rules);
    }
    let generation = cache.slots().get(tenant_id).map_or(0, |s| s.generation);
    let rules = Arc::new(read_rules(server, tenant_id).await?);
    let mut slots = cache.slots();
    let slot = slots.entry(tenant_id.to_owned()).or_default();
    if slot.generation == generation {
        slot.rules = Some((rules.clone(), Instant::now()));
    }
    Ok(rules)
}

/// What a tenant's rule for its prepaid customers says about a group at dispatch.
pub enum AccountCheck {
    Go,
    /// The tenant holds it: a prepaid account of the group has no credit left.
    Hold(String),
    /// Try again later: the accounts or a balance could not be read.
    Defer(String),
}

/// A tenant's own prepaid rule (its choice, its books): a group with a recipient of a
/// prepaid account whose balance (credits − rated charges) is not above zero is held
/// until the tenant credits the account. Usage not rated yet is not reserved, so an
/// account can end a little below zero.
pub async fn check_accounts(server: &Server, tenant_id: &str, group: &[Lease]) -> AccountCheck {
    let rules = match account_rules(server, tenant_id).await {
        Ok(r) => r,
        Err(e) => {
            return AccountCheck::Defer(format!("the tenant's accounts are unavailable: {e}"));
        }
    };
    if rules.accounts.is_empty() {
        return AccountCheck::Go;
    }
    let mut prepaid: Vec<usize> = group
        .iter()
        .filter_map(|l| {
            // The account the message names comes before its logins.
            let named = l
                .tags
                .iter()
                .find_map(|t| t.strip_prefix(crate::store::ACCOUNT_TAG))
                .and_then(|a| rules.accounts.iter().position(|(id, _)| id == a));
            named.or_else(|| rules.of(&l.sender, &l.address))
        })
        .filter(|&i| rules.accounts[i].1 == BalanceMode::Prepaid)
        .collect();
    prepaid.sort_unstable();
    prepaid.dedup();
    for i in prepaid {
        let id = &rules.accounts[i].0;
        match server.store.account_balance(tenant_id, id).await {
            Ok(b) if b.balance_micros() > 0 => {}
            Ok(b) => {
                return AccountCheck::Hold(format!(
                    "account {id:?} is prepaid and its credit is out ({} left): held by the tenant until it credits the account",
                    billing::format_micros(b.balance_micros())
                ));
            }
            Err(e) => {
                return AccountCheck::Defer(format!("account {id:?}: balance unavailable: {e}"));
            }
        }
    }
    AccountCheck::Go
}
