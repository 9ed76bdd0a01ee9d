//! Webhooks (issue 21, second part; migration `0022_webhooks`): a tenant's or the
//! platform's subscriptions to the tenant-visible event log, each with its own cursor
//! per tenant, its signing secrets, its retry state and its last attempts.
//!
//! Invariants:
//! - A webhook's cursor into a tenant's log moves only by [`delivered`] and [`skipped`]
//!   (after a 2xx, or past events its filter leaves out), and only from the value the
//!   batch was read at: a replay that moved it meanwhile wins, and the batch is sent
//!   again (at least once, never lost).
//! - Only the node holding a webhook's lease (`lease_node`, until `lease_until_ms`)
//!   moves its cursor or its retry state; a node whose lease was taken writes nothing.
//! - A webhook is paused by failing at most once per failing run: the update that
//!   pauses it is `WHERE state = 'active'`, and the tenant's `webhook_paused` event is
//!   written in that same transaction only when it changed the row.
//! - Attempts are bounded: each write keeps the newest `keep` of the webhook.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use super::codec::{col, corrupt, get_list, list_to_text};
use super::connect::Pools;
use super::types::EventKind;

/// Whether a webhook sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    Active,
    /// Paused by its owner or by Sluice after failing past the retry window; its events
    /// are kept and sent from its cursor when it is made active again.
    Paused,
    /// Switched off by its owner.
    Disabled,
}

impl WebhookState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Paused, Self::Disabled]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Whose webhooks: a tenant's, or the platform's (every tenant's events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOwner<'a> {
    Tenant(&'a str),
    Platform,
}

impl WebhookOwner<'_> {
    fn tenant(self) -> Option<String> {
        match self {
            Self::Tenant(t) => Some(t.to_string()),
            Self::Platform => None,
        }
    }
}

/// One stored webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    /// `None`: the platform's, over every tenant's events.
    pub tenant_id: Option<String>,
    pub url: String,
    /// Public event types it receives (`message.delivered`, …); `*` for all.
    pub events: Vec<String>,
    pub description: String,
    pub state: WebhookState,
    pub paused_reason: Option<String>,
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_expires_ms`.
    pub previous_secret: Option<String>,
    pub previous_expires_ms: Option<i64>,
    /// Failed attempts in a row (0 after a success).
    pub failures: u32,
    /// When the current run of failures began.
    pub failing_since_ms: Option<i64>,
    /// Not before this (a retry's backoff).
    pub next_attempt_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Webhook {
    /// The secrets that sign now: the current one, and the previous one during its
    /// overlap window.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let (Some(p), Some(until)) = (&self.previous_secret, self.previous_expires_ms)
            && now_ms < until
        {
            out.push(p.as_str());
        }
        out
    }
}

/// A webhook to create.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: String,
    pub tenant_id: Option<String>,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub secret: String,
}

/// A change to a webhook; `None` leaves a field as it is. Made active, its retry state
/// is cleared (resume after a pause).
#[derive(Debug, Clone, Default)]
pub struct WebhookUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub state: Option<WebhookState>,
}

/// One delivery attempt (or test send) as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WebhookAttempt {
    pub at_ms: i64,
    /// The tenant whose events it carried (none for a test send).
    pub tenant_id: Option<String>,
    pub first_cursor: Option<i64>,
    pub last_cursor: Option<i64>,
    /// Events in the body.
    pub events: u32,
    /// The receiver's HTTP status; `None` when none came (refused, timed out, …).
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

const COLUMNS: &str = "id, tenant_id, url, events, description, state, paused_reason, secret, \
     previous_secret, previous_expires_ms, failures, failing_since_ms, next_attempt_ms, \
     created_ms, updated_ms";

fn read(r: &AnyRow, op: &str) -> Result<Webhook, StoreError> {
    let state: String = col(r, op, "state")?;
    let failures: i64 = col(r, op, "failures")?;
    Ok(Webhook {
        id: col(r, op, "id")?,
        tenant_id: col(r, op, "tenant_id")?,
        url: col(r, op, "url")?,
        events: get_list(r, op, "events")?,
        description: col(r, op, "description")?,
        state: WebhookState::parse(&state).ok_or_else(|| corrupt(op, &state))?,
        paused_reason: col(r, op, "paused_reason")?,
        secret: col(r, op, "secret")?,
        previous_secret: col(r, op, "previous_secret")?,
        previous_expires_ms: col(r, op, "previous_expires_ms")?,
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        failing_since_ms: col(r, op, "failing_since_ms")?,
        next_attempt_ms: col(r, op, "next_attempt_ms")?,
        created_ms: col(r, op, "created_ms")?,
        updated_ms: col(r, op, "updated_ms")?,
    })
}

/// `tenant_id = $n` or `tenant_id IS NULL`, and whether `$n` is used.
fn owned_by(owner: WebhookOwner<'_>, n: usize) -> (String, bool) {
    match owner {
        WebhookOwner::Tenant(_) => (format!("tenant_id = ${n}"), true),
        WebhookOwner::Platform => ("tenant_id IS NULL".to_string(), false),
    }
}

/// Creates a webhook whose cursors start at its tenant's (or, for the platform's, every
/// tenant's) last cursor now: it receives the events that follow. `Conflict` when its
/// owner has `max` webhooks already.
pub(crate) async fn create(
    pools: &Pools,
    new: NewWebhook,
    max: u32,
    now_ms: i64,
) -> Result<Webhook, StoreError> {
    let op = "create_webhook";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let owner = match &new.tenant_id {
        Some(t) => WebhookOwner::Tenant(t),
        None => WebhookOwner::Platform,
    };
    let (cond, binds) = owned_by(owner, 1);
    let sql = format!("SELECT COUNT(*) AS n FROM webhooks WHERE {cond}");
    let mut q = sqlx::query(&sql);
    if binds {
        q = q.bind(new.tenant_id.clone());
    }
    let n: i64 = q
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op}: counting")))?
        .try_get("n")
        .map_err(StoreError::db(format!("{op}: counting")))?;
    if n >= i64::from(max) {
        return Err(StoreError::Conflict(format!(
            "{op}: {} has {n} webhooks already, the most it may have",
            new.tenant_id
                .as_deref()
                .map_or("the platform".to_string(), |t| format!("tenant {t:?}"))
        )));
    }
    sqlx::query(
        "INSERT INTO webhooks (id, tenant_id, url, events, description, state, secret, \
         failures, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
    )
    .bind(&new.id)
    .bind(new.tenant_id.clone())
    .bind(&new.url)
    .bind(list_to_text(&new.events))
    .bind(&new.description)
    .bind(WebhookState::Active.as_str())
    .bind(&new.secret)
    .bind(now_ms)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {:?}", new.id)))?;
    match &new.tenant_id {
        Some(t) => {
            sqlx::query(
                "INSERT INTO webhook_cursors (webhook_id, tenant_id, cursor) \
                 SELECT $1, $2, COALESCE((SELECT last_seq FROM event_sequences \
                 WHERE tenant_id = $2), 0)",
            )
            .bind(&new.id)
            .bind(t)
            .execute(&mut *tx)
            .await
        }
        None => {
            sqlx::query(
                "INSERT INTO webhook_cursors (webhook_id, tenant_id, cursor) \
                 SELECT $1, tenant_id, last_seq FROM event_sequences",
            )
            .bind(&new.id)
            .execute(&mut *tx)
            .await
        }
    }
    .map_err(StoreError::db(format!("{op}: cursors of {:?}", new.id)))?;
    tx.commit().await.map_err(StoreError::db(op))?;
    get(pools, owner, &new.id)
        .await?
        .ok_or_else(|| StoreError::not_found(op, "webhook", &new.id))
}

/// An owner's webhooks, oldest first.
pub(crate) async fn list(
    pools: &Pools,
    owner: WebhookOwner<'_>,
) -> Result<Vec<Webhook>, StoreError> {
    let op = "list_webhooks";
    let (cond, binds) = owned_by(owner, 1);
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE {cond} ORDER BY created_ms, id");
    let mut q = sqlx::query(&sql);
    if binds {
        q = q.bind(owner.tenant());
    }
    let rows = q.fetch_all(&pools.read).await.map_err(StoreError::db(op))?;
    rows.iter().map(|r| read(r, op)).collect()
}

/// Every active webhook of every owner (what the delivery loop looks at).
pub(crate) async fn list_active(pools: &Pools) -> Result<Vec<Webhook>, StoreError> {
    let op = "list_active_webhooks";
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE state = $1 ORDER BY id");
    let rows = sqlx::query(&sql)
        .bind(WebhookState::Active.as_str())
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(op))?;
    rows.iter().map(|r| read(r, op)).collect()
}

/// One of an owner's webhooks.
pub(crate) async fn get(
    pools: &Pools,
    owner: WebhookOwner<'_>,
    id: &str,
) -> Result<Option<Webhook>, StoreError> {
    let op = "get_webhook";
    let (cond, binds) = owned_by(owner, 2);
    let sql = format!("SELECT {COLUMNS} FROM webhooks WHERE id = $1 AND {cond}");
    let mut q = sqlx::query(&sql).bind(id);
    if binds {
        q = q.bind(owner.tenant());
    }
    let row = q
        .fetch_optional(&pools.read)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?;
    row.map(|r| read(&r, op)).transpose()
}

/// Changes an owner's webhook; `NotFound` if it has none by `id`.
pub(crate) async fn update(
    pools: &Pools,
    owner: WebhookOwner<'_>,
    id: &str,
    change: WebhookUpdate,
    now_ms: i64,
) -> Result<Webhook, StoreError> {
    let op = "update_webhook";
    let Some(mut w) = get(pools, owner, id).await? else {
        return Err(StoreError::not_found(op, "webhook", id));
    };
    if let Some(u) = change.url {
        w.url = u;
    }
    if let Some(e) = change.events {
        w.events = e;
    }
    if let Some(d) = change.description {
        w.description = d;
    }
    let resume = change.state == Some(WebhookState::Active) && w.state != WebhookState::Active;
    if let Some(s) = change.state
        && s != w.state
    {
        w.state = s;
        w.paused_reason = match s {
            WebhookState::Active => None,
            WebhookState::Paused => Some("paused by its owner".to_string()),
            WebhookState::Disabled => Some("disabled by its owner".to_string()),
        };
    }
    if resume {
        w.failures = 0;
        w.failing_since_ms = None;
        w.next_attempt_ms = None;
    }
    sqlx::query(
        "UPDATE webhooks SET url = $1, events = $2, description = $3, state = $4, \
         paused_reason = $5, failures = $6, failing_since_ms = $7, next_attempt_ms = $8, \
         updated_ms = $9 WHERE id = $10",
    )
    .bind(&w.url)
    .bind(list_to_text(&w.events))
    .bind(&w.description)
    .bind(w.state.as_str())
    .bind(w.paused_reason.clone())
    .bind(i64::from(w.failures))
    .bind(w.failing_since_ms)
    .bind(w.next_attempt_ms)
    .bind(now_ms)
    .bind(id)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("{op} {id:?}")))?;
    w.updated_ms = now_ms;
    Ok(w)
}

/// Deletes an owner's webhook with its cursors and attempts; whether there was one.
pub(crate) async fn delete(
    pools: &Pools,
    owner: WebhookOwner<'_>,
    id: &str,
) -> Result<bool, StoreError> {
    let op = "delete_webhook";
    let (cond, binds) = owned_by(owner, 2);
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let sql = format!("DELETE FROM webhooks WHERE id = $1 AND {cond}");
    let mut q = sqlx::query(&sql).bind(id);
    if binds {
        q = q.bind(owner.tenant());
    }
    let n = q
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?
        .rows_affected();
    if n > 0 {
        // Not left to ON DELETE CASCADE: SQLite enforces it only with foreign keys on.
        for table in ["webhook_cursors", "webhook_attempts"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE webhook_id = $1"))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db(format!("{op} {id:?}: {table}")))?;
        }
    }
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(n > 0)
}

/// Makes `secret` the signing secret; the old one keeps signing until `overlap_until_ms`.
pub(crate) async fn rotate_secret(
    pools: &Pools,
    owner: WebhookOwner<'_>,
    id: &str,
    secret: &str,
    overlap_until_ms: i64,
    now_ms: i64,
) -> Result<Webhook, StoreError> {
    let op = "rotate_webhook_secret";
    let (cond, binds) = owned_by(owner, 5);
    let sql = format!(
        "UPDATE webhooks SET previous_secret = secret, previous_expires_ms = $1, secret = $2, \
         updated_ms = $3 WHERE id = $4 AND {cond}"
    );
    let mut q = sqlx::query(&sql)
        .bind(overlap_until_ms)
        .bind(secret)
        .bind(now_ms)
        .bind(id);
    if binds {
        q = q.bind(owner.tenant());
    }
    let n = q
        .execute(&pools.write)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}")))?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::not_found(op, "webhook", id));
    }
    get(pools, owner, id)
        .await?
        .ok_or_else(|| StoreError::not_found(op, "webhook", id))
}

/// A webhook's cursors: (tenant, cursor), by tenant.
pub(crate) async fn cursors(pools: &Pools, id: &str) -> Result<Vec<(String, i64)>, StoreError> {
    let op = "webhook_cursors";
    let rows = sqlx::query(
        "SELECT tenant_id, cursor FROM webhook_cursors WHERE webhook_id = $1 ORDER BY tenant_id",
    )
    .bind(id)
    .fetch_all(&pools.write)
    .await
    .map_err(StoreError::db(format!("{op} of {id:?}")))?;
    rows.iter()
        .map(|r| Ok((col(r, op, "tenant_id")?, col(r, op, "cursor")?)))
        .collect()
}

/// Every webhook's cursors: (webhook, tenant, cursor).
pub(crate) async fn all_cursors(pools: &Pools) -> Result<Vec<(String, String, i64)>, StoreError> {
    let op = "all_webhook_cursors";
    let rows = sqlx::query("SELECT webhook_id, tenant_id, cursor FROM webhook_cursors")
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(op))?;
    rows.iter()
        .map(|r| {
            Ok((
                col(r, op, "webhook_id")?,
                col(r, op, "tenant_id")?,
                col(r, op, "cursor")?,
            ))
        })
        .collect()
}

/// Gives a platform webhook a cursor (0: from the first event) into each tenant that
/// has events and none yet (a tenant whose first event came after the webhook).
pub(crate) async fn ensure_cursors(pools: &Pools, id: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_cursors (webhook_id, tenant_id, cursor) \
         SELECT $1, tenant_id, 0 FROM event_sequences WHERE true \
         ON CONFLICT (webhook_id, tenant_id) DO NOTHING",
    )
    .bind(id)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("ensure_webhook_cursors {id:?}")))?;
    Ok(())
}

/// Sets an owner's webhook's cursor into `tenant`'s log back (or on) to `after`, so the
/// events after it are sent again, and clears its backoff so that happens now.
pub(crate) async fn replay(
    pools: &Pools,
    owner: WebhookOwner<'_>,
    id: &str,
    tenant_id: &str,
    after: i64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let op = "replay_webhook";
    if get(pools, owner, id).await?.is_none() {
        return Err(StoreError::not_found(op, "webhook", id));
    }
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    sqlx::query(
        "INSERT INTO webhook_cursors (webhook_id, tenant_id, cursor) VALUES ($1, $2, $3) \
         ON CONFLICT (webhook_id, tenant_id) DO UPDATE SET cursor = excluded.cursor",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(after)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {id:?}")))?;
    sqlx::query(
        "UPDATE webhooks SET next_attempt_ms = NULL, failures = 0, failing_since_ms = NULL, \
         updated_ms = $1 WHERE id = $2",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {id:?}")))?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(())
}

/// Takes (or renews) the lease of an active webhook that is due, for `lease_ms`;
/// whether this node holds it now. Refused while another node's lease runs.
pub(crate) async fn claim(
    pools: &Pools,
    id: &str,
    node: &str,
    now_ms: i64,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE webhooks SET lease_node = $1, lease_until_ms = $2 \
         WHERE id = $3 AND state = $4 AND (next_attempt_ms IS NULL OR next_attempt_ms <= $5) \
         AND (lease_node IS NULL OR lease_node = $1 OR lease_until_ms < $5)",
    )
    .bind(node)
    .bind(now_ms + lease_ms)
    .bind(id)
    .bind(WebhookState::Active.as_str())
    .bind(now_ms)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("claim_webhook {id:?}")))?
    .rows_affected();
    Ok(n > 0)
}

/// Gives a webhook's lease back (when this node holds it).
pub(crate) async fn release(pools: &Pools, id: &str, node: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhooks SET lease_node = NULL, lease_until_ms = NULL \
         WHERE id = $1 AND lease_node = $2",
    )
    .bind(id)
    .bind(node)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("release_webhook {id:?}")))?;
    Ok(())
}

async fn insert_attempt(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    a: &WebhookAttempt,
    keep: u32,
    op: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_attempts (webhook_id, at_ms, tenant_id, first_cursor, last_cursor, \
         events, status, latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(a.at_ms)
    .bind(a.tenant_id.clone())
    .bind(a.first_cursor)
    .bind(a.last_cursor)
    .bind(i64::from(a.events))
    .bind(a.status.map(i64::from))
    .bind(a.latency_ms)
    .bind(a.error.clone())
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(format!("{op}: attempt of {id:?}")))?;
    trim_attempts(conn, id, keep, op).await
}

/// Keeps the newest `keep` attempts of a webhook.
async fn trim_attempts(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    keep: u32,
    op: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM webhook_attempts WHERE webhook_id = $1 AND id <= \
         (SELECT id FROM webhook_attempts WHERE webhook_id = $1 ORDER BY id DESC \
         LIMIT 1 OFFSET $2)",
    )
    .bind(id)
    .bind(i64::from(keep))
    .execute(&mut *conn)
    .await
    .map_err(StoreError::db(format!("{op}: old attempts of {id:?}")))?;
    Ok(())
}

/// Moves the cursor on past events the webhook's filter leaves out (from `from` to
/// `to`), if this node still holds the lease and the cursor is still at `from`.
pub(crate) async fn skipped(
    pools: &Pools,
    id: &str,
    node: &str,
    tenant_id: &str,
    from: i64,
    to: i64,
) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE webhook_cursors SET cursor = $1 WHERE webhook_id = $2 AND tenant_id = $3 \
         AND cursor = $4 AND EXISTS (SELECT 1 FROM webhooks WHERE id = $2 AND lease_node = $5)",
    )
    .bind(to)
    .bind(id)
    .bind(tenant_id)
    .bind(from)
    .bind(node)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!("webhook_skipped {id:?}")))?
    .rows_affected();
    Ok(n > 0)
}

/// After a 2xx: the cursor from `from` to the attempt's last cursor, the retry state
/// cleared, the attempt kept; whether this node still held the lease (else nothing is
/// written but the attempt).
pub(crate) async fn delivered(
    pools: &Pools,
    id: &str,
    node: &str,
    from: i64,
    attempt: &WebhookAttempt,
    keep: u32,
) -> Result<bool, StoreError> {
    let op = "webhook_delivered";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let ours = sqlx::query(
        "UPDATE webhooks SET failures = 0, failing_since_ms = NULL, next_attempt_ms = NULL \
         WHERE id = $1 AND lease_node = $2",
    )
    .bind(id)
    .bind(node)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {id:?}")))?
    .rows_affected()
        > 0;
    if ours && let (Some(tenant), Some(to)) = (&attempt.tenant_id, attempt.last_cursor) {
        sqlx::query(
            "UPDATE webhook_cursors SET cursor = $1 WHERE webhook_id = $2 AND tenant_id = $3 \
             AND cursor = $4",
        )
        .bind(to)
        .bind(id)
        .bind(tenant)
        .bind(from)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}: cursor")))?;
    }
    insert_attempt(&mut tx, id, attempt, keep, op).await?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(ours)
}

/// After a failed attempt: the retry state (`next_attempt_ms`), the attempt kept; and
/// when `pause` gives a reason, the webhook paused with a `webhook_paused` event of its
/// tenant in the same transaction (none for the platform's, which has no tenant).
/// Returns whether this call paused it.
pub(crate) async fn failed(
    pools: &Pools,
    id: &str,
    node: &str,
    attempt: &WebhookAttempt,
    next_attempt_ms: i64,
    pause: Option<&str>,
    keep: u32,
) -> Result<bool, StoreError> {
    let op = "webhook_failed";
    let now = attempt.at_ms;
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let ours = sqlx::query(
        "UPDATE webhooks SET failures = failures + 1, \
         failing_since_ms = COALESCE(failing_since_ms, $1), next_attempt_ms = $2 \
         WHERE id = $3 AND lease_node = $4",
    )
    .bind(now)
    .bind(next_attempt_ms)
    .bind(id)
    .bind(node)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {id:?}")))?
    .rows_affected()
        > 0;
    let mut paused = false;
    if ours && let Some(reason) = pause {
        let row = sqlx::query(
            "UPDATE webhooks SET state = $1, paused_reason = $2, updated_ms = $3 \
             WHERE id = $4 AND state = $5 RETURNING tenant_id, url, failures, failing_since_ms",
        )
        .bind(WebhookState::Paused.as_str())
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(WebhookState::Active.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db(format!("{op} {id:?}: pausing")))?;
        if let Some(r) = row {
            paused = true;
            let tenant: Option<String> = col(&r, op, "tenant_id")?;
            if let Some(tenant) = tenant {
                let detail = serde_json::json!({
                    "webhook_id": id,
                    "url": col::<String>(&r, op, "url")?,
                    "reason": reason,
                    "failures": col::<i64>(&r, op, "failures")?,
                    "failing_since_ms": col::<Option<i64>>(&r, op, "failing_since_ms")?,
                });
                super::event_log::append_tenant_event(
                    &mut tx,
                    &tenant,
                    EventKind::WebhookPaused,
                    &detail,
                    now,
                    op,
                )
                .await?;
            }
        }
    }
    insert_attempt(&mut tx, id, attempt, keep, op).await?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(paused)
}

/// A cursor move of a webhook into one tenant's log: from the value it was read at to
/// the last event sent (or passed over by the filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorMove {
    pub tenant_id: String,
    pub from: i64,
    pub to: i64,
}

/// What a delivery task did since its last checkpoint, written in one transaction if
/// this node still holds the lease: its cursor moves (each only where the cursor is
/// still at `from`: a replay meanwhile wins), its successful attempts (the newest `keep`
/// of them; when there are any, the retry state is cleared), and the lease renewed to
/// `lease_until_ms`. Returns whether this node held the lease (else nothing is written
/// but the attempts).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn checkpoint(
    pools: &Pools,
    id: &str,
    node: &str,
    moves: &[CursorMove],
    attempts: &[WebhookAttempt],
    keep: u32,
    lease_until_ms: i64,
) -> Result<bool, StoreError> {
    let op = "webhook_checkpoint";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    let clear = if attempts.is_empty() {
        ""
    } else {
        ", failures = 0, failing_since_ms = NULL, next_attempt_ms = NULL"
    };
    let ours = sqlx::query(&format!(
        "UPDATE webhooks SET lease_until_ms = $1{clear} WHERE id = $2 AND lease_node = $3"
    ))
    .bind(lease_until_ms)
    .bind(id)
    .bind(node)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db(format!("{op} {id:?}")))?
    .rows_affected()
        > 0;
    if ours {
        for m in moves.iter().filter(|m| m.to > m.from) {
            sqlx::query(
                "UPDATE webhook_cursors SET cursor = $1 WHERE webhook_id = $2 \
                 AND tenant_id = $3 AND cursor = $4",
            )
            .bind(m.to)
            .bind(id)
            .bind(&m.tenant_id)
            .bind(m.from)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db(format!("{op} {id:?}: cursor")))?;
        }
    }
    let newest = &attempts[attempts.len().saturating_sub(keep as usize)..];
    const COLS: usize = 9;
    for rows in newest.chunks(super::codec::rows_per_statement(COLS).min(100)) {
        let sql = format!(
            "INSERT INTO webhook_attempts (webhook_id, at_ms, tenant_id, first_cursor, \
             last_cursor, events, status, latency_ms, error) VALUES {}",
            super::codec::value_rows(rows.len(), COLS)
        );
        let mut q = sqlx::query(&sql);
        for a in rows {
            q = q
                .bind(id)
                .bind(a.at_ms)
                .bind(a.tenant_id.clone())
                .bind(a.first_cursor)
                .bind(a.last_cursor)
                .bind(i64::from(a.events))
                .bind(a.status.map(i64::from))
                .bind(a.latency_ms)
                .bind(a.error.clone());
        }
        q.execute(&mut *tx)
            .await
            .map_err(StoreError::db(format!("{op}: attempts of {id:?}")))?;
    }
    if !newest.is_empty() {
        trim_attempts(&mut tx, id, keep, op).await?;
    }
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(ours)
}

/// Gives back every webhook lease `node` holds (a graceful stop): another node may
/// deliver them at once instead of after the leases run out. Returns how many.
pub(crate) async fn release_all(pools: &Pools, node: &str) -> Result<u64, StoreError> {
    let n = sqlx::query(
        "UPDATE webhooks SET lease_node = NULL, lease_until_ms = NULL WHERE lease_node = $1",
    )
    .bind(node)
    .execute(&pools.write)
    .await
    .map_err(StoreError::db(format!(
        "release_webhook_leases of {node:?}"
    )))?
    .rows_affected();
    Ok(n)
}

/// How far webhooks are behind, per state (`active`, `paused`, `disabled`; a state with
/// no webhook is left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookLag {
    pub state: String,
    /// Webhooks in this state.
    pub webhooks: i64,
    /// Sequenced events past their cursors, summed.
    pub events: i64,
    /// When the oldest event past a cursor was written (`at_ms`), if any.
    pub oldest_at_ms: Option<i64>,
}

/// The query of [`lag`] (also for its plan, `plans.rs`).
pub(crate) const LAG_SQL: &str = "SELECT w.state AS state, COUNT(DISTINCT w.id) AS webhooks, \
     CAST(COALESCE(SUM(CASE WHEN s.last_seq > c.cursor THEN s.last_seq - c.cursor \
     ELSE 0 END), 0) AS BIGINT) AS events, MIN(e.at_ms) AS oldest FROM webhooks w \
     LEFT JOIN webhook_cursors c ON c.webhook_id = w.id \
     LEFT JOIN event_sequences s ON s.tenant_id = c.tenant_id \
     LEFT JOIN events e ON e.tenant_id = c.tenant_id AND e.tenant_seq = c.cursor + 1 \
     GROUP BY w.state";

/// Every webhook's lag, summed per state: a few rows, however many webhooks (a read of
/// each cursor's next event, by the `(tenant_id, tenant_seq)` index).
pub(crate) async fn lag(pools: &Pools) -> Result<Vec<WebhookLag>, StoreError> {
    let op = "webhook_lag";
    let rows = sqlx::query(LAG_SQL)
        .fetch_all(&pools.read)
        .await
        .map_err(StoreError::db(op))?;
    rows.iter()
        .map(|r| {
            Ok(WebhookLag {
                state: col(r, op, "state")?,
                webhooks: col(r, op, "webhooks")?,
                events: col(r, op, "events")?,
                oldest_at_ms: col(r, op, "oldest")?,
            })
        })
        .collect()
}

/// Keeps an attempt that moves nothing (a test send).
pub(crate) async fn record_attempt(
    pools: &Pools,
    id: &str,
    attempt: &WebhookAttempt,
    keep: u32,
) -> Result<(), StoreError> {
    let op = "record_webhook_attempt";
    let mut tx = pools.begin_write().await.map_err(StoreError::db(op))?;
    insert_attempt(&mut tx, id, attempt, keep, op).await?;
    tx.commit().await.map_err(StoreError::db(op))?;
    Ok(())
}

/// An owner's webhook's last attempts, newest first, at most `limit`; `NotFound` if
/// the owner has no such webhook.
pub(crate) async fn attempts(
    pools: &Pools,
    owner: WebhookOwner<'_>,
    id: &str,
    limit: u32,
) -> Result<Vec<WebhookAttempt>, StoreError> {
    let op = "webhook_attempts";
    if get(pools, owner, id).await?.is_none() {
        return Err(StoreError::not_found(op, "webhook", id));
    }
    let rows = sqlx::query(
        "SELECT at_ms, tenant_id, first_cursor, last_cursor, events, status, latency_ms, error \
         FROM webhook_attempts WHERE webhook_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(id)
    .bind(i64::from(limit))
    .fetch_all(&pools.read)
    .await
    .map_err(StoreError::db(format!("{op} of {id:?}")))?;
    rows.iter()
        .map(|r| {
            let events: i64 = col(r, op, "events")?;
            let status: Option<i64> = col(r, op, "status")?;
            Ok(WebhookAttempt {
                at_ms: col(r, op, "at_ms")?,
                tenant_id: col(r, op, "tenant_id")?,
                first_cursor: col(r, op, "first_cursor")?,
                last_cursor: col(r, op, "last_cursor")?,
                events: u32::try_from(events).unwrap_or(u32::MAX),
                status: status.and_then(|s| u16::try_from(s).ok()),
                latency_ms: col(r, op, "latency_ms")?,
                error: col(r, op, "error")?,
            })
        })
        .collect()
}
