//! `sluice admin …`: the admin API from a shell. Each resource has its module (relays,
//! tenants and their keys, retries, the queue and its controls, the exception queue,
//! nodes, a live view); they
//! share one [`client`] (URL, token, errors) and one [`table`] module (columns, units).
//!
//! Output is a table (or `key: value` lines) for people, or with `--json` the API's
//! JSON as it came, for scripts; a command whose answer has no body (204) prints `{}`.

mod client;
mod failed;
mod nodes;
mod queue;
mod relays;
mod retry;
mod table;
mod tenants;
mod top;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

/// The server, the output form and what to do.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Sluice's HTTP API [default: http://127.0.0.1:8025]. The admin token is read from
    /// SLUICE_ADMIN_TOKEN.
    #[arg(long, env = "SLUICE_URL", value_name = "URL", global = true)]
    url: Option<String>,
    /// Print the API's JSON as it came (for scripts) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Relays: list with live stats, show, add, drain, activate, weight, delete.
    #[command(subcommand)]
    Relays(relays::RelaysCommand),
    /// Tenants and their API keys.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Make deferred recipients due now (by message, relay, domain, tenant, or all).
    Retry(retry::RetryArgs),
    /// The live queue: recipients and oldest age by state, tenant, relay and domain.
    Queue(queue::QueueArgs),
    #[command(flatten)]
    Control(queue::Control),
    /// The exception queue: failed and expired recipients; requeue one.
    #[command(subcommand)]
    Failed(failed::FailedCommand),
    /// The nodes on the store: alive, dead or stopped, the leader, leases held.
    Nodes,
    /// A live view of each relay's rates, refreshed every few seconds (q or Ctrl-C quits).
    Top(top::TopArgs),
}

/// What every command works with: the API and how to print.
struct Ctx {
    api: client::Client,
    json: bool,
}

impl Ctx {
    /// Prints an answer: its JSON as it came with `--json`, else `human(json)`.
    fn show(&self, answer: &client::Answer, human: impl FnOnce(&Value) -> String) -> Result<()> {
        if self.json {
            if answer.raw.is_empty() {
                out("{}\n")
            } else {
                let mut raw = answer.raw.clone();
                if raw.last() != Some(&b'\n') {
                    raw.push(b'\n');
                }
                out_bytes(&raw)
            }
        } else {
            out(&human(&answer.json))
        }
    }
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly.
fn out(s: &str) -> Result<()> {
    out_bytes(s.as_bytes())
}

fn out_bytes(b: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(b).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn run(args: AdminArgs) -> Result<ExitCode> {
    let token = client::Token::from_env()?;
    let ctx = Ctx {
        api: client::Client::new(args.url, token),
        json: args.json,
    };
    match args.command {
        AdminCommand::Relays(cmd) => relays::run(&ctx, cmd)?,
        AdminCommand::Tenants(cmd) => tenants::run(&ctx, cmd)?,
        AdminCommand::Retry(a) => retry::run(&ctx, a)?,
        AdminCommand::Queue(a) => queue::summary(&ctx, a)?,
        AdminCommand::Control(c) => queue::control(&ctx, c)?,
        AdminCommand::Failed(cmd) => failed::run(&ctx, cmd)?,
        AdminCommand::Nodes => nodes::run(&ctx)?,
        AdminCommand::Top(a) => top::run(&ctx, a)?,
    }
    Ok(ExitCode::SUCCESS)
}
