//! The default ingest filter: the envelope sender must be a well-formed
//! address whose domain is on the tenant's allowed list.
//!
//! An allowed entry is a domain (`example.com`), a domain and its
//! subdomains (`*.example.com` or `.example.com`), or `*` for any domain.
//! Comparison ignores case. Accepted submissions pass through unchanged.

use sluice_sdk::ingest::*;

/// The plugin.
pub struct Allowlist;

impl IngestFilter for Allowlist {
    fn check(submission: Submission) -> IngestDecision {
        match sender_domain(&submission.sender) {
            Err(problem) => reject(format!("sender {:?} {problem}", submission.sender)),
            Ok(domain) if is_allowed(&domain, &submission.allowed_sender_domains) => {
                IngestDecision::Accept(Acceptance {
                    add_headers: Vec::new(),
                    add_tags: Vec::new(),
                })
            }
            Ok(domain) => reject(format!(
                "sender domain {domain:?} is not among the tenant's allowed sender domains"
            )),
        }
    }
}

fn reject(reason: String) -> IngestDecision {
    IngestDecision::Reject(Rejection { code: 550, reason })
}

/// The lower-cased domain of `sender`, or what is wrong with it.
fn sender_domain(sender: &str) -> Result<String, &'static str> {
    let (local, domain) = sender.rsplit_once('@').ok_or("has no '@'")?;
    if local.is_empty() {
        return Err("has an empty local part");
    }
    let valid_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(valid_label) {
        return Err("has an invalid domain");
    }
    Ok(domain.to_ascii_lowercase())
}

fn is_allowed(domain: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        if entry == "*" {
            return true;
        }
        match entry.strip_prefix("*.").or_else(|| entry.strip_prefix('.')) {
            Some(parent) => domain == parent || domain.ends_with(&format!(".{parent}")),
            None => domain == entry,
        }
    })
}

sluice_sdk::export_ingest_filter!(Allowlist);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::testing;

    fn reason(d: IngestDecision) -> String {
        match d {
            IngestDecision::Reject(r) => r.reason,
            IngestDecision::Accept(_) => "accepted".into(),
        }
    }

    #[test]
    fn accepts_allowed_domains_in_any_case() {
        assert_eq!(
            reason(Allowlist::check(testing::submission("A@Example.COM"))),
            "accepted"
        );
    }

    #[test]
    fn rejects_other_domains_naming_the_domain() {
        assert_eq!(
            reason(Allowlist::check(testing::submission("a@evil.test"))),
            "sender domain \"evil.test\" is not among the tenant's allowed sender domains"
        );
    }

    #[test]
    fn subdomain_and_star_entries() {
        let mut s = testing::submission("news@mail.example.net");
        s.allowed_sender_domains = vec!["*.example.net".into()];
        assert_eq!(reason(Allowlist::check(s.clone())), "accepted");
        s.allowed_sender_domains = vec!["example.net".into()];
        assert_ne!(reason(Allowlist::check(s.clone())), "accepted");
        s.allowed_sender_domains = vec!["*".into()];
        assert_eq!(reason(Allowlist::check(s.clone())), "accepted");
        s.allowed_sender_domains = vec![];
        assert_ne!(reason(Allowlist::check(s)), "accepted");
    }

    #[test]
    fn malformed_senders_say_what_is_wrong() {
        assert_eq!(
            reason(Allowlist::check(testing::submission("nobody"))),
            "sender \"nobody\" has no '@'"
        );
        assert_eq!(
            reason(Allowlist::check(testing::submission("@example.com"))),
            "sender \"@example.com\" has an empty local part"
        );
        assert_eq!(
            reason(Allowlist::check(testing::submission("a@exa mple.com"))),
            "sender \"a@exa mple.com\" has an invalid domain"
        );
    }
}
