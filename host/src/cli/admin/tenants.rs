//! `sluice admin tenants …`: `/admin/v1/tenants` and each tenant's API keys. A new
//! key is printed once, as the API shows it once; only its hash is kept.

use super::Ctx;
use super::client::seg;
use super::table::{Table, cell_text, fields, text, time};
use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Every tenant.
    List,
    /// One tenant's settings.
    Show { id: String },
    /// Creates a tenant (with no key: `tenants keys create ID` makes one).
    Create(CreateArgs),
    /// Suspends the tenant's sending: its queued and deferred recipients are held
    /// (new mail is still accepted, and held) until it is resumed.
    Suspend {
        id: String,
        /// Why (kept with the suspension and the held recipients' events).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resumes a suspended tenant's sending: what its suspension held is due now.
    Resume { id: String },
    /// A tenant's API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    id: String,
    /// A display name (default: the id).
    #[arg(long)]
    name: Option<String>,
    /// A domain the tenant may send from; repeat for more.
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Vec<String>,
    /// A relay pool the tenant may use (default: pool:platform); repeat for more.
    #[arg(long = "pool", value_name = "POOL")]
    pools: Vec<String>,
    /// A default route plugin by name (e.g. router-weighted).
    #[arg(long)]
    route_plugin: Option<String>,
    /// Let the header From:/Sender: be outside the allowed domains.
    #[arg(long)]
    no_header_from_check: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The tenant's keys, live and revoked (their prefixes, never the keys).
    List { tenant: String },
    /// Makes a key and prints it, this once.
    Create { tenant: String },
    /// Revokes a key by its id.
    Revoke { tenant: String, key_id: String },
}

pub fn run(ctx: &Ctx, cmd: TenantsCommand) -> Result<()> {
    match cmd {
        TenantsCommand::List => {
            let a = ctx.api.get("/admin/v1/tenants")?;
            ctx.show(&a, |v| list(&v["tenants"]))
        }
        TenantsCommand::Show { id } => {
            let a = ctx.api.get(&format!("/admin/v1/tenants/{}", seg(&id)))?;
            ctx.show(&a, show)
        }
        TenantsCommand::Create(c) => {
            let mut body = json!({
                "id": c.id,
                "allowed_sender_domains": c.domains,
            });
            if let Some(name) = c.name {
                body["name"] = name.into();
            }
            if !c.pools.is_empty() {
                body["pools"] = c.pools.into();
            }
            if let Some(p) = c.route_plugin {
                body["route_plugin"] = p.into();
            }
            if c.no_header_from_check {
                body["header_from_check"] = false.into();
            }
            let a = ctx.api.call("POST", "/admin/v1/tenants", Some(&body))?;
            ctx.show(&a, |t| {
                format!(
                    "tenant {} created (domains {}, pools {}); make it a key with \
                     `sluice admin tenants keys create {}`\n",
                    text(&t["id"]),
                    text(&t["allowed_sender_domains"]),
                    text(&t["pools"]),
                    text(&t["id"]),
                )
            })
        }
        TenantsCommand::Suspend { id, reason } => {
            let path = format!("/admin/v1/tenants/{}/suspend", seg(&id));
            let body = reason.map(|r| json!({ "reason": r }));
            let a = ctx.api.call("POST", &path, body.as_ref())?;
            ctx.show(&a, |r| {
                format!(
                    "tenant {} suspended: {} recipients held, {} in flight held if their \
                     attempt does not finish them\n",
                    text(&r["tenant"]),
                    text(&r["recipients"]),
                    text(&r["in_flight_marked"]),
                )
            })
        }
        TenantsCommand::Resume { id } => {
            let path = format!("/admin/v1/tenants/{}/resume", seg(&id));
            let a = ctx.api.call("POST", &path, None)?;
            ctx.show(&a, |r| {
                format!(
                    "tenant {} resumed: {} recipients released, due now\n",
                    text(&r["tenant"]),
                    text(&r["recipients"]),
                )
            })
        }
        TenantsCommand::Keys(k) => keys(ctx, k),
    }
}

fn keys(ctx: &Ctx, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::List { tenant } => {
            let a = ctx
                .api
                .get(&format!("/admin/v1/tenants/{}/keys", seg(&tenant)))?;
            ctx.show(&a, |v| key_list(&v["keys"]))
        }
        KeysCommand::Create { tenant } => {
            let path = format!("/admin/v1/tenants/{}/keys", seg(&tenant));
            let a = ctx.api.call("POST", &path, None)?;
            ctx.show(&a, |k| {
                format!(
                    "{}(key {} of tenant {}: shown this once, only its hash is kept)\n",
                    fields(&[("key", text(&k["key"]))]),
                    text(&k["id"]),
                    text(&k["tenant_id"]),
                )
            })
        }
        KeysCommand::Revoke { tenant, key_id } => {
            let path = format!("/admin/v1/tenants/{}/keys/{}", seg(&tenant), seg(&key_id));
            let a = ctx.api.call("DELETE", &path, None)?;
            ctx.show(&a, |_| {
                format!(
                    "key {} of tenant {} revoked\n",
                    cell_text(&key_id, 100),
                    cell_text(&tenant, 100)
                )
            })
        }
    }
}

fn list(tenants: &Value) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "SENDER DOMAINS",
        "POOLS",
        "ROUTE PLUGIN",
        "FROM CHECK",
        "CREATED (UTC)",
    ]);
    for x in tenants.as_array().into_iter().flatten() {
        t.row(vec![
            text(&x["id"]),
            text(&x["name"]),
            domains(&x["allowed_sender_domains"]),
            text(&x["pools"]),
            route_plugin(&x["route_plugin"]),
            yes_no(&x["header_from_check"]),
            time(&x["created_at_ms"]),
        ]);
    }
    t.render("(no tenants)")
}

fn show(x: &Value) -> String {
    fields(&[
        ("id", text(&x["id"])),
        ("name", text(&x["name"])),
        ("sender domains", domains(&x["allowed_sender_domains"])),
        ("pools", text(&x["pools"])),
        ("route plugin", route_plugin(&x["route_plugin"])),
        ("header from check", yes_no(&x["header_from_check"])),
        ("created", format!("{} UTC", time(&x["created_at_ms"]))),
    ])
}

fn key_list(keys: &Value) -> String {
    let mut t = Table::new(&[
        "ID",
        "PREFIX",
        "ACCOUNT",
        "STATE",
        "CREATED (UTC)",
        "REVOKED (UTC)",
    ]);
    for k in keys.as_array().into_iter().flatten() {
        let revoked = !k["revoked_at_ms"].is_null();
        t.row(vec![
            text(&k["id"]),
            text(&k["prefix"]),
            text(&k["account_id"]),
            if revoked { "revoked" } else { "live" }.into(),
            time(&k["created_at_ms"]),
            time(&k["revoked_at_ms"]),
        ]);
    }
    t.render("(no keys)")
}

/// `*` is any sender domain; none is no sender at all.
fn domains(v: &Value) -> String {
    match v.as_array() {
        Some(a) if a.is_empty() => "none".into(),
        _ => text(v),
    }
}

fn route_plugin(v: &Value) -> String {
    v.as_str()
        .map_or_else(|| "platform default".into(), str::to_owned)
}

fn yes_no(v: &Value) -> String {
    match v.as_bool() {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}
