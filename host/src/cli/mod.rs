//! Command-line parsing and dispatch. Each subcommand lives in its own
//! module and returns `anyhow::Result`; errors are printed once, with their
//! causes, here.

mod admin;
mod bench;
mod bench_queue;
mod bill;
mod bounce;
mod http;
mod plugin;
mod plugin_new;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Sluice: a mail pipeline whose stages are sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, run and list stage plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Rate qmail or Postfix logs offline and print per-tenant totals.
    Bill(bill::BillArgs),
    /// Parse bounces, score a bounce plugin against a manifest, benchmark it.
    #[command(subcommand)]
    Bounce(bounce::BounceCommand),
    /// Run the pipeline: HTTP API, queue, relays.
    Serve(serve::ServeArgs),
    /// Validate pipeline files.
    #[command(subcommand)]
    Pipeline(serve::PipelineCommand),
    /// Print the HTTP API's OpenAPI 3.1 document (what `GET /openapi.json` serves; the
    /// committed copy is `openapi.json`: `sluice openapi > openapi.json`).
    Openapi,
    /// Administer a running Sluice over its admin API (token from SLUICE_ADMIN_TOKEN).
    Admin(admin::AdminArgs),
    /// Measure a running Sluice.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Compiles a component from stdin under limits (the server runs it).
    #[command(name = "__compile-component", hide = true)]
    CompileComponent(CompileArgs),
}

/// What the server tells its compiler child (`runtime::CompileBounds`).
#[derive(Debug, clap::Args)]
struct CompileArgs {
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long)]
    max_instances: u32,
    #[arg(long)]
    max_memory_bytes: usize,
    #[arg(long)]
    cpu_secs: u64,
    #[arg(long)]
    memory_bytes: u64,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Push messages through the HTTP API and time them to the sink.
    Push(bench::PushArgs),
    /// Fill a store with many messages and time the queue API's queries on it.
    Queue(bench_queue::QueueArgs),
}

/// A failure that has already been reported and only sets the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

/// Runs the command line; the exit code is 0 on success, 1 when the work
/// failed (e.g. a plugin trapped), 2 when the command line or an input was
/// wrong.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` takes `--log-format`; every other command reads SLUICE_LOG_FORMAT only.
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => std::env::var("SLUICE_LOG_FORMAT")
            .ok()
            .and_then(|v| <crate::logging::LogFormat as clap::ValueEnum>::from_str(&v, true).ok())
            .unwrap_or_default(),
    };
    crate::logging::init(format);
    let result = match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Serve(args) => serve::serve(args),
        Command::Pipeline(cmd) => serve::pipeline(cmd),
        Command::Bench(BenchCommand::Push(args)) => bench::push(args),
        Command::Openapi => {
            print!("{}", crate::serve::openapi_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Queue(args)) => bench_queue::queue(args),
        Command::Admin(args) => admin::run(args),
        Command::Bounce(cmd) => bounce::run(cmd),
        Command::Bill(args) => bill::run(args),
        Command::CompileComponent(a) => Ok(compile_child(a)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<Reported>().is_none() {
                eprintln!("error: {e}");
                for cause in e.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            }
            // A pipeline `serve` cannot start with is a wrong input, as for `pipeline check`.
            let wrong_input = e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<crate::serve::preflight::NotReady>()
                    .is_some();
            ExitCode::from(if wrong_input { 2 } else { 1 })
        }
    }
}

/// The server's compiler child (it limits itself before it reads the component).
fn compile_child(a: CompileArgs) -> ExitCode {
    let code = crate::runtime::compile_child_main(&crate::runtime::ChildArgs {
        out: a.out,
        max_instances: a.max_instances,
        max_memory_bytes: a.max_memory_bytes,
        cpu_secs: a.cpu_secs,
        memory_bytes: a.memory_bytes,
    });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// A wrong command line or input file (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
