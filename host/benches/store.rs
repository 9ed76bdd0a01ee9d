//! Accept throughput of the store with group commit: accepts/s at concurrency 1, 8 and
//! 64, 1 KiB bodies, one recipient, for SQLite (temp file, WAL, synchronous=FULL) and
//! PostgreSQL (a throwaway database at `SLUICE_BENCH_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/test`; skipped with a note when unreachable).
//!
//! Run: `cargo bench -p sluice --bench store`. Criterion reports "thrpt" in
//! elements/s; one element is one durable accept. Figures: `BENCHMARKS-store.md`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::store::{NewMessage, Store};
use sqlx::Connection;

const CONCURRENCY: [u64; 3] = [1, 8, 64];

fn message(i: i64) -> NewMessage {
    let mut body =
        format!("From: app@example.com\r\nTo: a@example.org\r\nSubject: {i}\r\n\r\n").into_bytes();
    body.resize(1024, b'x');
    NewMessage {
        tenant_id: "bench".to_string(),
        idempotency_key: None,
        sender: "app@example.com".to_string(),
        recipients: vec!["a@example.org".to_string()],
        body: body.into(),
        tags: vec![],
        max_age_secs: 3600,
        header_message_id: None,
    }
}

/// Runs `total` accepts spread over `concurrency` tasks; returns the wall time.
async fn accepts(store: &Store, clock: &AtomicI64, concurrency: u64, total: u64) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let n = total / concurrency + u64::from(t < total % concurrency);
        let store = store.clone();
        let first = clock.fetch_add(i64::try_from(n).unwrap(), Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let at = first + i64::try_from(i).unwrap();
                store.accept(message(at), at).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn bench_backend(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, store: &Store) {
    let clock = AtomicI64::new(1_700_000_000_000);
    let mut group = c.benchmark_group(format!("accept/{name}"));
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(8));
    for concurrency in CONCURRENCY {
        group.bench_function(format!("concurrency_{concurrency}"), |b| {
            b.iter_custom(|iters| rt.block_on(accepts(store, &clock, concurrency, iters)));
        });
    }
    group.finish();
}

fn store_accept(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let sqlite = rt.block_on(Store::open(&url)).unwrap();
    bench_backend(c, &rt, "sqlite", &sqlite);
    drop(sqlite);

    let admin = std::env::var("SLUICE_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let name = format!("sluice_bench_{}", std::process::id());
    let created = rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>(())
    });
    if let Err(e) = created {
        eprintln!("skipping PostgreSQL: {admin} not usable: {e}");
        return;
    }
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
    let pg = rt.block_on(Store::open(&format!("{base}/{name}"))).unwrap();
    bench_backend(c, &rt, "postgres", &pg);
    drop(pg);
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .unwrap();
    });
}

criterion_group!(benches, store_accept);
criterion_main!(benches);
