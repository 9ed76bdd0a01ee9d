//! Relay stats read from events: counts per relay over time windows (what the route
//! plugin sees), and recipients in flight per relay.
//!
//! Each window is one aggregate over the `(relay, at_ms)` index; the detail fields the
//! counts need were copied into columns when the event was appended, so no JSON is
//! parsed here. What is counted is documented on [`super::EventKind`].

use std::collections::HashMap;

use super::StoreError;
use super::codec::col;
use super::connect::Pools;
use super::types::WindowCounts;

/// `SUM` of an integer is NUMERIC on PostgreSQL; the cast keeps both dialects at BIGINT.
/// Events with a `source` (a bounce e-mail or complaint that arrived after the attempt)
/// count as bounces of the relay that carried the message, never as another attempt.
const WINDOW_SQL: &str = "SELECT relay, \
    CAST(SUM(CASE WHEN source IS NULL THEN 1 ELSE 0 END) AS BIGINT) AS sent, \
    CAST(SUM(CASE WHEN kind = 'delivered' AND source IS NULL THEN 1 ELSE 0 END) AS BIGINT) \
        AS delivered, \
    CAST(SUM(CASE WHEN kind = 'deferred' OR (kind = 'attempted' AND COALESCE(hard, 0) = 0) \
        THEN 1 ELSE 0 END) AS BIGINT) AS deferred, \
    CAST(SUM(CASE WHEN kind IN ('bounced', 'failed', 'attempted') AND hard = 1 \
        THEN 1 ELSE 0 END) AS BIGINT) AS hard_bounced, \
    CAST(SUM(CASE WHEN kind IN ('bounced', 'failed') AND COALESCE(hard, 0) = 0 \
        THEN 1 ELSE 0 END) AS BIGINT) AS soft_bounced, \
    CAST(SUM(CASE WHEN class = 'blocked' THEN 1 ELSE 0 END) AS BIGINT) AS blocked, \
    CAST(SUM(latency_ms) AS BIGINT) AS latency_sum, \
    COUNT(latency_ms) AS latency_n \
    FROM events \
    WHERE relay IS NOT NULL AND at_ms >= $1 AND at_ms <= $2 \
      AND kind IN ('attempted', 'delivered', 'deferred', 'bounced', 'failed') \
    GROUP BY relay";

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
            .bind(since)
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
