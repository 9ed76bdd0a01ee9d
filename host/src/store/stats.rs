//! Relay stats: counts per relay over time windows (what the route plugin sees), summed
//! from the 10-second buckets events are added to as they are appended
//! (`stat_buckets.rs`), and recipients in flight per relay.

use std::collections::HashMap;

use super::StoreError;
use super::codec::col;
use super::connect::Pools;
use super::stat_buckets::BUCKET_MS;
use super::types::WindowCounts;

/// A window's sums per relay: the buckets that overlap `[$1, $2]`. `SUM` of an integer
/// is NUMERIC on PostgreSQL; the casts keep both dialects at BIGINT.
const WINDOW_SQL: &str = "SELECT relay, \
    CAST(SUM(sent) AS BIGINT) AS sent, CAST(SUM(delivered) AS BIGINT) AS delivered, \
    CAST(SUM(deferred) AS BIGINT) AS deferred, \
    CAST(SUM(hard_bounced) AS BIGINT) AS hard_bounced, \
    CAST(SUM(soft_bounced) AS BIGINT) AS soft_bounced, \
    CAST(SUM(blocked) AS BIGINT) AS blocked, \
    CAST(SUM(latency_sum) AS BIGINT) AS latency_sum, \
    CAST(SUM(latency_n) AS BIGINT) AS latency_n \
    FROM relay_stat_buckets WHERE bucket_ms > $1 AND bucket_ms <= $2 GROUP BY relay";

fn count(row: &sqlx::any::AnyRow, op: &str, column: &str) -> Result<u64, StoreError> {
    let n: Option<i64> = col(row, op, column)?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

pub(crate) async fn relay_stats(
    pools: &Pools,
    since_ms: &[i64],
    now_ms: i64,
) -> Result<HashMap<String, Vec<WindowCounts>>, StoreError> {
    let op = "relay_stats";
    let mut out: HashMap<String, Vec<WindowCounts>> = HashMap::new();
    for (w, &since) in since_ms.iter().enumerate() {
        let rows = sqlx::query(WINDOW_SQL)
            .bind(since - BUCKET_MS)
            .bind(now_ms)
            .fetch_all(&pools.read)
            .await
            .map_err(StoreError::db(format!("{op} for the window from {since}")))?;
        for row in &rows {
            let relay: String = col(row, op, "relay")?;
            let latency_n = count(row, op, "latency_n")?;
            let counts = WindowCounts {
                since_ms: since,
                sent: count(row, op, "sent")?,
                delivered: count(row, op, "delivered")?,
                deferred: count(row, op, "deferred")?,
                hard_bounced: count(row, op, "hard_bounced")?,
                soft_bounced: count(row, op, "soft_bounced")?,
                blocked: count(row, op, "blocked")?,
                mean_latency_ms: (latency_n > 0)
                    .then(|| count(row, op, "latency_sum").map(|sum| sum / latency_n))
                    .transpose()?,
            };
            // Every relay gets one entry per window, zeros where it had no traffic.
            let windows = out.entry(relay).or_insert_with(|| {
                since_ms
                    .iter()
                    .map(|&s| WindowCounts {
                        since_ms: s,
                        ..WindowCounts::default()
                    })
                    .collect()
            });
            windows[w] = counts;
        }
    }
    Ok(out)
}

/// Drops the buckets that end before `before_ms`; returns how many.
pub(crate) async fn prune(pools: &Pools, before_ms: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM relay_stat_buckets WHERE bucket_ms < $1")
        .bind(before_ms - BUCKET_MS)
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(format!(
            "prune_relay_stats: buckets before {before_ms}"
        )))?;
    Ok(done.rows_affected())
}

pub(crate) async fn in_flight_by_relay(pools: &Pools) -> Result<HashMap<String, u32>, StoreError> {
    let op = "in_flight_by_relay";
    let rows = sqlx::query(
        "SELECT routed_relay, COUNT(*) AS n FROM recipients \
         WHERE state = 'delivering' AND routed_relay IS NOT NULL GROUP BY routed_relay",
    )
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(op))?;
    rows.iter()
        .map(|r| {
            let relay: String = col(r, op, "routed_relay")?;
            let n: i64 = col(r, op, "n")?;
            Ok((relay, u32::try_from(n).unwrap_or(u32::MAX)))
        })
        .collect()
}
