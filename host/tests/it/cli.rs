//! The `sluice plugin` commands as a user runs them: exit codes, one-line
//! summaries, clear errors, and hostile plugins stopped within their limits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk/json")
}

/// The hostile test guest written to a temporary file, as a tenant would have it.
fn hostile_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-hostile-{}.wasm", std::process::id()));
    std::fs::write(&path, sluice::builtin::test_guests::HOSTILE).unwrap();
    path
}

#[test]
fn check_accepts_every_default_plugin_with_a_one_line_summary() {
    for (stage, name) in [
        ("ingest", "ingest-allowlist"),
        ("route", "router-weighted"),
        ("send", "send-backoff"),
        ("bounce", "bounce-dsn"),
        ("bill", "rater-tiered"),
    ] {
        let out = sluice(&["plugin", "check", "--stage", stage, "--builtin", name]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}: {stderr}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(
            stdout.starts_with(&format!("ok: {name} serves stage {stage} (")),
            "{stdout}"
        );
    }
}

#[test]
fn check_refuses_the_wrong_world_naming_the_missing_export() {
    let out = sluice(&[
        "plugin",
        "check",
        "--stage",
        "route",
        "--builtin",
        "rater-tiered",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("does not export `sluice:plugin/router@0.1.0`"),
        "{stderr}"
    );
}

#[test]
fn run_prints_the_decision_as_json_for_every_documented_input() {
    for (stage, name) in [
        ("ingest", "ingest-allowlist"),
        ("route", "router-weighted"),
        ("send", "send-backoff"),
        ("bounce", "bounce-dsn"),
        ("bill", "rater-tiered"),
    ] {
        let input = json_dir().join(format!("{stage}.json"));
        let out = sluice(&[
            "plugin",
            "run",
            "--stage",
            stage,
            "--builtin",
            name,
            "--input",
            input.to_str().unwrap(),
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stage}: {stderr}");
        let _: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{stage}: {e}: {stdout}"));
    }
    let out = sluice(&[
        "plugin",
        "run",
        "--stage",
        "send",
        "--builtin",
        "send-backoff",
        "--sample",
    ]);
    assert!(text(&out).0.contains("\"retry\""), "{:?}", text(&out));
}

#[test]
fn a_looping_plugin_ends_with_a_clear_error_within_its_deadline() {
    let file = hostile_file();
    let started = Instant::now();
    let out = sluice(&[
        "plugin",
        "run",
        "--stage",
        "route",
        file.to_str().unwrap(),
        "--sample",
        "--config",
        "mode=loop",
        "--timeout-ms",
        "200",
    ]);
    let took = started.elapsed();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("plugin ran past its deadline of 200ms"),
        "{stderr}"
    );
    // Process start and compilation included; the call itself stops at 200 ms.
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn a_memory_hungry_plugin_ends_with_a_clear_error() {
    let file = hostile_file();
    let out = sluice(&[
        "plugin",
        "run",
        "--stage",
        "route",
        file.to_str().unwrap(),
        "--sample",
        "--config",
        "mode=bomb",
        "--memory-mib",
        "16",
        // A long deadline: on a loaded machine the memory limit, not the clock, must
        // be what stops the bomb.
        "--timeout-ms",
        "5000",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("plugin exceeded its memory limit of 16777216 bytes"),
        "{stderr}"
    );
}

#[test]
fn malformed_input_json_names_the_place() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\n  \"message\": {\"id\": \"m\", \"tenant\": \"t\", \"sender\": \"s\"},\n  \"relays\": 7\n}\n").unwrap();
    let out = sluice(&[
        "plugin",
        "run",
        "--stage",
        "route",
        "--builtin",
        "router-weighted",
        "--input",
        bad.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.json: not a valid route input at line 3"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid type: integer `7`"), "{stderr}");
}

#[test]
fn unknown_builtin_lists_the_known_ones() {
    let out = sluice(&[
        "plugin",
        "check",
        "--stage",
        "route",
        "--builtin",
        "router-fancy",
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("no default plugin called \"router-fancy\" (there are: "),
        "{stderr}"
    );
    assert!(stderr.contains("router-weighted"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let path = std::env::temp_dir().join(format!("sluice-not-wasm-{}.wasm", std::process::id()));
    std::fs::write(&path, "hello").unwrap();
    let out = sluice(&[
        "plugin",
        "check",
        "--stage",
        "route",
        path.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("not a WebAssembly component"), "{stderr}");
}
