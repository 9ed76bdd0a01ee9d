//! A native test harness: build stage inputs with sensible defaults, set the
//! plugin's settings, and read what it logged — all with plain `cargo test`,
//! no WebAssembly involved.
//!
//! ```
//! use sluice_sdk::route::*;
//! use sluice_sdk::testing;
//!
//! struct Pinned;
//! impl Router for Pinned {
//!     fn route(input: RouteInput) -> RouteDecision {
//!         let want = sluice_sdk::config::get("relay").unwrap_or_default();
//!         sluice_sdk::log::info("pinned");
//!         RouteDecision::Relays(input.relays.into_iter().map(|r| r.id).filter(|id| *id == want).collect())
//!     }
//! }
//!
//! testing::set_config(&[("relay", "b")]);
//! let input = testing::route_input(vec![testing::relay("a"), testing::relay("b")]);
//! assert_eq!(Pinned::route(input), RouteDecision::Relays(vec!["b".into()]));
//! assert_eq!(testing::take_logs()[0].message, "pinned");
//! ```

use crate::bill::{BillInput, Outcome, UsageEvent};
use crate::bindings::shared::sluice::plugin::host::Level;
use crate::ingest::Submission;
use crate::route::{MessageSummary, RouteInput};
use crate::send::Attempt;
use crate::types::{Direction, Relay, RelayWindow, SmtpReply};
use std::cell::RefCell;

/// A line the plugin logged during a native test.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its message.
    pub message: String,
    /// Its key/value fields.
    pub fields: Vec<(String, String)>,
}

thread_local! {
    static CONFIG: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    static LOGS: RefCell<Vec<LogLine>> = const { RefCell::new(Vec::new()) };
}

/// Sets what [`crate::config`] returns on this thread.
pub fn set_config(pairs: &[(&str, &str)]) {
    let pairs = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    CONFIG.with(|c| *c.borrow_mut() = pairs);
}

/// Returns and clears what the plugin logged on this thread.
pub fn take_logs() -> Vec<LogLine> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn current_config() -> Vec<(String, String)> {
    CONFIG.with(|c| c.borrow().clone())
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn record_log(level: Level, message: &str, fields: Vec<(String, String)>) {
    LOGS.with(|l| {
        l.borrow_mut().push(LogLine {
            level,
            message: message.to_owned(),
            fields,
        })
    });
}

/// A window of `window_secs` with the given counters and a 100 ms latency.
pub fn window(window_secs: u32, sent: u64, delivered: u64) -> RelayWindow {
    RelayWindow {
        window_secs,
        sent,
        delivered,
        deferred: 0,
        hard_bounced: 0,
        soft_bounced: 0,
        blocked: 0,
        mean_latency_ms: 100,
    }
}

/// A healthy platform relay: weight 100, 10 connections, none in flight,
/// empty 1/15/60-minute windows.
pub fn relay(id: &str) -> Relay {
    Relay {
        id: id.to_owned(),
        weight: 100,
        tags: Vec::new(),
        owner: None,
        in_flight: 0,
        connection_limit: 10,
        up: true,
        windows: vec![window(60, 0, 0), window(900, 0, 0), window(3600, 0, 0)],
    }
}

/// A 1 KiB first attempt from `sender@example.com` to one `example.org` recipient.
pub fn message() -> MessageSummary {
    MessageSummary {
        id: "msg-1".to_owned(),
        tenant: "tenant-1".to_owned(),
        sender: "sender@example.com".to_owned(),
        recipient_domains: vec!["example.org".to_owned()],
        recipient_count: 1,
        size: 1024,
        tags: Vec::new(),
        attempt: 1,
        age_secs: 0,
    }
}

/// [`message`] routed over `relays`.
pub fn route_input(relays: Vec<Relay>) -> RouteInput {
    RouteInput {
        message: message(),
        relays,
        now_ms: 1_767_225_600_000,
    }
}

/// A first attempt through relay `r1` that got `code enhanced text`.
pub fn attempt(code: u16, enhanced: &str, text: &str) -> Attempt {
    Attempt {
        message_id: "msg-1".to_owned(),
        tenant: "tenant-1".to_owned(),
        recipient: "rcpt@example.org".to_owned(),
        relay: "r1".to_owned(),
        reply: Some(SmtpReply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| enhanced.to_owned()),
            text: text.to_owned(),
        }),
        transport_error: None,
        attempt: 1,
        age_secs: 0,
        relays_left: 0,
    }
}

/// A 1 KiB submission from `sender` to `rcpt@example.org`, allowed domain `example.com`.
pub fn submission(sender: &str) -> Submission {
    Submission {
        tenant: "tenant-1".to_owned(),
        sender: sender.to_owned(),
        recipients: vec!["rcpt@example.org".to_owned()],
        headers: Vec::new(),
        size: 1024,
        tags: Vec::new(),
        allowed_sender_domains: vec!["example.com".to_owned()],
        received_at_ms: 1_767_225_600_000,
    }
}

/// An outbound usage event of `size` bytes.
pub fn usage_event(key: &str, outcome: Outcome, size: u64) -> UsageEvent {
    UsageEvent {
        key: key.to_owned(),
        tenant: "tenant-1".to_owned(),
        message_id: "msg-1".to_owned(),
        recipient: "rcpt@example.org".to_owned(),
        outcome,
        direction: Direction::Outbound,
        size,
        relay: Some("r1".to_owned()),
        at_ms: 1_767_225_600_000,
    }
}

/// A batch for `tariff` with nothing rated yet this period.
pub fn bill_input(tariff: &str, events: Vec<UsageEvent>) -> BillInput {
    BillInput {
        tariff: tariff.to_owned(),
        period_start_ms: 1_767_225_600_000,
        period_to_date: Vec::new(),
        events,
    }
}
