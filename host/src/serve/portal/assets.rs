//! The portal's static assets, compiled into the binary: one stylesheet, nothing else.

use axum::http::header;
use axum::response::IntoResponse;

/// The stylesheet every page links.
const CSS: &str = include_str!("assets/portal.css");

/// `GET /ui/assets/portal.css`: cached for a day (its pages are never cached).
pub(super) async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        CSS,
    )
}
