//! The portal's forms as handlers take them: a URL-encoded body (already bounded and
//! CSRF-checked by `csrf::guard`) whose refusal is a page, not the API's JSON error.

use super::layout::error_page;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::Response;
use serde::de::DeserializeOwned;

/// A form of fields `T` (its `csrf` field is the guard's, ignored here).
pub(super) struct PageForm<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for PageForm<T> {
    type Rejection = Response;
    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(t)) => Ok(PageForm(t)),
            Err(e) => Err(error_page(
                StatusCode::BAD_REQUEST,
                &format!("The form could not be read: {}", e.body_text()),
            )),
        }
    }
}
