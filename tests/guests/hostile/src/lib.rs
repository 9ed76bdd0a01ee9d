//! A router that misbehaves on purpose. Its `mode` setting picks how:
//!
//! - `loop`: spins forever;
//! - `bomb`: allocates until memory runs out;
//! - `recurse`: recurses until the stack overflows;
//! - `panic`: panics (a trap);
//! - `huge`: answers with a million relay ids;
//! - `stderr`: writes ~370 KB to stderr, line by line, then answers;
//! - `probe`: tries files, environment and the clock, and reports what it saw
//!   in the deferral reason;
//! - anything else: routes to the first relay.

use sluice_sdk::route::*;

/// The plugin.
pub struct Hostile;

impl Router for Hostile {
    fn route(input: RouteInput) -> RouteDecision {
        let mode = sluice_sdk::config::get("mode").unwrap_or_default();
        match mode.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => RouteDecision::Reject(format!("{}", recurse(std::hint::black_box(1)))),
            "panic" => panic!("hostile plugin panics on purpose"),
            "huge" => RouteDecision::Relays((0..1_000_000).map(|i| format!("relay-{i}")).collect()),
            "stderr" => {
                // ~370 KB: far past the host's 16 KiB cap, yet quick even
                // through an unoptimised (debug) host's WASI streams.
                for i in 0..10_000 {
                    eprintln!("noise line {i} from a chatty plugin");
                }
                RouteDecision::Relays(vec![input.relays[0].id.clone()])
            }
            "probe" => RouteDecision::Defer(Deferral {
                delay_secs: 1,
                reason: probe(),
            }),
            _ => RouteDecision::Relays(vec![input.relays[0].id.clone()]),
        }
    }
}

fn recurse(n: u64) -> u64 {
    let pad = std::hint::black_box([n; 64]);
    // Never true in practice: the stack runs out long before.
    if pad[0] == u64::MAX {
        return 0;
    }
    recurse(pad[3].wrapping_add(1)).wrapping_add(pad[7])
}

/// What the sandbox lets through: each probe says `ok` or `denied`.
fn probe() -> String {
    let file = std::fs::read("/etc/passwd")
        .map(|_| "ok")
        .unwrap_or("denied");
    let dir = std::fs::read_dir("/").map(|_| "ok").unwrap_or("denied");
    let env = if std::env::vars().next().is_some() {
        "ok"
    } else {
        "denied"
    };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let clock = if secs > 0 { "ok" } else { "denied" };
    format!("file={file} dir={dir} env={env} clock={clock}")
}

sluice_sdk::export_router!(Hostile);
