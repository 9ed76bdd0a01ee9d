//! The server's shared state: store, plugins, relays, live relay stats.

use super::plugins::PluginSet;
use crate::config::{Pipeline, RelayConfig, SecretRef};
use crate::logging::Chain;
use crate::relay::{RelaySettings, Relays, TlsCa};
use crate::stage::RelayWindow;
use crate::store::{KeyOwner, NewRelay, NewTenant, RelayState, Store, Tenant};
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

/// Windows of relay stats the route plugin sees, in seconds.
pub const STAT_WINDOWS: [u32; 3] = [60, 900, 3600];

pub use super::clock::now_ms;

/// The HTTP handlers' state: the server.
pub type AppState = Arc<Server>;

/// Everything a request handler or a delivery task needs.
pub struct Server {
    pub pipeline: Pipeline,
    /// This node: its stable id (the owner of its leases), heartbeat and leadership.
    pub node: super::nodes::Node,
    pub store: Store,
    pub plugins: PluginSet,
    /// Each `[[log_source]]`'s logins as read at start (`config::resolve`), in the
    /// pipeline's order.
    pub log_source_logins: Vec<crate::bill_logs::Logins>,
    pub relays: Relays,
    /// SHA-256 of the admin token.
    admin_token_sha256: RwLock<[u8; 32]>,
    /// Whether the admin token is the store's (no `[admin]` token in the pipeline): its
    /// hash is then read again every few seconds, so a reset on one node holds on all.
    admin_token_stored: bool,
    /// Wakes the dispatcher when new work is committed.
    pub wake: Notify,
    /// Recipients being delivered at once.
    pub in_flight: Arc<Semaphore>,
    /// Accepted recipients on their way to the dispatcher without a store round trip.
    pub handoff: super::handoff::Handoff,
    /// Relay id → windows of every tenant's traffic together (the admin API's view),
    /// refreshed every second from the stat buckets.
    pub stats: RwLock<HashMap<String, Vec<RelayWindow>>>,
    /// Tenant id → relay id → that tenant's own windows on the relay (what its route
    /// plugin sees); only pairs with traffic in the longest window, refreshed with
    /// `stats`.
    tenant_stats: RwLock<HashMap<String, HashMap<String, Vec<RelayWindow>>>>,
    /// Signs VERP return paths; none when `delivery.bounce_domain` is not set.
    pub verp: Option<crate::verp::Verp>,
    /// DKIM: the sealing secret and tenants' active keys (`dkim_sign.rs`).
    pub dkim: super::dkim_sign::DkimSigning,
    /// Tenants' billing settings, cached briefly.
    pub billing: super::billing_cache::BillingCache,
    /// Each tenant's accounts, for its own prepaid rule at dispatch.
    pub accounts: super::accounts_cache::AccountsCache,
    /// Request body bytes the HTTP API may hold at once.
    pub body_budget: super::body_budget::BodyBudget,
    /// Each tenant's requests in progress and accept rate on this host.
    pub admission: Arc<super::admission::Admission>,
    /// `[limits]` now in force (a SIGHUP reload changes them).
    pub limits: super::live_limits::LiveLimits,
    /// The event streams open on this node and what wakes them (`event_hub.rs`).
    pub events: Arc<super::event_hub::EventHub>,
    /// When `GET /metrics` last read the store; scrapes take turns under it
    /// (`metrics_http.rs`).
    pub scrapes: tokio::sync::Mutex<Option<Instant>>,
    shutting_down: AtomicBool,
    key_cache: Mutex<HashMap<String, (KeyOwner, Instant)>>,
    tenant_cache: Mutex<HashMap<String, (Tenant, Instant)>>,
    /// The suspended tenants as last read from the store, and when (issue 22).
    suspended: Mutex<Option<(Instant, Arc<std::collections::HashSet<String>>)>>,
}

/// How `sluice serve` was asked to start, beyond its pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct StartOptions {
    /// Make a new admin token (the pipeline names none), print it once, and keep only
    /// its hash: the one before stops working.
    pub reset_admin_token: bool,
}

/// The `host_secrets` entry holding the hex SHA-256 of the admin token the store made.
const ADMIN_TOKEN_SECRET: &str = "admin_token_sha256";

/// The admin token when the pipeline names none: made on the store's first start and
/// printed that once; only its hash is kept (in the store, so every node of one
/// database takes the same token, and a restart keeps it). A later start says where the
/// token went; `reset` makes a new one.
async fn stored_admin_token(store: &Store, reset: bool) -> anyhow::Result<[u8; 32]> {
    let token = random_token("adm");
    let hash = hex::encode(sha256(&token));
    let stored = if reset {
        store
            .set_host_secret(ADMIN_TOKEN_SECRET, &hash, now_ms())
            .await
            .context("cannot store the new admin token's hash")?;
        hash.clone()
    } else {
        store
            .host_secret(ADMIN_TOKEN_SECRET, || hash.clone(), now_ms())
            .await
            .context("cannot read or store the admin token's hash")?
    };
    if stored == hash {
        println!(
            "sluice: admin token (shown once; only its hash is kept in the store; \
             [admin] token_env or token_file names one of your own): {token}"
        );
    } else {
        println!(
            "sluice: admin token: the one printed when this store was first started \
             (only its hash is kept); `sluice serve --reset-admin-token` makes a new one"
        );
    }
    parse_sha256(&stored)
        .context("the stored admin token hash is damaged; start with --reset-admin-token")
}

/// The VERP signer for the pipeline's bounce domain: the key from
/// `delivery.verp_key_env`/`_file` (`configured_key`, read by the preflight checks),
/// else one made on first start and kept in the store
/// (so every host on one database signs alike). `None` when VERP is off.
async fn load_verp(
    pipeline: &Pipeline,
    store: &Store,
    configured_key: Option<String>,
) -> anyhow::Result<Option<crate::verp::Verp>> {
    use anyhow::Context;
    let d = &pipeline.delivery;
    let Some(domain) = &d.bounce_domain else {
        return Ok(None);
    };
    let key = match configured_key {
        Some(key) => key,
        None => store
            .host_secret("verp_key", crate::verp::generate_key, now_ms())
            .await
            .context("cannot read or make the VERP key")?,
    };
    let verp = crate::verp::Verp::new(key.as_bytes(), &d.bounce_prefix, domain)
        .context("delivery.verp_key")?;
    Ok(Some(verp))
}

fn parse_sha256(hex_text: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim())?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{} bytes, not 32", bytes.len()))
}

pub fn sha256(s: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).into()
}

impl Server {
    /// Opens the store, seeds it from the pipeline, loads the plugins and
    /// the relays.
    pub async fn start(pipeline: Pipeline, options: StartOptions) -> anyhow::Result<Server> {
        // The checks `sluice pipeline check` runs, before anything is opened.
        // Before anything is counted: `[metrics]`'s bounds on label sets.
        crate::metrics::init(pipeline.metrics.bounds);
        let ready = super::preflight::check(&pipeline)?;
        for w in &ready.warnings {
            tracing::warn!("{w}");
        }
        if let Some(path) = pipeline.store.url.strip_prefix("sqlite://")
            && let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Before the store is opened: a second process on a SQLite store stops here.
        let node = super::nodes::Node::resolve(&pipeline)?;
        let store = Store::open(&pipeline.store.url)
            .await
            .with_context(|| format!("cannot open the store {}", pipeline.store.url))?;
        // The store keeps no metrics of its own: its group commits are timed here.
        store.observe_commits(Box::new(|took, size| {
            let m = crate::metrics::get();
            m.store_commit.observe(took.as_secs_f64());
            m.store_commit_group.observe(size as f64);
        }));
        let plugins = ready.plugins;

        // (`--reset-admin-token` with a pipeline's own token is refused by the CLI.)
        let admin_token_sha256 = match &ready.admin_token {
            Some(token) => sha256(token),
            None => stored_admin_token(&store, options.reset_admin_token).await?,
        };

        seed(&store, &pipeline).await?;

        let verp = load_verp(&pipeline, &store, ready.verp_key).await?;
        let dkim = super::dkim_sign::DkimSigning::start(&store, ready.dkim_key.as_deref()).await?;
        let body_budget = super::body_budget::BodyBudget::new(
            pipeline.server.max_request_bytes_in_flight,
            pipeline
                .limits
                .max_submission_body_bytes()
                .max(pipeline.plugins.max_upload_bytes),
        );
        let server = Server {
            limits: super::live_limits::LiveLimits::new(&pipeline.limits),
            body_budget,
            admission: Arc::new(super::admission::Admission::new(&pipeline.admission)),
            events: super::event_hub::EventHub::new(
                pipeline.events.max_streams_per_tenant,
                pipeline.events.max_streams,
            ),
            verp,
            dkim,
            in_flight: Arc::new(Semaphore::new(pipeline.delivery.max_in_flight as usize)),
            handoff: super::handoff::Handoff::new(
                pipeline.delivery.fairness.max_held as usize,
                pipeline.delivery.fairness.tenant_max_held as usize,
            ),
            pipeline,
            node,
            store,
            plugins,
            log_source_logins: ready.log_source_logins,
            relays: Relays::default(),
            admin_token_sha256: RwLock::new(admin_token_sha256),
            admin_token_stored: ready.admin_token.is_none(),
            wake: Notify::new(),
            stats: RwLock::new(HashMap::new()),
            tenant_stats: RwLock::new(HashMap::new()),
            billing: Default::default(),
            accounts: Default::default(),
            scrapes: Default::default(),
            shutting_down: AtomicBool::new(false),
            key_cache: Mutex::new(HashMap::new()),
            tenant_cache: Mutex::new(HashMap::new()),
            suspended: Mutex::new(None),
        };
        server.sync_relays().await?;
        server.refresh_stats().await?;
        Ok(server)
    }

    /// Whether `given` is the admin token (hashes are compared, so the time taken does
    /// not depend on the token).
    pub fn is_admin_token(&self, given: &str) -> bool {
        sha256(given)
            == *self
                .admin_token_sha256
                .read()
                .unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the store's admin token hash again (a `--reset-admin-token` start of another
    /// node changed it); writes this node's back when the store has none (a database
    /// made again).
    async fn refresh_admin_token(&self) {
        if !self.admin_token_stored {
            return;
        }
        let mine = hex::encode(
            *self
                .admin_token_sha256
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let stored = match self.store.get_host_secret(ADMIN_TOKEN_SECRET).await {
            Ok(Some(h)) => Ok(h),
            // A store made again: this node's hash goes back in (another's may win).
            Ok(None) => {
                self.store
                    .host_secret(ADMIN_TOKEN_SECRET, || mine, now_ms())
                    .await
            }
            Err(e) => Err(e),
        };
        match stored
            .map_err(anyhow::Error::from)
            .and_then(|h| parse_sha256(&h))
        {
            Ok(hash) => {
                *self
                    .admin_token_sha256
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = hash;
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the admin token's hash")
            }
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Rebuilds relay clients from the store (after an admin change, and
    /// periodically so that changes made on another host arrive).
    pub async fn sync_relays(&self) -> anyhow::Result<()> {
        let stored = self.store.list_relays().await?;
        let settings = stored
            .into_iter()
            .map(|r| {
                let password = r.auth_secret_ref.as_deref().and_then(|s| {
                    let secret = if let Some(name) = s.strip_prefix("env:") {
                        SecretRef::Env(name.into())
                    } else {
                        SecretRef::File(s.trim_start_matches("file:").into())
                    };
                    secret.resolve().map_err(|e| tracing::warn!(relay = %r.id, error = %e, "relay password unavailable")).ok()
                });
                RelaySettings {
                    id: r.id,
                    url: r.url,
                    auth_user: r.auth_user,
                    auth_password: password,
                    connection_limit: r.connection_limit.max(1),
                    rate_limit_per_sec: r.rate_limit_per_sec,
                    weight: r.weight,
                    tags: r.tags,
                    owner: r.owner,
                    draining: r.state == RelayState::Draining,
                    // Read at every sync: a replaced file rebuilds the client.
                    tls_ca: r.tls_ca_file.as_deref().map(|p| TlsCa::read(Path::new(p))),
                }
            })
            .collect();
        let d = &self.pipeline.delivery;
        for (id, why) in self.relays.sync(settings, &d.helo_name, d.smtp_timeout) {
            tracing::error!(relay = %id, error = %why, "relay cannot be used");
        }
        Ok(())
    }

    /// Reads the relay windows, the platform's and each active tenant's, from the stat
    /// buckets (one read per window whatever the number of tenants).
    pub async fn refresh_stats(&self) -> anyhow::Result<()> {
        let now = now_ms();
        let since: Vec<i64> = STAT_WINDOWS
            .iter()
            .map(|w| now - i64::from(*w) * 1000)
            .collect();
        let counts = self.store.relay_stat_windows(&since, now).await?;
        let stats = counts
            .platform
            .into_iter()
            .map(|(relay, windows)| (relay, relay_windows(windows)))
            .collect();
        let mut by_tenant: HashMap<String, HashMap<String, Vec<RelayWindow>>> = HashMap::new();
        for ((tenant, relay), windows) in counts.by_tenant {
            by_tenant
                .entry(tenant)
                .or_default()
                .insert(relay, relay_windows(windows));
        }
        *self.stats.write().unwrap_or_else(|p| p.into_inner()) = stats;
        *self.tenant_stats.write().unwrap_or_else(|p| p.into_inner()) = by_tenant;
        Ok(())
    }

    /// `tenant`'s own windows on `relay`: its traffic only, never another tenant's on a
    /// shared relay; zeros where it had none.
    pub fn tenant_windows(&self, tenant: &str, relay: &str) -> Vec<RelayWindow> {
        self.tenant_stats
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .and_then(|relays| relays.get(relay))
            .cloned()
            .unwrap_or_else(|| {
                STAT_WINDOWS
                    .iter()
                    .map(|w| RelayWindow {
                        window_secs: *w,
                        ..Default::default()
                    })
                    .collect()
            })
    }

    /// Whose a bearer key is: its tenant and scope (cached for a few seconds so a
    /// busy client does not cost a store read per request; a revocation on this host
    /// forgets the cache at once, on other hosts within those seconds).
    pub async fn key_owner(&self, key: &str) -> anyhow::Result<Option<KeyOwner>> {
        let hash = hex::encode(sha256(key));
        if let Some((t, at)) = self
            .key_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            && at.elapsed() < Duration::from_secs(5)
        {
            return Ok(Some(t.clone()));
        }
        let tenant = self.store.key_owner(key).await?;
        if let Some(t) = &tenant {
            self.key_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(hash, (t.clone(), Instant::now()));
        }
        Ok(tenant)
    }

    /// Makes the schema again when the database answers without it (dropped and
    /// re-created), seeds it from the pipeline and reloads the relays. What the old
    /// database held — messages, API keys, the ledger — is gone, and the log says so.
    async fn recreate_missing_schema(&self) {
        match self.store.recreate_missing_schema().await {
            Ok(false) => {}
            Ok(true) => {
                tracing::error!(
                    "the database answered without Sluice's tables (dropped and created again?): \
                     made the schema again and seeded the pipeline's relays and tenants; messages, \
                     API keys and billing of the old database are not in it"
                );
                if let Err(e) = seed(&self.store, &self.pipeline).await {
                    tracing::error!(error = %format!("{e:#}"), "seeding the re-created store failed");
                }
                if let Err(e) = self.node.rejoin(&self.store).await {
                    tracing::error!(error = %format!("{e:#}"), "joining the re-created store failed");
                }
                self.forget_keys();
                self.refresh_admin_token().await;
                if let Err(e) = self.sync_relays().await {
                    tracing::warn!(error = %format!("{e:#}"), "relay sync failed");
                }
            }
            Err(e) => tracing::warn!(error = %Chain(&e), "checking the store's schema failed"),
        }
    }

    /// Forgets cached keys (after a revocation).
    pub fn forget_keys(&self) {
        self.key_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.tenant_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether a tenant's sending is suspended, as the store said within the last second
    /// (one read a second however many groups ask). A store error says no: the store's
    /// own holds still keep the tenant's queue back.
    pub async fn tenant_suspended(&self, id: &str) -> bool {
        let fresh = |c: &Option<(Instant, Arc<std::collections::HashSet<String>>)>| {
            c.as_ref()
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(1))
                .map(|(_, set)| set.clone())
        };
        let cached = fresh(&self.suspended.lock().unwrap_or_else(|p| p.into_inner()));
        let set = match cached {
            Some(set) => set,
            None => match self.store.suspended_tenant_ids().await {
                Ok(ids) => {
                    let set = Arc::new(ids.into_iter().collect::<std::collections::HashSet<_>>());
                    *self.suspended.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), set.clone()));
                    set
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "cannot read the suspended tenants");
                    return false;
                }
            },
        };
        set.contains(id)
    }

    /// Forgets the suspended tenants read (after a suspension or a resume here).
    pub fn forget_suspensions(&self) {
        *self.suspended.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A tenant by id, cached briefly for the delivery path.
    pub async fn tenant(&self, id: &str) -> anyhow::Result<Option<Tenant>> {
        if let Some((t, at)) = self
            .tenant_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            && at.elapsed() < Duration::from_secs(5)
        {
            return Ok(Some(t.clone()));
        }
        let t = self.store.get_tenant(id).await?;
        if let Some(t) = &t {
            self.tenant_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.to_owned(), (t.clone(), Instant::now()));
        }
        Ok(t)
    }
}

/// The store's window counts as the route stage's windows, in [`STAT_WINDOWS`] order.
fn relay_windows(windows: Vec<crate::store::WindowCounts>) -> Vec<RelayWindow> {
    windows
        .into_iter()
        .zip(STAT_WINDOWS)
        .map(|(c, window_secs)| RelayWindow {
            window_secs,
            sent: c.sent,
            delivered: c.delivered,
            deferred: c.deferred,
            hard_bounced: c.hard_bounced,
            soft_bounced: c.soft_bounced,
            blocked: c.blocked,
            mean_latency_ms: c.mean_latency_ms.unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        })
        .collect()
}

/// A random secret with a readable prefix.
pub fn random_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Keeps stats and relays fresh.
pub async fn refresh_loop(server: Arc<Server>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    let mut last_schema_check: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        if let Err(e) = server.refresh_stats().await {
            tracing::warn!(error = %format!("{e:#}"), "relay stats refresh failed");
            // A database dropped and created again answers without tables: make them
            // again (at most every 5 s) rather than fail every request until a restart.
            if n >= last_schema_check + 5 {
                last_schema_check = n;
                server.recreate_missing_schema().await;
            }
        }
        if n.is_multiple_of(5) {
            if let Err(e) = server.sync_relays().await {
                tracing::warn!(error = %format!("{e:#}"), "relay sync failed");
            }
            server.refresh_admin_token().await;
        }
        // Stats older than twice the longest window are of no use to anyone. One node
        // prunes for all.
        if n.is_multiple_of(60) && server.node.is_leader() {
            let longest = STAT_WINDOWS.iter().max().copied().unwrap_or(3600);
            let before = now_ms() - 2 * i64::from(longest) * 1000;
            if let Err(e) = server.store.prune_relay_stats(before).await {
                tracing::warn!(error = %format!("{e:#}"), "pruning relay stats failed");
            }
        }
    }
}

/// A relay's CA file as the store keeps it: a path.
pub(super) fn tls_ca_file(r: &RelayConfig) -> Option<String> {
    r.tls_ca_file
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Seeds the store from the pipeline: relays and tenants the store does not have yet, and
/// a `default` tenant (with a key, printed once) when there are none at all. The admin
/// API's changes are stored and win over the file from then on.
async fn seed(store: &Store, pipeline: &Pipeline) -> anyhow::Result<()> {
    let now = now_ms();
    // The pipeline seeds relays and tenants; the admin API's changes to
    // them are stored and win over the file from then on.
    for r in &pipeline.relays {
        if store.get_relay(&r.id).await?.is_none() {
            store
                .upsert_relay(
                    NewRelay {
                        id: r.id.clone(),
                        url: r.url.clone(),
                        auth_user: r.auth_user.clone(),
                        auth_secret_ref: r.auth_password.as_ref().map(SecretRef::reference),
                        connection_limit: r.connection_limit,
                        rate_limit_per_sec: r.rate_limit_per_sec,
                        weight: r.weight,
                        tags: r.tags.clone(),
                        owner: r.owner.clone(),
                        state: RelayState::Active,
                        tls_ca_file: tls_ca_file(r),
                    },
                    now,
                )
                .await?;
        }
    }
    for t in &pipeline.tenants {
        if store.get_tenant(&t.id).await?.is_none() {
            store
                .create_tenant(
                    NewTenant {
                        id: t.id.clone(),
                        name: t.name.clone(),
                        allowed_sender_domains: t.allowed_sender_domains.clone(),
                        pools: t.pools.clone(),
                        route_plugin: t.route_plugin.clone(),
                        header_from_check: t.header_from_check,
                    },
                    now,
                )
                .await?;
        }
    }
    if pipeline.tenants.is_empty() && store.list_tenants().await?.is_empty() {
        store
            .create_tenant(
                NewTenant {
                    id: "default".into(),
                    name: "Default tenant".into(),
                    allowed_sender_domains: vec!["*".into()],
                    pools: vec!["pool:platform".into()],
                    route_plugin: None,
                    header_from_check: true,
                },
                now,
            )
            .await?;
        let (_, key) = store.create_api_key("default", now).await?;
        println!(
            "sluice: created tenant \"default\"; its API key (shown once; only its hash is kept): {key}"
        );
    } else if pipeline.tenants.is_empty() && store.get_tenant("default").await?.is_some() {
        println!(
            "sluice: tenant \"default\": its API key is the one printed when this store was \
             first started (only its hash is kept); POST /admin/v1/tenants/default/keys \
             makes another"
        );
    }
    Ok(())
}
