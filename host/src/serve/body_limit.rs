//! The middleware that charges each request's body to the node's body budget
//! (`body_budget.rs`) before anything reads it, and gives it back with the response.

use super::state::AppState;
use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// The middleware: charge the body, run the handler, give the bytes back.
pub async fn limit(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let budget = &s.body_budget;
    let bytes = budget.charge(req.body().size_hint().exact());
    if bytes == 0 {
        return next.run(req).await;
    }
    let Some(permit) = budget.take(bytes) else {
        tracing::debug!(
            bytes,
            budget = budget.total_bytes,
            "request refused: request bodies in flight at the budget"
        );
        return budget.busy(bytes);
    };
    let response = next.run(req).await;
    drop(permit);
    response
}
