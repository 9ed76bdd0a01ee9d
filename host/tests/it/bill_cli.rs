//! `sluice bill` as an operator runs it: real logs, logins, tariffs, totals
//! to the micro-unit, and clear errors with exit code 2 for bad inputs.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/maillogs")
        .join(p)
        .display()
        .to_string()
}

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice runs")
}

/// A fresh directory with the given files.
fn dir_with(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-bill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (f, text) in files {
        std::fs::write(dir.join(f), text).unwrap();
    }
    dir
}

const LOGINS: &str = r#"
[tenant.tenant-a]
logins = ["tenant-a.example"]

[tenant.tenant-b]
logins = ["news@tenant-b.example"]
"#;

const TARIFFS: &str = r#"
[tenant.tenant-a]
inline = '''
id = "a"
currency = "EUR"
minor_units = 2
[[service]]
name = "outbound-message"
unit = "message"
direction = "outbound"
mode = "graduated"
tier = [{ up_to = 1, price = "0.01" }, { price = "0.005" }]
[[service]]
name = "outbound-traffic"
unit = "kib"
direction = "outbound"
price = "0.0000125"
[[service]]
name = "inbound-message"
unit = "message"
direction = "inbound"
price = "0.002"
'''

[tenant.tenant-b]
file = "b.toml"
"#;

const TARIFF_B: &str = r#"
id = "b"
currency = "USD"
minor_units = 2
[[service]]
name = "outbound-message"
unit = "message"
direction = "outbound"
mode = "volume"
tier = [{ up_to = 10, price = "0.25" }, { price = "0.1" }]
[[service]]
name = "outbound-traffic"
unit = "mib"
direction = "outbound"
price = "1.5"
"#;

fn setup(name: &str) -> PathBuf {
    dir_with(
        name,
        &[
            ("logins.toml", LOGINS),
            ("tariffs.toml", TARIFFS),
            ("b.toml", TARIFF_B),
        ],
    )
}

fn service(t: &Value, name: &str) -> (u64, i64) {
    let s = t["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no service {name} in {t}"));
    (
        s["quantity"].as_u64().unwrap(),
        s["amount_micros"].as_i64().unwrap(),
    )
}

#[test]
fn bills_two_logs_to_the_micro_unit() {
    let dir = setup("e2e");
    let (logins, tariffs) = (dir.join("logins.toml"), dir.join("tariffs.toml"));
    let out = sluice(&[
        "bill",
        "--format",
        "qmail",
        "--host",
        "saracen",
        "--logins",
        logins.to_str().unwrap(),
        "--tariffs",
        tariffs.to_str().unwrap(),
        &data("qmail/synthetic/edgecases.plain.log"),
        &data("qmail/synthetic/stale-and-reuse.plain.log"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "no progress bar when piped: {stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &v["tenants"][0];
    let b = &v["tenants"][1];
    assert_eq!(a["tenant"], "tenant-a");
    // Outbound: 2846 B and 777 B in May 2007, 3000 B in Nov 2023 (a new
    // period: the graduated tier starts again). Inbound: one bounce to it.
    assert_eq!(
        (
            a["transfers"].as_u64(),
            a["outbound"].as_u64(),
            a["inbound"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(a["bytes"], 2846 + 3512 + 777 + 3000);
    assert_eq!(service(a, "outbound-message"), (3, 10_000 + 5_000 + 10_000));
    // 3, 1 and 3 KiB at 12.5 micros, each rounded half away from zero: 38 + 13 + 38
    assert_eq!(service(a, "outbound-traffic"), (7, 89));
    assert_eq!(service(a, "inbound-message"), (1, 2_000));
    assert_eq!(a["total_micros"], 27_089);
    assert_eq!(a["total"], "0.03");
    assert_eq!(a["currency"], "EUR");

    assert_eq!(b["tenant"], "tenant-b");
    assert_eq!(b["currency"], "USD");
    assert_eq!(service(b, "outbound-message"), (1, 250_000));
    assert_eq!(service(b, "outbound-traffic"), (1, 1_500_000));
    assert_eq!(b["total_micros"], 1_750_000);
    assert_eq!(b["total"], "1.75");

    // b@tenant-b.example → r2@remote and <> → r3@remote match no login
    assert_eq!(v["unmatched_transfers"], 2);
    assert_eq!(v["log"]["unparseable"], 2);
    let places = v["unparseable_lines"].as_array().unwrap();
    assert_eq!(places.len(), 2);
    assert!(
        places[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("stale-and-reuse.plain.log")
    );
    assert_eq!(places[0]["line"], 21);
}

#[test]
fn csv_output_from_stdin() {
    let dir = setup("csv");
    let (logins, tariffs) = (dir.join("logins.toml"), dir.join("tariffs.toml"));
    let log = std::fs::read(data("qmail/synthetic/edgecases.plain.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["bill", "--format", "qmail", "--output", "csv", "--logins"])
        .args([&logins, Path::new("--tariffs"), &tariffs, Path::new("-")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&log).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.starts_with("tenant,currency,service,quantity,amount,amount_micros,transfers,bytes\n"),
        "{csv}"
    );
    assert!(
        csv.contains("tenant-a,EUR,outbound-message,2,0.02,15000,,\n"),
        "{csv}"
    );
    assert!(
        csv.contains("tenant-a,EUR,total,,0.02,17051,3,7135\n"),
        "{csv}"
    );
    assert!(
        csv.contains("tenant-b,USD,total,,1.75,1750000,1,10240\n"),
        "{csv}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 unparseable"));
}

fn expect_usage_error(args: &[&str], needles: &[&str]) {
    let out = sluice(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "missing {n:?} in: {stderr}");
    }
}

#[test]
fn bad_inputs_exit_2_naming_file_line_and_key() {
    let dir = setup("errors");
    let log = data("qmail/synthetic/edgecases.plain.log");
    let t = dir.join("tariffs.toml");
    let tariffs = t.to_str().unwrap();

    let bad = dir_with(
        "bad-logins",
        &[(
            "l.toml",
            "[tenant.x]\nlogins = [\"x.example\"]\ncolour = \"red\"\n",
        )],
    );
    let l = bad.join("l.toml");
    expect_usage_error(
        &[
            "bill",
            "--format",
            "qmail",
            "--logins",
            l.to_str().unwrap(),
            "--tariffs",
            tariffs,
            &log,
        ],
        &["l.toml", "line 3", "colour"],
    );

    let broken = dir_with("broken-toml", &[("l.toml", "[tenant.x\nlogins = 1\n")]);
    let l = broken.join("l.toml");
    expect_usage_error(
        &[
            "bill",
            "--format",
            "qmail",
            "--logins",
            l.to_str().unwrap(),
            "--tariffs",
            tariffs,
            &log,
        ],
        &["l.toml", "line 1"],
    );

    let logins = dir.join("logins.toml");
    let logins = logins.to_str().unwrap();
    expect_usage_error(
        &[
            "bill",
            "--format",
            "qmail",
            "--logins",
            logins,
            "--tariffs",
            tariffs,
            "/nonexistent/mail.log",
        ],
        &["/nonexistent/mail.log"],
    );
    expect_usage_error(
        &[
            "bill",
            "--format",
            "qmail",
            "--logins",
            "/nonexistent/logins.toml",
            "--tariffs",
            tariffs,
            &log,
        ],
        &["/nonexistent/logins.toml"],
    );

    // a tariff the rater refuses, and a tenant without a tariff
    let d = dir_with(
        "bad-tariff",
        &[
            ("logins.toml", LOGINS),
            (
                "t.toml",
                "[tenant.tenant-a]\ninline = \"id = 'a'\\ncurrency = 'EUR'\\ncolour = 1\\n\"\n",
            ),
        ],
    );
    let (l, t) = (d.join("logins.toml"), d.join("t.toml"));
    expect_usage_error(
        &[
            "bill",
            "--format",
            "qmail",
            "--logins",
            l.to_str().unwrap(),
            "--tariffs",
            t.to_str().unwrap(),
            &log,
        ],
        &["no tariff for tenant \"tenant-b\""],
    );
    std::fs::write(
        &t,
        "[default]\ninline = \"id = 'a'\\ncurrency = 'EUR'\\ncolour = 1\\n\"\n",
    )
    .unwrap();
    expect_usage_error(
        &[
            "bill",
            "--format",
            "qmail",
            "--logins",
            l.to_str().unwrap(),
            "--tariffs",
            t.to_str().unwrap(),
            &log,
        ],
        &["tenant-a", "default.inline", "colour"],
    );
    std::fs::write(&t, "[tenant.nobody]\nfile = \"x.toml\"\n").unwrap();
    expect_usage_error(
        &[
            "bill",
            "--format",
            "qmail",
            "--logins",
            l.to_str().unwrap(),
            "--tariffs",
            t.to_str().unwrap(),
            &log,
        ],
        &["t.toml", "line 1", "tenant.nobody"],
    );
}

#[test]
fn the_documented_examples_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/billing");
    let out = sluice(&[
        "bill",
        "--format",
        "postfix",
        "--logins",
        root.join("logins.example.toml").to_str().unwrap(),
        "--tariffs",
        root.join("tariffs.example.toml").to_str().unwrap(),
        &data("postfix/pixelpark-helga-2023-03-14_16.mail.log.gz"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["log"]["transfers"], 180);
    assert_eq!(v["unmatched_transfers"], 180);
    assert_eq!(v["tenants"][1]["currency"], "USD");
}
