//! A tenant's router for the tenant isolation tests: it writes what it is shown of each
//! relay (the relay's health and the counts of every window) to the plugin log, one
//! line per relay, then routes to the relays in the order given. The test reads the
//! log to see whether another tenant's traffic shows through.

use sluice_sdk::route::*;

/// The plugin.
pub struct TenantRouteWindows;

/// One relay as a log line: `relay=ID up=B in_flight=N limit=N w60=S/D/F/H/B/L …`
/// (sent/delivered/deferred/hard/soft/blocked per window).
fn describe(r: &Relay) -> String {
    let mut line = format!(
        "relay={} up={} in_flight={} limit={}",
        r.id, r.up, r.in_flight, r.connection_limit
    );
    for w in &r.windows {
        line.push_str(&format!(
            " w{}={}/{}/{}/{}/{}/{}",
            w.window_secs,
            w.sent,
            w.delivered,
            w.deferred,
            w.hard_bounced,
            w.soft_bounced,
            w.blocked
        ));
    }
    line
}

impl Router for TenantRouteWindows {
    fn route(input: RouteInput) -> RouteDecision {
        for r in &input.relays {
            sluice_sdk::log::info(&format!("message={} {}", input.message.id, describe(r)));
        }
        RouteDecision::Relays(input.relays.iter().map(|r| r.id.clone()).collect())
    }
}

sluice_sdk::export_router!(TenantRouteWindows);
