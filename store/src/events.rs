//! Appending events, and recording outcomes of leased work (a state change plus its
//! event, only where the lease is still the caller's).

use sqlx::AnyConnection;

use super::StoreError;
use super::codec::{col, get_idx, positional, rows_per_statement, value_rows};
use super::connect::Pools;
use super::stat_buckets::{Counted, Tally};
use super::types::{EventKind, NewEvent, Outcome, RecipientState};
use std::collections::{HashMap, HashSet};

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

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds an event's last columns: `detail`, `at_ms` and the stat columns copied out
/// of the detail.
fn bind_detail<'q>(
    q: AnyQuery<'q>,
    detail: &serde_json::Value,
    stats: &'q StatColumns,
    at_ms: i64,
) -> AnyQuery<'q> {
    q.bind(detail.to_string())
        .bind(at_ms)
        .bind(stats.latency_ms)
        .bind(stats.hard)
        .bind(stats.class.as_deref())
        .bind(stats.source.as_deref())
}

/// The relay stat buckets' view of an event.
fn counted<'a>(
    tenant: &'a str,
    kind: EventKind,
    relay: Option<&'a str>,
    stats: &'a StatColumns,
    at_ms: i64,
) -> Counted<'a> {
    Counted {
        tenant,
        kind,
        relay,
        latency_ms: stats.latency_ms,
        hard: stats.hard,
        class: stats.class.as_deref(),
        source: stats.source.as_deref(),
        at_ms,
    }
}

/// Appends one event inside the caller's transaction.
pub(crate) async fn insert_event(
    conn: &mut AnyConnection,
    ev: &NewEvent,
    op: &str,
) -> Result<(), StoreError> {
    insert_events(conn, std::slice::from_ref(ev), op).await
}

/// Appends many events inside the caller's transaction, in order, in multi-row
/// statements.
pub(crate) async fn insert_events(
    conn: &mut AnyConnection,
    events: &[NewEvent],
    op: &str,
) -> Result<(), StoreError> {
    const COLS: usize = 11;
    let stats: Vec<StatColumns> = events.iter().map(|e| stat_columns(&e.detail)).collect();
    let mut tally = Tally::default();
    for (ev, st) in events.iter().zip(&stats) {
        tally.add(&counted(
            &ev.tenant_id,
            ev.kind,
            ev.relay.as_deref(),
            st,
            ev.at_ms,
        ));
    }
    let rows: Vec<(&NewEvent, &StatColumns)> = events.iter().zip(&stats).collect();
    for chunk in rows.chunks(rows_per_statement(COLS)) {
        let sql = format!(
            "INSERT INTO events (message_id, recipient_idx, tenant_id, kind, relay, detail, \
             at_ms, latency_ms, hard, class, source) VALUES {}",
            value_rows(chunk.len(), COLS)
        );
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for (ev, st) in chunk {
            q = q
                .bind(&ev.message_id)
                .bind(ev.recipient_idx.map(i64::from))
                .bind(&ev.tenant_id)
                .bind(ev.kind.as_str())
                .bind(ev.relay.clone());
            q = bind_detail(q, &ev.detail, st, ev.at_ms);
        }
        let what = match chunk {
            [(ev, _)] => format!(
                "a {} event for message {:?}",
                ev.kind.as_str(),
                ev.message_id
            ),
            _ => format!(
                "{} events (first: {} for message {:?})",
                chunk.len(),
                chunk[0].0.kind.as_str(),
                chunk[0].0.message_id
            ),
        };
        q.execute(&mut *conn)
            .await
            .map_err(StoreError::db(format!("{op}: appending {what}")))?;
    }
    tally.write(conn, op).await
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
    insert_recipient_events(conn, &[ev], op).await
}

/// Appends many [`RecipientEvent`]s inside the caller's transaction, in order, in
/// multi-row statements, each event's tenant taken from its message.
pub(crate) async fn insert_recipient_events(
    conn: &mut AnyConnection,
    events: &[RecipientEvent<'_>],
    op: &str,
) -> Result<(), StoreError> {
    const COLS: usize = 11;
    let stats: Vec<StatColumns> = events.iter().map(|e| stat_columns(e.detail)).collect();
    // The relay stats are kept per tenant, and these events' tenants are their
    // messages': the insert hands them back when any event counts toward the stats.
    let counting = events.iter().any(|e| Tally::counts(e.kind, e.relay));
    let mut tenants: HashMap<String, String> = HashMap::new();
    let rows: Vec<(&RecipientEvent<'_>, &StatColumns)> = events.iter().zip(&stats).collect();
    for chunk in rows.chunks(rows_per_statement(COLS)) {
        let sql = format!(
            "WITH v(ord, message_id, recipient_idx, kind, relay, detail, at_ms, latency_ms, \
             hard, class, source) AS (VALUES {}) \
             INSERT INTO events (message_id, recipient_idx, tenant_id, kind, relay, detail, \
             at_ms, latency_ms, hard, class, source) \
             SELECT v.message_id, v.recipient_idx, m.tenant_id, v.kind, v.relay, v.detail, \
             v.at_ms, v.latency_ms, v.hard, v.class, v.source \
             FROM v JOIN messages m ON m.id = v.message_id ORDER BY v.ord{}",
            value_rows(chunk.len(), COLS),
            if counting {
                " RETURNING message_id, tenant_id"
            } else {
                ""
            }
        );
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for (ord, (ev, st)) in chunk.iter().enumerate() {
            q = q
                .bind(i64::try_from(ord).unwrap_or(i64::MAX))
                .bind(ev.message_id)
                .bind(i64::from(ev.recipient_idx))
                .bind(ev.kind.as_str())
                .bind(ev.relay.map(str::to_string));
            q = bind_detail(q, ev.detail, st, ev.at_ms);
        }
        let first = chunk[0].0;
        let what = match chunk.len() {
            1 => format!("a {} event", first.kind.as_str()),
            n => format!("{n} events (first: a {} event)", first.kind.as_str()),
        };
        let context = || {
            format!(
                "{op}: appending {what} for message {:?} recipient {}",
                first.message_id, first.recipient_idx
            )
        };
        if counting {
            let returned = q
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::db(context()))?;
            for row in &returned {
                let message_id: String = col(row, op, "message_id")?;
                let tenant_id: String = col(row, op, "tenant_id")?;
                tenants.insert(message_id, tenant_id);
            }
        } else {
            q.execute(&mut *conn)
                .await
                .map_err(StoreError::db(context()))?;
        }
    }
    let mut tally = Tally::default();
    for (ev, st) in events.iter().zip(&stats) {
        // An event whose message is gone was not inserted either: nothing to count.
        if let Some(tenant) = tenants.get(ev.message_id) {
            tally.add(&counted(tenant, ev.kind, ev.relay, st, ev.at_ms));
        }
    }
    tally.write(conn, op).await
}

pub(crate) async fn append(pools: &Pools, events: Vec<NewEvent>) -> Result<(), StoreError> {
    let op = "append_events";
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    insert_events(&mut tx, &events, op).await?;
    // In flight on its relay until the outcome is recorded; the last routing of a
    // recipient in the batch wins.
    let mut routed: Vec<(&str, i32, &str)> = Vec::new();
    let mut at: HashMap<(&str, i32), usize> = HashMap::new();
    for ev in &events {
        if let (EventKind::Routed, Some(relay), Some(idx)) = (ev.kind, &ev.relay, ev.recipient_idx)
        {
            let key = (ev.message_id.as_str(), idx);
            match at.get(&key) {
                Some(&i) => routed[i].2 = relay,
                None => {
                    at.insert(key, routed.len());
                    routed.push((key.0, idx, relay));
                }
            }
        }
    }
    for chunk in routed.chunks(rows_per_statement(3)) {
        let sql = format!(
            "WITH v(message_id, idx, relay) AS (VALUES {}) \
             UPDATE recipients SET routed_relay = v.relay FROM v \
             WHERE recipients.message_id = v.message_id AND recipients.idx = v.idx \
             AND recipients.state = 'delivering'",
            value_rows(chunk.len(), 3)
        );
        let sql = positional(&tx, sql);
        let mut q = sqlx::query(&sql);
        for (message_id, idx, relay) in chunk {
            q = q.bind(*message_id).bind(i64::from(*idx)).bind(*relay);
        }
        q.execute(&mut *tx).await.map_err(StoreError::db(format!(
            "{op}: routing {} recipients (first: message {:?} recipient {} to relay {:?})",
            chunk.len(),
            chunk[0].0,
            chunk[0].1,
            chunk[0].2
        )))?;
    }
    tx.commit().await.map_err(StoreError::db(format!(
        "{op}: commit of {} events",
        events.len()
    )))
}

/// Refuses outcomes that [`write_record`] must never apply.
pub(crate) fn check_outcomes(outcomes: &[Outcome]) -> Result<(), StoreError> {
    match outcomes
        .iter()
        .find(|o| o.new_state == RecipientState::Delivering)
    {
        Some(bad) => Err(StoreError::invalid(
            "record",
            format!(
                "message {:?} recipient {}: an outcome cannot leave a recipient delivering",
                bad.message_id, bad.recipient_idx
            ),
        )),
        None => Ok(()),
    }
}

/// Records `before` and the outcomes (checked with [`check_outcomes`]) inside the
/// caller's transaction; returns how many outcomes were applied (the rest were no longer
/// `owner`'s).
pub(crate) async fn write_record(
    conn: &mut AnyConnection,
    owner: &str,
    before: &[NewEvent],
    outcomes: &[Outcome],
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "record";
    insert_events(conn, before, op).await?;
    let applied_flags = apply_outcomes(conn, owner, outcomes, now_ms, op).await?;
    let mut applied = 0;
    let mut events = Vec::with_capacity(outcomes.len());
    let mut usages = Vec::with_capacity(outcomes.len());
    for (o, ok) in outcomes.iter().zip(applied_flags) {
        if !ok {
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
        if let Some(usage) = super::usage_events::usage_outcome(o.new_state, o.event) {
            usages.push((o.message_id.as_str(), o.recipient_idx, usage));
        }
    }
    // The applied outcomes' events and usage, a statement per table per batch.
    insert_recipient_events(conn, &events, op).await?;
    super::usage_events::insert_usages(conn, &usages, now_ms, op).await?;
    Ok(applied)
}

/// Applies each outcome to its recipient where the recipient is still delivering under
/// `owner`'s lease; says which were applied, in order. Outcomes go in multi-row
/// `UPDATE … FROM … RETURNING` statements. A batch naming a recipient twice (not
/// something the dispatcher sends) is applied in rounds of distinct recipients, in
/// order, so a later outcome finds the earlier one's state.
async fn apply_outcomes(
    conn: &mut AnyConnection,
    owner: &str,
    outcomes: &[Outcome],
    now_ms: i64,
    op: &str,
) -> Result<Vec<bool>, StoreError> {
    let mut applied = vec![false; outcomes.len()];
    let mut pending: Vec<usize> = (0..outcomes.len()).collect();
    while !pending.is_empty() {
        // This round: the first outcome still pending for each recipient.
        let mut seen = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = pending.into_iter().partition(|&i| {
            seen.insert((outcomes[i].message_id.as_str(), outcomes[i].recipient_idx))
        });
        apply_distinct(conn, owner, outcomes, &round, &mut applied, now_ms, op).await?;
        pending = later;
    }
    Ok(applied)
}

/// The update of [`apply_distinct`] for `rows` outcomes of 8 binds each, then now and
/// the owner (also for its plan, `plans.rs`).
pub(crate) fn outcomes_sql(rows: usize) -> String {
    let n = rows * OUTCOME_COLS;
    format!(
        "WITH v(message_id, idx, state, next_at, attempt, relay, reply, waiting) AS (VALUES {}) \
         UPDATE recipients SET state = CASE WHEN recipients.hold IS NOT NULL \
         AND v.state IN ('queued', 'deferred') THEN 'held' ELSE v.state END, \
         hold = CASE WHEN v.state IN ('delivered', 'bounced', 'failed', 'expired') \
         THEN NULL ELSE recipients.hold END, \
         next_attempt_at_ms = COALESCE(v.next_at, recipients.next_attempt_at_ms), \
         attempts = recipients.attempts + v.attempt, \
         last_relay = COALESCE(v.relay, recipients.last_relay), \
         last_reply = COALESCE(v.reply, recipients.last_reply), lease_owner = NULL, \
         lease_until_ms = NULL, routed_relay = NULL, waiting_for_relay = v.waiting, \
         updated_at_ms = ${now} \
         FROM v WHERE recipients.message_id = v.message_id AND recipients.idx = v.idx \
         AND recipients.state = 'delivering' AND recipients.lease_owner = ${owner} \
         RETURNING recipients.message_id, recipients.idx",
        value_rows(rows, OUTCOME_COLS),
        now = n + 1,
        owner = n + 2
    )
}

/// Binds per outcome in [`outcomes_sql`].
const OUTCOME_COLS: usize = 8;

/// [`apply_outcomes`] for the outcomes at `which`, all for distinct recipients: sets
/// `applied[i]` for those whose update took.
async fn apply_distinct(
    conn: &mut AnyConnection,
    owner: &str,
    outcomes: &[Outcome],
    which: &[usize],
    applied: &mut [bool],
    now_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    let at: HashMap<(&str, i32), usize> = which
        .iter()
        .map(|&i| {
            (
                (outcomes[i].message_id.as_str(), outcomes[i].recipient_idx),
                i,
            )
        })
        .collect();
    // One row fewer than the limit allows: `now` and `owner` are bound after the rows.
    for chunk in which.chunks(rows_per_statement(OUTCOME_COLS + 1)) {
        let sql = outcomes_sql(chunk.len());
        let sql = positional(&*conn, sql);
        let mut q = sqlx::query(&sql);
        for &i in chunk {
            let o = &outcomes[i];
            q = q
                .bind(&o.message_id)
                .bind(i64::from(o.recipient_idx))
                .bind(o.new_state.as_str())
                .bind(o.next_attempt_at_ms)
                .bind(i64::from(o.event.is_attempt_outcome() && o.relay.is_some()))
                .bind(o.relay.clone())
                .bind(o.reply.clone())
                .bind(o.waiting_for_relay.clone());
        }
        let first = &outcomes[chunk[0]];
        let rows = q
            .bind(now_ms)
            .bind(owner)
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::db(format!(
                "{op}: {} outcomes for owner {owner:?} (first: message {:?} recipient {})",
                chunk.len(),
                first.message_id,
                first.recipient_idx
            )))?;
        for row in &rows {
            let message_id: String = col(row, op, "message_id")?;
            let idx = get_idx(row, op, "idx")?;
            if let Some(&i) = at.get(&(message_id.as_str(), idx)) {
                applied[i] = true;
            }
        }
    }
    Ok(())
}
