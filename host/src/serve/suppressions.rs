//! Suppression lists over HTTP: the tenant's own (`/v1/suppressions`), the admin's
//! view of any tenant's (`/admin/v1/tenants/{id}/suppressions`), and the check at
//! acceptance that keeps suppressed recipients out of a new message.
//!
//! A tenant adds and removes its own entries; what the platform added (bounce
//! processing, an admin) it cannot remove (403 naming why), an admin can.

use super::auth::{Admin, AuthTenant};
use super::error::ApiError;
use super::state::AppState;
use super::state::{Server, now_ms};
use crate::store::{AddedBy, NewSuppression, Removal, Suppression, normalize_address};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    after: Option<String>,
    limit: Option<u32>,
}

fn view(s: &Suppression) -> Value {
    json!({"address": s.address, "reason": s.reason, "source": s.source, "detail": s.detail,
           "message_id": s.message_id, "added_by": s.added_by.as_str(),
           "created_at_ms": s.created_at_ms, "updated_at_ms": s.updated_at_ms})
}

async fn list(s: &Server, tenant: &str, page: Page) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let items = s
        .store
        .list_suppressions(tenant, page.after.as_deref(), limit)
        .await?;
    // The cursor of the next page, when this one is full.
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|i| i.address.clone()))
        .flatten();
    Ok(Json(
        json!({"suppressions": items.iter().map(view).collect::<Vec<_>>(), "next_after": next}),
    ))
}

async fn remove(
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

async fn tenant_list(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    list(&s, &t.id, page).await
}

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

async fn admin_list(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    known_tenant(&s, &id).await?;
    list(&s, &id, page).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    address: String,
    /// Default `manual`.
    reason: Option<String>,
    note: Option<String>,
}

async fn admin_add(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(body): Json<AddBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    known_tenant(&s, &id).await?;
    add(&s, id, body, AddedBy::Platform).await
}

async fn tenant_add(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Json(body): Json<AddBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    add(&s, t.id, body, AddedBy::Tenant).await
}

/// Adds a manual entry; one the platform already has stays the platform's.
async fn add(
    s: &Server,
    tenant: String,
    body: AddBody,
    by: AddedBy,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({"address": normalize_address(&body.address), "tenant": tenant})),
    ))
}

async fn admin_delete(
    State(s): State<AppState>,
    _: Admin,
    Path((id, address)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    known_tenant(&s, &id).await?;
    remove(&s, &id, &address, AddedBy::Platform).await
}

/// Splits a new message's recipients into those to send to and those the tenant has
/// suppressed (as the 202 body reports them: status `suppressed` with the reason).
/// All suppressed: 422 naming the field `to`, and nothing is accepted.
pub async fn filter(
    s: &Server,
    tenant: &str,
    recipients: Vec<String>,
) -> Result<(Vec<String>, Vec<Value>), ApiError> {
    let found = s.store.suppressed_among(tenant, &recipients).await?;
    if found.is_empty() {
        return Ok((recipients, Vec::new()));
    }
    let (mut keep, mut refused) = (Vec::new(), Vec::new());
    for r in recipients {
        match found.get(&normalize_address(&r)) {
            Some(sup) => refused.push(json!({"address": r, "status": "suppressed", "reason": sup.reason, "source": sup.source, "since_ms": sup.created_at_ms})),
            None => keep.push(r),
        }
    }
    if keep.is_empty() {
        let list: Vec<String> = refused
            .iter()
            .map(|v| {
                format!(
                    "{} ({})",
                    v["address"].as_str().unwrap_or(""),
                    v["reason"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "suppressed",
            format!(
                "every recipient is on the suppression list: {}",
                list.join(", ")
            ),
        )
        .field("to"));
    }
    Ok((keep, refused))
}
