//! The plugins a server runs: the pipeline's plugin per stage, the default
//! route plugins tenants chose by name, and the tenants' own uploaded plugins
//! ([`TenantPlugins`]), loaded once and called off the async threads.

use super::tenant_live::TenantPlugins;
use crate::config::{PluginBytes, PluginConfig, PluginSource, Plugins as PluginsConfig};
use crate::runtime::{Limits, Plugin, PluginError, PluginSpec, Runtime};
use crate::stage::Stage;
use anyhow::Context;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Loaded plugins, by stage and by name.
pub struct PluginSet {
    runtime: Runtime,
    stages: HashMap<Stage, Arc<Plugin>>,
    /// Default route plugins by name, for tenants that chose one.
    named_routers: Mutex<HashMap<String, Arc<Plugin>>>,
    route_limits: PluginConfig,
    /// Tenants' uploaded plugins, by (tenant, stage).
    pub tenants: Arc<TenantPlugins>,
}

fn load(runtime: &Runtime, stage: Stage, cfg: &PluginConfig) -> anyhow::Result<Plugin> {
    let read = crate::config::plugin_bytes(&cfg.source).map_err(anyhow::Error::msg)?;
    compile(runtime, stage, &read, cfg)
}

fn compile(
    runtime: &Runtime,
    stage: Stage,
    read: &PluginBytes,
    cfg: &PluginConfig,
) -> anyhow::Result<Plugin> {
    let name = &read.name;
    let spec = PluginSpec {
        limits: Limits {
            timeout: cfg.timeout,
            memory_bytes: cfg.memory_bytes,
            reuse_instances: cfg.reuse_instances,
        },
        config: cfg.config.clone(),
        log: None,
        version: None,
    };
    runtime
        .load(stage, name, &read.bytes, spec)
        .with_context(|| format!("the {stage} plugin {name} cannot be loaded"))
}

impl PluginSet {
    /// Compiles every stage's plugin from what `config::resolve` read; `Err` has one
    /// line per stage that failed (`plugins.STAGE: why`), all of them. A stage missing
    /// from `read` (its file could not be read: `resolve` said so) fails the load
    /// without a line of its own.
    pub fn load(
        runtime: Runtime,
        cfg: &PluginsConfig,
        read: Vec<(Stage, PluginBytes)>,
    ) -> Result<PluginSet, Vec<String>> {
        let mut stages = HashMap::new();
        let mut errors = Vec::new();
        for (stage, bytes) in read {
            let c = match stage {
                Stage::Ingest => &cfg.ingest,
                Stage::Route => &cfg.route,
                Stage::Send => &cfg.send,
                Stage::Bounce => &cfg.bounce,
                Stage::Bill => &cfg.bill,
            };
            match compile(&runtime, stage, &bytes, c) {
                Ok(p) => {
                    stages.insert(stage, Arc::new(p));
                }
                Err(e) => errors.push(format!("plugins.{stage}: {e:#}")),
            }
        }
        let exe = std::env::current_exe().map_err(|e| {
            errors.push(format!(
                "cannot find the sluice binary to compile tenant plugins with: {e}"
            ))
        });
        let Ok(exe) = exe else {
            return Err(errors);
        };
        if !errors.is_empty() || stages.len() < 5 {
            return Err(errors);
        }
        Ok(PluginSet {
            tenants: Arc::new(TenantPlugins::new(runtime.clone(), cfg, exe)),
            runtime,
            stages,
            named_routers: Mutex::new(HashMap::new()),
            route_limits: cfg.route.clone(),
        })
    }

    /// The pipeline's plugin for `stage` (also the fallback of tenant plugins).
    pub fn stage(&self, stage: Stage) -> Arc<Plugin> {
        self.stages[&stage].clone()
    }

    /// The route plugin a tenant chose, else the pipeline's.
    pub fn router_for(&self, choice: Option<&str>) -> Arc<Plugin> {
        let Some(name) = choice else {
            return self.stage(Stage::Route);
        };
        let mut named = self.named_routers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = named.get(name) {
            return p.clone();
        }
        let mut cfg = self.route_limits.clone();
        cfg.source = PluginSource::Builtin(name.to_owned());
        match load(&self.runtime, Stage::Route, &cfg) {
            Ok(p) => {
                let p = Arc::new(p);
                named.insert(name.to_owned(), p.clone());
                p
            }
            Err(e) => {
                tracing::warn!(plugin = name, error = %format!("{e:#}"), "tenant route plugin unavailable; using the pipeline's");
                self.stage(Stage::Route)
            }
        }
    }
}

/// Plugin calls running at once. A call's deadline is wall time, so calls
/// must not outnumber the cores by much: otherwise a busy node would time
/// out healthy plugins. Waiting for a slot happens before the deadline starts.
fn call_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// Whether a call runs on the calling async worker instead of the blocking pool:
/// the platform's own plugins (trusted, instances reused) at the per-message stages,
/// whose calls take microseconds with inputs of a few hundred bytes. Handing such a
/// call to another thread and back cost more than the call (two thread wake-ups per
/// call, three calls per message). Tenant plugins, bounce parsing (whole e-mails)
/// and rating (batches) stay on the blocking pool.
fn runs_inline(plugin: &Plugin) -> bool {
    plugin.limits().reuse_instances
        && matches!(plugin.stage(), Stage::Ingest | Stage::Route | Stage::Send)
}

/// Runs a plugin call on the blocking pool: a plugin may use its whole
/// deadline, which must not stall the async workers (see [`runs_inline`] for
/// the exception).
pub async fn call<T, F>(plugin: Arc<Plugin>, f: F) -> Result<T, PluginError>
where
    T: Send + 'static,
    F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
{
    // Kept for the metrics after `f` took the plugin (an `Arc` clone, no allocation).
    let called = plugin.clone();
    let started = std::time::Instant::now();
    let result = if runs_inline(&plugin) {
        f(&plugin)
    } else {
        let _slot = call_slots()
            .acquire()
            .await
            .map_err(|_| PluginError::Unavailable("plugin slots closed".into()))?;
        match tokio::task::spawn_blocking(move || f(&plugin)).await {
            Ok(r) => r,
            Err(e) => Err(PluginError::Unavailable(format!("plugin task failed: {e}"))),
        }
    };
    crate::metrics::get().plugin_call(
        called.stage().name(),
        Some(called.name()),
        started.elapsed(),
        result.is_ok(),
    );
    result
}
