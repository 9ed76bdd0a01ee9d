//! `sluice plugin check | run | list | sample | new | upload`.

use super::UsageError;
use crate::builtin;
use crate::runtime::{Limits, LogSource, Plugin, PluginSpec, Runtime, RuntimeConfig};
use crate::stage::{self, Stage};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load, type-check and smoke-run a plugin under its limits.
    Check(Target),
    /// Call a stage once with a JSON input and print the decision as JSON.
    Run {
        #[command(flatten)]
        target: Target,
        /// The stage's input as JSON (`-` for stdin); see the SDK guide for its form.
        #[arg(long, required_unless_present = "sample")]
        input: Option<PathBuf>,
        /// Use the stage's built-in sample input instead of --input.
        #[arg(long, conflicts_with = "input")]
        sample: bool,
    },
    /// Print a sample input of a stage as JSON (a start for --input).
    Sample {
        /// The stage: ingest, route, send, bounce or bill.
        #[arg(long)]
        stage: Stage,
    },
    /// List the default plugins built into this binary.
    List,
    /// Create a ready-to-build plugin crate for a stage.
    New(super::plugin_new::NewArgs),
    /// Upload a plugin to a running Sluice as a new version of a tenant's stage plugin.
    Upload(UploadArgs),
    /// Print what a tenant's plugin of a stage logged on a running Sluice node.
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The stage: ingest, route, send, bounce or bill.
    #[arg(long)]
    stage: Stage,
    #[command(flatten)]
    server: super::http::ServerArgs,
    /// Read this tenant's log through the admin API (--key is then the admin token).
    #[arg(long)]
    tenant: Option<String>,
    /// Only lines after this cursor (the last line's `seq`, as a logs page gives it).
    #[arg(long, default_value_t = 0)]
    after: u64,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The stage the plugin is for: ingest, route, send, bounce or bill.
    #[arg(long)]
    stage: Stage,
    /// The component file (`.wasm`).
    file: PathBuf,
    #[command(flatten)]
    server: super::http::ServerArgs,
    /// Upload for this tenant through the admin API (--key is then the admin token).
    #[arg(long)]
    tenant: Option<String>,
    /// A setting for the plugin, `KEY=VALUE`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Wall-time limit of one call in milliseconds (default: the stage's).
    #[arg(long)]
    timeout_ms: Option<u32>,
    /// Memory limit of one instance in MiB (default 64).
    #[arg(long)]
    memory_mib: Option<u32>,
    /// Calls of this version running at once per host (default: one per core).
    #[arg(long)]
    calls_in_flight: Option<u32>,
    /// After a trap or timeout: `fallback` (the platform's plugin decides) or `defer`
    /// (fail closed: the message waits).
    #[arg(long, value_parser = ["fallback", "defer"])]
    on_failure: Option<String>,
    /// Store the version without making it active.
    #[arg(long)]
    no_activate: bool,
}

#[derive(Debug, Args)]
pub struct Target {
    /// The stage the plugin is for: ingest, route, send, bounce or bill.
    #[arg(long)]
    stage: Stage,
    /// The component file (`.wasm`).
    #[arg(required_unless_present = "builtin", conflicts_with = "builtin")]
    file: Option<PathBuf>,
    /// A default plugin by name instead of a file (see `sluice plugin list`).
    #[arg(long)]
    builtin: Option<String>,
    /// Wall-time limit of one call in milliseconds (default: the stage's).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Memory limit of one instance in MiB (default 64).
    #[arg(long)]
    memory_mib: Option<usize>,
    /// A setting for the plugin, `KEY=VALUE`; repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
}

pub fn run(cmd: PluginCommand) -> Result<ExitCode> {
    match cmd {
        PluginCommand::List => {
            for b in builtin::all() {
                println!(
                    "{:<18} {:<7} {:>7.1} KiB",
                    b.name,
                    b.stage,
                    b.wasm.len() as f64 / 1024.0
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Sample { stage } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Input::sample(stage).to_json())?
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Check(target) => check(target),
        PluginCommand::New(args) => super::plugin_new::run(args),
        PluginCommand::Upload(args) => upload(args),
        PluginCommand::Logs(args) => logs(args),
        PluginCommand::Run {
            target,
            input,
            sample,
        } => run_once(target, input, sample),
    }
}

struct Loaded {
    plugin: Plugin,
    name: String,
    /// A short name for log lines: the file's stem, or the default plugin's name.
    label: String,
    size: usize,
    compile: Duration,
}

fn load(target: &Target) -> Result<Loaded> {
    let (name, label, bytes) = match (&target.file, &target.builtin) {
        (_, Some(name)) => {
            let b = builtin::by_name(name).ok_or_else(|| {
                let names: Vec<&str> = builtin::all().iter().map(|b| b.name).collect();
                UsageError(format!(
                    "no default plugin called {name:?} (there are: {})",
                    names.join(", ")
                ))
            })?;
            (b.name.to_owned(), b.name.to_owned(), b.wasm.to_vec())
        }
        (Some(file), None) => {
            let bytes = std::fs::read(file)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", file.display())))?;
            let label = file
                .file_stem()
                .map_or_else(|| "plugin".into(), |s| s.to_string_lossy().into_owned());
            (file.display().to_string(), label, bytes)
        }
        (None, None) => {
            return Err(UsageError("name a plugin file or --builtin NAME".into()).into());
        }
    };
    let mut spec = PluginSpec::for_stage(target.stage);
    let defaults = Limits::for_stage(target.stage);
    spec.limits.timeout = target
        .timeout_ms
        .map_or(defaults.timeout, Duration::from_millis);
    spec.limits.memory_bytes = target.memory_mib.map_or(defaults.memory_bytes, |m| m << 20);
    for pair in &target.config {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--config {pair:?} is not KEY=VALUE")))?;
        spec.config.push((k.to_owned(), v.to_owned()));
    }
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let started = Instant::now();
    // One line: what could not be loaded, and why.
    let plugin = runtime
        .load(target.stage, &name, &bytes, spec)
        .map_err(|e| {
            anyhow::anyhow!("{name} cannot be loaded as a {} plugin: {e}", target.stage)
        })?;
    Ok(Loaded {
        plugin,
        name,
        label,
        size: bytes.len(),
        compile: started.elapsed(),
    })
}

/// A stage's input, parsed from JSON or taken from the samples.
enum Input {
    Ingest(stage::Submission),
    Route(stage::RouteInput),
    Send(stage::Attempt),
    Bounce(stage::BounceInput),
    Bill(stage::BillInput),
}

impl Input {
    fn sample(stage: Stage) -> Input {
        match stage {
            Stage::Ingest => Input::Ingest(stage::samples::submission()),
            Stage::Route => Input::Route(stage::samples::route_input()),
            Stage::Send => Input::Send(stage::samples::attempt()),
            Stage::Bounce => Input::Bounce(stage::samples::bounce_input()),
            Stage::Bill => Input::Bill(stage::samples::bill_input()),
        }
    }

    fn parse(stage: Stage, text: &str, origin: &str) -> Result<Input> {
        let bad = |e: serde_json::Error| {
            UsageError(format!(
                "{origin}: not a valid {stage} input at line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
        };
        Ok(match stage {
            Stage::Ingest => Input::Ingest(serde_json::from_str(text).map_err(bad)?),
            Stage::Route => Input::Route(serde_json::from_str(text).map_err(bad)?),
            Stage::Send => Input::Send(serde_json::from_str(text).map_err(bad)?),
            Stage::Bounce => Input::Bounce(serde_json::from_str(text).map_err(bad)?),
            Stage::Bill => Input::Bill(serde_json::from_str(text).map_err(bad)?),
        })
    }

    /// Calls the plugin; the answer as JSON.
    fn call(&self, plugin: &Plugin) -> Result<serde_json::Value, crate::runtime::PluginError> {
        fn json<T: Serialize>(v: T) -> serde_json::Value {
            serde_json::to_value(v).expect("stage types serialise")
        }
        Ok(match self {
            Input::Ingest(i) => json(plugin.ingest(i)?),
            Input::Route(i) => json(plugin.route(i)?),
            Input::Send(i) => json(plugin.send(i)?),
            Input::Bounce(i) => json(plugin.bounce(i)?),
            Input::Bill(i) => json(plugin.bill(i)?),
        })
    }

    fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Input::Ingest(i) => serde_json::to_value(i),
            Input::Route(i) => serde_json::to_value(i),
            Input::Send(i) => serde_json::to_value(i),
            Input::Bounce(i) => serde_json::to_value(i),
            Input::Bill(i) => serde_json::to_value(i),
        };
        v.expect("stage types serialise")
    }
}

/// What the plugin logged, one line each: `plugin NAME/STAGE info: …` (NAME: the
/// file's stem or the default plugin's name).
fn print_plugin_log(loaded: &Loaded, stage: Stage) {
    let label = format!("{}/{stage}", loaded.label);
    for line in loaded.plugin.log().drain() {
        if line.source != LogSource::Host {
            eprintln!("{}", line.render(&label));
        }
    }
}

fn check(target: Target) -> Result<ExitCode> {
    let loaded = load(&target)?;
    let input = Input::sample(target.stage);
    let started = Instant::now();
    let answer = input.call(&loaded.plugin);
    let took = started.elapsed();
    print_plugin_log(&loaded, target.stage);
    match answer {
        Ok(answer) => {
            println!(
                "ok: {} serves stage {} ({:.1} KiB, compiled in {} ms, sample call in {} µs): {}",
                loaded.name,
                target.stage,
                loaded.size as f64 / 1024.0,
                loaded.compile.as_millis(),
                took.as_micros(),
                summarize(&answer)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let msg = format!(
                "{}: the sample {} call failed: {e}",
                loaded.name, target.stage
            );
            eprintln!("error: {msg}");
            Err(super::Reported(msg).into())
        }
    }
}

/// The answer on one short line.
fn summarize(answer: &serde_json::Value) -> String {
    let text = answer.to_string();
    match text.char_indices().nth(160) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn run_once(target: Target, input: Option<PathBuf>, sample: bool) -> Result<ExitCode> {
    let input = if sample {
        Input::sample(target.stage)
    } else {
        let path = input.expect("clap requires --input without --sample");
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("cannot read the input from stdin")?
        } else {
            std::fs::read_to_string(&path)
                .map_err(|e| UsageError(format!("cannot read {}: {e}", path.display())))?
        };
        Input::parse(target.stage, &text, &path.display().to_string())?
    };
    let loaded = load(&target)?;
    let answer = input.call(&loaded.plugin);
    print_plugin_log(&loaded, target.stage);
    match answer {
        Ok(answer) => {
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let msg = format!("{}: {e}", loaded.name);
            eprintln!("error: {msg}");
            Err(super::Reported(msg).into())
        }
    }
}

/// Percent-encodes a query value.
fn query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn upload(args: UploadArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| UsageError(format!("cannot read {}: {e}", args.file.display())))?;
    let mut query = Vec::new();
    for pair in &args.config {
        if !pair.contains('=') {
            return Err(UsageError(format!("--config {pair:?} is not KEY=VALUE")).into());
        }
        query.push(format!("config={}", query_value(pair)));
    }
    if let Some(t) = args.timeout_ms {
        query.push(format!("timeout_ms={t}"));
    }
    if let Some(m) = args.memory_mib {
        query.push(format!("memory_mib={m}"));
    }
    if let Some(n) = args.calls_in_flight {
        query.push(format!("calls_in_flight={n}"));
    }
    if let Some(p) = &args.on_failure {
        query.push(format!("on_failure={p}"));
    }
    if args.no_activate {
        query.push("activate=false".into());
    }
    let path = match &args.tenant {
        Some(t) => format!(
            "/admin/v1/tenants/{}/plugins/{}",
            query_value(t),
            args.stage
        ),
        None => format!("/v1/plugins/{}", args.stage),
    };
    let path = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let resp = args
        .server
        .request("PUT", &path, "application/wasm", &bytes)
        .with_context(|| format!("uploading {}", args.file.display()))?;
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_else(|_| {
        serde_json::json!({"error": {"code": "http", "message": String::from_utf8_lossy(&resp.body)}})
    });
    if resp.status != 201 {
        let msg = format!(
            "{} was refused by {} ({} {}): {}",
            args.file.display(),
            args.server.url().0,
            resp.status,
            body["error"]["code"].as_str().unwrap_or("error"),
            body["error"]["message"].as_str().unwrap_or("")
        );
        eprintln!("error: {msg}");
        return Err(super::Reported(msg).into());
    }
    let v = &body["version"];
    let check = &body["check"];
    println!(
        "ok: {} is version {} of the {} plugin (sha256 {}, {:.1} KiB; compiled in {} ms, sample call in {} µs){}",
        args.file.display(),
        v["version"],
        args.stage,
        v["sha256"].as_str().unwrap_or("?"),
        v["size"].as_u64().unwrap_or(0) as f64 / 1024.0,
        check["compile_ms"],
        check["sample_us"],
        if body["active"] == true {
            "; active"
        } else {
            "; not activated"
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Pages through `GET …/plugins/{stage}/logs` from `--after`, printing each line as
/// `plugin TENANT/STAGE vN LEVEL: message key=value …`.
fn logs(args: LogsArgs) -> Result<ExitCode> {
    let base = match &args.tenant {
        Some(t) => format!(
            "/admin/v1/tenants/{}/plugins/{}/logs",
            query_value(t),
            args.stage
        ),
        None => format!("/v1/plugins/{}/logs", args.stage),
    };
    let mut after = args.after;
    loop {
        let resp = args
            .server
            .request(
                "GET",
                &format!("{base}?after={after}"),
                "application/json",
                b"",
            )
            .context("reading the plugin log")?;
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        if resp.status != 200 {
            let msg = format!(
                "the log was refused ({} {}): {}",
                resp.status,
                body["error"]["code"].as_str().unwrap_or("error"),
                body["error"]["message"].as_str().unwrap_or("")
            );
            eprintln!("error: {msg}");
            return Err(super::Reported(msg).into());
        }
        let tenant = body["tenant"].as_str().unwrap_or("?");
        let label = format!("{tenant}/{}", args.stage);
        if let Some(missed) = body["missed"].as_u64().filter(|m| *m > 0) {
            eprintln!("({missed} lines were dropped before they could be read)");
        }
        let lines: Vec<crate::runtime::LogLine> =
            serde_json::from_value(body["lines"].clone()).context("the log's lines")?;
        for line in &lines {
            println!("{}", line.render(&label));
        }
        match (body["next"].as_str(), lines.last()) {
            (Some(_), Some(last)) if last.seq > after => after = last.seq,
            _ => return Ok(ExitCode::SUCCESS),
        }
    }
}
