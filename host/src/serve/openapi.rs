//! The API contract (issue 22): an OpenAPI 3.1 document of the tenant API (`/v1/…`),
//! the admin API (`/admin/v1/…`) and the unauthenticated routes, generated from the
//! code — each handler's `#[utoipa::path]` (method, path, body, query, success answers)
//! and the wire types of `dto/` — served at `GET /openapi.json` and committed as
//! `openapi.json` at the repository root (`sluice openapi > openapi.json`, or
//! `UPDATE_EXPECT=1 cargo test -p sluice --lib openapi`).
//!
//! Adding a route: annotate its handler with `#[utoipa::path(…)]`, name the handler in
//! [`ApiDoc`]'s `paths(…)` below (the one list), and regenerate the committed copy. What
//! every operation shares is added here once, by [`Conventions`], so that no annotation
//! repeats it: its security scheme (by prefix), its tag and `operationId` (from its
//! path), the path parameters it does not describe itself, and its error answers (the
//! JSON error body of `error.rs`) by what it takes.
//!
//! Invariants (tests below):
//! - Every route a router of `serve` registers is in the document with its method, and
//!   the document has no route the routers do not register.
//! - The committed `openapi.json` is the generated document, byte for byte.

use super::api::AppState;
use super::dto::ErrorBody;
use super::{
    accounts_api, admin, api, billing_api, dkim_api, events_api, metrics_http, queue_api, retry,
    suppressions, tenant_plugins, webhooks_api,
};
use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, Parameter, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, Required, ResponseBuilder, Type};

/// The document's one list of operations (see the module doc for adding one).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice",
        description = "A mail pipeline whose stages are sandboxed WebAssembly plugins. \
            The tenant API (`/v1/…`) takes a tenant's key (or, for a few routes, one of its \
            accounts' keys) as `Authorization: Bearer …`; the admin API (`/admin/v1/…`) takes \
            the admin token. Every error answer is the JSON body `ErrorBody`."
    ),
    paths(
        document,
        api::healthz,
        api::readyz,
        api::submit,
        api::get_message,
        queue_api::list_messages,
        queue_api::tenant_hold,
        queue_api::tenant_release,
        queue_api::tenant_cancel,
        retry::tenant_retry,
        retry::tenant_retry_message,
        tenant_plugins::tenant_list,
        tenant_plugins::tenant_upload,
        tenant_plugins::tenant_activate,
        tenant_plugins::tenant_rollback,
        tenant_plugins::tenant_logs,
        suppressions::tenant_list,
        suppressions::tenant_add,
        suppressions::tenant_delete,
        dkim_api::list,
        dkim_api::create,
        dkim_api::remove,
        dkim_api::activate,
        billing_api::usage,
        billing_api::invoice,
        billing_api::balance,
        accounts_api::list,
        accounts_api::create,
        accounts_api::get_one,
        accounts_api::update,
        accounts_api::remove,
        accounts_api::usage,
        accounts_api::invoice,
        accounts_api::balance,
        accounts_api::credit,
        accounts_api::list_keys,
        accounts_api::create_key,
        accounts_api::revoke_key,
        accounts_api::get_account_billing,
        accounts_api::put_account_billing,
        events_api::list,
        events_api::stream,
        webhooks_api::t_list,
        webhooks_api::t_create,
        webhooks_api::t_get,
        webhooks_api::t_update,
        webhooks_api::t_delete,
        webhooks_api::t_rotate,
        webhooks_api::t_test,
        webhooks_api::t_replay,
        webhooks_api::t_attempts,
        admin::list_relays,
        admin::create_relay,
        admin::get_relay,
        admin::update_relay,
        admin::delete_relay,
        retry::admin_retry_relay,
        admin::list_tenants,
        admin::create_tenant,
        admin::get_tenant,
        admin::update_tenant,
        admin::list_keys,
        admin::create_key,
        admin::revoke_key,
        retry::admin_retry_tenant,
        admin::list_nodes,
        queue_api::admin_queue,
        queue_api::admin_hold,
        queue_api::admin_release,
        queue_api::admin_cancel,
        queue_api::suspend_tenant,
        queue_api::resume_tenant,
        queue_api::suspend_relay,
        queue_api::resume_relay,
        admin::list_failed,
        admin::requeue,
        retry::admin_retry,
        tenant_plugins::admin_list,
        tenant_plugins::admin_upload,
        tenant_plugins::admin_activate,
        tenant_plugins::admin_rollback,
        tenant_plugins::admin_logs,
        suppressions::admin_list,
        suppressions::admin_add,
        suppressions::admin_delete,
        billing_api::unrated,
        billing_api::get_billing,
        billing_api::put_billing,
        billing_api::credit,
        webhooks_api::a_list,
        webhooks_api::a_create,
        webhooks_api::a_get,
        webhooks_api::a_update,
        webhooks_api::a_delete,
        webhooks_api::a_rotate,
        webhooks_api::a_test,
        webhooks_api::a_replay,
        webhooks_api::a_attempts,
        metrics_http::scrape,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions)
)]
pub struct ApiDoc;

/// The security schemes' names.
const TENANT_KEY: &str = "tenant_key";
const ADMIN_TOKEN: &str = "admin_token";

/// What every operation shares (module doc).
struct Conventions;

impl utoipa::Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            let mut http = Http::new(HttpAuthScheme::Bearer);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        components.add_security_scheme(
            TENANT_KEY,
            bearer(
                "A tenant's API key (`POST /admin/v1/tenants/{id}/keys`, or printed at the \
                 first start); an account's key (`POST /v1/accounts/{id}/keys`) may call only \
                 `POST /v1/messages` and its own account's usage, invoices and balance",
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            bearer(
                "The admin token (`[admin] token_env`/`token_file`, or made and printed once \
                 at the first start)",
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ] {
                if let Some(op) = op {
                    conventions(path, method, op);
                }
            }
        }
    }
}

/// The security scheme of a path, by its prefix; `None`: no credentials.
fn scheme(path: &str) -> Option<&'static str> {
    if path.starts_with("/v1/") {
        Some(TENANT_KEY)
    } else if path.starts_with("/admin/") || path == "/metrics" {
        Some(ADMIN_TOKEN)
    } else {
        None
    }
}

fn conventions(path: &str, method: &str, op: &mut Operation) {
    // Unique and stable: `get_v1_messages_id` for `GET /v1/messages/{id}`.
    let words: Vec<&str> = path
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    op.operation_id = Some(format!("{method}_{}", words.join("_")));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let tag = match segments.as_slice() {
        ["v1", area, ..] => (*area).to_owned(),
        ["admin", "v1", area, ..] => format!("admin {area}"),
        _ => "operations".to_owned(),
    };
    // In place of utoipa's default tag (the handler's module).
    op.tags = Some(vec![tag]);
    let scheme = scheme(path);
    if op.security.is_none() {
        op.security = Some(match scheme {
            Some(s) => vec![SecurityRequirement::new::<_, [&str; 0], &str>(s, [])],
            None => Vec::new(),
        });
    }
    let params = op.parameters.get_or_insert_with(Vec::new);
    for name in segments
        .iter()
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
    {
        let described = params.iter().any(|p| match p {
            utoipa::openapi::RefOr::T(p) => p.name == name && p.parameter_in == ParameterIn::Path,
            utoipa::openapi::RefOr::Ref(_) => false,
        });
        if !described {
            let mut p = Parameter::new(name);
            p.parameter_in = ParameterIn::Path;
            p.required = Required::True;
            p.schema = Some(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(Type::String)
                    .into(),
            );
            params.push(p.into());
        }
    }
    // Path parameters that mean one thing wherever they appear.
    for p in params.iter_mut() {
        let utoipa::openapi::RefOr::T(p) = p else {
            continue;
        };
        if p.parameter_in != ParameterIn::Path {
            continue;
        }
        match p.name.as_str() {
            "stage" => {
                p.schema = Some(
                    super::dto::enum_of(
                        &crate::stage::Stage::ALL,
                        "a pipeline stage (another name: 404)",
                    )
                    .into(),
                );
            }
            "period" => {
                p.schema = Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[0-9]{4}-[0-9]{2}$"))
                        .description(Some("a calendar month, `YYYY-MM` (UTC)"))
                        .into(),
                );
            }
            _ => {}
        }
    }
    let has_query = params.iter().any(|p| match p {
        utoipa::openapi::RefOr::T(p) => p.parameter_in == ParameterIn::Query,
        utoipa::openapi::RefOr::Ref(_) => false,
    });
    if params.is_empty() {
        op.parameters = None;
    }
    let mut errors: Vec<(&str, &str)> = Vec::new();
    if op.request_body.is_some() || has_query {
        errors.push((
            "400",
            "`bad_json` (a body that is not JSON) or `bad_request` (a bad query or path)",
        ));
        errors.push((
            "422",
            "`invalid` (and the route's own codes): a value refused, `field` names it",
        ));
    }
    if op.request_body.is_some() {
        errors.push(("413", "`too_large`: the body is over the limit"));
        errors.push((
            "415",
            "`unsupported_media_type`: a missing or wrong `Content-Type`",
        ));
    }
    if scheme.is_some() {
        errors.push(("401", "`unauthorized`: no bearer token, or an unknown one"));
    }
    if scheme == Some(TENANT_KEY) {
        errors.push((
            "403",
            "`forbidden`: an account's key, on a route its account may not call",
        ));
        errors.push((
            "429",
            "`too_many_requests_in_flight`, `accept_rate_exceeded` (admission; `limit` names \
             the key, `Retry-After` says when), or the route's own limit",
        ));
    }
    if path.contains('{') {
        errors.push(("404", "`not_found`: nothing of this tenant has that name"));
    }
    errors.push((
        "503",
        "`store_unavailable`, `store_outcome_unknown` (with `Retry-After`), or the route's own",
    ));
    errors.push((
        "default",
        "any other error answer (`internal`, `method_not_allowed`, …)",
    ));
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(format!("The JSON error body: {description}"))
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document is plain data");
    text.push('\n');
    text
}

/// `GET /openapi.json` (no credentials), merged into the router by `serve`'s `run`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}

/// This API's contract.
#[utoipa::path(get, path = "/openapi.json",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
async fn document() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let text = DOC.get_or_init(json).as_str();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The Rust sources under `dir`, its subdirectories' too (the portal's `portal/`).
    fn sources(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    /// Whether a path is one of the portal's HTML pages (`portal/`), which are not the
    /// API and not in its contract.
    fn is_page(route: &str) -> bool {
        ["/ui", "/admin/ui"]
            .iter()
            .any(|p| route == *p || route.starts_with(&format!("{p}/")))
    }

    /// `(METHOD, path)` of every route the routers of `serve` register, read from
    /// their source (as `auth.rs`'s test reads them): `.route("PATH", get(a).post(b))`.
    /// With `pages`, the portal's pages are included.
    fn registered_with(pages: bool) -> BTreeSet<(String, String)> {
        let mut texts = Vec::new();
        sources(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/serve")),
            &mut texts,
        );
        let mut out = BTreeSet::new();
        for text in &texts {
            for (at, _) in text.match_indices(".route(") {
                let rest = text[at + ".route(".len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let Some((route, rest)) = rest.split_once('"') else {
                    continue;
                };
                if !route.starts_with('/') || is_page(route) != pages {
                    continue;
                }
                // The arguments up to the `.route(`'s closing parenthesis.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '(' => depth += 1,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(rest.len(), |(i, _)| i);
                let args = &rest[..end];
                for method in ["get", "post", "put", "patch", "delete"] {
                    let called = args.match_indices(&format!("{method}(")).any(|(i, _)| {
                        i == 0 || !args[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    if called {
                        out.insert((method.to_uppercase(), route.to_owned()));
                    }
                }
            }
        }
        out
    }

    fn registered() -> BTreeSet<(String, String)> {
        registered_with(false)
    }

    /// The portal's pages are read too (so the test above would see them) and left
    /// out of the contract on purpose, not by accident.
    #[test]
    fn the_portals_pages_are_read_and_are_not_in_the_document() {
        let pages = registered_with(true);
        assert!(
            pages.len() >= 10,
            "{} portal routes read: {pages:?}",
            pages.len()
        );
        assert!(pages.contains(&("POST".to_owned(), "/ui/login".to_owned())));
        let documented = documented();
        assert!(
            documented.iter().all(|(_, p)| !is_page(p)),
            "a portal page is in the API contract"
        );
    }

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(&json()).unwrap();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn the_document_has_every_route_the_routers_register_and_no_other() {
        let registered = registered();
        let documented = documented();
        assert!(registered.len() >= 80, "{} routes read", registered.len());
        let missing: Vec<_> = registered.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "registered but not in the OpenAPI document (annotate the handler with \
             #[utoipa::path] and list it in openapi::ApiDoc): {missing:?}"
        );
        let phantom: Vec<_> = documented.difference(&registered).collect();
        assert!(
            phantom.is_empty(),
            "in the document, not registered: {phantom:?}"
        );
    }

    #[test]
    fn every_operation_has_its_scheme_an_id_and_the_error_body() {
        let doc: serde_json::Value = serde_json::from_str(&json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut ids = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "{id} twice");
                let security = op["security"].to_string();
                match scheme(path) {
                    Some(s) => assert!(security.contains(s), "{method} {path}: {security}"),
                    None => assert_eq!(security, "[]", "{method} {path}"),
                }
                let error = &op["responses"]["default"]["content"]["application/json"]["schema"];
                assert_eq!(
                    error["$ref"], "#/components/schemas/ErrorBody",
                    "{method} {path}"
                );
                let successes = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|s| s.starts_with('2'))
                    .count();
                assert!(successes > 0, "{method} {path} has no success answer");
            }
        }
    }

    /// The committed copy is the generated document; `UPDATE_EXPECT=1` rewrites it
    /// (as does `sluice openapi > openapi.json`).
    #[test]
    fn the_committed_contract_is_the_generated_one() {
        let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json");
        let generated = json();
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            std::fs::write(committed, &generated).unwrap();
            return;
        }
        let on_disk = std::fs::read_to_string(committed).unwrap_or_default();
        assert!(
            on_disk == generated,
            "openapi.json differs from the document the code generates: run \
             `UPDATE_EXPECT=1 cargo test -p sluice --lib openapi` (or \
             `sluice openapi > openapi.json`) and commit it"
        );
    }
}
