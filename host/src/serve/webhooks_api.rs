//! Webhooks over HTTP (issue 21): a tenant's under `/v1/webhooks`, the platform's (every
//! tenant's events) under `/admin/v1/webhooks`, the same routes for both:
//! create (201, the signing secret shown this once), list, get, change (`state` pauses,
//! disables or resumes), delete, `rotate-secret` (the old secret signs too during the
//! overlap), `test` (a `webhook.test` body sent now, its attempt kept), `replay`
//! (events after a cursor sent again) and `attempts`.
//!
//! Invariants:
//! - What a tenant sends is bounded: its URL (`webhook_http::MAX_URL_LEN`, http(s), no
//!   credentials, no internal IP literal unless `allow_private`), `events` (known types
//!   or `*`, at most [`MAX_TYPES`]), `description` ([`MAX_DESCRIPTION`]), and its
//!   webhooks (`[webhooks] max_per_tenant`).
//! - A secret is answered only by create and rotate-secret; listings never show one.
//! - One tenant's key reaches only its own webhooks; the admin's only the platform's.

use super::api::{Admin, AppState};
use super::auth::AuthTenant;
use super::dto::events::{
    AttemptList, AttemptView, ReplayStarted, WebhookList, WebhookTested, WebhookView,
};
use super::error::ApiError;
use super::events_api::public_type;
use super::state::now_ms;
use super::webhooks::{ALL_TYPES, send};
use crate::store::{
    EventKind, NewWebhook, StoreError, Webhook, WebhookAttempt, WebhookOwner, WebhookState,
    WebhookUpdate,
};
use crate::webhook_http;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;

/// The longest description.
pub const MAX_DESCRIPTION: usize = 256;
/// The most event types one webhook may name.
pub const MAX_TYPES: usize = 32;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", get(t_list).post(t_create))
        .route(
            "/v1/webhooks/{id}",
            get(t_get).patch(t_update).delete(t_delete),
        )
        .route("/v1/webhooks/{id}/rotate-secret", post(t_rotate))
        .route("/v1/webhooks/{id}/test", post(t_test))
        .route("/v1/webhooks/{id}/replay", post(t_replay))
        .route("/v1/webhooks/{id}/attempts", get(t_attempts))
        .route("/admin/v1/webhooks", get(a_list).post(a_create))
        .route(
            "/admin/v1/webhooks/{id}",
            get(a_get).patch(a_update).delete(a_delete),
        )
        .route("/admin/v1/webhooks/{id}/rotate-secret", post(a_rotate))
        .route("/admin/v1/webhooks/{id}/test", post(a_test))
        .route("/admin/v1/webhooks/{id}/replay", post(a_replay))
        .route("/admin/v1/webhooks/{id}/attempts", get(a_attempts))
}

/// A new webhook.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Create {
    /// `http(s)`, at most 2048 bytes, no credentials, a public address.
    url: String,
    /// Event types (`message.delivered`, …), or `["*"]` for all.
    events: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

/// A change of a webhook: what is left out stays.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Change {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    /// `active` (resumes from its cursor, now), `paused` or `disabled`.
    state: Option<String>,
}

/// What to send again.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// The cursor after which the events are sent again.
    after: i64,
    /// Whose log (the platform's webhooks only; a tenant's is its own).
    tenant: Option<String>,
}

fn check_url(s: &AppState, url: &str) -> Result<(), ApiError> {
    webhook_http::check_url(url, s.pipeline.webhooks.allow_private)
        .map(|_| ())
        .map_err(|m| ApiError::invalid("url", m))
}

fn check_events(events: &[String]) -> Result<Vec<String>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "events: name at least one event type, or \"*\" for all",
        ));
    }
    if events.len() > MAX_TYPES {
        return Err(ApiError::invalid(
            "events",
            format!(
                "events: {} types; at most {MAX_TYPES} (or \"*\" for all)",
                events.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let known = e == ALL_TYPES || EventKind::ALL.into_iter().any(|k| public_type(k) == e);
        if !known {
            return Err(ApiError::invalid(
                "events",
                format!(
                    "events: {:?} is not an event type; known: *, {}",
                    e.chars().take(64).collect::<String>(),
                    EventKind::ALL.map(public_type).join(", ")
                ),
            ));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

fn check_description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "description",
            format!("description: at most {MAX_DESCRIPTION} characters, no control characters"),
        ));
    }
    Ok(())
}

/// A webhook as answered (never its secrets).
fn view(w: &Webhook, cursors: Option<&[(String, i64)]>) -> WebhookView {
    WebhookView::new(w, cursors, now_ms())
}

async fn create(
    s: &AppState,
    owner: WebhookOwner<'_>,
    body: Create,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    check_url(s, &body.url)?;
    let events = check_events(&body.events)?;
    let description = body.description.unwrap_or_default();
    check_description(&description)?;
    let secret = webhook_http::new_secret();
    let new = NewWebhook {
        id: format!("wh_{}", ulid::Ulid::new().to_string().to_lowercase()),
        tenant_id: match owner {
            WebhookOwner::Tenant(t) => Some(t.to_string()),
            WebhookOwner::Platform => None,
        },
        url: body.url,
        events,
        description,
        secret: secret.clone(),
    };
    let max = s.pipeline.webhooks.max_per_tenant;
    let w = s
        .store
        .create_webhook(new, max, now_ms())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => {
                let mut e = ApiError::new(StatusCode::CONFLICT, "too_many_webhooks", m);
                e.limit = Some("webhooks.max_per_tenant");
                e
            }
            other => other.into(),
        })?;
    let mut v = view(&w, None);
    v.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(v)))
}

async fn find(s: &AppState, owner: WebhookOwner<'_>, id: &str) -> Result<Webhook, ApiError> {
    s.store
        .get_webhook(owner, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no webhook {id:?}")))
}

async fn one(
    s: &AppState,
    owner: WebhookOwner<'_>,
    id: &str,
) -> Result<Json<WebhookView>, ApiError> {
    let w = find(s, owner, id).await?;
    let cursors = s.store.webhook_cursors(id).await?;
    Ok(Json(view(&w, Some(&cursors))))
}

async fn list(s: &AppState, owner: WebhookOwner<'_>) -> Result<Json<WebhookList>, ApiError> {
    let hooks = s.store.list_webhooks(owner).await?;
    Ok(Json(WebhookList {
        webhooks: hooks.iter().map(|w| view(w, None)).collect(),
    }))
}

async fn update(
    s: &AppState,
    owner: WebhookOwner<'_>,
    id: &str,
    body: Change,
) -> Result<Json<WebhookView>, ApiError> {
    if let Some(u) = &body.url {
        check_url(s, u)?;
    }
    let events = body.events.as_deref().map(check_events).transpose()?;
    if let Some(d) = &body.description {
        check_description(d)?;
    }
    let state = body
        .state
        .as_deref()
        .map(|t| {
            WebhookState::parse(t).ok_or_else(|| {
                ApiError::invalid(
                    "state",
                    "state: one of \"active\" (resumes, retrying now), \"paused\", \"disabled\"",
                )
            })
        })
        .transpose()?;
    let w = s
        .store
        .update_webhook(
            owner,
            id,
            WebhookUpdate {
                url: body.url,
                events,
                description: body.description,
                state,
            },
            now_ms(),
        )
        .await?;
    Ok(Json(view(&w, None)))
}

async fn delete(s: &AppState, owner: WebhookOwner<'_>, id: &str) -> Result<StatusCode, ApiError> {
    if s.store.delete_webhook(owner, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no webhook {id:?}")))
    }
}

async fn rotate(
    s: &AppState,
    owner: WebhookOwner<'_>,
    id: &str,
) -> Result<Json<WebhookView>, ApiError> {
    let secret = webhook_http::new_secret();
    let now = now_ms();
    let overlap = i64::try_from(s.pipeline.webhooks.rotation_overlap.as_millis()).unwrap_or(0);
    let w = s
        .store
        .rotate_webhook_secret(owner, id, &secret, now + overlap, now)
        .await?;
    let mut v = view(&w, None);
    v.secret = Some(secret);
    Ok(Json(v))
}

async fn test(
    s: &AppState,
    owner: WebhookOwner<'_>,
    id: &str,
) -> Result<Json<WebhookTested>, ApiError> {
    let w = find(s, owner, id).await?;
    let now = now_ms();
    let msg_id = format!("msg_{}_test_{now}", w.id);
    let body = json!({
        "type": "webhook.test",
        "webhook_id": w.id,
        "tenant_id": w.tenant_id,
        "at_ms": now,
        "events": [],
    })
    .to_string();
    let sent = send(s, &w, &msg_id, body.as_bytes(), &mut None).await;
    let attempt = WebhookAttempt {
        at_ms: now,
        tenant_id: None,
        first_cursor: None,
        last_cursor: None,
        events: 0,
        status: sent.status,
        latency_ms: i64::try_from(sent.latency.as_millis()).unwrap_or(i64::MAX),
        error: sent.error.clone(),
    };
    s.store
        .record_webhook_attempt(&w.id, &attempt, s.pipeline.webhooks.attempts_kept)
        .await?;
    Ok(Json(WebhookTested {
        ok: sent.ok(),
        status: sent.status,
        latency_ms: attempt.latency_ms,
        error: sent.error,
    }))
}

async fn replay(
    s: &AppState,
    owner: WebhookOwner<'_>,
    id: &str,
    body: Replay,
) -> Result<Json<ReplayStarted>, ApiError> {
    let w = find(s, owner, id).await?;
    let tenant = match (&w.tenant_id, body.tenant) {
        (Some(t), None) => t.clone(),
        (Some(t), Some(given)) if *t == given => given,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "tenant",
                "tenant: a tenant's webhook reads its own tenant's events only",
            ));
        }
        (None, Some(given)) => given,
        (None, None) => {
            return Err(ApiError::invalid(
                "tenant",
                "tenant: a platform webhook's replay names the tenant whose events to send again",
            ));
        }
    };
    let last = s.store.last_event_cursor(&tenant).await?;
    if body.after < 0 || body.after > last {
        return Err(ApiError::invalid(
            "after",
            format!(
                "after: {} is not a cursor of tenant {tenant:?} (from 0 to its last, {last})",
                body.after
            ),
        ));
    }
    s.store
        .replay_webhook(owner, id, &tenant, body.after, now_ms())
        .await?;
    Ok(Json(ReplayStarted {
        webhook_id: id.to_owned(),
        tenant_id: tenant,
        after: body.after,
        last,
    }))
}

async fn attempts(
    s: &AppState,
    owner: WebhookOwner<'_>,
    id: &str,
    query: &HashMap<String, String>,
) -> Result<Json<AttemptList>, ApiError> {
    let max = s.pipeline.webhooks.attempts_kept;
    let limit = match query.get("limit") {
        Some(l) => l
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("limit {l:?} must be between 1 and {max}"))
            })?,
        None => max,
    };
    let list = s.store.webhook_attempts(owner, id, limit).await?;
    Ok(Json(AttemptList {
        attempts: list.into_iter().map(AttemptView::from).collect(),
    }))
}

// ---- the tenant's routes ----

/// Adds a webhook for the tenant's events.
#[utoipa::path(post, path = "/v1/webhooks", request_body = Create,
    responses((status = 201, description = "the webhook and its signing secret, shown this once", body = WebhookView)))]
async fn t_create(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Json(body): Json<Create>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    create(&s, WebhookOwner::Tenant(&t.id), body).await
}
/// The tenant's webhooks.
#[utoipa::path(get, path = "/v1/webhooks", 
    responses((status = 200, description = "the webhooks", body = WebhookList)))]
async fn t_list(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
) -> Result<Json<WebhookList>, ApiError> {
    list(&s, WebhookOwner::Tenant(&t.id)).await
}
/// A webhook.
#[utoipa::path(get, path = "/v1/webhooks/{id}", 
    responses((status = 200, description = "the webhook with its cursor", body = WebhookView)))]
async fn t_get(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    one(&s, WebhookOwner::Tenant(&t.id), &id).await
}
/// Changes a webhook (`state` pauses, disables or resumes it).
#[utoipa::path(patch, path = "/v1/webhooks/{id}", request_body = Change,
    responses((status = 200, description = "the webhook", body = WebhookView)))]
async fn t_update(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
    Json(body): Json<Change>,
) -> Result<Json<WebhookView>, ApiError> {
    update(&s, WebhookOwner::Tenant(&t.id), &id, body).await
}
/// Removes a webhook.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", 
    responses((status = 204, description = "removed")))]
async fn t_delete(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&s, WebhookOwner::Tenant(&t.id), &id).await
}
/// Makes a new signing secret.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", 
    responses((status = 200, description = "the new secret (the old one signs too during the overlap)", body = WebhookView)))]
async fn t_rotate(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    rotate(&s, WebhookOwner::Tenant(&t.id), &id).await
}
/// Sends a `webhook.test` body now.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", 
    responses((status = 200, description = "how the test send went", body = WebhookTested)))]
async fn t_test(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<WebhookTested>, ApiError> {
    test(&s, WebhookOwner::Tenant(&t.id), &id).await
}
/// Sends the events after a cursor again.
#[utoipa::path(post, path = "/v1/webhooks/{id}/replay", request_body = Replay,
    responses((status = 200, description = "the events after `after` are sent again", body = ReplayStarted)))]
async fn t_replay(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
    Json(body): Json<Replay>,
) -> Result<Json<ReplayStarted>, ApiError> {
    replay(&s, WebhookOwner::Tenant(&t.id), &id, body).await
}
/// The webhook's last delivery attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}/attempts", params(("limit" = Option<u32>, Query, description = "at most this many (default and most: `[webhooks] attempts_kept`)")),
    responses((status = 200, description = "the last attempts, newest first", body = AttemptList)))]
async fn t_attempts(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AttemptList>, ApiError> {
    attempts(&s, WebhookOwner::Tenant(&t.id), &id, &q).await
}

// ---- the platform's routes ----

/// Adds a webhook for every tenant's events (a platform webhook).
#[utoipa::path(post, path = "/admin/v1/webhooks", request_body = Create,
    responses((status = 201, description = "the webhook and its signing secret, shown this once", body = WebhookView)))]
async fn a_create(
    State(s): State<AppState>,
    _: Admin,
    Json(body): Json<Create>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    create(&s, WebhookOwner::Platform, body).await
}
/// The platform's webhooks.
#[utoipa::path(get, path = "/admin/v1/webhooks", 
    responses((status = 200, description = "the webhooks", body = WebhookList)))]
async fn a_list(State(s): State<AppState>, _: Admin) -> Result<Json<WebhookList>, ApiError> {
    list(&s, WebhookOwner::Platform).await
}
/// A webhook.
#[utoipa::path(get, path = "/admin/v1/webhooks/{id}", 
    responses((status = 200, description = "the webhook with its cursor", body = WebhookView)))]
async fn a_get(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    one(&s, WebhookOwner::Platform, &id).await
}
/// Changes a webhook (`state` pauses, disables or resumes it).
#[utoipa::path(patch, path = "/admin/v1/webhooks/{id}", request_body = Change,
    responses((status = 200, description = "the webhook", body = WebhookView)))]
async fn a_update(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(body): Json<Change>,
) -> Result<Json<WebhookView>, ApiError> {
    update(&s, WebhookOwner::Platform, &id, body).await
}
/// Removes a webhook.
#[utoipa::path(delete, path = "/admin/v1/webhooks/{id}", 
    responses((status = 204, description = "removed")))]
async fn a_delete(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&s, WebhookOwner::Platform, &id).await
}
/// Makes a new signing secret.
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/rotate-secret", 
    responses((status = 200, description = "the new secret (the old one signs too during the overlap)", body = WebhookView)))]
async fn a_rotate(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    rotate(&s, WebhookOwner::Platform, &id).await
}
/// Sends a `webhook.test` body now.
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/test", 
    responses((status = 200, description = "how the test send went", body = WebhookTested)))]
async fn a_test(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<WebhookTested>, ApiError> {
    test(&s, WebhookOwner::Platform, &id).await
}
/// Sends the events after a cursor again.
#[utoipa::path(post, path = "/admin/v1/webhooks/{id}/replay", request_body = Replay,
    responses((status = 200, description = "the events after `after` are sent again", body = ReplayStarted)))]
async fn a_replay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(body): Json<Replay>,
) -> Result<Json<ReplayStarted>, ApiError> {
    replay(&s, WebhookOwner::Platform, &id, body).await
}
/// The webhook's last delivery attempts.
#[utoipa::path(get, path = "/admin/v1/webhooks/{id}/attempts", params(("limit" = Option<u32>, Query, description = "at most this many (default and most: `[webhooks] attempts_kept`)")),
    responses((status = 200, description = "the last attempts, newest first", body = AttemptList)))]
async fn a_attempts(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AttemptList>, ApiError> {
    attempts(&s, WebhookOwner::Platform, &id, &q).await
}
