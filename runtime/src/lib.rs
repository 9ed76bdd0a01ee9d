//! The plugin runtime (crate `sluice-runtime`): the only crate that knows wasmtime.
//!
//! One [`Runtime`] per process holds the engine (pooling allocator, epoch
//! interruption driven by a background ticker), the linker (WASI with an
//! empty context, plus the `host` imports) and nothing else. A [`Plugin`] is
//! a component compiled once, type-checked against its stage's world, and
//! pre-instantiated; each call runs in a fresh instance by default (nothing
//! leaks between calls), bounded in CPU time (with a wall bound, `deadline.rs`) and
//! memory. Whatever goes
//! wrong inside a call comes back as a [`PluginError`] and the host carries
//! on.

mod bindings;
mod bounded;
mod cache;
mod chain;
mod convert;
mod deadline;
mod inspect;
mod log;
mod lower;
mod sandbox;

pub use bounded::{ChildArgs, CompileBounds, CompileError, SUBCOMMAND as COMPILE_SUBCOMMAND};
pub use deadline::{WALL_BOUND_FACTOR, thread_cpu_time};
pub use inspect::{OverLimit, StaticLimits};
pub use log::{LogBudget, LogLevel, LogLimits, LogLine, LogPage, LogSource, PluginLog};

use deadline::{AtDeadline, CallClock};
use sandbox::{CaptureLimits, StoreState};
use sluice_stage::{self as stage, Stage};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{ComponentExportIndex, InstancePre, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

/// Linear memory of a pool slot kept mapped between instances (reset by
/// `memset` rather than `madvise`): about what a Rust plugin dirties per call.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

/// Bytes a plugin's own log keeps when none is shared with it (the platform's
/// plugins, the CLI).
pub const DEFAULT_LOG_BYTES: usize = 1 << 20;

/// How the process-wide engine is set up.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Plugin instances alive at once (pool slots).
    pub max_instances: u32,
    /// Largest memory any plugin may be given; per-plugin limits are below it.
    pub max_memory_bytes: usize,
    /// How often the epoch advances; the granularity of call deadlines.
    pub epoch_tick: Duration,
    /// Where compiled components are cached across runs (none: always compile).
    pub compile_cache: Option<std::path::PathBuf>,
    /// What of a plugin's `log` calls is kept.
    pub log: LogLimits,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(1),
            compile_cache: cache::default_dir(),
            log: LogLimits::default(),
        }
    }
}

/// Bounds of one plugin's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time of one call, instantiation included.
    pub timeout: Duration,
    /// Linear memory of one instance.
    pub memory_bytes: usize,
    /// Keep an instance between calls instead of a fresh one per call.
    /// Faster; only for trusted (platform) plugins. An instance that fails
    /// is always dropped.
    pub reuse_instances: bool,
}

impl Limits {
    /// The platform's default limits for a stage.
    pub fn for_stage(stage: Stage) -> Limits {
        let timeout = match stage {
            Stage::Ingest | Stage::Route | Stage::Send => Duration::from_millis(50),
            Stage::Bounce => Duration::from_millis(250),
            Stage::Bill => Duration::from_secs(2),
        };
        Limits {
            timeout,
            memory_bytes: 64 << 20,
            reuse_instances: false,
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "the component does not serve stage {stage}: it does not export `{missing}` (it exports: {exports})"
    )]
    WrongWorld {
        stage: Stage,
        missing: &'static str,
        exports: String,
    },
    #[error("the component does not fit stage {stage}: {detail}")]
    BadSignature { stage: Stage, detail: String },
    #[error("the component imports something Sluice does not provide: {0}")]
    UnknownImport(String),
    #[error("memory limit of {asked} bytes is above the platform maximum of {max} bytes")]
    MemoryAboveMaximum { asked: usize, max: usize },
    /// Refused before compiling: the component declares more than a limit allows.
    #[error("{0}")]
    OverLimit(OverLimit),
    /// The bounded compilation failed or was stopped.
    #[error("{0}")]
    Compile(CompileError),
}

/// Why a call produced no usable answer. The host never acts on a failed
/// call: it defers the work or hands it to the fallback plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin ran past its deadline of {}ms", .limit.as_millis())]
    Timeout { limit: Duration },
    #[error("plugin exceeded its memory limit of {limit_bytes} bytes (asked for {wanted_bytes})")]
    MemoryLimit {
        limit_bytes: usize,
        wanted_bytes: usize,
    },
    #[error("plugin trapped: {message}")]
    Trap { message: String },
    #[error("plugin gave a malformed answer: {reason}")]
    BadOutput { reason: String },
    #[error("no plugin instance is free: {0}")]
    Unavailable(String),
}

impl PluginError {
    /// A short stable name for metrics and events.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Timeout { .. } => "timeout",
            PluginError::MemoryLimit { .. } => "memory_limit",
            PluginError::Trap { .. } => "trap",
            PluginError::BadOutput { .. } => "bad_output",
            PluginError::Unavailable(_) => "unavailable",
        }
    }
}

/// Advances the engine's epoch until dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<StoreState>,
    config: RuntimeConfig,
    _ticker: Ticker,
}

/// The engine settings every plugin runs under: the pooling allocator sized
/// by `config`, epoch interruption, a 1 MiB wasm stack, no async support.
/// Public for the benchmark that measures a bare Wasmtime call beside ours.
#[doc(hidden)]
pub fn engine_config(config: &RuntimeConfig) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(config.max_instances)
        .total_core_instances(config.max_instances * 4)
        .total_memories(config.max_instances * 2)
        .total_tables(config.max_instances * 4)
        .max_memory_size(config.max_memory_bytes)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        // A fresh instance per call touches a few dozen pages. Resetting
        // only those with `memset` (found by the PAGEMAP_SCAN ioctl where
        // the kernel has it) spares the next call as many page faults,
        // which `madvise` would otherwise cost on every instantiation.
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    let mut cfg = Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(1 << 20)
        .concurrency_support(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    cfg
}

/// The process-wide plugin engine. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Runtime> {
        let cfg = engine_config(&config);
        let engine = Engine::new(&cfg)
            .map_err(|e| anyhow::anyhow!("cannot build the wasm engine: {e:#}"))?;

        let mut linker: Linker<StoreState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        sandbox::add_host_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("{e:#}"))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop, tick) = (engine.clone(), stop.clone(), config.epoch_tick);
        std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    ticker_engine.increment_epoch();
                }
            })?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                _ticker: Ticker { stop },
            }),
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Compiles `bytes` and checks it serves `stage`. Compilation is the
    /// slow part (milliseconds to a second): do it off the hot path.
    pub fn load(
        &self,
        stage: Stage,
        name: &str,
        bytes: &[u8],
        spec: PluginSpec,
    ) -> Result<Plugin, LoadError> {
        if spec.limits.memory_bytes > self.inner.config.max_memory_bytes {
            return Err(LoadError::MemoryAboveMaximum {
                asked: spec.limits.memory_bytes,
                max: self.inner.config.max_memory_bytes,
            });
        }
        if let Some(problem) = header_problem(bytes) {
            return Err(LoadError::NotAComponent(problem));
        }
        let engine = &self.inner.engine;
        let component = cache::compile(engine, bytes, self.inner.config.compile_cache.as_deref())
            .map_err(|e| LoadError::NotAComponent(one_line(&format!("{e:#}"))))?;
        self.finish_load(stage, name, component, spec)
    }

    /// Reads an untrusted component (a tenant's upload) without compiling it and
    /// refuses it, naming the limit, if its world or sizes are wrong.
    pub fn check_untrusted(
        &self,
        stage: Stage,
        bytes: &[u8],
        limits: &StaticLimits,
    ) -> Result<(), LoadError> {
        if let Some(problem) = header_problem(bytes) {
            return Err(LoadError::NotAComponent(problem));
        }
        inspect::inspect(bytes, stage, limits)
            .map(drop)
            .map_err(|r| match r {
                inspect::Refusal::Malformed(m) => LoadError::NotAComponent(one_line(&m)),
                inspect::Refusal::OverLimit(o) => LoadError::OverLimit(o),
                inspect::Refusal::MissingExport { missing, exports } => LoadError::WrongWorld {
                    stage,
                    missing,
                    exports,
                },
                inspect::Refusal::UnknownImport(i) => LoadError::UnknownImport(i),
            })
    }

    /// Loads an untrusted component that passed [`Runtime::check_untrusted`]: compiles
    /// it in a child process under `bounds` (or takes the artefact from the disk cache).
    pub fn load_untrusted(
        &self,
        stage: Stage,
        name: &str,
        bytes: &[u8],
        spec: PluginSpec,
        bounds: &CompileBounds,
    ) -> Result<Plugin, LoadError> {
        if spec.limits.memory_bytes > self.inner.config.max_memory_bytes {
            return Err(LoadError::MemoryAboveMaximum {
                asked: spec.limits.memory_bytes,
                max: self.inner.config.max_memory_bytes,
            });
        }
        let component = bounded::compile(&self.inner.engine, &self.inner.config, bytes, bounds)
            .map_err(|e| match e {
                CompileError::Invalid(m) => LoadError::NotAComponent(one_line(&m)),
                other => LoadError::Compile(other),
            })?;
        self.finish_load(stage, name, component, spec)
    }

    /// Checks a compiled component against `stage`'s world and pre-instantiates it.
    fn finish_load(
        &self,
        stage: Stage,
        name: &str,
        component: wasmtime::component::Component,
        spec: PluginSpec,
    ) -> Result<Plugin, LoadError> {
        let engine = &self.inner.engine;
        let exports: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        if !exports.iter().any(|e| e == stage.export_name()) {
            let exports = if exports.is_empty() {
                "nothing".into()
            } else {
                exports.join(", ")
            };
            return Err(LoadError::WrongWorld {
                stage,
                missing: stage.export_name(),
                exports,
            });
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnknownImport(format!("{e:#}")))?;
        let bad = |e: wasmtime::Error| LoadError::BadSignature {
            stage,
            detail: format!("{e:#}"),
        };
        // The generated bindings check the whole world (and word their
        // refusals well); calls then go through `lower`'s borrowed views.
        let checked = match stage {
            Stage::Ingest => bindings::ingest::IngestPre::new(pre.clone()).map(drop),
            Stage::Route => bindings::route::RoutePre::new(pre.clone()).map(drop),
            Stage::Send => bindings::send::SendStagePre::new(pre.clone()).map(drop),
            Stage::Bounce => bindings::bounce::BouncePre::new(pre.clone()).map(drop),
            Stage::Bill => bindings::bill::BillPre::new(pre.clone()).map(drop),
        };
        checked.map_err(bad)?;
        let at = lower::export_index(&component, stage).ok_or_else(|| LoadError::WrongWorld {
            stage,
            missing: stage.export_name(),
            exports: exports.join(", "),
        })?;
        let pre = StagePre { pre, at };
        Ok(Plugin {
            runtime: self.clone(),
            stage,
            name: name.to_owned(),
            pre,
            limits: spec.limits,
            config: spec.config.into(),
            log: spec
                .log
                .unwrap_or_else(|| Arc::new(PluginLog::new(DEFAULT_LOG_BYTES))),
            version: spec.version,
            idle: Mutex::new(Vec::new()),
        })
    }
}

/// Why `bytes` cannot be a component, read from its first eight bytes, in one line
/// that says what the file seems to be instead; `None` when it may be one (the compiler
/// then decides).
fn header_problem(bytes: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\0asm";
    let start = || {
        bytes
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if bytes.len() < 8 || !bytes.starts_with(MAGIC) {
        let native = "a native build: build it with --target wasm32-wasip2";
        let looks_like = if bytes.starts_with(b"\x7fELF") {
            format!(": an ELF file ({native})")
        } else if bytes.starts_with(b"MZ") || bytes.starts_with(&[0xcf, 0xfa, 0xed, 0xfe]) {
            format!(": a native program ({native})")
        } else if std::str::from_utf8(&bytes[..bytes.len().min(64)]).is_ok() {
            ": it looks like text".into()
        } else {
            String::new()
        };
        return Some(format!(
            "the file does not start with the WebAssembly magic 00 61 73 6d but with {}{looks_like}",
            if bytes.is_empty() {
                "nothing".into()
            } else {
                start()
            }
        ));
    }
    // A core module's header has layer 0; a component's, layer 1.
    if bytes[6..8] == [0, 0] {
        return Some(
            "a core WebAssembly module, not a component: build the plugin for \
             wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
                .into(),
        );
    }
    None
}

/// A compiler's or parser's message on one line (some print byte lists over many).
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The compiler child: `args` from the hidden subcommand; the process's exit code.
pub fn compile_child_main(args: &ChildArgs) -> i32 {
    bounded::child_main(args)
}

/// How a plugin is to be run: limits, settings and where its log goes.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub limits: Limits,
    /// Settings the plugin reads through `host.config`.
    pub config: Vec<(String, String)>,
    /// A log to share (e.g. per tenant); a fresh one of [`DEFAULT_LOG_BYTES`] if none.
    pub log: Option<Arc<PluginLog>>,
    /// A tenant plugin's version, tagged on the lines it logs.
    pub version: Option<u32>,
}

impl PluginSpec {
    /// The stage's default limits, no settings.
    pub fn for_stage(stage: Stage) -> PluginSpec {
        PluginSpec {
            limits: Limits::for_stage(stage),
            config: Vec::new(),
            log: None,
            version: None,
        }
    }
}

/// A component ready to instantiate, and where its stage function is.
struct StagePre {
    pre: InstancePre<StoreState>,
    at: ComponentExportIndex,
}

/// The stage function of one live instance.
type Bound = lower::StageFunc;

/// A loaded plugin, ready to call from any thread.
pub struct Plugin {
    runtime: Runtime,
    stage: Stage,
    name: String,
    pre: StagePre,
    limits: Limits,
    config: Arc<[(String, String)]>,
    log: Arc<PluginLog>,
    /// A tenant plugin's version, tagged on its log lines.
    version: Option<u32>,
    /// Instances kept between calls when `reuse_instances` is on.
    idle: Mutex<Vec<(Store<StoreState>, Bound)>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("stage", &self.stage)
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Plugin {
    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The plugin's log (its `log` calls, stderr, and how failed calls ended).
    pub fn log(&self) -> &Arc<PluginLog> {
        &self.log
    }

    fn new_store(&self) -> Store<StoreState> {
        let capture = CaptureLimits {
            log: self.runtime.inner.config.log,
            stderr_bytes: 16 * 1024,
        };
        let state = StoreState::new(
            self.limits.memory_bytes,
            self.config.clone(),
            self.log.clone(),
            self.version,
            capture,
        );
        let mut store = Store::new(&self.runtime.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        store
    }

    fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<Bound> {
        let instance = self.pre.pre.instantiate(&mut *store)?;
        lower::check(self.stage, store, &instance, &self.pre.at)
    }

    /// Runs `f` on an instance under the deadline and turns every failure
    /// into a [`PluginError`]. A failed instance is never reused.
    fn with_instance<R>(
        &self,
        f: impl FnOnce(&mut Store<StoreState>, &Bound) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let reused = if self.limits.reuse_instances {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
        } else {
            None
        };
        // The limit is the CPU time of this thread, with a wall bound behind it
        // (`deadline.rs`).
        let clock = CallClock::start(self.limits.timeout, self.runtime.inner.config.epoch_tick);
        let arm = |store: &mut Store<StoreState>| {
            store.data_mut().starved = false;
            store.set_epoch_deadline(clock.first_deadline());
            store.epoch_deadline_callback(move |mut ctx| {
                Ok(match clock.at_deadline() {
                    AtDeadline::Continue(ticks) => UpdateDeadline::Continue(ticks),
                    AtDeadline::CpuSpent => UpdateDeadline::Interrupt,
                    AtDeadline::Starved => {
                        ctx.data_mut().starved = true;
                        UpdateDeadline::Interrupt
                    }
                })
            });
        };
        let (mut store, result) = match reused {
            Some((mut store, bound)) => {
                arm(&mut store);
                let r = f(&mut store, &bound);
                (store, r.map(|v| (v, bound)))
            }
            None => {
                let mut store = self.new_store();
                arm(&mut store);
                let r = self
                    .instantiate(&mut store)
                    .and_then(|bound| f(&mut store, &bound).map(|v| (v, bound)));
                (store, r)
            }
        };
        let memory_exceeded = store.data().limiter.exceeded;
        let starved = store.data().starved;
        let stderr_tail = store.data_mut().finish_call();
        match result {
            Ok((value, bound)) => {
                if self.limits.reuse_instances {
                    self.idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((store, bound));
                }
                Ok(value)
            }
            Err(e) => {
                let err = if starved {
                    PluginError::Unavailable(format!(
                        "the host was too busy to run it: {} ms of its {} ms of CPU time in {} ms, \
                         the most a call may wait (not counted against the plugin)",
                        clock.cpu_used().as_millis(),
                        self.limits.timeout.as_millis(),
                        clock.wall_used().as_millis()
                    ))
                } else {
                    self.classify(&e, memory_exceeded, stderr_tail, clock.cpu_used())
                };
                self.log.push_from(
                    self.version,
                    LogLevel::Error,
                    LogSource::Host,
                    err.to_string(),
                    Vec::new(),
                );
                Err(err)
            }
        }
    }

    fn classify(
        &self,
        e: &wasmtime::Error,
        memory_exceeded: Option<usize>,
        stderr_tail: Option<String>,
        cpu_used: Duration,
    ) -> PluginError {
        if let Some(wanted_bytes) = memory_exceeded {
            return PluginError::MemoryLimit {
                limit_bytes: self.limits.memory_bytes,
                wanted_bytes,
            };
        }
        let message = match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => {
                return PluginError::Timeout {
                    limit: self.limits.timeout,
                };
            }
            Some(Trap::StackOverflow) => "call stack exhausted (too deep recursion)".to_owned(),
            Some(Trap::MemoryOutOfBounds) => {
                format!(
                    "{}: a stack overflow in the plugin shows up this way too",
                    Trap::MemoryOutOfBounds
                )
            }
            Some(trap) => trap.to_string(),
            None if cpu_used >= self.limits.timeout => {
                return PluginError::Timeout {
                    limit: self.limits.timeout,
                };
            }
            None => format!("{e:#}"),
        };
        match stderr_tail {
            Some(words) => PluginError::Trap {
                message: format!("{message}; stderr: {words}"),
            },
            None => PluginError::Trap { message },
        }
    }

    fn wrong_stage(&self, wanted: Stage) -> PluginError {
        PluginError::Unavailable(format!(
            "plugin {:?} serves stage {}, not {wanted}",
            self.name, self.stage
        ))
    }

    fn checked<T>(answer: T, check: Result<(), String>) -> Result<T, PluginError> {
        check
            .map(|()| answer)
            .map_err(|reason| PluginError::BadOutput { reason })
    }

    /// Calls the ingest stage.
    pub fn ingest(&self, input: &stage::Submission) -> Result<stage::IngestDecision, PluginError> {
        if self.stage != Stage::Ingest {
            return Err(self.wrong_stage(Stage::Ingest));
        }
        let arg = lower::submission(input);
        let out = self.with_instance(|store, f| lower::ingest(*f, store, &arg))?;
        let d = convert::ingest_decision(out);
        let check = stage::validate::ingest(input, &d);
        Self::checked(d, check)
    }

    /// Calls the route stage.
    pub fn route(&self, input: &stage::RouteInput) -> Result<stage::RouteDecision, PluginError> {
        if self.stage != Stage::Route {
            return Err(self.wrong_stage(Stage::Route));
        }
        let windows = lower::relay_windows(input);
        let arg = lower::route_input(input, &windows);
        let out = self.with_instance(|store, f| lower::route(*f, store, &arg))?;
        let d = convert::route_decision(out);
        let check = stage::validate::route(input, &d);
        Self::checked(d, check)
    }

    /// Calls the send stage.
    pub fn send(&self, input: &stage::Attempt) -> Result<stage::SendDecision, PluginError> {
        if self.stage != Stage::Send {
            return Err(self.wrong_stage(Stage::Send));
        }
        let arg = lower::attempt(input);
        let out = self.with_instance(|store, f| lower::send(*f, store, &arg))?;
        let d = convert::send_decision(out);
        let check = stage::validate::send(input, &d);
        Self::checked(d, check)
    }

    /// Calls the bounce stage.
    pub fn bounce(&self, input: &stage::BounceInput) -> Result<stage::BounceOutput, PluginError> {
        if self.stage != Stage::Bounce {
            return Err(self.wrong_stage(Stage::Bounce));
        }
        let arg = lower::bounce_input(input);
        let out = self.with_instance(|store, f| lower::bounce(*f, store, &arg))?;
        let o = convert::bounce_output(out);
        let check = stage::validate::bounce(input, &o);
        Self::checked(o, check)
    }

    /// Calls the bill stage. A rater's own `Err` is a [`PluginError::BadOutput`]
    /// naming its reason (e.g. an invalid tariff).
    pub fn bill(&self, input: &stage::BillInput) -> Result<stage::BillOutput, PluginError> {
        if self.stage != Stage::Bill {
            return Err(self.wrong_stage(Stage::Bill));
        }
        let arg = lower::bill_input(input);
        let out = self.with_instance(|store, f| lower::bill(*f, store, &arg))?;
        let out = out.map_err(|reason| PluginError::BadOutput {
            reason: format!("the rater refused the batch: {reason}"),
        })?;
        let o = convert::bill_output(out);
        let check = stage::validate::bill(input, &o);
        Self::checked(o, check)
    }
}
