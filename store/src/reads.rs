//! Reading messages back (status pages, the exception queue) and requeueing from the
//! exception queue.

use sqlx::any::AnyRow;

use super::StoreError;
use super::codec::{col, get_idx, get_json, get_kind, get_list, get_state, get_u32};
use super::connect::Pools;
use super::events::{RecipientEvent, insert_recipient_event};
use super::types::{Event, EventKind, MessageView, RecipientView};

const RECIPIENT_COLUMNS: &str = "r.message_id, m.tenant_id, r.idx, r.address, r.state, r.attempts, \
     r.last_relay, r.last_reply, r.next_attempt_at_ms, r.updated_at_ms";

fn recipient_from_row(row: &AnyRow, op: &str) -> Result<RecipientView, StoreError> {
    Ok(RecipientView {
        message_id: col(row, op, "message_id")?,
        tenant_id: col(row, op, "tenant_id")?,
        recipient_idx: get_idx(row, op, "idx")?,
        address: col(row, op, "address")?,
        state: get_state(row, op)?,
        attempts: get_u32(row, op, "attempts")?,
        last_relay: col(row, op, "last_relay")?,
        last_reply: col(row, op, "last_reply")?,
        next_attempt_at_ms: col(row, op, "next_attempt_at_ms")?,
        updated_at_ms: col(row, op, "updated_at_ms")?,
    })
}

fn event_from_row(row: &AnyRow, op: &str) -> Result<Event, StoreError> {
    let idx: Option<i64> = col(row, op, "recipient_idx")?;
    Ok(Event {
        seq: col(row, op, "seq")?,
        message_id: col(row, op, "message_id")?,
        recipient_idx: idx.and_then(|i| i32::try_from(i).ok()),
        tenant_id: col(row, op, "tenant_id")?,
        kind: get_kind(row, op)?,
        relay: col(row, op, "relay")?,
        detail: get_json(row, op, "detail")?,
        at_ms: col(row, op, "at_ms")?,
    })
}

pub(crate) async fn message_body(pools: &Pools, message_id: &str) -> Result<Vec<u8>, StoreError> {
    let op = "message_body";
    let row = sqlx::query("SELECT body FROM messages WHERE id = $1")
        .bind(message_id)
        .fetch_optional(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op} of message {message_id:?}")))?
        .ok_or_else(|| StoreError::not_found(op, "message", message_id))?;
    col(&row, op, "body")
}

pub(crate) async fn get_message(
    pools: &Pools,
    tenant_id: &str,
    id: &str,
) -> Result<Option<MessageView>, StoreError> {
    let op = "get_message";
    let context = || format!("{op} {id:?} of tenant {tenant_id:?}");
    // One snapshot for the message, its recipients and its events.
    let mut tx = pools
        .read
        .begin()
        .await
        .map_err(StoreError::db(context()))?;
    let Some(m) = sqlx::query(
        "SELECT id, tenant_id, idempotency_key, sender, size, tags, max_age_secs, created_at_ms \
         FROM messages WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?
    else {
        return Ok(None);
    };
    let recipients = sqlx::query(&format!(
        "SELECT {RECIPIENT_COLUMNS} FROM recipients r JOIN messages m ON m.id = r.message_id \
         WHERE r.message_id = $1 ORDER BY r.idx"
    ))
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    let events = sqlx::query(
        "SELECT seq, message_id, recipient_idx, tenant_id, kind, relay, detail, at_ms \
         FROM events WHERE message_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    let size: i64 = col(&m, op, "size")?;
    Ok(Some(MessageView {
        id: col(&m, op, "id")?,
        tenant_id: col(&m, op, "tenant_id")?,
        idempotency_key: col(&m, op, "idempotency_key")?,
        sender: col(&m, op, "sender")?,
        size: u64::try_from(size).unwrap_or(0),
        tags: get_list(&m, op, "tags")?,
        max_age_secs: get_u32(&m, op, "max_age_secs")?,
        created_at_ms: col(&m, op, "created_at_ms")?,
        recipients: recipients
            .iter()
            .map(|r| recipient_from_row(r, op))
            .collect::<Result<_, _>>()?,
        events: events
            .iter()
            .map(|e| event_from_row(e, op))
            .collect::<Result<_, _>>()?,
    }))
}

pub(crate) async fn list_failed(
    pools: &Pools,
    limit: u32,
) -> Result<Vec<RecipientView>, StoreError> {
    let op = "list_failed";
    let rows = sqlx::query(&format!(
        "SELECT {RECIPIENT_COLUMNS} FROM recipients r JOIN messages m ON m.id = r.message_id \
         WHERE r.state IN ('failed', 'expired') \
         ORDER BY r.updated_at_ms, r.message_id, r.idx LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(op))?;
    rows.iter().map(|r| recipient_from_row(r, op)).collect()
}

pub(crate) async fn requeue(
    pools: &Pools,
    message_id: &str,
    recipient_idx: i32,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let op = "requeue";
    let context = || format!("{op} message {message_id:?} recipient {recipient_idx}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let done = sqlx::query(
        "UPDATE recipients SET state = 'queued', next_attempt_at_ms = $3, updated_at_ms = $3 \
         WHERE message_id = $1 AND idx = $2 AND state IN ('failed', 'expired')",
    )
    .bind(message_id)
    .bind(i64::from(recipient_idx))
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let event = RecipientEvent {
        message_id,
        recipient_idx,
        kind: EventKind::Requeued,
        relay: None,
        detail: &serde_json::json!({}),
        at_ms: now_ms,
    };
    insert_recipient_event(&mut tx, event, op).await?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(true)
}
