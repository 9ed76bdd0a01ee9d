//! Issue 21's event log through the real binary: `GET /v1/events` pages and the
//! `GET /v1/events/stream` Server-Sent Events stream after real deliveries to
//! `smtp-sink` — cursors gap-free and in order per tenant, a stream resumed from
//! `Last-Event-ID` yields exactly the later events, cursors survive a restart, a stream
//! does not hold up a graceful stop, tenants never see each other's events, and on
//! PostgreSQL a stream on one node carries the events written on another.

use crate::support::*;
use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Events sequenced quickly, idle streams given a comment every second, and two streams
/// per tenant on a node.
const EVENTS: &str = "[events]\npoll_ms = 50\nheartbeat_secs = 1\nmax_streams_per_tenant = 2\n\n";

/// What a stream sends: an event, or a comment (a heartbeat).
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Event {
        id: String,
        kind: String,
        data: Value,
    },
    Comment(String),
}

/// A client of `GET /v1/events/stream` on its own connection.
struct Stream {
    reader: BufReader<TcpStream>,
    /// De-chunked bytes not yet parsed.
    buf: Vec<u8>,
}

impl Stream {
    fn open(addr: SocketAddr, key: &str, path: &str, last_event_id: Option<i64>) -> Stream {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             Accept: text/event-stream\r\n"
        );
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            head.push(line.trim().to_ascii_lowercase());
        }
        assert!(status.contains(" 200 "), "stream {path}: {status} {head:?}");
        assert!(
            head.iter()
                .any(|h| h.starts_with("content-type: text/event-stream")),
            "{head:?}"
        );
        assert!(
            head.iter().any(|h| h == "transfer-encoding: chunked"),
            "{head:?}"
        );
        Stream {
            reader,
            buf: Vec::new(),
        }
    }

    /// Reads one more chunk of the body into `buf`.
    fn fill(&mut self) {
        let mut size = String::new();
        self.reader.read_line(&mut size).expect("a chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        assert!(n > 0, "the stream ended");
        let mut chunk = vec![0; n + 2];
        self.reader.read_exact(&mut chunk).expect("a chunk");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next event or comment (waiting at most [`WAIT`] for each chunk).
    fn next(&mut self) -> Item {
        loop {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            if let Some(end) = text.find("\n\n") {
                let block = text[..end].to_owned();
                self.buf.drain(..end + 2);
                let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
                let mut comment = None;
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        comment = Some(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if id.is_empty() {
                    if let Some(c) = comment {
                        return Item::Comment(c);
                    }
                    continue;
                }
                return Item::Event {
                    id,
                    kind,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                };
            }
            self.fill();
        }
    }

    /// The next `n` events, skipping heartbeats.
    fn events(&mut self, n: usize) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Item::Event { id, kind, data } = self.next() {
                out.push((id, kind, data));
            }
        }
        out
    }
}

/// Every event of a tenant after `after`, read in pages of `limit`, checking that each
/// page goes on from the one before without a gap and that `next` is its last cursor.
fn list_all(s: &Sluice, key: &str, after: i64, limit: u32) -> Vec<Value> {
    let mut cursor = after;
    let mut out = Vec::new();
    loop {
        let r = s.request(
            "GET",
            &format!("/v1/events?after={cursor}&limit={limit}"),
            Some(key),
            None,
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        assert!(events.len() <= limit as usize);
        for e in &events {
            assert_eq!(e["cursor"], cursor + 1, "a gap after {cursor}: {page}");
            cursor += 1;
        }
        assert_eq!(page["next"], cursor, "{page}");
        if events.is_empty() {
            return out;
        }
        out.extend(events);
    }
}

/// Waits until the tenant's log holds `n` events of `kind` after `after`; returns all
/// its events after `after`.
fn wait_events(s: &Sluice, key: &str, after: i64, kind: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} {kind} events"), || {
        let all = list_all(s, key, after, 7);
        let got = all.iter().filter(|e| e["type"] == kind).count();
        if got >= n {
            Ok(all)
        } else {
            Err(format!("{got} so far: {all:#?}\n{}", s.log()))
        }
    })
}

/// Per message: its `message.accepted` events come before the others.
fn accepted_first(events: &[Value]) {
    let mut done: HashSet<String> = HashSet::new();
    for e in events {
        let m = e["message_id"].as_str().unwrap().to_owned();
        if e["type"] == "message.accepted" {
            assert!(
                !done.contains(&m),
                "accepted after another event: {events:#?}"
            );
        } else {
            done.insert(m);
        }
    }
}

#[test]
fn events_are_paged_and_streamed_in_order_resumed_after_a_restart_and_kept_per_tenant() {
    let port = free_port();
    let tables = format!(
        "{EVENTS}{}{}{}",
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
    let (key, other) = (s.new_key("t"), s.new_key("u"));

    // A stream opened before any mail, from the start.
    let mut live = Stream::open(s.addr, &key, "/v1/events/stream?after=0", None);
    let mut ids = Vec::new();
    for i in 0..3 {
        let to = serde_json::json!({
            "from": "a@example.com",
            "to": [format!("x{i}@example.net"), format!("y{i}@example.net")],
            "subject": format!("m{i}"),
            "text": "hello",
            "tags": ["news"],
        });
        ids.push(s.submit(&key, &to));
    }
    let theirs = s.submit(&other, &simple("a@example.com", "z@example.net", "theirs"));
    for id in &ids {
        s.wait_state(&key, id, "delivered");
    }
    s.wait_state(&other, &theirs, "delivered");

    let all = wait_events(&s, &key, 0, "message.delivered", 6);
    let n = all.len();
    assert_eq!(
        all.iter()
            .filter(|e| e["type"] == "message.accepted")
            .count(),
        6
    );
    accepted_first(&all);
    let evt_ids: HashSet<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(evt_ids.len(), n, "ids are unique");
    for e in &all {
        assert!(
            ids.contains(&e["message_id"].as_str().unwrap().to_owned()),
            "{e}"
        );
        assert_eq!(e["tags"], serde_json::json!(["news"]), "{e}");
        assert!(
            e["recipient"].as_str().unwrap().ends_with("@example.net"),
            "{e}"
        );
        assert!(e["type"].as_str().unwrap().starts_with("message."), "{e}");
    }
    let delivered = all
        .iter()
        .find(|e| e["type"] == "message.delivered")
        .unwrap();
    assert_eq!(delivered["details"]["relay"], "a", "{delivered}");
    assert_eq!(delivered["details"]["attempt"], 1, "{delivered}");
    assert!(
        delivered["details"]["reply"]
            .as_str()
            .unwrap()
            .starts_with("250"),
        "{delivered}"
    );

    // The other tenant sees its own events only, numbered from 1.
    let mine = wait_events(&s, &other, 0, "message.delivered", 1);
    assert_eq!(mine[0]["cursor"], 1);
    assert!(
        mine.iter().all(|e| e["message_id"] == theirs.as_str()),
        "{mine:#?}"
    );

    // The live stream carried the same events, in order, with id = cursor.
    let streamed = live.events(n);
    for ((id, kind, data), e) in streamed.iter().zip(&all) {
        assert_eq!(id, &e["cursor"].to_string());
        assert_eq!(kind, e["type"].as_str().unwrap());
        assert_eq!(data, e);
    }
    // Idle now: a heartbeat comment keeps it open.
    assert_eq!(live.next(), Item::Comment("heartbeat".into()));

    // Resumed after the third event: exactly the later ones.
    let mut resumed = Stream::open(s.addr, &key, "/v1/events/stream", Some(3));
    let later = resumed.events(n - 3);
    assert_eq!(
        later
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect::<Vec<_>>(),
        (4..=n).map(|c| c.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(resumed.next(), Item::Comment("heartbeat".into()));
    // A third stream of the tenant on this node is refused; the other tenant's is not.
    let r = s.request("GET", "/v1/events/stream", Some(&key), None, b"");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        r.json()["error"]["code"],
        "too_many_event_streams",
        "{}",
        r.body
    );
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    let mut theirs_stream = Stream::open(s.addr, &other, "/v1/events/stream", Some(0));
    let (id, _, first) = theirs_stream.events(1).remove(0);
    assert_eq!(
        (id.as_str(), &first["message_id"]),
        ("1", &Value::from(theirs.as_str()))
    );
    drop(theirs_stream);

    // A filter by type, and a type that does not exist.
    let r = s.request(
        "GET",
        "/v1/events?types=message.delivered&limit=1000",
        Some(&key),
        None,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let only = r.json()["events"].as_array().cloned().unwrap();
    assert_eq!(only.len(), 6);
    assert!(only.iter().all(|e| e["type"] == "message.delivered"));
    let r = s.request(
        "GET",
        "/v1/events?types=message.nope",
        Some(&key),
        None,
        b"",
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let r = s.request("GET", "/v1/events?after=-1", Some(&key), None, b"");
    assert_eq!(r.status, 422, "{}", r.body);
    let r = s.request("GET", "/v1/events", None, None, b"");
    assert_eq!(r.status, 401, "{}", r.body);

    // Open streams do not hold up a graceful stop.
    let mut s = s;
    s.guard.signal("TERM");
    assert!(s.guard.wait_exit(WAIT).success(), "{}", s.log());
    drop((live, resumed));

    // After a restart the log and its cursors are the same, and a stream resumed from
    // its last id gets the new events, numbered on.
    let s = setup.start();
    assert_eq!(list_all(&s, &key, 0, 1000), all);
    let mut after_restart = Stream::open(s.addr, &key, "/v1/events/stream", Some(n as i64));
    let id = s.submit(&key, &simple("a@example.com", "w@example.net", "after"));
    s.wait_state(&key, &id, "delivered");
    let first = after_restart.events(1);
    assert_eq!(first[0].0, (n + 1).to_string());
    assert_eq!(first[0].2["message_id"], id.as_str());
    assert_eq!(first[0].1, "message.accepted");
    // Still only its own: tenant u's cursor did not move.
    assert_eq!(list_all(&s, &other, 0, 1000), mine);
}

/// Two nodes on one PostgreSQL: a stream on one node carries, in order and once, the
/// events of mail submitted to the other, and after that node is killed a stream on
/// the survivor resumed from a cursor yields every later event exactly once.
#[test]
fn a_stream_on_any_postgres_node_carries_every_nodes_events_once_in_order() {
    let db = PgDb::new("sluice_e2e_events");
    let port = free_port();
    let tables = format!(
        "{EVENTS}{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"]),
    );
    let setups = postgres_nodes(&db, &tables, &["n0", "n1"]);
    let _sink = Sink::start(setups[0].root(), port, &[]);
    let mut nodes: Vec<Sluice> = setups.iter().map(Setup::start).collect();
    let key = nodes[0].new_key("t");

    let mut on_b = Stream::open(nodes[1].addr, &key, "/v1/events/stream?after=0", None);
    let mut ids = Vec::new();
    for i in 0..4 {
        let node = &nodes[i % 2];
        let id = node.submit(
            &key,
            &simple("a@example.com", "b@example.net", &format!("m{i}")),
        );
        ids.push(id);
    }
    for id in &ids {
        nodes[0].wait_state(&key, id, "delivered");
    }
    let all = wait_events(&nodes[0], &key, 0, "message.delivered", 4);
    accepted_first(&all);
    let streamed = on_b.events(all.len());
    for ((id, _, data), e) in streamed.iter().zip(&all) {
        assert_eq!(id, &e["cursor"].to_string());
        assert_eq!(data, e);
    }

    // Node 1 dies; its client resumes on node 0 from the last id it saw, minus two.
    nodes[1].guard.kill();
    drop(on_b);
    let from = all.len() as i64 - 2;
    let mut on_a = Stream::open(nodes[0].addr, &key, "/v1/events/stream", Some(from));
    let id = nodes[0].submit(&key, &simple("a@example.com", "b@example.net", "late"));
    nodes[0].wait_state(&key, &id, "delivered");
    let rest = on_a.events(2 + 2);
    let cursors: Vec<i64> = rest.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert_eq!(
        cursors,
        (from + 1..=from + 4).collect::<Vec<_>>(),
        "{rest:#?}"
    );
    assert_eq!(rest[2].2["message_id"], id.as_str());
    nodes.truncate(1);
}

#[test]
fn streams_are_bounded_per_node_and_a_tenants_streams_share_reads_yet_each_gets_every_event() {
    let port = free_port();
    let tables = format!(
        "[events]\npoll_ms = 50\nheartbeat_secs = 1\nmax_streams_per_tenant = 10\nmax_streams = 6\n\n{}{}{}",
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
    let (key, other) = (s.new_key("t"), s.new_key("u"));

    // Five of one tenant's streams, one from before anything and the others resumed
    // at different places later; one of the other tenant's: the node's six.
    let first = Stream::open(s.addr, &key, "/v1/events/stream?after=0", None);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            s.submit(
                &key,
                &simple("a@example.com", &format!("x{i}@example.net"), "m"),
            )
        })
        .collect();
    for id in &ids {
        s.wait_state(&key, id, "delivered");
    }
    let all = wait_events(&s, &key, 0, "message.delivered", 3);
    let n = all.len() as i64;
    let mut streams: Vec<(i64, Stream)> = vec![];
    for after in [0, 1, n / 2, n - 1] {
        streams.push((
            after,
            Stream::open(s.addr, &key, "/v1/events/stream", Some(after)),
        ));
    }
    let _theirs = Stream::open(s.addr, &other, "/v1/events/stream", None);
    let r = s.request("GET", "/v1/events/stream", Some(&other), None, b"");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_many_event_streams");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("events.max_streams)"),
        "{}",
        r.body
    );

    // Every stream gets every event after its start once, in order, the later mail's
    // too (read once for all of them, from the shared page).
    let more = s.submit(&key, &simple("a@example.com", "late@example.net", "late"));
    s.wait_state(&key, &more, "delivered");
    let all = wait_events(&s, &key, 0, "message.delivered", 4);
    let total = all.len() as i64;
    streams.push((0, first));
    for (after, stream) in &mut streams {
        let got: Vec<String> = stream
            .events((total - *after) as usize)
            .into_iter()
            .map(|(id, _, data)| {
                assert_eq!(data["cursor"].to_string(), id);
                id
            })
            .collect();
        let want: Vec<String> = (*after + 1..=total).map(|c| c.to_string()).collect();
        assert_eq!(got, want, "the stream from {after}");
        // Nothing more: the next is a heartbeat.
        assert_eq!(stream.next(), Item::Comment("heartbeat".into()));
    }

    // A stream closed frees its place on the node.
    drop(streams.pop());
    wait_for("a place on the node again", || {
        let r = s.request("GET", "/v1/events?limit=1", Some(&other), None, b"");
        assert_eq!(r.status, 200);
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            c,
            "GET /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {other}\r\n\r\n"
        )
        .unwrap();
        let mut status = String::new();
        BufReader::new(c).read_line(&mut status).unwrap();
        if status.contains(" 200 ") {
            Ok(())
        } else {
            Err(status)
        }
    });
}
