//! Who may call which tenant route, decided in one place.
//!
//! A bearer key is the whole tenant's, or one account's (issue 17: a key a tenant issues
//! to its own customer, `POST /v1/accounts/{id}/keys`). [`ROUTES`] is the one table of
//! the tenant API's routes × the two kinds of key. `api.rs`'s outermost middleware looks
//! every `/v1/` request with a key up in it ([`authorize`]) before admission, before its
//! body is read and before any handler runs.
//!
//! Invariants:
//! - Deny by default: a route missing from the table is refused to an account's key
//!   (403), so a route added without a row is a tenant's route, never an account's.
//! - Handlers that take [`AuthTenant`] refuse an account's key again, by type, whatever
//!   the table says; only handlers that take [`Caller`] see one.
//! - An account's key may submit mail, which is billed to its account
//!   (`accept::bill_to_key_account`: a submission naming another account is refused), and read
//!   its own account's usage, invoices and balance; nothing else, no other account.

use super::error::ApiError;
use super::state::AppState;
use crate::store::{KeyOwner, KeyScope, Tenant};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};

/// What kind of key may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The tenant's keys only.
    Tenant,
    /// The tenant's keys, and an account's key, whose submission is billed to its account.
    Submit,
    /// The tenant's keys, and the key of the account the path's `{id}` names.
    OwnAccount,
}

/// One route of the tenant API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// As registered with the router: `{name}` stands for one path segment.
    pub path: &'static str,
    pub access: Access,
}

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route {
        method,
        path,
        access,
    }
}

/// Every route of the tenant API (`/v1/…`) and which keys may call it. Keep it in step
/// with the routers of `serve`'s modules (a unit test below reads them all).
pub const ROUTES: &[Route] = &[
    route("POST", "/v1/messages", Access::Submit),
    route("GET", "/v1/messages/{id}", Access::Tenant),
    route("GET", "/v1/messages", Access::Tenant),
    route("POST", "/v1/messages/{id}/retry", Access::Tenant),
    // Issue 22: a tenant's controls over its own messages; an account's key has none.
    route("POST", "/v1/messages/{id}/cancel", Access::Tenant),
    route("POST", "/v1/messages/{id}/hold", Access::Tenant),
    route("POST", "/v1/messages/{id}/release", Access::Tenant),
    route("POST", "/v1/retry", Access::Tenant),
    route("GET", "/v1/plugins", Access::Tenant),
    route("PUT", "/v1/plugins/{stage}", Access::Tenant),
    route("POST", "/v1/plugins/{stage}/activate", Access::Tenant),
    route("POST", "/v1/plugins/{stage}/rollback", Access::Tenant),
    route("GET", "/v1/plugins/{stage}/logs", Access::Tenant),
    route("GET", "/v1/suppressions", Access::Tenant),
    route("POST", "/v1/suppressions", Access::Tenant),
    route("DELETE", "/v1/suppressions/{address}", Access::Tenant),
    // Issue 23: DKIM keys are the tenant's; an account's key has none.
    route("GET", "/v1/domains/{domain}/dkim", Access::Tenant),
    route("POST", "/v1/domains/{domain}/dkim", Access::Tenant),
    route(
        "DELETE",
        "/v1/domains/{domain}/dkim/{selector}",
        Access::Tenant,
    ),
    route(
        "POST",
        "/v1/domains/{domain}/dkim/{selector}/activate",
        Access::Tenant,
    ),
    route("GET", "/v1/usage", Access::Tenant),
    route("GET", "/v1/invoices/{period}", Access::Tenant),
    route("GET", "/v1/balance", Access::Tenant),
    route("GET", "/v1/accounts", Access::Tenant),
    route("POST", "/v1/accounts", Access::Tenant),
    route("GET", "/v1/accounts/{id}", Access::Tenant),
    route("PATCH", "/v1/accounts/{id}", Access::Tenant),
    route("DELETE", "/v1/accounts/{id}", Access::Tenant),
    route("GET", "/v1/accounts/{id}/usage", Access::OwnAccount),
    route(
        "GET",
        "/v1/accounts/{id}/invoices/{period}",
        Access::OwnAccount,
    ),
    route("GET", "/v1/accounts/{id}/balance", Access::OwnAccount),
    route("POST", "/v1/accounts/{id}/credits", Access::Tenant),
    route("GET", "/v1/accounts/{id}/keys", Access::Tenant),
    route("POST", "/v1/accounts/{id}/keys", Access::Tenant),
    route("DELETE", "/v1/accounts/{id}/keys/{key_id}", Access::Tenant),
    route("GET", "/v1/account-billing", Access::Tenant),
    route("PUT", "/v1/account-billing", Access::Tenant),
    // Events name every message and recipient of the tenant: an account's key reads
    // none of them (issue 21 may add an account's own events later).
    route("GET", "/v1/events", Access::Tenant),
    route("GET", "/v1/events/stream", Access::Tenant),
    // Webhooks carry every event of the tenant: its own key only.
    route("GET", "/v1/webhooks", Access::Tenant),
    route("POST", "/v1/webhooks", Access::Tenant),
    route("GET", "/v1/webhooks/{id}", Access::Tenant),
    route("PATCH", "/v1/webhooks/{id}", Access::Tenant),
    route("DELETE", "/v1/webhooks/{id}", Access::Tenant),
    route("POST", "/v1/webhooks/{id}/rotate-secret", Access::Tenant),
    route("POST", "/v1/webhooks/{id}/test", Access::Tenant),
    route("POST", "/v1/webhooks/{id}/replay", Access::Tenant),
    route("GET", "/v1/webhooks/{id}/attempts", Access::Tenant),
];

/// The route a request is for, and the raw `{id}` segment of its path if it has one.
/// Segments are compared as they arrive, not percent-decoded: the router matches the
/// same raw path, and an account id (A-Z a-z 0-9 - _ .) never needs encoding, so an
/// encoded id only ever fails to match its own account (refused, never let through).
pub fn find<'p>(method: &str, path: &'p str) -> Option<(&'static Route, Option<&'p str>)> {
    ROUTES.iter().find_map(|r| {
        if r.method != method {
            return None;
        }
        let mut want = r.path.split('/');
        let mut got = path.split('/');
        let mut id = None;
        loop {
            match (want.next(), got.next()) {
                (None, None) => return Some((r, id)),
                (Some(w), Some(g)) if w.starts_with('{') => {
                    if g.is_empty() {
                        return None;
                    }
                    if w == "{id}" {
                        id = Some(g);
                    }
                }
                (Some(w), Some(g)) if w == g => {}
                _ => return None,
            }
        }
    })
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

fn account_key_refused(account: &str, method: &str, path: &str) -> ApiError {
    forbidden(format!(
        "this key is account {account:?}'s: it may submit mail (POST /v1/messages) and read \
         its own account's usage, invoices and balance (GET /v1/accounts/{account}/…), not \
         {method} {path}; use a key of the tenant"
    ))
}

/// Whether `owner`'s key may call `method path`: a tenant's key may call every route
/// (its handler answers what does not exist); an account's key only what [`ROUTES`]
/// lets it, and only for its own account.
pub fn authorize(owner: &KeyOwner, method: &Method, path: &str) -> Result<(), ApiError> {
    let KeyScope::Account(account) = &owner.scope else {
        return Ok(());
    };
    let method = method.as_str();
    match find(method, path) {
        Some((r, _)) if r.access == Access::Submit => Ok(()),
        Some((r, Some(id))) if r.access == Access::OwnAccount => {
            if id == account {
                Ok(())
            } else {
                Err(forbidden(format!(
                    "this key is account {account:?}'s: it may not read another account's books"
                )))
            }
        }
        _ => Err(account_key_refused(account, method, path)),
    }
}

/// The owner of a request's key that the middleware found and authorised, so the
/// handler does not look it up twice.
#[derive(Clone)]
pub(super) struct Authenticated(pub KeyOwner);

/// The key's owner: the one the middleware put on the request, else looked up and
/// authorised here (a request that reached a handler some other way).
async fn owner(parts: &mut Parts, s: &AppState) -> Result<KeyOwner, ApiError> {
    if let Some(Authenticated(o)) = parts.extensions.remove::<Authenticated>() {
        return Ok(o);
    }
    let key = bearer(parts).ok_or_else(ApiError::unauthorized)?;
    let owner = s.key_owner(key).await?.ok_or_else(ApiError::unauthorized)?;
    authorize(&owner, &parts.method, parts.uri.path())?;
    Ok(owner)
}

/// The tenant behind a tenant's key; an account's key is refused (403).
pub struct AuthTenant(pub Tenant);

impl FromRequestParts<AppState> for AuthTenant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let o = owner(parts, s).await?;
        match o.scope {
            KeyScope::Tenant => Ok(AuthTenant(o.tenant)),
            KeyScope::Account(account) => Err(account_key_refused(
                &account,
                parts.method.as_str(),
                parts.uri.path(),
            )),
        }
    }
}

/// The caller of a route an account's key may call too ([`Access::Submit`],
/// [`Access::OwnAccount`]), authorised by [`ROUTES`].
pub struct Caller(pub KeyOwner);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        owner(parts, s).await.map(Caller)
    }
}

/// The bearer token of a request, if it has one.
pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Caller of the admin API.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let given = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        if s.is_admin_token(given) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(scope: KeyScope) -> KeyOwner {
        KeyOwner {
            tenant: Tenant {
                id: "t".into(),
                name: "t".into(),
                allowed_sender_domains: Vec::new(),
                pools: Vec::new(),
                route_plugin: None,
                header_from_check: true,
                created_at_ms: 0,
            },
            scope,
            key_id: "k".into(),
        }
    }

    fn allowed(o: &KeyOwner, method: &str, path: &str) -> bool {
        authorize(o, &method.parse().unwrap(), path).is_ok()
    }

    #[test]
    fn an_account_key_reaches_only_its_own_books_and_submission() {
        let a = owner(KeyScope::Account("shop".into()));
        assert!(allowed(&a, "POST", "/v1/messages"));
        assert!(allowed(&a, "GET", "/v1/accounts/shop/usage"));
        assert!(allowed(&a, "GET", "/v1/accounts/shop/invoices/2026-12"));
        assert!(allowed(&a, "GET", "/v1/accounts/shop/balance"));
        for (m, p) in [
            ("GET", "/v1/accounts/boss/usage"),
            ("GET", "/v1/accounts/sh%6Fp/usage"),
            ("GET", "/v1/accounts/shop"),
            ("POST", "/v1/accounts/shop/credits"),
            ("POST", "/v1/accounts/shop/keys"),
            ("GET", "/v1/accounts/shop/usage/"),
            ("GET", "/v1/accounts//usage"),
            ("HEAD", "/v1/accounts/shop/usage"),
            ("GET", "/v1/messages/01ABC"),
            ("GET", "/v1/balance"),
            ("PUT", "/v1/plugins/bill"),
            ("GET", "/v1/no-such-route"),
            ("GET", "/admin/v1/tenants"),
        ] {
            assert!(!allowed(&a, m, p), "{m} {p}");
        }
        let t = owner(KeyScope::Tenant);
        assert!(ROUTES.iter().all(|r| allowed(&t, r.method, r.path)));
    }

    #[test]
    fn every_own_account_route_names_the_account_as_id() {
        for r in ROUTES.iter().filter(|r| r.access == Access::OwnAccount) {
            assert!(r.path.starts_with("/v1/accounts/{id}/"), "{r:?}");
        }
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{r:?} twice");
        }
    }

    /// The table lists every tenant route the routers register: a route missing here
    /// would still be refused to an account's key, but also left out of the test that
    /// walks the table through the real binary.
    #[test]
    fn the_table_lists_every_tenant_route_the_routers_register() {
        // Every module of `serve` and of its subdirectories (`portal/`), so a router in
        // a new file is read too.
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    out.push(std::fs::read_to_string(path).unwrap());
                }
            }
        }
        let mut sources = Vec::new();
        walk(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/serve")),
            &mut sources,
        );
        let mut registered = 0;
        for text in &sources {
            for (at, _) in text.match_indices(".route(") {
                let rest = text[at..].trim_start_matches(".route(").trim_start();
                let Some(path) = rest
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
                    .filter(|p| p.starts_with("/v1/"))
                else {
                    continue;
                };
                registered += 1;
                assert!(
                    ROUTES.iter().any(|r| r.path == path),
                    "{path} is registered but not in auth::ROUTES"
                );
            }
        }
        assert!(registered >= 15, "{registered} routes read");
    }
}
