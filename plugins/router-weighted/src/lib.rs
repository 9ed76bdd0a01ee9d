//! The default router: a weighted choice among the relays that are up,
//! favouring a better delivery ratio and spare capacity.
//!
//! Each relay scores `weight × health × spare`, where `health` is the
//! smoothed delivery ratio `(delivered + 1) / (sent + 2)` over the window of
//! `window_secs` (setting, default 900) reduced by its share of blocked
//! bounces, and `spare` is the share of its connection limit not in flight.
//! The first relay is drawn with probability proportional to its score from
//! a hash of the message id — deterministic for a message, spread across
//! messages — and the others follow by score as fallbacks. Relays at their
//! connection limit come last; relays that are down are left out. All
//! arithmetic is integer.

use sluice_sdk::route::*;

/// The plugin.
pub struct WeightedRouter;

/// Parts per million.
const PPM: u64 = 1_000_000;

impl Router for WeightedRouter {
    fn route(input: RouteInput) -> RouteDecision {
        let window_secs: u32 = sluice_sdk::config::get_or("window_secs", 900);
        let mut scored: Vec<(u64, Relay)> = input
            .relays
            .into_iter()
            .filter(|r| r.up)
            .map(|r| (score(&r, window_secs), r))
            .collect();
        if scored.is_empty() {
            return RouteDecision::Defer(Deferral {
                delay_secs: 60,
                reason: "every relay this message may use is down".into(),
            });
        }
        // Best first; ties keep the operator's order.
        scored.sort_by_key(|s| std::cmp::Reverse(s.0));
        let total: u64 = scored.iter().map(|(s, _)| *s).sum();
        if total > 0 {
            let mut ticket = fnv1a(input.message.id.as_bytes()) % total;
            let pick = scored
                .iter()
                .position(|(s, _)| {
                    let hit = ticket < *s;
                    ticket = ticket.saturating_sub(*s);
                    hit
                })
                .unwrap_or(0);
            let chosen = scored.remove(pick);
            scored.insert(0, chosen);
        }
        RouteDecision::Relays(scored.into_iter().map(|(_, r)| r.id).collect())
    }
}

/// `weight × health × spare`, with health and spare in ppm.
fn score(relay: &Relay, window_secs: u32) -> u64 {
    let window = relay
        .windows
        .iter()
        .find(|w| w.window_secs == window_secs)
        .or_else(|| relay.windows.last());
    let health = window.map_or(PPM / 2, |w| {
        let ratio = (w.delivered + 1) * PPM / (w.sent + 2);
        let blocked = w.blocked * PPM / (w.sent + 2);
        ratio.saturating_sub(blocked).max(1)
    });
    let limit = u64::from(relay.connection_limit.max(1));
    let spare = limit.saturating_sub(u64::from(relay.in_flight)) * PPM / limit;
    // A relay at its limit keeps a sliver of score so it stays a fallback.
    let spare = spare.max(1);
    let s = u128::from(relay.weight) * u128::from(health) * u128::from(spare) / u128::from(PPM);
    u64::try_from(s / u128::from(PPM))
        .unwrap_or(u64::MAX / 1024)
        .max(u64::from(relay.weight > 0))
}

/// FNV-1a: a stable hash, the same on every host and every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

sluice_sdk::export_router!(WeightedRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    fn first(input: RouteInput) -> String {
        match WeightedRouter::route(input) {
            RouteDecision::Relays(r) => r[0].clone(),
            other => panic!("not routed: {other:?}"),
        }
    }

    fn counts(relays: Vec<Relay>, n: usize) -> std::collections::BTreeMap<String, usize> {
        let mut c = std::collections::BTreeMap::new();
        for i in 0..n {
            let mut input = testing::route_input(relays.clone());
            input.message.id = format!("m{i}");
            *c.entry(first(input)).or_default() += 1;
        }
        c
    }

    #[test]
    fn spreads_by_weight() {
        let mut heavy = testing::relay("heavy");
        heavy.weight = 300;
        let c = counts(vec![heavy, testing::relay("light")], 4000);
        let (h, l) = (c["heavy"], c["light"]);
        assert!(h > 2 * l && h < 4 * l, "heavy {h} light {l}");
    }

    #[test]
    fn prefers_better_delivery_ratio() {
        let mut bad = testing::relay("bad");
        bad.windows[1] = testing::window(900, 1000, 100);
        let mut good = testing::relay("good");
        good.windows[1] = testing::window(900, 1000, 990);
        let c = counts(vec![bad, good], 2000);
        assert!(
            c["good"] > 8 * c.get("bad").copied().unwrap_or(0).max(1),
            "{c:?}"
        );
    }

    #[test]
    fn full_relays_are_fallbacks_and_down_relays_are_left_out() {
        let mut full = testing::relay("full");
        full.in_flight = 10;
        let mut down = testing::relay("down");
        down.up = false;
        let RouteDecision::Relays(order) = WeightedRouter::route(testing::route_input(vec![
            full,
            down,
            testing::relay("free"),
        ])) else {
            panic!("not routed")
        };
        assert_eq!(order, ["free", "full"]);
    }

    #[test]
    fn defers_when_every_relay_is_down() {
        let mut down = testing::relay("down");
        down.up = false;
        assert!(
            matches!(WeightedRouter::route(testing::route_input(vec![down])), RouteDecision::Defer(d) if d.delay_secs == 60)
        );
    }

    #[test]
    fn window_is_configurable() {
        let mut a = testing::relay("a");
        a.windows = vec![testing::window(60, 100, 0), testing::window(3600, 100, 100)];
        let mut b = testing::relay("b");
        b.windows = vec![testing::window(60, 100, 100), testing::window(3600, 100, 0)];
        testing::set_config(&[("window_secs", "60")]);
        let c = counts(vec![a.clone(), b.clone()], 500);
        assert!(c["b"] > 450, "{c:?}");
        testing::set_config(&[("window_secs", "3600")]);
        let c = counts(vec![a, b], 500);
        assert!(c["a"] > 450, "{c:?}");
        testing::set_config(&[]);
    }
}
