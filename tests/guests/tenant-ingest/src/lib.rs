//! A tenant's ingest filter for the tenant plugin tests. Its settings say what it does:
//!
//! - `mode=panic`: traps on every call;
//! - `reject_subject=TEXT`: rejects a submission whose `Subject` contains TEXT;
//! - `add_header=Name: value`: adds that header to what it accepts.
//!
//! Anything else is accepted unchanged.

use sluice_sdk::ingest::*;

/// The plugin.
pub struct TenantIngest;

impl IngestFilter for TenantIngest {
    fn check(submission: Submission) -> IngestDecision {
        if sluice_sdk::config::get("mode").as_deref() == Some("panic") {
            panic!("tenant ingest plugin panics on purpose");
        }
        if let Some(needle) = sluice_sdk::config::get("reject_subject") {
            let subject = submission
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("subject"));
            if subject.is_some_and(|h| h.value.contains(&needle)) {
                return IngestDecision::Reject(Rejection {
                    code: 550,
                    reason: format!("subjects with {needle:?} are refused by this tenant"),
                });
            }
        }
        let add_headers = sluice_sdk::config::get("add_header")
            .and_then(|h| {
                let (name, value) = h.split_once(':')?;
                Some(vec![Header {
                    name: name.trim().to_owned(),
                    value: value.trim().to_owned(),
                }])
            })
            .unwrap_or_default();
        IngestDecision::Accept(Acceptance {
            add_headers,
            add_tags: Vec::new(),
        })
    }
}

sluice_sdk::export_ingest_filter!(TenantIngest);
