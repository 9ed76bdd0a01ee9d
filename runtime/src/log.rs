//! A plugin's log: what it wrote through the `host.log` import and to
//! stderr, kept in a ring bounded in bytes so a chatty plugin cannot grow the
//! host.
//!
//! Every line is clipped before it is kept (message and fields in bytes, cut on
//! a UTF-8 boundary; fields in number), and costs its bytes plus a fixed
//! overhead. A ring holds at most its own number of bytes, and rings that share
//! a [`LogBudget`] (a tenant's, across its stages) hold at most the budget
//! together: a new line evicts the ring's oldest lines until both fit, and is
//! dropped (counted) when the ring is empty and the budget is still full. Each
//! kept line has a sequence number, so a reader pages through the ring with a
//! cursor and never copies more than one page.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a line costs beyond its text: the `LogLine` itself, its place in the
/// ring, and one `(String, String)` per field, rounded up.
const LINE_OVERHEAD_BYTES: usize = 128;
const FIELD_OVERHEAD_BYTES: usize = 48;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The plugin's `log` calls.
    Plugin,
    /// The plugin's stderr (panic messages land here).
    Stderr,
    /// The host, about the plugin (e.g. how a call ended).
    Host,
}

/// One line of a plugin's log (also read back from the logs API by the CLI).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    /// Its place in its ring (from 1, gap-free as written; evicted lines leave gaps
    /// at the front only).
    pub seq: u64,
    pub at_ms: i64,
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
    /// The version of a tenant's plugin that wrote it (a tenant's stage log is shared
    /// by its versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

impl LogLine {
    /// The line as the CLI prints it: `plugin PLUGIN vN LEVEL: message key=value …`,
    /// `PLUGIN` being `tenant/stage` (or a file's or default plugin's name and its
    /// stage); lines the plugin did not write itself say where they came from.
    pub fn render(&self, plugin: &str) -> String {
        use std::fmt::Write;
        let mut out = format!("plugin {plugin}");
        if let Some(v) = self.version {
            let _ = write!(out, " v{v}");
        }
        let level = match self.level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        let _ = write!(out, " {level}");
        match self.source {
            LogSource::Plugin => {}
            LogSource::Stderr => out.push_str(" (stderr)"),
            LogSource::Host => out.push_str(" (host)"),
        }
        let _ = write!(out, ": {}", self.message);
        for (k, v) in &self.fields {
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
                let _ = write!(out, " {k}={v:?}");
            } else {
                let _ = write!(out, " {k}={v}");
            }
        }
        out
    }
}

/// How much of what a plugin logs is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Bytes of one message kept (cut on a UTF-8 boundary).
    pub line_bytes: usize,
    /// Fields of one line kept; later ones are dropped.
    pub fields: usize,
    /// Bytes of one field's key, and of its value, kept.
    pub field_bytes: usize,
    /// `log` calls kept per plugin call; later ones are counted, not kept.
    pub lines_per_call: usize,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            line_bytes: 4096,
            fields: 16,
            field_bytes: 256,
            lines_per_call: 64,
        }
    }
}

impl LogLimits {
    /// The most one kept line can cost, overhead included.
    pub fn max_line_cost(&self) -> usize {
        LINE_OVERHEAD_BYTES
            + self.line_bytes
            + self.fields * (FIELD_OVERHEAD_BYTES + 2 * self.field_bytes)
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bytes shared by several rings (a tenant's logs, one per stage).
#[derive(Debug)]
pub struct LogBudget {
    max_bytes: usize,
    used: AtomicUsize,
}

impl LogBudget {
    pub fn new(max_bytes: usize) -> LogBudget {
        LogBudget {
            max_bytes,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held by the rings that share this budget.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Takes `n` bytes if they fit.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u + n <= self.max_bytes).then_some(u + n)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One page of a log read with a cursor.
#[derive(Debug, Clone)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Lines after the cursor that were evicted before they could be read.
    pub missed: u64,
    /// Whether lines after this page are kept now.
    pub more: bool,
}

#[derive(Debug, Default)]
struct Ring {
    /// Lines with what each costs.
    lines: VecDeque<(LogLine, usize)>,
    bytes: usize,
    next_seq: u64,
    /// Lines refused because the shared budget was full and this ring empty.
    dropped: u64,
}

/// A ring of log lines bounded in bytes, shared by every call of one plugin (or
/// every version of a tenant's stage).
#[derive(Debug)]
pub struct PluginLog {
    max_bytes: usize,
    budget: Option<std::sync::Arc<LogBudget>>,
    ring: Mutex<Ring>,
}

impl PluginLog {
    /// A log keeping at most `max_bytes` of lines (overhead included).
    pub fn new(max_bytes: usize) -> PluginLog {
        PluginLog {
            max_bytes,
            budget: None,
            ring: Mutex::new(Ring {
                next_seq: 1,
                ..Ring::default()
            }),
        }
    }

    /// A log of at most `max_bytes` that also stays within `budget`, shared with
    /// other logs.
    pub fn with_budget(max_bytes: usize, budget: std::sync::Arc<LogBudget>) -> PluginLog {
        PluginLog {
            max_bytes,
            budget: Some(budget),
            ring: Mutex::new(Ring {
                next_seq: 1,
                ..Ring::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a line (clipped by the caller), evicting the oldest lines until it
    /// fits; a line that cannot fit at all is counted as dropped.
    pub fn push(
        &self,
        level: LogLevel,
        source: LogSource,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        self.push_from(None, level, source, message, fields);
    }

    /// [`push`](Self::push) for a line of a tenant plugin's `version`.
    pub fn push_from(
        &self,
        version: Option<u32>,
        level: LogLevel,
        source: LogSource,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        let cost = LINE_OVERHEAD_BYTES
            + message.len()
            + fields
                .iter()
                .map(|(k, v)| FIELD_OVERHEAD_BYTES + k.len() + v.len())
                .sum::<usize>();
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut ring = self.lock();
        if cost > self.max_bytes {
            ring.dropped += 1;
            return;
        }
        while ring.bytes + cost > self.max_bytes {
            self.evict_one(&mut ring);
        }
        if let Some(budget) = &self.budget {
            while !budget.take(cost) {
                if ring.lines.is_empty() {
                    ring.dropped += 1;
                    return;
                }
                self.evict_one(&mut ring);
            }
        }
        let seq = ring.next_seq;
        ring.next_seq += 1;
        ring.bytes += cost;
        ring.lines.push_back((
            LogLine {
                seq,
                at_ms,
                level,
                source,
                message,
                fields,
                version,
            },
            cost,
        ));
    }

    fn evict_one(&self, ring: &mut Ring) {
        if let Some((_, cost)) = ring.lines.pop_front() {
            ring.bytes -= cost;
            if let Some(b) = &self.budget {
                b.give_back(cost);
            }
        }
    }

    /// Bytes the kept lines cost.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Lines refused because the shared budget was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lock().lines.iter().map(|(l, _)| l.clone()).collect()
    }

    /// The lines kept, emptying the log.
    pub fn drain(&self) -> Vec<LogLine> {
        let mut ring = self.lock();
        let lines: Vec<LogLine> = ring.lines.drain(..).map(|(l, _)| l).collect();
        if let Some(b) = &self.budget {
            b.give_back(ring.bytes);
        }
        ring.bytes = 0;
        lines
    }

    /// Up to `limit` lines after sequence number `after`, oldest first, whose JSON
    /// together takes at most `max_bytes` (at least one line, so a reader always
    /// moves on). Only the page is copied.
    pub fn page(&self, after: u64, limit: usize, max_bytes: usize) -> LogPage {
        let ring = self.lock();
        let first = ring.lines.front().map_or(ring.next_seq, |(l, _)| l.seq);
        let missed = first.saturating_sub(after.saturating_add(1));
        let start = ring.lines.partition_point(|(l, _)| l.seq <= after);
        let mut lines = Vec::new();
        let mut bytes = 0;
        let mut taken = start;
        for (line, _) in ring.lines.range(start..) {
            if lines.len() >= limit.max(1) {
                break;
            }
            let json = serde_json::to_vec(line).map_or(0, |j| j.len()) + 1;
            if !lines.is_empty() && bytes + json > max_bytes {
                break;
            }
            bytes += json;
            lines.push(line.clone());
            taken += 1;
        }
        LogPage {
            more: taken < ring.lines.len(),
            lines,
            missed,
        }
    }
}

impl Drop for PluginLog {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give_back(self.lock().bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn push(log: &PluginLog, text: &str) {
        log.push(LogLevel::Info, LogSource::Plugin, text.into(), Vec::new());
    }

    #[test]
    fn clipping_cuts_on_a_character_boundary() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("😀😀", 7), "😀");
        assert_eq!(clip("abc", 10), "abc");
    }

    #[test]
    fn a_ring_stays_within_its_bytes_and_the_shared_budget() {
        let budget = Arc::new(LogBudget::new(10 * 1024));
        let a = PluginLog::with_budget(8 * 1024, budget.clone());
        let b = PluginLog::with_budget(8 * 1024, budget.clone());
        let line = "x".repeat(900);
        for _ in 0..100 {
            push(&a, &line);
        }
        assert!(a.bytes() <= 8 * 1024, "{}", a.bytes());
        for _ in 0..100 {
            push(&b, &line);
        }
        assert!(a.bytes() + b.bytes() <= 10 * 1024);
        assert_eq!(budget.used_bytes(), a.bytes() + b.bytes());
        // `b` evicted its own lines and, once empty, dropped: `a` keeps what it had.
        assert!(b.dropped() == 0 || b.bytes() == 0);
        assert!(a.bytes() > 0);
        drop(a);
        assert_eq!(budget.used_bytes(), b.bytes());
    }

    #[test]
    fn pages_walk_every_line_once_within_the_byte_cap() {
        let log = PluginLog::new(1 << 20);
        for i in 0..50 {
            push(&log, &format!("line {i} {}", "y".repeat(100)));
        }
        let (mut after, mut seen) = (0, Vec::new());
        loop {
            let page = log.page(after, 7, 600);
            let json = serde_json::to_vec(&page.lines).unwrap().len();
            assert!(json <= 600 + 8, "{json}");
            seen.extend(page.lines.iter().map(|l| l.seq));
            if !page.more {
                break;
            }
            after = page.lines.last().unwrap().seq;
        }
        assert_eq!(seen, (1..=50).collect::<Vec<u64>>());
        // Evicted lines are reported as missed.
        let small = PluginLog::new(3 * (LINE_OVERHEAD_BYTES + 10));
        for i in 0..10 {
            push(&small, &format!("line {i:04}"));
        }
        let page = small.page(0, 100, 1 << 20);
        assert_eq!(page.missed, 7);
        assert_eq!(page.lines.first().unwrap().seq, 8);
    }
}
