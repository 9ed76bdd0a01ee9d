//! Ingest: refuse messages without a subject, tag the rest by size.
//!
//! Export it with `sluice_sdk::export_ingest_filter!(SubjectRequired);`.

use crate::ingest::*;

/// Rejects submissions that have no `Subject` header.
pub struct SubjectRequired;

impl IngestFilter for SubjectRequired {
    fn check(submission: Submission) -> IngestDecision {
        let has_subject = submission
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("subject") && !h.value.trim().is_empty());
        if !has_subject {
            return IngestDecision::Reject(Rejection {
                code: 550,
                reason: "a Subject header is required".into(),
            });
        }
        let size_tag = if submission.size > 1 << 20 {
            "large"
        } else {
            "small"
        };
        IngestDecision::Accept(Acceptance {
            add_headers: Vec::new(),
            add_tags: vec![format!("size:{size_tag}")],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[test]
    fn rejects_without_subject_and_tags_with_one() {
        let mut s = testing::submission("a@example.com");
        assert!(
            matches!(SubjectRequired::check(s.clone()), IngestDecision::Reject(r) if r.code == 550)
        );
        s.headers.push(Header {
            name: "Subject".into(),
            value: "hi".into(),
        });
        let IngestDecision::Accept(a) = SubjectRequired::check(s) else {
            panic!("rejected")
        };
        assert_eq!(a.add_tags, ["size:small"]);
    }
}
