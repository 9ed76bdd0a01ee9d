//! `sluice admin …` as an operator runs it: the real binary against a live
//! `sluice serve`, each command's table read as a person would and its `--json`
//! parsed as a script would; errors that say what was wrong without the token; and
//! hostile answers (escape sequences, endless bodies) that cannot reach the terminal
//! or exhaust memory.

use crate::support::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

/// `sluice admin ARGS` against `url` with `token` (none: the variable unset).
fn admin_at(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.arg("admin")
        .args(args)
        .env("SLUICE_URL", url)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("SLUICE_ADMIN_TOKEN", t);
    }
    cmd.output().expect("sluice admin runs")
}

fn url_of(s: &Sluice) -> String {
    format!("http://{}", s.addr)
}

fn admin(s: &Sluice, args: &[&str]) -> Output {
    admin_at(&url_of(s), Some(s.admin_token()), args)
}

/// Stdout of a command that must succeed.
fn ok(s: &Sluice, args: &[&str]) -> String {
    let out = admin(s, args);
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "sluice admin {args:?} failed: {stderr}\n{}",
        s.log()
    );
    assert!(stderr.is_empty(), "sluice admin {args:?}: {stderr}");
    stdout
}

/// The `--json` output of a command that must succeed, parsed.
fn json_of(s: &Sluice, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(s, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} --json: {e}: {out}"))
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The table line whose first column is `first`.
fn row<'a>(table: &'a str, first: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{table}"))
}

/// The cells of a table row split on runs of spaces (cells here hold no double space).
fn cells(line: &str) -> Vec<&str> {
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// A server with relay `a` in front of an `smtp-sink` started with `sink_opts` and
/// tenant `t`; `send_config` as `PipelineParts::send_config`.
fn server(sink_opts: &[&str], send_config: &str) -> (Setup, u16, Sink, Sluice, String) {
    let port = free_port();
    let tables = format!(
        "{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["*"])
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        send_config,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, sink_opts);
    let s = setup.start();
    let key = s.new_key("t");
    (setup, port, sink, s, key)
}

#[test]
fn relays_are_listed_with_live_stats_added_drained_weighted_and_deleted() {
    let (_setup, _port, _sink, s, key) = server(&[], "");
    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "counted"));
    s.wait_state(&key, &id, "delivered");

    // The delivery shows in the last minute's window, as JSON and in the table.
    let list = wait_for("relay a's window to count the delivery", || {
        let v = json_of(&s, &["relays", "list"]);
        let a = v["relays"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["id"] == "a"))
            .cloned()
            .ok_or_else(|| format!("no relay a: {v}"))?;
        let minute = a["windows"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["window_secs"] == 60))
            .cloned()
            .unwrap_or_default();
        if minute["delivered"].as_u64() >= Some(1) {
            Ok(a)
        } else {
            Err(format!("{a:#}"))
        }
    });
    assert_eq!(list["state"], "active", "{list:#}");
    assert_eq!(list["up"], true, "{list:#}");
    let table = ok(&s, &["relays", "list"]);
    let header = cells(table.lines().next().unwrap_or_default());
    assert_eq!(
        header,
        [
            "ID",
            "STATE",
            "UP",
            "IN FLIGHT",
            "WEIGHT",
            "SENT 1m",
            "DELIVERED",
            "DEFERRED",
            "BOUNCED",
            "LATENCY",
            "OWNER",
            "URL"
        ],
        "{table}"
    );
    let a = cells(row(&table, "a"));
    assert_eq!(&a[..5], ["a", "active", "up", "0/16", "100"], "{table}");
    assert!(a[5].parse::<u64>().unwrap_or(0) >= 1, "sent: {table}");
    assert!(a[6].parse::<u64>().unwrap_or(0) >= 1, "delivered: {table}");
    assert!(
        a[9].ends_with("ms") || a[9].ends_with('s'),
        "latency: {table}"
    );
    // The columns line up: every row's second column starts where the header's does.
    let at = table.find("STATE").unwrap();
    assert_eq!(&row(&table, "a")[at..at + 6], "active", "{table}");

    // Add: a table line, and the relay as the API gave it with --json.
    let out = ok(
        &s,
        &[
            "relays",
            "add",
            "b",
            "smtp://127.0.0.1:9",
            "--weight",
            "30",
            "--connection-limit",
            "3",
        ],
    );
    assert_eq!(
        out,
        "relay b added: smtp://127.0.0.1:9, weight 30, 3 connections, tags pool:platform\n"
    );
    let c = json_of(
        &s,
        &[
            "relays",
            "add",
            "c",
            "smtp://127.0.0.1:9",
            "--tag",
            "pool:platform",
            "--tag",
            "bulk",
        ],
    );
    assert_eq!(c["id"], "c");
    assert_eq!(c["tags"], json!(["pool:platform", "bulk"]));

    assert_eq!(
        ok(&s, &["relays", "weight", "b", "7"]),
        "relay b has weight 7\n"
    );
    assert_eq!(json_of(&s, &["relays", "weight", "c", "8"])["weight"], 8);
    assert!(ok(&s, &["relays", "drain", "b"]).starts_with("relay b is draining"));
    assert_eq!(json_of(&s, &["relays", "drain", "c"])["state"], "draining");
    let table = ok(&s, &["relays", "list"]);
    let b = cells(row(&table, "b"));
    assert_eq!(
        [b[0], b[1], b[3], b[4]],
        ["b", "draining", "0/3", "7"],
        "{table}"
    );
    assert_eq!(
        ok(&s, &["relays", "activate", "b"]),
        "relay b is active: it takes new work\n"
    );

    // Show: settings as `key: value` lines, then a table of every window.
    let show = ok(&s, &["relays", "show", "a"]);
    assert!(show.contains("url:         smtp://127.0.0.1:"), "{show}");
    assert!(show.contains("owner:       the platform"), "{show}");
    let windows: Vec<&str> = show
        .lines()
        .skip_while(|l| !l.starts_with("WINDOW"))
        .collect();
    assert_eq!(windows.len(), 4, "{show}");
    assert_eq!(
        windows.iter().map(|w| cells(w)[0]).collect::<Vec<_>>(),
        ["WINDOW", "1m", "15m", "1h"],
        "{show}"
    );
    let v = json_of(&s, &["relays", "show", "a"]);
    assert_eq!(v["windows"].as_array().map(Vec::len), Some(3), "{v:#}");

    // Delete: a line, `{}` for a script (the API answers 204), then it is gone.
    assert_eq!(ok(&s, &["relays", "delete", "b"]), "relay b deleted\n");
    assert_eq!(json_of(&s, &["relays", "delete", "c"]), json!({}));
    let out = admin(&s, &["relays", "show", "b"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("GET /admin/v1/relays/b: HTTP 404 not_found: relay \"b\""),
        "{stderr}"
    );
    // A refused change names the field.
    let out = admin(&s, &["relays", "add", "d", "http://x"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP 422 invalid: "), "{stderr}");
    assert!(stderr.contains("(field: url)"), "{stderr}");

    // The live view: two screens, then it ends by itself; as JSON, one list per line.
    let out = ok(&s, &["top", "--interval", "1", "--iterations", "2"]);
    assert_eq!(out.matches("sluice admin top").count(), 2, "{out}");
    let screen = out.split("sluice admin top").nth(1).unwrap_or_default();
    assert!(screen.contains("every 1s"), "{out}");
    let a = cells(row(screen, "a"));
    assert_eq!(&a[..4], ["a", "active", "up", "0/16"], "{out}");
    // A rate (`0` once the delivery is over a minute old, on a very slow run).
    assert!(a[4].ends_with("/s") || a[4] == "0", "sent rate: {out}");
    let out = ok(
        &s,
        &["top", "--interval", "1", "--iterations", "2", "--json"],
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines.iter().all(|l| l["relays"][0]["windows"].is_array()),
        "{out}"
    );
    // Bounded: no interval of 0 (a busy loop) or beyond an hour.
    for bad in ["0", "3601"] {
        let out = admin(&s, &["top", "--interval", bad]);
        assert_eq!(out.status.code(), Some(2), "{:?}", texts(&out));
    }
}

#[test]
fn tenants_and_keys_are_made_listed_shown_and_revoked() {
    let (_setup, _port, _sink, s, _key) = server(&[], "");
    // A name that tries to rewrite the operator's terminal.
    let out = ok(
        &s,
        &[
            "tenants",
            "create",
            "acme",
            "--name",
            "Acme \x1b[2J\x1b[31mCorp",
            "--domain",
            "acme.example",
            "--domain",
            "acme.test",
        ],
    );
    assert!(
        out.starts_with(
            "tenant acme created (domains acme.example,acme.test, pools pool:platform)"
        ),
        "{out}"
    );
    let v = json_of(&s, &["tenants", "create", "beta", "--no-header-from-check"]);
    assert_eq!(v["id"], "beta");
    assert_eq!(v["header_from_check"], false);

    let table = ok(&s, &["tenants", "list"]);
    assert!(
        !table.contains('\x1b'),
        "an escape reached the terminal: {table:?}"
    );
    let acme = cells(row(&table, "acme"));
    assert_eq!(
        &acme[..6],
        [
            "acme",
            "Acme \\u{1b}[2J\\u{1b}[31mCorp",
            "acme.example,acme.test",
            "pool:platform",
            "platform default",
            "yes"
        ],
        "{table}"
    );
    assert_eq!(cells(row(&table, "beta"))[2], "none", "{table}");
    let list = json_of(&s, &["tenants", "list"]);
    let names: Vec<&str> = list["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    // --json is the API's JSON as it is: the name as stored.
    assert!(names.contains(&"Acme \x1b[2J\x1b[31mCorp"), "{list:#}");

    let show = ok(&s, &["tenants", "show", "acme"]);
    assert!(
        show.contains("sender domains:    acme.example,acme.test\n"),
        "{show}"
    );
    assert_eq!(
        json_of(&s, &["tenants", "show", "acme"])["pools"],
        json!(["pool:platform"])
    );

    // A key, shown once; it works; revoked, it does not.
    let out = ok(&s, &["tenants", "keys", "create", "acme"]);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key line: {out}"))
        .to_owned();
    assert!(out.contains("shown this once"), "{out}");
    let r = s.request("GET", "/v1/suppressions", Some(&key), None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let made = json_of(&s, &["tenants", "keys", "create", "acme"]);
    let second = made["id"].as_str().expect("key id").to_owned();
    assert!(made["key"].as_str().is_some(), "{made:#}");

    let keys = json_of(&s, &["tenants", "keys", "list", "acme"]);
    let first = keys["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["id"] != second.as_str())
        .and_then(|k| k["id"].as_str())
        .expect("the first key")
        .to_owned();
    assert_eq!(
        ok(&s, &["tenants", "keys", "revoke", "acme", &first]),
        format!("key {first} of tenant acme revoked\n")
    );
    let r = s.request("GET", "/v1/suppressions", Some(&key), None, b"");
    assert_eq!(r.status, 401, "{}", r.body);
    let table = ok(&s, &["tenants", "keys", "list", "acme"]);
    assert_eq!(cells(row(&table, &first))[3], "revoked", "{table}");
    assert_eq!(cells(row(&table, &second))[3], "live", "{table}");
    assert!(!table.contains(&key), "a listing shows no key: {table}");
    assert_eq!(
        json_of(&s, &["tenants", "keys", "revoke", "acme", &second]),
        json!({})
    );
    let keys = json_of(&s, &["tenants", "keys", "list", "acme"]);
    assert!(
        keys["keys"]
            .as_array()
            .is_some_and(|ks| ks.len() == 2 && ks.iter().all(|k| k["revoked_at_ms"].is_i64())),
        "{keys:#}"
    );

    // The nodes: this one, alive and leading.
    let table = ok(&s, &["nodes"]);
    assert!(table.starts_with("answered by "), "{table}");
    let v = json_of(&s, &["nodes"]);
    let this = v["this_node"].as_str().expect("this_node");
    assert_eq!(v["nodes"][0]["state"], "alive", "{v:#}");
    let node = cells(row(&table, this));
    assert_eq!(&node[2..4], ["alive", "yes"], "{table}");
}

#[test]
fn failed_recipients_are_listed_and_requeued() {
    let (setup, port, refusing, s, key) = server(&["-f", "rcpt"], "");
    let id = s.submit(
        &key,
        &simple("a@example.com", "gone@example.net", "refused"),
    );
    s.wait_state(&key, &id, "failed");

    let table = ok(&s, &["failed", "list"]);
    let line = cells(row(&table, &id));
    assert_eq!(
        &line[1..7],
        ["0", "t", "gone@example.net", "failed", "1", "a"],
        "{table}"
    );
    assert!(line[8].starts_with('5'), "the last reply: {table}");
    let v = json_of(&s, &["failed", "list", "--limit", "5"]);
    assert_eq!(v["failed"][0]["message_id"], id.as_str(), "{v:#}");
    let out = admin(&s, &["failed", "list", "--limit", "0"]);
    assert_eq!(out.status.code(), Some(2), "{:?}", texts(&out));

    refusing.stop();
    let _accepting = Sink::start(setup.root(), port, &[]);
    assert_eq!(
        ok(&s, &["failed", "requeue", &id, "0"]),
        format!("recipient 0 of message {id} is queued again, due now\n")
    );
    s.wait_state(&key, &id, "delivered");
    let empty = ok(&s, &["failed", "list"]);
    let lines: Vec<&str> = empty.lines().collect();
    assert_eq!(
        cells(lines[0]),
        cells(table.lines().next().unwrap_or_default()),
        "{empty}"
    );
    assert_eq!(lines[1..], ["(no failed or expired recipients)"], "{empty}");
    let out = admin(&s, &["failed", "requeue", &id, "0", "--json"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("HTTP 404 not_found"), "{stderr}");
}

#[test]
fn deferred_recipients_are_retried_by_relay_and_all() {
    // Retries an hour apart: only `retry` makes the recipient due again.
    let (_setup, _port, _sink, s, key) = server(
        &["-r", "rcpt"],
        r#"{ base_secs = "3600", max_delay_secs = "3600" }"#,
    );
    let id = s.submit(
        &key,
        &simple("a@example.com", "later@example.net", "deferred"),
    );
    s.wait_state(&key, &id, "deferred");
    assert_eq!(
        ok(&s, &["retry", "--relay", "a"]),
        "1 deferred recipient is due now\n"
    );
    let m = s.wait_message(&key, &id, "a second attempt", |m| {
        m["recipients"][0]["attempts"].as_u64() >= Some(2)
            && m["recipients"][0]["state"] == "deferred"
    });
    assert_eq!(m["recipients"][0]["state"], "deferred");
    assert_eq!(json_of(&s, &["retry", "--all"]), json!({"retried": 1}));
    assert_eq!(
        json_of(&s, &["retry", "--tenant", "nobody"]),
        json!({"retried": 0})
    );
    // Naming nothing, or everything and something, is a usage error before any request.
    for args in [&["retry"][..], &["retry", "--all", "--relay", "a"]] {
        let out = admin(&s, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", texts(&out));
    }

    // A wrong token: the status and the API's code, a hint, and never the token.
    let out = admin_at(
        &url_of(&s),
        Some("adm-wrong-secret-4711"),
        &["relays", "list"],
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("GET /admin/v1/relays: HTTP 401 unauthorized"),
        "{stderr}"
    );
    assert!(stderr.contains("SLUICE_ADMIN_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains("wrong-secret"),
        "the token was echoed: {stderr}"
    );
    // A tenant's key is not the admin token either.
    let out = admin_at(&url_of(&s), Some(&key), &["nodes"]);
    let (_, stderr) = texts(&out);
    assert!(stderr.contains("HTTP 401 unauthorized"), "{stderr}");
    assert!(!stderr.contains(&key), "the key was echoed: {stderr}");
}

#[test]
fn errors_name_the_url_tried_and_never_the_token() {
    // Nothing listens there (a port given out once, no longer bound).
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = admin_at(&url, Some("adm-secret-0815"), &["relays", "list"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("calling Sluice at {url}")),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");

    let out = admin_at(&url, None, &["relays", "list"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SLUICE_ADMIN_TOKEN is not set"), "{stderr}");

    let out = admin_at(&url, Some("adm secret\r\nX-Evil: 1"), &["nodes"]);
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        !stderr.contains("secret") && !stderr.contains("Evil"),
        "{stderr}"
    );
}

/// A one-connection HTTP server that answers `answer` (head and body) and hands back
/// the request head it got.
fn fake_server(
    answer: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
) -> (String, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("address"));
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().expect("accept");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
            head.push(b[0]);
        }
        answer(&mut c);
        String::from_utf8_lossy(&head).into_owned()
    });
    (url, t)
}

#[test]
fn hostile_answers_and_ids_cannot_reach_the_terminal_the_memory_or_the_request_line() {
    // An id with a line break stays one path segment.
    let (url, server) = fake_server(|c| {
        let body = "{\"error\":{\"code\":\"x\\u001b[2J\",\"message\":\"evil \\u001b]0;pwned\\u0007 \\r\\nnext\"}}";
        let _ = write!(
            c,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let out = admin_at(&url, Some("adm-t"), &["relays", "show", "a b\r\nX-Evil: 1"]);
    let head = server.join().expect("server");
    assert!(
        head.starts_with("GET /admin/v1/relays/a%20b%0D%0AX-Evil:%201 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(!head.contains("\r\nX-Evil"), "{head}");
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // What the server said is shown, its escapes and line breaks made visible.
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\x07'),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("HTTP 404 x\\u{1b}[2J: evil \\u{1b}]0;pwned\\u{7} \\r\\nnext"),
        "{stderr}"
    );

    // A server that never stops answering: the CLI stops reading at its bound.
    let (url, server) = fake_server(|c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[");
        let chunk = vec![b'1'; 1 << 20];
        // 80 MiB, past the 64 MiB bound; the CLI hangs up first.
        for _ in 0..80 {
            if c.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let out = admin_at(&url, Some("adm-t"), &["relays", "list"]);
    let _ = server.join();
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("longer than 67108864 bytes"), "{stderr}");

    // A table cell never grows past its bound, whatever a server stores.
    let (url, server) = fake_server(|c| {
        let name = "n".repeat(10_000);
        let body = json!({"tenants": [{"id": "long", "name": name}]}).to_string();
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let out = admin_at(&url, Some("adm-t"), &["tenants", "list"]);
    let _ = server.join();
    let (stdout, stderr) = texts(&out);
    assert!(out.status.success(), "{stderr}");
    let line = row(&stdout, "long");
    assert!(line.chars().count() < 200, "{line}");
    assert!(line.contains("nnn…"), "{line}");
}

/// A pseudo-terminal: (the side a person types into, the side the program has).
fn pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: two valid out-pointers; no name, settings or size asked for.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty handed us both descriptors; each is owned once from here.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    }
}

#[test]
fn top_on_a_terminal_redraws_until_q_or_ctrl_c_and_gives_the_terminal_back() {
    use std::os::fd::AsRawFd;
    let (_setup, _port, _sink, s, _key) = server(&[], "");
    for key in [b'q', 0x03] {
        let (mut master, slave) = pty();
        // SAFETY: termios is plain data, filled by tcgetattr.
        let mut before: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and termios.
        assert_eq!(
            unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut before) },
            0
        );
        let spawned = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["admin", "top", "--interval", "1"])
            .env("SLUICE_URL", url_of(&s))
            .env("SLUICE_ADMIN_TOKEN", s.admin_token())
            .stdin(slave.try_clone().expect("pty"))
            .stdout(slave.try_clone().expect("pty"))
            .stderr(slave.try_clone().expect("pty"))
            .spawn()
            .expect("sluice admin top runs");
        let mut child = ChildGuard::adopt(spawned, "sluice admin top");
        // What the program writes, read on another thread (a pty read blocks).
        let mut reader = master.try_clone().expect("pty");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let screens = |seen: &[u8]| {
            String::from_utf8_lossy(seen)
                .matches("\x1b[H\x1b[2J")
                .count()
        };
        wait_for("two screens, each drawn over the last", || {
            while let Ok(chunk) = rx.try_recv() {
                seen.extend(chunk);
            }
            if screens(&seen) >= 2 {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&seen).into_owned())
            }
        });
        let text = String::from_utf8_lossy(&seen).into_owned();
        assert!(text.contains("RELAY"), "{text}");
        master.write_all(&[key]).expect("type the key");
        let status = child.wait_exit(WAIT);
        assert!(status.success(), "{status:?}");
        // The terminal's settings are as they were: lines, echo and signals again.
        // SAFETY: as above.
        let mut after: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut after) }, 0);
        assert_eq!(after.c_lflag, before.c_lflag, "{key:#x}");
        assert_ne!(after.c_lflag & libc::ICANON, 0);
        assert_ne!(after.c_lflag & libc::ECHO, 0);
    }
}

#[test]
fn the_queue_is_summed_held_released_cancelled_and_a_tenant_suspended() {
    // Every attempt deferred, retries an hour apart: the queue stands still between commands.
    let (_setup, _port, _sink, s, key) = server(
        &["-r", "rcpt"],
        r#"{ base_secs = "3600", max_delay_secs = "3600" }"#,
    );
    let one = s.submit(&key, &simple("a@example.com", "x@one.example", "one"));
    let two = s.submit(&key, &simple("a@example.com", "y@two.example", "two"));
    s.wait_state(&key, &one, "deferred");
    s.wait_state(&key, &two, "deferred");

    let table = ok(&s, &["queue"]);
    assert!(table.starts_with("queue at "), "{table}");
    let deferred = cells(row(&table, "deferred"));
    assert_eq!(deferred[1], "2", "{table}");
    assert!(deferred[2].ends_with('s'), "oldest age: {table}");
    assert_eq!(cells(row(&table, "t"))[1], "2", "{table}");
    assert_eq!(cells(row(&table, "one.example"))[1], "1", "{table}");
    let v = json_of(&s, &["queue", "--top", "1"]);
    assert_eq!(v["by_domain"]["groups"], 2, "{v:#}");
    assert_eq!(
        v["by_domain"]["top"].as_array().map(Vec::len),
        Some(1),
        "{v:#}"
    );
    assert!(ok(&s, &["queue", "--top", "1"]).contains("(1 of 2 shown; --top for more)"));

    assert_eq!(
        ok(
            &s,
            &[
                "hold",
                "--domain",
                "one.example",
                "--reason",
                "provider outage"
            ]
        ),
        "1 recipient held; 0 in flight now, held if their attempt does not finish them\n"
    );
    let v = json_of(&s, &["queue"]);
    let held = v["held_by"]
        .as_array()
        .and_then(|h| h.iter().find(|g| g["key"] == "hold"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(held["recipients"], 1, "{v:#}");
    assert_eq!(
        json_of(&s, &["release", "--domain", "one.example"]),
        json!({"released": 1})
    );
    // Held recipients can be cancelled; a release then finds nothing held.
    assert_eq!(
        json_of(&s, &["hold", "--domain", "two.example"]),
        json!({"held": 1, "in_flight_marked": 0})
    );
    assert_eq!(
        ok(
            &s,
            &["cancel", "--message", &two, "--reason", "sent by mistake"]
        ),
        "1 recipient cancelled (failed); 0 in flight now left to finish their attempt\n"
    );
    assert_eq!(
        ok(&s, &["release", "--domain", "two.example"]),
        "0 recipients released, due now\n"
    );
    assert_eq!(
        json_of(&s, &["cancel", "--message", &two]),
        json!({"cancelled": 0, "in_flight": 0})
    );
    let failed = ok(&s, &["failed", "list"]);
    assert!(
        row(&failed, &two).contains("cancelled: sent by mistake"),
        "{failed}"
    );
    assert_eq!(json_of(&s, &["failed", "requeue", &two, "0"]), json!({}));
    // Naming nothing is a usage error before any request.
    for args in [&["hold"][..], &["cancel", "--reason", "x"], &["release"]] {
        let out = admin(&s, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?}", texts(&out));
    }

    // A tenant suspended: its live queue held, listed as suspended; resumed: released.
    let out = ok(&s, &["tenants", "suspend", "t", "--reason", "abuse report"]);
    assert!(out.starts_with("tenant t suspended: "), "{out}");
    let table = ok(&s, &["queue"]);
    let line = row(&table, "t");
    let suspended = table
        .lines()
        .skip_while(|l| !l.starts_with("SUSPENDED TENANT"))
        .nth(1)
        .unwrap_or_else(|| panic!("no suspended tenants: {table}"));
    assert!(
        suspended.starts_with("t ") && suspended.ends_with("abuse report"),
        "{table}"
    );
    assert!(!line.is_empty());
    let v = json_of(&s, &["tenants", "resume", "t"]);
    assert_eq!(v["suspended"], false, "{v:#}");
    assert!(json_of(&s, &["queue"])["suspended_tenants"] == json!([]));

    // A relay suspended and resumed (drain and activate by their other names).
    assert_eq!(
        json_of(&s, &["relays", "suspend", "a"])["state"],
        "draining"
    );
    assert_eq!(
        json_of(&s, &["relays", "resume", "a"]),
        json!({"relay": "a", "state": "active"})
    );
}
