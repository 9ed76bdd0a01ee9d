//! Leasing work: due recipients (and those whose lease expired with a crashed host) are
//! handed to one owner for a while; renewing and giving them back.
//!
//! On PostgreSQL the candidate rows are locked with `FOR UPDATE SKIP LOCKED`, so hosts
//! leasing at the same moment take disjoint rows without waiting on each other; a row
//! another host changed in the meantime is re-checked against the condition by
//! PostgreSQL before it is taken. On SQLite there is one writer, and the statement is
//! atomic on its own.

use std::collections::HashMap;

use super::StoreError;
use super::codec::{col, get_idx, get_list, get_u32, placeholders};
use super::connect::{Backend, Pools};
use super::types::{Lease, LeaseKey};

/// Messages looked up per statement (well under SQLite's bind limit).
const CHUNK: usize = 500;

struct MessageInfo {
    tenant_id: String,
    sender: String,
    size: u64,
    tags: Vec<String>,
    max_age_secs: u32,
    created_at_ms: i64,
}

/// Tenants asked by one statement of a look: two parts each, well under SQLite's 500
/// terms of a compound SELECT.
const TENANTS_PER_STATEMENT: usize = 100;

/// The tenants that have queued or deferred recipients (due or not), read on a reader:
/// a skip through the index on (state, tenant_id, …) from one tenant to the next, so it
/// costs a probe per such tenant, not a row per recipient. A tenant that gets work
/// after this read is asked at the next look.
async fn tenants_with_work(
    pools: &Pools,
    context: impl Fn() -> String,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(&tenants_with_work_sql())
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(context()))?;
    rows.iter().map(|r| col(r, "lease_due", "id")).collect()
}

/// The SQL of [`tenants_with_work`] (also for its plan, `plans.rs`).
pub(crate) fn tenants_with_work_sql() -> String {
    let skip = |name: &str, state: &str| {
        format!(
            "{name}(id) AS ( \
                 SELECT (SELECT tenant_id FROM recipients WHERE state = '{state}' \
                         ORDER BY tenant_id LIMIT 1) \
                 UNION ALL \
                 SELECT (SELECT r.tenant_id FROM recipients r WHERE r.state = '{state}' \
                         AND r.tenant_id > {name}.id ORDER BY r.tenant_id LIMIT 1) \
                 FROM {name} WHERE {name}.id IS NOT NULL)"
        )
    };
    format!(
        "WITH RECURSIVE {}, {} \
         SELECT id FROM q WHERE id IS NOT NULL UNION SELECT id FROM d WHERE id IS NOT NULL",
        skip("q", "queued"),
        skip("d", "deferred")
    )
}

/// A lease needs an owner and a positive length.
pub(crate) fn check_terms(op: &str, owner: &str, lease_ms: i64) -> Result<(), StoreError> {
    if owner.is_empty() {
        return Err(StoreError::invalid(op, "the lease owner is empty"));
    }
    if lease_ms <= 0 {
        return Err(StoreError::invalid(
            op,
            format!("lease of {lease_ms} ms; it must be positive"),
        ));
    }
    Ok(())
}

pub(crate) async fn lease_due(
    pools: &Pools,
    owner: &str,
    now_ms: i64,
    lease_ms: i64,
    limit: u32,
    except_tenants: &[String],
) -> Result<Vec<Lease>, StoreError> {
    let op = "lease_due";
    check_terms(op, owner, lease_ms)?;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let lease_until_ms = now_ms.saturating_add(lease_ms);
    let context = || format!("{op} for owner {owner:?}");
    // Tenants at their share on this host are left out: their due work stays in the
    // store for later (or for another host), and the others' is not stuck behind it.
    // They are left out by not being asked: each other tenant with queued or deferred
    // work is asked for its own oldest due rows (the index on (state, tenant_id,
    // next_attempt_at_ms), migration 0024), so the look reads at most `limit` rows per
    // tenant and state, however many a tenant at its share has waiting. (It used to walk
    // all due rows in due order and skip those of the tenants left out one by one.)
    let with_work = tenants_with_work(pools, context).await?;
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    // So are suspended tenants: their queue is held (`queue.rs`), and this catches
    // what was queued around the moment of the suspension.
    let mut except_tenants = except_tenants.to_vec();
    for t in super::queue::suspended_tenants(&mut tx, op).await? {
        if !except_tenants.contains(&t) {
            except_tenants.push(t);
        }
    }
    let mut tenants: Vec<String> = with_work
        .into_iter()
        .filter(|t| !except_tenants.contains(t))
        .collect();
    // With more tenants than one statement asks, the first statements may fill the
    // batch: start at a place that moves with the clock so that none is always last.
    if tenants.len() > TENANTS_PER_STATEMENT {
        let start = usize::try_from(now_ms.rem_euclid(tenants.len() as i64)).unwrap_or(0);
        tenants.rotate_left(start);
    }
    let mut rows = Vec::new();
    // The first statement also takes the expired leases (of a crashed host): few, by
    // the index on lease_until_ms of the recipients in flight (migration 0029).
    let mut chunks: Vec<&[String]> = tenants.chunks(TENANTS_PER_STATEMENT).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (n, chunk) in chunks.into_iter().enumerate() {
        let left = limit as usize - rows.len();
        if left == 0 {
            break;
        }
        let expired = n == 0;
        let sql = lease_sql(pools.backend, chunk.len(), expired, except_tenants.len());
        let mut query = sqlx::query(&sql)
            .bind(now_ms)
            .bind(left as i64)
            .bind(owner)
            .bind(lease_until_ms);
        for t in chunk {
            query = query.bind(t);
        }
        if expired {
            for t in &except_tenants {
                query = query.bind(t);
            }
        }
        rows.extend(
            query
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::db(context()))?,
        );
    }

    let mut message_ids: Vec<String> = Vec::new();
    for row in &rows {
        let id: String = col(row, op, "message_id")?;
        if !message_ids.contains(&id) {
            message_ids.push(id);
        }
    }
    let mut messages: HashMap<String, MessageInfo> = HashMap::new();
    for chunk in message_ids.chunks(CHUNK) {
        let sql = format!(
            "SELECT id, tenant_id, sender, size, tags, max_age_secs, created_at_ms \
             FROM messages WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        let found = query
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(context()))?;
        for m in &found {
            let size: i64 = col(m, op, "size")?;
            messages.insert(
                col(m, op, "id")?,
                MessageInfo {
                    tenant_id: col(m, op, "tenant_id")?,
                    sender: col(m, op, "sender")?,
                    size: u64::try_from(size).unwrap_or(0),
                    tags: get_list(m, op, "tags")?,
                    max_age_secs: get_u32(m, op, "max_age_secs")?,
                    created_at_ms: col(m, op, "created_at_ms")?,
                },
            );
        }
    }
    tx.commit().await.map_err(StoreError::db(context()))?;

    let mut leases = Vec::with_capacity(rows.len());
    for row in &rows {
        let message_id: String = col(row, op, "message_id")?;
        let info = messages
            .get(&message_id)
            .ok_or_else(|| StoreError::not_found(op, "message of a recipient", &message_id))?;
        leases.push(Lease {
            tenant_id: info.tenant_id.clone(),
            recipient_idx: get_idx(row, op, "idx")?,
            address: col(row, op, "address")?,
            domain: col(row, op, "domain")?,
            attempts: get_u32(row, op, "attempts")?,
            created_at_ms: info.created_at_ms,
            max_age_secs: info.max_age_secs,
            sender: info.sender.clone(),
            size: info.size,
            tags: info.tags.clone(),
            lease_until_ms,
            message_id,
        });
    }
    // RETURNING gives no order; hand work out oldest message first.
    leases.sort_by(|a, b| (&a.message_id, a.recipient_idx).cmp(&(&b.message_id, b.recipient_idx)));
    Ok(leases)
}

/// The claim of [`lease_due`] for `tenants` tenants (binds `$5`…), with the expired
/// leases of any tenant but `except` others (binds after the tenants) when `expired`:
/// `$1` now, `$2` the limit, `$3` the owner, `$4` the lease's end.
pub(crate) fn lease_sql(backend: Backend, tenants: usize, expired: bool, except: usize) -> String {
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let mut parts = Vec::with_capacity(tenants * 2 + 1);
    for i in 0..tenants {
        for state in ["queued", "deferred"] {
            parts.push(format!(
                "SELECT * FROM (SELECT message_id, idx, next_attempt_at_ms AS due \
                 FROM recipients WHERE state = '{state}' AND tenant_id = ${t} \
                 AND next_attempt_at_ms <= $1 ORDER BY next_attempt_at_ms LIMIT $2) {state}{i}",
                t = i + 5
            ));
        }
    }
    if expired {
        let except = if except == 0 {
            String::new()
        } else {
            format!(
                "AND tenant_id NOT IN ({})",
                placeholders(5 + tenants, except)
            )
        };
        parts.push(format!(
            "SELECT * FROM (SELECT message_id, idx, next_attempt_at_ms AS due \
             FROM recipients WHERE state = 'delivering' AND lease_until_ms <= $1 \
             AND hold IS NULL {except} \
             ORDER BY lease_until_ms LIMIT $2) expired"
        ));
    }
    // The outer condition is the lease's own: on PostgreSQL a row another host took
    // meanwhile is skipped (locked) or re-checked against it (committed).
    format!(
        "UPDATE recipients SET state = 'delivering', lease_owner = $3, lease_until_ms = $4, \
         routed_relay = NULL, updated_at_ms = $1 \
         WHERE (message_id, idx) IN ( \
             SELECT r.message_id, r.idx FROM recipients r \
             WHERE (r.message_id, r.idx) IN ( \
                 SELECT c.message_id, c.idx FROM ({parts}) c \
                 ORDER BY c.due, c.message_id, c.idx LIMIT $2) \
             AND ((r.state IN ('queued', 'deferred') AND r.next_attempt_at_ms <= $1) \
                OR (r.state = 'delivering' AND r.lease_until_ms <= $1 AND r.hold IS NULL)) \
             {lock}) \
         RETURNING message_id, idx, address, domain, attempts",
        parts = parts.join(" UNION ALL ")
    )
}

pub(crate) async fn renew(
    pools: &Pools,
    owner: &str,
    keys: &[LeaseKey],
    now_ms: i64,
    lease_ms: i64,
) -> Result<usize, StoreError> {
    Ok(renew_each(pools, owner, None, keys, now_ms, lease_ms)
        .await?
        .len())
}

/// Like [`renew`], but says which leases were still `owner`'s (and are renewed). With
/// an `incarnation`, only while it is still `owner`'s current one in `nodes`: a process
/// that slept while a newer one took its node id over renews (and so sends) nothing.
pub(crate) async fn renew_each(
    pools: &Pools,
    owner: &str,
    incarnation: Option<&str>,
    keys: &[LeaseKey],
    now_ms: i64,
    lease_ms: i64,
) -> Result<Vec<LeaseKey>, StoreError> {
    let op = "renew_leases";
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let context = || format!("{op} for owner {owner:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let mut renewed = Vec::new();
    let sql = if incarnation.is_some() {
        "UPDATE recipients SET lease_until_ms = $1 \
         WHERE message_id = $2 AND idx = $3 AND lease_owner = $4 AND state = 'delivering' \
         AND EXISTS (SELECT 1 FROM nodes WHERE id = $4 AND incarnation = $5)"
    } else {
        "UPDATE recipients SET lease_until_ms = $1 \
         WHERE message_id = $2 AND idx = $3 AND lease_owner = $4 AND state = 'delivering'"
    };
    for key in keys {
        let mut query = sqlx::query(sql)
            .bind(now_ms.saturating_add(lease_ms))
            .bind(&key.message_id)
            .bind(i64::from(key.recipient_idx))
            .bind(owner);
        if let Some(incarnation) = incarnation {
            query = query.bind(incarnation);
        }
        let done = query
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(format!(
                "{}: message {:?} recipient {}",
                context(),
                key.message_id,
                key.recipient_idx
            )))?;
        if done.rows_affected() > 0 {
            renewed.push(key.clone());
        }
    }
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(renewed)
}

/// Gives back what `$1` holds in flight, due at `$2` (shutdown; a node id taken over).
pub(crate) const RELEASE_SQL: &str = "UPDATE recipients SET \
     state = CASE WHEN hold IS NOT NULL THEN 'held' \
     WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END, \
     lease_owner = NULL, lease_until_ms = NULL, routed_relay = NULL, \
     next_attempt_at_ms = $2, updated_at_ms = $2 \
     WHERE lease_owner = $1 AND state = 'delivering'";

pub(crate) async fn release(pools: &Pools, owner: &str, now_ms: i64) -> Result<usize, StoreError> {
    let done = sqlx::query(RELEASE_SQL)
        .bind(owner)
        .bind(now_ms)
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(format!(
            "release_leases for owner {owner:?}"
        )))?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(0))
}

/// Makes due at `now_ms` the deferred recipients that wait for `relay` (their last try
/// got no answer from it) or for any relay (none they may use was up then); returns how
/// many. Only those whose retry lies ahead are touched, so running it again is cheap.
pub(crate) async fn wake_waiting_for_relay(
    pools: &Pools,
    relay: &str,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let done = sqlx::query(
        "UPDATE recipients SET next_attempt_at_ms = $2, waiting_for_relay = NULL, \
         updated_at_ms = $2 \
         WHERE waiting_for_relay IN ($1, $3) AND state = 'deferred' \
         AND next_attempt_at_ms > $2",
    )
    .bind(relay)
    .bind(now_ms)
    .bind(super::types::ANY_RELAY)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!(
        "wake_waiting_for_relay for relay {relay:?}"
    )))?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(0))
}

/// Makes the deferred recipients that `filter` selects due now (`POST …/retry`): their
/// next attempt is moved to `now_ms` and they stop waiting for a relay. Recipients in
/// flight, held, queued or final are left alone; so are those already due.
pub(crate) async fn retry_deferred(
    pools: &Pools,
    filter: &super::types::RetryFilter,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut sql = String::from(
        "UPDATE recipients SET next_attempt_at_ms = $1, waiting_for_relay = NULL, \
         updated_at_ms = $1 WHERE state = 'deferred' AND next_attempt_at_ms > $1",
    );
    // Only the filters given become conditions (and binds, numbered in order).
    let mut binds: Vec<&str> = Vec::new();
    if let Some(m) = &filter.message {
        binds.push(m);
        sql.push_str(&format!(" AND message_id = ${}", binds.len() + 1));
    }
    if let Some(d) = &filter.domain {
        binds.push(d);
        sql.push_str(&format!(" AND domain = ${}", binds.len() + 1));
    }
    if let Some(r) = &filter.relay {
        binds.push(r);
        let n = binds.len() + 1;
        sql.push_str(&format!(
            " AND (last_relay = ${n} OR waiting_for_relay = ${n})"
        ));
    }
    if let Some(t) = &filter.tenant {
        binds.push(t);
        sql.push_str(&format!(
            " AND message_id IN (SELECT id FROM messages WHERE tenant_id = ${})",
            binds.len() + 1
        ));
    }
    let mut query = sqlx::query(&sql).bind(now_ms);
    for b in binds {
        query = query.bind(b);
    }
    let done = query
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(format!("retry_deferred {filter:?}")))?;
    Ok(usize::try_from(done.rows_affected()).unwrap_or(0))
}
