//! Nodes and their heartbeats, the takeover of a dead node's leases, and the leader.
//!
//! Each running `sluice serve` has a row in `nodes` under its stable node id (the owner
//! its leases carry) and writes a heartbeat into it every interval. The rules:
//! - A node joins under its id only if no other live process holds that id (a row with
//!   another incarnation and a fresh heartbeat); joining gives back whatever the id still
//!   held from an earlier process (a crash), so a restarted node delivers it at once.
//! - A node whose heartbeat is older than `dead_after` is dead: any live node may expire
//!   its leases (set them to run out now), and they are leased again like any expired
//!   lease. Nothing else ever cuts another owner's lease short.
//! - A heartbeat only counts for the incarnation that joined: a process whose id was
//!   taken by a newer one learns it from its next heartbeat.
//! - One node at a time leads (`node_leader`), for a term it renews with its heartbeat;
//!   when the leader dies its term runs out and the next node to beat takes over.
//!
//! Times are the callers' clocks, as leases are: nodes must keep their clocks within a
//! small part of `dead_after` of each other.

use std::collections::HashMap;

use super::StoreError;
use super::codec::col;
use super::connect::Pools;

/// A node as it joins: who it is and where it answers.
#[derive(Debug, Clone)]
pub struct NodeJoin {
    /// The stable node id (the owner of its leases).
    pub id: String,
    /// New for every process, so two processes with one id are told apart.
    pub incarnation: String,
    /// Where its HTTP API answers.
    pub address: String,
    pub started_at_ms: i64,
}

/// What joining said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// The node's row is this process's now; `reclaimed` recipients the id still held
    /// from an earlier process were given back (due now).
    Joined { reclaimed: u64 },
    /// Another process holds the id and is alive (its heartbeat is fresh): nothing
    /// was written.
    InUse {
        address: String,
        heartbeat_at_ms: i64,
    },
}

/// One node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: String,
    pub address: String,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
    /// Set when it stopped gracefully (its leases given back).
    pub stopped_at_ms: Option<i64>,
    /// Recipients leased to it whose lease has not run out.
    pub leases_held: u64,
}

/// Who leads, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub node_id: String,
    pub since_ms: i64,
    pub until_ms: i64,
}

fn check_join(op: &str, node: &NodeJoin) -> Result<(), StoreError> {
    if node.id.is_empty() {
        return Err(StoreError::invalid(op, "the node id is empty"));
    }
    if node.incarnation.is_empty() {
        return Err(StoreError::invalid(op, "the incarnation is empty"));
    }
    Ok(())
}

pub(crate) async fn join(
    pools: &Pools,
    node: &NodeJoin,
    now_ms: i64,
    dead_after_ms: i64,
) -> Result<Joined, StoreError> {
    let op = "join_node";
    check_join(op, node)?;
    let context = || format!("{op} {:?}", node.id);
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let row = sqlx::query(
        "SELECT incarnation, address, heartbeat_at_ms, stopped_at_ms FROM nodes WHERE id = $1",
    )
    .bind(&node.id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    if let Some(row) = row {
        let incarnation: String = col(&row, op, "incarnation")?;
        let heartbeat_at_ms: i64 = col(&row, op, "heartbeat_at_ms")?;
        let stopped: Option<i64> = col(&row, op, "stopped_at_ms")?;
        if incarnation != node.incarnation
            && stopped.is_none()
            && heartbeat_at_ms > now_ms.saturating_sub(dead_after_ms)
        {
            return Ok(Joined::InUse {
                address: col(&row, op, "address")?,
                heartbeat_at_ms,
            });
        }
        sqlx::query(
            "UPDATE nodes SET incarnation = $2, address = $3, started_at_ms = $4, \
             heartbeat_at_ms = $5, stopped_at_ms = NULL WHERE id = $1",
        )
        .bind(&node.id)
        .bind(&node.incarnation)
        .bind(&node.address)
        .bind(node.started_at_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    } else {
        sqlx::query(
            "INSERT INTO nodes (id, incarnation, address, started_at_ms, heartbeat_at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&node.id)
        .bind(&node.incarnation)
        .bind(&node.address)
        .bind(node.started_at_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    }
    // What the id holds now was leased by an earlier process, which is gone: it is
    // given back in the commit that makes the id this process's.
    let reclaimed = sqlx::query(super::leases::RELEASE_SQL)
        .bind(&node.id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?
        .rows_affected();
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(Joined::Joined { reclaimed })
}

pub(crate) async fn heartbeat(
    pools: &Pools,
    id: &str,
    incarnation: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE nodes SET heartbeat_at_ms = $3 \
         WHERE id = $1 AND incarnation = $2 AND stopped_at_ms IS NULL",
    )
    .bind(id)
    .bind(incarnation)
    .bind(now_ms)
    .execute(&pools.beat)
    .await
    .map_err(StoreError::db(format!("heartbeat of node {id:?}")))?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn stop(
    pools: &Pools,
    id: &str,
    incarnation: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let context = || format!("stop_node {id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    sqlx::query(
        "UPDATE nodes SET stopped_at_ms = $3, heartbeat_at_ms = $3 \
         WHERE id = $1 AND incarnation = $2",
    )
    .bind(id)
    .bind(incarnation)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    // A leader that stops hands the role on at once, not when its term runs out.
    sqlx::query(
        "UPDATE node_leader SET node_id = NULL, until_ms = 0 WHERE slot = 1 AND node_id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(())
}

/// Leases held by nodes other than `$1` whose heartbeat stopped before `$3`. Only
/// leases that have not run out by `$2` yet need cutting short; the rest are due anyway.
const DEAD_WITH_LEASES: &str = "WHERE state = 'delivering' AND lease_until_ms > $2 \
     AND lease_owner IN (SELECT id FROM nodes WHERE id <> $1 AND heartbeat_at_ms < $3)";

/// What [`take_over_dead`] asks first, on every round (also for its plan, `plans.rs`).
pub(crate) fn dead_leases_count_sql() -> String {
    format!(
        "SELECT lease_owner, COUNT(*) AS n FROM recipients {DEAD_WITH_LEASES} GROUP BY lease_owner"
    )
}

pub(crate) async fn take_over_dead(
    pools: &Pools,
    me: &str,
    now_ms: i64,
    dead_after_ms: i64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let op = "take_over_dead_nodes";
    let cutoff = now_ms.saturating_sub(dead_after_ms);
    let context = || format!("{op} for node {me:?}");
    let dead_with_leases = DEAD_WITH_LEASES;
    let count = dead_leases_count_sql();
    // Nearly always nothing is dead: a read says so without taking the write lock.
    let any = sqlx::query(&count)
        .bind(me)
        .bind(now_ms)
        .bind(cutoff)
        .fetch_optional(&pools.read)
        .await
        .map_err(StoreError::db(context()))?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(context()))?;
    let rows = sqlx::query(&count)
        .bind(me)
        .bind(now_ms)
        .bind(cutoff)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::db(context()))?;
    if rows.is_empty() {
        tx.rollback().await.map_err(StoreError::db(context()))?;
        return Ok(Vec::new());
    }
    let mut taken = Vec::with_capacity(rows.len());
    for row in &rows {
        let owner: String = col(row, op, "lease_owner")?;
        let n: i64 = col(row, op, "n")?;
        taken.push((owner, u64::try_from(n).unwrap_or(0)));
    }
    sqlx::query(&format!(
        "UPDATE recipients SET lease_until_ms = $2 {dead_with_leases}"
    ))
    .bind(me)
    .bind(now_ms)
    .bind(cutoff)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(context()))?;
    tx.commit().await.map_err(StoreError::db(context()))?;
    Ok(taken)
}

pub(crate) async fn claim_leadership(
    pools: &Pools,
    me: &str,
    now_ms: i64,
    term_ms: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE node_leader SET \
         since_ms = CASE WHEN node_id = $1 AND until_ms > $2 THEN since_ms ELSE $2 END, \
         node_id = $1, until_ms = $3 \
         WHERE slot = 1 AND (node_id = $1 OR node_id IS NULL OR until_ms <= $2)",
    )
    .bind(me)
    .bind(now_ms)
    .bind(now_ms.saturating_add(term_ms))
    .execute(&pools.beat)
    .await
    .map_err(StoreError::db(format!("claim_leadership for node {me:?}")))?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn leader(pools: &Pools, now_ms: i64) -> Result<Option<Leadership>, StoreError> {
    let op = "leader";
    let row = sqlx::query(
        "SELECT node_id, since_ms, until_ms FROM node_leader \
         WHERE slot = 1 AND node_id IS NOT NULL AND until_ms > $1",
    )
    .bind(now_ms)
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(op))?;
    row.map(|r| {
        Ok(Leadership {
            node_id: col(&r, op, "node_id")?,
            since_ms: col(&r, op, "since_ms")?,
            until_ms: col(&r, op, "until_ms")?,
        })
    })
    .transpose()
}

pub(crate) async fn list(pools: &Pools, now_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
    let op = "list_nodes";
    let held = sqlx::query(
        "SELECT lease_owner, COUNT(*) AS n FROM recipients \
         WHERE state = 'delivering' AND lease_until_ms > $1 AND lease_owner IS NOT NULL \
         GROUP BY lease_owner",
    )
    .bind(now_ms)
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(op))?;
    let mut leases: HashMap<String, u64> = HashMap::new();
    for row in &held {
        let n: i64 = col(row, op, "n")?;
        leases.insert(col(row, op, "lease_owner")?, u64::try_from(n).unwrap_or(0));
    }
    let rows = sqlx::query(
        "SELECT id, address, started_at_ms, heartbeat_at_ms, stopped_at_ms FROM nodes ORDER BY id",
    )
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(op))?;
    rows.iter()
        .map(|r| {
            let id: String = col(r, op, "id")?;
            Ok(NodeRecord {
                leases_held: leases.get(&id).copied().unwrap_or(0),
                address: col(r, op, "address")?,
                started_at_ms: col(r, op, "started_at_ms")?,
                heartbeat_at_ms: col(r, op, "heartbeat_at_ms")?,
                stopped_at_ms: col(r, op, "stopped_at_ms")?,
                id,
            })
        })
        .collect()
}
