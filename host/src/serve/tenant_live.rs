//! Tenants' own plugins as this server runs them: which version of each (tenant, stage)
//! is live, compiled once per version and shared by every call, with per-plugin call
//! counters, a shared log, a cap on its calls in flight, and the failure policy: after a
//! failure the platform's plugin decides (`fallback`) or the message waits (`defer`, fail
//! closed), and a plugin that keeps failing is suspended.
//!
//! Switching is atomic: the live map is replaced in one write, a call that already holds
//! an `Arc<Live>` finishes on the version it started with, and the next call picks the
//! new one. The map is re-read from the store every [`REFRESH_EVERY`], so a version
//! activated on another host is live here within seconds.

use super::tenant_threads::TenantThreads;
use super::upload_limits::{Rate, UploadLimits};
use crate::config::{PluginLogs, Plugins};
use crate::logging::Chain;
use crate::runtime::{
    CompileBounds, Limits, LoadError, LogBudget, LogLevel, LogSource, Plugin, PluginError,
    PluginLog, PluginSpec, Runtime, StaticLimits,
};
use crate::stage::Stage;
use crate::store::{ActivePlugin, FailurePolicy, PluginState, PluginVersion, Store};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How often the live map is re-read from the store.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// A plugin that fails this many times within [`SUSPEND_WINDOW`] is suspended.
pub const SUSPEND_AFTER: usize = 5;
pub const SUSPEND_WINDOW: Duration = Duration::from_secs(60);
/// Previously active versions kept compiled per (tenant, stage), so that a rollback
/// switches at once.
const KEEP_PREVIOUS: usize = 3;
/// Other versions kept compiled per (tenant, stage), most recently loaded first.
const KEEP_RECENT: usize = 4;
/// Call times kept for the percentiles.
const RECENT_CALLS: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of one plugin version's calls on this host.
#[derive(Debug, Default)]
pub struct CallStats {
    calls: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    recent_us: Mutex<VecDeque<u64>>,
}

impl CallStats {
    fn record(&self, took: Duration, error: Option<&PluginError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = error {
            *lock(&self.errors).entry(e.kind()).or_default() += 1;
        }
        let mut recent = lock(&self.recent_us);
        if recent.len() == RECENT_CALLS {
            recent.pop_front();
        }
        recent.push_back(took.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    /// Calls, errors by kind, and p50/p99/mean of the last calls' wall time in µs (the
    /// mean is what one call slot's rate is: calls back to back take their sum).
    pub fn snapshot(&self) -> serde_json::Value {
        let mut times: Vec<u64> = lock(&self.recent_us).iter().copied().collect();
        times.sort_unstable();
        let mean = (!times.is_empty())
            .then(|| times.iter().map(|&t| u128::from(t)).sum::<u128>() / times.len() as u128)
            .map(|m| u64::try_from(m).unwrap_or(u64::MAX));
        // Nearest rank: the smallest time at or above which p% of the calls lie.
        let pct = |p: usize| -> Option<u64> {
            (!times.is_empty()).then(|| times[(times.len() * p).div_ceil(100).max(1) - 1])
        };
        json!({
            "calls": self.calls.load(Ordering::Relaxed),
            "errors": *lock(&self.errors),
            "p50_us": pct(50),
            "p99_us": pct(99),
            "mean_us": mean,
        })
    }
}

/// The live version of one (tenant, stage).
pub struct Live {
    pub tenant_id: String,
    pub stage: Stage,
    pub version: u32,
    pub plugin: Arc<Plugin>,
    pub stats: Arc<CallStats>,
    pub on_failure: FailurePolicy,
    /// The version's calls in flight on this host: a tenant's calls wait for its own
    /// slots, so a slow plugin holds back only its own traffic.
    slots: Arc<Semaphore>,
    activated_at_ms: i64,
    /// Set here at once when the failure policy trips; the store follows.
    suspended: AtomicBool,
    /// Why, once suspended (for fail-closed deferrals).
    suspended_reason: Mutex<Option<String>>,
    failures: Mutex<VecDeque<Instant>>,
}

/// Who decides a (tenant, stage) on this host right now.
pub enum Pick {
    /// The tenant has no live plugin (none, or suspended with the `fallback` policy).
    Platform,
    Tenant(Arc<Live>),
    /// Its plugin is suspended and its policy is to fail closed: nobody decides; why.
    Closed(String),
}

/// What [`TenantPlugins::call_live`] got.
pub enum LiveCall<T> {
    /// No tenant plugin decides: the platform's does.
    NoPlugin,
    /// The tenant's plugin answered, or failed (see [`CallFailure::closed`]).
    Done(Result<T, CallFailure>),
    /// The tenant's plugin is suspended and fails closed: nobody decides; why.
    Closed(String),
}

/// One failed plugin call of [`TenantPlugins::call_stage`], for a `plugin_error` event.
#[derive(Debug)]
pub struct CallFailure {
    /// The plugin's name (a tenant's is `tenant/stage vN`).
    pub plugin: String,
    pub error: PluginError,
    /// This was the pipeline's plugin called after the first one failed.
    pub fallback: bool,
    /// Why the tenant's plugin was suspended, when this failure tripped the policy.
    pub suspended: Option<String>,
    /// The tenant's policy is to fail closed: no other plugin decides instead.
    pub closed: bool,
}

impl CallFailure {
    /// The reason a deferral gives when this failure fails closed.
    pub fn closed_reason(&self) -> String {
        closed_reason(
            &self.plugin,
            &format!("failed ({}: {})", self.error.kind(), self.error),
        )
    }

    /// The detail of the `plugin_error` event this failure is recorded as.
    pub fn detail(&self, stage: Stage) -> serde_json::Value {
        let mut d = json!({
            "stage": stage.to_string(),
            "plugin": self.plugin,
            "error": self.error.kind(),
            "message": self.error.to_string(),
        });
        if self.fallback {
            d["fallback"] = json!(true);
        } else {
            d["on_failure"] = json!(if self.closed { "defer" } else { "fallback" });
            d["suspended"] = json!(self.suspended.is_some());
            d["reason"] = json!(self.suspended);
        }
        d
    }
}

/// What [`TenantPlugins::call_stage`] got: the answer of whichever plugin decided (or the
/// last error), and every failure on the way.
#[derive(Debug)]
pub struct StageCall<T> {
    pub result: Result<T, PluginError>,
    pub failures: Vec<CallFailure>,
    /// The tenant's plugin failed or is suspended and its policy is to fail closed: the
    /// caller defers, saying this. (`result` is then an error.)
    pub closed: Option<String>,
}

impl<T> StageCall<T> {
    fn answered(v: T) -> StageCall<T> {
        StageCall {
            result: Ok(v),
            failures: Vec::new(),
            closed: None,
        }
    }
}

/// The reason a fail-closed deferral gives.
fn closed_reason(plugin: &str, what: &str) -> String {
    format!("{plugin} {what}, and its failure policy is to defer (fail closed)")
}

/// (tenant, stage, version, content hash).
type CompiledKey = (String, Stage, u32, String);

/// The (tenant, stage)s decided by a tenant plugin, and those failing closed.
#[derive(Clone, Default)]
struct LiveMap {
    running: HashMap<(String, Stage), Arc<Live>>,
    /// Suspended with the `defer` policy: why.
    closed: HashMap<(String, Stage), String>,
}

/// Tenants' plugins on this server.
pub struct TenantPlugins {
    /// Where tenants' plugin calls run.
    threads: TenantThreads,
    runtime: Runtime,
    max_timeout: Duration,
    max_memory_bytes: usize,
    max_calls_in_flight: u32,
    live: RwLock<LiveMap>,
    /// Compiled versions by (tenant, stage, version, content hash).
    /// With when each was last loaded, for eviction.
    compiled: Mutex<HashMap<CompiledKey, (Arc<Plugin>, Instant)>>,
    logs: Mutex<HashMap<(String, Stage), Arc<PluginLog>>>,
    /// Bytes each tenant's logs hold together, across stages.
    log_budgets: Mutex<HashMap<String, Arc<LogBudget>>>,
    log_bounds: PluginLogs,
    /// What an upload may declare, checked before it is compiled.
    static_limits: StaticLimits,
    /// How a tenant's component is compiled: in a child process, within bounds.
    compile_bounds: CompileBounds,
    /// Compilations at once on this host, all tenants together.
    compiles: Semaphore,
    /// How often each tenant may upload.
    pub upload_limits: UploadLimits,
    /// Versions a tenant keeps, all stages together.
    pub max_versions_per_tenant: u32,
    stats: Mutex<HashMap<(String, Stage, u32), Arc<CallStats>>>,
    last_refresh: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

/// A tenant's limits: its own where given, else the stage's defaults, never above the
/// platform maxima. `Err` names the limit that is too high.
pub fn tenant_limits(
    stage: Stage,
    timeout_ms: Option<u32>,
    memory_bytes: Option<u64>,
    max_timeout: Duration,
    max_memory_bytes: usize,
) -> Result<Limits, String> {
    let defaults = Limits::for_stage(stage);
    let timeout = match timeout_ms {
        Some(ms) if Duration::from_millis(u64::from(ms)) > max_timeout => {
            return Err(format!(
                "timeout_ms {ms} is above the platform maximum of {}",
                max_timeout.as_millis()
            ));
        }
        Some(0) => return Err("timeout_ms must be at least 1".into()),
        Some(ms) => Duration::from_millis(u64::from(ms)),
        None => defaults.timeout.min(max_timeout),
    };
    let memory_bytes = match memory_bytes {
        Some(m) if m > max_memory_bytes as u64 => {
            return Err(format!(
                "memory of {m} bytes is above the platform maximum of {max_memory_bytes} bytes"
            ));
        }
        Some(m) if m < 1 << 20 => {
            return Err(format!("memory of {m} bytes is below the minimum of 1 MiB"));
        }
        Some(m) => m as usize,
        None => defaults.memory_bytes.min(max_memory_bytes),
    };
    Ok(Limits {
        timeout,
        memory_bytes,
        reuse_instances: false,
    })
}

/// The name a tenant plugin goes by in logs and events.
pub fn plugin_name(tenant_id: &str, stage: Stage, version: u32) -> String {
    format!("{tenant_id}/{stage} v{version}")
}

impl TenantPlugins {
    /// Tenants' plugins under the platform's `[plugins]` bounds; `compiler` is the binary
    /// that compiles uploads in a child process.
    pub fn new(runtime: Runtime, cfg: &Plugins, compiler: std::path::PathBuf) -> TenantPlugins {
        let uploads = &cfg.uploads;
        TenantPlugins {
            threads: TenantThreads::start(cfg.tenant_threads, cfg.tenant_threads_nice),
            runtime,
            max_timeout: cfg.max_timeout,
            max_memory_bytes: cfg.max_memory_bytes,
            max_calls_in_flight: cfg.max_calls_in_flight.max(1),
            live: RwLock::new(LiveMap::default()),
            compiled: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            log_budgets: Mutex::new(HashMap::new()),
            log_bounds: cfg.logs.clone(),
            static_limits: StaticLimits {
                core_modules: uploads.max_core_modules,
                functions: uploads.max_functions,
                function_locals: uploads.max_function_locals,
                function_code_bytes: uploads.max_function_code_bytes,
                code_bytes: uploads.max_code_bytes,
                data_bytes: uploads.max_data_bytes,
                memory_bytes: cfg.max_memory_bytes as u64,
                table_elements: uploads.max_table_elements,
            },
            compile_bounds: CompileBounds {
                program: compiler,
                wall: uploads.max_compile,
                cpu_secs: uploads.max_compile_cpu_secs,
                memory_bytes: uploads.max_compile_memory_bytes,
            },
            compiles: Semaphore::new(uploads.max_compiles_at_once as usize),
            upload_limits: UploadLimits::new(
                Rate::per_hour(uploads.uploads_per_hour, uploads.upload_burst),
                Rate::per_hour(uploads.failed_uploads_per_hour, uploads.failed_upload_burst),
            ),
            max_versions_per_tenant: uploads.max_versions_per_tenant,
            stats: Mutex::new(HashMap::new()),
            last_refresh: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The platform maxima tenant limits are held to.
    pub fn maxima(&self) -> (Duration, usize) {
        (self.max_timeout, self.max_memory_bytes)
    }

    /// The platform maximum of one version's calls in flight.
    pub fn max_calls_in_flight(&self) -> u32 {
        self.max_calls_in_flight
    }

    /// A version's calls in flight: the tenant's own number, else one per core, never
    /// above the platform maximum.
    pub fn calls_in_flight(&self, asked: Option<u32>) -> u32 {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        asked.unwrap_or(cores).clamp(1, self.max_calls_in_flight)
    }

    /// The log every version of a (tenant, stage) writes to on this host: at most
    /// `max_bytes_per_stage`, and with the tenant's other stages at most
    /// `max_bytes_per_tenant`.
    pub fn log(&self, tenant_id: &str, stage: Stage) -> Arc<PluginLog> {
        let mut logs = lock(&self.logs);
        if let Some(log) = logs.get(&(tenant_id.to_owned(), stage)) {
            return log.clone();
        }
        let budget = lock(&self.log_budgets)
            .entry(tenant_id.to_owned())
            .or_insert_with(|| Arc::new(LogBudget::new(self.log_bounds.max_bytes_per_tenant)))
            .clone();
        let log = Arc::new(PluginLog::with_budget(
            self.log_bounds.max_bytes_per_stage,
            budget,
        ));
        logs.insert((tenant_id.to_owned(), stage), log.clone());
        log
    }

    /// The bounds of tenants' logs.
    pub fn log_bounds(&self) -> &PluginLogs {
        &self.log_bounds
    }

    /// Call counters of a version on this host, if it was called here.
    pub fn stats(&self, tenant_id: &str, stage: Stage, version: u32) -> Option<Arc<CallStats>> {
        lock(&self.stats)
            .get(&(tenant_id.to_owned(), stage, version))
            .cloned()
    }

    fn stats_for(&self, tenant_id: &str, stage: Stage, version: u32) -> Arc<CallStats> {
        lock(&self.stats)
            .entry((tenant_id.to_owned(), stage, version))
            .or_default()
            .clone()
    }

    /// Reads a component, checks its world and sizes before anything compiles it, then
    /// compiles it (in a child process within the upload bounds, one of at most
    /// `max_compiles_at_once` on this host) and type-checks it, under the tenant's limits.
    pub async fn compile(
        &self,
        tenant_id: &str,
        stage: Stage,
        version: u32,
        bytes: Vec<u8>,
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<Plugin, LoadError> {
        let spec = PluginSpec {
            limits,
            config,
            log: Some(self.log(tenant_id, stage)),
            version: Some(version),
        };
        let failed = |e: tokio::task::JoinError| {
            LoadError::NotAComponent(format!("compilation task failed: {e}"))
        };
        let (runtime, limits) = (self.runtime.clone(), self.static_limits);
        let bytes = Arc::new(bytes);
        let read = bytes.clone();
        tokio::task::spawn_blocking(move || runtime.check_untrusted(stage, &read, &limits))
            .await
            .map_err(failed)??;
        // Closed only when the server stops.
        let _permit = self
            .compiles
            .acquire()
            .await
            .map_err(|_| LoadError::NotAComponent("the server is shutting down".into()))?;
        let (runtime, bounds) = (self.runtime.clone(), self.compile_bounds.clone());
        let name = plugin_name(tenant_id, stage, version);
        tokio::task::spawn_blocking(move || {
            runtime.load_untrusted(stage, &name, &bytes, spec, &bounds)
        })
        .await
        .map_err(failed)?
    }

    /// Keeps a compiled version so that activating it does not compile it again.
    pub fn remember(&self, v: &PluginVersion, plugin: Arc<Plugin>) {
        lock(&self.compiled).insert(
            (v.tenant_id.clone(), v.stage, v.version, v.sha256.clone()),
            (plugin, Instant::now()),
        );
    }

    /// Who decides a (tenant, stage): its live plugin, the platform's, or nobody (a
    /// suspended plugin that fails closed). Starts a refresh from the store when the
    /// last one is older than [`REFRESH_EVERY`] (and waits for the very first).
    pub async fn pick(self: &Arc<Self>, store: &Store, tenant_id: &str, stage: Stage) -> Pick {
        let last = *lock(&self.last_refresh);
        match last {
            None => {
                if let Err(e) = self.refresh(store).await {
                    tracing::warn!(error = %Chain(&e), "reading the active tenant plugins failed");
                }
            }
            Some(at) if at.elapsed() >= REFRESH_EVERY => {
                if !self.refreshing.swap(true, Ordering::AcqRel) {
                    let (me, store) = (self.clone(), store.clone());
                    tokio::spawn(async move {
                        if let Err(e) = me.refresh(&store).await {
                            tracing::warn!(error = %Chain(&e), "reading the active tenant plugins failed");
                        }
                        me.refreshing.store(false, Ordering::Release);
                    });
                }
            }
            Some(_) => {}
        }
        let key = (tenant_id.to_owned(), stage);
        let live = {
            let map = self.live.read().unwrap_or_else(|p| p.into_inner());
            match map.running.get(&key) {
                Some(l) => l.clone(),
                None => {
                    return map
                        .closed
                        .get(&key)
                        .map_or(Pick::Platform, |r| Pick::Closed(r.clone()));
                }
            }
        };
        if !live.suspended.load(Ordering::Acquire) {
            return Pick::Tenant(live);
        }
        match live.on_failure {
            FailurePolicy::Fallback => Pick::Platform,
            FailurePolicy::Defer => {
                let why = lock(&live.suspended_reason)
                    .clone()
                    .unwrap_or_else(|| "failing repeatedly".into());
                Pick::Closed(closed_reason(
                    live.plugin.name(),
                    &format!("is suspended ({why})"),
                ))
            }
        }
    }

    /// Re-reads which versions are active and swaps the live map in one write.
    pub async fn refresh(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        let active = store.list_active_plugins().await?;
        let current = self.live.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut next = LiveMap::default();
        // Compiled versions worth keeping: the active ones and the few a rollback
        // would go back to.
        let mut keep = HashSet::new();
        for a in active {
            let ActivePlugin {
                version: v,
                activated_at_ms,
                previous,
            } = a;
            for p in previous.iter().rev().take(KEEP_PREVIOUS) {
                keep.insert((v.tenant_id.clone(), v.stage, *p));
            }
            keep.insert((v.tenant_id.clone(), v.stage, v.version));
            let key = (v.tenant_id.clone(), v.stage);
            if v.state == PluginState::Suspended {
                if v.on_failure == FailurePolicy::Defer {
                    let name = plugin_name(&v.tenant_id, v.stage, v.version);
                    let why = v.state_reason.as_deref().unwrap_or("no reason recorded");
                    next.closed
                        .insert(key, closed_reason(&name, &format!("is suspended ({why})")));
                }
                continue;
            }
            // Same activation: keep the entry, with its failure window (and a local
            // suspension the store has not recorded yet).
            if let Some(cur) = current.running.get(&key)
                && cur.version == v.version
                && cur.activated_at_ms == activated_at_ms
            {
                next.running.insert(key, cur.clone());
                continue;
            }
            let Some(plugin) = self.load_version(store, &v).await else {
                continue;
            };
            next.running.insert(
                key,
                Arc::new(Live {
                    stats: self.stats_for(&v.tenant_id, v.stage, v.version),
                    on_failure: v.on_failure,
                    slots: Arc::new(Semaphore::new(
                        self.calls_in_flight(v.calls_in_flight) as usize
                    )),
                    tenant_id: v.tenant_id,
                    stage: v.stage,
                    version: v.version,
                    plugin,
                    activated_at_ms,
                    suspended: AtomicBool::new(false),
                    suspended_reason: Mutex::new(None),
                    failures: Mutex::new(VecDeque::new()),
                }),
            );
        }
        self.evict(&keep);
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = next;
        *lock(&self.last_refresh) = Some(Instant::now());
        Ok(())
    }

    /// Drops compiled versions nobody is likely to switch to: per (tenant, stage) it
    /// keeps those in `keep` (active, and what a rollback goes back to) and the
    /// [`KEEP_RECENT`] most recently loaded, so that switching back and forth between a
    /// few versions never compiles again.
    fn evict(&self, keep: &HashSet<(String, Stage, u32)>) {
        let mut compiled = lock(&self.compiled);
        let mut by_stage: HashMap<(String, Stage), Vec<(Instant, CompiledKey)>> = HashMap::new();
        for (k, (_, used)) in compiled.iter() {
            by_stage
                .entry((k.0.clone(), k.1))
                .or_default()
                .push((*used, k.clone()));
        }
        for (_, mut entries) in by_stage {
            entries.sort_by_key(|e| std::cmp::Reverse(e.0));
            for (_, k) in entries.into_iter().skip(KEEP_RECENT) {
                if !keep.contains(&(k.0.clone(), k.1, k.2)) {
                    compiled.remove(&k);
                }
            }
        }
    }

    /// The compiled version, from the cache or compiled from the stored bytes.
    async fn load_version(&self, store: &Store, v: &PluginVersion) -> Option<Arc<Plugin>> {
        let key = (v.tenant_id.clone(), v.stage, v.version, v.sha256.clone());
        if let Some((p, used)) = lock(&self.compiled).get_mut(&key) {
            *used = Instant::now();
            return Some(p.clone());
        }
        let name = plugin_name(&v.tenant_id, v.stage, v.version);
        let bytes = match store.plugin_wasm(&v.tenant_id, v.stage, v.version).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(plugin = %name, error = %Chain(&e), "cannot read a tenant plugin");
                return None;
            }
        };
        let limits = tenant_limits(
            v.stage,
            v.timeout_ms,
            v.memory_bytes,
            self.max_timeout,
            self.max_memory_bytes,
        )
        // The maxima may have been lowered since the upload: hold it to them.
        .unwrap_or_else(|_| {
            let d = Limits::for_stage(v.stage);
            Limits {
                timeout: d.timeout.min(self.max_timeout),
                memory_bytes: d.memory_bytes.min(self.max_memory_bytes),
                reuse_instances: false,
            }
        });
        match self
            .compile(
                &v.tenant_id,
                v.stage,
                v.version,
                bytes,
                v.config.clone(),
                limits,
            )
            .await
        {
            Ok(p) => {
                let p = Arc::new(p);
                lock(&self.compiled).insert(key, (p.clone(), Instant::now()));
                Some(p)
            }
            Err(e) => {
                tracing::warn!(plugin = %name, error = %Chain(&e), "a stored tenant plugin cannot be loaded; the pipeline's runs instead");
                self.log(&v.tenant_id, v.stage).push_from(
                    Some(v.version),
                    LogLevel::Error,
                    LogSource::Host,
                    format!("{name} cannot be loaded: {e}"),
                    Vec::new(),
                );
                None
            }
        }
    }

    /// Runs a call of a tenant's plugin on the tenant threads, below the host's priority
    /// (`tenant_threads.rs`).
    pub async fn run<T, F>(&self, plugin: Arc<Plugin>, f: F) -> Result<T, PluginError>
    where
        T: Send + 'static,
        F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
    {
        match self.threads.run(move || f(&plugin)).await {
            Ok(r) => r,
            Err(e) => Err(PluginError::Unavailable(e.0)),
        }
    }

    /// Calls the tenant's live plugin for `stage`, if it has one, in one of its own call
    /// slots, and counts the call.
    pub async fn call_live<T, F>(
        self: &Arc<Self>,
        store: &Store,
        tenant_id: &str,
        stage: Stage,
        f: F,
    ) -> LiveCall<T>
    where
        T: Send + 'static,
        F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
    {
        let live = match self.pick(store, tenant_id, stage).await {
            Pick::Platform => return LiveCall::NoPlugin,
            Pick::Closed(why) => return LiveCall::Closed(why),
            Pick::Tenant(live) => live,
        };
        // Waiting for one of its own slots is the tenant's queue, not its plugin's time.
        let Ok(_slot) = live.slots.clone().acquire_owned().await else {
            return LiveCall::NoPlugin;
        };
        let started = Instant::now();
        let result = self.run(live.plugin.clone(), f).await;
        let suspended = self
            .finish(store, &live, started.elapsed(), result.as_ref().err())
            .await;
        LiveCall::Done(result.map_err(|error| CallFailure {
            plugin: live.plugin.name().to_owned(),
            error,
            fallback: false,
            suspended,
            closed: live.on_failure == FailurePolicy::Defer,
        }))
    }

    /// The one way a stage calls a tenant's plugin: the tenant's live plugin for `stage`
    /// when it has one (under its own limits), else `default`. After a failure of the
    /// tenant's plugin its policy decides: `fallback` calls the pipeline's `fallback`
    /// once, `defer` returns [`StageCall::closed`]. After a failure of `default` the
    /// fallback is called (unless it was the one that failed). A tenant plugin's call is
    /// counted by [`finish`](Self::finish), which suspends it after repeated failures.
    pub async fn call_stage<T, F>(
        self: &Arc<Self>,
        store: &Store,
        tenant_id: &str,
        stage: Stage,
        default: Arc<Plugin>,
        fallback: Arc<Plugin>,
        f: F,
    ) -> StageCall<T>
    where
        T: Send + 'static,
        F: Fn(&Plugin) -> Result<T, PluginError> + Clone + Send + 'static,
    {
        let (chosen, first) = match self.call_live(store, tenant_id, stage, f.clone()).await {
            LiveCall::Done(Ok(v)) => return StageCall::answered(v),
            LiveCall::Done(Err(failure)) if failure.closed => {
                return StageCall {
                    result: Err(failure.error.clone()),
                    closed: Some(failure.closed_reason()),
                    failures: vec![failure],
                };
            }
            LiveCall::Closed(why) => {
                return StageCall {
                    result: Err(PluginError::Unavailable(why.clone())),
                    failures: Vec::new(),
                    closed: Some(why),
                };
            }
            LiveCall::Done(Err(failure)) => (None, failure),
            LiveCall::NoPlugin => {
                match super::plugin_call::call(default.clone(), f.clone()).await {
                    Ok(v) => return StageCall::answered(v),
                    Err(error) => (
                        Some(default.clone()),
                        CallFailure {
                            plugin: default.name().to_owned(),
                            error,
                            fallback: false,
                            suspended: None,
                            closed: false,
                        },
                    ),
                }
            }
        };
        let mut failures = vec![first];
        if chosen.is_some_and(|c| Arc::ptr_eq(&c, &fallback)) {
            let e = failures[0].error.clone();
            return StageCall {
                result: Err(e),
                failures,
                closed: None,
            };
        }
        let result = super::plugin_call::call(fallback.clone(), f).await;
        if let Err(e) = &result {
            failures.push(CallFailure {
                plugin: fallback.name().to_owned(),
                error: e.clone(),
                fallback: true,
                suspended: None,
                closed: false,
            });
        }
        StageCall {
            result,
            failures,
            closed: None,
        }
    }

    /// Counts a finished call. When it is the failure that trips the policy, suspends
    /// the version (here at once, in the store for the other hosts) and returns why.
    pub async fn finish(
        &self,
        store: &Store,
        live: &Live,
        took: Duration,
        error: Option<&PluginError>,
    ) -> Option<String> {
        live.stats.record(took, error);
        crate::metrics::get().plugin_call(live.stage.name(), None, took, error.is_none());
        let error = error?;
        // No free instance is the host's shortage, not the plugin's fault.
        if matches!(error, PluginError::Unavailable(_)) {
            return None;
        }
        let failures = {
            let mut f = lock(&live.failures);
            let now = Instant::now();
            while f
                .front()
                .is_some_and(|t| now.duration_since(*t) > SUSPEND_WINDOW)
            {
                f.pop_front();
            }
            f.push_back(now);
            f.len()
        };
        if failures < SUSPEND_AFTER || live.suspended.swap(true, Ordering::AcqRel) {
            return None;
        }
        let reason = format!(
            "{failures} failed calls within {}s, the last: {error}",
            SUSPEND_WINDOW.as_secs()
        );
        *lock(&live.suspended_reason) = Some(reason.clone());
        let m = crate::metrics::get();
        m.plugin_suspensions
            .get_or_create(&crate::metrics::StageLabels {
                stage: live.stage.name(),
            })
            .inc();
        let name = plugin_name(&live.tenant_id, live.stage, live.version);
        if let Err(e) = store
            .suspend_plugin(
                &live.tenant_id,
                live.stage,
                live.version,
                &reason,
                super::clock::now_ms(),
            )
            .await
        {
            tracing::warn!(plugin = %name, error = %Chain(&e), "cannot record the suspension; it holds on this host");
        }
        let meanwhile = match live.on_failure {
            FailurePolicy::Fallback => "the pipeline's plugin runs",
            FailurePolicy::Defer => "its messages wait (fail closed)",
        };
        tracing::warn!(
            tenant = %live.tenant_id,
            stage = %live.stage,
            version = live.version,
            reason = %reason,
            "tenant plugin {name} suspended; {meanwhile} until a new upload or activation"
        );
        live.plugin.log().push_from(
            Some(live.version),
            LogLevel::Error,
            LogSource::Host,
            format!("{name} suspended: {reason}; {meanwhile} until a new upload or activation"),
            Vec::new(),
        );
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_the_stage_and_stay_under_the_maxima() {
        let max = Duration::from_millis(1000);
        let l = tenant_limits(Stage::Route, None, None, max, 128 << 20).unwrap();
        assert_eq!(l, Limits::for_stage(Stage::Route));
        let l = tenant_limits(Stage::Bill, None, None, max, 16 << 20).unwrap();
        assert_eq!(l.timeout, max);
        assert_eq!(l.memory_bytes, 16 << 20);
        let e = tenant_limits(Stage::Route, Some(5000), None, max, 128 << 20).unwrap_err();
        assert!(e.contains("timeout_ms 5000") && e.contains("1000"), "{e}");
        let e = tenant_limits(Stage::Route, None, Some(1 << 30), max, 128 << 20).unwrap_err();
        assert!(e.contains("1073741824"), "{e}");
        assert!(tenant_limits(Stage::Route, Some(0), None, max, 128 << 20).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = CallStats::default();
        for us in 1..=100u64 {
            s.record(Duration::from_micros(us), None);
        }
        s.record(
            Duration::from_micros(1000),
            Some(&PluginError::Trap {
                message: "x".into(),
            }),
        );
        let v = s.snapshot();
        assert_eq!(v["calls"], 101);
        assert_eq!(v["errors"]["trap"], 1);
        assert_eq!(v["p50_us"], 51);
        assert_eq!(v["p99_us"], 100);
        assert_eq!(v["mean_us"], (5050 + 1000) / 101);
    }
}
