//! Opening a store from its URL: pools with the settings durability needs, then
//! migrations.
//!
//! Both backends are driven through sqlx's `Any` driver so that every query is written
//! once; the few places where the dialects differ ask [`Backend`].

use super::chain::Chain;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};

use super::StoreError;
use super::checkpoint;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The pools of an open store. SQLite allows one writer at a time, so writes there go
/// through a pool of one connection (queued in-process instead of spinning on
/// `SQLITE_BUSY`); PostgreSQL uses one pool for both.
pub(crate) struct Pools {
    pub backend: Backend,
    pub write: AnyPool,
    pub read: AnyPool,
    /// Where heartbeats are written: on PostgreSQL a connection of their own, so a node
    /// busy delivering never misses its heartbeat waiting for a pooled connection (and
    /// is taken for dead); on SQLite the one write connection.
    pub beat: AnyPool,
}

impl Pools {
    /// Begins a transaction that will write. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`): a transaction that read first and then tried to write could
    /// otherwise fail with `SQLITE_BUSY` instead of waiting for another process's writer.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        begin_write(&self.write, self.backend).await
    }
}

async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<Transaction<'static, Any>, sqlx::Error> {
    let begin = || async {
        match backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => pool.begin().await,
        }
    };
    match begin().await {
        Err(e) if is_stuck_in_transaction(&e) => {
            // A COMMIT that failed (a full disk) was rolled back by the database, but
            // sqlx still counts the connection as inside a transaction and refuses to
            // begin another on it. Such a connection is of no more use: close it, so
            // the pool opens a fresh one, and begin again. On SQLite the write pool
            // has one connection, so the one acquired here is that one; elsewhere at
            // worst a healthy connection is reopened.
            tracing::warn!(error = %Chain(&e), "a write connection was left inside a failed transaction; replacing it");
            if let Ok(conn) = pool.acquire().await {
                drop(conn.detach());
            }
            begin().await
        }
        other => other,
    }
}

/// Whether `e` says the connection is still inside a transaction that the database
/// has already ended: nothing more can be done on it.
pub(crate) fn is_stuck_in_transaction(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::InvalidSavePointStatement)
}

/// [`Pools::begin_write`] on a connection the caller holds (the group-commit writer).
pub(crate) async fn begin_write_on(
    conn: &mut AnyConnection,
    backend: Backend,
) -> Result<Transaction<'_, Any>, sqlx::Error> {
    match backend {
        Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => conn.begin().await,
    }
}

/// Opens the pools for `url` and brings the schema up to date.
pub(crate) async fn open(url: &str) -> Result<Pools, StoreError> {
    sqlx::any::install_default_drivers();
    let pools = if let Some(path) = url.strip_prefix("sqlite://") {
        open_sqlite(path).await?
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        open_postgres(url).await?
    } else {
        return Err(StoreError::Url(redact(url)));
    };
    migrate(&pools).await?;
    Ok(pools)
}

async fn open_sqlite(path: &str) -> Result<Pools, StoreError> {
    if path.is_empty() || path.contains('?') {
        return Err(StoreError::Url(format!("sqlite://{path}")));
    }
    // `mode=rwc` creates the file if it is missing.
    let url = format!("sqlite://{path}?mode=rwc");
    let options = AnyConnectOptions::from_str(&url)
        .map_err(StoreError::db(format!("opening sqlite store {path:?}")))?;
    // `autocheckpoint`: the `wal_autocheckpoint` of the pool's connections.
    let pool = |max: u32, autocheckpoint: u32| {
        AnyPoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            // A file does not go away under an open connection; pinging it on every
            // acquire is one more round trip to its worker thread per transaction.
            .test_before_acquire(false)
            // A commit must reach the disk before `accept` returns: WAL with
            // synchronous=FULL fsyncs the log on every commit.
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute(&*format!("PRAGMA wal_autocheckpoint = {autocheckpoint}"))
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
    };
    let context = || format!("opening sqlite store {path:?}");
    let write = pool(1, checkpoint::WRITER_AUTOCHECKPOINT_PAGES)
        .await
        .map_err(StoreError::db(context()))?;
    let read = pool(4, checkpoint::SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES)
        .await
        .map_err(StoreError::db(context()))?;
    Ok(Pools {
        backend: Backend::Sqlite,
        beat: write.clone(),
        write,
        read,
    })
}

async fn open_postgres(url: &str) -> Result<Pools, StoreError> {
    let context = || format!("opening postgres store {}", redact(url));
    let options = AnyConnectOptions::from_str(url).map_err(StoreError::db(context()))?;
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await
        .map_err(StoreError::db(context()))?;
    // Opened on first use: a store opened for one command never holds it.
    let beat = AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options);
    Ok(Pools {
        backend: Backend::Postgres,
        write: pool.clone(),
        read: pool,
        beat,
    })
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

type MigrationList = Result<Vec<Migration>, sqlx::error::BoxDynError>;

/// The migrations of one dialect, embedded in the binary.
#[derive(Debug)]
struct Embedded(Backend);

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/sqlite/0001_init.sql")),
    (
        2,
        "plugins",
        include_str!("migrations/sqlite/0002_plugins.sql"),
    ),
    (
        3,
        "bounces",
        include_str!("migrations/sqlite/0003_bounces.sql"),
    ),
    (
        4,
        "billing",
        include_str!("migrations/sqlite/0004_billing.sql"),
    ),
    (
        5,
        "plugin_policy",
        include_str!("migrations/sqlite/0005_plugin_policy.sql"),
    ),
    (
        6,
        "relay_stat_buckets",
        include_str!("migrations/sqlite/0006_relay_stat_buckets.sql"),
    ),
    (
        7,
        "header_from_check",
        include_str!("migrations/sqlite/0007_header_from_check.sql"),
    ),
    (
        10,
        "tenant_stat_buckets",
        include_str!("migrations/sqlite/0010_tenant_stat_buckets.sql"),
    ),
    (
        11,
        "suppression_owner",
        include_str!("migrations/sqlite/0011_suppression_owner.sql"),
    ),
    (
        12,
        "accounts",
        include_str!("migrations/sqlite/0012_accounts.sql"),
    ),
    (
        13,
        "nodes",
        include_str!("migrations/sqlite/0013_nodes.sql"),
    ),
    (
        15,
        "waiting_for_relay",
        include_str!("migrations/sqlite/0015_waiting_for_relay.sql"),
    ),
    (
        16,
        "account_keys",
        include_str!("migrations/sqlite/0016_account_keys.sql"),
    ),
    (
        17,
        "header_message_id",
        include_str!("migrations/sqlite/0017_header_message_id.sql"),
    ),
    (
        18,
        "relay_tls_ca",
        include_str!("migrations/sqlite/0018_relay_tls_ca.sql"),
    ),
    (
        19,
        "event_cursors",
        include_str!("migrations/sqlite/0019_event_cursors.sql"),
    ),
    (
        20,
        "tenant_events",
        include_str!("migrations/sqlite/0020_tenant_events.sql"),
    ),
    (
        21,
        "account_period_counters",
        include_str!("migrations/sqlite/0021_account_period_counters.sql"),
    ),
    (
        22,
        "webhooks",
        include_str!("migrations/sqlite/0022_webhooks.sql"),
    ),
    (
        23,
        "usage_events_tenant_seq",
        include_str!("migrations/sqlite/0023_usage_events_tenant_seq.sql"),
    ),
    (
        24,
        "recipients_tenant",
        include_str!("migrations/sqlite/0024_recipients_tenant.sql"),
    ),
    (
        25,
        "queue_controls",
        include_str!("migrations/sqlite/0025_queue_controls.sql"),
    ),
    (
        26,
        "dkim_keys",
        include_str!("migrations/sqlite/0026_dkim_keys.sql"),
    ),
    (
        27,
        "portal_sessions",
        include_str!("migrations/sqlite/0027_portal_sessions.sql"),
    ),
    (
        28,
        "message_tags",
        include_str!("migrations/sqlite/0028_message_tags.sql"),
    ),
    (
        29,
        "write_fewer_index_entries",
        include_str!("migrations/sqlite/0029_write_fewer_index_entries.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/postgres/0001_init.sql")),
    (
        2,
        "plugins",
        include_str!("migrations/postgres/0002_plugins.sql"),
    ),
    (
        3,
        "bounces",
        include_str!("migrations/postgres/0003_bounces.sql"),
    ),
    (
        4,
        "billing",
        include_str!("migrations/postgres/0004_billing.sql"),
    ),
    (
        5,
        "plugin_policy",
        include_str!("migrations/postgres/0005_plugin_policy.sql"),
    ),
    (
        6,
        "relay_stat_buckets",
        include_str!("migrations/postgres/0006_relay_stat_buckets.sql"),
    ),
    (
        7,
        "header_from_check",
        include_str!("migrations/postgres/0007_header_from_check.sql"),
    ),
    (
        10,
        "tenant_stat_buckets",
        include_str!("migrations/postgres/0010_tenant_stat_buckets.sql"),
    ),
    (
        11,
        "suppression_owner",
        include_str!("migrations/postgres/0011_suppression_owner.sql"),
    ),
    (
        12,
        "accounts",
        include_str!("migrations/postgres/0012_accounts.sql"),
    ),
    (
        13,
        "nodes",
        include_str!("migrations/postgres/0013_nodes.sql"),
    ),
    (
        15,
        "waiting_for_relay",
        include_str!("migrations/postgres/0015_waiting_for_relay.sql"),
    ),
    (
        16,
        "account_keys",
        include_str!("migrations/postgres/0016_account_keys.sql"),
    ),
    (
        17,
        "header_message_id",
        include_str!("migrations/postgres/0017_header_message_id.sql"),
    ),
    (
        18,
        "relay_tls_ca",
        include_str!("migrations/postgres/0018_relay_tls_ca.sql"),
    ),
    (
        19,
        "event_cursors",
        include_str!("migrations/postgres/0019_event_cursors.sql"),
    ),
    (
        20,
        "tenant_events",
        include_str!("migrations/postgres/0020_tenant_events.sql"),
    ),
    (
        21,
        "account_period_counters",
        include_str!("migrations/postgres/0021_account_period_counters.sql"),
    ),
    (
        22,
        "webhooks",
        include_str!("migrations/postgres/0022_webhooks.sql"),
    ),
    (
        23,
        "usage_events_tenant_seq",
        include_str!("migrations/postgres/0023_usage_events_tenant_seq.sql"),
    ),
    (
        24,
        "recipients_tenant",
        include_str!("migrations/postgres/0024_recipients_tenant.sql"),
    ),
    (
        25,
        "queue_controls",
        include_str!("migrations/postgres/0025_queue_controls.sql"),
    ),
    (
        26,
        "dkim_keys",
        include_str!("migrations/postgres/0026_dkim_keys.sql"),
    ),
    (
        27,
        "portal_sessions",
        include_str!("migrations/postgres/0027_portal_sessions.sql"),
    ),
    (
        28,
        "message_tags",
        include_str!("migrations/postgres/0028_message_tags.sql"),
    ),
    (
        29,
        "write_fewer_index_entries",
        include_str!("migrations/postgres/0029_write_fewer_index_entries.sql"),
    ),
];

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = MigrationList> + Send + 's>> {
        let list = match self.0 {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let migrations = list
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

/// Creates the schema again when the database answers but has none of Sluice's tables
/// (it was dropped and re-created while the server ran); returns whether it did. A
/// database that does not answer is left alone: that is an outage, not a new database.
pub(crate) async fn recreate_missing_schema(pools: &Pools) -> Result<bool, StoreError> {
    let probe = sqlx::query("SELECT 1 FROM recipients LIMIT 1")
        .execute(&pools.write)
        .await;
    let missing = match &probe {
        Ok(_) => false,
        Err(sqlx::Error::Database(e)) => {
            // PostgreSQL: undefined_table; SQLite says it in words.
            e.code().as_deref() == Some("42P01") || e.message().contains("no such table")
        }
        Err(_) => false,
    };
    if missing {
        migrate(pools).await?;
    }
    Ok(missing)
}

/// Applies what is missing. On PostgreSQL sqlx takes an advisory lock, so hosts that
/// start together do not migrate twice.
async fn migrate(pools: &Pools) -> Result<(), StoreError> {
    let backend = pools.backend.name();
    let migrator = Migrator::new(Embedded(pools.backend))
        .await
        .map_err(|source| StoreError::Migrate { backend, source })?;
    migrator
        .run(&pools.write)
        .await
        .map_err(|source| StoreError::Migrate { backend, source })
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
