//! The pipeline file: typed, strict, and explained when wrong.
//!
//! `sluice serve --pipeline FILE.toml` and `sluice pipeline check FILE.toml`
//! read it. Unknown keys are errors; every error names the file, the line,
//! the column and the key. Secrets (SMTP passwords, the admin token) are
//! never inline: they come from environment variables or files the TOML
//! names (`*_env`, `*_file`). See `pipelines/*.toml` for documented
//! examples.

mod error;
mod model;

pub use error::{ConfigError, ConfigErrors};
pub use model::*;

use std::path::Path;

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
