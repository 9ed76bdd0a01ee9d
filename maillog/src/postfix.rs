//! Postfix logs (classic or RFC 3339 syslog timestamps).
//!
//! ```text
//! postfix/smtpd[..]: QID: client=...                      first sight: acceptance
//! postfix/qmgr[..]: QID: from=<S>, size=N, nrcpt=K (queue active)
//! postfix/smtp[..]: QID: to=<R>, relay=..., ..., status=sent (...)   one transfer
//! postfix/qmgr[..]: QID: removed                          message finished
//! ```
//!
//! Delivery agents are `smtp`, `lmtp`, `local`, `virtual` and `pipe`,
//! whatever the syslog name before them (`postfix-out/smtp`,
//! `postfix/amavis/smtp`). A delivery into a content filter is a hop, not a
//! transfer: the filter re-injects the message under a new queue id and
//! that message's delivery is billed. A hop is an `smtp` delivery to a
//! loopback address, a delivery by one of [`ReaderConfig::filter_transports`]
//! (the service name in the syslog tag, or the transport of `pipe`), or a
//! `local` delivery that forwarded the message (`forwarded as QID`).
//! `lmtp` to loopback is a final delivery (e.g. Dovecot).

use super::hash::{FxHashMap, FxHasher};
use super::hosts::Hosts;
use super::syslog::parse_header;
use super::syslog_time::Clock;
use super::{LogReader, ReaderConfig, Report, Transfer, YearRule};
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// How often (in log time) old half-joined state is looked for.
const SWEEP_EVERY_MS: i64 = 3_600_000;

const MAX_QID: usize = 24;

/// A queue id stored inline (no allocation per message for the key).
/// Saved in checkpoints as its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
struct Qid {
    len: u8,
    bytes: [u8; MAX_QID],
}

impl TryFrom<String> for Qid {
    type Error = String;
    fn try_from(s: String) -> Result<Qid, String> {
        Qid::new(s.as_bytes()).ok_or_else(|| format!("not a queue id: {s:?}"))
    }
}

impl From<Qid> for String {
    fn from(q: Qid) -> String {
        q.as_str().to_owned()
    }
}

impl Qid {
    fn new(b: &[u8]) -> Option<Qid> {
        if b.len() < 5
            || b.len() > MAX_QID
            || b == b"NOQUEUE"
            || !b.iter().all(u8::is_ascii_alphanumeric)
        {
            return None;
        }
        let mut bytes = [0; MAX_QID];
        bytes[..b.len()].copy_from_slice(b);
        Some(Qid {
            len: b.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Msg {
    first_ms: i64,
    /// Set by qmgr's `from=` line.
    sender: Option<String>,
    size: u64,
    /// Hashes of (recipient, time) already billed: a recipient listed twice
    /// and delivered within one second (classic stamps) gets a second key.
    sent: Vec<u64>,
    /// Beside `sent`: a hash of each delivery's whole `to=<…>` text and the
    /// input file it was last read in. The same text in a later file (a log
    /// given twice, overlapping rotations) is the same delivery read again
    /// and gets its first key back, so the caller sees the duplicate; the same
    /// text twice in one file is a recipient delivered twice (`#2`).
    /// (Absent from older checkpoints: filled with 0, which matches nothing.)
    #[serde(default)]
    sent_lines: Vec<(u64, u32)>,
}

/// Joins Postfix lines into transfers.
pub struct PostfixReader {
    config: ReaderConfig,
    clock: Clock,
    file: String,
    lineno: u64,
    report: Report,
    hosts: Hosts,
    msgs: FxHashMap<(u32, Qid), Msg>,
    latest_ms: i64,
    next_sweep_ms: i64,
    pool: Vec<String>,
    /// Counts the input files begun (see `Msg::sent_lines`).
    file_no: u32,
}

impl PostfixReader {
    pub fn new(config: ReaderConfig) -> PostfixReader {
        PostfixReader {
            clock: Clock::new(config.year, config.utc_offset_secs),
            config,
            file: "-".into(),
            lineno: 0,
            report: Report::default(),
            hosts: Hosts::default(),
            msgs: FxHashMap::default(),
            latest_ms: i64::MIN,
            next_sweep_ms: i64::MIN,
            pool: Vec::new(),
            file_no: 0,
        }
    }

    fn host_id(&mut self, host: &[u8]) -> u32 {
        self.hosts.id(host)
    }

    fn msg(&mut self, id: (u32, Qid), ms: i64) -> &mut Msg {
        self.msgs.entry(id).or_insert(Msg {
            first_ms: ms,
            sender: None,
            size: 0,
            sent: Vec::new(),
            sent_lines: Vec::new(),
        })
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

    fn sweep(&mut self) {
        let horizon = self
            .latest_ms
            .saturating_sub(self.config.max_pending_secs.saturating_mul(1000));
        let before = self.msgs.len();
        self.msgs.retain(|_, m| m.first_ms >= horizon);
        self.report.counters.unfinished_messages += (before - self.msgs.len()) as u64;
    }

    /// Handles one line; `None` means it was malformed.
    fn parse(&mut self, line: &[u8], emit: &mut dyn FnMut(Transfer)) -> Option<()> {
        let h = parse_header(line, &mut self.clock)?;
        self.tick(h.ms);
        let Some(slash) = memchr::memrchr(b'/', h.program) else {
            self.report.counters.ignored += 1; // amavis, dovecot, opendkim, ...
            return Some(());
        };
        self.report.counters.matched += 1;
        let daemon = &h.program[slash + 1..];
        let service = h.program[..slash]
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or(b"");
        let Some(colon) = memchr::memchr(b':', h.msg) else {
            self.report.counters.ignored += 1;
            return Some(());
        };
        let (Some(qid), Some(rest)) = (
            Qid::new(&h.msg[..colon]),
            h.msg[colon..].strip_prefix(b": "),
        ) else {
            // connect, disconnect, NOQUEUE: reject, statistics, warnings
            self.report.counters.ignored += 1;
            return Some(());
        };
        let host = self.host_id(h.host);
        let id = (host, qid);
        match daemon {
            b"qmgr" => {
                if let Some(from) = rest.strip_prefix(b"from=<") {
                    let end = find(from, b">, ")?;
                    let sender = &from[..end];
                    let after = &from[end..];
                    if let Some(at) = find(after, b"size=") {
                        let digits = &after[at + 5..];
                        let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
                        if !matches!(digits.get(n), None | Some(b',' | b' ')) {
                            return None;
                        }
                        let size = number(&digits[..n])?;
                        let mut s = self.pool.pop().unwrap_or_default();
                        s.clear();
                        s.push_str(&String::from_utf8_lossy(sender));
                        let msg = self.msg(id, h.ms);
                        msg.size = size;
                        if let Some(old) = msg.sender.replace(s) {
                            self.pool.push(old);
                        }
                    } else {
                        // `from=<S>, status=expired, returned to sender`
                        self.report.counters.ignored += 1;
                    }
                } else if rest == b"removed" {
                    if let Some(m) = self.msgs.remove(&id)
                        && let Some(s) = m.sender
                        && self.pool.len() < 1024
                    {
                        self.pool.push(s);
                    }
                } else {
                    self.report.counters.ignored += 1;
                }
            }
            b"smtp" | b"lmtp" | b"local" | b"virtual" | b"pipe" => {
                let Some(to) = rest.strip_prefix(b"to=<") else {
                    self.report.counters.ignored += 1; // conversation / TLS notes
                    return Some(());
                };
                let end = memchr::memchr(b'>', to)?;
                let recipient = &to[..end];
                let relay = field(to, b" relay=").unwrap_or(b"");
                let status = find(to, b" status=")?;
                let status = &to[status + 8..];
                if status.starts_with(b"sent") {
                    if self.is_hop(daemon, service, relay, status) {
                        self.report.counters.filter_hops += 1;
                        return Some(());
                    }
                    self.transfer(id, h.ms, recipient, relay, to, emit);
                } else if status.starts_with(b"deferred") {
                    self.report.counters.deferrals += 1;
                } else if status.starts_with(b"bounced") || status.starts_with(b"expired") {
                    self.report.counters.failures += 1;
                } else {
                    self.report.counters.ignored += 1;
                }
            }
            b"bounce" => {
                self.report.counters.bounces += 1;
            }
            b"cleanup" if rest.starts_with(b"reject:") || rest.starts_with(b"milter-reject:") => {
                // refused before it was queued: it will never be `removed`
                self.msgs.remove(&id);
                self.report.counters.ignored += 1;
            }
            _ => {
                // smtpd client=, pickup, cleanup message-id=: first sight of
                // the message is its acceptance time.
                self.msg(id, h.ms);
                self.report.counters.ignored += 1;
            }
        }
        Some(())
    }

    fn is_hop(&self, daemon: &[u8], service: &[u8], relay: &[u8], status: &[u8]) -> bool {
        let named = |name: &[u8]| {
            self.config
                .filter_transports
                .iter()
                .any(|t| t.as_bytes() == name)
        };
        if named(service) || (daemon == b"pipe" && named(relay)) {
            return true;
        }
        if daemon == b"smtp" && is_loopback(relay) {
            return true;
        }
        daemon == b"local" && find(status, b"(forwarded as ").is_some()
    }

    fn transfer(
        &mut self,
        id: (u32, Qid),
        ms: i64,
        recipient: &[u8],
        relay: &[u8],
        line: &[u8],
        emit: &mut dyn FnMut(Transfer),
    ) {
        let Some(Msg {
            first_ms,
            sender: Some(sender),
            size,
            sent,
            sent_lines,
        }) = self.msgs.get_mut(&id)
        else {
            self.report.counters.unjoined_deliveries += 1;
            return;
        };
        let seen = {
            let mut h = FxHasher::default();
            (recipient, ms).hash(&mut h);
            let h = h.finish();
            let mut l = FxHasher::default();
            line.hash(&mut l);
            let l = l.finish();
            let file = self.file_no;
            sent_lines.resize(sent.len(), (0, file));
            let again = sent
                .iter()
                .zip(sent_lines.iter())
                .position(|(&s, &(t, f))| (s, t) == (h, l) && f != file);
            match again {
                // A line of an earlier file read again: the key it had then.
                Some(i) => {
                    sent_lines[i].1 = file;
                    sent[..i].iter().filter(|&&x| x == h).count()
                }
                None => {
                    let seen = sent.iter().filter(|&&x| x == h).count();
                    sent.push(h);
                    sent_lines.push((l, file));
                    seen
                }
            }
        };
        let host = self.hosts.name(id.0);
        let qid = id.1.as_str();
        let recipient = String::from_utf8_lossy(recipient).into_owned();
        let repeat = if seen == 0 {
            String::new()
        } else {
            format!("#{}", seen + 1)
        };
        let t = Transfer {
            key: format!("postfix/{host}/{qid}/{ms}/{recipient}{repeat}"),
            message_id: format!("{host}/{qid}/{first_ms}"),
            sender: sender.clone(),
            recipient,
            size: *size,
            accepted_ms: *first_ms,
            delivered_ms: ms,
            relay: String::from_utf8_lossy(relay).into_owned(),
        };
        self.report.counters.transfers += 1;
        emit(t);
    }
}

/// `relay=127.0.0.1[127.0.0.1]:10024`, `localhost[::1]:10024`, `[127.0.0.1]:25`.
fn is_loopback(relay: &[u8]) -> bool {
    let Some(open) = memchr::memchr(b'[', relay) else {
        return false;
    };
    let Some(close) = memchr::memchr(b']', &relay[open..]) else {
        return false;
    };
    let addr = &relay[open + 1..open + close];
    let addr = addr.strip_prefix(b"ipv6:").unwrap_or(addr);
    addr.starts_with(b"127.") || addr == b"::1"
}

/// The value of `NAME=` up to the next comma.
fn field<'a>(b: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let at = find(b, name)? + name.len();
    let v = &b[at..];
    Some(&v[..memchr::memchr(b',', v).unwrap_or(v.len())])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    Some(b.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0')))
}

/// What [`PostfixReader`] keeps between lines, as saved in a checkpoint.
#[derive(Serialize, Deserialize)]
struct SavedState {
    clock: Clock,
    file: String,
    lineno: u64,
    report: Report,
    hosts: Vec<String>,
    msgs: Vec<((u32, Qid), Msg)>,
    latest_ms: i64,
    next_sweep_ms: i64,
    #[serde(default)]
    file_no: u32,
}

impl LogReader for PostfixReader {
    fn begin_file(&mut self, name: &str, year: YearRule) {
        self.file_no = self.file_no.wrapping_add(1);
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
        if self.parse(line, emit).is_none() {
            self.report.unparseable(&self.file, self.lineno);
        }
    }

    fn finish(&mut self, _emit: &mut dyn FnMut(Transfer)) {
        self.report.counters.queued_at_eof += self.msgs.len() as u64;
        self.msgs.clear();
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
            latest_ms: self.latest_ms,
            next_sweep_ms: self.next_sweep_ms,
            file_no: self.file_no,
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
        self.latest_ms = s.latest_ms;
        self.next_sweep_ms = s.next_sweep_ms;
        self.file_no = s.file_no;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_relays() {
        assert!(is_loopback(b"127.0.0.1[127.0.0.1]:10024"));
        assert!(is_loopback(b"localhost[::1]:10024"));
        assert!(!is_loopback(b"mx.example[203.0.113.5]:25"));
        assert!(!is_loopback(b"dovecot"));
    }

    #[test]
    fn a_line_read_again_in_a_later_file_keeps_its_key() {
        let from = b"Jan  1 01:00:00 mx1 postfix/qmgr[1]: B18C9DAEBF: from=<a@b.example>, size=10, nrcpt=2 (queue active)";
        let to = b"Jan  1 01:00:02 mx1 postfix/smtp[2]: B18C9DAEBF: to=<t@o.example>, relay=mx.o.example[203.0.113.9]:25, delay=2, delays=0/0/1/1, dsn=2.0.0, status=sent (250 OK)";
        let mut r = PostfixReader::new(ReaderConfig {
            year: YearRule::Start(2024),
            ..ReaderConfig::default()
        });
        let feed = |r: &mut PostfixReader, lines: &[&[u8]]| {
            let mut keys = Vec::new();
            for l in lines {
                r.line(l, &mut |t: Transfer| keys.push(t.key));
            }
            keys
        };
        r.begin_file("mail.log.1", YearRule::Start(2024));
        let mut keys = feed(&mut r, &[from, to, to]);
        // The overlap of the next file: the message and both deliveries again.
        r.begin_file("mail.log", YearRule::Start(2024));
        keys.extend(feed(&mut r, &[from, to, to]));
        let k = "postfix/mx1/B18C9DAEBF/1704070802000/t@o.example";
        let k2 = format!("{k}#2");
        assert_eq!(keys, [k, &k2, k, &k2]);
        // A third delivery in the new file is a new one.
        assert_eq!(feed(&mut r, &[to]), [format!("{k}#3")]);
    }
}
