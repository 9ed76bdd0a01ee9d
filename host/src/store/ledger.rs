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

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use std::collections::BTreeMap;

use super::StoreError;
pub use super::books::Balance;
use super::books::{self, Book, ChargeRow, Whose};
use super::codec::{
    col, corrupt, get_idx, get_u32, placeholders, positional, rows_per_statement, value_rows,
};
use super::connect::{Backend, Pools};
use super::events::{RecipientEvent, insert_recipient_event};
pub use crate::billing::ChargeSum;

use super::types::EventKind;

/// How a tenant pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BalanceMode {
    /// Each message is authorised against the balance before it is sent.
    Prepaid,
    /// Charged as used, invoiced per period.
    Postpaid,
}

impl BalanceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prepaid => "prepaid",
            Self::Postpaid => "postpaid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "prepaid" => Some(Self::Prepaid),
            "postpaid" => Some(Self::Postpaid),
            _ => None,
        }
    }
}

/// A tenant's billing settings; a tenant without any is postpaid on the platform tariff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillingSettings {
    pub tenant_id: String,
    pub mode: BalanceMode,
    /// The tariff document its rater reads; `None` = the platform's default tariff.
    pub tariff: Option<String>,
    pub updated_at_ms: i64,
}

/// A usage event waiting to be rated, as claimed by a rater.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingUsage {
    pub seq: i64,
    pub tenant_id: String,
    pub message_id: String,
    pub recipient_idx: i32,
    pub recipient: String,
    /// `delivered`, `bounced`, `failed` or `expired` (the stage's outcome names).
    pub outcome: String,
    /// `outbound` (live traffic is outbound).
    pub direction: String,
    pub size: u64,
    pub relay: Option<String>,
    pub at_ms: i64,
    /// Failed ratings so far.
    pub attempts: u32,
    pub next_try_at_ms: i64,
    pub last_error: Option<String>,
}

/// One charge the rater made for a usage event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCharge {
    pub service: String,
    pub quantity: u64,
    /// The unit price as the exact decimal string the rater gave.
    pub unit_price: String,
    pub amount_micros: i64,
    /// The tariff declares the service a credit (`credit = true`): only then may the
    /// amount be negative. [`super::Store::write_charges`] refuses a batch holding a
    /// negative charge that is not one, whoever rated it.
    pub credit: bool,
}

/// A rated usage event: what [`super::Store::write_charges`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatedUsage {
    pub usage: PendingUsage,
    pub currency: String,
    /// Possibly none: the tariff does not charge this outcome.
    pub charges: Vec<NewCharge>,
}

/// A ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub seq: i64,
    pub tenant_id: String,
    pub message_id: String,
    pub recipient_idx: i32,
    pub recipient: String,
    pub outcome: String,
    pub service: String,
    pub quantity: u64,
    pub unit_price: String,
    pub amount_micros: i64,
    pub currency: String,
    pub period: String,
    pub relay: Option<String>,
    /// When the usage happened.
    pub at_ms: i64,
    pub created_at_ms: i64,
}

/// What [`super::Store::add_credit`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credited {
    /// False when the reference was used before: nothing was credited again.
    pub credited: bool,
    /// Held recipients put back to `queued`.
    pub released: usize,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Reserved (or already reserved earlier).
    Reserved,
    /// The balance cannot cover it; nothing was reserved.
    Short {
        available_micros: i64,
        needed_micros: i64,
    },
}

const USAGE_COLUMNS: &str = "seq, tenant_id, message_id, recipient_idx, recipient, outcome, \
    direction, size, relay, at_ms, attempts, next_try_at_ms, last_error";

fn usage_from_row(row: &AnyRow, op: &str) -> Result<PendingUsage, StoreError> {
    let size: i64 = col(row, op, "size")?;
    Ok(PendingUsage {
        seq: col(row, op, "seq")?,
        tenant_id: col(row, op, "tenant_id")?,
        message_id: col(row, op, "message_id")?,
        recipient_idx: get_idx(row, op, "recipient_idx")?,
        recipient: col(row, op, "recipient")?,
        outcome: col(row, op, "outcome")?,
        direction: col(row, op, "direction")?,
        size: u64::try_from(size)
            .map_err(|_| corrupt(&format!("{op}: size"), &size.to_string()))?,
        relay: col(row, op, "relay")?,
        at_ms: col(row, op, "at_ms")?,
        attempts: get_u32(row, op, "attempts")?,
        next_try_at_ms: col(row, op, "next_try_at_ms")?,
        last_error: col(row, op, "last_error")?,
    })
}

pub(crate) async fn claim_usage(
    pools: &Pools,
    owner: &str,
    now_ms: i64,
    claim_ms: i64,
    limit: u32,
) -> Result<Vec<PendingUsage>, StoreError> {
    let op = "claim_usage";
    if owner.is_empty() || claim_ms <= 0 {
        return Err(StoreError::invalid(
            op,
            format!(
                "owner {owner:?} and claim of {claim_ms} ms: need an owner and a positive claim"
            ),
        ));
    }
    let context = || format!("{op} for owner {owner:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let lock = match pools.backend {
        Backend::Postgres => {
            // One claim at a time across hosts, so that the tenant check below sees
            // the other hosts' committed claims: a tenant is rated by one host at a
            // time and its tiers are crossed in order.
            sqlx::query("SELECT pg_advisory_xact_lock(7210510001)")
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(context()))?;
            "FOR UPDATE SKIP LOCKED"
        }
        Backend::Sqlite => "",
    };
    // The tenants another owner holds are found once (`NOT IN` an uncorrelated subquery),
    // not per candidate row: per row, a claim over n pending events read n² rows and held
    // the store's one writer for tens of milliseconds at a few hundred pending.
    let rows = sqlx::query(&format!(
        "UPDATE usage_events SET claim_owner = $2, claim_until_ms = $3 \
         WHERE seq IN ( \
             SELECT seq FROM usage_events u \
             WHERE state = 'pending' AND next_try_at_ms <= $1 \
               AND (claim_until_ms IS NULL OR claim_until_ms <= $1 OR claim_owner = $2) \
               AND u.tenant_id NOT IN (SELECT o.tenant_id FROM usage_events o \
                   WHERE o.state = 'pending' AND o.claim_owner <> $2 AND o.claim_until_ms > $1) \
             ORDER BY seq LIMIT $4 {lock}) \
         RETURNING {USAGE_COLUMNS}"
    ))
    .bind(now_ms)
    .bind(owner)
    .bind(now_ms.saturating_add(claim_ms))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    let mut claimed = rows
        .iter()
        .map(|r| usage_from_row(r, op))
        .collect::<Result<Vec<_>, _>>()?;
    claimed.sort_by_key(|u| u.seq);
    Ok(claimed)
}

pub(crate) async fn write_charges(
    pools: &Pools,
    rated: &[RatedUsage],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "write_charges";
    if rated.is_empty() {
        return Ok(0);
    }
    // Every charge of the batch, as the books write it.
    let charges: Vec<ChargeRow<'_>> = rated
        .iter()
        .flat_map(|r| {
            let u = &r.usage;
            let period = crate::billing::period_of(u.at_ms);
            r.charges.iter().map(move |c| ChargeRow {
                tenant_id: &u.tenant_id,
                whose: u.relay.as_deref(),
                message_id: &u.message_id,
                recipient_idx: u.recipient_idx,
                recipient: &u.recipient,
                outcome: &u.outcome,
                service: &c.service,
                quantity: c.quantity,
                unit_price: &c.unit_price,
                amount_micros: c.amount_micros,
                currency: &r.currency,
                credit: c.credit,
                period: period.clone(),
                at_ms: u.at_ms,
            })
        })
        .collect();
    // The last line of the books' defence: the rating task checked the answer against
    // the tariff (`billing::check_charges`); whatever slips past writes nothing of its
    // batch.
    books::check_charges(op, Book::Platform, &charges)?;
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let new_row = books::insert_charges(&mut tx, Book::Platform, &charges, now_ms, op).await?;
    // (tenant, service, period) → (quantity, amount) of the new rows, each counted once.
    let mut counters: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
    let mut inserted = 0;
    // Replayed charges (and repeats within the batch) were not new: they count nothing.
    for (c, _) in charges.iter().zip(&new_row).filter(|(_, new)| **new) {
        inserted += 1;
        let sum = counters
            .entry((c.tenant_id, c.service, c.period.as_str()))
            .or_default();
        sum.0 += c.quantity as i64;
        sum.1 += c.amount_micros;
    }
    for ((tenant_id, service, period), (quantity, amount_micros)) in counters {
        add_to_counter(&mut tx, tenant_id, service, period, quantity, amount_micros)
            .await
            .map_err(StoreError::db(format!(
                "{op}: counter {service:?} of tenant {tenant_id:?} for {period}"
            )))?;
    }
    let usages: Vec<&PendingUsage> = rated.iter().map(|r| &r.usage).collect();
    for chunk in usages.chunks(rows_per_statement(1) - 1) {
        let sql = format!(
            "UPDATE usage_events SET state = 'rated', rated_at_ms = $1, claim_owner = NULL, \
             claim_until_ms = NULL, last_error = NULL WHERE seq IN ({})",
            placeholders(2, chunk.len())
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql).bind(now_ms);
        for u in chunk {
            q = q.bind(u.seq);
        }
        q.execute(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: marking {} usage events rated",
            chunk.len()
        )))?;
    }
    for chunk in usages.chunks(rows_per_statement(2)) {
        let sql = format!(
            "WITH v(message_id, idx) AS (VALUES {}) DELETE FROM reservations WHERE EXISTS \
             (SELECT 1 FROM v WHERE v.message_id = reservations.message_id \
             AND v.idx = reservations.recipient_idx)",
            value_rows(chunk.len(), 2)
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql);
        for u in chunk {
            q = q.bind(&u.message_id).bind(i64::from(u.recipient_idx));
        }
        q.execute(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: releasing the reservations of {} usage events",
            chunk.len()
        )))?;
    }
    tx.commit().await.map_err(StoreError::db(format!(
        "{op}: commit of {} rated events",
        rated.len()
    )))?;
    Ok(inserted)
}

async fn add_to_counter(
    conn: &mut AnyConnection,
    tenant_id: &str,
    service: &str,
    period: &str,
    quantity: i64,
    amount_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO period_counters (tenant_id, service, period, quantity, amount_micros) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, service, period) DO UPDATE SET \
         quantity = period_counters.quantity + excluded.quantity, \
         amount_micros = period_counters.amount_micros + excluded.amount_micros",
    )
    .bind(tenant_id)
    .bind(service)
    .bind(period)
    .bind(quantity)
    .bind(amount_micros)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A volume-mode settlement of one (tenant, period, service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub tenant_id: String,
    /// `YYYY-MM`.
    pub period: String,
    pub service: String,
    /// The price of the tier the period's total reached.
    pub unit_price: String,
    /// What the period's charges are short (or over, negative) at that price.
    pub amount_micros: i64,
    pub currency: String,
}

/// Writes a settlement as one ledger row keyed like a charge, so it is written once.
/// Returns whether it was written now.
pub(crate) async fn write_settlement(
    pools: &Pools,
    st: &Settlement,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let Settlement {
        tenant_id,
        period,
        service,
        unit_price,
        amount_micros,
        currency,
    } = st;
    let amount_micros = *amount_micros;
    let op = "write_settlement";
    let context = || format!("{op}: tenant {tenant_id:?} period {period} service {service:?}");
    let (start, end) = crate::billing::period_bounds(period)
        .map_err(|e| StoreError::invalid(op, e.to_string()))?;
    let settlement_id = format!("settlement:{tenant_id}:{period}");
    // A settlement's amount may be negative (the tiers reached priced the period lower):
    // it is the platform's own sum, not a rater's answer, so it is not checked as one.
    let row = ChargeRow {
        tenant_id,
        whose: None,
        message_id: &settlement_id,
        recipient_idx: 0,
        recipient: "",
        outcome: "settlement",
        service,
        quantity: 0,
        unit_price,
        amount_micros,
        currency,
        credit: true,
        period: period.clone(),
        at_ms: end.max(start + 1) - 1,
    };
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let written = books::insert_charges(&mut tx, Book::Platform, &[row], now_ms, op).await?[0];
    if written {
        add_to_counter(&mut tx, tenant_id, service, period, 0, amount_micros)
            .await
            .map_err(StoreError::db(context()))?;
    }
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(written)
}

pub(crate) async fn defer_usage(
    pools: &Pools,
    seqs: &[i64],
    error: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "defer_usage";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    for seq in seqs {
        let row =
            sqlx::query("SELECT attempts FROM usage_events WHERE seq = $1 AND state = 'pending'")
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db(format!("{op}: usage event {seq}")))?;
        let Some(row) = row else { continue };
        let attempts = get_u32(&row, op, "attempts")?;
        let next = now_ms.saturating_add(crate::billing::rating_backoff_ms(attempts));
        sqlx::query(
            "UPDATE usage_events SET attempts = attempts + 1, next_try_at_ms = $2, \
             last_error = $3, claim_owner = NULL, claim_until_ms = NULL \
             WHERE seq = $1 AND state = 'pending'",
        )
        .bind(seq)
        .bind(next)
        .bind(error)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op}: usage event {seq}")))?;
    }
    tx.commit().await.map_err(StoreError::db(op))
}

/// A usage event from outside the pipeline: a transfer read from an MTA's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUsage {
    pub tenant_id: String,
    /// Unique per transfer and stable across re-reads of the log (the
    /// reader's transfer key, prefixed by the source): what makes a re-read
    /// insert nothing.
    pub message_id: String,
    pub recipient: String,
    /// `outbound` (the sender matched the tenant) or `inbound`.
    pub direction: String,
    pub size: u64,
    pub relay: Option<String>,
    pub at_ms: i64,
    /// The envelope sender the log names (account logins are matched on it first).
    pub sender: String,
}

pub(crate) async fn insert_external_usage(
    pools: &Pools,
    events: &[ExternalUsage],
    now_ms: i64,
) -> Result<u64, StoreError> {
    let op = "insert_external_usage";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let mut inserted = 0;
    for e in events {
        let size = i64::try_from(e.size).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "INSERT INTO usage_events (tenant_id, message_id, recipient_idx, recipient, outcome, \
             direction, size, relay, at_ms, state, attempts, next_try_at_ms, sender, \
             inserted_at_ms) \
             VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $10, $11) \
             ON CONFLICT (message_id, recipient_idx, outcome) DO NOTHING",
        )
        .bind(&e.tenant_id)
        .bind(&e.message_id)
        .bind(&e.recipient)
        // What the tenant did: sent it (delivered) or received it.
        .bind(if e.direction == "inbound" {
            "received"
        } else {
            "delivered"
        })
        .bind(&e.direction)
        .bind(size)
        .bind(e.relay.as_deref())
        .bind(e.at_ms)
        .bind(now_ms)
        .bind(&e.sender)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op}: transfer {:?}", e.message_id)))?;
        inserted += done.rows_affected();
    }
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(inserted)
}

pub(crate) async fn list_unrated(
    pools: &Pools,
    limit: u32,
) -> Result<Vec<PendingUsage>, StoreError> {
    let op = "list_unrated";
    let rows = sqlx::query(&format!(
        "SELECT {USAGE_COLUMNS} FROM usage_events WHERE state = 'pending' ORDER BY seq LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(op))?;
    rows.iter().map(|r| usage_from_row(r, op)).collect()
}

/// Whether `tenant_id` has usage of `period` not yet rated.
pub(crate) async fn has_pending(
    pools: &Pools,
    tenant_id: &str,
    period: &str,
) -> Result<bool, StoreError> {
    let op = "has_pending";
    let (start, end) = crate::billing::period_bounds(period)
        .map_err(|e| StoreError::invalid(op, e.to_string()))?;
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM usage_events WHERE tenant_id = $1 AND state = 'pending' \
         AND at_ms >= $2 AND at_ms < $3",
    )
    .bind(tenant_id)
    .bind(start)
    .bind(end)
    .fetch_one(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    let n: i64 = col(&row, op, "n")?;
    Ok(n > 0)
}

pub(crate) async fn period_counters(
    pools: &Pools,
    tenant_id: &str,
    period: &str,
) -> Result<Vec<(String, u64, i64)>, StoreError> {
    let op = "period_counters";
    let rows = sqlx::query(
        "SELECT service, quantity, amount_micros FROM period_counters \
         WHERE tenant_id = $1 AND period = $2 ORDER BY service",
    )
    .bind(tenant_id)
    .bind(period)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!(
        "{op}: tenant {tenant_id:?} period {period}"
    )))?;
    rows.iter()
        .map(|r| {
            Ok((
                col(r, op, "service")?,
                books::quantity(r, op)?,
                col(r, op, "amount_micros")?,
            ))
        })
        .collect()
}

const LEDGER_COLUMNS: &str = "seq, tenant_id, message_id, recipient_idx, recipient, outcome, \
    service, quantity, unit_price, amount_micros, currency, period, relay, at_ms, created_at_ms";

fn ledger_from_row(row: &AnyRow, op: &str) -> Result<LedgerEntry, StoreError> {
    Ok(LedgerEntry {
        seq: col(row, op, "seq")?,
        tenant_id: col(row, op, "tenant_id")?,
        message_id: col(row, op, "message_id")?,
        recipient_idx: get_idx(row, op, "recipient_idx")?,
        recipient: col(row, op, "recipient")?,
        outcome: col(row, op, "outcome")?,
        service: col(row, op, "service")?,
        quantity: books::quantity(row, op)?,
        unit_price: col(row, op, "unit_price")?,
        amount_micros: col(row, op, "amount_micros")?,
        currency: col(row, op, "currency")?,
        period: col(row, op, "period")?,
        relay: col(row, op, "relay")?,
        at_ms: col(row, op, "at_ms")?,
        created_at_ms: col(row, op, "created_at_ms")?,
    })
}

pub(crate) async fn list_charges(
    pools: &Pools,
    tenant_id: &str,
    from_ms: i64,
    to_ms: i64,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let op = "list_charges";
    let whose = Whose::Tenant(tenant_id);
    let rows = books::list_charges(
        pools,
        whose,
        LEDGER_COLUMNS,
        from_ms,
        to_ms,
        after_seq,
        limit,
        op,
    )
    .await?;
    rows.iter().map(|r| ledger_from_row(r, op)).collect()
}

pub(crate) async fn charge_sums(
    pools: &Pools,
    tenant_id: &str,
    period: &str,
) -> Result<(Vec<ChargeSum>, Option<String>), StoreError> {
    let op = "charge_sums";
    let mut conn = pools.read.acquire().await.map_err(StoreError::db(op))?;
    books::charge_sums(&mut conn, Whose::Tenant(tenant_id), period, op).await
}

async fn balance_in(
    conn: &mut AnyConnection,
    tenant_id: &str,
    op: &str,
) -> Result<Balance, StoreError> {
    let mut balance = books::credits_and_charges(conn, Whose::Tenant(tenant_id), op).await?;
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(amount_micros), 0) AS BIGINT) AS total FROM reservations \
         WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    balance.reserved_micros = col(&row, op, "total")?;
    Ok(balance)
}

pub(crate) async fn balance(pools: &Pools, tenant_id: &str) -> Result<Balance, StoreError> {
    let op = "balance";
    let mut conn = pools.read.acquire().await.map_err(StoreError::db(op))?;
    balance_in(&mut conn, tenant_id, op).await
}

/// Serialises a tenant's balance-changing transactions on PostgreSQL (SQLite has one
/// writer already): a row lock on its billing settings, created if missing.
async fn lock_tenant(
    conn: &mut AnyConnection,
    backend: Backend,
    tenant_id: &str,
    now_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    if backend != Backend::Postgres {
        return Ok(());
    }
    let context = || format!("{op}: locking tenant {tenant_id:?}");
    sqlx::query(
        "INSERT INTO tenant_billing (tenant_id, mode, tariff, updated_at_ms) \
         VALUES ($1, 'postpaid', NULL, $2) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(context()))?;
    sqlx::query("SELECT tenant_id FROM tenant_billing WHERE tenant_id = $1 FOR UPDATE")
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(StoreError::db(context()))?;
    Ok(())
}

pub(crate) async fn reserve(
    pools: &Pools,
    tenant_id: &str,
    items: &[(String, i32, i64)],
    now_ms: i64,
) -> Result<Reservation, StoreError> {
    let op = "reserve";
    if let Some(bad) = items.iter().find(|i| i.2 < 0) {
        return Err(StoreError::invalid(
            op,
            format!("negative reservation {} for message {:?}", bad.2, bad.0),
        ));
    }
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    lock_tenant(&mut tx, pools.backend, tenant_id, now_ms, op).await?;
    let mut needed = 0i64;
    let mut missing = Vec::new();
    for (message_id, idx, amount) in items {
        let row = sqlx::query(
            "SELECT amount_micros FROM reservations WHERE message_id = $1 AND recipient_idx = $2",
        )
        .bind(message_id)
        .bind(i64::from(*idx))
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op}: message {message_id:?}")))?;
        if row.is_none() {
            needed = needed.saturating_add(*amount);
            missing.push((message_id, *idx, *amount));
        }
    }
    let available = balance_in(&mut tx, tenant_id, op).await?.available_micros();
    if needed > available {
        return Ok(Reservation::Short {
            available_micros: available,
            needed_micros: needed,
        });
    }
    for (message_id, idx, amount) in missing {
        sqlx::query(
            "INSERT INTO reservations (message_id, recipient_idx, tenant_id, amount_micros, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (message_id, recipient_idx) DO NOTHING",
        )
        .bind(message_id)
        .bind(i64::from(idx))
        .bind(tenant_id)
        .bind(amount)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!(
            "{op}: message {message_id:?} recipient {idx}"
        )))?;
    }
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(Reservation::Reserved)
}

pub(crate) async fn add_credit(
    pools: &Pools,
    tenant_id: &str,
    amount_micros: i64,
    currency: &str,
    reference: &str,
    now_ms: i64,
) -> Result<Credited, StoreError> {
    let op = "add_credit";
    books::check_credit(op, amount_micros, reference)?;
    let context = || format!("{op}: tenant {tenant_id:?} reference {reference:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    books::must_exist(&mut tx, Whose::Tenant(tenant_id), op).await?;
    lock_tenant(&mut tx, pools.backend, tenant_id, now_ms, op).await?;
    let credited = books::insert_credit(
        &mut tx,
        Whose::Tenant(tenant_id),
        reference,
        amount_micros,
        currency,
        now_ms,
        op,
    )
    .await?;
    // Held recipients get another try either way: they are authorised again at
    // dispatch, and those the balance still cannot cover are held again.
    let detail = serde_json::json!({"reason": "credited", "reference": reference});
    let released = release_held_in(&mut tx, tenant_id, &detail, now_ms, op).await?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(Credited { credited, released })
}

/// Puts a tenant's held recipients back to `queued`, each with a `released` event
/// carrying `detail`; how many.
async fn release_held_in(
    tx: &mut AnyConnection,
    tenant_id: &str,
    detail: &serde_json::Value,
    now_ms: i64,
    op: &str,
) -> Result<usize, StoreError> {
    let context = || format!("{op}: releasing the held recipients of tenant {tenant_id:?}");
    let released = sqlx::query(
        "UPDATE recipients SET state = 'queued', next_attempt_at_ms = $2, updated_at_ms = $2 \
         WHERE state = 'held' AND message_id IN (SELECT id FROM messages WHERE tenant_id = $1) \
         RETURNING message_id, idx",
    )
    .bind(tenant_id)
    .bind(now_ms)
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    for r in &released {
        let message_id: String = col(r, op, "message_id")?;
        let idx = get_idx(r, op, "idx")?;
        let ev = RecipientEvent {
            message_id: &message_id,
            recipient_idx: idx,
            kind: EventKind::Released,
            relay: None,
            detail,
            at_ms: now_ms,
        };
        insert_recipient_event(&mut *tx, ev, op).await?;
    }
    Ok(released.len())
}

pub(crate) async fn release_held(
    pools: &Pools,
    tenant_id: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "release_held";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let n = release_held_in(&mut tx, tenant_id, detail, now_ms, op).await?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(n)
}

pub(crate) async fn set_billing(
    pools: &Pools,
    tenant_id: &str,
    mode: BalanceMode,
    tariff: Option<&str>,
    now_ms: i64,
) -> Result<BillingSettings, StoreError> {
    let op = "set_billing";
    let context = || format!("{op}: tenant {tenant_id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let exists = sqlx::query("SELECT id FROM tenants WHERE id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    if exists.is_none() {
        return Err(StoreError::not_found(op, "tenant", tenant_id));
    }
    sqlx::query(
        "INSERT INTO tenant_billing (tenant_id, mode, tariff, updated_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET mode = excluded.mode, tariff = excluded.tariff, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(tenant_id)
    .bind(mode.as_str())
    .bind(tariff.map(str::to_owned))
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(BillingSettings {
        tenant_id: tenant_id.to_owned(),
        mode,
        tariff: tariff.map(str::to_owned),
        updated_at_ms: now_ms,
    })
}

pub(crate) async fn get_billing(
    pools: &Pools,
    tenant_id: &str,
) -> Result<Option<BillingSettings>, StoreError> {
    let op = "get_billing";
    let row = sqlx::query(
        "SELECT tenant_id, mode, tariff, updated_at_ms FROM tenant_billing WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op}: tenant {tenant_id:?}")))?;
    row.map(|r| {
        let mode: String = col(&r, op, "mode")?;
        Ok(BillingSettings {
            tenant_id: col(&r, op, "tenant_id")?,
            mode: BalanceMode::parse(&mode)
                .ok_or_else(|| corrupt(&format!("{op}: column mode"), &mode))?,
            tariff: col(&r, op, "tariff")?,
            updated_at_ms: col(&r, op, "updated_at_ms")?,
        })
    })
    .transpose()
}

impl super::Store {
    /// Adds usage events for transfers read from an MTA's log, in one
    /// transaction; an event already there (the same `message_id`) is left
    /// alone. Returns how many were new.
    pub async fn insert_external_usage(
        &self,
        events: &[ExternalUsage],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        insert_external_usage(self.pools(), events, now_ms).await
    }

    /// A tenant's billing settings; `None` = postpaid on the platform tariff.
    pub async fn get_billing(
        &self,
        tenant_id: &str,
    ) -> Result<Option<BillingSettings>, StoreError> {
        get_billing(self.pools(), tenant_id).await
    }

    /// Sets a tenant's balance mode and tariff document (`None` = the platform's);
    /// `NotFound` if there is no such tenant.
    pub async fn set_billing(
        &self,
        tenant_id: &str,
        mode: BalanceMode,
        tariff: Option<&str>,
        now_ms: i64,
    ) -> Result<BillingSettings, StoreError> {
        set_billing(self.pools(), tenant_id, mode, tariff, now_ms).await
    }

    /// Claims up to `limit` pending usage events that are due (their retry time has
    /// come) for `owner` until `now + claim_ms`, oldest first, skipping tenants another
    /// owner is rating (PostgreSQL: claims are serialised by an advisory lock). An
    /// expired claim (a crashed rater) is taken over.
    pub async fn claim_usage(
        &self,
        owner: &str,
        now_ms: i64,
        claim_ms: i64,
        limit: u32,
    ) -> Result<Vec<PendingUsage>, StoreError> {
        claim_usage(self.pools(), owner, now_ms, claim_ms, limit).await
    }

    /// Writes the charges of rated usage events in one transaction: ledger rows
    /// (insert-or-ignore on their key), the period counters of the rows inserted, the
    /// events marked rated, their reservations released. Returns how many ledger rows
    /// were inserted (0 for a replay).
    pub async fn write_charges(
        &self,
        rated: &[RatedUsage],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let rated = rated.to_vec();
        self.on_writer(move |s| async move { write_charges(s.pools(), &rated, now_ms).await })
            .await
    }

    /// Leaves usage events unrated after a failed rating: counts the attempt, stores
    /// the error and retries after a growing delay.
    pub async fn defer_usage(
        &self,
        seqs: &[i64],
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        defer_usage(self.pools(), seqs, error, now_ms).await
    }

    /// Usage events not rated yet, oldest first, with their failed attempts and error.
    pub async fn list_unrated(&self, limit: u32) -> Result<Vec<PendingUsage>, StoreError> {
        list_unrated(self.pools(), limit).await
    }

    /// Whether a tenant has unrated usage in a period (`YYYY-MM`).
    pub async fn has_pending_usage(
        &self,
        tenant_id: &str,
        period: &str,
    ) -> Result<bool, StoreError> {
        has_pending(self.pools(), tenant_id, period).await
    }

    /// Period-to-date (service, quantity, amount in micro-units) of a tenant.
    pub async fn period_counters(
        &self,
        tenant_id: &str,
        period: &str,
    ) -> Result<Vec<(String, u64, i64)>, StoreError> {
        period_counters(self.pools(), tenant_id, period).await
    }

    /// Writes a volume-mode settlement once; returns whether this call wrote it.
    pub async fn write_settlement(&self, st: &Settlement, now_ms: i64) -> Result<bool, StoreError> {
        write_settlement(self.pools(), st, now_ms).await
    }

    /// A tenant's ledger rows whose usage time is in `[from, to)` and whose seq is
    /// above `after_seq`, by seq (pages: pass the last seq back).
    pub async fn list_charges(
        &self,
        tenant_id: &str,
        from_ms: i64,
        to_ms: i64,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        list_charges(self.pools(), tenant_id, from_ms, to_ms, after_seq, limit).await
    }

    /// A tenant's ledger of one period summed per (service, unit price), and the
    /// currency of its rows.
    pub async fn charge_sums(
        &self,
        tenant_id: &str,
        period: &str,
    ) -> Result<(Vec<ChargeSum>, Option<String>), StoreError> {
        charge_sums(self.pools(), tenant_id, period).await
    }

    /// Credits, charges and reservations of a tenant, exact.
    pub async fn balance(&self, tenant_id: &str) -> Result<Balance, StoreError> {
        balance(self.pools(), tenant_id).await
    }

    /// Reserves the estimated cost of recipients `(message, idx, micros)` if credits −
    /// charges − reservations cover what is not reserved yet; all or nothing.
    pub async fn reserve(
        &self,
        tenant_id: &str,
        items: &[(String, i32, i64)],
        now_ms: i64,
    ) -> Result<Reservation, StoreError> {
        reserve(self.pools(), tenant_id, items, now_ms).await
    }

    /// Puts a tenant's held recipients back to `queued` (each with a `released` event
    /// carrying `detail`), to be authorised again at dispatch; how many.
    pub async fn release_held(
        &self,
        tenant_id: &str,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        release_held(self.pools(), tenant_id, detail, now_ms).await
    }

    /// Credits a tenant once per `reference` and puts its held recipients back to
    /// `queued` (with a `released` event). `NotFound` if there is no such tenant.
    pub async fn add_credit(
        &self,
        tenant_id: &str,
        amount_micros: i64,
        currency: &str,
        reference: &str,
        now_ms: i64,
    ) -> Result<Credited, StoreError> {
        add_credit(
            self.pools(),
            tenant_id,
            amount_micros,
            currency,
            reference,
            now_ms,
        )
        .await
    }
}
