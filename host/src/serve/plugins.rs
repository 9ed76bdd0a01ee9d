//! The plugins a server runs: the pipeline's plugin per stage, the default
//! route plugins tenants chose by name, and the tenants' own uploaded plugins
//! ([`TenantPlugins`]), loaded once and called off the async threads.

pub use super::plugin_call::call;
use super::tenant_live::TenantPlugins;
use crate::config::{PluginBytes, PluginConfig, PluginSource, Plugins as PluginsConfig};
use crate::runtime::{Limits, Plugin, PluginSpec, Runtime};
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
