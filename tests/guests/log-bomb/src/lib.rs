//! A router that logs as much as it can on every call, then routes to the
//! first relay: 100 `log` calls (the host keeps 64 per call), each a message of
//! ~1 MiB of multi-byte text (1-, 2-, 3- and 4-byte characters, so a cut by
//! bytes must find a character boundary) with 40 fields of ~16 KiB each.
//!
//! The strings are built once per call and passed by reference to every `log`
//! call, so the guest spends ~2 MiB of its own memory while a host that lifted
//! every argument would copy ~160 MiB per call.

use sluice_sdk::bindings::shared::sluice::plugin::host::{Level, log};
use sluice_sdk::route::*;

/// `log` calls per plugin call.
const LINES: usize = 100;
/// Fields per line.
const FIELDS: usize = 40;

/// The plugin.
pub struct LogBomb;

/// About `bytes` of text cycling through characters of every UTF-8 length.
fn multibyte(bytes: usize) -> String {
    let unit = "a\u{e9}\u{20ac}\u{1f600}"; // 1 + 2 + 3 + 4 bytes
    unit.repeat(bytes / unit.len())
}

impl Router for LogBomb {
    fn route(input: RouteInput) -> RouteDecision {
        let message = multibyte(1 << 20);
        let value = multibyte(16 << 10);
        let fields: Vec<(String, String)> = (0..FIELDS)
            .map(|i| (format!("{i:03}{}", multibyte(300)), value.clone()))
            .collect();
        for _ in 0..LINES {
            log(Level::Error, &message, &fields);
        }
        match input.relays.first() {
            Some(r) => RouteDecision::Relays(vec![r.id.clone()]),
            None => RouteDecision::Reject("no relay".into()),
        }
    }
}

sluice_sdk::export_router!(LogBomb);
