//! `[events]`: the tenant-visible event log's retention and its streams.

use super::check::{Check, Count, bounded};
use serde::Deserialize;
use std::time::Duration;

/// The tenant-visible event log (`[events]`, `serve/event_log.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    /// How long events are kept (`retention_days`, 30); older ones are pruned.
    pub retention: Duration,
    /// How often the sequencer gives new events their cursors and streams look for
    /// them when nothing woke them sooner (`poll_ms`, 200).
    pub poll: Duration,
    /// Idle streams get a comment this often (`heartbeat_secs`, 15).
    pub heartbeat: Duration,
    /// Event streams one tenant may hold open on a node (`max_streams_per_tenant`, 64);
    /// more are told 429.
    pub max_streams_per_tenant: u32,
    /// Event streams all tenants together may hold open on a node (`max_streams`,
    /// 20000); more are told 429. Each holds a connection (a file descriptor) and some
    /// memory (BENCHMARKS.md: "10,000 event stream subscribers").
    pub max_streams: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    retention_days: Count,
    poll_ms: Count,
    heartbeat_secs: Count,
    max_streams_per_tenant: Count,
    max_streams: Count,
}

impl RawEvents {
    pub(super) fn validate(self, check: &mut Check) -> Events {
        let mut n = |key: &str, raw, default, max| {
            bounded(check, format!("events.{key}"), raw, default, max)
        };
        Events {
            retention: Duration::from_secs(
                n("retention_days", self.retention_days, 30, 3650) * 86_400,
            ),
            poll: Duration::from_millis(n("poll_ms", self.poll_ms, 200, 10_000)),
            heartbeat: Duration::from_secs(n("heartbeat_secs", self.heartbeat_secs, 15, 3600)),
            max_streams_per_tenant: n(
                "max_streams_per_tenant",
                self.max_streams_per_tenant,
                64,
                100_000,
            ) as u32,
            max_streams: n("max_streams", self.max_streams, 20_000, 1_000_000) as u32,
        }
    }
}
