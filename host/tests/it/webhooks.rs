//! Issue 21's webhooks through the real binary, against real HTTP receivers written
//! here (a std `TcpListener` thread that records every request's bytes): retries then
//! success with the order kept, signatures checked by Python's `standardwebhooks`,
//! rotation overlap (two signatures), replay from a cursor, attempts listed, a
//! receiver that never answers, a redirect not followed, endless headers, a webhook
//! paused after its retry window and resumed, private addresses refused, and a
//! SIGKILL of the sending node mid-delivery.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a receiver does with a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// 500 for the first `n` requests, then 204.
    FailFirst(usize),
    /// Reads the request and never answers.
    Hang,
    /// 302 to the cloud metadata address.
    Redirect,
    /// A status line, then header bytes without end.
    EndlessHeaders,
    /// 200 after `ms` milliseconds.
    Slow(u64),
    /// A slow loris: a status line, then one header byte every 200 ms.
    Drip,
    /// 204 after a delay that varies from request to request, up to `ms` milliseconds.
    Random(u64),
    /// 500 for every request that carries an event of the victim (the message of the
    /// first event the receiver ever got); the others as `Random(ms)`.
    FailVictim(u64),
}

/// One request as received.
#[derive(Clone, Debug)]
struct Request {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    fn ok(&self) -> bool {
        self.headers.contains_key("x-answered-ok")
    }
}

/// A real HTTP receiver on 127.0.0.1 that records every request.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    mode: Arc<Mutex<Mode>>,
    /// Requests being answered now, and the most there ever were at once.
    load: Arc<(AtomicUsize, AtomicUsize)>,
    /// The message `Mode::FailVictim` fails.
    victim: Arc<Mutex<Option<String>>>,
    /// Per message, its requests received and not answered yet; and how many requests
    /// came while an earlier one with an event of the same message was still
    /// unanswered (a message's next event sent before the last was acknowledged).
    in_hand: Arc<(Mutex<HashMap<String, usize>>, AtomicUsize)>,
}

impl Receiver {
    fn start(mode: Mode) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let mode = Arc::new(Mutex::new(mode));
        let seen = Arc::new(AtomicUsize::new(0));
        let load: Arc<(AtomicUsize, AtomicUsize)> = Arc::default();
        let victim: Arc<Mutex<Option<String>>> = Arc::default();
        let in_hand: Arc<(Mutex<HashMap<String, usize>>, AtomicUsize)> = Arc::default();
        let (r, m, l) = (requests.clone(), mode.clone(), load.clone());
        let (v, h) = (victim.clone(), in_hand.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (r, m, seen, l) = (r.clone(), m.clone(), seen.clone(), l.clone());
                let (v, h) = (v.clone(), h.clone());
                std::thread::spawn(move || serve_one(conn, &r, &m, &seen, &l, &v, &h));
            }
        });
        Receiver {
            port,
            requests,
            mode,
            load,
            victim,
            in_hand,
        }
    }

    fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/hook", self.port)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn all(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The events of the requests it answered 2xx, in the order it got them.
    fn delivered(&self) -> Vec<Value> {
        self.all()
            .iter()
            .filter(|r| r.ok())
            .flat_map(|r| r.json()["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

fn serve_one(
    mut conn: TcpStream,
    requests: &Mutex<Vec<Request>>,
    mode: &Mutex<Mode>,
    seen: &AtomicUsize,
    load: &(AtomicUsize, AtomicUsize),
    victim: &Mutex<Option<String>>,
    in_hand: &(Mutex<HashMap<String, usize>>, AtomicUsize),
) {
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut headers = HashMap::new();
    for line in head.lines().skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    struct Busy<'a>(&'a AtomicUsize);
    impl Drop for Busy<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let mut messages: Vec<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b["events"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e["message_id"].as_str().map(str::to_owned))
        .collect();
    messages.sort();
    messages.dedup();
    {
        let mut hand = in_hand.0.lock().unwrap();
        for m in &messages {
            let n = hand.entry(m.clone()).or_default();
            if *n > 0 {
                in_hand.1.fetch_add(1, Ordering::SeqCst);
            }
            *n += 1;
        }
    }
    struct Answered<'a>(&'a Mutex<HashMap<String, usize>>, Vec<String>);
    impl Drop for Answered<'_> {
        fn drop(&mut self) {
            let mut hand = self.0.lock().unwrap();
            for m in &self.1 {
                if let Some(n) = hand.get_mut(m) {
                    *n -= 1;
                }
            }
        }
    }
    let answered = Answered(&in_hand.0, messages.clone());
    let now = load.0.fetch_add(1, Ordering::SeqCst) + 1;
    let busy = Busy(&load.0);
    load.1.fetch_max(now, Ordering::SeqCst);
    let n = seen.fetch_add(1, Ordering::SeqCst);
    let mode = *mode.lock().unwrap();
    let carries_victim = || {
        let mut v = victim.lock().unwrap();
        let v = v.get_or_insert_with(|| messages.first().cloned().unwrap_or_default());
        messages.contains(v)
    };
    let ok = match mode {
        Mode::FailFirst(k) => n >= k,
        Mode::Slow(_) | Mode::Random(_) => true,
        Mode::FailVictim(_) => !carries_victim(),
        _ => false,
    };
    if ok {
        headers.insert("x-answered-ok".into(), "1".into());
    }
    // Recorded before answering: an answer the sender saw always has its record.
    requests.lock().unwrap().push(Request { headers, body });
    let answer: &[u8] = match mode {
        Mode::FailFirst(_) if ok => b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        Mode::FailFirst(_) => {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
        }
        Mode::Slow(ms) => {
            std::thread::sleep(Duration::from_millis(ms));
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        }
        Mode::Random(ms) | Mode::FailVictim(ms) if ok => {
            // A spread of delays from the request's number (no randomness needed).
            let wait = (n as u64).wrapping_mul(2_654_435_761) % (ms + 1);
            std::thread::sleep(Duration::from_millis(wait));
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        }
        Mode::Random(_) | Mode::FailVictim(_) => {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy"
        }
        Mode::Hang => {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        Mode::Redirect => {
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n"
        }
        Mode::Drip => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ");
            for _ in 0..300 {
                std::thread::sleep(Duration::from_millis(200));
                if conn.write_all(b"a").is_err() {
                    return;
                }
            }
            return;
        }
        Mode::EndlessHeaders => {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\n");
            let line = format!("X-Filler: {}\r\n", "a".repeat(1000));
            for _ in 0..100_000 {
                if conn.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
            return;
        }
    };
    // Done before the answer goes out: the sender may send its next request as soon as
    // it has the answer, and that one must not be counted as overlapping this one.
    drop(busy);
    drop(answered);
    let _ = conn.write_all(answer);
}

/// Events sequenced quickly, retries within the test.
fn config(extra: &str) -> String {
    format!(
        "[events]\npoll_ms = 50\n\n[webhooks]\npoll_ms = 50\nfirst_retry_ms = 200\n\
         max_retry_secs = 1\n{extra}\n\n"
    )
}

fn create(s: &Sluice, key: &str, body: Value) -> Response {
    s.request(
        "POST",
        "/v1/webhooks",
        Some(key),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

fn call(s: &Sluice, key: &str, method: &str, path: &str, body: Option<Value>) -> Response {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/json");
    s.request(method, path, Some(key), ct, bytes.as_bytes())
}

fn mail(i: usize) -> Value {
    json!({
        "from": "a@example.com",
        "to": [format!("x{i}@example.net"), format!("y{i}@example.net")],
        "subject": format!("m{i}"),
        "text": "hello",
    })
}

/// Every event of the tenant's log, from the API.
fn log_events(s: &Sluice, key: &str) -> Vec<Value> {
    let r = call(s, key, "GET", "/v1/events?after=0&limit=1000", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"].as_array().unwrap().clone()
}

/// Ok once the tenant's log holds `delivered` events for all `messages` and every event of
/// the log has reached the receiver (by cursor); else how many have.
fn all_events_arrived(rx: &Receiver, s: &Sluice, key: &str, messages: usize) -> Result<(), String> {
    let cursors: HashSet<i64> = rx
        .delivered()
        .iter()
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect();
    let log = log_events(s, key);
    let delivered = log
        .iter()
        .filter(|e| e["type"] == "message.delivered")
        .count();
    if delivered == messages
        && log
            .iter()
            .all(|e| cursors.contains(&e["cursor"].as_i64().unwrap()))
    {
        Ok(())
    } else {
        Err(format!("{} of {} events", cursors.len(), log.len()))
    }
}

/// Each message's events reach the receiver in the log's order: the first arrival of
/// each event, per message, has increasing cursors; and every event of `expected` came.
fn check_order_and_completeness(got: &[Value], expected: &[Value]) {
    let mut first_seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for e in got {
        let cursor = e["cursor"].as_i64().unwrap();
        if seen.insert(cursor) {
            let m = e["message_id"].as_str().unwrap_or("").to_string();
            first_seen.entry(m).or_default().push(cursor);
        }
    }
    for (m, cursors) in &first_seen {
        assert!(
            cursors.windows(2).all(|w| w[0] < w[1]),
            "message {m}'s events out of order: {cursors:?}"
        );
    }
    for e in expected {
        assert!(
            seen.contains(&e["cursor"].as_i64().unwrap()),
            "event {e} never arrived"
        );
    }
}

/// Verifies a recorded request with Python's `standardwebhooks` (an implementation
/// that is not Sluice's) and `secret`; whether it verified.
fn python_verifies(req: &Request, secret: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &req.body).unwrap();
    let script = r#"
import sys
from standardwebhooks.webhooks import Webhook
body = open(sys.argv[1], "rb").read()
headers = {"webhook-id": sys.argv[3], "webhook-timestamp": sys.argv[4], "webhook-signature": sys.argv[5]}
try:
    Webhook(sys.argv[2]).verify(body, headers)
except Exception as e:
    print("refused:", e)
    sys.exit(1)
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&body)
        .arg(secret)
        .arg(&req.headers["webhook-id"])
        .arg(&req.headers["webhook-timestamp"])
        .arg(&req.headers["webhook-signature"])
        .output()
        .expect("python3 (tests/run installs it and standardwebhooks)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("ModuleNotFoundError"),
        "the Python package standardwebhooks is missing (tests/run installs it): {err}"
    );
    out.status.success()
}

#[test]
fn a_webhook_gets_every_event_in_order_signed_retried_rotated_replayed_and_listed() {
    let port = free_port();
    let tables = format!(
        "{}{}{}",
        // One request in flight: the whole log in cursor order, retried as one.
        config("allow_private = true\nbatch_size = 3\nmax_in_flight = 1"),
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let rx = Receiver::start(Mode::FailFirst(3));

    let r = create(
        &s,
        &key,
        json!({"url": rx.url("127.0.0.1"), "events": ["*"], "description": "all of it"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let hook = r.json();
    let id = hook["id"].as_str().unwrap().to_string();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // Shown once: never in a listing or a read.
    let listed = call(&s, &key, "GET", "/v1/webhooks", None);
    assert!(!listed.body.contains(&secret), "{}", listed.body);
    let one = call(&s, &key, "GET", &format!("/v1/webhooks/{id}"), None);
    assert_eq!(one.status, 200, "{}", one.body);
    assert!(!one.body.contains(&secret));
    assert_eq!(one.json()["state"], "active");

    let ids: Vec<String> = (0..3).map(|i| s.submit(&key, &mail(i))).collect();
    for m in &ids {
        s.wait_state(&key, m, "delivered");
    }
    let expected = wait_for("every event of the log at the receiver", || {
        let log = log_events(&s, &key);
        let got = rx.delivered();
        let cursors: HashSet<i64> = got.iter().map(|e| e["cursor"].as_i64().unwrap()).collect();
        if log
            .iter()
            .filter(|e| e["type"] == "message.delivered")
            .count()
            == 6
            && log
                .iter()
                .all(|e| cursors.contains(&e["cursor"].as_i64().unwrap()))
        {
            Ok(log)
        } else {
            Err(format!("log {} events, receiver {}", log.len(), got.len()))
        }
    });
    let all = rx.all();
    // The first three answers were 500s: the same batch was sent again each time, with
    // the same id, then once more to a 2xx; the cursor moved only then.
    assert!(all.len() >= 4);
    assert!(all[..3].iter().all(|r| !r.ok()));
    let first_cursor = |r: &Request| r.json()["events"][0]["cursor"].as_i64().unwrap();
    assert!(
        all[..4]
            .iter()
            .all(|r| first_cursor(r) == first_cursor(&all[0]))
    );
    let got = rx.delivered();
    check_order_and_completeness(&got, &expected);
    // No gap and no repeat in what was answered 2xx: the cursor moved only on success.
    let cursors: Vec<i64> = got.iter().map(|e| e["cursor"].as_i64().unwrap()).collect();
    assert_eq!(
        cursors,
        (cursors[0]..cursors[0] + cursors.len() as i64).collect::<Vec<_>>()
    );
    assert!(
        all.iter()
            .all(|r| r.json()["events"].as_array().unwrap().len() <= 3)
    );
    assert_eq!(all[3].json()["tenant_id"], "t");

    // Signed as Standard Webhooks says, checked by an implementation that is not ours.
    for r in all.iter().take(5) {
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(r.headers["webhook-signature"].starts_with("v1,"));
        assert!(python_verifies(r, &secret), "{:?}", r.headers);
        assert!(!python_verifies(
            r,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        ));
    }

    // Attempts: the failures with their status, then the successes.
    let at = call(
        &s,
        &key,
        "GET",
        &format!("/v1/webhooks/{id}/attempts"),
        None,
    );
    assert_eq!(at.status, 200, "{}", at.body);
    let attempts = at.json()["attempts"].as_array().unwrap().clone();
    let failed: Vec<&Value> = attempts.iter().filter(|a| a["status"] == 500).collect();
    assert_eq!(failed.len(), 3, "{attempts:?}");
    assert!(failed[0]["error"].as_str().unwrap().contains("500"));
    assert!(
        attempts
            .iter()
            .any(|a| a["status"] == 204 && a["latency_ms"].is_i64())
    );

    // Rotation: during the overlap both secrets sign each request.
    let r = call(
        &s,
        &key,
        "POST",
        &format!("/v1/webhooks/{id}/rotate-secret"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let new_secret = r.json()["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let before = rx.all().len();
    let t = call(&s, &key, "POST", &format!("/v1/webhooks/{id}/test"), None);
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.json()["ok"], true, "{}", t.body);
    let test_req = rx.all()[before..]
        .iter()
        .find(|r| r.json()["type"] == "webhook.test")
        .expect("the test request")
        .clone();
    assert_eq!(test_req.headers["webhook-signature"].split(' ').count(), 2);
    assert!(python_verifies(&test_req, &new_secret));
    assert!(python_verifies(&test_req, &secret));

    // Replay from a cursor: the events after it come again, in order.
    let from = expected[expected.len() / 2]["cursor"].as_i64().unwrap();
    let before = rx.delivered().len();
    let r = call(
        &s,
        &key,
        "POST",
        &format!("/v1/webhooks/{id}/replay"),
        Some(json!({"after": from})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let last = expected.last().unwrap()["cursor"].as_i64().unwrap();
    let again = wait_for("the replayed events", || {
        let got = rx.delivered();
        let again: Vec<i64> = got[before..]
            .iter()
            .map(|e| e["cursor"].as_i64().unwrap())
            .collect();
        if again.last() == Some(&last) {
            Ok(again)
        } else {
            Err(format!("{again:?}"))
        }
    });
    assert_eq!(again, ((from + 1)..=last).collect::<Vec<_>>());
    // A cursor past the end, or another tenant's log: refused.
    let r = call(
        &s,
        &key,
        "POST",
        &format!("/v1/webhooks/{id}/replay"),
        Some(json!({"after": last + 100})),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (422, json!("after"))
    );

    // Deleted: gone, and nothing more is sent.
    let r = call(&s, &key, "DELETE", &format!("/v1/webhooks/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call(&s, &key, "GET", &format!("/v1/webhooks/{id}"), None);
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}

#[test]
fn hostile_webhook_urls_and_bodies_are_refused_and_private_addresses_never_reached() {
    let tables = format!(
        "{}{}{}{}",
        config("max_per_tenant = 3"),
        relay_table("a", "smtp://127.0.0.1:9", ""),
        tenant_table("t", &["*"]),
        tenant_table("t2", &["*"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let s = setup.start();
    let key = s.new_key("t");
    let other = s.new_key("t2");
    let rx = Receiver::start(Mode::FailFirst(0));
    let refused = |body: Value, field: &str| {
        let r = create(&s, &key, body.clone());
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["field"], field, "{}", r.body);
        r.json()["error"]["message"].as_str().unwrap().to_string()
    };
    for url in [
        rx.url("127.0.0.1"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:80/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://[::ffff:127.0.0.1]/".to_string(),
        "http://0.0.0.0/".to_string(),
        "ftp://example.com/".to_string(),
        "file:///etc/passwd".to_string(),
        "http://user:pw@example.com/".to_string(),
        format!("https://example.com/{}", "a".repeat(3000)),
        "https://example.com/a\r\nX-Injected: 1".to_string(),
    ] {
        refused(json!({"url": url, "events": ["*"]}), "url");
    }
    refused(
        json!({"url": "https://example.com/", "events": []}),
        "events",
    );
    refused(
        json!({"url": "https://example.com/", "events": ["message.nope"]}),
        "events",
    );
    refused(
        json!({"url": "https://example.com/", "events": ["*"], "description": "d".repeat(300)}),
        "description",
    );
    let r = create(
        &s,
        &key,
        json!({"url": "https://example.com/", "nope": 1, "events": ["*"]}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.json()["error"]["message"].is_string());

    // A name that resolves to loopback passes the URL check, and is refused at
    // connect time: the receiver never gets a byte.
    let r = create(
        &s,
        &key,
        json!({"url": rx.url("localhost"), "events": ["message.accepted"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let t = call(&s, &key, "POST", &format!("/v1/webhooks/{id}/test"), None);
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.json()["ok"], false);
    assert!(
        t.json()["error"].as_str().unwrap().contains("not public"),
        "{}",
        t.body
    );
    s.submit(&key, &simple("a@example.com", "z@example.net", "s"));
    wait_for("a refused attempt of a delivery", || {
        let at = call(
            &s,
            &key,
            "GET",
            &format!("/v1/webhooks/{id}/attempts"),
            None,
        )
        .json();
        let list = at["attempts"].as_array().cloned().unwrap_or_default();
        if list.iter().any(|a| {
            a["events"] == 1
                && a["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("not public"))
        }) {
            Ok(())
        } else {
            Err(at.to_string())
        }
    });
    assert!(rx.all().is_empty(), "a private address was reached");

    // Another tenant sees none of it, and cannot touch it.
    let r = call(&s, &other, "GET", &format!("/v1/webhooks/{id}"), None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(&s, &other, "DELETE", &format!("/v1/webhooks/{id}"), None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        call(&s, &other, "GET", "/v1/webhooks", None).json()["webhooks"],
        json!([])
    );
    // The admin's platform webhooks are apart from the tenant's.
    let a = s.admin("GET", "/admin/v1/webhooks", None);
    assert_eq!((a.status, a.json()["webhooks"].clone()), (200, json!([])));
    assert_eq!(
        s.admin("GET", &format!("/admin/v1/webhooks/{id}"), None)
            .status,
        404
    );

    // At most max_per_tenant.
    for _ in 0..2 {
        let r = create(
            &s,
            &key,
            json!({"url": "https://example.com/", "events": ["*"]}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = create(
        &s,
        &key,
        json!({"url": "https://example.com/", "events": ["*"]}),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"]["limit"], "webhooks.max_per_tenant");
}

#[test]
fn slow_silent_redirecting_and_endless_receivers_are_contained_and_a_failing_one_paused() {
    let port = free_port();
    let tables = format!(
        "{}{}{}{}",
        config(
            "allow_private = true\nconnect_timeout_ms = 1000\nresponse_timeout_ms = 1000\n\
             retry_window_secs = 3\nmax_response_bytes = 4096"
        ),
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
        tenant_table("u", &["*"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let (key, quiet) = (s.new_key("t"), s.new_key("u"));
    let hang = Receiver::start(Mode::Hang);
    let redirect = Receiver::start(Mode::Redirect);
    let endless = Receiver::start(Mode::EndlessHeaders);
    let drip = Receiver::start(Mode::Drip);
    let good = Receiver::start(Mode::Slow(0));
    let mut hooks = Vec::new();
    for rx in [&hang, &redirect, &endless, &drip] {
        let r = create(
            &s,
            &key,
            json!({"url": rx.url("127.0.0.1"), "events": ["message.delivered"]}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        hooks.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let r = create(
        &s,
        &quiet,
        json!({"url": good.url("127.0.0.1"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // The platform's webhook, over every tenant's events.
    let platform = Receiver::start(Mode::Slow(0));
    let r = s.admin(
        "POST",
        "/admin/v1/webhooks",
        Some(json!({"url": platform.url("127.0.0.1"), "events": ["message.delivered"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let platform_id = r.json()["id"].as_str().unwrap().to_string();

    let mine = s.submit(&key, &simple("a@example.com", "x@example.net", "hostile"));
    // The other tenant's webhook and everybody's mail go on while these fail.
    let theirs = s.submit(&quiet, &simple("a@example.com", "y@example.net", "quiet"));
    s.wait_state(&key, &mine, "delivered");
    s.wait_state(&quiet, &theirs, "delivered");
    wait_for("the quiet tenant's delivered event at its receiver", || {
        let got = good.delivered();
        if got
            .iter()
            .any(|e| e["type"] == "message.delivered" && e["message_id"] == theirs)
        {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    assert!(good.delivered().iter().all(|e| e["message_id"] == theirs));
    let both = wait_for(
        "both tenants' delivered events at the platform's receiver",
        || {
            let bodies: Vec<Value> = platform
                .all()
                .iter()
                .filter(|r| r.ok())
                .map(Request::json)
                .collect();
            let tenants: HashSet<String> = bodies
                .iter()
                .filter(|b| b["events"].as_array().is_some_and(|e| !e.is_empty()))
                .map(|b| b["tenant_id"].as_str().unwrap().to_string())
                .collect();
            if tenants.len() == 2 {
                Ok(bodies)
            } else {
                Err(format!("{bodies:?}"))
            }
        },
    );
    assert!(
        both.iter()
            .flat_map(|b| b["events"].as_array().unwrap().clone())
            .all(|e| e["type"] == "message.delivered")
    );
    let a = s
        .admin("GET", &format!("/admin/v1/webhooks/{platform_id}"), None)
        .json();
    assert_eq!(a["cursors"].as_object().unwrap().len(), 2, "{a}");
    // A tenant's key does not reach it.
    assert_eq!(
        call(
            &s,
            &key,
            "GET",
            &format!("/v1/webhooks/{platform_id}"),
            None
        )
        .status,
        404
    );

    let attempts = |id: &str| -> Vec<Value> {
        let r = call(
            &s,
            &key,
            "GET",
            &format!("/v1/webhooks/{id}/attempts"),
            None,
        );
        r.json()["attempts"].as_array().cloned().unwrap_or_default()
    };
    let failing_with = |id: &str, what: &str| {
        wait_for(&format!("two failed attempts of {id}: {what}"), || {
            let list = attempts(id);
            let n = list
                .iter()
                .filter(|a| a["error"].as_str().is_some_and(|e| e.contains(what)))
                .count();
            if n >= 2 {
                Ok(())
            } else {
                Err(format!("{list:?}"))
            }
        })
    };
    // Retried after each failure, each failure bounded by its own limit.
    failing_with(&hooks[0], "no complete answer within 1000 ms");
    failing_with(&hooks[1], "redirect, not followed");
    failing_with(&hooks[2], "longer than 4096 bytes");
    failing_with(&hooks[3], "no complete answer within 1000 ms");
    assert!(attempts(&hooks[1]).iter().any(|a| a["status"] == 302
        && a["error"].as_str().unwrap().contains("169.254.169.254")));

    // Past the retry window (3 s) each is paused, with a webhook.paused event.
    for id in &hooks {
        wait_for(&format!("{id} paused"), || {
            let w = call(&s, &key, "GET", &format!("/v1/webhooks/{id}"), None).json();
            if w["state"] == "paused" {
                Ok(w)
            } else {
                Err(w.to_string())
            }
        });
    }
    let w = call(&s, &key, "GET", &format!("/v1/webhooks/{}", hooks[0]), None).json();
    assert!(
        w["paused_reason"]
            .as_str()
            .unwrap()
            .contains("retry_window_secs"),
        "{w}"
    );
    let paused = wait_for("four webhook.paused events", || {
        let r = call(&s, &key, "GET", "/v1/events?types=webhook.paused", None).json();
        let list = r["events"].as_array().cloned().unwrap_or_default();
        if list.len() == 4 {
            Ok(list)
        } else {
            Err(r.to_string())
        }
    });
    let ids: HashSet<&str> = paused
        .iter()
        .map(|e| e["details"]["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, hooks.iter().map(String::as_str).collect());
    assert!(paused.iter().all(|e| e["message_id"].is_null()));
    // Paused: nothing more is sent.
    let n = hang.all().len();

    // Resumed at a receiver that answers: the events kept are sent from its cursor.
    hang.set(Mode::Slow(0));
    let r = call(
        &s,
        &key,
        "PATCH",
        &format!("/v1/webhooks/{}", hooks[0]),
        Some(json!({"state": "active"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["state"].clone(), r.json()["failures"].clone()),
        (json!("active"), json!(0))
    );
    wait_for("the kept event after the resume", || {
        let got = hang.delivered();
        if got.iter().any(|e| e["message_id"] == mine) {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    assert!(hang.all().len() > n);
    let r = call(
        &s,
        &key,
        "PATCH",
        &format!("/v1/webhooks/{}", hooks[1]),
        Some(json!({"state": "resting"})),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (422, json!("state"))
    );
}

#[test]
fn a_node_killed_mid_delivery_sends_every_event_at_least_once_in_order_after_restart() {
    let port = free_port();
    let tables = format!(
        "{}{}{}",
        config("allow_private = true\nmax_in_flight = 8"),
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let mut s = setup.start();
    let key = s.new_key("t");
    // Slow answers: the kill lands while several requests are in flight.
    let rx = Receiver::start(Mode::Slow(300));
    let r = create(
        &s,
        &key,
        json!({"url": rx.url("127.0.0.1"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<String> = (0..12).map(|i| s.submit(&key, &mail(i))).collect();
    wait_for("several requests in flight at once", || {
        let (now, n) = (rx.load.0.load(Ordering::SeqCst), rx.all().len());
        if now >= 2 && n >= 3 {
            Ok(())
        } else {
            Err(format!("{now} in flight, {n} received"))
        }
    });
    s.guard.kill();
    // The killed node's requests may still be in the receiver's hands (it answers
    // after 300 ms, to nobody): the restarted node starts once the receiver has let go
    // of them, so that what it sends can be told apart.
    wait_for(
        "the receiver done with the killed node's requests",
        || match rx.load.0.load(Ordering::SeqCst) {
            0 => Ok(()),
            n => Err(format!("{n} in flight")),
        },
    );
    let before = rx.all().len();
    let s = setup.start();
    for m in &ids {
        s.wait_state(&key, m, "delivered");
    }
    let expected = log_events(&s, &key);
    wait_for_within(
        Duration::from_secs(60),
        "every event at the receiver after the restart",
        || all_events_arrived(&rx, &s, &key, 24),
    );
    check_order_and_completeness(&rx.delivered(), &expected);
    assert!(
        rx.load.1.load(Ordering::SeqCst) >= 2,
        "never more than one request in flight"
    );
    assert_eq!(
        rx.in_hand.1.load(Ordering::SeqCst),
        0,
        "a message's event sent while its previous one was unanswered"
    );
    // At least once, and only what the killed node had sent is sent twice: after the
    // restart each event goes out once, from the lowest one not acknowledged.
    let all = rx.all();
    let new: Vec<i64> = all[before..]
        .iter()
        .filter(|r| r.ok())
        .flat_map(|r| r.json()["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e["cursor"].as_i64().unwrap())
        .collect();
    let once: HashSet<i64> = new.iter().copied().collect();
    assert_eq!(
        once.len(),
        new.len(),
        "sent twice after the restart: {new:?}"
    );
}

/// A node sending up to 8 requests at once per webhook, its relay's sink, a tenant's key
/// and that tenant's webhook on every event to a receiver answering as `mode` says (its
/// id last): where the in-flight tests start. Bound in this order, the node stops before
/// its directory goes.
fn node_with_a_webhook(mode: Mode) -> (Setup, Sink, Sluice, String, Receiver, String) {
    let port = free_port();
    let tables = format!(
        "{}{}{}",
        config("allow_private = true\nmax_in_flight = 8"),
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let rx = Receiver::start(mode);
    let r = create(
        &s,
        &key,
        json!({"url": rx.url("127.0.0.1"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    (setup, sink, s, key, rx, id)
}

/// Events of different messages in flight together, each message's in order, each
/// event exactly once: with a receiver whose answers take a varying time.
#[test]
fn a_webhook_sends_several_messages_at_once_each_in_order_and_each_event_once() {
    let (_setup, _sink, s, key, rx, _) = node_with_a_webhook(Mode::Random(60));
    let ids: Vec<String> = (0..16).map(|i| s.submit(&key, &mail(i))).collect();
    for m in &ids {
        s.wait_state(&key, m, "delivered");
    }
    wait_for_within(
        Duration::from_secs(60),
        "every event at the receiver",
        || all_events_arrived(&rx, &s, &key, 32),
    );
    // Read after they all arrived: the log as the receiver got it.
    let expected = log_events(&s, &key);
    let got = rx.delivered();
    check_order_and_completeness(&got, &expected);
    let most = rx.load.1.load(Ordering::SeqCst);
    assert!((2..=8).contains(&most), "{most} requests at once at most");
    // A message's next event only after the receiver answered the one before.
    assert_eq!(rx.in_hand.1.load(Ordering::SeqCst), 0);
    // Exactly once: every answer was a 2xx and no event came twice.
    assert!(rx.all().iter().all(Request::ok));
    let cursors: Vec<i64> = got.iter().map(|e| e["cursor"].as_i64().unwrap()).collect();
    let once: HashSet<i64> = cursors.iter().copied().collect();
    assert_eq!(
        once.len(),
        cursors.len(),
        "an event sent twice: {cursors:?}"
    );
    assert_eq!(once.len(), expected.len());
}

/// One message's event failing holds back that message's later events only: the
/// others' events flow, and the webhook is not backed off as a whole.
#[test]
fn a_failing_message_holds_back_only_its_own_later_events() {
    let (_setup, _sink, s, key, rx, id) = node_with_a_webhook(Mode::FailVictim(20));
    let mut ids: Vec<String> = (0..4).map(|i| s.submit(&key, &mail(i))).collect();
    wait_for("the victim's event refused twice", || {
        let n = rx.all().iter().filter(|r| !r.ok()).count();
        if n >= 2 { Ok(()) } else { Err(format!("{n}")) }
    });
    // More mail while the victim is held: all of it must get through.
    ids.extend((4..10).map(|i| s.submit(&key, &mail(i))));
    for m in &ids {
        s.wait_state(&key, m, "delivered");
    }
    let victim = rx.victim.lock().unwrap().clone().expect("a victim");
    let log = log_events(&s, &key);
    let (theirs, mine): (Vec<Value>, Vec<Value>) = log
        .iter()
        .cloned()
        .partition(|e| e["message_id"] != victim.as_str());
    wait_for_within(
        Duration::from_secs(60),
        "every other message's event while the victim is held",
        || {
            let got: HashSet<i64> = rx
                .delivered()
                .iter()
                .map(|e| e["cursor"].as_i64().unwrap())
                .collect();
            let missing = theirs
                .iter()
                .filter(|e| !got.contains(&e["cursor"].as_i64().unwrap()))
                .count();
            if missing == 0 {
                Ok(())
            } else {
                Err(format!("{missing} missing"))
            }
        },
    );
    // Of the victim, only its first event was ever sent (again and again): its later
    // events waited for it.
    let first = mine[0]["cursor"].as_i64().unwrap();
    let victims: Vec<Request> = rx
        .all()
        .into_iter()
        .filter(|r| {
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["message_id"] == victim.as_str())
        })
        .collect();
    assert!(victims.len() >= 2);
    assert!(victims.iter().all(|r| !r.ok()));
    assert!(victims.iter().all(|r| {
        r.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["cursor"] == first)
    }));
    // The same batch each time, with the same id.
    let ids_sent: HashSet<&String> = victims.iter().map(|r| &r.headers["webhook-id"]).collect();
    assert_eq!(ids_sent.len(), 1, "{ids_sent:?}");
    // The webhook as a whole is not backing off; the failures are in its attempts.
    let w = call(&s, &key, "GET", &format!("/v1/webhooks/{id}"), None).json();
    assert_eq!(
        (w["state"].clone(), w["next_attempt_ms"].clone()),
        (json!("active"), Value::Null),
        "{w}"
    );
    wait_for("the victim's failures among the attempts", || {
        let r = call(
            &s,
            &key,
            "GET",
            &format!("/v1/webhooks/{id}/attempts"),
            None,
        )
        .json();
        let list = r["attempts"].as_array().cloned().unwrap_or_default();
        if list
            .iter()
            .any(|a| a["status"] == 500 && a["first_cursor"] == first)
        {
            Ok(())
        } else {
            Err(r.to_string())
        }
    });

    // The receiver takes it now: the victim's events follow, in order.
    rx.set(Mode::Random(20));
    wait_for_within(
        Duration::from_secs(60),
        "every event at the receiver",
        || all_events_arrived(&rx, &s, &key, 20),
    );
    check_order_and_completeness(&rx.delivered(), &log);
    assert_eq!(rx.in_hand.1.load(Ordering::SeqCst), 0);
}

#[test]
fn postgres_one_node_at_a_time_delivers_a_webhook_and_a_killed_nodes_share_goes_on() {
    let db = PgDb::new("sluice_e2e_webhooks");
    let port = free_port();
    let tables = format!(
        "{}{}{}",
        // One request in flight per node: two at once would be two nodes sending.
        config(
            "allow_private = true\nconnect_timeout_ms = 1000\nresponse_timeout_ms = 2000\n\
             max_in_flight = 1"
        ),
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
    );
    let setups = postgres_nodes(&db, &tables, &["n0", "n1"]);
    let _sink = Sink::start(setups[0].root(), port, &[]);
    let mut nodes: Vec<Sluice> = setups.iter().map(Setup::start).collect();
    let key = nodes[0].new_key("t");
    let rx = Receiver::start(Mode::Slow(100));
    let r = create(
        &nodes[1],
        &key,
        json!({"url": rx.url("127.0.0.1"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<String> = (0..8)
        .map(|i| nodes[i % 2].submit(&key, &mail(i)))
        .collect();
    wait_for("some events at the receiver", || {
        let n = rx.all().len();
        if n >= 3 { Ok(()) } else { Err(format!("{n}")) }
    });
    nodes[1].guard.kill();
    for m in &ids {
        nodes[0].wait_state(&key, m, "delivered");
    }
    let expected = log_events(&nodes[0], &key);
    wait_for_within(
        Duration::from_secs(60),
        "every event at the receiver",
        || all_events_arrived(&rx, &nodes[0], &key, 16),
    );
    check_order_and_completeness(&rx.delivered(), &expected);
    // Never two requests of the webhook at once, from either node.
    assert_eq!(rx.load.1.load(Ordering::SeqCst), 1);
    nodes.truncate(1);
}

#[test]
fn postgres_a_node_stopped_gracefully_hands_its_webhooks_on_at_once() {
    let db = PgDb::new("sluice_e2e_webhooks_stop");
    let port = free_port();
    // Long timeouts make the lease (2 × (connect + response) + 5 s) 365 s: far longer
    // than this test waits for the other node to go on.
    let tables = format!(
        "{}{}{}",
        config("allow_private = true\nconnect_timeout_ms = 60000\nresponse_timeout_ms = 120000"),
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
    );
    let setups = postgres_nodes(&db, &tables, &["n0", "n1"]);
    let _sink = Sink::start(setups[0].root(), port, &[]);
    let mut n0 = setups[0].start();
    let key = n0.new_key("t");
    // A receiver that holds the first request without answering: n0 holds the lease
    // with a request in flight when it is told to stop.
    let rx = Receiver::start(Mode::Hang);
    let r = create(
        &n0,
        &key,
        json!({"url": rx.url("127.0.0.1"), "events": ["*"]}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<String> = (0..3).map(|i| n0.submit(&key, &mail(i))).collect();
    wait_for("a request in flight from n0", || {
        let n = rx.all().len();
        if n >= 1 { Ok(()) } else { Err(format!("{n}")) }
    });
    let n1 = setups[1].start();
    // Requests from now on are answered at once (the one in flight still hangs).
    rx.set(Mode::FailFirst(0));
    n0.guard.signal("TERM");
    let status = n0.guard.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", n0.log());
    for m in &ids {
        n1.wait_state(&key, m, "delivered");
    }
    let expected = log_events(&n1, &key);
    // Well within n0's lease: n1 went on because n0 gave it back.
    wait_for_within(
        Duration::from_secs(60),
        "every event at the receiver from n1",
        || all_events_arrived(&rx, &n1, &key, 6).map_err(|e| format!("{e}\n{}", n1.log())),
    );
    check_order_and_completeness(&rx.delivered(), &expected);
}

/// A receiver that keeps connections alive: answers 204 to each request on a
/// connection, and counts connections and requests. `close_every`: it closes a
/// connection silently (no `Connection: close`) after that many answers, as a receiver
/// whose idle timeout ran out does; `junk_after`: after that many answers on a
/// connection it sends bytes past its answer (which must not be read as the next).
struct KeepAlive {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl KeepAlive {
    fn start(close_every: usize, junk_after: usize) -> KeepAlive {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let (c, r) = (connections.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    for answered in 1.. {
                        let head_end = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                        let mut headers = HashMap::new();
                        for line in head.lines().skip(1) {
                            if let Some((k, v)) = line.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                            }
                        }
                        let len: usize = headers["content-length"].parse().unwrap();
                        while buf.len() < head_end + len {
                            match conn.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = buf[head_end..head_end + len].to_vec();
                        buf.drain(..head_end + len);
                        headers.insert("x-answered-ok".into(), "1".into());
                        r.lock().unwrap().push(Request { headers, body });
                        let mut answer = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
                        if answered == junk_after {
                            answer
                                .extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                        }
                        if conn.write_all(&answer).is_err() || answered == close_every {
                            return;
                        }
                    }
                });
            }
        });
        KeepAlive {
            port,
            connections,
            requests,
        }
    }

    fn delivered(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.json()["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

#[test]
fn a_webhook_reuses_its_connection_and_replaces_one_closed_or_left_unclean() {
    let port = free_port();
    let tables = format!(
        "{}{}{}",
        config("allow_private = true\nmax_in_flight = 2"),
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    // One receiver that keeps every connection; one that closes each after its third
    // answer without saying so, and sends junk after the first answer on each.
    let clean = KeepAlive::start(usize::MAX, usize::MAX);
    let rough = KeepAlive::start(3, 1);
    let mut hooks = vec![];
    for rx in [&clean, &rough] {
        let r = create(
            &s,
            &key,
            json!({"url": format!("http://127.0.0.1:{}/hook", rx.port), "events": ["*"]}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        hooks.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let ids: Vec<String> = (0..6).map(|i| s.submit(&key, &mail(i))).collect();
    for m in &ids {
        s.wait_state(&key, m, "delivered");
    }
    let expected = log_events(&s, &key);
    let cursors = |rx: &KeepAlive| -> HashSet<i64> {
        rx.delivered()
            .iter()
            .map(|e| e["cursor"].as_i64().unwrap())
            .collect()
    };
    for rx in [&clean, &rough] {
        wait_for("every event at both receivers", || {
            let got = cursors(rx);
            if expected
                .iter()
                .all(|e| got.contains(&e["cursor"].as_i64().unwrap()))
            {
                Ok(())
            } else {
                Err(format!("{} of {}", got.len(), expected.len()))
            }
        });
        check_order_and_completeness(&rx.delivered(), &expected);
    }
    // Batches of one event: as many requests as events, on far fewer connections: at
    // most one per request in flight (`max_in_flight`), kept between deliveries.
    let requests = clean.requests.lock().unwrap().len();
    let conns = clean.connections.load(Ordering::SeqCst);
    assert!(requests >= expected.len(), "{requests} requests");
    assert!(conns <= 2, "{conns} connections for {requests} requests");
    // The rough one: a new connection at least every third request, and never a
    // failed attempt (a closed kept connection is replaced for the same request; junk
    // after an answer drops the connection, not the answer).
    let requests = rough.requests.lock().unwrap().len();
    let conns = rough.connections.load(Ordering::SeqCst);
    assert!(
        conns * 3 >= requests,
        "{conns} connections for {requests} requests"
    );
    let r = call(
        &s,
        &key,
        "GET",
        &format!("/v1/webhooks/{}/attempts", hooks[1]),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let attempts = r.json()["attempts"].as_array().cloned().unwrap();
    assert!(!attempts.is_empty());
    assert!(
        attempts
            .iter()
            .all(|a| a["status"] == 204 && a["error"].is_null()),
        "{attempts:#?}"
    );
}
