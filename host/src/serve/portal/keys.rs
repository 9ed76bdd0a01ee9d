//! API keys: the tenant's keys listed without their secrets, a new key made (its
//! secret shown in that one answer, never again, and the answer not cached), a key
//! revoked. The same functions as the admin API's key routes (`admin::tenant_keys`,
//! `issue_key`, `revoke_tenant_key`), always for the session's own tenant: a key id of
//! another tenant is a 404. Revoking the key this session was opened with ends it.

use super::super::admin::{issue_key, revoke_tenant_key, tenant_keys};
use super::super::dto::admin::NewKey;
use super::super::state::AppState;
use super::layout::{Nav, error_page, page, respond, utc};
use super::session::Session;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

/// Live keys of its own a tenant may hold when it makes one here: the portal must not
/// be a way to grow the key table without bound (an operator's admin API has no such
/// bound).
const MAX_LIVE_KEYS: usize = 50;

/// The keys page, with a new key's secret when one was just made.
async fn render(s: &AppState, session: &Session, made: Option<NewKey>) -> Response {
    let keys = match tenant_keys(s, &session.tenant.id).await {
        Ok(k) => k.keys,
        Err(e) => return error_page(e.status, &e.message),
    };
    let main = html! {
        @if let Some(k) = &made {
            div class="notice" role="status" {
                p { "Your new key. Copy it now: it is shown this once, only its hash is kept." }
                p { label for="new-key" { "Key " (k.info.id) } }
                input id="new-key" class="secret mono" type="text" readonly value=(k.key);
            }
        }
        form method="post" action="/ui/keys" {
            input type="hidden" name="csrf" value=(session.csrf);
            button type="submit" { "Create a key" }
        }
        h2 { "Keys" }
        div class="scroll" {
            table {
                thead {
                    tr {
                        th scope="col" { "Key" }
                        th scope="col" { "Starts with" }
                        th scope="col" { "Account" }
                        th scope="col" { "Created (UTC)" }
                        th scope="col" { "Revoked (UTC)" }
                        th scope="col" { span class="muted" { "Action" } }
                    }
                }
                tbody {
                    @for k in &keys {
                        tr {
                            td class="mono" {
                                (k.id)
                                @if k.id == session.key_id { " " span class="muted" { "(this session)" } }
                            }
                            td class="mono" { (k.prefix) "…" }
                            td { (k.account_id.as_deref().unwrap_or("— (tenant)")) }
                            td { (utc(k.created_at_ms)) }
                            td { (k.revoked_at_ms.map_or_else(|| "—".to_owned(), utc)) }
                            td {
                                @if k.revoked_at_ms.is_none() {
                                    form class="inline" method="post" action={ "/ui/keys/" (k.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" class="danger" aria-label={ "Revoke key " (k.id) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    respond(
        StatusCode::OK,
        page("API keys", Nav::Keys, Some(session.who()), main),
    )
}

/// `GET /ui/keys`.
pub(super) async fn page_get(State(s): State<AppState>, session: Session) -> Response {
    render(&s, &session, None).await
}

/// `POST /ui/keys`: a new key of the tenant, its secret in this answer only.
pub(super) async fn create(State(s): State<AppState>, session: Session) -> Response {
    let live = match tenant_keys(&s, &session.tenant.id).await {
        Ok(k) => k
            .keys
            .iter()
            .filter(|k| k.account_id.is_none() && k.revoked_at_ms.is_none())
            .count(),
        Err(e) => return error_page(e.status, &e.message),
    };
    if live >= MAX_LIVE_KEYS {
        return error_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Your tenant has {live} live keys, the most the portal makes; revoke one first."
            ),
        );
    }
    match issue_key(&s, &session.tenant.id).await {
        Ok(k) => {
            tracing::info!(tenant = %session.tenant.id, key = %k.info.id, "portal: key made");
            render(&s, &session, Some(k)).await
        }
        Err(e) => error_page(e.status, &e.message),
    }
}

/// `POST /ui/keys/{id}/revoke`.
pub(super) async fn revoke(
    State(s): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    match revoke_tenant_key(&s, &session.tenant.id, &id).await {
        Ok(()) => Redirect::to("/ui/keys").into_response(),
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            error_page(StatusCode::NOT_FOUND, "No such live key of your tenant.")
        }
        Err(e) => error_page(e.status, &e.message),
    }
}
