//! Helpers for the end-to-end tests: real `sluice serve` processes, real
//! Postfix `smtp-sink` relays on loopback, a tiny blocking HTTP client, and
//! bounded polls that say what they waited for and what they saw.
//!
//! Every child process is owned by a guard that kills it on drop, so a
//! failing test leaves nothing running. Ports come from binding port 0.

#![allow(dead_code)] // helpers kept for the tests that come and go; not all are in use at once

pub mod raw_smtp;
pub mod tls;

use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any wait lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);
/// How long `sluice serve` may take to start answering.
pub const STARTUP: Duration = Duration::from_secs(90);
/// The environment variable the pipelines name for the admin token.
const ADMIN_ENV: &str = "SLUICE_E2E_ADMIN_TOKEN";

// ---- processes ----

/// A child process killed (SIGKILL) and reaped on drop.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn adopt(child: Child, name: impl Into<String>) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            name: name.into(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. "TERM") to this child only, by pid.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not send SIG{signal} to {} (pid {pid})",
            self.name
        );
    }

    /// Waits (bounded) for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        let child = self
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{} was already stopped", self.name));
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{} (pid {}) did not exit within {timeout:?}",
                self.name,
                child.id()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port: bound to port 0 and released. Ports handed out
/// in this process are never handed out again, so parallel tests do not
/// collide with one another.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Ok`, for at most `WAIT`.
/// `check` returns `Err(what it saw)`; on time-out the test fails saying
/// what was expected and the last thing seen.
pub fn wait_for<T>(expected: &str, check: impl FnMut() -> Result<T, String>) -> T {
    wait_for_within(WAIT, expected, check)
}

/// [`wait_for`] with its own bound.
pub fn wait_for_within<T>(
    limit: Duration,
    expected: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) => {
                if started.elapsed() > limit {
                    panic!("timed out after {limit:?} waiting for {expected}\nlast seen:\n{seen}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_port(port: u16, what: &str, log: &Path) {
    wait_for(&format!("{what} to listen on 127.0.0.1:{port}"), || {
        TcpStream::connect(("127.0.0.1", port))
            .map(drop)
            .map_err(|e| format!("connect: {e}\n{}", tail(log)))
    });
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    format!(
        "--- {} (last {} lines) ---\n{}",
        path.display(),
        lines.len() - from,
        lines[from..].join("\n")
    )
}

// ---- smtp-sink ----

fn smtp_sink_path() -> PathBuf {
    ["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("smtp-sink (Postfix) is not installed: install postfix (see .ci/run)")
        })
}

/// A Postfix `smtp-sink` on 127.0.0.1 that keeps every message it accepts
/// as one file in its directory (`-d DIR/%M.`).
pub struct Sink {
    guard: ChildGuard,
    pub port: u16,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Sink {
    /// Starts a sink on `port`; messages go to `root/sink-PORT/` (shared by
    /// sinks started later on the same port). `opts` are extra smtp-sink
    /// options, e.g. `["-r", "rcpt"]` (4xx on RCPT) or `["-w", "1"]`.
    pub fn start(root: &Path, port: u16, opts: &[&str]) -> Sink {
        let dir = root.join(format!("sink-{port}"));
        std::fs::create_dir_all(&dir).expect("sink dir");
        // smtp-sink runs as nobody (-u nobody) and must write there.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod sink dir");
        let log = root.join(format!("sink-{port}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("sink log");
        let mut cmd = Command::new(smtp_sink_path());
        cmd.args(["-u", "nobody", "-c", "-m", "512", "-d"])
            .arg(format!("{}/%M.", dir.display()))
            .args(opts)
            .arg(format!("127.0.0.1:{port}"))
            .arg("512")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start smtp-sink: {e}: install postfix (see .ci/run)")
        });
        let guard = ChildGuard::adopt(child, format!("smtp-sink on {port}"));
        wait_port(port, "smtp-sink", &log);
        Sink {
            guard,
            port,
            dir,
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops this sink (its kept messages stay).
    pub fn stop(mut self) {
        self.guard.kill();
    }

    /// Every message kept so far, as text (smtp-sink's `X-…-Args` lines,
    /// its `Received:` line, then the message as received).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .expect("read sink dir")
            .flatten()
        {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        out
    }

    /// The kept messages whose `Subject:` is `subject`.
    pub fn with_subject(&self, subject: &str) -> Vec<String> {
        self.messages()
            .into_iter()
            .filter(|m| header(m, "subject").as_deref() == Some(subject))
            .collect()
    }

    /// The distinct subjects kept so far.
    pub fn subjects(&self) -> HashSet<String> {
        self.messages()
            .iter()
            .filter_map(|m| header(m, "subject"))
            .collect()
    }

    pub fn log(&self) -> String {
        tail(&self.log)
    }
}

/// The value of the first header `name` (case-insensitive) of a message;
/// folded lines are joined.
pub fn header(message: &str, name: &str) -> Option<String> {
    headers(message)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The header fields of a message, in order, unfolded.
pub fn headers(message: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in message.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

// ---- HTTP ----

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // The server may answer (413, say) before reading a large body, and close: its answer
    // is what counts, the failed write only when there is none.
    let wrote = s.write_all(body);
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    match parse_response(&raw) {
        Some(r) => Ok(r),
        None => {
            wrote?;
            read?;
            Err(std::io::Error::other(format!("bad HTTP response: {raw:?}")))
        }
    }
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..nl]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---- sluice ----

/// A pipeline file in its own temporary directory, with a store, an
/// HTTP port and an admin token of its own.
pub struct Setup {
    pub dir: tempfile::TempDir,
    /// The HTTP socket, bound here and handed to every `sluice serve` started from this
    /// setup (`socket_activation`): the port is this setup's from first to last, across
    /// restarts, and no other process can take it in between.
    http: TcpListener,
    pub http_port: u16,
    pub admin_token: String,
    pub pipeline: PathBuf,
}

/// The parts of a pipeline a test chooses.
#[derive(Default)]
pub struct PipelineParts<'a> {
    /// Lines under `[delivery]` (besides `lease_secs = 5` and `smtp_timeout_secs = 5`,
    /// unless they set them).
    pub delivery: &'a str,
    /// Lines under `[server]` (besides `http_listen`).
    pub server: &'a str,
    /// Lines under `[limits]`.
    pub limits: &'a str,
    /// `[[relay]]` and `[[tenant]]` tables.
    pub tables: &'a str,
    /// The send plugin's `config` table; empty: retries after 1–2 s.
    pub send_config: &'a str,
}

impl Setup {
    pub fn new(parts: PipelineParts) -> Setup {
        Setup::custom(|p| {
            let http_port = p.http_port;
            format!(
                r#"[server]
http_listen = "127.0.0.1:{http_port}"
{server}

[store]
url = "sqlite://{db}"

[admin]
token_env = "{ADMIN_ENV}"

[limits]
{limits}

[delivery]
{lease}
{smtp_timeout}
{delivery}

# Debug builds on a 2-core machine shared with compilers: generous plugin
# deadlines, so that a slow call does not defer a message by a minute (these
# tests are about delivery; plugin deadlines have tests of their own).
[plugins.ingest]
timeout_ms = 1000

[plugins.route]
timeout_ms = 1000

[plugins.send]
builtin = "send-backoff"
timeout_ms = 1000
config = {send_config}

{tables}
"#,
                db = p.dir.join("s.db").display(),
                limits = parts.limits,
                server = parts.server,
                // Short leases: a killed process's work is taken over quickly.
                lease = if parts.delivery.contains("lease_secs") {
                    ""
                } else {
                    "lease_secs = 5"
                },
                smtp_timeout = if parts.delivery.contains("smtp_timeout_secs") {
                    ""
                } else {
                    "smtp_timeout_secs = 5"
                },
                delivery = parts.delivery,
                tables = parts.tables,
                // Retries within a test, not after a minute.
                send_config = if parts.send_config.is_empty() {
                    r#"{ base_secs = "1", max_delay_secs = "2" }"#
                } else {
                    parts.send_config
                },
            )
        })
    }

    /// A pipeline file of the test's own making, for tests whose pipeline is not
    /// [`Setup::new`]'s: `text` is given the HTTP port, directory and admin-token variable
    /// chosen for it and returns the whole file.
    pub fn custom(text: impl FnOnce(&CustomParts) -> String) -> Setup {
        // SLUICE_E2E_KEEP=1 keeps the directory (pipeline, store, logs, kept mail).
        let dir = tempfile::Builder::new()
            .prefix("sluice-e2e-")
            .disable_cleanup(std::env::var_os("SLUICE_E2E_KEEP").is_some())
            .tempdir()
            .expect("temp dir");
        let (http, http_port) = http_socket();
        let admin_token = format!("adm-e2e-{http_port}-{}", std::process::id());
        let text = text(&CustomParts {
            http_port,
            dir: dir.path(),
            admin_env: ADMIN_ENV,
        });
        let pipeline = dir.path().join("pipeline.toml");
        std::fs::write(&pipeline, text).expect("write pipeline");
        Setup {
            dir,
            http,
            http_port,
            admin_token,
            pipeline,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Points the pipeline at another store (`postgres://…`) instead of its SQLite file.
    pub fn use_store(&self, url: &str) {
        let text = std::fs::read_to_string(&self.pipeline).expect("read pipeline");
        let sqlite = text
            .lines()
            .find(|l| l.starts_with("url = \"sqlite://"))
            .expect("the pipeline's store line")
            .to_owned();
        std::fs::write(
            &self.pipeline,
            text.replace(&sqlite, &format!("url = \"{url}\"")),
        )
        .expect("write pipeline");
    }

    /// Starts `sluice serve` on this pipeline and waits until it answers.
    pub fn start(&self) -> Sluice {
        self.start_with_args(&[])
    }

    pub fn start_with_args(&self, extra: &[&str]) -> Sluice {
        self.start_with(extra, &[])
    }

    /// Starts `sluice serve` with `SLUICE_LOG` set to `filter` (e.g.
    /// `warn,sluice::serve::dispatch=debug`), for a test that counts what the server did.
    pub fn start_logging(&self, extra: &[&str], filter: &str) -> Sluice {
        self.start_with(extra, &[("SLUICE_LOG", filter)])
    }

    /// [`start_with_args`](Self::start_with_args) with environment variables of its own
    /// (set last: `SLUICE_LOG` here overrides the default `warn`).
    pub fn start_with(&self, extra: &[&str], env: &[(&str, &str)]) -> Sluice {
        // One log per start, so a restart's output is kept apart.
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.root().join(format!("sluice-{n}.log"));
        let out = std::fs::File::create(&log).expect("sluice log");
        let mut cmd = handing_over(&self.http);
        let child = cmd
            .arg("serve")
            .arg("--pipeline")
            .arg(&self.pipeline)
            .args(extra)
            .env(ADMIN_ENV, &self.admin_token)
            .env("SLUICE_LOG", "warn")
            .envs(env.iter().copied())
            .current_dir(self.root())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("start sluice serve");
        let mut guard = ChildGuard::adopt(child, "sluice serve");
        let addr: SocketAddr = ([127, 0, 0, 1], self.http_port).into();
        // Start-up compiles the five default plugins (seconds in a debug
        // build, more when parallel tests and compilers share the cores).
        wait_for_within(STARTUP, "sluice serve to answer GET /healthz", || {
            if !guard.is_running() {
                return Err(format!("sluice serve exited\n{}", tail(&log)));
            }
            match http(addr, "GET", "/healthz", &[], b"") {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}: {}", r.status, r.body)),
                Err(e) => Err(format!("{e}\n{}", tail(&log))),
            }
        });
        Sluice {
            guard,
            addr,
            admin_token: self.admin_token.clone(),
            log,
        }
    }
}

impl Setup {
    /// Runs `sluice serve` on this pipeline expecting it to refuse to start (with `env`
    /// set): its exit status and everything it printed.
    pub fn start_refused(&self, env: &[(&str, &str)]) -> (ExitStatus, String) {
        let log = self.root().join("refused.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = handing_over(&self.http)
            .arg("serve")
            .arg("--pipeline")
            .arg(&self.pipeline)
            .env(ADMIN_ENV, &self.admin_token)
            .env("SLUICE_LOG", "warn")
            .envs(env.iter().copied())
            .current_dir(self.root())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("start sluice serve");
        let mut guard = ChildGuard::adopt(child, "sluice serve (expected to refuse)");
        let status = guard.wait_exit(STARTUP);
        (status, std::fs::read_to_string(&log).unwrap_or_default())
    }
}

/// A loopback socket listening on a port of its own, and the port.
fn http_socket() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().expect("local address").port();
    (l, port)
}

/// A command that starts `sluice` with `http` handed over as systemd does: descriptor 3,
/// `LISTEN_FDS=1`, `LISTEN_FDNAMES=http` and `LISTEN_PID` the started process's own (a
/// shell that sets it to its pid, then `exec`s sluice in its place).
pub fn handing_over(http: &TcpListener) -> Command {
    handing_over_with(http, "LISTEN_FDS=1 LISTEN_FDNAMES=http")
}

/// [`handing_over`] with `fd` as descriptor 3 and `vars` (`NAME=value …`) set beside
/// `LISTEN_PID`.
pub fn handing_over_with(fd: &impl std::os::fd::AsRawFd, vars: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let fd = fd.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(r#"export LISTEN_PID=$$ {vars}; exec "$0" "$@""#))
        .arg(env!("CARGO_BIN_EXE_sluice"));
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) on a
    // descriptor the parent keeps open for the child's whole life.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// What [`Setup::custom`] chose for a pipeline of the test's own.
pub struct CustomParts<'a> {
    /// The port `[server] http_listen` must name on 127.0.0.1.
    pub http_port: u16,
    /// The setup's own directory (for a SQLite store, say).
    pub dir: &'a Path,
    /// The variable `[admin] token_env` must name.
    pub admin_env: &'a str,
}

/// A running `sluice serve`.
pub struct Sluice {
    pub guard: ChildGuard,
    pub addr: SocketAddr,
    admin_token: String,
    pub log: PathBuf,
}

impl Sluice {
    pub fn log(&self) -> String {
        tail(&self.log)
    }

    /// The admin token this server was started with.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A request; `key` is the bearer token, if any.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Response {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        http(self.addr, method, path, &headers, body).unwrap_or_else(|e| {
            panic!("{method} {path} failed: {e}\n{}", self.log());
        })
    }

    /// An admin API call with a JSON body (or none).
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let ct = (!bytes.is_empty()).then_some("application/json");
        self.request(method, path, Some(&self.admin_token), ct, bytes.as_bytes())
    }

    /// A component `PUT` to an admin plugin path (`/admin/v1/tenants/ID/plugins/STAGE?…`).
    pub fn admin_upload(&self, path: &str, wasm: &[u8]) -> Response {
        self.request(
            "PUT",
            path,
            Some(&self.admin_token),
            Some("application/wasm"),
            wasm,
        )
    }

    /// A new API key for `tenant`, made through the admin API.
    pub fn new_key(&self, tenant: &str) -> String {
        let r = self.admin("POST", &format!("/admin/v1/tenants/{tenant}/keys"), None);
        assert_eq!(r.status, 201, "creating a key for {tenant}: {}", r.body);
        r.json()["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key in {}", r.body))
            .to_owned()
    }

    /// `POST /v1/messages` with a JSON body. A 503 ("nothing was accepted,
    /// try again": e.g. the ingest plugin ran past its deadline on a
    /// machine busy with parallel tests) is retried as a client would.
    pub fn post_message(&self, key: &str, message: &Value) -> Response {
        let mut tries = 0;
        loop {
            let r = self.request(
                "POST",
                "/v1/messages",
                Some(key),
                Some("application/json"),
                message.to_string().as_bytes(),
            );
            tries += 1;
            if r.status != 503 || tries == 5 {
                return r;
            }
            eprintln!("503 on try {tries}, retrying: {}", r.body);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Submits and expects 202; returns the message's id.
    pub fn submit(&self, key: &str, message: &Value) -> String {
        let r = self.post_message(key, message);
        assert_eq!(r.status, 202, "submitting {message}: {}", r.body);
        r.json()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", r.body))
            .to_owned()
    }

    /// `GET /v1/messages/{id}`, expecting 200.
    pub fn message(&self, key: &str, id: &str) -> Value {
        let r = self.request("GET", &format!("/v1/messages/{id}"), Some(key), None, b"");
        assert_eq!(r.status, 200, "GET message {id}: {}", r.body);
        r.json()
    }

    /// Polls the message until `done` holds; fails with the message JSON.
    pub fn wait_message(
        &self,
        key: &str,
        id: &str,
        expected: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(&format!("message {id}: {expected}"), || {
            let m = self.message(key, id);
            if done(&m) {
                Ok(m)
            } else {
                Err(format!(
                    "{}\n{}",
                    serde_json::to_string_pretty(&m).unwrap_or_default(),
                    self.log()
                ))
            }
        })
    }

    /// Waits until every recipient of the message is in `state`.
    pub fn wait_state(&self, key: &str, id: &str, state: &str) -> Value {
        self.wait_message(key, id, &format!("every recipient {state}"), |m| {
            all_in_state(m, state)
        })
    }
}

/// True when the message has recipients and all are in `state`.
pub fn all_in_state(m: &Value, state: &str) -> bool {
    m["recipients"]
        .as_array()
        .is_some_and(|rs| !rs.is_empty() && rs.iter().all(|r| r["state"] == state))
}

/// The kinds of a message's events, in order.
pub fn event_kinds(m: &Value) -> Vec<String> {
    m["events"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A small plain-text message.
pub fn simple(from: &str, to: &str, subject: &str) -> Value {
    json!({"from": from, "to": [to], "subject": subject, "text": format!("body of {subject}")})
}

/// A platform relay table for a pipeline.
pub fn relay_table(id: &str, url: &str, extra: &str) -> String {
    format!("[[relay]]\nid = \"{id}\"\nurl = \"{url}\"\ntags = [\"pool:platform\"]\n{extra}\n")
}

/// A tenant table for a pipeline.
pub fn tenant_table(id: &str, domains: &[&str]) -> String {
    let d: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[[tenant]]\nid = \"{id}\"\nallowed_sender_domains = [{}]\n",
        d.join(", ")
    )
}

/// The resident memory of a process, in bytes (`VmRSS` of `/proc/PID/status`); 0 once
/// it has exited.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

// ---- PostgreSQL ----

/// Runs one statement as `postgres` on the local server; whether it succeeded.
pub fn psql(sql: &str) -> bool {
    Command::new("psql")
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
        ])
        .arg(sql)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("psql runs")
        .success()
}

/// A throwaway PostgreSQL database, dropped (forcibly) with its guard.
pub struct PgDb(pub String);

impl PgDb {
    pub fn new(prefix: &str) -> PgDb {
        let name = format!("{prefix}_{}_{}", std::process::id(), free_port());
        assert!(
            psql(&format!("CREATE DATABASE {name}")),
            "PostgreSQL at 127.0.0.1:5432"
        );
        PgDb(name)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.0)
    }
}

/// One set-up per node suffix, all on `db` (a PostgreSQL cluster of nodes on one
/// database), each with `tables` as its pipeline's tables.
pub fn postgres_nodes(db: &PgDb, tables: &str, suffixes: &[&str]) -> Vec<Setup> {
    suffixes
        .iter()
        .map(|suffix| {
            let server = format!("node_suffix = \"{suffix}\"");
            let setup = Setup::new(PipelineParts {
                server: &server,
                tables,
                ..Default::default()
            });
            setup.use_store(&db.url());
            setup
        })
        .collect()
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let _ = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
    }
}
