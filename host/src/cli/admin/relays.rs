//! `sluice admin relays …`: `/admin/v1/relays`. The list shows each relay's live
//! figures: recipients in flight on the node answering, whether it is up, and its
//! last minute from the shared stat windows (what the route plugin sees).

use super::Ctx;
use super::client::seg;
use super::table::{self, Table, count, duration_ms, fields, text};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum RelaysCommand {
    /// Every relay with its state, health, load and last minute's counts.
    List,
    /// One relay: settings, health and every stat window.
    Show { id: String },
    /// Adds a relay; it takes work at once (a platform relay given no --tag joins
    /// pool:platform).
    Add(AddArgs),
    /// Stops giving the relay new work; what it has is finished.
    #[command(visible_alias = "suspend")]
    Drain { id: String },
    /// Gives a drained relay work again; mail waiting for it is due at once.
    #[command(visible_alias = "resume")]
    Activate { id: String },
    /// Sets the relay's weight (its share among the relays a router picks from).
    Weight { id: String, weight: u32 },
    /// Removes the relay.
    Delete { id: String },
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    id: String,
    /// `smtp://host:port` (STARTTLS when offered), `smtps://host:port`.
    // Not `url`: clap would take it for the global `--url` of the server.
    #[arg(value_name = "URL")]
    relay_url: String,
    #[arg(long)]
    weight: Option<u32>,
    #[arg(long)]
    connection_limit: Option<u32>,
    #[arg(long)]
    rate_limit_per_sec: Option<u32>,
    /// A tag (e.g. `pool:bulk`); repeat for more.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// The tenant that brings this relay (else a platform relay).
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    auth_user: Option<String>,
    /// The variable, on each host, holding the AUTH password (never the password).
    #[arg(long, conflicts_with = "auth_password_file")]
    auth_password_env: Option<String>,
    /// The file, on each host, holding the AUTH password.
    #[arg(long)]
    auth_password_file: Option<String>,
    /// A PEM file of CA certificates, on each host, for a relay behind a private CA.
    #[arg(long)]
    tls_ca_file: Option<String>,
}

pub fn run(ctx: &Ctx, cmd: RelaysCommand) -> Result<()> {
    match cmd {
        RelaysCommand::List => {
            let a = ctx.api.get("/admin/v1/relays")?;
            ctx.show(&a, |v| list(&v["relays"]))
        }
        RelaysCommand::Show { id } => {
            let a = ctx.api.get(&format!("/admin/v1/relays/{}", seg(&id)))?;
            ctx.show(&a, show)
        }
        RelaysCommand::Add(a) => add(ctx, a),
        RelaysCommand::Drain { id } => patch(ctx, &id, json!({"state": "draining"}), |r| {
            format!(
                "relay {} is draining: it finishes what it has and takes no new work\n",
                text(&r["id"])
            )
        }),
        RelaysCommand::Activate { id } => {
            // Not a PATCH: resuming also makes the mail that waited for it due now.
            let path = format!("/admin/v1/relays/{}/resume", seg(&id));
            let a = ctx.api.call("POST", &path, None)?;
            ctx.show(&a, |r| {
                format!("relay {} is active: it takes new work\n", text(&r["relay"]))
            })
        }
        RelaysCommand::Weight { id, weight } => patch(ctx, &id, json!({"weight": weight}), |r| {
            format!(
                "relay {} has weight {}\n",
                text(&r["id"]),
                text(&r["weight"])
            )
        }),
        RelaysCommand::Delete { id } => {
            let a = ctx
                .api
                .call("DELETE", &format!("/admin/v1/relays/{}", seg(&id)), None)?;
            ctx.show(&a, |_| {
                format!("relay {} deleted\n", table::cell_text(&id, 200))
            })
        }
    }
}

fn patch(ctx: &Ctx, id: &str, body: Value, said: impl FnOnce(&Value) -> String) -> Result<()> {
    let path = format!("/admin/v1/relays/{}", seg(id));
    let a = ctx.api.call("PATCH", &path, Some(&body))?;
    ctx.show(&a, said)
}

fn add(ctx: &Ctx, a: AddArgs) -> Result<()> {
    let mut body = json!({"id": a.id, "url": a.relay_url});
    let optional = [
        ("weight", a.weight.map(Value::from)),
        ("connection_limit", a.connection_limit.map(Value::from)),
        ("rate_limit_per_sec", a.rate_limit_per_sec.map(Value::from)),
        ("owner", a.owner.map(Value::from)),
        ("auth_user", a.auth_user.map(Value::from)),
        ("auth_password_env", a.auth_password_env.map(Value::from)),
        ("auth_password_file", a.auth_password_file.map(Value::from)),
        ("tls_ca_file", a.tls_ca_file.map(Value::from)),
        ("tags", (!a.tags.is_empty()).then(|| Value::from(a.tags))),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    let answer = ctx.api.call("POST", "/admin/v1/relays", Some(&body))?;
    ctx.show(&answer, |r| {
        format!(
            "relay {} added: {}, weight {}, {} connections, tags {}\n",
            text(&r["id"]),
            text(&r["url"]),
            text(&r["weight"]),
            text(&r["connection_limit"]),
            text(&r["tags"]),
        )
    })
}

/// The window of `secs` seconds of a relay's `windows`, if there is one.
pub fn window(relay: &Value, secs: u64) -> Option<&Value> {
    relay["windows"]
        .as_array()?
        .iter()
        .find(|w| w["window_secs"].as_u64() == Some(secs))
}

/// A counter of a window (0 when absent).
pub fn n(w: Option<&Value>, field: &str) -> u64 {
    w.and_then(|w| w[field].as_u64()).unwrap_or(0)
}

/// `up`, `down`, or `-` (no client on this node).
pub fn health(relay: &Value) -> &'static str {
    match relay["up"].as_bool() {
        Some(true) => "up",
        Some(false) => "down",
        None => "-",
    }
}

/// A window's mean latency, `-` without attempts.
pub fn latency(w: Option<&Value>) -> String {
    match w.and_then(|w| w["mean_latency_ms"].as_i64()) {
        Some(ms) if n(w, "sent") > 0 => duration_ms(ms),
        _ => "-".into(),
    }
}

fn list(relays: &Value) -> String {
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "UP",
        ">IN FLIGHT",
        ">WEIGHT",
        ">SENT 1m",
        ">DELIVERED",
        ">DEFERRED",
        ">BOUNCED",
        ">LATENCY",
        "OWNER",
        "URL",
    ]);
    for r in relays.as_array().into_iter().flatten() {
        let w = window(r, 60);
        t.row(vec![
            text(&r["id"]),
            text(&r["state"]),
            health(r).into(),
            format!("{}/{}", text(&r["in_flight"]), text(&r["connection_limit"])),
            text(&r["weight"]),
            count(n(w, "sent")),
            count(n(w, "delivered")),
            count(n(w, "deferred")),
            count(n(w, "hard_bounced") + n(w, "soft_bounced")),
            latency(w),
            text(&r["owner"]),
            text(&r["url"]),
        ]);
    }
    t.render("(no relays)")
}

fn show(r: &Value) -> String {
    let pipelining = match r["pipelining"].as_bool() {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not known yet (no connection)",
    };
    let mut s = fields(&[
        ("id", text(&r["id"])),
        ("url", text(&r["url"])),
        ("state", text(&r["state"])),
        ("health", health(r).into()),
        (
            "in flight",
            format!(
                "{} of {}",
                text(&r["in_flight"]),
                text(&r["connection_limit"])
            ),
        ),
        ("rate limit", rate_limit(&r["rate_limit_per_sec"])),
        ("weight", text(&r["weight"])),
        ("tags", text(&r["tags"])),
        ("owner", owner(&r["owner"])),
        ("auth user", text(&r["auth_user"])),
        ("auth secret", text(&r["auth_secret_ref"])),
        ("tls ca file", text(&r["tls_ca_file"])),
        ("pipelining", pipelining.into()),
        (
            "created",
            format!("{} UTC", table::time(&r["created_at_ms"])),
        ),
    ]);
    let mut t = Table::new(&[
        "WINDOW",
        ">SENT",
        ">RATE",
        ">DELIVERED",
        ">DEFERRED",
        ">HARD",
        ">SOFT",
        ">BLOCKED",
        ">LATENCY",
    ]);
    for w in r["windows"].as_array().into_iter().flatten() {
        let secs = w["window_secs"].as_u64().unwrap_or(0);
        let w = Some(w);
        t.row(vec![
            table::window(secs),
            count(n(w, "sent")),
            table::rate(n(w, "sent"), secs),
            count(n(w, "delivered")),
            count(n(w, "deferred")),
            count(n(w, "hard_bounced")),
            count(n(w, "soft_bounced")),
            count(n(w, "blocked")),
            latency(w),
        ]);
    }
    s.push('\n');
    s.push_str(&t.render("(no windows yet)"));
    s
}

fn rate_limit(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "none".into(), |n| format!("{n}/s"))
}

fn owner(v: &Value) -> String {
    match v.as_str() {
        Some(t) => format!("tenant {t}"),
        None => "the platform".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_the_last_minute() {
        let relays = json!([{
            "id": "r1", "url": "smtp://127.0.0.1:2525", "state": "active", "up": true,
            "in_flight": 2, "connection_limit": 16, "weight": 100, "owner": null,
            "windows": [
                {"window_secs": 60, "sent": 12345, "delivered": 12000, "deferred": 300,
                 "hard_bounced": 40, "soft_bounced": 5, "blocked": 0, "mean_latency_ms": 85},
                {"window_secs": 900, "sent": 99999}
            ]
        }]);
        let out = list(&relays);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("ID  STATE   UP  IN FLIGHT  WEIGHT  SENT 1m"),
            "{out}"
        );
        assert!(
            lines[1].contains("r1  active  up       2/16     100    12.3k      12.0k"),
            "{out}"
        );
        assert!(
            lines[1].ends_with("85ms  -      smtp://127.0.0.1:2525"),
            "{out}"
        );
    }
}
