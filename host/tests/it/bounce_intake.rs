//! Bounce intake end to end: the real `sluice serve` with VERP and its SMTP
//! listener, a real Postfix `smtp-sink` relay, and real DSNs sent with `swaks`.
//! A delivered message gets a DSN on its return path and its recipient ends up
//! `bounced` and suppressed; forged return paths and broken dialogues get the
//! right SMTP errors. Loopback only; every wait is a bounded poll.

use crate::support::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

const BOUNCE_DOMAIN: &str = "bounces.sluice.test";

/// A pipeline with relay `a` on `relay_port`, tenant `t`, VERP on and the SMTP
/// listener on `smtp_port`.
fn setup(relay_port: u16, smtp_port: u16) -> Setup {
    setup_with(relay_port, smtp_port, "")
}

/// The same with more tables (e.g. another tenant).
fn setup_with(relay_port: u16, smtp_port: u16, extra_tables: &str) -> Setup {
    let tables = format!(
        "{}{}{extra_tables}\n[smtp_in]\nlisten = \"127.0.0.1:{smtp_port}\"\nhostname = \"mx.sluice.test\"\n\
         max_message_bytes = 100000\ncommand_timeout_secs = 30\n\n\
         [plugins.bounce]\ntimeout_ms = 2000\n",
        relay_table("a", &format!("smtp://127.0.0.1:{relay_port}"), ""),
        tenant_table("t", &["*"]),
    );
    let delivery = format!("bounce_domain = \"{BOUNCE_DOMAIN}\"\n");
    Setup::new(PipelineParts {
        delivery: &delivery,
        tables: &tables,
        ..Default::default()
    })
}

/// The envelope sender the sink saw for the message to `rcpt` with `subject`.
fn return_path(sink: &Sink, subject: &str, rcpt: &str) -> String {
    wait_for(&format!("the sink to keep {subject:?} for {rcpt}"), || {
        let kept = sink.with_subject(subject);
        kept.iter()
            .find(|m| {
                headers(m)
                    .iter()
                    .any(|(n, v)| n == "X-Rcpt-Args" && v == &format!("<{rcpt}>"))
            })
            .and_then(|m| header(m, "X-Mail-Args"))
            .map(|a| a.trim_matches(['<', '>']).to_owned())
            .ok_or_else(|| format!("{kept:#?}\n{}", sink.log()))
    })
}

/// Runs swaks against the listener; (exit status ok, transcript).
fn swaks(port: u16, to: &str, data: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "<>", "--to", to, "--helo", "mta.example.net"])
        .args(["--timeout", "30", "--data"])
        .arg(format!("@{}", data.display()))
        .args(extra)
        .output()
        .expect("swaks is installed (see .ci/run)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An RFC 3464 report about `rcpt` to the return path `rp`.
fn dsn(rp: &str, rcpt: &str, action: &str, status: &str, diagnostic: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n\
To: {rp}\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\
\r\n\
--B1\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is the mail system at host mx.example.net.\r\n\
\r\n\
--B1\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
\r\n\
Final-Recipient: rfc822; {rcpt}\r\n\
Original-Recipient: rfc822; {rcpt}\r\n\
Action: {action}\r\n\
Status: {status}\r\n\
Diagnostic-Code: smtp; {diagnostic}\r\n\
\r\n\
--B1\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: alice@example.com\r\n\
To: {rcpt}\r\n\
Subject: Hello\r\n\
\r\n\
--B1--\r\n"
    )
}

/// An ARF feedback report about `rcpt`.
fn arf(rp: &str, rcpt: &str) -> String {
    format!(
        "From: feedback@isp.example\r\n\
To: {rp}\r\n\
Subject: Abuse report\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"F1\"\r\n\
\r\n\
--F1\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is an e-mail abuse report.\r\n\
\r\n\
--F1\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: abuse\r\n\
User-Agent: isp-fbl/1.0\r\n\
Version: 1\r\n\
Original-Rcpt-To: {rcpt}\r\n\
\r\n\
--F1\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: alice@example.com\r\n\
To: {rcpt}\r\n\
Subject: Hello\r\n\
\r\n\
Hi\r\n\
--F1--\r\n"
    )
}

fn recipient<'a>(m: &'a Value, address: &str) -> &'a Value {
    m["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["address"] == address))
        .unwrap_or_else(|| panic!("no recipient {address} in {m:#}"))
}

fn events_of<'a>(m: &'a Value, address: &str, kind: &str) -> Vec<&'a Value> {
    m["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter(|e| e["recipient"] == address && e["kind"] == kind)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_dsn_after_delivery_bounces_and_suppresses_the_recipient() {
    let (relay_port, smtp_port) = (free_port(), free_port());
    let setup = setup(relay_port, smtp_port);
    let sink = Sink::start(setup.root(), relay_port, &[]);
    let s = setup.start();
    let key = s.new_key("t");

    let id = s.submit(
        &key,
        &json!({"from": "alice@example.com", "to": ["bob@example.net", "carol@example.net"],
                "subject": "Hello", "text": "Hi"}),
    );
    s.wait_state(&key, &id, "delivered");

    // One transaction per recipient, each with its own signed return path.
    let rp_bob = return_path(&sink, "Hello", "bob@example.net");
    let rp_carol = return_path(&sink, "Hello", "carol@example.net");
    assert_ne!(rp_bob, rp_carol);
    for rp in [&rp_bob, &rp_carol] {
        let (local, domain) = rp.split_once('@').expect("an address");
        assert_eq!(domain, BOUNCE_DOMAIN, "{rp}");
        assert!(local.starts_with("bounces+") && local.len() <= 64, "{rp}");
        assert!(
            local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'+'),
            "{rp}"
        );
    }

    // A late bounce for bob, pipelined.
    let bounce = setup.root().join("bob.eml");
    let text = dsn(
        &rp_bob,
        "bob@example.net",
        "failed",
        "5.1.1",
        "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
    );
    std::fs::write(&bounce, text).unwrap();
    let (ok, transcript) = swaks(smtp_port, &rp_bob, &bounce, &["--pipeline"]);
    assert!(ok, "swaks should succeed:\n{transcript}\n{}", s.log());
    assert!(
        transcript.contains("250 2.0.0 bounce recorded"),
        "{transcript}"
    );

    let m = s.wait_message(&key, &id, "bob bounced", |m| {
        recipient(m, "bob@example.net")["state"] == "bounced"
    });
    assert_eq!(recipient(&m, "carol@example.net")["state"], "delivered");
    let bounced = events_of(&m, "bob@example.net", "bounced");
    assert_eq!(bounced.len(), 1, "{m:#}");
    let d = &bounced[0]["detail"];
    assert_eq!(d["reason"], "userunknown", "{m:#}");
    assert_eq!(d["hard"], true, "{m:#}");
    assert_eq!(d["status"], "5.1.1", "{m:#}");
    assert_eq!(d["source"], "dsn", "{m:#}");
    assert!(
        d["diagnostic"]
            .as_str()
            .is_some_and(|t| t.contains("User unknown")),
        "{m:#}"
    );
    assert_eq!(
        bounced[0]["relay"], "a",
        "counted on the relay that carried it"
    );

    // bob is suppressed for tenant t.
    let r = s.request("GET", "/v1/suppressions", Some(&key), None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.json();
    let entries = list["suppressions"].as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{list:#}");
    assert_eq!(entries[0]["address"], "bob@example.net");
    assert_eq!(entries[0]["reason"], "userunknown");
    assert_eq!(entries[0]["source"], "dsn");

    // A second send to bob alone is refused; with another recipient, bob is reported.
    let r = s.post_message(
        &key,
        &simple("alice@example.com", "Bob@Example.net", "Again"),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "suppressed", "{}", r.body);
    assert_eq!(e["field"], "to", "{}", r.body);
    assert!(
        e["message"].as_str().unwrap_or("").contains("userunknown"),
        "{}",
        r.body
    );
    let r = s.post_message(
        &key,
        &json!({"from": "alice@example.com", "to": ["bob@example.net", "dave@example.net"],
                "subject": "Mixed", "text": "Hi"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let body = r.json();
    let statuses: Vec<(String, String)> = body["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&("dave@example.net".into(), "queued".into()))
            && statuses.contains(&("bob@example.net".into(), "suppressed".into())),
        "{body:#}"
    );
    let mixed = s.wait_state(&key, body["id"].as_str().unwrap(), "delivered");
    assert_eq!(
        mixed["recipients"].as_array().unwrap().len(),
        1,
        "{mixed:#}"
    );

    // A delayed DSN for carol is an event, not a state change.
    let delayed = setup.root().join("carol-delayed.eml");
    std::fs::write(
        &delayed,
        dsn(
            &rp_carol,
            "carol@example.net",
            "delayed",
            "4.4.7",
            "451 4.4.7 delivery delayed",
        ),
    )
    .unwrap();
    let (ok, transcript) = swaks(smtp_port, &rp_carol, &delayed, &[]);
    assert!(ok, "{transcript}");
    let m = s.wait_message(&key, &id, "a delayed event for carol", |m| {
        !events_of(m, "carol@example.net", "delayed").is_empty()
    });
    assert_eq!(recipient(&m, "carol@example.net")["state"], "delivered");

    // A complaint about carol suppresses her too.
    let complaint = setup.root().join("carol-arf.eml");
    std::fs::write(&complaint, arf(&rp_carol, "carol@example.net")).unwrap();
    let (ok, transcript) = swaks(smtp_port, &rp_carol, &complaint, &[]);
    assert!(ok, "{transcript}");
    let m = s.wait_message(&key, &id, "a complaint event for carol", |m| {
        !events_of(m, "carol@example.net", "complained").is_empty()
    });
    assert_eq!(recipient(&m, "carol@example.net")["state"], "delivered");
    let r = s.admin("GET", "/admin/v1/tenants/t/suppressions", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let reasons: Vec<(String, String)> = r.json()["suppressions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("bob@example.net".to_owned(), "userunknown".to_owned()),
            ("carol@example.net".to_owned(), "feedback".to_owned())
        ]
    );

    // Removing and adding entries by hand. The tenant cannot lift what bounce processing
    // added (the platform's); an admin can.
    let r = s.request(
        "DELETE",
        "/v1/suppressions/bob@example.net",
        Some(&key),
        None,
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "suppressed_by_platform");
    let r = s.admin(
        "DELETE",
        "/admin/v1/tenants/t/suppressions/bob@example.net",
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s.request(
        "DELETE",
        "/v1/suppressions/bob@example.net",
        Some(&key),
        None,
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    s.submit(
        &key,
        &simple("alice@example.com", "bob@example.net", "Back"),
    );
    let r = s.admin(
        "POST",
        "/admin/v1/tenants/t/suppressions",
        Some(json!({"address": "Eve@Example.net", "note": "asked to be left alone"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.post_message(&key, &simple("alice@example.com", "eve@example.net", "No"));
    assert_eq!(r.status, 422, "{}", r.body);
    let r = s.admin(
        "DELETE",
        "/admin/v1/tenants/t/suppressions/eve@example.net",
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = s.admin(
        "POST",
        "/admin/v1/tenants/t/suppressions",
        Some(json!({"address": "not an address"})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["field"], "address", "{}", r.body);
}

#[test]
fn forged_and_unknown_return_paths_are_refused_at_rcpt() {
    let (relay_port, smtp_port) = (free_port(), free_port());
    let setup = setup(relay_port, smtp_port);
    let sink = Sink::start(setup.root(), relay_port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let id = s.submit(&key, &simple("alice@example.com", "bob@example.net", "Hi"));
    s.wait_state(&key, &id, "delivered");
    let rp = return_path(&sink, "Hi", "bob@example.net");

    // One character of the token changed: the signature no longer verifies.
    let (local, domain) = rp.split_once('@').unwrap();
    let mut forged = local.as_bytes().to_vec();
    let i = forged.len() - 3;
    forged[i] = if forged[i] == b'a' { b'b' } else { b'a' };
    let forged = format!("{}@{domain}", String::from_utf8(forged).unwrap());
    let data = setup.root().join("forged.eml");
    std::fs::write(
        &data,
        dsn(
            &forged,
            "bob@example.net",
            "failed",
            "5.1.1",
            "550 5.1.1 unknown",
        ),
    )
    .unwrap();
    let (ok, transcript) = swaks(smtp_port, &forged, &data, &[]);
    assert!(!ok, "a forged return path must be refused:\n{transcript}");
    assert!(
        transcript.contains("550 5.7.1") && transcript.contains("does not verify"),
        "{transcript}"
    );
    for other in [
        format!("bounces+nothing@{BOUNCE_DOMAIN}"),
        "postmaster@elsewhere.example".to_owned(),
    ] {
        let (ok, transcript) = swaks(smtp_port, &other, &data, &[]);
        assert!(!ok, "{transcript}");
        assert!(transcript.contains("550 5.1.1"), "{transcript}");
    }
    // Nothing changed.
    let m = s.message(&key, &id);
    assert_eq!(recipient(&m, "bob@example.net")["state"], "delivered");
    let r = s.request("GET", "/v1/suppressions", Some(&key), None, b"");
    assert_eq!(r.json()["suppressions"], json!([]), "{}", r.body);
}

/// One SMTP client line at a time, reading the (possibly multi-line) reply.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the SMTP listener");
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut c = Client {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        };
        assert_eq!(c.reply().0, 220);
        c
    }

    fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("a reply line");
            assert!(n > 0, "the server closed the connection after {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().expect("a reply code"), all);
            }
        }
    }

    fn send(&mut self, line: &[u8]) -> (u16, String) {
        self.writer.write_all(line).unwrap();
        self.writer.write_all(b"\r\n").unwrap();
        self.reply()
    }
}

#[test]
fn a_malformed_dialogue_gets_the_right_errors() {
    let (relay_port, smtp_port) = (free_port(), free_port());
    let setup = setup(relay_port, smtp_port);
    let _sink = Sink::start(setup.root(), relay_port, &[]);
    let _s = setup.start();
    let mut c = Client::connect(smtp_port);

    assert_eq!(c.send(b"MAIL FROM:<>").0, 503, "MAIL before EHLO");
    assert_eq!(c.send(b"EHLO").0, 501, "EHLO without a domain");
    let (code, ehlo) = c.send(b"EHLO client.example");
    assert_eq!(code, 250);
    for ext in [
        "PIPELINING",
        "SIZE 100000",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(ehlo.contains(ext), "{ext} in {ehlo}");
    }
    assert_eq!(c.send(b"RCPT TO:<a@b.example>").0, 503, "RCPT before MAIL");
    assert_eq!(c.send(b"DATA").0, 503, "DATA before MAIL");
    assert_eq!(c.send(b"MAIL FROM:<> SIZE=100001").0, 552, "over SIZE");
    assert_eq!(c.send(b"MAIL FROM:nobody").0, 501, "no angle brackets");
    assert_eq!(c.send(b"MAIL FROM:<>").0, 250);
    assert_eq!(c.send(b"MAIL FROM:<>").0, 503, "nested MAIL");
    assert_eq!(c.send(b"DATA").0, 554, "DATA without a recipient");
    let mut long = b"NOOP ".to_vec();
    long.extend(vec![b'x'; 600]);
    assert_eq!(c.send(&long).0, 500, "a line over 512 octets");
    assert_eq!(c.send(b"STARTTLS").0, 502);
    assert_eq!(c.send(b"WHATEVER").0, 500);
    assert_eq!(c.send(b"RSET").0, 250);
    assert_eq!(c.send(b"NOOP").0, 250);
    assert_eq!(c.send(b"QUIT").0, 221);
}

/// The first event of `kind` about `address`, once there is one.
fn wait_event(s: &Sluice, key: &str, id: &str, address: &str, kind: &str) -> Value {
    let m = s.wait_message(key, id, &format!("a {kind} event for {address}"), |m| {
        !events_of(m, address, kind).is_empty()
    });
    events_of(&m, address, kind)[0].clone()
}

#[test]
fn refusals_while_sending_are_classified_suppressed_and_counted_as_blocked() {
    let (relay_port, smtp_port) = (free_port(), free_port());
    let setup = setup(relay_port, smtp_port);
    let unknown = "550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown";
    let sink = Sink::start(setup.root(), relay_port, &["-f", "rcpt", "-B", unknown]);
    let s = setup.start();
    let key = s.new_key("t");

    let id = s.submit(
        &key,
        &simple("alice@example.com", "nobody@example.net", "Lost"),
    );
    let e = wait_event(&s, &key, &id, "nobody@example.net", "bounced");
    let d = &e["detail"];
    assert_eq!(d["reason"], "userunknown", "{e:#}");
    assert_eq!(d["status"], "5.1.1", "{e:#}");
    assert_eq!(d["hard"], true, "{e:#}");
    assert_eq!(e["relay"], "a", "{e:#}");
    let r = s.request("GET", "/v1/suppressions", Some(&key), None, b"");
    let list = r.json();
    assert_eq!(
        list["suppressions"][0]["address"], "nobody@example.net",
        "{list:#}"
    );
    assert_eq!(list["suppressions"][0]["source"], "reply", "{list:#}");
    let r = s.post_message(
        &key,
        &simple("alice@example.com", "nobody@example.net", "Again"),
    );
    assert_eq!(r.status, 422, "{}", r.body);

    // The receiver refuses the relay itself: a `blocked` reason, counted per window.
    sink.stop();
    let blocked =
        "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org";
    let _sink = Sink::start(setup.root(), relay_port, &["-f", "rcpt", "-B", blocked]);
    let id = s.submit(
        &key,
        &simple("alice@example.com", "someone@example.org", "Blocked"),
    );
    let e = wait_event(&s, &key, &id, "someone@example.org", "bounced");
    assert_eq!(e["detail"]["reason"], "blocked", "{e:#}");
    assert_eq!(e["detail"]["class"], "blocked", "{e:#}");
    wait_for("relay a's windows to count the blocked refusal", || {
        let r = s.admin("GET", "/admin/v1/relays/a", None);
        let v = r.json();
        match v["windows"][0]["blocked"].as_u64() {
            Some(n) if n >= 1 => Ok(()),
            _ => Err(format!("{v:#}")),
        }
    });
}

/// A DSN about `rcpt` (user unknown) sent to its return path; swaks' transcript.
fn bounce_user_unknown(setup: &Setup, smtp_port: u16, rp: &str, rcpt: &str) -> (bool, String) {
    let file = setup.root().join(format!("{rcpt}.eml"));
    let text = dsn(
        rp,
        rcpt,
        "failed",
        "5.1.1",
        &format!("550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
    );
    std::fs::write(&file, text).unwrap();
    swaks(smtp_port, rp, &file, &[])
}

fn upload_bounce_plugin(s: &Sluice, tenant: &str, query: &str) {
    let r = s.admin_upload(
        &format!("/admin/v1/tenants/{tenant}/plugins/bounce?skip_sample=true{query}"),
        sluice::builtin::test_guests::TENANT_BOUNCE,
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn a_tenant_bounce_plugin_reads_the_dsns_of_its_own_messages() {
    let (relay_port, smtp_port) = (free_port(), free_port());
    let setup = setup_with(relay_port, smtp_port, &tenant_table("u", &["*"]));
    let sink = Sink::start(setup.root(), relay_port, &[]);
    let s = setup.start();
    let (key_t, key_u) = (s.new_key("t"), s.new_key("u"));

    // t reads its bounces with its own plugin (which calls everything a full mailbox).
    let r = s.request(
        "PUT",
        "/v1/plugins/bounce",
        Some(&key_t),
        Some("application/wasm"),
        sluice::builtin::test_guests::TENANT_BOUNCE,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let t_id = s.submit(
        &key_t,
        &json!({"from": "alice@example.com", "to": ["bob@example.net", "carol@example.net", "erin@example.net"],
                "subject": "From t", "text": "Hi"}),
    );
    let u_id = s.submit(
        &key_u,
        &json!({"from": "alice@example.com", "to": ["dan@example.net"],
                "subject": "From u", "text": "Hi"}),
    );
    s.wait_state(&key_t, &t_id, "delivered");
    s.wait_state(&key_u, &u_id, "delivered");

    // The same DSN for one recipient of each: t's plugin reads t's, the pipeline's u's.
    for (subject, rcpt) in [("From t", "bob@example.net"), ("From u", "dan@example.net")] {
        let rp = return_path(&sink, subject, rcpt);
        let (ok, transcript) = bounce_user_unknown(&setup, smtp_port, &rp, rcpt);
        assert!(ok, "{transcript}\n{}", s.log());
    }
    let m = s.wait_message(&key_t, &t_id, "bob bounced", |m| {
        recipient(m, "bob@example.net")["state"] == "bounced"
    });
    let d = &events_of(&m, "bob@example.net", "bounced")[0]["detail"];
    assert_eq!(d["reason"], "mailboxfull", "{m:#}");
    assert_eq!(d["hard"], false, "{m:#}");
    assert_eq!(
        d["diagnostic"], "read by the tenant's own bounce plugin",
        "{m:#}"
    );
    let m = s.wait_message(&key_u, &u_id, "dan bounced", |m| {
        recipient(m, "dan@example.net")["state"] == "bounced"
    });
    let d = &events_of(&m, "dan@example.net", "bounced")[0]["detail"];
    assert_eq!(
        (&d["reason"], &d["hard"]),
        (&json!("userunknown"), &json!(true)),
        "{m:#}"
    );
    // Soft for t: nothing suppressed; hard for u: dan is.
    let list = |key: &str| {
        s.request("GET", "/v1/suppressions", Some(key), None, b"")
            .json()
    };
    assert_eq!(list(&key_t)["suppressions"], json!([]));
    assert_eq!(
        list(&key_u)["suppressions"][0]["address"],
        "dan@example.net"
    );
    let plugins = s
        .request("GET", "/v1/plugins", Some(&key_t), None, b"")
        .json();
    assert_eq!(
        plugins["plugins"][0]["versions"][0]["stats"]["calls"], 1,
        "the DSN (the sample run is not counted): {plugins:#}"
    );

    // A trapping version that fails closed: the DSN is refused for now (the sender keeps
    // it and retries) and nothing else reads it for t.
    upload_bounce_plugin(&s, "t", "&config=mode=panic&on_failure=defer");
    let rp_carol = return_path(&sink, "From t", "carol@example.net");
    let (ok, transcript) = bounce_user_unknown(&setup, smtp_port, &rp_carol, "carol@example.net");
    assert!(!ok && transcript.contains("451 4.3.0"), "{transcript}");
    let m = s.wait_message(&key_t, &t_id, "carol's plugin error", |m| {
        !events_of(m, "carol@example.net", "plugin_error").is_empty()
    });
    assert_eq!(
        recipient(&m, "carol@example.net")["state"],
        "delivered",
        "{m:#}"
    );
    let e = &events_of(&m, "carol@example.net", "plugin_error")[0]["detail"];
    assert_eq!(
        (&e["stage"], &e["error"], &e["on_failure"]),
        (&json!("bounce"), &json!("trap"), &json!("defer")),
        "{m:#}"
    );

    // The same with the fallback policy: the pipeline's plugin reads it instead.
    upload_bounce_plugin(&s, "t", "&config=mode=panic&on_failure=fallback");
    let rp_erin = return_path(&sink, "From t", "erin@example.net");
    let (ok, transcript) = bounce_user_unknown(&setup, smtp_port, &rp_erin, "erin@example.net");
    assert!(ok, "{transcript}\n{}", s.log());
    let m = s.wait_message(&key_t, &t_id, "erin bounced", |m| {
        recipient(m, "erin@example.net")["state"] == "bounced"
    });
    let d = &events_of(&m, "erin@example.net", "bounced")[0]["detail"];
    assert_eq!(d["reason"], "userunknown", "{m:#}");
    let e = &events_of(&m, "erin@example.net", "plugin_error")[0]["detail"];
    assert_eq!(e["on_failure"], "fallback", "{m:#}");
}
