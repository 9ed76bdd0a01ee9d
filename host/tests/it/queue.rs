//! Queue inspection and controls through the real binary (issue 22), on SQLite and on
//! PostgreSQL: `GET /v1/messages` filters and cursor pages, another tenant's messages
//! never visible, hostile parameters refused by name, hold then release delivering to
//! `smtp-sink`, cancel failing with its reason, `GET /admin/v1/queue` moving with it,
//! and a suspended tenant's mail waiting until it is resumed.

use crate::support::*;
use serde_json::{Value, json};

/// Percent-encodes a query value (everything but unreserved characters).
fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn get(s: &Sluice, key: &str, path: &str) -> Response {
    s.request("GET", path, Some(key), None, b"")
}

fn post(s: &Sluice, key: &str, path: &str, body: Option<Value>) -> Response {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/json");
    s.request("POST", path, Some(key), ct, bytes.as_bytes())
}

/// The ids of one page, and its cursor.
fn page(s: &Sluice, key: &str, query: &str) -> (Vec<String>, Option<String>) {
    let r = get(s, key, &format!("/v1/messages?{query}"));
    assert_eq!(r.status, 200, "GET /v1/messages?{query}: {}", r.body);
    let v = r.json();
    let ids = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, v["next_after"].as_str().map(str::to_owned))
}

/// The field a 422 names.
fn refused(r: &Response) -> String {
    assert_eq!(r.status, 422, "expected 422: {}", r.body);
    r.json()["error"]["field"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn setup(relay_port: u16, postgres: Option<&PgDb>) -> Setup {
    let tables = format!(
        "{}{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{relay_port}"), ""),
        tenant_table("t", &["*"]),
        tenant_table("u", &["*"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    if let Some(db) = postgres {
        setup.use_store(&db.url());
    }
    setup
}

fn tagged(from: &str, to: &str, subject: &str, tags: &[&str]) -> Value {
    let mut m = simple(from, to, subject);
    m["tags"] = json!(tags);
    m
}

fn search_filters_pages_and_never_shows_another_tenant(postgres: Option<&PgDb>) {
    let port = free_port();
    let setup = setup(port, postgres);
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let (t, u) = (s.new_key("t"), s.new_key("u"));

    let mut ids = Vec::new();
    for i in 0..7 {
        let from = if i % 2 == 0 {
            "even@example.com"
        } else {
            "odd@example.com"
        };
        let to = format!("r{i}@dest{}.example", i % 3);
        let tags: &[&str] = if i < 2 { &["promo"] } else { &["bulk"] };
        ids.push(s.submit(&t, &tagged(from, &to, &format!("t {i}"), tags)));
    }
    let theirs: Vec<String> = (0..2)
        .map(|i| {
            s.submit(
                &u,
                &simple("u@example.com", "r0@dest0.example", &format!("u {i}")),
            )
        })
        .collect();
    for id in &ids {
        s.wait_state(&t, id, "delivered");
    }
    // Newest first: ids are ULIDs of acceptance time.
    let mut newest_first = ids.clone();
    newest_first.reverse();

    // Cursor pages of 3: 3, 3, 1, the last without a cursor.
    let (p1, c1) = page(&s, &t, "limit=3");
    let (p2, c2) = page(&s, &t, &format!("limit=3&after={}", c1.clone().unwrap()));
    let (p3, c3) = page(&s, &t, &format!("limit=3&after={}", c2.clone().unwrap()));
    assert_eq!([p1, p2, p3].concat(), newest_first);
    assert_eq!(c3, None);

    // One item in full.
    let r = get(
        &s,
        &t,
        &format!("/v1/messages?to={}", enc("r0@dest0.example")),
    );
    let v = r.json();
    let items = v["messages"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    let m = &items[0];
    assert_eq!(m["id"], ids[0].as_str());
    assert_eq!(m["state"], "delivered");
    assert_eq!(m["from"], "even@example.com");
    assert_eq!(m["tags"], json!(["promo"]));
    assert_eq!(
        m["recipients"],
        json!({"total": 1, "by_state": {"delivered": 1}})
    );
    assert!(
        m["message_id"].as_str().is_some_and(|h| h.contains('@')),
        "{m}"
    );
    assert!(
        m["updated_at_ms"].as_i64() >= m["created_at_ms"].as_i64(),
        "{m}"
    );

    // Filters, each alone and together.
    let (odd, _) = page(&s, &t, &format!("from={}", enc("odd@example.com")));
    assert_eq!(odd, [ids[5].clone(), ids[3].clone(), ids[1].clone()]);
    let (promo, _) = page(&s, &t, "tag=promo");
    assert_eq!(promo, [ids[1].clone(), ids[0].clone()]);
    let (both, _) = page(
        &s,
        &t,
        &format!("tag=promo&from={}", enc("odd@example.com")),
    );
    assert_eq!(both, [ids[1].clone()]);
    let (delivered, _) = page(&s, &t, "state=delivered");
    assert_eq!(delivered, newest_first);
    let (deferred, _) = page(&s, &t, "state=deferred");
    assert!(deferred.is_empty());
    let since = get(
        &s,
        &t,
        &format!("/v1/messages?to={}", enc("r4@dest1.example")),
    )
    .json()["messages"][0]["created_at_ms"]
        .as_i64()
        .unwrap();
    let (recent, _) = page(&s, &t, &format!("since={since}"));
    assert_eq!(recent, [ids[6].clone(), ids[5].clone(), ids[4].clone()]);
    let (older, _) = page(&s, &t, &format!("until={since}"));
    assert_eq!(
        older,
        [
            ids[3].clone(),
            ids[2].clone(),
            ids[1].clone(),
            ids[0].clone()
        ]
    );

    // Another tenant's messages are never listed, whatever the filter.
    let (mine, _) = page(&s, &u, "limit=500");
    assert_eq!(mine, [theirs[1].clone(), theirs[0].clone()]);
    let (mine, _) = page(&s, &u, &format!("to={}", enc("r0@dest0.example")));
    assert_eq!(mine, [theirs[1].clone(), theirs[0].clone()]);
    let (none, _) = page(&s, &u, &format!("from={}", enc("even@example.com")));
    assert!(none.is_empty());
    // A cursor of another tenant's message pages the caller's own messages only.
    let (after_theirs, _) = page(&s, &t, &format!("after={}", theirs[1]));
    assert!(after_theirs.iter().all(|id| ids.contains(id)));
    // Nor can its messages be controlled: "not found", as for GET.
    for action in ["cancel", "hold", "release"] {
        let r = post(&s, &u, &format!("/v1/messages/{}/{action}", ids[0]), None);
        assert_eq!(
            r.status, 404,
            "{action} another tenant's message: {}",
            r.body
        );
    }

    // Hostile parameters: refused by name, bounded, and the store unharmed.
    let huge = "9".repeat(40);
    for (query, field) in [
        ("limit=100000".to_owned(), "limit"),
        (format!("limit={huge}"), "limit"),
        ("limit=0".to_owned(), "limit"),
        ("after=not-a-cursor".to_owned(), "after"),
        (format!("after={}", enc("' OR 1=1 --")), "after"),
        ("state=sent".to_owned(), "state"),
        ("since=-5".to_owned(), "since"),
        ("since=10&until=5".to_owned(), "until"),
        (format!("to={}", "a".repeat(10_000)), "to"),
        (format!("to={}", enc("x' OR '1'='1")), "to"),
        (format!("tag={}", enc("a\u{1}b")), "tag"),
        ("limit=5&limit=6".to_owned(), "limit"),
        ("bogus=1".to_owned(), "bogus"),
    ] {
        let r = get(&s, &t, &format!("/v1/messages?{query}"));
        assert_eq!(refused(&r), field, "{query}");
    }
    // SQL in a valid address is only ever a value.
    for to in [
        "x'); DROP TABLE messages; --@a.example",
        "a@b' OR tenant_id <> 't",
        "%@%",
    ] {
        let (found, _) = page(&s, &t, &format!("to={}", enc(to)));
        assert!(found.is_empty(), "{to}: {found:?}");
    }
    let (tag, _) = page(&s, &t, &format!("tag={}", enc("%")));
    assert!(tag.is_empty());
    let (all, _) = page(&s, &t, "limit=500");
    assert_eq!(all, newest_first);
    // An unknown key reaches none of it.
    let r = get(&s, "not-a-key", "/v1/messages");
    assert_eq!(r.status, 401, "{}", r.body);

    // The admin's queue view and selectors refuse what they cannot bound.
    for body in [json!({}), json!({"reason": "x"})] {
        let r = s.admin("POST", "/admin/v1/queue/hold", Some(body));
        assert_eq!(refused(&r), "message_id");
    }
    let r = s.admin(
        "POST",
        "/admin/v1/queue/cancel",
        Some(json!({"tenant": "t", "reason": "r".repeat(501)})),
    );
    assert_eq!(refused(&r), "reason");
    let r = s.admin(
        "POST",
        "/admin/v1/queue/cancel",
        Some(json!({"tenant": "t", "all": true})),
    );
    assert!(r.status == 400 || r.status == 422, "{}", r.body);
    for top in ["0", "1001", "x"] {
        let r = s.admin("GET", &format!("/admin/v1/queue?top={top}"), None);
        assert_eq!(refused(&r), "top");
    }

    // Tags are bounded at accept (each is a row of the tag index, migration 0028): 65
    // tags or a tag of 129 bytes is refused by name; 64 are taken, and the last of them
    // finds the message.
    let many: Vec<String> = (0..65).map(|i| format!("many-{i}")).collect();
    let mut m = tagged("even@example.com", "r9@dest0.example", "many tags", &[]);
    m["tags"] = json!(many);
    assert_eq!(refused(&s.post_message(&t, &m)), "tags");
    m["tags"] = json!(["x".repeat(129)]);
    assert_eq!(refused(&s.post_message(&t, &m)), "tags");
    m["tags"] = json!(many[..64]);
    let id = s.submit(&t, &m);
    let (found, _) = page(&s, &t, "tag=many-63");
    assert_eq!(found, [id]);
    let (found, _) = page(&s, &u, "tag=many-63");
    assert!(found.is_empty(), "another tenant's tag: {found:?}");
}

#[test]
fn search_filters_pages_and_never_shows_another_tenant_sqlite() {
    search_filters_pages_and_never_shows_another_tenant(None);
}

#[test]
fn search_filters_pages_and_never_shows_another_tenant_postgres() {
    let db = PgDb::new("sluice_queue_search");
    search_filters_pages_and_never_shows_another_tenant(Some(&db));
}

fn queue(s: &Sluice) -> Value {
    let r = s.admin("GET", "/admin/v1/queue", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// `recipients` of the group `key` in a list of groups.
fn count(groups: &Value, key: &str) -> i64 {
    groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .map_or(0, |g| g["recipients"].as_i64().unwrap())
}

fn state_of(s: &Sluice, key: &str, id: &str) -> String {
    s.message(key, id)["recipients"][0]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn hold_release_and_cancel(postgres: Option<&PgDb>) {
    // The relay does not answer at first: the mail is deferred, waiting for it.
    let port = free_port();
    let setup = setup(port, postgres);
    let s = setup.start();
    let t = s.new_key("t");
    let held = s.submit(&t, &simple("a@example.com", "h@held.example", "held"));
    let by_domain = s.submit(
        &t,
        &simple("a@example.com", "d@hold-me.example", "by domain"),
    );
    let cancelled = s.submit(
        &t,
        &simple("a@example.com", "c@cancel.example", "cancelled"),
    );
    let control = s.submit(&t, &simple("a@example.com", "k@control.example", "control"));
    for id in [&held, &by_domain, &cancelled, &control] {
        s.wait_state(&t, id, "deferred");
    }
    // Deferred, or in flight for a retry at the moment the queue is read.
    let retrying =
        |q: &Value| count(&q["by_state"], "deferred") + count(&q["by_state"], "delivering");
    let q = queue(&s);
    assert_eq!(retrying(&q), 4, "{q}");
    assert_eq!(count(&q["by_tenant"]["top"], "t"), 4, "{q}");
    assert_eq!(count(&q["by_domain"]["top"], "held.example"), 1, "{q}");
    assert_eq!(q["by_domain"]["groups"], 4, "{q}");
    let by_relay: i64 = q["by_relay"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["recipients"].as_i64().unwrap())
        .sum();
    assert_eq!(by_relay, 4, "{q}");
    assert!(
        q["by_state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["oldest_age_ms"].as_i64().is_some()),
        "{q}"
    );

    // Held by the tenant (its own message) and by the operator (a domain). A recipient
    // in flight at that moment is marked and held once its attempt ends.
    let r = post(
        &s,
        &t,
        &format!("/v1/messages/{held}/hold"),
        Some(json!({"reason": "check it"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.admin(
        "POST",
        "/admin/v1/queue/hold",
        Some(json!({"domain": "HOLD-ME.example", "reason": "ops"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for id in [&held, &by_domain] {
        s.wait_state(&t, id, "held");
    }
    // Cancel fails it with the reason; one in flight is left, so ask until it is not.
    wait_for("the cancel to take", || {
        let r = post(
            &s,
            &t,
            &format!("/v1/messages/{cancelled}/cancel"),
            Some(json!({"reason": "customer asked"})),
        );
        let v = r.json();
        if r.status == 200 && v["cancelled"] == 1 {
            Ok(())
        } else {
            Err(r.body.clone())
        }
    });
    let m = s.wait_state(&t, &cancelled, "failed");
    assert_eq!(
        m["recipients"][0]["last_reply"], "cancelled: customer asked",
        "{m}"
    );
    let failed = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "failed")
        .unwrap_or_else(|| panic!("no failed event: {m}"));
    assert_eq!(failed["detail"]["reason"], "customer asked");
    assert_eq!(failed["detail"]["cancelled"], true);
    let kinds = event_kinds(&s.message(&t, &held));
    assert!(kinds.contains(&"held".to_owned()), "{kinds:?}");

    let q = queue(&s);
    assert_eq!(count(&q["by_state"], "held"), 2, "{q}");
    assert_eq!(count(&q["held_by"], "hold"), 2, "{q}");
    assert_eq!(retrying(&q), 1, "{q}");

    // The relay answers: the control message goes; the held ones do not.
    let sink = Sink::start(setup.root(), port, &[]);
    s.wait_state(&t, &control, "delivered");
    assert_eq!(state_of(&s, &t, &held), "held");
    assert_eq!(state_of(&s, &t, &by_domain), "held");
    assert!(sink.with_subject("held").is_empty());

    // Released: by the tenant, then by the operator for the whole tenant.
    let r = post(&s, &t, &format!("/v1/messages/{held}/release"), None);
    assert_eq!(r.json()["released"], 1, "{}", r.body);
    s.wait_state(&t, &held, "delivered");
    assert_eq!(state_of(&s, &t, &by_domain), "held");
    let r = s.admin(
        "POST",
        "/admin/v1/queue/release",
        Some(json!({"tenant": "t"})),
    );
    assert_eq!(r.json()["released"], 1, "{}", r.body);
    s.wait_state(&t, &by_domain, "delivered");
    assert_eq!(sink.with_subject("held").len(), 1);
    assert_eq!(sink.with_subject("by domain").len(), 1);
    assert!(sink.with_subject("cancelled").is_empty());
    assert!(event_kinds(&s.message(&t, &held)).contains(&"released".to_owned()));

    let q = queue(&s);
    for state in ["queued", "delivering", "deferred", "held"] {
        assert_eq!(count(&q["by_state"], state), 0, "{state}: {q}");
    }
    assert_eq!(q["by_tenant"]["groups"], 0, "{q}");
}

#[test]
fn hold_then_release_delivers_and_cancel_fails_with_the_reason_sqlite() {
    hold_release_and_cancel(None);
}

#[test]
fn hold_then_release_delivers_and_cancel_fails_with_the_reason_postgres() {
    let db = PgDb::new("sluice_queue_hold");
    hold_release_and_cancel(Some(&db));
}

fn suspended_tenant_waits_then_flows(postgres: Option<&PgDb>) {
    let port = free_port();
    let setup = setup(port, postgres);
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let (t, u) = (s.new_key("t"), s.new_key("u"));

    let r = s.admin(
        "POST",
        "/admin/v1/tenants/t/suspend",
        Some(json!({"reason": "abuse report"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["suspended"], true);
    let r = s.admin("POST", "/admin/v1/tenants/nobody/suspend", None);
    assert_eq!(r.status, 404, "{}", r.body);

    // Accepted, and stored held.
    let r = s.post_message(&t, &simple("a@example.com", "x@dest.example", "suspended"));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["recipients"][0]["status"], "held", "{}", r.body);
    let waiting = r.json()["id"].as_str().unwrap().to_owned();
    // Another tenant's mail flows meanwhile.
    let other = s.submit(&u, &simple("b@example.com", "y@dest.example", "flows"));
    s.wait_state(&u, &other, "delivered");
    assert_eq!(state_of(&s, &t, &waiting), "held");
    assert!(sink.with_subject("suspended").is_empty());
    let q = queue(&s);
    assert_eq!(q["suspended_tenants"][0]["tenant"], "t", "{q}");
    assert_eq!(q["suspended_tenants"][0]["reason"], "abuse report", "{q}");
    assert_eq!(count(&q["held_by"], "suspended"), 1, "{q}");
    // An operator's release of a hold does not lift a suspension.
    let r = s.admin(
        "POST",
        "/admin/v1/queue/release",
        Some(json!({"tenant": "t"})),
    );
    assert_eq!(r.json()["released"], 0, "{}", r.body);

    let r = s.admin("POST", "/admin/v1/tenants/t/resume", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["recipients"], 1, "{}", r.body);
    s.wait_state(&t, &waiting, "delivered");
    assert_eq!(sink.with_subject("suspended").len(), 1);
    assert!(
        queue(&s)["suspended_tenants"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A relay is suspended by draining it, and resumed.
    let r = s.admin("POST", "/admin/v1/relays/a/suspend", None);
    assert_eq!(
        r.json(),
        json!({"relay": "a", "state": "draining"}),
        "{}",
        r.body
    );
    let r = s.admin("POST", "/admin/v1/relays/a/resume", None);
    assert_eq!(
        r.json(),
        json!({"relay": "a", "state": "active"}),
        "{}",
        r.body
    );
    let r = s.admin("POST", "/admin/v1/relays/nope/suspend", None);
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn a_suspended_tenants_mail_waits_then_flows_on_resume_sqlite() {
    suspended_tenant_waits_then_flows(None);
}

#[test]
fn a_suspended_tenants_mail_waits_then_flows_on_resume_postgres() {
    let db = PgDb::new("sluice_queue_suspend");
    suspended_tenant_waits_then_flows(Some(&db));
}
