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
//!   final), through `recipients_tenant_due`, so its cost follows the queue, not the history.

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
///
/// With a tag the page is driven from `message_tags` (migration 0028): the tag's rows
/// of the tenant are one range of its key in message id order, so the id bounds
/// (cursor, since, until) and the order are on `t.message_id`, and a rare tag costs
/// its own rows, not a walk of the tenant's messages. `CROSS JOIN` keeps SQLite from
/// walking the tenant's messages and probing the tags for each (it takes the left table
/// as the outer loop; to PostgreSQL it is a plain join).
pub(crate) fn search_sql(q: &MessageQuery) -> (String, Vec<String>) {
    let mut binds: Vec<String> = vec![q.tenant_id.clone()];
    let (mut sql, key) = match &q.tag {
        Some(tag) => {
            binds.push(tag.clone());
            (
                String::from(
                    "SELECT m.id, m.sender, m.tags, m.created_at_ms, m.header_message_id \
                     FROM message_tags t CROSS JOIN messages m \
                     WHERE t.tenant_id = $1 AND t.tag = $2 AND m.id = t.message_id \
                     AND m.tenant_id = $1",
                ),
                "t.message_id",
            )
        }
        None => (
            String::from(
                "SELECT m.id, m.sender, m.tags, m.created_at_ms, m.header_message_id \
                 FROM messages m WHERE m.tenant_id = $1",
            ),
            "m.id",
        ),
    };
    let mut bind = |sql: &mut String, cond: &str, value: String| {
        binds.push(value);
        sql.push_str(
            &cond
                .replace("$?", &format!("${}", binds.len()))
                .replace("{key}", key),
        );
    };
    if let Some(after) = &q.after {
        bind(&mut sql, " AND {key} < $?", after.clone());
    }
    if let Some(since) = q.since_ms {
        bind(&mut sql, " AND {key} >= $?", ulid_floor(since));
    }
    if let Some(until) = q.until_ms {
        bind(&mut sql, " AND {key} < $?", ulid_floor(until));
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
    if let Some(state) = q.state {
        // A live state is a small set, read through `recipients_tenant_due`; a final
        // state is most of the history, so each candidate is checked instead, by its
        // primary key: `r.state || ''` so that no state index can serve the check
        // (SQLite without statistics walked every delivered row per candidate).
        let cond = if is_live(state) {
            " AND m.id IN (SELECT message_id FROM recipients WHERE state = $?)"
        } else {
            " AND EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id \
             AND (r.state || '') = $?)"
        };
        bind(&mut sql, cond, state.as_str().to_owned());
    }
    sql.push_str(&format!(" ORDER BY {key} DESC LIMIT {}", q.limit));
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
    let (sql, binds) = search_sql(q);

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
                "SELECT r.tenant_id AS k, COUNT(*) AS n, MIN(r.message_id) AS oldest \
                 FROM recipients r WHERE r.state IN {LIVE} GROUP BY r.tenant_id"
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
/// `recipients_tenant_due`), so the cost follows the queue, not the history; `top_n` bounds
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
/// Every condition is on the recipient's own columns (the tenant is on the recipient
/// since migration 0024), so a pick is one table's index range and its filters.
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
        add(" AND r.tenant_id = $?", t);
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

/// One bulk change, run in batches of at most [`CHUNK`] recipients, each batch its own
/// write transaction in two statements:
///
/// 1. the pick: `SELECT r.message_id, r.idx FROM recipients r WHERE {pick} LIMIT
///    CHUNK`, read through the index its first condition names (a state range of
///    `recipients_due`/`recipients_tenant_due`, or `recipients_hold`);
/// 2. the change, by primary key: `UPDATE recipients SET {set} WHERE message_id IN
///    (…the picked ids…) AND …the whole keys… AND {recheck}` ([`change_sql`]).
///
/// Why not one `UPDATE … WHERE (message_id, idx) IN (SELECT … LIMIT n)`, as before:
/// PostgreSQL plans that from statistics that a large hold makes stale (`hold` all
/// NULL when last analysed), drove the update from `recipients_hold` and ran the
/// subquery once per held row: 28 s per 1,000 at 1 M messages. Keys given as values
/// leave the planner one way in, a primary-key probe per key, whatever it believes
/// about `hold`. `recheck` repeats what the pick asked, so a row another writer
/// changed between the two statements (PostgreSQL: read committed) is left alone; it is
/// written so that no index can serve it (`COALESCE(hold, '')`, `state || ''`): a
/// plain `hold = $2` let PostgreSQL, believing few rows held, drive the change from
/// `recipients_hold` and compare every held row with the 1,000 keys (by hand with
/// `EXPLAIN`, 300,000 rows: a nested loop semi join over the whole hold).
struct Bulk<'a> {
    op: &'a str,
    /// Conditions on `recipients r`, binds `$1…` (`pick_binds`). A change must take a
    /// row out of its own pick (or the pick must be `ordered`), so batches move on.
    pick: String,
    pick_binds: Vec<String>,
    /// The pick walks `recipients_hold`, `(hold, message_id)`: it is read in message
    /// order from where the last batch stopped, so rows the pick passes over but the
    /// selector's filters refuse are walked once per bulk change, not once per batch.
    ordered: bool,
    /// `SET` list: `$1` is now, then `set_binds` as `$2…`.
    set: String,
    set_binds: Vec<String>,
    /// Conditions on the row updated, same binds as `set`; no index may serve them
    /// (see above).
    recheck: String,
}

/// The pick's SQL for one batch, and whether a cursor bind follows `pick_binds`.
fn pick_sql(b: &Bulk<'_>, cursor: bool) -> String {
    let mut sql = format!(
        "SELECT r.message_id, r.idx FROM recipients r WHERE {}",
        b.pick
    );
    if b.ordered {
        if cursor {
            sql.push_str(&format!(" AND r.message_id >= ${}", b.pick_binds.len() + 1));
        }
        sql.push_str(" ORDER BY r.message_id");
    }
    sql.push_str(&format!(" LIMIT {CHUNK}"));
    sql
}

/// The change's SQL for `ids` distinct message ids and `keys` keys.
///
/// The keys are given twice: the message ids as a list, which the primary key serves
/// (`message_id = ANY(…)`: a probe per id, on both stores and whatever the statistics),
/// and the whole keys as `message_id:idx` texts, a filter on the rows found that no index
/// can serve, so it cannot change the plan. Joining a `VALUES` list on both key columns
/// instead let the planners choose the order: SQLite scanned the table against the list,
/// PostgreSQL hashed the list and walked the whole primary key.
fn change_sql(b: &Bulk<'_>, ids: usize, keys: usize) -> String {
    let first = b.set_binds.len() + 2;
    format!(
        "UPDATE recipients SET {} WHERE message_id IN ({}) \
         AND (message_id || ':' || idx) IN ({}) AND {} \
         RETURNING message_id, idx, state",
        b.set,
        placeholders(first, ids),
        placeholders(first + ids, keys),
        b.recheck
    )
}

/// The distinct message ids of `keys`, in order, and each key as `message_id:idx`.
fn key_binds(keys: &[(String, i32)]) -> (Vec<&str>, Vec<String>) {
    let mut seen = HashSet::with_capacity(keys.len());
    let ids: Vec<&str> = keys
        .iter()
        .map(|(m, _)| m.as_str())
        .filter(|m| seen.insert(*m))
        .collect();
    let whole = keys.iter().map(|(m, idx)| format!("{m}:{idx}")).collect();
    (ids, whole)
}

/// Runs `b` until its pick finds no more; `then` writes the events (and usage) of each
/// batch's changed rows in its transaction. Returns how many rows were changed.
async fn in_batches<F>(
    pools: &Pools,
    b: &Bulk<'_>,
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
    let op = b.op;
    let mut total = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
        index_paths_only(&mut tx, pools.backend, op).await?;
        let sql = pick_sql(b, b.ordered && cursor.is_some());
        let mut q = sqlx::query(&sql);
        for v in &b.pick_binds {
            q = q.bind(v);
        }
        if let Some(c) = cursor.as_ref().filter(|_| b.ordered) {
            q = q.bind(c);
        }
        let picked = q
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(format!("{op}: picking a batch")))?;
        let mut keys = Vec::with_capacity(picked.len());
        for r in &picked {
            keys.push((col::<String>(r, op, "message_id")?, get_idx(r, op, "idx")?));
        }
        if keys.is_empty() {
            tx.commit().await.map_err(StoreError::db(op))?;
            return Ok(total);
        }
        let (ids, whole) = key_binds(&keys);
        let sql = change_sql(b, ids.len(), whole.len());
        let mut q = sqlx::query(&sql).bind(now_ms);
        for v in &b.set_binds {
            q = q.bind(v);
        }
        for m in &ids {
            q = q.bind(*m);
        }
        for k in &whole {
            q = q.bind(k);
        }
        let rows = q
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(format!("{op}: changing a batch")))?;
        let mut changed = Vec::with_capacity(rows.len());
        for r in &rows {
            changed.push((
                col::<String>(r, op, "message_id")?,
                get_idx(r, op, "idx")?,
                col::<Option<String>>(r, op, "state")?,
            ));
        }
        total += changed.len();
        if !changed.is_empty() {
            then(&mut tx, changed).await?;
        }
        tx.commit().await.map_err(StoreError::db(op))?;
        if (keys.len() as i64) < CHUNK {
            return Ok(total);
        }
        // The last message may have recipients past this batch: `>=` reads them again
        // (those changed have left the pick).
        cursor = keys.last().map(|(m, _)| m.clone());
    }
}

/// On PostgreSQL, for the rest of the transaction: no sequential scans where an index
/// serves. A batch's statements are right only by index (a pick of at most [`CHUNK`]
/// rows, a change of that many keys); on a small table the planner rightly finds a
/// scan cheaper, and with statistics a large hold made stale it may think so of a large
/// one. With this the plan is the same whatever the size and the statistics.
async fn index_paths_only(
    conn: &mut AnyConnection,
    backend: Backend,
    op: &str,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *conn)
            .await
            .map_err(StoreError::db(format!("{op}: enable_seqscan")))?;
    }
    Ok(())
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

/// The bulk changes a hold of `sel` for `why` makes, in order, each taking its rows out
/// of its own pick: for a hold by request, what a suspension holds (read through
/// `recipients_hold`); then the queued and deferred (their state ranges, which held
/// rows are not in, however many); then the prepaid holds (`recipients_prepaid`,
/// migration 0028: the `held` range itself may be millions held by request).
fn hold_bulks<'a>(op: &'a str, sel: &Selector, why: &str) -> Vec<Bulk<'a>> {
    let (cond, binds) = selector_sql(sel, 1);
    let bulk = |pick: String, ordered: bool, recheck: &str| Bulk {
        op,
        pick,
        pick_binds: binds.clone(),
        ordered,
        set: "state = 'held', hold = $2, updated_at_ms = $1".to_owned(),
        set_binds: vec![why.to_owned()],
        recheck: recheck.to_owned(),
    };
    let mut bulks = Vec::new();
    if why == "hold" {
        bulks.push(bulk(
            format!("r.hold = 'suspended' AND (r.state || '') = 'held'{cond}"),
            true,
            "COALESCE(hold, '') = 'suspended' AND (state || '') = 'held'",
        ));
    }
    bulks.push(bulk(
        format!("r.state IN ('queued', 'deferred'){cond}"),
        false,
        "(state || '') IN ('queued', 'deferred')",
    ));
    bulks.push(bulk(
        format!("r.state = 'held' AND r.hold IS NULL{cond}"),
        false,
        "(state || '') = 'held' AND COALESCE(hold, '') = ''",
    ));
    bulks
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
    let mut held = 0;
    for b in hold_bulks(op, sel, why) {
        held += in_batches(pools, &b, now_ms, |conn, rows| {
            let detail = detail.clone();
            Box::pin(async move {
                write_events(conn, &rows, EventKind::Held, &detail, now_ms, "hold").await
            })
        })
        .await?;
    }
    let in_flight = mark_in_flight(pools, op, sel, why).await?;
    Ok(Held { held, in_flight })
}

/// Marks the recipients `sel` selects that are in flight now with `why` (`hold` or
/// `suspended`): they are not taken from their host, and go to `held` if their attempt
/// does not finish them. Returns how many were marked. Work in flight is bounded by
/// the leases hosts hold, so one statement on the `delivering` range.
async fn mark_in_flight(
    pools: &Pools,
    op: &str,
    sel: &Selector,
    why: &str,
) -> Result<usize, StoreError> {
    let (cond, sel_binds) = selector_sql(sel, 2);
    let mark = format!(
        "UPDATE recipients AS r SET hold = $1 WHERE r.state = 'delivering' AND r.hold IS NULL{cond}"
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

/// The bulk change of a release of what `sel` selects among the recipients held for
/// `why`: read through `recipients_hold` in message order.
fn release_bulk<'a>(sel: &Selector, why: &str) -> Bulk<'a> {
    let (cond, binds) = selector_sql(sel, 2);
    let mut pick_binds = vec![why.to_owned()];
    pick_binds.extend(binds);
    Bulk {
        op: "release",
        pick: format!("r.hold = $1 AND (r.state || '') IN {LIVE}{cond}"),
        pick_binds,
        ordered: true,
        set: "state = CASE WHEN state = 'held' THEN \
              (CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END) ELSE state END, \
              next_attempt_at_ms = CASE WHEN state = 'held' THEN $1 ELSE next_attempt_at_ms END, \
              hold = NULL, waiting_for_relay = NULL, updated_at_ms = $1"
            .to_owned(),
        set_binds: vec![why.to_owned()],
        recheck: "COALESCE(hold, '') = $2".to_owned(),
    }
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
    if why == "hold" {
        keep_suspensions(pools, sel, now_ms).await?;
    }
    in_batches(pools, &release_bulk(sel, why), now_ms, |conn, rows| {
        let detail = detail.clone();
        Box::pin(async move {
            // Marked work in flight was never held: no event for it.
            let released: Vec<_> = rows
                .into_iter()
                .filter(|(_, _, s)| s.as_deref() != Some("delivering"))
                .collect();
            write_events(conn, &released, EventKind::Released, &detail, now_ms, op).await
        })
    })
    .await
}

/// Before a hold's release: what `sel` selects of the suspended tenants' holds becomes
/// their suspension's (`hold` → `suspended`), so the release leaves it held. Nothing to
/// do, and nothing read, while no tenant is suspended; else their ids are given as
/// values, and the walk is of `recipients_hold`'s `hold` range in message order.
async fn keep_suspensions(pools: &Pools, sel: &Selector, now_ms: i64) -> Result<(), StoreError> {
    let op = "release";
    let mut conn = pools.read.acquire().await.map_err(StoreError::db(op))?;
    let suspended = suspended_tenants(&mut conn, op).await?;
    drop(conn);
    if suspended.is_empty() {
        return Ok(());
    }
    let (cond, mut binds) = selector_sql(sel, 1);
    let first = binds.len() + 1;
    let tenants = placeholders(first, suspended.len());
    binds.extend(suspended);
    let b = Bulk {
        op: "release: suspended tenants' holds",
        pick: format!("r.hold = 'hold'{cond} AND r.tenant_id IN ({tenants})"),
        pick_binds: binds,
        ordered: true,
        set: "hold = 'suspended', updated_at_ms = $1".to_owned(),
        set_binds: Vec::new(),
        recheck: "COALESCE(hold, '') = 'hold'".to_owned(),
    };
    in_batches(pools, &b, now_ms, |_, _| Box::pin(async { Ok(()) }))
        .await
        .map(|_| ())
}

/// What a cancel did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cancelled {
    /// Recipients failed now.
    pub cancelled: usize,
    /// Recipients in flight, left to finish their attempt.
    pub in_flight: usize,
}

/// The bulk change of a cancel: the waiting recipients `sel` selects, through the
/// state ranges (a failed row leaves them).
fn cancel_bulk<'a>(sel: &Selector, reason: &str) -> Bulk<'a> {
    let (cond, binds) = selector_sql(sel, 1);
    Bulk {
        op: "cancel",
        pick: format!("r.state IN ('queued', 'deferred', 'held'){cond}"),
        pick_binds: binds,
        ordered: false,
        set: "state = 'failed', hold = NULL, waiting_for_relay = NULL, \
              last_reply = $2, updated_at_ms = $1"
            .to_owned(),
        set_binds: vec![format!("cancelled: {reason}")],
        recheck: "(state || '') IN ('queued', 'deferred', 'held')".to_owned(),
    }
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
    let cancelled = in_batches(pools, &cancel_bulk(sel, reason), now_ms, |conn, rows| {
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
    let mut held = 0;
    for b in hold_bulks(op, sel, "suspended") {
        held += in_batches(pools, &b, now_ms, |conn, rows| {
            let detail = detail.clone();
            Box::pin(async move {
                write_events(conn, &rows, EventKind::Held, &detail, now_ms, op).await
            })
        })
        .await?;
    }
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
/// still queued, the rest delivered. Every 10th is tagged `promo`, the others `bulk`,
/// and every 100,000th `rare` too (all of them `bench-0`'s). Multi-row inserts of `batch` messages per
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
            let tags_of = |k: u64| {
                let mut tags = vec![
                    if k.is_multiple_of(10) {
                        "promo"
                    } else {
                        "bulk"
                    }
                    .to_owned(),
                ];
                if k.is_multiple_of(100_000) {
                    tags.push("rare".to_owned());
                }
                tags
            };
            let mut q = sqlx::query(&sql);
            for (id, k, at) in &rows {
                let tags = tags_of(*k);
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
            let tenant_of = |k: u64| format!("bench-{}", k % u64::from(tenants.max(1)));
            let tags: Vec<(String, String, String)> = rows
                .iter()
                .flat_map(|(id, k, _)| {
                    tags_of(*k)
                        .into_iter()
                        .map(move |t| (tenant_of(*k), t, id.clone()))
                })
                .collect();
            let tags: Vec<(&str, &str, &str)> = tags
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                .collect();
            super::accept::insert_tags(&mut tx, &tags, op).await?;
            let mut sql = String::from(
                "INSERT INTO recipients (message_id, idx, address, domain, state, attempts, \
             next_attempt_at_ms, updated_at_ms, last_relay, tenant_id) VALUES ",
            );
            let cols = 9;
            for (i, _) in rows.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                sql.push_str(&placeholders(i * cols + 1, 1));
                sql.push_str(", 0, ");
                sql.push_str(&placeholders(i * cols + 2, 8));
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
                    })
                    .bind(tenant_of(*k));
            }
            q.execute(&mut *tx).await.map_err(StoreError::db(op))?;
            written += n;
        }
        tx.commit().await.map_err(StoreError::db(op))?;
    }
    // The statistics a live store has, so the plans measured are the plans it gets:
    // PostgreSQL's autovacuum analyses a table that grew, so fresh ones there; SQLite's
    // are never gathered (Sluice runs no ANALYZE on it), so none.
    if pools.backend == Backend::Postgres {
        sqlx::query("ANALYZE")
            .execute(&pools.write)
            .await
            .map_err(StoreError::db(format!("{op}: ANALYZE")))?;
    }
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
    let (sql, binds) = search_sql(q);
    explain(pools, &sql, &binds).await
}

/// The plans of the statements a bulk hold, release and cancel of `sel` run for each
/// batch, in the settings a batch runs with ([`index_paths_only`]): every pick (with the
/// cursor of a later batch where it has one) and the change of a full batch by its keys.
pub(crate) async fn explain_bulk(
    pools: &Pools,
    sel: &Selector,
) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    use sqlx::Row as _;
    let op = "explain_bulk";
    let mut bulks: Vec<(String, Bulk<'_>)> = hold_bulks("hold", sel, "hold")
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("hold {}", i + 1), b))
        .collect();
    bulks.push(("release".to_owned(), release_bulk(sel, "hold")));
    bulks.push(("cancel".to_owned(), cancel_bulk(sel, "explain")));
    let (prefix, column) = match pools.backend {
        Backend::Sqlite => ("EXPLAIN QUERY PLAN ", 3),
        Backend::Postgres => ("EXPLAIN ", 0),
    };
    let mut tx = pools.read.begin().await.map_err(StoreError::db(op))?;
    index_paths_only(&mut tx, pools.backend, op).await?;
    let lines = |rows: Vec<sqlx::any::AnyRow>| -> Result<Vec<String>, StoreError> {
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>(column)
                    .map_err(StoreError::db(format!("{op}: reading the plan")))
            })
            .collect()
    };
    let mut plans = Vec::new();
    for (name, b) in &bulks {
        let sql = format!("{prefix}{}", pick_sql(b, b.ordered));
        let mut q = sqlx::query(&sql);
        for v in &b.pick_binds {
            q = q.bind(v);
        }
        if b.ordered {
            q = q.bind(ulid_floor(0));
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(StoreError::db(op))?;
        plans.push((format!("{name}: pick"), lines(rows)?));
        // A full batch of made-up keys: the plan is the one a batch of CHUNK gets.
        let keys: Vec<(String, i32)> = (0..CHUNK).map(|k| (ulid_floor(k), 0)).collect();
        let (ids, whole) = key_binds(&keys);
        let sql = format!("{prefix}{}", change_sql(b, ids.len(), whole.len()));
        let mut q = sqlx::query(&sql).bind(0_i64);
        for v in &b.set_binds {
            q = q.bind(v);
        }
        for m in &ids {
            q = q.bind(*m);
        }
        for k in &whole {
            q = q.bind(k);
        }
        let rows = q.fetch_all(&mut *tx).await.map_err(StoreError::db(op))?;
        plans.push((format!("{name}: change"), lines(rows)?));
    }
    // EXPLAIN (without ANALYZE) changed nothing; the setting goes with the rollback.
    tx.rollback().await.map_err(StoreError::db(op))?;
    Ok(plans)
}

/// The queries of [`queue_summary`], by name (for their plans).
pub fn summary_queries() -> Vec<(&'static str, String)> {
    summary_sql()
}
