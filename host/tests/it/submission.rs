//! SMTP submission end to end (issue 23): the real `sluice serve` with `[submission]`
//! listeners (STARTTLS and implicit TLS, a certificate made with `openssl`), real clients
//! (`swaks`, Python's `smtplib`, a Postfix relaying with SASL) and a real relay
//! (`smtp-sink`). Mail submitted with
//! AUTH reaches the sink; a wrong password is 535, no AUTH 530, AUTH before TLS 538, a
//! suppressed recipient 550 at RCPT, an oversize message 552, and an address past its
//! failed AUTH is told 421 (also on a new connection). A trusted network sends without
//! AUTH. A command pipelined in the clear after STARTTLS is dropped, not answered in TLS.
//! Past its connections per address, its idle commands or the command timeout, a client
//! is told 421 with the limit's reason. No secret reaches the server's log. Tags and an
//! idempotency key ride in `X-Sluice-Tags` and `X-Sluice-Idempotency-Key` (a repeat is
//! taken in once) and neither reaches the relay. Loopback only; every wait is a bounded
//! poll.

use crate::support::tls::TestPki;
use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The server's side of the Python client below: each step's reply code, by name.
const CLIENT: &str = r#"
import base64, json, smtplib, ssl, sys
host = "127.0.0.1"
starttls_port, tls_port, user, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
out = {}

def plain(u, p):
    return "PLAIN " + base64.b64encode(b"\0" + u.encode() + b"\0" + p.encode()).decode()

def message(subject, to):
    return ("From: App <app@example.com>\r\nTo: %s\r\nSubject: %s\r\n\r\nbody of %s\r\n"
            % (to, subject, subject))

s = smtplib.SMTP(host, starttls_port, timeout=60)
s.ehlo("client.test")
out["plain_offers_auth"] = s.has_extn("auth")
out["plain_offers_starttls"] = s.has_extn("starttls")
out["auth_before_tls"] = s.docmd("AUTH", plain(user, key))[0]
out["mail_before_tls"] = s.docmd("MAIL", "FROM:<app@example.com>")[0]
s.starttls(context=ctx)
s.ehlo("client.test")
out["tls_offers_auth"] = s.has_extn("auth")
out["tls_auth_mechanisms"] = s.esmtp_features.get("auth", "").strip()
out["mail_without_auth"] = s.docmd("MAIL", "FROM:<app@example.com>")[0]
out["wrong_password"] = s.docmd("AUTH", plain(user, "sk_not_the_key"))[0]
s.login(user, key)
refused = s.sendmail("app@example.com", ["ok@dest.test", "gone@dest.test"],
                     message("smtplib-starttls", "ok@dest.test"))
out["refused"] = {k: v[0] for k, v in refused.items()}
out["size_param"] = s.docmd("MAIL", "FROM:<app@example.com> SIZE=%d" % 10**7)[0]
s.rset()
s.mail("app@example.com")
s.rcpt("ok@dest.test")
out["oversize_data"] = s.data("Subject: big\r\n\r\n" + ("x" * 900 + "\r\n") * 60)[0]
s.quit()

# From a trusted network: no AUTH.
t = smtplib.SMTP(host, starttls_port, timeout=60, source_address=("127.0.0.2", 0))
t.ehlo("trusted.test")
t.sendmail("app@example.com", ["ok@dest.test"], message("smtplib-trusted", "ok@dest.test"))
t.quit()

# STARTTLS plaintext injection (CVE-2011-0411): a command pipelined after STARTTLS in
# the clear is dropped, never answered inside TLS.
import socket
raw = socket.create_connection((host, starttls_port), timeout=60)
def replies(f, n):
    codes = []
    while len(codes) < n:
        line = f.readline()
        if len(line) < 4:
            raise Exception("connection closed: %r" % line)
        if line[3:4] == b" ":
            codes.append(int(line[:3]))
    return codes
plain_file = raw.makefile("rb")
replies(plain_file, 1)
raw.sendall(b"EHLO injector.test\r\nSTARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
out["injection_before_tls"] = replies(plain_file, 2)
tls = ctx.wrap_socket(raw)
tls.sendall(b"EHLO injector.test\r\n")
out["injection_first_reply_in_tls"] = replies(tls.makefile("rb"), 1)
tls.close()

# Past the failed-AUTH limit (3, one used above): 535, then 421 and the session closes.
f = smtplib.SMTP_SSL(host, tls_port, context=ctx, timeout=60)
f.ehlo("guesser.test")
out["guess_2"] = f.docmd("AUTH", plain(user, "sk_guess_2"))[0]
out["guess_3"] = f.docmd("AUTH", plain(user, "sk_guess_3"))[0]
try:
    f.noop()
    out["after_421"] = "open"
except smtplib.SMTPServerDisconnected:
    out["after_421"] = "closed"
# A new session from the same address: refused even with the right key.
g = smtplib.SMTP_SSL(host, tls_port, context=ctx, timeout=60)
g.ehlo("guesser.test")
out["right_key_while_blocked"] = g.docmd("AUTH", plain(user, key))[0]
print(json.dumps(out))
"#;

/// A throwaway Postfix instance (its own configuration and queue under the test's
/// directory) listening on `listen_port` and relaying everything to Sluice's submission
/// port with SASL (AUTH PLAIN) over STARTTLS, as an MTA in front of Sluice would. Stopped
/// (its own master only, through its pid file) when dropped.
struct Postfix {
    etc: PathBuf,
}

impl Postfix {
    fn postfix(etc: &Path, command: &str) -> std::process::Output {
        Command::new("postfix")
            .arg("-c")
            .arg(etc)
            .arg(command)
            .output()
            .expect("postfix is installed (see tests/run)")
    }

    fn start(dir: &Path, listen_port: u16, submit_port: u16, user: &str, key: &str) -> Postfix {
        let (etc, data, queue) = (dir.join("etc"), dir.join("data"), dir.join("queue"));
        for d in [&etc, &data, &queue] {
            std::fs::create_dir_all(d).expect("postfix dirs");
        }
        // Postfix's daemons, once they are the `postfix` user, must reach their queue.
        for d in [dir.parent().expect("a parent"), dir] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
        }
        let chown = Command::new("chown")
            .arg("postfix:postfix")
            .arg(&data)
            .status()
            .expect("chown");
        assert!(
            chown.success(),
            "Postfix runs as root here: the tests need root"
        );
        std::fs::write(
            etc.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {queue}\ndata_directory = {data}\n\
                 daemon_directory = /usr/lib/postfix/sbin\ncommand_directory = /usr/sbin\n\
                 meta_directory = /etc/postfix\nshlib_directory = /usr/lib/postfix\n\
                 mail_owner = postfix\nsetgid_group = postdrop\nsyslog_name = postfix-submit-test\n\
                 myhostname = mta.sluice.test\nmydomain = sluice.test\nmydestination =\n\
                 local_recipient_maps =\nalias_maps =\nalias_database =\n\
                 inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\nsmtpd_peername_lookup = no\n\
                 relayhost = [127.0.0.1]:{submit_port}\nsmtp_dns_support_level = disabled\n\
                 smtp_host_lookup = native\nsmtp_tls_security_level = encrypt\n\
                 smtp_sasl_auth_enable = yes\nsmtp_sasl_security_options = noanonymous\n\
                 smtp_sasl_tls_security_options = noanonymous\nsmtp_sasl_mechanism_filter = plain\n\
                 smtp_sasl_password_maps = inline:{{ [127.0.0.1]:{submit_port}={user}:{key} }}\n\
                 biff = no\nappend_dot_mydomain = no\nmaillog_file_prefixes = {dir}\n\
                 maillog_file = {dir}/maillog\n",
                queue = queue.display(),
                data = data.display(),
                dir = dir.display(),
            ),
        )
        .expect("main.cf");
        std::fs::write(
            etc.join("master.cf"),
            format!(
                "127.0.0.1:{listen_port} inet n - n - - smtpd\n\
                 pickup unix n - n 60 1 pickup\ncleanup unix n - n - 0 cleanup\n\
                 qmgr unix n - n 300 1 qmgr\nrewrite unix - - n - - trivial-rewrite\n\
                 bounce unix - - n - 0 bounce\ndefer unix - - n - 0 bounce\n\
                 trace unix - - n - 0 bounce\nverify unix - - n - 1 verify\n\
                 flush unix n - n 1000? 0 flush\nproxymap unix - - n - - proxymap\n\
                 proxywrite unix - - n - 1 proxymap\nsmtp unix - - n - - smtp\n\
                 relay unix - - n - - smtp\nshowq unix n - n - - showq\n\
                 error unix - - n - - error\nretry unix - - n - - error\n\
                 discard unix - - n - - discard\nanvil unix - - n - 1 anvil\n\
                 scache unix - - n - 1 scache\npostlog unix-dgram n - n - 1 postlogd\n\
                 tlsmgr unix - - n 1000? 1 tlsmgr\n"
            ),
        )
        .expect("master.cf");
        let started = Postfix::postfix(&etc, "start");
        assert!(
            started.status.success(),
            "postfix start: {}{}",
            String::from_utf8_lossy(&started.stdout),
            String::from_utf8_lossy(&started.stderr)
        );
        let postfix = Postfix { etc };
        wait_for("Postfix to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", listen_port))
                .map(drop)
                .map_err(|e| e.to_string())
        });
        postfix
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Postfix::postfix(&self.etc, "stop");
    }
}

/// Runs swaks; (exit status ok, transcript).
fn swaks(args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--timeout", "60", "--helo", "client.test"])
        .args(args)
        .output()
        .expect("swaks is installed (see tests/run)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn submission_over_tls_with_auth_reaches_the_relay_and_refuses_what_it_must() {
    let relay_port = free_port();
    let (starttls_port, tls_port) = (free_port(), free_port());
    let probe = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(&probe.path().join("pki"));
    let tables = format!(
        "{}{}\n[submission]\nlisten = [\"127.0.0.1:{starttls_port}\"]\n\
         listen_tls = [\"127.0.0.1:{tls_port}\"]\n\
         tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nhostname = \"submit.sluice.test\"\n\
         max_auth_failures_per_ip = 3\nauth_failure_delay_ms = 100\n\n\
         [submission.trusted_networks]\nt = [\"127.0.0.2/32\"]\n",
        relay_table("a", &format!("smtp://127.0.0.1:{relay_port}"), ""),
        tenant_table("t", &["example.com"]),
        pki.server_cert.display(),
        pki.server_key.display(),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        limits: "max_message_bytes = 20000\n",
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), relay_port, &[]);
    let sluice = setup.start_logging(&[], "info,sluice=debug");
    let created = sluice.admin("POST", "/admin/v1/tenants/t/keys", None);
    assert_eq!(created.status, 201, "{}", created.body);
    let created: Value = created.json();
    let key = created["key"].as_str().expect("key").to_owned();
    let key_id = created["id"].as_str().expect("key id").to_owned();
    let r = sluice.request(
        "POST",
        "/v1/suppressions",
        Some(&key),
        Some("application/json"),
        json!({"address": "gone@dest.test"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // swaks: STARTTLS and AUTH PLAIN with the tenant's id; implicit TLS and AUTH LOGIN
    // with the key's id.
    let port = starttls_port.to_string();
    let (ok, transcript) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "t",
        "--auth-password",
        &key,
        "--from",
        "app@example.com",
        "--to",
        "ok@dest.test",
        "--header",
        "Subject: swaks-starttls",
    ]);
    assert!(ok, "{transcript}");
    assert!(transcript.contains("235 2.7.0"), "{transcript}");
    let port = tls_port.to_string();
    let (ok, transcript) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--tlsc",
        "--auth",
        "LOGIN",
        "--auth-user",
        &key_id,
        "--auth-password",
        &key,
        "--from",
        "app@example.com",
        "--to",
        "ok@dest.test",
        "--header",
        "Subject: swaks-implicit",
    ]);
    assert!(ok, "{transcript}");

    // A Postfix relaying to Sluice with SASL (before the address is blocked below).
    let postfix_port = free_port();
    let postfix = Postfix::start(
        &probe.path().join("postfix"),
        postfix_port,
        starttls_port,
        "t",
        &key,
    );
    let port = postfix_port.to_string();
    let (ok, transcript) = swaks(&[
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "app@example.com",
        "--to",
        "ok@dest.test",
        "--header",
        "Subject: postfix-relayed",
    ]);
    assert!(ok, "{transcript}");
    wait_for("Postfix to relay through Sluice to the sink", || {
        let kept = sink.with_subject("postfix-relayed");
        if kept.len() == 1 {
            Ok(())
        } else {
            Err(format!(
                "{}\n{}",
                std::fs::read_to_string(probe.path().join("postfix/maillog")).unwrap_or_default(),
                sluice.log()
            ))
        }
    });
    drop(postfix);

    let script = probe.path().join("client.py");
    std::fs::write(&script, CLIENT).expect("write client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([&starttls_port.to_string(), &tls_port.to_string(), "t", &key])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sluice.log()
    );
    let got: Value = serde_json::from_str(stdout.trim()).expect("the client's JSON");
    let expected = json!({
        "plain_offers_auth": false,
        "plain_offers_starttls": true,
        "auth_before_tls": 538,
        "mail_before_tls": 530,
        "tls_offers_auth": true,
        "tls_auth_mechanisms": "PLAIN LOGIN",
        "mail_without_auth": 530,
        "wrong_password": 535,
        "refused": {"gone@dest.test": 550},
        "size_param": 552,
        "oversize_data": 552,
        "injection_before_tls": [250, 220],
        "injection_first_reply_in_tls": [250],
        "guess_2": 535,
        "guess_3": 421,
        "after_421": "closed",
        "right_key_while_blocked": 421,
    });
    assert_eq!(got, expected, "{}", sluice.log());

    for subject in [
        "swaks-starttls",
        "swaks-implicit",
        "smtplib-starttls",
        "smtplib-trusted",
    ] {
        wait_for(&format!("the sink to keep {subject:?}"), || {
            let kept = sink.with_subject(subject);
            match kept.as_slice() {
                [one] => Ok(one.clone()),
                _ => Err(format!("{kept:#?}\n{}", sink.log())),
            }
        });
    }
    // The suppressed recipient was refused at RCPT and never reached the relay.
    assert!(
        !sink.messages().iter().any(|m| m.contains("gone@dest.test")),
        "a suppressed recipient was relayed"
    );
    let log = std::fs::read_to_string(&sluice.log).unwrap_or_default();
    assert!(log.contains("submission: authentication failed"), "{log}");
    assert!(!log.contains(&key), "the key reached the log");
    assert!(
        !log.contains("sk_guess"),
        "a guessed password reached the log"
    );
}

/// swaks through a trusted network (no TLS, no AUTH) to `port`, with these extra
/// header lines; (exit status ok, transcript).
fn swaks_trusted(port: u16, subject: &str, headers: &[String]) -> (bool, String) {
    let port = port.to_string();
    let subject = format!("Subject: {subject}");
    let mut args = vec![
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--from",
        "app@example.com",
        "--to",
        "ok@dest.test",
        "--header",
        &subject,
    ];
    for h in headers {
        args.extend(["--add-header", h.as_str()]);
    }
    swaks(&args)
}

/// The message id in the final 250 of a swaks transcript.
fn accepted_id(transcript: &str) -> String {
    transcript
        .split("2.0.0 accepted as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no accepted id in {transcript}"))
        .to_owned()
}

#[test]
fn tags_and_an_idempotency_key_ride_in_the_header_and_never_reach_the_relay() {
    let relay_port = free_port();
    let submit_port = free_port();
    let probe = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(&probe.path().join("pki"));
    let tables = format!(
        "{}{}\n[submission]\nlisten = [\"127.0.0.1:{submit_port}\"]\n\
         tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\n\
         [submission.trusted_networks]\nt = [\"127.0.0.1/32\"]\n",
        relay_table("a", &format!("smtp://127.0.0.1:{relay_port}"), ""),
        tenant_table("t", &["example.com"]),
        pki.server_cert.display(),
        pki.server_key.display(),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sink = Sink::start(setup.root(), relay_port, &[]);
    let sluice = setup.start();
    let created = sluice.admin("POST", "/admin/v1/tenants/t/keys", None);
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.json()["key"].as_str().expect("key").to_owned();

    let fields = [
        "X-Sluice-Tags: campaign-7, welcome".to_string(),
        "X-Sluice-Idempotency-Key: order-1234".to_string(),
    ];
    let (ok, first) = swaks_trusted(submit_port, "keyed", &fields);
    assert!(ok, "{first}\n{}", sluice.log());
    let id = accepted_id(&first);
    // The same key again: answered with the first message, not taken in twice.
    let (ok, again) = swaks_trusted(submit_port, "keyed", &fields);
    assert!(ok, "{again}");
    assert!(again.contains("not sent again"), "{again}");
    assert_eq!(accepted_id(&again), id);

    let r = sluice.request("GET", &format!("/v1/messages/{id}"), Some(&key), None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["tags"],
        json!(["campaign-7", "welcome"]),
        "{}",
        r.body
    );

    // Past the bounds: refused whole, nothing stored.
    let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let (ok, refused) = swaks_trusted(
        submit_port,
        "too-many-tags",
        &[format!("X-Sluice-Tags: {}", many.join(","))],
    );
    assert!(
        !ok && refused.contains("550 5.6.0 X-Sluice-Tags: more than 64 tags"),
        "{refused}"
    );
    let (ok, refused) = swaks_trusted(
        submit_port,
        "long-key",
        &[format!("X-Sluice-Idempotency-Key: {}", "k".repeat(300))],
    );
    assert!(
        !ok && refused.contains("550 5.6.0 X-Sluice-Idempotency-Key must be 1 to 256 bytes"),
        "{refused}"
    );

    // A later message marks the relay's catching up: then the keyed one is there once,
    // and no field meant for Sluice reached the relay.
    let (ok, transcript) = swaks_trusted(submit_port, "marker", &[]);
    assert!(ok, "{transcript}");
    for subject in ["keyed", "marker"] {
        wait_for(&format!("the sink to keep {subject:?}"), || {
            match sink.with_subject(subject).as_slice() {
                [] => Err(sink.log()),
                _ => Ok(()),
            }
        });
    }
    let kept = sink.messages();
    assert_eq!(sink.with_subject("keyed").len(), 1, "{kept:#?}");
    assert!(
        kept.iter()
            .all(|m| !m.to_ascii_lowercase().contains("x-sluice-")),
        "{kept:#?}"
    );
    assert!(sink.with_subject("too-many-tags").is_empty());
    assert!(sink.with_subject("long-key").is_empty());
}

/// Reads one whole reply (its last line) from a raw connection.
fn read_reply(r: &mut impl std::io::BufRead) -> String {
    let mut last = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).expect("read a reply") == 0 {
            return format!("EOF after {last:?}");
        }
        let done = line.as_bytes().get(3) != Some(&b'-');
        last = line.trim_end().to_owned();
        if done {
            return last;
        }
    }
}

#[test]
fn a_client_past_its_connections_commands_or_time_is_told_421_saying_which() {
    use std::io::{BufReader, Write};
    let submit_port = free_port();
    let probe = tempfile::tempdir().expect("temp dir");
    let pki = TestPki::new(&probe.path().join("pki"));
    let tables = format!(
        "{}\n[submission]\nlisten = [\"127.0.0.1:{submit_port}\"]\n\
         tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nmax_connections_per_ip = 2\n\
         command_timeout_secs = 1\nmax_unproductive_commands = 3\n",
        tenant_table("t", &["example.com"]),
        pki.server_cert.display(),
        pki.server_key.display(),
    );
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let sluice = setup.start();
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", submit_port)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let r = BufReader::new(s.try_clone().expect("clone"));
        (s, r)
    };
    // Two sessions held open: the third from the same address is turned away.
    let (_s1, mut r1) = connect();
    let (mut s2, mut r2) = connect();
    assert!(read_reply(&mut r1).starts_with("220 "));
    assert!(read_reply(&mut r2).starts_with("220 "));
    let (_s3, mut r3) = connect();
    let turned = read_reply(&mut r3);
    assert!(
        turned.starts_with("421 4.7.0 too many connections from your address (limit 2)"),
        "{turned}\n{}",
        sluice.log()
    );
    // A session that only chats is closed after max_unproductive_commands.
    s2.write_all(b"EHLO c\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
        .expect("write");
    let replies: Vec<String> = (0..4).map(|_| read_reply(&mut r2)).collect();
    assert!(
        replies[3].starts_with("421 4.7.0") && replies[3].contains("too many commands"),
        "{replies:?}"
    );
    // A silent one is closed at the command timeout.
    let silent = read_reply(&mut r1);
    assert!(
        silent.starts_with("421 4.4.2") && silent.contains("timeout"),
        "{silent}"
    );
}
