//! `sluice admin nodes`: `GET /admin/v1/nodes`, the nodes on the store (one for
//! SQLite, each `sluice serve` on a shared PostgreSQL): alive, dead or stopped, the
//! leader, the leases each holds.

use super::Ctx;
use super::table::{Table, duration_ms, text, time};
use anyhow::Result;
use serde_json::Value;

pub fn run(ctx: &Ctx) -> Result<()> {
    let a = ctx.api.get("/admin/v1/nodes")?;
    ctx.show(&a, render)
}

fn ms(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), duration_ms)
}

fn render(v: &Value) -> String {
    let mut t = Table::new(&[
        "NODE",
        "ADDRESS",
        "STATE",
        "LEADER",
        ">HEARTBEAT AGE",
        ">LEASES",
        "STARTED (UTC)",
    ]);
    for n in v["nodes"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&n["id"]),
            text(&n["address"]),
            text(&n["state"]),
            if n["leader"].as_bool() == Some(true) {
                "yes"
            } else {
                "-"
            }
            .into(),
            ms(&n["heartbeat_age_ms"]),
            text(&n["leases_held"]),
            time(&n["started_at_ms"]),
        ]);
    }
    format!(
        "answered by {}; heartbeat every {}, dead after {} without one\n\n{}",
        text(&v["this_node"]),
        ms(&v["heartbeat_ms"]),
        ms(&v["dead_after_ms"]),
        t.render("(no nodes)")
    )
}
