//! Relays (delivery servers): upsert, read, change, delete. The AUTH secret is never
//! stored, only where to find it (`env:NAME` or `file:PATH`).

use sqlx::any::AnyRow;

use super::StoreError;
use super::codec::{
    col, get_list, get_opt_u32, get_relay_state, get_u32, list_to_text, relay_state_str,
};
use super::connect::Pools;
use super::types::{NewRelay, Relay, RelayUpdate};

const COLUMNS: &str = "id, url, auth_user, auth_secret_ref, connection_limit, rate_limit_per_sec, \
                       weight, tags, owner, state, created_at_ms, tls_ca_file";

fn from_row(row: &AnyRow, op: &str) -> Result<Relay, StoreError> {
    Ok(Relay {
        id: col(row, op, "id")?,
        url: col(row, op, "url")?,
        auth_user: col(row, op, "auth_user")?,
        auth_secret_ref: col(row, op, "auth_secret_ref")?,
        connection_limit: get_u32(row, op, "connection_limit")?,
        rate_limit_per_sec: get_opt_u32(row, op, "rate_limit_per_sec")?,
        weight: get_u32(row, op, "weight")?,
        tags: get_list(row, op, "tags")?,
        owner: col(row, op, "owner")?,
        state: get_relay_state(row, op)?,
        created_at_ms: col(row, op, "created_at_ms")?,
        tls_ca_file: col(row, op, "tls_ca_file")?,
    })
}

fn validate(op: &str, relay: &Relay) -> Result<(), StoreError> {
    let id = &relay.id;
    if id.trim().is_empty() || id.len() > 128 {
        return Err(StoreError::invalid(
            op,
            format!("relay id {id:?} must be 1 to 128 characters"),
        ));
    }
    let host = relay
        .url
        .strip_prefix("smtp://")
        .or_else(|| relay.url.strip_prefix("smtps://"));
    if host.is_none_or(|h| h.is_empty()) {
        return Err(StoreError::invalid(
            op,
            format!(
                "relay {id:?}: url {:?} must be smtp://HOST[:PORT] or smtps://HOST[:PORT]",
                relay.url
            ),
        ));
    }
    if let Some(secret_ref) = &relay.auth_secret_ref {
        let ok = ["env:", "file:"].iter().any(|p| {
            secret_ref
                .strip_prefix(p)
                .is_some_and(|rest| !rest.is_empty())
        });
        if !ok {
            // Do not echo it: someone may have pasted the secret itself.
            return Err(StoreError::invalid(
                op,
                format!("relay {id:?}: auth_secret_ref must be env:NAME or file:PATH"),
            ));
        }
    }
    if relay.connection_limit == 0 {
        return Err(StoreError::invalid(
            op,
            format!("relay {id:?}: connection_limit must be at least 1"),
        ));
    }
    if let Some(ca) = &relay.tls_ca_file {
        if ca.trim().is_empty() || ca.len() > 4096 {
            return Err(StoreError::invalid(
                op,
                format!("relay {id:?}: tls_ca_file must be a path of 1 to 4096 bytes"),
            ));
        }
        if !sluice_wire::relay_spec::relay_url_uses_tls(&relay.url) {
            return Err(StoreError::invalid(
                op,
                format!(
                    "relay {id:?}: {}",
                    sluice_wire::relay_spec::TLS_CA_WITHOUT_TLS
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) async fn upsert(pools: &Pools, new: NewRelay, now_ms: i64) -> Result<Relay, StoreError> {
    let op = "upsert_relay";
    let relay = Relay {
        id: new.id,
        url: new.url,
        auth_user: new.auth_user,
        auth_secret_ref: new.auth_secret_ref,
        connection_limit: new.connection_limit,
        rate_limit_per_sec: new.rate_limit_per_sec,
        weight: new.weight,
        tags: new.tags,
        owner: new.owner,
        state: new.state,
        created_at_ms: now_ms,
        tls_ca_file: new.tls_ca_file,
    };
    validate(op, &relay)?;
    let row = sqlx::query(&format!(
        "INSERT INTO relays ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (id) DO UPDATE SET url = excluded.url, auth_user = excluded.auth_user, \
         auth_secret_ref = excluded.auth_secret_ref, connection_limit = excluded.connection_limit, \
         rate_limit_per_sec = excluded.rate_limit_per_sec, weight = excluded.weight, \
         tags = excluded.tags, owner = excluded.owner, state = excluded.state, \
         tls_ca_file = excluded.tls_ca_file RETURNING {COLUMNS}"
    ))
    .bind(&relay.id)
    .bind(&relay.url)
    .bind(relay.auth_user.clone())
    .bind(relay.auth_secret_ref.clone())
    .bind(i64::from(relay.connection_limit))
    .bind(relay.rate_limit_per_sec.map(i64::from))
    .bind(i64::from(relay.weight))
    .bind(list_to_text(&relay.tags))
    .bind(relay.owner.clone())
    .bind(relay_state_str(relay.state))
    .bind(now_ms)
    .bind(relay.tls_ca_file.clone())
    .fetch_one(&pools.write)
    .await
    .map_err(StoreError::db(format!("{op} {:?}", relay.id)))?;
    from_row(&row, op)
}

async fn get_in<'e, E>(executor: E, id: &str, op: &str) -> Result<Option<Relay>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM relays WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?;
    row.map(|r| from_row(&r, op)).transpose()
}

pub(crate) async fn get(pools: &Pools, id: &str) -> Result<Option<Relay>, StoreError> {
    get_in(&pools.read, id, "get_relay").await
}

pub(crate) async fn list(pools: &Pools) -> Result<Vec<Relay>, StoreError> {
    let op = "list_relays";
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM relays ORDER BY id"))
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(op))?;
    rows.iter().map(|r| from_row(r, op)).collect()
}

pub(crate) async fn update(
    pools: &Pools,
    id: &str,
    update: RelayUpdate,
) -> Result<Relay, StoreError> {
    let op = "update_relay";
    let context = format!("{op} {id:?}");
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(&context))?;
    let mut relay = get_in(&mut *tx, id, op)
        .await?
        .ok_or_else(|| StoreError::not_found(op, "relay", id))?;
    let RelayUpdate {
        url,
        auth_user,
        auth_secret_ref,
        connection_limit,
        rate_limit_per_sec,
        weight,
        tags,
        owner,
        state,
        tls_ca_file,
    } = update;
    if let Some(v) = url {
        relay.url = v;
    }
    if let Some(v) = auth_user {
        relay.auth_user = v;
    }
    if let Some(v) = auth_secret_ref {
        relay.auth_secret_ref = v;
    }
    if let Some(v) = connection_limit {
        relay.connection_limit = v;
    }
    if let Some(v) = rate_limit_per_sec {
        relay.rate_limit_per_sec = v;
    }
    if let Some(v) = weight {
        relay.weight = v;
    }
    if let Some(v) = tags {
        relay.tags = v;
    }
    if let Some(v) = owner {
        relay.owner = v;
    }
    if let Some(v) = state {
        relay.state = v;
    }
    if let Some(v) = tls_ca_file {
        relay.tls_ca_file = v;
    }
    validate(op, &relay)?;
    sqlx::query(
        "UPDATE relays SET url = $2, auth_user = $3, auth_secret_ref = $4, connection_limit = $5, \
         rate_limit_per_sec = $6, weight = $7, tags = $8, owner = $9, state = $10, \
         tls_ca_file = $11 WHERE id = $1",
    )
    .bind(id)
    .bind(&relay.url)
    .bind(relay.auth_user.clone())
    .bind(relay.auth_secret_ref.clone())
    .bind(i64::from(relay.connection_limit))
    .bind(relay.rate_limit_per_sec.map(i64::from))
    .bind(i64::from(relay.weight))
    .bind(list_to_text(&relay.tags))
    .bind(relay.owner.clone())
    .bind(relay_state_str(relay.state))
    .bind(relay.tls_ca_file.clone())
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(&context))?;
    tx.commit().await.map_err(StoreError::db(&context))?;
    Ok(relay)
}

pub(crate) async fn delete(pools: &Pools, id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM relays WHERE id = $1")
        .bind(id)
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(format!("delete_relay {id:?}")))?;
    Ok(done.rows_affected() > 0)
}
