//! DKIM keys per tenant and domain (issue 23, migration `0026_dkim_keys`): the public
//! half as published, the private half only sealed (`dkim/seal.rs`; the store never sees
//! it in the clear), at most one active key per (tenant, domain).
//!
//! Every read and write names its tenant: a tenant cannot list, activate or delete
//! another tenant's key, even one for the same domain (`NotFound`, as for a key that
//! does not exist). Counts are bounded here, in the transaction that inserts: at most
//! [`MAX_SELECTORS_PER_DOMAIN`] keys per domain and [`MAX_DKIM_DOMAINS`] domains per
//! tenant; on PostgreSQL the tenant's row is locked first, so two creations at once
//! cannot both pass the counts.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::codec::col;
use super::connect::{Backend, Pools};
use super::{Store, StoreError};

/// A key's algorithm. RSA keys are 2048 bits: long enough for RFC 8301, short enough
/// that the record fits every DNS provider's TXT form (two 255-byte strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    Ed25519,
    Rsa2048,
}

impl DkimAlgorithm {
    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Ed25519 => "ed25519",
            DkimAlgorithm::Rsa2048 => "rsa-2048",
        }
    }

    pub fn parse(s: &str) -> Option<DkimAlgorithm> {
        match s {
            "ed25519" => Some(DkimAlgorithm::Ed25519),
            "rsa-2048" => Some(DkimAlgorithm::Rsa2048),
            _ => None,
        }
    }
}

/// Keys one domain of one tenant may have (the active one, the next, old ones still
/// published while mail signed with them is in transit).
pub const MAX_SELECTORS_PER_DOMAIN: u32 = 8;
/// Domains with keys one tenant may have.
pub const MAX_DKIM_DOMAINS: u32 = 100;

/// A key as listed: everything but the private half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub tenant_id: String,
    /// Lower case, no trailing dot (`dkim::keys::normalize_domain`).
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// The DNS record's `p=` value (base64).
    pub public_key: String,
    pub active: bool,
    pub created_at_ms: i64,
    /// When it last became the active key.
    pub activated_at_ms: Option<i64>,
}

/// A key with its sealed private half: what signing opens.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedDkimKey {
    pub key: DkimKey,
    pub private_key_sealed: String,
}

impl std::fmt::Debug for SealedDkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedDkimKey")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What [`Store::create_dkim_key`] writes.
#[derive(Clone)]
pub struct NewDkimKey {
    pub tenant_id: String,
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    pub public_key: String,
    pub private_key_sealed: String,
    /// Make it the active key now; a domain's first key is active whatever this says.
    pub activate: bool,
}

const COLUMNS: &str = "tenant_id, domain, selector, algorithm, public_key, active, \
     created_at_ms, activated_at_ms";

fn from_row(r: &AnyRow, op: &str) -> Result<DkimKey, StoreError> {
    let algorithm: String = col(r, op, "algorithm")?;
    let active: i64 = col(r, op, "active")?;
    Ok(DkimKey {
        tenant_id: col(r, op, "tenant_id")?,
        domain: col(r, op, "domain")?,
        selector: col(r, op, "selector")?,
        algorithm: DkimAlgorithm::parse(&algorithm)
            .ok_or_else(|| super::codec::corrupt(&format!("{op}: column algorithm"), &algorithm))?,
        public_key: col(r, op, "public_key")?,
        active: active != 0,
        created_at_ms: col(r, op, "created_at_ms")?,
        activated_at_ms: col(r, op, "activated_at_ms")?,
    })
}

fn sealed_from_row(r: &AnyRow, op: &str) -> Result<SealedDkimKey, StoreError> {
    Ok(SealedDkimKey {
        key: from_row(r, op)?,
        private_key_sealed: col(r, op, "private_key_sealed")?,
    })
}

async fn count(
    tx: &mut sqlx::AnyConnection,
    op: &str,
    sql: &str,
    binds: &[&str],
) -> Result<i64, StoreError> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get::<i64, _>("n"))
        .map_err(StoreError::db(format!("{op}: counting")))
}

async fn create(pools: &Pools, new: NewDkimKey, now_ms: i64) -> Result<DkimKey, StoreError> {
    let op = "create_dkim_key";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let lock = match pools.backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let tenant = sqlx::query(&format!("SELECT id FROM tenants WHERE id = $1{lock}"))
        .bind(&new.tenant_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op}: tenant {:?}", new.tenant_id)))?;
    if tenant.is_none() {
        return Err(StoreError::not_found(op, "tenant", &new.tenant_id));
    }
    let on_domain = count(
        &mut tx,
        op,
        "SELECT COUNT(*) AS n FROM dkim_keys WHERE tenant_id = $1 AND domain = $2",
        &[&new.tenant_id, &new.domain],
    )
    .await?;
    if on_domain >= i64::from(MAX_SELECTORS_PER_DOMAIN) {
        return Err(StoreError::Conflict(format!(
            "{op}: domain {:?} has {on_domain} keys, the most it may have (delete an inactive one first)",
            new.domain
        )));
    }
    if on_domain == 0 {
        let domains = count(
            &mut tx,
            op,
            "SELECT COUNT(DISTINCT domain) AS n FROM dkim_keys WHERE tenant_id = $1",
            &[&new.tenant_id],
        )
        .await?;
        if domains >= i64::from(MAX_DKIM_DOMAINS) {
            return Err(StoreError::Conflict(format!(
                "{op}: tenant {:?} has keys for {domains} domains, the most it may have",
                new.tenant_id
            )));
        }
    }
    let activate = new.activate || on_domain == 0;
    if activate {
        deactivate(&mut tx, op, &new.tenant_id, &new.domain).await?;
    }
    sqlx::query(
        "INSERT INTO dkim_keys (tenant_id, domain, selector, algorithm, public_key, \
         private_key_sealed, active, created_at_ms, activated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&new.tenant_id)
    .bind(&new.domain)
    .bind(&new.selector)
    .bind(new.algorithm.as_str())
    .bind(&new.public_key)
    .bind(&new.private_key_sealed)
    .bind(i64::from(activate))
    .bind(now_ms)
    .bind(activate.then_some(now_ms))
    .execute(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::conflict(op, "selector", &new.selector)
        }
        _ => StoreError::db(format!("{op} {:?}", new.selector))(e),
    })?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(DkimKey {
        tenant_id: new.tenant_id,
        domain: new.domain,
        selector: new.selector,
        algorithm: new.algorithm,
        public_key: new.public_key,
        active: activate,
        created_at_ms: now_ms,
        activated_at_ms: activate.then_some(now_ms),
    })
}

async fn deactivate(
    tx: &mut sqlx::AnyConnection,
    op: &str,
    tenant: &str,
    domain: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dkim_keys SET active = 0 WHERE tenant_id = $1 AND domain = $2 AND active = 1",
    )
    .bind(tenant)
    .bind(domain)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op}: deactivating {domain:?}")))?;
    Ok(())
}

async fn list(
    pools: &Pools,
    tenant: &str,
    domain: Option<&str>,
) -> Result<Vec<DkimKey>, StoreError> {
    let op = "list_dkim_keys";
    let sql = format!(
        "SELECT {COLUMNS} FROM dkim_keys WHERE tenant_id = $1{} ORDER BY domain, created_at_ms, selector",
        if domain.is_some() {
            " AND domain = $2"
        } else {
            ""
        }
    );
    let mut q = sqlx::query(&sql).bind(tenant);
    if let Some(d) = domain {
        q = q.bind(d);
    }
    let rows = q.fetch_all(&pools.read).await.map_err(StoreError::db(op))?;
    rows.iter().map(|r| from_row(r, op)).collect()
}

async fn activate(
    pools: &Pools,
    tenant: &str,
    domain: &str,
    selector: &str,
    now_ms: i64,
) -> Result<DkimKey, StoreError> {
    let op = "activate_dkim_key";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let found = sqlx::query(
        "SELECT active FROM dkim_keys WHERE tenant_id = $1 AND domain = $2 AND selector = $3",
    )
    .bind(tenant)
    .bind(domain)
    .bind(selector)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {selector:?}")))?;
    if found.is_none() {
        return Err(StoreError::not_found(op, "DKIM selector", selector));
    }
    deactivate(&mut tx, op, tenant, domain).await?;
    sqlx::query(
        "UPDATE dkim_keys SET active = 1, activated_at_ms = $4 \
         WHERE tenant_id = $1 AND domain = $2 AND selector = $3",
    )
    .bind(tenant)
    .bind(domain)
    .bind(selector)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {selector:?}")))?;
    tx.commit().await.map_err(StoreError::db(op))?;
    list(pools, tenant, Some(domain))
        .await?
        .into_iter()
        .find(|k| k.selector == selector)
        .ok_or_else(|| StoreError::not_found(op, "DKIM selector", selector))
}

async fn delete(
    pools: &Pools,
    tenant: &str,
    domain: &str,
    selector: &str,
) -> Result<(), StoreError> {
    let op = "delete_dkim_key";
    // Only an inactive key: removing the active one would silently stop signing.
    let done = sqlx::query(
        "DELETE FROM dkim_keys WHERE tenant_id = $1 AND domain = $2 AND selector = $3 \
         AND active = 0",
    )
    .bind(tenant)
    .bind(domain)
    .bind(selector)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("{op} {selector:?}")))?;
    if done.rows_affected() == 1 {
        return Ok(());
    }
    let active = list(pools, tenant, Some(domain))
        .await?
        .into_iter()
        .any(|k| k.selector == selector);
    if active {
        Err(StoreError::Conflict(format!(
            "{op}: selector {selector:?} is the active key of {domain:?}; activate another first"
        )))
    } else {
        Err(StoreError::not_found(op, "DKIM selector", selector))
    }
}

async fn active(
    pools: &Pools,
    tenant: &str,
    domain: &str,
) -> Result<Option<SealedDkimKey>, StoreError> {
    let op = "active_dkim_key";
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, private_key_sealed FROM dkim_keys \
         WHERE tenant_id = $1 AND domain = $2 AND active = 1"
    ))
    .bind(tenant)
    .bind(domain)
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op} {domain:?}")))?;
    row.map(|r| sealed_from_row(&r, op)).transpose()
}

async fn any_sealed(pools: &Pools) -> Result<Option<SealedDkimKey>, StoreError> {
    let op = "any_dkim_key";
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, private_key_sealed FROM dkim_keys \
         ORDER BY created_at_ms DESC, selector LIMIT 1"
    ))
    .fetch_optional(&pools.read)
    .await
    .map_err(StoreError::db(op))?;
    row.map(|r| sealed_from_row(&r, op)).transpose()
}

impl Store {
    /// Stores a new key (active when asked or when it is its domain's first, the
    /// previous active one then inactive). `Conflict` past the bounds or for a selector
    /// the domain has; `NotFound` for an unknown tenant.
    pub async fn create_dkim_key(
        &self,
        new: NewDkimKey,
        now_ms: i64,
    ) -> Result<DkimKey, StoreError> {
        create(self.pools(), new, now_ms).await
    }

    /// A tenant's keys (of one domain, or all), by domain then age.
    pub async fn list_dkim_keys(
        &self,
        tenant: &str,
        domain: Option<&str>,
    ) -> Result<Vec<DkimKey>, StoreError> {
        list(self.pools(), tenant, domain).await
    }

    /// Makes a tenant's key the active one of its domain (rotation); `NotFound` for a
    /// selector the tenant's domain does not have.
    pub async fn activate_dkim_key(
        &self,
        tenant: &str,
        domain: &str,
        selector: &str,
        now_ms: i64,
    ) -> Result<DkimKey, StoreError> {
        activate(self.pools(), tenant, domain, selector, now_ms).await
    }

    /// Deletes an inactive key; `Conflict` for the active one, `NotFound` for another's.
    pub async fn delete_dkim_key(
        &self,
        tenant: &str,
        domain: &str,
        selector: &str,
    ) -> Result<(), StoreError> {
        delete(self.pools(), tenant, domain, selector).await
    }

    /// The active key of a tenant's domain, sealed, if it has one.
    pub async fn active_dkim_key(
        &self,
        tenant: &str,
        domain: &str,
    ) -> Result<Option<SealedDkimKey>, StoreError> {
        active(self.pools(), tenant, domain).await
    }

    /// The newest stored key of any tenant: at start, whether keys exist (then the
    /// sealing secret is required) and whether that secret opens them.
    pub async fn any_dkim_key(&self) -> Result<Option<SealedDkimKey>, StoreError> {
        any_sealed(self.pools()).await
    }
}
