//! Hostile guests are stopped with the right typed error, and a healthy
//! plugin answers correctly right after, on the same engine.

use sluice::builtin::{self, test_guests};
use sluice::runtime::{LoadError, LogSource, Plugin, PluginError, PluginSpec};
use sluice::stage::{RouteDecision, Stage, samples};
use sluice_tests::runtime;
use std::time::{Duration, Instant};

fn hostile(mode: &str) -> Plugin {
    hostile_with(mode, Duration::from_millis(50), 32 << 20)
}

fn hostile_with(mode: &str, timeout: Duration, memory_bytes: usize) -> Plugin {
    let mut spec = PluginSpec::for_stage(Stage::Route);
    spec.config = vec![("mode".into(), mode.into())];
    spec.limits.memory_bytes = memory_bytes;
    spec.limits.timeout = timeout;
    runtime()
        .load(
            Stage::Route,
            &format!("hostile-{mode}"),
            test_guests::HOSTILE,
            spec,
        )
        .expect("hostile guest loads")
}

/// The default router still answers correctly on the same engine.
fn assert_healthy_plugin_still_works() {
    let router = builtin::default_for(Stage::Route);
    let plugin = runtime()
        .load(
            Stage::Route,
            router.name,
            router.wasm,
            PluginSpec::for_stage(Stage::Route),
        )
        .unwrap();
    let decision = plugin.route(&samples::route_input()).unwrap();
    assert!(
        matches!(decision, RouteDecision::Relays(ref r) if r.len() == 2),
        "{decision:?}"
    );
}

#[test]
fn infinite_loop_is_stopped_at_its_deadline() {
    let plugin = hostile("loop");
    let started = Instant::now();
    let err = plugin.route(&samples::route_input()).unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        PluginError::Timeout {
            limit: Duration::from_millis(50)
        }
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(err.to_string(), "plugin ran past its deadline of 50ms");
    assert_healthy_plugin_still_works();
}

#[test]
fn memory_bomb_hits_its_memory_limit() {
    // A generous deadline, so that on a loaded machine the memory cap, not
    // the clock, is what stops it.
    let err = hostile_with("bomb", Duration::from_secs(10), 32 << 20)
        .route(&samples::route_input())
        .unwrap_err();
    match err {
        PluginError::MemoryLimit {
            limit_bytes,
            wanted_bytes,
        } => {
            assert_eq!(limit_bytes, 32 << 20);
            assert_eq!(
                PluginError::MemoryLimit {
                    limit_bytes,
                    wanted_bytes
                }
                .kind(),
                "memory_limit"
            );
            assert!(wanted_bytes > limit_bytes);
        }
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
    assert_healthy_plugin_still_works();
}

#[test]
fn deep_recursion_traps_with_stack_exhaustion() {
    let err = hostile_with("recurse", Duration::from_secs(10), 32 << 20)
        .route(&samples::route_input())
        .unwrap_err();
    // Rust keeps its stack in linear memory: overflowing it is an
    // out-of-bounds access before wasm's own call stack runs out.
    let stack = |m: &str| {
        m.contains("call stack exhausted") || m.contains("a stack overflow in the plugin")
    };
    assert!(
        matches!(&err, PluginError::Trap { message } if stack(message)),
        "{err:?}"
    );
    assert_healthy_plugin_still_works();
}

#[test]
fn panic_traps_and_the_panic_message_reaches_the_error_and_the_log() {
    let plugin = hostile_with("panic", Duration::from_secs(10), 32 << 20);
    let err = plugin.route(&samples::route_input()).unwrap_err();
    assert!(
        matches!(&err, PluginError::Trap { message } if message.contains("hostile plugin panics on purpose")),
        "{err:?}"
    );
    let log = plugin.log().lines();
    assert!(
        log.iter()
            .any(|l| l.source == LogSource::Stderr && l.message.contains("panics on purpose")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.source == LogSource::Host && l.message.starts_with("plugin trapped")),
        "{log:?}"
    );
    assert_healthy_plugin_still_works();
}

#[test]
fn huge_output_is_refused_as_malformed() {
    // Time enough to build a million strings: the answer itself is the problem.
    let err = hostile_with("huge", Duration::from_secs(10), 128 << 20)
        .route(&samples::route_input())
        .unwrap_err();
    assert_eq!(
        err,
        PluginError::BadOutput {
            reason: "1000000 relay ids, but only 2 relays were offered".into()
        }
    );
    assert_healthy_plugin_still_works();
}

#[test]
fn chatty_stderr_is_capped_and_the_call_still_answers() {
    let plugin = hostile_with("stderr", Duration::from_secs(10), 32 << 20);
    let decision = plugin.route(&samples::route_input()).unwrap();
    assert_eq!(decision, RouteDecision::Relays(vec!["mx-a".into()]));
    let log = plugin.log().lines();
    let kept: usize = log
        .iter()
        .filter(|l| l.source == LogSource::Stderr)
        .map(|l| l.message.len())
        .sum();
    assert!(kept <= 16 * 1024, "kept {kept} bytes");
    assert!(
        log.iter()
            .any(|l| l.message.contains("more bytes of stderr were dropped")),
        "{:?}",
        log.last()
    );
}

#[test]
fn the_sandbox_has_no_files_environment_or_clock() {
    let decision = hostile_with("probe", Duration::from_secs(10), 32 << 20)
        .route(&samples::route_input())
        .unwrap();
    let RouteDecision::Defer(d) = decision else {
        panic!("{decision:?}")
    };
    assert_eq!(d.reason, "file=denied dir=denied env=denied clock=denied");
}

#[test]
fn wrong_world_is_refused_naming_the_missing_export() {
    let rater = builtin::default_for(Stage::Bill);
    let err = runtime()
        .load(
            Stage::Route,
            "rater-as-router",
            rater.wasm,
            PluginSpec::for_stage(Stage::Route),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::WrongWorld {
                stage: Stage::Route,
                missing: "sluice:plugin/router@0.1.0",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the component does not serve stage route: it does not export `sluice:plugin/router@0.1.0` (it exports: sluice:plugin/rater@0.1.0)"
    );
    assert_healthy_plugin_still_works();
}

#[test]
fn garbage_bytes_are_not_a_component() {
    let err = runtime()
        .load(
            Stage::Route,
            "garbage",
            b"\0asm but not really",
            PluginSpec::for_stage(Stage::Route),
        )
        .unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err:?}");
}

#[test]
fn a_failed_reused_instance_is_replaced() {
    let mut spec = PluginSpec::for_stage(Stage::Route);
    spec.limits.reuse_instances = true;
    // A panic traps at once; the long deadline keeps a loaded machine from turning
    // the first call's instantiation into a timeout instead.
    spec.limits.timeout = Duration::from_secs(10);
    spec.config = vec![("mode".into(), "panic".into())];
    let plugin = runtime()
        .load(Stage::Route, "hostile-reuse", test_guests::HOSTILE, spec)
        .unwrap();
    for _ in 0..3 {
        let answer = plugin.route(&samples::route_input());
        assert!(
            matches!(answer, Err(PluginError::Trap { .. })),
            "{answer:?}"
        );
    }
}

#[test]
fn many_threads_misbehaving_at_once_do_not_stop_the_host() {
    let handles: Vec<_> = ["loop", "bomb", "panic", "recurse"]
        .into_iter()
        .map(|mode| {
            // Only the loop should meet its deadline; the others get time to
            // fail their own way even on a loaded machine.
            let timeout = if mode == "loop" {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(10)
            };
            std::thread::spawn(move || {
                hostile_with(mode, timeout, 32 << 20)
                    .route(&samples::route_input())
                    .unwrap_err()
                    .kind()
            })
        })
        .collect();
    let kinds: Vec<&str> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(kinds, ["timeout", "memory_limit", "trap", "trap"]);
    assert_healthy_plugin_still_works();
}
