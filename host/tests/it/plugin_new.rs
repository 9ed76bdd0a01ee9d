//! `sluice plugin new` writes crates that build for wasm32-wasip2, pass their own unit
//! tests and `sluice plugin check`; `sluice plugin upload` puts one live on a running
//! server.
//!
//! The generated crates build into one directory under the shared target dir, with the
//! workspace's `Cargo.lock`, so after the first run only the generated crate itself is
//! compiled.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .expect("sluice runs")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Shared by every run so that the SDK and its dependencies are compiled once.
fn build_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("plugin-new-test")
}

fn cargo(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(dir)
        .args(args)
        .arg("--offline")
        .arg("--target-dir")
        .arg(build_dir())
        // The outer test build's flags are not for this crate.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn generated_crates_build_pass_their_tests_and_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    for stage in ["route", "bill", "ingest", "bounce", "send"] {
        let name = format!("tenant-{stage}");
        let out = sluice(&["plugin", "new", "--stage", stage, "--dir", dir, &name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = tmp.path().join(&name);
        let cargo_toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(cargo_toml.contains(r#"crate-type = ["cdylib", "rlib"]"#));
        assert!(cargo_toml.contains("opt-level = \"s\""));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(readme.contains(&format!("sluice plugin upload --stage {stage}")));
        std::fs::copy(workspace().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();

        cargo(&root, &["build", "--release", "--target", "wasm32-wasip2"]);
        let tests = cargo(&root, &["test", "--lib"]);
        assert!(
            String::from_utf8_lossy(&tests.stdout).contains("test result: ok. 1 passed"),
            "{}",
            String::from_utf8_lossy(&tests.stdout)
        );
        let wasm = build_dir()
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let out = sluice(&["plugin", "check", "--stage", stage, wasm.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{stage}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn new_refuses_bad_names_and_existing_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = sluice(&[
        "plugin",
        "new",
        "--stage",
        "route",
        "--dir",
        dir,
        "My Router",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"My Router\""));
    assert!(
        sluice(&["plugin", "new", "--stage", "route", "--dir", dir, "x"])
            .status
            .success()
    );
    let out = sluice(&["plugin", "new", "--stage", "route", "--dir", dir, "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}
