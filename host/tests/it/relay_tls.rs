//! Relays over TLS with a private CA, through the real `sluice serve`: a relay's
//! `tls_ca_file` (pipeline file and admin API) is what the relay's certificate is checked
//! against, instead of the public roots. The relay is `support/raw_smtp.rs` speaking TLS
//! from the first byte (`smtps://`) or after STARTTLS, with a certificate of a CA made
//! at test time (`support/tls.rs`).

use crate::support::raw_smtp::{Ehlo, RawSmtp, ServerTls};
use crate::support::tls::TestPki;
use crate::support::*;
use serde_json::json;

const EHLO: Ehlo = Ehlo {
    pipelining: true,
    eight_bit_mime: true,
};

fn recipient(m: &serde_json::Value) -> &serde_json::Value {
    &m["recipients"][0]
}

/// A host with one relay (`tls`, at `url`, trusting `ca`), tenant `t` and its key.
fn start(url: &str, ca: &std::path::Path) -> (Setup, Sluice, String) {
    let mut tables = relay_table(
        "tls",
        url,
        &format!("tls_ca_file = {:?}", ca.display().to_string()),
    );
    tables.push_str(&tenant_table("t", &["example.com"]));
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let s = setup.start();
    let key = s.new_key("t");
    (setup, s, key)
}

#[test]
fn a_relay_behind_a_private_ca_gets_mail_over_smtps_with_its_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let relay = RawSmtp::start_tls(EHLO, ServerTls::Implicit(pki.server_config()));
    let (_setup, s, key) = start(&format!("smtps://127.0.0.1:{}", relay.port), &pki.ca);

    let id = s.submit(
        &key,
        &simple("a@example.com", "b@example.net", "over smtps"),
    );
    let m = s.wait_state(&key, &id, "delivered");
    assert_eq!(recipient(&m)["relay"], "tls", "{m:#}");
    let txs = relay.transactions();
    assert_eq!(txs.len(), 1, "{txs:#?}");
    assert!(txs[0].tls, "the message came over TLS");
    assert!(
        String::from_utf8_lossy(&txs[0].data).contains("Subject: over smtps\r\n"),
        "{txs:#?}"
    );
    assert_eq!(relay.handshakes_failed(), 0);
}

#[test]
fn starttls_required_with_a_private_ca_delivers_inside_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let relay = RawSmtp::start_tls(EHLO, ServerTls::StartTls(pki.server_config()));
    let (_setup, s, key) = start(
        &format!("smtp://127.0.0.1:{}?tls=required", relay.port),
        &pki.ca,
    );

    let id = s.submit(
        &key,
        &simple("a@example.com", "b@example.net", "after starttls"),
    );
    s.wait_state(&key, &id, "delivered");
    let txs = relay.transactions();
    assert_eq!(txs.len(), 1, "{txs:#?}");
    assert!(txs[0].tls, "the transaction ran inside TLS, after STARTTLS");
}

/// A relay whose certificate was not issued by its `tls_ca_file`'s CA gets no message:
/// the handshake is refused, the recipient is deferred with the reason, and the relay saw
/// no transaction. With the right CA given through the admin API, the same relay gets
/// mail without a restart.
#[test]
fn a_relay_with_the_wrong_ca_is_refused_with_the_reason_and_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let relay = RawSmtp::start_tls(EHLO, ServerTls::Implicit(pki.server_config()));
    let (_setup, s, key) = start(&format!("smtps://127.0.0.1:{}", relay.port), &pki.other_ca);

    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "wrong ca"));
    let m = s.wait_message(&key, &id, "deferred for the certificate", |m| {
        recipient(m)["state"] == "deferred"
            && recipient(m)["last_reply"]
                .as_str()
                .is_some_and(|t| t.contains("certificate"))
    });
    let reason = recipient(&m)["last_reply"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    assert!(
        relay.transactions().is_empty(),
        "{:#?}",
        relay.transactions()
    );
    // The relay's side of the broken handshake may end a moment after ours.
    wait_for("the relay to see the handshake refused", || {
        match relay.handshakes_failed() {
            0 => Err("no failed handshake yet".to_owned()),
            n => Ok(n),
        }
    });

    // The right CA through the admin API: the relay's client is rebuilt and the
    // deferred message goes (probed back, or at its retry).
    let r = s.admin(
        "PATCH",
        "/admin/v1/relays/tls",
        Some(json!({"tls_ca_file": pki.ca.display().to_string()})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tls_ca_file"], pki.ca.display().to_string());
    s.wait_state(&key, &id, "delivered");
    let txs = relay.transactions();
    assert_eq!(txs.len(), 1, "{txs:#?}");
    assert!(txs[0].tls);
}

/// The admin API and the pipeline file refuse a CA file that cannot be used, name the
/// file, and never quote what is in it (an operator may point it at a secret).
#[test]
fn a_bad_tls_ca_file_is_refused_naming_the_file_never_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "hunter2-do-not-print\n").unwrap();
    let key_file = dir.path().join("key.pem");
    std::fs::write(
        &key_file,
        "-----BEGIN PRIVATE KEY-----\naHVudGVyMi1kby1ub3QtcHJpbnQ=\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();

    let mut tables = relay_table("plain", "smtp://127.0.0.1:9", "");
    tables.push_str(&tenant_table("t", &["example.com"]));
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let s = setup.start();
    for (url, file, needle) in [
        (
            "smtps://127.0.0.1:9",
            secret.as_path(),
            "holds no PEM certificate",
        ),
        (
            "smtps://127.0.0.1:9",
            key_file.as_path(),
            "holds a private key",
        ),
        (
            "smtps://127.0.0.1:9",
            std::path::Path::new("/nonexistent/ca.pem"),
            "cannot be read",
        ),
        (
            "smtp://127.0.0.1:9",
            secret.as_path(),
            "needs a relay URL with TLS",
        ),
    ] {
        let r = s.admin(
            "POST",
            "/admin/v1/relays",
            Some(json!({"id": "bad", "url": url, "tls_ca_file": file.display().to_string()})),
        );
        assert_eq!(r.status, 422, "{}", r.body);
        let e = &r.json()["error"];
        assert_eq!(e["field"], "tls_ca_file", "{}", r.body);
        let message = e["message"].as_str().unwrap_or("");
        assert!(message.contains(needle), "{message}");
        if url.starts_with("smtps") {
            assert!(message.contains(&file.display().to_string()), "{message}");
        }
        assert!(
            !r.body.contains("hunter2") && !r.body.contains("aHVudGVy"),
            "{}",
            r.body
        );
    }
    // A PATCH is checked against the relay's URL too.
    let r = s.admin(
        "PATCH",
        "/admin/v1/relays/plain",
        Some(json!({"tls_ca_file": secret.display().to_string()})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(!r.body.contains("hunter2"), "{}", r.body);

    // The pipeline file: `sluice pipeline check` names the file, line and key.
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[[relay]]\nid = \"r\"\nurl = \"smtps://127.0.0.1:9\"\ntls_ca_file = {:?}\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["pipeline", "check"])
        .arg(&pipeline)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("relay[0].tls_ca_file") && stderr.contains("holds no PEM certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
