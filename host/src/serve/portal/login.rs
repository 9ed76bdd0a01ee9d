//! Signing in with a tenant's API key (exchanged for a session) and signing out.
//!
//! The key is looked up as the API looks up a bearer key (`Server::key_owner`); only a
//! tenant's key signs in, not an account's. Failures are counted per client address
//! by the limiter SMTP submission uses for failed AUTH (`submission::AuthFailures`,
//! `[submission]`'s bounds): past the limit, sign-in is refused after a delay until
//! the window passes, whether the key is right or not. A failed sign-in never repeats
//! what was typed.

use super::super::state::{AppState, now_ms};
use super::Portal;
use super::cookies::{LOGIN as LOGIN_COOKIE, SESSION as COOKIE, cookie, on_tls, set_cookie};
use super::csrf;
use super::form::PageForm;
use super::layout::{Nav, error_page, page, respond};
use super::session::{LIFETIME_SECS, Session};
use crate::store::KeyScope;
use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// The longest key read (a key is `sluice_` and 64 hex digits).
const MAX_KEY_BYTES: usize = 200;
/// How long the sign-in form's token cookie lives.
const LOGIN_FORM_SECS: i64 = 3600;

/// `GET /ui`: the dashboard when signed in, else the sign-in page.
pub(super) async fn index(session: Result<Session, Response>) -> Redirect {
    match session {
        Ok(_) => Redirect::to("/ui/dashboard"),
        Err(_) => Redirect::to("/ui/login"),
    }
}

fn login_page(status: StatusCode, headers: &HeaderMap, problem: Option<&str>) -> Response {
    let token = csrf::login_token();
    let markup = page(
        "Sign in",
        Nav::None,
        None,
        html! {
            @if let Some(p) = problem {
                p class="alert" role="alert" { (p) }
            }
            form class="stack" method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(token);
                label for="key" { "API key" }
                input id="key" name="key" type="password" autocomplete="off" required
                    aria-describedby="key-help";
                p id="key-help" class="muted" {
                    "A key of your tenant (" code { "sluice_…" } "). It opens a session of "
                    (LIFETIME_SECS / 3600) " hours; the key itself is not kept in your browser."
                }
                button type="submit" { "Sign in" }
            }
        },
    );
    let mut response = respond(status, markup);
    let cookie = set_cookie(LOGIN_COOKIE, &token, LOGIN_FORM_SECS, on_tls(headers));
    if let Ok(v) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// `GET /ui/login`: the sign-in form, with a fresh token for it.
pub(super) async fn form(headers: HeaderMap) -> Response {
    login_page(StatusCode::OK, &headers, None)
}

#[derive(Deserialize)]
pub(super) struct SignInForm {
    key: String,
}

/// `POST /ui/login`: a tenant's key for a session.
pub(super) async fn sign_in(
    State(s): State<AppState>,
    Extension(portal): Extension<Arc<Portal>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PageForm(f): PageForm<SignInForm>,
) -> Response {
    let failures = &portal.failures;
    let ip = peer.ip();
    if failures.blocked(ip) {
        tokio::time::sleep(failures.delay()).await;
        return error_page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed sign-ins from your address (limit {}); try again later.",
                failures.max()
            ),
        );
    }
    let key = f.key.trim();
    let owner = if key.is_empty() || key.len() > MAX_KEY_BYTES {
        None
    } else {
        match s.key_owner(key).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %crate::logging::Chain(e.as_ref()), "portal: cannot look a key up");
                return error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The store does not answer; try again in a moment.",
                );
            }
        }
    };
    let owner = match owner {
        Some(o) if o.scope == KeyScope::Tenant => o,
        other => {
            // An account's key is a right key but not one that signs in: it is not
            // counted as a guess.
            let problem = if other.is_some() {
                "That key is an account's key; sign in with a key of the tenant."
            } else {
                tracing::info!(peer = %ip, "portal: sign-in failed");
                failures.failed(ip);
                "That key does not sign in."
            };
            return login_page(StatusCode::UNAUTHORIZED, &headers, Some(problem));
        }
    };
    let now = now_ms();
    let secret = match s
        .store
        .open_portal_session(
            &owner.tenant.id,
            &owner.key_id,
            now,
            now + LIFETIME_SECS * 1000,
        )
        .await
    {
        Ok(secret) => secret,
        Err(e) => {
            tracing::warn!(error = %crate::logging::Chain(&e), "portal: cannot open a session");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store does not answer; try again in a moment.",
            );
        }
    };
    tracing::info!(tenant = %owner.tenant.id, key = %owner.key_id, "portal: signed in");
    let tls = on_tls(&headers);
    let mut response = Redirect::to("/ui/dashboard").into_response();
    for c in [
        set_cookie(COOKIE, &secret, LIFETIME_SECS, tls),
        set_cookie(LOGIN_COOKIE, "", 0, tls),
    ] {
        if let Ok(v) = c.parse() {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// `POST /ui/logout`: the session ends in the store (not only in this browser).
pub(super) async fn sign_out(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(secret) = cookie(&headers, COOKIE)
        && let Err(e) = s.store.close_portal_session(secret).await
    {
        tracing::warn!(error = %crate::logging::Chain(&e), "portal: cannot close a session");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The store does not answer; the session is still open. Try again in a moment.",
        );
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = set_cookie(COOKIE, "", 0, on_tls(&headers)).parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}
