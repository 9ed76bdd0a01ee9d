//! Suppression lists over HTTP: the tenant's own (`/v1/suppressions`), the admin's
//! view of any tenant's (`/admin/v1/tenants/{id}/suppressions`). The check at
//! acceptance that keeps suppressed recipients out of a new message is `accept.rs`'s.
//!
//! A tenant adds and removes its own entries; what the platform added (bounce
//! processing, an admin) it cannot remove (403 naming why), an admin can.

use super::auth::{Admin, AuthTenant};
use super::dto::messages::{SuppressionAdded, SuppressionPage, SuppressionView};
use super::error::ApiError;
use super::state::AppState;
use super::state::{Server, now_ms};
use crate::store::{AddedBy, NewSuppression, Removal, normalize_address};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

/// Largest page of a listing.
const MAX_PAGE: u32 = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/suppressions", get(tenant_list).post(tenant_add))
        .route("/v1/suppressions/{address}", delete(tenant_delete))
        .route(
            "/admin/v1/tenants/{id}/suppressions",
            get(admin_list).post(admin_add),
        )
        .route(
            "/admin/v1/tenants/{id}/suppressions/{address}",
            delete(admin_delete),
        )
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// The `next_after` of the page before.
    pub after: Option<String>,
    /// Entries in the page (1–1000, default 100).
    pub limit: Option<u32>,
}

/// A page of a tenant's list (the API's and the portal's).
pub(super) async fn list(
    s: &Server,
    tenant: &str,
    page: Page,
) -> Result<Json<SuppressionPage>, ApiError> {
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let items = s
        .store
        .list_suppressions(tenant, page.after.as_deref(), limit)
        .await?;
    // The cursor of the next page, when this one is full.
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|i| i.address.clone()))
        .flatten();
    Ok(Json(SuppressionPage {
        suppressions: items.iter().map(SuppressionView::from).collect(),
        next_after: next,
    }))
}

/// Removes an entry of a tenant's list (the API's and the portal's).
pub(super) async fn remove(
    s: &Server,
    tenant: &str,
    address: &str,
    by: AddedBy,
) -> Result<StatusCode, ApiError> {
    match s.store.delete_suppression(tenant, address, by).await? {
        Removal::Removed => Ok(StatusCode::NO_CONTENT),
        Removal::NotFound => Err(ApiError::not_found(format!(
            "{address:?} is not on the suppression list"
        ))),
        Removal::Protected(kept) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "suppressed_by_platform",
            format!(
                "{:?} was suppressed by the platform ({}, from {}); only the platform's \
                 operators can remove it",
                kept.address, kept.reason, kept.source
            ),
        )
        .field("address")),
    }
}

/// The tenant's suppression list, by address.
#[utoipa::path(get, path = "/v1/suppressions", params(Page),
    responses((status = 200, description = "a page", body = SuppressionPage)))]
async fn tenant_list(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Query(page): Query<Page>,
) -> Result<Json<SuppressionPage>, ApiError> {
    list(&s, &t.id, page).await
}

/// Removes an address the tenant suppressed (the platform's stay: 403).
#[utoipa::path(delete, path = "/v1/suppressions/{address}",
    responses((status = 204, description = "removed")))]
async fn tenant_delete(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(address): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&s, &t.id, &address, AddedBy::Tenant).await
}

async fn known_tenant(s: &Server, id: &str) -> Result<(), ApiError> {
    match s.store.get_tenant(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!("tenant {id:?}"))),
    }
}

/// A tenant's suppression list.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/suppressions", params(Page),
    responses((status = 200, description = "a page", body = SuppressionPage)))]
async fn admin_list(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<SuppressionPage>, ApiError> {
    known_tenant(&s, &id).await?;
    list(&s, &id, page).await
}

/// A suppression to add.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AddBody {
    /// An e-mail address (stored lower-cased).
    #[schema(format = Email)]
    pub address: String,
    /// Default `manual`.
    pub reason: Option<String>,
    pub note: Option<String>,
}

/// Suppresses an address for a tenant, as the platform's (the tenant cannot lift it).
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/suppressions", request_body = AddBody,
    responses((status = 201, description = "suppressed", body = SuppressionAdded)))]
async fn admin_add(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(body): Json<AddBody>,
) -> Result<(StatusCode, Json<SuppressionAdded>), ApiError> {
    known_tenant(&s, &id).await?;
    add(&s, id, body, AddedBy::Platform).await
}

/// Suppresses an address for the tenant.
#[utoipa::path(post, path = "/v1/suppressions", request_body = AddBody,
    responses((status = 201, description = "suppressed", body = SuppressionAdded)))]
async fn tenant_add(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Json(body): Json<AddBody>,
) -> Result<(StatusCode, Json<SuppressionAdded>), ApiError> {
    add(&s, t.id, body, AddedBy::Tenant).await
}

/// Adds a manual entry; one the platform already has stays the platform's (the API's
/// and the portal's).
pub(super) async fn add(
    s: &Server,
    tenant: String,
    body: AddBody,
    by: AddedBy,
) -> Result<(StatusCode, Json<SuppressionAdded>), ApiError> {
    let new = NewSuppression {
        tenant_id: tenant.clone(),
        address: body.address.clone(),
        reason: body.reason.unwrap_or_else(|| "manual".into()),
        source: "manual".into(),
        detail: json!({"note": body.note}),
        message_id: None,
        added_by: by,
    };
    s.store.suppress(new, now_ms()).await.map_err(|e| match e {
        crate::store::StoreError::Invalid(m) => ApiError::invalid("address", m),
        other => other.into(),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(SuppressionAdded {
            address: normalize_address(&body.address),
            tenant,
        }),
    ))
}

/// Removes a suppression of a tenant, the platform's too.
#[utoipa::path(delete, path = "/admin/v1/tenants/{id}/suppressions/{address}",
    responses((status = 204, description = "removed")))]
async fn admin_delete(
    State(s): State<AppState>,
    _: Admin,
    Path((id, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    known_tenant(&s, &id).await?;
    remove(&s, &id, &address, AddedBy::Platform).await
}
