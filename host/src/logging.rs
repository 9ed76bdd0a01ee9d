//! The process's log: text or JSON lines on stderr (`--log-format`, `SLUICE_LOG_FORMAT`),
//! filtered by `SLUICE_LOG` (default `warn`), and [`Chain`], how an error is logged with
//! its causes. A leaf.
//!
//! What is never logged: API keys, tokens, passwords and message bodies; a recipient
//! appears by its domain only.

use std::fmt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with
    /// `message`), and the `span`/`spans` it happened in (e.g. a delivery's `message`).
    Json,
}

/// Sets up the log once for the process.
pub fn init(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "warn".into());
    match format {
        LogFormat::Text => {
            // Colour only on a terminal: logs written to files stay plain.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .try_init();
        }
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
    }
}

/// An error and its causes, `outer: cause: root cause`, for `error = %Chain(&e)`: a
/// `thiserror` error's `Display` names only itself (a store error its operation), its
/// `source()` what went wrong underneath. (For `anyhow::Error`, `{:#}` does the same.)
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("record: 3 outcomes")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_chain_names_every_cause() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(Chain(&e).to_string(), "record: 3 outcomes: disk full");
    }
}
