//! Compiling an untrusted component without letting it hurt the host: in a child
//! process (`sluice` itself, re-executed with a hidden subcommand) whose memory
//! (`RLIMIT_DATA`: heap, anonymous mappings and stacks, not the mapped executable, which
//! is ~450 MB in a debug build) and CPU time are capped with `setrlimit` and whose wall
//! time is capped by the parent, which kills it at the deadline.
//!
//! Cranelift's cost is not bounded by the size of its input: a 9.5 MB component whose
//! one core module had loops over 20 000 locals took 47 s, 55 CPU-seconds and 4.7 GB.
//! Compiled in the server's process, that memory is the server's and the CPU is taken
//! from every tenant; in a child, the kernel ends it at the limit and the server only
//! waits. The child compiles on one thread (no parallel compilation), so a compilation
//! costs at most one core. It writes the artefact into the compiled-component disk
//! cache (or a private temporary file when the cache is off) by rename, and the server
//! loads it from there.
//!
//! The child's engine is the server's without the pooling allocator (whose address
//! space reservation would not fit under the limit): allocation strategy does not
//! change the compiled code, and wasmtime checks the artefact's settings against the
//! loading engine anyway.

use super::cache;
use super::{RuntimeConfig, engine_config};
use crate::chain::Chain;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Engine, InstanceAllocationStrategy};

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__compile-component";

/// Exit code of a child that could not compile the component (its error on stderr).
const EXIT_REFUSED: i32 = 3;
/// Exit code of a child refused memory while compiling.
const EXIT_MEMORY: i32 = 4;

/// Bytes of the child's stderr kept for the error.
const STDERR_KEPT: usize = 4096;

/// Bounds of one compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileBounds {
    /// The program that compiles (`sluice` itself).
    pub program: PathBuf,
    /// Wall time, after which the child is killed.
    pub wall: Duration,
    /// CPU time (`RLIMIT_CPU`).
    pub cpu_secs: u64,
    /// Private writable memory: heap, anonymous mappings, stacks (`RLIMIT_DATA`).
    pub memory_bytes: u64,
}

/// Why a bounded compilation produced nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "compiling took longer than {} s of wall time ([plugins.uploads] max_compile_secs)",
        .0.as_secs()
    )]
    TooSlow(Duration),
    #[error("compiling used more than {0} s of CPU time ([plugins.uploads] max_compile_cpu_secs)")]
    TooMuchCpu(u64),
    #[error(
        "compiling needed more than {} MiB of memory ([plugins.uploads] max_compile_memory_mib)",
        .0 >> 20
    )]
    TooMuchMemory(u64),
    /// Wasmtime refused the component (invalid code, unsupported feature).
    #[error("{0}")]
    Invalid(String),
    /// The child could not be run or its artefact read: the host's fault.
    #[error("the compiler process failed: {0}")]
    Host(String),
}

/// The child's engine: the server's settings, allocated on demand, one thread.
fn child_engine(max_instances: u32, max_memory_bytes: usize) -> wasmtime::Result<Engine> {
    let mut cfg = engine_config(&RuntimeConfig {
        max_instances,
        max_memory_bytes,
        ..RuntimeConfig::default()
    });
    cfg.allocation_strategy(InstanceAllocationStrategy::OnDemand)
        .parallel_compilation(false);
    Engine::new(&cfg)
}

/// Compiles `bytes` for `engine` in a child process under `bounds`, or loads the
/// artefact the disk cache already holds for them.
pub fn compile(
    engine: &Engine,
    config: &RuntimeConfig,
    bytes: &[u8],
    bounds: &CompileBounds,
) -> Result<Component, CompileError> {
    // A cache directory we cannot create costs only the caching, as in `cache::compile`.
    let cache_dir = config.compile_cache.as_deref().filter(|dir| {
        cache::private_dir(dir)
            .inspect_err(|e| {
                tracing::debug!(dir = %dir.display(), error = %Chain(&e), "cannot use the compiled component cache");
            })
            .is_ok()
    });
    if let Some(dir) = cache_dir
        && let Some(c) = cache::load(engine, bytes, dir)
    {
        return Ok(c);
    }
    // Without a cache, a private directory of our own for this one artefact.
    let out = match cache_dir {
        Some(dir) => cache::entry_path(engine, bytes, dir),
        None => tempfile_dir()
            .map_err(|e| CompileError::Host(format!("no directory for the artefact: {e}")))?
            .join("component.cwasm"),
    };
    let result = run_child(config, bytes, bounds, &out).and_then(|()| {
        // SAFETY: the file was just written by our own binary's `child_main` from
        // `Component::serialize` for an engine with these settings, by rename into a
        // directory private to this user; wasmtime checks its header against `engine`.
        unsafe { Component::deserialize_file(engine, &out) }
            .map_err(|e| CompileError::Host(format!("cannot load the compiled artefact: {e:#}")))
    });
    if cache_dir.is_none() {
        // The loaded artefact is mapped; the mapping outlives the name.
        let _ = std::fs::remove_file(&out);
        if let Some(dir) = out.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    } else if let Some(dir) = cache_dir {
        cache::prune_dir(dir);
    }
    result
}

/// A fresh directory only this user can read, under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let dir = std::env::temp_dir().join(format!(
        "sluice-compile-{}-{}",
        std::process::id(),
        hex::encode(nonce)
    ));
    cache::private_dir(&dir)?;
    Ok(dir)
}

fn run_child(
    config: &RuntimeConfig,
    bytes: &[u8],
    bounds: &CompileBounds,
    out: &Path,
) -> Result<(), CompileError> {
    let mut child = Command::new(&bounds.program)
        .arg(SUBCOMMAND)
        .arg("--out")
        .arg(out)
        .args(["--max-instances", &config.max_instances.to_string()])
        .args(["--max-memory-bytes", &config.max_memory_bytes.to_string()])
        .args(["--cpu-secs", &bounds.cpu_secs.to_string()])
        .args(["--memory-bytes", &bounds.memory_bytes.to_string()])
        .env_remove("SLUICE_LOG")
        // mimalloc reserves 1 GiB of address space for its first arena, which counts
        // against RLIMIT_DATA though it is never touched; small arenas fit the limit.
        .env("MIMALLOC_ARENA_RESERVE", "64MiB")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CompileError::Host(format!("cannot run {}: {e}", bounds.program.display())))?;
    let started = Instant::now();
    // Feeding and draining on threads of their own: a child that stops reading (or
    // writes much) never blocks the deadline below.
    let mut stdin = child.stdin.take();
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A child killed early closes the pipe: not our error to report.
            let _ = s.write_all(&input);
        }
    });
    let mut stderr = child.stderr.take();
    let drainer = std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEPT {
                    kept.drain(..kept.len() - STDERR_KEPT);
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= bounds.wall => {
                let _ = child.kill();
                let _ = child.wait();
                // What a child killed while writing leaves (see `child_main`).
                let _ = std::fs::remove_file(out.with_extension(format!("{}.tmp", child.id())));
                let _ = feeder.join();
                let _ = drainer.join();
                return Err(CompileError::TooSlow(bounds.wall));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(CompileError::Host(format!("waiting for the compiler: {e}"))),
        }
    };
    let _ = feeder.join();
    let said = drainer.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(EXIT_REFUSED), _) => Err(CompileError::Invalid(said.trim().to_owned())),
        (Some(EXIT_MEMORY), _) => Err(CompileError::TooMuchMemory(bounds.memory_bytes)),
        // SIGXCPU at the soft limit, SIGKILL at the hard one.
        (_, Some(libc::SIGXCPU)) | (_, Some(libc::SIGKILL)) => {
            Err(CompileError::TooMuchCpu(bounds.cpu_secs))
        }
        // An allocation refused under RLIMIT_DATA aborts the child (or, for a thread or
        // a mapping, fails it with an error that says so).
        _ if said.contains("memory allocation")
            || said.contains("Cannot allocate memory")
            || said.contains("out of memory")
            || status.signal() == Some(libc::SIGABRT)
            || status.signal() == Some(libc::SIGSEGV) =>
        {
            Err(CompileError::TooMuchMemory(bounds.memory_bytes))
        }
        _ => Err(CompileError::Host(format!(
            "the compiler exited with {status}: {}",
            said.trim()
        ))),
    }
}

/// What the child is told.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    pub out: PathBuf,
    pub max_instances: u32,
    pub max_memory_bytes: usize,
    pub cpu_secs: u64,
    pub memory_bytes: u64,
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `setrlimit` reads the struct we pass and changes only this process's
    // limits; it has no other memory effects.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The child: limits itself, reads the component from stdin, compiles it and writes
/// the artefact to `args.out` by rename. Returns the process's exit code.
pub fn child_main(args: &ChildArgs) -> i32 {
    // First of all, before anything large is allocated.
    if let Err(e) = set_limit(libc::RLIMIT_CPU, args.cpu_secs, args.cpu_secs + 1)
        .and_then(|()| set_limit(libc::RLIMIT_DATA, args.memory_bytes, args.memory_bytes))
    {
        eprintln!("cannot limit the compiler: {e}");
        return 1;
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the component: {e}");
        return 1;
    }
    let engine = match child_engine(args.max_instances, args.max_memory_bytes) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot build the engine: {e:#}");
            return 1;
        }
    };
    let artefact = match Component::new(&engine, &bytes).and_then(|c| c.serialize()) {
        Ok(a) => a,
        Err(e) => {
            let e = format!("{e:#}");
            eprintln!("{e}");
            // A mapping refused under RLIMIT_DATA comes back as an error, not an abort.
            if e.contains("Cannot allocate memory") {
                return EXIT_MEMORY;
            }
            return EXIT_REFUSED;
        }
    };
    let tmp = args
        .out
        .with_extension(format!("{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, artefact).and_then(|()| std::fs::rename(&tmp, &args.out));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        eprintln!("cannot write {}: {e}", args.out.display());
        return 1;
    }
    0
}
