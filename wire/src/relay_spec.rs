//! What a relay definition may say, in one place: the id rule, the URL forms and their TLS
//! modes, the defaults of a relay left unsaid, and which pool a platform relay joins.
//!
//! The pipeline file (`config`), the admin API (`serve::admin`), the store's own checks
//! (`sluice-store`'s `relays`) and the relay client (`relay`) all read relays; before this
//! module each kept its own copy of the rules, and the copies had drifted (an empty `tags`
//! list meant "no pool" in the file and "the platform pool" in the API). It lives in this
//! leaf crate, which imports nothing of Sluice's, so the host and the store crate both use
//! it without a cycle; the host re-exports it as `relay_spec`.

/// The pool every tenant uses unless its `pools` name others. A platform relay given no
/// tags joins it, so a relay added without knowing about pools is used at once.
pub const PLATFORM_POOL: &str = "pool:platform";

/// Connections a relay gets when its definition does not say.
pub const DEFAULT_CONNECTION_LIMIT: u32 = 16;

/// Weight among a pool's relays when the definition does not say.
pub const DEFAULT_WEIGHT: u32 = 100;

/// Why a relay with a `tls_ca_file` and a URL without TLS is refused.
pub const TLS_CA_WITHOUT_TLS: &str = "tls_ca_file needs a relay URL with TLS: smtps://, or \
     smtp:// with ?tls=required (or ?tls=opportunistic)";

/// How to speak TLS to a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain SMTP (`smtp://`, or `?tls=none`).
    None,
    /// STARTTLS when offered (`?tls=opportunistic`).
    Opportunistic,
    /// STARTTLS or fail (`?tls=required`).
    Required,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// Whether `id` is a valid relay (or tenant, or plugin) id: 1–64 of `a-z 0-9 - _ .`, so it
/// is safe in URLs, file names and log lines as it is.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// What is said of an id [`valid_id`] refuses.
pub fn invalid_id_message(id: &str) -> String {
    format!("{id:?} is not a valid id (1-64 of a-z 0-9 - _ .)")
}

/// The tags a relay is stored with when its definition gives `tags` (or leaves them out).
/// A tenant's own relay is used by that tenant whatever its tags, so it keeps what it was
/// given. A platform relay given none (left out, or an empty list) joins
/// [`PLATFORM_POOL`]; whether given tags put it in some pool is the caller's check, as
/// only the caller knows the tenants.
pub fn default_tags(owned_by_a_tenant: bool, tags: Option<Vec<String>>) -> Vec<String> {
    match tags {
        Some(tags) if owned_by_a_tenant || !tags.is_empty() => tags,
        _ if owned_by_a_tenant => Vec::new(),
        _ => vec![PLATFORM_POOL.to_owned()],
    }
}

/// Whether a platform relay with these tags would be used by anyone: it names a pool
/// (`pool:…`), or one of its tags is in some tenant's `pools`.
pub fn tags_reach_a_pool<'a>(
    tags: &[String],
    mut tenant_pools: impl Iterator<Item = &'a str>,
) -> bool {
    tags.iter().any(|t| t.starts_with("pool:")) || tenant_pools.any(|p| tags.iter().any(|t| t == p))
}

/// What is said of a platform relay whose tags reach no pool.
pub fn no_pool_message(tags: &[String]) -> String {
    format!(
        "tags {tags:?} put this platform relay in no pool, so no tenant would use it: \
         tenants use the platform relays tagged with one of their `pools`. Add a pool \
         tag (\"{PLATFORM_POOL}\" is every tenant's default pool), or leave \"tags\" out \
         to get it"
    )
}

/// Checks an SMTP relay URL: `smtp://host[:port]` (plain; add `?tls=opportunistic` for
/// STARTTLS when offered or `?tls=required` to insist), or `smtps://host[:port]` (TLS from
/// the first byte).
pub fn check_relay_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("relay URL {url:?} has no scheme (smtp:// or smtps://)"))?;
    if !matches!(scheme, "smtp" | "smtps") {
        return Err(format!(
            "relay URL {url:?}: scheme {scheme:?} is not smtp or smtps"
        ));
    }
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "relay URL {url:?} needs a host and no user info (use auth_user)"
        ));
    }
    if let Some((_, port)) = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.ends_with(']') || authority.starts_with('['))
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("relay URL {url:?}: port {port:?} is not a number"));
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair {
            "tls=required" | "tls=opportunistic" | "tls=none" => {}
            other => {
                return Err(format!(
                    "relay URL {url:?}: unknown option {other:?} (tls=required|opportunistic|none)"
                ));
            }
        }
    }
    Ok(())
}

/// Host, port and TLS mode of a relay URL, or why it is not one ([`check_relay_url`]).
pub fn parse_relay_url(url: &str) -> Result<(String, u16, Tls), String> {
    check_relay_url(url)?;
    let (scheme, rest) = url.split_once("://").expect("checked");
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("relay URL {url:?}: unclosed '['"))?;
        (h.to_owned(), after.strip_prefix(':').map(str::parse::<u16>))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.parse::<u16>())),
            None => (authority.to_owned(), None),
        }
    };
    let default_port = if scheme == "smtps" { 465 } else { 25 };
    let port = port
        .transpose()
        .map_err(|_| format!("relay URL {url:?}: bad port"))?
        .unwrap_or(default_port);
    let tls = match (scheme, query) {
        ("smtps", _) => Tls::Implicit,
        (_, q) if q.contains("tls=required") => Tls::Required,
        (_, q) if q.contains("tls=opportunistic") => Tls::Opportunistic,
        _ => Tls::None,
    };
    Ok((host, port, tls))
}

/// Whether a relay URL speaks TLS: `smtps://`, or STARTTLS asked for (`?tls=required` or
/// `?tls=opportunistic`). False for a URL that does not parse.
pub fn relay_url_uses_tls(url: &str) -> bool {
    parse_relay_url(url).is_ok_and(|(_, _, tls)| tls != Tls::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_are_checked_with_the_reason() {
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtps://mail.example.com",
            "smtp://[::1]:25",
            "smtp://h:25?tls=required",
        ] {
            assert_eq!(check_relay_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("smtp://h:port", "port \"port\" is not a number"),
            ("smtp://u:p@h", "no user info"),
            ("smtp://h?tls=maybe", "unknown option \"tls=maybe\""),
            ("http://h", "is not smtp or smtps"),
            ("h:25", "has no scheme"),
        ] {
            let e = check_relay_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn relay_urls_become_host_port_and_tls() {
        assert_eq!(
            parse_relay_url("smtp://127.0.0.1:2525").unwrap(),
            ("127.0.0.1".into(), 2525, Tls::None)
        );
        assert_eq!(
            parse_relay_url("smtps://mx.example").unwrap(),
            ("mx.example".into(), 465, Tls::Implicit)
        );
        assert_eq!(
            parse_relay_url("smtp://[::1]:26?tls=required").unwrap(),
            ("::1".into(), 26, Tls::Required)
        );
        assert_eq!(
            parse_relay_url("smtp://h?tls=opportunistic").unwrap(),
            ("h".into(), 25, Tls::Opportunistic)
        );
        assert!(relay_url_uses_tls("smtp://h?tls=opportunistic"));
        assert!(!relay_url_uses_tls("smtp://h?tls=none"));
        assert!(!relay_url_uses_tls("not a url"));
    }

    #[test]
    fn ids_follow_one_rule() {
        for ok in ["a", "mx-1.eu_west", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "A", "a b", "a/b", &"x".repeat(65), "ü"] {
            assert!(!valid_id(bad), "{bad}");
        }
        assert_eq!(
            invalid_id_message("A"),
            "\"A\" is not a valid id (1-64 of a-z 0-9 - _ .)"
        );
    }

    #[test]
    fn a_platform_relay_without_tags_joins_the_platform_pool() {
        let platform = vec![PLATFORM_POOL.to_owned()];
        assert_eq!(default_tags(false, None), platform);
        assert_eq!(default_tags(false, Some(vec![])), platform);
        assert_eq!(default_tags(false, Some(vec!["eu".into()])), vec!["eu"]);
        assert_eq!(default_tags(true, None), Vec::<String>::new());
        assert_eq!(default_tags(true, Some(vec![])), Vec::<String>::new());
        assert_eq!(default_tags(true, Some(vec!["x".into()])), vec!["x"]);
    }

    #[test]
    fn tags_reach_a_pool_by_prefix_or_by_a_tenants_pools() {
        let eu = vec!["eu".to_owned()];
        assert!(tags_reach_a_pool(&["pool:eu".into()], std::iter::empty()));
        assert!(tags_reach_a_pool(&eu, ["us", "eu"].into_iter()));
        assert!(!tags_reach_a_pool(&eu, ["us"].into_iter()));
        assert!(no_pool_message(&eu).contains(PLATFORM_POOL));
    }
}
