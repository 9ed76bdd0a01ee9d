//! Suppressions: the tenant's list in pages, an address added, one the tenant added
//! removed (the platform's stay, as in the API). The same functions as
//! `/v1/suppressions` (`suppressions::list`, `add`, `remove`).

use super::super::error::ApiError;
use super::super::state::AppState;
use super::super::suppressions::{AddBody, Page, add as api_add, list, remove as api_remove};
use super::form::PageForm;
use super::layout::{Nav, error_page, page, respond, utc};
use super::session::Session;
use crate::store::AddedBy;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

/// Entries per page.
const PAGE: u32 = 100;
/// The longest address, reason and note read from the form.
const MAX_ADDRESS: usize = 320;
const MAX_TEXT: usize = 500;

#[derive(Deserialize)]
pub(super) struct After {
    after: Option<String>,
}

async fn render(
    s: &AppState,
    session: &Session,
    after: Option<String>,
    problem: Option<(StatusCode, String)>,
) -> Response {
    let after = after.filter(|a| !a.is_empty() && a.len() <= MAX_ADDRESS);
    let listed = match list(
        s,
        &session.tenant.id,
        Page {
            after,
            limit: Some(PAGE),
        },
    )
    .await
    {
        Ok(p) => p.0,
        Err(e) => return error_page(e.status, &e.message),
    };
    let status = problem.as_ref().map_or(StatusCode::OK, |(st, _)| *st);
    let next_href = listed.next_after.as_ref().map(|a| {
        let q: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("after", a)
            .finish();
        format!("/ui/suppressions?{q}")
    });
    let main = html! {
        @if let Some((_, p)) = &problem {
            p class="alert" role="alert" { (p) }
        }
        h2 id="add" { "Suppress an address" }
        form class="stack" method="post" action="/ui/suppressions" aria-labelledby="add" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="s-address" { "Address" }
            input id="s-address" name="address" type="email" required maxlength=(MAX_ADDRESS);
            label for="s-note" { "Note (optional)" }
            input id="s-note" name="note" type="text" maxlength=(MAX_TEXT);
            button type="submit" { "Suppress" }
        }
        h2 { "Suppressed addresses" }
        div class="scroll" {
            table {
                thead {
                    tr {
                        th scope="col" { "Address" }
                        th scope="col" { "Reason" }
                        th scope="col" { "Source" }
                        th scope="col" { "Added by" }
                        th scope="col" { "Since (UTC)" }
                        th scope="col" { span class="muted" { "Action" } }
                    }
                }
                tbody {
                    @for e in &listed.suppressions {
                        tr {
                            td class="mono" { (e.address) }
                            td { (e.reason) }
                            td { (e.source) }
                            td { (e.added_by) }
                            td { (utc(e.created_at_ms)) }
                            td {
                                @if e.added_by == "tenant" {
                                    form class="inline" method="post" action="/ui/suppressions/remove" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="address" value=(e.address);
                                        button type="submit" class="secondary" aria-label={ "Remove " (e.address) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                    @if listed.suppressions.is_empty() {
                        tr { td colspan="6" class="muted" { "No address is suppressed." } }
                    }
                }
            }
        }
        @if let Some(href) = next_href {
            p { a href=(href) rel="next" { "Next page" } }
        }
    };
    respond(
        status,
        page("Suppressions", Nav::Suppressions, Some(session.who()), main),
    )
}

/// `GET /ui/suppressions`.
pub(super) async fn page_get(
    State(s): State<AppState>,
    session: Session,
    Query(q): Query<After>,
) -> Response {
    render(&s, &session, q.after, None).await
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    address: String,
    #[serde(default)]
    note: String,
}

fn bounded(value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        Err(ApiError::invalid("address", format!("at most {max} bytes")))
    } else {
        Ok(())
    }
}

/// `POST /ui/suppressions`.
pub(super) async fn add(
    State(s): State<AppState>,
    session: Session,
    PageForm(f): PageForm<AddForm>,
) -> Response {
    let address = f.address.trim().to_owned();
    let note = f.note.trim().to_owned();
    let checked = bounded(&address, MAX_ADDRESS).and_then(|()| bounded(&note, MAX_TEXT));
    let result = match checked {
        Ok(()) => {
            let body = AddBody {
                address,
                reason: None,
                note: (!note.is_empty()).then_some(note),
            };
            api_add(&s, session.tenant.id.clone(), body, AddedBy::Tenant)
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Redirect::to("/ui/suppressions").into_response(),
        Err(e) if e.status.is_client_error() => {
            render(&s, &session, None, Some((e.status, e.message))).await
        }
        Err(e) => error_page(e.status, &e.message),
    }
}

#[derive(Deserialize)]
pub(super) struct RemoveForm {
    address: String,
}

/// `POST /ui/suppressions/remove`.
pub(super) async fn remove(
    State(s): State<AppState>,
    session: Session,
    PageForm(f): PageForm<RemoveForm>,
) -> Response {
    if f.address.len() > MAX_ADDRESS {
        return error_page(StatusCode::NOT_FOUND, "That address is not on the list.");
    }
    match api_remove(&s, &session.tenant.id, &f.address, AddedBy::Tenant).await {
        Ok(_) => Redirect::to("/ui/suppressions").into_response(),
        Err(e) if e.status.is_client_error() => {
            render(&s, &session, None, Some((e.status, e.message))).await
        }
        Err(e) => error_page(e.status, &e.message),
    }
}
