//! `sluice admin retry`: `POST /admin/v1/retry`. Deferred recipients selected by
//! message, relay, domain and/or tenant (every one given must match), or `--all`, are
//! due now instead of after their retry delay.

use super::Ctx;
use super::table::text;
use anyhow::Result;
use serde_json::json;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)
    .args(["message", "relay", "domain", "tenant", "all"])))]
pub struct RetryArgs {
    /// A message id.
    #[arg(long)]
    message: Option<String>,
    /// The relay of their last attempt, or the one they wait for.
    #[arg(long)]
    relay: Option<String>,
    /// The recipients' domain.
    #[arg(long)]
    domain: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// Every deferred recipient of every tenant.
    #[arg(long, conflicts_with_all = ["message", "relay", "domain", "tenant"])]
    all: bool,
}

pub fn run(ctx: &Ctx, a: RetryArgs) -> Result<()> {
    let mut body = json!({});
    for (k, v) in [
        ("message", a.message),
        ("relay", a.relay),
        ("domain", a.domain),
        ("tenant", a.tenant),
    ] {
        if let Some(v) = v {
            body[k] = v.into();
        }
    }
    if a.all {
        body["all"] = true.into();
    }
    let answer = ctx.api.call("POST", "/admin/v1/retry", Some(&body))?;
    ctx.show(&answer, |r| match r["retried"].as_u64() {
        Some(1) => "1 deferred recipient is due now\n".to_owned(),
        _ => format!("{} deferred recipients are due now\n", text(&r["retried"])),
    })
}
