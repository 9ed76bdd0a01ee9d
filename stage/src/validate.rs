//! Checks of a plugin's answer against its input: an answer that breaks
//! them is a malformed answer (`BadOutput`), never acted on.

use super::*;
use std::collections::HashSet;

/// Longest delay a plugin may ask for: a week.
pub const MAX_DELAY_SECS: u32 = 7 * 86_400;
/// Most results one bounce may produce.
pub const MAX_BOUNCE_RESULTS: usize = 10_000;
/// Longest reason or diagnostic text kept.
pub const MAX_TEXT: usize = 16 * 1024;
/// Up to this many relays, ids are checked by scanning rather than hashing.
const SMALL: usize = 16;

fn text(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_TEXT {
        return Err(format!(
            "{what} is {} bytes long (at most {MAX_TEXT})",
            s.len()
        ));
    }
    Ok(())
}

pub fn ingest(input: &Submission, d: &IngestDecision) -> Result<(), String> {
    let _ = input;
    match d {
        IngestDecision::Accept(a) => {
            for h in &a.add_headers {
                // One field each, named as RFC 5322 allows, and none of the headers
                // Sluice or the submission owns (a `From:` added here would escape the
                // check of the author's domain).
                if let Some(problem) = sluice_wire::header_name_problem(&h.name) {
                    return Err(format!("added header: {problem}"));
                }
                if sluice_wire::is_reserved_header(&h.name) {
                    return Err(format!(
                        "added header {:?} is one a plugin may not set",
                        h.name
                    ));
                }
                if let Some(problem) = sluice_wire::header_value_problem(&h.value) {
                    return Err(format!("added header {:?}: {problem}", h.name));
                }
                // Written as one line `Name: value`, unfolded.
                let octets = h.name.len() + 2 + h.value.len();
                if octets > sluice_wire::MAX_LINE_OCTETS {
                    return Err(format!(
                        "added header {:?} is a line of {octets} octets (at most {})",
                        h.name,
                        sluice_wire::MAX_LINE_OCTETS
                    ));
                }
                text("added header value", &h.value)?;
            }
            if a.add_headers.len() > 100 || a.add_tags.len() > 100 {
                return Err("more than 100 added headers or tags".into());
            }
            Ok(())
        }
        IngestDecision::Reject(r) => {
            if !(400..600).contains(&r.code) {
                return Err(format!("rejection code {} is not a 4xx or 5xx", r.code));
            }
            text("rejection reason", &r.reason)
        }
    }
}

pub fn route(input: &RouteInput, d: &RouteDecision) -> Result<(), String> {
    match d {
        RouteDecision::Relays(ids) => {
            if ids.is_empty() {
                return Err("an empty relay list (defer or reject instead)".into());
            }
            if ids.len() > input.relays.len() {
                return Err(format!(
                    "{} relay ids, but only {} relays were offered",
                    ids.len(),
                    input.relays.len()
                ));
            }
            // A handful of relays is the common case: scanning them beats
            // building two hash sets on every call.
            if input.relays.len() <= SMALL {
                for (i, id) in ids.iter().enumerate() {
                    if !input.relays.iter().any(|r| r.id == *id) {
                        return Err(format!("relay {id:?} was not offered"));
                    }
                    if ids[..i].contains(id) {
                        return Err(format!("relay {id:?} is listed twice"));
                    }
                }
                return Ok(());
            }
            let offered: HashSet<&str> = input.relays.iter().map(|r| r.id.as_str()).collect();
            let mut seen = HashSet::new();
            for id in ids {
                if !offered.contains(id.as_str()) {
                    return Err(format!("relay {id:?} was not offered"));
                }
                if !seen.insert(id.as_str()) {
                    return Err(format!("relay {id:?} is listed twice"));
                }
            }
            Ok(())
        }
        RouteDecision::Defer(f) => {
            if f.delay_secs > MAX_DELAY_SECS {
                return Err(format!(
                    "deferral of {}s is longer than {MAX_DELAY_SECS}s",
                    f.delay_secs
                ));
            }
            text("deferral reason", &f.reason)
        }
        RouteDecision::Reject(r) => text("rejection reason", r),
    }
}

pub fn send(input: &Attempt, d: &SendDecision) -> Result<(), String> {
    let _ = input;
    match d {
        SendDecision::Delivered => Ok(()),
        SendDecision::Retry(r) => {
            if r.after_secs == 0 || r.after_secs > MAX_DELAY_SECS {
                return Err(format!(
                    "retry after {}s is outside 1..={MAX_DELAY_SECS}s",
                    r.after_secs
                ));
            }
            text("retry reason", &r.reason)
        }
        SendDecision::NextRelay(r) | SendDecision::Fail(r) => text("reason", r),
    }
}

pub fn bounce(input: &BounceInput, o: &BounceOutput) -> Result<(), String> {
    let _ = input;
    if o.results.len() > MAX_BOUNCE_RESULTS {
        return Err(format!(
            "{} results (at most {MAX_BOUNCE_RESULTS})",
            o.results.len()
        ));
    }
    for r in &o.results {
        text("diagnostic", &r.diagnostic)?;
        if r.recipient.len() > 512 {
            return Err(format!("recipient of {} bytes", r.recipient.len()));
        }
    }
    Ok(())
}

pub fn bill(input: &BillInput, o: &BillOutput) -> Result<(), String> {
    let keys: HashSet<&str> = input.events.iter().map(|e| e.key.as_str()).collect();
    let valid_currency =
        o.currency.len() == 3 && o.currency.bytes().all(|b| b.is_ascii_uppercase());
    if !valid_currency {
        return Err(format!("currency {:?} is not an ISO 4217 code", o.currency));
    }
    let mut seen = HashSet::new();
    for c in &o.charges {
        if !keys.contains(c.event_key.as_str()) {
            return Err(format!("charge for unknown event {:?}", c.event_key));
        }
        if c.service.is_empty() || c.service.len() > 128 {
            return Err(format!("service name {:?} is empty or too long", c.service));
        }
        if !seen.insert((c.event_key.as_str(), c.service.as_str())) {
            return Err(format!(
                "two charges for event {:?} and service {:?}",
                c.event_key, c.service
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_headers_are_one_field_and_not_reserved() {
        let input = samples::submission();
        let adding = |name: &str, value: &str| {
            ingest(
                &input,
                &IngestDecision::Accept(Acceptance {
                    add_headers: vec![Header {
                        name: name.into(),
                        value: value.into(),
                    }],
                    add_tags: Vec::new(),
                }),
            )
        };
        assert_eq!(adding("X-Checked", "yes, by\tus"), Ok(()));
        assert_eq!(adding("X-Long", &"y".repeat(990)), Ok(()));
        for (name, value) in [
            ("X-A", "b\r\nBcc: x@evil.example"),
            ("X-A", "nul\0"),
            ("X-A\r\nBcc", "x@evil.example"),
            ("Bcc", "x@evil.example"),
            ("from", "ceo@bank.example"),
            ("X A", "b"),
            ("X-Long", &"y".repeat(995)),
        ] {
            assert!(adding(name, value).is_err(), "{name:?}: {value:?}");
        }
    }

    /// The sample route input with `n` relays `r0`, `r1`, ….
    fn offered(n: usize) -> RouteInput {
        let mut input = samples::route_input();
        let template = input.relays[0].clone();
        input.relays = (0..n)
            .map(|i| Relay {
                id: format!("r{i}"),
                ..template.clone()
            })
            .collect();
        input
    }

    fn relays(ids: &[&str]) -> RouteDecision {
        RouteDecision::Relays(ids.iter().map(|s| (*s).to_owned()).collect())
    }

    // Both the scanning path (few relays) and the hashing path (many) must
    // give the same verdicts.
    #[test]
    fn route_relay_ids_are_checked_for_few_and_many_relays() {
        for n in [3, SMALL, SMALL + 1, 40] {
            let input = offered(n);
            assert_eq!(route(&input, &relays(&["r1", "r0"])), Ok(()), "{n} relays");
            let unknown = route(&input, &relays(&["r0", "mx-z"])).unwrap_err();
            assert!(
                unknown.contains("\"mx-z\" was not offered"),
                "{n}: {unknown}"
            );
            let twice = route(&input, &relays(&["r1", "r0", "r1"])).unwrap_err();
            assert!(twice.contains("\"r1\" is listed twice"), "{n}: {twice}");
            assert!(route(&input, &relays(&[])).is_err(), "{n} relays");
        }
        let too_many = route(&offered(2), &relays(&["r0", "r1", "r0"])).unwrap_err();
        assert!(too_many.contains("only 2 relays"), "{too_many}");
    }
}
