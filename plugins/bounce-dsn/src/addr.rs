//! Finding e-mail addresses in free text and header values.

fn local_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-=/!#$&'*?^`{|}~".contains(&b)
}

fn domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'
}

/// Every address in `text`, in order; domains need a dot.
pub fn find_all(text: &str) -> Vec<(usize, String)> {
    addresses(text).map(|(at, a)| (at, a.to_owned())).collect()
}

/// Every address in `text` and where it starts, in order, as slices of
/// the text (most callers want the first only, or none copied).
pub fn addresses(text: &str) -> impl Iterator<Item = (usize, &str)> {
    scan(text, true)
}

/// The first address, dotless domains (`user@mailhub`) included: for
/// fields that hold nothing but an address.
fn first_loose(text: &str) -> Option<String> {
    scan(text, false).next().map(|(_, a)| a.to_owned())
}

fn scan(text: &str, need_dot: bool) -> impl Iterator<Item = (usize, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while let Some(at) = crate::bytes::find(&bytes[i..], b'@').map(|p| p + i) {
            let mut s = at;
            while s > 0 && local_char(bytes[s - 1]) {
                s -= 1;
            }
            let mut e = at + 1;
            // An address literal (RFC 5321 4.1.3): `user@[192.0.2.7]`,
            // `user@[IPv6:2001:db8::1]`.
            if bytes.get(e) == Some(&b'[')
                && let Some(close) = bytes[e..].iter().take(48).position(|&b| b == b']')
                && bytes[e + 1..e + close]
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b':')
                && close > 1
            {
                e += close + 1;
            } else {
                while e < bytes.len() && domain_char(bytes[e]) {
                    e += 1;
                }
            }
            // A quoted local part: "john..doe"@example.org.
            if at > 0
                && bytes[at - 1] == b'"'
                && let Some(open) = text[..at - 1].rfind(['"', '\n'])
                && bytes[open] == b'"'
            {
                s = open;
            }
            let mut local = text[s..at].trim_start_matches(['.', '/', '-']);
            // RFC 5322 lets a local part hold ' and `, but one opening the
            // address and closed by a ' right after it is quoting, as
            // Exchange 2003 writes `'user@example.org' on <date>` and old
            // MTAs `user@example.org'.
            if local.starts_with(['\'', '`']) && bytes.get(e) == Some(&b'\'') {
                local = local.trim_start_matches(['\'', '`']);
            }
            let domain = if bytes.get(at + 1) == Some(&b'[') {
                &text[at + 1..e]
            } else {
                text[at + 1..e].trim_end_matches(['.', '-', '_'])
            };
            let start = at - local.len();
            i = e.max(at + 1);
            if !local.is_empty()
                && (domain.contains(['.', ':']) || (!need_dot && !domain.is_empty()))
                && !domain.starts_with('.')
            {
                // `local@domain`, all of one piece of the text.
                return Some((start, &text[start..at + 1 + domain.len()]));
            }
        }
        None
    })
}

/// The first address in `text`.
pub fn first(text: &str) -> Option<String> {
    addresses(text).next().map(|(_, a)| a.to_owned())
}

/// The address of a header value such as `"Name" <a@b>` or `rfc822; a@b`.
pub fn from_field(value: &str) -> Option<String> {
    // RFC 6533 3.2: an address of type `utf-8` (an internationalised DSN)
    // is the whole value, UTF-8 allowed in its local part and domain, with
    // `\x{HHHH}` escapes. The ASCII scan below would cut `nöbody@...` to
    // `body@...`, another (maybe real) address.
    if let Some((kind, v)) = value.split_once(';')
        && kind.trim().eq_ignore_ascii_case("utf-8")
    {
        let v = unescape_utf8_addr(v.trim().trim_start_matches('<').trim_end_matches('>'));
        if v.contains('@') && !v.contains(char::is_whitespace) && v.len() <= 320 {
            return Some(v);
        }
    }
    let value = value
        .split_once(';')
        .map_or(value, |(t, v)| if t.contains('@') { value } else { v });
    if let Some(inner) = value.rsplit_once('<').and_then(|(_, r)| r.split_once('>'))
        && let Some(a) = first_loose(inner.0)
    {
        return Some(a);
    }
    let loose = first_loose(value);
    loose.or_else(|| {
        // "rfc822; user" without a domain is still a recipient to report.
        let v = value.trim().trim_matches(['<', '>', '"']);
        (!v.is_empty() && !v.contains([' ', '@'])).then(|| v.to_owned())
    })
}

/// RFC 6533's `utf-8-addr-xtext`/`unitext`: `\x{HHHH}` stands for one code
/// point (1 to 6 hex digits); anything else is kept as written.
fn unescape_utf8_addr(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find("\\x{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        // At most 6 hex digits and the brace: looked for in the next 7
        // bytes only, so a value full of `\x{` costs one pass, not one each.
        let close = after.bytes().take(7).position(|b| b == b'}');
        let decoded = close.and_then(|end| {
            let hex = &after[..end];
            let ok = (1..=6).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit());
            let c = ok.then(|| u32::from_str_radix(hex, 16).ok()).flatten()?;
            char::from_u32(c).map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, used)) => {
                out.push(c);
                rest = &after[used..];
            }
            None => {
                out.push_str("\\x{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Lower-cased for comparisons.
pub fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_addresses_in_text() {
        let v: Vec<String> =
            find_all("<a.b@example.org>: host mx.example.org said: 550 <x+1@y.example>... no.")
                .into_iter()
                .map(|(_, a)| a)
                .collect();
        assert_eq!(v, ["a.b@example.org", "x+1@y.example"]);
        assert!(find_all("no address @ here").is_empty());
    }

    #[test]
    fn quotes_around_an_address_are_not_part_of_it() {
        // Exchange 2003's NDR line, and the `...' quoting of old MTAs.
        assert_eq!(
            first("      'nobody@example.org' on 12/7/2026 10:00 AM").as_deref(),
            Some("nobody@example.org")
        );
        assert_eq!(
            first("Delivery to `nobody@example.org' failed").as_deref(),
            Some("nobody@example.org")
        );
        // A local part that holds a quote (RFC 5322 atext) keeps it.
        assert_eq!(
            first("<o'brien@example.org>: User unknown").as_deref(),
            Some("o'brien@example.org")
        );
    }

    #[test]
    fn address_literals_are_addresses() {
        assert_eq!(
            first("<nobody@[192.0.2.7]>: host 192.0.2.7 said: 550").as_deref(),
            Some("nobody@[192.0.2.7]")
        );
        assert_eq!(
            first("nobody@[IPv6:2001:db8::1] failed").as_deref(),
            Some("nobody@[IPv6:2001:db8::1]")
        );
        // Brackets that hold no address literal end the address search.
        assert!(first("user@[not a literal]").is_none());
    }

    #[test]
    fn field_values() {
        assert_eq!(
            from_field("rfc822; <kijitora@example.jp>").as_deref(),
            Some("kijitora@example.jp")
        );
        assert_eq!(
            from_field("\"Neko\" <n@example.org>").as_deref(),
            Some("n@example.org")
        );
        assert_eq!(from_field("rfc822;user").as_deref(), Some("user"));
    }

    #[test]
    fn utf8_addresses_of_internationalised_dsns_are_kept_whole() {
        assert_eq!(
            from_field("utf-8; nöbody@example.org").as_deref(),
            Some("nöbody@example.org")
        );
        assert_eq!(
            from_field("UTF-8;<d\\x{FC}rer@b\\x{FC}cher.example>").as_deref(),
            Some("dürer@bücher.example")
        );
        // A broken escape stays as written; a value with no address falls
        // back to the ASCII reading.
        assert_eq!(
            from_field("utf-8; a\\x{ZZ}b@example.org").as_deref(),
            Some("a\\x{ZZ}b@example.org")
        );
        assert_eq!(
            from_field("utf-8; \\x{110000}@example.org").as_deref(),
            Some("\\x{110000}@example.org")
        );
        assert_eq!(from_field("utf-8; nobody").as_deref(), Some("nobody"));
    }

    #[test]
    fn hostile_utf8_fields_and_literals_cost_one_pass() {
        // A megabyte of broken escapes: read once, no address over RFC
        // 5321's length comes back.
        let field = format!("utf-8; {}@example.org", "\\x{".repeat(250_000));
        let got = from_field(&field);
        assert!(
            got.as_ref().is_none_or(|a| a.len() <= 320),
            "{:?}",
            got.as_ref().map(String::len)
        );
        // Unclosed or over-long brackets after '@' are no address literal.
        let text = format!("a@[{}", "1".repeat(1_000_000));
        assert!(first(&text).is_none());
        assert!(first(&format!("a@[{}]", "1.".repeat(100))).is_none());
    }
}
