//! A route plugin that spins before it answers: the noisy neighbour of the fairness
//! test and the `noisy neighbour` benchmark. Its `spin` setting is how many steps of a
//! loop it runs per call (the sandbox's clock is frozen, so work, not time, is what a
//! plugin can choose); then it routes to the first relay, a valid answer. On the test
//! machine 100 million steps take about 0.1 s (time `sluice plugin run` to calibrate).

use sluice_sdk::route::*;

/// The plugin.
pub struct SlowRouter;

impl Router for SlowRouter {
    fn route(input: RouteInput) -> RouteDecision {
        let steps: u64 = sluice_sdk::config::get("spin")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut n: u64 = 0;
        for _ in 0..steps {
            n = std::hint::black_box(n.wrapping_add(1));
        }
        std::hint::black_box(n);
        match input.relays.first() {
            Some(r) => RouteDecision::Relays(vec![r.id.clone()]),
            None => RouteDecision::Defer(Deferral {
                delay_secs: 60,
                reason: "no relay".into(),
            }),
        }
    }
}

sluice_sdk::export_router!(SlowRouter);
