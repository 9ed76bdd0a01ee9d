//! Per-call cost of the route and bill stages: a fresh instance per call
//! (the default), a reused instance, and the same plugin logic compiled as
//! native Rust, side by side. A trivial router (the `hostile` test guest in
//! its harmless mode) gives the floor: a bare pooled instance, fresh or
//! reused, with the same interface and input. Below both, the `floor`
//! group calls a component whose one export takes nothing and does nothing
//! (`tests/guests/nop`) under the same engine settings: a bare Wasmtime
//! call, the reference the targets are set against.
//!
//! `cargo bench -p sluice --bench plugins`

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::builtin::{self, test_guests};
use sluice::runtime::{self, Plugin, PluginSpec, Runtime, RuntimeConfig};
use sluice::stage::{Stage, samples};
use sluice_sdk::bill::Rater as _;
use sluice_sdk::route::Router as _;
use std::hint::black_box;
use std::time::Duration;

fn load(rt: &Runtime, stage: Stage, name: &str, wasm: &[u8], reuse: bool) -> Plugin {
    let mut spec = PluginSpec::for_stage(stage);
    spec.limits.reuse_instances = reuse;
    // Hundreds of thousands of calls on a shared machine: one stalled by the
    // scheduler past the stage's 50 ms would abort the run. The deadline is
    // set per call either way, so its length does not change the cost.
    spec.limits.timeout = Duration::from_secs(5);
    rt.load(stage, name, wasm, spec).unwrap()
}

/// The host's route sample in the SDK's types, for the native run.
fn native_route_input() -> sluice_sdk::route::RouteInput {
    let s = samples::route_input();
    let relays = s
        .relays
        .iter()
        .map(|r| {
            let mut relay = sluice_sdk::testing::relay(&r.id);
            relay.weight = r.weight;
            relay.in_flight = r.in_flight;
            relay.connection_limit = r.connection_limit;
            relay.tags = r.tags.clone();
            relay.windows = r
                .windows
                .iter()
                .map(|w| sluice_sdk::testing::window(w.window_secs, w.sent, w.delivered))
                .collect();
            relay
        })
        .collect();
    let mut input = sluice_sdk::testing::route_input(relays);
    input.message.id = s.message.id;
    input
}

fn native_bill_input() -> sluice_sdk::bill::BillInput {
    let s = samples::bill_input();
    let events = s
        .events
        .iter()
        .map(|e| {
            sluice_sdk::testing::usage_event(&e.key, sluice_sdk::bill::Outcome::Delivered, e.size)
        })
        .collect();
    let mut input = sluice_sdk::testing::bill_input(&s.tariff, events);
    input.period_to_date = vec![sluice_sdk::bill::Counter {
        service: "outbound-message".into(),
        quantity: 999,
    }];
    input
}

/// A bare Wasmtime call: the `nop` guest in a fresh pooled instance per
/// call, and in one reused instance, on an engine with the runtime's settings.
fn floor(c: &mut Criterion) {
    use wasmtime::component::{Component, Linker, TypedFunc};
    use wasmtime::{Engine, Store};

    let engine = Engine::new(&runtime::engine_config(&RuntimeConfig::default())).unwrap();
    let component = Component::new(&engine, test_guests::NOP).unwrap();
    let mut linker: Linker<()> = Linker::new(&engine);
    // Whatever the Rust standard library imports is never called by `nop`.
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let call_once = |store: &mut Store<()>| {
        store.set_epoch_deadline(1_000);
        let instance = pre.instantiate(&mut *store).unwrap();
        let nop: TypedFunc<(), ()> = instance.get_typed_func(&mut *store, "nop").unwrap();
        nop.call(&mut *store, ()).unwrap();
        nop
    };

    let mut g = c.benchmark_group("floor");
    g.bench_function("bare call, fresh instance", |b| {
        b.iter(|| call_once(&mut Store::new(&engine, ())))
    });
    let mut store = Store::new(&engine, ());
    let nop = call_once(&mut store);
    g.bench_function("bare call, reused instance", |b| {
        b.iter(|| {
            store.set_epoch_deadline(1_000);
            nop.call(&mut store, ()).unwrap()
        })
    });
    g.finish();
}

fn route(c: &mut Criterion) {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let router = builtin::default_for(Stage::Route);
    let fresh = load(&rt, Stage::Route, router.name, router.wasm, false);
    let reused = load(&rt, Stage::Route, router.name, router.wasm, true);
    let bare = load(&rt, Stage::Route, "trivial", test_guests::HOSTILE, false);
    let bare_reused = load(&rt, Stage::Route, "trivial", test_guests::HOSTILE, true);
    let input = samples::route_input();
    let native = native_route_input();

    let mut g = c.benchmark_group("route");
    g.bench_function("wasm fresh instance", |b| {
        b.iter(|| fresh.route(black_box(&input)).unwrap())
    });
    g.bench_function("wasm reused instance", |b| {
        b.iter(|| reused.route(black_box(&input)).unwrap())
    });
    g.bench_function("wasm trivial router, fresh instance", |b| {
        b.iter(|| bare.route(black_box(&input)).unwrap())
    });
    g.bench_function("wasm trivial router, reused instance", |b| {
        b.iter(|| bare_reused.route(black_box(&input)).unwrap())
    });
    g.bench_function("native rust", |b| {
        b.iter(|| router_weighted::WeightedRouter::route(black_box(native.clone())))
    });
    g.finish();
}

fn bill(c: &mut Criterion) {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let rater = builtin::default_for(Stage::Bill);
    let fresh = load(&rt, Stage::Bill, rater.name, rater.wasm, false);
    let reused = load(&rt, Stage::Bill, rater.name, rater.wasm, true);
    let input = samples::bill_input();
    let native = native_bill_input();

    let mut g = c.benchmark_group("bill (3 events)");
    g.bench_function("wasm fresh instance", |b| {
        b.iter(|| fresh.bill(black_box(&input)).unwrap())
    });
    g.bench_function("wasm reused instance", |b| {
        b.iter(|| reused.bill(black_box(&input)).unwrap())
    });
    g.bench_function("native rust", |b| {
        b.iter(|| rater_tiered::TieredRater::rate(black_box(native.clone())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, floor, route, bill);
criterion_main!(benches);
