//! API errors as JSON: `{"error": {"code", "message", "field"?, "limit"?}}`.

use super::dto::{ErrorBody, ErrorDetail};
use crate::logging::Chain;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error the API answers with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// The configuration key of the limit a 429 or 503 ran into.
    pub limit: Option<&'static str>,
    /// Seconds to send as `Retry-After` (a 429 or 503 that will pass later).
    pub retry_after_secs: Option<u64>,
}

/// How long a client should wait before retrying while the store cannot write.
const STORE_RETRY_AFTER_SECS: u64 = 2;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            limit: None,
            retry_after_secs: None,
        }
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// A 429: too many requests of one kind; try again after `secs`.
    pub fn too_many(code: &'static str, message: impl Into<String>, secs: u64) -> ApiError {
        ApiError {
            retry_after_secs: Some(secs.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown bearer token (Authorization: Bearer <key>)",
        )
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message).field(field)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
                limit: self.limit.map(str::to_owned),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Store failures are answered without the database's text: it can name tables, files
/// and the values of the request (a key's prefix once reached a client this way). The
/// log has the whole error.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        use crate::store::StoreError as E;
        match e {
            E::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            E::Conflict(m) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{m} already exists"),
            ),
            E::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            E::CommitUnknown(_) => {
                tracing::error!(error = %Chain(&e), "a commit's outcome is unknown answering a request");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_outcome_unknown",
                    "the store could not confirm the write: it may or may not have been stored. \
                     Send it again with the same idempotency_key: a repeat of a stored message \
                     returns that message and sends nothing twice",
                )
                .retry_after(STORE_RETRY_AFTER_SECS)
            }
            other => {
                tracing::error!(error = %format!("{:#}", anyhow::Error::new(other)), "store failure answering a request");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store cannot be reached or written just now; nothing was changed, try again",
                )
                .retry_after(STORE_RETRY_AFTER_SECS)
            }
        }
    }
}

/// An unexpected failure: the client learns that it happened, not what it said (the
/// text may hold anything); the log has it.
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        match e.downcast::<crate::store::StoreError>() {
            Ok(store) => store.into(),
            Err(e) => internal(e),
        }
    }
}

fn internal(e: anyhow::Error) -> ApiError {
    tracing::error!(error = %format!("{e:#}"), "internal failure answering a request");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "an internal error; the server's log has the details",
    )
}

/// The largest error body of axum's own that is read to quote it (its rejections are a
/// sentence or two).
const QUOTED_BODY_BYTES: usize = 4096;

/// Middleware, outermost: every error answer is the JSON error body, including what
/// axum answers by itself — an extractor's rejection (bad JSON, a missing or wrong
/// `Content-Type`, a body over the limit, a bad path or query), 405 for a route without
/// that method (its `Allow` header kept) and 404 for no route. Answers that are JSON
/// already, the portal's HTML pages, and every success, pass untouched.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // The portal's pages (`portal/`) answer their errors as pages of their own.
    let is_json_or_page = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/html"));
    if is_json_or_page {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, QUOTED_BODY_BYTES).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_owned(),
        Err(_) => String::new(),
    };
    let (code, fallback) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not_found", "no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take that method (the Allow header lists those it takes)",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is over the limit"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request's Content-Type is not one this endpoint takes",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid", "the request body is not valid"),
        s if s.is_server_error() => ("internal", "an internal error"),
        _ => ("error", "the request failed"),
    };
    // axum's rejections say what was wrong (a JSON syntax error's line and column, the
    // Content-Type expected); a JSON body's serde error is clearer under its own code.
    let code = match (status, text.as_str()) {
        (StatusCode::BAD_REQUEST, t) if t.contains("JSON") => "bad_json",
        _ => code,
    };
    let message = if text.is_empty() || status.is_server_error() {
        fallback.to_owned()
    } else {
        text
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    // Keep what the original said beyond its body (Allow, Retry-After).
    for (name, value) in parts.headers.iter() {
        if *name != axum::http::header::CONTENT_TYPE && *name != axum::http::header::CONTENT_LENGTH
        {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}
