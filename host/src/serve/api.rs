//! The tenant API (`/v1/…`, bearer = a tenant's or an account's key; `auth.rs` says which
//! may call what), health, and the
//! router that puts the admin API beside it.

pub(super) use super::auth::bearer;
pub use super::auth::{Admin, AuthTenant};
use super::auth::{Authenticated, Caller};
use super::error::ApiError;
use super::handoff::NoRoom;
use super::plugins::call;
pub use super::state::AppState;
use super::state::{Server, now_ms};
use super::tenant_live::LiveCall;
use crate::compose::{self, Composed, JsonMessage};
use crate::logging::Chain;
use crate::stage::{Header, IngestDecision, Stage, Submission};
use crate::store::{ACCOUNT_TAG, EventKind, NewEvent, NewMessage};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest body handed to the dispatcher in memory (256 KiB): with the handoff's cap on
/// recipients held (`[delivery.fairness] max_held`, default 1,024), at most 256 MiB of
/// bodies wait in memory; larger messages wait in the store.
const HANDOFF_MAX_BODY_BYTES: usize = 256 << 10;
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

async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"status": if s.is_shutting_down() { "draining" } else { "ok" }, "node": s.node.id}))
}

/// Readiness, apart from liveness (`/healthz`): 200 while this node can take work (the
/// store answers and its last writes reached it; plugins are loaded before the listener
/// opens), else 503 with the reason, so a load balancer sends traffic elsewhere.
async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let node = &s.node.id;
    if s.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "node": node})),
        );
    }
    match s.store.readiness().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "node": node})),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason, "node": node})),
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

/// The distinct domains of some addresses, comma-separated, at most 10 named: what a
/// log line says of recipients (never their full addresses).
pub(super) fn recipient_domains<'a>(addresses: impl Iterator<Item = &'a str>) -> String {
    let mut domains: Vec<&str> = Vec::new();
    let mut more = 0usize;
    for a in addresses {
        let d = a.rsplit_once('@').map_or("", |(_, d)| d);
        if domains.contains(&d) {
            continue;
        }
        if domains.len() < 10 {
            domains.push(d);
        } else {
            more += 1;
        }
    }
    let mut out = domains.join(",");
    if more > 0 {
        out.push_str(&format!(",+{more} more"));
    }
    out
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

/// Refuses a message whose header `From:` or `Sender:` names a domain outside the
/// tenant's allowed sender domains: the envelope sender is checked by the ingest plugin,
/// but the header is what the reader sees, and a tenant must not send as someone else
/// through it. A tenant's `header_from_check = false` turns this off.
fn check_authors(headers: &[(String, String)], allowed: &[String]) -> Result<(), ApiError> {
    let authors = compose::author_domains(headers)
        .map_err(|e| ApiError::invalid(e.field.clone(), e.to_string()))?;
    for (field, domain) in authors {
        if !compose::domain_allowed(&domain, allowed) {
            return Err(ApiError::invalid(
                field.clone(),
                format!(
                    "{field}: domain {domain:?} is not among the tenant's allowed sender domains"
                ),
            ));
        }
    }
    Ok(())
}

/// At most one account per message ([`ACCOUNT_TAG`]: the `account` field, query
/// parameter or `Sluice-Account` header adds it), and one the tenant has. Account billing
/// takes it before matching logins; the dispatcher's prepaid check too.
async fn check_account(s: &Server, tenant_id: &str, tags: &[String]) -> Result<(), ApiError> {
    let named: Vec<&str> = tags
        .iter()
        .filter_map(|t| t.strip_prefix(ACCOUNT_TAG))
        .collect();
    match named.as_slice() {
        [] => Ok(()),
        [one] => match s.store.get_account(tenant_id, one).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::invalid(
                "account",
                format!(
                    "{one:?} is not one of this tenant's accounts (GET /v1/accounts lists them)"
                ),
            )),
        },
        _ => Err(ApiError::invalid(
            "account",
            format!(
                "a message is billed to one account; it names {}",
                named.len()
            ),
        )),
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
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this node is shutting down; send to another",
        ));
    }
    let (mut composed, mut tags, mut idempotency_key) = compose(&s, &headers, &query, body)?;
    // An account's key sends for its account only (`auth.rs`).
    super::auth::bill_to_key_account(&owner, &mut tags, &mut idempotency_key)?;
    let tenant = owner.tenant;
    check_account(&s, &tenant.id, &tags).await?;
    if composed.body.len() as u64 > limits.max_message_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the message is {} bytes; the limit is {}",
                composed.body.len(),
                limits.max_message_bytes
            ),
        )
        .field("message"));
    }
    if composed.recipients.len() > limits.max_recipients as usize {
        return Err(ApiError::invalid(
            "to",
            format!(
                "{} recipients; the limit is {}",
                composed.recipients.len(),
                limits.max_recipients
            ),
        ));
    }
    // Suppressed recipients are refused here, each with its reason (all: 422).
    let (kept, suppressed) =
        super::suppressions::filter(&s, &tenant.id, std::mem::take(&mut composed.recipients))
            .await?;
    composed.recipients = kept;

    let submission = Submission {
        tenant: tenant.id.clone(),
        sender: composed.sender.clone(),
        recipients: composed.recipients.clone(),
        headers: composed
            .headers
            .iter()
            .map(|(n, v)| Header {
                name: n.clone(),
                value: v.clone(),
            })
            .collect(),
        size: composed.body.len() as u64,
        tags: tags.clone(),
        allowed_sender_domains: tenant.allowed_sender_domains.clone(),
        received_at_ms: now_ms(),
    };
    // The platform's ingest plugin decides first: its rules (sender domains, sizes) hold
    // for every tenant, and a tenant's plugin cannot undo a platform rejection. Then the
    // tenant's own, if it has a live one, sees the submission with the platform's added
    // headers and may reject or add more. If the tenant's fails, its policy decides: the
    // platform's decision stands (`fallback`; the failure is recorded on the accepted
    // message) or nothing is accepted and the client is told to try again (`defer`).
    let platform_submission = submission.clone();
    let decision = call(s.plugins.stage(Stage::Ingest), move |p| {
        p.ingest(&platform_submission)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugin_failed",
            format!("the ingest plugin failed ({e}); nothing was accepted, try again"),
        )
    })?;
    let (mut body, mut tags) = (composed.body, tags);
    let mut add_headers = Vec::new();
    let mut tenant_failure = None;
    match decision {
        IngestDecision::Reject(r) => {
            return Err(
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", r.reason).field("from"),
            );
        }
        IngestDecision::Accept(a) => {
            let mut submission = submission;
            submission.headers.extend(a.add_headers.iter().cloned());
            add_headers.extend(a.add_headers);
            tags.extend(a.add_tags);
            let tenant_call = s
                .plugins
                .tenants
                .call_live(&s.store, &tenant.id, Stage::Ingest, move |p| {
                    p.ingest(&submission)
                })
                .await;
            let closed = |why: String| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "plugin_failed",
                    format!("{why}; nothing was accepted, try again"),
                )
            };
            match tenant_call {
                LiveCall::NoPlugin => {}
                LiveCall::Closed(why) => return Err(closed(why)),
                LiveCall::Done(Ok(IngestDecision::Reject(r))) => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "rejected",
                        r.reason,
                    ));
                }
                LiveCall::Done(Ok(IngestDecision::Accept(a))) => {
                    add_headers.extend(a.add_headers);
                    tags.extend(a.add_tags);
                }
                LiveCall::Done(Err(f)) if f.closed => return Err(closed(f.closed_reason())),
                LiveCall::Done(Err(f)) => {
                    tracing::warn!(tenant = %tenant.id, error = %f.error, "tenant ingest plugin failed; the platform's decision stands");
                    tenant_failure = Some(f);
                }
            }
        }
    }
    // After the ingest plugins, so that a sender they refuse is refused with their
    // reason (for the JSON form the header `From:` is the envelope sender).
    if tenant.header_from_check {
        check_authors(&composed.headers, &tenant.allowed_sender_domains)?;
    }
    if !add_headers.is_empty() {
        let mut prefix = Vec::new();
        for h in add_headers {
            prefix.extend_from_slice(format!("{}: {}\r\n", h.name, h.value).as_bytes());
        }
        // One allocation of the final size; the unprefixed body is freed at once.
        let mut prefixed = Vec::with_capacity(prefix.len() + body.len());
        prefixed.extend_from_slice(&prefix);
        prefixed.extend_from_slice(&body);
        body = prefixed;
    }
    let message = NewMessage {
        tenant_id: tenant.id.clone(),
        idempotency_key,
        sender: composed.sender,
        recipients: composed.recipients,
        body: Arc::new(body),
        tags,
        max_age_secs: s
            .pipeline
            .delivery
            .max_age
            .as_secs()
            .min(u64::from(u32::MAX)) as u32,
        header_message_id: Some(composed.message_id.clone()),
    };
    // With room at the dispatcher, the recipients are accepted leased to this host and
    // handed over in memory (`handoff.rs`); otherwise the dispatcher leases them later.
    // Large bodies are not held in memory while they wait: they are read from the store
    // when sent, so what the handoff holds is bounded in bytes, not only in recipients.
    let room = if message.body.len() <= HANDOFF_MAX_BODY_BYTES {
        s.handoff
            .reserve(&tenant.id, message.recipients.len())
            .map_err(Some)
    } else {
        Err(None)
    };
    let accepted = match room {
        Ok(room) => {
            // The dispatcher shares the stored bytes: no second copy of the message.
            let body = message.body.clone();
            let lease_ms = s.pipeline.delivery.lease.as_millis() as i64;
            let mut accepted = s
                .store
                .accept_leased(message, now_ms(), &s.node.id, lease_ms)
                .await?;
            room.send(std::mem::take(&mut accepted.leases), body);
            accepted
        }
        Err(no_room) => {
            let accepted = s.store.accept(message, now_ms()).await?;
            // A tenant at its own cap is not woken for: a look now would leave its work
            // out all the same, after reading past all of it (its backlog, on the
            // store's one writer, once per submission of a flooding tenant). The
            // dispatcher looks when one of its groups finishes (`handoff.rs`).
            if no_room != Some(NoRoom::Tenant) {
                s.wake.notify_one();
            }
            accepted
        }
    };
    if !accepted.duplicate {
        let n = accepted.recipients.len() as u64;
        let m = crate::metrics::get();
        let labels = m.tenant(&tenant.id);
        m.accepted_messages.get_or_create(&labels).inc();
        m.accepted_recipients.get_or_create(&labels).inc_by(n);
        if tracing::enabled!(tracing::Level::INFO) {
            tracing::info!(
                message_id = %accepted.id,
                tenant = %tenant.id,
                recipients = n,
                domains = %recipient_domains(accepted.recipients.iter().map(|(a, _)| a.as_str())),
                "accepted"
            );
        }
    }
    if let Some(f) = tenant_failure.filter(|_| !accepted.duplicate) {
        let event = NewEvent {
            message_id: accepted.id.clone(),
            recipient_idx: None,
            tenant_id: tenant.id.clone(),
            kind: EventKind::PluginError,
            relay: None,
            detail: f.detail(Stage::Ingest),
            at_ms: now_ms(),
        };
        if let Err(e) = s.store.append_events(vec![event]).await {
            tracing::error!(error = %Chain(&e), "cannot record a plugin_error event");
        }
    }
    let status = if accepted.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    // A repeat is answered with the first submission's Message-ID, not the one just
    // made for the repeat (which was never stored).
    let message_id = match (accepted.duplicate, accepted.header_message_id.clone()) {
        (false, _) => Some(composed.message_id),
        (true, Some(stored)) => Some(stored),
        (true, None) => stored_message_id(&s, &accepted.id).await,
    };
    let recipients: Vec<_> = accepted
        .recipients
        .iter()
        .map(|(a, st)| json!({"address": a, "status": st}))
        .chain(suppressed)
        .collect();
    let mut resp = (
        status,
        Json(json!({"id": accepted.id, "message_id": message_id, "recipients": recipients})),
    )
        .into_response();
    if accepted.duplicate {
        resp.headers_mut().insert(
            "idempotent-replayed",
            header::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// The `Message-ID` in a stored message's header: for a message stored before the
/// store kept it apart (migration 0017). `None` if it cannot be read.
async fn stored_message_id(s: &Server, id: &str) -> Option<String> {
    let body = s
        .store
        .message_body(id)
        .await
        .map_err(|e| tracing::warn!(message_id = %id, error = %Chain(&e), "cannot read a repeated message's header"))
        .ok()?;
    let (headers, _) = compose::parse_header_section(&body).ok()?;
    headers
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("message-id"))
        .map(|(_, value)| value.trim().to_owned())
}

async fn get_message(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // Another tenant's message is "not found", not "forbidden": ids are not confirmed.
    let m = s
        .store
        .get_message(&tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("message {id:?}")))?;
    let recipients: Vec<_> = m
        .recipients
        .iter()
        .map(|r| json!({"address": r.address, "state": r.state, "attempts": r.attempts, "relay": r.last_relay, "last_reply": r.last_reply, "next_attempt_at_ms": r.next_attempt_at_ms, "updated_at_ms": r.updated_at_ms}))
        .collect();
    let events: Vec<_> = m
        .events
        .iter()
        .map(|e| json!({"at_ms": e.at_ms, "kind": e.kind, "recipient": e.recipient_idx.and_then(|i| m.recipients.iter().find(|r| r.recipient_idx == i)).map(|r| r.address.clone()), "relay": e.relay, "detail": e.detail}))
        .collect();
    Ok(Json(
        json!({"id": m.id, "sender": m.sender, "size": m.size, "tags": m.tags, "created_at_ms": m.created_at_ms, "recipients": recipients, "events": events}),
    ))
}
