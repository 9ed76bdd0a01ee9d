//! Stage inputs as borrowed views that Wasmtime lowers straight into the
//! guest's memory, and the one typed call per stage that takes them.
//!
//! The generated bindings want owned values (`String`, `Vec`), so every call
//! used to clone its whole input first: for a route call some twenty strings
//! and lists, for a bill batch every event, for a bounce the whole e-mail.
//! These views borrow the host's own values instead; only lists whose
//! element type differs between host and guest (relays, events, …) are
//! rebuilt, as one vector of borrowing records each.
//!
//! Each view derives its canonical-ABI layout from the same field names and
//! order as the WIT record. [`check`] type-checks the stage's export against
//! the view once per instance, so a view that drifts from the WIT fails
//! every call loudly (as a `Trap`), never silently.

use super::bindings::bill::exports::sluice::plugin::rater as wbill;
use super::bindings::bounce::exports::sluice::plugin::bounce_parser as wbounce;
use super::bindings::ingest::exports::sluice::plugin::ingest_filter as wingest;
use super::bindings::route::exports::sluice::plugin::router as wroute;
use super::bindings::send::exports::sluice::plugin::send_policy as wsend;
use super::bindings::sluice::plugin::types as wt;
use super::sandbox::StoreState;
use sluice_stage::{self as stage, Stage};
use wasmtime::Store;
use wasmtime::component::{ComponentExportIndex, ComponentType, Func, Instance, Lower, TypedFunc};

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct Header<'a> {
    #[component(name = "name")]
    name: &'a str,
    #[component(name = "value")]
    value: &'a str,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct SmtpReply<'a> {
    #[component(name = "code")]
    code: u16,
    #[component(name = "enhanced")]
    enhanced: Option<&'a str>,
    #[component(name = "text")]
    text: &'a str,
}

fn reply(r: &stage::SmtpReply) -> SmtpReply<'_> {
    SmtpReply {
        code: r.code,
        enhanced: r.enhanced.as_deref(),
        text: &r.text,
    }
}

/// `ingest-filter.submission`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct Submission<'a> {
    #[component(name = "tenant")]
    tenant: &'a str,
    #[component(name = "sender")]
    sender: &'a str,
    #[component(name = "recipients")]
    recipients: &'a [String],
    #[component(name = "headers")]
    headers: Vec<Header<'a>>,
    #[component(name = "size")]
    size: u64,
    #[component(name = "tags")]
    tags: &'a [String],
    #[component(name = "allowed-sender-domains")]
    allowed_sender_domains: &'a [String],
    #[component(name = "received-at-ms")]
    received_at_ms: i64,
}

pub(super) fn submission(s: &stage::Submission) -> Submission<'_> {
    Submission {
        tenant: &s.tenant,
        sender: &s.sender,
        recipients: &s.recipients,
        headers: s
            .headers
            .iter()
            .map(|h| Header {
                name: &h.name,
                value: &h.value,
            })
            .collect(),
        size: s.size,
        tags: &s.tags,
        allowed_sender_domains: &s.allowed_sender_domains,
        received_at_ms: s.received_at_ms,
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct MessageSummary<'a> {
    #[component(name = "id")]
    id: &'a str,
    #[component(name = "tenant")]
    tenant: &'a str,
    #[component(name = "sender")]
    sender: &'a str,
    #[component(name = "recipient-domains")]
    recipient_domains: &'a [String],
    #[component(name = "recipient-count")]
    recipient_count: u32,
    #[component(name = "size")]
    size: u64,
    #[component(name = "tags")]
    tags: &'a [String],
    #[component(name = "attempt")]
    attempt: u32,
    #[component(name = "age-secs")]
    age_secs: u64,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct Relay<'a> {
    #[component(name = "id")]
    id: &'a str,
    #[component(name = "weight")]
    weight: u32,
    #[component(name = "tags")]
    tags: &'a [String],
    #[component(name = "owner")]
    owner: Option<&'a str>,
    #[component(name = "in-flight")]
    in_flight: u32,
    #[component(name = "connection-limit")]
    connection_limit: u32,
    #[component(name = "up")]
    up: bool,
    #[component(name = "windows")]
    windows: &'a [wt::RelayWindow],
}

/// `router.route-input`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct RouteInput<'a> {
    #[component(name = "message")]
    message: MessageSummary<'a>,
    #[component(name = "relays")]
    relays: Vec<Relay<'a>>,
    #[component(name = "now-ms")]
    now_ms: i64,
}

/// The windows of every relay of `i`, back to back: the one copy a route
/// call makes (the host's window type is not the generated one). Borrowed
/// by [`route_input`].
pub(super) fn relay_windows(i: &stage::RouteInput) -> Vec<wt::RelayWindow> {
    i.relays
        .iter()
        .flat_map(|r| &r.windows)
        .map(|w| wt::RelayWindow {
            window_secs: w.window_secs,
            sent: w.sent,
            delivered: w.delivered,
            deferred: w.deferred,
            hard_bounced: w.hard_bounced,
            soft_bounced: w.soft_bounced,
            blocked: w.blocked,
            mean_latency_ms: w.mean_latency_ms,
        })
        .collect()
}

/// `windows` is [`relay_windows`] of the same input.
pub(super) fn route_input<'a>(
    i: &'a stage::RouteInput,
    windows: &'a [wt::RelayWindow],
) -> RouteInput<'a> {
    let m = &i.message;
    let mut rest = windows;
    let relays = i
        .relays
        .iter()
        .map(|r| {
            let (own, after) = rest.split_at(r.windows.len());
            rest = after;
            Relay {
                id: &r.id,
                weight: r.weight,
                tags: &r.tags,
                owner: r.owner.as_deref(),
                in_flight: r.in_flight,
                connection_limit: r.connection_limit,
                up: r.up,
                windows: own,
            }
        })
        .collect();
    RouteInput {
        message: MessageSummary {
            id: &m.id,
            tenant: &m.tenant,
            sender: &m.sender,
            recipient_domains: &m.recipient_domains,
            recipient_count: m.recipient_count,
            size: m.size,
            tags: &m.tags,
            attempt: m.attempt,
            age_secs: m.age_secs,
        },
        relays,
        now_ms: i.now_ms,
    }
}

/// `send-policy.attempt`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct Attempt<'a> {
    #[component(name = "message-id")]
    message_id: &'a str,
    #[component(name = "tenant")]
    tenant: &'a str,
    #[component(name = "recipient")]
    recipient: &'a str,
    #[component(name = "relay")]
    relay: &'a str,
    #[component(name = "reply")]
    reply: Option<SmtpReply<'a>>,
    #[component(name = "transport-error")]
    transport_error: Option<&'a str>,
    #[component(name = "attempt")]
    attempt: u32,
    #[component(name = "age-secs")]
    age_secs: u64,
    #[component(name = "relays-left")]
    relays_left: u32,
}

pub(super) fn attempt(a: &stage::Attempt) -> Attempt<'_> {
    Attempt {
        message_id: &a.message_id,
        tenant: &a.tenant,
        recipient: &a.recipient,
        relay: &a.relay,
        reply: a.reply.as_ref().map(reply),
        transport_error: a.transport_error.as_deref(),
        attempt: a.attempt,
        age_secs: a.age_secs,
        relays_left: a.relays_left,
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct ReplyInput<'a> {
    #[component(name = "recipient")]
    recipient: &'a str,
    #[component(name = "reply")]
    reply: SmtpReply<'a>,
}

/// `bounce-parser.bounce-input`.
#[derive(ComponentType, Lower)]
#[component(variant)]
pub(super) enum BounceInput<'a> {
    #[component(name = "email")]
    Email(&'a [u8]),
    #[component(name = "reply")]
    Reply(ReplyInput<'a>),
    #[component(name = "log-line")]
    LogLine(&'a str),
}

pub(super) fn bounce_input(i: &stage::BounceInput) -> BounceInput<'_> {
    match i {
        stage::BounceInput::Email(bytes) => BounceInput::Email(bytes),
        stage::BounceInput::Reply(r) => BounceInput::Reply(ReplyInput {
            recipient: &r.recipient,
            reply: reply(&r.reply),
        }),
        stage::BounceInput::LogLine(l) => BounceInput::LogLine(l),
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct UsageEvent<'a> {
    #[component(name = "key")]
    key: &'a str,
    #[component(name = "tenant")]
    tenant: &'a str,
    #[component(name = "message-id")]
    message_id: &'a str,
    #[component(name = "recipient")]
    recipient: &'a str,
    #[component(name = "outcome")]
    outcome: wbill::Outcome,
    #[component(name = "direction")]
    direction: wt::Direction,
    #[component(name = "size")]
    size: u64,
    #[component(name = "relay")]
    relay: Option<&'a str>,
    #[component(name = "at-ms")]
    at_ms: i64,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct Counter<'a> {
    #[component(name = "service")]
    service: &'a str,
    #[component(name = "quantity")]
    quantity: u64,
}

/// `rater.bill-input`.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(super) struct BillInput<'a> {
    #[component(name = "tariff")]
    tariff: &'a str,
    #[component(name = "period-start-ms")]
    period_start_ms: i64,
    #[component(name = "period-to-date")]
    period_to_date: Vec<Counter<'a>>,
    #[component(name = "events")]
    events: Vec<UsageEvent<'a>>,
}

fn outcome(o: stage::Outcome) -> wbill::Outcome {
    match o {
        stage::Outcome::Delivered => wbill::Outcome::Delivered,
        stage::Outcome::Bounced => wbill::Outcome::Bounced,
        stage::Outcome::Failed => wbill::Outcome::Failed,
        stage::Outcome::Expired => wbill::Outcome::Expired,
        stage::Outcome::Received => wbill::Outcome::Received,
    }
}

fn direction(d: stage::Direction) -> wt::Direction {
    match d {
        stage::Direction::Outbound => wt::Direction::Outbound,
        stage::Direction::Inbound => wt::Direction::Inbound,
    }
}

pub(super) fn bill_input(i: &stage::BillInput) -> BillInput<'_> {
    BillInput {
        tariff: &i.tariff,
        period_start_ms: i.period_start_ms,
        period_to_date: i
            .period_to_date
            .iter()
            .map(|c| Counter {
                service: &c.service,
                quantity: c.quantity,
            })
            .collect(),
        events: i
            .events
            .iter()
            .map(|e| UsageEvent {
                key: &e.key,
                tenant: &e.tenant,
                message_id: &e.message_id,
                recipient: &e.recipient,
                outcome: outcome(e.outcome),
                direction: direction(e.direction),
                size: e.size,
                relay: e.relay.as_deref(),
                at_ms: e.at_ms,
            })
            .collect(),
    }
}

/// The name of the function each stage's interface exports.
fn function_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Ingest => "check",
        Stage::Route => "route",
        Stage::Send => "decide",
        Stage::Bounce => "parse",
        Stage::Bill => "rate",
    }
}

/// Where the stage's function is among a component's exports: looked up
/// once per plugin, used for every instance.
pub(super) fn export_index(
    component: &wasmtime::component::Component,
    stage: Stage,
) -> Option<ComponentExportIndex> {
    let (_, interface) = component.get_export(None, stage.export_name())?;
    let (_, func) = component.get_export(Some(&interface), function_name(stage))?;
    Some(func)
}

/// A stage's function in one instance, type-checked against the stage's
/// view; only [`check`] makes one.
#[derive(Clone, Copy)]
pub(super) struct StageFunc {
    stage: Stage,
    func: Func,
}

/// The stage's function in `instance`, type-checked against the view the
/// host lowers (with `'static` standing in for every call's lifetime: a
/// lifetime changes nothing in the canonical ABI) and the generated output.
pub(super) fn check(
    stage: Stage,
    store: &mut Store<StoreState>,
    instance: &Instance,
    at: &ComponentExportIndex,
) -> wasmtime::Result<StageFunc> {
    let func = match stage {
        Stage::Ingest => *instance
            .get_typed_func::<(&Submission<'static>,), (wingest::IngestDecision,)>(&mut *store, at)?
            .func(),
        Stage::Route => *instance
            .get_typed_func::<(&RouteInput<'static>,), (wroute::RouteDecision,)>(&mut *store, at)?
            .func(),
        Stage::Send => *instance
            .get_typed_func::<(&Attempt<'static>,), (wsend::SendDecision,)>(&mut *store, at)?
            .func(),
        Stage::Bounce => *instance
            .get_typed_func::<(&BounceInput<'static>,), (wbounce::BounceOutput,)>(&mut *store, at)?
            .func(),
        Stage::Bill => *instance
            .get_typed_func::<(&BillInput<'static>,), (Result<wbill::BillOutput, String>,)>(
                &mut *store,
                at,
            )?
            .func(),
    };
    Ok(StageFunc { stage, func })
}

/// Calls `f` with the view `P` of its stage.
///
/// # Safety
/// `f.stage` must be the stage whose view is `P` and whose output is `R`.
unsafe fn call<P, R>(f: StageFunc, store: &mut Store<StoreState>, input: &P) -> wasmtime::Result<R>
where
    for<'p> (&'p P,): wasmtime::component::ComponentNamedList + Lower,
    (R,): wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    // SAFETY: `check` type-checked `f.func` as `(&P,) -> (R,)` up to
    // lifetimes, which the canonical ABI does not see (the generated
    // bindings call through `new_unchecked` after the same check).
    let typed = unsafe { TypedFunc::<(&P,), (R,)>::new_unchecked(f.func) };
    typed.call(store, (input,)).map(|(r,)| r)
}

/// Stops a call through the wrong stage's function before it is unsound.
fn expect(f: StageFunc, stage: Stage) -> wasmtime::Result<StageFunc> {
    if f.stage == stage {
        Ok(f)
    } else {
        wasmtime::bail!("a {} function called as {stage}", f.stage)
    }
}

pub(super) fn ingest(
    f: StageFunc,
    store: &mut Store<StoreState>,
    input: &Submission<'_>,
) -> wasmtime::Result<wingest::IngestDecision> {
    let f = expect(f, Stage::Ingest)?;
    // SAFETY: `f` is the ingest function (checked just above).
    unsafe { call(f, store, input) }
}

pub(super) fn route(
    f: StageFunc,
    store: &mut Store<StoreState>,
    input: &RouteInput<'_>,
) -> wasmtime::Result<wroute::RouteDecision> {
    let f = expect(f, Stage::Route)?;
    // SAFETY: `f` is the route function (checked just above).
    unsafe { call(f, store, input) }
}

pub(super) fn send(
    f: StageFunc,
    store: &mut Store<StoreState>,
    input: &Attempt<'_>,
) -> wasmtime::Result<wsend::SendDecision> {
    let f = expect(f, Stage::Send)?;
    // SAFETY: `f` is the send function (checked just above).
    unsafe { call(f, store, input) }
}

pub(super) fn bounce(
    f: StageFunc,
    store: &mut Store<StoreState>,
    input: &BounceInput<'_>,
) -> wasmtime::Result<wbounce::BounceOutput> {
    let f = expect(f, Stage::Bounce)?;
    // SAFETY: `f` is the bounce function (checked just above).
    unsafe { call(f, store, input) }
}

pub(super) fn bill(
    f: StageFunc,
    store: &mut Store<StoreState>,
    input: &BillInput<'_>,
) -> wasmtime::Result<Result<wbill::BillOutput, String>> {
    let f = expect(f, Stage::Bill)?;
    // SAFETY: `f` is the bill function (checked just above).
    unsafe { call(f, store, input) }
}
