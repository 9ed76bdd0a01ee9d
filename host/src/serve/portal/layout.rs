//! The frame of every portal page (head, navigation, sign-out form) and the security
//! headers on every portal answer.
//!
//! The Content-Security-Policy allows only this origin's stylesheet and no script at
//! all (the portal has none), no frames, no plugins, forms only to itself: markup that
//! slipped past escaping could still run nothing. Charts are inline SVG drawn with
//! presentation attributes and classes, which the policy allows; no `style` attribute
//! is used anywhere (the policy would drop it).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

/// The policy of every portal answer.
pub(super) const CSP: &str = "default-src 'self'; script-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Which page of the navigation is open.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Dashboard,
    Messages,
    Keys,
    Suppressions,
    None,
}

const NAV: [(Nav, &str, &str); 4] = [
    (Nav::Dashboard, "/ui/dashboard", "Dashboard"),
    (Nav::Messages, "/ui/messages", "Messages"),
    (Nav::Keys, "/ui/keys", "API keys"),
    (Nav::Suppressions, "/ui/suppressions", "Suppressions"),
];

/// Who is signed in, for the frame: the tenant, and the token of the sign-out form.
#[derive(Clone, Copy)]
pub(super) struct Who<'a> {
    pub tenant: &'a str,
    pub csrf: &'a str,
}

/// A whole page: `title`, the navigation when signed in, then `main`.
pub(super) fn page(title: &str, nav: Nav, who: Option<Who>, main: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Sluice" }
                link rel="stylesheet" href="/ui/assets/portal.css";
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "Sluice" }
                    @if let Some(w) = who {
                        nav aria-label="Portal" {
                            ul {
                                @for (which, href, label) in NAV {
                                    li {
                                        @if which == nav {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form class="signout" method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(w.csrf);
                            span class="who" { "Tenant " strong { (w.tenant) } }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (main)
                }
            }
        }
    }
}

/// An HTML answer with a status.
pub(super) fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page saying what went wrong, with a way back.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    respond(
        status,
        page(
            title,
            Nav::None,
            None,
            html! {
                p role="alert" { (message) }
                p { a href="/ui/dashboard" { "Back to the portal" } }
            },
        ),
    )
}

/// A time as `YYYY-MM-DD HH:MM:SS` UTC.
pub(super) fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = crate::maillog::syslog_time::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3600,
        (t % 3600) / 60,
        t % 60
    )
}

/// Middleware, outermost of the portal: the security headers on every answer, and no
/// caching of pages (a key shown once must not be kept by a cache).
pub(super) async fn headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/ui/assets/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_765_151_999_000), "2025-12-07 23:59:59");
    }

    #[test]
    fn a_page_escapes_what_it_is_given() {
        let p = page(
            "<script>x</script>",
            Nav::None,
            None,
            html! { p { ("<b>") } },
        );
        let text = p.into_string();
        assert!(!text.contains("<script>x"), "{text}");
        assert!(text.contains("&lt;script&gt;x"), "{text}");
        assert!(text.contains("&lt;b&gt;"), "{text}");
    }
}
