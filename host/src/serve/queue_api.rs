//! Queue inspection and controls over HTTP (issue 22): a tenant's own messages in cursor
//! pages (`GET /v1/messages`), the live queue summed (`GET /admin/v1/queue`), hold,
//! release and cancel by message, relay, domain or tenant (a tenant's own messages, or
//! the admin's selector), and suspending a tenant's sending or a relay.
//!
//! The answers are `dto::queue`'s types; the store's `MessageSummary` and
//! `QueueSummary` are not the API. Every query parameter is checked against a bound chosen here
//! ([`MAX_ADDRESS`], [`MAX_TAG`], [`MAX_REASON`], `MAX_PAGE`), and a bad one is a 422
//! naming it. The routes reach `api::router` through `serve`'s `run` (as `events_api`'s
//! do), so `api` does not name this module.

use super::api::{Admin, AppState, AuthTenant};
use super::dto::queue::{
    CancelledDto, HeldDto, MessageItem, MessagePage, QueueDto, RelaySuspension, ReleasedDto,
    TenantSuspension,
};
use super::error::ApiError;
use super::state::now_ms;
use crate::store::{
    Cancelled, MAX_PAGE, MAX_TAG_BYTES, MessageQuery, RecipientState, RelayState, RelayUpdate,
    Selector,
};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

/// A page's size when `limit` is not given.
const DEFAULT_PAGE: u32 = 50;
/// The longest address `to` or `from` may name (RFC 5321's path limit is 256; a little
/// room for what was accepted before).
const MAX_ADDRESS: usize = 320;
/// The longest tag searched for: the longest the tag index keeps (and accept takes).
const MAX_TAG: usize = MAX_TAG_BYTES;
/// The longest reason kept with a hold, cancel or suspension.
const MAX_REASON: usize = 500;
/// The latest time a ULID can carry (48 bits of milliseconds).
const MAX_TIME_MS: i64 = (1 << 48) - 1;
/// Groups shown per grouping of `GET /admin/v1/queue` unless `top` says otherwise.
const DEFAULT_TOP: usize = 20;
/// The most `top` may ask for.
const MAX_TOP: usize = 1000;
/// The parameters `GET /v1/messages` knows.
const SEARCH_PARAMS: [&str; 8] = [
    "state", "to", "from", "tag", "since", "until", "limit", "after",
];

pub fn routes() -> Router<AppState> {
    // `GET /v1/messages` joins `api.rs`'s `POST` on the same path when merged.
    Router::new()
        .route("/v1/messages", get(list_messages))
        .route("/v1/messages/{id}/cancel", post(tenant_cancel))
        .route("/v1/messages/{id}/hold", post(tenant_hold))
        .route("/v1/messages/{id}/release", post(tenant_release))
        .route("/admin/v1/queue", get(admin_queue))
        .route("/admin/v1/queue/cancel", post(admin_cancel))
        .route("/admin/v1/queue/hold", post(admin_hold))
        .route("/admin/v1/queue/release", post(admin_release))
        .route("/admin/v1/tenants/{id}/suspend", post(suspend_tenant))
        .route("/admin/v1/tenants/{id}/resume", post(resume_tenant))
        .route("/admin/v1/relays/{id}/suspend", post(suspend_relay))
        .route("/admin/v1/relays/{id}/resume", post(resume_relay))
}

// ---- GET /v1/messages ----

/// A text parameter: not empty, at most `max` bytes, no control characters.
fn text(name: &str, value: &str, max: usize) -> Result<String, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(name, format!("{name} is empty")));
    }
    if value.len() > max {
        return Err(ApiError::invalid(
            name,
            format!("{name} is {} bytes; at most {max}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            name,
            format!("{name} holds a control character"),
        ));
    }
    Ok(value.to_owned())
}

fn address(name: &str, value: &str) -> Result<String, ApiError> {
    let v = text(name, value, MAX_ADDRESS)?;
    match v.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(v),
        _ => Err(ApiError::invalid(
            name,
            format!("{name} must be an address (local@domain)"),
        )),
    }
}

fn time(name: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|t| (0..=MAX_TIME_MS).contains(t))
        .ok_or_else(|| {
            ApiError::invalid(
                name,
                format!("{name} must be milliseconds since the Unix epoch, 0 to {MAX_TIME_MS}"),
            )
        })
}

/// Checks every parameter of a search; the first bad one is named.
/// The portal's message search (`portal/messages.rs`) takes the same parameters through
/// this function.
pub(super) fn parse_search(
    tenant_id: &str,
    pairs: &[(String, String)],
) -> Result<MessageQuery, ApiError> {
    let mut q = MessageQuery {
        tenant_id: tenant_id.to_owned(),
        limit: DEFAULT_PAGE,
        ..MessageQuery::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let Some(&known) = SEARCH_PARAMS.iter().find(|p| **p == name.as_str()) else {
            let shown: String = name.chars().take(40).collect();
            return Err(ApiError::invalid(
                shown.clone(),
                format!(
                    "unknown parameter {shown:?}; known: {}",
                    SEARCH_PARAMS.join(", ")
                ),
            ));
        };
        if seen.contains(&known) {
            return Err(ApiError::invalid(known, format!("{known} given twice")));
        }
        seen.push(known);
        match known {
            "state" => {
                q.state = Some(RecipientState::parse(value).ok_or_else(|| {
                    let names: Vec<&str> = RecipientState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::invalid(
                        "state",
                        format!("state must be one of {}", names.join(", ")),
                    )
                })?);
            }
            "to" => q.to = Some(address("to", value)?),
            // `<>` is the null sender (bounces), stored empty.
            "from" if value == "<>" => q.from = Some(String::new()),
            "from" => q.from = Some(address("from", value)?),
            "tag" => q.tag = Some(text("tag", value, MAX_TAG)?),
            "since" => q.since_ms = Some(time("since", value)?),
            "until" => q.until_ms = Some(time("until", value)?),
            "limit" => {
                q.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit", format!("limit must be 1 to {MAX_PAGE}"))
                    })?;
            }
            _ => {
                // `after`: the cursor a page handed out (a message id, a ULID).
                if value.len() != 26 || ulid::Ulid::from_string(value).is_err() {
                    return Err(ApiError::invalid(
                        "after",
                        "after must be a cursor from next_after of an earlier page",
                    ));
                }
                q.after = Some(value.to_ascii_uppercase());
            }
        }
    }
    if let (Some(s), Some(u)) = (q.since_ms, q.until_ms)
        && s > u
    {
        return Err(ApiError::invalid("until", "until is before since"));
    }
    Ok(q)
}

/// The tenant's own messages, newest first, in cursor pages.
#[utoipa::path(get, path = "/v1/messages",
    params(
        ("state" = Option<String>, Query, description = "a recipient state (`queued`, `deferred`, `held`, `delivering`, `delivered`, `bounced`, `failed`, …): messages with a recipient in it"),
        ("to" = Option<String>, Query, description = "a recipient's address (at most 320 bytes)"),
        ("from" = Option<String>, Query, description = "the envelope sender (at most 320 bytes)"),
        ("tag" = Option<String>, Query, description = "a tag (at most 128 bytes)"),
        ("since" = Option<i64>, Query, minimum = 0, maximum = 281474976710655_i64, description = "accepted at or after (Unix ms)"),
        ("until" = Option<i64>, Query, minimum = 0, maximum = 281474976710655_i64, description = "accepted before (Unix ms; not before `since`)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "messages per page (50)"),
        ("after" = Option<String>, Query, description = "the `next_after` of the page before"),
    ),
    responses((status = 200, description = "a page", body = MessagePage)))]
async fn list_messages(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<MessagePage>, ApiError> {
    let q = parse_search(&tenant.id, &pairs)?;
    let page = s.store.search_messages(&q).await?;
    let next_after = (page.len() == q.limit as usize)
        .then(|| page.last().map(|m| m.id.clone()))
        .flatten();
    Ok(Json(MessagePage {
        messages: page.into_iter().map(MessageItem::from).collect(),
        next_after,
    }))
}

// ---- controls ----

/// A reason as given, or `default`.
fn reason(given: Option<String>, default: &str) -> Result<String, ApiError> {
    match given {
        Some(r) => text("reason", &r, MAX_REASON),
        None => Ok(default.to_owned()),
    }
}

/// What a tenant's `POST /v1/messages/{id}/cancel|hold|release` may carry.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: Option<String>,
}

/// The admin's selector: every field given must match; at least one is needed.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdminSelector {
    message_id: Option<String>,
    relay: Option<String>,
    domain: Option<String>,
    tenant: Option<String>,
    reason: Option<String>,
}

fn domain(d: &str) -> String {
    d.trim().trim_start_matches('@').to_ascii_lowercase()
}

fn selector(b: &AdminSelector) -> Result<Selector, ApiError> {
    let field = |name: &str, v: &Option<String>| -> Result<Option<String>, ApiError> {
        v.as_deref().map(|v| text(name, v, MAX_ADDRESS)).transpose()
    };
    let sel = Selector {
        message: field("message_id", &b.message_id)?,
        relay: field("relay", &b.relay)?,
        domain: field("domain", &b.domain)?.map(|d| domain(&d)),
        tenant: field("tenant", &b.tenant)?,
    };
    if sel == Selector::default() {
        return Err(ApiError::invalid(
            "message_id",
            "name what to act on: \"message_id\", \"relay\", \"domain\" and/or \"tenant\"",
        ));
    }
    Ok(sel)
}

/// The tenant's own message, or 404 (another tenant's ids are not confirmed).
async fn own_message(s: &AppState, tenant: &str, id: &str) -> Result<Selector, ApiError> {
    if id.len() > 64 || s.store.get_message(tenant, id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "message {:?}",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(Selector {
        tenant: Some(tenant.to_owned()),
        message: Some(id.to_owned()),
        ..Selector::default()
    })
}

async fn do_hold(
    s: &AppState,
    sel: Selector,
    reason: String,
    by: &str,
) -> Result<Json<HeldDto>, ApiError> {
    let detail = serde_json::json!({"reason": reason, "by": by});
    let h = s.store.hold(&sel, &detail, now_ms()).await?;
    tracing::info!(
        ?sel,
        held = h.held,
        in_flight = h.in_flight,
        by,
        "held by request"
    );
    Ok(Json(HeldDto::from(h)))
}

async fn do_release(s: &AppState, sel: Selector, by: &str) -> Result<Json<ReleasedDto>, ApiError> {
    let detail = serde_json::json!({"reason": "released", "by": by});
    let released = s.store.release(&sel, &detail, now_ms()).await?;
    if released > 0 {
        s.wake.notify_one();
    }
    tracing::info!(?sel, released, by, "released by request");
    Ok(Json(ReleasedDto { released }))
}

async fn do_cancel(
    s: &AppState,
    sel: Selector,
    reason: String,
    by: &str,
) -> Result<Cancelled, ApiError> {
    let detail = serde_json::json!({"reason": reason, "cancelled": true, "by": by});
    let c = s.store.cancel(&sel, &reason, &detail, now_ms()).await?;
    tracing::info!(
        ?sel,
        cancelled = c.cancelled,
        in_flight = c.in_flight,
        by,
        "cancelled by request"
    );
    Ok(c)
}

/// Holds the tenant's message: its waiting recipients are not sent until released.
#[utoipa::path(post, path = "/v1/messages/{id}/hold", request_body(content = Option<ReasonBody>),
    responses((status = 200, description = "held", body = HeldDto)))]
async fn tenant_hold(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
    body: Option<Json<ReasonBody>>,
) -> Result<Json<HeldDto>, ApiError> {
    let r = reason(body.unwrap_or_default().0.reason, "held by the tenant")?;
    let sel = own_message(&s, &tenant.id, &id).await?;
    do_hold(&s, sel, r, "tenant").await
}

/// Releases the tenant's held message: due now.
#[utoipa::path(post, path = "/v1/messages/{id}/release",
    responses((status = 200, description = "released", body = ReleasedDto)))]
async fn tenant_release(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
) -> Result<Json<ReleasedDto>, ApiError> {
    let sel = own_message(&s, &tenant.id, &id).await?;
    do_release(&s, sel, "tenant").await
}

/// Cancels the tenant's message: its waiting recipients fail with the reason.
#[utoipa::path(post, path = "/v1/messages/{id}/cancel", request_body(content = Option<ReasonBody>),
    responses((status = 200, description = "cancelled", body = CancelledDto)))]
async fn tenant_cancel(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Path(id): Path<String>,
    body: Option<Json<ReasonBody>>,
) -> Result<Json<CancelledDto>, ApiError> {
    let c = cancel_own_message(&s, &tenant.id, &id, body.unwrap_or_default().0.reason).await?;
    Ok(Json(CancelledDto::from(c)))
}

/// Cancels a tenant's own message (another tenant's is a 404): what
/// `POST /v1/messages/{id}/cancel` and the portal's cancel button both do.
pub(super) async fn cancel_own_message(
    s: &AppState,
    tenant: &str,
    id: &str,
    given_reason: Option<String>,
) -> Result<Cancelled, ApiError> {
    let r = reason(given_reason, "cancelled by the tenant")?;
    let sel = own_message(s, tenant, id).await?;
    do_cancel(s, sel, r, "tenant").await
}

/// Holds the waiting work a selector names.
#[utoipa::path(post, path = "/admin/v1/queue/hold", request_body = AdminSelector,
    responses((status = 200, description = "held", body = HeldDto)))]
async fn admin_hold(
    State(s): State<AppState>,
    _: Admin,
    Json(b): Json<AdminSelector>,
) -> Result<Json<HeldDto>, ApiError> {
    let sel = selector(&b)?;
    do_hold(&s, sel, reason(b.reason, "held by the operator")?, "admin").await
}

/// Releases the held work a selector names (not a suspension: resume the tenant).
#[utoipa::path(post, path = "/admin/v1/queue/release", request_body = AdminSelector,
    responses((status = 200, description = "released", body = ReleasedDto)))]
async fn admin_release(
    State(s): State<AppState>,
    _: Admin,
    Json(b): Json<AdminSelector>,
) -> Result<Json<ReleasedDto>, ApiError> {
    let sel = selector(&b)?;
    do_release(&s, sel, "admin").await
}

/// Cancels the waiting work a selector names: it fails with the reason.
#[utoipa::path(post, path = "/admin/v1/queue/cancel", request_body = AdminSelector,
    responses((status = 200, description = "cancelled", body = CancelledDto)))]
async fn admin_cancel(
    State(s): State<AppState>,
    _: Admin,
    Json(b): Json<AdminSelector>,
) -> Result<Json<CancelledDto>, ApiError> {
    let sel = selector(&b)?;
    let c = do_cancel(
        &s,
        sel,
        reason(b.reason, "cancelled by the operator")?,
        "admin",
    )
    .await?;
    Ok(Json(CancelledDto::from(c)))
}

// ---- suspensions ----

/// Suspends a tenant's sending: its queue is held, new mail is stored held.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/suspend", request_body(content = Option<ReasonBody>),
    responses((status = 200, description = "suspended", body = TenantSuspension)))]
async fn suspend_tenant(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: Option<Json<ReasonBody>>,
) -> Result<Json<TenantSuspension>, ApiError> {
    let r = body
        .unwrap_or_default()
        .0
        .reason
        .map(|r| text("reason", &r, MAX_REASON))
        .transpose()?;
    let h = s
        .store
        .suspend_tenant(&id, r.as_deref(), now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {id:?}")))?;
    s.forget_suspensions();
    tracing::info!(tenant = %id, held = h.held, in_flight = h.in_flight, "tenant suspended");
    Ok(Json(TenantSuspension {
        tenant: id,
        suspended: true,
        recipients: h.held,
        in_flight_marked: h.in_flight,
    }))
}

/// Resumes a suspended tenant: its held queue is due now.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/resume",
    responses((status = 200, description = "resumed", body = TenantSuspension)))]
async fn resume_tenant(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<TenantSuspension>, ApiError> {
    let released = s
        .store
        .resume_tenant(&id, now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {id:?}")))?;
    s.forget_suspensions();
    if released > 0 {
        s.wake.notify_one();
    }
    tracing::info!(tenant = %id, released, "tenant resumed");
    Ok(Json(TenantSuspension {
        tenant: id,
        suspended: false,
        recipients: released,
        in_flight_marked: 0,
    }))
}

/// A relay is suspended by draining it (`PATCH /admin/v1/relays/{id}` with
/// `"state": "draining"`): it finishes what it has and takes nothing new.
async fn set_relay_state(
    s: &AppState,
    id: String,
    state: RelayState,
) -> Result<Json<RelaySuspension>, ApiError> {
    if s.store.get_relay(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("relay {id:?}")));
    }
    let update = RelayUpdate {
        state: Some(state),
        ..RelayUpdate::default()
    };
    let relay = s.store.update_relay(&id, update).await?;
    s.sync_relays().await?;
    if state == RelayState::Active {
        // Work that waited for a relay gets its turn now, not after its retry delay.
        let woken = s.store.wake_waiting_for_relay(&id, now_ms()).await?;
        if woken > 0 {
            s.wake.notify_one();
        }
    }
    Ok(Json(RelaySuspension {
        relay: relay.id,
        state: relay.state,
    }))
}

/// Suspends a relay (drains it: it finishes what it has and takes nothing new).
#[utoipa::path(post, path = "/admin/v1/relays/{id}/suspend",
    responses((status = 200, description = "draining", body = RelaySuspension)))]
async fn suspend_relay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<RelaySuspension>, ApiError> {
    set_relay_state(&s, id, RelayState::Draining).await
}

/// Resumes a relay: active, and the work that waited for it is due now.
#[utoipa::path(post, path = "/admin/v1/relays/{id}/resume",
    responses((status = 200, description = "active", body = RelaySuspension)))]
async fn resume_relay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<RelaySuspension>, ApiError> {
    set_relay_state(&s, id, RelayState::Active).await
}

// ---- GET /admin/v1/queue ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueParams {
    top: Option<String>,
}

/// The live queue: by state, why held, and the largest groups by tenant, relay and domain.
#[utoipa::path(get, path = "/admin/v1/queue",
    params(("top" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "groups shown per grouping (20)")),
    responses((status = 200, description = "the queue now", body = QueueDto)))]
async fn admin_queue(
    State(s): State<AppState>,
    _: Admin,
    Query(p): Query<QueueParams>,
) -> Result<Json<QueueDto>, ApiError> {
    let n = match p.top {
        None => DEFAULT_TOP,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_TOP).contains(n))
            .ok_or_else(|| ApiError::invalid("top", format!("top must be 1 to {MAX_TOP}")))?,
    };
    let q = s.store.queue_summary(n).await?;
    Ok(Json(QueueDto::at(q, now_ms())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<MessageQuery, ApiError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse_search("t", &pairs)
    }

    fn field(r: Result<MessageQuery, ApiError>) -> String {
        r.unwrap_err().field.unwrap()
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(field(q(&[("limit", "501")])), "limit");
        assert_eq!(field(q(&[("limit", "0")])), "limit");
        assert_eq!(field(q(&[("limit", "99999999999999999999")])), "limit");
        assert_eq!(field(q(&[("after", "' OR 1=1 --")])), "after");
        assert_eq!(field(q(&[("state", "sent")])), "state");
        assert_eq!(field(q(&[("to", "x' OR '1'='1")])), "to");
        assert_eq!(field(q(&[("to", &"a".repeat(400))])), "to");
        assert_eq!(field(q(&[("from", "a@b\n")])), "from");
        assert_eq!(field(q(&[("since", "-1")])), "since");
        assert_eq!(field(q(&[("until", "281474976710656")])), "until");
        assert_eq!(field(q(&[("since", "10"), ("until", "5")])), "until");
        assert_eq!(field(q(&[("limit", "5"), ("limit", "6")])), "limit");
        assert_eq!(field(q(&[("tag", "")])), "tag");
        assert_eq!(field(q(&[("bogus", "1")])), "bogus");
    }

    #[test]
    fn good_parameters_become_the_query() {
        let got = q(&[
            ("state", "deferred"),
            ("to", "a@b.example"),
            ("from", "<>"),
            ("tag", "promo"),
            ("since", "1"),
            ("until", "2"),
            ("limit", "500"),
            ("after", "01arz3ndektsv4rrffq69g5fav"),
        ])
        .unwrap();
        assert_eq!(got.state, Some(RecipientState::Deferred));
        assert_eq!(got.from.as_deref(), Some(""));
        assert_eq!(got.limit, 500);
        assert_eq!(got.after.as_deref(), Some("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
        assert_eq!(q(&[]).unwrap().limit, DEFAULT_PAGE);
    }
}
