//! The dashboard: the tenant's last hour of sending in ten-minute bars, its delivery
//! and bounce rates, its recipients in the queue now, and a form to send a test
//! message through the same acceptance as `POST /v1/messages`.
//!
//! The numbers come from what the API and the route stage already read: the relay stat
//! buckets (`Store::relay_stat_windows`, the tenant's own share only, never another
//! tenant's on a shared relay) and the live queue (`Store::queue_summary`). The buckets
//! cover the last hour (they are pruned past the longest route window), so the
//! dashboard shows that hour; longer charts need counts the store does not keep yet.

use super::super::accept::{NewSubmission, accept_submission};
use super::super::admission::Kind;
use super::super::error::ApiError;
use super::super::state::{AppState, now_ms};
use super::chart::{Series, bars};
use super::form::PageForm;
use super::layout::{Nav, error_page, page, respond};
use super::session::Session;
use crate::compose::{self, JsonMessage};
use crate::store::WindowCounts;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

/// Slots of the hour chart, each this many minutes.
const SLOTS: i64 = 6;
const SLOT_MINUTES: i64 = 10;
/// Tenants the queue summary is asked for (the tenant's own entry is looked up in it).
const QUEUE_TENANTS: usize = 1000;
/// The longest subject and text of a test message.
const MAX_TEST_SUBJECT: usize = 200;
const MAX_TEST_TEXT: usize = 10_000;

/// The tenant's counts summed over its relays, per slot.
#[derive(Default, Clone, Copy)]
struct Counts {
    sent: u64,
    delivered: u64,
    deferred: u64,
    bounced: u64,
    blocked: u64,
}

impl Counts {
    fn add(&mut self, w: &WindowCounts) {
        self.sent += w.sent;
        self.delivered += w.delivered;
        self.deferred += w.deferred;
        self.bounced += w.hard_bounced + w.soft_bounced;
        self.blocked += w.blocked;
    }

    fn minus(self, o: Counts) -> Counts {
        Counts {
            sent: self.sent.saturating_sub(o.sent),
            delivered: self.delivered.saturating_sub(o.delivered),
            deferred: self.deferred.saturating_sub(o.deferred),
            bounced: self.bounced.saturating_sub(o.bounced),
            blocked: self.blocked.saturating_sub(o.blocked),
        }
    }
}

/// A share as a percentage with one decimal, or a dash when there is nothing to divide.
fn rate(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".to_owned();
    }
    let tenths = (part * 1000 + whole / 2) / whole;
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// The hour's slots, oldest first, from windows that each reach back further.
async fn hour(s: &AppState, tenant: &str, now: i64) -> Result<Vec<Counts>, ApiError> {
    let since: Vec<i64> = (0..SLOTS)
        .map(|i| now - (SLOTS - i) * SLOT_MINUTES * 60_000)
        .collect();
    let windows = s.store.relay_stat_windows(&since, now).await?;
    // Counts from each slot's start to now, summed over the tenant's relays.
    let mut upto = vec![Counts::default(); since.len()];
    for ((t, _relay), ws) in &windows.by_tenant {
        if t == tenant {
            for (c, w) in upto.iter_mut().zip(ws) {
                c.add(w);
            }
        }
    }
    Ok((0..upto.len())
        .map(|i| match upto.get(i + 1) {
            Some(next) => upto[i].minus(*next),
            None => upto[i],
        })
        .collect())
}

/// `GET /ui/dashboard`.
async fn render(s: &AppState, session: &Session) -> Response {
    let now = now_ms();
    let tenant = &session.tenant;
    let slots = match hour(s, &tenant.id, now).await {
        Ok(h) => h,
        Err(e) => return error_page(e.status, &e.message),
    };
    let queue = match s.store.queue_summary(QUEUE_TENANTS).await {
        Ok(q) => q,
        Err(e) => {
            let e = ApiError::from(e);
            return error_page(e.status, &e.message);
        }
    };
    let mine = queue.by_tenant.top.iter().find(|g| g.key == tenant.id);
    let queued = mine.map_or(0, |g| g.recipients);
    let total = slots.iter().fold(Counts::default(), |mut a, c| {
        a.sent += c.sent;
        a.delivered += c.delivered;
        a.deferred += c.deferred;
        a.bounced += c.bounced;
        a.blocked += c.blocked;
        a
    });
    let labels: Vec<String> = (0..SLOTS)
        .map(|i| format!("-{}m", (SLOTS - i) * SLOT_MINUTES))
        .collect();
    let pick = |f: fn(&Counts) -> u64| slots.iter().map(f).collect::<Vec<_>>();
    let series = [
        Series {
            name: "sent",
            class: "s-sent",
            fill: "#0b5cad",
            values: pick(|c| c.sent),
        },
        Series {
            name: "delivered",
            class: "s-delivered",
            fill: "#1a7f37",
            values: pick(|c| c.delivered),
        },
        Series {
            name: "deferred",
            class: "s-deferred",
            fill: "#bf8700",
            values: pick(|c| c.deferred),
        },
        Series {
            name: "bounced",
            class: "s-bounced",
            fill: "#cf222e",
            values: pick(|c| c.bounced),
        },
        Series {
            name: "blocked",
            class: "s-blocked",
            fill: "#8250df",
            values: pick(|c| c.blocked),
        },
    ];
    let from_default = tenant
        .allowed_sender_domains
        .first()
        .map(|d| format!("test@{d}"))
        .unwrap_or_default();
    let main = html! {
        div class="grid" {
            div class="card" { div class="muted" { "Sent, last hour" } div class="figure" { (total.sent) } }
            div class="card" { div class="muted" { "Delivery rate" } div class="figure" { (rate(total.delivered, total.sent)) } }
            div class="card" { div class="muted" { "Bounce rate" } div class="figure" { (rate(total.bounced, total.sent)) } }
            div class="card" {
                div class="muted" { "In the queue now" }
                div class="figure" { (queued) }
                @if let Some(at) = mine.and_then(|g| g.oldest_accepted_ms) {
                    div class="muted" { "oldest accepted " (super::layout::utc(at)) " UTC" }
                }
            }
        }
        h2 { "The last hour, per 10 minutes" }
        (bars("Attempts of the last hour per 10 minutes", &labels, &series))
        div class="scroll" {
            table {
                caption class="muted" { "The same numbers" }
                thead { tr { th scope="col" { "Slot" } @for s in &series { th scope="col" class="num" { (s.name) } } } }
                tbody {
                    @for (i, l) in labels.iter().enumerate() {
                        tr { th scope="row" { (l) } @for s in &series { td class="num" { (s.values[i]) } } }
                    }
                }
            }
        }
        h2 id="test" { "Send a test message" }
        form class="stack" method="post" action="/ui/test-message" aria-labelledby="test" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="t-from" { "From" }
            input id="t-from" name="from" type="email" required value=(from_default);
            label for="t-to" { "To" }
            input id="t-to" name="to" type="email" required;
            label for="t-subject" { "Subject" }
            input id="t-subject" name="subject" type="text" maxlength=(MAX_TEST_SUBJECT) value="Test from the Sluice portal";
            label for="t-text" { "Text" }
            textarea id="t-text" name="text" rows="3" maxlength=(MAX_TEST_TEXT) { "This is a test message." }
            label for="t-tags" { "Tags (comma-separated)" }
            input id="t-tags" name="tags" type="text" value="portal-test";
            button type="submit" { "Send" }
        }
    };
    respond(
        StatusCode::OK,
        page("Dashboard", Nav::Dashboard, Some(session.who()), main),
    )
}

/// `GET /ui/dashboard`.
pub(super) async fn show(State(s): State<AppState>, session: Session) -> Response {
    render(&s, &session).await
}

#[derive(Deserialize)]
pub(super) struct TestMessage {
    from: String,
    to: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    tags: String,
}

/// `POST /ui/test-message`: the message goes through admission and
/// `accept_submission` as a submission of the session's key would; then to its page.
pub(super) async fn send_test(
    State(s): State<AppState>,
    session: Session,
    PageForm(f): PageForm<TestMessage>,
) -> Response {
    if f.subject.len() > MAX_TEST_SUBJECT || f.text.len() > MAX_TEST_TEXT {
        return error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "A test message's subject is at most {MAX_TEST_SUBJECT} bytes and its text at \
                 most {MAX_TEST_TEXT}."
            ),
        );
    }
    let tags: Vec<String> = f
        .tags
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let m = JsonMessage {
        from: f.from.trim().to_owned(),
        to: vec![f.to.trim().to_owned()],
        cc: Vec::new(),
        bcc: Vec::new(),
        reply_to: None,
        subject: Some(f.subject),
        text: Some(f.text),
        html: None,
        headers: Default::default(),
        attachments: Vec::new(),
        tags: tags.clone(),
        account: None,
        idempotency_key: None,
    };
    let composed = match compose::from_json(&m, &s.pipeline.delivery.helo_name) {
        Ok(c) => c,
        Err(e) => return error_page(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    };
    // The tenant's accept rate counts a portal submission as any other.
    let admitted = match s
        .admission
        .admit(&session.tenant.id, Kind::Submission)
        .await
    {
        Ok(a) => a,
        Err(refused) => {
            return error_page(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Your tenant is over its accept rate or its requests in progress; try \
                     again in {} s.",
                    refused.retry_after_secs()
                ),
            );
        }
    };
    let accepted = accept_submission(
        &s,
        NewSubmission {
            owner: session.owner(),
            message: composed,
            tags,
            idempotency_key: None,
            recipients_checked: false,
        },
    )
    .await;
    drop(admitted);
    match accepted {
        Ok(a) => Redirect::to(&format!("/ui/messages/{}", a.id)).into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            error_page(e.status, &e.message)
        }
    }
}
