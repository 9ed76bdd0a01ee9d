//! The admin API (`/admin/v1/…`, bearer = the admin token): relays,
//! tenants and their keys, the exception queue, and the nodes on the store.
//! Changes take effect without a restart.

use super::auth::Admin;
use super::dto::admin::{
    FailedList, KeyList, KeyView, NewKey, NodeList, NodeView, RelayDetail, RelayList, RelayLive,
    RelayView, TenantList, TenantView,
};
use super::error::ApiError;
use super::state::AppState;
use super::state::now_ms;
use crate::config::SecretRef;
use crate::relay_spec::{
    DEFAULT_CONNECTION_LIMIT, DEFAULT_WEIGHT, PLATFORM_POOL, TLS_CA_WITHOUT_TLS, check_relay_url,
    default_tags, invalid_id_message, no_pool_message, relay_url_uses_tls, tags_reach_a_pool,
};
use crate::store::{NewRelay, NewTenant, RelayState, RelayUpdate, TenantUpdate};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/relays", get(list_relays).post(create_relay))
        .route(
            "/admin/v1/relays/{id}",
            get(get_relay).patch(update_relay).delete(delete_relay),
        )
        .route("/admin/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/admin/v1/tenants/{id}",
            get(get_tenant).patch(update_tenant),
        )
        .route(
            "/admin/v1/tenants/{id}/keys",
            get(list_keys).post(create_key),
        )
        .route("/admin/v1/tenants/{id}/keys/{key_id}", delete(revoke_key))
        .route("/admin/v1/nodes", get(list_nodes))
        .route("/admin/v1/failed", get(list_failed))
        .route("/admin/v1/failed/{message_id}/{idx}/requeue", post(requeue))
        .merge(super::tenant_plugins::admin_routes())
}

fn secret_ref(env: Option<String>, file: Option<String>) -> Result<Option<String>, ApiError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "auth_password_env",
            "give auth_password_env or auth_password_file, not both",
        )),
        (Some(e), None) => Ok(Some(SecretRef::Env(e).reference())),
        (None, Some(f)) => Ok(Some(SecretRef::File(f.into()).reference())),
        (None, None) => Ok(None),
    }
}

fn valid_id(field: &str, id: &str) -> Result<(), ApiError> {
    if crate::relay_spec::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(field, invalid_id_message(id)))
    }
}

/// A relay as the admin API takes it. Passwords are never sent: name where
/// the server reads them.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RelayBody {
    id: String,
    url: String,
    auth_user: Option<String>,
    auth_password_env: Option<String>,
    auth_password_file: Option<String>,
    #[serde(default = "default_connection_limit")]
    connection_limit: u32,
    rate_limit_per_sec: Option<u32>,
    #[serde(default = "default_weight")]
    weight: u32,
    /// Left out: `["pool:platform"]` for a platform relay (see [`relay_tags`]).
    tags: Option<Vec<String>>,
    owner: Option<String>,
    /// A PEM file of CA certificates, on each host, trusted for this relay instead of
    /// the public roots.
    tls_ca_file: Option<String>,
}

/// A relay's tags as stored (`relay_spec::default_tags`): a platform relay given none joins
/// the platform pool; one whose tags put it in no pool (no `pool:…` tag, none a tenant
/// lists) is refused, saying how.
async fn relay_tags(
    s: &AppState,
    owner: Option<&str>,
    tags: Option<Vec<String>>,
) -> Result<Vec<String>, ApiError> {
    let tags = default_tags(owner.is_some(), tags);
    if owner.is_some() {
        return Ok(tags);
    }
    let tenants = s.store.list_tenants().await?;
    let pools = tenants
        .iter()
        .flat_map(|t| t.pools.iter().map(String::as_str));
    if tags_reach_a_pool(&tags, pools) {
        Ok(tags)
    } else {
        Err(ApiError::invalid("tags", no_pool_message(&tags)))
    }
}

fn default_connection_limit() -> u32 {
    DEFAULT_CONNECTION_LIMIT
}
fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// A change of a relay: what is left out stays.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RelayPatch {
    url: Option<String>,
    weight: Option<u32>,
    connection_limit: Option<u32>,
    /// `null` removes the limit.
    #[schema(value_type = Option<u32>)]
    rate_limit_per_sec: Option<Option<u32>>,
    tags: Option<Vec<String>>,
    /// "active" or "draining"
    state: Option<String>,
    /// `null` goes back to the public roots.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    tls_ca_file: Option<Option<String>>,
}

/// A field given as `null` is `Some(None)`, one left out `None` (with `#[serde(default)]`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Checks a relay's CA file (readable PEM certificates, its URL speaking TLS): a 422
/// naming the field and the file, never quoting what the file holds.
fn check_tls_ca(url: &str, file: Option<&str>) -> Result<(), ApiError> {
    let Some(file) = file else {
        return Ok(());
    };
    if !relay_url_uses_tls(url) {
        return Err(ApiError::invalid("tls_ca_file", TLS_CA_WITHOUT_TLS));
    }
    crate::relay::check_ca_file(std::path::Path::new(file))
        .map_err(|e| ApiError::invalid("tls_ca_file", e))
}

/// The relays, with what this node's clients of them know now.
#[utoipa::path(get, path = "/admin/v1/relays",
    responses((status = 200, description = "the relays", body = RelayList)))]
async fn list_relays(State(s): State<AppState>, _: Admin) -> Result<Json<RelayList>, ApiError> {
    let relays = s.store.list_relays().await?;
    let relays = relays.into_iter().map(|r| detail(&s, r)).collect();
    Ok(Json(RelayList { relays }))
}

/// A relay with what this host's client of it knows now: recipients in flight, whether
/// it is up, whether its transactions are pipelined (`null` before its first connection).
fn live(s: &AppState, r: crate::store::Relay) -> RelayLive {
    let client = s.relays.get(&r.id);
    RelayLive {
        in_flight: client.as_ref().map_or(0, |c| c.in_flight()),
        up: client.as_ref().is_some_and(|c| c.is_up()),
        pipelining: client.as_ref().and_then(|c| c.pipelining()),
        relay: r.into(),
    }
}

/// A relay, live, with the windows its route plugin sees.
#[utoipa::path(get, path = "/admin/v1/relays/{id}",
    responses((status = 200, description = "the relay", body = RelayDetail)))]
async fn get_relay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<RelayDetail>, ApiError> {
    let r = s
        .store
        .get_relay(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("relay {id:?}")))?;
    Ok(Json(detail(&s, r)))
}

/// A relay, live, with the windows its route plugin sees (refreshed every second from
/// the store's stat buckets, so the same on every node).
fn detail(s: &AppState, r: crate::store::Relay) -> RelayDetail {
    let windows = s
        .stats
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&r.id)
        .cloned()
        .unwrap_or_default();
    let live = live(s, r);
    RelayDetail { live, windows }
}

/// Adds a relay (used at once; a platform relay given no tags joins `pool:platform`).
#[utoipa::path(post, path = "/admin/v1/relays", request_body = RelayBody,
    responses((status = 201, description = "the relay as stored", body = RelayView)))]
async fn create_relay(
    State(s): State<AppState>,
    _: Admin,
    Json(b): Json<RelayBody>,
) -> Result<(StatusCode, Json<RelayView>), ApiError> {
    valid_id("id", &b.id)?;
    check_relay_url(&b.url).map_err(|e| ApiError::invalid("url", e))?;
    if b.connection_limit == 0 {
        return Err(ApiError::invalid("connection_limit", "must be at least 1"));
    }
    check_tls_ca(&b.url, b.tls_ca_file.as_deref())?;
    if let Some(owner) = &b.owner
        && s.store.get_tenant(owner).await?.is_none()
    {
        return Err(ApiError::invalid("owner", format!("no tenant {owner:?}")));
    }
    let tags = relay_tags(&s, b.owner.as_deref(), b.tags).await?;
    if s.store.get_relay(&b.id).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("relay {:?} already exists; PATCH it", b.id),
        )
        .field("id"));
    }
    let relay = s
        .store
        .upsert_relay(
            NewRelay {
                id: b.id,
                url: b.url,
                auth_user: b.auth_user,
                auth_secret_ref: secret_ref(b.auth_password_env, b.auth_password_file)?,
                connection_limit: b.connection_limit,
                rate_limit_per_sec: b.rate_limit_per_sec,
                weight: b.weight,
                tags,
                owner: b.owner,
                state: RelayState::Active,
                tls_ca_file: b.tls_ca_file,
            },
            now_ms(),
        )
        .await?;
    s.sync_relays().await?;
    // Mail deferred because no relay was there (or up) need not wait out its delay.
    let woken = s.store.wake_waiting_for_relay(&relay.id, now_ms()).await?;
    if woken > 0 {
        tracing::info!(relay = %relay.id, woken, "a new relay: deferred work waiting for one is due now");
        s.wake.notify_one();
    }
    Ok((StatusCode::CREATED, Json(relay.into())))
}

/// Changes a relay (`state: draining` finishes its work and takes no new).
#[utoipa::path(patch, path = "/admin/v1/relays/{id}", request_body = RelayPatch,
    responses((status = 200, description = "the relay as stored", body = RelayView)))]
async fn update_relay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(p): Json<RelayPatch>,
) -> Result<Json<RelayView>, ApiError> {
    if let Some(url) = &p.url {
        check_relay_url(url).map_err(|e| ApiError::invalid("url", e))?;
    }
    let state = match p.state.as_deref() {
        None => None,
        Some("active") => Some(RelayState::Active),
        Some("draining") => Some(RelayState::Draining),
        Some(other) => {
            return Err(ApiError::invalid(
                "state",
                format!("{other:?} is neither \"active\" nor \"draining\""),
            ));
        }
    };
    if p.connection_limit == Some(0) {
        return Err(ApiError::invalid("connection_limit", "must be at least 1"));
    }
    // The stored relay, when the update needs it: its owner for tags, its URL and
    // CA file to check a new URL or file against.
    let stored = if p.tags.is_some() || p.url.is_some() || p.tls_ca_file.is_some() {
        Some(
            s.store
                .get_relay(&id)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("relay {id:?}")))?,
        )
    } else {
        None
    };
    let tags = match (p.tags, &stored) {
        (Some(tags), Some(relay)) => {
            Some(relay_tags(&s, relay.owner.as_deref(), Some(tags)).await?)
        }
        _ => None,
    };
    if let Some(stored) = &stored
        && (p.url.is_some() || p.tls_ca_file.is_some())
    {
        // The file and the URL are checked together, as the relay will be.
        let url = p.url.as_deref().unwrap_or(&stored.url);
        let file = match &p.tls_ca_file {
            Some(f) => f.as_deref(),
            None => stored.tls_ca_file.as_deref(),
        };
        check_tls_ca(url, file)?;
    }
    let update = RelayUpdate {
        url: p.url,
        connection_limit: p.connection_limit,
        rate_limit_per_sec: p.rate_limit_per_sec,
        weight: p.weight,
        tags,
        state,
        tls_ca_file: p.tls_ca_file,
        ..RelayUpdate::default()
    };
    let relay = s.store.update_relay(&id, update).await?;
    s.sync_relays().await?;
    Ok(Json(relay.into()))
}

/// Removes a relay.
#[utoipa::path(delete, path = "/admin/v1/relays/{id}",
    responses((status = 204, description = "removed")))]
async fn delete_relay(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !s.store.delete_relay(&id).await? {
        return Err(ApiError::not_found(format!("relay {id:?}")));
    }
    s.sync_relays().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new tenant.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    id: String,
    name: Option<String>,
    #[serde(default)]
    allowed_sender_domains: Vec<String>,
    #[serde(default = "platform_pool")]
    pools: Vec<String>,
    route_plugin: Option<String>,
    header_from_check: Option<bool>,
}

fn platform_pool() -> Vec<String> {
    vec![PLATFORM_POOL.into()]
}

/// A change of a tenant: what is left out stays.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TenantPatch {
    name: Option<String>,
    allowed_sender_domains: Option<Vec<String>>,
    pools: Option<Vec<String>>,
    /// `null`: back to the platform's route plugin.
    #[schema(value_type = Option<String>)]
    route_plugin: Option<Option<String>>,
    header_from_check: Option<bool>,
}

fn check_route_plugin(name: Option<&str>) -> Result<(), ApiError> {
    match name.map(crate::builtin::by_name) {
        None
        | Some(Some(crate::builtin::Builtin {
            stage: crate::stage::Stage::Route,
            ..
        })) => Ok(()),
        Some(_) => Err(ApiError::invalid(
            "route_plugin",
            format!(
                "{:?} is not a default route plugin",
                name.unwrap_or_default()
            ),
        )),
    }
}

/// The tenants.
#[utoipa::path(get, path = "/admin/v1/tenants",
    responses((status = 200, description = "the tenants", body = TenantList)))]
async fn list_tenants(State(s): State<AppState>, _: Admin) -> Result<Json<TenantList>, ApiError> {
    let tenants = s.store.list_tenants().await?;
    Ok(Json(TenantList {
        tenants: tenants.into_iter().map(TenantView::from).collect(),
    }))
}

/// A tenant.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}",
    responses((status = 200, description = "the tenant", body = TenantView)))]
async fn get_tenant(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    let t = s
        .store
        .get_tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tenant {id:?}")))?;
    Ok(Json(t.into()))
}

/// Adds a tenant (in `pool:platform` unless it names its pools).
#[utoipa::path(post, path = "/admin/v1/tenants", request_body = TenantBody,
    responses((status = 201, description = "the tenant as stored", body = TenantView)))]
async fn create_tenant(
    State(s): State<AppState>,
    _: Admin,
    Json(b): Json<TenantBody>,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    valid_id("id", &b.id)?;
    check_route_plugin(b.route_plugin.as_deref())?;
    let t = s
        .store
        .create_tenant(
            NewTenant {
                name: b.name.unwrap_or_else(|| b.id.clone()),
                id: b.id,
                allowed_sender_domains: b.allowed_sender_domains,
                pools: b.pools,
                route_plugin: b.route_plugin,
                header_from_check: b.header_from_check.unwrap_or(true),
            },
            now_ms(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(t.into())))
}

/// Changes a tenant.
#[utoipa::path(patch, path = "/admin/v1/tenants/{id}", request_body = TenantPatch,
    responses((status = 200, description = "the tenant as stored", body = TenantView)))]
async fn update_tenant(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Json(p): Json<TenantPatch>,
) -> Result<Json<TenantView>, ApiError> {
    if let Some(rp) = &p.route_plugin {
        check_route_plugin(rp.as_deref())?;
    }
    let t = s
        .store
        .update_tenant(
            &id,
            TenantUpdate {
                name: p.name,
                allowed_sender_domains: p.allowed_sender_domains,
                pools: p.pools,
                route_plugin: p.route_plugin,
                header_from_check: p.header_from_check,
            },
        )
        .await?;
    s.forget_keys();
    Ok(Json(t.into()))
}

/// A tenant's API keys, revoked ones too, without secrets.
#[utoipa::path(get, path = "/admin/v1/tenants/{id}/keys",
    responses((status = 200, description = "the keys", body = KeyList)))]
async fn list_keys(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<KeyList>, ApiError> {
    tenant_keys(&s, &id).await.map(Json)
}

/// A tenant's keys as the API lists them (the portal's keys page too).
pub(super) async fn tenant_keys(s: &AppState, tenant: &str) -> Result<KeyList, ApiError> {
    let keys = s.store.list_api_keys(tenant).await?;
    Ok(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    })
}

/// Makes a key for a tenant; its secret is shown this once.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/keys",
    responses((status = 201, description = "the key and its secret", body = NewKey)))]
async fn create_key(
    State(s): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NewKey>), ApiError> {
    if s.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("tenant {id:?}")));
    }
    Ok((StatusCode::CREATED, Json(issue_key(&s, &id).await?)))
}

/// Makes a key of a tenant there is; its secret is in the answer only (the portal's
/// keys page makes its keys here too).
pub(super) async fn issue_key(s: &AppState, tenant: &str) -> Result<NewKey, ApiError> {
    let (info, secret) = s.store.create_api_key(tenant, now_ms()).await?;
    Ok(NewKey {
        info: info.into(),
        key: secret,
        note: "the key is shown this once; only its hash is stored",
    })
}

/// Revokes a key (on every node within seconds).
#[utoipa::path(delete, path = "/admin/v1/tenants/{id}/keys/{key_id}",
    responses((status = 204, description = "revoked")))]
async fn revoke_key(
    State(s): State<AppState>,
    _: Admin,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    revoke_tenant_key(&s, &id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a live key of a tenant (another tenant's is a 404), forgetting the keys
/// cached on this node; the portal's revoke button does the same.
pub(super) async fn revoke_tenant_key(
    s: &AppState,
    tenant: &str,
    key_id: &str,
) -> Result<(), ApiError> {
    if !s.store.revoke_api_key(tenant, key_id, now_ms()).await? {
        return Err(ApiError::not_found(format!(
            "live key {key_id:?} of tenant {tenant:?}"
        )));
    }
    s.forget_keys();
    Ok(())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Limit {
    /// At most this many (default 100, at most 10,000).
    limit: Option<u32>,
}

/// The exception queue: failed and expired recipients, oldest change first.
#[utoipa::path(get, path = "/admin/v1/failed", params(Limit),
    responses((status = 200, description = "the recipients", body = FailedList)))]
async fn list_failed(
    State(s): State<AppState>,
    _: Admin,
    Query(q): Query<Limit>,
) -> Result<Json<FailedList>, ApiError> {
    let failed = s
        .store
        .list_failed(q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(Json(FailedList {
        failed: failed.into_iter().map(Into::into).collect(),
    }))
}

/// Puts a failed or expired recipient back in the queue, due now.
#[utoipa::path(post, path = "/admin/v1/failed/{message_id}/{idx}/requeue",
    params(("idx" = i32, Path, description = "the recipient's `recipient_idx`")),
    responses((status = 204, description = "queued again")))]
async fn requeue(
    State(s): State<AppState>,
    _: Admin,
    Path((message_id, idx)): Path<(String, i32)>,
) -> Result<StatusCode, ApiError> {
    if !s.store.requeue(&message_id, idx, now_ms()).await? {
        return Err(ApiError::not_found(format!(
            "failed or expired recipient {idx} of message {message_id:?}"
        )));
    }
    s.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// The nodes on the store: alive, dead or stopped, the leader, leases held.
#[utoipa::path(get, path = "/admin/v1/nodes",
    responses((status = 200, description = "the nodes", body = NodeList)))]
async fn list_nodes(State(s): State<AppState>, _: Admin) -> Result<Json<NodeList>, ApiError> {
    let now = now_ms();
    let leader = s.store.leader(now).await?.map(|l| l.node_id);
    let dead_after_ms = s.node.dead_after.as_millis() as i64;
    let nodes: Vec<NodeView> = s
        .store
        .list_nodes(now)
        .await?
        .into_iter()
        .map(|n| NodeView {
            leader: leader.as_deref() == Some(n.id.as_str()),
            state: if n.stopped_at_ms.is_some() {
                "stopped"
            } else if now - n.heartbeat_at_ms > dead_after_ms {
                "dead"
            } else {
                "alive"
            },
            heartbeat_age_ms: (now - n.heartbeat_at_ms).max(0),
            id: n.id,
            address: n.address,
            started_at_ms: n.started_at_ms,
            last_heartbeat_at_ms: n.heartbeat_at_ms,
            leases_held: n.leases_held,
        })
        .collect();
    Ok(Json(NodeList {
        this_node: s.node.id.clone(),
        leader,
        heartbeat_ms: s.node.heartbeat.as_millis() as u64,
        dead_after_ms,
        nodes,
    }))
}
