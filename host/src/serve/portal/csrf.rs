//! Cross-site request forgery: every POST of the portal carries a token in its form
//! (`csrf`), checked here before the handler runs; missing or wrong is a 403.
//!
//! A session's token is derived from its secret (SHA-256 under a label of its own), so
//! it is per session, needs no storage, and does not give the secret away (a page that
//! shows the token shows nothing the cookie holds). Before there is a session, the
//! sign-in form carries a random token that is also in a cookie of its own (double
//! submit): another site can neither read that cookie nor, with `SameSite=Strict`,
//! have it sent. Tokens are compared in constant time.

use super::cookies::{LOGIN, SESSION, cookie};
use super::layout::error_page;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

/// The form field every POST carries its token in.
pub(super) const FIELD: &str = "csrf";
/// The largest form the portal reads (its forms are a few fields; a key, an address).
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The CSRF token of the session whose secret this is.
pub(super) fn token(secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sluice portal csrf\0");
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// A new random token for the sign-in form.
pub(super) fn login_token() -> String {
    let mut random = [0u8; 32];
    // Without randomness no token: the form is refused rather than guessable.
    if getrandom::fill(&mut random).is_err() {
        return String::new();
    }
    hex::encode(random)
}

/// Equal, in time that depends only on the lengths.
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of a field of a URL-encoded form.
pub(super) fn field(form: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(form)
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
}

fn refused(why: &str) -> Response {
    error_page(StatusCode::FORBIDDEN, why)
}

/// Middleware: a POST passes only with the token its path expects (the sign-in form's
/// for `/ui/login`, else the session's). Its body, read here within
/// [`MAX_FORM_BYTES`], is handed on to the handler unchanged.
pub(super) async fn guard(req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The form is larger than the portal reads.",
        );
    };
    let expected = if parts.uri.path() == "/ui/login" {
        cookie(&parts.headers, LOGIN).map(str::to_owned)
    } else {
        cookie(&parts.headers, SESSION).map(token)
    };
    let given = field(&bytes, FIELD);
    match (expected, given) {
        (Some(e), Some(g)) if !e.is_empty() && same(&e, &g) => {}
        (_, None) => {
            return refused("The form carried no CSRF token; reload the page and try again.");
        }
        _ => {
            return refused(
                "The form's CSRF token is not this session's; reload the page and try again.",
            );
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_per_secret_and_compared_whole() {
        let a = token("a".repeat(64).as_str());
        let b = token("b".repeat(64).as_str());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..63]));
        assert!(!same("", "x"));
        assert_ne!(login_token(), login_token());
    }

    #[test]
    fn a_field_is_read_from_a_form() {
        assert_eq!(field(b"a=1&csrf=x%2By", "csrf").as_deref(), Some("x+y"));
        assert_eq!(field(b"a=1", "csrf"), None);
    }
}
