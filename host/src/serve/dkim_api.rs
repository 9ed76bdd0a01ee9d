//! A tenant's DKIM keys over HTTP (issue 23): `POST /v1/domains/{domain}/dkim` makes a
//! key and answers its selector and the DNS record to publish; `GET` lists a domain's
//! keys; `…/{selector}/activate` makes one the key that signs (rotation: publish a new
//! key, wait for DNS, activate it, delete the old one once mail signed with it has
//! arrived); `DELETE …/{selector}` removes an inactive one.
//!
//! Hostile by default: the domain is a DNS name (`dkim::keys::normalize_domain`) among
//! the tenant's own allowed sender domains (named by an entry: `example.com` or
//! `*.example.com`, never by `*` alone, which lets a tenant send as anyone but is no claim
//! to a domain); every store call names the tenant, so another tenant's key of the same
//! domain is `not_found`. Counts are bounded by the store (`store/dkim_keys.rs`). Key
//! generation runs off the async workers, [`MAX_GENERATING`] at a time per node.

use super::auth::AuthTenant;
use super::dto::dkim::{DkimKeyList, DkimKeyView};
use super::error::ApiError;
use super::state::{AppState, now_ms};
use crate::dkim::keys::{new_selector, normalize_domain, valid_selector};
use crate::dkim::{Algorithm, seal::Owner};
use crate::store::{NewDkimKey, StoreError, Tenant};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;

/// Keys generated at once on a node (an RSA-2048 key takes a core for 50–500 ms).
const MAX_GENERATING: usize = 2;
static GENERATING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_GENERATING);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/domains/{domain}/dkim", get(list).post(create))
        .route("/v1/domains/{domain}/dkim/{selector}", delete(remove))
        .route(
            "/v1/domains/{domain}/dkim/{selector}/activate",
            post(activate),
        )
}

/// A key to make.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    /// `ed25519` (RFC 8463; short records, not yet verified by every receiver) or
    /// `rsa-2048`.
    #[schema(example = "ed25519")]
    algorithm: String,
    /// Make it the domain's active key at once (default: only when the domain has no
    /// active key, so a new key can be published before it signs).
    #[serde(default)]
    activate: bool,
}

/// The domain of the path, checked: a DNS name the tenant's allowed domains name.
fn tenant_domain(t: &Tenant, raw: &str) -> Result<String, ApiError> {
    let domain = normalize_domain(raw).map_err(|e| ApiError::invalid("domain", e.to_string()))?;
    let own: Vec<String> = t
        .allowed_sender_domains
        .iter()
        .filter(|d| d.trim() != "*")
        .cloned()
        .collect();
    if !crate::compose::domain_allowed(&domain, &own) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{domain:?} is not among the tenant's allowed sender domains (a key is made \
                 only for a domain the tenant's list names; `*` names none)"
            ),
        )
        .field("domain"));
    }
    Ok(domain)
}

fn conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        other => other.into(),
    }
}

/// Makes a DKIM key for one of the tenant's domains; the answer says what to publish.
#[utoipa::path(post, path = "/v1/domains/{domain}/dkim", request_body = CreateBody,
    params(("domain" = String, Path, description = "one of the tenant's sender domains")),
    responses(
        (status = 201, description = "made; publish `dns` before it signs", body = DkimKeyView),
        (status = 409, description = "`conflict`: the domain has the most keys it may have, \
            or the tenant keys for the most domains; `dkim_not_configured`: the pipeline \
            names no `[dkim]` secret")))]
async fn create(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(domain): Path<String>,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<DkimKeyView>), ApiError> {
    let domain = tenant_domain(&t, &domain)?;
    let algorithm = Algorithm::parse(&body.algorithm).ok_or_else(|| {
        ApiError::invalid(
            "algorithm",
            format!(
                "{:?} is not an algorithm: ed25519 or rsa-2048",
                body.algorithm.chars().take(40).collect::<String>()
            ),
        )
    })?;
    if s.dkim.sealer().is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "dkim_not_configured",
            "DKIM keys need the pipeline's [dkim] key_env or key_file (the secret they are \
             sealed with); ask the platform's operator",
        ));
    }
    let pair = {
        let _turn = GENERATING.acquire().await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "stopping")
        })?;
        tokio::task::spawn_blocking(move || crate::dkim::generate(algorithm))
            .await
            .map_err(|e| anyhow::anyhow!("key generation stopped: {e}"))?
            .map_err(anyhow::Error::from)?
    };
    let now = now_ms();
    let selector = new_selector(now);
    let sealed = s.dkim.sealer().expect("checked above").seal(
        &pair.private_der,
        Owner {
            tenant: &t.id,
            domain: &domain,
            selector: &selector,
        },
    );
    let key = s
        .store
        .create_dkim_key(
            NewDkimKey {
                tenant_id: t.id.clone(),
                domain: domain.clone(),
                selector,
                algorithm,
                public_key: base64::engine::general_purpose::STANDARD.encode(&pair.public),
                private_key_sealed: sealed,
                activate: body.activate,
            },
            now,
        )
        .await
        .map_err(conflict)?;
    s.dkim.forget(&t.id, &domain);
    Ok((StatusCode::CREATED, Json(DkimKeyView::from(&key))))
}

/// The tenant's keys of a domain, oldest first, with their DNS records.
#[utoipa::path(get, path = "/v1/domains/{domain}/dkim",
    params(("domain" = String, Path, description = "one of the tenant's sender domains")),
    responses((status = 200, description = "the keys", body = DkimKeyList)))]
async fn list(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path(domain): Path<String>,
) -> Result<Json<DkimKeyList>, ApiError> {
    let domain = tenant_domain(&t, &domain)?;
    let keys = s.store.list_dkim_keys(&t.id, Some(&domain)).await?;
    Ok(Json(DkimKeyList {
        keys: keys.iter().map(DkimKeyView::from).collect(),
    }))
}

fn selector_of(raw: &str) -> Result<&str, ApiError> {
    if valid_selector(raw) {
        Ok(raw)
    } else {
        Err(ApiError::not_found("no such DKIM selector"))
    }
}

/// Makes a key the one that signs the domain's mail (the active one before stays
/// published and listed, inactive).
#[utoipa::path(post, path = "/v1/domains/{domain}/dkim/{selector}/activate",
    params(("domain" = String, Path, description = "one of the tenant's sender domains"),
        ("selector" = String, Path, description = "a selector of the domain's keys")),
    responses((status = 200, description = "now active", body = DkimKeyView)))]
async fn activate(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path((domain, selector)): Path<(String, String)>,
) -> Result<Json<DkimKeyView>, ApiError> {
    let domain = tenant_domain(&t, &domain)?;
    let selector = selector_of(&selector)?;
    let key = s
        .store
        .activate_dkim_key(&t.id, &domain, selector, now_ms())
        .await?;
    s.dkim.forget(&t.id, &domain);
    Ok(Json(DkimKeyView::from(&key)))
}

/// Deletes an inactive key (the active one: 409; activate another first).
#[utoipa::path(delete, path = "/v1/domains/{domain}/dkim/{selector}",
    params(("domain" = String, Path, description = "one of the tenant's sender domains"),
        ("selector" = String, Path, description = "a selector of the domain's keys")),
    responses((status = 204, description = "deleted"),
        (status = 409, description = "`conflict`: it is the active key")))]
async fn remove(
    State(s): State<AppState>,
    AuthTenant(t): AuthTenant,
    Path((domain, selector)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let domain = tenant_domain(&t, &domain)?;
    let selector = selector_of(&selector)?;
    s.store
        .delete_dkim_key(&t.id, &domain, selector)
        .await
        .map_err(conflict)?;
    Ok(StatusCode::NO_CONTENT)
}
