//! The queue of usage events waiting to be rated: claimed by a rater (a crashed
//! rater's claim expires and is taken over), deferred with a growing delay after a failed
//! rating, listed while unrated; and usage read from an MTA's log (`sluice bill`, log
//! sources) added to it.

use serde::Serialize;
use sqlx::any::AnyRow;

use super::super::StoreError;
use super::super::codec::{col, corrupt, get_idx, get_u32};
use super::super::connect::{Backend, Pools};

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
        let next = now_ms.saturating_add(super::super::books::rating_backoff_ms(attempts));
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
    let (start, end) = sluice_stage::period::period_bounds(period)
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

impl super::super::Store {
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
}
