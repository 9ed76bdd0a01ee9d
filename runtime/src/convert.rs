//! Answers from the generated WIT types back to the plain stage types.
//! (Inputs go in as borrowed views: see `lower`.)

use super::bindings::bill::exports::sluice::plugin::rater as wbill;
use super::bindings::bounce::exports::sluice::plugin::bounce_parser as wbounce;
use super::bindings::ingest::exports::sluice::plugin::ingest_filter as wingest;
use super::bindings::route::exports::sluice::plugin::router as wroute;
use super::bindings::send::exports::sluice::plugin::send_policy as wsend;
use super::bindings::sluice::plugin::types as wt;
use sluice_stage::*;

fn header_back(h: wt::Header) -> Header {
    Header {
        name: h.name,
        value: h.value,
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
