//! `sluice admin queue`, `hold`, `release`, `cancel`: the live queue summed
//! (`GET /admin/v1/queue`: recipients and oldest age by state, by why they are held,
//! by tenant, relay and recipient domain) and the controls over a selection of it
//! (`POST /admin/v1/queue/hold|release|cancel`), by message, relay, domain and/or
//! tenant: every one given must match.

use super::Ctx;
use super::table::{Table, count, duration_ms, text, time};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

/// The most groups a grouping shows (the API's own cap).
const MAX_TOP: u64 = 1000;

#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// Groups shown per tenant, relay and domain grouping, largest first (1–1000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_TOP))]
    top: u64,
}

/// What `hold`, `release` and `cancel` act on.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).multiple(true)
    .args(["message", "relay", "domain", "tenant"])))]
pub struct Select {
    /// A message id.
    #[arg(long)]
    message: Option<String>,
    /// The relay of the current or last attempt, or the one waited for.
    #[arg(long)]
    relay: Option<String>,
    /// The recipients' domain.
    #[arg(long)]
    domain: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct WithReason {
    #[command(flatten)]
    select: Select,
    /// Why (kept with the recipients' events).
    #[arg(long)]
    reason: Option<String>,
}

/// The controls, each a top-level `sluice admin` command.
#[derive(Debug, Subcommand)]
pub enum Control {
    /// Holds the selected recipients: nothing is sent until they are released.
    Hold(WithReason),
    /// Releases held recipients: due now.
    Release(Select),
    /// Fails the selected recipients that are not delivered yet, with a reason.
    Cancel(WithReason),
}

pub fn summary(ctx: &Ctx, a: QueueArgs) -> Result<()> {
    let answer = ctx.api.get(&format!("/admin/v1/queue?top={}", a.top))?;
    ctx.show(&answer, render)
}

pub fn control(ctx: &Ctx, c: Control) -> Result<()> {
    let (what, select, reason) = match c {
        Control::Hold(w) => ("hold", w.select, w.reason),
        Control::Release(s) => ("release", s, None),
        Control::Cancel(w) => ("cancel", w.select, w.reason),
    };
    let mut body = json!({});
    for (k, v) in [
        ("message_id", select.message),
        ("relay", select.relay),
        ("domain", select.domain),
        ("tenant", select.tenant),
        ("reason", reason),
    ] {
        if let Some(v) = v {
            body[k] = v.into();
        }
    }
    let answer = ctx
        .api
        .call("POST", &format!("/admin/v1/queue/{what}"), Some(&body))?;
    ctx.show(&answer, |r| {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        match what {
            "hold" => format!(
                "{} held; {} in flight now, held if their attempt does not finish them\n",
                recipients(n("held")),
                n("in_flight_marked")
            ),
            "release" => format!("{} released, due now\n", recipients(n("released"))),
            _ => format!(
                "{} cancelled (failed); {} in flight now left to finish their attempt\n",
                recipients(n("cancelled")),
                n("in_flight")
            ),
        }
    })
}

fn recipients(n: u64) -> String {
    if n == 1 {
        "1 recipient".into()
    } else {
        format!("{n} recipients")
    }
}

fn age(v: &Value) -> String {
    v.as_i64().map_or_else(|| "-".into(), duration_ms)
}

/// A grouping's table: its groups, then `(other)` summing the rest.
fn groups(title: &'static str, rows: &[&Value], none: &str) -> String {
    let mut t = Table::new(&[title, ">RECIPIENTS", ">OLDEST"]);
    for g in rows {
        t.row(vec![
            text(&g["key"]),
            count(g["recipients"].as_u64().unwrap_or(0)),
            age(&g["oldest_age_ms"]),
        ]);
    }
    t.render(none)
}

fn top(title: &'static str, v: &Value) -> String {
    let mut rows: Vec<&Value> = v["top"].as_array().into_iter().flatten().collect();
    if !v["other"].is_null() {
        rows.push(&v["other"]);
    }
    let shown = v["top"].as_array().map_or(0, Vec::len);
    let mut s = groups(title, &rows, "(none queued)");
    let all = v["groups"].as_u64().unwrap_or(0);
    if all as usize > shown {
        s.push_str(&format!("({shown} of {all} shown; --top for more)\n"));
    }
    s
}

fn render(v: &Value) -> String {
    let list = |k: &str| -> Vec<&Value> { v[k].as_array().into_iter().flatten().collect() };
    let mut out = format!("queue at {} UTC\n\n", time(&v["at_ms"]));
    out.push_str(&groups("STATE", &list("by_state"), "(empty)"));
    out.push('\n');
    out.push_str(&groups("HELD BY", &list("held_by"), "(none held)"));
    for (title, key) in [
        ("TENANT", "by_tenant"),
        ("RELAY", "by_relay"),
        ("DOMAIN", "by_domain"),
    ] {
        out.push('\n');
        out.push_str(&top(title, &v[key]));
    }
    let suspended = list("suspended_tenants");
    if !suspended.is_empty() {
        let mut t = Table::new(&["SUSPENDED TENANT", "SINCE (UTC)", "REASON"]);
        for x in suspended {
            t.row(vec![
                text(&x["tenant"]),
                time(&x["since_ms"]),
                text(&x["reason"]),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render(""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_shows_each_grouping_and_what_is_left_out() {
        let v = json!({
            "at_ms": 0,
            "by_state": [{"key": "queued", "recipients": 12345, "oldest_age_ms": 65000},
                         {"key": "held", "recipients": 0, "oldest_age_ms": null}],
            "held_by": [{"key": "hold", "recipients": 0, "oldest_age_ms": null}],
            "by_tenant": {"top": [{"key": "t", "recipients": 3, "oldest_age_ms": 10}],
                          "groups": 3,
                          "other": {"key": "(other)", "recipients": 2, "oldest_age_ms": 20}},
            "by_relay": {"top": [], "groups": 0, "other": null},
            "by_domain": {"top": [], "groups": 0, "other": null},
            "suspended_tenants": [{"tenant": "t", "since_ms": 0, "reason": "abuse"}]
        });
        let s = render(&v);
        assert!(s.contains("STATE   RECIPIENTS  OLDEST\nqueued       12.3k   1m 5s\nheld             0       -\n"), "{s}");
        assert!(
            s.contains("(other)           2    20ms\n(1 of 3 shown; --top for more)\n"),
            "{s}"
        );
        assert!(
            s.contains("RELAY  RECIPIENTS  OLDEST\n(none queued)\n"),
            "{s}"
        );
        assert!(
            s.contains("t                 1970-01-01 00:00:00  abuse"),
            "{s}"
        );
    }
}
