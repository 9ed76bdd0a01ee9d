//! `sluice serve` and `sluice pipeline check`.

use super::UsageError;
use crate::config::Pipeline;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The pipeline file; without it, the embedded default (SQLite under
    /// ./sluice-data, the default plugins, HTTP on 127.0.0.1:8025, a relay
    /// from SLUICE_RELAY if set).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// How long shutdown waits for in-flight attempts.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
    /// Make a new admin token and print it once (when the pipeline names none: the
    /// store keeps its hash); the one before stops working on every node.
    #[arg(long)]
    reset_admin_token: bool,
    /// How log lines are written on stderr: `text`, or `json` (one object per line).
    /// Which lines: SLUICE_LOG (e.g. `info` for one line per accepted message and per
    /// final outcome).
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t)]
    pub(super) log_format: crate::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Validate a pipeline file; every error names the file, line, column and key.
    Check {
        /// The pipeline file.
        file: PathBuf,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Pipeline> {
    let p = match path {
        Some(p) => Pipeline::load(p),
        None => Pipeline::embedded_default(),
    };
    p.map_err(|e| UsageError(e.to_string()).into())
}

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    let pipeline = load(args.pipeline.as_ref())?;
    if args.reset_admin_token && pipeline.admin.token.is_some() {
        return Err(UsageError(
            "--reset-admin-token: the pipeline names the admin token ([admin] token_env or \
             token_file); change it there"
                .into(),
        )
        .into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(crate::serve::run(
        pipeline,
        args.pipeline.clone(),
        Duration::from_secs(args.drain_secs),
        crate::serve::StartOptions {
            reset_admin_token: args.reset_admin_token,
        },
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn pipeline(cmd: PipelineCommand) -> Result<ExitCode> {
    match cmd {
        PipelineCommand::Check { file } => {
            let p = load(Some(&file))?;
            // What `serve` checks before it starts: the same function.
            let ready = crate::serve::preflight::check(&p).map_err(|e| {
                let lines: Vec<String> =
                    e.0.iter()
                        .map(|l| format!("{}: {l}", file.display()))
                        .collect();
                UsageError(lines.join("\n"))
            })?;
            for w in &ready.warnings {
                eprintln!("warning: {}: {w}", file.display());
            }
            println!(
                "ok: {} — {} relays, {} tenants, store {}, HTTP on {}",
                file.display(),
                p.relays.len(),
                p.tenants.len(),
                p.store.url,
                p.server.http_listen
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
