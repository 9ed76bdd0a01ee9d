//! `POST …/retry`: deferred recipients made due now instead of after their retry delay,
//! selected by message, relay, domain or tenant. The admin API may select any; a tenant
//! only its own (`/v1/…`). The dispatcher is woken; other nodes find the work due at
//! their next lease.

use super::auth::{Admin, AuthTenant};
use super::dto::messages::Retried;
use super::error::ApiError;
use super::state::AppState;
use super::state::now_ms;
use crate::store::RetryFilter;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

/// What the admin API's `POST /admin/v1/retry` takes: every field given must match.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminRetry {
    message: Option<String>,
    relay: Option<String>,
    domain: Option<String>,
    tenant: Option<String>,
    /// Every deferred recipient of every tenant; needed when nothing else is named.
    #[serde(default)]
    all: bool,
}

/// What a tenant's `POST /v1/retry` takes: within its own mail, every field given
/// must match; none: all its deferred recipients.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantRetry {
    message: Option<String>,
    relay: Option<String>,
    domain: Option<String>,
}

pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/retry", post(admin_retry))
        .route("/admin/v1/relays/{id}/retry", post(admin_retry_relay))
        .route("/admin/v1/tenants/{id}/retry", post(admin_retry_tenant))
}

pub fn tenant_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/retry", post(tenant_retry))
        .route("/v1/messages/{id}/retry", post(tenant_retry_message))
}

async fn retry(s: &AppState, filter: RetryFilter) -> Result<Json<Retried>, ApiError> {
    let retried = s.store.retry_deferred(&filter, now_ms()).await?;
    if retried > 0 {
        s.wake.notify_one();
    }
    tracing::info!(?filter, retried, "deferred recipients made due by request");
    Ok(Json(Retried { retried }))
}

fn domain(d: Option<String>) -> Option<String> {
    d.map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
}

/// Makes deferred recipients due now: every field given must match.
#[utoipa::path(post, path = "/admin/v1/retry", request_body = AdminRetry,
    responses((status = 200, description = "how many are due now", body = Retried)))]
async fn admin_retry(
    State(s): State<AppState>,
    _: Admin,
    Json(b): Json<AdminRetry>,
) -> Result<Json<Retried>, ApiError> {
    let named =
        b.message.is_some() || b.relay.is_some() || b.domain.is_some() || b.tenant.is_some();
    if !named && !b.all {
        return Err(ApiError::invalid(
            "message",
            "name what to retry: \"message\", \"relay\", \"domain\" and/or \"tenant\" \
             (or \"all\": true for every deferred recipient)",
        ));
    }
    if named && b.all {
        return Err(ApiError::invalid(
            "all",
            "\"all\" selects everything; leave it out when naming a message, relay, domain or tenant",
        ));
    }
    retry(
        &s,
        RetryFilter {
            tenant: b.tenant,
            message: b.message,
            relay: b.relay,
            domain: domain(b.domain),
        },
    )
    .await
}

/// Makes the deferred recipients of a relay due now.
#[utoipa::path(post, path = "/admin/v1/relays/{id}/retry",
    responses((status = 200, description = "how many are due now", body = Retried)))]
async fn admin_retry_relay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Retried>, ApiError> {
    if s.store.get_relay(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("relay {id:?}")));
    }
    retry(
        &s,
        RetryFilter {
            relay: Some(id),
            ..RetryFilter::default()
        },
    )
    .await
}

/// Makes a tenant's deferred recipients due now.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/retry",
    responses((status = 200, description = "how many are due now", body = Retried)))]
async fn admin_retry_tenant(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Retried>, ApiError> {
    if s.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {id:?}")));
    }
    retry(
        &s,
        RetryFilter {
            tenant: Some(id),
            ..RetryFilter::default()
        },
    )
    .await
}

/// Makes the tenant's deferred recipients due now (every field given must match;
/// none: all of them).
#[utoipa::path(post, path = "/v1/retry", request_body = TenantRetry,
    responses((status = 200, description = "how many are due now", body = Retried)))]
async fn tenant_retry(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Json(b): Json<TenantRetry>,
) -> Result<Json<Retried>, ApiError> {
    retry(
        &s,
        RetryFilter {
            tenant: Some(tenant.id),
            message: b.message,
            relay: b.relay,
            domain: domain(b.domain),
        },
    )
    .await
}

/// Makes a message's deferred recipients due now.
#[utoipa::path(post, path = "/v1/messages/{id}/retry",
    responses((status = 200, description = "how many are due now", body = Retried)))]
async fn tenant_retry_message(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<Retried>, ApiError> {
    retry_own_message(&s, &tenant.id, &id)
        .await
        .map(|retried| Json(Retried { retried }))
}

/// Makes a tenant's own message's deferred recipients due now (another tenant's message
/// is a 404): what `POST /v1/messages/{id}/retry` and the portal's retry button do.
pub(super) async fn retry_own_message(
    s: &AppState,
    tenant: &str,
    id: &str,
) -> Result<usize, ApiError> {
    // Another tenant's message is "not found", as for GET.
    if s.store.get_message(tenant, id).await?.is_none() {
        return Err(ApiError::not_found(format!("message {id:?}")));
    }
    retry(
        s,
        RetryFilter {
            tenant: Some(tenant.to_owned()),
            message: Some(id.to_owned()),
            ..RetryFilter::default()
        },
    )
    .await
    .map(|Json(r)| r.retried)
}
