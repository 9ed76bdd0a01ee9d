//! The portal's cookies: reading one from a request, and `Set-Cookie` values with the
//! attributes every portal cookie has.

use axum::http::{HeaderMap, header};

/// The cookie of a session's secret.
pub(super) const SESSION: &str = "sluice_session";
/// The cookie of the sign-in form's CSRF token.
pub(super) const LOGIN: &str = "sluice_login";
/// The longest cookie value read (a secret or a token is 64 hex digits).
const MAX_COOKIE_VALUE: usize = 128;

/// The value of cookie `name` of a request, if it has one of a sane length.
pub(super) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= MAX_COOKIE_VALUE)
}

/// Whether the client reached us over TLS (a proxy in front says so): the cookie is
/// then `Secure`. Without TLS a `Secure` cookie would never come back.
pub(super) fn on_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: HttpOnly (no script reads it), SameSite=Strict (no other
/// site's page sends it), `Path=/ui` (the API never sees it), `Secure` on TLS.
pub(super) fn set_cookie(name: &str, value: &str, max_age_secs: i64, tls: bool) -> String {
    format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{}",
        if tls { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_read_by_its_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; sluice_session=abc; x_sluice_session=no"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, SESSION), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
        h.insert(
            header::COOKIE,
            format!("sluice_session={}", "x".repeat(129))
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, SESSION), None, "too long to be ours");
    }
}
