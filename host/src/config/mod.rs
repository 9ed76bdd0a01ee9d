//! The pipeline file: typed, strict, and explained when wrong.
//!
//! `sluice serve --pipeline FILE.toml` and `sluice pipeline check FILE.toml`
//! read it. Unknown keys are errors; every error names the file, the line,
//! the column and the key. Secrets (SMTP passwords, the admin token) are
//! never inline: they come from environment variables or files the TOML
//! names (`*_env`, `*_file`). See `pipelines/*.toml` for documented
//! examples.
//!
//! Two steps, shared by both commands: [`Pipeline::parse`] validates the file alone
//! (`validate.rs`, pure: no file or environment variable is read), then [`resolve`] reads
//! what the file names outside itself (secrets, plugin files, log sources' logins, relays'
//! CA files). `serve` runs both before it opens anything, `sluice pipeline check` runs the
//! same two (`serve/preflight.rs`), and a SIGHUP reload the same too.
//!
//! One module per section of the file: each holds the section's validated type, its raw
//! serde form and the checks between them.

mod admission;
mod check;
mod delivery;
mod dkim;
mod error;
mod events;
mod log_sources;
mod metrics;
mod plugins;
mod relays;
mod resolve;
mod secrets;
mod server;
mod smtp_in;
mod submission;
mod tenants;
mod validate;
mod webhooks;

pub use admission::{Admission, TenantAdmission};
pub use delivery::{Delivery, Fairness};
pub use dkim::Dkim;
pub use error::{ConfigError, ConfigErrors};
pub use events::Events;
pub use log_sources::LogSourceConfig;
pub use metrics::MetricsConfig;
pub use plugins::{PluginConfig, PluginLogs, PluginSource, PluginUploads, Plugins};
pub use relays::RelayConfig;
pub use resolve::{PluginBytes, Resolved, plugin_bytes, resolve};
pub use secrets::SecretRef;
pub use server::{Admin, Limits, Server, StoreConfig, valid_node_name};
pub use smtp_in::SmtpIn;
pub use submission::SubmissionConfig;
pub use tenants::TenantConfig;
pub use webhooks::Webhooks;

use std::path::Path;
use validate::RawPipeline;

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
    /// SMTP submission (`[submission]`).
    pub submission: SubmissionConfig,
    pub log_sources: Vec<LogSourceConfig>,
    /// Per-tenant admission at the API (`[admission]`).
    pub admission: Admission,
    /// The tenant-visible event log and its stream (`[events]`).
    pub events: Events,
    /// `GET /metrics` (`[metrics]`).
    pub metrics: MetricsConfig,
    /// Webhooks' delivery (`[webhooks]`).
    pub webhooks: Webhooks,
    /// DKIM signing (`[dkim]`).
    pub dkim: Dkim,
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one(ConfigError::io(path, e)))?;
        Pipeline::parse(&text, &path.display().to_string())
    }

    /// Parses and validates pipeline TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Pipeline, ConfigErrors> {
        let raw: RawPipeline = toml::from_str(text)
            .map_err(|e| ConfigErrors::one(ConfigError::toml(origin, text, &e)))?;
        raw.validate(text, origin)
    }

    /// The embedded default: SQLite under `./sluice-data`, HTTP on
    /// 127.0.0.1:8025, the default plugins, and one relay from
    /// `SLUICE_RELAY` if set.
    pub fn embedded_default() -> Result<Pipeline, ConfigErrors> {
        let mut text = String::from(include_str!("../../../pipelines/default.toml"));
        if let Ok(url) = std::env::var("SLUICE_RELAY") {
            text.push_str(&format!(
                "\n[[relay]]\nid = \"default\"\nurl = {url:?}\ntags = [\"pool:platform\"]\n"
            ));
        }
        Pipeline::parse(&text, "embedded default pipeline")
    }
}

#[cfg(test)]
mod tests;
