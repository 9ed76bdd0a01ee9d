//! Tenant plugins (`/v1/plugins…`, `/admin/v1/tenants/{id}/plugins…`) on the wire.

use super::enum_of;
use crate::runtime::{LogLevel, LogLine, LogSource};
use crate::stage::Stage;
use crate::store::{ActivePlugin, FailurePolicy, PluginState, PluginVersion};
use serde::Serialize;
use utoipa::ToSchema;

fn stage() -> utoipa::openapi::Object {
    enum_of(&Stage::ALL, "a pipeline stage")
}

fn failure_policy() -> utoipa::openapi::Object {
    enum_of(
        &[FailurePolicy::Fallback, FailurePolicy::Defer],
        "after a trap or timeout: the platform's plugin decides (`fallback`) or the message waits (`defer`)",
    )
}

fn plugin_state() -> utoipa::openapi::Object {
    enum_of(
        &[PluginState::Ready, PluginState::Suspended],
        "whether the version may run",
    )
}

fn log_level() -> utoipa::openapi::Object {
    use LogLevel as L;
    enum_of(
        &[L::Trace, L::Debug, L::Info, L::Warn, L::Error],
        "the line's severity",
    )
}

fn log_source() -> utoipa::openapi::Object {
    enum_of(
        &[LogSource::Plugin, LogSource::Stderr, LogSource::Host],
        "who wrote it: the plugin's `log` calls, its stderr, or the host about a call",
    )
}

/// A stored version of a tenant's plugin (never its bytes).
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginVersionView {
    pub tenant_id: String,
    #[schema(schema_with = stage)]
    pub stage: Stage,
    pub version: u32,
    /// SHA-256 of the component, lower-case hex.
    pub sha256: String,
    pub size: u64,
    /// The plugin's settings, `[key, value]` pairs.
    #[schema(value_type = Vec<Vec<String>>)]
    pub config: Vec<(String, String)>,
    pub timeout_ms: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub calls_in_flight: Option<u32>,
    #[schema(schema_with = failure_policy)]
    pub on_failure: FailurePolicy,
    /// An API key's prefix, or `admin`.
    pub uploaded_by: String,
    pub uploaded_at_ms: i64,
    #[schema(schema_with = plugin_state)]
    pub state: PluginState,
    /// Why it was suspended.
    pub state_reason: Option<String>,
    pub state_changed_at_ms: Option<i64>,
}

impl From<PluginVersion> for PluginVersionView {
    fn from(v: PluginVersion) -> PluginVersionView {
        PluginVersionView {
            tenant_id: v.tenant_id,
            stage: v.stage,
            version: v.version,
            sha256: v.sha256,
            size: v.size,
            config: v.config,
            timeout_ms: v.timeout_ms,
            memory_bytes: v.memory_bytes,
            calls_in_flight: v.calls_in_flight,
            on_failure: v.on_failure,
            uploaded_by: v.uploaded_by,
            uploaded_at_ms: v.uploaded_at_ms,
            state: v.state,
            state_reason: v.state_reason,
            state_changed_at_ms: v.state_changed_at_ms,
        }
    }
}

/// The active version of a stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActiveView {
    pub version: PluginVersionView,
    pub activated_at_ms: i64,
    /// Versions active before this one, most recent last (what rollback goes back to).
    pub previous: Vec<u32>,
}

impl From<ActivePlugin> for ActiveView {
    fn from(a: ActivePlugin) -> ActiveView {
        ActiveView {
            version: a.version.into(),
            activated_at_ms: a.activated_at_ms,
            previous: a.previous,
        }
    }
}

/// `…/activate`, `…/rollback`: the version active now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Activated {
    pub active: ActiveView,
}

/// `PUT …/plugins/{stage}` (201): the version stored and what its checks measured.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub version: PluginVersionView,
    /// Whether it was made the active version (`activate=false` leaves it inactive).
    pub active: bool,
    /// Old versions removed by the version quota.
    pub pruned: Vec<Pruned>,
    pub check: UploadCheck,
}

/// A version the quota removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pruned {
    #[schema(schema_with = stage)]
    pub stage: Stage,
    pub version: u32,
}

/// What the upload's checks measured.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadCheck {
    pub compile_ms: u64,
    /// The sample call's time; `null` when the admin skipped it.
    pub sample_us: Option<u64>,
    /// The plugin's answer to the stage's sample input (`null` when skipped).
    pub answer: serde_json::Value,
    pub timeout_ms: u64,
    pub memory_bytes: u64,
    pub calls_in_flight: u32,
    #[schema(schema_with = failure_policy)]
    pub on_failure: FailurePolicy,
}

/// `GET …/plugins`: a tenant's versions by stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginList {
    pub tenant: String,
    /// Stages with at least one version.
    pub plugins: Vec<StagePlugins>,
}

/// A stage's versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct StagePlugins {
    #[schema(schema_with = stage)]
    pub stage: Stage,
    pub active_version: Option<u32>,
    pub suspended: bool,
    pub suspended_reason: Option<String>,
    pub previous_versions: Vec<u32>,
    pub activated_at_ms: Option<i64>,
    pub versions: Vec<ListedVersion>,
}

/// A version as listed: its record, whether it is active, and its counters on the
/// node that answered (`null` for a version not called there).
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedVersion {
    #[serde(flatten)]
    pub version: PluginVersionView,
    pub active: bool,
    /// Calls, failures, time and calls in flight on this node.
    pub stats: Option<serde_json::Value>,
}

/// `GET …/plugins/{stage}/logs`: one page of a (tenant, stage) log on the node that
/// answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsPage {
    pub tenant: String,
    #[schema(schema_with = stage)]
    pub stage: Stage,
    pub node: String,
    pub lines: Vec<LogLineView>,
    /// Lines evicted before they were read.
    pub missed: u64,
    /// Where to poll from later (`after=`).
    pub cursor: String,
    /// The cursor of the next page while more lines are kept; else `null`.
    pub next: Option<String>,
}

/// One line of a plugin's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLineView {
    /// Its place in its log (gap-free as written).
    pub seq: u64,
    pub at_ms: i64,
    #[schema(schema_with = log_level)]
    pub level: LogLevel,
    #[schema(schema_with = log_source)]
    pub source: LogSource,
    pub message: String,
    /// `[key, value]` pairs; left out when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Vec<String>>)]
    pub fields: Vec<(String, String)>,
    /// The version that wrote it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

impl From<LogLine> for LogLineView {
    fn from(l: LogLine) -> LogLineView {
        LogLineView {
            seq: l.seq,
            at_ms: l.at_ms,
            level: l.level,
            source: l.source,
            message: l.message,
            fields: l.fields,
            version: l.version,
        }
    }
}
