//! Portal sessions on the request side: the cookie that carries a session's secret, and
//! the [`Session`] a page's handler takes (a live session, else a redirect to sign in).
//!
//! The session lives in the store (`store/portal_sessions.rs`, migration 0027), not in
//! a signed cookie, so that signing out, the key's revocation and the bound on a
//! tenant's sessions end it at once on every node; the cookie holds only a random
//! 256-bit secret, of which the store keeps the hash.

use super::super::state::{AppState, now_ms};
use super::cookies::{SESSION, cookie};
use super::csrf;
use super::layout::{Who, error_page};
use crate::store::{KeyOwner, KeyScope, Tenant};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};

/// How long a session lives after signing in, whatever is done with it.
pub(super) const LIFETIME_SECS: i64 = 8 * 3600;

/// A signed-in tenant: who, with which key, and the CSRF token its forms carry.
pub(super) struct Session {
    pub tenant: Tenant,
    pub key_id: String,
    /// The token every form of this session carries (`csrf.rs`).
    pub csrf: String,
}

impl Session {
    /// The session as the owner of a tenant's key, for the core functions that take
    /// one (a submission).
    pub fn owner(&self) -> KeyOwner {
        KeyOwner {
            tenant: self.tenant.clone(),
            scope: KeyScope::Tenant,
            key_id: self.key_id.clone(),
        }
    }

    /// Who is signed in, as the page frame shows it.
    pub fn who(&self) -> Who<'_> {
        Who {
            tenant: &self.tenant.id,
            csrf: &self.csrf,
        }
    }
}

/// Not signed in (or no longer): to the sign-in page.
pub(super) struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/ui/login").into_response()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        let Some(secret) = cookie(&parts.headers, SESSION) else {
            return Err(SignIn.into_response());
        };
        match s.store.portal_session(secret, now_ms()).await {
            Ok(Some(found)) => Ok(Session {
                tenant: found.tenant,
                key_id: found.key_id,
                csrf: csrf::token(secret),
            }),
            Ok(None) => Err(SignIn.into_response()),
            Err(e) => {
                tracing::warn!(error = %crate::logging::Chain(&e), "portal: cannot read a session");
                Err(error_page(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "The store does not answer; try again in a moment.",
                ))
            }
        }
    }
}
