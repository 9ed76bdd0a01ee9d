//! Throwaway PostgreSQL databases for the store test suites: one per test,
//! dropped afterwards. PostgreSQL being unreachable fails the test unless
//! `SLUICE_SKIP_POSTGRES=1`; `SLUICE_TEST_POSTGRES` overrides the admin URL.

use sqlx::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn admin_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn skip_postgres() -> bool {
    std::env::var("SLUICE_SKIP_POSTGRES").is_ok_and(|v| v == "1")
}

/// Creates `<prefix>_<pid>_<n>`; returns its URL and name, or None when
/// PostgreSQL tests are skipped.
pub async fn create_database(prefix: &str) -> Option<(String, String)> {
    let admin = admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) if skip_postgres() => {
            eprintln!("skipping PostgreSQL test (SLUICE_SKIP_POSTGRES=1): {e}");
            return None;
        }
        Err(e) => panic!(
            "PostgreSQL is not reachable at {admin}: {e}; set SLUICE_SKIP_POSTGRES=1 to skip"
        ),
    };
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.ok();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    Some((format!("{base}/{name}"), name))
}

/// Drops a database made by [`create_database`].
pub async fn drop_database(name: &str) {
    let mut conn = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}
