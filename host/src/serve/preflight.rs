//! What `sluice serve` checks of a parsed pipeline before it opens the store or a
//! socket, and what `sluice pipeline check` runs too, so that a file the check passes
//! is one `serve` starts with: what the pipeline names outside itself is read
//! (`config::resolve`: the secrets, plugin files, logins and CA files), each stage's
//! plugin compiles and exports the stage's world, and the VERP key makes a signer.
//! Every failure is collected before the answer. What needs the running system (the
//! store, ports, a relay's password read at use) is not here.

use super::plugins::PluginSet;
use crate::config::Pipeline;
use crate::runtime::{LogLimits, Runtime, RuntimeConfig};

/// What the checks produced, for `serve` to start with.
pub struct Ready {
    pub plugins: PluginSet,
    /// The admin token from `[admin] token_env`/`token_file`; `None`: the store keeps one.
    pub admin_token: Option<String>,
    /// The VERP key from `[delivery] verp_key_env`/`_file`; `None`: the store keeps one.
    pub verp_key: Option<String>,
    /// The secret DKIM keys are sealed with (`[dkim] key_env`/`key_file`).
    pub dkim_key: Option<String>,
    /// Each `[[log_source]]`'s logins, in the pipeline's order.
    pub log_source_logins: Vec<crate::bill_logs::Logins>,
    /// What does not stop a start but will not work (a pipeline relay's password that
    /// cannot be read): the check prints them, `serve` logs them.
    pub warnings: Vec<String>,
}

/// Every reason the pipeline cannot be served, one per line: `key: why`.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline cannot be served:\n{}", .0.join("\n"))]
pub struct NotReady(pub Vec<String>);

/// Runs the checks; `Err` lists every failure.
pub fn check(pipeline: &Pipeline) -> Result<Ready, NotReady> {
    let resolved = crate::config::resolve(pipeline);
    let mut errors = resolved.errors;
    if let (Some(key), Some(domain)) = (&resolved.verp_key, &pipeline.delivery.bounce_domain)
        && let Err(e) =
            crate::verp::Verp::new(key.as_bytes(), &pipeline.delivery.bounce_prefix, domain)
    {
        errors.push(format!("delivery.verp_key: {e}"));
    }

    let logs = &pipeline.plugins.logs;
    let plugins = Runtime::new(RuntimeConfig {
        max_memory_bytes: pipeline.plugins.max_memory_bytes.max(64 << 20),
        log: LogLimits {
            line_bytes: logs.max_line_bytes,
            fields: logs.max_fields,
            field_bytes: logs.max_field_bytes,
            lines_per_call: logs.max_lines_per_call,
        },
        ..RuntimeConfig::default()
    })
    .map_err(|e| vec![format!("the plugin runtime cannot start: {e:#}")])
    .and_then(|runtime| PluginSet::load(runtime, &pipeline.plugins, resolved.plugins));
    let plugins = match plugins {
        Ok(p) => Some(p),
        Err(failures) => {
            errors.extend(failures);
            None
        }
    };
    match plugins {
        Some(plugins) if errors.is_empty() => Ok(Ready {
            plugins,
            admin_token: resolved.admin_token,
            verp_key: resolved.verp_key,
            dkim_key: resolved.dkim_key,
            log_source_logins: resolved.log_source_logins,
            warnings: resolved.warnings,
        }),
        _ => Err(NotReady(errors)),
    }
}
