//! The pipeline file's shape: raw serde structs (strict, with spans where a
//! later check needs to point at a value) and the validated [`Pipeline`].

use super::error::{ConfigError, ConfigErrors};
use crate::relay_spec::{
    DEFAULT_CONNECTION_LIMIT, DEFAULT_WEIGHT, PLATFORM_POOL, TLS_CA_WITHOUT_TLS, check_relay_url,
    default_tags, invalid_id_message, relay_url_uses_tls, valid_id,
};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub server: Server,
    pub store: StoreConfig,
    pub admin: Admin,
    pub limits: Limits,
    pub delivery: Delivery,
    pub plugins: Plugins,
    pub relays: Vec<RelayConfig>,
    pub tenants: Vec<TenantConfig>,
    pub smtp_in: SmtpIn,
    pub log_sources: Vec<LogSourceConfig>,
    /// Per-tenant admission at the API (`[admission]`).
    pub admission: Admission,
    /// The tenant-visible event log and its stream (`[events]`).
    pub events: Events,
    /// `GET /metrics` (`[metrics]`).
    pub metrics: MetricsConfig,
    /// Webhooks' delivery (`[webhooks]`).
    pub webhooks: Webhooks,
}

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
    /// How often a node looks for webhooks with events to send (`poll_ms`, 500).
    pub poll: Duration,
    /// Attempts kept per webhook (`attempts_kept`, 100).
    pub attempts_kept: u32,
    /// How long the previous secret still signs after a rotation
    /// (`rotation_overlap_secs`, 86400).
    pub rotation_overlap: Duration,
}

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

/// How much of this host's request handling one tenant may take (`[admission]`,
/// `serve/admission.rs`): the defaults hold for every tenant, `[admission.tenant.ID]`
/// overrides them for one (keys it leaves out keep the defaults). Per host: a cluster
/// of n hosts behind a balancer admits up to n times as much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub default: TenantAdmission,
    pub tenants: std::collections::BTreeMap<String, TenantAdmission>,
}

/// One tenant's admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantAdmission {
    /// Requests of the tenant handled at once (`max_requests_in_flight`, 32); more are
    /// told 429 before their body is read.
    pub max_requests_in_flight: u32,
    /// Submissions accepted per second once the burst is spent (`accepts_per_sec`, 200).
    pub accepts_per_sec: u32,
    /// Submissions accepted at once after a quiet spell (`accept_burst`, 400).
    pub accept_burst: u32,
    /// How long a request past either limit is held before it is answered
    /// (`max_hold_ms`, 1000; 0 answers 429 at once): it is let in as soon as its turn
    /// comes within that time, else answered 429. A client that retries at once then
    /// waits this long per request instead of making the host answer it in a loop.
    pub max_hold_ms: u32,
    /// Requests of the tenant held at once (`max_held_requests`, 32; 0 holds none);
    /// past it a request is answered 429 at once, so memory held stays bounded.
    pub max_held_requests: u32,
}

/// An MTA log that `sluice serve` follows and bills (`[[log_source]]`).
#[derive(Debug, Clone)]
pub struct LogSourceConfig {
    /// Names the source in transfer keys: keep it once billing has begun.
    pub id: String,
    pub path: PathBuf,
    pub format: crate::maillog::Format,
    /// Tenant logins (the `sluice bill --logins` format), read at start.
    pub logins: crate::bill_logs::Logins,
    /// Where the position and half-joined state are kept.
    pub checkpoint: PathBuf,
    /// How long to wait when the log has nothing new.
    pub poll: Duration,
    /// The host name in keys when the log has none (multilog, plain stamps).
    pub host: String,
}

/// The SMTP listener that takes in bounces (`[smtp_in]`).
#[derive(Debug, Clone)]
pub struct SmtpIn {
    /// Where it listens; `None` (the default) turns it off.
    pub listen: Option<SocketAddr>,
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Advertised as `SIZE` and enforced while reading DATA.
    pub max_message_bytes: u64,
    /// Most `RCPT TO` per transaction.
    pub max_recipients: u32,
    /// How long to wait for a command line.
    pub command_timeout: Duration,
    /// How long the whole DATA phase may take.
    pub data_timeout: Duration,
    /// Most connections served at once; more are told 421.
    pub max_connections: u32,
    /// Most connections from one client address (IPv6: one /64) at once; more are
    /// told 421, so one client cannot take every connection.
    pub max_connections_per_ip: u32,
    /// The longest one session may last; then it is told 421 and closed.
    pub max_session: Duration,
    /// NOOP, RSET, EHLO/HELO, VRFY and HELP a session may send since its last
    /// message before it is told 421 and closed.
    pub max_unproductive_commands: u32,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub http_listen: SocketAddr,
    /// Names this node in leases, events and the `nodes` table; stable across restarts,
    /// unique among the nodes of one store. None: the id kept beside a SQLite store, or
    /// the host name (with `node_suffix`) on PostgreSQL (`serve/nodes.rs`).
    pub node_id: Option<String>,
    /// Added to the host name to make the node id when `node_id` is not given: several
    /// nodes on one machine each need their own.
    pub node_suffix: Option<String>,
    /// How often this node writes its heartbeat.
    pub heartbeat: Duration,
    /// A node whose heartbeat is older than this many intervals is dead: its leases
    /// are taken over at once.
    pub dead_after_heartbeats: u32,
    /// Request body bytes the HTTP API holds at once, over all requests; a request
    /// that would go over is told 503 with `Retry-After` before its body is read.
    pub max_request_bytes_in_flight: u64,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://…`.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct Admin {
    /// Where the admin API's bearer token comes from; none: the server makes one on the
    /// store's first start and keeps its hash in the store.
    pub token: Option<SecretRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_recipients: u32,
}

impl Limits {
    /// The largest submission body the API reads: attachments arrive base64-encoded,
    /// so the message limit plus the inflation and room for the JSON around it (the
    /// decoded size is checked against `max_message_bytes` afterwards).
    pub fn max_submission_body_bytes(&self) -> u64 {
        self.max_message_bytes.saturating_mul(4) / 3 + 64 * 1024
    }
}

#[derive(Debug, Clone)]
pub struct Delivery {
    /// Recipients being delivered at once, over all relays.
    pub max_in_flight: u32,
    /// How long a leased recipient stays ours without renewal.
    pub lease: Duration,
    /// A recipient older than this expires.
    pub max_age: Duration,
    /// Recipients leased per scheduling round.
    pub batch: u32,
    /// EHLO name.
    pub helo_name: String,
    /// Connect and per-command timeout of the SMTP client.
    pub smtp_timeout: Duration,
    /// How often a relay that stopped answering is probed (connect and EHLO) until it
    /// answers again (`relay_probe_secs`, 1–300, default 2).
    pub relay_probe: Duration,
    /// Return-path domain for VERP (`bounces+TOKEN@domain`); none turns VERP off.
    pub bounce_domain: Option<String>,
    /// The local part before `+TOKEN` (`bounce_prefix`, default `bounces`).
    pub bounce_prefix: String,
    /// The key VERP tokens are signed with; none: one made on first start and kept in
    /// the store.
    pub verp_key: Option<SecretRef>,
    /// How delivery is shared between tenants (`[delivery.fairness]`).
    pub fairness: Fairness,
}

/// How delivery is shared between tenants: deficit round robin over the tenants with
/// waiting work, each within its own budget (`serve/fair.rs` says how).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fairness {
    /// Recipients a tenant of weight 1 may start per turn.
    pub quantum: u32,
    /// Groups one tenant may have in progress at once (routing, waiting or sending).
    pub tenant_max_groups: u32,
    /// Recipients one tenant may have held in memory by this host (waiting or in
    /// progress); more stays queued in the store.
    pub tenant_max_held: u32,
    /// Recipients all tenants together may have held in memory by this host.
    pub max_held: u32,
    /// Turn sizes by tenant id; a tenant not listed weighs 1.
    pub weights: std::collections::BTreeMap<String, u32>,
}

/// Which plugin serves a stage, and how it is bounded.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub source: PluginSource,
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub reuse_instances: bool,
    pub config: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PluginSource {
    Builtin(String),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Plugins {
    pub ingest: PluginConfig,
    pub route: PluginConfig,
    pub send: PluginConfig,
    pub bounce: PluginConfig,
    pub bill: PluginConfig,
    /// Platform maxima for tenant plugins.
    pub max_timeout: Duration,
    pub max_memory_bytes: usize,
    /// Most calls of one tenant plugin running at once (`[plugins]
    /// max_calls_in_flight`, default 8): a tenant asks for fewer at upload.
    pub max_calls_in_flight: u32,
    /// Largest tenant plugin upload (`[plugins] max_upload_bytes`, default 10 MiB).
    pub max_upload_bytes: u64,
    /// Bounds of tenant plugins' logs (`[plugins.logs]`).
    pub logs: PluginLogs,
    /// Bounds of what an upload may cost (`[plugins.uploads]`).
    pub uploads: PluginUploads,
    /// Threads that run tenants' plugin calls (`[plugins] tenant_threads`, default one
    /// per core).
    pub tenant_threads: usize,
    /// Their nice value (`[plugins] tenant_threads_nice`, 0–19, default 10): the host's
    /// other work comes first.
    pub tenant_threads_nice: i32,
}

/// Bounds of tenant plugins' logs, in bytes (`[plugins.logs]`). A tenant's logs
/// hold at most `max_bytes_per_tenant` on a host, whatever its plugins write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLogs {
    /// Bytes of one message kept, cut on a UTF-8 boundary (`max_line_bytes`, 4096).
    pub max_line_bytes: usize,
    /// Fields of one line kept (`max_fields`, 16).
    pub max_fields: usize,
    /// Bytes of a field's key, and of its value, kept (`max_field_bytes`, 256).
    pub max_field_bytes: usize,
    /// `log` calls kept per plugin call (`max_lines_per_call`, 64).
    pub max_lines_per_call: usize,
    /// Bytes one (tenant, stage) log holds (`max_bytes_per_stage`, 1 MiB).
    pub max_bytes_per_stage: usize,
    /// Bytes all of one tenant's logs hold together (`max_bytes_per_tenant`, 2 MiB).
    pub max_bytes_per_tenant: usize,
    /// Bytes of JSON lines in one page of `GET …/logs` (`max_page_bytes`, 256 KiB).
    pub max_page_bytes: usize,
}

/// Bounds of tenant plugin uploads (`[plugins.uploads]`): what a component may
/// declare (checked before it is compiled), what compiling it may cost, and how
/// often a tenant may upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUploads {
    /// Core modules in one component (`max_core_modules`, 16).
    pub max_core_modules: u32,
    /// Functions defined, all core modules together (`max_functions`, 50 000).
    pub max_functions: u32,
    /// Locals one function declares (`max_function_locals`, 5000).
    pub max_function_locals: u32,
    /// Code bytes of one function (`max_function_code_bytes`, 1 MiB).
    pub max_function_code_bytes: u64,
    /// Code bytes of all functions (`max_code_bytes`, 8 MiB).
    pub max_code_bytes: u64,
    /// Data segment bytes (`max_data_bytes`, 8 MiB).
    pub max_data_bytes: u64,
    /// Elements a table may start with (`max_table_elements`, 100 000).
    pub max_table_elements: u64,
    /// Wall time of one compilation (`max_compile_secs`, 20).
    pub max_compile: Duration,
    /// CPU time of one compilation (`max_compile_cpu_secs`, 20).
    pub max_compile_cpu_secs: u64,
    /// Heap and anonymous memory of the compiling process, `RLIMIT_DATA`
    /// (`max_compile_memory_mib`, 1024).
    pub max_compile_memory_bytes: u64,
    /// Compilations at once on a host, all tenants together (`max_compiles_at_once`, 1).
    pub max_compiles_at_once: u32,
    /// Uploads a tenant may make per hour once its burst is spent (`uploads_per_hour`, 60).
    pub uploads_per_hour: u32,
    /// Uploads a tenant may make at once (`upload_burst`, 20).
    pub upload_burst: u32,
    /// Refused uploads a tenant may make per hour once its burst is spent
    /// (`failed_uploads_per_hour`, 12).
    pub failed_uploads_per_hour: u32,
    /// Refused uploads a tenant may make at once (`failed_upload_burst`, 10).
    pub failed_upload_burst: u32,
    /// Versions a tenant keeps, all stages together (`max_versions_per_tenant`, 100).
    pub max_versions_per_tenant: u32,
}

/// Where a secret is read from. Secrets are never inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// Reads the secret; the error names where it looked.
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
            }
            SecretRef::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
        }
    }

    /// How it is stored (`env:NAME` / `file:PATH`): safe to show.
    pub fn reference(&self) -> String {
        match self {
            SecretRef::Env(n) => format!("env:{n}"),
            SecretRef::File(p) => format!("file:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    pub id: String,
    pub url: String,
    pub auth_user: Option<String>,
    pub auth_password: Option<SecretRef>,
    pub connection_limit: u32,
    pub rate_limit_per_sec: Option<u32>,
    pub weight: u32,
    pub tags: Vec<String>,
    pub owner: Option<String>,
    /// PEM CA certificates the relay's TLS is checked against instead of the public
    /// roots (`relay::TlsCa`).
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub id: String,
    pub name: String,
    pub allowed_sender_domains: Vec<String>,
    pub pools: Vec<String>,
    pub route_plugin: Option<String>,
    /// Whether the header `From:`/`Sender:` must be in the allowed sender domains.
    pub header_from_check: bool,
}

// ---- raw ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPipeline {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    plugins: RawPlugins,
    #[serde(default)]
    relay: Vec<RawRelay>,
    #[serde(default)]
    tenant: Vec<RawTenant>,
    #[serde(default)]
    smtp_in: RawSmtpIn,
    #[serde(default)]
    log_source: Vec<RawLogSource>,
    #[serde(default)]
    admission: RawAdmission,
    #[serde(default)]
    events: RawEvents,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    webhooks: RawWebhooks,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    max_tenants: Count,
    max_relays: Count,
    #[serde(default)]
    allow_unauthenticated_from: Vec<Spanned<String>>,
}

impl RawMetrics {
    fn resolve(self, check: &mut Check) -> MetricsConfig {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    retention_days: Count,
    poll_ms: Count,
    heartbeat_secs: Count,
    max_streams_per_tenant: Count,
    max_streams: Count,
}

impl RawEvents {
    fn resolve(self, check: &mut Check) -> Events {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
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
    poll_ms: Count,
    attempts_kept: Count,
    rotation_overlap_secs: Count,
}

impl RawWebhooks {
    fn resolve(self, check: &mut Check) -> Webhooks {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmission {
    max_requests_in_flight: Count,
    accepts_per_sec: Count,
    accept_burst: Count,
    max_hold_ms: Count,
    max_held_requests: Count,
    #[serde(default)]
    tenant: std::collections::BTreeMap<String, Spanned<RawTenantAdmission>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTenantAdmission {
    max_requests_in_flight: Count,
    accepts_per_sec: Count,
    accept_burst: Count,
    max_hold_ms: Count,
    max_held_requests: Count,
}

/// A count of `key` between 1 and `max`, else `default` (an error is recorded).
fn bounded(check: &mut Check, key: String, raw: Count, default: u64, max: u64) -> u64 {
    match raw {
        Some(v) if !(1..=max).contains(v.get_ref()) => {
            check.at(v.span(), key, format!("must be between 1 and {max}"));
            default
        }
        Some(v) => v.into_inner(),
        None => default,
    }
}

/// A count of `key` between 0 and `max`, else `default` (an error is recorded).
fn at_most(check: &mut Check, key: String, raw: Count, default: u32, max: u32) -> u32 {
    match raw {
        Some(v) if *v.get_ref() > u64::from(max) => {
            check.at(v.span(), key, format!("must be between 0 and {max}"));
            default
        }
        Some(v) => v.into_inner() as u32,
        None => default,
    }
}

impl RawTenantAdmission {
    fn resolve(self, check: &mut Check, table: &str, base: TenantAdmission) -> TenantAdmission {
        let mut n = |key: &str, raw, default: u32, max| {
            bounded(
                check,
                format!("{table}.{key}"),
                raw,
                u64::from(default),
                max,
            ) as u32
        };
        TenantAdmission {
            max_requests_in_flight: n(
                "max_requests_in_flight",
                self.max_requests_in_flight,
                base.max_requests_in_flight,
                1_000_000,
            ),
            accepts_per_sec: n(
                "accepts_per_sec",
                self.accepts_per_sec,
                base.accepts_per_sec,
                1_000_000,
            ),
            accept_burst: n(
                "accept_burst",
                self.accept_burst,
                base.accept_burst,
                10_000_000,
            ),
            max_hold_ms: at_most(
                check,
                format!("{table}.max_hold_ms"),
                self.max_hold_ms,
                base.max_hold_ms,
                60_000,
            ),
            max_held_requests: at_most(
                check,
                format!("{table}.max_held_requests"),
                self.max_held_requests,
                base.max_held_requests,
                100_000,
            ),
        }
    }
}

impl RawAdmission {
    fn resolve(self, check: &mut Check) -> Admission {
        let builtin = TenantAdmission {
            max_requests_in_flight: 32,
            accepts_per_sec: 200,
            accept_burst: 400,
            max_hold_ms: 1000,
            max_held_requests: 32,
        };
        let default = RawTenantAdmission {
            max_requests_in_flight: self.max_requests_in_flight,
            accepts_per_sec: self.accepts_per_sec,
            accept_burst: self.accept_burst,
            max_hold_ms: self.max_hold_ms,
            max_held_requests: self.max_held_requests,
        }
        .resolve(check, "admission", builtin);
        let mut tenants = std::collections::BTreeMap::new();
        for (id, raw) in self.tenant {
            let span = raw.span();
            let table = format!("admission.tenant.{id}");
            if !valid_id(&id) {
                check.at(
                    span.clone(),
                    table.clone(),
                    format!("{id:?} is not a tenant id (1-64 of a-z 0-9 - _ .)"),
                );
            }
            let limits = raw.into_inner().resolve(check, &table, default);
            tenants.insert(id, limits);
        }
        Admission { default, tenants }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogSource {
    id: Spanned<String>,
    path: PathBuf,
    format: Spanned<String>,
    logins: Spanned<PathBuf>,
    checkpoint: Option<PathBuf>,
    #[serde(default = "default_log_poll_millis")]
    poll_millis: u64,
    host: Option<String>,
}

fn default_log_poll_millis() -> u64 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtpIn {
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default = "default_smtp_in_max_message_bytes")]
    max_message_bytes: u64,
    #[serde(default = "default_smtp_in_max_recipients")]
    max_recipients: u32,
    #[serde(default = "default_smtp_in_command_timeout")]
    command_timeout_secs: u64,
    #[serde(default = "default_smtp_in_data_timeout")]
    data_timeout_secs: u64,
    #[serde(default = "default_smtp_in_max_connections")]
    max_connections: u32,
    #[serde(default = "default_smtp_in_max_connections_per_ip")]
    max_connections_per_ip: u32,
    #[serde(default = "default_smtp_in_max_session_secs")]
    max_session_secs: u64,
    #[serde(default = "default_smtp_in_max_unproductive_commands")]
    max_unproductive_commands: u32,
}

impl Default for RawSmtpIn {
    fn default() -> Self {
        toml::from_str("").expect("every smtp_in key has a default")
    }
}

fn default_smtp_in_max_message_bytes() -> u64 {
    10 << 20
}
fn default_smtp_in_max_recipients() -> u32 {
    100
}
fn default_smtp_in_command_timeout() -> u64 {
    300
}
fn default_smtp_in_data_timeout() -> u64 {
    600
}
fn default_smtp_in_max_connections() -> u32 {
    64
}
/// An eighth of the listener: a relay sending many bounces at once still gets several.
fn default_smtp_in_max_connections_per_ip() -> u32 {
    8
}
/// Room for the longest DATA phase (`data_timeout_secs`) and a few transactions.
fn default_smtp_in_max_session_secs() -> u64 {
    1200
}
/// A client that greets, resets or NOOPs more than this between messages is idling.
fn default_smtp_in_max_unproductive_commands() -> u32 {
    20
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_http_listen")]
    http_listen: Spanned<String>,
    #[serde(default)]
    node_id: Option<Spanned<String>>,
    #[serde(default)]
    node_suffix: Option<Spanned<String>>,
    #[serde(default = "default_heartbeat_ms")]
    heartbeat_ms: Spanned<u64>,
    #[serde(default = "default_dead_after_heartbeats")]
    dead_after_heartbeats: Spanned<u32>,
    #[serde(default = "default_max_request_bytes_in_flight")]
    max_request_bytes_in_flight: Spanned<u64>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            http_listen: default_http_listen(),
            node_id: None,
            node_suffix: None,
            heartbeat_ms: default_heartbeat_ms(),
            dead_after_heartbeats: default_dead_after_heartbeats(),
            max_request_bytes_in_flight: default_max_request_bytes_in_flight(),
        }
    }
}

/// A heartbeat a second: a dead node's work is taken over within a few seconds.
fn default_heartbeat_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

/// Five missed heartbeats: a node busy for a moment is not taken for dead.
fn default_dead_after_heartbeats() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}

/// Whether `v` may name a node (it goes into leases, logs and a file name).
pub fn valid_node_name(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !v.starts_with('.')
}

/// Room for four submissions of the default 25 MiB limit at once, base64 included.
fn default_max_request_bytes_in_flight() -> Spanned<u64> {
    Spanned::new(0..0, 160 << 20)
}

fn default_http_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8025".into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "default_store_url")]
    url: Spanned<String>,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            url: default_store_url(),
        }
    }
}

fn default_store_url() -> Spanned<String> {
    Spanned::new(0..0, "sqlite://./sluice-data/sluice.db".into())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    token: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: u64,
    #[serde(default = "default_max_recipients")]
    max_recipients: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_message_bytes: default_max_message_bytes(),
            max_recipients: default_max_recipients(),
        }
    }
}

/// `[plugins] max_upload_bytes` when the file gives none.
const DEFAULT_MAX_UPLOAD_BYTES: u64 = 10 << 20;

fn default_max_message_bytes() -> u64 {
    25 << 20
}
fn default_max_recipients() -> u32 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    #[serde(default = "default_max_in_flight")]
    max_in_flight: u32,
    #[serde(default = "default_lease_secs")]
    lease_secs: u64,
    #[serde(default = "default_max_age_secs")]
    max_age_secs: u64,
    #[serde(default = "default_batch")]
    batch: u32,
    #[serde(default = "default_helo")]
    helo_name: String,
    #[serde(default = "default_smtp_timeout")]
    smtp_timeout_secs: u64,
    #[serde(default = "default_relay_probe")]
    relay_probe_secs: u64,
    #[serde(default)]
    bounce_domain: Option<Spanned<String>>,
    #[serde(default = "default_bounce_prefix")]
    bounce_prefix: Spanned<String>,
    verp_key_env: Option<String>,
    verp_key_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    verp_key: Option<Spanned<toml::Value>>,
    #[serde(default)]
    fairness: RawFairness,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFairness {
    #[serde(default = "default_quantum")]
    quantum: u32,
    /// Absent: `max_in_flight`, so one tenant alone can use every delivery slot.
    tenant_max_groups: Option<u32>,
    /// Absent: `max_in_flight`.
    tenant_max_held: Option<u32>,
    /// Absent: four times `max_in_flight`.
    max_held: Option<u32>,
    #[serde(default)]
    weights: std::collections::BTreeMap<String, Spanned<u32>>,
}

impl Default for RawFairness {
    fn default() -> Self {
        toml::from_str("").expect("every fairness key has a default")
    }
}

fn default_quantum() -> u32 {
    100
}

fn default_bounce_prefix() -> Spanned<String> {
    Spanned::new(0..0, "bounces".into())
}

impl Default for RawDelivery {
    fn default() -> Self {
        toml::from_str("").expect("every delivery key has a default")
    }
}

fn default_max_in_flight() -> u32 {
    256
}
fn default_lease_secs() -> u64 {
    300
}
fn default_max_age_secs() -> u64 {
    5 * 86_400
}
fn default_batch() -> u32 {
    512
}
fn default_helo() -> String {
    "sluice.localhost".into()
}
fn default_smtp_timeout() -> u64 {
    30
}
fn default_relay_probe() -> u64 {
    2
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    #[serde(default)]
    ingest: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    route: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    send: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    bounce: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    bill: Option<Spanned<RawPlugin>>,
    #[serde(default)]
    max_timeout_ms: Option<u64>,
    #[serde(default)]
    max_memory_mib: Option<usize>,
    #[serde(default)]
    max_upload_bytes: Option<u64>,
    #[serde(default)]
    max_calls_in_flight: Option<Spanned<u32>>,
    #[serde(default)]
    tenant_threads: Option<Spanned<u32>>,
    #[serde(default)]
    tenant_threads_nice: Option<Spanned<i64>>,
    #[serde(default)]
    logs: RawPluginLogs,
    #[serde(default)]
    uploads: RawPluginUploads,
}

type Count = Option<Spanned<u64>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPluginLogs {
    max_line_bytes: Count,
    max_fields: Count,
    max_field_bytes: Count,
    max_lines_per_call: Count,
    max_bytes_per_stage: Count,
    max_bytes_per_tenant: Count,
    max_page_bytes: Count,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPluginUploads {
    max_core_modules: Count,
    max_functions: Count,
    max_function_locals: Count,
    max_function_code_bytes: Count,
    max_code_bytes: Count,
    max_data_bytes: Count,
    max_table_elements: Count,
    max_compile_secs: Count,
    max_compile_cpu_secs: Count,
    max_compile_memory_mib: Count,
    max_compiles_at_once: Count,
    uploads_per_hour: Count,
    upload_burst: Count,
    failed_uploads_per_hour: Count,
    failed_upload_burst: Count,
    max_versions_per_tenant: Count,
}

/// A positive count of `[plugins.<table>] key`, else `default`; zero is an error.
fn positive(check: &mut Check, table: &str, key: &str, raw: Count, default: u64) -> u64 {
    match raw {
        Some(v) if *v.get_ref() == 0 => {
            check.at(
                v.span(),
                format!("plugins.{table}.{key}"),
                "must be at least 1",
            );
            default
        }
        Some(v) => v.into_inner(),
        None => default,
    }
}

impl RawPluginLogs {
    fn resolve(self, check: &mut Check) -> PluginLogs {
        let mut n = |key, raw, default| positive(check, "logs", key, raw, default) as usize;
        let logs = PluginLogs {
            max_line_bytes: n("max_line_bytes", self.max_line_bytes, 4096),
            max_fields: n("max_fields", self.max_fields, 16),
            max_field_bytes: n("max_field_bytes", self.max_field_bytes, 256),
            max_lines_per_call: n("max_lines_per_call", self.max_lines_per_call, 64),
            max_bytes_per_stage: n("max_bytes_per_stage", self.max_bytes_per_stage, 1 << 20),
            max_bytes_per_tenant: n("max_bytes_per_tenant", self.max_bytes_per_tenant, 2 << 20),
            max_page_bytes: n("max_page_bytes", self.max_page_bytes, 256 << 10),
        };
        // A page holds at least one line: the longest line, escaped as JSON (at most six
        // bytes per byte), must fit.
        let longest = 6 * (logs.max_line_bytes + 2 * logs.max_fields * logs.max_field_bytes) + 512;
        if logs.max_page_bytes < longest {
            check.at(
                0..0,
                "plugins.logs.max_page_bytes",
                format!(
                    "{} is below {longest}, the JSON of the longest line the other limits allow",
                    logs.max_page_bytes
                ),
            );
        }
        logs
    }
}

impl RawPluginUploads {
    fn resolve(self, check: &mut Check) -> PluginUploads {
        let mut n = |key, raw, default| positive(check, "uploads", key, raw, default);
        PluginUploads {
            max_core_modules: n("max_core_modules", self.max_core_modules, 16) as u32,
            max_functions: n("max_functions", self.max_functions, 50_000) as u32,
            max_function_locals: n("max_function_locals", self.max_function_locals, 5000) as u32,
            max_function_code_bytes: n(
                "max_function_code_bytes",
                self.max_function_code_bytes,
                1 << 20,
            ),
            max_code_bytes: n("max_code_bytes", self.max_code_bytes, 8 << 20),
            max_data_bytes: n("max_data_bytes", self.max_data_bytes, 8 << 20),
            max_table_elements: n("max_table_elements", self.max_table_elements, 100_000),
            max_compile: Duration::from_secs(n("max_compile_secs", self.max_compile_secs, 20)),
            max_compile_cpu_secs: n("max_compile_cpu_secs", self.max_compile_cpu_secs, 20),
            max_compile_memory_bytes: n(
                "max_compile_memory_mib",
                self.max_compile_memory_mib,
                1024,
            ) << 20,
            max_compiles_at_once: n("max_compiles_at_once", self.max_compiles_at_once, 1) as u32,
            uploads_per_hour: n("uploads_per_hour", self.uploads_per_hour, 60) as u32,
            upload_burst: n("upload_burst", self.upload_burst, 20) as u32,
            failed_uploads_per_hour: n("failed_uploads_per_hour", self.failed_uploads_per_hour, 12)
                as u32,
            failed_upload_burst: n("failed_upload_burst", self.failed_upload_burst, 10) as u32,
            max_versions_per_tenant: n("max_versions_per_tenant", self.max_versions_per_tenant, 100)
                as u32,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    builtin: Option<String>,
    file: Option<PathBuf>,
    timeout_ms: Option<u64>,
    memory_mib: Option<usize>,
    /// Default: on for the built-in plugins (trusted, and a reused instance
    /// is ten times cheaper), off for plugin files.
    #[serde(default)]
    reuse_instances: Option<bool>,
    #[serde(default)]
    config: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    id: Spanned<String>,
    url: Spanned<String>,
    auth_user: Option<String>,
    auth_password_env: Option<String>,
    auth_password_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    auth_password: Option<Spanned<toml::Value>>,
    #[serde(default = "default_connection_limit")]
    connection_limit: u32,
    rate_limit_per_sec: Option<u32>,
    #[serde(default = "default_weight")]
    weight: u32,
    /// Left out on a platform relay: `["pool:platform"]`, every tenant's default pool,
    /// as the admin API does.
    tags: Option<Vec<String>>,
    owner: Option<Spanned<String>>,
    tls_ca_file: Option<Spanned<String>>,
}

fn default_connection_limit() -> u32 {
    DEFAULT_CONNECTION_LIMIT
}
fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: Spanned<String>,
    name: Option<String>,
    #[serde(default)]
    allowed_sender_domains: Vec<String>,
    #[serde(default = "default_pools")]
    pools: Vec<String>,
    route_plugin: Option<Spanned<String>>,
    #[serde(default = "default_header_from_check")]
    header_from_check: bool,
}

fn default_header_from_check() -> bool {
    true
}

fn default_pools() -> Vec<String> {
    vec![PLATFORM_POOL.into()]
}

struct Check<'a> {
    text: &'a str,
    origin: &'a str,
    errors: Vec<ConfigError>,
}

impl Check<'_> {
    fn at(
        &mut self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        let e = if span.is_empty() && span.start == 0 {
            ConfigError {
                origin: self.origin.into(),
                line: None,
                column: None,
                key: Some(key.into()),
                message: message.into(),
                snippet: None,
            }
        } else {
            ConfigError::at(self.origin, self.text, span, key.into(), message.into())
        };
        self.errors.push(e);
    }
}

fn secret(
    check: &mut Check,
    key: &str,
    env: Option<String>,
    file: Option<PathBuf>,
    inline: Option<Spanned<toml::Value>>,
    span: std::ops::Range<usize>,
) -> Option<SecretRef> {
    if let Some(v) = inline {
        check.at(
            v.span(),
            key,
            format!("secrets are never inline: use {key}_env = \"VAR\" or {key}_file = \"PATH\""),
        );
        // The snippet would print the secret itself into a terminal or a CI
        // log; file:line:column already say where it is.
        if let Some(e) = check.errors.last_mut() {
            e.snippet = None;
        }
    }
    match (env, file) {
        (Some(_), Some(_)) => {
            check.at(span, key, format!("give {key}_env or {key}_file, not both"));
            None
        }
        (Some(e), None) => Some(SecretRef::Env(e)),
        (None, Some(f)) => Some(SecretRef::File(f)),
        (None, None) => None,
    }
}

impl RawPlugin {
    fn resolve(
        self,
        check: &mut Check,
        stage: crate::stage::Stage,
        span: std::ops::Range<usize>,
    ) -> PluginConfig {
        let key = format!("plugins.{stage}");
        let defaults = crate::runtime::Limits::for_stage(stage);
        let source = match (self.builtin, self.file) {
            (Some(b), None) => match crate::builtin::by_name(&b) {
                Some(found) if found.stage == stage => PluginSource::Builtin(b),
                Some(found) => {
                    check.at(
                        span.clone(),
                        format!("{key}.builtin"),
                        format!(
                            "default plugin {b:?} serves stage {}, not {stage}",
                            found.stage
                        ),
                    );
                    PluginSource::Builtin(b)
                }
                None => {
                    check.at(
                        span.clone(),
                        format!("{key}.builtin"),
                        format!("no default plugin called {b:?}"),
                    );
                    PluginSource::Builtin(b)
                }
            },
            (None, Some(f)) => PluginSource::File(f),
            (None, None) => PluginSource::Builtin(crate::builtin::default_for(stage).name.into()),
            (Some(_), Some(_)) => {
                check.at(span.clone(), key.clone(), "give builtin or file, not both");
                PluginSource::Builtin(crate::builtin::default_for(stage).name.into())
            }
        };
        let builtin = matches!(source, PluginSource::Builtin(_));
        let config = self
            .config
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        PluginConfig {
            source,
            timeout: self
                .timeout_ms
                .map_or(defaults.timeout, Duration::from_millis),
            memory_bytes: self.memory_mib.map_or(defaults.memory_bytes, |m| m << 20),
            reuse_instances: self.reuse_instances.unwrap_or(builtin),
            config,
        }
    }
}

impl RawPipeline {
    pub(super) fn validate(self, text: &str, origin: &str) -> Result<Pipeline, ConfigErrors> {
        use crate::stage::Stage;
        let mut check = Check {
            text,
            origin,
            errors: Vec::new(),
        };

        let admission = self.admission.resolve(&mut check);
        let events = self.events.resolve(&mut check);
        let metrics = self.metrics.resolve(&mut check);
        let webhooks = self.webhooks.resolve(&mut check);
        let http_listen = match self.server.http_listen.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let v = self.server.http_listen.get_ref().clone();
                check.at(
                    self.server.http_listen.span(),
                    "server.http_listen",
                    format!("{v:?} is not an address like 127.0.0.1:8025"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8025))
            }
        };
        let mut node_name = |key: &str, v: Option<Spanned<String>>, max: usize| {
            let v = v?;
            if valid_node_name(v.get_ref(), max) {
                Some(v.into_inner())
            } else {
                check.at(
                    v.span(),
                    key,
                    format!(
                        "{:?} must be 1-{max} of A-Z a-z 0-9 - _ . (not starting with .)",
                        v.get_ref()
                    ),
                );
                None
            }
        };
        let node_id = node_name("server.node_id", self.server.node_id, 64);
        let node_suffix = node_name("server.node_suffix", self.server.node_suffix, 16);
        let heartbeat_ms = *self.server.heartbeat_ms.get_ref();
        if !(100..=10_000).contains(&heartbeat_ms) {
            check.at(
                self.server.heartbeat_ms.span(),
                "server.heartbeat_ms",
                format!("{heartbeat_ms} must be between 100 and 10000"),
            );
        }
        let dead_after_heartbeats = *self.server.dead_after_heartbeats.get_ref();
        if !(3..=60).contains(&dead_after_heartbeats) {
            check.at(
                self.server.dead_after_heartbeats.span(),
                "server.dead_after_heartbeats",
                format!(
                    "{dead_after_heartbeats} must be between 3 and 60 (fewer takes a node \
                     that was busy for a moment for dead)"
                ),
            );
        }

        let url = self.store.url.get_ref().clone();
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            check.at(
                self.store.url.span(),
                "store.url",
                format!("{url:?} is neither sqlite://PATH nor postgres://…"),
            );
        }

        let token_span = self.admin.token.as_ref().map(|t| t.span()).unwrap_or(0..0);
        let admin = Admin {
            token: secret(
                &mut check,
                "admin.token",
                self.admin.token_env,
                self.admin.token_file,
                self.admin.token,
                token_span,
            ),
        };

        let limits = Limits {
            max_message_bytes: self.limits.max_message_bytes,
            max_recipients: self.limits.max_recipients,
        };
        if limits.max_recipients == 0 {
            check.at(0..0, "limits.max_recipients", "must be at least 1");
        }
        // A request larger than the whole budget could never be served: refuse the
        // file instead of answering it 503 for ever.
        let max_request_bytes_in_flight = *self.server.max_request_bytes_in_flight.get_ref();
        let largest_body = limits.max_submission_body_bytes().max(
            self.plugins
                .max_upload_bytes
                .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES),
        );
        if max_request_bytes_in_flight < largest_body {
            check.at(
                self.server.max_request_bytes_in_flight.span(),
                "server.max_request_bytes_in_flight",
                format!(
                    "{max_request_bytes_in_flight} bytes is less than the largest request body \
                     the API takes ({largest_body} bytes: limits.max_message_bytes base64-encoded, \
                     or plugins.max_upload_bytes)"
                ),
            );
        }

        let d = self.delivery;
        if let Some(domain) = &d.bounce_domain {
            let v = domain.get_ref();
            let ok = !v.is_empty()
                && v.len() <= 253
                && v.contains('.')
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                check.at(
                    domain.span(),
                    "delivery.bounce_domain",
                    format!("{v:?} is not a domain name like bounces.example.com"),
                );
            }
        }
        {
            let v = d.bounce_prefix.get_ref();
            // The token is 48 characters; prefix + '+' + token must fit 64 octets.
            let ok = !v.is_empty()
                && v.len() <= 15
                && v.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                check.at(
                    d.bounce_prefix.span(),
                    "delivery.bounce_prefix",
                    format!("{v:?} must be 1-15 of a-z 0-9 - _"),
                );
            }
        }
        let verp_span = d.verp_key.as_ref().map(|t| t.span()).unwrap_or(0..0);
        let verp_key = secret(
            &mut check,
            "delivery.verp_key",
            d.verp_key_env,
            d.verp_key_file,
            d.verp_key,
            verp_span,
        );
        let max_in_flight = d.max_in_flight.max(1);
        let f = d.fairness;
        for (tenant, w) in &f.weights {
            let v = *w.get_ref();
            if v == 0 || v > 1000 {
                check.at(
                    w.span(),
                    "delivery.fairness.weights",
                    format!("tenant {tenant:?} has weight {v}; weights are 1 to 1000"),
                );
            }
        }
        let tenant_max_held = f.tenant_max_held.unwrap_or(max_in_flight).max(1);
        let fairness = Fairness {
            quantum: f.quantum.max(1),
            tenant_max_groups: f.tenant_max_groups.unwrap_or(max_in_flight).max(1),
            tenant_max_held,
            max_held: f
                .max_held
                .unwrap_or(max_in_flight.saturating_mul(4))
                .max(tenant_max_held),
            weights: f
                .weights
                .into_iter()
                .map(|(t, w)| (t, w.into_inner()))
                .collect(),
        };
        let delivery = Delivery {
            fairness,
            max_in_flight,
            lease: Duration::from_secs(d.lease_secs.max(5)),
            max_age: Duration::from_secs(d.max_age_secs),
            batch: d.batch.clamp(1, 10_000),
            helo_name: d.helo_name,
            smtp_timeout: Duration::from_secs(d.smtp_timeout_secs.max(1)),
            relay_probe: Duration::from_secs(d.relay_probe_secs.clamp(1, 300)),
            bounce_domain: d.bounce_domain.map(Spanned::into_inner),
            bounce_prefix: d.bounce_prefix.into_inner(),
            verp_key,
        };

        let si = self.smtp_in;
        let smtp_listen = si
            .listen
            .and_then(|l| match l.get_ref().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    let v = l.get_ref().clone();
                    check.at(
                        l.span(),
                        "smtp_in.listen",
                        format!("{v:?} is not an address like 127.0.0.1:2526"),
                    );
                    None
                }
            });
        if smtp_listen.is_some() && delivery.bounce_domain.is_none() {
            check.at(
                0..0,
                "smtp_in.listen",
                "the SMTP listener takes bounces for delivery.bounce_domain: set it too",
            );
        }
        let smtp_in = SmtpIn {
            listen: smtp_listen,
            hostname: si.hostname.unwrap_or_else(|| delivery.helo_name.clone()),
            max_message_bytes: si.max_message_bytes.max(1024),
            max_recipients: si.max_recipients.max(1),
            command_timeout: Duration::from_secs(si.command_timeout_secs.max(1)),
            data_timeout: Duration::from_secs(si.data_timeout_secs.max(1)),
            max_connections: si.max_connections.max(1),
            max_connections_per_ip: si.max_connections_per_ip.max(1),
            max_session: Duration::from_secs(si.max_session_secs.max(1)),
            max_unproductive_commands: si.max_unproductive_commands.max(1),
        };

        let mut log_sources = Vec::new();
        for (i, ls) in self.log_source.into_iter().enumerate() {
            let key = |k: &str| format!("log_source[{i}].{k}");
            let id = ls.id.get_ref().clone();
            if !valid_id(&id) {
                check.at(
                    ls.id.span(),
                    key("id"),
                    format!("{id:?} is not an id (lower-case letters, digits, '-', '_', '.')"),
                );
            } else if log_sources.iter().any(|l: &LogSourceConfig| l.id == id) {
                check.at(ls.id.span(), key("id"), format!("{id:?} is used twice"));
            }
            let format = match ls.format.get_ref().as_str() {
                "qmail" => Some(crate::maillog::Format::Qmail),
                "postfix" => Some(crate::maillog::Format::Postfix),
                other => {
                    check.at(
                        ls.format.span(),
                        key("format"),
                        format!("{other:?} is not a log format: qmail or postfix"),
                    );
                    None
                }
            };
            let logins = match crate::bill_logs::Logins::load(ls.logins.get_ref()) {
                Ok(l) => Some(l),
                Err(e) => {
                    check.at(ls.logins.span(), key("logins"), e.to_string());
                    None
                }
            };
            if let (Some(format), Some(logins)) = (format, logins) {
                log_sources.push(LogSourceConfig {
                    checkpoint: ls.checkpoint.unwrap_or_else(|| {
                        PathBuf::from(format!("./sluice-data/log-source-{id}.checkpoint"))
                    }),
                    id,
                    path: ls.path,
                    format,
                    logins,
                    poll: Duration::from_millis(ls.poll_millis.clamp(10, 60_000)),
                    host: ls.host.unwrap_or_else(|| "localhost".into()),
                });
            }
        }

        let p = self.plugins;
        let max_calls_in_flight = match p.max_calls_in_flight {
            Some(v) if *v.get_ref() == 0 => {
                check.at(
                    v.span(),
                    "plugins.max_calls_in_flight",
                    "must be at least 1",
                );
                8
            }
            Some(v) => v.into_inner(),
            None => 8,
        };
        let tenant_threads = match p.tenant_threads {
            Some(v) if !(1..=256).contains(v.get_ref()) => {
                check.at(v.span(), "plugins.tenant_threads", "must be 1 to 256");
                1
            }
            Some(v) => v.into_inner() as usize,
            None => std::thread::available_parallelism().map_or(2, usize::from),
        };
        let tenant_threads_nice = match p.tenant_threads_nice {
            Some(v) if !(0..=19).contains(v.get_ref()) => {
                check.at(
                    v.span(),
                    "plugins.tenant_threads_nice",
                    "must be 0 (as the host) to 19 (the lowest priority)",
                );
                10
            }
            Some(v) => v.into_inner() as i32,
            None => 10,
        };
        let logs = p.logs.resolve(&mut check);
        let uploads = p.uploads.resolve(&mut check);
        let mut plugin = |raw: Option<Spanned<RawPlugin>>, stage: Stage| match raw {
            Some(s) => {
                let span = s.span();
                s.into_inner().resolve(&mut check, stage, span)
            }
            None => RawPlugin::default().resolve(&mut check, stage, 0..0),
        };
        let plugins = Plugins {
            ingest: plugin(p.ingest, Stage::Ingest),
            route: plugin(p.route, Stage::Route),
            send: plugin(p.send, Stage::Send),
            bounce: plugin(p.bounce, Stage::Bounce),
            bill: plugin(p.bill, Stage::Bill),
            max_timeout: Duration::from_millis(p.max_timeout_ms.unwrap_or(1000)),
            max_memory_bytes: p.max_memory_mib.unwrap_or(128) << 20,
            max_upload_bytes: p
                .max_upload_bytes
                .unwrap_or(DEFAULT_MAX_UPLOAD_BYTES)
                .max(1),
            max_calls_in_flight,
            logs,
            uploads,
            tenant_threads,
            tenant_threads_nice,
        };

        let tenant_ids: HashSet<String> =
            self.tenant.iter().map(|t| t.id.get_ref().clone()).collect();
        let mut seen = HashSet::new();
        let mut relays = Vec::new();
        for (i, r) in self.relay.into_iter().enumerate() {
            let key = format!("relay[{i}]");
            let id = r.id.get_ref().clone();
            if !valid_id(&id) {
                check.at(r.id.span(), format!("{key}.id"), invalid_id_message(&id));
            } else if !seen.insert(id.clone()) {
                check.at(
                    r.id.span(),
                    format!("{key}.id"),
                    format!("relay id {id:?} is used twice"),
                );
            }
            if let Err(e) = check_relay_url(r.url.get_ref()) {
                check.at(r.url.span(), format!("{key}.url"), e);
            }
            if r.connection_limit == 0 {
                check.at(
                    r.id.span(),
                    format!("{key}.connection_limit"),
                    "must be at least 1",
                );
            }
            if let Some(owner) = &r.owner
                && !tenant_ids.contains(owner.get_ref())
            {
                check.at(
                    owner.span(),
                    format!("{key}.owner"),
                    format!("no tenant {:?} in this file", owner.get_ref()),
                );
            }
            if let Some(ca) = &r.tls_ca_file {
                let key = format!("{key}.tls_ca_file");
                if !relay_url_uses_tls(r.url.get_ref()) {
                    check.at(ca.span(), key, TLS_CA_WITHOUT_TLS);
                } else if let Err(e) = crate::relay::check_ca_file(Path::new(ca.get_ref())) {
                    check.at(ca.span(), key, e);
                }
            }
            let span = r.id.span();
            let auth_password = secret(
                &mut check,
                &format!("{key}.auth_password"),
                r.auth_password_env,
                r.auth_password_file,
                r.auth_password,
                span,
            );
            relays.push(RelayConfig {
                id,
                url: r.url.into_inner(),
                auth_user: r.auth_user,
                auth_password,
                connection_limit: r.connection_limit,
                rate_limit_per_sec: r.rate_limit_per_sec,
                weight: r.weight,
                tags: default_tags(r.owner.is_some(), r.tags),
                owner: r.owner.map(Spanned::into_inner),
                tls_ca_file: r.tls_ca_file.map(|p| PathBuf::from(p.into_inner())),
            });
        }

        let mut seen = HashSet::new();
        let mut tenants = Vec::new();
        for (i, t) in self.tenant.into_iter().enumerate() {
            let key = format!("tenant[{i}]");
            let id = t.id.get_ref().clone();
            if !valid_id(&id) {
                check.at(t.id.span(), format!("{key}.id"), invalid_id_message(&id));
            } else if !seen.insert(id.clone()) {
                check.at(
                    t.id.span(),
                    format!("{key}.id"),
                    format!("tenant id {id:?} is used twice"),
                );
            }
            if let Some(rp) = &t.route_plugin {
                match crate::builtin::by_name(rp.get_ref()) {
                    Some(b) if b.stage == Stage::Route => {}
                    _ => check.at(
                        rp.span(),
                        format!("{key}.route_plugin"),
                        format!("{:?} is not a default route plugin", rp.get_ref()),
                    ),
                }
            }
            tenants.push(TenantConfig {
                name: t.name.unwrap_or_else(|| id.clone()),
                id,
                allowed_sender_domains: t.allowed_sender_domains,
                pools: t.pools,
                route_plugin: t.route_plugin.map(Spanned::into_inner),
                header_from_check: t.header_from_check,
            });
        }

        if !check.errors.is_empty() {
            return Err(ConfigErrors(check.errors));
        }
        Ok(Pipeline {
            server: Server {
                http_listen,
                node_id,
                node_suffix,
                heartbeat: Duration::from_millis(heartbeat_ms),
                dead_after_heartbeats,
                max_request_bytes_in_flight,
            },
            store: StoreConfig { url },
            admin,
            limits,
            delivery,
            plugins,
            relays,
            tenants,
            smtp_in,
            log_sources,
            admission,
            events,
            metrics,
            webhooks,
        })
    }
}
