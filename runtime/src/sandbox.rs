//! What a plugin's store holds and what its imports do: an empty WASI
//! context (no files, environment, network or clock), the `host` imports
//! (log and config), a memory limiter, and a bounded capture of stderr.
//!
//! The `log` import is defined by hand rather than through the generated
//! bindings: those lift every string and field into host memory before the
//! host sees them, so a guest could pass one 1 MiB string a thousand times as
//! fields and make the host allocate a gigabyte per call. Here the message and
//! fields stay in guest memory (`WasmStr`, `WasmList`) and only the clipped
//! prefix of the fields kept is copied.

use super::bindings::sluice::plugin::host;
use super::log::{LogLevel, LogLimits, LogSource, PluginLog, clip};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Linker, ResourceTable, WasmList, WasmStr};
use wasmtime::{ResourceLimiter, StoreContextMut};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

/// How much of one call's output is kept.
#[derive(Debug, Clone, Copy)]
pub struct CaptureLimits {
    /// What of the `log` calls is kept.
    pub log: LogLimits,
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
    /// The tenant plugin version its log lines are tagged with.
    version: Option<u32>,
    capture: CaptureLimits,
    logged: usize,
    pub(super) stderr: CappedPipe,
    /// Set when the call was stopped at its wall bound without spending its CPU time
    /// (`deadline.rs`).
    pub(super) starved: bool,
}

impl StoreState {
    pub fn new(
        memory_bytes: usize,
        config: Arc<[(String, String)]>,
        log: Arc<PluginLog>,
        version: Option<u32>,
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
            version,
            capture,
            logged: 0,
            stderr,
            starved: false,
        }
    }

    /// Moves what the call wrote to stderr into the plugin's log and resets
    /// the per-call counters (a reused instance starts each call afresh).
    pub fn finish_call(&mut self) -> Option<String> {
        self.limiter.exceeded = None;
        // The common case: a quiet call. Nothing to move, nothing to lock.
        if !self.stderr.written() && self.logged <= self.capture.log.lines_per_call {
            self.logged = 0;
            return None;
        }
        let (bytes, dropped) = self.stderr.take();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for line in &lines {
            self.log.push_from(
                self.version,
                LogLevel::Warn,
                LogSource::Stderr,
                clip(line, self.capture.log.line_bytes).to_owned(),
                Vec::new(),
            );
        }
        if dropped > 0 {
            self.log.push_from(
                self.version,
                LogLevel::Warn,
                LogSource::Host,
                format!("{dropped} more bytes of stderr were dropped"),
                Vec::new(),
            );
        }
        if self.logged > self.capture.log.lines_per_call {
            let n = self.logged - self.capture.log.lines_per_call;
            self.log.push_from(
                self.version,
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

/// Defines the `host` interface (`log`, `config`) in `linker`.
pub fn add_host_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    let mut host = linker.instance("sluice:plugin/host@0.1.0")?;
    host.func_wrap(
        "log",
        |cx: StoreContextMut<'_, StoreState>,
         (level, message, fields): (host::Level, WasmStr, WasmList<(WasmStr, WasmStr)>)| {
            log(cx, level, &message, &fields)
        },
    )?;
    host.func_wrap("config", |cx: StoreContextMut<'_, StoreState>, (): ()| {
        Ok((cx.data().config.to_vec(),))
    })?;
    Ok(())
}

/// The `log` import: keeps at most `lines_per_call` lines per call, each clipped
/// to the limits, copying only what is kept out of guest memory.
fn log(
    mut cx: StoreContextMut<'_, StoreState>,
    level: host::Level,
    message: &WasmStr,
    fields: &WasmList<(WasmStr, WasmStr)>,
) -> wasmtime::Result<()> {
    let limits = cx.data().capture.log;
    cx.data_mut().logged += 1;
    if cx.data().logged > limits.lines_per_call {
        return Ok(());
    }
    let level = match level {
        host::Level::Trace => LogLevel::Trace,
        host::Level::Debug => LogLevel::Debug,
        host::Level::Info => LogLevel::Info,
        host::Level::Warn => LogLevel::Warn,
        host::Level::Error => LogLevel::Error,
    };
    let message = clip(&message.to_str(&cx)?, limits.line_bytes).to_owned();
    let mut pairs = Vec::new();
    for i in 0..fields.len().min(limits.fields) {
        let Some(pair) = fields.get(&mut cx, i) else {
            break;
        };
        let (k, v) = pair?;
        pairs.push((
            clip(&k.to_str(&cx)?, limits.field_bytes).to_owned(),
            clip(&v.to_str(&cx)?, limits.field_bytes).to_owned(),
        ));
    }
    let version = cx.data().version;
    cx.data()
        .log
        .push_from(version, level, LogSource::Plugin, message, pairs);
    Ok(())
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
