//! The tenant API (`/v1/…`, bearer = a tenant's or an account's key; `auth.rs` says which
//! may call what), health, and the
//! router that puts the admin API beside it.

use super::accept::{AcceptError, NewSubmission, SuppressedRecipient, accept_submission};
pub(super) use super::auth::bearer;
pub use super::auth::{Admin, AuthTenant};
use super::auth::{Authenticated, Caller};
use super::dto::messages::{MessageDetail, Submitted, SubmittedRecipient};
use super::dto::{Health, Ready};
use super::error::ApiError;
pub use super::state::AppState;
use super::state::Server;
use crate::compose::{self, Composed, JsonMessage};
use crate::store::ACCOUNT_TAG;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;

/// The whole HTTP surface; `more` are routes of modules this one does not name (so
/// they can use it without a loop between them: `events_api`), behind the same layers.
pub fn router(server: AppState, more: Router<AppState>) -> Router {
    // Attachments arrive base64-encoded: allow for the inflation, then check
    // the decoded size against the limit and answer 413 ourselves.
    let body_limit =
        usize::try_from(server.pipeline.limits.max_submission_body_bytes()).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/messages", post(submit))
        .route("/v1/messages/{id}", get(get_message))
        .merge(super::admin::router())
        .merge(super::tenant_plugins::tenant_routes())
        .merge(super::suppressions::routes())
        .merge(super::billing_api::routes())
        .merge(super::accounts_api::routes())
        .merge(more)
        .merge(super::retry::tenant_routes())
        .merge(super::retry::admin_routes())
        // Before the layers, so that a path no route has passes the same checks (an
        // account's key is refused it like any route its account may not call).
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(body_limit))
        // Outside the handlers: a request that does not fit the budget for bodies in
        // flight is refused before anything reads its body.
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            super::body_limit::limit,
        ))
        // Outermost: a tenant past its share of this host is refused before anything
        // else is spent on its request.
        .layer(axum::middleware::from_fn_with_state(server.clone(), admit))
        // Outside everything: whatever answers an error, the body is the JSON error.
        .layer(axum::middleware::from_fn(super::error::json_errors))
        // Outside that: the status counted is the one sent.
        .layer(axum::middleware::from_fn(super::request_count::count))
        .with_state(server)
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, description = "alive (`draining` while it stops)", body = Health)))]
async fn healthz(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        status: if s.is_shutting_down() {
            "draining"
        } else {
            "ok"
        },
        node: s.node.id.clone(),
    })
}

/// Readiness, apart from liveness (`/healthz`): 200 while this node can take work (the
/// store answers and its last writes reached it; plugins are loaded before the listener
/// opens), else 503 with the reason, so a load balancer sends traffic elsewhere.
#[utoipa::path(get, path = "/readyz",
    responses(
        (status = 200, description = "ready to take work", body = Ready),
        (status = 503, description = "`not_ready` (with the reason) or `draining`", body = Ready),
    ))]
async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Ready>) {
    let node = s.node.id.clone();
    if s.is_shutting_down() {
        let ready = Ready {
            status: "draining",
            reason: None,
            node,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(ready));
    }
    match s.store.readiness().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Ready {
                status: "ready",
                reason: None,
                node,
            }),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ready {
                status: "not_ready",
                reason: Some(reason),
                node,
            }),
        ),
    }
}

/// Who may call what, then per-tenant admission (`admission.rs`), for every request of
/// the tenant API. The key's owner is looked up and the request checked against
/// `auth::ROUTES` (an account's key is refused, 403, what its account may not call).
/// Then the tenant's requests in progress on this host are counted while its request
/// is handled, and a submission also takes one from its accept rate. A tenant past
/// either is held, its body unread, until its turn comes or `max_hold_ms` passes, and
/// then let in or answered 429 with `Retry-After` and the limit's name. Requests
/// without a key (health, the admin API) pass on to their handlers, which answer them
/// as before.
async fn admit(
    State(s): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use super::admission::{Kind, Refused};
    let path = req.uri().path();
    if !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    let kind = if req.method() == axum::http::Method::POST && path == "/v1/messages" {
        Kind::Submission
    } else {
        Kind::Request
    };
    let owner = {
        let Some(key) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return next.run(req).await;
        };
        match s.key_owner(key).await {
            Ok(Some(o)) => o,
            Ok(None) => return ApiError::unauthorized().into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        }
    };
    if let Err(e) = super::auth::authorize(&owner, req.method(), path) {
        return e.into_response();
    }
    let tenant = &owner.tenant;
    let admitted = match s.admission.admit(&tenant.id, kind).await {
        Ok(admitted) => admitted,
        Err(refused) => {
            tracing::debug!(tenant = %tenant.id, ?refused, "request refused by admission");
            let message = match &refused {
                Refused::InFlight { limit } => format!(
                    "tenant {:?} already has {limit} requests in progress on this node \
                     (admission.max_requests_in_flight); retry once one has been answered",
                    tenant.id
                ),
                Refused::Rate {
                    per_sec,
                    burst,
                    retry_after,
                } => format!(
                    "tenant {:?} is over its accept rate of {per_sec} submissions a second \
                     after a burst of {burst} (admission.accepts_per_sec, \
                     admission.accept_burst); the next is accepted in {} ms",
                    tenant.id,
                    retry_after.as_millis().max(1)
                ),
            };
            let code = match refused {
                Refused::InFlight { .. } => "too_many_requests_in_flight",
                Refused::Rate { .. } => "accept_rate_exceeded",
            };
            let mut e = ApiError::too_many(code, message, refused.retry_after_secs());
            e.limit = Some(refused.limit_key());
            return e.into_response();
        }
    };
    req.extensions_mut().insert(Authenticated(owner));
    let response = next.run(req).await;
    drop(admitted);
    response
}

/// A submission the core did not accept, as the API answers it.
impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> ApiError {
        use super::accept::AcceptError as E;
        let message = e.to_string();
        match e {
            E::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message)
            }
            E::Invalid { field, .. } => ApiError::invalid(field, message),
            E::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).field("message")
            }
            E::Forbidden { field, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).field(field)
            }
            E::AllSuppressed { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "suppressed", message).field("to")
            }
            E::Rejected { field, .. } => {
                let e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", message);
                match field {
                    Some(f) => e.field(f),
                    None => e,
                }
            }
            E::PluginFailed(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "plugin_failed", message)
            }
            E::Store(e) => e.into(),
        }
    }
}

fn envelope_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses a submission (JSON or raw RFC 5322) into what the store takes. The request's
/// bytes are freed as soon as they are parsed: a large submission is not held in its
/// wire form while it is composed.
fn compose(
    s: &Server,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<(Composed, Vec<String>, Option<String>), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let domain = s.pipeline.delivery.helo_name.as_str();
    let field = |e: compose::FieldError| ApiError::invalid(e.field.clone(), e.to_string());
    if ct.starts_with("message/rfc822") {
        let h = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let from = query
            .get("from")
            .cloned()
            .or_else(|| h("sluice-envelope-from"))
            .unwrap_or_default();
        let mut to = query
            .get("to")
            .map(|v| envelope_list(v))
            .unwrap_or_default();
        if to.is_empty() {
            to = h("sluice-envelope-to")
                .map(|v| envelope_list(&v))
                .unwrap_or_default();
        }
        if from.is_empty() {
            return Err(ApiError::invalid(
                "from",
                "give the envelope sender (query `from=` or header `Sluice-Envelope-From`)",
            ));
        }
        let mut tags = query
            .get("tags")
            .map(|v| envelope_list(v))
            .unwrap_or_default();
        if let Some(account) = query
            .get("account")
            .cloned()
            .or_else(|| h("sluice-account"))
        {
            tags.push(format!("{ACCOUNT_TAG}{account}"));
        }
        let key = query
            .get("idempotency_key")
            .cloned()
            .or_else(|| h("idempotency-key"));
        Ok((
            compose::from_raw(&body, &from, &to, domain).map_err(field)?,
            tags,
            key,
        ))
    } else if ct.starts_with("application/json") || ct.is_empty() {
        let m: JsonMessage = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!(
                    "the body is not a valid message at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        drop(body);
        let key = m.idempotency_key.clone().or_else(|| {
            headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let mut tags = m.tags.clone();
        if let Some(account) = &m.account {
            tags.push(format!("{ACCOUNT_TAG}{account}"));
        }
        Ok((compose::from_json(&m, domain).map_err(field)?, tags, key))
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {ct:?}: send application/json or message/rfc822"),
        ))
    }
}

/// Reads a submission's body, refusing it once it passes what the message limit
/// allows (attachments arrive base64-encoded: see `Limits::max_submission_body_bytes`;
/// the decoded size is checked against `max_message_bytes` afterwards).
async fn read_submission(body: Body, limits: &crate::config::Limits) -> Result<Bytes, ApiError> {
    let cap = usize::try_from(limits.max_submission_body_bytes()).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, cap).await.map_err(|e| {
        let too_large = e
            .into_inner()
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some();
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request body is far over the message limit of {} bytes",
                    limits.max_message_bytes
                ),
            )
            .field("message")
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                "the request body could not be read to its end",
            )
        }
    })
}

/// `POST /v1/messages`: the HTTP adapter of [`accept_submission`] (the body read against
/// the live limit, the JSON or raw form composed, the answer made JSON).
#[utoipa::path(post, path = "/v1/messages",
    request_body(
        description = "A message as JSON, or a raw RFC 5322 message (`message/rfc822`) whose \
            envelope is in the query (`from`, `to`) or in the `Sluice-Envelope-From` and \
            `Sluice-Envelope-To` headers",
        content(
            (JsonMessage = "application/json"),
            (String = "message/rfc822"),
        )),
    params(
        ("from" = Option<String>, Query, description = "a raw message's envelope sender"),
        ("to" = Option<String>, Query, description = "a raw message's recipients, comma-separated"),
        ("tags" = Option<String>, Query, description = "a raw message's tags, comma-separated"),
        ("account" = Option<String>, Query, description = "a raw message's account (`/v1/accounts`) to bill"),
        ("idempotency_key" = Option<String>, Query, description = "a raw message's idempotency key"),
        ("Idempotency-Key" = Option<String>, Header, description = "the idempotency key, when the body names none"),
    ),
    responses(
        (status = 202, description = "accepted: committed to the store; suppressed recipients are listed, not sent to", body = Submitted),
        (status = 200, description = "a repeat of an idempotency key: the stored message, nothing sent twice (`Idempotent-Replayed: true`)", body = Submitted,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
    ))]
async fn submit(
    State(s): State<AppState>,
    Caller(owner): Caller,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // `[limits]` as they are now: a SIGHUP reload may have changed them since the
    // router was built, so the body is read here against the live limit rather than
    // under the router's `DefaultBodyLimit`.
    let limits = s.limits.get();
    let body = read_submission(body, &limits).await?;
    if s.is_shutting_down() {
        return Err(AcceptError::ShuttingDown.into());
    }
    let (message, tags, idempotency_key) = compose(&s, &headers, &query, body)?;
    let accepted = accept_submission(
        &s,
        NewSubmission {
            owner,
            message,
            tags,
            idempotency_key,
            recipients_checked: false,
        },
    )
    .await?;
    let status = if accepted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let recipients: Vec<_> = accepted
        .recipients
        .iter()
        .map(|(a, st)| SubmittedRecipient::accepted(a.clone(), *st))
        .chain(accepted.suppressed.iter().map(suppressed_answer))
        .collect();
    let answer = Submitted {
        id: accepted.id.clone(),
        message_id: accepted.message_id.clone(),
        recipients,
    };
    let mut resp = (status, Json(answer)).into_response();
    if accepted.duplicate {
        resp.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// A recipient left out of a submission because the tenant suppressed it, as the 202
/// body lists it.
fn suppressed_answer(r: &SuppressedRecipient) -> SubmittedRecipient {
    SubmittedRecipient {
        address: r.address.clone(),
        status: "suppressed".to_owned(),
        reason: Some(r.reason.clone()),
        source: Some(r.source.clone()),
        since_ms: Some(r.since_ms),
    }
}

/// A message: its recipients' states, relays, attempts and replies, and its timeline.
#[utoipa::path(get, path = "/v1/messages/{id}",
    params(("id" = String, Path, description = "the message's id (another tenant's is a 404)")),
    responses((status = 200, description = "the message", body = MessageDetail)))]
async fn get_message(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<MessageDetail>, ApiError> {
    // Another tenant's message is "not found", not "forbidden": ids are not confirmed.
    let m = s
        .store
        .get_message(&tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("message {id:?}")))?;
    Ok(Json(MessageDetail::from(m)))
}
