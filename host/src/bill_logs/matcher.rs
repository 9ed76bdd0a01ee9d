//! Which tenant a transfer belongs to, and in which direction.

use super::Logins;
use crate::stage::Direction;

/// Looks addresses up in the logins without allocating per lookup.
#[derive(Debug)]
pub struct Matcher {
    logins: Logins,
    buf: String,
}

impl Matcher {
    pub fn new(logins: Logins) -> Matcher {
        Matcher {
            logins,
            buf: String::new(),
        }
    }

    pub fn tenants(&self) -> &[String] {
        &self.logins.tenants
    }

    /// The tenant of an address: the full address, else its domain.
    pub fn tenant_of(&mut self, address: &str) -> Option<usize> {
        let at = address.rfind('@')?;
        self.buf.clear();
        self.buf.push_str(address);
        self.buf.make_ascii_lowercase();
        if let Some(&t) = self.logins.by_login.get(self.buf.as_str()) {
            return Some(t);
        }
        self.logins.by_login.get(&self.buf[at + 1..]).copied()
    }

    /// The tenant and direction of a transfer: sender first, then recipient.
    pub fn classify(&mut self, sender: &str, recipient: &str) -> Option<(usize, Direction)> {
        if let Some(t) = self.tenant_of(sender) {
            return Some((t, Direction::Outbound));
        }
        self.tenant_of(recipient).map(|t| (t, Direction::Inbound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sender_first_then_recipient_addresses_before_domains() {
        let logins = Logins::parse(
            Path::new("l.toml"),
            "[tenant.a]\nlogins = [\"a.example\"]\n[tenant.b]\nlogins = [\"Boss@A.example\", \"b.example\"]\n",
        )
        .unwrap();
        let mut m = Matcher::new(logins);
        assert_eq!(
            m.classify("x@a.example", "y@b.example"),
            Some((0, Direction::Outbound))
        );
        assert_eq!(
            m.classify("boss@a.EXAMPLE", "y@a.example"),
            Some((1, Direction::Outbound))
        );
        assert_eq!(m.classify("", "y@B.example"), Some((1, Direction::Inbound)));
        assert_eq!(m.classify("#@[]", "y@c.example"), None);
        assert_eq!(m.classify("x@sub.a.example", "nobody"), None);
    }
}
