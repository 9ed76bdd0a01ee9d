//! Tenant plugin endpoints: upload (type-check, compile, smoke-run, store as a new
//! version, activate), activate a version, roll back, list versions with their call
//! counters, read the plugin log. The same handlers serve a tenant (`/v1/plugins/…`,
//! scoped to its key) and the admin (`/admin/v1/tenants/{id}/plugins/…`).

use super::auth::{Admin, AuthTenant};
use super::dto::plugins::{
    Activated, ListedVersion, LogLineView, LogsPage, PluginList, Pruned, StagePlugins, UploadCheck,
    Uploaded,
};
use super::error::ApiError;
use super::state::AppState;
use super::state::{Server, now_ms};
use super::tenant_live::tenant_limits;
use super::upload_limits::Refused;
use crate::logging::Chain;
use crate::runtime::{CompileError, LoadError, Plugin, PluginError};
use crate::stage::{self, Stage};
use crate::store::{FailurePolicy, NewPluginVersion, PluginState};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

/// The tenant's endpoints (registered by `api.rs`).
pub fn tenant_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/plugins", get(tenant_list))
        .route(
            "/v1/plugins/{stage}",
            // The upload reads its body itself, up to `[plugins] max_upload_bytes`.
            put(tenant_upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/plugins/{stage}/activate", post(tenant_activate))
        .route("/v1/plugins/{stage}/rollback", post(tenant_rollback))
        .route("/v1/plugins/{stage}/logs", get(tenant_logs))
}

/// The admin's endpoints (registered by `admin.rs`).
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/tenants/{id}/plugins", get(admin_list))
        .route(
            "/admin/v1/tenants/{id}/plugins/{stage}",
            put(admin_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/admin/v1/tenants/{id}/plugins/{stage}/activate",
            post(admin_activate),
        )
        .route(
            "/admin/v1/tenants/{id}/plugins/{stage}/rollback",
            post(admin_rollback),
        )
        .route(
            "/admin/v1/tenants/{id}/plugins/{stage}/logs",
            get(admin_logs),
        )
}

/// An upload's query parameters, for the document (`upload_options` reads them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Never built: it only describes what `upload_options` reads.
struct UploadQuery {
    /// A plugin setting, `KEY=VALUE`; repeat it for more.
    config: Option<String>,
    /// The call deadline (at most `[plugins] max_timeout_ms`).
    timeout_ms: Option<u32>,
    /// The memory limit (at most `[plugins] max_memory_mib`).
    memory_mib: Option<u64>,
    /// Calls in flight at once (at most `[plugins] max_calls_in_flight`).
    calls_in_flight: Option<u32>,
    /// `fallback` (default) or `defer`.
    on_failure: Option<String>,
    /// Make it the active version (default true).
    activate: Option<bool>,
}

fn parse_stage(text: &str) -> Result<Stage, ApiError> {
    text.parse().map_err(|_| {
        ApiError::not_found(format!(
            "stage {text:?} (there are: ingest, route, send, bounce, bill)"
        ))
    })
}

async fn known_tenant(s: &Server, id: &str) -> Result<(), ApiError> {
    match s.store.get_tenant(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("tenant {id:?}"))),
    }
}

/// What a tenant's key is known by (never the secret itself).
fn key_prefix(headers: &HeaderMap) -> String {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().chars().take(13).collect())
        .unwrap_or_else(|| "tenant".into())
}

// ---------------------------------------------------------------- upload

/// Options of an upload, from the query string.
#[derive(Debug, Default)]
struct UploadOptions {
    config: Vec<(String, String)>,
    timeout_ms: Option<u32>,
    memory_bytes: Option<u64>,
    calls_in_flight: Option<u32>,
    on_failure: FailurePolicy,
    activate: bool,
    skip_sample: bool,
}

fn upload_options(query: Vec<(String, String)>, admin: bool) -> Result<UploadOptions, ApiError> {
    let mut o = UploadOptions {
        activate: true,
        ..UploadOptions::default()
    };
    let boolean = |k: &str, v: &str| match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::invalid(
            k,
            format!("{other:?} is neither true nor false"),
        )),
    };
    for (k, v) in query {
        match k.as_str() {
            "config" => {
                let (name, value) = v.split_once('=').ok_or_else(|| {
                    ApiError::invalid("config", format!("{v:?} is not KEY=VALUE"))
                })?;
                if name.is_empty() {
                    return Err(ApiError::invalid("config", format!("{v:?} has no key")));
                }
                o.config.push((name.to_owned(), value.to_owned()));
            }
            "timeout_ms" => {
                o.timeout_ms = Some(v.parse().map_err(|_| {
                    ApiError::invalid(
                        "timeout_ms",
                        format!("{v:?} is not a number of milliseconds"),
                    )
                })?);
            }
            "memory_mib" => {
                let mib: u64 = v.parse().map_err(|_| {
                    ApiError::invalid("memory_mib", format!("{v:?} is not a number of MiB"))
                })?;
                o.memory_bytes = Some(mib.saturating_mul(1 << 20));
            }
            "calls_in_flight" => {
                o.calls_in_flight = Some(v.parse().map_err(|_| {
                    ApiError::invalid("calls_in_flight", format!("{v:?} is not a number of calls"))
                })?);
            }
            "on_failure" => {
                o.on_failure = v
                    .parse()
                    .map_err(|e: String| ApiError::invalid("on_failure", e))?;
            }
            "activate" => o.activate = boolean("activate", &v)?,
            "skip_sample" if admin => o.skip_sample = boolean("skip_sample", &v)?,
            "skip_sample" => {
                return Err(ApiError::invalid(
                    "skip_sample",
                    "only the admin API may skip the sample run",
                ));
            }
            other => {
                return Err(ApiError::invalid(
                    other,
                    format!(
                        "unknown query parameter {other:?} (there are: config, timeout_ms, memory_mib, calls_in_flight, on_failure, activate)"
                    ),
                ));
            }
        }
    }
    Ok(o)
}

async fn read_upload(s: &Server, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let max = s.pipeline.plugins.max_upload_bytes;
    let too_large = |size: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the component is {size} bytes; the limit is {max} ([plugins] max_upload_bytes)"
            ),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(too_large(len.to_string()));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(format!("more than {max}")))?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "the body is empty; send the component (.wasm) as the body",
        ));
    }
    Ok(bytes.to_vec())
}

fn load_error(stage: Stage, e: LoadError) -> ApiError {
    let code = match &e {
        LoadError::NotAComponent(_) => "not_a_component",
        LoadError::WrongWorld { .. } => "wrong_world",
        LoadError::BadSignature { .. } => "bad_signature",
        LoadError::UnknownImport(_) => "unknown_import",
        LoadError::MemoryAboveMaximum { .. } => "invalid",
        LoadError::OverLimit(_) => "over_limit",
        LoadError::Compile(CompileError::Host(_)) => {
            tracing::error!(stage = %stage, error = %Chain(&e), "cannot compile a tenant plugin");
            return ApiError {
                retry_after_secs: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "compile_unavailable",
                    "the host could not compile the component; nothing was stored, try again",
                )
            };
        }
        LoadError::Compile(_) => "compile_bound",
    };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        code,
        format!("refused as a {stage} plugin: {e}"),
    )
}

/// Calls the plugin once with the stage's sample input; its answer as JSON (an answer
/// that has no JSON form is a malformed one, not a `null`).
fn sample_call(p: &Plugin) -> Result<serde_json::Value, PluginError> {
    fn json<T: serde::Serialize>(v: T) -> Result<serde_json::Value, PluginError> {
        serde_json::to_value(v).map_err(|e| PluginError::BadOutput {
            reason: format!("its answer has no JSON form: {e}"),
        })
    }
    match p.stage() {
        Stage::Ingest => json(p.ingest(&stage::samples::submission())?),
        Stage::Route => json(p.route(&stage::samples::route_input())?),
        Stage::Send => json(p.send(&stage::samples::attempt())?),
        Stage::Bounce => json(p.bounce(&stage::samples::bounce_input())?),
        Stage::Bill => json(p.bill(&stage::samples::bill_input())?),
    }
}

/// An upload within the tenant's upload rates: a refused one (its checks, its
/// compilation or its sample call failed) also counts against the stricter rate of
/// refused uploads.
async fn upload(
    s: &Server,
    tenant_id: &str,
    stage: Stage,
    uploaded_by: String,
    opts: UploadOptions,
    bytes: Vec<u8>,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let tenants = &s.plugins.tenants;
    let turn = tenants.upload_limits.start(tenant_id).map_err(|r| match r {
        Refused::Uploads(wait) => ApiError::too_many(
            "too_many_uploads",
            format!(
                "too many uploads; the next is allowed in {} s ([plugins.uploads] uploads_per_hour, upload_burst)",
                wait.as_secs() + 1
            ),
            wait.as_secs() + 1,
        ),
        Refused::Failures(wait) => ApiError::too_many(
            "too_many_failed_uploads",
            format!(
                "too many refused uploads; the next is allowed in {} s ([plugins.uploads] failed_uploads_per_hour, failed_upload_burst)",
                wait.as_secs() + 1
            ),
            wait.as_secs() + 1,
        ),
        Refused::Busy => ApiError::too_many(
            "upload_in_progress",
            "another upload of this tenant is being checked; one at a time",
            1,
        ),
    })?;
    let result = checked_upload(s, tenant_id, stage, uploaded_by, opts, bytes).await;
    if let Err(e) = &result
        && e.status == StatusCode::UNPROCESSABLE_ENTITY
    {
        turn.failed();
    }
    result
}

async fn checked_upload(
    s: &Server,
    tenant_id: &str,
    stage: Stage,
    uploaded_by: String,
    opts: UploadOptions,
    bytes: Vec<u8>,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let tenants = &s.plugins.tenants;
    let (max_timeout, max_memory) = tenants.maxima();
    let limits = tenant_limits(
        stage,
        opts.timeout_ms,
        opts.memory_bytes,
        max_timeout,
        max_memory,
    )
    .map_err(|e| {
        let field = if e.starts_with("timeout") {
            "timeout_ms"
        } else {
            "memory_mib"
        };
        ApiError::invalid(field, e)
    })?;
    let max_calls = tenants.max_calls_in_flight();
    match opts.calls_in_flight {
        Some(0) => return Err(ApiError::invalid("calls_in_flight", "must be at least 1")),
        Some(n) if n > max_calls => {
            return Err(ApiError::invalid(
                "calls_in_flight",
                format!("{n} is above the platform maximum of {max_calls}"),
            ));
        }
        _ => {}
    }
    // The number this upload will most likely get, so the compiled plugin carries its
    // name; if another upload takes it first, the plugin is compiled again on activation.
    let expected = s
        .store
        .list_plugin_versions(tenant_id, Some(stage))
        .await?
        .last()
        .map_or(1, |v| v.version + 1);

    let started = Instant::now();
    let plugin = tenants
        .compile(
            tenant_id,
            stage,
            expected,
            bytes.clone(),
            opts.config.clone(),
            limits,
        )
        .await
        .map_err(|e| load_error(stage, e))?;
    let compile_ms = started.elapsed().as_millis() as u64;
    let plugin = Arc::new(plugin);

    let (answer, sample_us) = if opts.skip_sample {
        (serde_json::Value::Null, None)
    } else {
        let started = Instant::now();
        let answer = s.plugins.tenants.run(plugin.clone(), sample_call).await;
        let took = started.elapsed().as_micros() as u64;
        match answer {
            Ok(a) => (a, Some(took)),
            Err(e @ PluginError::Timeout { .. }) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "too_slow",
                    format!("refused as a {stage} plugin: the sample call is too slow: {e}"),
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "sample_failed",
                    format!(
                        "refused as a {stage} plugin: the sample call failed ({}): {e}",
                        e.kind()
                    ),
                ));
            }
        }
    };

    let version = s
        .store
        .add_plugin_version(
            NewPluginVersion {
                tenant_id: tenant_id.to_owned(),
                stage,
                wasm: bytes,
                config: opts.config,
                timeout_ms: opts.timeout_ms,
                memory_bytes: opts.memory_bytes,
                calls_in_flight: opts.calls_in_flight,
                on_failure: opts.on_failure,
                uploaded_by,
            },
            now_ms(),
        )
        .await?;
    if version.version == expected {
        tenants.remember(&version, plugin);
    }
    if opts.activate {
        s.store
            .activate_plugin(tenant_id, stage, version.version, now_ms())
            .await?;
        tenants.refresh(&s.store).await?;
    }
    // The version quota: the oldest versions nobody runs or rolls back to go, rather
    // than refusing the upload (a tenant has no way to delete versions, and a refusal
    // would leave it stuck).
    let pruned: Vec<_> = s
        .store
        .prune_plugin_versions(tenant_id, tenants.max_versions_per_tenant)
        .await?
        .into_iter()
        .map(|(stage, version)| Pruned { stage, version })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(Uploaded {
            version: version.into(),
            active: opts.activate,
            pruned,
            check: UploadCheck {
                compile_ms,
                sample_us,
                answer,
                timeout_ms: limits.timeout.as_millis() as u64,
                memory_bytes: limits.memory_bytes as u64,
                calls_in_flight: tenants.calls_in_flight(opts.calls_in_flight),
                on_failure: opts.on_failure,
            },
        }),
    ))
}

/// Uploads a component (`.wasm`) for a stage: read within `[plugins] max_upload_bytes`,
/// checked, compiled under limits, smoke-run on the stage's sample input, stored as a new
/// version and (by default) made active.
#[utoipa::path(put, path = "/v1/plugins/{stage}",
    params(
        ("stage" = String, Path, description = "`ingest`, `route`, `send`, `bounce` or `bill` (another: 404)"),
        UploadQuery,
    ),
    request_body(content = [u8], content_type = "application/wasm", description = "the component"),
    responses((status = 201, description = "stored; what the checks measured", body = Uploaded)))]
async fn tenant_upload(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(stage): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let stage = parse_stage(&stage)?;
    let opts = upload_options(q, false)?;
    let bytes = read_upload(&s, &headers, body).await?;
    upload(&s, &t.id, stage, key_prefix(&headers), opts, bytes).await
}

/// Uploads a component for a tenant's stage (as the tenant's upload, and `skip_sample`).
#[utoipa::path(put, path = "/admin/v1/tenants/{id}/plugins/{stage}",
    params(
        UploadQuery,
        ("skip_sample" = Option<bool>, Query, description = "store it without the sample call"),
    ),
    request_body(content = [u8], content_type = "application/wasm", description = "the component"),
    responses((status = 201, description = "stored; what the checks measured", body = Uploaded)))]
async fn admin_upload(
    State(s): State<AppState>,
    _: Admin,
    Path((id, stage)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    known_tenant(&s, &id).await?;
    let stage = parse_stage(&stage)?;
    let opts = upload_options(q, true)?;
    let bytes = read_upload(&s, &headers, body).await?;
    upload(&s, &id, stage, "admin".into(), opts, bytes).await
}

// ---------------------------------------------------------------- activate, rollback

/// The version to make active.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    version: u32,
}

type ActiveResult = Result<Json<Activated>, ApiError>;

async fn activate(s: &Server, tenant_id: &str, stage: Stage, version: u32) -> ActiveResult {
    let active = s
        .store
        .activate_plugin(tenant_id, stage, version, now_ms())
        .await?;
    s.plugins.tenants.refresh(&s.store).await?;
    Ok(Json(Activated {
        active: active.into(),
    }))
}

async fn rollback(s: &Server, tenant_id: &str, stage: Stage) -> ActiveResult {
    let active = s.store.rollback_plugin(tenant_id, stage, now_ms()).await?;
    s.plugins.tenants.refresh(&s.store).await?;
    Ok(Json(Activated {
        active: active.into(),
    }))
}

/// Makes a stored version active (and lifts its suspension).
#[utoipa::path(post, path = "/v1/plugins/{stage}/activate", request_body = ActivateBody,
    responses((status = 200, description = "the active version", body = Activated)))]
async fn tenant_activate(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(stage): Path<String>,
    Json(b): Json<ActivateBody>,
) -> ActiveResult {
    activate(&s, &t.id, parse_stage(&stage)?, b.version).await
}

/// Makes a stored version of a tenant's stage active.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/plugins/{stage}/activate", request_body = ActivateBody,
    responses((status = 200, description = "the active version", body = Activated)))]
async fn admin_activate(
    State(s): State<AppState>,
    _: Admin,
    Path((id, stage)): Path<(String, String)>,
    Json(b): Json<ActivateBody>,
) -> ActiveResult {
    known_tenant(&s, &id).await?;
    activate(&s, &id, parse_stage(&stage)?, b.version).await
}

/// Makes the version active before the current one active again.
#[utoipa::path(post, path = "/v1/plugins/{stage}/rollback",
    responses((status = 200, description = "the active version", body = Activated)))]
async fn tenant_rollback(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(stage): Path<String>,
) -> ActiveResult {
    rollback(&s, &t.id, parse_stage(&stage)?).await
}

/// Rolls a tenant's stage back to its previous version.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/plugins/{stage}/rollback",
    responses((status = 200, description = "the active version", body = Activated)))]
async fn admin_rollback(
    State(s): State<AppState>,
    _: Admin,
    Path((id, stage)): Path<(String, String)>,
) -> ActiveResult {
    known_tenant(&s, &id).await?;
    rollback(&s, &id, parse_stage(&stage)?).await
}

// ---------------------------------------------------------------- list, logs

/// Versions grouped by stage, each with whether it is active and (for versions called
/// on this host) its call counters.
async fn list(s: &Server, tenant_id: &str) -> Result<Json<PluginList>, ApiError> {
    let versions = s.store.list_plugin_versions(tenant_id, None).await?;
    let mut stages = Vec::new();
    for stage in Stage::ALL {
        let of_stage: Vec<_> = versions.iter().filter(|v| v.stage == stage).collect();
        if of_stage.is_empty() {
            continue;
        }
        let active = s.store.active_plugin(tenant_id, stage).await?;
        let active_version = active.as_ref().map(|a| a.version.version);
        let listed: Vec<_> = of_stage
            .into_iter()
            .map(|v| ListedVersion {
                active: Some(v.version) == active_version,
                stats: s
                    .plugins
                    .tenants
                    .stats(tenant_id, stage, v.version)
                    .map(|st| st.snapshot()),
                version: v.clone().into(),
            })
            .collect();
        stages.push(StagePlugins {
            stage,
            active_version,
            suspended: active
                .as_ref()
                .is_some_and(|a| a.version.state == PluginState::Suspended),
            suspended_reason: active.as_ref().and_then(|a| a.version.state_reason.clone()),
            previous_versions: active
                .as_ref()
                .map(|a| a.previous.clone())
                .unwrap_or_default(),
            activated_at_ms: active.as_ref().map(|a| a.activated_at_ms),
            versions: listed,
        });
    }
    Ok(Json(PluginList {
        tenant: tenant_id.to_owned(),
        plugins: stages,
    }))
}

/// The tenant's plugin versions by stage, with their call counters on this node.
#[utoipa::path(get, path = "/v1/plugins",
    responses((status = 200, description = "the versions", body = PluginList)))]
async fn tenant_list(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
) -> Result<Json<PluginList>, ApiError> {
    list(&s, &t.id).await
}

/// A tenant's plugin versions by stage.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/plugins",
    responses((status = 200, description = "the versions", body = PluginList)))]
async fn admin_list(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<PluginList>, ApiError> {
    known_tenant(&s, &id).await?;
    list(&s, &id).await
}

/// Lines in one page of a log when the reader does not say.
const LOG_PAGE_LINES: usize = 100;
/// Most lines in one page of a log.
const LOG_PAGE_LINES_MAX: usize = 1000;

/// `?after=<cursor>&limit=<lines>` of a logs read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// The `cursor` or `next` of a page before (default: from the oldest kept).
    after: Option<String>,
    /// Lines in the page, 1–1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// One page of the (tenant, stage) log on this host (the plugins' `log` calls and
/// stderr, and how failed calls ended): the lines after the cursor, at most `limit`
/// and at most `[plugins.logs] max_page_bytes` of JSON. `next` is the cursor of the
/// following page while more lines are kept; `cursor` is where to poll from later;
/// `missed` counts lines evicted before they were read.
fn logs(
    s: &Server,
    tenant_id: &str,
    stage: Stage,
    q: LogsQuery,
) -> Result<Json<LogsPage>, ApiError> {
    let after = match q.after.as_deref() {
        None | Some("") => 0,
        Some(c) => c.parse::<u64>().map_err(|_| {
            ApiError::invalid("after", format!("{c:?} is not a cursor from a logs page"))
        })?,
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => LOG_PAGE_LINES,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=LOG_PAGE_LINES_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("{l:?} is not a number of lines from 1 to {LOG_PAGE_LINES_MAX}"),
                ));
            }
        },
    };
    let tenants = &s.plugins.tenants;
    let page =
        tenants
            .log(tenant_id, stage)
            .page(after, limit, tenants.log_bounds().max_page_bytes);
    let cursor = page.lines.last().map_or(after, |l| l.seq);
    Ok(Json(LogsPage {
        tenant: tenant_id.to_owned(),
        stage,
        node: s.node.id.clone(),
        lines: page.lines.into_iter().map(LogLineView::from).collect(),
        missed: page.missed,
        cursor: cursor.to_string(),
        next: page.more.then(|| cursor.to_string()),
    }))
}

/// A page of the (tenant, stage) plugin log on the node that answers.
#[utoipa::path(get, path = "/v1/plugins/{stage}/logs", params(LogsQuery),
    responses((status = 200, description = "a page of lines", body = LogsPage)))]
async fn tenant_logs(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(stage): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<LogsPage>, ApiError> {
    logs(&s, &t.id, parse_stage(&stage)?, q)
}

/// A page of a tenant's stage plugin log on the node that answers.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/plugins/{stage}/logs", params(LogsQuery),
    responses((status = 200, description = "a page of lines", body = LogsPage)))]
async fn admin_logs(
    State(s): State<AppState>,
    _: Admin,
    Path((id, stage)): Path<(String, String)>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<LogsPage>, ApiError> {
    known_tenant(&s, &id).await?;
    logs(&s, &id, parse_stage(&stage)?, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn upload_options_parse_and_refuse_clearly() {
        let o = upload_options(
            q(&[
                ("config", "mode=loop"),
                ("config", "x=a=b"),
                ("timeout_ms", "20"),
                ("memory_mib", "8"),
                ("activate", "false"),
                ("calls_in_flight", "3"),
                ("on_failure", "defer"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(
            (o.calls_in_flight, o.on_failure),
            (Some(3), FailurePolicy::Defer)
        );
        let e = upload_options(q(&[("on_failure", "panic")]), false).unwrap_err();
        assert!(
            e.message.contains("\"panic\"") && e.message.contains("fallback, defer"),
            "{}",
            e.message
        );
        let e = upload_options(q(&[("calls_in_flight", "many")]), false).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("calls_in_flight"));
        assert_eq!(
            o.config,
            vec![("mode".into(), "loop".into()), ("x".into(), "a=b".into())]
        );
        assert_eq!(
            (o.timeout_ms, o.memory_bytes, o.activate),
            (Some(20), Some(8 << 20), false)
        );
        let e = upload_options(q(&[("config", "novalue")]), false).unwrap_err();
        assert!(e.message.contains("\"novalue\""), "{}", e.message);
        let e = upload_options(q(&[("skip_sample", "true")]), false).unwrap_err();
        assert!(e.message.contains("admin"), "{}", e.message);
        assert!(
            upload_options(q(&[("skip_sample", "true")]), true)
                .unwrap()
                .skip_sample
        );
        let e = upload_options(q(&[("colour", "red")]), false).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
    }
}
