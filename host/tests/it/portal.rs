//! The tenant portal (`/ui`, issue 24) through the real binary: signing in with a key
//! and out again (the session ends on the server), a failed sign-in that echoes
//! nothing, the sign-in limiter, a test message sent from the dashboard and seen
//! delivered, searched and opened, keys made (shown once) and revoked, suppressions
//! added and removed; forms without the session's CSRF token refused (403); another
//! tenant's ids a 404; `<script>` in a tag escaped. Then headless Chromium through
//! WebDriver (`chromedriver`, installed by tests/run) signs in, sends a message from the
//! dashboard and sees it reach `delivered` on the messages page.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;

// ---- a browser without a browser: a cookie jar over the test HTTP client ----

/// A client that keeps the cookies the portal sets, as a browser would.
struct Jar {
    addr: SocketAddr,
    cookies: BTreeMap<String, String>,
}

/// Percent-encodes a form or query value.
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

impl Jar {
    fn new(s: &Sluice) -> Jar {
        Jar {
            addr: s.addr,
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &Response) {
        for (n, v) in &r.headers {
            if n != "set-cookie" {
                continue;
            }
            let first = v.split(';').next().unwrap_or("");
            let (name, value) = first.split_once('=').expect("a cookie");
            if value.is_empty() || v.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn send(&mut self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Response {
        let cookies = self.cookie_header();
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if !cookies.is_empty() {
            headers.push(("Cookie", &cookies));
        }
        let r = http(self.addr, method, path, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        self.keep(&r);
        r
    }

    fn get(&mut self, path: &str) -> Response {
        self.send("GET", path, &[], b"")
    }

    /// A form POST of `fields` (URL-encoded).
    fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Response {
        let body = fields
            .iter()
            .map(|(n, v)| format!("{n}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.send(
            "POST",
            path,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        )
    }

    /// Signs in with `key`: the form's token, then the key.
    fn sign_in(&mut self, key: &str) -> Response {
        let form = self.get("/ui/login");
        assert_eq!(form.status, 200, "{}", form.body);
        let token = csrf(&form.body);
        self.post("/ui/login", &[("csrf", &token), ("key", key)])
    }

    /// The CSRF token of the page at `path` (signed in).
    fn token(&mut self, path: &str) -> String {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        csrf(&r.body)
    }
}

/// The value of the first hidden `csrf` field of a page.
fn csrf(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

fn location(r: &Response) -> &str {
    r.header("location")
        .unwrap_or_else(|| panic!("no Location in HTTP {}: {}", r.status, r.body))
}

fn setup_two_tenants(relay_port: u16, server: &str, postgres: Option<&PgDb>) -> Setup {
    let tables = format!(
        "{}{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{relay_port}"), ""),
        tenant_table("t", &["example.com"]),
        tenant_table("u", &["example.org"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        server,
        ..Default::default()
    });
    if let Some(db) = postgres {
        setup.use_store(&db.url());
    }
    setup
}

fn live_keys(s: &Sluice, tenant: &str) -> usize {
    let r = s.admin("GET", &format!("/admin/v1/tenants/{tenant}/keys"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["revoked_at_ms"].is_null())
        .count()
}

// ---- the flows ----

fn sign_in_send_search_keys_suppressions_and_sign_out(postgres: Option<&PgDb>) {
    let port = free_port();
    let setup = setup_two_tenants(port, "", postgres);
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let mut b = Jar::new(&s);

    // Not signed in: every page sends to the sign-in page.
    for path in [
        "/ui",
        "/ui/dashboard",
        "/ui/messages",
        "/ui/keys",
        "/ui/suppressions",
    ] {
        let r = b.get(path);
        assert_eq!((r.status, location(&r)), (303, "/ui/login"), "{path}");
    }
    let form = b.get("/ui/login");
    assert_eq!(form.status, 200);
    let csp = form.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'none'"),
        "{csp}"
    );
    assert_eq!(
        form.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(!form.body.contains("<script"), "{}", form.body);
    let css = b.get("/ui/assets/portal.css");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));

    // A wrong key: 401, and what was typed is not on the page.
    let typed = "sluice_0123456789abcdefWRONGKEYtyped";
    let token = csrf(&form.body);
    let r = b.post("/ui/login", &[("csrf", &token), ("key", typed)]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        !r.body.contains(typed) && !r.body.contains("WRONGKEY"),
        "{}",
        r.body
    );
    assert!(!b.cookies.contains_key("sluice_session"));

    // The right key: a session cookie HttpOnly, SameSite=Strict, on /ui only.
    let r = b.sign_in(&key);
    assert_eq!(
        (r.status, location(&r)),
        (303, "/ui/dashboard"),
        "{}",
        r.body
    );
    let set = r
        .headers
        .iter()
        .find(|(n, v)| n == "set-cookie" && v.starts_with("sluice_session="))
        .map(|(_, v)| v.clone())
        .expect("a session cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "no TLS here, so not Secure: {set}");
    let secret = b.cookies["sluice_session"].clone();
    assert_eq!(secret.len(), 64, "256 random bits in hex");
    assert!(!secret.contains(&key) && !key.contains(&secret));

    // The dashboard, and a test message sent from it.
    let dash = b.get("/ui/dashboard");
    assert_eq!(dash.status, 200, "{}", dash.body);
    assert_eq!(dash.header("cache-control"), Some("no-store"));
    for text in [
        "Delivery rate",
        "Bounce rate",
        "In the queue now",
        "<svg",
        "Tenant <strong>t</strong>",
    ] {
        assert!(dash.body.contains(text), "{text} missing: {}", dash.body);
    }
    assert!(!dash.body.contains(&key), "the key is never on a page");
    let token = csrf(&dash.body);
    let r = b.post(
        "/ui/test-message",
        &[
            ("csrf", &token),
            ("from", "me@example.com"),
            ("to", "you@dest.example"),
            ("subject", "portal test 1"),
            ("text", "hello"),
            ("tags", "portal-test, first"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let id = location(&r)
        .strip_prefix("/ui/messages/")
        .unwrap_or_else(|| panic!("{}", location(&r)))
        .to_owned();
    s.wait_state(&key, &id, "delivered");
    wait_for("the sink to have the portal's message", || {
        let n = _sink.with_subject("portal test 1").len();
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} kept"))
        }
    });

    // Searched for, and opened: its attempt, relay and reply.
    let page = b.get("/ui/messages?state=delivered&to=you%40dest.example&tag=portal-test");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(&format!("/ui/messages/{id}")),
        "{}",
        page.body
    );
    let none = b.get("/ui/messages?state=bounced");
    assert!(!none.body.contains(&id) && none.body.contains("No message matches"));
    let bad = b.get("/ui/messages?to=not-an-address");
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("to must be an address"), "{}", bad.body);
    let bad = b.get("/ui/messages?since=yesterday");
    assert_eq!(bad.status, 422, "{}", bad.body);
    let one = b.get(&format!("/ui/messages/{id}"));
    assert_eq!(one.status, 200, "{}", one.body);
    for text in [
        "you@dest.example",
        "state-delivered",
        "delivered",
        ">a<",
        "250",
    ] {
        assert!(one.body.contains(text), "{text} missing: {}", one.body);
    }
    // Nothing waits: no cancel or retry button.
    assert!(!one.body.contains("/cancel\"") && !one.body.contains("/retry\""));

    // Cancel through the portal: a message stored held (its tenant suspended) fails.
    let r = s.admin("POST", "/admin/v1/tenants/t/suspend", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let held = s.submit(
        &key,
        &simple("me@example.com", "later@dest.example", "portal held"),
    );
    s.wait_state(&key, &held, "held");
    let page = b.get(&format!("/ui/messages/{held}"));
    assert!(
        page.body.contains(&format!("/ui/messages/{held}/cancel")),
        "{}",
        page.body
    );
    let r = b.post(
        &format!("/ui/messages/{held}/cancel"),
        &[("csrf", &csrf(&page.body))],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(location(&r), format!("/ui/messages/{held}?done=cancelled"));
    s.wait_state(&key, &held, "failed");
    let page = b.get(location(&r));
    assert!(
        page.body.contains("Cancelled: its waiting recipients"),
        "{}",
        page.body
    );
    let r = s.admin("POST", "/admin/v1/tenants/t/resume", None);
    assert_eq!(r.status, 200, "{}", r.body);

    // Keys: made, shown once, working; revoked, refused.
    let before = live_keys(&s, "t");
    let token = b.token("/ui/keys");
    let made = b.post("/ui/keys", &[("csrf", &token)]);
    assert_eq!(made.status, 200, "{}", made.body);
    assert_eq!(made.header("cache-control"), Some("no-store"));
    let at = made
        .body
        .find("value=\"sluice_")
        .expect("the new key on the page")
        + 7;
    let new_key = made.body[at..at + made.body[at..].find('"').unwrap()].to_owned();
    assert_eq!(live_keys(&s, "t"), before + 1);
    assert_eq!(
        s.request("GET", "/v1/messages", Some(&new_key), None, b"")
            .status,
        200
    );
    let listed = b.get("/ui/keys");
    assert!(!listed.body.contains(&new_key), "shown once only");
    let new_id = s.admin("GET", "/admin/v1/tenants/t/keys", None).json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| new_key.starts_with(k["prefix"].as_str().unwrap()))
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .unwrap();
    let r = b.post(
        &format!("/ui/keys/{new_id}/revoke"),
        &[("csrf", &csrf(&listed.body))],
    );
    assert_eq!((r.status, location(&r)), (303, "/ui/keys"), "{}", r.body);
    assert_eq!(
        s.request("GET", "/v1/messages", Some(&new_key), None, b"")
            .status,
        401
    );

    // Suppressions: added, listed by the API, removed.
    let token = b.token("/ui/suppressions");
    let r = b.post(
        "/ui/suppressions",
        &[
            ("csrf", &token),
            ("address", "Gone@Dest.example"),
            ("note", "asked"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let api = s
        .request("GET", "/v1/suppressions", Some(&key), None, b"")
        .json();
    assert_eq!(
        api["suppressions"][0]["address"], "gone@dest.example",
        "{api}"
    );
    let list = b.get("/ui/suppressions");
    assert!(list.body.contains("gone@dest.example"), "{}", list.body);
    let r = b.post(
        "/ui/suppressions",
        &[("csrf", &token), ("address", "no-at-sign")],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let r = b.post(
        "/ui/suppressions/remove",
        &[("csrf", &token), ("address", "gone@dest.example")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let api = s
        .request("GET", "/v1/suppressions", Some(&key), None, b"")
        .json();
    assert_eq!(api["suppressions"], json!([]), "{api}");

    // Signing out ends the session on the server: the old cookie opens nothing.
    let token = b.token("/ui/dashboard");
    let r = b.post("/ui/logout", &[("csrf", &token)]);
    assert_eq!((r.status, location(&r)), (303, "/ui/login"));
    assert!(!b.cookies.contains_key("sluice_session"));
    b.cookies.insert("sluice_session".into(), secret);
    let r = b.get("/ui/dashboard");
    assert_eq!((r.status, location(&r)), (303, "/ui/login"));

    // A session ends with the key it was opened with.
    let mut c = Jar::new(&s);
    let second = s.new_key("t");
    assert_eq!(c.sign_in(&second).status, 303);
    assert_eq!(c.get("/ui/dashboard").status, 200);
    let id2 = s.admin("GET", "/admin/v1/tenants/t/keys", None).json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| second.starts_with(k["prefix"].as_str().unwrap()))
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .unwrap();
    let r = s.admin("DELETE", &format!("/admin/v1/tenants/t/keys/{id2}"), None);
    assert_eq!(r.status, 204);
    assert_eq!(c.get("/ui/dashboard").status, 303);

    // Behind a TLS proxy the cookie is Secure.
    let mut d = Jar::new(&s);
    let form = d.send("GET", "/ui/login", &[("X-Forwarded-Proto", "https")], b"");
    let set = form.header("set-cookie").unwrap_or_default().to_owned();
    assert!(set.contains("; Secure"), "{set}");
}

#[test]
fn a_tenant_signs_in_sends_searches_manages_keys_and_suppressions_and_signs_out_sqlite() {
    sign_in_send_search_keys_suppressions_and_sign_out(None);
}

#[test]
fn a_tenant_signs_in_sends_searches_manages_keys_and_suppressions_and_signs_out_postgres() {
    let db = PgDb::new("sluice_portal_flow");
    sign_in_send_search_keys_suppressions_and_sign_out(Some(&db));
}

#[test]
fn forms_without_the_sessions_csrf_token_are_refused() {
    let port = free_port();
    let setup = setup_two_tenants(port, "", None);
    let s = setup.start();
    let (t, u) = (s.new_key("t"), s.new_key("u"));
    let mut b = Jar::new(&s);
    let mut other = Jar::new(&s);
    assert_eq!(b.sign_in(&t).status, 303);
    assert_eq!(other.sign_in(&u).status, 303);
    let mine = b.token("/ui/keys");
    let theirs = other.token("/ui/keys");
    assert_ne!(mine, theirs, "tokens are per session");
    let before = live_keys(&s, "t");
    let zeros = "0".repeat(64);
    for (what, fields) in [
        ("no token", vec![]),
        ("an empty token", vec![("csrf", "")]),
        ("a wrong token", vec![("csrf", zeros.as_str())]),
        ("another session's token", vec![("csrf", theirs.as_str())]),
        ("a token one character short", vec![("csrf", &mine[..63])]),
    ] {
        for path in [
            "/ui/keys",
            "/ui/logout",
            "/ui/test-message",
            "/ui/suppressions",
        ] {
            let r = b.post(path, &fields);
            assert_eq!(r.status, 403, "{what} on {path}: {}", r.body);
            assert!(r.body.contains("CSRF"), "{}", r.body);
            assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        }
    }
    assert_eq!(live_keys(&s, "t"), before, "no key was made");
    assert_eq!(b.get("/ui/dashboard").status, 200, "still signed in");
    // The sign-in form's token too: without its cookie, or with another, no session.
    let mut fresh = Jar::new(&s);
    let form = fresh.get("/ui/login");
    let token = csrf(&form.body);
    fresh.cookies.clear();
    let r = fresh.post("/ui/login", &[("csrf", &token), ("key", &t)]);
    assert_eq!(r.status, 403, "{}", r.body);
    fresh.cookies.insert("sluice_login".into(), "f".repeat(64));
    let r = fresh.post("/ui/login", &[("csrf", &token), ("key", &t)]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!fresh.cookies.contains_key("sluice_session"));
    // A form too large to be one is refused before anything reads it.
    let big = "x".repeat(64 * 1024);
    let r = b.post("/ui/keys", &[("csrf", &mine), ("pad", &big)]);
    assert_eq!(r.status, 413, "{}", r.body);
    // The token does not open the session: a cookie is needed.
    let mut stranger = Jar::new(&s);
    let r = stranger.post("/ui/keys", &[("csrf", &mine)]);
    assert_eq!(r.status, 403, "{}", r.body);
}

#[test]
fn another_tenants_ids_are_not_found_and_tenant_strings_are_escaped() {
    let port = free_port();
    let setup = setup_two_tenants(port, "", None);
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let (t, u) = (s.new_key("t"), s.new_key("u"));
    let hostile = "<script>alert(1)</script>";
    let mut m = simple("a@example.com", "x@dest.example", "escaping");
    m["tags"] = json!([hostile, "\"><img src=x onerror=alert(2)>"]);
    let mine = s.submit(&t, &m);
    let theirs = s.submit(&u, &simple("b@example.org", "y@dest.example", "theirs"));
    s.wait_state(&t, &mine, "delivered");
    s.wait_state(&u, &theirs, "delivered");
    let mut b = Jar::new(&s);
    assert_eq!(b.sign_in(&t).status, 303);

    for path in [format!("/ui/messages/{mine}"), "/ui/messages".to_owned()] {
        let r = b.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(!r.body.contains("<script>"), "{path}: {}", r.body);
        assert!(!r.body.contains("<img"), "{path}: {}", r.body);
        assert!(
            r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {}",
            r.body
        );
    }
    // A search for the hostile tag finds it and shows the tag escaped in the form too.
    let r = b.get(&format!("/ui/messages?tag={}", enc(hostile)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(&mine) && !r.body.contains("<script>"),
        "{}",
        r.body
    );

    // Another tenant's message: 404 to look at, to cancel, to retry; nothing happens to it.
    let token = b.token("/ui/dashboard");
    let r = b.get(&format!("/ui/messages/{theirs}"));
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(!r.body.contains("y@dest.example"));
    for action in ["cancel", "retry"] {
        let r = b.post(
            &format!("/ui/messages/{theirs}/{action}"),
            &[("csrf", &token)],
        );
        assert_eq!(r.status, 404, "{action}: {}", r.body);
    }
    assert!(!b.get("/ui/messages").body.contains(&theirs));
    // Another tenant's key: 404 to revoke, and it still works.
    let their_key_id = s.admin("GET", "/admin/v1/tenants/u/keys", None).json()["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = b.post(
        &format!("/ui/keys/{their_key_id}/revoke"),
        &[("csrf", &token)],
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        s.request("GET", "/v1/messages", Some(&u), None, b"").status,
        200
    );
    assert!(!b.get("/ui/keys").body.contains(&their_key_id));
    // A hostile id in the path is a 404 page, escaped.
    let r = b.get("/ui/messages/%3Cscript%3E");
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("<script>"));
    // An account's key opens no portal session.
    let r = s.request(
        "POST",
        "/v1/accounts",
        Some(&t),
        Some("application/json"),
        json!({"id": "shop", "name": "Shop"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.request("POST", "/v1/accounts/shop/keys", Some(&t), None, b"");
    assert_eq!(r.status, 201, "{}", r.body);
    let account_key = r.json()["key"].as_str().unwrap().to_owned();
    let mut acct = Jar::new(&s);
    let r = acct.sign_in(&account_key);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!acct.cookies.contains_key("sluice_session"));
}

#[test]
fn failed_sign_ins_are_limited_per_address() {
    let port = free_port();
    let setup = setup_two_tenants(port, "", None);
    // The limiter's bounds are `[submission]`'s.
    let text = std::fs::read_to_string(&setup.pipeline).unwrap();
    std::fs::write(
        &setup.pipeline,
        format!("{text}\n[submission]\nmax_auth_failures_per_ip = 3\nauth_failure_delay_ms = 10\n"),
    )
    .unwrap();
    let s = setup.start();
    let t = s.new_key("t");
    let mut b = Jar::new(&s);
    for i in 0..3 {
        let r = b.sign_in(&format!("sluice_guess{i}"));
        assert_eq!(r.status, 401, "guess {i}: {}", r.body);
    }
    // Past the limit even the right key is refused until the window passes.
    let r = b.sign_in(&t);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("Too many failed sign-ins"), "{}", r.body);
    assert!(!b.cookies.contains_key("sluice_session"));
}

// ---- headless Chromium ----

/// A minimal WebDriver client (W3C protocol, JSON over HTTP) for `chromedriver`.
struct WebDriver {
    addr: SocketAddr,
    session: String,
    _driver: ChildGuard,
}

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl WebDriver {
    fn start(dir: &std::path::Path) -> WebDriver {
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver is not installed: tests/run installs Debian's chromium and \
                     chromium-driver (apt-get install chromium chromium-driver)"
                )
            });
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver}: {e}"));
        let guard = ChildGuard::adopt(child, "chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for("chromedriver to listen", || {
            std::net::TcpStream::connect(addr)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1200,900"]
            }
        }}});
        let r = Self::call(addr, "POST", "/session", Some(&caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_owned();
        WebDriver {
            addr,
            session,
            _driver: guard,
        }
    }

    /// One command. chromedriver keeps the connection open whatever the request says,
    /// so the answer is read up to its `Content-Length`, not to the end of the stream.
    fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
        use std::io::{BufRead, BufReader, Read, Write};
        let bytes = body.map(Value::to_string).unwrap_or_default();
        let fail = |e: std::io::Error| -> ! { panic!("WebDriver {method} {path}: {e}") };
        let mut conn = std::net::TcpStream::connect(addr).unwrap_or_else(|e| fail(e));
        conn.set_read_timeout(Some(WAIT))
            .unwrap_or_else(|e| fail(e));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        );
        conn.write_all(head.as_bytes())
            .and_then(|()| conn.write_all(bytes.as_bytes()))
            .unwrap_or_else(|e| fail(e));
        let mut reader = BufReader::new(conn);
        let (mut status, mut length) = (0u16, 0usize);
        let mut line = String::new();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap_or_else(|e| fail(e));
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(code) = l.strip_prefix("HTTP/1.1 ") {
                status = code[..3].parse().unwrap_or(0);
            } else if let Some((n, v)) = l.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap_or_else(|e| fail(e));
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "WebDriver {method} {path}: {text}");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {text}"))
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        Self::call(self.addr, method, &path, body.as_ref())["value"].take()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("{css}: {v}"))
            .to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the window.
    fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.cmd("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        // Chromium goes with its driver (the guard kills it); ending the session first
        // lets it close its windows.
        let path = format!("/session/{}", self.session);
        let addr = self.addr;
        let _ = std::panic::catch_unwind(move || Self::call(addr, "DELETE", &path, None));
    }
}

/// Signs in, sends a message from the dashboard's form and watches the messages page
/// until it shows the message delivered — in a real browser, which also enforces the
/// Content-Security-Policy. With `SLUICE_PORTAL_SCREENSHOTS=DIR` the dashboard and the
/// messages page are saved there as PNGs (the README's are made so).
#[test]
fn headless_chromium_signs_in_sends_a_message_and_sees_it_delivered() {
    let port = free_port();
    let setup = setup_two_tenants(port, "", None);
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    // Some traffic for the dashboard's chart.
    for i in 0..3 {
        let id = s.submit(
            &key,
            &simple("news@example.com", &format!("r{i}@dest.example"), "warm"),
        );
        s.wait_state(&key, &id, "delivered");
    }
    let base = format!("http://{}", s.addr);
    let wd = WebDriver::start(setup.root());

    wd.go(&format!("{base}/ui/"));
    assert!(wd.url().ends_with("/ui/login"), "{}", wd.url());
    wd.type_into("#key", &key);
    wd.click("form[action='/ui/login'] button[type=submit]");
    assert!(
        wd.url().ends_with("/ui/dashboard"),
        "{}\n{}",
        wd.url(),
        wd.source()
    );
    assert!(wd.source().contains("Delivery rate"));

    wd.type_into("#t-from", "me@example.com");
    wd.type_into("#t-to", "browser@dest.example");
    wd.type_into("#t-subject", "from the browser");
    wd.click("form[action='/ui/test-message'] button[type=submit]");
    let url = wd.url();
    let id = url
        .rsplit_once("/ui/messages/")
        .map(|(_, id)| id.to_owned())
        .unwrap_or_else(|| panic!("not on the message's page: {url}\n{}", wd.source()));

    // The messages page, reloaded until it lists the message as delivered.
    wait_for(
        &format!("message {id} delivered on the messages page"),
        || {
            wd.go(&format!("{base}/ui/messages?state=delivered"));
            let page = wd.source();
            if page.contains(&id) {
                Ok(())
            } else {
                Err(page)
            }
        },
    );
    assert_eq!(
        sink.with_subject("from the browser").len(),
        1,
        "{}",
        sink.log()
    );
    wd.go(&format!("{base}/ui/messages/{id}"));
    assert!(wd.source().contains("state-delivered"), "{}", wd.source());

    if let Some(dir) = std::env::var_os("SLUICE_PORTAL_SCREENSHOTS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        wd.go(&format!("{base}/ui/dashboard"));
        std::fs::write(dir.join("dashboard.png"), wd.screenshot()).unwrap();
        wd.go(&format!("{base}/ui/messages"));
        std::fs::write(dir.join("messages.png"), wd.screenshot()).unwrap();
        wd.go(&format!("{base}/ui/messages/{id}"));
        std::fs::write(dir.join("message.png"), wd.screenshot()).unwrap();
        wd.resize(320, 800);
        wd.go(&format!("{base}/ui/dashboard"));
        std::fs::write(dir.join("dashboard-320px.png"), wd.screenshot()).unwrap();
    }
}
