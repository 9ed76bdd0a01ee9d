//! Tenants: create, read, change, delete.

use sqlx::any::AnyRow;

use super::StoreError;
use super::codec::{col, get_list, list_to_text};
use super::connect::Pools;
use super::types::{NewTenant, Tenant, TenantUpdate};

const COLUMNS: &str =
    "id, name, allowed_sender_domains, pools, route_plugin, header_from_check, created_at_ms";

pub(crate) fn from_row(row: &AnyRow, op: &str) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: col(row, op, "id")?,
        name: col(row, op, "name")?,
        allowed_sender_domains: get_list(row, op, "allowed_sender_domains")?,
        pools: get_list(row, op, "pools")?,
        route_plugin: col(row, op, "route_plugin")?,
        header_from_check: col::<i64>(row, op, "header_from_check")? != 0,
        created_at_ms: col(row, op, "created_at_ms")?,
    })
}

fn validate(op: &str, tenant: &Tenant) -> Result<(), StoreError> {
    if tenant.id.trim().is_empty() || tenant.id.len() > 128 {
        return Err(StoreError::invalid(
            op,
            format!("tenant id {:?} must be 1 to 128 characters", tenant.id),
        ));
    }
    if tenant.name.trim().is_empty() {
        return Err(StoreError::invalid(
            op,
            format!("tenant {:?}: name must not be empty", tenant.id),
        ));
    }
    if let Some(bad) = tenant
        .allowed_sender_domains
        .iter()
        .find(|d| d.is_empty() || d.contains('@') || d.contains(char::is_whitespace))
    {
        return Err(StoreError::invalid(
            op,
            format!("tenant {:?}: {bad:?} is not a domain", tenant.id),
        ));
    }
    Ok(())
}

pub(crate) async fn create(
    pools: &Pools,
    new: NewTenant,
    now_ms: i64,
) -> Result<Tenant, StoreError> {
    let op = "create_tenant";
    let tenant = Tenant {
        id: new.id,
        name: new.name,
        allowed_sender_domains: new
            .allowed_sender_domains
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        pools: new.pools,
        route_plugin: new.route_plugin,
        header_from_check: new.header_from_check,
        created_at_ms: now_ms,
    };
    validate(op, &tenant)?;
    let done = sqlx::query(&format!(
        "INSERT INTO tenants ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
    ))
    .bind(&tenant.id)
    .bind(&tenant.name)
    .bind(list_to_text(&tenant.allowed_sender_domains))
    .bind(list_to_text(&tenant.pools))
    .bind(tenant.route_plugin.clone())
    .bind(i64::from(tenant.header_from_check))
    .bind(tenant.created_at_ms)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("{op} {:?}", tenant.id)))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::conflict(op, "tenant", &tenant.id));
    }
    Ok(tenant)
}

pub(crate) async fn get(pools: &Pools, id: &str) -> Result<Option<Tenant>, StoreError> {
    get_in(&pools.read, id, "get_tenant").await
}

async fn get_in<'e, E>(executor: E, id: &str, op: &str) -> Result<Option<Tenant>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?;
    row.map(|r| from_row(&r, op)).transpose()
}

pub(crate) async fn list(pools: &Pools) -> Result<Vec<Tenant>, StoreError> {
    let op = "list_tenants";
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants ORDER BY id"))
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(op))?;
    rows.iter().map(|r| from_row(r, op)).collect()
}

pub(crate) async fn update(
    pools: &Pools,
    id: &str,
    update: TenantUpdate,
) -> Result<Tenant, StoreError> {
    let op = "update_tenant";
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?;
    let mut tenant = get_in(&mut *tx, id, op)
        .await?
        .ok_or_else(|| StoreError::not_found(op, "tenant", id))?;
    if let Some(name) = update.name {
        tenant.name = name;
    }
    if let Some(domains) = update.allowed_sender_domains {
        tenant.allowed_sender_domains = domains
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
    }
    if let Some(pools) = update.pools {
        tenant.pools = pools;
    }
    if let Some(route_plugin) = update.route_plugin {
        tenant.route_plugin = route_plugin;
    }
    if let Some(check) = update.header_from_check {
        tenant.header_from_check = check;
    }
    validate(op, &tenant)?;
    sqlx::query(
        "UPDATE tenants SET name = $2, allowed_sender_domains = $3, pools = $4, route_plugin = $5, \
         header_from_check = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(&tenant.name)
    .bind(list_to_text(&tenant.allowed_sender_domains))
    .bind(list_to_text(&tenant.pools))
    .bind(tenant.route_plugin.clone())
    .bind(i64::from(tenant.header_from_check))
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {id:?}")))?;
    tx.commit()
        .await
        .map_err(StoreError::db(format!("{op} {id:?}: commit")))?;
    Ok(tenant)
}

pub(crate) async fn delete(pools: &Pools, id: &str) -> Result<bool, StoreError> {
    let op = "delete_tenant";
    let mut tx = pools
        .begin_write()
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?;
    // Explicitly, so it does not depend on foreign-key enforcement being on.
    sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}: api keys")))?;
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?;
    tx.commit()
        .await
        .map_err(StoreError::db(format!("{op} {id:?}: commit")))?;
    Ok(done.rows_affected() > 0)
}
