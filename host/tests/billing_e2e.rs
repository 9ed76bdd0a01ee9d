//! Live billing end to end: the real `sluice serve` with real `smtp-sink` relays on
//! loopback — delivered recipients charged exactly once, visible in usage and the
//! invoice (JSON and CSV), prepaid holds released by a credit, tenants kept apart.
//! Every wait is a bounded poll that reports what it saw.

mod support;

use serde_json::{Value, json};
use std::collections::HashSet;
use support::*;

/// A flat tariff: `price` per delivered message, and a bounce fee that no test triggers.
fn flat_tariff(price: &str) -> String {
    format!(
        "id = \"e2e\"\ncurrency = \"EUR\"\nminor_units = 2\n\n[[service]]\nname = \"outbound-message\"\nunit = \"message\"\ndirection = \"outbound\"\nprice = \"{price}\"\n\n[[service]]\nname = \"bounce-fee\"\nunit = \"message\"\ndirection = \"outbound\"\noutcomes = [\"bounced\"]\nprice = \"0.05\"\n"
    )
}

fn get(s: &Sluice, key: &str, path: &str) -> Response {
    s.request("GET", path, Some(key), None, b"")
}

fn usage(s: &Sluice, key: &str) -> Vec<Value> {
    let r = get(s, key, "/v1/usage?limit=1000");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["charges"].as_array().cloned().unwrap_or_default()
}

/// Polls `/v1/usage` until it lists `n` charges.
fn wait_charges(s: &Sluice, key: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} charges in /v1/usage"), || {
        let charges = usage(s, key);
        if charges.len() == n {
            Ok(charges)
        } else {
            Err(format!("{charges:#?}\n{}", s.log()))
        }
    })
}

fn set_billing(s: &Sluice, tenant: &str, mode: &str, tariff: &str) {
    let r = s.admin(
        "PUT",
        &format!("/admin/v1/tenants/{tenant}/billing"),
        Some(json!({"mode": mode, "tariff": tariff})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn field_of(r: &Response) -> Option<String> {
    r.json()["error"]["field"].as_str().map(str::to_owned)
}

/// A pipeline with relay `a` (a started sink) and tenant `t` (`t.example`), started.
fn one_relay_and_tenant_t() -> (Setup, Sink, Sluice) {
    let port = free_port();
    let tables = format!(
        "{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["t.example"])
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    (setup, sink, s)
}

/// Polls `/admin/v1/billing/unrated` until its first entry has failed a rating; it.
fn wait_unrated(s: &Sluice) -> Value {
    wait_for(
        "a usage event in /admin/v1/billing/unrated with an error",
        || {
            let r = s.admin("GET", "/admin/v1/billing/unrated", None);
            let list = r.json()["unrated"].as_array().cloned().unwrap_or_default();
            match list.first() {
                Some(u) if u["attempts"].as_u64() >= Some(1) => Ok(u.clone()),
                _ => Err(format!("{}\n{}", r.body, s.log())),
            }
        },
    )
}

fn this_period(charges: &[Value]) -> String {
    charges[0]["period"].as_str().unwrap().to_owned()
}

#[test]
fn delivered_recipients_are_charged_once_and_appear_in_usage_and_the_invoice() {
    let port = free_port();
    let tables = format!(
        "{}{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("alpha", &["alpha.example"]),
        tenant_table("beta", &["beta.example"])
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let (alpha, beta) = (s.new_key("alpha"), s.new_key("beta"));
    set_billing(&s, "alpha", "postpaid", &flat_tariff("0.125"));
    // The documented example tariff is one the rater takes; a broken one is refused.
    set_billing(
        &s,
        "beta",
        "postpaid",
        include_str!("../../pipelines/billing/live-tariff.example.toml"),
    );
    let r = s.admin(
        "PUT",
        "/admin/v1/tenants/beta/billing",
        Some(json!({"mode": "postpaid", "tariff": "id = \"x\"\ncurrency = \"EUR\"\ncolour = 1\n"})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(field_of(&r).as_deref(), Some("tariff"), "{}", r.body);

    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(s.submit(
            &alpha,
            &simple("a@alpha.example", "x@example.net", &format!("bill {i}")),
        ));
    }
    ids.push(s.submit(
        &alpha,
        &json!({"from": "a@alpha.example", "to": ["y@example.net", "z@example.org"], "subject": "bill 2", "text": "two recipients"}),
    ));
    for id in &ids {
        s.wait_state(&alpha, id, "delivered");
    }
    // The two-recipient message goes out once per domain.
    assert_eq!(sink.messages().len(), 4);

    // Four delivered recipients, one outbound-message charge each.
    let charges = wait_charges(&s, &alpha, 4);
    let keys: HashSet<(String, String, String)> = charges
        .iter()
        .map(|c| {
            assert_eq!(c["service"], "outbound-message", "{c}");
            assert_eq!(
                (c["amount_micros"].as_i64(), c["currency"].as_str()),
                (Some(125_000), Some("EUR"))
            );
            assert_eq!(c["outcome"], "delivered");
            assert_eq!(c["relay"], "a");
            (
                c["message_id"].as_str().unwrap().to_owned(),
                c["recipient"].as_str().unwrap().to_owned(),
                c["service"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 4, "{charges:#?}");
    let period = this_period(&charges);

    // Another tenant sees none of it: no charges, an empty invoice.
    assert!(usage(&s, &beta).is_empty());
    let r = get(&s, &beta, &format!("/v1/invoices/{period}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["lines"], json!([]), "{}", r.body);
    assert!(!r.body.contains("alpha"), "{}", r.body);

    // The invoice, JSON: one line per service, rounded per line, the rule stated.
    let r = get(&s, &alpha, &format!("/v1/invoices/{period}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let inv = r.json();
    assert_eq!(inv["currency"], "EUR");
    assert_eq!(inv["status"], "open");
    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1, "{inv:#}");
    assert_eq!(lines[0]["service"], "outbound-message");
    assert_eq!(lines[0]["quantity"], 4);
    assert_eq!(lines[0]["unit_price"], "0.125");
    assert_eq!(lines[0]["amount_micros"], 500_000);
    assert_eq!(lines[0]["amount"], "0.50");
    assert_eq!(inv["total"], "0.50");
    assert!(
        inv["rounding"]
            .as_str()
            .unwrap()
            .contains("half away from zero"),
        "{inv:#}"
    );

    // The same invoice as CSV.
    let auth = format!("Bearer {alpha}");
    let csv = http(
        s.addr,
        "GET",
        &format!("/v1/invoices/{period}"),
        &[("Authorization", &auth), ("Accept", "text/csv")],
        b"",
    )
    .unwrap();
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(
        csv.body,
        "service,quantity,unit_price,tiers,amount,currency\n\
         outbound-message,4,0.125,4x0.125,0.50,EUR\n\
         total,,,,0.50,EUR\n"
    );

    // A restart (the rating task starts over on the same store) charges nothing again.
    drop(s);
    let s = setup.start();
    let again = s.submit(
        &alpha,
        &simple("a@alpha.example", "w@example.net", "after restart"),
    );
    s.wait_state(&alpha, &again, "delivered");
    let charges = wait_charges(&s, &alpha, 5);
    let distinct: HashSet<_> = charges
        .iter()
        .map(|c| (c["message_id"].clone(), c["recipient"].clone()))
        .collect();
    assert_eq!(distinct.len(), 5);
    let r = s.admin("GET", "/admin/v1/billing/unrated", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["unrated"], json!([]), "{}", r.body);

    // Pages: two of two and one of one, by the cursor.
    let page = get(&s, &alpha, "/v1/usage?limit=2").json();
    assert_eq!(page["charges"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_i64().unwrap();
    let rest = get(&s, &alpha, &format!("/v1/usage?limit=10&after={after}")).json();
    assert_eq!(rest["charges"].as_array().unwrap().len(), 3);
    assert_eq!(rest["next_after"], Value::Null);

    // Bad query values: the API's JSON 422 naming the field.
    for (path, field) in [
        ("/v1/usage?from=yesterday", "from"),
        ("/v1/usage?from=2026-01-02&to=2026-01-01", "to"),
        ("/v1/usage?limit=0", "limit"),
        ("/v1/usage?after=-1", "after"),
        ("/v1/usage?colour=red", "colour"),
        ("/v1/invoices/2026-13", "period"),
    ] {
        let r = get(&s, &alpha, path);
        assert_eq!(r.status, 422, "{path}: {}", r.body);
        assert_eq!(field_of(&r).as_deref(), Some(field), "{path}: {}", r.body);
    }
    // A date window that holds everything, and one that holds nothing.
    let r = get(&s, &alpha, "/v1/usage?from=2000-01-01&to=2999-01-01");
    assert_eq!(r.json()["charges"].as_array().unwrap().len(), 5);
    let r = get(
        &s,
        &alpha,
        "/v1/usage?from=2000-01-01&to=2000-02-01T00:00:00Z",
    );
    assert_eq!(r.json()["charges"], json!([]));
}

#[test]
fn a_prepaid_tenant_without_credit_is_held_then_credited_delivered_and_charged() {
    let port = free_port();
    let tables = format!(
        "{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("pre", &["pre.example"])
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("pre");
    set_billing(&s, "pre", "prepaid", &flat_tariff("0.50"));

    let id = s.submit(&key, &simple("a@pre.example", "x@example.net", "prepaid"));
    let m = s.wait_state(&key, &id, "held");
    let held = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "held")
        .cloned()
        .unwrap();
    let reason = held["detail"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("prepaid balance short") && reason.contains("0.500000"),
        "{reason}"
    );
    assert!(sink.messages().is_empty());

    // Bad credits are refused naming the field.
    for (body, field) in [
        (json!({"amount": "12,50", "reference": "p"}), "amount"),
        (json!({"amount": "-1", "reference": "p"}), "amount"),
        (json!({"amount": "1.00", "reference": " "}), "reference"),
        (
            json!({"amount": "1.00", "currency": "USD", "reference": "p"}),
            "currency",
        ),
    ] {
        let r = s.admin("POST", "/admin/v1/tenants/pre/credits", Some(body.clone()));
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(field_of(&r).as_deref(), Some(field), "{body}: {}", r.body);
    }
    let r = s.admin(
        "POST",
        "/admin/v1/tenants/nobody/credits",
        Some(json!({"amount": "1", "reference": "p"})),
    );
    assert_eq!(r.status, 404, "{}", r.body);

    // Not enough: released, estimated again, held again.
    let r = s.admin(
        "POST",
        "/admin/v1/tenants/pre/credits",
        Some(json!({"amount": "0.40", "reference": "pay-1"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["released"], 1);
    s.wait_message(&key, &id, "held a second time", |m| {
        all_in_state(m, "held") && event_kinds(m).iter().filter(|k| *k == "held").count() == 2
    });
    assert!(sink.messages().is_empty());

    // Enough: delivered and charged once; the reservation gives way to the charge.
    let r = s.admin(
        "POST",
        "/admin/v1/tenants/pre/credits",
        Some(json!({"amount": "1.00", "currency": "EUR", "reference": "pay-2"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let m = s.wait_state(&key, &id, "delivered");
    assert!(event_kinds(&m).contains(&"released".to_string()));
    let charges = wait_charges(&s, &key, 1);
    assert_eq!(charges[0]["amount"], "0.500000");
    let b = wait_for("the reservation to be released", || {
        let b = get(&s, &key, "/v1/balance").json();
        if b["reserved"] == "0.000000" {
            Ok(b)
        } else {
            Err(b.to_string())
        }
    });
    assert_eq!(b["mode"], "prepaid");
    assert_eq!(b["credits"], "1.400000");
    assert_eq!(b["charges"], "0.500000");
    assert_eq!(b["balance"], "0.900000");
    assert_eq!(sink.messages().len(), 1);

    // The same reference again credits nothing.
    let r = s.admin(
        "POST",
        "/admin/v1/tenants/pre/credits",
        Some(json!({"amount": "1.00", "reference": "pay-2"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["credited"], false);
    assert_eq!(r.json()["credits"], "1.400000");
}

#[test]
fn a_failing_rater_leaves_usage_unrated_and_listed_until_it_rates_again() {
    let (_setup, _sink, s) = one_relay_and_tenant_t();
    let key = s.new_key("t");
    // Valid on an empty batch, but every real event overflows an amount: the rater
    // refuses the batch (as a trap or a timeout would fail it).
    let overflowing = "id = \"o\"\ncurrency = \"EUR\"\n[[service]]\nname = \"outbound-traffic\"\nunit = \"byte\"\ndirection = \"outbound\"\nprice = \"9000000000000\"\n";
    set_billing(&s, "t", "postpaid", overflowing);
    let id = s.submit(&key, &simple("a@t.example", "x@example.net", "unrated"));
    s.wait_state(&key, &id, "delivered");

    let listed = wait_unrated(&s);
    assert_eq!(listed["message_id"], id.as_str());
    assert_eq!(listed["outcome"], "delivered");
    assert!(
        listed["last_error"].as_str().unwrap().contains("overflows"),
        "{listed}"
    );
    assert!(
        usage(&s, &key).is_empty(),
        "nothing is charged from a failed rating"
    );

    // A working tariff: the retry (after its backoff) rates it, once.
    set_billing(&s, "t", "postpaid", &flat_tariff("0.01"));
    let charges = wait_charges(&s, &key, 1);
    assert_eq!(charges[0]["message_id"], id.as_str());
    assert_eq!(charges[0]["amount_micros"], 10_000);
    let r = s.admin("GET", "/admin/v1/billing/unrated", None);
    assert_eq!(r.json()["unrated"], json!([]), "{}", r.body);
}

#[test]
fn a_tenant_rater_that_fails_closed_leaves_usage_unrated_instead_of_the_platform_rating_it() {
    let (_setup, _sink, s) = one_relay_and_tenant_t();
    let key = s.new_key("t");
    // The platform's rater could rate this tariff; t's own rater traps and fails closed.
    set_billing(&s, "t", "postpaid", &flat_tariff("0.01"));
    let upload = |query: &str| {
        let r = s.admin_upload(
            &format!("/admin/v1/tenants/t/plugins/bill?skip_sample=true{query}"),
            sluice::builtin::test_guests::TENANT_BILL,
        );
        assert_eq!(r.status, 201, "{}", r.body);
    };
    upload("&config=mode=panic&on_failure=defer");
    let id = s.submit(&key, &simple("a@t.example", "x@example.net", "fail closed"));
    s.wait_state(&key, &id, "delivered");
    let listed = wait_unrated(&s);
    let why = listed["last_error"].as_str().unwrap();
    assert!(
        why.contains("t/bill@v1") && why.contains("trap") && why.contains("fail closed"),
        "{listed}"
    );
    assert!(
        usage(&s, &key).is_empty(),
        "the platform's rater did not step in"
    );

    // A working version of t's rater rates it on the next retry, with t's own price.
    upload("&config=price=0.0123");
    let charges = wait_for_within(
        std::time::Duration::from_secs(90),
        "t's rater's charge",
        || {
            let c = usage(&s, &key);
            if c.len() == 1 {
                Ok(c)
            } else {
                Err(format!("{c:#?}"))
            }
        },
    );
    assert_eq!(charges[0]["service"], "tenant-flat", "{charges:#?}");
    assert_eq!(charges[0]["amount_micros"], 12_300, "{charges:#?}");
}

/// qmail-send lines (plain epoch stamps) of one message `m` from `from` to `to`,
/// delivered; `upto` cuts it after that many lines (a message still in the queue).
fn qmail_message(m: u64, from: &str, to: &str, upto: usize) -> String {
    let t = 1_796_000_000 + m * 10;
    let lines = [
        format!("{t}.000001 new msg {m}"),
        format!("{t}.000002 info msg {m}: bytes 2048 from <{from}> qp 1 uid 2"),
        format!("{t}.000003 starting delivery {m}: msg {m} to remote {to}"),
        format!("{}.000004 delivery {m}: success: 250_ok", t + 1),
        format!("{}.000005 end msg {m}", t + 1),
    ];
    lines[..upto].iter().map(|l| format!("{l}\n")).collect()
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn a_followed_qmail_log_is_billed_once_across_restarts_and_a_crash() {
    let setup_dir = tempfile::tempdir().unwrap();
    let log = setup_dir.path().join("qmail-current");
    let logins = setup_dir.path().join("logins.toml");
    std::fs::write(
        &logins,
        "[tenant.alpha]\nlogins = [\"alpha.example\"]\n[tenant.beta]\nlogins = [\"boss@beta.example\"]\n",
    )
    .unwrap();
    let tables = format!(
        "{}{}[[log_source]]\nid = \"mx1\"\npath = {:?}\nformat = \"qmail\"\nlogins = {:?}\npoll_millis = 100\n",
        tenant_table("alpha", &["alpha.example"]),
        tenant_table("beta", &["beta.example"]),
        log.display().to_string(),
        logins.display().to_string(),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    // Two sent by alpha, one received by alpha, one sent by beta's address
    // login, one nobody's, and one still queued (delivered after the restart).
    let mut text = String::new();
    text += &qmail_message(1, "a@alpha.example", "x@example.net", 5);
    text += &qmail_message(2, "b@alpha.example", "y@example.net", 5);
    text += &qmail_message(3, "someone@example.org", "inbox@alpha.example", 5);
    text += &qmail_message(4, "boss@beta.example", "z@example.net", 5);
    text += &qmail_message(5, "other@beta.example", "z@example.net", 5);
    text += &qmail_message(6, "c@alpha.example", "w@example.net", 3);

    // The log does not exist yet when Sluice starts: it is picked up once written
    // (after the tariffs are set, so every charge is at the test's prices).
    let mut s = setup.start();
    let (alpha, beta) = (s.new_key("alpha"), s.new_key("beta"));
    let tariff = "id = \"logs\"\ncurrency = \"EUR\"\nminor_units = 2\n\n[[service]]\nname = \"outbound-message\"\nunit = \"message\"\ndirection = \"outbound\"\nprice = \"0.01\"\n\n[[service]]\nname = \"inbound-message\"\nunit = \"message\"\ndirection = \"inbound\"\nprice = \"0.001\"\n";
    set_billing(&s, "alpha", "postpaid", tariff);
    set_billing(&s, "beta", "postpaid", tariff);
    append(&log, &text);
    let charges = wait_charges(&s, &alpha, 3);
    let services: Vec<(&str, &str)> = charges
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        services
            .iter()
            .filter(|s| **s == ("outbound-message", "delivered"))
            .count(),
        2,
        "{charges:#?}"
    );
    assert!(
        services.contains(&("inbound-message", "received")),
        "{charges:#?}"
    );
    assert!(
        charges
            .iter()
            .all(|c| c["message_id"].as_str().unwrap().starts_with("log:mx1:")),
        "{charges:#?}"
    );
    let beta_charges = wait_charges(&s, &beta, 1);
    assert_eq!(beta_charges[0]["recipient"], "z@example.net");

    // A clean stop, then message 6 is delivered while Sluice is down.
    s.guard.signal("TERM");
    assert!(s.guard.wait_exit(WAIT).success(), "{}", s.log());
    let rest: String = qmail_message(6, "c@alpha.example", "w@example.net", 5)
        .lines()
        .skip(3)
        .map(|l| format!("{l}\n"))
        .collect();
    append(&log, &rest);
    let mut s = setup.start();
    let charges = wait_charges(&s, &alpha, 4);
    assert!(
        charges.iter().any(|c| c["recipient"] == "w@example.net"),
        "the message half-joined at the stop is billed after the restart: {charges:#?}"
    );

    // A crash (SIGKILL) and a rotation while down: the old file's rest is found
    // beside the log by its inode, the new file is read from its start.
    s.guard.kill();
    append(
        &log,
        &qmail_message(7, "d@alpha.example", "v@example.net", 5),
    );
    std::fs::rename(&log, setup_dir.path().join("qmail-current.1")).unwrap();
    append(
        &log,
        &qmail_message(8, "e@alpha.example", "u@example.net", 5),
    );
    let s = setup.start();
    let charges = wait_charges(&s, &alpha, 6);
    let ids: HashSet<&str> = charges
        .iter()
        .map(|c| c["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "no transfer billed twice: {charges:#?}");
    assert_eq!(usage(&s, &beta).len(), 1);
}
