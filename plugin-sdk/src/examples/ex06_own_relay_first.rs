//! Route: my own relay first, unless its soft-bounce rate over the last 15
//! minutes is above 5 %; then the platform pool.
//!
//! Export it with `sluice_sdk::export_router!(OwnRelayFirst);`.

use crate::route::*;

/// Prefers the tenant's own relays while they are healthy.
pub struct OwnRelayFirst;

/// Below this many recipients in the window, a rate says little: trust the relay.
const MIN_SAMPLE: u64 = 20;

/// Whether a relay soft-bounced more than 5 % of what it sent in the last 15 minutes.
/// Integers only: soft / sent > 5 / 100  <=>  soft * 100 > sent * 5.
fn soft_bouncing(relay: &Relay) -> bool {
    relay
        .windows
        .iter()
        .find(|w| w.window_secs == 900)
        .is_some_and(|w| w.sent >= MIN_SAMPLE && w.soft_bounced * 100 > w.sent * 5)
}

impl Router for OwnRelayFirst {
    fn route(input: RouteInput) -> RouteDecision {
        let up = input.relays.into_iter().filter(|r| r.up);
        let (own, platform): (Vec<Relay>, Vec<Relay>) = up.partition(|r| r.owner.is_some());
        let (healthy, sick): (Vec<Relay>, Vec<Relay>) =
            own.into_iter().partition(|r| !soft_bouncing(r));
        for r in &sick {
            crate::log::warn(&format!(
                "{} soft-bounces over 5 %: using the platform pool",
                r.id
            ));
        }
        // Healthy own relays, then the platform pool, then (last resort) the sick ones.
        let order: Vec<String> = healthy
            .into_iter()
            .chain(platform)
            .chain(sick)
            .map(|r| r.id)
            .collect();
        if order.is_empty() {
            return RouteDecision::Defer(Deferral {
                delay_secs: 60,
                reason: "no relay is up".into(),
            });
        }
        RouteDecision::Relays(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn own(id: &str, sent: u64, soft: u64) -> Relay {
        let mut r = testing::relay(id);
        r.owner = Some("tenant-1".into());
        r.windows[1].sent = sent;
        r.windows[1].soft_bounced = soft;
        r
    }

    #[test]
    fn own_relay_first_until_it_soft_bounces_over_five_percent() {
        let route =
            |mine| OwnRelayFirst::route(testing::route_input(vec![testing::relay("pool"), mine]));
        let ids = |v: &[&str]| RouteDecision::Relays(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            route(own("mine", 100, 5)),
            ids(&["mine", "pool"]),
            "5 % is fine"
        );
        assert_eq!(
            route(own("mine", 100, 6)),
            ids(&["pool", "mine"]),
            "6 % is not"
        );
        assert_eq!(
            route(own("mine", 10, 9)),
            ids(&["mine", "pool"]),
            "too few to judge"
        );
        assert!(
            testing::take_logs()
                .iter()
                .any(|l| l.message.contains("mine soft-bounces"))
        );
    }
}
