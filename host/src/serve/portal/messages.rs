//! Messages: the search (`GET /v1/messages`'s parameters, checked by the same
//! `queue_api::parse_search`, run by the same `Store::search_messages`), a message's
//! page (the same `MessageDetail` as `GET /v1/messages/{id}`: recipients, each attempt
//! with its relay and SMTP reply, the bounce verdict), and its retry and cancel buttons
//! (`retry::retry_own_message`, `queue_api::cancel_own_message`).

use super::super::dto::messages::MessageDetail;
use super::super::error::ApiError;
use super::super::queue_api::{cancel_own_message, parse_search};
use super::super::retry::retry_own_message;
use super::super::state::AppState;
use super::layout::{Nav, error_page, page, respond, utc};
use super::session::Session;
use crate::store::RecipientState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

/// The longest message id read from a path (ids are 26-character ULIDs).
const MAX_ID: usize = 64;

fn api_error(e: ApiError) -> Response {
    error_page(e.status, &e.message)
}

fn state_badge(state: &str) -> Markup {
    html! { span class={ "state state-" (state) } { (state) } }
}

/// The search's pairs for `parse_search`: empty fields left out (a form sends them
/// all), times given as `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` made milliseconds.
fn api_pairs(form: &[(String, String)]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for (name, value) in form {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if name == "since" || name == "until" {
            let ms = crate::billing::parse_time(value)
                .map_err(|e| ApiError::invalid(name.clone(), format!("{name}: {e}")))?;
            out.push((name.clone(), ms.to_string()));
        } else {
            out.push((name.clone(), value.to_owned()));
        }
    }
    Ok(out)
}

/// The value of a search field as the form was given it.
fn given<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// `GET /ui/messages`: the search form and a page of results.
pub(super) async fn search(
    State(s): State<AppState>,
    session: Session,
    Query(form): Query<Vec<(String, String)>>,
) -> Response {
    let found = match api_pairs(&form).and_then(|pairs| parse_search(&session.tenant.id, &pairs)) {
        Ok(q) => match s.store.search_messages(&q).await {
            Ok(page) => Ok((page, q.limit)),
            Err(e) => Err(ApiError::from(e)),
        },
        Err(e) => Err(e),
    };
    let (status, problem, rows, next) = match found {
        Ok((rows, limit)) => {
            let next = (rows.len() == limit as usize)
                .then(|| rows.last().map(|m| m.id.clone()))
                .flatten();
            (StatusCode::OK, None, rows, next)
        }
        Err(e) if e.status.is_client_error() => (e.status, Some(e.message), Vec::new(), None),
        Err(e) => return api_error(e),
    };
    // The next page: the same filters, the cursor replaced.
    let next_href = next.map(|after| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (n, v) in &form {
            if n != "after" && !v.is_empty() {
                q.append_pair(n, v);
            }
        }
        q.append_pair("after", &after);
        format!("/ui/messages?{}", q.finish())
    });
    let main = html! {
        form class="filters" method="get" action="/ui/messages" aria-label="Search messages" {
            div {
                label for="f-state" { "State" }
                select id="f-state" name="state" {
                    option value="" { "any" }
                    @for st in RecipientState::ALL {
                        @if given(&form, "state") == st.as_str() {
                            option value=(st.as_str()) selected { (st.as_str()) }
                        } @else {
                            option value=(st.as_str()) { (st.as_str()) }
                        }
                    }
                }
            }
            div { label for="f-to" { "Recipient" } input id="f-to" name="to" type="text" value=(given(&form, "to")); }
            div { label for="f-from" { "Sender" } input id="f-from" name="from" type="text" value=(given(&form, "from")); }
            div { label for="f-tag" { "Tag" } input id="f-tag" name="tag" type="text" value=(given(&form, "tag")); }
            div {
                label for="f-since" { "Since (UTC)" }
                input id="f-since" name="since" type="text" placeholder="2026-12-01 or 2026-12-01T08:00:00Z" value=(given(&form, "since"));
            }
            div {
                label for="f-until" { "Until (UTC)" }
                input id="f-until" name="until" type="text" placeholder="2026-12-02" value=(given(&form, "until"));
            }
            div { button type="submit" { "Search" } }
        }
        @if let Some(p) = &problem {
            p class="alert" role="alert" { (p) }
        }
        div class="scroll" {
            table {
                caption class="muted" { "Newest first" }
                thead {
                    tr {
                        th scope="col" { "Message" }
                        th scope="col" { "State" }
                        th scope="col" { "Sender" }
                        th scope="col" class="num" { "Recipients" }
                        th scope="col" { "Tags" }
                        th scope="col" { "Accepted (UTC)" }
                    }
                }
                tbody {
                    @for m in &rows {
                        tr {
                            td { a class="mono" href={ "/ui/messages/" (m.id) } { (m.id) } }
                            td { (state_badge(m.state().as_str())) }
                            td class="mono" { (if m.sender.is_empty() { "<>" } else { &m.sender }) }
                            td class="num" { (m.recipients()) }
                            td { (m.tags.join(", ")) }
                            td { (utc(m.created_at_ms)) }
                        }
                    }
                    @if rows.is_empty() && problem.is_none() {
                        tr { td colspan="6" class="muted" { "No message matches." } }
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
        page("Messages", Nav::Messages, Some(session.who()), main),
    )
}

/// What a finished action says on the message's page (a fixed set: the query never
/// reaches the page as it was given).
fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "cancelled" => Some("Cancelled: its waiting recipients will not be sent."),
        "retried" => Some("Retried: its deferred recipients are due now."),
        "nothing" => Some("Nothing to do: no recipient was waiting."),
        _ => None,
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Done {
    done: Option<String>,
}

/// `GET /ui/messages/{id}`: a message and its timeline (another tenant's is a 404).
pub(super) async fn detail(
    State(s): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let not_found = || error_page(StatusCode::NOT_FOUND, "No such message.");
    if id.len() > MAX_ID {
        return not_found();
    }
    let m = match s.store.get_message(&session.tenant.id, &id).await {
        Ok(Some(m)) => MessageDetail::from(m),
        Ok(None) => return not_found(),
        Err(e) => return api_error(e.into()),
    };
    let waiting = m.recipients.iter().any(|r| {
        matches!(
            r.state,
            RecipientState::Queued | RecipientState::Deferred | RecipientState::Held
        )
    });
    let deferred = m
        .recipients
        .iter()
        .any(|r| r.state == RecipientState::Deferred);
    let main = html! {
        @if let Some(n) = notice(done.done.as_deref()) {
            p class="notice" role="status" { (n) }
        }
        dl {
            dt { "Id" } dd class="mono" { (m.id) }
            dt { "Sender" } dd class="mono" { (if m.sender.is_empty() { "<>" } else { &m.sender }) }
            dt { "Size" } dd { (m.size) " bytes" }
            dt { "Tags" } dd { (m.tags.join(", ")) }
            dt { "Accepted" } dd { (utc(m.created_at_ms)) " UTC" }
        }
        div {
            @if deferred {
                form class="inline" method="post" action={ "/ui/messages/" (m.id) "/retry" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" class="secondary" { "Retry now" }
                }
                " "
            }
            @if waiting {
                form class="inline" method="post" action={ "/ui/messages/" (m.id) "/cancel" } {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button type="submit" class="danger" { "Cancel" }
                }
            }
        }
        h2 { "Recipients" }
        div class="scroll" {
            table {
                thead {
                    tr {
                        th scope="col" { "Address" }
                        th scope="col" { "State" }
                        th scope="col" class="num" { "Attempts" }
                        th scope="col" { "Relay" }
                        th scope="col" { "Last reply" }
                        th scope="col" { "Next attempt (UTC)" }
                    }
                }
                tbody {
                    @for r in &m.recipients {
                        tr {
                            td class="mono" { (r.address) }
                            td { (state_badge(r.state.as_str())) }
                            td class="num" { (r.attempts) }
                            td { (r.relay.as_deref().unwrap_or("—")) }
                            td class="mono" { (r.last_reply.as_deref().unwrap_or("—")) }
                            td { (r.next_attempt_at_ms.map_or_else(|| "—".to_owned(), utc)) }
                        }
                    }
                }
            }
        }
        h2 { "Timeline" }
        div class="scroll" {
            table {
                thead {
                    tr {
                        th scope="col" { "At (UTC)" }
                        th scope="col" { "Event" }
                        th scope="col" { "Recipient" }
                        th scope="col" { "Relay" }
                        th scope="col" { "Detail (SMTP reply, bounce verdict, …)" }
                    }
                }
                tbody {
                    @for e in &m.events {
                        tr {
                            td { (utc(e.at_ms)) }
                            td { (e.kind.as_str()) }
                            td class="mono" { (e.recipient.as_deref().unwrap_or("—")) }
                            td { (e.relay.as_deref().unwrap_or("—")) }
                            td class="mono" {
                                @if !e.detail.is_null() { (e.detail.to_string()) }
                            }
                        }
                    }
                }
            }
        }
        p { a href="/ui/messages" { "All messages" } }
    };
    respond(
        StatusCode::OK,
        page("Message", Nav::Messages, Some(session.who()), main),
    )
}

/// `POST /ui/messages/{id}/cancel`.
pub(super) async fn cancel(
    State(s): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    match cancel_own_message(&s, &session.tenant.id, &id, None).await {
        Ok(c) => {
            let done = if c.cancelled > 0 {
                "cancelled"
            } else {
                "nothing"
            };
            Redirect::to(&format!("/ui/messages/{id}?done={done}")).into_response()
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            error_page(StatusCode::NOT_FOUND, "No such message.")
        }
        Err(e) => api_error(e),
    }
}

/// `POST /ui/messages/{id}/retry`.
pub(super) async fn retry(
    State(s): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    match retry_own_message(&s, &session.tenant.id, &id).await {
        Ok(n) => {
            let done = if n > 0 { "retried" } else { "nothing" };
            Redirect::to(&format!("/ui/messages/{id}?done={done}")).into_response()
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            error_page(StatusCode::NOT_FOUND, "No such message.")
        }
        Err(e) => api_error(e),
    }
}
