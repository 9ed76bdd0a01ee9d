//! Sockets handed to `sluice serve` as systemd's socket activation does (`LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, descriptors from 3): the handed socket is served in
//! place of the pipeline's address, and what is wrong with the hand-over stops the start
//! with the variable or descriptor named. Every other test starts its servers this way
//! (`support::Setup`), so its ports are never given up between choosing and binding.

use crate::support::{PipelineParts, Setup, handing_over_with, http, wait_for_within};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

/// A pipeline whose `http_listen` is a port another socket already holds: binding it would
/// fail, so a server that answers is serving the socket it was handed.
fn setup_with_a_taken_address() -> (Setup, TcpListener) {
    let setup = Setup::new(PipelineParts::default());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let text = std::fs::read_to_string(&setup.pipeline).unwrap();
    let text = text.replace(
        &format!("http_listen = \"127.0.0.1:{}\"", setup.http_port),
        &format!("http_listen = \"{}\"", taken.local_addr().unwrap()),
    );
    std::fs::write(&setup.pipeline, text).unwrap();
    (setup, taken)
}

#[test]
fn a_handed_socket_is_served_in_place_of_the_pipelines_address() {
    let (setup, _taken) = setup_with_a_taken_address();
    let sluice = setup.start();
    let r = http(sluice.addr, "GET", "/healthz", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        sluice
            .log()
            .contains(&format!("HTTP API on http://{}", sluice.addr)),
        "{}",
        sluice.log()
    );
}

/// Starts `sluice serve` on `setup` with descriptor 3 as `fd3` and these variables beside
/// `LISTEN_PID`; waits for it to exit and returns its status and output.
fn start_with(setup: &Setup, fd3: &impl std::os::fd::AsRawFd, vars: &str) -> (Option<i32>, String) {
    let mut child = handing_over_with(fd3, vars)
        .args(["serve", "--pipeline"])
        .arg(&setup.pipeline)
        .env("SLUICE_E2E_ADMIN_TOKEN", "adm-listeners")
        .current_dir(setup.root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop by itself; a server that started instead is killed when the wait ends.
    let status = wait_for_within(Duration::from_secs(60), "sluice serve to exit", || {
        child
            .try_wait()
            .unwrap()
            .ok_or_else(|| "still running".to_owned())
    });
    let mut text = String::new();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        pipe.read_to_string(&mut text).unwrap();
    }
    (status.code(), text)
}

#[test]
fn a_wrong_hand_over_stops_the_start_and_names_what_is_wrong() {
    let (setup, _taken) = setup_with_a_taken_address();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, out) = start_with(&setup, &listener, "LISTEN_FDS=1 LISTEN_FDNAMES=ftp");
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("descriptor 3 is named \"ftp\"") && out.contains("LISTEN_FDS"),
        "{out}"
    );
    // A connected socket is not a listening one.
    let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (code, out) = start_with(&setup, &stream, "LISTEN_FDS=1 LISTEN_FDNAMES=http");
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("descriptor 3 (LISTEN_FDNAMES \"http\") is not a listening TCP socket"),
        "{out}"
    );
    let (code, out) = start_with(&setup, &listener, "LISTEN_FDS=lots");
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("LISTEN_FDS=\"lots\" is not a number"), "{out}");
}

#[test]
fn variables_meant_for_another_process_are_ignored() {
    // LISTEN_PID names the shell's parent, not sluice: the socket is not taken, so the
    // pipeline's address (held by another socket) is bound, and that fails, naming it.
    let (setup, taken) = setup_with_a_taken_address();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let (code, out) = start_with(
        &setup,
        &listener,
        &format!(
            "LISTEN_FDS=1 LISTEN_FDNAMES=http LISTEN_PID={}",
            std::process::id()
        ),
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("cannot listen on {}", taken.local_addr().unwrap())),
        "{out}"
    );
}
