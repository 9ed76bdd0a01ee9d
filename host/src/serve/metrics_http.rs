//! `GET /metrics` (Prometheus text format, `crate::metrics`). Its routes are handed to
//! `api::router` by `serve`'s `run` (as `events_api`'s are), so no handler module names
//! this one and it stays out of their import cycle.
//!
//! Who may scrape: a caller with the admin token (`Authorization: Bearer …`), or one
//! whose address is in `[metrics] allow_unauthenticated_from` (none by default). What is
//! read from the store at a scrape (queue depth by state, the oldest queued message,
//! unrated usage, the webhooks' lag by state) is read at most once a second, whatever the number of scrapers:
//! scrapes wait for one another, and a scrape within a second of the last read reuses it.

use super::api::{AppState, bearer};
use super::error::ApiError;
use super::state::now_ms;
use crate::logging::Chain;
use crate::metrics;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{RequestPartsExt, Router};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a store read serves scrapes.
const STORE_READ_FOR: Duration = Duration::from_secs(1);

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Prometheus metrics: the admin token, or a caller in `[metrics] allow_unauthenticated_from`.
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)))]
async fn scrape(State(s): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    let peer = parts
        .extract::<ConnectInfo<SocketAddr>>()
        .await
        .ok()
        .map(|c| c.0.ip());
    let allowed = peer.is_some_and(|ip| {
        s.pipeline
            .metrics
            .allow_unauthenticated_from
            .iter()
            .any(|n| n.contains(ip))
    });
    if !allowed && !bearer(&parts).is_some_and(|t| s.is_admin_token(t)) {
        return Err(ApiError::unauthorized());
    }
    let m = metrics::get();
    {
        let mut last = s.scrapes.lock().await;
        if (*last).is_none_or(|at| at.elapsed() >= STORE_READ_FOR) {
            match s.store.queue_gauges().await {
                Ok(g) => {
                    for (state, n) in &g.by_state {
                        let state = match state.as_str() {
                            "queued" => "queued",
                            "delivering" => "delivering",
                            "deferred" => "deferred",
                            _ => "held",
                        };
                        m.queue_depth
                            .get_or_create(&metrics::StateLabels { state })
                            .set(*n);
                    }
                    let age = g
                        .oldest_accepted_ms
                        .map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
                    m.queue_oldest_age.set(age);
                    m.billing_unrated.set(g.unrated_usage);
                }
                // The last values stay; the scrape still answers.
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "metrics: cannot read the queue from the store")
                }
            }
            match s.store.webhook_lag().await {
                Ok(lag) => {
                    // Every state has its series (0 when it has no webhook): a bounded set.
                    for state in ["active", "paused", "disabled"] {
                        let l = lag.iter().find(|l| l.state == state);
                        let age = l
                            .and_then(|l| l.oldest_at_ms)
                            .map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
                        let labels = metrics::StateLabels { state };
                        m.webhook_lag.get_or_create(&labels).set(age);
                        m.webhook_undelivered
                            .get_or_create(&labels)
                            .set(l.map_or(0, |l| l.events));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "metrics: cannot read the webhooks' lag from the store")
                }
            }
            *last = Some(Instant::now());
        }
        let max = s.pipeline.delivery.max_in_flight as i64;
        m.in_flight
            .set(max - s.in_flight.available_permits() as i64);
        m.held_in_memory.set(s.handoff.held() as i64);
        // Relays come and go: the family is filled afresh (scrapes hold `last`, so
        // they never interleave here).
        m.relay_up.clear();
        for r in s.relays.all() {
            m.relay_up
                .get_or_create(&m.relay(&r.settings().id))
                .set(i64::from(r.is_up()));
        }
    }
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], m.encode()).into_response())
}
