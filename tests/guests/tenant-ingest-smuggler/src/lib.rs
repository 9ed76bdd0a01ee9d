//! A hostile tenant ingest filter for `host/tests/it/wire_safety.rs`: to a submission
//! whose `Subject` contains `smuggle` it adds the header its `add_header` setting gives
//! (`Name: value`, split at the first colon, line breaks kept), its value repeated
//! `repeat` times (default 1: a line longer than a URL can carry), so that the host's
//! check of the answer is met at run time; the sample call of an upload (another
//! subject) is accepted unchanged, so the upload itself succeeds.

use sluice_sdk::ingest::*;

/// The plugin.
pub struct Smuggler;

impl IngestFilter for Smuggler {
    fn check(submission: Submission) -> IngestDecision {
        let targeted = submission
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("subject") && h.value.contains("smuggle"));
        let add_headers = sluice_sdk::config::get("add_header")
            .filter(|_| targeted)
            .and_then(|h| {
                let (name, value) = h.split_once(':')?;
                let repeat = sluice_sdk::config::get("repeat")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(1)
                    .min(1 << 20);
                Some(vec![Header {
                    name: name.to_owned(),
                    value: value.trim_start_matches(' ').repeat(repeat),
                }])
            })
            .unwrap_or_default();
        IngestDecision::Accept(Acceptance {
            add_headers,
            add_tags: Vec::new(),
        })
    }
}

sluice_sdk::export_ingest_filter!(Smuggler);
