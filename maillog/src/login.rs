//! Logins: what a transfer's sender or recipient is matched against to find whose it is,
//! a full address (`user@domain`) or a domain. One rule for `sluice bill --logins` and for
//! the live accounts' logins the store keeps, so a login one accepts the other does too.

/// What is wrong with a login (already trimmed and lower-cased), if anything: it must
/// be an address (`user@domain`) or a domain.
pub fn login_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("is empty")
    } else if value.contains(char::is_whitespace) || value.contains(['<', '>']) {
        Some("must be an address (user@domain) or a domain, without <> or spaces")
    } else if value.starts_with('@') || value.ends_with('@') || value.matches('@').count() > 1 {
        Some("must be an address (user@domain) or a domain")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_an_address_or_a_domain() {
        for ok in ["a.example", "boss@a.example", "x"] {
            assert_eq!(login_problem(ok), None, "{ok}");
        }
        for bad in ["", "a b", "<a@b>", "@a.example", "a@", "a@b@c"] {
            assert!(login_problem(bad).is_some(), "{bad:?}");
        }
    }
}
