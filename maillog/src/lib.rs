//! MTA log readers: qmail-send and Postfix logs joined into [`Transfer`]s.
//!
//! A transfer is one successful delivery of one message to one recipient.
//! Readers work on raw bytes (real logs hold invalid UTF-8), one line at a
//! time, with no allocation for lines that do not finish a transfer. Their
//! state is bounded: finished messages are evicted at once, and messages or
//! deliveries that stay half-joined for longer than
//! [`ReaderConfig::max_pending_secs`] of log time are flushed and counted.
//!
//! This module knows nothing of tenants, tariffs, plugins or tokio: it turns
//! bytes into transfers and counters.

pub mod follow;
pub mod hash;
mod hosts;
mod input;
pub mod login;
pub mod postfix;
pub mod qmail;
mod syslog;
pub mod syslog_time;
pub mod tai64;

pub use input::{InputError, open_input, read_lines};
pub use syslog_time::YearRule;

use serde::{Deserialize, Serialize};

/// One successful delivery of one message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Stable across re-reads of the same log: host, queue id (Postfix) or
    /// message number with its `new msg` time and the delivery number
    /// (qmail), delivery time and recipient.
    pub key: String,
    /// The message as the MTA named it, made unique per host and acceptance.
    pub message_id: String,
    /// Envelope sender; empty for bounces (`<>`).
    pub sender: String,
    pub recipient: String,
    /// The message's size in bytes as the MTA logged it.
    pub size: u64,
    /// When the MTA accepted the message, ms since the Unix epoch.
    pub accepted_ms: i64,
    /// When the delivery succeeded, ms since the Unix epoch.
    pub delivered_ms: i64,
    /// Where it went: qmail's channel (`local`/`remote`), Postfix's relay.
    pub relay: String,
}

/// Which MTA wrote the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qmail,
    Postfix,
}

/// How readers interpret a log.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Where syslog timestamps without a year get theirs.
    pub year: YearRule,
    /// Offset of the local time syslog wrote, in seconds east of UTC.
    /// (qmail's splogger and multilog stamps are UTC and need none.)
    pub utc_offset_secs: i32,
    /// The host name used in keys when the log has none (multilog, plain).
    pub host: String,
    /// Half-joined state older than this (in log time) is flushed and counted.
    pub max_pending_secs: i64,
    /// Postfix transports that hand mail to a content filter (their
    /// deliveries are hops, not transfers), besides any SMTP to loopback.
    pub filter_transports: Vec<String>,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            year: YearRule::Start(1970),
            utc_offset_secs: 0,
            host: "localhost".into(),
            // qmail's default queuelifetime (7 days) plus a day of slack.
            max_pending_secs: 8 * 86_400,
            filter_transports: vec![
                "amavis".into(),
                "amavisfeed".into(),
                "lmtp-amavis".into(),
                "spamfilter".into(),
                "scan".into(),
                "dfilt".into(),
            ],
        }
    }
}

/// Where an unparseable line was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinePlace {
    pub file: String,
    pub line: u64,
}

/// What a reader saw besides transfers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub lines: u64,
    /// Lines in this format: a qmail stamp (TAI64N, epoch, splogger's, or a
    /// `qmail` syslog tag), or a `postfix…/…` syslog tag. `lines - matched`
    /// are another program's or no log of this format at all.
    pub matched: u64,
    /// Lines with no timestamp or a known keyword with malformed fields.
    pub unparseable: u64,
    /// Lines of other programs or events that do not matter for billing.
    pub ignored: u64,
    pub transfers: u64,
    pub failures: u64,
    pub deferrals: u64,
    pub bounces: u64,
    /// Deliveries to a content filter (Postfix), not billed.
    pub filter_hops: u64,
    /// Deliveries that never reported (e.g. qmail restarted under them).
    pub abandoned_deliveries: u64,
    /// Successful deliveries whose message was never seen (log began later).
    pub unjoined_deliveries: u64,
    /// Messages flushed without an end (too old, number reused, or at EOF).
    pub unfinished_messages: u64,
    /// Messages still queued when the input ended (billed when a later log
    /// shows their deliveries).
    pub queued_at_eof: u64,
    /// Deliveries started but not reported when the input ended.
    pub in_flight_at_eof: u64,
    /// Split syslog records put back together (qmail's splogger).
    pub joined_continuations: u64,
}

/// The first few unparseable lines kept for the report.
pub const UNPARSEABLE_SAMPLES: usize = 10;

/// Counters plus where the first unparseable lines were.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub counters: Counters,
    pub unparseable_samples: Vec<LinePlace>,
}

impl Report {
    /// Counts an unparseable line and remembers the first few places.
    pub fn unparseable(&mut self, file: &str, line: u64) {
        self.counters.unparseable += 1;
        if self.unparseable_samples.len() < UNPARSEABLE_SAMPLES {
            self.unparseable_samples.push(LinePlace {
                file: file.to_owned(),
                line,
            });
        }
    }
}

/// A log reader: fed lines in order, hands out transfers as they complete.
pub trait LogReader {
    /// Starts a new input file (for the places of unparseable lines).
    fn begin_file(&mut self, name: &str, year: YearRule);
    /// Changes how years are given to syslog stamps from the next line on,
    /// keeping the place in the file (a followed log crossing midnight).
    fn set_year_rule(&mut self, year: YearRule);
    /// One line without its newline.
    fn line(&mut self, line: &[u8], emit: &mut dyn FnMut(Transfer));
    /// End of all input: flushes what is pending and counts it.
    fn finish(&mut self, emit: &mut dyn FnMut(Transfer));
    /// What was seen so far.
    fn report(&self) -> &Report;
    /// The reader's half-joined state and counters, to be resumed with
    /// [`LogReader::restore_state`] after a restart (see [`follow`]).
    fn save_state(&self) -> serde_json::Value;
    /// Puts back what [`LogReader::save_state`] saved. The configuration is
    /// the reader's own, not the saved one's.
    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error>;
}

/// A reader for `format`.
pub fn reader(format: Format, config: ReaderConfig) -> Box<dyn LogReader + Send> {
    match format {
        Format::Qmail => Box::new(qmail::QmailReader::new(config)),
        Format::Postfix => Box::new(postfix::PostfixReader::new(config)),
    }
}

/// Reads every transfer of `data` (one whole log in memory); for tests and tools.
pub fn transfers_of(format: Format, config: ReaderConfig, data: &[u8]) -> (Vec<Transfer>, Report) {
    let year = config.year;
    let mut r = reader(format, config);
    r.begin_file("-", year);
    let mut out = Vec::new();
    let mut emit = |t: Transfer| out.push(t);
    for l in data.split(|&b| b == b'\n') {
        if !l.is_empty() {
            r.line(l, &mut emit);
        }
    }
    r.finish(&mut emit);
    (out, r.report().clone())
}
