//! `sluice serve` end to end: the real binary, real Postfix `smtp-sink`
//! relays on loopback, the HTTP APIs as an application and an operator use
//! them. Each test has its own store, ports and sinks, so they run in
//! parallel; every wait is a bounded poll that reports what it saw.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;

/// The subsequence check behind "events accepted → routed → delivered".
fn in_order(kinds: &[String], wanted: &[&str]) -> bool {
    let mut it = kinds.iter();
    wanted.iter().all(|w| it.any(|k| k == w))
}

fn recipient(m: &Value, i: usize) -> &Value {
    &m["recipients"][i]
}

fn error_of(r: &Response) -> (String, Option<String>, String) {
    let v = r.json();
    let e = &v["error"];
    (
        e["code"].as_str().unwrap_or_default().to_owned(),
        e["field"].as_str().map(str::to_owned),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// One relay `a` on `port` and one tenant `t` that may send from anywhere.
fn one_relay(port: u16, relay_extra: &str) -> String {
    format!(
        "{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), relay_extra),
        tenant_table("t", &["*"])
    )
}

/// [`one_relay`] behind an `smtp-sink` started with `sink_opts`, Sluice started, and a
/// key of tenant `t`: (setup, relay port, sink, Sluice, key).
fn one_sink(sink_opts: &[&str]) -> (Setup, u16, Sink, Sluice, String) {
    let port = free_port();
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, sink_opts);
    let s = setup.start();
    let key = s.new_key("t");
    (setup, port, sink, s, key)
}

#[test]
fn delivers_with_headers_and_records_accepted_routed_delivered() {
    let port = free_port();
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");

    let r = s.post_message(
        &key,
        &json!({
            "from": "Alice Example <alice@example.com>",
            "to": ["bob@example.net"],
            "cc": ["carol@example.net"],
            "bcc": ["dave@example.net"],
            "subject": "Quarterly report",
            "text": "Numbers attached.",
            "headers": {"X-Campaign": "q3-2026"},
            "tags": ["reports"],
            "attachments": [{"filename": "report.csv", "content_type": "text/csv", "content_base64": "cmVnaW9uLHRvdGFsCg=="}],
        }),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = r.json();
    let id = accepted["id"].as_str().expect("id").to_owned();
    let message_id = accepted["message_id"].as_str().expect("message_id");

    let m = s.wait_state(&key, &id, "delivered");
    for i in 0..3 {
        assert_eq!(recipient(&m, i)["relay"], "a", "{m:#}");
    }
    let kinds = event_kinds(&m);
    assert!(
        in_order(&kinds, &["accepted", "routed", "delivered"]),
        "events should go accepted → routed → delivered: {kinds:?}\n{m:#}"
    );

    let kept = sink.with_subject("Quarterly report");
    assert_eq!(
        kept.len(),
        1,
        "one transaction for the three recipients of one domain: {kept:#?}"
    );
    let mail = &kept[0];
    assert_eq!(
        header(mail, "From").as_deref(),
        Some("\"Alice Example\" <alice@example.com>"),
        "{mail}"
    );
    assert_eq!(header(mail, "Message-ID").as_deref(), Some(message_id));
    assert_eq!(header(mail, "X-Campaign").as_deref(), Some("q3-2026"));
    assert_eq!(
        header(mail, "X-Mail-Args").as_deref(),
        Some("<alice@example.com>")
    );
    let rcpts: HashSet<String> = headers(mail)
        .into_iter()
        .filter(|(n, _)| n == "X-Rcpt-Args")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        rcpts,
        HashSet::from(
            [
                "<bob@example.net>",
                "<carol@example.net>",
                "<dave@example.net>"
            ]
            .map(String::from)
        ),
        "envelope recipients include the Bcc: {mail}"
    );
    assert!(header(mail, "Date").is_some(), "{mail}");
    assert!(
        mail.contains("filename=\"report.csv\"") && mail.contains("\nregion,total"),
        "the attachment arrives: {mail}"
    );
    // The Bcc recipient is in the envelope (smtp-sink's X-Rcpt-Args) only.
    assert!(
        headers(mail)
            .iter()
            .all(|(n, v)| n == "X-Rcpt-Args"
                || (!n.eq_ignore_ascii_case("bcc") && !v.contains("dave@"))),
        "the Bcc recipient must not appear in the headers: {mail}"
    );

    // A raw RFC 5322 message with its envelope beside it arrives as sent,
    // with a Message-ID added because it had none.
    // Its lines that start with a dot (one is a lone dot, the end of data unless
    // stuffed) arrive as written.
    let raw = "From: Shop <shop@example.com>\r\nTo: eve@example.org\r\nSubject: Raw receipt\r\nX-Order: 77\r\n\r\nThank you.\r\n.\r\n..two dots\r\n.end\r\n";
    let r = s.request(
        "POST",
        "/v1/messages?from=bounces@example.com&to=eve@example.org,frank@example.org",
        Some(&key),
        Some("message/rfc822"),
        raw.as_bytes(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let accepted = r.json();
    let id = accepted["id"].as_str().expect("id").to_owned();
    let m = s.wait_state(&key, &id, "delivered");
    assert_eq!(m["recipients"].as_array().map(Vec::len), Some(2), "{m:#}");
    let kept = sink.with_subject("Raw receipt");
    assert_eq!(kept.len(), 1, "{kept:#?}");
    let mail = &kept[0];
    assert_eq!(
        header(mail, "X-Mail-Args").as_deref(),
        Some("<bounces@example.com>")
    );
    assert_eq!(header(mail, "X-Order").as_deref(), Some("77"));
    assert_eq!(
        header(mail, "From").as_deref(),
        Some("Shop <shop@example.com>")
    );
    assert_eq!(
        header(mail, "Message-ID").as_deref(),
        accepted["message_id"].as_str(),
        "{mail}"
    );
    assert!(
        mail.contains("\nThank you.\n.\n..two dots\n.end\n"),
        "{mail}"
    );

    // smtp-sink announces PIPELINING, so the transactions above were pipelined.
    let relay = s.admin("GET", "/admin/v1/relays/a", None);
    assert_eq!(relay.status, 200, "{}", relay.body);
    assert_eq!(relay.json()["pipelining"], true, "{}", relay.body);
}

#[test]
fn a_relay_without_pipelining_is_spoken_to_one_command_at_a_time() {
    // -p: smtp-sink does not announce PIPELINING.
    let (_setup, _port, sink, s, key) = one_sink(&["-p"]);
    let id = s.submit(
        &key,
        &json!({"from": "a@example.com", "to": ["b@example.net", "c@example.net"],
                "subject": "one by one", "text": "hello\n.\n..two dots\n"}),
    );
    s.wait_state(&key, &id, "delivered");
    let kept = sink.with_subject("one by one");
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert!(kept[0].contains("\nhello\n.\n..two dots\n"), "{}", kept[0]);
    let rcpts = headers(&kept[0])
        .into_iter()
        .filter(|(n, _)| n == "X-Rcpt-Args")
        .count();
    assert_eq!(rcpts, 2, "{}", kept[0]);
    let relay = s.admin("GET", "/admin/v1/relays/a", None).json();
    assert_eq!(relay["pipelining"], false, "{relay:#}");
}

#[test]
fn refused_recipients_of_a_pipelined_transaction_each_get_the_reply_and_nothing_is_sent() {
    let (setup, port, refusing, s, key) = one_sink(&["-f", "rcpt"]);
    let id = s.submit(
        &key,
        &json!({"from": "a@example.com", "to": ["b@example.net", "c@example.net"],
                "subject": "refused together", "text": "hello"}),
    );
    let m = s.wait_state(&key, &id, "failed");
    for i in 0..2 {
        let reply = recipient(&m, i)["last_reply"].as_str().unwrap_or_default();
        assert!(reply.starts_with('5'), "recipient {i}: {m:#}");
    }
    assert!(refusing.with_subject("refused together").is_empty());
    // The connection was given up, not left out of step: the next message goes through.
    refusing.stop();
    let accepting = Sink::start(setup.root(), port, &[]);
    let id = s.submit(&key, &simple("a@example.com", "d@example.net", "after"));
    s.wait_state(&key, &id, "delivered");
    assert_eq!(accepting.with_subject("after").len(), 1);
}

#[test]
fn a_4xx_reply_is_retried_until_the_relay_accepts() {
    let (setup, port, refusing, s, key) = one_sink(&["-r", "rcpt"]);
    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "try again"));

    let m = s.wait_message(&key, &id, "deferred with the relay's 4xx reply", |m| {
        let r = recipient(m, 0);
        r["state"] == "deferred" && r["last_reply"].as_str().is_some_and(|t| t.starts_with('4'))
    });
    assert_eq!(recipient(&m, 0)["relay"], "a", "{m:#}");

    refusing.stop();
    let accepting = Sink::start(setup.root(), port, &[]);
    let m = s.wait_state(&key, &id, "delivered");
    let attempts = recipient(&m, 0)["attempts"].as_u64().unwrap_or(0);
    assert!(attempts >= 2, "delivered after {attempts} attempts: {m:#}");
    let kinds = event_kinds(&m);
    assert!(
        in_order(&kinds, &["accepted", "deferred", "delivered"]),
        "{kinds:?}"
    );
    assert_eq!(accepting.with_subject("try again").len(), 1);
}

#[test]
fn a_5xx_reply_fails_the_recipient_into_the_exception_queue_and_requeue_retries_it() {
    let (setup, port, refusing, s, key) = one_sink(&["-f", "rcpt"]);
    let id = s.submit(
        &key,
        &simple("a@example.com", "nobody@example.net", "no such user"),
    );

    let m = s.wait_state(&key, &id, "failed");
    let reply = recipient(&m, 0)["last_reply"].as_str().unwrap_or_default();
    assert!(
        reply.starts_with('5'),
        "last_reply should carry the 5xx: {m:#}"
    );
    assert!(event_kinds(&m).contains(&"bounced".to_owned()), "{m:#}");

    let failed = s.admin("GET", "/admin/v1/failed", None);
    assert_eq!(failed.status, 200, "{}", failed.body);
    let list = failed.json();
    let entry = list["failed"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["message_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("message {id} not in the exception queue: {list:#}"))
        .clone();
    assert_eq!(entry["address"], "nobody@example.net", "{entry:#}");
    assert_eq!(entry["state"], "failed", "{entry:#}");
    assert!(
        entry["last_reply"]
            .as_str()
            .is_some_and(|r| r.starts_with('5')),
        "{entry:#}"
    );

    // The operator fixes the relay and puts the recipient back.
    refusing.stop();
    let accepting = Sink::start(setup.root(), port, &[]);
    let idx = entry["recipient_idx"].as_i64().expect("recipient_idx");
    let path = format!("/admin/v1/failed/{id}/{idx}/requeue");
    let r = s.admin("POST", &path, None);
    assert_eq!(r.status, 204, "{}", r.body);
    let m = s.wait_state(&key, &id, "delivered");
    assert!(
        in_order(&event_kinds(&m), &["bounced", "requeued", "delivered"]),
        "{m:#}"
    );
    assert_eq!(accepting.with_subject("no such user").len(), 1);
    // Once delivered it is no longer in the queue, and cannot be requeued.
    let r = s.admin("POST", &path, None);
    assert_eq!(r.status, 404, "{}", r.body);
    let list = s.admin("GET", "/admin/v1/failed", None).json();
    assert!(
        !list["failed"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f["message_id"] == id.as_str())),
        "{list:#}"
    );
}

#[test]
fn traffic_moves_to_the_other_relay_when_one_is_down() {
    // Nothing listens on `down`'s port. Its weight makes it the router's
    // first choice, so messages try it, get a transport error, and the send
    // plugin moves them on to `up`.
    let down_port = free_port();
    let up_port = free_port();
    let tables = format!(
        "{}{}{}",
        relay_table(
            "down",
            &format!("smtp://127.0.0.1:{down_port}"),
            "weight = 1000"
        ),
        relay_table("up", &format!("smtp://127.0.0.1:{up_port}"), "weight = 1"),
        tenant_table("t", &["*"])
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), up_port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let ids: Vec<String> = (0..5)
        .map(|i| {
            s.submit(
                &key,
                &simple("a@example.com", "b@example.net", &format!("failover {i}")),
            )
        })
        .collect();

    let mut tried_down = 0;
    for id in &ids {
        let m = s.wait_state(&key, id, "delivered");
        assert_eq!(recipient(&m, 0)["relay"], "up", "{m:#}");
        let attempted_down = m["events"].as_array().is_some_and(|es| {
            es.iter()
                .any(|e| e["kind"] == "attempted" && e["relay"] == "down")
        });
        if attempted_down {
            tried_down += 1;
        }
    }
    assert!(
        tried_down >= 1,
        "no message tried the down relay first, so failover was not exercised"
    );
    let subjects = sink.subjects();
    for i in 0..5 {
        assert!(subjects.contains(&format!("failover {i}")), "{subjects:?}");
    }
}

/// A relay that was not answering gets traffic within seconds of answering again: it
/// is probed, and the work deferred because of it (retry times a minute away: the send
/// plugin's backoff after a refused connection, the router's when no relay is up) is
/// made due at once.
#[test]
fn a_relay_back_up_gets_its_deferred_work_within_seconds() {
    let port = free_port(); // nothing listens here yet
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        delivery: "relay_probe_secs = 1",
        tables: &tables,
        // The platform's own backoff: a minute after a refused connection.
        send_config: r#"{ base_secs = "60" }"#,
        ..Default::default()
    });
    let s = setup.start();
    let key = s.new_key("t");
    // Enough messages that the relay is marked down (three transport failures in a
    // row) and the later ones are deferred by the router without a try.
    let ids: Vec<String> = (0..6)
        .map(|i| {
            let id = s.submit(
                &key,
                &simple("a@example.com", "b@example.net", &format!("back {i}")),
            );
            s.wait_state(&key, &id, "deferred");
            id
        })
        .collect();
    let last = s.message(&key, &ids[5]);
    assert!(
        last["events"].as_array().is_some_and(|es| es
            .iter()
            .any(|e| e["kind"] == "deferred" && e["detail"]["by"] == "route")),
        "the last message was deferred by the router, every relay being down: {last:#}"
    );
    for id in &ids {
        let m = s.message(&key, id);
        let next = recipient(&m, 0)["next_attempt_at_ms"].as_i64().unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            next - now > 30_000,
            "the retry would come soon anyway, so this test would show nothing: {m:#}"
        );
    }

    let back = std::time::Instant::now();
    let sink = Sink::start(setup.root(), port, &[]);
    let delivered = wait_for_within(
        std::time::Duration::from_secs(5).saturating_sub(back.elapsed()),
        "every deferred message delivered within 5 s of the relay answering",
        || {
            let subjects = sink.subjects();
            if subjects.len() == ids.len() {
                Ok(subjects)
            } else {
                Err(format!("{subjects:?}\n{}", s.log()))
            }
        },
    );
    for i in 0..ids.len() {
        assert!(delivered.contains(&format!("back {i}")), "{delivered:?}");
    }
    // The figure BENCHMARKS.md quotes (`--nocapture` shows it).
    eprintln!(
        "relay back: {} deferred messages delivered {:?} after the relay listened again",
        ids.len(),
        back.elapsed()
    );
}

/// Issue 18: a slow relay (0.5 s a transaction, 4 connections, `lease_secs = 10`) gave 524
/// deliveries for 300 messages with no crash at all: leases ran out while work waited for
/// a connection, and the recipients were leased and sent again. Here a relay takes a
/// second for each transaction through two connections, so the last messages wait far
/// longer than a lease (5 s); each must still reach it exactly once, from one node or, on
/// PostgreSQL, from two nodes leasing from the same store.
fn a_slow_relay_gets_each_message_once(nodes: usize, postgres: Option<&PgDb>) {
    let port = free_port();
    let tables = one_relay(port, "connection_limit = 2");
    let suffixes: Vec<String> = (0..nodes)
        .map(|i| format!("node_suffix = \"n{i}\""))
        .collect();
    let setups: Vec<Setup> = suffixes
        .iter()
        .map(|suffix| {
            // Nodes on one machine: each its own id (the host name plus a suffix).
            let setup = Setup::new(PipelineParts {
                server: suffix,
                tables: &tables,
                ..Default::default()
            });
            if let Some(db) = postgres {
                setup.use_store(&db.url());
            }
            setup
        })
        .collect();
    let sink = Sink::start(setups[0].root(), port, &["-w", "1"]);
    let running: Vec<Sluice> = setups.iter().map(Setup::start).collect();
    let key = running[0].new_key("t");
    let n = 24;
    let ids: Vec<(String, String)> = (0..n)
        .map(|i| {
            let subject = format!("slow {i}");
            let node = &running[i % running.len()];
            (
                node.submit(&key, &simple("a@example.com", "b@example.net", &subject)),
                subject,
            )
        })
        .collect();
    for (id, _) in &ids {
        running[0].wait_message(&key, id, "delivered", |m| all_in_state(m, "delivered"));
    }
    let mut twice = Vec::new();
    for (_, subject) in &ids {
        let got = sink.with_subject(subject).len();
        if got != 1 {
            twice.push(format!("{subject}: {got}"));
        }
    }
    assert!(
        twice.is_empty(),
        "messages not delivered exactly once: {twice:?}\n{}",
        running[0].log()
    );
}

#[test]
fn a_slow_relay_gets_each_message_once_from_one_node() {
    a_slow_relay_gets_each_message_once(1, None);
}

#[test]
fn a_slow_relay_gets_each_message_once_from_two_nodes_on_postgres() {
    let db = PgDb::new("sluice_e2e_slow");
    a_slow_relay_gets_each_message_once(2, Some(&db));
}

/// SIGHUP reloads the pipeline file: a relay moved in the file takes traffic at its new
/// address without a restart, a section that cannot change live is named in a warning,
/// and a broken file is refused with where it is broken while the server goes on.
#[test]
fn sighup_reloads_the_pipeline_file_and_refuses_a_broken_one() {
    let (first_port, second_port) = (free_port(), free_port());
    let tables = one_relay(first_port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let first = Sink::start(setup.root(), first_port, &[]);
    let second = Sink::start(setup.root(), second_port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "before"));
    s.wait_state(&key, &id, "delivered");
    assert_eq!(first.with_subject("before").len(), 1);

    let original = std::fs::read_to_string(&setup.pipeline).unwrap();
    let moved = original
        .replace(
            &format!("smtp://127.0.0.1:{first_port}"),
            &format!("smtp://127.0.0.1:{second_port}"),
        )
        .replace("lease_secs = 5", "lease_secs = 6");
    assert_ne!(moved, original);
    std::fs::write(&setup.pipeline, &moved).unwrap();
    s.guard.signal("HUP");
    wait_for("the relay's new address in the admin API", || {
        let r = s.admin("GET", "/admin/v1/relays/a", None);
        let url = r.json()["url"].as_str().unwrap_or_default().to_owned();
        if url.ends_with(&format!(":{second_port}")) {
            Ok(())
        } else {
            Err(format!("{}\n{}", r.body, s.log()))
        }
    });
    wait_for("a warning that [delivery] needs a restart", || {
        let log = s.log();
        if log.contains("only after a restart") && log.contains("[delivery]") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "after"));
    s.wait_state(&key, &id, "delivered");
    assert_eq!(second.with_subject("after").len(), 1);
    assert!(first.with_subject("after").is_empty());

    // A broken file: refused with its place, the server keeps what it had.
    std::fs::write(
        &setup.pipeline,
        moved.replace("[delivery]", "[delivery]\nno_such_key = 1"),
    )
    .unwrap();
    s.guard.signal("HUP");
    wait_for("the broken file refused with its line", || {
        let log = s.log();
        if log.contains("was not reloaded") && log.contains("no_such_key") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "still"));
    s.wait_state(&key, &id, "delivered");
    assert_eq!(second.with_subject("still").len(), 1);
}

#[test]
fn sighup_puts_new_limits_and_admission_in_force_for_the_next_request() {
    let port = free_port();
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let two = json!({"from": "a@example.com", "to": ["b@example.net", "c@example.net"],
        "subject": "two", "text": "x"});
    assert_eq!(s.post_message(&key, &two).status, 202);

    let original = std::fs::read_to_string(&setup.pipeline).unwrap();
    // Holding is off (`max_hold_ms = 0`): past the rate a submission is told 429 at
    // once instead of being held for its turn (`hostile_tenants.rs` tests holding).
    let tightened = format!(
        "{}\n[admission]\naccepts_per_sec = 1\naccept_burst = 1\nmax_hold_ms = 0\n",
        original.replacen("[limits]\n", "[limits]\nmax_recipients = 1\n", 1)
    );
    std::fs::write(&setup.pipeline, &tightened).unwrap();
    s.guard.signal("HUP");
    // The reload is seen in what the next submission is told (a 429 from the new
    // accept rate is waited out by the poll).
    let refused = wait_for(
        "the reloaded recipient limit to refuse two recipients",
        || {
            let r = s.post_message(&key, &two);
            if r.status == 422 {
                Ok(r)
            } else {
                Err(format!("{} {}\n{}", r.status, r.body, s.log()))
            }
        },
    );
    assert_eq!(refused.json()["error"]["field"], "to", "{}", refused.body);
    assert!(refused.body.contains("the limit is 1"), "{}", refused.body);

    // One accept a second now: quick submissions run into it within a few tries
    // (before the reload the defaults allowed hundreds a second).
    let one = simple("a@example.com", "b@example.net", "one");
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = s.post_message(&key, &one);
        statuses.push(r.status);
        if r.status == 429 {
            assert_eq!(
                r.json()["error"]["limit"],
                "admission.accepts_per_sec",
                "{}",
                r.body
            );
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "statuses: {statuses:?}");
}

#[test]
fn relays_added_and_drained_through_the_admin_api_take_effect_without_a_restart() {
    let a_port = free_port();
    let b_port = free_port();
    let tables = one_relay(a_port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink_a = Sink::start(setup.root(), a_port, &[]);
    let sink_b = Sink::start(setup.root(), b_port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let relay_of = |subject: &str| {
        let id = s.submit(&key, &simple("a@example.com", "b@example.net", subject));
        let m = s.wait_state(&key, &id, "delivered");
        recipient(&m, 0)["relay"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    assert_eq!(relay_of("before"), "a");

    // Add `b` with a far higher weight: the router should send to it.
    let r = s.admin(
        "POST",
        "/admin/v1/relays",
        Some(json!({"id": "b", "url": sink_b.url(), "weight": 100000, "tags": ["pool:platform"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let after_add: Vec<String> = (0..5).map(|i| relay_of(&format!("added {i}"))).collect();
    assert!(
        after_add.iter().any(|r| r == "b"),
        "the added relay took no traffic: {after_add:?}"
    );
    let listed = s.admin("GET", "/admin/v1/relays", None).json();
    assert!(
        listed["relays"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["id"] == "b")),
        "{listed:#}"
    );

    // Drain it: new traffic goes back to `a`.
    let r = s.admin(
        "PATCH",
        "/admin/v1/relays/b",
        Some(json!({"state": "draining"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let at_b = sink_b.messages().len();
    let after_drain: Vec<String> = (0..5).map(|i| relay_of(&format!("drained {i}"))).collect();
    assert!(
        after_drain.iter().all(|r| r == "a"),
        "the drained relay still took traffic: {after_drain:?}"
    );
    assert_eq!(sink_b.messages().len(), at_b, "{}", sink_b.log());
    for i in 0..5 {
        assert_eq!(sink_a.with_subject(&format!("drained {i}")).len(), 1);
    }

    // Removed: gone from the list, and traffic stays on `a`.
    let r = s.admin("DELETE", "/admin/v1/relays/b", None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(s.admin("GET", "/admin/v1/relays/b", None).status, 404);
    assert_eq!(relay_of("after delete"), "a");
}

/// Submits `n` messages from `threads` client threads; returns (id, subject).
fn submit_many(
    s: &Sluice,
    key: &str,
    prefix: &str,
    n: usize,
    threads: usize,
) -> Vec<(String, String)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..n)
                        .filter(|i| i % threads == t)
                        .map(|i| {
                            let subject = format!("{prefix} {i}");
                            let id =
                                s.submit(key, &simple("a@example.com", "b@example.net", &subject));
                            (id, subject)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    })
}

/// Waits until the sink holds every subject; returns how many extra copies
/// (duplicates) it holds.
fn wait_all_at_sink(sink: &Sink, subjects: &HashSet<String>) -> usize {
    wait_for(
        &format!("all {} accepted messages at the sink", subjects.len()),
        || {
            let seen = sink.subjects();
            let missing: Vec<&String> = subjects.iter().filter(|s| !seen.contains(*s)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} missing, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                ))
            }
        },
    );
    let kept = sink
        .messages()
        .iter()
        .filter(|m| header(m, "subject").is_some_and(|s| subjects.contains(&s)))
        .count();
    kept - subjects.len()
}

#[test]
fn a_process_killed_mid_load_delivers_every_accepted_message_after_a_restart() {
    let port = free_port();
    let tables = one_relay(port, "connection_limit = 16");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        delivery: "max_in_flight = 16",
        ..Default::default()
    });
    // A slow relay (1 s per DATA) keeps deliveries in flight when the kill comes.
    let slow = Sink::start(setup.root(), port, &["-w", "1"]);
    let mut s = setup.start();
    let key = s.new_key("t");
    let sent = submit_many(&s, &key, "crash", 200, 4);
    let subjects: HashSet<String> = sent.iter().map(|(_, sub)| sub.clone()).collect();
    assert_eq!(subjects.len(), 200);

    let before = slow.subjects().len();
    assert!(
        before < 200,
        "all 200 were delivered before the kill, so the crash was not mid-load"
    );
    s.guard.kill(); // SIGKILL: no drain, leases stay held until they expire
    slow.stop();
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let duplicates = wait_all_at_sink(&sink, &subjects);
    eprintln!("crash test: {before} delivered before SIGKILL, {duplicates} delivered twice");
    for (id, _) in &sent {
        s.wait_state(&key, id, "delivered");
    }
}

#[test]
fn sigterm_drains_in_flight_work_and_a_restart_delivers_the_rest() {
    let port = free_port();
    let tables = one_relay(port, "connection_limit = 4");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        delivery: "max_in_flight = 4",
        ..Default::default()
    });
    let slow = Sink::start(setup.root(), port, &["-w", "1"]);
    let mut s = setup.start();
    let key = s.new_key("t");
    let sent = submit_many(&s, &key, "drain", 30, 3);
    let subjects: HashSet<String> = sent.iter().map(|(_, sub)| sub.clone()).collect();
    assert!(
        slow.subjects().len() < 30,
        "everything was delivered before SIGTERM, so nothing was in flight"
    );

    s.guard.signal("TERM");
    let status = s.guard.wait_exit(WAIT);
    assert!(
        status.success(),
        "sluice exited with {status} after SIGTERM\n{}",
        s.log()
    );
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    // In-flight attempts were finished, not abandoned: no lease was left to give back.
    assert!(
        log.contains("sluice: stopped (0 leased recipients given back)"),
        "{log}"
    );

    slow.stop();
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let duplicates = wait_all_at_sink(&sink, &subjects);
    assert_eq!(
        duplicates, 0,
        "a graceful stop finishes or gives back its work: nothing is sent twice"
    );
    for (id, _) in &sent {
        s.wait_state(&key, id, "delivered");
    }
}

#[test]
fn the_same_idempotency_key_gives_the_same_message_and_one_delivery() {
    let port = free_port();
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let mut msg = simple("a@example.com", "b@example.net", "once only");
    msg["idempotency_key"] = json!("order-4711");

    let first = s.post_message(&key, &msg);
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let second = s.post_message(&key, &msg);
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("idempotent-replayed"), Some("true"));
    let id = first.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(second.json()["id"], id.as_str());

    s.wait_state(&key, &id, "delivered");
    // A later message through the same relay delivered too: the first would
    // have had its chance to be sent twice by then.
    let marker = s.submit(&key, &simple("a@example.com", "b@example.net", "marker"));
    s.wait_state(&key, &marker, "delivered");
    let third = s.post_message(&key, &msg);
    assert_eq!(third.json()["id"], id.as_str(), "{}", third.body);
    assert_eq!(sink.with_subject("once only").len(), 1);

    // The same through the Idempotency-Key header.
    let body = simple("a@example.com", "b@example.net", "header key").to_string();
    let auth = format!("Bearer {key}");
    let send = || {
        http(
            s.addr,
            "POST",
            "/v1/messages",
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "order-4712"),
            ],
            body.as_bytes(),
        )
        .expect("POST")
    };
    let (a, b) = (send(), send());
    assert_eq!((a.status, b.status), (202, 200), "{} / {}", a.body, b.body);
    assert_eq!(b.header("idempotent-replayed"), Some("true"));
    assert_eq!(a.json()["id"], b.json()["id"]);
}

#[test]
fn a_tenant_cannot_see_another_tenants_message() {
    let tables = format!(
        "{}{}",
        tenant_table("alpha", &["alpha.example"]),
        tenant_table("beta", &["beta.example"])
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let s = setup.start();
    let alpha = s.new_key("alpha");
    let beta = s.new_key("beta");
    let id = s.submit(
        &alpha,
        &simple("a@alpha.example", "x@example.net", "private"),
    );

    let own = s.request(
        "GET",
        &format!("/v1/messages/{id}"),
        Some(&alpha),
        None,
        b"",
    );
    assert_eq!(own.status, 200, "{}", own.body);
    let other = s.request("GET", &format!("/v1/messages/{id}"), Some(&beta), None, b"");
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(error_of(&other).0, "not_found");
    assert!(!other.body.contains("alpha"), "{}", other.body);
    // Idempotency keys are per tenant: the same key from beta is a new message.
    let mut keyed = simple("a@alpha.example", "x@example.net", "keyed");
    keyed["idempotency_key"] = json!("shared-key-1");
    let alpha_keyed = s.submit(&alpha, &keyed);
    keyed["from"] = json!("b@beta.example");
    let r = s.post_message(&beta, &keyed);
    assert_eq!(r.status, 202, "beta's first use of the key: {}", r.body);
    assert_ne!(r.json()["id"], alpha_keyed.as_str(), "{}", r.body);
    assert_eq!(r.header("idempotent-replayed"), None);
    // A tenant key is not an admin token, and the admin token is not a tenant key.
    let r = s.request("GET", "/admin/v1/tenants", Some(&alpha), None, b"");
    assert_eq!(r.status, 401, "{}", r.body);
    let admin_as_tenant = s.request(
        "GET",
        &format!("/v1/messages/{id}"),
        Some(&setup.admin_token),
        None,
        b"",
    );
    assert_eq!(admin_as_tenant.status, 401, "{}", admin_as_tenant.body);
}

#[test]
fn bad_requests_get_json_errors_naming_the_field() {
    let tables = tenant_table("t", &["good.example"]);
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        limits: "max_message_bytes = 20000\nmax_recipients = 3",
        ..Default::default()
    });
    let s = setup.start();
    let key = s.new_key("t");
    let post = |body: &Value| s.post_message(&key, body);
    let check = |r: Response, status: u16, code: &str, field: Option<&str>| {
        assert_eq!(r.status, status, "{}", r.body);
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{r:?}"
        );
        let (c, f, message) = error_of(&r);
        assert_eq!(c, code, "{}", r.body);
        assert_eq!(f.as_deref(), field, "{}", r.body);
        assert!(!message.is_empty(), "{}", r.body);
        message
    };

    let m = check(
        post(&simple("not an address", "b@example.net", "x")),
        422,
        "invalid",
        Some("from"),
    );
    assert!(
        m.contains("not an address"),
        "the message quotes the value: {m}"
    );

    let too_many = json!({"from": "a@good.example", "to": ["1@x.example", "2@x.example", "3@x.example", "4@x.example"], "text": "hi"});
    let m = check(post(&too_many), 422, "invalid", Some("to"));
    assert!(m.contains('4') && m.contains('3'), "{m}");

    let big = json!({"from": "a@good.example", "to": ["b@x.example"], "text": "x".repeat(30_000)});
    check(post(&big), 413, "too_large", Some("message"));
    // Far beyond the limit: refused before it is read, still as JSON.
    let huge =
        json!({"from": "a@good.example", "to": ["b@x.example"], "text": "x".repeat(300_000)});
    let r = post(&huge);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(error_of(&r).0, "too_large", "{}", r.body);

    let r = s.request(
        "POST",
        "/v1/messages",
        Some(&key),
        Some("application/json"),
        b"{\"from\": ",
    );
    check(r, 400, "bad_json", None);

    let r = s.request(
        "POST",
        "/v1/messages",
        Some(&key),
        Some("text/plain"),
        b"hello",
    );
    let m = check(r, 415, "unsupported_media_type", None);
    assert!(m.contains("text/plain"), "{m}");

    let body = simple("a@good.example", "b@x.example", "x").to_string();
    let r = s.request(
        "POST",
        "/v1/messages",
        None,
        Some("application/json"),
        body.as_bytes(),
    );
    check(r, 401, "unauthorized", None);
    let r = s.request(
        "POST",
        "/v1/messages",
        Some("sk_not_a_key"),
        Some("application/json"),
        body.as_bytes(),
    );
    check(r, 401, "unauthorized", None);

    let m = check(
        post(&simple("a@evil.example", "b@x.example", "x")),
        422,
        "rejected",
        Some("from"),
    );
    assert!(m.contains("evil.example"), "{m}");

    // And a good one still goes through.
    s.submit(&key, &simple("a@good.example", "b@x.example", "fine"));
}

#[test]
fn a_bad_pipeline_file_is_refused_with_file_line_column_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let head = format!("[server]\nhttp_listen = \"127.0.0.1:{port}\"\n");
    let cases = [
        (
            "unknown-key.toml",
            format!("{head}colour = \"blue\"\n"),
            "3:1: key `colour`",
            "unknown field",
        ),
        (
            "inline-secret.toml",
            format!("{head}[admin]\ntoken = \"hunter2-secret\"\n"),
            "4:9: key `admin.token`",
            "never inline",
        ),
        (
            "bad-relay.toml",
            format!("{head}[[relay]]\nid = \"r\"\nurl = \"http://mx.example\"\n"),
            "5:7: key `relay[0].url`",
            "is not smtp or smtps",
        ),
    ];
    for (name, text, at, says) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["pipeline", "check"])
            .arg(&path)
            .output()
            .expect("run sluice");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let want = format!("{}:{at}", path.display());
        assert!(
            stderr.contains(&want),
            "{name}: expected {want:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains(says),
            "{name}: expected {says:?} in:\n{stderr}"
        );
        assert!(
            !stderr.contains("hunter2"),
            "{name}: the error must not echo the secret:\n{stderr}"
        );

        // `serve` refuses it the same way, before listening.
        let log = dir.path().join(format!("{name}.serve.log"));
        let f = std::fs::File::create(&log).expect("log");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--pipeline"])
            .arg(&path)
            .current_dir(dir.path())
            .stdout(f.try_clone().expect("fd"))
            .stderr(f)
            .spawn()
            .expect("run sluice serve");
        let mut guard = support_guard(child);
        let status = guard.wait_exit(WAIT);
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(status.code(), Some(2), "{name}: serve: {output}");
        assert!(output.contains(&want), "{name}: serve: {output}");
        assert!(
            !output.contains("HTTP API on"),
            "{name}: serve listened: {output}"
        );
    }
}

fn support_guard(child: std::process::Child) -> ChildGuard {
    ChildGuard::adopt(child, "sluice serve (bad pipeline)")
}

/// A tmpfs of its own for one test, unmounted (lazily, so a process still holding a
/// file cannot keep it) on drop. Mounting needs root, which CI has.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} (the test needs root)",
            dir.display()
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Issue 18: a full disk broke the SQLite store until a restart (a failed COMMIT left
/// the one write connection unusable). Now: while the disk is full submissions get 503
/// with Retry-After and no false 202, the answer names no database internals, and once
/// space is back submissions are accepted again within seconds and everything accepted
/// is delivered, with no restart.
#[test]
fn a_full_disk_is_answered_503_and_writes_resume_without_a_restart() {
    let port = free_port();
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let disk = Tmpfs::mount(&setup.root().join("disk"), "8m");
    let text = std::fs::read_to_string(&setup.pipeline).unwrap();
    std::fs::write(&setup.pipeline, text.replace("/s.db\"", "/disk/s.db\"")).unwrap();
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let big = |subject: &str| {
        json!({"from": "a@example.com", "to": ["b@example.net"], "subject": subject,
               "text": "0123456789 abcdefghij klmnopqrst uvwxyz\n".repeat(5_000)})
    };
    let mut accepted = vec![s.submit(&key, &big("before"))];

    let filler = disk.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for i in 0..100 {
        let r = s.request(
            "POST",
            "/v1/messages",
            Some(&key),
            Some("application/json"),
            big(&format!("while full {i}")).to_string().as_bytes(),
        );
        match r.status {
            // The WAL may still have room of its own: such a 202 is a real commit.
            202 => accepted.push(r.json()["id"].as_str().unwrap().to_owned()),
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("HTTP {other} while the disk is full: {}", r.body),
        }
    }
    let refused = refused.expect("a full disk refuses submissions");
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );
    let (code, _, message) = error_of(&refused);
    assert!(code.starts_with("store_"), "{code}: {message}");
    for leak in [
        "sqlite",
        "SQLITE",
        "database or disk",
        ".db",
        "INSERT",
        "COMMIT",
    ] {
        assert!(!message.contains(leak), "{leak:?} in {message:?}");
    }
    // Alive, but not ready: a load balancer sends submissions elsewhere meanwhile.
    assert_eq!(s.request("GET", "/healthz", None, None, b"").status, 200);
    let ready = s.request("GET", "/readyz", None, None, b"");
    assert_eq!(ready.status, 503, "{}", ready.body);

    std::fs::remove_file(&filler).unwrap();
    let id = wait_for("a 202 once space is back, without a restart", || {
        let r = s.request(
            "POST",
            "/v1/messages",
            Some(&key),
            Some("application/json"),
            simple("a@example.com", "b@example.net", "after")
                .to_string()
                .as_bytes(),
        );
        match r.status {
            202 => Ok(r.json()["id"].as_str().unwrap().to_owned()),
            other => Err(format!("HTTP {other}: {}", r.body)),
        }
    });
    accepted.push(id);
    assert_eq!(s.request("GET", "/readyz", None, None, b"").status, 200);
    for id in &accepted {
        s.wait_state(&key, id, "delivered");
    }
    assert!(!sink.with_subject("after").is_empty());
    drop(s);
}

/// Issue 18: with its database dropped, the API answered 500 with the database's error
/// text and the first characters of the caller's API key. Now: 503 with Retry-After, a
/// message that names neither, and the key nowhere in the answer.
#[test]
fn a_dropped_database_is_answered_503_without_its_text_or_the_callers_key() {
    let pg = PgDb::new("sluice_e2e_dropped");
    let db = pg.0.clone();
    let port = free_port();
    let tables = one_relay(port, "");
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    setup.use_store(&pg.url());
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    s.submit(&key, &simple("a@example.com", "b@example.net", "before"));

    assert_eq!(s.request("GET", "/readyz", None, None, b"").status, 200);
    assert!(psql(&format!("DROP DATABASE {db} WITH (FORCE)")));
    assert_eq!(s.request("GET", "/healthz", None, None, b"").status, 200);
    let ready = s.request("GET", "/readyz", None, None, b"");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(!ready.body.contains(&db), "{}", ready.body);
    for (method, path, body) in [
        ("GET", "/v1/messages/01KXXXXXXXXXXXXXXXXXXXXXXX", Vec::new()),
        (
            "POST",
            "/v1/messages",
            simple("a@example.com", "b@example.net", "after")
                .to_string()
                .into_bytes(),
        ),
    ] {
        let r = s.request(method, path, Some(&key), Some("application/json"), &body);
        assert_eq!(r.status, 503, "{method} {path}: {}", r.body);
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
        assert!(!r.body.contains(&key[7..13]), "the key in {:?}", r.body);
        for leak in ["database", "postgres", db.as_str(), "SELECT", "relation"] {
            assert!(!r.body.contains(leak), "{leak:?} in {:?}", r.body);
        }
    }

    // The database created again, empty: the server makes its schema again and seeds the
    // pipeline's tenant and relay, without a restart. The old keys went with the old
    // database; a new one works.
    assert!(psql(&format!("CREATE DATABASE {db}")));
    let key = wait_for("the re-created database to take a new API key", || {
        let r = s.admin("POST", "/admin/v1/tenants/t/keys", None);
        match r.status {
            201 => Ok(r.json()["key"].as_str().unwrap_or_default().to_owned()),
            other => Err(format!("HTTP {other}: {}\n{}", r.body, s.log())),
        }
    });
    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "recreated"));
    s.wait_state(&key, &id, "delivered");
    assert_eq!(sink.with_subject("recreated").len(), 1);
    assert_eq!(s.request("GET", "/readyz", None, None, b"").status, 200);
    // The node joined the new database too: its heartbeat counts there, so it goes on
    // running (without its row it took its own heartbeat's miss for a takeover and
    // stopped).
    let node = s.request("GET", "/healthz", None, None, b"").json()["node"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for("this node's row in the re-created database, alive", || {
        let v = s.admin("GET", "/admin/v1/nodes", None).json();
        let alive = v["nodes"].as_array().is_some_and(|ns| {
            ns.iter()
                .any(|n| n["id"] == node.as_str() && n["state"] == "alive")
        });
        if alive { Ok(()) } else { Err(v.to_string()) }
    });
    let mut guard = s.guard;
    assert!(
        guard.is_running(),
        "the node stopped after the database came back"
    );
}
