//! Every default plugin, built as a component and run through the host.

use sluice::builtin;
use sluice::runtime::{Plugin, PluginError, PluginSpec};
use sluice::stage::*;
use sluice_tests::runtime;

fn load(stage: Stage) -> Plugin {
    let b = builtin::default_for(stage);
    runtime()
        .load(stage, b.name, b.wasm, PluginSpec::for_stage(stage))
        .unwrap()
}

#[test]
fn ingest_allowlist_accepts_allowed_and_rejects_others() {
    let plugin = load(Stage::Ingest);
    let mut s = samples::submission();
    assert!(matches!(
        plugin.ingest(&s).unwrap(),
        IngestDecision::Accept(_)
    ));
    s.sender = "ceo@elsewhere.example".into();
    let IngestDecision::Reject(r) = plugin.ingest(&s).unwrap() else {
        panic!("accepted")
    };
    assert_eq!(r.code, 550);
    assert!(r.reason.contains("\"elsewhere.example\""), "{}", r.reason);
}

#[test]
fn router_weighted_spreads_and_avoids_down_relays() {
    let plugin = load(Stage::Route);
    let mut input = samples::route_input();
    let mut firsts = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..300 {
        input.message.id = format!("m{i}");
        let RouteDecision::Relays(order) = plugin.route(&input).unwrap() else {
            panic!()
        };
        *firsts.entry(order[0].clone()).or_default() += 1;
    }
    assert!(
        firsts["mx-a"] > firsts["mx-b"] && firsts["mx-b"] > 30,
        "{firsts:?}"
    );
    input.relays[0].up = false;
    assert_eq!(
        plugin.route(&input).unwrap(),
        RouteDecision::Relays(vec!["mx-b".into()])
    );
}

#[test]
fn send_backoff_reads_the_settings_the_host_passes() {
    let b = builtin::default_for(Stage::Send);
    let mut spec = PluginSpec::for_stage(Stage::Send);
    spec.config = vec![("base_secs".into(), "30".into())];
    let plugin = runtime().load(Stage::Send, b.name, b.wasm, spec).unwrap();
    let mut a = samples::attempt();
    a.relays_left = 0;
    assert_eq!(
        plugin.send(&a).unwrap(),
        SendDecision::Retry(Retry {
            after_secs: 30,
            reason: "451 4.7.1 Greylisted, try again in 5 minutes".into()
        })
    );
    a.reply = Some(SmtpReply {
        code: 250,
        enhanced: None,
        text: "ok".into(),
    });
    assert_eq!(plugin.send(&a).unwrap(), SendDecision::Delivered);
}

#[test]
fn bounce_dsn_reads_the_sample_dsn() {
    let out = load(Stage::Bounce)
        .bounce(&samples::bounce_input())
        .unwrap();
    assert_eq!(out.results.len(), 1);
    let r = &out.results[0];
    assert_eq!(
        (r.recipient.as_str(), r.status.as_str(), r.reason, r.hard),
        ("ann@example.org", "5.1.1", Reason::Userunknown, true)
    );
    assert_eq!(r.verp_token.as_deref(), Some("t0k3n"));
}

#[test]
fn rater_tiered_crosses_the_free_tier_exactly() {
    let out = load(Stage::Bill).bill(&samples::bill_input()).unwrap();
    assert_eq!(out.currency, "EUR");
    let messages: Vec<i64> = out
        .charges
        .iter()
        .filter(|c| c.service == "outbound-message")
        .map(|c| c.amount)
        .collect();
    // 999 already this period: the 1000th is free, then 0.0008 each.
    assert_eq!(messages, [0, 800, 800]);
    let traffic: Vec<i64> = out
        .charges
        .iter()
        .filter(|c| c.service == "outbound-traffic")
        .map(|c| c.amount)
        .collect();
    assert_eq!(traffic, [140, 140, 140]); // 14 KiB × 0.00001 = 0.00014
}

#[test]
fn rater_refusing_a_bad_tariff_is_bad_output_naming_the_problem() {
    let mut input = samples::bill_input();
    input.tariff = "id = \"x\"\ncurrency = \"EUR\"\n[[service]]\nname = \"m\"\nunit = \"parsec\"\ndirection = \"outbound\"\nprice = \"1\"\n".into();
    let err = load(Stage::Bill).bill(&input).unwrap_err();
    assert!(
        matches!(&err, PluginError::BadOutput { reason } if reason.contains("parsec") && reason.contains("line 5")),
        "{err:?}"
    );
}

#[test]
fn calling_a_plugin_for_another_stage_is_an_error_not_a_crash() {
    let err = load(Stage::Route).send(&samples::attempt()).unwrap_err();
    assert!(matches!(err, PluginError::Unavailable(_)), "{err:?}");
}
