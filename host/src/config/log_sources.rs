//! `[[log_source]]`: MTA logs that `sluice serve` follows and bills.

use super::check::Check;
use crate::relay_spec::valid_id;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// An MTA log that `sluice serve` follows and bills (`[[log_source]]`).
#[derive(Debug, Clone)]
pub struct LogSourceConfig {
    /// Names the source in transfer keys: keep it once billing has begun.
    pub id: String,
    pub path: PathBuf,
    pub format: crate::maillog::Format,
    /// Tenant logins (the `sluice bill --logins` format): the file, read by `resolve`
    /// (`Resolved::log_source_logins`).
    pub logins_file: PathBuf,
    /// Where the position and half-joined state are kept.
    pub checkpoint: PathBuf,
    /// How long to wait when the log has nothing new.
    pub poll: Duration,
    /// The host name in keys when the log has none (multilog, plain stamps).
    pub host: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogSource {
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

/// `[[log_source]]`: ids, formats and paths; the logins files are read by `resolve`.
pub(super) fn validate(raw: Vec<RawLogSource>, check: &mut Check) -> Vec<LogSourceConfig> {
    let mut log_sources = Vec::new();
    for (i, ls) in raw.into_iter().enumerate() {
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
        if let Some(format) = format {
            log_sources.push(LogSourceConfig {
                checkpoint: ls.checkpoint.unwrap_or_else(|| {
                    PathBuf::from(format!("./sluice-data/log-source-{id}.checkpoint"))
                }),
                id,
                path: ls.path,
                format,
                logins_file: ls.logins.into_inner(),
                poll: Duration::from_millis(ls.poll_millis.clamp(10, 60_000)),
                host: ls.host.unwrap_or_else(|| "localhost".into()),
            });
        }
    }
    log_sources
}
