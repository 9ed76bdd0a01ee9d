//! The tenant-visible event log (issue 21): every stored event gets a per-tenant cursor
//! (1, 2, 3, … with no gaps) that tenants page and stream by, and old events are pruned.
//!
//! Events are written where they always were, in the transaction of the state change
//! they record (`events.rs`). Their cursors are handed out afterwards by the
//! *sequencer* ([`sequence`]): one round reads the committed events that have no cursor
//! yet, oldest first, numbers them per tenant on from the tenant's last cursor
//! (`event_sequences`), and commits. Rounds never overlap: on PostgreSQL a round holds a
//! transaction-scoped advisory lock (any node may run one; a node that finds the lock
//! taken skips its turn), on SQLite the one write connection is the lock.
//!
//! Why after the commit and not in the writer's transaction: a cursor taken from a
//! counter or a sequence while the writer's transaction is open becomes visible when
//! that transaction commits, and transactions commit in any order, so a reader that has
//! seen cursor N+1 could still see N appear later — and, resuming after N+1, miss it.
//! Locking a per-tenant counter row until commit prevents that, but makes every writer
//! of a tenant (across all nodes) wait for the previous one's commit and fsync, and
//! transactions that touch several tenants would have to lock them in one order. Here a
//! cursor is only ever given to an event already committed, and the rounds that give
//! them are serialised, so the cursors a reader can see are always 1..=last with none
//! missing, whatever order the writers committed in. The price is a short delay before
//! an event is readable (one sequencer round) and a second write of each event row.
//!
//! Invariants:
//! - A tenant's cursors are 1, 2, 3, … in the order their events were sequenced; a
//!   reader's snapshot holds every cursor up to the largest it holds.
//! - The events of one message are sequenced in the order they were written (a later
//!   one is written after the earlier one committed, so it has a larger `seq`).
//! - Pruning removes only sequenced events, oldest `seq` first.

use std::collections::HashMap;

use sqlx::Row;

use super::StoreError;
use super::codec::{
    col, get_json, get_kind, list_from_text, placeholders, positional, rows_per_statement,
    value_rows,
};
use super::connect::{Backend, Pools};
use super::types::EventKind;

/// The advisory lock that makes sequencer rounds take turns on PostgreSQL ("sluice ev").
const SEQUENCER_LOCK: i64 = 0x736c_7569_6365_7631;

/// One event as a tenant reads it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TenantEvent {
    /// The tenant's cursor: 1, 2, 3, … with no gaps.
    pub cursor: i64,
    /// The event's store-wide sequence number: a stable id.
    pub seq: i64,
    pub kind: EventKind,
    /// The message the event is about; `None` for a tenant's event about no message
    /// (`plugin_suspended`, `low_balance`).
    pub message_id: Option<String>,
    /// The recipient's address, for an event about one recipient.
    pub recipient: Option<String>,
    /// The message's tags (empty when the message is gone).
    pub tags: Vec<String>,
    pub relay: Option<String>,
    pub detail: serde_json::Value,
    pub at_ms: i64,
}

/// What a sequencer round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequenced {
    /// How many events got a cursor.
    pub events: usize,
    /// Per tenant whose events got cursors, its last cursor now.
    pub last: HashMap<String, i64>,
    /// Another node's round held the lock: nothing was done.
    pub busy: bool,
}

/// The oldest `$1` events without a cursor (also for its plan, `plans.rs`).
pub(crate) const UNSEQUENCED_SQL: &str =
    "SELECT seq, tenant_id FROM events WHERE tenant_seq IS NULL ORDER BY seq LIMIT $1";

/// One sequencer round: gives cursors to at most `limit` committed events that have
/// none, oldest first.
pub(crate) async fn sequence(pools: &Pools, limit: u32) -> Result<Sequenced, StoreError> {
    let op = "sequence_events";
    // Most rounds find nothing: asked on a read connection, they cost the writers
    // nothing (no write lock on SQLite, no advisory lock on PostgreSQL).
    let any = sqlx::query("SELECT seq FROM events WHERE tenant_seq IS NULL LIMIT 1")
        .fetch_optional(&pools.read)
        .await
        .map_err(StoreError::db(format!(
            "{op}: looking for events without a cursor"
        )))?;
    if any.is_none() {
        return Ok(Sequenced::default());
    }
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    if pools.backend == Backend::Postgres {
        let got: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS got")
            .bind(SEQUENCER_LOCK)
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get("got"))
            .map_err(StoreError::db(format!("{op}: taking the sequencer's lock")))?;
        if !got {
            return Ok(Sequenced {
                busy: true,
                ..Sequenced::default()
            });
        }
    }
    // Under the lock, on PostgreSQL a statement's snapshot holds every commit made
    // before it, the previous round's among them.
    let pending = sqlx::query(UNSEQUENCED_SQL)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(format!(
            "{op}: reading events without a cursor"
        )))?;
    if pending.is_empty() {
        return Ok(Sequenced::default());
    }
    let mut rows: Vec<(i64, String)> = Vec::with_capacity(pending.len());
    for r in &pending {
        rows.push((col(r, op, "seq")?, col(r, op, "tenant_id")?));
    }
    let mut tenants: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut last: HashMap<String, i64> = HashMap::with_capacity(tenants.len());
    for chunk in tenants.chunks(rows_per_statement(1)) {
        let sql = format!(
            "SELECT tenant_id, last_seq FROM event_sequences WHERE tenant_id IN ({})",
            placeholders(1, chunk.len())
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q.bind(*t);
        }
        for r in q.fetch_all(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: reading tenants' last cursors"
        )))? {
            last.insert(col(&r, op, "tenant_id")?, col(&r, op, "last_seq")?);
        }
    }
    let mut numbered: Vec<(i64, i64)> = Vec::with_capacity(rows.len());
    for (seq, tenant) in &rows {
        let n = last.entry(tenant.clone()).or_insert(0);
        *n += 1;
        numbered.push((*seq, *n));
    }
    for chunk in numbered.chunks(rows_per_statement(2)) {
        let sql = format!(
            "WITH v(seq, tenant_seq) AS (VALUES {}) \
             UPDATE events SET tenant_seq = v.tenant_seq FROM v WHERE events.seq = v.seq",
            value_rows(chunk.len(), 2)
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql);
        for (seq, n) in chunk {
            q = q.bind(*seq).bind(*n);
        }
        q.execute(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: giving {} events their cursors (first: event {})",
            chunk.len(),
            chunk[0].0
        )))?;
    }
    let counters: Vec<(&String, &i64)> = last.iter().collect();
    for chunk in counters.chunks(rows_per_statement(2)) {
        let sql = format!(
            "INSERT INTO event_sequences (tenant_id, last_seq) VALUES {} \
             ON CONFLICT (tenant_id) DO UPDATE SET last_seq = excluded.last_seq",
            value_rows(chunk.len(), 2)
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql);
        for (tenant, n) in chunk {
            q = q.bind(tenant.as_str()).bind(**n);
        }
        q.execute(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: writing tenants' last cursors"
        )))?;
    }
    tx.commit().await.map_err(StoreError::db(format!(
        "{op}: commit of {} cursors",
        rows.len()
    )))?;
    Ok(Sequenced {
        events: rows.len(),
        last,
        busy: false,
    })
}

/// Appends a tenant's event about no message (`message_id` NULL: a plugin suspended, a
/// balance fallen low) inside the caller's transaction, the one of the state change it
/// records; it gets its cursor from the sequencer like any other event. Such events
/// count in no relay's or tenant's delivery stats.
pub(crate) async fn append_tenant_event(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
    kind: EventKind,
    detail: &serde_json::Value,
    at_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    let sql = positional(
        &*conn,
        "INSERT INTO events (message_id, tenant_id, kind, detail, at_ms) \
         VALUES (NULL, $1, $2, $3, $4)"
            .to_string(),
    );
    sqlx::query(&sql)
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(detail.to_string())
        .bind(at_ms)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::db(format!(
            "{op}: writing tenant {tenant_id:?}'s {} event",
            kind.as_str()
        )))?;
    Ok(())
}

/// Every tenant's last cursor (tenants without events have none).
pub(crate) async fn last_cursors(pools: &Pools) -> Result<HashMap<String, i64>, StoreError> {
    let op = "last_cursors";
    let rows = sqlx::query("SELECT tenant_id, last_seq FROM event_sequences")
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(op))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in &rows {
        out.insert(col(r, op, "tenant_id")?, col(r, op, "last_seq")?);
    }
    Ok(out)
}

/// A tenant's last cursor (0 before its first sequenced event).
pub(crate) async fn last_cursor(pools: &Pools, tenant_id: &str) -> Result<i64, StoreError> {
    let op = "last_cursor";
    let row = sqlx::query("SELECT last_seq FROM event_sequences WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op} of tenant {tenant_id:?}")))?;
    match row {
        Some(r) => col(&r, op, "last_seq"),
        None => Ok(0),
    }
}

/// The page of [`after`]: tenant `$1`'s events after cursor `$2`, of the `kinds` kinds
/// bound next when given, at most the last bind (also for its plan, `plans.rs`).
pub(crate) fn after_sql(kinds: Option<usize>) -> String {
    let filter = match kinds {
        Some(k) => format!(" AND e.kind IN ({})", placeholders(3, k)),
        None => String::new(),
    };
    let limit_mark = 3 + kinds.unwrap_or(0);
    format!(
        "SELECT e.seq, e.tenant_seq, e.message_id, e.kind, e.relay, e.detail, e.at_ms, \
         m.tags, r.address FROM events e \
         LEFT JOIN messages m ON m.id = e.message_id \
         LEFT JOIN recipients r ON r.message_id = e.message_id AND r.idx = e.recipient_idx \
         WHERE e.tenant_id = $1 AND e.tenant_seq > $2{filter} \
         ORDER BY e.tenant_seq LIMIT ${limit_mark}"
    )
}

/// A tenant's events after `after`, in cursor order, at most `limit`; only those of
/// `kinds` when it is given.
pub(crate) async fn after(
    pools: &Pools,
    tenant_id: &str,
    after: i64,
    limit: u32,
    kinds: Option<&[EventKind]>,
) -> Result<Vec<TenantEvent>, StoreError> {
    let op = "events_after";
    let sql = after_sql(kinds.map(<[EventKind]>::len));
    let mut q = sqlx::query(&sql).bind(tenant_id).bind(after);
    for k in kinds.unwrap_or(&[]) {
        q = q.bind(k.as_str());
    }
    let rows = q
        .bind(i64::from(limit))
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(format!(
            "{op} {after} of tenant {tenant_id:?}"
        )))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let tags: Option<String> = col(r, op, "tags")?;
        out.push(TenantEvent {
            cursor: col(r, op, "tenant_seq")?,
            seq: col(r, op, "seq")?,
            kind: get_kind(r, op)?,
            message_id: col(r, op, "message_id")?,
            recipient: col(r, op, "address")?,
            tags: match tags {
                Some(t) => list_from_text(op, &t)?,
                None => Vec::new(),
            },
            relay: col(r, op, "relay")?,
            detail: get_json(r, op, "detail")?,
            at_ms: col(r, op, "at_ms")?,
        });
    }
    Ok(out)
}

/// Deletes sequenced events written before `before_ms`, oldest first, at most `batch`
/// a statement, stopping at the first event that is younger or has no cursor yet;
/// returns how many were deleted.
pub(crate) async fn prune(pools: &Pools, before_ms: i64, batch: u32) -> Result<u64, StoreError> {
    let op = "prune_events";
    let mut deleted = 0;
    loop {
        let rows = sqlx::query("SELECT seq, at_ms, tenant_seq FROM events ORDER BY seq LIMIT $1")
            .bind(i64::from(batch))
            .fetch_all(&pools.read)
            .await
            .map_err(StoreError::db(format!("{op}: reading the oldest events")))?;
        let mut end = None;
        let mut old = 0;
        for r in &rows {
            let at: i64 = col(r, op, "at_ms")?;
            let cursor: Option<i64> = col(r, op, "tenant_seq")?;
            if at >= before_ms || cursor.is_none() {
                break;
            }
            let seq: i64 = col(r, op, "seq")?;
            end = Some(seq);
            old += 1;
        }
        let Some(end) = end else {
            return Ok(deleted);
        };
        let done = sqlx::query("DELETE FROM events WHERE seq <= $1 AND tenant_seq IS NOT NULL")
            .bind(end)
            .execute(&pools.write)
            .await
            .map_err(StoreError::db(format!("{op}: deleting events up to {end}")))?
            .rows_affected();
        deleted += done;
        // More may be old only when the whole of a full batch was.
        if old < rows.len() || rows.len() < batch as usize || done == 0 {
            return Ok(deleted);
        }
    }
}
