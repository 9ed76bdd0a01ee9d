//! `[webhooks]`: how webhooks are delivered, retried and bounded.

use super::check::{Check, Count, bounded};
use serde::Deserialize;
use std::time::Duration;

/// How webhooks are delivered (`[webhooks]`, `serve/webhooks.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhooks {
    /// Events per request body at most (`batch_size`, 1).
    pub batch_size: u32,
    /// The first retry's delay (`first_retry_ms`, 2000); each next one doubles, with jitter.
    pub first_retry: Duration,
    /// The longest delay between retries (`max_retry_secs`, 600).
    pub max_retry: Duration,
    /// A webhook failing for this long is paused (`retry_window_secs`, 86400).
    pub retry_window: Duration,
    /// Time to connect, TLS included (`connect_timeout_ms`, 5000).
    pub connect_timeout: Duration,
    /// Time from the request's first byte to the response's last (`response_timeout_ms`,
    /// 10000).
    pub response_timeout: Duration,
    /// Response bytes read at most (`max_response_bytes`, 65536); the rest is not read.
    pub max_response_bytes: u32,
    /// Send to private, loopback, link-local and unspecified addresses
    /// (`allow_private`, false): for tests and on-premises receivers.
    pub allow_private: bool,
    /// Webhooks one tenant (or the platform) may have (`max_per_tenant`, 20).
    pub max_per_tenant: u32,
    /// Deliveries in flight on a node at once (`max_concurrent`, 64).
    pub max_concurrent: u32,
    /// Of those, one tenant's at most (`max_concurrent_per_tenant`, 4).
    pub max_concurrent_per_tenant: u32,
    /// Requests of one webhook in flight at once on its delivering node, each on a
    /// connection of its own (`max_in_flight`, 16; 1 is one batch at a time). Events of
    /// one message are never in flight together in two requests. Why 16: one request at
    /// a time on loopback made 783 events/s (~1.3 ms a round trip); 16 keep up with
    /// 1,000 msg/s (3,000 events/s) in batches of one at up to ~5 ms a request, while a
    /// receiver sees at most 16 connections per webhook and node.
    pub max_in_flight: u32,
    /// How often a node looks for webhooks with events to send (`poll_ms`, 500).
    pub poll: Duration,
    /// Attempts kept per webhook (`attempts_kept`, 100).
    pub attempts_kept: u32,
    /// How long the previous secret still signs after a rotation
    /// (`rotation_overlap_secs`, 86400).
    pub rotation_overlap: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    batch_size: Count,
    first_retry_ms: Count,
    max_retry_secs: Count,
    retry_window_secs: Count,
    connect_timeout_ms: Count,
    response_timeout_ms: Count,
    max_response_bytes: Count,
    allow_private: Option<bool>,
    max_per_tenant: Count,
    max_concurrent: Count,
    max_concurrent_per_tenant: Count,
    max_in_flight: Count,
    poll_ms: Count,
    attempts_kept: Count,
    rotation_overlap_secs: Count,
}

impl RawWebhooks {
    pub(super) fn validate(self, check: &mut Check) -> Webhooks {
        let mut n = |key: &str, raw, default, max| {
            bounded(check, format!("webhooks.{key}"), raw, default, max)
        };
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        Webhooks {
            batch_size: n("batch_size", self.batch_size, 1, 1000) as u32,
            first_retry: ms(n("first_retry_ms", self.first_retry_ms, 2000, 3_600_000)),
            max_retry: secs(n("max_retry_secs", self.max_retry_secs, 600, 86_400)),
            retry_window: secs(n(
                "retry_window_secs",
                self.retry_window_secs,
                86_400,
                30 * 86_400,
            )),
            connect_timeout: ms(n(
                "connect_timeout_ms",
                self.connect_timeout_ms,
                5000,
                60_000,
            )),
            response_timeout: ms(n(
                "response_timeout_ms",
                self.response_timeout_ms,
                10_000,
                300_000,
            )),
            max_response_bytes: n(
                "max_response_bytes",
                self.max_response_bytes,
                65_536,
                16 << 20,
            ) as u32,
            allow_private: self.allow_private.unwrap_or(false),
            max_per_tenant: n("max_per_tenant", self.max_per_tenant, 20, 1000) as u32,
            max_concurrent: n("max_concurrent", self.max_concurrent, 64, 10_000) as u32,
            max_concurrent_per_tenant: n(
                "max_concurrent_per_tenant",
                self.max_concurrent_per_tenant,
                4,
                10_000,
            ) as u32,
            max_in_flight: n("max_in_flight", self.max_in_flight, 16, 256) as u32,
            poll: ms(n("poll_ms", self.poll_ms, 500, 60_000)),
            attempts_kept: n("attempts_kept", self.attempts_kept, 100, 10_000) as u32,
            rotation_overlap: secs(n(
                "rotation_overlap_secs",
                self.rotation_overlap_secs,
                86_400,
                30 * 86_400,
            )),
        }
    }
}
