//! The tenant's event log over HTTP (issue 21): `GET /v1/events` (a page after a
//! cursor, and the cursor to ask from next) and `GET /v1/events/stream` (Server-Sent
//! Events, `id:` = the cursor, resumed from `Last-Event-ID` or `?after=`).
//!
//! An event's wire form is made here and nowhere else: `id` (`evt_` and the store-wide
//! sequence number, stable), `cursor` (the tenant's, gap-free), `type` (`message.*`,
//! `plugin.*`, `billing.low_balance`; see [`public_type`]), `message_id`, `recipient`,
//! `tags`, `at_ms` and `details` (the stored detail: SMTP reply, attempt, latency,
//! hard/soft and reason of a bounce, …, with the relay). A tenant's event about no
//! message (`plugin.suspended`, `billing.low_balance`) has `message_id` and `recipient`
//! `null` and no tags.
//!
//! Invariants:
//! - A stream yields every event after its starting cursor once, in cursor order; it
//!   holds at most one page in memory and waits (never polls the store on its own)
//!   until its tenant's last cursor moves (`event_hub.rs`). A tenant's streams without
//!   a type filter share one page read (and rendered) for all of them: 10,000 streams
//!   of a tenant cost one store read per page, not 10,000.
//! - Only a tenant's key reads events (`auth::ROUTES`); one tenant never sees another's.

use super::api::AppState;
use super::auth::AuthTenant;
use super::dto::events::{EventPage, EventView};
use super::error::ApiError;
use super::event_hub::{Rendered, SharedPage, TooManyStreams};
use crate::logging::Chain;
use crate::store::{EventKind, TenantEvent};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

/// Events a page holds unless `limit` says fewer.
const DEFAULT_LIMIT: u32 = 100;
/// The largest page.
const MAX_LIMIT: u32 = 1000;
/// Events a stream reads from the store at a time (all it holds in memory).
const STREAM_PAGE: u32 = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(list))
        .route("/v1/events/stream", get(stream))
}

pub use super::dto::events::public_type;

/// An event's public form (`dto::events::EventView`), for the API, the stream and
/// webhook bodies.
pub(crate) fn event_json(e: &TenantEvent) -> EventView {
    EventView::from(e)
}

fn cursor(field: &str, text: &str) -> Result<i64, ApiError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("{field} {text:?} is not a cursor (a whole number from 0)"),
            )
        })
}

/// `types=message.delivered,message.bounced` as stored kinds; `None` for all.
fn kinds(query: &HashMap<String, String>) -> Result<Option<Vec<EventKind>>, ApiError> {
    let Some(list) = query.get("types") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| public_type(*k) == name)
            .ok_or_else(|| {
                ApiError::invalid(
                    "types",
                    format!(
                        "types: {name:?} is not an event type; known: {}",
                        EventKind::ALL.map(public_type).join(", ")
                    ),
                )
            })?;
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The query of `GET /v1/events`, for the document (`list` reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Never built: it only describes what `list` reads.
struct ListQuery {
    /// The cursor to read after (default 0: from the oldest kept).
    after: Option<u64>,
    /// Events in the page, 1–1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Event types, comma-separated (`message.delivered,message.bounced`); default all.
    types: Option<String>,
}

/// `GET /v1/events?after=CURSOR&limit=N&types=…`: the tenant's events after `after`
/// (0: from the oldest kept), and `next`, the cursor to ask after next time.
#[utoipa::path(get, path = "/v1/events", params(ListQuery),
    responses((status = 200, description = "a page of events", body = EventPage)))]
async fn list(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<EventPage>, ApiError> {
    let after = match query.get("after") {
        Some(a) => cursor("after", a)?,
        None => 0,
    };
    let limit = match query.get("limit") {
        Some(l) => l
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("limit {l:?} must be between 1 and {MAX_LIMIT}"),
                )
            })?,
        None => DEFAULT_LIMIT,
    };
    let kinds = kinds(&query)?;
    let page = s
        .store
        .events_after(&tenant.id, after, limit, kinds.as_deref())
        .await?;
    let next = page.last().map_or(after, |e| e.cursor);
    Ok(Json(EventPage {
        events: page.iter().map(event_json).collect(),
        next,
    }))
}

/// What a stream carries from one wake-up to the next.
struct Tail {
    server: AppState,
    tenant: String,
    kinds: Option<Vec<EventKind>>,
    cursor: i64,
    /// Events read, and the next of them to send.
    page: Arc<[Rendered]>,
    next: usize,
    sub: super::event_hub::Subscription,
}

fn render(page: &[TenantEvent]) -> Arc<[Rendered]> {
    page.iter()
        .filter_map(|e| match serde_json::to_string(&event_json(e)) {
            Ok(data) => Some(Rendered {
                cursor: e.cursor,
                kind: public_type(e.kind),
                data,
            }),
            Err(err) => {
                // Plain data never fails to encode; if it did, the stream goes on past
                // it (its cursor is skipped) rather than ending.
                tracing::error!(cursor = e.cursor, error = %err, "cannot encode an event");
                None
            }
        })
        .collect()
}

/// The events after the stream's cursor (at most a page). Without a type filter the
/// tenant's streams share their reads: the one that finds the shared page used up
/// reads the next while the others wait for it, and they all send from it.
async fn read(t: &Tail) -> Result<Arc<[Rendered]>, crate::store::StoreError> {
    let store = &t.server.store;
    if t.kinds.is_some() {
        let page = store
            .events_after(&t.tenant, t.cursor, STREAM_PAGE, t.kinds.as_deref())
            .await?;
        return Ok(render(&page));
    }
    let mut shared = t.sub.page.lock().await;
    if let Some(p) = shared.as_ref() {
        if p.covers(t.cursor) {
            return Ok(p.events.clone());
        }
        if t.cursor < p.after {
            // Behind the others (resumed from an old cursor): its own read.
            drop(shared);
            let page = store
                .events_after(&t.tenant, t.cursor, STREAM_PAGE, None)
                .await?;
            return Ok(render(&page));
        }
    }
    let page = render(
        &store
            .events_after(&t.tenant, t.cursor, STREAM_PAGE, None)
            .await?,
    );
    if !page.is_empty() {
        *shared = Some(SharedPage {
            after: t.cursor,
            events: page.clone(),
        });
    }
    Ok(page)
}

/// The next event of a stream: from its page, else the store (or its tenant's shared
/// page), else after its tenant's last cursor moves; `None` once the server stops.
async fn next_event(mut t: Tail) -> Option<(Result<SseEvent, Infallible>, Tail)> {
    loop {
        if let Some(e) = t.page.get(t.next) {
            t.next += 1;
            if e.cursor <= t.cursor {
                continue;
            }
            t.cursor = e.cursor;
            let sse = SseEvent::default()
                .id(e.cursor.to_string())
                .event(e.kind)
                .data(&e.data);
            return Some((Ok(sse), t));
        }
        if *t.sub.closing.borrow() {
            return None;
        }
        // Seen before the read: a cursor that moves during it wakes the wait below.
        t.sub.last.borrow_and_update();
        match read(&t).await {
            Ok(page) if !page.is_empty() => {
                t.next = page.partition_point(|e| e.cursor <= t.cursor);
                t.page = page;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(tenant = %t.tenant, error = %Chain(&e), "event stream cannot read the store; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(t.server.pipeline.events.poll) => {}
                    _ = t.sub.closing.changed() => return None,
                }
                continue;
            }
        }
        tokio::select! {
            changed = t.sub.last.changed() => if changed.is_err() { return None },
            _ = t.sub.closing.changed() => return None,
        }
    }
}

/// `GET /v1/events/stream`: Server-Sent Events, each with `id:` = its cursor, `event:`
/// = its type and `data:` = its JSON; from after `Last-Event-ID`, else `?after=`, else
/// the tenant's last cursor now (only later events). Comments keep an idle stream open.
#[utoipa::path(get, path = "/v1/events/stream",
    params(
        ("after" = Option<u64>, Query, description = "start after this cursor (without `Last-Event-ID`)"),
        ("types" = Option<String>, Query, description = "event types, comma-separated; default all"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this cursor (what an EventSource sends)"),
    ),
    responses((status = 200, description = "Server-Sent Events: `id:` the cursor, `event:` the type, `data:` the event's JSON (`EventView`); never ends by itself", content_type = "text/event-stream", body = String)))]
async fn stream(
    State(s): State<AppState>,
    AuthTenant(tenant): AuthTenant,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let kinds = kinds(&query)?;
    let given = match headers.get("last-event-id") {
        Some(v) => Some(cursor(
            "Last-Event-ID",
            v.to_str()
                .map_err(|_| ApiError::invalid("Last-Event-ID", "Last-Event-ID is not text"))?,
        )?),
        None => query.get("after").map(|a| cursor("after", a)).transpose()?,
    };
    let sub = s.events.subscribe(&tenant.id).map_err(|full| {
        let why = match full {
            TooManyStreams::Tenant(n) => format!(
                "tenant {:?} already has {n} event streams open on this node \
                 (events.max_streams_per_tenant)",
                tenant.id
            ),
            TooManyStreams::Node(n) => format!(
                "this node has {n} event streams open, all tenants together \
                 (events.max_streams)"
            ),
        };
        ApiError::too_many(
            "too_many_event_streams",
            format!("{why}; close one or resume it elsewhere"),
            5,
        )
    })?;
    let start = match given {
        Some(c) => c,
        None => s.store.last_event_cursor(&tenant.id).await?,
    };
    let heartbeat = s.pipeline.events.heartbeat;
    let tail = Tail {
        server: s,
        tenant: tenant.id,
        kinds,
        cursor: start,
        page: Arc::from(Vec::new()),
        next: 0,
        sub,
    };
    let events = futures_util::stream::unfold(tail, next_event);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
        .into_response())
}
