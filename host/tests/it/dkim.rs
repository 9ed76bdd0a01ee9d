//! DKIM signing end to end (issue 23): keys made through the tenant API, mail signed at
//! acceptance, delivered through a relay (`smtp-sink`), and the delivered bytes verified
//! by an independent implementation — Python's `dkimpy` — fed the TXT records the API
//! answered. And the hostile side: domains that are not the tenant's, another tenant's
//! keys, a start without the sealing secret.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashMap;

const SECRET_ENV: &str = "SLUICE_TEST_DKIM_KEY";
const SECRET: &str = "dkim-test-secret-0123456789abcdef0123456789";

/// `[dkim]` naming the test's secret, one relay on `port`, tenant `t` (its own
/// domains), tenant `u` (another with example.com too) and tenant `any` (`*`).
fn tables(port: u16) -> String {
    format!(
        "[dkim]\nkey_env = \"{SECRET_ENV}\"\n\n{}{}{}{}",
        relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""),
        tenant_table("t", &["example.com", "*.example.org"]),
        tenant_table("u", &["example.com"]),
        tenant_table("any", &["*"]),
    )
}

fn start(setup: &Setup) -> Sluice {
    setup.start_with(&[], &[(SECRET_ENV, SECRET)])
}

fn post(s: &Sluice, key: &str, path: &str, body: &Value) -> Response {
    s.request(
        "POST",
        path,
        Some(key),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

/// Makes a key; returns (selector, DNS name, TXT value).
fn make_key(s: &Sluice, key: &str, domain: &str, algorithm: &str) -> (String, String, String) {
    let r = post(
        s,
        key,
        &format!("/v1/domains/{domain}/dkim"),
        &json!({"algorithm": algorithm}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert!(
        !r.body.to_ascii_lowercase().contains("private"),
        "an answer never carries a private key: {}",
        r.body
    );
    let strings: Vec<String> = v["dns"]["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    assert!(strings.iter().all(|s| s.len() <= 255), "{}", r.body);
    assert_eq!(strings.concat(), v["dns"]["value"].as_str().unwrap());
    (
        v["selector"].as_str().unwrap().to_owned(),
        v["dns"]["name"].as_str().unwrap().to_owned(),
        v["dns"]["value"].as_str().unwrap().to_owned(),
    )
}

/// Whether `dkimpy` verifies `message` with `records` as the only DNS it can see.
fn dkimpy_verifies(message: &[u8], records: &HashMap<String, String>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("message.eml");
    std::fs::write(&path, message).unwrap();
    let script = r#"
import json, sys
import dkim
msg = open(sys.argv[1], "rb").read()
# smtp-sink keeps the message with LF line ends; the wire had CRLF.
msg = msg.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
records = json.loads(sys.argv[2])
asked = []
def dns(name, timeout=5):
    n = (name.decode() if isinstance(name, bytes) else name).rstrip(".").lower()
    asked.append(n)
    v = records.get(n)
    return v.encode() if v is not None else None
if not dkim.verify(msg, dnsfunc=dns):
    print("not verified; asked for", asked)
    sys.exit(1)
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(serde_json::to_string(records).unwrap())
        .output()
        .expect("python3 (tests/run installs it, dkimpy and pynacl)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("ModuleNotFoundError") && !err.contains("NaClNotFoundError"),
        "the Python packages dkimpy and pynacl are missing (tests/run installs them): {err}"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{err}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// The tags of the message's `DKIM-Signature:` (whitespace removed), if it has one.
fn signature_tags(message: &str) -> Option<HashMap<String, String>> {
    let sig = header(message, "dkim-signature")?;
    let flat: String = sig.chars().filter(|c| !c.is_whitespace()).collect();
    Some(
        flat.split(';')
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// Submits a message and returns it as the relay received it.
fn send_and_capture(s: &Sluice, key: &str, sink: &Sink, from: &str, subject: &str) -> String {
    let id = s.submit(
        key,
        &json!({
            "from": from,
            "to": ["rcpt@example.net"],
            "cc": ["other@example.net"],
            "subject": subject,
            "text": "Hello,\n\nthis line has  two spaces and trailing blanks   \n\n-- \nsig\n",
            "headers": {"List-Unsubscribe": "<mailto:unsub@example.com>"},
        }),
    );
    s.wait_state(key, &id, "delivered");
    wait_for(&format!("the relay to keep {subject:?}"), || {
        sink.with_subject(subject)
            .pop()
            .ok_or_else(|| format!("kept so far: {:?}", sink.subjects()))
    })
}

#[test]
fn mail_signed_with_ed25519_and_rsa_verifies_with_dkimpy_after_the_relay_and_rotates() {
    let port = free_port();
    let tables = tables(port);
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), port, &[]);
    let s = start(&setup);
    let key = s.new_key("t");

    let mut dns = HashMap::new();
    let (ed_sel, name, value) = make_key(&s, &key, "example.com", "ed25519");
    assert!(value.starts_with("v=DKIM1; k=ed25519; p="), "{value}");
    assert_eq!(name, format!("{ed_sel}._domainkey.example.com"));
    dns.insert(name, value);
    let (rsa_sel, name, value) = make_key(&s, &key, "example.org", "rsa-2048");
    assert!(value.starts_with("v=DKIM1; k=rsa; p="), "{value}");
    dns.insert(name, value);

    // Ed25519, the From: domain's own key.
    let m = send_and_capture(&s, &key, &sink, "Alice <alice@example.com>", "dkim ed25519");
    let tags = signature_tags(&m).unwrap_or_else(|| panic!("not signed:\n{m}"));
    assert_eq!(tags["d"], "example.com");
    assert_eq!(tags["s"], ed_sel);
    assert_eq!(tags["a"], "ed25519-sha256");
    assert_eq!(tags["c"], "relaxed/relaxed");
    dkimpy_verifies(m.as_bytes(), &dns).unwrap_or_else(|e| panic!("{e}\n{m}"));
    // The verifier can say no: a changed subject does not verify.
    let forged = m.replace("Subject: dkim ed25519", "Subject: dkim ed25518");
    assert!(dkimpy_verifies(forged.as_bytes(), &dns).is_err());
    // A record it cannot find does not verify either.
    assert!(dkimpy_verifies(m.as_bytes(), &HashMap::new()).is_err());

    // RSA, the parent domain's key for a subdomain's mail.
    let m = send_and_capture(&s, &key, &sink, "bob@news.example.org", "dkim rsa");
    let tags = signature_tags(&m).unwrap_or_else(|| panic!("not signed:\n{m}"));
    assert_eq!(tags["d"], "example.org");
    assert_eq!(tags["s"], rsa_sel);
    assert_eq!(tags["a"], "rsa-sha256");
    dkimpy_verifies(m.as_bytes(), &dns).unwrap_or_else(|e| panic!("{e}\n{m}"));

    // Rotation: a second key of example.com is published inactive, signs only once
    // activated, and the first is still listed (inactive).
    let (next_sel, name, value) = make_key(&s, &key, "example.com", "rsa-2048");
    dns.insert(name, value);
    let m = send_and_capture(&s, &key, &sink, "alice@example.com", "dkim before rotation");
    assert_eq!(signature_tags(&m).unwrap()["s"], ed_sel);
    let r = post(
        &s,
        &key,
        &format!("/v1/domains/example.com/dkim/{next_sel}/activate"),
        &json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"], true);
    let m = send_and_capture(&s, &key, &sink, "alice@example.com", "dkim after rotation");
    let tags = signature_tags(&m).unwrap();
    assert_eq!(
        (tags["s"].as_str(), tags["a"].as_str()),
        (next_sel.as_str(), "rsa-sha256")
    );
    dkimpy_verifies(m.as_bytes(), &dns).unwrap_or_else(|e| panic!("{e}\n{m}"));
    let r = s.request("GET", "/v1/domains/example.com/dkim", Some(&key), None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let listed: Vec<(String, bool)> = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["selector"].as_str().unwrap().to_owned(),
                k["active"] == true,
            )
        })
        .collect();
    assert_eq!(listed, [(ed_sel.clone(), false), (next_sel.clone(), true)]);
    // The old key can go now; the active one cannot.
    let del = |sel: &str| {
        s.request(
            "DELETE",
            &format!("/v1/domains/example.com/dkim/{sel}"),
            Some(&key),
            None,
            b"",
        )
    };
    assert_eq!(del(&next_sel).status, 409);
    assert_eq!(del(&ed_sel).status, 204);

    // A From: domain with no key (nor a parent with one) goes out unsigned.
    let other = s.new_key("u");
    let m = send_and_capture(&s, &other, &sink, "carol@example.com", "dkim none");
    assert!(signature_tags(&m).is_none(), "{m}");
}

#[test]
fn keys_only_for_the_tenants_own_dns_domains_and_never_another_tenants() {
    let port = free_port();
    let tables = tables(port);
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let s = start(&setup);
    let (t, u, any) = (s.new_key("t"), s.new_key("u"), s.new_key("any"));
    let ed = json!({"algorithm": "ed25519"});

    // Not the tenant's domain, or not a DNS name at all.
    for (domain, status) in [
        ("example.net", 403),
        ("evil.example.com.attacker.net", 403),
        ("com", 422),
        ("exa_mple.com", 422),
        ("127.0.0.1", 422),
        ("%2E%2E%2Fexample.com", 422),
        ("a..example.com", 422),
    ] {
        let r = post(&s, &t, &format!("/v1/domains/{domain}/dkim"), &ed);
        assert_eq!(r.status, status, "{domain}: {}", r.body);
        assert_eq!(r.json()["error"]["field"], "domain", "{domain}: {}", r.body);
    }
    let long = format!("{}.example.com", "a".repeat(300));
    let r = post(&s, &t, &format!("/v1/domains/{long}/dkim"), &ed);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.len() < 1000,
        "the error quotes the domain clipped: {}",
        r.body
    );
    // `*` lets a tenant send as anyone; it is no claim to a domain.
    let r = post(&s, &any, "/v1/domains/example.com/dkim", &ed);
    assert_eq!(r.status, 403, "{}", r.body);
    // Unknown algorithms and fields.
    let r = post(
        &s,
        &t,
        "/v1/domains/example.com/dkim",
        &json!({"algorithm": "rsa-512"}),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (422, json!("algorithm")),
        "{}",
        r.body
    );
    let r = post(
        &s,
        &t,
        "/v1/domains/example.com/dkim",
        &json!({"algorithm": "ed25519", "private_key": "x"}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    // No key at all: 401.
    let r = s.request("GET", "/v1/domains/example.com/dkim", None, None, b"");
    assert_eq!(r.status, 401, "{}", r.body);

    // t's key of example.com is t's: u (which also has example.com) neither sees,
    // activates nor deletes it.
    let (sel, _, _) = make_key(&s, &t, "example.com", "ed25519");
    let r = s.request("GET", "/v1/domains/example.com/dkim", Some(&u), None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["keys"], json!([]));
    let r = post(
        &s,
        &u,
        &format!("/v1/domains/example.com/dkim/{sel}/activate"),
        &json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = s.request(
        "DELETE",
        &format!("/v1/domains/example.com/dkim/{sel}"),
        Some(&u),
        None,
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Hostile selectors are not found, never looked up as patterns.
    for bad in ["%25", "s1'--", "S2026ABC", &"s".repeat(100)] {
        let r = post(
            &s,
            &t,
            &format!("/v1/domains/example.com/dkim/{bad}/activate"),
            &json!({}),
        );
        assert_eq!(r.status, 404, "{bad}: {}", r.body);
    }

    // Bounded: at most 8 keys per domain.
    for _ in 1..8 {
        make_key(&s, &t, "example.com", "ed25519");
    }
    let r = post(&s, &t, "/v1/domains/example.com/dkim", &ed);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "conflict");
}

#[test]
fn serve_refuses_to_start_when_keys_exist_without_the_secret_that_sealed_them() {
    let port = free_port();
    let tables = tables(port);
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let mut s = start(&setup);
    let key = s.new_key("t");
    make_key(&s, &key, "example.com", "ed25519");
    s.guard.signal("TERM");
    assert!(s.guard.wait_exit(STARTUP).success(), "{}", s.log());

    // No [dkim] in the pipeline any more: refused, naming the setting.
    let text = std::fs::read_to_string(&setup.pipeline).unwrap();
    let without = text.replace(&format!("[dkim]\nkey_env = \"{SECRET_ENV}\"\n"), "");
    assert_ne!(text, without);
    std::fs::write(&setup.pipeline, &without).unwrap();
    let (status, out) = setup.start_refused(&[(SECRET_ENV, SECRET)]);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("dkim.key") && out.contains("names no [dkim]"),
        "{out}"
    );
    std::fs::write(&setup.pipeline, &text).unwrap();
    // The secret's variable unset: refused, naming the setting.
    let (status, out) = setup.start_refused(&[]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("dkim.key"), "{out}");
    // Another secret: refused, naming the setting, never quoting either secret.
    let wrong = "another-secret-of-enough-length-0123456789";
    let (status, out) = setup.start_refused(&[(SECRET_ENV, wrong)]);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("dkim.key") && out.contains("does not open"),
        "{out}"
    );
    assert!(!out.contains(wrong) && !out.contains(SECRET), "{out}");
    // Too short a secret: refused by the preflight checks.
    let (status, out) = setup.start_refused(&[(SECRET_ENV, "short")]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("dkim.key") && !out.contains("short"), "{out}");

    // The right one: it starts and signs.
    let s = start(&setup);
    let r = s.request("GET", "/v1/domains/example.com/dkim", Some(&key), None, b"");
    assert_eq!(
        r.json()["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.body
    );
}
