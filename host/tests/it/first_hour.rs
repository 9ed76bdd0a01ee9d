//! A newcomer's first hour (issue 20): the README's two commands on a machine where
//! rustup installs nothing by itself, and the traps a first user met, each through the
//! real build script, script or binary.

use crate::support::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `host/build.rs` compiled on its own and run in a made-up workspace, against a
/// `rustc` whose sysroot lacks wasm32-wasip2, a `rustup` that logs what it is asked
/// (and adds the target, unless `rustup_fails`), and a `cargo` that "builds" the one
/// plugin of the made-up workspace.
struct BuildScript {
    dir: tempfile::TempDir,
}

impl BuildScript {
    fn new() -> BuildScript {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = Command::new("rustc")
            .args(["--edition", "2024", "-o"])
            .arg(d.join("build-script"))
            .arg(workspace().join("host/build.rs"))
            .output()
            .expect("rustc runs");
        assert!(out.status.success(), "{}", text(&out).1);
        for sub in [
            "bin",
            "root/host",
            "root/plugins/router-x",
            "root/plugin-sdk/src",
            "root/plugin-sdk/wit",
            "root/money/src",
            "out",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for (file, text) in [
            ("root/plugins/router-x/Cargo.toml", ""),
            (
                "root/Cargo.toml",
                "[workspace.dependencies]\nwit-bindgen = \"1\"\nsluice-money = { path = \"money\" }\n",
            ),
            ("root/Cargo.lock", "version = 4\n"),
            (
                "root/plugin-sdk/Cargo.toml",
                "[package]\nname = \"sluice-sdk\"\n[dependencies]\nwit-bindgen.workspace = true\nsluice-money.workspace = true\n",
            ),
            ("root/plugin-sdk/src/lib.rs", "//! sdk\n"),
            ("root/plugin-sdk/wit/types.wit", "package a:b;\n"),
            ("root/money/src/lib.rs", "//! money\n"),
        ] {
            std::fs::write(d.join(file), text).unwrap();
        }
        let libdir = d.join("sysroot/lib/rustlib/wasm32-wasip2/lib");
        write_script(&d.join("bin/rustc"), &format!("echo {}", libdir.display()));
        write_script(
            &d.join("bin/rustup"),
            &format!(
                "echo \"$@\" >> {log}\n\
                 if [ -e {fail} ]; then echo 'error: could not download' >&2; exit 1; fi\n\
                 mkdir -p {libdir}",
                log = d.join("rustup.log").display(),
                fail = d.join("rustup-fails").display(),
                libdir = libdir.display()
            ),
        );
        write_script(
            &d.join("bin/cargo"),
            "while [ $# -gt 0 ]; do\n\
               if [ \"$1\" = --target-dir ]; then t=\"$2\"; fi; shift\n\
             done\n\
             mkdir -p \"$t/wasm32-wasip2/plugin\" && touch \"$t/wasm32-wasip2/plugin/router_x.wasm\"",
        );
        BuildScript { dir }
    }

    fn run(&self) -> Output {
        let d = self.dir.path();
        let path = format!(
            "{}:{}",
            d.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(d.join("build-script"))
            .env("PATH", path)
            .env("RUSTC", d.join("bin/rustc"))
            .env("CARGO", d.join("bin/cargo"))
            .env("CARGO_MANIFEST_DIR", d.join("root/host"))
            .env("OUT_DIR", d.join("out"))
            .env("SLUICE_WASM_TARGET_DIR", d.join("wasm"))
            .env("RUSTUP_TOOLCHAIN", "1.95.0-x86_64-unknown-linux-gnu")
            .env("RUSTUP_AUTO_INSTALL", "0")
            .output()
            .expect("the build script runs")
    }

    fn rustup_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rustup.log")).unwrap_or_default()
    }
}

#[test]
fn the_build_adds_a_missing_wasm_target_with_rustup_for_its_own_toolchain() {
    let b = BuildScript::new();
    let out = b.run();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(
        b.rustup_log().trim(),
        "target add wasm32-wasip2 --toolchain 1.95.0-x86_64-unknown-linux-gnu"
    );
    assert!(
        stdout.contains("cargo:warning=the wasm32-wasip2 target is not installed"),
        "{stdout}"
    );
    let listing = std::fs::read_to_string(b.dir.path().join("out/builtin_plugins.rs")).unwrap();
    assert!(listing.contains("(\"router-x\", ROUTER_X)"), "{listing}");
    // And the SDK's files for `plugin new`, with a manifest that needs no workspace.
    let sdk = std::fs::read_to_string(b.dir.path().join("out/sdk_sources.rs")).unwrap();
    for want in [
        "(\"src/lib.rs\", include_str!(",
        "(\"wit/types.wit\", include_str!(",
        r#"wit-bindgen = \"1\"\n"#,
        // The SDK's workspace dependency is vendored beside it, with its sources.
        r#"sluice-money = { path = \"../sluice-money\" }\n"#,
        "MONEY_FILES",
    ] {
        assert!(sdk.contains(want), "{want} in {sdk}");
    }

    // Once there, it is not added again.
    std::fs::remove_file(b.dir.path().join("rustup.log")).unwrap();
    assert!(b.run().status.success());
    assert_eq!(b.rustup_log(), "");
}

#[test]
fn the_build_says_what_to_run_when_rustup_cannot_add_the_target() {
    let b = BuildScript::new();
    std::fs::write(b.dir.path().join("rustup-fails"), "").unwrap();
    let out = b.run();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(
            "the wasm32-wasip2 target, needed to build the default plugins, is not installed"
        ) && stderr.contains(
            "`rustup target add wasm32-wasip2 --toolchain 1.95.0-x86_64-unknown-linux-gnu` failed"
        ),
        "{stderr}"
    );
    // Nothing was built with a compiler that could not have built it.
    assert!(!b.dir.path().join("wasm").exists());
}

#[test]
fn the_readme_test_command_is_the_script_ci_runs_and_it_sets_up_without_rustup_installing_anything()
{
    let root = workspace();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .lines()
        .collect();
    assert!(
        commands[0].contains("cargo run --release -p sluice -- serve"),
        "{commands:?}"
    );
    assert!(commands[1].starts_with("tests/run "), "{commands:?}");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(ci.contains("\ntests/run --setup-only\n") && ci.contains("\ntests/run\n"));

    // Everything is in place on a machine that ran it once: a second set-up changes
    // nothing and succeeds without rustup installing by itself.
    let out = Command::new(root.join("tests/run"))
        .arg("--setup-only")
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for step in ["== toolchain", "== system packages", "== postgresql"] {
        assert!(stdout.contains(step), "{stdout}");
    }
    assert!(!stdout.contains("installing:"), "{stdout}");
}

// ---- a running server ----

fn error_of(r: &Response) -> (String, String) {
    let v = r.json();
    (
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// A tenant `t` (any sender) and, when `relay` is given, a platform relay `a` to it.
fn tables(relay: Option<u16>) -> String {
    let relay = relay
        .map(|port| relay_table("a", &format!("smtp://127.0.0.1:{port}"), ""))
        .unwrap_or_default();
    format!("{relay}{}", tenant_table("t", &["*"]))
}

#[test]
fn a_relay_added_without_tags_joins_the_platform_pool_and_deferred_mail_is_retried_on_request() {
    // No relay at all, and a 4xx retried after ten minutes.
    let tables = tables(None);
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        send_config: r#"{ base_secs = "600", max_delay_secs = "600" }"#,
        ..Default::default()
    });
    let port = free_port();
    // A relay that refuses every recipient for now (4xx).
    let refusing = Sink::start(setup.root(), port, &["-r", "rcpt"]);
    let s = setup.start();
    let key = s.new_key("t");
    let other = {
        let r = s.admin("POST", "/admin/v1/tenants", Some(json!({"id": "u"})));
        assert_eq!(r.status, 201, "{}", r.body);
        s.new_key("u")
    };
    let first = s.submit(&key, &simple("a@example.com", "x@one.test", "first"));
    let m = s.wait_state(&key, &first, "deferred");
    assert_eq!(m["recipients"][0]["attempts"], 0, "no relay to try: {m:#}");

    // Tags that put a platform relay in no pool are refused, saying how.
    let r = s.admin(
        "POST",
        "/admin/v1/relays",
        Some(json!({"id": "a", "url": refusing.url(), "tags": ["region:eu"]})),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let (code, message) = error_of(&r);
    assert_eq!(code, "invalid");
    assert_eq!(r.json()["error"]["field"], "tags");
    assert!(
        message.contains("\"pool:platform\" is every tenant's default pool")
            && message.contains("leave \"tags\" out"),
        "{message}"
    );
    // Without tags it joins the platform's pool, the pool every tenant uses by default,
    // and the mail that waited for a relay is tried at once.
    let r = s.admin(
        "POST",
        "/admin/v1/relays",
        Some(json!({"id": "a", "url": refusing.url()})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["tags"], json!(["pool:platform"]));
    // PATCHing its pool away is refused the same way.
    let r = s.admin(
        "PATCH",
        "/admin/v1/relays/a",
        Some(json!({"tags": ["fast"]})),
    );
    assert_eq!(
        (r.status, error_of(&r).0.as_str()),
        (422, "invalid"),
        "{}",
        r.body
    );

    let tried = |id: &str| {
        s.wait_message(&key, id, "tried at relay a and deferred", |m| {
            let r = &m["recipients"][0];
            r["state"] == "deferred" && r["relay"] == "a" && r["attempts"] == 1
        })
    };
    tried(&first);
    let second = s.submit(&key, &simple("a@example.com", "y@two.test", "second"));
    let m = tried(&second);
    let r = &m["recipients"][0];
    let wait = r["next_attempt_at_ms"].as_i64().unwrap() - r["updated_at_ms"].as_i64().unwrap();
    assert!(wait > 300_000, "deferred for ten minutes: {m:#}");

    // The relay takes mail now; the deferred mail waits out its delay unless asked:
    // a retry by message (the tenant's own), then by domain (the admin's).
    refusing.stop();
    let sink = Sink::start(setup.root(), port, &[]);
    let r = s.admin("POST", "/admin/v1/retry", Some(json!({})));
    assert_eq!(r.status, 422, "naming nothing is refused: {}", r.body);
    let r = s.request(
        "POST",
        &format!("/v1/messages/{first}/retry"),
        Some(&other),
        None,
        b"",
    );
    assert_eq!(r.status, 404, "another tenant's message: {}", r.body);
    // Nor through the filter: another tenant's retry sees only its own mail.
    let r = s.request(
        "POST",
        "/v1/retry",
        Some(&other),
        Some("application/json"),
        json!({"message": first}).to_string().as_bytes(),
    );
    assert_eq!(
        (r.status, r.json()["retried"].clone()),
        (200, json!(0)),
        "{}",
        r.body
    );
    let r = s.request(
        "POST",
        &format!("/v1/messages/{first}/retry"),
        Some(&key),
        None,
        b"",
    );
    assert_eq!(
        (r.status, r.json()["retried"].clone()),
        (200, json!(1)),
        "{}",
        r.body
    );
    s.wait_state(&key, &first, "delivered");
    let m = s.message(&key, &second);
    assert_eq!(m["recipients"][0]["state"], "deferred", "untouched: {m:#}");
    let r = s.admin(
        "POST",
        "/admin/v1/retry",
        Some(json!({"domain": "TWO.test", "tenant": "t"})),
    );
    assert_eq!(
        (r.status, r.json()["retried"].clone()),
        (200, json!(1)),
        "{}",
        r.body
    );
    let m = s.wait_state(&key, &second, "delivered");
    assert_eq!(m["recipients"][0]["relay"], "a", "{m:#}");
    assert_eq!(sink.with_subject("second").len(), 1);
    // Nothing is deferred now: a retry by relay or tenant finds nothing.
    for path in ["/admin/v1/relays/a/retry", "/admin/v1/tenants/t/retry"] {
        let r = s.admin("POST", path, None);
        assert_eq!(
            (r.status, r.json()["retried"].clone()),
            (200, json!(0)),
            "{path}: {}",
            r.body
        );
    }
    assert_eq!(
        s.admin("POST", "/admin/v1/relays/zz/retry", None).status,
        404
    );
}

/// A pipeline from [`Setup`] without its `[admin]` table.
fn without_admin(setup: &Setup) {
    let text = std::fs::read_to_string(&setup.pipeline).unwrap();
    let text = text.replace("[admin]\ntoken_env = \"SLUICE_E2E_ADMIN_TOKEN\"\n", "");
    assert!(!text.contains("[admin]"), "{text}");
    std::fs::write(&setup.pipeline, text).unwrap();
}

/// The value printed after `marker` in a start's output.
fn printed(log: &str, marker: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.split_once(marker))
        .map(|(_, v)| v.trim().to_owned())
}

#[test]
fn without_an_admin_table_the_admin_token_and_the_first_key_are_made_once() {
    // No tenants and no [admin]: the first start makes both and prints them once.
    let setup = Setup::new(PipelineParts::default());
    without_admin(&setup);
    let token_marker = "only its hash is kept in the store; [admin] token_env or token_file names one of your own): ";
    let key_marker = "its API key (shown once; only its hash is kept): ";
    let (token, key) = {
        let mut s = setup.start();
        let log = s.log();
        let token = printed(&log, token_marker).unwrap_or_else(|| panic!("no token in {log}"));
        let key = printed(&log, key_marker).unwrap_or_else(|| panic!("no key in {log}"));
        let r = s.request("GET", "/admin/v1/relays", Some(&token), None, b"");
        assert_eq!(r.status, 200, "{}", r.body);
        s.guard.signal("TERM");
        s.guard.wait_exit(WAIT);
        (token, key)
    };

    // The second start on the same store makes nothing new and says where they are.
    let mut s = setup.start();
    let log = s.log();
    assert!(printed(&log, token_marker).is_none(), "{log}");
    assert!(printed(&log, key_marker).is_none(), "{log}");
    assert!(log.contains("--reset-admin-token"), "{log}");
    assert!(log.contains("POST /admin/v1/tenants/default/keys"), "{log}");
    let r = s.request("GET", "/admin/v1/relays", Some(&token), None, b"");
    assert_eq!(r.status, 200, "the first token still works: {}", r.body);
    let r = s.request("GET", "/v1/suppressions", Some(&key), None, b"");
    assert_eq!(r.status, 200, "the first key still works: {}", r.body);
    s.guard.signal("TERM");
    s.guard.wait_exit(WAIT);

    // A reset makes a new one, printed once; the old one stops working.
    let s = setup.start_with_args(&["--reset-admin-token"]);
    let log = s.log();
    let new = printed(&log, token_marker).unwrap_or_else(|| panic!("no new token in {log}"));
    assert_ne!(new, token);
    let r = s.request("GET", "/admin/v1/relays", Some(&token), None, b"");
    assert_eq!(r.status, 401, "{}", r.body);
    let r = s.request("GET", "/admin/v1/relays", Some(&new), None, b"");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn reset_admin_token_is_refused_when_the_pipeline_names_the_token() {
    let setup = Setup::new(PipelineParts::default());
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--reset-admin-token", "--pipeline"])
        .arg(&setup.pipeline)
        .env("SLUICE_E2E_ADMIN_TOKEN", "t0ken")
        .current_dir(setup.root())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[admin] token_env or token_file"),
        "{stderr}"
    );
}

/// Writes a pipeline (`body` after a store line of its own) to `dir/name`.
fn pipeline_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let db = dir.join(format!("{name}.db"));
    let port = free_port();
    std::fs::write(
        &path,
        format!(
            "[server]\nhttp_listen = \"127.0.0.1:{port}\"\n[store]\nurl = \"sqlite://{}\"\n{body}",
            db.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn pipeline_check_refuses_what_serve_refuses_and_passes_what_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("garbage.wasm"),
        b"\x7fELF\x02\x01\x01 not wasm at all",
    )
    .unwrap();
    let cases = [
        (
            "missing.toml",
            format!(
                "[plugins.route]\nfile = \"{}\"\n",
                d.join("nowhere.wasm").display()
            ),
            vec!["plugins.route: ", "cannot read plugin", "nowhere.wasm"],
        ),
        (
            "invalid.toml",
            format!(
                "[plugins.bill]\nfile = \"{}\"\n",
                d.join("garbage.wasm").display()
            ),
            vec!["plugins.bill: ", "not a WebAssembly component"],
        ),
        (
            "token.toml",
            "[admin]\ntoken_env = \"SLUICE_TEST_NOT_SET_ANYWHERE\"\n".to_owned(),
            vec!["admin.token: environment variable SLUICE_TEST_NOT_SET_ANYWHERE is not set"],
        ),
    ];
    for (name, body, wanted) in &cases {
        let file = pipeline_file(d, name, body);
        let check = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["pipeline", "check"])
            .arg(&file)
            .env_remove("SLUICE_TEST_NOT_SET_ANYWHERE")
            .output()
            .unwrap();
        let serve = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--pipeline"])
            .arg(&file)
            .env_remove("SLUICE_TEST_NOT_SET_ANYWHERE")
            .current_dir(d)
            .output()
            .unwrap();
        for (what, out) in [("check", &check), ("serve", &serve)] {
            let (stdout, stderr) = text(out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{name} {what}: {stdout}\n{stderr}"
            );
            for w in wanted {
                assert!(
                    stderr.contains(w),
                    "{name} {what} should say {w:?}:\n{stderr}"
                );
            }
            // One line per error, never a dump of the file's bytes.
            assert!(
                stderr.lines().all(|l| l.len() < 400),
                "{name} {what}:\n{stderr}"
            );
        }
        // Nothing was opened for a pipeline that cannot be served.
        assert!(!d.join(format!("{name}.db")).exists(), "{name}");
    }
    // Every error of one file at once.
    let both = pipeline_file(d, "both.toml", &format!("{}{}", cases[0].1, cases[2].1));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["pipeline", "check"])
        .arg(&both)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("plugins.route: ") && stderr.contains("admin.token: "),
        "{stderr}"
    );
    // What serve starts with, check passes.
    let good = pipeline_file(
        d,
        "good.toml",
        "[admin]\ntoken_env = \"SLUICE_TEST_TOKEN\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["pipeline", "check"])
        .arg(&good)
        .env("SLUICE_TEST_TOKEN", "x")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
}

#[test]
fn an_idempotent_replay_answers_with_the_stored_message_id() {
    let port = free_port();
    let tables = tables(Some(port));
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");
    let mut m = simple("a@example.com", "b@example.net", "once");
    m["idempotency_key"] = json!("order-7");
    let first = s.post_message(&key, &m);
    assert_eq!(first.status, 202, "{}", first.body);
    let again = s.post_message(&key, &m);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let (first, again) = (first.json(), again.json());
    assert_eq!(again["id"], first["id"]);
    assert!(
        first["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with('<')),
        "{first}"
    );
    assert_eq!(again["message_id"], first["message_id"], "{again}");

    // A raw message keeps its own Message-ID, and a repeat is told that one.
    let raw = b"From: a@example.com\r\nTo: b@example.net\r\nMessage-ID: <mine@example.com>\r\nSubject: raw\r\n\r\nhi\r\n";
    let path = "/v1/messages?from=a@example.com&to=b@example.net&idempotency_key=raw-1";
    for want in [202, 200] {
        let r = s.request("POST", path, Some(&key), Some("message/rfc822"), raw);
        assert_eq!(r.status, want, "{}", r.body);
        assert_eq!(r.json()["message_id"], "<mine@example.com>", "{}", r.body);
    }
}

#[test]
fn every_error_is_the_json_error_body() {
    let setup = Setup::new(PipelineParts {
        tables: &tables(None),
        limits: "max_message_bytes = 4096",
        ..Default::default()
    });
    let s = setup.start();
    let key = s.new_key("t");
    let admin = |method: &str, path: &str, ct: Option<&str>, body: &[u8]| {
        s.request(method, path, Some(&setup.admin_token), ct, body)
    };
    // Over the router's body limit (`max_message_bytes` × 4/3 + 64 KiB).
    let big = vec![b'x'; 200_000];
    let cases: Vec<(&str, Response, u16, &str)> = vec![
        (
            "bad JSON",
            admin(
                "POST",
                "/admin/v1/tenants",
                Some("application/json"),
                b"{\"id\": ",
            ),
            400,
            "bad_json",
        ),
        (
            "JSON of the wrong shape",
            admin(
                "POST",
                "/admin/v1/tenants",
                Some("application/json"),
                b"{\"idd\": \"x\"}",
            ),
            422,
            "invalid",
        ),
        (
            "no Content-Type",
            admin("POST", "/admin/v1/tenants", None, b"{\"id\": \"x\"}"),
            415,
            "unsupported_media_type",
        ),
        (
            "a wrong Content-Type",
            admin("POST", "/admin/v1/relays", Some("text/plain"), b"{}"),
            415,
            "unsupported_media_type",
        ),
        (
            "a body over the limit",
            admin("POST", "/admin/v1/tenants", Some("application/json"), &big),
            413,
            "too_large",
        ),
        (
            "a bad query",
            admin("GET", "/admin/v1/failed?limit=many", None, b""),
            400,
            "bad_request",
        ),
        (
            "an unknown route",
            s.request("GET", "/v1/nothing-here", Some(&key), None, b""),
            404,
            "not_found",
        ),
        (
            "an unknown route without a key",
            s.request("GET", "/nothing", None, None, b""),
            404,
            "not_found",
        ),
        (
            "a method the route does not take",
            s.request("DELETE", "/v1/messages", Some(&key), None, b""),
            405,
            "method_not_allowed",
        ),
        (
            "a method the admin route does not take",
            admin("PUT", "/admin/v1/relays", Some("application/json"), b"{}"),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, r, status, code) in cases {
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert!(
            r.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "{what}: {:?}",
            r.headers
        );
        let (got, message) = error_of(&r);
        assert_eq!(got, code, "{what}: {}", r.body);
        assert!(!message.is_empty(), "{what}: {}", r.body);
    }
    let r = s.request("DELETE", "/v1/messages", Some(&key), None, b"");
    assert!(
        r.header("allow").is_some_and(|a| a.contains("POST")),
        "{:?}",
        r.headers
    );
}

// ---- the CLI ----

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_URL")
        .env_remove("SLUICE_KEY")
        .output()
        .expect("sluice runs")
}

#[test]
fn commands_that_reach_a_server_spell_it_url_and_say_which_they_tried() {
    for cmd in [
        &["plugin", "upload", "--help"][..],
        &["plugin", "logs", "--help"],
        &["bench", "push", "--help"],
    ] {
        let (stdout, _) = text(&sluice(cmd));
        assert!(
            stdout.contains("--url <URL>") && stdout.contains("SLUICE_URL"),
            "{cmd:?}: {stdout}"
        );
        assert!(!stdout.contains("--addr"), "{cmd:?}: {stdout}");
    }
    // The old spelling still works (hidden).
    let out = sluice(&[
        "bench",
        "push",
        "--addr",
        "127.0.0.1:1",
        "--key",
        "k",
        "--messages",
        "1",
    ]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("cannot connect to 127.0.0.1:1"), "{stderr}");

    // No --url and no SLUICE_URL: it says what it tried, and that it was the default.
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("r.wasm");
    std::fs::write(
        &wasm,
        sluice::builtin::by_name("router-weighted").unwrap().wasm,
    )
    .unwrap();
    let out = sluice(&[
        "plugin",
        "upload",
        "--stage",
        "route",
        wasm.to_str().unwrap(),
        "--key",
        "k",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("http://127.0.0.1:8025"), "{stderr}");
    if stderr.contains("cannot connect") {
        assert!(
            stderr.contains("no --url or SLUICE_URL was given"),
            "{stderr}"
        );
    }
}

#[test]
fn plugin_errors_and_help_fit_on_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    let mut bytes = b"\x7fELF\x02\x01\x01\x00".to_vec();
    bytes.extend((0..4096u32).map(|i| (i % 251) as u8));
    std::fs::write(&garbage, &bytes).unwrap();
    let out = sluice(&[
        "plugin",
        "check",
        "--stage",
        "route",
        garbage.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a WebAssembly component"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.lines().all(|l| l.len() < 300), "{stderr}");

    let (stdout, _) = text(&sluice(&["bounce", "--help"]));
    let eval = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("eval"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(eval.trim_start().len() > "eval".len() + 10, "{eval}");
    let (stdout, _) = text(&sluice(&["bounce", "eval", "--help"]));
    assert!(stdout.contains("families.jsonl"), "{stdout}");
}

#[test]
fn plugin_log_lines_and_suspensions_name_tenant_stage_and_version() {
    let port = free_port();
    let tables = tables(Some(port));
    let setup = Setup::new(PipelineParts {
        tables: &tables,
        ..Default::default()
    });
    let _sink = Sink::start(setup.root(), port, &[]);
    let s = setup.start();
    let key = s.new_key("t");

    // A local run prints the plugin's lines under its file's name and stage.
    let dir = tempfile::tempdir().unwrap();
    let logger = dir.path().join("windows.wasm");
    std::fs::write(&logger, sluice::builtin::test_guests::TENANT_ROUTE_WINDOWS).unwrap();
    let out = sluice(&[
        "plugin",
        "run",
        "--stage",
        "route",
        logger.to_str().unwrap(),
        "--sample",
    ]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("plugin windows/route info: message=")),
        "{stderr}"
    );

    // A tenant's: `plugin logs` reads them from the server with tenant, stage and version.
    let r = s.admin_upload(
        "/admin/v1/tenants/t/plugins/route",
        sluice::builtin::test_guests::TENANT_ROUTE_WINDOWS,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = s.submit(&key, &simple("a@example.com", "b@example.net", "logged"));
    s.wait_state(&key, &id, "delivered");
    let url = format!("http://{}", s.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "logs", "--stage", "route", "--key", &key])
        .env("SLUICE_URL", &url)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("plugin t/route v1 info: message=")),
        "{stdout}"
    );

    // One that panics on every call is suspended, and the server's log says so.
    let r = s.admin_upload(
        "/admin/v1/tenants/t/plugins/route?config=mode=panic&skip_sample=true",
        sluice::builtin::test_guests::HOSTILE,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<String> = (0..6)
        .map(|i| {
            s.submit(
                &key,
                &simple("a@example.com", "b@example.net", &format!("p{i}")),
            )
        })
        .collect();
    for id in &ids {
        s.wait_state(&key, id, "delivered");
    }
    let log = wait_for("the suspension in the server's log", || {
        let log = s.log();
        if log.contains("suspended") {
            Ok(log)
        } else {
            Err(log)
        }
    });
    let line = log
        .lines()
        .find(|l| l.contains("tenant plugin t/route v2 suspended"))
        .unwrap_or_else(|| panic!("{log}"));
    for field in ["WARN", "tenant=t", "stage=route", "version=2", "reason="] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "plugin", "logs", "--stage", "route", "--url", &url, "--key", &key,
        ])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("plugin t/route v2 error (host): ")),
        "{stdout}"
    );
}
