//! The tenant's web portal (issue 24), served by `sluice serve` itself under `/ui`:
//! server-rendered HTML (maud templates compiled into the binary), no JavaScript, its
//! one stylesheet embedded.
//!
//! Life of a request: the security headers (`layout::headers`) wrap every answer; a
//! POST passes the CSRF check (`csrf::guard`) before any handler reads it; a page's
//! handler takes a [`session::Session`] (a live server-side session, else a redirect to
//! the sign-in page), then calls the same core functions as the JSON API — the store's
//! message search and detail, `accept_submission`, the queue controls of
//! `queue_api`/`retry`, the key functions of `admin`, the suppression functions of
//! `suppressions` — never SQL or a second path of its own.
//!
//! Invariants:
//! - Every value a tenant (or its mail) controls reaches a page through maud, which
//!   escapes it; nothing here builds HTML by hand.
//! - Every POST carries the session's CSRF token, checked in constant time; a missing or
//!   wrong one is a 403 before the handler runs.
//! - Another tenant's ids are a 404, never a 403 (ids are not confirmed).
//! - A key is shown once, in the answer that made it, and never echoed otherwise (a
//!   failed sign-in does not repeat what was typed).
//! - Pages are HTML, not the API: they are not in `auth::ROUTES` nor in openapi.json.

mod assets;
mod chart;
mod cookies;
mod csrf;
mod dashboard;
mod form;
mod keys;
mod layout;
mod login;
mod messages;
mod session;
mod suppressions;

use super::state::AppState;
use super::submission::AuthFailures;
use axum::Router;
use axum::routing::{get, post};
use std::sync::Arc;

/// What the portal's handlers share beside the server.
pub(super) struct Portal {
    /// Failed sign-ins per client address, under `[submission]`'s bounds for failed
    /// SMTP AUTH (the same limiter, its own counts).
    failures: AuthFailures,
}

/// The portal's routes, under the same outer layers as the API (request counting,
/// the body limits).
pub(super) fn routes(server: &AppState) -> Router<AppState> {
    let portal = Arc::new(Portal {
        failures: AuthFailures::new(&server.pipeline.submission),
    });
    Router::new()
        .route("/ui", get(login::index))
        .route("/ui/", get(login::index))
        .route("/ui/login", get(login::form).post(login::sign_in))
        .route("/ui/logout", post(login::sign_out))
        .route("/ui/assets/portal.css", get(assets::stylesheet))
        .route("/ui/dashboard", get(dashboard::show))
        .route("/ui/test-message", post(dashboard::send_test))
        .route("/ui/messages", get(messages::search))
        .route("/ui/messages/{id}", get(messages::detail))
        .route("/ui/messages/{id}/cancel", post(messages::cancel))
        .route("/ui/messages/{id}/retry", post(messages::retry))
        .route("/ui/keys", get(keys::page_get).post(keys::create))
        .route("/ui/keys/{id}/revoke", post(keys::revoke))
        .route(
            "/ui/suppressions",
            get(suppressions::page_get).post(suppressions::add),
        )
        .route("/ui/suppressions/remove", post(suppressions::remove))
        .layer(axum::middleware::from_fn(csrf::guard))
        .layer(axum::Extension(portal))
        .layer(axum::middleware::from_fn(layout::headers))
}
