//! Relay stats: counts per relay over time windows, for the platform and for each tenant
//! on it (a tenant's route plugin sees its own), summed from the 10-second buckets events
//! are added to as they are appended (`stat_buckets.rs`), and recipients in flight per
//! relay.

use std::collections::HashMap;

use super::StoreError;
use super::codec::col;
use super::connect::Pools;
use super::stat_buckets::BUCKET_MS;
use super::types::WindowCounts;

/// A window's sums per (relay, tenant): the buckets that overlap `[$1, $2]`. Only pairs
/// with traffic in the window have rows, so the read grows with the tenants active on
/// each relay, not with all tenants times all relays. `SUM` of an integer is NUMERIC on
/// PostgreSQL; the casts keep both dialects at BIGINT.
const WINDOW_SQL: &str = "SELECT relay, tenant_id, \
    CAST(SUM(sent) AS BIGINT) AS sent, CAST(SUM(delivered) AS BIGINT) AS delivered, \
    CAST(SUM(deferred) AS BIGINT) AS deferred, \
    CAST(SUM(hard_bounced) AS BIGINT) AS hard_bounced, \
    CAST(SUM(soft_bounced) AS BIGINT) AS soft_bounced, \
    CAST(SUM(blocked) AS BIGINT) AS blocked, \
    CAST(SUM(latency_sum) AS BIGINT) AS latency_sum, \
    CAST(SUM(latency_n) AS BIGINT) AS latency_n \
    FROM relay_stat_buckets WHERE bucket_ms > $1 AND bucket_ms <= $2 GROUP BY relay, tenant_id";

fn count(row: &sqlx::any::AnyRow, op: &str, column: &str) -> Result<u64, StoreError> {
    let n: Option<i64> = col(row, op, column)?;
    Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
}

/// One window's sums with the latency still as (sum, n), so they add up.
#[derive(Default, Clone, Copy)]
struct Sums {
    sent: u64,
    delivered: u64,
    deferred: u64,
    hard_bounced: u64,
    soft_bounced: u64,
    blocked: u64,
    latency_sum: u64,
    latency_n: u64,
}

impl Sums {
    fn read(row: &sqlx::any::AnyRow, op: &str) -> Result<Sums, StoreError> {
        Ok(Sums {
            sent: count(row, op, "sent")?,
            delivered: count(row, op, "delivered")?,
            deferred: count(row, op, "deferred")?,
            hard_bounced: count(row, op, "hard_bounced")?,
            soft_bounced: count(row, op, "soft_bounced")?,
            blocked: count(row, op, "blocked")?,
            latency_sum: count(row, op, "latency_sum")?,
            latency_n: count(row, op, "latency_n")?,
        })
    }

    fn add(&mut self, o: &Sums) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.deferred += o.deferred;
        self.hard_bounced += o.hard_bounced;
        self.soft_bounced += o.soft_bounced;
        self.blocked += o.blocked;
        self.latency_sum += o.latency_sum;
        self.latency_n += o.latency_n;
    }

    fn counts(&self, since_ms: i64) -> WindowCounts {
        WindowCounts {
            since_ms,
            sent: self.sent,
            delivered: self.delivered,
            deferred: self.deferred,
            hard_bounced: self.hard_bounced,
            soft_bounced: self.soft_bounced,
            blocked: self.blocked,
            mean_latency_ms: (self.latency_n > 0).then(|| self.latency_sum / self.latency_n),
        }
    }
}

/// Relay windows as the platform sees them and as each tenant does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RelayStatWindows {
    /// Per relay, every tenant's traffic together (the admin API's view).
    pub platform: HashMap<String, Vec<WindowCounts>>,
    /// Per (tenant, relay), that tenant's own traffic on the relay (what its route
    /// plugin sees). Only pairs with traffic in the longest window are present.
    pub by_tenant: HashMap<(String, String), Vec<WindowCounts>>,
}

pub(crate) async fn relay_stat_windows(
    pools: &Pools,
    since_ms: &[i64],
    now_ms: i64,
) -> Result<RelayStatWindows, StoreError> {
    let op = "relay_stats";
    let zeros = || vec![Sums::default(); since_ms.len()];
    let mut platform: HashMap<String, Vec<Sums>> = HashMap::new();
    let mut by_tenant: HashMap<(String, String), Vec<Sums>> = HashMap::new();
    for (w, &since) in since_ms.iter().enumerate() {
        let rows = sqlx::query(WINDOW_SQL)
            .bind(since - BUCKET_MS)
            .bind(now_ms)
            .fetch_all(&pools.read)
            .await
            .map_err(StoreError::db(format!("{op} for the window from {since}")))?;
        for row in &rows {
            let relay: String = col(row, op, "relay")?;
            let tenant: String = col(row, op, "tenant_id")?;
            let sums = Sums::read(row, op)?;
            platform.entry(relay.clone()).or_insert_with(zeros)[w].add(&sums);
            // Buckets from before buckets had tenants (`''`) count for the platform only.
            if !tenant.is_empty() {
                by_tenant.entry((tenant, relay)).or_insert_with(zeros)[w] = sums;
            }
        }
    }
    // Every relay (and pair) gets one entry per window, zeros where it had no traffic.
    let windows = |sums: Vec<Sums>| {
        sums.iter()
            .zip(since_ms)
            .map(|(s, &since)| s.counts(since))
            .collect::<Vec<_>>()
    };
    Ok(RelayStatWindows {
        platform: platform.into_iter().map(|(k, v)| (k, windows(v))).collect(),
        by_tenant: by_tenant
            .into_iter()
            .map(|(k, v)| (k, windows(v)))
            .collect(),
    })
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

/// What `GET /metrics` reads of the store: recipients not yet final by state, the oldest
/// of them, and usage not yet rated. Index scans over the live queue only (delivered
/// recipients and rated usage are never read), so its cost follows the queue, not the
/// history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueGauges {
    /// (state, recipients) for `queued`, `delivering`, `deferred` and `held`.
    pub by_state: Vec<(String, i64)>,
    /// When the oldest message with a recipient not yet final was accepted (from its
    /// ULID), if any.
    pub oldest_accepted_ms: Option<i64>,
    /// Usage events waiting for the platform's rater.
    pub unrated_usage: i64,
}

/// Recipients of state `$1` and the oldest of their messages (also for its plan,
/// `plans.rs`).
pub(crate) const GAUGE_SQL: &str =
    "SELECT COUNT(*) AS n, MIN(message_id) AS oldest FROM recipients WHERE state = $1";

pub(crate) async fn queue_gauges(pools: &Pools) -> Result<QueueGauges, StoreError> {
    let op = "queue_gauges";
    let mut g = QueueGauges::default();
    for state in ["queued", "delivering", "deferred", "held"] {
        // One state at a time: each is a range of the `recipients_tenant_due` index (state first).
        let row = sqlx::query(GAUGE_SQL)
            .bind(state)
            .fetch_one(&pools.read)
            .await
            .map_err(StoreError::db(format!("{op}: {state}")))?;
        let n: i64 = col(&row, op, "n")?;
        let oldest: Option<String> = col(&row, op, "oldest")?;
        if let Some(at) = oldest
            .as_deref()
            .and_then(|id| ulid::Ulid::from_string(id).ok())
            .map(|u| u.timestamp_ms() as i64)
        {
            g.oldest_accepted_ms = Some(g.oldest_accepted_ms.map_or(at, |o| o.min(at)));
        }
        g.by_state.push((state.to_owned(), n));
    }
    let row = sqlx::query("SELECT COUNT(*) AS n FROM usage_events WHERE state = 'pending'")
        .fetch_one(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op}: usage")))?;
    g.unrated_usage = col(&row, op, "n")?;
    Ok(g)
}
