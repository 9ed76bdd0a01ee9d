//! How a plugin call is run from async code: inline for the platform's own cheap
//! per-message calls, else on the blocking pool within a node-wide number of slots; and
//! counted in the metrics either way. Used by the pipeline's stages and tenants' plugins
//! alike (`plugins.rs`, `tenant_live.rs`, billing).

use crate::runtime::{Plugin, PluginError};
use crate::stage::Stage;
use std::sync::Arc;

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
