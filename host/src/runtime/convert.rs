//! Conversions between the plain stage types and the generated WIT types.
//! Inputs go in by value; answers come back as plain types.

use super::bindings::bill::exports::sluice::plugin::rater as wbill;
use super::bindings::bounce::exports::sluice::plugin::bounce_parser as wbounce;
use super::bindings::ingest::exports::sluice::plugin::ingest_filter as wingest;
use super::bindings::route::exports::sluice::plugin::router as wroute;
use super::bindings::send::exports::sluice::plugin::send_policy as wsend;
use super::bindings::sluice::plugin::types as wt;
use crate::stage::*;

fn header(h: Header) -> wt::Header {
    wt::Header {
        name: h.name,
        value: h.value,
    }
}

fn header_back(h: wt::Header) -> Header {
    Header {
        name: h.name,
        value: h.value,
    }
}

fn reply(r: SmtpReply) -> wt::SmtpReply {
    wt::SmtpReply {
        code: r.code,
        enhanced: r.enhanced,
        text: r.text,
    }
}

fn direction(d: Direction) -> wt::Direction {
    match d {
        Direction::Outbound => wt::Direction::Outbound,
        Direction::Inbound => wt::Direction::Inbound,
    }
}

pub fn submission(s: Submission) -> wingest::Submission {
    wingest::Submission {
        tenant: s.tenant,
        sender: s.sender,
        recipients: s.recipients,
        headers: s.headers.into_iter().map(header).collect(),
        size: s.size,
        tags: s.tags,
        allowed_sender_domains: s.allowed_sender_domains,
        received_at_ms: s.received_at_ms,
    }
}

pub fn ingest_decision(d: wingest::IngestDecision) -> IngestDecision {
    match d {
        wingest::IngestDecision::Accept(a) => IngestDecision::Accept(Acceptance {
            add_headers: a.add_headers.into_iter().map(header_back).collect(),
            add_tags: a.add_tags,
        }),
        wingest::IngestDecision::Reject(r) => IngestDecision::Reject(Rejection {
            code: r.code,
            reason: r.reason,
        }),
    }
}

fn relay(r: Relay) -> wt::Relay {
    wt::Relay {
        id: r.id,
        weight: r.weight,
        tags: r.tags,
        owner: r.owner,
        in_flight: r.in_flight,
        connection_limit: r.connection_limit,
        up: r.up,
        windows: r
            .windows
            .into_iter()
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
            .collect(),
    }
}

pub fn route_input(i: RouteInput) -> wroute::RouteInput {
    let m = i.message;
    wroute::RouteInput {
        message: wroute::MessageSummary {
            id: m.id,
            tenant: m.tenant,
            sender: m.sender,
            recipient_domains: m.recipient_domains,
            recipient_count: m.recipient_count,
            size: m.size,
            tags: m.tags,
            attempt: m.attempt,
            age_secs: m.age_secs,
        },
        relays: i.relays.into_iter().map(relay).collect(),
        now_ms: i.now_ms,
    }
}

pub fn route_decision(d: wroute::RouteDecision) -> RouteDecision {
    match d {
        wroute::RouteDecision::Relays(r) => RouteDecision::Relays(r),
        wroute::RouteDecision::Defer(d) => RouteDecision::Defer(Deferral {
            delay_secs: d.delay_secs,
            reason: d.reason,
        }),
        wroute::RouteDecision::Reject(r) => RouteDecision::Reject(r),
    }
}

pub fn attempt(a: Attempt) -> wsend::Attempt {
    wsend::Attempt {
        message_id: a.message_id,
        tenant: a.tenant,
        recipient: a.recipient,
        relay: a.relay,
        reply: a.reply.map(reply),
        transport_error: a.transport_error,
        attempt: a.attempt,
        age_secs: a.age_secs,
        relays_left: a.relays_left,
    }
}

pub fn send_decision(d: wsend::SendDecision) -> SendDecision {
    match d {
        wsend::SendDecision::Delivered => SendDecision::Delivered,
        wsend::SendDecision::Retry(r) => SendDecision::Retry(Retry {
            after_secs: r.after_secs,
            reason: r.reason,
        }),
        wsend::SendDecision::NextRelay(r) => SendDecision::NextRelay(r),
        wsend::SendDecision::Fail(r) => SendDecision::Fail(r),
    }
}

pub fn bounce_input(i: BounceInput) -> wbounce::BounceInput {
    match i {
        BounceInput::Email(bytes) => wbounce::BounceInput::Email(bytes),
        BounceInput::Reply(r) => wbounce::BounceInput::Reply(wbounce::ReplyInput {
            recipient: r.recipient,
            reply: reply(r.reply),
        }),
        BounceInput::LogLine(l) => wbounce::BounceInput::LogLine(l),
    }
}

fn reason(r: wbounce::Reason) -> Reason {
    use wbounce::Reason as W;
    match r {
        W::Delivered => Reason::Delivered,
        W::Feedback => Reason::Feedback,
        W::Vacation => Reason::Vacation,
        W::Userunknown => Reason::Userunknown,
        W::Hostunknown => Reason::Hostunknown,
        W::Hasmoved => Reason::Hasmoved,
        W::Notaccept => Reason::Notaccept,
        W::Mailboxfull => Reason::Mailboxfull,
        W::Mesgtoobig => Reason::Mesgtoobig,
        W::Exceedlimit => Reason::Exceedlimit,
        W::Blocked => Reason::Blocked,
        W::Rejected => Reason::Rejected,
        W::Spamdetected => Reason::Spamdetected,
        W::Virusdetected => Reason::Virusdetected,
        W::Filtered => Reason::Filtered,
        W::Policyviolation => Reason::Policyviolation,
        W::Securityerror => Reason::Securityerror,
        W::Authfailure => Reason::Authfailure,
        W::Badreputation => Reason::Badreputation,
        W::Requireptr => Reason::Requireptr,
        W::Norelaying => Reason::Norelaying,
        W::Networkerror => Reason::Networkerror,
        W::Systemerror => Reason::Systemerror,
        W::Systemfull => Reason::Systemfull,
        W::Toomanyconn => Reason::Toomanyconn,
        W::Speeding => Reason::Speeding,
        W::Suspend => Reason::Suspend,
        W::Syntaxerror => Reason::Syntaxerror,
        W::Contenterror => Reason::Contenterror,
        W::Notcompliantrfc => Reason::Notcompliantrfc,
        W::Mailererror => Reason::Mailererror,
        W::Expired => Reason::Expired,
        W::Onhold => Reason::Onhold,
        W::Undefined => Reason::Undefined,
    }
}

pub fn bounce_output(o: wbounce::BounceOutput) -> BounceOutput {
    BounceOutput {
        results: o
            .results
            .into_iter()
            .map(|r| BounceResult {
                recipient: r.recipient,
                status: r.status,
                reply_code: r.reply_code,
                reason: reason(r.reason),
                hard: r.hard,
                action: r.action,
                diagnostic: r.diagnostic,
                original_message_id: r.original_message_id,
                verp_token: r.verp_token,
            })
            .collect(),
        notes: o.notes,
    }
}

fn outcome(o: Outcome) -> wbill::Outcome {
    match o {
        Outcome::Delivered => wbill::Outcome::Delivered,
        Outcome::Bounced => wbill::Outcome::Bounced,
        Outcome::Failed => wbill::Outcome::Failed,
        Outcome::Expired => wbill::Outcome::Expired,
        Outcome::Received => wbill::Outcome::Received,
    }
}

pub fn bill_input(i: BillInput) -> wbill::BillInput {
    wbill::BillInput {
        tariff: i.tariff,
        period_start_ms: i.period_start_ms,
        period_to_date: i
            .period_to_date
            .into_iter()
            .map(|c| wbill::Counter {
                service: c.service,
                quantity: c.quantity,
            })
            .collect(),
        events: i
            .events
            .into_iter()
            .map(|e| wbill::UsageEvent {
                key: e.key,
                tenant: e.tenant,
                message_id: e.message_id,
                recipient: e.recipient,
                outcome: outcome(e.outcome),
                direction: direction(e.direction),
                size: e.size,
                relay: e.relay,
                at_ms: e.at_ms,
            })
            .collect(),
    }
}

pub fn bill_output(o: wbill::BillOutput) -> BillOutput {
    BillOutput {
        charges: o
            .charges
            .into_iter()
            .map(|c| Charge {
                event_key: c.event_key,
                service: c.service,
                quantity: c.quantity,
                unit_price: Decimal {
                    mantissa: c.unit_price.mantissa,
                    scale: c.unit_price.scale,
                },
                amount: c.amount,
            })
            .collect(),
        currency: o.currency,
    }
}
