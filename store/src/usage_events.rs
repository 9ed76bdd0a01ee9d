//! Usage events: one row per final outcome of a recipient (delivered, bounced, failed,
//! expired), written in the transaction that records the outcome and rated later by the
//! billing tasks. Kept apart from `ledger` (which rates them) and `events` (which records
//! outcomes and calls in here), so neither of those two needs the other.

use sqlx::AnyConnection;

use super::StoreError;
use super::codec::{positional, rows_per_statement, value_rows};
use super::types::{EventKind, RecipientState};

/// The usage outcome of a final recipient state, if it is final.
pub(crate) fn usage_outcome(state: RecipientState, event: EventKind) -> Option<&'static str> {
    match (state, event) {
        (RecipientState::Delivered, _) => Some("delivered"),
        (RecipientState::Bounced, _) | (RecipientState::Failed, EventKind::Bounced) => {
            Some("bounced")
        }
        (RecipientState::Failed, _) => Some("failed"),
        (RecipientState::Expired, _) => Some("expired"),
        _ => None,
    }
}

/// Writes the usage events of final outcomes (message, recipient, outcome name) inside
/// the caller's transaction (the one recording the outcomes), in multi-row statements.
/// A second final outcome with the same name for the same recipient (failed, requeued,
/// failed again) is the same usage and writes nothing.
pub(crate) async fn insert_usages(
    conn: &mut AnyConnection,
    rows: &[(&str, i32, &str)],
    now_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    const COLS: usize = 3;
    for chunk in rows.chunks(rows_per_statement(COLS)) {
        let n = chunk.len() * COLS;
        let sql = format!(
            "WITH v(message_id, idx, outcome) AS (VALUES {}) \
             INSERT INTO usage_events (tenant_id, message_id, recipient_idx, recipient, outcome, \
             direction, size, relay, at_ms, state, attempts, next_try_at_ms, sender, \
             inserted_at_ms) \
             SELECT m.tenant_id, r.message_id, r.idx, r.address, v.outcome, 'outbound', m.size, \
             r.last_relay, ${at}, 'pending', 0, ${next_try}, m.sender, ${inserted} \
             FROM v JOIN recipients r ON r.message_id = v.message_id AND r.idx = v.idx \
             JOIN messages m ON m.id = r.message_id \
             WHERE true ORDER BY r.message_id, r.idx \
             ON CONFLICT (message_id, recipient_idx, outcome) DO NOTHING",
            value_rows(chunk.len(), COLS),
            at = n + 1,
            next_try = n + 2,
            inserted = n + 3
        );
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for (message_id, idx, outcome) in chunk {
            q = q.bind(*message_id).bind(i64::from(*idx)).bind(*outcome);
        }
        q.bind(now_ms)
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "{op}: {} usage events (first: {} for message {:?} recipient {})",
                chunk.len(),
                chunk[0].2,
                chunk[0].0,
                chunk[0].1
            )))?;
    }
    Ok(())
}
