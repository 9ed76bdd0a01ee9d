//! Tenant plugins through the real `sluice serve` binary, delivering to a real
//! `smtp-sink`: uploads are checked and refused with reasons, tenants cannot reach one
//! another's plugins, a looping plugin costs only its own tenant (its messages fall back
//! to the pipeline's router and it gets suspended), and switching versions while mail
//! flows neither loses nor duplicates a message.

use crate::support::{self, PgDb, Setup, Sink, Sluice, free_port};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A blocking HTTP/1.1 exchange with a bearer token; the status and the JSON body
/// (`null` when the body is not JSON).
fn http(
    addr: &SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &[u8],
    content_type: &str,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", content_type),
    ];
    let r = support::http(*addr, method, path, &headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

/// Tenants `a` and `b` with a key each, one `smtp-sink` relay, and one or more
/// `sluice serve` hosts on one store (the shared harness's processes and polls).
struct Stack {
    /// The first host's HTTP address.
    addr: SocketAddr,
    /// Dropped first: the hosts stop before their store and sink go.
    hosts: Vec<Sluice>,
    setups: Vec<Setup>,
    keys: Vec<String>,
    sink: Sink,
    store_url: Option<String>,
    extra_plugins: String,
    _pg: Option<PgDb>,
    _root: tempfile::TempDir,
}

impl Stack {
    /// Starts the stack on SQLite with tenants `a` and `b` and a key for each;
    /// `extra_plugins` is added to the `[plugins]` table.
    fn start(extra_plugins: &str) -> Stack {
        Stack::start_on(None, extra_plugins, &[])
    }

    /// The same with more `smtp-sink` options (e.g. `-r RCPT` to refuse with a 4xx).
    fn start_with_sink(sink_args: &[&str]) -> Stack {
        Stack::start_on(None, "", sink_args)
    }

    /// The same on a throwaway PostgreSQL database (which more hosts can share).
    fn start_postgres() -> Stack {
        Stack::start_on(Some(PgDb::new("sluice_tenant_plugins")), "", &[])
    }

    fn start_on(pg: Option<PgDb>, extra_plugins: &str, sink_args: &[&str]) -> Stack {
        let root = tempfile::tempdir().unwrap();
        let sink = Sink::start(root.path(), free_port(), sink_args);
        let mut stack = Stack {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hosts: Vec::new(),
            setups: Vec::new(),
            keys: Vec::new(),
            sink,
            store_url: pg.as_ref().map(PgDb::url),
            extra_plugins: extra_plugins.to_owned(),
            _pg: pg,
            _root: root,
        };
        stack.addr = stack.start_host();
        for t in ["a", "b"] {
            let (st, v) = stack.admin("POST", &format!("/admin/v1/tenants/{t}/keys"), b"");
            assert_eq!(st, 201, "{v}");
            stack.keys.push(v["key"].as_str().unwrap().to_owned());
        }
        stack
    }

    /// Starts one more `sluice serve` on the stack's store (the first host's SQLite
    /// file, or the PostgreSQL database); its HTTP address.
    fn start_host(&mut self) -> SocketAddr {
        let n = self.setups.len() + 1;
        let store = self.store_url.clone();
        let (extra, sink_port) = (self.extra_plugins.clone(), self.sink.port);
        let setup = Setup::custom(|p| {
            let store =
                store.unwrap_or_else(|| format!("sqlite://{}", p.dir.join("sluice.db").display()));
            format!(
                r#"
[server]
http_listen = "127.0.0.1:{http_port}"
node_id = "host{n}"
[store]
url = "{store}"
[admin]
token_env = "{admin_env}"
[plugins]
{extra}
[[relay]]
id = "sink"
url = "smtp://127.0.0.1:{sink_port}"
connection_limit = 16
tags = ["pool:platform"]
[[tenant]]
id = "a"
allowed_sender_domains = ["example.com"]
[[tenant]]
id = "b"
allowed_sender_domains = ["example.com"]
"#,
                http_port = p.http_port,
                admin_env = p.admin_env,
            )
        });
        if self.store_url.is_none() {
            self.store_url = Some(format!(
                "sqlite://{}",
                setup.root().join("sluice.db").display()
            ));
        }
        let host = setup.start_with_args(&["--drain-secs", "1"]);
        let addr = host.addr;
        self.setups.push(setup);
        self.hosts.push(host);
        addr
    }

    fn key(&self, tenant: &str) -> &str {
        &self.keys[if tenant == "a" { 0 } else { 1 }]
    }

    fn admin(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let r = self.hosts[0].request(
            method,
            path,
            Some(self.hosts[0].admin_token()),
            Some("application/json"),
            body,
        );
        (
            r.status,
            serde_json::from_str(&r.body).unwrap_or(Value::Null),
        )
    }

    fn as_tenant(&self, tenant: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        http(
            &self.addr,
            method,
            path,
            self.key(tenant),
            body,
            "application/json",
        )
    }

    fn upload(&self, tenant: &str, stage: &str, query: &str, wasm: &[u8]) -> (u16, Value) {
        http(
            &self.addr,
            "PUT",
            &format!("/v1/plugins/{stage}{query}"),
            self.key(tenant),
            wasm,
            "application/wasm",
        )
    }

    /// Submits one message; its id and Message-ID.
    fn send(&self, tenant: &str, n: usize) -> (String, String) {
        let body = json!({
            "from": "sender@example.com",
            "to": [format!("rcpt{n}@example.net")],
            "subject": format!("message {n} of tenant {tenant}"),
            "text": "hello",
        });
        let (st, v) = self.as_tenant(tenant, "POST", "/v1/messages", body.to_string().as_bytes());
        assert_eq!(st, 202, "{v}");
        (
            v["id"].as_str().unwrap().to_owned(),
            v["message_id"].as_str().unwrap().to_owned(),
        )
    }

    fn message(&self, tenant: &str, id: &str) -> Value {
        let (st, v) = self.as_tenant(tenant, "GET", &format!("/v1/messages/{id}"), b"");
        assert_eq!(st, 200, "{v}");
        v
    }

    /// Submits one message with this subject; the HTTP status and answer.
    fn send_subject(&self, tenant: &str, subject: &str) -> (u16, Value) {
        let body = json!({
            "from": "sender@example.com",
            "to": ["rcpt@example.net"],
            "subject": subject,
            "text": "hello",
        });
        self.as_tenant(tenant, "POST", "/v1/messages", body.to_string().as_bytes())
    }

    /// Waits until the message's recipient is in `state`; returns its view.
    fn wait_state(&self, tenant: &str, id: &str, state: &str) -> Value {
        support::wait_for_within(WAIT, &format!("message {id} {state}"), || {
            let v = self.message(tenant, id);
            if v["recipients"][0]["state"] == state {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        })
    }

    /// Waits until every message's recipient is delivered; returns their views.
    fn wait_delivered(&self, tenant: &str, ids: &[String]) -> Vec<Value> {
        support::wait_for_within(WAIT, "every message delivered", || {
            let views: Vec<Value> = ids.iter().map(|id| self.message(tenant, id)).collect();
            match views
                .iter()
                .find(|v| v["recipients"][0]["state"] != "delivered")
            {
                None => Ok(views),
                Some(pending) => Err(pending.to_string()),
            }
        })
    }

    /// How many transactions the sink holds whose content has `needle`.
    fn sink_count(&self, needle: &str) -> usize {
        std::fs::read_dir(&self.sink.dir)
            .unwrap()
            .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
            .filter(|b| String::from_utf8_lossy(b).contains(needle))
            .count()
    }
}

/// How long these tests wait for mail: tenant plugins compile on first use, which on a
/// loaded 2-core machine with a debug build takes seconds.
const WAIT: Duration = Duration::from_secs(90);

/// Sends 8 messages each for a (whose plugin misbehaves) and b, checks that
/// all are delivered and b saw no plugin error, and returns a's plugin errors
/// (at least 5: enough to suspend).
fn a_misbehaves_beside_b(s: &Stack) -> Vec<Value> {
    let mut a_ids = Vec::new();
    let mut b_ids = Vec::new();
    for n in 0..8 {
        a_ids.push(s.send("a", n).0);
        b_ids.push(s.send("b", n).0);
    }
    for v in s.wait_delivered("b", &b_ids) {
        assert!(events_of(&v, "plugin_error").is_empty(), "b untouched: {v}");
    }
    let errors: Vec<Value> = s
        .wait_delivered("a", &a_ids)
        .iter()
        .flat_map(|v| events_of(v, "plugin_error").into_iter().cloned())
        .collect();
    assert!(errors.len() >= 5, "{errors:?}");
    errors
}

fn events_of<'v>(view: &'v Value, kind: &str) -> Vec<&'v Value> {
    view["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn builtin(name: &str) -> &'static [u8] {
    sluice::builtin::by_name(name).unwrap().wasm
}

fn hostile() -> &'static [u8] {
    sluice::builtin::test_guests::HOSTILE
}

fn tenant_ingest() -> &'static [u8] {
    sluice::builtin::test_guests::TENANT_INGEST
}

fn tenant_send() -> &'static [u8] {
    sluice::builtin::test_guests::TENANT_SEND
}

/// The entry of `stage` in a `GET /v1/plugins` answer.
fn stage_plugins(v: &Value, stage: &str) -> Value {
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["stage"] == stage)
        .cloned()
        .unwrap_or(Value::Null)
}

fn route_plugins(v: &Value) -> Value {
    stage_plugins(v, "route")
}

#[test]
fn uploads_are_checked_and_refused_with_the_reason() {
    let s = Stack::start("max_upload_bytes = 2000000");

    let (st, v) = s.upload("a", "route", "", b"not wasm at all");
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("not_a_component")),
        "{v}"
    );

    let (st, v) = s.upload("a", "route", "", builtin("rater-tiered"));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("wrong_world")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sluice:plugin/router@0.1.0"),
        "names the missing export: {v}"
    );

    let (st, v) = s.upload("a", "route", "?config=mode=panic", hostile());
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("sample_failed")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("trap"),
        "{v}"
    );

    let (st, v) = s.upload("a", "route", "?config=mode=loop", hostile());
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("too_slow")),
        "{v}"
    );

    // The deadline is raised to the platform maximum so that on a loaded
    // machine the memory limit, not the clock, is what stops the bomb.
    let (st, v) = s.upload(
        "a",
        "route",
        "?config=mode=bomb&memory_mib=16&timeout_ms=1000",
        hostile(),
    );
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("sample_failed")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory_limit"),
        "{v}"
    );

    let big = vec![0u8; 2_000_001];
    let (st, v) = s.upload("a", "route", "", &big);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("2000000"),
        "{v}"
    );

    let (st, v) = s.upload(
        "a",
        "route",
        "?timeout_ms=999999",
        builtin("router-weighted"),
    );
    assert_eq!(
        (st, v["error"]["field"].as_str()),
        (422, Some("timeout_ms")),
        "{v}"
    );
    let (st, v) = s.upload("a", "sorting", "", builtin("router-weighted"));
    assert_eq!(st, 404, "{v}");
    // Every stage is a tenant's to replace, each checked against its own world.
    let (st, v) = s.upload("a", "send", "", builtin("router-weighted"));
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (422, Some("wrong_world")),
        "{v}"
    );

    // Nothing refused was stored.
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    assert_eq!(v["plugins"], json!([]), "{v}");

    let (st, v) = s.upload(
        "a",
        "route",
        "?config=window_secs=60",
        builtin("router-weighted"),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["version"]["version"], 1);
    assert_eq!(v["active"], true);
    assert_eq!(v["version"]["size"], builtin("router-weighted").len());
    assert!(v["check"]["answer"]["relays"].is_array(), "{v}");
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    let route = route_plugins(&v);
    assert_eq!(route["active_version"], 1, "{v}");
    assert_eq!(
        route["versions"][0]["config"],
        json!([["window_secs", "60"]])
    );
    assert_eq!(route["versions"][0]["uploaded_by"], s.key("a")[..13]);
}

#[test]
fn tenants_cannot_reach_each_others_plugins() {
    let s = Stack::start("");
    for mode in ["first", "second"] {
        let (st, v) = s.upload("a", "route", &format!("?config=mode={mode}"), hostile());
        assert_eq!(st, 201, "{v}");
    }
    let (_, v) = s.as_tenant("b", "GET", "/v1/plugins", b"");
    assert_eq!(v["plugins"], json!([]), "b sees none of a's versions: {v}");
    // b has no version 2 (a has): not found, and a's active version is untouched.
    let (st, _) = s.as_tenant(
        "b",
        "POST",
        "/v1/plugins/route/activate",
        br#"{"version": 2}"#,
    );
    assert_eq!(st, 404);
    let (st, _) = s.as_tenant("b", "POST", "/v1/plugins/route/rollback", b"");
    assert_eq!(st, 404);
    let (_, v) = s.as_tenant("b", "GET", "/v1/plugins/route/logs", b"");
    assert_eq!(v["lines"], json!([]), "{v}");
    // A tenant key is no admin token.
    let (st, _) = s.as_tenant("b", "GET", "/admin/v1/tenants/a/plugins", b"");
    assert_eq!(st, 401);
    let (st, _) = s.admin("GET", "/admin/v1/tenants/nobody/plugins", b"");
    assert_eq!(st, 404);
    let (st, v) = s.admin("GET", "/admin/v1/tenants/a/plugins", b"");
    assert_eq!(st, 200);
    assert_eq!(route_plugins(&v)["active_version"], 2, "{v}");

    // a rolls back its own; the admin activates for a.
    let (st, v) = s.as_tenant("a", "POST", "/v1/plugins/route/rollback", b"");
    assert_eq!(
        (st, &v["active"]["version"]["version"]),
        (200, &json!(1)),
        "{v}"
    );
    let (st, v) = s.admin(
        "POST",
        "/admin/v1/tenants/a/plugins/route/activate",
        br#"{"version": 2}"#,
    );
    assert_eq!(
        (st, &v["active"]["version"]["version"]),
        (200, &json!(2)),
        "{v}"
    );
}

#[test]
fn a_looping_plugin_costs_only_its_own_tenant() {
    let s = Stack::start("");
    // Only the admin may skip the sample run, which would refuse a looping plugin.
    let (st, v) = s.admin(
        "PUT",
        "/admin/v1/tenants/a/plugins/route?config=mode=loop&skip_sample=true",
        hostile(),
    );
    assert_eq!(st, 201, "{v}");

    // a's messages still go out, through the pipeline's router.
    let errors = a_misbehaves_beside_b(&s);
    assert!(
        errors.iter().all(|e| e["detail"]["error"] == "timeout"),
        "{errors:?}"
    );
    let suspended: Vec<_> = errors
        .iter()
        .filter(|e| e["detail"]["suspended"] == true)
        .collect();
    assert_eq!(suspended.len(), 1, "{errors:?}");
    assert!(
        suspended[0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("failed calls"),
        "{suspended:?}"
    );

    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    let route = route_plugins(&v);
    assert_eq!(route["suspended"], true, "{v}");
    assert!(
        route["versions"][0]["stats"]["errors"]["timeout"]
            .as_u64()
            .unwrap()
            >= 5,
        "{v}"
    );
    let (_, logs) = s.as_tenant("a", "GET", "/v1/plugins/route/logs", b"");
    assert!(logs.to_string().contains("suspended"), "{logs}");

    // After the suspension a's mail goes straight to the pipeline's router.
    let (late, _) = s.send("a", 100);
    let v = &s.wait_delivered("a", &[late])[0];
    assert!(events_of(v, "plugin_error").is_empty(), "{v}");

    // A new upload re-enables: the next message is routed by it, without errors.
    let (st, v) = s.upload("a", "route", "?config=mode=first", hostile());
    assert_eq!(st, 201, "{v}");
    let (next, _) = s.send("a", 101);
    let v = &s.wait_delivered("a", &[next])[0];
    assert!(events_of(v, "plugin_error").is_empty(), "{v}");
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    let route = route_plugins(&v);
    assert_eq!(
        (route["active_version"].clone(), route["suspended"].clone()),
        (json!(2), json!(false)),
        "{v}"
    );
    assert_eq!(route["versions"][1]["stats"]["calls"], 1, "{v}");
}

#[test]
fn switching_versions_while_mail_flows_loses_and_duplicates_nothing() {
    let s = Stack::start("");
    for q in ["?config=mode=first", "?config=window_secs=60"] {
        let wasm = if q.contains("mode") {
            hostile()
        } else {
            builtin("router-weighted")
        };
        let (st, v) = s.upload("a", "route", q, wasm);
        assert_eq!(st, 201, "{v}");
    }
    let switcher = {
        let (addr, key) = (s.addr, s.key("a").to_owned());
        std::thread::spawn(move || {
            let mut switches = 0;
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let (st, v) = http(
                    &addr,
                    "POST",
                    "/v1/plugins/route/activate",
                    &key,
                    br#"{"version": 1}"#,
                    "application/json",
                );
                assert_eq!(st, 200, "{v}");
                let (st, v) = http(
                    &addr,
                    "POST",
                    "/v1/plugins/route/rollback",
                    &key,
                    b"",
                    "application/json",
                );
                assert_eq!(st, 200, "{v}");
                switches += 2;
            }
            switches
        })
    };
    let mut sent = Vec::new();
    for n in 0..60 {
        sent.push(s.send("a", n));
        std::thread::sleep(Duration::from_millis(40));
    }
    let switches = switcher.join().unwrap();
    assert!(switches >= 10, "{switches}");
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    for v in s.wait_delivered("a", &ids) {
        assert_eq!(events_of(&v, "delivered").len(), 1, "{v}");
        assert!(events_of(&v, "plugin_error").is_empty(), "{v}");
    }
    for (_, message_id) in &sent {
        assert_eq!(
            s.sink_count(message_id),
            1,
            "{message_id} reached the sink once"
        );
    }
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    let calls: u64 = route_plugins(&v)["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["stats"]["calls"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        calls, 60,
        "every message was routed by one of the tenant's versions: {v}"
    );
}

#[test]
fn the_cli_uploads_and_reports_refusals() {
    let s = Stack::start("");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("router.wasm");
    std::fs::write(&good, builtin("router-weighted")).unwrap();
    let bad = dir.path().join("rater.wasm");
    std::fs::write(&bad, builtin("rater-tiered")).unwrap();
    let url = format!("http://{}", s.addr);
    let run = |file: &PathBuf, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["plugin", "upload", "--stage", "route"])
            .arg(file)
            .args(["--url", &url, "--key", s.key("a")])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&good, &["--config", "window_secs=60", "--timeout-ms", "40"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("ok: ")
            && stdout.contains("is version 1 of the route plugin")
            && stdout.contains("; active"),
        "{stdout}"
    );
    let out = run(&bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("422 wrong_world") && stderr.contains("router"),
        "{stderr}"
    );
    let out = run(&good, &["--no-activate"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2"));

    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    let route = route_plugins(&v);
    assert_eq!(route["active_version"], 1, "{v}");
    assert_eq!(route["versions"][0]["timeout_ms"], 40, "{v}");
    assert_eq!(
        route["versions"][0]["config"],
        json!([["window_secs", "60"]])
    );
}

#[test]
fn a_version_uploaded_on_one_host_goes_live_on_the_other() {
    let mut s = Stack::start_postgres();
    let other = s.start_host();
    let (st, v) = s.upload("a", "route", "?config=mode=first", hostile());
    assert_eq!(st, 201, "{v}");
    // Host 2 has not routed anything for a yet; send through it until it has routed a
    // message with version 1 (it re-reads the active versions every few seconds, then
    // compiles the new version: on a loaded 2-core machine with a debug build that can
    // take tens of seconds, so the bound is generous; it only stops a hung test).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    loop {
        let body =
            json!({"from": "s@example.com", "to": [format!("r{n}@example.net")], "text": "x"});
        let (st, v) = http(
            &other,
            "POST",
            "/v1/messages",
            s.key("a"),
            body.to_string().as_bytes(),
            "application/json",
        );
        assert_eq!(st, 202, "{v}");
        n += 1;
        let (_, v) = http(
            &other,
            "GET",
            "/v1/plugins",
            s.key("a"),
            b"",
            "application/json",
        );
        if route_plugins(&v)["versions"][0]["stats"]["calls"]
            .as_u64()
            .unwrap_or(0)
            > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version 1 never ran on host 2: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // An upload through host 2 is stored for every host: host 1 lists it as active.
    let (st, v) = http(
        &other,
        "PUT",
        "/v1/plugins/route?config=mode=second",
        s.key("a"),
        hostile(),
        "application/wasm",
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    assert_eq!(
        (st, &route_plugins(&v)["active_version"]),
        (200, &json!(2)),
        "{v}"
    );
}

#[test]
fn a_tenant_ingest_plugin_rejects_and_adds_headers_for_its_own_mail_only() {
    let s = Stack::start("");
    let (st, v) = s.upload(
        "a",
        "ingest",
        "?config=reject_subject=forbidden&config=add_header=X-Tenant-Filter:%20checked-by-a",
        tenant_ingest(),
    );
    assert_eq!(st, 201, "{v}");

    // a's plugin runs after the platform's: it refuses a's subject…
    let (st, v) = s.send_subject("a", "a forbidden subject");
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("refused by this tenant"), "{v}");
    // …and marks what it accepts, which arrives at the relay with the header.
    let (st, v) = s.send_subject("a", "a fine subject");
    assert_eq!(st, 202, "{v}");
    let a_id = v["id"].as_str().unwrap().to_owned();
    // b has no ingest plugin: the same subject is accepted, unmarked.
    let (st, v) = s.send_subject("b", "a forbidden subject");
    assert_eq!(st, 202, "{v}");
    let b_id = v["id"].as_str().unwrap().to_owned();
    s.wait_delivered("a", std::slice::from_ref(&a_id));
    s.wait_delivered("b", std::slice::from_ref(&b_id));
    assert_eq!(s.sink_count("X-Tenant-Filter: checked-by-a"), 1);
    assert_eq!(s.sink_count("a forbidden subject"), 1, "only b's");

    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    let ingest = stage_plugins(&v, "ingest");
    assert_eq!(ingest["versions"][0]["stats"]["calls"], 2, "{v}");
}

#[test]
fn a_trapping_tenant_ingest_plugin_falls_back_and_is_suspended() {
    let s = Stack::start("");
    let (st, v) = s.admin(
        "PUT",
        "/admin/v1/tenants/a/plugins/ingest?config=mode=panic&skip_sample=true",
        tenant_ingest(),
    );
    assert_eq!(st, 201, "{v}");
    // Submitted one after the other, so that the suspension falls on a known message.
    let mut a_ids = Vec::new();
    for n in 0..6 {
        a_ids.push(s.send("a", n).0);
    }
    let b_ids: Vec<String> = (0..3).map(|n| s.send("b", n).0).collect();
    // Every message is accepted on the platform's decision and delivered.
    let a_views = s.wait_delivered("a", &a_ids);
    for v in s.wait_delivered("b", &b_ids) {
        assert!(events_of(&v, "plugin_error").is_empty(), "b untouched: {v}");
    }
    let errors: Vec<Vec<&Value>> = a_views
        .iter()
        .map(|v| events_of(v, "plugin_error"))
        .collect();
    for (n, e) in errors.iter().enumerate().take(5) {
        assert_eq!(e.len(), 1, "message {n}: {e:?}");
        assert_eq!(e[0]["detail"]["stage"], "ingest", "{e:?}");
        assert_eq!(e[0]["detail"]["error"], "trap", "{e:?}");
        assert_eq!(e[0]["detail"]["suspended"], n == 4, "message {n}: {e:?}");
    }
    // Suspended: the sixth goes through the platform's plugin alone.
    assert!(errors[5].is_empty(), "{:?}", errors[5]);
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    let ingest = stage_plugins(&v, "ingest");
    assert_eq!(ingest["suspended"], true, "{v}");
    assert_eq!(ingest["versions"][0]["stats"]["errors"]["trap"], 5, "{v}");

    // The suspension is one `plugin.suspended` event in the tenant's log, about no
    // message, after the messages before it and before the next one.
    let events = support::wait_for_within(WAIT, "the sixth message's events", || {
        let (st, page) = s.as_tenant("a", "GET", "/v1/events?limit=1000", b"");
        assert_eq!(st, 200, "{page}");
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let delivered = events
            .iter()
            .filter(|e| e["type"] == "message.delivered")
            .count();
        if delivered == a_ids.len() {
            Ok(events)
        } else {
            Err(format!("{delivered} delivered so far: {page:#}"))
        }
    });
    let suspended: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "plugin.suspended")
        .collect();
    assert_eq!(suspended.len(), 1, "{events:#?}");
    let (at, e) = suspended[0];
    assert_eq!(e["message_id"], Value::Null, "{e}");
    assert_eq!(e["recipient"], Value::Null, "{e}");
    assert_eq!(e["details"]["stage"], "ingest", "{e}");
    assert_eq!(e["details"]["version"], 1, "{e}");
    assert!(
        e["details"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("5 failed calls")),
        "{e}"
    );
    let first_of = |id: &str| {
        events
            .iter()
            .position(|e| e["message_id"] == id)
            .unwrap_or_else(|| panic!("no event of {id}: {events:#?}"))
    };
    assert!(first_of(&a_ids[3]) < at, "{events:#?}");
    assert!(at < first_of(&a_ids[5]), "{events:#?}");
    // Listed by its type; the other tenant has none.
    let (_, only) = s.as_tenant("a", "GET", "/v1/events?types=plugin.suspended", b"");
    assert_eq!(only["events"].as_array().map(Vec::len), Some(1), "{only}");
    let (_, b) = s.as_tenant("b", "GET", "/v1/events?types=plugin.suspended", b"");
    assert_eq!(b["events"].as_array().map(Vec::len), Some(0), "{b}");
}

#[test]
fn a_tenant_send_plugin_fails_on_4xx_where_the_platform_retries() {
    // The relay refuses every recipient with a 4xx.
    let s = Stack::start_with_sink(&["-r", "RCPT"]);
    let (st, v) = s.upload("a", "send", "", tenant_send());
    assert_eq!(st, 201, "{v}");
    let (a_id, _) = s.send("a", 1);
    let (b_id, _) = s.send("b", 1);
    let a = s.wait_state("a", &a_id, "failed");
    let failed = events_of(&a, "failed");
    assert!(
        failed[0]["detail"]["send_reason"]
            .as_str()
            .unwrap()
            .contains("tenant policy: no retries"),
        "{a}"
    );
    // b's reply is read by the pipeline's policy: a retry later.
    let b = s.wait_state("b", &b_id, "deferred");
    assert!(events_of(&b, "failed").is_empty(), "{b}");
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    assert_eq!(
        stage_plugins(&v, "send")["versions"][0]["stats"]["calls"],
        1,
        "{v}"
    );
}

#[test]
fn a_trapping_tenant_send_plugin_falls_back_and_is_suspended() {
    let s = Stack::start("");
    let (st, v) = s.admin(
        "PUT",
        "/admin/v1/tenants/a/plugins/send?config=mode=panic&skip_sample=true",
        tenant_send(),
    );
    assert_eq!(st, 201, "{v}");
    // The pipeline's send policy reads a's replies instead: all delivered.
    let errors = a_misbehaves_beside_b(&s);
    assert!(
        errors
            .iter()
            .all(|e| e["detail"]["stage"] == "send" && e["detail"]["error"] == "trap"),
        "{errors:?}"
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e["detail"]["suspended"] == true)
            .count(),
        1,
        "{errors:?}"
    );
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    assert_eq!(stage_plugins(&v, "send")["suspended"], true, "{v}");
    // Suspended: a's next reply goes to the pipeline's policy alone.
    let (late, _) = s.send("a", 100);
    let v = &s.wait_delivered("a", &[late])[0];
    assert!(events_of(v, "plugin_error").is_empty(), "{v}");
}

#[test]
fn a_tenant_bounce_plugin_classifies_its_own_refusals() {
    let s = Stack::start_with_sink(&["-r", "RCPT"]);
    let (st, v) = s.upload("a", "bounce", "", builtin("bounce-dsn"));
    assert_eq!(st, 201, "{v}");
    let (a_id, _) = s.send("a", 1);
    let (b_id, _) = s.send("b", 1);
    let a = s.wait_state("a", &a_id, "deferred");
    s.wait_state("b", &b_id, "deferred");
    // a's refusal was read by a's plugin (and classified), b's by the pipeline's.
    let deferred = events_of(&a, "deferred");
    assert_eq!(deferred[0]["detail"]["status"], "4.3.0", "{a}");
    let (_, v) = s.as_tenant("a", "GET", "/v1/plugins", b"");
    assert_eq!(
        stage_plugins(&v, "bounce")["versions"][0]["stats"]["calls"],
        1,
        "{v}"
    );
    let (_, v) = s.as_tenant("b", "GET", "/v1/plugins", b"");
    assert_eq!(v["plugins"], json!([]), "{v}");
}

#[test]
fn a_tenant_router_that_fails_closed_defers_its_own_mail_until_fixed() {
    let s = Stack::start("max_calls_in_flight = 4");
    let (st, v) = s.admin(
        "PUT",
        "/admin/v1/tenants/a/plugins/route?config=mode=panic&skip_sample=true&on_failure=defer&calls_in_flight=2",
        hostile(),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["check"]["on_failure"], "defer", "{v}");
    assert_eq!(v["check"]["calls_in_flight"], 2, "{v}");
    // Above the platform's maximum: refused, naming it.
    let (st, v) = s.upload(
        "a",
        "route",
        "?calls_in_flight=5",
        builtin("router-weighted"),
    );
    assert_eq!(st, 422, "{v}");
    assert!(v.to_string().contains("maximum of 4"), "{v}");

    // One after the other, so that the suspension falls on a known message.
    let a_ids: Vec<String> = (0..6)
        .map(|n| {
            let (id, _) = s.send("a", n);
            s.wait_state("a", &id, "deferred");
            id
        })
        .collect();
    let b_ids: Vec<String> = (0..3).map(|n| s.send("b", n).0).collect();
    for v in s.wait_delivered("b", &b_ids) {
        assert!(events_of(&v, "plugin_error").is_empty(), "b untouched: {v}");
    }
    for (n, id) in a_ids.iter().enumerate() {
        let v = s.message("a", id);
        assert!(events_of(&v, "routed").is_empty(), "nobody routed it: {v}");
        let deferred = events_of(&v, "deferred");
        let reason = deferred[0]["detail"]["reason"].as_str().unwrap();
        assert!(reason.contains("fail closed"), "{v}");
        let errors = events_of(&v, "plugin_error");
        if n < 5 {
            assert!(reason.contains("failed (trap"), "{v}");
            assert_eq!(errors.len(), 1, "message {n}: {v}");
            assert_eq!(errors[0]["detail"]["on_failure"], "defer", "{v}");
            assert_eq!(errors[0]["detail"]["suspended"], n == 4, "message {n}: {v}");
        } else {
            // Suspended: deferred without calling it, saying why.
            assert!(reason.contains("is suspended"), "{v}");
            assert!(errors.is_empty(), "{v}");
        }
    }
    assert_eq!(s.sink_count("of tenant a"), 0, "nothing of a's was sent");

    // A working upload re-enables the stage: the deferred mail goes out on its retry.
    let (st, v) = s.upload(
        "a",
        "route",
        "?on_failure=defer",
        builtin("router-weighted"),
    );
    assert_eq!(st, 201, "{v}");
    s.wait_delivered("a", &a_ids);
    assert_eq!(s.sink_count("of tenant a"), 6);
}

/// Issue 16, attack 3: tenant a's route plugin is slow (valid answers, one call at a
/// time) and a floods. Delivery slots are few (8), so before fair dispatch a's groups
/// held every slot while they waited for a's plugin and b's mail queued behind a's whole
/// backlog. Now b's mail goes out while a's backlog is still mostly waiting, and all of
/// a's is delivered too.
#[test]
fn a_tenant_whose_router_is_slow_holds_up_only_its_own_mail() {
    let s = Stack::start("[delivery]\nmax_in_flight = 8\n");
    let (st, v) = s.upload(
        "a",
        "route",
        "?config=spin=300000000&timeout_ms=1000&calls_in_flight=1",
        sluice::builtin::test_guests::SLOW_ROUTER,
    );
    assert_eq!(st, 201, "{v}");
    let backlog = 30;
    let a_ids: Vec<String> = (0..backlog).map(|n| s.send("a", n).0).collect();
    let b_ids: Vec<String> = (0..5).map(|n| s.send("b", n).0).collect();
    s.wait_delivered("b", &b_ids);
    let a_delivered = a_ids
        .iter()
        .filter(|id| s.message("a", id)["recipients"][0]["state"] == "delivered")
        .count();
    eprintln!("b's 5 were delivered when {a_delivered} of a's {backlog} were");
    assert!(
        a_delivered <= backlog / 2,
        "b waited for {a_delivered} of a's {backlog} messages"
    );
    for v in s.wait_delivered("a", &a_ids) {
        assert!(
            events_of(&v, "plugin_error").is_empty(),
            "a's plugin answered: {v}"
        );
    }
}
