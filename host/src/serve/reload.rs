//! SIGHUP reloads the pipeline file instead of ending the server.
//!
//! A file that does not load (a syntax error, an unknown key, a bad value) or names what
//! cannot be read (`config::resolve`: a secret, a plugin file, logins, a CA file) is
//! refused as a whole: the error is logged with its file, line and column, and the server goes on with
//! what it had. A file that loads is compared with the one applied last:
//! - `[[relay]]` and `[[tenant]]` entries that are new or changed in the file are written
//!   to the store (relays keep their stored state, so a drained relay stays drained); the
//!   running relay clients follow at once, and cached tenants are dropped. Entries the
//!   file did not change keep what the admin API made of them.
//! - Entries removed from the file stay in the store (they may be in use); the warning
//!   names them and the admin call that removes them.
//! - `[limits]` (message size, recipients) and `[admission]` (each tenant's requests in
//!   flight, accept rate and holds) take effect for the next request.
//! - The submission listeners' certificate and key files are read again by
//!   `submission.rs` on every SIGHUP, changed or not (a renewed certificate replaced in
//!   place); a file that does not load leaves the last good one in use.
//! - Every other section that changed (`[server]`, `[store]`, `[delivery]`,
//!   `[plugins]`, `[smtp_in]`, `[submission]`, `[admin]`, `[[log_source]]`, `[events]`, `[metrics]`,
//!   `[webhooks]`) needs a restart; the warning
//!   names each one, so an operator knows the edit did not take effect.

use super::state::{Server, now_ms};
use crate::config::{Pipeline, RelayConfig, TenantConfig};
use crate::logging::Chain;
use crate::store::{NewRelay, NewTenant, RelayState, TenantUpdate};
use std::path::PathBuf;
use std::sync::Arc;

/// Reloads `path` on every SIGHUP until shutdown. Without a file (the embedded default
/// pipeline) a SIGHUP is logged and ignored, never fatal.
pub async fn run(server: Arc<Server>, path: Option<PathBuf>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "cannot listen for SIGHUP; the pipeline cannot be reloaded");
            return;
        }
    };
    let mut applied = server.pipeline.clone();
    while hangups.recv().await.is_some() {
        let Some(path) = &path else {
            tracing::warn!(
                "SIGHUP: running on the embedded default pipeline, there is no file to reload"
            );
            continue;
        };
        let new = match Pipeline::load(path) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    file = %path.display(),
                    "SIGHUP: the pipeline file was not reloaded, the server keeps its current settings:\n{e}"
                );
                continue;
            }
        };
        // What `serve` reads before it starts (secrets, plugin files, logins, CA files):
        // a file it would refuse is refused here too.
        let unresolved = crate::config::resolve(&new).errors;
        if !unresolved.is_empty() {
            tracing::error!(
                file = %path.display(),
                "SIGHUP: the pipeline file was not reloaded, the server keeps its current settings:\n{}",
                unresolved.join("\n")
            );
            continue;
        }
        match apply(&server, &applied, &new).await {
            Ok(report) => {
                report.log(&path.display().to_string());
                applied = new;
            }
            Err(e) => tracing::error!(
                file = %path.display(),
                error = %format!("{e:#}"),
                "SIGHUP: applying the reloaded pipeline failed part way; send SIGHUP again once the store answers"
            ),
        }
    }
}

/// What a reload did and did not do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    relays_written: Vec<String>,
    tenants_written: Vec<String>,
    relays_left: Vec<String>,
    tenants_left: Vec<String>,
    /// Sections other than relays and tenants that changed and are now in force.
    applied: Vec<&'static str>,
    needs_restart: Vec<&'static str>,
}

impl Report {
    fn log(&self, file: &str) {
        tracing::info!(
            file,
            relays = ?self.relays_written,
            tenants = ?self.tenants_written,
            applied = %self.applied.join(", "),
            "SIGHUP: pipeline reloaded"
        );
        if !self.needs_restart.is_empty() {
            tracing::warn!(
                file,
                sections = %self.needs_restart.join(", "),
                "SIGHUP: these sections changed but take effect only after a restart"
            );
        }
        for id in &self.relays_left {
            tracing::warn!(relay = %id, "SIGHUP: relay no longer in the file is kept in the store; DELETE /admin/v1/relays/{id} removes it");
        }
        for id in &self.tenants_left {
            tracing::warn!(tenant = %id, "SIGHUP: tenant no longer in the file is kept in the store; DELETE /admin/v1/tenants/{id} removes it");
        }
    }
}

/// The sections that cannot change while the server runs, by the name an operator
/// writes in the file.
fn needs_restart(old: &Pipeline, new: &Pipeline) -> Vec<&'static str> {
    // Their Debug forms are compared, never shown: they may name secrets' sources.
    let same =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") == format!("{b:?}");
    let mut out = Vec::new();
    if !same(&old.server, &new.server) {
        out.push("[server]");
    }
    if !same(&old.store, &new.store) {
        out.push("[store]");
    }
    if !same(&old.admin, &new.admin) {
        out.push("[admin]");
    }
    if !same(&old.delivery, &new.delivery) {
        out.push("[delivery]");
    }
    if !same(&old.plugins, &new.plugins) {
        out.push("[plugins]");
    }
    if !same(&old.smtp_in, &new.smtp_in) {
        out.push("[smtp_in]");
    }
    if old.submission != new.submission {
        out.push("[submission]");
    }
    if !same(&old.log_sources, &new.log_sources) {
        out.push("[[log_source]]");
    }
    if old.metrics != new.metrics {
        out.push("[metrics]");
    }
    if old.events != new.events {
        out.push("[events]");
    }
    if old.webhooks != new.webhooks {
        out.push("[webhooks]");
    }
    if old.dkim != new.dkim {
        out.push("[dkim]");
    }
    out
}

async fn apply(server: &Server, old: &Pipeline, new: &Pipeline) -> anyhow::Result<Report> {
    let mut report = Report {
        needs_restart: needs_restart(old, new),
        ..Report::default()
    };
    let now = now_ms();
    for r in &new.relays {
        if old.relays.iter().any(|o| o == r) {
            continue;
        }
        let state = server
            .store
            .get_relay(&r.id)
            .await?
            .map_or(RelayState::Active, |stored| stored.state);
        server.store.upsert_relay(new_relay(r, state), now).await?;
        report.relays_written.push(r.id.clone());
    }
    for t in &new.tenants {
        if old.tenants.iter().any(|o| o == t) {
            continue;
        }
        if server.store.get_tenant(&t.id).await?.is_some() {
            server.store.update_tenant(&t.id, tenant_update(t)).await?;
        } else {
            server.store.create_tenant(new_tenant(t), now).await?;
        }
        report.tenants_written.push(t.id.clone());
    }
    if old.limits != new.limits {
        server.limits.set(&new.limits);
        server.body_budget.set_largest(
            new.limits
                .max_submission_body_bytes()
                // `[plugins]` needs a restart: the running upload limit still holds.
                .max(server.pipeline.plugins.max_upload_bytes),
        );
        report.applied.push("[limits]");
    }
    if old.admission != new.admission {
        server.admission.reconfigure(&new.admission);
        report.applied.push("[admission]");
    }
    report.relays_left = gone(&old.relays, &new.relays, |r| &r.id);
    report.tenants_left = gone(&old.tenants, &new.tenants, |t| &t.id);
    if !report.relays_written.is_empty() {
        server.sync_relays().await?;
    }
    if !report.tenants_written.is_empty() {
        server.forget_keys();
    }
    Ok(report)
}

/// Ids in `old` that `new` no longer has.
fn gone<T>(old: &[T], new: &[T], id: impl Fn(&T) -> &String) -> Vec<String> {
    old.iter()
        .filter(|o| !new.iter().any(|n| id(n) == id(o)))
        .map(|o| id(o).clone())
        .collect()
}

fn new_relay(r: &RelayConfig, state: RelayState) -> NewRelay {
    NewRelay {
        id: r.id.clone(),
        url: r.url.clone(),
        auth_user: r.auth_user.clone(),
        auth_secret_ref: r.auth_password.as_ref().map(|s| s.reference()),
        connection_limit: r.connection_limit,
        rate_limit_per_sec: r.rate_limit_per_sec,
        weight: r.weight,
        tags: r.tags.clone(),
        owner: r.owner.clone(),
        state,
        tls_ca_file: super::state::tls_ca_file(r),
    }
}

fn new_tenant(t: &TenantConfig) -> NewTenant {
    NewTenant {
        id: t.id.clone(),
        name: t.name.clone(),
        allowed_sender_domains: t.allowed_sender_domains.clone(),
        pools: t.pools.clone(),
        route_plugin: t.route_plugin.clone(),
        header_from_check: t.header_from_check,
    }
}

fn tenant_update(t: &TenantConfig) -> TenantUpdate {
    TenantUpdate {
        name: Some(t.name.clone()),
        allowed_sender_domains: Some(t.allowed_sender_domains.clone()),
        pools: Some(t.pools.clone()),
        route_plugin: Some(t.route_plugin.clone()),
        header_from_check: Some(t.header_from_check),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(extra: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, extra).unwrap();
        Pipeline::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_changed_sections_are_named_as_needing_a_restart() {
        let relay = "[[relay]]\nid = \"a\"\nurl = \"smtp://127.0.0.1:2525\"\n";
        let old = pipeline(relay);
        let same = pipeline(relay);
        assert!(needs_restart(&old, &same).is_empty());
        let new = pipeline(&format!(
            "[delivery]\nmax_in_flight = 7\n[limits]\nmax_recipients = 3\n{}",
            relay.replace("2525", "2526")
        ));
        // `[limits]` changed too, but it is applied live.
        assert_eq!(needs_restart(&old, &new), vec!["[delivery]"]);
    }

    #[test]
    fn entries_removed_from_the_file_are_named() {
        let old = pipeline(
            "[[relay]]\nid = \"a\"\nurl = \"smtp://127.0.0.1:1\"\n[[relay]]\nid = \"b\"\nurl = \"smtp://127.0.0.1:2\"\n",
        );
        let new = pipeline("[[relay]]\nid = \"b\"\nurl = \"smtp://127.0.0.1:2\"\n");
        assert_eq!(gone(&old.relays, &new.relays, |r| &r.id), vec!["a"]);
        assert!(gone(&new.relays, &old.relays, |r| &r.id).is_empty());
    }
}
