//! Queue inspection and controls (issue 22): a tenant's messages in cursor pages, the
//! live queue summed by state, tenant, relay and recipient domain, and holding,
//! releasing, cancelling and suspending work chosen by a [`Selector`].
//!
//! Why it is shaped this way:
//! - Held work leaves the states the dispatcher leases from (`queued`, `deferred`): it
//!   is `held`, with `recipients.hold` saying why (`hold` or `suspended`; migration
//!   0025). So a held or suspended backlog, however large, is never read by a lease:
//!   leasing reads ranges of the `(state, next_attempt_at_ms)` index that it is not in.
//! - Work in flight (`delivering`, leased by a host) is not taken from its host, which
//!   may be inside an SMTP transaction: taking the lease would make a delivered
//!   recipient look undelivered and send it again after a release. It is marked
//!   instead; an outcome that would queue it again (deferred) makes it `held`
//!   (`events.rs`), and a lease that runs out is not taken over while it is marked
//!   (`leases.rs`). A cancel leaves it alone and says how many it left.
//! - Bulk changes go in transactions of [`CHUNK`] recipients, so a tenant's backlog of
//!   millions never holds the write connection (SQLite's only one) for long, and an
//!   event is written for each recipient in the transaction that changes it.
//! - Every selection that is not one message reads the live queue only (states not
//!   final), through `recipients_due`, so its cost follows the queue, not the history.

use std::collections::{HashMap, HashSet};

use sqlx::AnyConnection;

use super::StoreError;
use super::codec::{col, get_idx, get_list, get_state, list_to_text, placeholders};
use super::connect::{Backend, Pools};
use super::events::{RecipientEvent, insert_recipient_events};
use super::types::{Accepted, EventKind, RecipientState, RetryFilter};
use super::usage_events::insert_usages;

/// The most messages one page of [`search_messages`] holds.
pub const MAX_PAGE: u32 = 500;
/// Recipients changed per transaction by the bulk controls.
const CHUNK: i64 = 1000;
/// The states of the live queue (not final).
const LIVE: &str = "('queued', 'delivering', 'deferred', 'held')";

/// Which recipients a control acts on: every field given must match (the same as
/// `POST …/retry`'s filter).
pub type Selector = RetryFilter;

/// What `GET /v1/messages` asks for: the tenant's own messages, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageQuery {
    pub tenant_id: String,
    /// Messages with at least one recipient in this state.
    pub state: Option<RecipientState>,
    /// Messages with this recipient address (as submitted).
    pub to: Option<String>,
    /// Messages with this envelope sender (as submitted).
    pub from: Option<String>,
    /// Messages carrying this tag.
    pub tag: Option<String>,
    /// Accepted at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Accepted before this time.
    pub until_ms: Option<i64>,
    /// Only messages older than this message id (the previous page's cursor).
    pub after: Option<String>,
    /// At most this many (1 to [`MAX_PAGE`]).
    pub limit: u32,
}

/// One message as a page of [`search_messages`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    pub id: String,
    pub header_message_id: Option<String>,
    pub sender: String,
    pub tags: Vec<String>,
    pub created_at_ms: i64,
    /// The latest change of any of its recipients.
    pub updated_at_ms: i64,
    /// How many recipients are in each state (only states with some), in
    /// [`RecipientState::ALL`] order.
    pub by_state: Vec<(RecipientState, u32)>,
}

/// Recipient states from least to most advanced: a message's state is the least
/// advanced of its recipients' ([`MessageSummary::state`]).
const PROGRESS: [RecipientState; 8] = [
    RecipientState::Delivering,
    RecipientState::Queued,
    RecipientState::Deferred,
    RecipientState::Held,
    RecipientState::Failed,
    RecipientState::Expired,
    RecipientState::Bounced,
    RecipientState::Delivered,
];

impl MessageSummary {
    /// The least advanced state among its recipients (all agree: that state).
    pub fn state(&self) -> RecipientState {
        PROGRESS
            .into_iter()
            .find(|s| self.by_state.iter().any(|(b, _)| b == s))
            .unwrap_or(RecipientState::Queued)
    }

    pub fn recipients(&self) -> u32 {
        self.by_state.iter().map(|(_, n)| n).sum()
    }
}

/// The lower bound of message ids accepted at `ms` (ids are ULIDs of acceptance time).
fn ulid_floor(ms: i64) -> String {
    ulid::Ulid::from_parts(u64::try_from(ms).unwrap_or(0), 0).to_string()
}

/// The time a message id (a ULID) was made, if it is one.
pub(crate) fn ulid_ms(id: &str) -> Option<i64> {
    ulid::Ulid::from_string(id)
        .ok()
        .map(|u| i64::try_from(u.timestamp_ms()).unwrap_or(i64::MAX))
}

fn is_live(state: RecipientState) -> bool {
    matches!(
        state,
        RecipientState::Queued
            | RecipientState::Delivering
            | RecipientState::Deferred
            | RecipientState::Held
    )
}

/// The SQL of a search page and its binds (shared with `explain_search`).
fn search_sql(backend: Backend, q: &MessageQuery) -> (String, Vec<String>) {
    let mut sql = String::from(
        "SELECT m.id, m.sender, m.tags, m.created_at_ms, m.header_message_id \
         FROM messages m WHERE m.tenant_id = $1",
    );
    let mut binds: Vec<String> = vec![q.tenant_id.clone()];
    let mut bind = |sql: &mut String, cond: &str, value: String| {
        binds.push(value);
        sql.push_str(&cond.replace("$?", &format!("${}", binds.len())));
    };
    if let Some(after) = &q.after {
        bind(&mut sql, " AND m.id < $?", after.clone());
    }
    if let Some(since) = q.since_ms {
        bind(&mut sql, " AND m.id >= $?", ulid_floor(since));
    }
    if let Some(until) = q.until_ms {
        bind(&mut sql, " AND m.id < $?", ulid_floor(until));
    }
    if let Some(from) = &q.from {
        bind(&mut sql, " AND m.sender = $?", from.clone());
    }
    if let Some(to) = &q.to {
        bind(
            &mut sql,
            " AND m.id IN (SELECT message_id FROM recipients WHERE address = $?)",
            to.clone(),
        );
    }
    if let Some(tag) = &q.tag {
        // Tags are stored as a JSON array: the tag as a JSON string is a substring of
        // it exactly when the message carries it (no LIKE, so no wildcards to escape).
        let find = match backend {
            Backend::Sqlite => " AND instr(m.tags, $?) > 0",
            Backend::Postgres => " AND strpos(m.tags, $?) > 0",
        };
        bind(
            &mut sql,
            find,
            serde_json::Value::from(tag.as_str()).to_string(),
        );
    }
    if let Some(state) = q.state {
        // A live state is a small set, read through `recipients_due`; a final state
        // is most of the history, so each candidate is checked instead.
        let cond = if is_live(state) {
            " AND m.id IN (SELECT message_id FROM recipients WHERE state = $?)"
        } else {
            " AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.state = $?)"
        };
        bind(&mut sql, cond, state.as_str().to_owned());
    }
    sql.push_str(&format!(" ORDER BY m.id DESC LIMIT {}", q.limit));
    (sql, binds)
}

/// A page of the tenant's messages, newest first, with their recipients counted by
/// state. The caller has checked the query's values (the API's 400s); the store only
/// refuses a limit out of range.
pub(crate) async fn search_messages(
    pools: &Pools,
    q: &MessageQuery,
) -> Result<Vec<MessageSummary>, StoreError> {
    let op = "search_messages";
    if q.limit == 0 || q.limit > MAX_PAGE {
        return Err(StoreError::invalid(
            op,
            format!("limit {}; it must be 1 to {MAX_PAGE}", q.limit),
        ));
    }
    let context = || format!("{op} of tenant {:?}", q.tenant_id);
    let (sql, binds) = search_sql(pools.backend, q);

    let mut tx = pools
        .read
        .begin()
        .await
        .map_err(StoreError::db(context()))?;
    let mut query = sqlx::query(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let rows = query
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    let mut page = Vec::with_capacity(rows.len());
    for r in &rows {
        let created_at_ms: i64 = col(r, op, "created_at_ms")?;
        page.push(MessageSummary {
            id: col(r, op, "id")?,
            header_message_id: col(r, op, "header_message_id")?,
            sender: col(r, op, "sender")?,
            tags: get_list(r, op, "tags")?,
            created_at_ms,
            updated_at_ms: created_at_ms,
            by_state: Vec::new(),
        });
    }
    if page.is_empty() {
        return Ok(page);
    }
    let sql = format!(
        "SELECT message_id, state, COUNT(*) AS n, MAX(updated_at_ms) AS updated \
         FROM recipients WHERE message_id IN ({}) GROUP BY message_id, state",
        placeholders(1, page.len())
    );
    let mut query = sqlx::query(&sql);
    for m in &page {
        query = query.bind(&m.id);
    }
    let counts = query
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    let at: HashMap<String, usize> = page
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.clone(), i))
        .collect();
    for c in &counts {
        let id: String = col(c, op, "message_id")?;
        let n: i64 = col(c, op, "n")?;
        let updated: i64 = col(c, op, "updated")?;
        if let Some(&i) = at.get(&id) {
            let m = &mut page[i];
            m.by_state
                .push((get_state(c, op)?, u32::try_from(n).unwrap_or(u32::MAX)));
            m.updated_at_ms = m.updated_at_ms.max(updated);
        }
    }
    for m in &mut page {
        m.by_state.sort_by_key(|(s, _)| {
            RecipientState::ALL
                .iter()
                .position(|a| a == s)
                .unwrap_or(usize::MAX)
        });
    }
    Ok(page)
}

/// Recipients of the live queue in one group, and when the oldest message among them
/// was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGroup {
    pub key: String,
    pub recipients: i64,
    pub oldest_accepted_ms: Option<i64>,
}

/// The largest groups of one grouping, and the rest summed into one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopGroups {
    /// Largest first (ties by key).
    pub top: Vec<QueueGroup>,
    /// How many groups there were in all.
    pub groups: usize,
    /// The groups past `top`, summed (`None` when there are none).
    pub rest: Option<QueueGroup>,
}

/// The live queue (`GET /admin/v1/queue`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSummary {
    /// `queued`, `delivering`, `deferred`, `held`, each present (0 when empty).
    pub by_state: Vec<QueueGroup>,
    /// The held recipients by why: `hold` (by request), `suspended` (tenant
    /// suspended), `prepaid` (funds short).
    pub held_by: Vec<QueueGroup>,
    pub by_tenant: TopGroups,
    /// By the relay of its current or last attempt, or the one it waits for;
    /// `(none)` for work not tried yet.
    pub by_relay: TopGroups,
    pub by_domain: TopGroups,
    /// Tenants whose sending is suspended: (id, since, reason).
    pub suspended_tenants: Vec<(String, i64, Option<String>)>,
}

/// Merges one grouping's rows into groups by key.
fn groups_of(
    rows: &[sqlx::any::AnyRow],
    op: &str,
) -> Result<HashMap<String, QueueGroup>, StoreError> {
    let mut by: HashMap<String, QueueGroup> = HashMap::new();
    for r in rows {
        let key: Option<String> = col(r, op, "k")?;
        let key = key.unwrap_or_else(|| "(none)".to_owned());
        let n: i64 = col(r, op, "n")?;
        let oldest: Option<String> = col(r, op, "oldest")?;
        let at = oldest.as_deref().and_then(ulid_ms);
        let g = by.entry(key.clone()).or_insert(QueueGroup {
            key,
            recipients: 0,
            oldest_accepted_ms: None,
        });
        g.recipients += n;
        g.oldest_accepted_ms = min_opt(g.oldest_accepted_ms, at);
    }
    Ok(by)
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn top(groups: HashMap<String, QueueGroup>, n: usize) -> TopGroups {
    let mut all: Vec<QueueGroup> = groups.into_values().collect();
    all.sort_by(|a, b| b.recipients.cmp(&a.recipients).then(a.key.cmp(&b.key)));
    let groups = all.len();
    let rest: Vec<QueueGroup> = all.split_off(n.min(all.len()));
    let rest = (!rest.is_empty()).then(|| QueueGroup {
        key: "(other)".to_owned(),
        recipients: rest.iter().map(|g| g.recipients).sum(),
        oldest_accepted_ms: rest
            .iter()
            .fold(None, |o, g| min_opt(o, g.oldest_accepted_ms)),
    });
    TopGroups {
        top: all,
        groups,
        rest,
    }
}

/// The queries of [`queue_summary`]: by state (and why held), then by tenant, relay and
/// domain.
fn summary_sql() -> Vec<(&'static str, String)> {
    vec![
        (
            "by_state",
            format!(
                "SELECT state, hold, COUNT(*) AS n, MIN(message_id) AS oldest FROM recipients \
                 WHERE state IN {LIVE} GROUP BY state, hold"
            ),
        ),
        (
            "by_tenant",
            format!(
                "SELECT m.tenant_id AS k, COUNT(*) AS n, MIN(r.message_id) AS oldest \
                 FROM recipients r JOIN messages m ON m.id = r.message_id \
                 WHERE r.state IN {LIVE} GROUP BY m.tenant_id"
            ),
        ),
        (
            "by_relay",
            format!(
                "SELECT COALESCE(routed_relay, last_relay, waiting_for_relay) AS k, \
                 COUNT(*) AS n, MIN(message_id) AS oldest FROM recipients \
                 WHERE state IN {LIVE} GROUP BY COALESCE(routed_relay, last_relay, waiting_for_relay)"
            ),
        ),
        (
            "by_domain",
            format!(
                "SELECT domain AS k, COUNT(*) AS n, MIN(message_id) AS oldest FROM recipients \
                 WHERE state IN {LIVE} GROUP BY domain"
            ),
        ),
    ]
}

/// Sums the live queue. Each grouping is one scan of the live recipients (through
/// `recipients_due`), so the cost follows the queue, not the history; `top_n` bounds
/// the answer, not the scan.
pub(crate) async fn queue_summary(pools: &Pools, top_n: usize) -> Result<QueueSummary, StoreError> {
    let op = "queue_summary";
    let mut tx = pools.read.begin().await.map_err(StoreError::db(op))?;
    let mut s = QueueSummary::default();
    let rows = sqlx::query(&summary_sql()[0].1)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op}: by state")))?;
    let mut states: HashMap<String, QueueGroup> = HashMap::new();
    let mut held: HashMap<String, QueueGroup> = HashMap::new();
    for r in &rows {
        let state: String = col(r, op, "state")?;
        let hold: Option<String> = col(r, op, "hold")?;
        let n: i64 = col(r, op, "n")?;
        let oldest: Option<String> = col(r, op, "oldest")?;
        let at = oldest.as_deref().and_then(ulid_ms);
        for (map, key) in [
            (&mut states, Some(state.clone())),
            (
                &mut held,
                (state == "held").then(|| hold.unwrap_or_else(|| "prepaid".to_owned())),
            ),
        ] {
            let Some(key) = key else { continue };
            let g = map.entry(key.clone()).or_insert(QueueGroup {
                key,
                recipients: 0,
                oldest_accepted_ms: None,
            });
            g.recipients += n;
            g.oldest_accepted_ms = min_opt(g.oldest_accepted_ms, at);
        }
    }
    for state in ["queued", "delivering", "deferred", "held"] {
        s.by_state.push(states.remove(state).unwrap_or(QueueGroup {
            key: state.to_owned(),
            recipients: 0,
            oldest_accepted_ms: None,
        }));
    }
    for why in ["hold", "suspended", "prepaid"] {
        s.held_by.push(held.remove(why).unwrap_or(QueueGroup {
            key: why.to_owned(),
            recipients: 0,
            oldest_accepted_ms: None,
        }));
    }
    let grouped = summary_sql();
    for (what, sql) in grouped.into_iter().skip(1) {
        let rows = sqlx::query(&sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(format!("{op}: by {what}")))?;
        let t = top(groups_of(&rows, op)?, top_n);
        match what {
            "by_tenant" => s.by_tenant = t,
            "by_relay" => s.by_relay = t,
            _ => s.by_domain = t,
        }
    }
    let rows = sqlx::query(
        "SELECT id, suspended_at_ms, suspend_reason FROM tenants \
         WHERE suspended_at_ms IS NOT NULL ORDER BY id",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op}: suspended tenants")))?;
    for r in &rows {
        s.suspended_tenants.push((
            col(r, op, "id")?,
            col(r, op, "suspended_at_ms")?,
            col(r, op, "suspend_reason")?,
        ));
    }
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(s)
}

/// The selector as SQL conditions on `recipients r`, with binds numbered from `first`.
fn selector_sql(sel: &Selector, first: usize) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds: Vec<String> = Vec::new();
    let mut add = |cond: &str, value: &str| {
        binds.push(value.to_owned());
        let n = first + binds.len() - 1;
        sql.push_str(&cond.replace("$?", &format!("${n}")));
    };
    if let Some(m) = &sel.message {
        add(" AND r.message_id = $?", m);
    }
    if let Some(d) = &sel.domain {
        add(" AND r.domain = $?", d);
    }
    if let Some(relay) = &sel.relay {
        add(
            " AND (r.last_relay = $? OR r.routed_relay = $? OR r.waiting_for_relay = $?)",
            relay,
        );
    }
    if let Some(t) = &sel.tenant {
        add(
            " AND EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id AND m.tenant_id = $?)",
            t,
        );
    }
    (sql, binds)
}

/// What a hold did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Recipients moved to `held` now.
    pub held: usize,
    /// Recipients in flight, marked: held if their attempt does not finish them.
    pub in_flight: usize,
}

/// Runs one chunked change until it changes nothing more: `update` is an `UPDATE …
/// RETURNING message_id, idx` whose binds are `$1` = now then `binds`; `then` writes
/// the events (and usage) of the changed rows in the same transaction.
async fn in_chunks<F>(
    pools: &Pools,
    op: &str,
    update: &str,
    binds: &[String],
    now_ms: i64,
    then: F,
) -> Result<usize, StoreError>
where
    F: for<'c> Fn(
        &'c mut AnyConnection,
        Vec<(String, i32, Option<String>)>,
    )
        -> std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'c>>,
{
    let mut total = 0;
    loop {
        let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
        let mut q = sqlx::query(update).bind(now_ms);
        for b in binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(StoreError::db(op))?;
        let mut changed = Vec::with_capacity(rows.len());
        for r in &rows {
            changed.push((
                col::<String>(r, op, "message_id")?,
                get_idx(r, op, "idx")?,
                col::<Option<String>>(r, op, "state")?,
            ));
        }
        let n = changed.len();
        if n > 0 {
            then(&mut tx, changed).await?;
        }
        tx.commit().await.map_err(StoreError::db(op))?;
        total += n;
        if (n as i64) < CHUNK {
            return Ok(total);
        }
    }
}

/// Events of one kind with one detail for changed rows.
async fn write_events(
    conn: &mut AnyConnection,
    rows: &[(String, i32, Option<String>)],
    kind: EventKind,
    detail: &serde_json::Value,
    now_ms: i64,
    op: &str,
) -> Result<(), StoreError> {
    let events: Vec<RecipientEvent<'_>> = rows
        .iter()
        .map(|(m, idx, _)| RecipientEvent {
            message_id: m,
            recipient_idx: *idx,
            kind,
            relay: None,
            detail,
            at_ms: now_ms,
        })
        .collect();
    insert_recipient_events(conn, &events, op).await
}

/// Holds the queued, deferred and otherwise held recipients `sel` selects (a `held`
/// event each, with `detail`), and marks those in flight.
pub(crate) async fn hold(
    pools: &Pools,
    sel: &Selector,
    why: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<Held, StoreError> {
    let op = "hold";
    let (cond, mut binds) = selector_sql(sel, 3);
    binds.insert(0, why.to_owned());
    let update = format!(
        "UPDATE recipients SET state = 'held', hold = $2, updated_at_ms = $1 \
         WHERE (message_id, idx) IN (SELECT r.message_id, r.idx FROM recipients r \
         WHERE r.state IN ('queued', 'deferred', 'held') \
         AND (r.hold IS NULL OR r.hold <> $2){cond} LIMIT {CHUNK}) \
         AND state IN ('queued', 'deferred', 'held') \
         RETURNING message_id, idx, state"
    );
    let held = in_chunks(pools, op, &update, &binds, now_ms, |conn, rows| {
        let detail = detail.clone();
        Box::pin(async move {
            write_events(conn, &rows, EventKind::Held, &detail, now_ms, "hold").await
        })
    })
    .await?;
    let in_flight = mark_in_flight(pools, op, sel, why).await?;
    Ok(Held { held, in_flight })
}

/// Marks the recipients `sel` selects that are in flight now with `why` (`hold` or
/// `suspended`): they are not taken from their host, and go to `held` if their attempt
/// does not finish them. Returns how many were marked.
async fn mark_in_flight(
    pools: &Pools,
    op: &str,
    sel: &Selector,
    why: &str,
) -> Result<usize, StoreError> {
    let (cond, sel_binds) = selector_sql(sel, 2);
    let mark = format!(
        "UPDATE recipients SET hold = $1 WHERE (message_id, idx) IN \
         (SELECT r.message_id, r.idx FROM recipients r WHERE r.state = 'delivering' \
         AND r.hold IS NULL{cond}) AND state = 'delivering'"
    );
    let mut q = sqlx::query(&mark).bind(why);
    for b in &sel_binds {
        q = q.bind(b);
    }
    let in_flight = q
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(format!("{op}: marking work in flight")))?
        .rows_affected();
    Ok(usize::try_from(in_flight).unwrap_or(usize::MAX))
}

/// Releases what `sel` selects among the recipients held for `why` (`hold` or
/// `suspended`): held ones go back to `queued` (`deferred` once tried), due now, with
/// a `released` event; marked ones in flight are unmarked. A recipient released from
/// a hold whose tenant is suspended stays held, for the suspension.
pub(crate) async fn release(
    pools: &Pools,
    sel: &Selector,
    why: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let op = "release";
    let (cond, mut binds) = selector_sql(sel, 3);
    binds.insert(0, why.to_owned());
    if why == "hold" {
        let (cond, sel_binds) = selector_sql(sel, 1);
        let sql = format!(
            "UPDATE recipients SET hold = 'suspended' WHERE (message_id, idx) IN \
             (SELECT r.message_id, r.idx FROM recipients r WHERE r.hold = 'hold'{cond} \
             AND EXISTS (SELECT 1 FROM messages mt JOIN tenants t ON t.id = mt.tenant_id \
             WHERE mt.id = r.message_id AND t.suspended_at_ms IS NOT NULL)) AND hold = 'hold'"
        );
        let mut q = sqlx::query(&sql);
        for b in &sel_binds {
            q = q.bind(b);
        }
        q.execute(&pools.write)
            .await
            .map_err(StoreError::db(format!("{op}: suspended tenants' holds")))?;
    }
    let update = format!(
        "UPDATE recipients SET \
         state = CASE WHEN state = 'held' THEN \
           (CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END) ELSE state END, \
         next_attempt_at_ms = CASE WHEN state = 'held' THEN $1 ELSE next_attempt_at_ms END, \
         hold = NULL, waiting_for_relay = NULL, updated_at_ms = $1 \
         WHERE (message_id, idx) IN (SELECT r.message_id, r.idx FROM recipients r \
         WHERE r.hold = $2 AND r.state IN {LIVE}{cond} LIMIT {CHUNK}) AND hold = $2 \
         RETURNING message_id, idx, state"
    );
    in_chunks(pools, op, &update, &binds, now_ms, |conn, rows| {
        let detail = detail.clone();
        Box::pin(async move {
            // Marked work in flight was never held: no event for it.
            let released: Vec<_> = rows
                .into_iter()
                .filter(|(_, _, s)| s.as_deref() != Some("delivering"))
                .collect();
            write_events(
                conn,
                &released,
                EventKind::Released,
                &detail,
                now_ms,
                "release",
            )
            .await
        })
    })
    .await
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cancelled {
    /// Recipients failed now.
    pub cancelled: usize,
    /// Recipients in flight, left to finish their attempt.
    pub in_flight: usize,
}

/// Fails the queued, deferred and held recipients `sel` selects, with `reason` as
/// their last reply: a `failed` event and a `failed` usage event each, as for any
/// final outcome. Work in flight is counted, not touched.
pub(crate) async fn cancel(
    pools: &Pools,
    sel: &Selector,
    reason: &str,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<Cancelled, StoreError> {
    let op = "cancel";
    let (cond, mut binds) = selector_sql(sel, 3);
    binds.insert(0, format!("cancelled: {reason}"));
    let update = format!(
        "UPDATE recipients SET state = 'failed', hold = NULL, waiting_for_relay = NULL, \
         last_reply = $2, updated_at_ms = $1 \
         WHERE (message_id, idx) IN (SELECT r.message_id, r.idx FROM recipients r \
         WHERE r.state IN ('queued', 'deferred', 'held'){cond} LIMIT {CHUNK}) \
         AND state IN ('queued', 'deferred', 'held') \
         RETURNING message_id, idx, state"
    );
    let cancelled = in_chunks(pools, op, &update, &binds, now_ms, |conn, rows| {
        let detail = detail.clone();
        Box::pin(async move {
            write_events(conn, &rows, EventKind::Failed, &detail, now_ms, "cancel").await?;
            let usage: Vec<(&str, i32, &str)> = rows
                .iter()
                .map(|(m, idx, _)| (m.as_str(), *idx, "failed"))
                .collect();
            insert_usages(conn, &usage, now_ms, "cancel").await
        })
    })
    .await?;
    let (cond, binds) = selector_sql(sel, 1);
    let sql = format!("SELECT COUNT(*) AS n FROM recipients r WHERE r.state = 'delivering'{cond}");
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = q.bind(b);
    }
    let row = q
        .fetch_one(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op}: counting work in flight")))?;
    let in_flight: i64 = col(&row, op, "n")?;
    Ok(Cancelled {
        cancelled,
        in_flight: usize::try_from(in_flight).unwrap_or(0),
    })
}

/// Suspends a tenant's sending: its queued, deferred and prepaid-held recipients are
/// held (`suspended`), those in flight marked, and its new mail is stored held until
/// [`resume_tenant`]. `None` if there is no such tenant.
pub(crate) async fn suspend_tenant(
    pools: &Pools,
    tenant_id: &str,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<Option<Held>, StoreError> {
    let op = "suspend_tenant";
    // The mark first, committed: accepts that commit after it store the tenant's new
    // mail held, and leasing leaves the tenant out, so nothing slips between the two.
    let done = sqlx::query(
        "UPDATE tenants SET suspended_at_ms = COALESCE(suspended_at_ms, $2), \
         suspend_reason = $3 WHERE id = $1",
    )
    .bind(tenant_id)
    .bind(now_ms)
    .bind(reason)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("{op} {tenant_id:?}")))?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let detail = serde_json::json!({"reason": "tenant suspended", "note": reason});
    let sel = Selector {
        tenant: Some(tenant_id.to_owned()),
        ..Selector::default()
    };
    hold_for_suspension(pools, &sel, &detail, now_ms)
        .await
        .map(Some)
}

/// Like [`hold`] for `suspended`, but a recipient held by request stays so (its release
/// finds the suspension), and prepaid holds are taken too.
async fn hold_for_suspension(
    pools: &Pools,
    sel: &Selector,
    detail: &serde_json::Value,
    now_ms: i64,
) -> Result<Held, StoreError> {
    let op = "suspend_tenant";
    let (cond, binds) = selector_sql(sel, 2);
    let update = format!(
        "UPDATE recipients SET state = 'held', hold = 'suspended', updated_at_ms = $1 \
         WHERE (message_id, idx) IN (SELECT r.message_id, r.idx FROM recipients r \
         WHERE r.state IN ('queued', 'deferred', 'held') AND r.hold IS NULL{cond} \
         LIMIT {CHUNK}) AND state IN ('queued', 'deferred', 'held') AND hold IS NULL \
         RETURNING message_id, idx, state"
    );
    let held = in_chunks(pools, op, &update, &binds, now_ms, |conn, rows| {
        let detail = detail.clone();
        Box::pin(async move {
            write_events(
                conn,
                &rows,
                EventKind::Held,
                &detail,
                now_ms,
                "suspend_tenant",
            )
            .await
        })
    })
    .await?;
    let in_flight = mark_in_flight(pools, op, sel, "suspended").await?;
    Ok(Held { held, in_flight })
}

/// Resumes a suspended tenant's sending: the mark goes, and what the suspension held is
/// released. `None` if there is no such tenant.
pub(crate) async fn resume_tenant(
    pools: &Pools,
    tenant_id: &str,
    now_ms: i64,
) -> Result<Option<usize>, StoreError> {
    let op = "resume_tenant";
    let done = sqlx::query(
        "UPDATE tenants SET suspended_at_ms = NULL, suspend_reason = NULL WHERE id = $1",
    )
    .bind(tenant_id)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("{op} {tenant_id:?}")))?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let sel = Selector {
        tenant: Some(tenant_id.to_owned()),
        ..Selector::default()
    };
    let detail = serde_json::json!({"reason": "tenant resumed"});
    release(pools, &sel, "suspended", &detail, now_ms)
        .await
        .map(Some)
}

/// The suspended tenants' ids (a handful at most; read on every lease and accept).
pub(crate) async fn suspended_tenants(
    conn: &mut AnyConnection,
    op: &str,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT id FROM tenants WHERE suspended_at_ms IS NOT NULL")
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::db(format!("{op}: suspended tenants")))?;
    rows.iter().map(|r| col(r, op, "id")).collect()
}

/// Inside an accept's transaction: the just-written messages of suspended tenants
/// (`tenants[i]` wrote `answers[i]`) are held (`suspended`) with a `held` event, and
/// lose the leases they were written with, so nothing hands them to a dispatcher.
pub(crate) async fn park_suspended(
    conn: &mut AnyConnection,
    tenants: &[&str],
    answers: &mut [Accepted],
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "accept";
    let suspended: HashSet<String> = suspended_tenants(conn, op).await?.into_iter().collect();
    if suspended.is_empty() {
        return Ok(());
    }
    let detail = serde_json::json!({"reason": "tenant suspended"});
    for (tenant, a) in tenants.iter().zip(answers.iter_mut()) {
        if a.duplicate || !suspended.contains(*tenant) {
            continue;
        }
        let rows = sqlx::query(
            "UPDATE recipients SET state = 'held', hold = 'suspended', lease_owner = NULL, \
             lease_until_ms = NULL WHERE message_id = $1 RETURNING message_id, idx",
        )
        .bind(&a.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::db(format!("{op}: holding message {:?}", a.id)))?;
        let mut changed = Vec::with_capacity(rows.len());
        for r in &rows {
            changed.push((
                col::<String>(r, op, "message_id")?,
                get_idx(r, op, "idx")?,
                None,
            ));
        }
        write_events(conn, &changed, EventKind::Held, &detail, now_ms, op).await?;
        a.leases.clear();
        for (_, state) in &mut a.recipients {
            *state = RecipientState::Held;
        }
    }
    Ok(())
}

/// Fills a store fast for `sluice bench queue`: `messages` messages of `tenants`
/// tenants (`bench-0`, …, created if missing), one recipient each over `domains`
/// domains, accepted over the `span_ms` before `now_ms`; every `live_every`-th one
/// still queued, the rest delivered. Multi-row inserts of `batch` messages per
/// transaction, no events (the queries read none). Returns how many were written.
pub async fn bench_fill(
    pools: &Pools,
    messages: u64,
    tenants: u32,
    domains: u32,
    live_every: u64,
    now_ms: i64,
    span_ms: i64,
) -> Result<u64, StoreError> {
    let op = "bench_fill";
    for t in 0..tenants {
        sqlx::query(
            "INSERT INTO tenants (id, name, allowed_sender_domains, pools, created_at_ms) \
             VALUES ($1, $1, '[\"example.com\"]', '[]', $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(format!("bench-{t}"))
        .bind(now_ms)
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(op))?;
    }
    let batch: u64 = 90; // 11 columns: within SQLite's 999 binds
    let mut ids = ulid::Generator::new();
    let body = b"Subject: bench\r\n\r\nbench\r\n".to_vec();
    let step = (span_ms / i64::try_from(messages.max(1)).unwrap_or(1)).max(1);
    let mut written = 0u64;
    while written < messages {
        // Many statements per commit: a commit per statement would be a sync per 90
        // messages.
        let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
        for _ in 0..100 {
            if written >= messages {
                break;
            }
            let n = batch.min(messages - written);
            let mut rows = Vec::with_capacity(n as usize);
            for i in 0..n {
                let k = written + i;
                let at = now_ms - span_ms + i64::try_from(k).unwrap_or(0) * step;
                let t = std::time::UNIX_EPOCH
                    + std::time::Duration::from_millis(u64::try_from(at).unwrap_or(0));
                let id = ids
                    .generate_from_datetime(t)
                    .unwrap_or_else(|_| ulid::Ulid::from_datetime(t))
                    .to_string();
                rows.push((id, k, at));
            }
            let mut sql = String::from(
                "INSERT INTO messages (id, tenant_id, idempotency_key, sender, body, size, tags, \
             max_age_secs, created_at_ms) VALUES ",
            );
            let cols = 8;
            for (i, _) in rows.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                sql.push_str(&placeholders(i * cols + 1, 2));
                sql.push_str(", NULL, ");
                sql.push_str(&placeholders(i * cols + 3, 6));
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for (id, k, at) in &rows {
                let tags = if k % 10 == 0 {
                    vec!["promo".to_owned()]
                } else {
                    vec!["bulk".to_owned()]
                };
                q = q
                    .bind(id.clone())
                    .bind(format!("bench-{}", k % u64::from(tenants.max(1))))
                    .bind(format!("sender{}@example.com", k % 50))
                    .bind(body.clone())
                    .bind(i64::try_from(body.len()).unwrap_or(0))
                    .bind(list_to_text(&tags))
                    .bind(86_400_i64)
                    .bind(*at);
            }
            q.execute(&mut *tx).await.map_err(StoreError::db(op))?;
            let mut sql = String::from(
                "INSERT INTO recipients (message_id, idx, address, domain, state, attempts, \
             next_attempt_at_ms, updated_at_ms, last_relay) VALUES ",
            );
            let cols = 8;
            for (i, _) in rows.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                sql.push_str(&placeholders(i * cols + 1, 1));
                sql.push_str(", 0, ");
                sql.push_str(&placeholders(i * cols + 2, 7));
                sql.push(')');
            }
            let mut q = sqlx::query(&sql);
            for (id, k, at) in &rows {
                let domain = format!("d{}.example", k % u64::from(domains.max(1)));
                let live = live_every > 0 && k % live_every == 0;
                q = q
                    .bind(id.clone())
                    .bind(format!("user{k}@{domain}"))
                    .bind(domain)
                    .bind(if live { "queued" } else { "delivered" })
                    .bind(i64::from(!live))
                    .bind(*at)
                    .bind(*at)
                    .bind(if live {
                        None
                    } else {
                        Some(format!("relay-{}", k % 4))
                    });
            }
            q.execute(&mut *tx).await.map_err(StoreError::db(op))?;
            written += n;
        }
        tx.commit().await.map_err(StoreError::db(op))?;
    }
    // Fresh statistics, as a store that grew over time would have: the plans measured
    // are the plans a live store gets.
    sqlx::query("ANALYZE")
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(format!("{op}: ANALYZE")))?;
    Ok(written)
}

/// The plan the database chooses for `sql`: SQLite's `EXPLAIN QUERY PLAN` details or
/// PostgreSQL's `EXPLAIN` lines.
pub(crate) async fn explain(
    pools: &Pools,
    sql: &str,
    binds: &[String],
) -> Result<Vec<String>, StoreError> {
    use sqlx::Row as _;
    let op = "explain";
    let (prefix, column) = match pools.backend {
        Backend::Sqlite => ("EXPLAIN QUERY PLAN ", 3),
        Backend::Postgres => ("EXPLAIN ", 0),
    };
    let sql = format!("{prefix}{sql}");
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(&pools.read).await.map_err(StoreError::db(op))?;
    rows.iter()
        .map(|r| {
            r.try_get::<String, _>(column)
                .map_err(StoreError::db(format!("{op}: reading the plan")))
        })
        .collect()
}

/// The plan of a search page's query.
pub(crate) async fn explain_search(
    pools: &Pools,
    q: &MessageQuery,
) -> Result<Vec<String>, StoreError> {
    let (sql, binds) = search_sql(pools.backend, q);
    explain(pools, &sql, &binds).await
}

/// The queries of [`queue_summary`], by name (for their plans).
pub fn summary_queries() -> Vec<(&'static str, String)> {
    summary_sql()
}
