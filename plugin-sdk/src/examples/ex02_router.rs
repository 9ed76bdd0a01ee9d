//! Route: the least loaded relay that is up, the rest as fallbacks.
//!
//! Export it with `sluice_sdk::export_router!(LeastLoaded);`.

use crate::route::*;

/// Orders the relays that are up by the share of their connections in use.
pub struct LeastLoaded;

impl Router for LeastLoaded {
    fn route(input: RouteInput) -> RouteDecision {
        let mut up: Vec<Relay> = input.relays.into_iter().filter(|r| r.up).collect();
        if up.is_empty() {
            return RouteDecision::Defer(Deferral {
                delay_secs: 60,
                reason: "no relay is up".into(),
            });
        }
        // in_flight / limit, compared without floats: a/b < c/d  <=>  a*d < c*b
        up.sort_by(|a, b| {
            let (la, lb) = (
                u64::from(a.connection_limit.max(1)),
                u64::from(b.connection_limit.max(1)),
            );
            (u64::from(a.in_flight) * lb).cmp(&(u64::from(b.in_flight) * la))
        });
        RouteDecision::Relays(up.into_iter().map(|r| r.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn prefers_the_idle_relay_and_skips_the_down_one() {
        let mut busy = testing::relay("busy");
        busy.in_flight = 9;
        let mut down = testing::relay("down");
        down.up = false;
        let input = testing::route_input(vec![busy, down, testing::relay("idle")]);
        assert_eq!(
            LeastLoaded::route(input),
            RouteDecision::Relays(vec!["idle".into(), "busy".into()])
        );
    }
}
