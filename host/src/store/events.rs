//! Appending events, and recording outcomes of leased work (a state change plus its
//! event, only where the lease is still the caller's).

use sqlx::AnyConnection;

use super::StoreError;
use super::codec::{rows_per_statement, value_rows};
use super::connect::Pools;
use super::types::{EventKind, NewEvent, Outcome, RecipientState};

/// The columns relay stats read, copied out of an event's detail (see [`EventKind`]).
struct StatColumns {
    latency_ms: Option<i64>,
    hard: Option<i64>,
    class: Option<String>,
    source: Option<String>,
}

fn stat_columns(detail: &serde_json::Value) -> StatColumns {
    StatColumns {
        latency_ms: detail
            .get("latency_ms")
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64))),
        hard: detail
            .get("hard")
            .and_then(serde_json::Value::as_bool)
            .map(i64::from),
        class: detail
            .get("class")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        source: detail
            .get("source")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
    }
}

/// Appends one event inside the caller's transaction.
pub(crate) async fn insert_event(
    conn: &mut AnyConnection,
    ev: &NewEvent,
    op: &str,
) -> Result<(), StoreError> {
    let stats = stat_columns(&ev.detail);
    sqlx::query(
        "INSERT INTO events (message_id, recipient_idx, tenant_id, kind, relay, detail, at_ms, \
         latency_ms, hard, class, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&ev.message_id)
    .bind(ev.recipient_idx.map(i64::from))
    .bind(&ev.tenant_id)
    .bind(ev.kind.as_str())
    .bind(ev.relay.clone())
    .bind(ev.detail.to_string())
    .bind(ev.at_ms)
    .bind(stats.latency_ms)
    .bind(stats.hard)
    .bind(stats.class)
    .bind(stats.source)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(format!(
        "{op}: appending a {} event for message {:?}",
        ev.kind.as_str(),
        ev.message_id
    )))?;
    Ok(())
}

/// Appends many events inside the caller's transaction, in order, in multi-row
/// statements.
async fn insert_events(
    conn: &mut AnyConnection,
    events: &[NewEvent],
    op: &str,
) -> Result<(), StoreError> {
    const COLS: usize = 11;
    for chunk in events.chunks(rows_per_statement(COLS)) {
        let sql = format!(
            "INSERT INTO events (message_id, recipient_idx, tenant_id, kind, relay, detail, \
             at_ms, latency_ms, hard, class, source) VALUES {}",
            value_rows(chunk.len(), COLS)
        );
        let mut q = sqlx::query(&sql);
        for ev in chunk {
            let stats = stat_columns(&ev.detail);
            q = q
                .bind(&ev.message_id)
                .bind(ev.recipient_idx.map(i64::from))
                .bind(&ev.tenant_id)
                .bind(ev.kind.as_str())
                .bind(ev.relay.clone())
                .bind(ev.detail.to_string())
                .bind(ev.at_ms)
                .bind(stats.latency_ms)
                .bind(stats.hard)
                .bind(stats.class)
                .bind(stats.source);
        }
        q.execute(&mut *conn).await.map_err(StoreError::db(format!(
            "{op}: appending {} events (first: {} for message {:?})",
            chunk.len(),
            chunk[0].kind.as_str(),
            chunk[0].message_id
        )))?;
    }
    Ok(())
}

/// An event about one recipient of a stored message; the tenant is taken from the
/// message, so callers that only hold a (message, recipient) key need not look it up.
pub(crate) struct RecipientEvent<'a> {
    pub message_id: &'a str,
    pub recipient_idx: i32,
    pub kind: EventKind,
    pub relay: Option<&'a str>,
    pub detail: &'a serde_json::Value,
    pub at_ms: i64,
}

/// Appends a [`RecipientEvent`] inside the caller's transaction.
pub(crate) async fn insert_recipient_event(
    conn: &mut AnyConnection,
    ev: RecipientEvent<'_>,
    op: &str,
) -> Result<(), StoreError> {
    let RecipientEvent {
        message_id,
        recipient_idx,
        kind,
        relay,
        detail,
        at_ms,
    } = ev;
    let stats = stat_columns(detail);
    sqlx::query(
        "INSERT INTO events (message_id, recipient_idx, tenant_id, kind, relay, detail, at_ms, \
         latency_ms, hard, class, source) \
         SELECT id, $2, tenant_id, $3, $4, $5, $6, $7, $8, $9, $10 FROM messages WHERE id = $1",
    )
    .bind(message_id)
    .bind(i64::from(recipient_idx))
    .bind(kind.as_str())
    .bind(relay.map(str::to_string))
    .bind(detail.to_string())
    .bind(at_ms)
    .bind(stats.latency_ms)
    .bind(stats.hard)
    .bind(stats.class)
    .bind(stats.source)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(format!(
        "{op}: appending a {} event for message {message_id:?} recipient {recipient_idx}",
        kind.as_str()
    )))?;
    Ok(())
}

/// Appends many [`RecipientEvent`]s inside the caller's transaction, in order, in
/// multi-row statements (each event's tenant taken from its message, as
/// [`insert_recipient_event`] does).
pub(crate) async fn insert_recipient_events(
    conn: &mut AnyConnection,
    events: &[RecipientEvent<'_>],
    op: &str,
) -> Result<(), StoreError> {
    const COLS: usize = 11;
    for chunk in events.chunks(rows_per_statement(COLS)) {
        let sql = format!(
            "WITH v(ord, message_id, recipient_idx, kind, relay, detail, at_ms, latency_ms, \
             hard, class, source) AS (VALUES {}) \
             INSERT INTO events (message_id, recipient_idx, tenant_id, kind, relay, detail, \
             at_ms, latency_ms, hard, class, source) \
             SELECT v.message_id, v.recipient_idx, m.tenant_id, v.kind, v.relay, v.detail, \
             v.at_ms, v.latency_ms, v.hard, v.class, v.source \
             FROM v JOIN messages m ON m.id = v.message_id ORDER BY v.ord",
            value_rows(chunk.len(), COLS)
        );
        let mut q = sqlx::query(&sql);
        for (ord, ev) in chunk.iter().enumerate() {
            let stats = stat_columns(ev.detail);
            q = q
                .bind(i64::try_from(ord).unwrap_or(i64::MAX))
                .bind(ev.message_id)
                .bind(i64::from(ev.recipient_idx))
                .bind(ev.kind.as_str())
                .bind(ev.relay.map(str::to_string))
                .bind(ev.detail.to_string())
                .bind(ev.at_ms)
                .bind(stats.latency_ms)
                .bind(stats.hard)
                .bind(stats.class)
                .bind(stats.source);
        }
        q.execute(&mut *conn).await.map_err(StoreError::db(format!(
            "{op}: appending {} events (first: message {:?} recipient {})",
            chunk.len(),
            chunk[0].message_id,
            chunk[0].recipient_idx
        )))?;
    }
    Ok(())
}

pub(crate) async fn append(pools: &Pools, events: Vec<NewEvent>) -> Result<(), StoreError> {
    let op = "append_events";
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    insert_events(&mut tx, &events, op).await?;
    for ev in &events {
        if let (EventKind::Routed, Some(relay), Some(idx)) = (ev.kind, &ev.relay, ev.recipient_idx)
        {
            // In flight on this relay until the outcome is recorded.
            sqlx::query(
                "UPDATE recipients SET routed_relay = $3 \
                 WHERE message_id = $1 AND idx = $2 AND state = 'delivering'",
            )
            .bind(&ev.message_id)
            .bind(i64::from(idx))
            .bind(relay)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(format!(
                "{op}: routing message {:?} recipient {idx} to relay {relay:?}",
                ev.message_id
            )))?;
        }
    }
    tx.commit().await.map_err(StoreError::db(format!(
        "{op}: commit of {} events",
        events.len()
    )))
}

pub(crate) async fn record(
    pools: &Pools,
    owner: &str,
    outcomes: Vec<Outcome>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "record";
    if let Some(bad) = outcomes
        .iter()
        .find(|o| o.new_state == RecipientState::Delivering)
    {
        return Err(StoreError::invalid(
            op,
            format!(
                "message {:?} recipient {}: an outcome cannot leave a recipient delivering",
                bad.message_id, bad.recipient_idx
            ),
        ));
    }
    if outcomes.is_empty() {
        return Ok(0);
    }
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(format!("{op} for owner {owner:?}")))?;
    let mut applied = 0;
    let mut events = Vec::with_capacity(outcomes.len());
    let mut usages = Vec::with_capacity(outcomes.len());
    for o in &outcomes {
        let attempt = i64::from(o.event.is_attempt_outcome() && o.relay.is_some());
        let done = sqlx::query(
            "UPDATE recipients SET state = $1, next_attempt_at_ms = COALESCE($2, next_attempt_at_ms), \
             attempts = attempts + $3, last_relay = COALESCE($4, last_relay), \
             last_reply = COALESCE($5, last_reply), lease_owner = NULL, lease_until_ms = NULL, \
             routed_relay = NULL, updated_at_ms = $6 \
             WHERE message_id = $7 AND idx = $8 AND state = 'delivering' AND lease_owner = $9",
        )
        .bind(o.new_state.as_str())
        .bind(o.next_attempt_at_ms)
        .bind(attempt)
        .bind(o.relay.clone())
        .bind(o.reply.clone())
        .bind(now_ms)
        .bind(&o.message_id)
        .bind(i64::from(o.recipient_idx))
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!(
            "{op}: message {:?} recipient {} for owner {owner:?}",
            o.message_id, o.recipient_idx
        )))?;
        if done.rows_affected() == 0 {
            tracing::warn!(
                message_id = %o.message_id,
                recipient_idx = o.recipient_idx,
                owner,
                "outcome skipped: the lease is no longer this host's"
            );
            continue;
        }
        applied += 1;
        events.push(RecipientEvent {
            message_id: &o.message_id,
            recipient_idx: o.recipient_idx,
            kind: o.event,
            relay: o.relay.as_deref(),
            detail: &o.detail,
            at_ms: now_ms,
        });
        // A final outcome is billable: its usage event commits with it.
        if let Some(usage) = super::ledger::usage_outcome(o.new_state, o.event) {
            usages.push((o.message_id.as_str(), o.recipient_idx, usage));
        }
    }
    // The applied outcomes' events and usage, a statement per table per batch.
    insert_recipient_events(&mut tx, &events, op).await?;
    super::ledger::insert_usages(&mut tx, &usages, now_ms, op).await?;
    tx.commit()
        .await
        .map_err(StoreError::db(format!("{op}: commit for owner {owner:?}")))?;
    Ok(applied)
}
