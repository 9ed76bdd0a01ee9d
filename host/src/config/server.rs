//! `[server]`, `[store]`, `[admin]` and `[limits]`: this node, its store, the admin
//! token and the size of what the API takes.

use super::check::{Check, secret};
use super::secrets::SecretRef;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
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
pub(super) struct RawStore {
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
pub(super) struct RawAdmin {
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    token: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "default_max_message_bytes")]
    pub(super) max_message_bytes: u64,
    #[serde(default = "default_max_recipients")]
    pub(super) max_recipients: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_message_bytes: default_max_message_bytes(),
            max_recipients: default_max_recipients(),
        }
    }
}

fn default_max_message_bytes() -> u64 {
    25 << 20
}
fn default_max_recipients() -> u32 {
    1000
}

impl RawServer {
    /// `[server]`. `largest_body` is the largest request body the API takes (from
    /// `[limits]` and `[plugins]`): a byte budget below it could never serve that request.
    pub(super) fn validate(self, check: &mut Check, largest_body: u64) -> Server {
        let http_listen = match self.http_listen.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                let v = self.http_listen.get_ref().clone();
                check.at(
                    self.http_listen.span(),
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
        let node_id = node_name("server.node_id", self.node_id, 64);
        let node_suffix = node_name("server.node_suffix", self.node_suffix, 16);
        let heartbeat_ms = *self.heartbeat_ms.get_ref();
        if !(100..=10_000).contains(&heartbeat_ms) {
            check.at(
                self.heartbeat_ms.span(),
                "server.heartbeat_ms",
                format!("{heartbeat_ms} must be between 100 and 10000"),
            );
        }
        let dead_after_heartbeats = *self.dead_after_heartbeats.get_ref();
        if !(3..=60).contains(&dead_after_heartbeats) {
            check.at(
                self.dead_after_heartbeats.span(),
                "server.dead_after_heartbeats",
                format!(
                    "{dead_after_heartbeats} must be between 3 and 60 (fewer takes a node \
                     that was busy for a moment for dead)"
                ),
            );
        }
        // A request larger than the whole budget could never be served: refuse the
        // file instead of answering it 503 for ever.
        let max_request_bytes_in_flight = *self.max_request_bytes_in_flight.get_ref();
        if max_request_bytes_in_flight < largest_body {
            check.at(
                self.max_request_bytes_in_flight.span(),
                "server.max_request_bytes_in_flight",
                format!(
                    "{max_request_bytes_in_flight} bytes is less than the largest request body \
                     the API takes ({largest_body} bytes: limits.max_message_bytes base64-encoded, \
                     or plugins.max_upload_bytes)"
                ),
            );
        }
        Server {
            http_listen,
            node_id,
            node_suffix,
            heartbeat: Duration::from_millis(heartbeat_ms),
            dead_after_heartbeats,
            max_request_bytes_in_flight,
        }
    }
}

impl RawStore {
    /// `[store]`: the URL's scheme only; opening it is `serve`'s.
    pub(super) fn validate(self, check: &mut Check) -> StoreConfig {
        let url = self.url.get_ref().clone();
        if !(url.starts_with("sqlite://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            check.at(
                self.url.span(),
                "store.url",
                format!("{url:?} is neither sqlite://PATH nor postgres://…"),
            );
        }
        StoreConfig { url }
    }
}

impl RawAdmin {
    /// `[admin]`: where the token comes from (read by `resolve`), never the token.
    pub(super) fn validate(self, check: &mut Check) -> Admin {
        let token_span = self.token.as_ref().map(|t| t.span()).unwrap_or(0..0);
        Admin {
            token: secret(
                check,
                "admin.token",
                self.token_env,
                self.token_file,
                self.token,
                token_span,
            ),
        }
    }
}

impl RawLimits {
    /// `[limits]`.
    pub(super) fn validate(self, check: &mut Check) -> Limits {
        let limits = Limits {
            max_message_bytes: self.max_message_bytes,
            max_recipients: self.max_recipients,
        };
        if limits.max_recipients == 0 {
            check.at(0..0, "limits.max_recipients", "must be at least 1");
        }
        limits
    }
}
