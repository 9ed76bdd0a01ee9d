//! What reaches the wire, through the real `sluice serve`: a relay that records every
//! byte it gets (`support/raw_smtp.rs`, which reads lines as leniently as the relays
//! SMTP smuggling exploits) shows that no submission, attachment, header or tenant
//! plugin can put a second transaction, an extra header field, an over-long line or
//! 8-bit data the relay did not agree to on the wire.

use crate::support::raw_smtp::{Ehlo, RawSmtp, Transaction};
use crate::support::*;
use base64::Engine as _;
use serde_json::{Value, json};

/// A body that, read by a relay that also ends lines at a bare LF, ends the data after
/// `hello` and starts a second transaction from a forged sender.
const SMUGGLED: &[u8] = b"hello\n.\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@x.example>\r\nDATA\r\nSubject: forged\r\n\r\nwire the money\r\n.\r\n";

const FULL: Ehlo = Ehlo {
    pipelining: true,
    eight_bit_mime: true,
};

/// A running host with tenant `acme` (sending from `acme.example`) and its key.
/// Dropped in field order: the host before its directory.
struct Stack {
    sluice: Sluice,
    key: String,
    _setup: Setup,
}

impl Stack {
    /// `relays`: (id, relay) pairs; `tables`: more pipeline tables.
    fn start(relays: &[(&str, &RawSmtp)], tables: &str) -> Stack {
        let mut all: String = relays
            .iter()
            .map(|(id, r)| relay_table(id, &r.url(), ""))
            .collect();
        all.push_str(&tenant_table("acme", &["acme.example"]));
        all.push_str(tables);
        let setup = Setup::new(PipelineParts {
            tables: &all,
            ..Default::default()
        });
        let sluice = setup.start();
        let key = sluice.new_key("acme");
        Stack {
            sluice,
            key,
            _setup: setup,
        }
    }

    /// A raw submission from `a@acme.example` to `b@x.example`.
    fn raw(&self, key: &str, message: &[u8]) -> Response {
        self.sluice.request(
            "POST",
            "/v1/messages?from=a@acme.example&to=b@x.example",
            Some(key),
            Some("message/rfc822"),
            message,
        )
    }

    fn delivered(&self, r: &Response) -> Value {
        assert_eq!(r.status, 202, "{}", r.body);
        let id = r.json()["id"].as_str().expect("id").to_owned();
        self.sluice.wait_state(&self.key, &id, "delivered")
    }
}

/// The error's `field` and `message` of a refusal, which must be a 4xx.
fn refusal(r: &Response) -> (String, String) {
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
    let v = r.json();
    (
        v["error"]["field"].as_str().unwrap_or("").to_owned(),
        v["error"]["message"].as_str().unwrap_or("").to_owned(),
    )
}

/// Where a CR or LF that is not part of a CRLF is in `bytes`, if anywhere.
fn bare_line_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find(|&i| match bytes[i] {
        b'\r' => bytes.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || bytes[i - 1] != b'\r',
        _ => false,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The transaction whose data holds `subject`'s header line; exactly one.
fn with_subject<'a>(txs: &'a [Transaction], subject: &str) -> &'a Transaction {
    let line = format!("Subject: {subject}\r\n");
    let found: Vec<_> = txs
        .iter()
        .filter(|t| contains(&t.data, line.as_bytes()))
        .collect();
    assert_eq!(found.len(), 1, "{subject:?} in {txs:#?}");
    found[0]
}

fn smuggling_never_starts_a_second_transaction(ehlo: Ehlo) {
    let relay = RawSmtp::start(ehlo);
    let s = Stack::start(&[("raw", &relay)], "");

    // As a raw message…
    let mut raw =
        b"From: a@acme.example\r\nTo: b@x.example\r\nSubject: raw smuggler\r\n\r\n".to_vec();
    raw.extend_from_slice(SMUGGLED);
    let first = s.delivered(&s.raw(&s.key, &raw));
    // …as a 7-bit attachment of the JSON form…
    let attachment = json!({"from": "a@acme.example", "to": ["b@x.example"], "subject": "attachment smuggler",
        "text": "see the attachment", "attachments": [{"filename": "note.txt", "content_type": "text/plain",
        "content_base64": base64::engine::general_purpose::STANDARD.encode(SMUGGLED)}]});
    let second = s.delivered(&s.sluice.post_message(&s.key, &attachment));
    // …and a plain message after them, on the same pooled connection.
    let third = s.delivered(&s.sluice.post_message(
        &s.key,
        &simple("a@acme.example", "b@x.example", "after the smugglers"),
    ));

    let txs = relay.transactions();
    assert_eq!(txs.len(), 3, "one transaction per message: {txs:#?}");
    for t in &txs {
        assert!(t.mail.contains("<a@acme.example>"), "{t:#?}");
        assert_eq!(t.rcpts.len(), 1, "{t:#?}");
    }
    let bytes = relay.all_bytes();
    assert_eq!(
        bare_line_end(&bytes),
        None,
        "every line on the wire ends CRLF:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        !contains(&bytes, b"\r\n.\r\nMAIL FROM:<ceo"),
        "the lone dot is stuffed"
    );
    assert!(contains(
        &bytes,
        b"hello\r\n..\r\nMAIL FROM:<ceo@bank.example>"
    ));
    // Each message is recorded with its own transaction's reply, not the one before's.
    for (m, subject) in [
        (&first, "raw smuggler"),
        (&second, "attachment smuggler"),
        (&third, "after the smugglers"),
    ] {
        let reply = with_subject(&txs, subject).reply.clone();
        assert_eq!(
            m["recipients"][0]["last_reply"].as_str(),
            Some(reply.as_str()),
            "{subject}: {m:#}"
        );
    }
    if ehlo.pipelining {
        assert_eq!(relay.connections().len(), 1, "one pooled connection");
    }
}

#[test]
fn smuggling_through_the_pipelined_path_never_starts_a_second_transaction() {
    smuggling_never_starts_a_second_transaction(FULL);
}

#[test]
fn smuggling_through_lettres_path_never_starts_a_second_transaction() {
    // Without PIPELINING, lettre's own `send` carries the transaction.
    smuggling_never_starts_a_second_transaction(Ehlo {
        pipelining: false,
        eight_bit_mime: true,
    });
}

#[test]
fn header_injection_and_control_characters_are_refused_and_nothing_is_sent() {
    let relay = RawSmtp::start(FULL);
    let s = Stack::start(&[("raw", &relay)], "");
    let with_headers = |headers: Value| {
        let mut m = simple("a@acme.example", "b@x.example", "headers");
        m["headers"] = headers;
        s.sluice.post_message(&s.key, &m)
    };

    let (field, message) = refusal(&with_headers(json!({"X-Test\r\nBcc": "x@evil.example"})));
    assert_eq!(field, "headers.X-Test\r\nBcc");
    assert!(message.contains("not a valid header name"), "{message}");
    let (field, _) = refusal(&with_headers(json!({"bcc": "x@evil.example"})));
    assert_eq!(field, "headers.bcc");
    for value in ["one\0two", "esc\x1bape", "line\rbreak"] {
        let (field, message) = refusal(&with_headers(json!({ "X-A": value })));
        assert_eq!(field, "headers.X-A", "{value:?}");
        assert!(message.contains("control character"), "{message}");
    }
    let (field, _) = refusal(&s.raw(
        &s.key,
        b"From: a@acme.example\r\nX-A: b\x01c\r\nSubject: raw control\r\n\r\nbody\r\n",
    ));
    assert_eq!(field, "headers.X-A");

    // Nothing of those reached the relay: the next message is its first.
    s.delivered(
        &s.sluice
            .post_message(&s.key, &simple("a@acme.example", "b@x.example", "clean")),
    );
    let txs = relay.transactions();
    assert_eq!(txs.len(), 1, "{txs:#?}");
    assert!(!contains(&relay.all_bytes(), b"evil.example"));
}

#[test]
fn long_lines_and_nul_in_raw_messages_are_refused_naming_the_line() {
    let relay = RawSmtp::start(FULL);
    let s = Stack::start(&[("raw", &relay)], "");
    let head = "From: a@acme.example\r\nSubject: long\r\n\r\nfirst\r\n";

    let at_limit = format!("{head}{}\r\n", "x".repeat(998));
    let too_long = format!("{head}{}\r\n", "x".repeat(999));
    let (field, message) = refusal(&s.raw(&s.key, too_long.as_bytes()));
    assert_eq!(field, "message");
    assert!(message.contains("line 5 is 999 octets long"), "{message}");
    let huge = format!("{head}ok\n{}\n", "y".repeat(100_000));
    let (_, message) = refusal(&s.raw(&s.key, huge.as_bytes()));
    assert!(
        message.contains("line 6 is 100000 octets long"),
        "{message}"
    );
    let (field, message) = refusal(&s.raw(&s.key, format!("{head}a\0b\r\n").as_bytes()));
    assert_eq!(field, "message");
    assert!(message.contains("line 5 holds a NUL"), "{message}");

    // 998 octets is allowed, and is the only one the relay got.
    s.delivered(&s.raw(&s.key, at_limit.as_bytes()));
    assert_eq!(relay.transactions().len(), 1);
    assert!(!contains(&relay.all_bytes(), b"yyyy"));
}

#[test]
fn eight_bit_bodies_go_only_to_relays_announcing_8bitmime() {
    let seven = RawSmtp::start(Ehlo {
        pipelining: true,
        eight_bit_mime: false,
    });
    let s = Stack::start(&[("seven", &seven)], "");
    let raw = "From: a@acme.example\r\nSubject: eight bits\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n";
    let r = s.raw(&s.key, raw.as_bytes());
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    // The only relay lacks 8BITMIME: the attempt fails with the reason, nothing is
    // sent, and the message waits.
    let m = s
        .sluice
        .wait_message(&s.key, &id, "an attempt refused for 8BITMIME", |m| {
            m.to_string().contains("does not announce 8BITMIME")
        });
    assert!(!all_in_state(&m, "delivered"), "{m:#}");
    assert!(
        !contains(&seven.all_bytes(), b"MAIL FROM"),
        "{}",
        String::from_utf8_lossy(&seven.all_bytes())
    );

    // A relay that announces it takes the message, with BODY=8BITMIME (RFC 6152)…
    let eight = RawSmtp::start(FULL);
    let r = s.sluice.admin(
        "POST",
        "/admin/v1/relays",
        Some(json!({"id": "eight", "url": eight.url(), "tags": ["pool:platform"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    s.sluice.wait_state(&s.key, &id, "delivered");
    let tx = with_subject(&eight.transactions(), "eight bits").clone();
    assert!(tx.mail.ends_with(" BODY=8BITMIME"), "{tx:#?}");
    assert!(contains(&tx.data, "Grüße".as_bytes()));
    assert!(!contains(&seven.all_bytes(), b"MAIL FROM"));
    // …and a 7-bit message still goes without it.
    s.delivered(&s.sluice.post_message(
        &s.key,
        &simple("a@acme.example", "b@x.example", "seven bits"),
    ));
    let txs: Vec<_> = seven
        .transactions()
        .into_iter()
        .chain(eight.transactions())
        .collect();
    assert!(!with_subject(&txs, "seven bits").mail.contains("BODY="));
}

#[test]
fn header_from_outside_the_tenants_domains_is_refused_unless_relaxed() {
    let relay = RawSmtp::start(FULL);
    let relaxed = format!(
        "{}header_from_check = false\n",
        tenant_table("relaxed", &["relaxed.example"])
    );
    let s = Stack::start(&[("raw", &relay)], &relaxed);
    let forged = b"From: CEO <ceo@bank.example>\r\nSubject: forged from\r\n\r\npay\r\n";
    let (field, message) = refusal(&s.raw(&s.key, forged));
    assert_eq!(field, "headers.From");
    assert!(message.contains("\"bank.example\""), "{message}");
    let (field, _) = refusal(&s.raw(
        &s.key,
        b"From: a@acme.example\r\nSender: x@bank.example\r\nSubject: s\r\n\r\nb\r\n",
    ));
    assert_eq!(field, "headers.Sender");
    // Subdomains are not the domain; an allowed author passes.
    let (field, _) = refusal(&s.raw(&s.key, b"From: a@mail.acme.example\r\n\r\nb\r\n"));
    assert_eq!(field, "headers.From");
    s.delivered(&s.raw(
        &s.key,
        b"From: Ann <a@ACME.example>\r\nSubject: own\r\n\r\nb\r\n",
    ));

    // Relaxed in the pipeline TOML: the envelope is still checked, the header is not.
    let relaxed_key = s.sluice.new_key("relaxed");
    let r = s.sluice.request(
        "POST",
        "/v1/messages?from=a@relaxed.example&to=b@x.example",
        Some(&relaxed_key),
        Some("message/rfc822"),
        forged,
    );
    assert_eq!(r.status, 202, "{}", r.body);

    // Relaxed through the admin API.
    let r = s.sluice.admin(
        "PATCH",
        "/admin/v1/tenants/acme",
        Some(json!({"header_from_check": false})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["header_from_check"], false, "{}", r.body);
    s.delivered(&s.raw(&s.key, forged));
}

#[test]
fn a_tenant_ingest_plugin_cannot_add_a_header_with_a_line_break() {
    let relay = RawSmtp::start(FULL);
    let s = Stack::start(&[("raw", &relay)], "");
    let upload = |config: &str| {
        let r = s.sluice.request(
            "PUT",
            &format!("/v1/plugins/ingest?config=add_header={config}"),
            Some(&s.key),
            Some("application/wasm"),
            sluice::builtin::test_guests::TENANT_INGEST_SMUGGLER,
        );
        assert_eq!(r.status, 201, "{}", r.body);
    };
    // "X-Filter: ok\r\nBcc: x@evil.example", then a NUL, then a reserved header.
    let mut sent = Vec::new();
    for (i, config) in [
        "X-Filter:%20ok%0D%0ABcc:%20x@evil.example",
        "X-Filter:%20ok%00evil.example",
        "From:%20ceo@bank.example",
    ]
    .into_iter()
    .enumerate()
    {
        upload(config);
        sent.push(s.delivered(&s.sluice.post_message(
            &s.key,
            &simple("a@acme.example", "b@x.example", &format!("smuggle {i}")),
        )));
    }
    // The malformed answers were the plugin's failure (the platform's decision
    // stood, as the default `on_failure = fallback` says), recorded on the messages.
    for m in &sent {
        assert!(event_kinds(m).contains(&"plugin_error".to_owned()), "{m:#}");
    }
    let bytes = relay.all_bytes();
    assert!(
        !contains(&bytes, b"evil.example"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(!contains(&bytes, b"X-Filter"));
    assert!(!contains(&bytes, b"bank.example"));
    let txs = relay.transactions();
    assert_eq!(txs.len(), 3, "{txs:#?}");
    assert!(txs.iter().all(|t| t.rcpts.len() == 1), "{txs:#?}");
}

/// The other header values a tenant ingest plugin could add: a line of 100,000
/// octets is the plugin's failure (the platform's decision stands, nothing of it is sent),
/// and an 8-bit value makes an 8-bit message, which goes to no relay that does not
/// announce 8BITMIME.
#[test]
fn a_tenant_ingest_plugin_cannot_send_an_over_long_or_8_bit_header_past_the_relay() {
    let seven = RawSmtp::start(Ehlo {
        pipelining: true,
        eight_bit_mime: false,
    });
    let s = Stack::start(&[("seven", &seven)], "");
    let upload = |query: &str| {
        let r = s.sluice.request(
            "PUT",
            &format!("/v1/plugins/ingest?{query}"),
            Some(&s.key),
            Some("application/wasm"),
            sluice::builtin::test_guests::TENANT_INGEST_SMUGGLER,
        );
        assert_eq!(r.status, 201, "{}", r.body);
    };

    // "X-Filter: " and 100,000 octets on one line.
    upload("config=add_header=X-Filter:%20y&config=repeat=100000");
    let m = s.delivered(&s.sluice.post_message(
        &s.key,
        &simple("a@acme.example", "b@x.example", "smuggle long"),
    ));
    let errors: Vec<_> = m["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "plugin_error")
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("is a line of 100010 octets")),
        "{m:#}"
    );
    assert!(!contains(&seven.all_bytes(), b"X-Filter"));

    // "X-Filter: Grüße": accepted (a header may carry UTF-8), but not through a relay
    // that lacks 8BITMIME: nothing is sent and the message waits.
    upload("config=add_header=X-Filter:%20Gr%C3%BC%C3%9Fe");
    let r = s.sluice.post_message(
        &s.key,
        &simple("a@acme.example", "b@x.example", "smuggle eight bits"),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let m = s
        .sluice
        .wait_message(&s.key, &id, "an attempt refused for 8BITMIME", |m| {
            m.to_string().contains("does not announce 8BITMIME")
        });
    assert!(!all_in_state(&m, "delivered"), "{m:#}");
    assert!(!contains(&seven.all_bytes(), "Grüße".as_bytes()));
    assert_eq!(seven.transactions().len(), 1, "only the first message went");
}

#[test]
fn the_relay_client_never_sends_a_bare_line_end_whatever_the_store_holds() {
    // A body as an older row may hold it, never checked at acceptance, given straight
    // to the relay client on both of its paths.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for ehlo in [
        FULL,
        Ehlo {
            pipelining: false,
            eight_bit_mime: false,
        },
    ] {
        let relay = RawSmtp::start(ehlo);
        let client = sluice::relay::RelayClient::new(
            sluice::relay::RelaySettings {
                id: "raw".into(),
                url: relay.url(),
                auth_user: None,
                auth_password: None,
                connection_limit: 1,
                rate_limit_per_sec: None,
                weight: 100,
                tags: Vec::new(),
                owner: None,
                draining: false,
                tls_ca: None,
            },
            "sluice.test",
            std::time::Duration::from_secs(5),
        )
        .expect("client");
        let mut body = b"From: a@acme.example\r\nSubject: stored\r\n\r\n".to_vec();
        body.extend_from_slice(SMUGGLED);
        body.extend_from_slice(b"lone\rcarriage return\n.\rend");
        let to = ["b@x.example".to_string()];
        let replies = runtime.block_on(client.send("a@acme.example", &to, &body));
        assert_eq!(
            replies[0].reply.as_ref().map(|r| r.code),
            Some(250),
            "{ehlo:?}: {replies:?}"
        );
        // 8-bit data to a relay that did not announce 8BITMIME: refused before any
        // command, with the reason, and the connection stays usable.
        let eight_bit = b"From: a@acme.example\r\nSubject: eight\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n";
        let replies = runtime.block_on(client.send("a@acme.example", &to, eight_bit));
        if ehlo.eight_bit_mime {
            assert_eq!(replies[0].reply.as_ref().map(|r| r.code), Some(250));
        } else {
            assert_eq!(replies[0].reply, None, "{replies:?}");
            let why = replies[0].transport_error.as_deref().unwrap_or("");
            assert!(why.contains("8BITMIME"), "{why}");
        }
        let replies =
            runtime.block_on(client.send("a@acme.example", &to, b"Subject: after\r\n\r\nok\r\n"));
        assert_eq!(
            replies[0].reply.as_ref().map(|r| r.code),
            Some(250),
            "{replies:?}"
        );

        let bytes = relay.all_bytes();
        assert_eq!(
            bare_line_end(&bytes),
            None,
            "{ehlo:?}:\n{}",
            String::from_utf8_lossy(&bytes)
        );
        let txs = relay.transactions();
        let expected = if ehlo.eight_bit_mime { 3 } else { 2 };
        assert_eq!(txs.len(), expected, "{ehlo:?}: {txs:#?}");
        assert!(
            txs.iter().all(|t| t.mail.contains("<a@acme.example>")),
            "{txs:#?}"
        );
        assert_eq!(
            relay.connections().len(),
            1,
            "{ehlo:?}: one connection throughout"
        );
    }
}

/// The header section of a message's data (up to its blank line).
fn header_section(data: &[u8]) -> String {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a blank line after the header");
    String::from_utf8_lossy(&data[..end + 2]).into_owned()
}

#[test]
fn a_raw_messages_bcc_is_removed_and_its_recipients_still_get_it() {
    let relay = RawSmtp::start(FULL);
    let s = Stack::start(&[("raw", &relay)], "");
    let raw = b"From: a@acme.example\r\nTo: b@x.example\r\nBcc: hidden@y.example,\r\n \
                secret@z.example\r\nresent-bcc: again@y.example\r\nSubject: blind copies\r\n\
                \r\nBcc: this line is body text\r\n";
    let r = s.sluice.request(
        "POST",
        "/v1/messages?from=a@acme.example&to=b@x.example,hidden@y.example,secret@z.example",
        Some(&s.key),
        Some("message/rfc822"),
        raw,
    );
    s.delivered(&r);
    let txs: Vec<Transaction> = relay
        .transactions()
        .into_iter()
        .filter(|t| contains(&t.data, b"Subject: blind copies\r\n"))
        .collect();
    let mut rcpts: Vec<String> = txs.iter().flat_map(|t| t.rcpts.clone()).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "RCPT TO:<b@x.example>",
            "RCPT TO:<hidden@y.example>",
            "RCPT TO:<secret@z.example>"
        ],
        "{txs:#?}"
    );
    for t in &txs {
        let header = header_section(&t.data);
        let lower = header.to_ascii_lowercase();
        assert!(
            !lower.contains("\r\nbcc:") && !lower.contains("resent-bcc:"),
            "a blind field went out: {header}"
        );
        assert!(
            !contains(&t.data, b"hidden@") && !contains(&t.data, b"secret@"),
            "a blind recipient is named on the wire: {header}"
        );
        assert!(
            header.contains("\r\nTo: b@x.example\r\nSubject: blind copies\r\n"),
            "{header}"
        );
        assert!(
            contains(&t.data, b"\r\n\r\nBcc: this line is body text\r\n"),
            "the body changed: {:?}",
            String::from_utf8_lossy(&t.data)
        );
    }
}

#[test]
fn resent_and_sender_fields_outside_the_tenants_domains_are_refused() {
    let relay = RawSmtp::start(FULL);
    let s = Stack::start(&[("raw", &relay)], "");
    for (line, field) in [
        (
            "Resent-From: Boss <boss@bank.example>",
            "headers.Resent-From",
        ),
        ("Resent-Sender: boss@bank.example", "headers.Resent-Sender"),
        (
            "resent-from: a@acme.example, boss@bank.example",
            "headers.resent-from",
        ),
        ("Sender: boss@bank.example", "headers.Sender"),
    ] {
        let raw = format!("From: a@acme.example\r\n{line}\r\nSubject: resent\r\n\r\nb\r\n");
        let (got, message) = refusal(&s.raw(&s.key, raw.as_bytes()));
        assert_eq!(got, field, "{line}: {message}");
        assert!(message.contains("\"bank.example\""), "{message}");
    }
    // Unreadable, it is refused too, not passed unchecked.
    let (got, _) = refusal(&s.raw(
        &s.key,
        b"From: a@acme.example\r\nResent-From: not an address\r\n\r\nb\r\n",
    ));
    assert_eq!(got, "headers.Resent-From");
    // The tenant's own resent fields go out as written.
    s.delivered(&s.raw(
        &s.key,
        b"From: a@acme.example\r\nResent-From: r@acme.example\r\nResent-Sender: \
          s@acme.example\r\nSubject: resent own\r\n\r\nb\r\n",
    ));
    let txs = relay.transactions();
    let own = with_subject(&txs, "resent own");
    assert!(
        header_section(&own.data)
            .contains("Resent-From: r@acme.example\r\nResent-Sender: s@acme.example\r\n"),
        "{own:?}"
    );
    assert!(
        !contains(&relay.all_bytes(), b"bank.example"),
        "a refused message reached the relay"
    );
}
