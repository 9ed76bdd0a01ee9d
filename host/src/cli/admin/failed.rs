//! `sluice admin failed …`: the exception queue (`/admin/v1/failed`): recipients that
//! failed or expired, oldest change first, and requeueing one (due at once, with a
//! `requeued` event).

use super::Ctx;
use super::client::seg;
use super::table::{Table, cell_text, duration_ms, text};
use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

/// The most rows one listing asks for (the API's own cap).
const MAX_LIMIT: u32 = 10_000;

#[derive(Debug, Subcommand)]
pub enum FailedCommand {
    /// Failed and expired recipients, oldest change first.
    List {
        /// How many at most (1–10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
        limit: u32,
    },
    /// Puts a failed or expired recipient back in the queue, due now.
    Requeue {
        message_id: String,
        /// The recipient's index in the message (the list's IDX).
        idx: u32,
    },
}

pub fn run(ctx: &Ctx, cmd: FailedCommand) -> Result<()> {
    match cmd {
        FailedCommand::List { limit } => {
            let a = ctx.api.get(&format!("/admin/v1/failed?limit={limit}"))?;
            let now = super::table::now_ms();
            ctx.show(&a, |v| list(&v["failed"], now))
        }
        FailedCommand::Requeue { message_id, idx } => {
            let path = format!("/admin/v1/failed/{}/{idx}/requeue", seg(&message_id));
            let a = ctx.api.call("POST", &path, None)?;
            ctx.show(&a, |_| {
                format!(
                    "recipient {idx} of message {} is queued again, due now\n",
                    cell_text(&message_id, 100)
                )
            })
        }
    }
}

fn list(rows: &Value, now_ms: i64) -> String {
    let mut t = Table::new(&[
        "MESSAGE",
        ">IDX",
        "TENANT",
        "RECIPIENT",
        "STATE",
        ">ATTEMPTS",
        "RELAY",
        ">AGE",
        "LAST REPLY",
    ]);
    for r in rows.as_array().into_iter().flatten() {
        t.row(vec![
            text(&r["message_id"]),
            text(&r["recipient_idx"]),
            text(&r["tenant_id"]),
            text(&r["address"]),
            text(&r["state"]),
            text(&r["attempts"]),
            text(&r["last_relay"]),
            r["updated_at_ms"]
                .as_i64()
                .map_or_else(|| "-".into(), |at| duration_ms(now_ms - at)),
            text(&r["last_reply"]),
        ]);
    }
    t.render("(no failed or expired recipients)")
}
