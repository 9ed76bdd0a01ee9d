//! Pipeline files, good and bad, and the exact errors they get.

use super::*;
use std::path::Path;

fn errors(text: &str) -> String {
    Pipeline::parse(text, "p.toml").unwrap_err().to_string()
}

#[test]
fn the_embedded_default_parses_and_uses_the_default_plugins() {
    let p = Pipeline::parse(
        include_str!("../../../pipelines/default.toml"),
        "default.toml",
    )
    .unwrap();
    assert_eq!(p.server.http_listen.to_string(), "127.0.0.1:8025");
    assert_eq!(
        p.plugins.route.source,
        PluginSource::Builtin("router-weighted".into())
    );
    assert_eq!(
        p.plugins.route.config,
        vec![("window_secs".to_owned(), "900".to_owned())]
    );
    assert!(p.relays.is_empty());
    assert_eq!(p.plugins.max_calls_in_flight, 8);
}

#[test]
fn zero_calls_in_flight_is_refused_where_it_is_written() {
    let e = errors("[plugins]\nmax_calls_in_flight = 0\n");
    assert!(
        e.starts_with("p.toml:2:23: key `plugins.max_calls_in_flight`: must be at least 1"),
        "{e}"
    );
}

#[test]
fn log_and_upload_bounds_have_stated_defaults_and_refuse_zero_where_written() {
    let p = Pipeline::parse("", "p.toml").unwrap();
    assert_eq!(p.plugins.logs.max_bytes_per_tenant, 2 << 20);
    assert_eq!(p.plugins.logs.max_line_bytes, 4096);
    assert_eq!(p.plugins.uploads.max_function_locals, 5000);
    assert_eq!(p.plugins.uploads.max_compile_memory_bytes, 1 << 30);
    assert_eq!(p.plugins.uploads.max_compiles_at_once, 1);
    let e = errors("[plugins.uploads]\nmax_function_locals = 0\n");
    assert!(
        e.starts_with("p.toml:2:23: key `plugins.uploads.max_function_locals`: must be at least 1"),
        "{e}"
    );
    let e = errors("[plugins.logs]\nmax_page_bytes = 1000\n");
    assert!(
        e.contains("plugins.logs.max_page_bytes") && e.contains("longest line"),
        "{e}"
    );
    let e = errors("[plugins.logs]\nmax_lines = 3\n");
    assert!(e.contains("max_lines"), "{e}");
}

#[test]
fn every_example_pipeline_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Pipeline::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} example pipelines");
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let e = errors("[server]\nhttp_listen = \"127.0.0.1:1\"\ncolour = \"blue\"\n");
    assert!(
        e.starts_with("p.toml:3:1: key `colour`: unknown field `colour`"),
        "{e}"
    );
    assert!(e.contains("   3 | colour = \"blue\"\n     | ^^^^^^"), "{e}");
}

#[test]
fn wrong_type_points_at_the_value() {
    let e = errors("[limits]\nmax_recipients = \"many\"\n");
    assert!(e.starts_with("p.toml:2:18:"), "{e}");
    assert!(e.contains("invalid type: string \"many\""), "{e}");
}

#[test]
fn inline_secrets_are_refused_with_the_way_to_do_it() {
    let e = errors(
        "[[relay]]\nid = \"a\"\nurl = \"smtp://127.0.0.1:25\"\nauth_user = \"u\"\nauth_password = \"hunter2\"\n",
    );
    assert!(
        e.starts_with("p.toml:5:17: key `relay[0].auth_password`: secrets are never inline"),
        "{e}"
    );
    assert!(
        !e.contains("hunter2\n     | ^") || e.contains("auth_password_env"),
        "{e}"
    );
}

#[test]
fn all_semantic_errors_are_reported_together() {
    let text = "[[relay]]\nid = \"a\"\nurl = \"http://x\"\n\n[[relay]]\nid = \"a\"\nurl = \"smtp://h:25\"\nowner = \"ghost\"\n\n[[tenant]]\nid = \"Bad Id\"\nroute_plugin = \"rater-tiered\"\n";
    let e = errors(text);
    assert!(e.contains("p.toml:3:7: key `relay[0].url`: relay URL \"http://x\": scheme \"http\" is not smtp or smtps"), "{e}");
    assert!(
        e.contains("p.toml:6:6: key `relay[1].id`: relay id \"a\" is used twice"),
        "{e}"
    );
    assert!(
        e.contains("p.toml:8:9: key `relay[1].owner`: no tenant \"ghost\" in this file"),
        "{e}"
    );
    assert!(
        e.contains("p.toml:11:6: key `tenant[0].id`: \"Bad Id\" is not a valid id"),
        "{e}"
    );
    assert!(
        e.contains("key `tenant[0].route_plugin`: \"rater-tiered\" is not a default route plugin"),
        "{e}"
    );
    assert!(e.ends_with("(5 errors)"), "{e}");
}

#[test]
fn plugin_for_the_wrong_stage_is_named() {
    let e = errors("[plugins.route]\nbuiltin = \"send-backoff\"\n");
    assert!(e.contains("key `plugins.route.builtin`: default plugin \"send-backoff\" serves stage send, not route"), "{e}");
}

#[test]
fn secrets_resolve_from_env_and_say_where_they_looked() {
    let missing = SecretRef::Env("SLUICE_TEST_SURELY_UNSET".into());
    assert_eq!(
        missing.resolve().unwrap_err(),
        "environment variable SLUICE_TEST_SURELY_UNSET is not set"
    );
    assert_eq!(missing.reference(), "env:SLUICE_TEST_SURELY_UNSET");
}

#[test]
fn bounce_intake_keys_are_checked_with_their_position() {
    let p = Pipeline::parse(
        "[delivery]\nbounce_domain = \"bounces.example.com\"\nverp_key_env = \"K\"\n\n[smtp_in]\nlisten = \"127.0.0.1:2526\"\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.delivery.bounce_prefix, "bounces");
    assert_eq!(p.delivery.verp_key, Some(SecretRef::Env("K".into())));
    assert_eq!(p.smtp_in.listen.unwrap().port(), 2526);
    assert_eq!(p.smtp_in.max_message_bytes, 10 << 20);
    assert!(
        Pipeline::parse("", "p.toml")
            .unwrap()
            .smtp_in
            .listen
            .is_none()
    );

    let e = errors("[smtp_in]\nlisten = \"127.0.0.1:2526\"\n");
    assert!(
        e.contains(
            "key `smtp_in.listen`: the SMTP listener takes bounces for delivery.bounce_domain"
        ),
        "{e}"
    );
    let e = errors("[smtp_in]\nlisten = \"nowhere\"\ncolour = 1\n");
    assert!(
        e.starts_with("p.toml:3:1: key `colour`: unknown field `colour`"),
        "{e}"
    );
    let e = errors(
        "[delivery]\nbounce_domain = \"no spaces allowed\"\nbounce_prefix = \"Bounces+x\"\nverp_key = \"s3cret\"\n",
    );
    assert!(
        e.contains("p.toml:2:17: key `delivery.bounce_domain`"),
        "{e}"
    );
    assert!(
        e.contains("p.toml:3:17: key `delivery.bounce_prefix`: \"Bounces+x\" must be 1-15"),
        "{e}"
    );
    assert!(
        e.contains("p.toml:4:12: key `delivery.verp_key`: secrets are never inline"),
        "{e}"
    );
    assert!(!e.contains("s3cret\n"), "{e}");
}

#[test]
fn log_sources_are_checked_with_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let logins = dir.path().join("logins.toml");
    std::fs::write(&logins, "[tenant.acme]\nlogins = [\"acme.example\"]\n").unwrap();
    let table = |extra: &str| {
        format!(
            "[[log_source]]\nid = \"mx1\"\npath = \"/var/log/mail.log\"\nformat = \"postfix\"\nlogins = {:?}\n{extra}",
            logins.display().to_string()
        )
    };
    let p = Pipeline::parse(&table(""), "p.toml").unwrap();
    let ls = &p.log_sources[0];
    assert_eq!(ls.id, "mx1");
    assert_eq!(ls.format, crate::maillog::Format::Postfix);
    let r = resolve(&p);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.log_source_logins[0].tenants, ["acme"]);
    assert!(ls.checkpoint.ends_with("log-source-mx1.checkpoint"));

    let e = errors(&table("colour = 1\n"));
    assert!(e.contains("key `colour`: unknown field `colour`"), "{e}");
    let e = errors(&table("").replace("postfix", "exim"));
    assert!(
        e.contains("p.toml:4:10: key `log_source[0].format`: \"exim\" is not a log format"),
        "{e}"
    );
    // The logins file is read by `resolve`, not by validation.
    let p = Pipeline::parse(&table("").replace("logins.toml", "missing.toml"), "p.toml").unwrap();
    let e = resolve(&p).errors.join("\n");
    assert!(e.starts_with("log_source[0].logins: "), "{e}");
    assert!(e.contains("missing.toml"), "{e}");
    let twice = format!("{}{}", table(""), table(""));
    assert!(
        errors(&twice).contains("\"mx1\" is used twice"),
        "{}",
        errors(&twice)
    );
}

#[test]
fn fairness_defaults_follow_max_in_flight_and_weights_are_checked() {
    let p = Pipeline::parse("[delivery]\nmax_in_flight = 10\n", "p.toml").unwrap();
    let f = &p.delivery.fairness;
    assert_eq!(
        (
            f.quantum,
            f.tenant_max_groups,
            f.tenant_max_held,
            f.max_held
        ),
        (100, 10, 10, 40)
    );
    let p = Pipeline::parse(
        "[delivery.fairness]\nquantum = 5\nweights = { gold = 3 }\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.delivery.fairness.weights.get("gold"), Some(&3));
    assert_eq!(p.delivery.fairness.quantum, 5);
    let e = errors("[delivery.fairness]\nweights = { gold = 0 }\n");
    assert!(
        e.starts_with("p.toml:2:20: key `delivery.fairness.weights`: tenant \"gold\" has weight 0"),
        "{e}"
    );
    let e = errors("[delivery.fairness]\nshare = 1\n");
    assert!(e.contains("unknown field `share`"), "{e}");
}

#[test]
fn request_and_bounce_session_limits_have_defaults_and_a_budget_below_one_body_is_refused() {
    let p = Pipeline::parse("", "p.toml").unwrap();
    assert_eq!(p.server.max_request_bytes_in_flight, 160 << 20);
    assert_eq!(p.smtp_in.max_connections_per_ip, 8);
    assert_eq!(p.smtp_in.max_session, std::time::Duration::from_secs(1200));
    assert_eq!(p.smtp_in.max_unproductive_commands, 20);

    let p = Pipeline::parse(
        "[server]\nmax_request_bytes_in_flight = 20000000\n[limits]\nmax_message_bytes = 1000000\n\
         [smtp_in]\nmax_connections_per_ip = 2\nmax_session_secs = 60\nmax_unproductive_commands = 5\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.server.max_request_bytes_in_flight, 20_000_000);
    assert_eq!(
        (
            p.smtp_in.max_connections_per_ip,
            p.smtp_in.max_session,
            p.smtp_in.max_unproductive_commands
        ),
        (2, std::time::Duration::from_secs(60), 5)
    );

    // 25 MiB messages arrive as ~33 MiB of base64: a 10 MB budget could never take one.
    let e = errors("[server]\nmax_request_bytes_in_flight = 10000000\n");
    assert!(
        e.starts_with(
            "p.toml:2:31: key `server.max_request_bytes_in_flight`: 10000000 bytes is less than \
             the largest request body the API takes (35018069 bytes"
        ),
        "{e}"
    );
}

#[test]
fn admission_has_defaults_overrides_inherit_them_and_zero_is_refused_where_written() {
    let p = Pipeline::parse("", "p.toml").unwrap();
    let builtin = TenantAdmission {
        max_requests_in_flight: 32,
        accepts_per_sec: 200,
        accept_burst: 400,
        max_hold_ms: 1000,
        max_held_requests: 32,
    };
    assert_eq!(p.admission.default, builtin);
    assert!(p.admission.tenants.is_empty());
    let p = Pipeline::parse(
        "[admission]\naccepts_per_sec = 50\nmax_hold_ms = 0\n[admission.tenant.bulk]\naccept_burst = 5000\n\
         max_held_requests = 4\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.admission.default.accepts_per_sec, 50);
    assert_eq!(
        p.admission.tenants["bulk"],
        TenantAdmission {
            max_requests_in_flight: 32,
            accepts_per_sec: 50,
            accept_burst: 5000,
            max_hold_ms: 0,
            max_held_requests: 4,
        }
    );
    let e = errors("[admission]\nmax_hold_ms = 60001\n");
    assert!(
        e.contains("key `admission.max_hold_ms`: must be between 0 and 60000"),
        "{e}"
    );
    let e = errors("[admission]\nmax_requests_in_flight = 0\n");
    assert!(
        e.starts_with(
            "p.toml:2:26: key `admission.max_requests_in_flight`: must be between 1 and 1000000"
        ),
        "{e}"
    );
    let e = errors("[admission.tenant.bulk]\naccepts_per_sec = 0\n");
    assert!(
        e.contains("key `admission.tenant.bulk.accepts_per_sec`: must be between 1"),
        "{e}"
    );
    let e = errors("[admission.tenant.Bulk]\naccept_burst = 1\n");
    assert!(e.contains("\"Bulk\" is not a tenant id"), "{e}");
    let e = errors("[admission]\nrate = 1\n");
    assert!(e.contains("rate"), "{e}");
}

#[test]
fn node_keys_have_defaults_and_bad_ids_or_intervals_are_refused_where_written() {
    let p = Pipeline::parse("", "p.toml").unwrap();
    assert_eq!(p.server.node_id, None);
    assert_eq!(p.server.heartbeat, std::time::Duration::from_secs(1));
    assert_eq!(p.server.dead_after_heartbeats, 5);
    let p = Pipeline::parse(
        "[server]\nnode_suffix = \"b-2\"\nheartbeat_ms = 500\ndead_after_heartbeats = 4\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.server.node_suffix.as_deref(), Some("b-2"));
    assert_eq!(p.server.heartbeat, std::time::Duration::from_millis(500));
    // A node id goes into leases, logs and a file name beside the store.
    let e = errors("[server]\nnode_id = \"../x\"\n");
    assert!(e.starts_with("p.toml:2:11: key `server.node_id`:"), "{e}");
    let e = errors(&format!("[server]\nnode_suffix = \"{}\"\n", "s".repeat(17)));
    assert!(e.contains("key `server.node_suffix`"), "{e}");
    let e = errors("[server]\nheartbeat_ms = 50\ndead_after_heartbeats = 1\n");
    assert!(
        e.contains("key `server.heartbeat_ms`: 50 must be between 100 and 10000"),
        "{e}"
    );
    assert!(
        e.contains("key `server.dead_after_heartbeats`: 1 must be between 3 and 60"),
        "{e}"
    );
}

#[test]
fn a_tls_ca_file_needs_a_tls_relay_and_a_usable_file() {
    let e = errors(
        "[[relay]]\nid = \"a\"\nurl = \"smtp://127.0.0.1:25\"\ntls_ca_file = \"/etc/hostname\"\n",
    );
    assert!(
        e.starts_with(
            "p.toml:4:15: key `relay[0].tls_ca_file`: tls_ca_file needs a relay URL with TLS"
        ),
        "{e}"
    );
    // The file itself is read by `resolve`.
    let p = Pipeline::parse(
        "[[relay]]\nid = \"a\"\nurl = \"smtps://127.0.0.1\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
        "p.toml",
    )
    .unwrap();
    let e = resolve(&p).errors.join("\n");
    assert!(
        e.contains("relay[0].tls_ca_file: tls_ca_file /nonexistent/ca.pem: cannot be read"),
        "{e}"
    );
}

#[test]
fn validation_reads_nothing_and_resolve_reads_everything_the_file_names() {
    // Every outside reference missing: validation (the file alone) passes it...
    let text = "[admin]\ntoken_env = \"SLUICE_UNIT_TEST_UNSET\"\n\
         [delivery]\nverp_key_file = \"/nonexistent/verp\"\n\
         [plugins.route]\nfile = \"/nonexistent/route.wasm\"\n\
         [[relay]]\nid = \"r\"\nurl = \"smtps://127.0.0.1\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n\
         auth_password_env = \"SLUICE_UNIT_TEST_UNSET\"\n\
         [[log_source]]\nid = \"mx\"\npath = \"/nonexistent/mail.log\"\nformat = \"postfix\"\n\
         logins = \"/nonexistent/logins.toml\"\n";
    let p = Pipeline::parse(text, "p.toml").unwrap();
    // ...and resolving names each one, by key, all at once; the relay's password only
    // warns (it is read again at use).
    let r = resolve(&p);
    let keys: Vec<&str> = r
        .errors
        .iter()
        .map(|e| e.split(':').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "admin.token",
            "delivery.verp_key",
            "relay[0].tls_ca_file",
            "log_source[0].logins",
            "plugins.route"
        ],
        "{:?}",
        r.errors
    );
    assert!(
        r.errors[0].contains("SLUICE_UNIT_TEST_UNSET"),
        "{:?}",
        r.errors
    );
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].starts_with("relay[0].auth_password"),
        "{:?}",
        r.warnings
    );
    // The stages whose plugins could be read are read: the four default ones.
    assert_eq!(r.plugins.len(), 4);
}

#[test]
fn tenant_threads_and_their_nice_value_are_checked() {
    let e = errors("[plugins]\ntenant_threads = 0\ntenant_threads_nice = 20\n");
    assert!(
        e.contains("key `plugins.tenant_threads`: must be 1 to 256"),
        "{e}"
    );
    assert!(
        e.contains("key `plugins.tenant_threads_nice`: must be 0"),
        "{e}"
    );
    let p = Pipeline::parse(
        "[plugins]\ntenant_threads = 3\ntenant_threads_nice = 19\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(
        (p.plugins.tenant_threads, p.plugins.tenant_threads_nice),
        (3, 19)
    );
    let p = Pipeline::parse("", "p.toml").unwrap();
    assert_eq!(p.plugins.tenant_threads_nice, 10);
}

#[test]
fn events_have_defaults_and_refuse_zero() {
    use std::time::Duration;
    let p = Pipeline::parse("", "p.toml").unwrap();
    assert_eq!(p.events.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(p.events.poll, Duration::from_millis(200));
    assert_eq!(p.events.heartbeat, Duration::from_secs(15));
    assert_eq!(p.events.max_streams_per_tenant, 64);
    assert_eq!(p.events.max_streams, 20_000);
    let p = Pipeline::parse(
        "[events]\nretention_days = 7\npoll_ms = 50\nheartbeat_secs = 1\nmax_streams_per_tenant = 2\nmax_streams = 3\n",
        "p.toml",
    )
    .unwrap();
    assert_eq!(p.events.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(p.events.poll, Duration::from_millis(50));
    assert_eq!(p.events.max_streams_per_tenant, 2);
    assert_eq!(p.events.max_streams, 3);
    let e = errors("[events]\nretention_days = 0\n");
    assert!(
        e.starts_with("p.toml:2:18: key `events.retention_days`: must be between 1 and 3650"),
        "{e}"
    );
    let e = errors("[events]\nwebhooks = 1\n");
    assert!(e.contains("webhooks"), "{e}");
}

#[test]
fn webhooks_have_defaults_and_bounds() {
    use std::time::Duration;
    let w = Pipeline::parse("", "p.toml").unwrap().webhooks;
    assert_eq!(w.batch_size, 1);
    assert_eq!(w.first_retry, Duration::from_secs(2));
    assert_eq!(w.max_retry, Duration::from_secs(600));
    assert_eq!(w.retry_window, Duration::from_secs(86_400));
    assert_eq!(w.max_response_bytes, 65_536);
    assert!(!w.allow_private);
    assert_eq!(
        (
            w.max_per_tenant,
            w.max_concurrent,
            w.max_concurrent_per_tenant
        ),
        (20, 64, 4)
    );
    assert_eq!(w.max_in_flight, 16);
    let w = Pipeline::parse(
        "[webhooks]\nbatch_size = 50\nallow_private = true\nretry_window_secs = 3\n",
        "p.toml",
    )
    .unwrap()
    .webhooks;
    assert_eq!((w.batch_size, w.allow_private), (50, true));
    assert_eq!(w.retry_window, Duration::from_secs(3));
    let e = errors("[webhooks]\nbatch_size = 0\n");
    assert!(
        e.starts_with("p.toml:2:14: key `webhooks.batch_size`: must be between 1 and 1000"),
        "{e}"
    );
    let e = errors("[webhooks]\nmax_in_flight = 257\n");
    assert!(
        e.starts_with("p.toml:2:17: key `webhooks.max_in_flight`: must be between 1 and 256"),
        "{e}"
    );
    let e = errors("[webhooks]\nmax_in_flight = 0\n");
    assert!(e.contains("webhooks.max_in_flight"), "{e}");
    let e = errors("[webhooks]\nfollow_redirects = true\n");
    assert!(e.contains("follow_redirects"), "{e}");
}

#[test]
fn submission_is_off_by_default_needs_a_certificate_and_checks_its_networks() {
    let p = Pipeline::parse("", "p.toml").unwrap();
    assert!(!p.submission.enabled());
    assert!(p.submission.trusted_networks.is_empty());
    assert_eq!(p.submission.max_auth_failures_per_ip, 5);

    let e = errors("[submission]\nlisten = [\"127.0.0.1:587\"]\n");
    assert!(
        e.contains("key `submission.tls_cert_file`: submission takes AUTH only over TLS"),
        "{e}"
    );
    // The files are read by the resolve step (pure validation reads nothing).
    let p = Pipeline::parse(
        "[submission]\nlisten_tls = [\"127.0.0.1:465\"]\ntls_cert_file = \"/nonexistent/c.pem\"\n\
         tls_key_file = \"/nonexistent/k.pem\"\n",
        "p.toml",
    )
    .unwrap();
    let e = resolve(&p).errors.join("\n");
    assert!(
        e.contains("submission.tls_cert_file: tls_cert_file /nonexistent/c.pem: cannot be read"),
        "{e}"
    );
    let e = errors(
        "[submission]\nlisten = [\"nowhere\"]\nmax_auth_failures_per_ip = 0\n\
         [submission.trusted_networks]\nshop = [\"10.0.0.0/33\"]\n",
    );
    assert!(e.contains("key `submission.listen`"), "{e}");
    assert!(
        e.contains("key `submission.max_auth_failures_per_ip`: must be between 1"),
        "{e}"
    );
    assert!(e.contains("key `submission.trusted_networks.shop`"), "{e}");
}
