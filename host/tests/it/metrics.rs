//! `GET /metrics` and the log through the real binary (issue 22): counters move by what
//! went through `smtp-sink`, the text passes `promtool check metrics`, who may scrape,
//! label sets stay bounded however many tenants send, and `--log-format json` gives one
//! parsable line per accepted message and per delivered recipient, without secrets.

use crate::support::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// Relay `a` on `port`, tenants `ids`, and `extra` pipeline lines (a `[metrics]` table).
fn pipeline(port: u16, ids: &[&str], extra: &str) -> Setup {
    let mut tables = relay_table("a", &format!("smtp://127.0.0.1:{port}"), "");
    for id in ids {
        tables.push_str(&tenant_table(id, &["*"]));
    }
    tables.push_str(extra);
    Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    })
}

/// The samples of a scrape: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn scrape(s: &Sluice) -> String {
    let r = s.request("GET", "/metrics", Some(s.admin_token()), None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    r.body
}

fn value(text: &str, series: &str) -> f64 {
    samples(text).get(series).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`: no error and no lint problem.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; tests/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn counters_move_by_the_mail_sent_and_the_text_passes_promtool() {
    let port = free_port();
    let setup = pipeline(port, &["t"], "");
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");

    // Without the admin token (and no network allowed in `[metrics]`): refused.
    assert_eq!(s.request("GET", "/metrics", None, None, b"").status, 401);
    assert_eq!(
        s.request("GET", "/metrics", Some(&key), None, b"").status,
        401,
        "a tenant's key is not the admin token"
    );

    let before = scrape(&s);
    let delivered = r#"sluice_delivered_total{tenant="t",relay="a"}"#;
    let accepted = r#"sluice_accepted_messages_total{tenant="t"}"#;
    let recipients = r#"sluice_accepted_recipients_total{tenant="t"}"#;
    let posted = r#"sluice_http_requests_total{method="POST",route="/v1/messages",status="202"}"#;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut m = simple("a@example.com", "x@example.net", &format!("m{i}"));
        m["to"] = serde_json::json!(["x@example.net", "y@example.org"]);
        ids.push(s.submit(&key, &m));
    }
    for id in &ids {
        s.wait_state(&key, id, "delivered");
        // A path with an id is counted under its route template.
        s.message(&key, id);
    }
    // Unknown paths are one series, whatever they are.
    for p in ["/nope/1", "/nope/2", "/v1/nope"] {
        assert_eq!(s.request("GET", p, None, None, b"").status, 404);
    }
    // Outcomes are counted right after their commit: poll for it.
    let after = wait_for("the delivered counter to move by 6", || {
        let t = scrape(&s);
        let moved = value(&t, delivered) - value(&before, delivered);
        if moved == 6.0 {
            Ok(t)
        } else {
            Err(format!("moved by {moved}"))
        }
    });
    assert_eq!(value(&after, accepted) - value(&before, accepted), 3.0);
    assert_eq!(value(&after, recipients) - value(&before, recipients), 6.0);
    assert_eq!(value(&after, posted) - value(&before, posted), 3.0);
    let got = r#"sluice_http_requests_total{method="GET",route="/v1/messages/{id}",status="200"}"#;
    assert!(value(&after, got) >= 3.0, "{after}");
    assert!(
        value(
            &after,
            r#"sluice_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ) >= 3.0,
        "{after}"
    );
    for id in &ids {
        assert!(!after.contains(id.as_str()), "a raw path or id in {after}");
    }
    assert!(!after.contains("/nope"), "{after}");
    // The rest is there, with its labels.
    for needle in [
        r#"sluice_smtp_transaction_seconds_count{relay="a"}"#,
        r#"sluice_relay_up{relay="a"} 1"#,
        r#"sluice_plugin_call_seconds_count{stage="route",plugin="router-weighted"}"#,
        "sluice_store_commit_seconds_count",
        "sluice_store_commit_group_size_bucket",
        r#"sluice_queue_recipients{state="queued"}"#,
        "sluice_queue_oldest_age_seconds",
        "sluice_recipients_in_flight",
        "sluice_billing_unrated_events",
    ] {
        assert!(after.contains(needle), "no {needle} in\n{after}");
    }
    assert!(
        value(
            &after,
            r#"sluice_smtp_transaction_seconds_count{relay="a"}"#
        ) >= 3.0
    );
    // The store crate keeps no metrics: its group commits reach these through the
    // observer the server gives it (`Store::observe_commits`).
    assert!(
        value(&after, "sluice_store_commit_seconds_count") >= 1.0,
        "{after}"
    );
    assert!(
        value(&after, "sluice_store_commit_group_size_count") >= 1.0,
        "{after}"
    );
    promtool_check(&after);
    dashboards_name_only_these(&after);

    // Methods of a client's own making share `other` past a few.
    for i in 0..20 {
        s.request(&format!("X{i}"), "/v1/messages", None, None, b"");
    }
    let text = scrape(&s);
    let methods: std::collections::HashSet<String> = samples(&text)
        .keys()
        .filter(|k| k.starts_with("sluice_http_requests_total{"))
        .filter_map(|k| {
            k.split("method=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert!(methods.len() <= 9, "{methods:?}");
    assert!(methods.contains("other"), "{methods:?}");
}

/// Every metric served is in the README's list, and every metric the Grafana dashboard and
/// the alert rules in `pipelines/monitoring` name is in it too (a family with no series
/// yet, e.g. no expiry so far, is not in a scrape: the README is the list).
fn dashboards_name_only_these(scrape: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let listed =
        |name: &str| readme.contains(&format!("`{name}")) || readme.contains(&format!(" {name}"));
    for name in scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
    {
        assert!(listed(name), "README does not list {name}");
    }
    for file in ["grafana-dashboard.json", "sluice-alerts.yml"] {
        let text = std::fs::read_to_string(root.join("pipelines/monitoring").join(file))
            .expect("monitoring example");
        let mut rest = text.as_str();
        let mut named = 0;
        while let Some(at) = rest.find("sluice_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                listed(base),
                "{file} names {name}, which README does not list"
            );
            named += 1;
        }
        assert!(named > 5, "{file} names {named} metrics");
    }
}

#[test]
fn a_refused_recipient_counts_as_bounced_with_its_class() {
    let port = free_port();
    let setup = pipeline(port, &["t"], "");
    let _sink = Sink::start(setup.root(), port, &["-f", "rcpt"]);
    let s = setup.start();
    let key = s.new_key("t");
    let bounced = |t: &str| -> f64 {
        samples(t)
            .iter()
            .filter(|(k, _)| k.starts_with(r#"sluice_bounced_total{tenant="t",relay="a",class=""#))
            .map(|(_, v)| v)
            .sum()
    };
    let before = scrape(&s);
    let id = s.submit(
        &key,
        &simple("a@example.com", "nobody@example.net", "refused"),
    );
    s.wait_state(&key, &id, "failed");
    let after = wait_for("the bounce counted", || {
        let t = scrape(&s);
        let moved = bounced(&t) - bounced(&before);
        if moved == 1.0 {
            Ok(t)
        } else {
            Err(format!("moved by {moved}"))
        }
    });
    let delivered = r#"sluice_delivered_total{tenant="t",relay="a"}"#;
    assert_eq!(value(&after, delivered), 0.0, "{after}");
    promtool_check(&after);
}

#[test]
fn listed_networks_scrape_without_the_token_and_others_need_it() {
    let port = free_port();
    let open = pipeline(
        port,
        &["t"],
        "[metrics]\nallow_unauthenticated_from = [\"127.0.0.0/8\", \"::1\"]\n",
    );
    let s = open.start();
    let r = s.request("GET", "/metrics", None, None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(s);

    let elsewhere = pipeline(
        port,
        &["t"],
        "[metrics]\nallow_unauthenticated_from = [\"10.0.0.0/8\"]\n",
    );
    let s = elsewhere.start();
    assert_eq!(s.request("GET", "/metrics", None, None, b"").status, 401);
    assert_eq!(
        s.request(
            "GET",
            "/metrics",
            Some(&format!("{}x", s.admin_token())),
            None,
            b""
        )
        .status,
        401
    );
    assert_eq!(
        s.request("GET", "/metrics", Some(s.admin_token()), None, b"")
            .status,
        200
    );
}

#[test]
fn a_bad_network_is_refused_naming_the_key() {
    let setup = pipeline(
        free_port(),
        &["t"],
        "[metrics]\nallow_unauthenticated_from = [\"10.0.0.0/40\"]\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["pipeline", "check"])
        .arg(&setup.pipeline)
        .output()
        .expect("sluice pipeline check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("metrics.allow_unauthenticated_from") && err.contains("prefix"),
        "{err}"
    );
}

#[test]
fn many_tenants_share_one_other_series_past_the_bound() {
    let port = free_port();
    let tenants: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let ids: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let setup = pipeline(port, &ids, "[metrics]\nmax_tenants = 3\n");
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let mut sent = Vec::new();
    for t in &tenants {
        let key = s.new_key(t);
        let id = s.submit(&key, &simple("a@example.com", "x@example.net", t));
        sent.push((key, id));
    }
    for (key, id) in &sent {
        s.wait_state(key, id, "delivered");
    }
    let text = wait_for("every delivery counted", || {
        let t = scrape(&s);
        let n: f64 = samples(&t)
            .iter()
            .filter(|(k, _)| k.starts_with("sluice_delivered_total{"))
            .map(|(_, v)| v)
            .sum();
        if n == 8.0 {
            Ok(t)
        } else {
            Err(format!("{n} counted"))
        }
    });
    let series = |name: &str| -> Vec<(String, f64)> {
        samples(&text)
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .collect()
    };
    let accepted = series("sluice_accepted_messages_total");
    assert_eq!(accepted.len(), 4, "3 tenants and `other`: {accepted:?}");
    assert_eq!(
        value(&text, r#"sluice_accepted_messages_total{tenant="other"}"#),
        5.0,
        "{accepted:?}"
    );
    assert!(series("sluice_delivered_total").len() <= 4, "{text}");
    promtool_check(&text);
}

/// The JSON lines of a log (it also holds the plain lines `serve` prints on stdout).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn json_logs_have_a_line_per_accepted_message_and_per_delivery_and_no_secrets() {
    let port = free_port();
    let setup = pipeline(port, &["t"], "");
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start_with(&["--log-format", "json"], &[("SLUICE_LOG", "info")]);
    let key = s.new_key("t");
    let mut ids = Vec::new();
    for i in 0..2 {
        let mut m = simple("a@example.com", "x@example.net", &format!("m{i}"));
        m["text"] = serde_json::json!("the body says BODY-SECRET-7");
        ids.push(s.submit(&key, &m));
    }
    for id in &ids {
        s.wait_state(&key, id, "delivered");
    }
    let lines = wait_for("a delivered line per message", || {
        let all = std::fs::read_to_string(&s.log).map_err(|e| e.to_string())?;
        let lines = json_lines(&all);
        let n = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "delivered")
            .count();
        if n == ids.len() {
            Ok((all, lines))
        } else {
            Err(format!("{n} delivered lines"))
        }
    });
    let (raw, lines) = lines;
    for id in &ids {
        let accepted: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "accepted" && l["fields"]["message_id"] == **id)
            .collect();
        assert_eq!(accepted.len(), 1, "{raw}");
        assert_eq!(accepted[0]["level"], "INFO");
        assert_eq!(accepted[0]["fields"]["tenant"], "t");
        assert_eq!(accepted[0]["fields"]["domains"], "example.net");
        let delivered: Vec<&Value> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == "delivered" && l["fields"]["message_id"] == **id)
            .collect();
        assert_eq!(delivered.len(), 1, "{raw}");
        let d = &delivered[0]["fields"];
        assert_eq!(d["tenant"], "t", "{d}");
        assert_eq!(d["domain"], "example.net", "{d}");
        assert_eq!(d["relay"], "a", "{d}");
        assert_eq!(d["attempt"], 1, "{d}");
        assert!(
            d["reply"].as_str().is_some_and(|r| r.starts_with("250")),
            "{d}"
        );
        assert!(d["latency_ms"].is_u64(), "{d}");
    }
    // Never a key, the admin token, a full address or a body.
    for secret in [
        key.as_str(),
        s.admin_token(),
        "x@example.net",
        "BODY-SECRET-7",
    ] {
        assert!(!raw.contains(secret), "{secret:?} in the log:\n{raw}");
    }
}

#[test]
fn postgres_serves_the_queue_gauges_from_its_store() {
    let db = PgDb::new("sluice_metrics");
    let port = free_port();
    let setup = pipeline(port, &["t"], "");
    setup.use_store(&db.url());
    // No relay answers: the message waits, deferred, and its age shows.
    let s = setup.start();
    let key = s.new_key("t");
    s.submit(&key, &simple("a@example.com", "x@example.net", "waits"));
    let text = wait_for("the message counted as waiting", || {
        let t = scrape(&s);
        let waiting: f64 = ["queued", "delivering", "deferred"]
            .iter()
            .map(|st| value(&t, &format!("sluice_queue_recipients{{state=\"{st}\"}}")))
            .sum();
        if waiting == 1.0 {
            Ok(t)
        } else {
            Err(format!("{waiting} waiting"))
        }
    });
    assert!(
        samples(&text).contains_key("sluice_queue_oldest_age_seconds"),
        "{text}"
    );
    assert!(
        samples(&text).contains_key("sluice_billing_unrated_events"),
        "{text}"
    );
    promtool_check(&text);
}

#[test]
fn webhooks_lag_is_scraped_per_state() {
    let port = free_port();
    let setup = pipeline(
        port,
        &["t"],
        "[events]\npoll_ms = 50\n[webhooks]\nallow_private = true\npoll_ms = 50\n\
         first_retry_ms = 200\nmax_retry_secs = 1\n",
    );
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let age =
        |state: &str| format!("sluice_webhook_oldest_undelivered_age_seconds{{state=\"{state}\"}}");
    let events = |state: &str| format!("sluice_webhook_undelivered_events{{state=\"{state}\"}}");
    let text = scrape(&s);
    for state in ["active", "paused", "disabled"] {
        assert!(text.contains(&age(state)), "no {} in\n{text}", age(state));
        assert_eq!(value(&text, &events(state)), 0.0);
    }
    // A webhook whose receiver is never there (nothing listens on its port).
    let dead = free_port();
    let body = serde_json::json!({"url": format!("http://127.0.0.1:{dead}/hook"), "events": ["*"]});
    let r = s.request(
        "POST",
        "/v1/webhooks",
        Some(&key),
        Some("application/json"),
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let m = s.submit(&key, &simple("a@example.com", "x@example.net", "m"));
    s.wait_state(&key, &m, "delivered");
    let behind = |state: &'static str, others: [&'static str; 2]| {
        wait_for(&format!("the {state} webhook's lag"), || {
            let t = scrape(&s);
            let (n, a) = (value(&t, &events(state)), value(&t, &age(state)));
            let rest: f64 = others.iter().map(|o| value(&t, &events(o))).sum();
            // accepted, routed, attempted, delivered, …: at least three events.
            if n >= 3.0 && a > 0.0 && rest == 0.0 {
                Ok(t)
            } else {
                Err(format!("{state}: {n} events, {a} s; others {rest}"))
            }
        })
    };
    behind("active", ["paused", "disabled"]);
    let r = s.request(
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(&key),
        Some("application/json"),
        br#"{"state": "paused"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t = behind("paused", ["active", "disabled"]);
    promtool_check(&t);
    // Gone: nothing behind anywhere.
    let r = s.request(
        "DELETE",
        &format!("/v1/webhooks/{id}"),
        Some(&key),
        None,
        b"",
    );
    assert!(r.status == 204 || r.status == 200, "{}", r.body);
    wait_for("no lag once the webhook is gone", || {
        let t = scrape(&s);
        let all: f64 = ["active", "paused", "disabled"]
            .iter()
            .map(|st| value(&t, &events(st)) + value(&t, &age(st)))
            .sum();
        if all == 0.0 {
            Ok(())
        } else {
            Err(format!("{all}"))
        }
    });
}
