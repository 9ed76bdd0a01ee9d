//! The pipeline file's shape: raw serde structs (strict, with spans where a
//! later check needs to point at a value) and the validated [`Pipeline`].

use super::error::{ConfigError, ConfigErrors};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
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
}

#[derive(Debug, Clone)]
pub struct Server {
    pub http_listen: SocketAddr,
    /// Names this process in leases and events; unique per host.
    pub node_id: String,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://…`.
    pub url: String,
}

#[derive(Debug, Clone)]
pub struct Admin {
    /// Where the admin API's bearer token comes from; none disables the admin API.
    pub token: Option<SecretRef>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_recipients: u32,
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
    /// Return-path domain for VERP (`bounces+TOKEN@domain`); none turns VERP off.
    pub bounce_domain: Option<String>,
    /// The local part before `+TOKEN` (`bounce_prefix`, default `bounces`).
    pub bounce_prefix: String,
    /// The key VERP tokens are signed with; none: one made on first start and kept in
    /// the store.
    pub verp_key: Option<SecretRef>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_http_listen")]
    http_listen: Spanned<String>,
    #[serde(default)]
    node_id: Option<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            http_listen: default_http_listen(),
            node_id: None,
        }
    }
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
    #[serde(default)]
    bounce_domain: Option<Spanned<String>>,
    #[serde(default = "default_bounce_prefix")]
    bounce_prefix: Spanned<String>,
    verp_key_env: Option<String>,
    verp_key_file: Option<PathBuf>,
    /// Only here to refuse it with a clear message.
    verp_key: Option<Spanned<toml::Value>>,
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
    #[serde(default)]
    tags: Vec<String>,
    owner: Option<Spanned<String>>,
}

fn default_connection_limit() -> u32 {
    16
}
fn default_weight() -> u32 {
    100
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
    vec!["pool:platform".into()]
}

/// An id: 1–64 of `a-z 0-9 - _ .`
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// Checks an SMTP relay URL: `smtp://host[:port]` (plain; add
/// `?tls=opportunistic` for STARTTLS when offered or `?tls=required` to
/// insist), or `smtps://host[:port]` (TLS from the first byte).
pub fn check_relay_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("relay URL {url:?} has no scheme (smtp:// or smtps://)"))?;
    if !matches!(scheme, "smtp" | "smtps") {
        return Err(format!(
            "relay URL {url:?}: scheme {scheme:?} is not smtp or smtps"
        ));
    }
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "relay URL {url:?} needs a host and no user info (use auth_user)"
        ));
    }
    if let Some((_, port)) = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(']') || authority.starts_with('['))
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("relay URL {url:?}: port {port:?} is not a number"));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair {
            "tls=required" | "tls=opportunistic" | "tls=none" => {}
            other => {
                return Err(format!(
                    "relay URL {url:?}: unknown option {other:?} (tls=required|opportunistic|none)"
                ));
            }
        }
    }
    Ok(())
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
        let node_id = self.server.node_id.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice".into());
            format!("{host}-{}", std::process::id())
        });

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
        let delivery = Delivery {
            max_in_flight: d.max_in_flight.max(1),
            lease: Duration::from_secs(d.lease_secs.max(5)),
            max_age: Duration::from_secs(d.max_age_secs),
            batch: d.batch.clamp(1, 10_000),
            helo_name: d.helo_name,
            smtp_timeout: Duration::from_secs(d.smtp_timeout_secs.max(1)),
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
            max_upload_bytes: p.max_upload_bytes.unwrap_or(10 << 20).max(1),
            max_calls_in_flight,
        };

        let tenant_ids: HashSet<String> =
            self.tenant.iter().map(|t| t.id.get_ref().clone()).collect();
        let mut seen = HashSet::new();
        let mut relays = Vec::new();
        for (i, r) in self.relay.into_iter().enumerate() {
            let key = format!("relay[{i}]");
            let id = r.id.get_ref().clone();
            if !valid_id(&id) {
                check.at(
                    r.id.span(),
                    format!("{key}.id"),
                    format!("{id:?} is not a valid id (1-64 of a-z 0-9 - _ .)"),
                );
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
                tags: r.tags,
                owner: r.owner.map(Spanned::into_inner),
            });
        }

        let mut seen = HashSet::new();
        let mut tenants = Vec::new();
        for (i, t) in self.tenant.into_iter().enumerate() {
            let key = format!("tenant[{i}]");
            let id = t.id.get_ref().clone();
            if !valid_id(&id) {
                check.at(
                    t.id.span(),
                    format!("{key}.id"),
                    format!("{id:?} is not a valid id (1-64 of a-z 0-9 - _ .)"),
                );
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
        })
    }
}
