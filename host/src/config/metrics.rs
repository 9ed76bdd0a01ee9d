//! `[metrics]`: which tenants and relays get series of their own, who may scrape.

use super::check::{Check, Count, bounded};
use serde::Deserialize;
use toml::Spanned;

/// `GET /metrics` (`[metrics]`, `metrics.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Tenants and relays with series of their own (`max_tenants`, `max_relays`, 100
    /// each); the rest are counted under `other`.
    pub bounds: crate::metrics::Bounds,
    /// Networks that may scrape without the admin token (`allow_unauthenticated_from`,
    /// none by default: the admin token is asked of every scrape).
    pub allow_unauthenticated_from: Vec<crate::metrics::Network>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    max_tenants: Count,
    max_relays: Count,
    #[serde(default)]
    allow_unauthenticated_from: Vec<Spanned<String>>,
}

impl RawMetrics {
    pub(super) fn validate(self, check: &mut Check) -> MetricsConfig {
        let mut n = |key: &str, raw, default, max| {
            bounded(check, format!("metrics.{key}"), raw, default, max) as usize
        };
        let bounds = crate::metrics::Bounds {
            tenants: n("max_tenants", self.max_tenants, 100, 100_000),
            relays: n("max_relays", self.max_relays, 100, 100_000),
        };
        let mut allow = Vec::new();
        for v in self.allow_unauthenticated_from {
            match v.get_ref().parse() {
                Ok(net) => allow.push(net),
                Err(e) => check.at(v.span(), "metrics.allow_unauthenticated_from", e),
            }
        }
        MetricsConfig {
            bounds,
            allow_unauthenticated_from: allow,
        }
    }
}
