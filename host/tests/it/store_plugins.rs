//! Tenant plugin versions in the store, against SQLite and PostgreSQL: numbering,
//! hashes, activation, rollback through the history, suspension, tenant scoping, and
//! concurrent uploads from two hosts.
//!
//! The harness is the conformance suite's (`store_conformance.rs`): a fresh SQLite file
//! or a throwaway PostgreSQL database per test; PostgreSQL at `SLUICE_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`) must be reachable unless
//! `SLUICE_SKIP_POSTGRES=1`.

use sha2::Digest;
use sluice::stage::Stage;
use sluice::store::{
    Backend, FailurePolicy, NewPluginVersion, NewTenant, PluginState, Store, StoreError,
};

struct Db {
    url: String,
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Db) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("store.db").display());
            let store = Store::open(&url).await.expect("opening sqlite store");
            body(Db {
                url,
                store,
                _dir: Some(dir),
            })
            .await
        }
        Backend::Postgres => {
            let Some((url, name)) = crate::pg_support::create_database("sluice_plugins").await
            else {
                return;
            };
            let store = Store::open(&url).await.expect("opening postgres store");
            let db = Db {
                url,
                store,
                _dir: None,
            };
            let result = tokio::spawn(body(db)).await;
            crate::pg_support::drop_database(&name).await;
            if let Err(e) = result {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(sluice::store::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run(sluice::store::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
}

both_backends!(
    versions_are_numbered_per_tenant_and_stage_with_hash_and_bytes,
    activate_switches_and_rollback_walks_back,
    suspension_is_reported_once_and_lifted_by_activation,
    tenants_do_not_see_each_others_plugins,
    concurrent_uploads_from_two_hosts_get_distinct_numbers,
    bad_input_is_refused,
    pruning_keeps_the_quota_and_spares_what_runs_or_rolls_back,
);

// ---------------------------------------------------------------- helpers

async fn tenant(store: &Store, id: &str) {
    store
        .create_tenant(
            NewTenant {
                id: id.into(),
                name: id.into(),
                allowed_sender_domains: vec!["example.com".into()],
                pools: vec!["pool:platform".into()],
                route_plugin: None,
                header_from_check: true,
            },
            1,
        )
        .await
        .unwrap();
}

/// Real components: the default plugins embedded in the binary.
fn component(n: usize) -> Vec<u8> {
    sluice::builtin::all()[n % sluice::builtin::all().len()]
        .wasm
        .to_vec()
}

fn upload(tenant: &str, stage: Stage, wasm: Vec<u8>) -> NewPluginVersion {
    NewPluginVersion {
        tenant_id: tenant.into(),
        stage,
        wasm,
        config: vec![("mode".into(), "fast".into())],
        timeout_ms: Some(40),
        memory_bytes: None,
        calls_in_flight: Some(3),
        on_failure: FailurePolicy::Defer,
        uploaded_by: "sluice_abc123".into(),
    }
}

// ---------------------------------------------------------------- tests

async fn versions_are_numbered_per_tenant_and_stage_with_hash_and_bytes(db: Db) {
    let s = &db.store;
    tenant(s, "acme").await;
    let v1 = s
        .add_plugin_version(upload("acme", Stage::Route, component(0)), 10)
        .await
        .unwrap();
    let v2 = s
        .add_plugin_version(upload("acme", Stage::Route, component(1)), 20)
        .await
        .unwrap();
    let b1 = s
        .add_plugin_version(upload("acme", Stage::Bill, component(2)), 30)
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version, b1.version), (1, 2, 1));
    assert_eq!(v1.sha256, hex::encode(sha2::Sha256::digest(component(0))));
    assert_eq!(v1.size, component(0).len() as u64);
    assert_eq!(v1.state, PluginState::Ready);
    assert_eq!(v1.config, vec![("mode".to_string(), "fast".to_string())]);
    // The policy and the concurrency cap come back as stored (compared in full below).
    assert_eq!(
        (v1.calls_in_flight, v1.on_failure),
        (Some(3), FailurePolicy::Defer)
    );

    let all = s.list_plugin_versions("acme", None).await.unwrap();
    assert_eq!(
        all.iter().map(|v| (v.stage, v.version)).collect::<Vec<_>>(),
        vec![(Stage::Bill, 1), (Stage::Route, 1), (Stage::Route, 2)]
    );
    let route = s
        .list_plugin_versions("acme", Some(Stage::Route))
        .await
        .unwrap();
    assert_eq!(route, vec![v1.clone(), v2.clone()]);
    assert_eq!(
        s.get_plugin_version("acme", Stage::Route, 2).await.unwrap(),
        Some(v2)
    );
    assert_eq!(
        s.get_plugin_version("acme", Stage::Route, 3).await.unwrap(),
        None
    );
    assert_eq!(
        s.plugin_wasm("acme", Stage::Route, 1).await.unwrap(),
        Some(component(0))
    );
    // Nothing is active until asked.
    assert_eq!(s.active_plugin("acme", Stage::Route).await.unwrap(), None);
}

async fn activate_switches_and_rollback_walks_back(db: Db) {
    let s = &db.store;
    tenant(s, "acme").await;
    for n in 0..3 {
        s.add_plugin_version(upload("acme", Stage::Route, component(n)), 10)
            .await
            .unwrap();
    }
    let err = s
        .rollback_plugin("acme", Stage::Route, 11)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    let a = s
        .activate_plugin("acme", Stage::Route, 1, 100)
        .await
        .unwrap();
    assert_eq!((a.version.version, a.previous.clone()), (1, vec![]));
    assert_eq!(a.activated_at_ms, 100);
    s.activate_plugin("acme", Stage::Route, 3, 200)
        .await
        .unwrap();
    let a = s
        .activate_plugin("acme", Stage::Route, 2, 300)
        .await
        .unwrap();
    assert_eq!((a.version.version, a.previous.clone()), (2, vec![1, 3]));
    // Re-activating the active version does not grow the history.
    let a = s
        .activate_plugin("acme", Stage::Route, 2, 310)
        .await
        .unwrap();
    assert_eq!(a.previous, vec![1, 3]);
    assert_eq!(
        s.active_plugin("acme", Stage::Route)
            .await
            .unwrap()
            .map(|a| a.version.version),
        Some(2)
    );

    let r = s.rollback_plugin("acme", Stage::Route, 400).await.unwrap();
    assert_eq!((r.version.version, r.previous.clone()), (3, vec![1]));
    assert_eq!(
        r.version.sha256,
        hex::encode(sha2::Sha256::digest(component(2)))
    );
    let r = s.rollback_plugin("acme", Stage::Route, 500).await.unwrap();
    assert_eq!((r.version.version, r.previous.clone()), (1, vec![]));
    let err = s
        .rollback_plugin("acme", Stage::Route, 600)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("no previously active version")),
        "{err}"
    );
    // Still version 1 after the refused rollback.
    assert_eq!(
        s.active_plugin("acme", Stage::Route)
            .await
            .unwrap()
            .unwrap()
            .version
            .version,
        1
    );

    let err = s
        .activate_plugin("acme", Stage::Route, 9, 700)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(m) if m.contains("version 9")),
        "{err}"
    );
    let active = s.list_active_plugins().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].version.tenant_id, "acme");
}

async fn suspension_is_reported_once_and_lifted_by_activation(db: Db) {
    let s = &db.store;
    tenant(s, "acme").await;
    s.add_plugin_version(upload("acme", Stage::Route, component(0)), 10)
        .await
        .unwrap();
    s.activate_plugin("acme", Stage::Route, 1, 20)
        .await
        .unwrap();
    assert!(
        s.suspend_plugin("acme", Stage::Route, 1, "5 timeouts in 60s", 30)
            .await
            .unwrap()
    );
    // A second host suspending the same version finds it done already.
    assert!(
        !s.suspend_plugin("acme", Stage::Route, 1, "again", 31)
            .await
            .unwrap()
    );
    assert!(
        !s.suspend_plugin("acme", Stage::Route, 7, "no such", 31)
            .await
            .unwrap()
    );
    let a = s
        .active_plugin("acme", Stage::Route)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.version.state, PluginState::Suspended);
    assert_eq!(a.version.state_reason.as_deref(), Some("5 timeouts in 60s"));
    assert_eq!(a.version.state_changed_at_ms, Some(30));

    let a = s
        .activate_plugin("acme", Stage::Route, 1, 40)
        .await
        .unwrap();
    assert_eq!(a.version.state, PluginState::Ready);
    assert_eq!(a.version.state_reason, None);
}

async fn tenants_do_not_see_each_others_plugins(db: Db) {
    let s = &db.store;
    tenant(s, "a").await;
    tenant(s, "b").await;
    s.add_plugin_version(upload("a", Stage::Route, component(0)), 10)
        .await
        .unwrap();
    let b1 = s
        .add_plugin_version(upload("b", Stage::Route, component(1)), 10)
        .await
        .unwrap();
    assert_eq!(b1.version, 1, "numbering is per tenant");
    assert_eq!(s.list_plugin_versions("b", None).await.unwrap(), vec![b1]);
    // b cannot activate a's versions: b has only version 1.
    let err = s
        .activate_plugin("b", Stage::Route, 2, 20)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    s.activate_plugin("a", Stage::Route, 1, 20).await.unwrap();
    assert_eq!(s.active_plugin("b", Stage::Route).await.unwrap(), None);
    assert!(s.plugin_wasm("b", Stage::Bill, 1).await.unwrap().is_none());
}

async fn concurrent_uploads_from_two_hosts_get_distinct_numbers(db: Db) {
    tenant(&db.store, "acme").await;
    let other = Store::open(&db.url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = if i % 2 == 0 {
            db.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            s.add_plugin_version(upload("acme", Stage::Route, component(i)), 10)
                .await
                .unwrap()
                .version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<u32>>());
}

async fn bad_input_is_refused(db: Db) {
    let s = &db.store;
    let err = s
        .add_plugin_version(upload("ghost", Stage::Route, component(0)), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound(m) if m.contains("\"ghost\"")),
        "{err}"
    );
    tenant(s, "acme").await;
    let err = s
        .add_plugin_version(upload("acme", Stage::Route, Vec::new()), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

async fn pruning_keeps_the_quota_and_spares_what_runs_or_rolls_back(db: Db) {
    let s = &db.store;
    tenant(s, "acme").await;
    tenant(s, "other").await;
    // Route: versions 1..=6, each activated in turn (history 1..=5, 6 active).
    for n in 1..=6u32 {
        s.add_plugin_version(
            upload("acme", Stage::Route, component(n as usize)),
            i64::from(n),
        )
        .await
        .unwrap();
        s.activate_plugin("acme", Stage::Route, n, 100 + i64::from(n))
            .await
            .unwrap();
    }
    // Bill: versions 1 and 2, uploaded later and never activated.
    for n in 1..=2u32 {
        s.add_plugin_version(upload("acme", Stage::Bill, component(4)), 50 + i64::from(n))
            .await
            .unwrap();
    }
    s.add_plugin_version(upload("other", Stage::Route, component(0)), 1)
        .await
        .unwrap();
    // Under the quota: nothing goes.
    assert_eq!(s.prune_plugin_versions("acme", 8).await.unwrap(), vec![]);
    // Two over: the two oldest of the route versions, which nothing spares.
    let pruned = s.prune_plugin_versions("acme", 6).await.unwrap();
    assert_eq!(pruned, vec![(Stage::Route, 1), (Stage::Route, 2)]);
    // Spared: route 6 (active, latest), 5, 4, 3 (the rollbacks), bill 2 (latest); only
    // bill 1 can still go, however small the quota.
    let pruned = s.prune_plugin_versions("acme", 1).await.unwrap();
    assert_eq!(pruned, vec![(Stage::Bill, 1)]);
    let left: Vec<(Stage, u32)> = s
        .list_plugin_versions("acme", None)
        .await
        .unwrap()
        .iter()
        .map(|v| (v.stage, v.version))
        .collect();
    assert_eq!(
        left,
        vec![
            (Stage::Bill, 2),
            (Stage::Route, 3),
            (Stage::Route, 4),
            (Stage::Route, 5),
            (Stage::Route, 6),
        ]
    );
    // The pruned versions left the history: rollbacks walk 5, 4, 3, then stop.
    let a = s
        .active_plugin("acme", Stage::Route)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.previous, vec![3, 4, 5]);
    for expected in [5, 4, 3] {
        let a = s.rollback_plugin("acme", Stage::Route, 200).await.unwrap();
        assert_eq!(a.version.version, expected);
    }
    assert!(s.rollback_plugin("acme", Stage::Route, 201).await.is_err());
    // Another tenant's versions are not counted or touched.
    assert_eq!(
        s.list_plugin_versions("other", None).await.unwrap().len(),
        1
    );
}
