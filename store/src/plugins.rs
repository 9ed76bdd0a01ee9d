//! Tenant plugins: every upload is a numbered version per (tenant, stage), kept with its
//! bytes and content hash; one version per (tenant, stage) is active, and the versions
//! that were active before it are remembered so that a rollback can step back.
//!
//! Switching is one transaction on the `active_plugins` row, so every host that reads it
//! sees either the old or the new version, never a mix.

use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;

use super::StoreError;
use super::codec::{col, corrupt, get_opt_u32, hex, list_from_text, list_to_text};
use super::connect::{Backend, Pools};
use sluice_stage::Stage;

/// How many previously active versions are remembered for rollback.
const HISTORY_MAX: usize = 50;
/// How often a version number is retried when another host took it at the same moment.
const VERSION_ATTEMPTS: usize = 10;

/// Whether a version may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginState {
    /// Runs when active.
    Ready,
    /// Failed too often: the pipeline's plugin runs instead until a new upload or an
    /// explicit activation.
    Suspended,
}

impl PluginState {
    fn as_str(self) -> &'static str {
        match self {
            PluginState::Ready => "ready",
            PluginState::Suspended => "suspended",
        }
    }

    fn parse(s: &str) -> Option<PluginState> {
        match s {
            "ready" => Some(PluginState::Ready),
            "suspended" => Some(PluginState::Suspended),
            _ => None,
        }
    }
}

/// What happens to a tenant's traffic when its plugin for a stage fails (traps, runs out
/// of time or memory, answers something invalid) or is suspended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// The platform's plugin decides instead.
    #[default]
    Fallback,
    /// Fail closed: nothing else decides for the tenant; the message waits (deferred,
    /// or a temporary refusal at intake) until the tenant's plugin works again.
    Defer,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fallback => "fallback",
            FailurePolicy::Defer => "defer",
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fallback" => Ok(FailurePolicy::Fallback),
            "defer" => Ok(FailurePolicy::Defer),
            other => Err(format!(
                "{other:?} is not a failure policy (there are: fallback, defer)"
            )),
        }
    }
}

/// An upload to store.
#[derive(Debug, Clone)]
pub struct NewPluginVersion {
    pub tenant_id: String,
    pub stage: Stage,
    /// The component's bytes.
    pub wasm: Vec<u8>,
    /// Settings the plugin reads through `host.config`.
    pub config: Vec<(String, String)>,
    /// The tenant's own wall-time limit of one call (none: the stage's default).
    pub timeout_ms: Option<u32>,
    /// The tenant's own memory limit (none: the stage's default).
    pub memory_bytes: Option<u64>,
    /// The tenant's own cap on concurrent calls (none: the platform's default).
    pub calls_in_flight: Option<u32>,
    pub on_failure: FailurePolicy,
    /// Who uploaded it (an API key's prefix, or `admin`).
    pub uploaded_by: String,
}

/// A stored version, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginVersion {
    pub tenant_id: String,
    pub stage: Stage,
    pub version: u32,
    /// SHA-256 of the component, lower-case hex.
    pub sha256: String,
    pub size: u64,
    pub config: Vec<(String, String)>,
    pub timeout_ms: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub calls_in_flight: Option<u32>,
    pub on_failure: FailurePolicy,
    pub uploaded_by: String,
    pub uploaded_at_ms: i64,
    pub state: PluginState,
    /// Why it was suspended.
    pub state_reason: Option<String>,
    pub state_changed_at_ms: Option<i64>,
}

/// The active version of a (tenant, stage).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActivePlugin {
    pub version: PluginVersion,
    pub activated_at_ms: i64,
    /// Versions active before this one, most recent last.
    pub previous: Vec<u32>,
}

/// The columns of a version, without its bytes (a macro so that queries can `concat!` it).
macro_rules! version_columns {
    () => {
        "v.tenant_id, v.stage, v.version, v.sha256, v.size, v.config, \
     v.timeout_ms, v.memory_bytes, v.calls_in_flight, v.on_failure, v.uploaded_by, v.uploaded_at_ms, \
     v.state, v.state_reason, v.state_changed_at_ms"
    };
}
const VERSION_COLUMNS: &str = version_columns!();

fn version_from_row(row: &AnyRow, op: &str) -> Result<PluginVersion, StoreError> {
    let stage: String = col(row, op, "stage")?;
    let state: String = col(row, op, "state")?;
    let on_failure: String = col(row, op, "on_failure")?;
    let config: String = col(row, op, "config")?;
    let version: i64 = col(row, op, "version")?;
    let size: i64 = col(row, op, "size")?;
    Ok(PluginVersion {
        tenant_id: col(row, op, "tenant_id")?,
        stage: stage
            .parse()
            .map_err(|_| corrupt(&format!("{op}: column stage"), &stage))?,
        version: u32::try_from(version)
            .map_err(|_| corrupt(&format!("{op}: column version"), &version.to_string()))?,
        sha256: col(row, op, "sha256")?,
        size: u64::try_from(size)
            .map_err(|_| corrupt(&format!("{op}: column size"), &size.to_string()))?,
        config: serde_json::from_str(&config)
            .map_err(|_| corrupt(&format!("{op}: column config"), &config))?,
        timeout_ms: get_opt_u32(row, op, "timeout_ms")?,
        memory_bytes: col::<Option<i64>>(row, op, "memory_bytes")?
            .map(|n| {
                u64::try_from(n)
                    .map_err(|_| corrupt(&format!("{op}: column memory_bytes"), &n.to_string()))
            })
            .transpose()?,
        calls_in_flight: get_opt_u32(row, op, "calls_in_flight")?,
        on_failure: on_failure
            .parse()
            .map_err(|_| corrupt(&format!("{op}: column on_failure"), &on_failure))?,
        uploaded_by: col(row, op, "uploaded_by")?,
        uploaded_at_ms: col(row, op, "uploaded_at_ms")?,
        state: PluginState::parse(&state)
            .ok_or_else(|| corrupt(&format!("{op}: column state"), &state))?,
        state_reason: col(row, op, "state_reason")?,
        state_changed_at_ms: col(row, op, "state_changed_at_ms")?,
    })
}

fn active_from_row(row: &AnyRow, op: &str) -> Result<ActivePlugin, StoreError> {
    let history: String = col(row, op, "history")?;
    let previous = list_from_text(&format!("{op}: column history"), &history)?
        .iter()
        .map(|v| {
            v.parse::<u32>()
                .map_err(|_| corrupt(&format!("{op}: column history"), &history))
        })
        .collect::<Result<_, _>>()?;
    Ok(ActivePlugin {
        version: version_from_row(row, op)?,
        activated_at_ms: col(row, op, "activated_at_ms")?,
        previous,
    })
}

fn what(tenant_id: &str, stage: Stage) -> String {
    format!("{stage} plugin of tenant {tenant_id:?}")
}

pub(crate) async fn add(
    pools: &Pools,
    new: NewPluginVersion,
    now_ms: i64,
) -> Result<PluginVersion, StoreError> {
    let op = "add_plugin_version";
    let context = format!("{op}: {}", what(&new.tenant_id, new.stage));
    if new.wasm.is_empty() {
        return Err(StoreError::invalid(op, "the component is empty"));
    }
    if let Some((k, _)) = new.config.iter().find(|(k, _)| k.is_empty()) {
        return Err(StoreError::invalid(
            op,
            format!("setting name {k:?} is empty"),
        ));
    }
    let sha256 = hex(&Sha256::digest(&new.wasm));
    let config = serde_json::to_string(&new.config).unwrap_or_else(|_| "[]".into());
    for _ in 0..VERSION_ATTEMPTS {
        let mut tx = pools
            .begin_write()
            .await
            .map_err(StoreError::db(&context))?;
        // Locking the tenant's row makes concurrent uploads of one tenant take turns
        // (PostgreSQL); SQLite's write transaction already does.
        let lock = match pools.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let tenant = sqlx::query(&format!("SELECT id FROM tenants WHERE id = $1{lock}"))
            .bind(&new.tenant_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db(&context))?;
        if tenant.is_none() {
            return Err(StoreError::not_found(op, "tenant", &new.tenant_id));
        }
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS last FROM plugin_versions \
             WHERE tenant_id = $1 AND stage = $2",
        )
        .bind(&new.tenant_id)
        .bind(new.stage.name())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(&context))?;
        let last: i64 = col(&row, op, "last")?;
        let version = last + 1;
        // Another host may take the same number at the same moment (PostgreSQL): the
        // second insert then does nothing and we try the next number.
        let done = sqlx::query(
            "INSERT INTO plugin_versions (tenant_id, stage, version, sha256, size, wasm, config, \
             timeout_ms, memory_bytes, calls_in_flight, on_failure, uploaded_by, uploaded_at_ms, \
             state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
             ON CONFLICT (tenant_id, stage, version) DO NOTHING",
        )
        .bind(&new.tenant_id)
        .bind(new.stage.name())
        .bind(version)
        .bind(&sha256)
        .bind(new.wasm.len() as i64)
        .bind(new.wasm.clone())
        .bind(&config)
        .bind(new.timeout_ms.map(i64::from))
        .bind(new.memory_bytes.map(|m| m as i64))
        .bind(new.calls_in_flight.map(i64::from))
        .bind(new.on_failure.as_str())
        .bind(&new.uploaded_by)
        .bind(now_ms)
        .bind(PluginState::Ready.as_str())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(&context))?;
        if done.rows_affected() == 0 {
            tx.rollback().await.ok();
            continue;
        }
        tx.commit()
            .await
            .map_err(StoreError::db(format!("{context}: commit")))?;
        return Ok(PluginVersion {
            tenant_id: new.tenant_id,
            stage: new.stage,
            version: version as u32,
            sha256,
            size: new.wasm.len() as u64,
            config: new.config,
            timeout_ms: new.timeout_ms,
            memory_bytes: new.memory_bytes,
            calls_in_flight: new.calls_in_flight,
            on_failure: new.on_failure,
            uploaded_by: new.uploaded_by,
            uploaded_at_ms: now_ms,
            state: PluginState::Ready,
            state_reason: None,
            state_changed_at_ms: None,
        });
    }
    Err(StoreError::invalid(
        op,
        format!(
            "{}: no free version number after {VERSION_ATTEMPTS} attempts (too many concurrent uploads)",
            what(&new.tenant_id, new.stage)
        ),
    ))
}

pub(crate) async fn list(
    pools: &Pools,
    tenant_id: &str,
    stage: Option<Stage>,
) -> Result<Vec<PluginVersion>, StoreError> {
    let op = "list_plugin_versions";
    let rows = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions v \
         WHERE v.tenant_id = $1 AND ($2 = '' OR v.stage = $2) ORDER BY v.stage, v.version"
    ))
    .bind(tenant_id)
    .bind(stage.map_or("", Stage::name))
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op} of tenant {tenant_id:?}")))?;
    rows.iter().map(|r| version_from_row(r, op)).collect()
}

pub(crate) async fn get(
    pools: &Pools,
    tenant_id: &str,
    stage: Stage,
    version: u32,
) -> Result<Option<PluginVersion>, StoreError> {
    let op = "get_plugin_version";
    let row = sqlx::query(&format!(
        "SELECT {VERSION_COLUMNS} FROM plugin_versions v \
         WHERE v.tenant_id = $1 AND v.stage = $2 AND v.version = $3"
    ))
    .bind(tenant_id)
    .bind(stage.name())
    .bind(i64::from(version))
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(format!(
        "{op}: version {version} of the {}",
        what(tenant_id, stage)
    )))?;
    row.map(|r| version_from_row(&r, op)).transpose()
}

pub(crate) async fn wasm(
    pools: &Pools,
    tenant_id: &str,
    stage: Stage,
    version: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    let op = "plugin_wasm";
    let row = sqlx::query(
        "SELECT wasm FROM plugin_versions WHERE tenant_id = $1 AND stage = $2 AND version = $3",
    )
    .bind(tenant_id)
    .bind(stage.name())
    .bind(i64::from(version))
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(format!(
        "{op}: version {version} of the {}",
        what(tenant_id, stage)
    )))?;
    row.map(|r| col(&r, op, "wasm")).transpose()
}

const ACTIVE_QUERY: &str = concat!(
    "SELECT ",
    version_columns!(),
    ", a.history, a.activated_at_ms \
     FROM active_plugins a JOIN plugin_versions v \
     ON v.tenant_id = a.tenant_id AND v.stage = a.stage AND v.version = a.version"
);

pub(crate) async fn active(
    pools: &Pools,
    tenant_id: &str,
    stage: Stage,
) -> Result<Option<ActivePlugin>, StoreError> {
    active_in(&pools.read, tenant_id, stage, "active_plugin").await
}

async fn active_in<'e, E>(
    executor: E,
    tenant_id: &str,
    stage: Stage,
    op: &str,
) -> Result<Option<ActivePlugin>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(&format!(
        "{ACTIVE_QUERY} WHERE a.tenant_id = $1 AND a.stage = $2"
    ))
    .bind(tenant_id)
    .bind(stage.name())
    .fetch_optional(executor)
    .await
    .map_err(StoreError::db(format!("{op}: {}", what(tenant_id, stage))))?;
    row.map(|r| active_from_row(&r, op)).transpose()
}

pub(crate) async fn list_active(pools: &Pools) -> Result<Vec<ActivePlugin>, StoreError> {
    let op = "list_active_plugins";
    let rows = sqlx::query(&format!("{ACTIVE_QUERY} ORDER BY a.tenant_id, a.stage"))
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(op))?;
    rows.iter().map(|r| active_from_row(r, op)).collect()
}

/// Makes `version` active; `rollback` pops the history instead of pushing onto it.
async fn switch(
    pools: &Pools,
    tenant_id: &str,
    stage: Stage,
    target: Option<u32>,
    now_ms: i64,
    op: &str,
) -> Result<ActivePlugin, StoreError> {
    let context = format!("{op}: {}", what(tenant_id, stage));
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(&context))?;
    let current = sqlx::query(
        "SELECT version, history FROM active_plugins WHERE tenant_id = $1 AND stage = $2",
    )
    .bind(tenant_id)
    .bind(stage.name())
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    let (current, mut history) = match current {
        Some(row) => {
            let v: i64 = col(&row, op, "version")?;
            let h: String = col(&row, op, "history")?;
            (
                Some(v),
                list_from_text(&format!("{op}: column history"), &h)?,
            )
        }
        None => (None, Vec::new()),
    };
    let version = match target {
        Some(v) => {
            if let Some(cur) = current
                && cur != i64::from(v)
            {
                history.push(cur.to_string());
                if history.len() > HISTORY_MAX {
                    history.remove(0);
                }
            }
            i64::from(v)
        }
        None => {
            if current.is_none() {
                return Err(StoreError::not_found(
                    op,
                    "active plugin",
                    &what(tenant_id, stage),
                ));
            }
            let Some(prev) = history.pop() else {
                return Err(StoreError::invalid(
                    op,
                    format!(
                        "{}: no previously active version to roll back to",
                        what(tenant_id, stage)
                    ),
                ));
            };
            prev.parse::<i64>()
                .map_err(|_| corrupt(&format!("{op}: column history"), &prev))?
        }
    };
    // Activating a version is an operator's decision: it also lifts a suspension.
    let found = sqlx::query(
        "UPDATE plugin_versions SET state = $4, state_reason = NULL, state_changed_at_ms = \
         CASE WHEN state = $4 THEN state_changed_at_ms ELSE $5 END \
         WHERE tenant_id = $1 AND stage = $2 AND version = $3",
    )
    .bind(tenant_id)
    .bind(stage.name())
    .bind(version)
    .bind(PluginState::Ready.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    if found.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!(
            "{op}: version {version} of the {}",
            what(tenant_id, stage)
        )));
    }
    sqlx::query(
        "INSERT INTO active_plugins (tenant_id, stage, version, history, activated_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, stage) DO UPDATE SET \
         version = excluded.version, history = excluded.history, \
         activated_at_ms = excluded.activated_at_ms",
    )
    .bind(tenant_id)
    .bind(stage.name())
    .bind(version)
    .bind(list_to_text(&history))
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    let active = active_in(&mut *tx, tenant_id, stage, op)
        .await?
        .ok_or_else(|| StoreError::not_found(op, "active plugin", &what(tenant_id, stage)))?;
    tx.commit()
        .await
        .map_err(StoreError::db(format!("{context}: commit")))?;
    Ok(active)
}

pub(crate) async fn activate(
    pools: &Pools,
    tenant_id: &str,
    stage: Stage,
    version: u32,
    now_ms: i64,
) -> Result<ActivePlugin, StoreError> {
    switch(
        pools,
        tenant_id,
        stage,
        Some(version),
        now_ms,
        "activate_plugin",
    )
    .await
}

pub(crate) async fn rollback(
    pools: &Pools,
    tenant_id: &str,
    stage: Stage,
    now_ms: i64,
) -> Result<ActivePlugin, StoreError> {
    switch(pools, tenant_id, stage, None, now_ms, "rollback_plugin").await
}

pub(crate) async fn suspend(
    pools: &Pools,
    tenant_id: &str,
    stage: Stage,
    version: u32,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let op = "suspend_plugin";
    let context = format!("{op}: version {version} of the {}", what(tenant_id, stage));
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(&context))?;
    let done = sqlx::query(
        "UPDATE plugin_versions SET state = $4, state_reason = $5, state_changed_at_ms = $6 \
         WHERE tenant_id = $1 AND stage = $2 AND version = $3 AND state = $7",
    )
    .bind(tenant_id)
    .bind(stage.name())
    .bind(i64::from(version))
    .bind(PluginState::Suspended.as_str())
    .bind(reason)
    .bind(now_ms)
    .bind(PluginState::Ready.as_str())
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    // Only the host whose update suspended the version writes the event: one per
    // suspension, however many hosts saw the plugin fail.
    let detail = serde_json::json!({
        "stage": stage.name(),
        "version": version,
        "plugin": format!("{tenant_id}/{} v{version}", stage.name()),
        "reason": reason,
    });
    super::event_log::append_tenant_event(
        &mut tx,
        tenant_id,
        super::types::EventKind::PluginSuspended,
        &detail,
        now_ms,
        &context,
    )
    .await?;
    tx.commit().await.map_err(StoreError::db(&context))?;
    Ok(true)
}

/// Previously active versions of each stage a prune spares, so that the last few
/// rollbacks still work.
pub const PRUNE_SPARES_ROLLBACKS: usize = 3;

/// Deletes a tenant's oldest versions beyond `keep` (all stages together), sparing each
/// stage's active version, its latest, and the last [`PRUNE_SPARES_ROLLBACKS`] it would
/// roll back to; the pruned versions leave the rollback history too. Returns what was pruned,
/// oldest first. In one transaction, so concurrent prunes of one tenant take turns.
pub(crate) async fn prune(
    pools: &Pools,
    tenant_id: &str,
    keep: u32,
) -> Result<Vec<(Stage, u32)>, StoreError> {
    let op = "prune_plugin_versions";
    let context = format!("{op}: tenant {tenant_id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(&context))?;
    let rows = sqlx::query(
        "SELECT stage, version FROM plugin_versions WHERE tenant_id = $1 \
         ORDER BY uploaded_at_ms, version, stage",
    )
    .bind(tenant_id)
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    let excess = rows.len().saturating_sub(keep as usize);
    if excess == 0 {
        return Ok(Vec::new());
    }
    let active =
        sqlx::query("SELECT stage, version, history FROM active_plugins WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::db(&context))?;
    let mut spared = std::collections::HashSet::new();
    // Each stage's latest version too: version numbers are never reused.
    let mut latest = std::collections::HashMap::new();
    for row in &rows {
        let stage: String = col(row, op, "stage")?;
        let version: i64 = col(row, op, "version")?;
        let v = latest.entry(stage).or_insert(version);
        *v = (*v).max(version);
    }
    for (stage, version) in latest {
        spared.insert((stage, version.to_string()));
    }
    let mut histories = Vec::new();
    for row in &active {
        let stage: String = col(row, op, "stage")?;
        let version: i64 = col(row, op, "version")?;
        let history: String = col(row, op, "history")?;
        let history = list_from_text(&format!("{op}: column history"), &history)?;
        spared.insert((stage.clone(), version.to_string()));
        for v in history.iter().rev().take(PRUNE_SPARES_ROLLBACKS) {
            spared.insert((stage.clone(), v.clone()));
        }
        histories.push((stage, history));
    }
    let mut pruned = Vec::new();
    for row in &rows {
        if pruned.len() == excess {
            break;
        }
        let stage: String = col(row, op, "stage")?;
        let version: i64 = col(row, op, "version")?;
        if spared.contains(&(stage.clone(), version.to_string())) {
            continue;
        }
        sqlx::query(
            "DELETE FROM plugin_versions WHERE tenant_id = $1 AND stage = $2 AND version = $3",
        )
        .bind(tenant_id)
        .bind(&stage)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(&context))?;
        let parsed: Stage = stage
            .parse()
            .map_err(|_| corrupt(&format!("{op}: column stage"), &stage))?;
        let version = u32::try_from(version)
            .map_err(|_| corrupt(&format!("{op}: column version"), &version.to_string()))?;
        pruned.push((parsed, version));
    }
    for (stage, history) in histories {
        let kept: Vec<String> = history
            .iter()
            .filter(|v| {
                !pruned
                    .iter()
                    .any(|(s, p)| s.name() == stage && p.to_string() == **v)
            })
            .cloned()
            .collect();
        if kept.len() != history.len() {
            sqlx::query(
                "UPDATE active_plugins SET history = $3 WHERE tenant_id = $1 AND stage = $2",
            )
            .bind(tenant_id)
            .bind(&stage)
            .bind(list_to_text(&kept))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(&context))?;
        }
    }
    tx.commit()
        .await
        .map_err(StoreError::db(format!("{context}: commit")))?;
    Ok(pruned)
}
