//! A plugin's log: what it wrote through the `host.log` import and to
//! stderr, kept in a bounded ring so a chatty plugin cannot grow the host.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The plugin's `log` calls.
    Plugin,
    /// The plugin's stderr (panic messages land here).
    Stderr,
    /// The host, about the plugin (e.g. how a call ended).
    Host,
}

/// One line of a plugin's log.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub at_ms: i64,
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// A bounded ring of log lines, shared by every call of one plugin.
#[derive(Debug)]
pub struct PluginLog {
    capacity: usize,
    lines: Mutex<VecDeque<LogLine>>,
}

impl PluginLog {
    /// A log keeping the last `capacity` lines.
    pub fn new(capacity: usize) -> PluginLog {
        PluginLog {
            capacity: capacity.max(1),
            lines: Mutex::new(VecDeque::new()),
        }
    }

    /// Appends a line, dropping the oldest when full.
    pub fn push(
        &self,
        level: LogLevel,
        source: LogSource,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(LogLine {
            at_ms,
            level,
            source,
            message,
            fields,
        });
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The lines kept, emptying the log.
    pub fn drain(&self) -> Vec<LogLine> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }
}
