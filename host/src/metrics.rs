//! The process's Prometheus metrics (`GET /metrics`, served by `serve/metrics_http.rs`):
//! the metric families, the bounded label sets, and the text encoding. Plain data, no
//! I/O; a leaf any module may use (`serve` for most, and for the store's group commits,
//! which `serve::state` has the store report through `Store::observe_commits`).
//!
//! Label sets are bounded: tenants, relays, platform plugins and bounce classes each get
//! their own label value only for the first `max` distinct values seen by this process;
//! later ones are counted under `other`. So a hostile or numerous set of tenants (or of
//! their own relays) cannot grow memory or a scrape without bound. HTTP routes are
//! labelled by their route template (`/v1/messages/{id}`), never the raw path.
//!
//! The hot path costs atomic adds and a read-locked hash lookup per label set.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
/// The handles other modules keep (a clone shares the same atomic values).
pub use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// The label value of everything past a bound.
pub const OTHER: &str = "other";

/// The `Content-Type` of the text format served.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How many distinct values of each unbounded label keep their own series (`[metrics]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub tenants: usize,
    pub relays: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            tenants: 100,
            relays: 100,
        }
    }
}

/// The first `max` distinct values keep their own label; later ones are `other`.
pub struct Bounded {
    max: usize,
    seen: RwLock<HashMap<Box<str>, Arc<str>>>,
    other: Arc<str>,
}

impl Bounded {
    pub fn new(max: usize) -> Bounded {
        Bounded {
            max,
            seen: RwLock::new(HashMap::new()),
            other: Arc::from(OTHER),
        }
    }

    /// The label for `value`.
    pub fn label(&self, value: &str) -> Arc<str> {
        if let Some(v) = self
            .seen
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(value)
        {
            return v.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = seen.get(value) {
            return v.clone();
        }
        // A real value named `other` would be indistinguishable from the rest anyway.
        if seen.len() >= self.max || value == OTHER {
            return self.other.clone();
        }
        let v: Arc<str> = Arc::from(value);
        seen.insert(Box::from(value), v.clone());
        v
    }
}

type L = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: L,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantRelayLabels {
    pub tenant: L,
    pub relay: L,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BounceLabels {
    pub tenant: L,
    pub relay: L,
    pub class: L,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub stage: &'static str,
    /// A platform plugin's name, or `tenant` for any tenant's upload.
    pub plugin: L,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RelayLabels {
    pub relay: L,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: L,
    pub route: L,
    pub status: u16,
}

type Hist<S> = Family<S, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn seconds_buckets() -> Histogram {
    // 100 µs … ~26 s.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

fn size_buckets() -> Histogram {
    // 1 … 4096.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    tenants: Bounded,
    relays: Bounded,
    classes: Bounded,
    plugins: Bounded,
    methods: Bounded,
    pub accepted_messages: Family<TenantLabels, Counter>,
    pub accepted_recipients: Family<TenantLabels, Counter>,
    pub delivered: Family<TenantRelayLabels, Counter>,
    pub deferred: Family<TenantRelayLabels, Counter>,
    pub bounced: Family<BounceLabels, Counter>,
    pub failed: Family<TenantRelayLabels, Counter>,
    pub expired: Family<TenantRelayLabels, Counter>,
    pub plugin_calls: Hist<PluginLabels>,
    pub plugin_errors: Family<PluginLabels, Counter>,
    pub plugin_suspensions: Family<StageLabels, Counter>,
    pub store_commit: Histogram,
    pub store_commit_group: Histogram,
    pub smtp_transaction: Hist<RelayLabels>,
    pub http_requests: Family<HttpLabels, Counter>,
    /// Set at scrape time from the store (cached): recipients by state.
    pub queue_depth: Family<StateLabels, Gauge>,
    pub queue_oldest_age: FloatGauge,
    pub in_flight: Gauge,
    pub held_in_memory: Gauge,
    pub relay_up: Family<RelayLabels, Gauge>,
    pub billing_unrated: Gauge,
    /// Set at scrape time from the store (cached): per webhook state, the age of the
    /// oldest event past a webhook's cursor, and the events past the cursors.
    pub webhook_lag: Family<StateLabels, FloatGauge>,
    pub webhook_undelivered: Family<StateLabels, Gauge>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Sets the bounds (`[metrics]`) once, before anything is counted; a later call, or one
/// after the first count, changes nothing.
pub fn init(bounds: Bounds) {
    let _ = METRICS.set(Metrics::new(bounds));
}

/// The process's metrics (with the default bounds unless [`init`] came first).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(Bounds::default()))
}

impl Metrics {
    pub fn new(bounds: Bounds) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("sluice"),
            tenants: Bounded::new(bounds.tenants),
            relays: Bounded::new(bounds.relays),
            classes: Bounded::new(64),
            plugins: Bounded::new(64),
            methods: Bounded::new(8),
            accepted_messages: Family::default(),
            accepted_recipients: Family::default(),
            delivered: Family::default(),
            deferred: Family::default(),
            bounced: Family::default(),
            failed: Family::default(),
            expired: Family::default(),
            plugin_calls: Family::new_with_constructor(seconds_buckets as fn() -> Histogram),
            plugin_errors: Family::default(),
            plugin_suspensions: Family::default(),
            store_commit: seconds_buckets(),
            store_commit_group: size_buckets(),
            smtp_transaction: Family::new_with_constructor(seconds_buckets as fn() -> Histogram),
            http_requests: Family::default(),
            queue_depth: Family::default(),
            queue_oldest_age: FloatGauge::default(),
            in_flight: Gauge::default(),
            held_in_memory: Gauge::default(),
            relay_up: Family::default(),
            billing_unrated: Gauge::default(),
            webhook_lag: Family::default(),
            webhook_undelivered: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "accepted_messages",
            "Messages accepted (committed) by tenant",
            m.accepted_messages.clone(),
        );
        r.register(
            "accepted_recipients",
            "Recipients of accepted messages by tenant",
            m.accepted_recipients.clone(),
        );
        r.register(
            "delivered",
            "Recipients delivered by tenant and relay",
            m.delivered.clone(),
        );
        r.register(
            "deferred",
            "Recipients deferred for a retry by tenant and relay (none: before any relay)",
            m.deferred.clone(),
        );
        r.register(
            "bounced",
            "Recipients refused for good by a relay, by tenant, relay and bounce class",
            m.bounced.clone(),
        );
        r.register(
            "failed",
            "Recipients given up without a bounce by tenant and relay",
            m.failed.clone(),
        );
        r.register(
            "expired",
            "Recipients too old to retry by tenant",
            m.expired.clone(),
        );
        r.register(
            "plugin_call_seconds",
            "Plugin call time by stage and plugin (tenant: any tenant's upload)",
            m.plugin_calls.clone(),
        );
        r.register(
            "plugin_errors",
            "Failed plugin calls by stage and plugin",
            m.plugin_errors.clone(),
        );
        r.register(
            "plugin_suspensions",
            "Tenant plugin versions suspended by this host, by stage",
            m.plugin_suspensions.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Time of one group commit of accepts and outcomes",
            m.store_commit.clone(),
        );
        r.register(
            "store_commit_group_size",
            "Accepts and outcome batches written by one group commit",
            m.store_commit_group.clone(),
        );
        r.register(
            "smtp_transaction_seconds",
            "Time of one SMTP transaction by relay",
            m.smtp_transaction.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests answered by method, route template and status",
            m.http_requests.clone(),
        );
        r.register(
            "queue_recipients",
            "Recipients not yet final in the store, by state (read at most once a second)",
            m.queue_depth.clone(),
        );
        r.register(
            "queue_oldest_age_seconds",
            "Age of the oldest recipient not yet final (0 when none)",
            m.queue_oldest_age.clone(),
        );
        r.register(
            "recipients_in_flight",
            "Recipients in an SMTP transaction on this host",
            m.in_flight.clone(),
        );
        r.register(
            "recipients_held_in_memory",
            "Recipients leased and held in memory by this host",
            m.held_in_memory.clone(),
        );
        r.register(
            "relay_up",
            "Whether a relay is taken to answer (1) or marked down (0)",
            m.relay_up.clone(),
        );
        r.register(
            "billing_unrated_events",
            "Usage events not yet rated by the platform's rater",
            m.billing_unrated.clone(),
        );
        r.register(
            "webhook_oldest_undelivered_age_seconds",
            "Per webhook state (active, paused, disabled), the age of the oldest event \
             past a webhook's cursor (0 when none)",
            m.webhook_lag.clone(),
        );
        r.register(
            "webhook_undelivered_events",
            "Per webhook state, the events past the webhooks' cursors",
            m.webhook_undelivered.clone(),
        );
        m
    }

    pub fn tenant(&self, tenant: &str) -> TenantLabels {
        TenantLabels {
            tenant: self.tenants.label(tenant),
        }
    }

    pub fn tenant_relay(&self, tenant: &str, relay: Option<&str>) -> TenantRelayLabels {
        TenantRelayLabels {
            tenant: self.tenants.label(tenant),
            relay: self.relay_label(relay),
        }
    }

    fn relay_label(&self, relay: Option<&str>) -> L {
        match relay {
            Some(r) => self.relays.label(r),
            None => self.relays.label("none"),
        }
    }

    /// A relay's own label (bounded).
    pub fn relay(&self, relay: &str) -> RelayLabels {
        RelayLabels {
            relay: self.relays.label(relay),
        }
    }

    pub fn bounce(&self, tenant: &str, relay: Option<&str>, class: &str) -> BounceLabels {
        BounceLabels {
            tenant: self.tenants.label(tenant),
            relay: self.relay_label(relay),
            class: self.classes.label(class),
        }
    }

    /// A call of a platform plugin (`plugin` its name) or of a tenant's (`None`).
    pub fn plugin_call(&self, stage: &'static str, plugin: Option<&str>, took: Duration, ok: bool) {
        let labels = PluginLabels {
            stage,
            plugin: self.plugins.label(plugin.unwrap_or("tenant")),
        };
        self.plugin_calls
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.plugin_errors.get_or_create(&labels).inc();
        }
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        // Route templates are the router's own (a bounded set); a path that matched no
        // route is `unmatched`, never itself.
        let labels = HttpLabels {
            method: self.methods.label(method),
            route: Arc::from(route),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
    }

    /// The text format of everything.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or one address) for `[metrics]
/// allow_unauthenticated_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_past_the_bound_are_other() {
        let b = Bounded::new(2);
        assert_eq!(&*b.label("a"), "a");
        assert_eq!(&*b.label("b"), "b");
        assert_eq!(&*b.label("c"), OTHER);
        assert_eq!(&*b.label("a"), "a");
        assert_eq!(&*b.label(OTHER), OTHER);
    }

    #[test]
    fn a_thousand_tenants_make_a_bounded_scrape() {
        let m = Metrics::new(Bounds {
            tenants: 5,
            relays: 5,
        });
        for i in 0..1000 {
            m.delivered
                .get_or_create(&m.tenant_relay(&format!("t{i}"), Some(&format!("r{i}"))))
                .inc();
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("sluice_delivered_total"))
            .count();
        assert!(series <= 6 * 6, "{series} series");
        assert!(
            text.contains("tenant=\"other\",relay=\"other\"} 995"),
            "{text}"
        );
    }

    #[test]
    fn networks_match_by_prefix() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: Network = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("host".parse::<Network>().is_err());
    }
}
