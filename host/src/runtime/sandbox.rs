//! What a plugin's store holds and what its imports do: an empty WASI
//! context (no files, environment, network or clock), the `host` imports
//! (log and config), a memory limiter, and a bounded capture of stderr.

use super::bindings::sluice::plugin::host;
use super::log::{LogLevel, LogSource, PluginLog};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// How much of one call's output is kept.
#[derive(Debug, Clone, Copy)]
pub struct CaptureLimits {
    /// `log` calls kept per call; later ones are counted, not kept.
    pub log_lines: usize,
    /// Characters of one log message kept.
    pub log_line_chars: usize,
    /// Bytes of stderr and stdout kept per call.
    pub stderr_bytes: usize,
}

/// The data of one plugin store.
pub struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    config: Arc<[(String, String)]>,
    log: Arc<PluginLog>,
    capture: CaptureLimits,
    logged: usize,
    pub(super) stderr: CappedPipe,
}

impl StoreState {
    pub fn new(
        memory_bytes: usize,
        config: Arc<[(String, String)]>,
        log: Arc<PluginLog>,
        capture: CaptureLimits,
    ) -> StoreState {
        let stderr = CappedPipe::new(capture.stderr_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stderr.clone())
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        StoreState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                cap: memory_bytes,
                exceeded: None,
            },
            config,
            log,
            capture,
            logged: 0,
            stderr,
        }
    }

    /// Moves what the call wrote to stderr into the plugin's log and resets
    /// the per-call counters (a reused instance starts each call afresh).
    pub fn finish_call(&mut self) -> Option<String> {
        self.limiter.exceeded = None;
        // The common case: a quiet call. Nothing to move, nothing to lock.
        if !self.stderr.written() && self.logged <= self.capture.log_lines {
            self.logged = 0;
            return None;
        }
        let (bytes, dropped) = self.stderr.take();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for line in &lines {
            self.log.push(
                LogLevel::Warn,
                LogSource::Stderr,
                (*line).to_owned(),
                Vec::new(),
            );
        }
        if dropped > 0 {
            self.log.push(
                LogLevel::Warn,
                LogSource::Host,
                format!("{dropped} more bytes of stderr were dropped"),
                Vec::new(),
            );
        }
        if self.logged > self.capture.log_lines {
            let n = self.logged - self.capture.log_lines;
            self.log.push(
                LogLevel::Warn,
                LogSource::Host,
                format!("{n} more log lines were dropped"),
                Vec::new(),
            );
        }
        self.logged = 0;
        last_words(&lines)
    }
}

/// What best explains a failed call from its stderr: a Rust panic's
/// location and message, else the last line that is not a hint.
fn last_words(lines: &[&str]) -> Option<String> {
    if let Some(i) = lines.iter().rposition(|l| l.contains("panicked at")) {
        let message = lines
            .get(i + 1)
            .filter(|l| !l.starts_with("note:"))
            .copied()
            .unwrap_or("");
        return Some(format!("{} {message}", lines[i].trim()).trim().to_owned());
    }
    lines
        .iter()
        .rev()
        .find(|l| !l.starts_with("note:"))
        .map(|l| (*l).to_owned())
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: host::Level, message: String, fields: Vec<(String, String)>) {
        self.logged += 1;
        if self.logged > self.capture.log_lines {
            return;
        }
        let level = match level {
            host::Level::Trace => LogLevel::Trace,
            host::Level::Debug => LogLevel::Debug,
            host::Level::Info => LogLevel::Info,
            host::Level::Warn => LogLevel::Warn,
            host::Level::Error => LogLevel::Error,
        };
        let clip = |s: String| match s.char_indices().nth(self.capture.log_line_chars) {
            Some((i, _)) => s[..i].to_owned(),
            None => s,
        };
        let fields = fields
            .into_iter()
            .take(32)
            .map(|(k, v)| (clip(k), clip(v)))
            .collect();
        self.log
            .push(level, LogSource::Plugin, clip(message), fields);
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.config.to_vec()
    }
}

/// Caps linear memory; remembers a refused growth so the error can say so.
pub struct MemoryLimiter {
    cap: usize,
    pub exceeded: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.exceeded = Some(desired);
            // An error traps the guest at once (rather than returning -1 to an
            // allocator that would then abort with a misleading `unreachable`).
            return Err(wasmtime::format_err!(
                "memory limit of {} bytes exceeded (wanted {desired})",
                self.cap
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The only clock a plugin sees: always the Unix epoch. Times a plugin
/// needs are in its input.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A stdout/stderr that keeps the first `capacity` bytes of a call and
/// silently counts the rest, so a chatty plugin neither grows the host nor
/// traps on a full pipe.
#[derive(Clone)]
pub struct CappedPipe {
    capacity: usize,
    inner: Arc<PipeInner>,
}

struct PipeInner {
    /// Set by any write, cleared by `take`: a quiet call never locks.
    written: AtomicBool,
    /// The kept bytes and the count of dropped ones.
    buf: Mutex<(Vec<u8>, usize)>,
}

impl CappedPipe {
    fn new(capacity: usize) -> CappedPipe {
        CappedPipe {
            capacity,
            inner: Arc::new(PipeInner {
                written: AtomicBool::new(false),
                buf: Mutex::new((Vec::new(), 0)),
            }),
        }
    }

    /// Whether anything was written since the last `take`.
    fn written(&self) -> bool {
        self.inner.written.load(Ordering::Acquire)
    }

    /// The kept bytes and the count of dropped ones, emptying the pipe.
    fn take(&self) -> (Vec<u8>, usize) {
        self.inner.written.store(false, Ordering::Release);
        let mut g = self.inner.buf.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = std::mem::take(&mut g.1);
        (std::mem::take(&mut g.0), dropped)
    }
}

impl wasmtime_wasi::cli::IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut g = self.inner.buf.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.written.store(true, Ordering::Release);
        let room = self.capacity.saturating_sub(g.0.len());
        let keep = bytes.len().min(room);
        g.0.extend_from_slice(&bytes[..keep]);
        g.1 += bytes.len() - keep;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}
