//! The count of every HTTP request by method, route template and status
//! (`sluice_http_requests_total`). A leaf: the router's outermost middleware.

use crate::metrics;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Counts every request by method, route template (never the raw path: `unmatched` when
/// no route took it) and status. Outermost, so the status is the one sent.
pub async fn count(req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status();
    metrics::get().http_request(
        &method,
        route.as_deref().unwrap_or("unmatched"),
        status.as_u16(),
    );
    response
}
