//! qmail-send logs: syslog (with splogger's epoch stamp), multilog (TAI64N)
//! or plain epoch stamps.
//!
//! The lines that matter:
//!
//! ```text
//! new msg M
//! info msg M: bytes B from <S> qp Q uid U
//! starting delivery D: msg M to local|remote R
//! delivery D: success|failure|deferral: TEXT
//! end msg M            bounce msg M qp Q      triple bounce: discarding bounce/M
//! status: exiting      (qmail-send stops: deliveries in flight never report)
//! ```
//!
//! Message numbers are inode numbers and are reused as soon as `end msg` is
//! logged, so a message is identified by its number *and* the time of its
//! `new msg`. Delivery numbers restart at 1 when qmail-send restarts, and a
//! deferred delivery is retried under a new number: only `success` makes a
//! transfer. splogger cuts records longer than its buffer and logs the rest
//! as `STAMP+REST`; such pieces are joined before parsing.

use super::hash::FxHashMap;
use super::hosts::Hosts;
use super::syslog::parse_header;
use super::syslog_time::{Clock, parse_epoch};
use super::{LogReader, ReaderConfig, Report, Transfer, YearRule, tai64};
use serde::{Deserialize, Serialize};

/// Records at least this long may be continued on the next line, so they
/// wait for it before being parsed (splogger cuts at about 800 bytes).
const MAY_CONTINUE: usize = 512;

/// A joined record keeps at most this much: what billing reads is at its
/// start, and a log of endless continuations must not take all memory.
const MAX_RECORD: usize = super::input::MAX_LINE;

/// How often (in log time) old half-joined state is looked for.
const SWEEP_EVERY_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Msg {
    new_ms: i64,
    size: Option<u64>,
    sender: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delivery {
    msg: u64,
    recipient: String,
    remote: bool,
    started_ms: i64,
}

/// (host, number): one syslog file may hold several qmail hosts.
type Id = (u32, u64);

/// Joins qmail-send lines into transfers.
pub struct QmailReader {
    config: ReaderConfig,
    clock: Clock,
    file: String,
    lineno: u64,
    report: Report,
    hosts: Hosts,
    msgs: FxHashMap<Id, Msg>,
    deliveries: FxHashMap<Id, Delivery>,
    /// A long record waiting for possible continuations.
    pending: Vec<u8>,
    pending_at: Option<(i64, u32, u64)>,
    latest_ms: i64,
    next_sweep_ms: i64,
    /// Strings of finished messages and deliveries, reused.
    pool: Vec<String>,
}

impl QmailReader {
    pub fn new(config: ReaderConfig) -> QmailReader {
        let host = config.host.clone();
        QmailReader {
            clock: Clock::new(config.year, config.utc_offset_secs),
            config,
            file: "-".into(),
            lineno: 0,
            report: Report::default(),
            hosts: Hosts::from_names(vec![host]),
            msgs: FxHashMap::default(),
            deliveries: FxHashMap::default(),
            pending: Vec::new(),
            pending_at: None,
            latest_ms: i64::MIN,
            next_sweep_ms: i64::MIN,
            pool: Vec::new(),
        }
    }

    fn host_id(&mut self, host: &[u8]) -> u32 {
        self.hosts.id(host)
    }

    fn string_from(&mut self, b: &[u8]) -> String {
        let mut s = self.pool.pop().unwrap_or_default();
        s.clear();
        s.push_str(&String::from_utf8_lossy(b));
        s
    }

    fn recycle(&mut self, s: String) {
        if self.pool.len() < 1024 {
            self.pool.push(s);
        }
    }

    /// Parses one whole record (timestamp and host already known).
    fn record(
        &mut self,
        ms: i64,
        host: u32,
        lineno: u64,
        text: &[u8],
        emit: &mut dyn FnMut(Transfer),
    ) {
        self.tick(ms);
        let ok = if let Some(rest) = text.strip_prefix(b"delivery ") {
            self.delivery_result(ms, host, rest, emit)
        } else if let Some(rest) = text.strip_prefix(b"starting delivery ") {
            self.starting(ms, host, rest)
        } else if let Some(rest) = text.strip_prefix(b"new msg ") {
            number(rest).map(|m| self.new_msg(ms, (host, m)))
        } else if let Some(rest) = text.strip_prefix(b"info msg ") {
            self.info(ms, host, rest)
        } else if let Some(rest) = text.strip_prefix(b"end msg ") {
            number(rest).map(|m| self.end_msg((host, m)))
        } else if let Some(rest) = text.strip_prefix(b"bounce msg ") {
            first_number(rest).map(|_| self.report.counters.bounces += 1)
        } else if let Some(rest) = text.strip_prefix(b"triple bounce: discarding bounce/") {
            number(rest).map(|_| self.report.counters.bounces += 1)
        } else if let Some(rest) = text.strip_prefix(b"status: ") {
            if rest.starts_with(b"exiting") {
                self.restart(host);
            } else {
                self.report.counters.ignored += 1;
            }
            Some(())
        } else {
            // warnings, alerts, qmail-smtpd, rblsmtpd, ...: not billing events
            self.report.counters.ignored += 1;
            Some(())
        };
        if ok.is_none() {
            self.report.unparseable(&self.file, lineno);
        }
    }

    fn new_msg(&mut self, ms: i64, id: Id) {
        let sender = self.pool.pop().unwrap_or_default();
        let old = self.msgs.insert(
            id,
            Msg {
                new_ms: ms,
                size: None,
                sender,
            },
        );
        if let Some(old) = old {
            // The number came back without an `end msg` (lost lines).
            self.report.counters.unfinished_messages += 1;
            self.recycle(old.sender);
        }
    }

    fn info(&mut self, ms: i64, host: u32, rest: &[u8]) -> Option<()> {
        let colon = memchr::memchr(b':', rest)?;
        let m = number(&rest[..colon])?;
        let rest = rest[colon..].strip_prefix(b": bytes ")?;
        let sp = memchr::memchr(b' ', rest)?;
        let size = number(&rest[..sp])?;
        let rest = rest[sp..].strip_prefix(b" from <")?;
        let end = memchr::memrchr(b'>', rest)?;
        let sender = &rest[..end];
        if !self.msgs.contains_key(&(host, m)) {
            // The log began after `new msg`: the info line's time stands in.
            self.new_msg(ms, (host, m));
        }
        let msg = self.msgs.get_mut(&(host, m))?;
        msg.size = Some(size);
        msg.sender.clear();
        msg.sender.push_str(&String::from_utf8_lossy(sender));
        Some(())
    }

    fn starting(&mut self, ms: i64, host: u32, rest: &[u8]) -> Option<()> {
        let colon = memchr::memchr(b':', rest)?;
        let d = number(&rest[..colon])?;
        let rest = rest[colon..].strip_prefix(b": msg ")?;
        let sp = memchr::memchr(b' ', rest)?;
        let m = number(&rest[..sp])?;
        let rest = rest[sp..].strip_prefix(b" to ")?;
        let (remote, recipient) = if let Some(r) = rest.strip_prefix(b"remote ") {
            (true, r)
        } else {
            (false, rest.strip_prefix(b"local ")?)
        };
        let recipient = self.string_from(recipient);
        let old = self.deliveries.insert(
            (host, d),
            Delivery {
                msg: m,
                recipient,
                remote,
                started_ms: ms,
            },
        );
        if let Some(old) = old {
            // Delivery numbers restarted without a `status: exiting` we saw.
            self.report.counters.abandoned_deliveries += 1;
            self.recycle(old.recipient);
        }
        Some(())
    }

    fn delivery_result(
        &mut self,
        ms: i64,
        host: u32,
        rest: &[u8],
        emit: &mut dyn FnMut(Transfer),
    ) -> Option<()> {
        let colon = memchr::memchr(b':', rest)?;
        let d = number(&rest[..colon])?;
        let outcome = rest[colon..].strip_prefix(b": ")?;
        let Some(delivery) = self.deliveries.remove(&(host, d)) else {
            if outcome.starts_with(b"success:") {
                self.report.counters.unjoined_deliveries += 1;
            } else {
                self.report.counters.ignored += 1;
            }
            return Some(());
        };
        if outcome.starts_with(b"success:") {
            match self.msgs.get(&(host, delivery.msg)) {
                Some(Msg {
                    new_ms,
                    size: Some(size),
                    sender,
                }) => {
                    let host_name = self.hosts.name(host);
                    let t = Transfer {
                        // The delivery number tells apart two deliveries of
                        // one message to the same address in the same ms.
                        key: format!(
                            "qmail/{host_name}/{}/{new_ms}/{d}/{ms}/{}",
                            delivery.msg, delivery.recipient
                        ),
                        message_id: format!("{host_name}/{}/{new_ms}", delivery.msg),
                        sender: sender.clone(),
                        recipient: delivery.recipient,
                        size: *size,
                        accepted_ms: *new_ms,
                        delivered_ms: ms,
                        relay: if delivery.remote { "remote" } else { "local" }.into(),
                    };
                    self.report.counters.transfers += 1;
                    emit(t);
                    return Some(());
                }
                _ => self.report.counters.unjoined_deliveries += 1,
            }
        } else if outcome.starts_with(b"failure:") {
            self.report.counters.failures += 1;
        } else {
            // `deferral:` and `report mangled, will defer`: retried later
            // under a new delivery number.
            self.report.counters.deferrals += 1;
        }
        self.recycle(delivery.recipient);
        Some(())
    }

    fn end_msg(&mut self, id: Id) {
        match self.msgs.remove(&id) {
            Some(m) => self.recycle(m.sender),
            None => self.report.counters.ignored += 1,
        }
    }

    fn restart(&mut self, host: u32) {
        let before = self.deliveries.len();
        self.deliveries.retain(|&(h, _), _| h != host);
        self.report.counters.abandoned_deliveries += (before - self.deliveries.len()) as u64;
    }

    /// Looks for stale state once per hour of log time.
    fn tick(&mut self, ms: i64) {
        self.latest_ms = self.latest_ms.max(ms);
        if ms >= self.next_sweep_ms {
            if self.next_sweep_ms != i64::MIN {
                self.sweep();
            }
            self.next_sweep_ms = ms.saturating_add(SWEEP_EVERY_MS);
        }
    }

    /// Flushes state older than `max_pending_secs` of log time.
    fn sweep(&mut self) {
        let horizon = self
            .latest_ms
            .saturating_sub(self.config.max_pending_secs.saturating_mul(1000));
        let (m0, d0) = (self.msgs.len(), self.deliveries.len());
        self.msgs.retain(|_, m| m.new_ms >= horizon);
        self.deliveries.retain(|_, d| d.started_ms >= horizon);
        self.report.counters.unfinished_messages += (m0 - self.msgs.len()) as u64;
        self.report.counters.abandoned_deliveries += (d0 - self.deliveries.len()) as u64;
    }

    fn flush_pending(&mut self, emit: &mut dyn FnMut(Transfer)) {
        if let Some((ms, host, lineno)) = self.pending_at.take() {
            let text = std::mem::take(&mut self.pending);
            self.record(ms, host, lineno, &text, emit);
            self.pending = text;
            self.pending.clear();
        }
    }
}

/// Where a qmail record's text starts, once the stamp is read.
enum Stamp<'a> {
    Record {
        ms: i64,
        host: Option<&'a [u8]>,
        text: &'a [u8],
    },
    /// splogger's `STAMP+REST`: the rest of the previous record.
    Continuation(&'a [u8]),
    /// A well-formed line of some other program.
    Other,
}

fn split_stamp<'a>(line: &'a [u8], clock: &mut Clock) -> Option<Stamp<'a>> {
    if line[0] == b'@' {
        let ms = tai64::parse_ms(line)?;
        let text = line[tai64::LABEL_LEN..].strip_prefix(b" ")?;
        return Some(Stamp::Record {
            ms,
            host: None,
            text,
        });
    }
    if let Some(sp) = memchr::memchr(b' ', line)
        && let Some(ms) = parse_epoch(&line[..sp])
    {
        return Some(Stamp::Record {
            ms,
            host: None,
            text: &line[sp + 1..],
        });
    }
    let h = parse_header(line, clock)?;
    // splogger: `qmail: 1177980040.081236 text` or `... 1177980040.081236+rest`
    let end = h.msg.iter().position(|&b| b == b' ' || b == b'+');
    if let Some(end) = end
        && let Some(ms) = parse_epoch(&h.msg[..end])
    {
        let rest = &h.msg[end + 1..];
        return Some(if h.msg[end] == b'+' {
            Stamp::Continuation(rest)
        } else {
            Stamp::Record {
                ms,
                host: Some(h.host),
                text: rest,
            }
        });
    }
    if h.program.starts_with(b"qmail") {
        // qmail-send logging straight to syslog, no splogger stamp.
        return Some(Stamp::Record {
            ms: h.ms,
            host: Some(h.host),
            text: h.msg,
        });
    }
    Some(Stamp::Other)
}

/// What [`QmailReader`] keeps between lines, as saved in a checkpoint.
/// (Maps become lists: JSON keys must be strings.)
#[derive(Serialize, Deserialize)]
struct SavedState {
    clock: Clock,
    file: String,
    lineno: u64,
    report: Report,
    hosts: Vec<String>,
    msgs: Vec<(Id, Msg)>,
    deliveries: Vec<(Id, Delivery)>,
    pending: Vec<u8>,
    pending_at: Option<(i64, u32, u64)>,
    latest_ms: i64,
    next_sweep_ms: i64,
}

impl LogReader for QmailReader {
    fn begin_file(&mut self, name: &str, year: YearRule) {
        self.file = name.to_owned();
        self.lineno = 0;
        self.clock = Clock::new(year, self.config.utc_offset_secs);
    }

    fn set_year_rule(&mut self, year: YearRule) {
        self.clock = Clock::new(year, self.config.utc_offset_secs);
    }

    fn line(&mut self, line: &[u8], emit: &mut dyn FnMut(Transfer)) {
        self.lineno += 1;
        self.report.counters.lines += 1;
        let stamp = if line.is_empty() {
            None
        } else {
            split_stamp(line, &mut self.clock)
        };
        match stamp {
            None => {
                self.flush_pending(emit);
                self.report.unparseable(&self.file, self.lineno);
            }
            Some(Stamp::Other) => {
                self.flush_pending(emit);
                self.report.counters.ignored += 1;
            }
            Some(Stamp::Continuation(rest)) => {
                self.report.counters.matched += 1;
                if self.pending_at.is_some() {
                    let room = MAX_RECORD.saturating_sub(self.pending.len());
                    self.pending
                        .extend_from_slice(&rest[..rest.len().min(room)]);
                    self.report.counters.joined_continuations += 1;
                } else {
                    self.report.counters.ignored += 1;
                }
            }
            Some(Stamp::Record { ms, host, text }) => {
                self.report.counters.matched += 1;
                self.flush_pending(emit);
                let host = match host {
                    Some(h) => self.host_id(h),
                    None => 0,
                };
                if text.len() >= MAY_CONTINUE {
                    self.pending.extend_from_slice(text);
                    self.pending_at = Some((ms, host, self.lineno));
                } else {
                    self.record(ms, host, self.lineno, text, emit);
                }
            }
        }
    }

    fn finish(&mut self, emit: &mut dyn FnMut(Transfer)) {
        self.flush_pending(emit);
        self.report.counters.queued_at_eof += self.msgs.len() as u64;
        self.report.counters.in_flight_at_eof += self.deliveries.len() as u64;
        self.msgs.clear();
        self.deliveries.clear();
    }

    fn report(&self) -> &Report {
        &self.report
    }

    fn save_state(&self) -> serde_json::Value {
        let saved = SavedState {
            clock: self.clock.clone(),
            file: self.file.clone(),
            lineno: self.lineno,
            report: self.report.clone(),
            hosts: self.hosts.names().to_vec(),
            msgs: self.msgs.iter().map(|(k, v)| (*k, v.clone())).collect(),
            deliveries: self
                .deliveries
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            pending: self.pending.clone(),
            pending_at: self.pending_at,
            latest_ms: self.latest_ms,
            next_sweep_ms: self.next_sweep_ms,
        };
        serde_json::to_value(saved).unwrap_or_default()
    }

    fn restore_state(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error> {
        let s: SavedState = serde_json::from_value(state)?;
        self.clock = s.clock;
        self.file = s.file;
        self.lineno = s.lineno;
        self.report = s.report;
        self.hosts = Hosts::from_names(s.hosts);
        self.msgs = s.msgs.into_iter().collect();
        self.deliveries = s.deliveries.into_iter().collect();
        self.pending = s.pending;
        self.pending_at = s.pending_at;
        self.latest_ms = s.latest_ms;
        self.next_sweep_ms = s.next_sweep_ms;
        Ok(())
    }
}

/// A decimal number that is the whole of `b`.
fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &d in b {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

/// The number at the start of `b`, up to a space.
fn first_number(b: &[u8]) -> Option<u64> {
    number(b.split(|&c| c == b' ').next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_continuations_are_capped() {
        let mut r = QmailReader::new(ReaderConfig::default());
        r.begin_file("-", YearRule::Start(2007));
        let mut head =
            b"May  1 04:40:40 saracen qmail: 1177980040.081236 delivery 1: failure: ".to_vec();
        head.extend(std::iter::repeat_n(b'x', 600));
        let mut piece = b"May  1 04:40:40 saracen qmail: 1177980040.081236+".to_vec();
        piece.extend(std::iter::repeat_n(b'y', 1 << 20));
        let mut emit = |_: Transfer| {};
        r.line(&head, &mut emit);
        for _ in 0..5 {
            r.line(&piece, &mut emit);
        }
        assert_eq!(r.pending.len(), MAX_RECORD);
        assert_eq!(r.report.counters.joined_continuations, 5);
        assert_eq!(r.report.counters.matched, 6);
    }
}
