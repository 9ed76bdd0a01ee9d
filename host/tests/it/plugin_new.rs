//! `sluice plugin new` writes crates that build for wasm32-wasip2, pass their own unit
//! tests and `sluice plugin check`; `sluice plugin upload` puts one live on a running
//! server.
//!
//! The crates are written by a copy of the binary alone in an empty directory: they carry
//! the SDK (`vendor/sluice-sdk`) and the lock file, and need nothing of the source tree.
//! They build into one directory under the shared target dir, so after the first run
//! only the generated crate and its copy of the SDK are compiled.

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

/// The `sluice` binary copied alone into an empty directory, as a tenant has it.
fn lone_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("bin/sluice");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_sluice"), &bin).unwrap();
    bin
}

/// Every file under `dir`, with its text (lossy), skipping build output.
fn texts(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.ends_with("target") {
            continue;
        }
        if path.is_dir() {
            texts(&path, out);
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            out.push((path, text));
        }
    }
}

#[test]
fn generated_crates_build_pass_their_tests_and_the_check() {
    // Only the binary, in a directory of its own; the crates are written and built
    // there, and nothing in them may point back into the source tree.
    let tmp = tempfile::tempdir().unwrap();
    let bin = lone_binary(tmp.path());
    let sources = workspace().canonicalize().unwrap();
    let lone = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .current_dir(tmp.path())
            .output()
            .expect("sluice runs")
    };
    for stage in ["route", "bill", "ingest", "bounce", "send"] {
        let name = format!("tenant-{stage}");
        let out = lone(&["plugin", "new", "--stage", stage, &name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = tmp.path().join(&name);
        let cargo_toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(cargo_toml.contains(r#"crate-type = ["cdylib", "rlib"]"#));
        assert!(cargo_toml.contains("opt-level = \"s\""));
        assert!(
            cargo_toml.contains(r#"sluice-sdk = { path = "vendor/sluice-sdk" }"#),
            "{cargo_toml}"
        );
        let mut files = Vec::new();
        texts(&root, &mut files);
        for (path, text) in &files {
            assert!(
                !text.contains(sources.to_str().unwrap()),
                "{} names the source tree {}",
                path.display(),
                sources.display()
            );
        }
        for file in [
            "vendor/sluice-sdk/wit/stages.wit",
            "vendor/sluice-sdk/src/lib.rs",
            "Cargo.lock",
        ] {
            assert!(root.join(file).is_file(), "{file} was not written");
        }
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(readme.contains(&format!("sluice plugin upload --stage {stage}")));

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
        let out = lone(&["plugin", "check", "--stage", stage, wasm.to_str().unwrap()]);
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
