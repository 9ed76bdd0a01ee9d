//! One conformance suite for both stores: every test is written once as an async fn
//! taking a [`Db`] and instantiated for SQLite (a fresh temp file per test) and
//! PostgreSQL (a throwaway database per test, dropped at the end).
//!
//! PostgreSQL is expected at `SLUICE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); when it cannot be reached the PostgreSQL
//! tests FAIL, unless `SLUICE_SKIP_POSTGRES=1` says to skip them.

use std::collections::HashSet;

use serde_json::json;
use sluice::store::{
    AccountCharge, AccountUpdate, Backend, BalanceMode, EventKind, Joined, KeyScope, LeaseKey,
    NewAccount, NewCharge, NewEvent, NewMessage, NewRelay, NewTenant, NodeJoin, Outcome,
    PendingUsage, RatedUsage, RecipientState, RelayState, RelayUpdate, Reservation, Settlement,
    Store, StoreError, TenantEvent, TenantUpdate,
};

// ---------------------------------------------------------------- harness

/// A database for one test: its URL, and a way to open more handles on it (a second
/// host).
struct Db {
    url: String,
    store: Store,
    // Keeps the SQLite file alive for the test.
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    /// Another handle on the same database, with its own pools and writer: a second
    /// host.
    async fn second_host(&self) -> Store {
        Store::open(&self.url)
            .await
            .expect("opening a second handle")
    }
}

async fn sqlite_db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = Store::open(&url).await.expect("opening sqlite store");
    Db {
        url,
        store,
        _dir: Some(dir),
    }
}

/// Runs `body` against a fresh database of `backend`, dropping a PostgreSQL database
/// afterwards even when the body panics.
async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Db) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    match backend {
        Backend::Sqlite => body(sqlite_db().await).await,
        Backend::Postgres => {
            let Some((url, name)) = crate::pg_support::create_database("sluice_test").await else {
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

/// Instantiates each named test for both backends.
macro_rules! conformance {
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

conformance!(
    accept_and_read_back,
    accept_rejects_bad_input,
    idempotency_key_returns_the_first_message,
    tenants_are_isolated,
    lease_record_changes_state_and_appends_events,
    expired_lease_is_taken_over_and_late_record_refused,
    a_batch_of_outcomes_applies_only_where_the_lease_is_still_ours,
    concurrent_leasing_never_hands_out_a_recipient_twice,
    release_on_shutdown_puts_work_back,
    renew_keeps_a_lease_from_expiring,
    leasing_can_leave_out_tenants_and_renewal_says_which_leases_were_kept,
    a_look_asks_each_tenant_with_room_past_a_full_tenants_backlog,
    hot_queries_read_by_index,
    work_waiting_for_a_relay_is_woken_when_it_answers,
    deferred_work_is_retried_now_by_message_relay_domain_or_tenant,
    requeue_from_the_exception_queue,
    relay_stats_count_windows_from_events,
    relay_stats_are_pruned_by_age,
    relay_stats_are_kept_per_tenant_and_summed_for_the_platform,
    accepted_leased_recipients_are_delivered_without_a_lease_from_the_store,
    in_flight_follows_routed_events,
    api_keys_are_found_by_hash_and_revoked,
    tenants_crud,
    relays_crud,
    group_commit_64_concurrent_accepts,
    group_commit_shares_rounds_between_accepts_and_outcomes,
    group_commit_mixes_keyed_and_multi_recipient_messages_past_one_statement,
    final_outcomes_become_usage_events_in_the_same_transaction,
    a_replayed_batch_never_charges_twice,
    log_transfers_become_usage_once_however_often_they_are_read,
    concurrent_raters_charge_exactly_once,
    failed_ratings_stay_unrated_and_back_off,
    balance_is_credits_minus_charges_exactly,
    reservations_cover_or_short_and_are_released_by_the_charge,
    a_credit_releases_held_recipients_once_per_reference,
    usage_and_invoice_sums_are_per_tenant,
    billing_settings_and_volume_settlement,
    a_negative_charge_that_is_not_a_credit_writes_nothing_of_its_batch,
    accounts_and_their_logins_are_per_tenant,
    account_charges_are_written_once_under_replay_and_a_takeover,
    account_usage_gathers_into_one_batch_that_is_charged_once,
    a_batch_over_many_accounts_is_charged_once_exactly,
    a_tenants_account_rater_cannot_touch_the_platforms_books,
    an_account_key_is_scoped_to_its_account_and_dies_with_it,
    a_node_id_is_one_processs_and_a_restart_takes_back_its_leases,
    a_dead_nodes_leases_are_taken_over_at_once_and_a_live_nodes_never,
    one_leader_at_a_time_and_another_takes_over_when_it_dies,
    event_cursors_are_per_tenant_gap_free_and_in_write_order,
    concurrent_writers_and_sequencers_on_two_hosts_never_show_a_reader_a_gap,
    an_event_committed_late_gets_a_later_cursor_and_is_never_skipped,
    old_events_are_pruned_and_cursors_go_on,
    a_suspension_is_one_tenant_event_about_no_message,
    low_balance_is_one_event_per_crossing,
    webhooks_are_kept_per_owner_with_cursors_from_now_and_bounded,
    a_webhooks_cursor_moves_only_for_the_lease_holder_after_success,
    a_webhook_failing_past_its_window_is_paused_once_with_an_event,
    held_and_suspended_work_is_never_leased_and_work_in_flight_is_held_after_its_attempt,
    bulk_controls_go_by_index_and_a_release_after_a_big_hold_releases_everything,
    a_rare_tag_among_many_messages_is_found_through_the_tag_index,
    a_webhook_checkpoint_moves_cursors_keeps_attempts_and_leases_go_back_on_a_stop,
    portal_sessions_are_found_by_hash_end_with_their_key_and_are_bounded,
);

// ---------------------------------------------------------------- fixtures

const T0: i64 = 1_700_000_000_000;

fn message(tenant: &str, recipients: &[&str]) -> NewMessage {
    NewMessage {
        tenant_id: tenant.to_string(),
        idempotency_key: None,
        sender: "app@example.com".to_string(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        body: b"From: app@example.com\r\nTo: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
            .to_vec()
            .into(),
        tags: vec!["welcome".to_string()],
        max_age_secs: 3600,
        header_message_id: None,
    }
}

fn outcome(message_id: &str, idx: i32, state: RecipientState, event: EventKind) -> Outcome {
    Outcome {
        message_id: message_id.to_string(),
        recipient_idx: idx,
        new_state: state,
        next_attempt_at_ms: None,
        relay: Some("relay-a".to_string()),
        reply: Some("250 2.0.0 ok".to_string()),
        event,
        detail: json!({ "latency_ms": 120 }),
        waiting_for_relay: None,
    }
}

async fn tenant(store: &Store, id: &str) {
    store
        .create_tenant(
            NewTenant {
                id: id.to_string(),
                name: format!("Tenant {id}"),
                allowed_sender_domains: vec!["Example.com".to_string()],
                pools: vec!["shared".to_string()],
                route_plugin: None,
                header_from_check: true,
            },
            T0,
        )
        .await
        .unwrap();
}

fn relay(id: &str) -> NewRelay {
    NewRelay {
        id: id.to_string(),
        url: format!("smtp://{id}.example.net:25"),
        auth_user: Some("user".to_string()),
        auth_secret_ref: Some("env:RELAY_SECRET".to_string()),
        connection_limit: 10,
        rate_limit_per_sec: Some(50),
        weight: 100,
        tags: vec!["shared".to_string()],
        owner: None,
        state: RelayState::Active,
        tls_ca_file: None,
    }
}

fn kinds(events: &[sluice::store::Event]) -> Vec<(EventKind, Option<i32>)> {
    events.iter().map(|e| (e.kind, e.recipient_idx)).collect()
}

// ---------------------------------------------------------------- tests

async fn accept_and_read_back(db: Db) {
    let s = &db.store;
    let msg = message("t1", &["a@example.org", "B@Example.NET"]);
    let body = msg.body.clone();
    let acc = s.accept(msg, T0).await.unwrap();
    assert!(!acc.duplicate);
    assert_eq!(acc.id.len(), 26, "a ULID: {}", acc.id);
    assert_eq!(
        acc.recipients,
        vec![
            ("a@example.org".to_string(), RecipientState::Queued),
            ("B@Example.NET".to_string(), RecipientState::Queued),
        ]
    );
    assert_eq!(s.message_body(&acc.id).await.unwrap(), *body);

    let view = s
        .get_message("t1", &acc.id)
        .await
        .unwrap()
        .expect("message");
    assert_eq!(view.tenant_id, "t1");
    assert_eq!(view.sender, "app@example.com");
    assert_eq!(view.size, body.len() as u64);
    assert_eq!(view.tags, vec!["welcome"]);
    assert_eq!(view.created_at_ms, T0);
    assert_eq!(view.recipients.len(), 2);
    for (i, r) in view.recipients.iter().enumerate() {
        assert_eq!(r.recipient_idx, i as i32);
        assert_eq!(r.state, RecipientState::Queued);
        assert_eq!(r.attempts, 0);
        assert_eq!(r.next_attempt_at_ms, Some(T0));
    }
    assert_eq!(
        kinds(&view.events),
        vec![
            (EventKind::Accepted, Some(0)),
            (EventKind::Accepted, Some(1))
        ]
    );
    assert!(view.events[0].seq < view.events[1].seq);
    assert_eq!(view.events[1].detail, json!({ "address": "B@Example.NET" }));

    // Ids sort by acceptance.
    let later = s
        .accept(message("t1", &["c@example.org"]), T0 + 1)
        .await
        .unwrap();
    assert!(later.id > acc.id);

    let missing = s.message_body("01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

async fn accept_rejects_bad_input(db: Db) {
    let s = &db.store;
    let cases = [
        (message("t1", &[]), "recipient"),
        (message("t1", &["not-an-address"]), "not-an-address"),
        (
            NewMessage {
                body: Vec::new().into(),
                ..message("t1", &["a@example.org"])
            },
            "body",
        ),
        (
            NewMessage {
                sender: "nobody".to_string(),
                ..message("t1", &["a@example.org"])
            },
            "nobody",
        ),
    ];
    for (msg, needle) in cases {
        match s.accept(msg, T0).await {
            Err(StoreError::Invalid(text)) => {
                assert!(text.starts_with("accept: "), "{text}");
                assert!(text.contains(needle), "{text} should mention {needle}");
            }
            other => panic!("expected Invalid mentioning {needle}, got {other:?}"),
        }
    }
}

async fn idempotency_key_returns_the_first_message(db: Db) {
    let s = &db.store;
    let keyed = |tenant: &str| NewMessage {
        idempotency_key: Some("order-42".to_string()),
        ..message(tenant, &["a@example.org"])
    };
    let first = s
        .accept(
            NewMessage {
                header_message_id: Some("<first@example.com>".into()),
                ..keyed("t1")
            },
            T0,
        )
        .await
        .unwrap();
    let again = s
        .accept(
            NewMessage {
                header_message_id: Some("<repeat@example.com>".into()),
                ..keyed("t1")
            },
            T0 + 5,
        )
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    assert_eq!(again.recipients, first.recipients);
    // The repeat is told the stored message's Message-ID, not its own.
    assert_eq!(
        again.header_message_id.as_deref(),
        Some("<first@example.com>")
    );
    // Nothing was written the second time: still one accepted event.
    let view = s.get_message("t1", &first.id).await.unwrap().unwrap();
    assert_eq!(view.events.len(), 1);
    assert_eq!(view.idempotency_key.as_deref(), Some("order-42"));
    // The key is per tenant.
    let other = s.accept(keyed("t2"), T0).await.unwrap();
    assert!(!other.duplicate);
    assert_ne!(other.id, first.id);

    // Concurrent accepts with one key: exactly one message.
    let mut handles = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            s.accept(
                NewMessage {
                    idempotency_key: Some("burst".to_string()),
                    ..message("t1", &["a@example.org"])
                },
                T0,
            )
            .await
            .unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut originals = 0;
    for h in handles {
        let acc = h.await.unwrap();
        ids.insert(acc.id);
        originals += usize::from(!acc.duplicate);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(originals, 1);
}

async fn tenants_are_isolated(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(message("t1", &["a@example.org"]), T0)
        .await
        .unwrap();
    assert!(s.get_message("t1", &acc.id).await.unwrap().is_some());
    assert!(s.get_message("t2", &acc.id).await.unwrap().is_none());
    assert!(s.get_message("t1", "no-such-id").await.unwrap().is_none());
}

async fn lease_record_changes_state_and_appends_events(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(message("t1", &["a@example.org", "b@example.net"]), T0)
        .await
        .unwrap();
    // Not due before its time.
    assert!(
        s.lease_due("h1", T0 - 1, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let leases = s.lease_due("h1", T0, 30_000, 10).await.unwrap();
    assert_eq!(leases.len(), 2);
    let l = &leases[0];
    assert_eq!(
        (l.message_id.as_str(), l.recipient_idx, l.address.as_str()),
        (acc.id.as_str(), 0, "a@example.org")
    );
    assert_eq!(leases[1].domain, "example.net");
    assert_eq!(l.tenant_id, "t1");
    assert_eq!(l.attempts, 0);
    assert_eq!(l.created_at_ms, T0);
    assert_eq!(l.max_age_secs, 3600);
    assert_eq!(l.sender, "app@example.com");
    assert_eq!(l.tags, vec!["welcome"]);
    assert_eq!(l.size, message("t1", &[]).body.len() as u64);
    assert_eq!(l.lease_until_ms, T0 + 30_000);
    // Leased work is not handed out again.
    assert!(
        s.lease_due("h2", T0 + 1, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert!(
        view.recipients
            .iter()
            .all(|r| r.state == RecipientState::Delivering)
    );

    let deferred = Outcome {
        next_attempt_at_ms: Some(T0 + 60_000),
        reply: Some("451 4.7.1 try later".to_string()),
        detail: json!({ "latency_ms": 300, "class": "greylisted" }),
        ..outcome(&acc.id, 1, RecipientState::Deferred, EventKind::Deferred)
    };
    let applied = s
        .record(
            "h1",
            vec![
                outcome(&acc.id, 0, RecipientState::Delivered, EventKind::Delivered),
                deferred,
            ],
            T0 + 100,
        )
        .await
        .unwrap();
    assert_eq!(applied, 2);

    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    let r0 = &view.recipients[0];
    assert_eq!(r0.state, RecipientState::Delivered);
    assert_eq!(r0.attempts, 1);
    assert_eq!(r0.last_relay.as_deref(), Some("relay-a"));
    assert_eq!(r0.last_reply.as_deref(), Some("250 2.0.0 ok"));
    let r1 = &view.recipients[1];
    assert_eq!(r1.state, RecipientState::Deferred);
    assert_eq!(r1.next_attempt_at_ms, Some(T0 + 60_000));
    assert_eq!(r1.last_reply.as_deref(), Some("451 4.7.1 try later"));
    assert_eq!(
        kinds(&view.events),
        vec![
            (EventKind::Accepted, Some(0)),
            (EventKind::Accepted, Some(1)),
            (EventKind::Delivered, Some(0)),
            (EventKind::Deferred, Some(1)),
        ]
    );
    let ev = &view.events[3];
    assert_eq!(ev.relay.as_deref(), Some("relay-a"));
    assert_eq!(ev.at_ms, T0 + 100);
    assert_eq!(ev.tenant_id, "t1");
    assert_eq!(ev.detail["class"], "greylisted");

    // The deferred recipient comes back when due, with its attempt counted.
    assert!(
        s.lease_due("h1", T0 + 59_999, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = s.lease_due("h1", T0 + 60_000, 30_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].recipient_idx, again[0].attempts), (1, 1));
    // A second record for a finished recipient is skipped.
    let late = s
        .record(
            "h1",
            vec![outcome(
                &acc.id,
                0,
                RecipientState::Failed,
                EventKind::Failed,
            )],
            T0 + 60_001,
        )
        .await
        .unwrap();
    assert_eq!(late, 0);
    // An outcome without a relay (e.g. the route plugin deferred) is no attempt.
    let no_attempt = Outcome {
        relay: None,
        next_attempt_at_ms: Some(T0 + 120_000),
        ..outcome(&acc.id, 1, RecipientState::Deferred, EventKind::Deferred)
    };
    assert_eq!(
        s.record("h1", vec![no_attempt], T0 + 60_002).await.unwrap(),
        1
    );
    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert_eq!(view.recipients[1].attempts, 1);
    assert_eq!(view.recipients[1].last_relay.as_deref(), Some("relay-a"));

    let bad = s
        .record(
            "h1",
            vec![outcome(
                &acc.id,
                1,
                RecipientState::Delivering,
                EventKind::Attempted,
            )],
            T0,
        )
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
}

/// One `record` call with many outcomes (the recorder's batches): each applies only
/// where the recipient is still delivering under the caller's lease, with its event
/// and usage; a recipient named twice gets the first outcome only.
async fn a_batch_of_outcomes_applies_only_where_the_lease_is_still_ours(db: Db) {
    let s = &db.store;
    let other_host = db.second_host().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let acc = s
            .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
            .await
            .unwrap();
        ids.push(acc.id);
    }
    let leased = s.lease_due("h1", T0, 10_000, 100).await.unwrap();
    assert_eq!(leased.len(), 10);
    // h1 keeps renewing all but the last message's leases; those lapse and h2 takes them.
    let kept: Vec<_> = leased
        .iter()
        .filter(|l| l.message_id != ids[4])
        .map(|l| l.key())
        .collect();
    assert_eq!(
        s.renew_leases("h1", &kept, T0 + 5_000, 10_000)
            .await
            .unwrap(),
        8
    );
    let taken = other_host
        .lease_due("h2", T0 + 10_000, 10_000, 100)
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|l| l.message_id == ids[4]));
    let mut outcomes: Vec<Outcome> = Vec::new();
    for id in &ids {
        outcomes.push(outcome(
            id,
            0,
            RecipientState::Delivered,
            EventKind::Delivered,
        ));
        outcomes.push(outcome(id, 1, RecipientState::Failed, EventKind::Failed));
    }
    // Message 4's recipients are h2's now: refused.
    let applied = s.record("h1", outcomes, T0 + 10_001).await.unwrap();
    assert_eq!(applied, 8);
    for (i, id) in ids.iter().enumerate() {
        let view = s.get_message("t1", id).await.unwrap().unwrap();
        let states: Vec<RecipientState> = view.recipients.iter().map(|r| r.state).collect();
        if i < 4 {
            assert_eq!(
                states,
                [RecipientState::Delivered, RecipientState::Failed],
                "message {i}"
            );
            // accepted ×2, then one outcome event per recipient
            assert_eq!(view.events.len(), 4, "message {i}");
        } else {
            assert!(
                states.iter().all(|s| *s == RecipientState::Delivering),
                "message {i}: {states:?}"
            );
        }
    }
    // A recipient named twice in one batch: the first outcome applies, the second finds
    // it no longer delivering.
    let acc = s
        .accept(message("t1", &["c@example.org"]), T0 + 30_000)
        .await
        .unwrap();
    let leased = s.lease_due("h1", T0 + 30_000, 10_000, 100).await.unwrap();
    assert!(leased.iter().any(|l| l.message_id == acc.id));
    let twice = vec![
        outcome(&acc.id, 0, RecipientState::Delivered, EventKind::Delivered),
        outcome(&acc.id, 0, RecipientState::Failed, EventKind::Failed),
    ];
    assert_eq!(s.record("h1", twice, T0 + 30_001).await.unwrap(), 1);
    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert_eq!(view.recipients[0].state, RecipientState::Delivered);
}

async fn expired_lease_is_taken_over_and_late_record_refused(db: Db) {
    let s = &db.store;
    let other_host = db.second_host().await;
    let acc = s
        .accept(message("t1", &["a@example.org"]), T0)
        .await
        .unwrap();
    let first = s.lease_due("h1", T0, 10_000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    // Still leased just before expiry.
    assert!(
        other_host
            .lease_due("h2", T0 + 9_999, 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // h1 crashed; its lease expires and h2 takes the work.
    let taken = other_host
        .lease_due("h2", T0 + 10_000, 10_000, 10)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].message_id, acc.id);
    assert_eq!(taken[0].lease_until_ms, T0 + 20_000);

    // h1 comes back and reports: refused, nothing changes.
    let late = s
        .record(
            "h1",
            vec![outcome(
                &acc.id,
                0,
                RecipientState::Delivered,
                EventKind::Delivered,
            )],
            T0 + 10_001,
        )
        .await
        .unwrap();
    assert_eq!(late, 0);
    assert_eq!(
        s.renew_leases(
            "h1",
            &[LeaseKey {
                message_id: acc.id.clone(),
                recipient_idx: 0
            }],
            T0 + 10_001,
            10_000
        )
        .await
        .unwrap(),
        0
    );
    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert_eq!(view.recipients[0].state, RecipientState::Delivering);
    assert_eq!(view.recipients[0].attempts, 0);
    assert_eq!(view.events.len(), 1);

    // h2's outcome is applied.
    let applied = other_host
        .record(
            "h2",
            vec![outcome(
                &acc.id,
                0,
                RecipientState::Delivered,
                EventKind::Delivered,
            )],
            T0 + 10_002,
        )
        .await
        .unwrap();
    assert_eq!(applied, 1);
    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert_eq!(view.recipients[0].state, RecipientState::Delivered);
}

async fn concurrent_leasing_never_hands_out_a_recipient_twice(db: Db) {
    let s = &db.store;
    let second = db.second_host().await;
    let mut expected = HashSet::new();
    for i in 0..100 {
        let acc = s
            .accept(message("t1", &["a@example.org", "b@example.org"]), T0 + i)
            .await
            .unwrap();
        expected.insert((acc.id.clone(), 0));
        expected.insert((acc.id, 1));
    }
    // Two hosts (two pools) lease in small batches at the same time until nothing is
    // left.
    let drain = |store: Store, owner: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store.lease_due(owner, T0 + 1_000, 60_000, 7).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|l| (l.message_id, l.recipient_idx)));
            }
            got
        })
    };
    let (a, b, c) = tokio::join!(
        drain(s.clone(), "h1"),
        drain(second.clone(), "h2"),
        drain(second.clone(), "h3")
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let mut seen = HashSet::new();
    for key in a.iter().chain(&b).chain(&c) {
        assert!(seen.insert(key.clone()), "{key:?} was leased twice");
    }
    assert_eq!(seen, expected);
}

async fn release_on_shutdown_puts_work_back(db: Db) {
    let s = &db.store;
    let a = s
        .accept(message("t1", &["a@example.org"]), T0)
        .await
        .unwrap();
    let b = s
        .accept(message("t1", &["b@example.org"]), T0)
        .await
        .unwrap();
    // b was attempted once before and deferred.
    s.lease_due("h1", T0, 30_000, 10).await.unwrap();
    let deferred = Outcome {
        next_attempt_at_ms: Some(T0 + 10),
        ..outcome(&b.id, 0, RecipientState::Deferred, EventKind::Deferred)
    };
    s.record("h1", vec![deferred], T0 + 5).await.unwrap();
    let leased = s.lease_due("h1", T0 + 10, 30_000, 10).await.unwrap();
    assert_eq!(leased.len(), 1);
    // Another owner's lease is not touched.
    let c = s
        .accept(message("t1", &["c@example.org"]), T0 + 11)
        .await
        .unwrap();
    assert_eq!(
        s.lease_due("h2", T0 + 11, 30_000, 10).await.unwrap().len(),
        1
    );

    assert_eq!(s.release_leases("h1", T0 + 20).await.unwrap(), 2);
    let state = |id: String| async move {
        s.get_message("t1", &id).await.unwrap().unwrap().recipients[0].clone()
    };
    let ra = state(a.id.clone()).await;
    assert_eq!(
        (ra.state, ra.next_attempt_at_ms),
        (RecipientState::Queued, Some(T0 + 20))
    );
    let rb = state(b.id.clone()).await;
    assert_eq!(rb.state, RecipientState::Deferred);
    assert_eq!(state(c.id.clone()).await.state, RecipientState::Delivering);
    // Released work is due at once for the next host.
    let next = s.lease_due("h3", T0 + 20, 30_000, 10).await.unwrap();
    let ids: HashSet<_> = next.into_iter().map(|l| l.message_id).collect();
    assert_eq!(ids, HashSet::from([a.id, b.id]));
}

async fn renew_keeps_a_lease_from_expiring(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(message("t1", &["a@example.org"]), T0)
        .await
        .unwrap();
    let leases = s.lease_due("h1", T0, 10_000, 10).await.unwrap();
    let keys: Vec<_> = leases.iter().map(|l| l.key()).collect();
    assert_eq!(
        s.renew_leases("h1", &keys, T0 + 9_000, 10_000)
            .await
            .unwrap(),
        1
    );
    // Past the first expiry but within the renewed one: not taken over.
    assert!(
        s.lease_due("h2", T0 + 15_000, 10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let taken = s.lease_due("h2", T0 + 19_000, 10_000, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].message_id, acc.id);
}

/// Deferred work that waits for a relay (its last try got no answer from it, or no
/// relay was up) is made due when that relay answers again; work deferred for any other
/// reason, or waiting for another relay, keeps its retry time; a later outcome clears
/// the mark.
async fn work_waiting_for_a_relay_is_woken_when_it_answers(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(
            message(
                "t1",
                &[
                    "a@example.org",
                    "b@example.org",
                    "c@example.org",
                    "d@example.org",
                ],
            ),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(s.lease_due("h1", T0, 60_000, 10).await.unwrap().len(), 4);
    let later = T0 + 600_000;
    let deferred = |idx: i32, waiting: Option<&str>| Outcome {
        next_attempt_at_ms: Some(later),
        reply: None,
        waiting_for_relay: waiting.map(str::to_owned),
        ..outcome(&acc.id, idx, RecipientState::Deferred, EventKind::Deferred)
    };
    let outcomes = vec![
        deferred(0, Some("relay-a")),
        deferred(1, Some(sluice::store::ANY_RELAY)),
        deferred(2, Some("relay-b")),
        deferred(3, None),
    ];
    assert_eq!(s.record("h1", outcomes, T0 + 1).await.unwrap(), 4);
    assert!(
        s.lease_due("h2", T0 + 2, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        s.wake_waiting_for_relay("relay-a", T0 + 3).await.unwrap(),
        2
    );
    // Woken once: the mark is gone, so a second probe's wake touches nothing.
    assert_eq!(
        s.wake_waiting_for_relay("relay-a", T0 + 4).await.unwrap(),
        0
    );
    let mut due: Vec<i32> = s
        .lease_due("h2", T0 + 5, 60_000, 10)
        .await
        .unwrap()
        .iter()
        .map(|l| l.recipient_idx)
        .collect();
    due.sort_unstable();
    assert_eq!(
        due,
        vec![0, 1],
        "relay-a's and any relay's work, nothing else"
    );

    // Delivered now: a later wake for relay-a finds nothing of theirs.
    let done = vec![
        outcome(&acc.id, 0, RecipientState::Delivered, EventKind::Delivered),
        outcome(&acc.id, 1, RecipientState::Delivered, EventKind::Delivered),
    ];
    assert_eq!(s.record("h2", done, T0 + 6).await.unwrap(), 2);
    assert_eq!(
        s.wake_waiting_for_relay("relay-b", T0 + 7).await.unwrap(),
        1
    );
    assert_eq!(
        s.wake_waiting_for_relay("relay-b", T0 + 8).await.unwrap(),
        0
    );
}

/// `retry_deferred` makes due now exactly the deferred recipients its filter selects
/// (every field given must match), and nothing in another state or already due.
async fn deferred_work_is_retried_now_by_message_relay_domain_or_tenant(db: Db) {
    use sluice::store::RetryFilter;
    let s = &db.store;
    // m1 (t1): a@x.test via relay-a, b@y.test via relay-b; m2 (t1): c@x.test via relay-a,
    // delivered; m3 (t2): d@x.test waiting for relay-a.
    let m1 = s
        .accept(message("t1", &["a@x.test", "b@y.test"]), T0)
        .await
        .unwrap();
    let m2 = s.accept(message("t1", &["c@x.test"]), T0).await.unwrap();
    let m3 = s.accept(message("t2", &["d@x.test"]), T0).await.unwrap();
    assert_eq!(s.lease_due("h1", T0, 60_000, 10).await.unwrap().len(), 4);
    let later = T0 + 600_000;
    let deferred = |id: &str, idx: i32, relay: Option<&str>, waiting: Option<&str>| Outcome {
        next_attempt_at_ms: Some(later),
        relay: relay.map(str::to_owned),
        waiting_for_relay: waiting.map(str::to_owned),
        ..outcome(id, idx, RecipientState::Deferred, EventKind::Deferred)
    };
    let outcomes = vec![
        deferred(&m1.id, 0, Some("relay-a"), None),
        deferred(&m1.id, 1, Some("relay-b"), None),
        outcome(&m2.id, 0, RecipientState::Delivered, EventKind::Delivered),
        deferred(&m3.id, 0, None, Some("relay-a")),
    ];
    assert_eq!(s.record("h1", outcomes, T0 + 1).await.unwrap(), 4);
    let none = RetryFilter::default();

    // Nothing matches: a domain nobody has, a message of t1 asked for as t2's.
    for f in [
        RetryFilter {
            domain: Some("z.test".into()),
            ..none.clone()
        },
        RetryFilter {
            tenant: Some("t2".into()),
            message: Some(m1.id.clone()),
            ..none.clone()
        },
        // Delivered work is not deferred work.
        RetryFilter {
            message: Some(m2.id.clone()),
            ..none.clone()
        },
    ] {
        assert_eq!(s.retry_deferred(&f, T0 + 2).await.unwrap(), 0, "{f:?}");
    }
    // By relay: the last attempt's relay and the relay waited for; per tenant.
    let by_relay = RetryFilter {
        relay: Some("relay-a".into()),
        tenant: Some("t1".into()),
        ..none.clone()
    };
    assert_eq!(s.retry_deferred(&by_relay, T0 + 3).await.unwrap(), 1);
    let due = s.lease_due("h2", T0 + 4, 60_000, 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|l| (l.message_id.as_str(), l.recipient_idx))
            .collect::<Vec<_>>(),
        vec![(m1.id.as_str(), 0)]
    );
    // Leased now (in flight): a retry does not touch it.
    let by_message = RetryFilter {
        message: Some(m1.id.clone()),
        ..none.clone()
    };
    assert_eq!(s.retry_deferred(&by_message, T0 + 5).await.unwrap(), 1);
    assert_eq!(
        s.retry_deferred(&by_message, T0 + 6).await.unwrap(),
        0,
        "already due"
    );
    let by_domain = RetryFilter {
        domain: Some("x.test".into()),
        ..none.clone()
    };
    assert_eq!(
        s.retry_deferred(&by_domain, T0 + 7).await.unwrap(),
        1,
        "m3's d@x.test"
    );
    let mut due: Vec<(String, i32)> = s
        .lease_due("h2", T0 + 8, 60_000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.message_id, l.recipient_idx))
        .collect();
    due.sort();
    let mut want = vec![(m1.id.clone(), 1), (m3.id.clone(), 0)];
    want.sort();
    assert_eq!(due, want);
}

/// The dispatcher leaves out tenants that hold their share of a host, and renews the
/// leases of work it holds, learning which ones another host took meanwhile.
async fn leasing_can_leave_out_tenants_and_renewal_says_which_leases_were_kept(db: Db) {
    let s = &db.store;
    let busy = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap();
    let quiet = s
        .accept(message("t2", &["c@example.org"]), T0 + 1)
        .await
        .unwrap();
    let leased = s
        .lease_due_except("h1", T0 + 10, 10_000, 10, &["t1".to_string()])
        .await
        .unwrap();
    assert_eq!(leased.len(), 1, "{leased:?}");
    assert_eq!(leased[0].message_id, quiet.id);
    let busy_leases = s
        .lease_due_except("h1", T0 + 10, 10_000, 10, &[])
        .await
        .unwrap();
    assert_eq!(busy_leases.len(), 2);
    assert!(busy_leases.iter().all(|l| l.message_id == busy.id));

    // h1's lease on recipient 0 expires and h2 takes it; h1 renews both in time for 1.
    let mut keys: Vec<_> = busy_leases.iter().map(|l| l.key()).collect();
    keys.sort_by_key(|k| k.recipient_idx);
    s.renew_leases("h1", &keys[1..], T0 + 5_000, 10_000)
        .await
        .unwrap();
    // (t2's lease expired too; h2 leaves t2 out.)
    let taken = s
        .lease_due_except("h2", T0 + 10_011, 10_000, 10, &["t2".to_string()])
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].recipient_idx, 0);
    let kept = s
        .renew_leases_each("h1", &keys, T0 + 10_012, 10_000)
        .await
        .unwrap();
    assert_eq!(kept, vec![keys[1].clone()]);
}

/// Issue 16: the look for due work asks each tenant with room for its own oldest due
/// recipients (migration 0024's tenant on the recipient): a full tenant's backlog, due
/// before everyone else's, is not leased and does not hide the others' work; deferred
/// work is taken when due and not before; an expired lease is taken over unless its
/// tenant is left out; with more tenants than one statement asks (100), every tenant's
/// work is found, once; and with nobody left out the oldest work still goes first.
/// Whether a plan reads all of `recipients`, `messages` or `events` (the history),
/// instead of a range of an index: SQLite's `SCAN t` without an index, PostgreSQL's
/// `Seq Scan on t`.
fn reads_the_history(backend: Backend, plan: &[String]) -> bool {
    const TABLES: [&str; 7] = ["recipients", "messages", "events", "r", "m", "e", "mt"];
    plan.iter().any(|line| {
        let line = line.trim_start_matches([' ', '-', '>']);
        match backend {
            Backend::Sqlite => line.strip_prefix("SCAN ").is_some_and(|rest| {
                let table = rest.split_whitespace().next().unwrap_or("");
                TABLES.contains(&table) && !rest.contains(" USING ")
            }),
            Backend::Postgres => line.strip_prefix("Seq Scan on ").is_some_and(|rest| {
                TABLES[..3].contains(&rest.split_whitespace().next().unwrap_or(""))
            }),
        }
    })
}

/// Migration 0029 dropped the indexes no query read and made others partial: every hot
/// query (those each message runs through, those of every tick or scrape, the search
/// pages) still reads a range of an index, not the history, on a store with a history
/// of delivered mail (and fresh statistics on PostgreSQL; SQLite stores keep none).
async fn hot_queries_read_by_index(db: Db) {
    let s = &db.store;
    let backend = s.backend();
    // 20,000 messages over the last hour, every 50th recipient still queued.
    let now = T0 + 3_600_000;
    s.bench_fill(20_000, 4, 10, 50, now, 3_600_000)
        .await
        .unwrap();
    // Live traffic beside it: accepted (800 events, each tenant's a few hundred, so
    // that an index is worth reading for them too), leased, delivered, its events given
    // cursors.
    for k in 0..8 {
        let to: Vec<String> = (0..100)
            .map(|i| format!("live{k}-{i}@d{}.example", i % 10))
            .collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        s.accept(message(&format!("bench-{}", k % 4), &to), now)
            .await
            .unwrap();
    }
    let leased = s.lease_due("h1", now, 60_000, 40).await.unwrap();
    assert!(!leased.is_empty());
    let done: Vec<Outcome> = leased
        .iter()
        .skip(10)
        .map(|l| {
            outcome(
                &l.message_id,
                l.recipient_idx,
                RecipientState::Delivered,
                EventKind::Delivered,
            )
        })
        .collect();
    s.record("h1", done, now + 1).await.unwrap();
    s.sequence_events(10_000).await.unwrap();
    // No more messages: only the statistics, afresh.
    s.bench_fill(0, 4, 10, 50, now, 1).await.unwrap();

    let plans = s.explain_hot_queries("bench-0", now + 2).await.unwrap();
    assert!(plans.len() >= 20, "{plans:#?}");
    for (name, plan) in &plans {
        assert!(!plan.is_empty(), "{name}: no plan");
        assert!(
            !reads_the_history(backend, plan),
            "{name} reads the history ({backend:?}):\n{}",
            plan.join("\n")
        );
    }
    // The indexes the write path keeps are the ones these read.
    let uses = |name: &str, index: &str| {
        let plan = &plans.iter().find(|(n, _)| n.starts_with(name)).unwrap().1;
        assert!(
            plan.iter().any(|l| l.contains(index)),
            "{name} does not read {index} ({backend:?}):\n{}",
            plan.join("\n")
        );
    };
    uses("look: tenants with work", "recipients_tenant_due");
    uses("claim:", "recipients_tenant_due");
    if backend == Backend::Postgres {
        // Without statistics (a SQLite store keeps none, as `bench_fill` leaves it) SQLite
        // finds expired leases through `recipients_tenant_due (state = 'delivering')`:
        // the recipients in flight, a range of the same size, which is as good.
        uses("claim:", "recipients_lease");
    }
    uses("accept:", "messages_idempotency");
    uses("events: a page", "events_tenant_seq");
    uses("events: the sequencer", "events_unsequenced");
    // (PostgreSQL may walk the primary key backwards instead, filtering a tenant that
    // has a quarter of the messages: a walk of about four rows per row of the page.)
    if backend == Backend::Sqlite {
        uses("search: newest", "messages_tenant_id");
    }
    uses("search: by recipient", "recipients_address");
}

async fn a_look_asks_each_tenant_with_room_past_a_full_tenants_backlog(db: Db) {
    let s = &db.store;
    // flood: 300 recipients due first (one message, past one statement's rows).
    let many: Vec<String> = (0..300).map(|i| format!("r{i}@flood.test")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let flood = s.accept(message("flood", &many), T0).await.unwrap();
    // quiet: two messages due after the flood's; later: one deferred to the future.
    let q1 = s
        .accept(message("quiet", &["a@q.test"]), T0 + 1)
        .await
        .unwrap();
    let q2 = s
        .accept(message("quiet", &["b@q.test"]), T0 + 2)
        .await
        .unwrap();
    let later = s
        .accept(message("later", &["c@l.test"]), T0 + 3)
        .await
        .unwrap();
    let flood_out = ["flood".to_string()];
    let two_out = ["flood".to_string(), "quiet".to_string()];
    let three_out = [
        "flood".to_string(),
        "quiet".to_string(),
        "later".to_string(),
    ];
    let took = s
        .lease_due_except("h1", T0 + 3, 1_000, 1, &flood_out)
        .await
        .unwrap();
    assert_eq!(took.len(), 1, "{took:?}");
    assert_eq!(took[0].message_id, q1.id, "quiet's oldest first");
    let retry_at = T0 + 50_000;
    let deferred = Outcome {
        next_attempt_at_ms: Some(retry_at),
        ..outcome(&q1.id, 0, RecipientState::Deferred, EventKind::Deferred)
    };
    assert_eq!(s.record("h1", vec![deferred], T0 + 4).await.unwrap(), 1);

    // h2 holds `later` and dies; its lease expires at T0 + 1_010.
    let held = s
        .lease_due_except("h2", T0 + 10, 1_000, 10, &two_out)
        .await
        .unwrap();
    assert_eq!(
        held.iter().map(|l| &l.message_id).collect::<Vec<_>>(),
        vec![&later.id]
    );

    // flood full: quiet's due work and later's expired lease, none of flood's; q1's
    // deferred recipient is not due yet.
    let now = T0 + 2_000;
    let leased = s
        .lease_due_except("h1", now, 60_000, 50, &flood_out)
        .await
        .unwrap();
    let mut ids: Vec<String> = leased.into_iter().map(|l| l.message_id).collect();
    ids.sort();
    let mut want = vec![q2.id.clone(), later.id.clone()];
    want.sort();
    assert_eq!(ids, want);

    // An expired lease of a tenant left out stays where it is.
    let left = s
        .lease_due_except("h3", now + 60_001, 1_000, 50, &three_out)
        .await
        .unwrap();
    assert!(left.is_empty());

    // 120 more tenants with one due recipient each: all found across statements, once.
    for i in 0..120 {
        s.accept(message(&format!("t{i:03}"), &["x@t.test"]), now + i)
            .await
            .unwrap();
    }
    let at = now + 60_001 + 1_000;
    let got = s
        .lease_due_except("h1", at, 60_000, 500, &three_out)
        .await
        .unwrap();
    let mut tenants: Vec<String> = got.iter().map(|l| l.tenant_id.clone()).collect();
    tenants.sort();
    let want: Vec<String> = (0..120).map(|i| format!("t{i:03}")).collect();
    assert_eq!(tenants, want, "each small tenant's recipient, once");

    // Nobody left out: oldest first, so the flood's first recipients.
    let fin = at + 1;
    let oldest = s.lease_due("h1", fin, 60_000, 3).await.unwrap();
    assert!(
        oldest.iter().all(|l| l.message_id == flood.id),
        "{oldest:?}"
    );
    let mut idx: Vec<i32> = oldest.iter().map(|l| l.recipient_idx).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2]);
    // Everything else due, in one look: the flood's other 297, q1's retry, and q2's and
    // later's expired leases.
    let rest = s.lease_due("h1", fin, 60_000, 1_000).await.unwrap();
    assert_eq!(rest.len(), 297 + 1 + 2, "{}", rest.len());
}

async fn requeue_from_the_exception_queue(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap();
    s.lease_due("h1", T0, 30_000, 10).await.unwrap();
    let failed = Outcome {
        reply: Some("550 5.1.1 no such user".to_string()),
        detail: json!({ "hard": true, "latency_ms": 50 }),
        ..outcome(&acc.id, 0, RecipientState::Failed, EventKind::Failed)
    };
    let expired = Outcome {
        relay: None,
        reply: None,
        ..outcome(&acc.id, 1, RecipientState::Expired, EventKind::Expired)
    };
    assert_eq!(
        s.record("h1", vec![failed, expired], T0 + 1).await.unwrap(),
        2
    );

    let queue = s.list_failed(10).await.unwrap();
    let states: Vec<_> = queue.iter().map(|r| (r.recipient_idx, r.state)).collect();
    assert_eq!(
        states,
        vec![(0, RecipientState::Failed), (1, RecipientState::Expired)]
    );
    assert_eq!(queue[0].tenant_id, "t1");
    assert_eq!(
        queue[0].last_reply.as_deref(),
        Some("550 5.1.1 no such user")
    );
    assert_eq!(s.list_failed(1).await.unwrap().len(), 1);

    assert!(s.requeue(&acc.id, 0, T0 + 100).await.unwrap());
    // Only from the exception queue.
    assert!(!s.requeue(&acc.id, 0, T0 + 100).await.unwrap());
    assert!(!s.requeue("no-such-message", 0, T0 + 100).await.unwrap());
    let queue = s.list_failed(10).await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].recipient_idx, 1);

    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert_eq!(view.recipients[0].state, RecipientState::Queued);
    assert_eq!(view.recipients[0].next_attempt_at_ms, Some(T0 + 100));
    let last = view.events.last().unwrap();
    assert_eq!(
        (last.kind, last.recipient_idx),
        (EventKind::Requeued, Some(0))
    );
    let again = s.lease_due("h1", T0 + 100, 30_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
}

async fn relay_stats_count_windows_from_events(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(
            message(
                "t1",
                &[
                    "a@example.org",
                    "b@example.org",
                    "c@example.org",
                    "d@example.org",
                ],
            ),
            T0,
        )
        .await
        .unwrap();
    s.lease_due("h1", T0, 600_000, 10).await.unwrap();
    let at = |idx: i32, relay: &str, event: EventKind, state, detail| Outcome {
        relay: Some(relay.to_string()),
        detail,
        ..outcome(&acc.id, idx, state, event)
    };
    // Old traffic on relay-a, outside the short window.
    s.record(
        "h1",
        vec![at(
            0,
            "relay-a",
            EventKind::Delivered,
            RecipientState::Delivered,
            json!({ "latency_ms": 100 }),
        )],
        T0 + 1_000,
    )
    .await
    .unwrap();
    // Recent traffic.
    s.record(
        "h1",
        vec![
            at(
                1,
                "relay-a",
                EventKind::Bounced,
                RecipientState::Bounced,
                json!({ "latency_ms": 300, "hard": true, "class": "blocked" }),
            ),
            at(
                2,
                "relay-a",
                EventKind::Deferred,
                RecipientState::Deferred,
                json!({ "latency_ms": 200 }),
            ),
            at(
                3,
                "relay-b",
                EventKind::Bounced,
                RecipientState::Bounced,
                json!({ "hard": false, "class": "mailbox_full" }),
            ),
        ],
        T0 + 100_000,
    )
    .await
    .unwrap();
    // An attempt that was rerouted (recipient still in flight), and a non-attempt event.
    s.append_events(vec![
        NewEvent {
            message_id: acc.id.clone(),
            recipient_idx: Some(2),
            tenant_id: "t1".to_string(),
            kind: EventKind::Attempted,
            relay: Some("relay-b".to_string()),
            detail: json!({ "latency_ms": 41, "hard": false }),
            at_ms: T0 + 100_001,
        },
        NewEvent {
            message_id: acc.id.clone(),
            recipient_idx: Some(2),
            tenant_id: "t1".to_string(),
            kind: EventKind::Routed,
            relay: Some("relay-b".to_string()),
            detail: json!({}),
            at_ms: T0 + 100_001,
        },
    ])
    .await
    .unwrap();

    let windows = [T0, T0 + 50_000, T0 + 200_000];
    let stats = s.relay_stats(&windows, T0 + 150_000).await.unwrap();
    assert_eq!(stats.len(), 2, "{stats:?}");
    let a = &stats["relay-a"];
    assert_eq!(a.len(), 3);
    assert_eq!(
        (
            a[0].since_ms,
            a[0].sent,
            a[0].delivered,
            a[0].deferred,
            a[0].hard_bounced,
            a[0].blocked
        ),
        (T0, 3, 1, 1, 1, 1)
    );
    assert_eq!(a[0].mean_latency_ms, Some(200));
    assert_eq!((a[1].sent, a[1].delivered, a[1].deferred), (2, 0, 1));
    assert_eq!(a[1].mean_latency_ms, Some(250));
    assert_eq!(
        a[2],
        sluice::store::WindowCounts {
            since_ms: T0 + 200_000,
            ..Default::default()
        }
    );
    let b = &stats["relay-b"];
    assert_eq!(
        (
            b[0].sent,
            b[0].soft_bounced,
            b[0].hard_bounced,
            b[0].deferred,
            b[0].blocked
        ),
        (2, 1, 0, 1, 0)
    );
    assert_eq!(b[0].mean_latency_ms, Some(41));
    // The window ends at now.
    let before = s.relay_stats(&[T0], T0 + 50_000).await.unwrap();
    assert_eq!(before["relay-a"][0].sent, 1);
    assert!(!before.contains_key("relay-b"));
}

async fn relay_stats_are_kept_per_tenant_and_summed_for_the_platform(db: Db) {
    let s = &db.store;
    let a = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap();
    let b = s
        .accept(message("t2", &["c@example.org"]), T0)
        .await
        .unwrap();
    s.lease_due("h1", T0, 600_000, 10).await.unwrap();
    let delivered = |id: &str, idx: i32, relay: &str, latency: i64| Outcome {
        relay: Some(relay.to_string()),
        detail: json!({ "latency_ms": latency }),
        ..outcome(id, idx, RecipientState::Delivered, EventKind::Delivered)
    };
    // Outcomes take their tenant from the message; both tenants on one shared relay.
    s.record(
        "h1",
        vec![
            delivered(&a.id, 0, "shared", 100),
            delivered(&b.id, 0, "shared", 300),
            delivered(&a.id, 1, "own", 50),
        ],
        T0 + 1_000,
    )
    .await
    .unwrap();
    // An appended event names its tenant itself.
    s.append_events(vec![NewEvent {
        message_id: b.id.clone(),
        recipient_idx: Some(0),
        tenant_id: "t2".to_string(),
        kind: EventKind::Deferred,
        relay: Some("shared".to_string()),
        detail: json!({}),
        at_ms: T0 + 2_000,
    }])
    .await
    .unwrap();

    let w = s.relay_stat_windows(&[T0], T0 + 5_000).await.unwrap();
    let shared = &w.platform["shared"][0];
    assert_eq!(
        (shared.sent, shared.delivered, shared.deferred),
        (3, 2, 1),
        "{w:?}"
    );
    assert_eq!(shared.mean_latency_ms, Some(200), "over both tenants");
    let key = |t: &str, r: &str| (t.to_string(), r.to_string());
    let t1 = &w.by_tenant[&key("t1", "shared")][0];
    assert_eq!((t1.sent, t1.delivered, t1.deferred), (1, 1, 0), "{w:?}");
    assert_eq!(t1.mean_latency_ms, Some(100));
    let t2 = &w.by_tenant[&key("t2", "shared")][0];
    assert_eq!((t2.sent, t2.delivered, t2.deferred), (2, 1, 1), "{w:?}");
    assert_eq!(w.by_tenant[&key("t1", "own")][0].sent, 1);
    // Only pairs with traffic are read: t2 never used `own`.
    assert!(!w.by_tenant.contains_key(&key("t2", "own")), "{w:?}");
    assert_eq!(w.by_tenant.len(), 3, "{w:?}");
    // The platform view is what `relay_stats` gives.
    assert_eq!(s.relay_stats(&[T0], T0 + 5_000).await.unwrap(), w.platform);
}

async fn relay_stats_are_pruned_by_age(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap();
    s.lease_due("h1", T0, 600_000, 10).await.unwrap();
    let delivered = |idx| {
        outcome(
            &acc.id,
            idx,
            RecipientState::Delivered,
            EventKind::Delivered,
        )
    };
    s.record("h1", vec![delivered(0)], T0 + 1_000)
        .await
        .unwrap();
    s.record("h1", vec![delivered(1)], T0 + 40_000)
        .await
        .unwrap();
    let sent = |stats: &std::collections::HashMap<String, Vec<sluice::store::WindowCounts>>| {
        stats.get("relay-a").map(|w| w[0].sent)
    };
    let now = T0 + 50_000;
    assert_eq!(sent(&s.relay_stats(&[T0], now).await.unwrap()), Some(2));
    // Pruning what ended before T0 + 30 s drops the first bucket only.
    assert_eq!(s.prune_relay_stats(T0 + 30_000).await.unwrap(), 1);
    assert_eq!(sent(&s.relay_stats(&[T0], now).await.unwrap()), Some(1));
    assert_eq!(s.prune_relay_stats(T0 + 30_000).await.unwrap(), 0);
    assert_eq!(s.prune_relay_stats(T0 + 60_000).await.unwrap(), 1);
    assert_eq!(sent(&s.relay_stats(&[T0], now).await.unwrap()), None);
}

async fn accepted_leased_recipients_are_delivered_without_a_lease_from_the_store(db: Db) {
    let s = &db.store;
    let acc = s
        .accept_leased(
            message("t1", &["a@example.org", "B@Example.org"]),
            T0,
            "h1",
            30_000,
        )
        .await
        .unwrap();
    assert_eq!(acc.leases.len(), 2);
    let l = &acc.leases[1];
    assert_eq!(
        (
            l.message_id.as_str(),
            l.recipient_idx,
            l.address.as_str(),
            l.domain.as_str()
        ),
        (acc.id.as_str(), 1, "B@Example.org", "example.org")
    );
    assert_eq!(
        (l.attempts, l.lease_until_ms, l.created_at_ms),
        (0, T0 + 30_000, T0)
    );
    assert_eq!(
        (l.sender.as_str(), l.tenant_id.as_str(), l.max_age_secs),
        ("app@example.com", "t1", 3600)
    );
    assert_eq!(l.size, message("t1", &[]).body.len() as u64);
    // Already leased: nobody else takes them before the lease expires.
    assert!(
        s.lease_due("h2", T0 + 1, 30_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert!(
        view.recipients
            .iter()
            .all(|r| r.state == RecipientState::Delivering)
    );

    // The routing events and the outcomes land in one commit.
    let routed = |idx: i32| NewEvent {
        message_id: acc.id.clone(),
        recipient_idx: Some(idx),
        tenant_id: "t1".to_string(),
        kind: EventKind::Routed,
        relay: Some("relay-a".to_string()),
        detail: json!({ "attempt": 1 }),
        at_ms: T0 + 5,
    };
    let outcomes = vec![
        outcome(&acc.id, 0, RecipientState::Delivered, EventKind::Delivered),
        outcome(&acc.id, 1, RecipientState::Delivered, EventKind::Delivered),
    ];
    let applied = s
        .record_with_events("h1", vec![routed(0), routed(1)], outcomes, T0 + 10)
        .await
        .unwrap();
    assert_eq!(applied, 2);
    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    assert!(
        view.recipients
            .iter()
            .all(|r| r.state == RecipientState::Delivered && r.attempts == 1)
    );
    assert_eq!(
        kinds(&view.events),
        [
            (EventKind::Accepted, Some(0)),
            (EventKind::Accepted, Some(1)),
            (EventKind::Routed, Some(0)),
            (EventKind::Routed, Some(1)),
            (EventKind::Delivered, Some(0)),
            (EventKind::Delivered, Some(1)),
        ]
    );
    // Recorded with their outcomes, routing events leave nothing in flight.
    assert!(s.in_flight_by_relay().await.unwrap().is_empty());

    // A host that dies holding such leases: they expire and another host takes them.
    let orphan = s
        .accept_leased(message("t1", &["c@example.org"]), T0, "h1", 30_000)
        .await
        .unwrap();
    let taken = s.lease_due("h2", T0 + 30_000, 30_000, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].message_id, orphan.id);

    // A repeated idempotency key hands nothing over: the first message's leases stand.
    let keyed = || NewMessage {
        idempotency_key: Some("k1".to_string()),
        ..message("t1", &["d@example.org"])
    };
    let first = s.accept_leased(keyed(), T0, "h1", 30_000).await.unwrap();
    assert_eq!(first.leases.len(), 1);
    let again = s
        .accept_leased(keyed(), T0 + 1, "h1", 30_000)
        .await
        .unwrap();
    assert!(again.duplicate && again.leases.is_empty());
    assert_eq!(again.id, first.id);
    // Bad lease terms are refused before anything is written.
    assert!(matches!(
        s.accept_leased(message("t1", &["e@example.org"]), T0, "", 30_000)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.accept_leased(message("t1", &["e@example.org"]), T0, "h1", 0)
            .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn in_flight_follows_routed_events(db: Db) {
    let s = &db.store;
    let acc = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap();
    assert!(s.in_flight_by_relay().await.unwrap().is_empty());
    s.lease_due("h1", T0, 30_000, 10).await.unwrap();
    let routed = |idx: i32, relay: &str| NewEvent {
        message_id: acc.id.clone(),
        recipient_idx: Some(idx),
        tenant_id: "t1".to_string(),
        kind: EventKind::Routed,
        relay: Some(relay.to_string()),
        detail: json!({ "order": [relay] }),
        at_ms: T0 + 1,
    };
    s.append_events(vec![routed(0, "relay-a"), routed(1, "relay-a")])
        .await
        .unwrap();
    assert_eq!(
        s.in_flight_by_relay().await.unwrap(),
        [("relay-a".to_string(), 2)].into()
    );
    // Rerouted to relay-b.
    s.append_events(vec![routed(1, "relay-b")]).await.unwrap();
    assert_eq!(
        s.in_flight_by_relay().await.unwrap(),
        [("relay-a".to_string(), 1), ("relay-b".to_string(), 1)].into()
    );
    s.record(
        "h1",
        vec![outcome(
            &acc.id,
            0,
            RecipientState::Delivered,
            EventKind::Delivered,
        )],
        T0 + 2,
    )
    .await
    .unwrap();
    assert_eq!(
        s.in_flight_by_relay().await.unwrap(),
        [("relay-b".to_string(), 1)].into()
    );
    let view = s.get_message("t1", &acc.id).await.unwrap().unwrap();
    let routed_events = view
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Routed)
        .count();
    assert_eq!(routed_events, 3);
}

async fn api_keys_are_found_by_hash_and_revoked(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    tenant(s, "t2").await;
    let (info, secret) = s.create_api_key("t1", T0).await.unwrap();
    let (_, secret2) = s.create_api_key("t1", T0 + 1).await.unwrap();
    let (info_t2, secret_t2) = s.create_api_key("t2", T0).await.unwrap();
    assert_ne!(secret, secret2);
    assert!(secret.len() >= 40, "{secret}");
    assert!(secret.starts_with(&info.prefix));
    assert!(info.prefix.len() < 16);
    let owner = s.key_owner(&secret).await.unwrap().unwrap();
    // The key's id comes with its owner (SMTP submission takes it as a user name).
    assert_eq!(owner.key_id, info.id);
    assert_eq!(
        (owner.tenant.id.as_str(), owner.scope),
        ("t1", KeyScope::Tenant)
    );
    assert_eq!(
        s.key_owner(&secret_t2).await.unwrap().unwrap().tenant.id,
        "t2"
    );
    assert!(s.key_owner("sluice_nope").await.unwrap().is_none());
    assert!(
        s.key_owner(&secret[..secret.len() - 1])
            .await
            .unwrap()
            .is_none()
    );

    // The secret is not stored: list shows only the prefix.
    let keys = s.list_api_keys("t1").await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], info);

    // A tenant cannot revoke another tenant's key.
    assert!(!s.revoke_api_key("t1", &info_t2.id, T0 + 2).await.unwrap());
    assert!(s.revoke_api_key("t1", &info.id, T0 + 2).await.unwrap());
    assert!(!s.revoke_api_key("t1", &info.id, T0 + 3).await.unwrap());
    assert!(s.key_owner(&secret).await.unwrap().is_none());
    assert_eq!(
        s.key_owner(&secret2).await.unwrap().unwrap().tenant.id,
        "t1"
    );
    assert_eq!(
        s.list_api_keys("t1").await.unwrap()[0].revoked_at_ms,
        Some(T0 + 2)
    );

    let missing = s.create_api_key("nobody", T0).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(ref t)) if t.contains("nobody")),
        "{missing:?}"
    );
}

async fn portal_sessions_are_found_by_hash_end_with_their_key_and_are_bounded(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    tenant(s, "t2").await;
    let (key, _) = s.create_api_key("t1", T0).await.unwrap();
    let (other, _) = s.create_api_key("t2", T0).await.unwrap();
    let hour = 3_600_000;
    let secret = s
        .open_portal_session("t1", &key.id, T0, T0 + hour)
        .await
        .unwrap();
    assert_eq!(secret.len(), 64, "256 bits in hex: {secret}");
    let found = s.portal_session(&secret, T0 + 1).await.unwrap().unwrap();
    assert_eq!(
        (
            found.tenant.id.as_str(),
            found.key_id.as_str(),
            found.expires_at_ms
        ),
        ("t1", key.id.as_str(), T0 + hour)
    );
    // Only the exact secret, and only until it expires.
    assert!(
        s.portal_session(&secret[..63], T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.portal_session(&secret.to_uppercase(), T0 + 1)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.portal_session(&secret, T0 + hour)
            .await
            .unwrap()
            .is_none()
    );
    // A session opened with another tenant's key is nobody's.
    let crossed = s
        .open_portal_session("t1", &other.id, T0, T0 + hour)
        .await
        .unwrap();
    assert!(s.portal_session(&crossed, T0 + 1).await.unwrap().is_none());
    // Closed: gone at once.
    let second = s
        .open_portal_session("t1", &key.id, T0 + 2, T0 + hour)
        .await
        .unwrap();
    assert!(s.close_portal_session(&second).await.unwrap());
    assert!(!s.close_portal_session(&second).await.unwrap());
    assert!(s.portal_session(&second, T0 + 3).await.unwrap().is_none());
    // Bounded per tenant: the oldest go, the newest stay; another tenant's are untouched.
    let theirs = s
        .open_portal_session("t2", &other.id, T0, T0 + hour)
        .await
        .unwrap();
    let mut opened = Vec::new();
    for i in 0..(sluice::store::MAX_PORTAL_SESSIONS + 4) {
        opened.push(
            s.open_portal_session("t1", &key.id, T0 + 10 + i, T0 + hour)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        s.count_portal_sessions("t1").await.unwrap(),
        sluice::store::MAX_PORTAL_SESSIONS
    );
    assert!(s.portal_session(&secret, T0 + 100).await.unwrap().is_none());
    assert!(
        s.portal_session(&opened[3], T0 + 100)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.portal_session(&opened[4], T0 + 100)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.portal_session(opened.last().unwrap(), T0 + 100)
            .await
            .unwrap()
            .is_some()
    );
    assert!(s.portal_session(&theirs, T0 + 100).await.unwrap().is_some());
    // A revoked key ends its sessions.
    assert!(s.revoke_api_key("t1", &key.id, T0 + 200).await.unwrap());
    assert!(
        s.portal_session(opened.last().unwrap(), T0 + 201)
            .await
            .unwrap()
            .is_none()
    );
}

async fn tenants_crud(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    let dup = s
        .create_tenant(
            NewTenant {
                id: "t1".to_string(),
                name: "again".to_string(),
                allowed_sender_domains: vec![],
                pools: vec![],
                route_plugin: None,
                header_from_check: true,
            },
            T0,
        )
        .await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(ref t)) if t.contains("\"t1\"")),
        "{dup:?}"
    );
    let t = s.get_tenant("t1").await.unwrap().unwrap();
    assert_eq!(t.allowed_sender_domains, vec!["example.com"]);
    assert_eq!(t.created_at_ms, T0);

    let updated = s
        .update_tenant(
            "t1",
            TenantUpdate {
                route_plugin: Some(Some("my-router".to_string())),
                pools: Some(vec!["eu".to_string(), "us".to_string()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.route_plugin.as_deref(), Some("my-router"));
    assert_eq!(updated.name, "Tenant t1");
    assert_eq!(s.get_tenant("t1").await.unwrap().unwrap(), updated);
    let cleared = s
        .update_tenant(
            "t1",
            TenantUpdate {
                route_plugin: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.route_plugin, None);
    assert!(cleared.header_from_check, "checked unless relaxed");
    let relaxed = s
        .update_tenant(
            "t1",
            TenantUpdate {
                header_from_check: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!relaxed.header_from_check);
    assert_eq!(s.get_tenant("t1").await.unwrap().unwrap(), relaxed);
    let missing = s.update_tenant("nobody", TenantUpdate::default()).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    let bad = s
        .update_tenant(
            "t1",
            TenantUpdate {
                allowed_sender_domains: Some(vec!["a@b".to_string()]),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(bad, Err(StoreError::Invalid(ref t)) if t.contains("a@b")),
        "{bad:?}"
    );

    tenant(s, "t0").await;
    let ids: Vec<_> = s
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, vec!["t0", "t1"]);
    let (_, secret) = s.create_api_key("t1", T0).await.unwrap();
    assert!(s.delete_tenant("t1").await.unwrap());
    assert!(!s.delete_tenant("t1").await.unwrap());
    assert!(s.get_tenant("t1").await.unwrap().is_none());
    assert!(s.key_owner(&secret).await.unwrap().is_none());
}

async fn relays_crud(db: Db) {
    let s = &db.store;
    let r = s.upsert_relay(relay("eu-1"), T0).await.unwrap();
    assert_eq!(r.created_at_ms, T0);
    assert_eq!(s.get_relay("eu-1").await.unwrap().unwrap(), r);
    // Upsert replaces everything but the creation time.
    let again = s
        .upsert_relay(
            NewRelay {
                weight: 5,
                auth_user: None,
                rate_limit_per_sec: None,
                ..relay("eu-1")
            },
            T0 + 10,
        )
        .await
        .unwrap();
    assert_eq!((again.weight, again.created_at_ms), (5, T0));
    assert_eq!((again.auth_user, again.rate_limit_per_sec), (None, None));

    s.upsert_relay(relay("byo-1"), T0).await.unwrap();
    let drained = s
        .update_relay(
            "byo-1",
            RelayUpdate {
                state: Some(RelayState::Draining),
                owner: Some(Some("t1".to_string())),
                tags: Some(vec![]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(drained.state, RelayState::Draining);
    assert_eq!(drained.owner.as_deref(), Some("t1"));
    assert_eq!(drained.url, "smtp://byo-1.example.net:25");
    let ids: Vec<_> = s
        .list_relays()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["byo-1", "eu-1"]);

    // A relay's CA file is kept as a path, set and cleared like any optional field.
    let tls = s
        .upsert_relay(
            NewRelay {
                url: "smtps://tls-1.example.net".to_string(),
                tls_ca_file: Some("/etc/sluice/tls-1-ca.pem".to_string()),
                ..relay("tls-1")
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(s.get_relay("tls-1").await.unwrap().unwrap(), tls);
    let cleared = s
        .update_relay(
            "tls-1",
            RelayUpdate {
                tls_ca_file: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.tls_ca_file, None);
    s.delete_relay("tls-1").await.unwrap();

    for (bad, needle) in [
        (
            NewRelay {
                url: "http://x".to_string(),
                ..relay("x")
            },
            "http://x",
        ),
        (
            NewRelay {
                auth_secret_ref: Some("hunter2".to_string()),
                ..relay("x")
            },
            "env:NAME",
        ),
        (
            NewRelay {
                connection_limit: 0,
                ..relay("x")
            },
            "connection_limit",
        ),
        (
            // A CA file means nothing to a relay spoken to without TLS.
            NewRelay {
                tls_ca_file: Some("/etc/ca.pem".to_string()),
                ..relay("x")
            },
            "tls_ca_file needs a relay URL with TLS",
        ),
    ] {
        match s.upsert_relay(bad, T0).await {
            Err(StoreError::Invalid(t)) => {
                assert!(t.contains(needle), "{t}");
                assert!(!t.contains("hunter2"), "a secret must not be echoed: {t}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    let missing = s.update_relay("nope", RelayUpdate::default()).await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(ref t)) if t.contains("\"nope\"")),
        "{missing:?}"
    );
    assert!(s.delete_relay("eu-1").await.unwrap());
    assert!(!s.delete_relay("eu-1").await.unwrap());
    assert!(s.get_relay("eu-1").await.unwrap().is_none());
}

async fn group_commit_64_concurrent_accepts(db: Db) {
    let s = &db.store;
    let mut handles = Vec::new();
    for i in 0..64 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut msg = message("t1", &["a@example.org"]);
            msg.body = format!("Subject: {i}\r\n\r\n{}", "x".repeat(1024))
                .into_bytes()
                .into();
            let body = msg.body.clone();
            (s.accept(msg, T0).await.unwrap(), body)
        }));
    }
    let mut accepted = Vec::new();
    for h in handles {
        accepted.push(h.await.unwrap());
    }
    let ids: HashSet<_> = accepted.iter().map(|(a, _)| a.id.clone()).collect();
    assert_eq!(ids.len(), 64, "all ids distinct");
    // Durable: a fresh handle (new pools) reads every one back with its own body.
    let fresh = db.second_host().await;
    for (acc, body) in &accepted {
        assert_eq!(&fresh.message_body(&acc.id).await.unwrap(), &**body);
        let view = fresh.get_message("t1", &acc.id).await.unwrap().unwrap();
        assert_eq!(view.events.len(), 1);
    }
    assert_eq!(
        fresh.lease_due("h", T0, 1_000, 1_000).await.unwrap().len(),
        64
    );
}

/// Accepts and outcome batches arriving together share group commits: each caller gets
/// its own answer, and an outcome batch for another host's leases applies nothing
/// while the accepts beside it are stored.
async fn group_commit_shares_rounds_between_accepts_and_outcomes(db: Db) {
    let s = &db.store;
    let mut leased = Vec::new();
    for _ in 0..8 {
        let acc = s
            .accept_leased(message("t1", &["a@example.org"]), T0, "h1", 60_000)
            .await
            .unwrap();
        leased.push(acc.id);
    }
    let mut accepts = Vec::new();
    for i in 0..48 {
        let s = s.clone();
        accepts.push(tokio::spawn(async move {
            let mut msg = message("t1", &["b@example.org"]);
            msg.body = format!("Subject: {i}\r\n\r\nbody").into_bytes().into();
            s.accept(msg, T0 + 1).await.unwrap().id
        }));
    }
    let mut records = Vec::new();
    for (i, id) in leased.iter().enumerate() {
        let (s, id) = (s.clone(), id.clone());
        // Every other batch names the wrong owner: refused, without failing the rest.
        let owner = if i % 2 == 0 { "h1" } else { "h2" };
        records.push(tokio::spawn(async move {
            let done = vec![outcome(
                &id,
                0,
                RecipientState::Delivered,
                EventKind::Delivered,
            )];
            s.record_with_events(owner, Vec::new(), done, T0 + 2)
                .await
                .unwrap()
        }));
    }
    let mut ids = HashSet::new();
    for h in accepts {
        ids.insert(h.await.unwrap());
    }
    assert_eq!(ids.len(), 48);
    let mut applied = Vec::new();
    for h in records {
        applied.push(h.await.unwrap());
    }
    assert_eq!(applied, [1, 0, 1, 0, 1, 0, 1, 0]);
    let fresh = db.second_host().await;
    for id in &ids {
        let view = fresh.get_message("t1", id).await.unwrap().unwrap();
        assert_eq!(view.recipients[0].state, RecipientState::Queued);
    }
    for (i, id) in leased.iter().enumerate() {
        let view = fresh.get_message("t1", id).await.unwrap().unwrap();
        let want = if i % 2 == 0 {
            RecipientState::Delivered
        } else {
            RecipientState::Delivering
        };
        assert_eq!(view.recipients[0].state, want, "message {i}");
    }
}

/// A burst large enough that one group spans several multi-row statements, with
/// three-recipient messages (more recipient rows than messages) and keyed messages
/// (written on their own, one of them repeated) among them.
async fn group_commit_mixes_keyed_and_multi_recipient_messages_past_one_statement(db: Db) {
    let s = &db.store;
    let mut handles = Vec::new();
    for i in 0..300_usize {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let recipients: &[&str] = if i % 2 == 0 {
                &["a@example.org", "b@example.org", "c@example.net"]
            } else {
                &["a@example.org"]
            };
            let mut msg = message("t1", recipients);
            msg.body = format!("Subject: {i}\r\n\r\nbody {i}\r\n")
                .into_bytes()
                .into();
            if i % 50 == 7 {
                msg.idempotency_key = Some(format!("key-{i}"));
            }
            if i == 299 {
                msg.idempotency_key = Some("key-7".into());
            }
            let body = msg.body.clone();
            (i, s.accept(msg, T0).await.unwrap(), body)
        }));
    }
    let mut accepted = Vec::new();
    for h in handles {
        accepted.push(h.await.unwrap());
    }
    let fresh = db.second_host().await;
    let mut ids = HashSet::new();
    let mut want_recipients = 0;
    for (i, acc, body) in &accepted {
        let n = if i % 2 == 0 { 3 } else { 1 };
        if acc.duplicate {
            // Message 299 repeated message 7's key (whichever was written first wins).
            assert!(*i == 7 || *i == 299, "message {i} is not a repeat");
            continue;
        }
        assert!(ids.insert(acc.id.clone()), "id {} given twice", acc.id);
        assert_eq!(acc.recipients.len(), n, "message {i}");
        assert_eq!(
            &fresh.message_body(&acc.id).await.unwrap(),
            &**body,
            "message {i}"
        );
        let view = fresh.get_message("t1", &acc.id).await.unwrap().unwrap();
        assert_eq!(
            view.events.len(),
            n,
            "message {i}: one accepted event per recipient"
        );
        assert_eq!(view.recipients.len(), n, "message {i}");
        want_recipients += n;
    }
    assert_eq!(
        ids.len(),
        299,
        "one message per distinct key or unkeyed submission"
    );
    assert_eq!(
        fresh.lease_due("h", T0, 10_000, 1_000).await.unwrap().len(),
        want_recipients
    );
}

// ---------------------------------------------------------------- crash safety

/// The child half of `sqlite_accept_survives_sigkill`: accepts one message, prints its
/// id, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(url) = std::env::var("SLUICE_CRASH_CHILD_URL") else {
        return; // Only meaningful when started by the parent test.
    };
    let store = Store::open(&url).await.unwrap();
    let acc = store
        .accept(message("t1", &["a@example.org"]), T0)
        .await
        .unwrap();
    println!("ACCEPTED {}", acc.id);
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_accept_survives_sigkill() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store_conformance::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SLUICE_CRASH_CHILD_URL", &url)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let id = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the child exited before accepting");
        // libtest may have written "test crash_child ... " on the same line.
        if let Some((_, id)) = line.split_once("ACCEPTED ") {
            break id.trim().to_string();
        }
    };
    // SIGKILL: no destructors, no checkpoint, no clean close of the database.
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success());

    let store = Store::open(&url).await.unwrap();
    let view = store.get_message("t1", &id).await.unwrap();
    let view = view.expect("a message acknowledged before the crash must survive it");
    assert_eq!(view.recipients[0].state, RecipientState::Queued);
    assert_eq!(view.events.len(), 1);
}

// ---------------------------------------------------------------- bounces and suppressions

/// Bounce intake and suppression lists, on both stores.
mod bounces {
    use super::*;
    use sluice::store::{AddedBy, BounceReport, NewSuppression, Removal};

    conformance!(
        suppressions_are_per_tenant_case_insensitive_and_paged,
        suppressions_remember_who_added_them_and_only_the_platform_lifts_its_own,
        record_bounce_changes_state_appends_the_event_and_suppresses,
        late_bounces_count_for_the_relay_but_not_as_attempts,
        host_secret_is_made_once,
        concurrent_suppression_checks_each_get_their_own_answer,
    );

    async fn concurrent_suppression_checks_each_get_their_own_answer(db: Db) {
        let s = &db.store;
        for t in 0..8 {
            s.suppress(
                sup(
                    &format!("t{t}"),
                    &format!("gone{t}@example.net"),
                    "userunknown",
                ),
                T0,
            )
            .await
            .unwrap();
        }
        // Asked at once, so the checks share queries; each sees only its tenant's list.
        let checks = (0..64).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let t = i % 8;
                let wanted: Vec<String> = (0..8).map(|a| format!("GONE{a}@example.net")).collect();
                (
                    t,
                    s.suppressed_among(&format!("t{t}"), &wanted).await.unwrap(),
                )
            })
        });
        for check in checks {
            let (t, found) = check.await.unwrap();
            let keys: Vec<&String> = found.keys().collect();
            assert_eq!(keys, [&format!("gone{t}@example.net")], "tenant t{t}");
            assert_eq!(
                found[&format!("gone{t}@example.net")].tenant_id,
                format!("t{t}")
            );
        }
    }

    fn sup(tenant: &str, address: &str, reason: &str) -> NewSuppression {
        NewSuppression {
            tenant_id: tenant.to_string(),
            address: address.to_string(),
            reason: reason.to_string(),
            source: "dsn".to_string(),
            detail: json!({ "status": "5.1.1" }),
            message_id: None,
            added_by: AddedBy::Platform,
        }
    }

    async fn suppressions_remember_who_added_them_and_only_the_platform_lifts_its_own(db: Db) {
        let s = &db.store;
        let by_tenant = |address: &str| NewSuppression {
            added_by: AddedBy::Tenant,
            source: "manual".to_string(),
            ..sup("t1", address, "manual")
        };
        s.suppress(sup("t1", "bounced@example.net", "userunknown"), T0)
            .await
            .unwrap();
        s.suppress(by_tenant("mine@example.net"), T0).await.unwrap();
        // A tenant's re-entry does not take over the platform's entry…
        s.suppress(by_tenant("Bounced@example.net"), T0 + 1)
            .await
            .unwrap();
        // …and the platform's takes over the tenant's.
        s.suppress(by_tenant("both@example.net"), T0).await.unwrap();
        s.suppress(sup("t1", "both@example.net", "feedback"), T0 + 2)
            .await
            .unwrap();
        let listed: Vec<(String, AddedBy, String)> = s
            .list_suppressions("t1", None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|x| (x.address, x.added_by, x.reason))
            .collect();
        let row = |a: &str, by, r: &str| (a.to_string(), by, r.to_string());
        assert_eq!(
            listed,
            [
                row("both@example.net", AddedBy::Platform, "feedback"),
                row("bounced@example.net", AddedBy::Platform, "userunknown"),
                row("mine@example.net", AddedBy::Tenant, "manual"),
            ]
        );

        // The tenant cannot lift the platform's entries; it learns whose they are.
        for address in ["bounced@example.net", "BOTH@example.net"] {
            match s
                .delete_suppression("t1", address, AddedBy::Tenant)
                .await
                .unwrap()
            {
                Removal::Protected(kept) => assert_eq!(kept.added_by, AddedBy::Platform),
                other => panic!("{address}: {other:?}"),
            }
        }
        assert_eq!(s.list_suppressions("t1", None, 10).await.unwrap().len(), 3);
        // Its own it can; then it is gone.
        assert_eq!(
            s.delete_suppression("t1", "mine@example.net", AddedBy::Tenant)
                .await
                .unwrap(),
            Removal::Removed
        );
        assert_eq!(
            s.delete_suppression("t1", "mine@example.net", AddedBy::Tenant)
                .await
                .unwrap(),
            Removal::NotFound
        );
        // The platform lifts its own; another tenant's list is not reached.
        assert_eq!(
            s.delete_suppression("t2", "bounced@example.net", AddedBy::Platform)
                .await
                .unwrap(),
            Removal::NotFound
        );
        assert_eq!(
            s.delete_suppression("t1", "bounced@example.net", AddedBy::Platform)
                .await
                .unwrap(),
            Removal::Removed
        );
        let left = s
            .suppressed_among("t1", &["both@example.net".to_string()])
            .await
            .unwrap();
        assert_eq!(left["both@example.net"].added_by, AddedBy::Platform);
    }

    async fn suppressions_are_per_tenant_case_insensitive_and_paged(db: Db) {
        let s = &db.store;
        s.suppress(sup("t1", "Bob@Example.NET", "userunknown"), T0)
            .await
            .unwrap();
        s.suppress(sup("t1", "alice@example.net", "feedback"), T0 + 1)
            .await
            .unwrap();
        s.suppress(sup("t2", "carol@example.net", "userunknown"), T0)
            .await
            .unwrap();
        // A second entry replaces the reason and keeps the creation time.
        s.suppress(sup("t1", "<bob@example.net>", "hostunknown"), T0 + 5)
            .await
            .unwrap();

        let all = s.list_suppressions("t1", None, 10).await.unwrap();
        let listed: Vec<(&str, &str)> = all
            .iter()
            .map(|x| (x.address.as_str(), x.reason.as_str()))
            .collect();
        assert_eq!(
            listed,
            [
                ("alice@example.net", "feedback"),
                ("bob@example.net", "hostunknown")
            ]
        );
        assert_eq!(all[1].created_at_ms, T0);
        assert_eq!(all[1].updated_at_ms, T0 + 5);
        assert_eq!(all[1].detail, json!({ "status": "5.1.1" }));
        let page = s
            .list_suppressions("t1", Some("alice@example.net"), 1)
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].address, "bob@example.net");

        let wanted = vec![
            "BOB@example.net".to_string(),
            "carol@example.net".to_string(),
            "dave@example.net".to_string(),
        ];
        let found = s.suppressed_among("t1", &wanted).await.unwrap();
        assert_eq!(found.len(), 1, "carol is t2's, dave nobody's: {found:?}");
        assert_eq!(found["bob@example.net"].reason, "hostunknown");
        assert!(s.suppressed_among("t1", &[]).await.unwrap().is_empty());

        let platform = AddedBy::Platform;
        assert_eq!(
            s.delete_suppression("t1", "BOB@EXAMPLE.NET", platform)
                .await
                .unwrap(),
            Removal::Removed
        );
        assert_eq!(
            s.delete_suppression("t1", "bob@example.net", platform)
                .await
                .unwrap(),
            Removal::NotFound
        );
        assert_eq!(
            s.delete_suppression("t1", "carol@example.net", platform)
                .await
                .unwrap(),
            Removal::NotFound
        );
        assert_eq!(s.list_suppressions("t2", None, 10).await.unwrap().len(), 1);

        let e = s
            .suppress(sup("t1", "not an address", "x"), T0)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StoreError::Invalid(m) if m.contains("not an address")),
            "{e}"
        );
        let e = s
            .suppress(sup("t1", "a@b.example", ""), T0)
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    }

    fn report(id: &str, idx: i32, kind: EventKind, suppress: bool) -> BounceReport {
        BounceReport {
            message_id: id.to_string(),
            recipient_idx: idx,
            kind,
            detail: json!({ "source": "dsn", "reason": "userunknown", "hard": true }),
            suppress: suppress.then(|| ("userunknown".to_string(), "dsn".to_string())),
            at_ms: T0 + 10_000,
        }
    }

    async fn record_bounce_changes_state_appends_the_event_and_suppresses(db: Db) {
        let s = &db.store;
        let acc = s
            .accept(
                message("t1", &["a@example.org", "B@example.org", "c@example.org"]),
                T0,
            )
            .await
            .unwrap();
        s.lease_due("h1", T0, 600_000, 10).await.unwrap();
        // a and b delivered through relay-a; c stays leased (being delivered).
        s.record(
            "h1",
            vec![
                outcome(&acc.id, 0, RecipientState::Delivered, EventKind::Delivered),
                outcome(&acc.id, 1, RecipientState::Delivered, EventKind::Delivered),
            ],
            T0 + 1_000,
        )
        .await
        .unwrap();

        let target = s.bounce_target(&acc.id, 1).await.unwrap().unwrap();
        assert_eq!(target.tenant_id, "t1");
        assert_eq!(target.address, "B@example.org");
        assert_eq!(target.state, RecipientState::Delivered);
        assert_eq!(target.last_relay.as_deref(), Some("relay-a"));
        assert!(s.bounce_target(&acc.id, 9).await.unwrap().is_none());
        assert!(
            s.bounce_target("01NOSUCHMESSAGE", 0)
                .await
                .unwrap()
                .is_none()
        );

        // A late hard bounce for b: bounced, event on relay-a, suppressed.
        let done = s
            .record_bounce(report(&acc.id, 1, EventKind::Bounced, true))
            .await
            .unwrap()
            .unwrap();
        assert!(done.state_changed && done.suppressed);
        // A delay for a: an event, no state change.
        let delayed = s
            .record_bounce(report(&acc.id, 0, EventKind::Delayed, false))
            .await
            .unwrap()
            .unwrap();
        assert!(!delayed.state_changed && !delayed.suppressed);
        // A bounce for c while it is leased: the event only; the lease holder decides.
        let leased = s
            .record_bounce(report(&acc.id, 2, EventKind::Bounced, false))
            .await
            .unwrap()
            .unwrap();
        assert!(!leased.state_changed);
        // The same bounce again: no second state change.
        let again = s
            .record_bounce(report(&acc.id, 1, EventKind::Bounced, true))
            .await
            .unwrap()
            .unwrap();
        assert!(!again.state_changed);

        let m = s.get_message("t1", &acc.id).await.unwrap().unwrap();
        let states: Vec<RecipientState> = m.recipients.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                RecipientState::Delivered,
                RecipientState::Bounced,
                RecipientState::Delivering
            ]
        );
        let bounced: Vec<_> = m
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Bounced && e.recipient_idx == Some(1))
            .collect();
        assert_eq!(bounced.len(), 2);
        assert_eq!(bounced[0].relay.as_deref(), Some("relay-a"));
        assert_eq!(bounced[0].tenant_id, "t1");
        assert_eq!(bounced[0].detail["reason"], "userunknown");
        assert!(
            m.events
                .iter()
                .any(|e| e.kind == EventKind::Delayed && e.recipient_idx == Some(0))
        );

        let found = s
            .suppressed_among("t1", &["b@example.org".to_string()])
            .await
            .unwrap();
        assert_eq!(
            found["b@example.org"].message_id.as_deref(),
            Some(acc.id.as_str())
        );
        assert_eq!(found["b@example.org"].source, "dsn");

        assert!(
            s.record_bounce(report(&acc.id, 7, EventKind::Bounced, true))
                .await
                .unwrap()
                .is_none()
        );
        let e = s
            .record_bounce(report(&acc.id, 0, EventKind::Delivered, false))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
        for kind in [
            EventKind::Delayed,
            EventKind::Complained,
            EventKind::BounceNote,
        ] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
    }

    async fn late_bounces_count_for_the_relay_but_not_as_attempts(db: Db) {
        let s = &db.store;
        let acc = s
            .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
            .await
            .unwrap();
        s.lease_due("h1", T0, 600_000, 10).await.unwrap();
        s.record(
            "h1",
            vec![
                outcome(&acc.id, 0, RecipientState::Delivered, EventKind::Delivered),
                outcome(&acc.id, 1, RecipientState::Delivered, EventKind::Delivered),
            ],
            T0 + 1_000,
        )
        .await
        .unwrap();
        let mut hard = report(&acc.id, 0, EventKind::Bounced, true);
        hard.detail = json!({ "source": "dsn", "hard": true, "class": "blocked" });
        s.record_bounce(hard).await.unwrap();
        let mut soft = report(&acc.id, 1, EventKind::Bounced, false);
        soft.detail = json!({ "source": "dsn", "hard": false });
        s.record_bounce(soft).await.unwrap();
        let mut complaint = report(&acc.id, 1, EventKind::Complained, true);
        complaint.detail = json!({ "source": "complaint" });
        s.record_bounce(complaint).await.unwrap();

        let stats = s.relay_stats(&[T0], T0 + 20_000).await.unwrap();
        let w = &stats["relay-a"][0];
        assert_eq!((w.sent, w.delivered), (2, 2), "{w:?}");
        assert_eq!(
            (w.hard_bounced, w.soft_bounced, w.blocked),
            (1, 1, 1),
            "{w:?}"
        );
        assert_eq!(w.deferred, 0, "{w:?}");
    }

    async fn host_secret_is_made_once(db: Db) {
        let s = &db.store;
        let first = s
            .host_secret("verp_key", || "k1".to_string(), T0)
            .await
            .unwrap();
        assert_eq!(first, "k1");
        let second = db
            .second_host()
            .await
            .host_secret("verp_key", || "k2".to_string(), T0)
            .await
            .unwrap();
        assert_eq!(second, "k1", "every host reads the first key");
        let other = s
            .host_secret("other", || "k3".to_string(), T0)
            .await
            .unwrap();
        assert_eq!(other, "k3");
    }
}
// ---------------------------------------------------------------- billing

/// Accepts a message for `tenant` and records one final outcome per recipient (in
/// `outcomes` order) as host "h1"; returns the message id.
async fn finish(store: &Store, tenant: &str, outcomes: &[(RecipientState, EventKind)]) -> String {
    let addresses: Vec<String> = (0..outcomes.len())
        .map(|i| format!("r{i}@example.org"))
        .collect();
    let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let acc = store.accept(message(tenant, &refs), T0).await.unwrap();
    let leased = store.lease_due("h1", T0 + 10, 60_000, 1000).await.unwrap();
    let mine: Vec<_> = leased.iter().filter(|l| l.message_id == acc.id).collect();
    assert_eq!(mine.len(), outcomes.len());
    let list = mine
        .iter()
        .map(|l| {
            let (state, event) = outcomes[l.recipient_idx as usize];
            outcome(&acc.id, l.recipient_idx, state, event)
        })
        .collect();
    store.record("h1", list, T0 + 20).await.unwrap();
    acc.id
}

fn charge(service: &str, quantity: u64, price: &str, amount_micros: i64) -> NewCharge {
    NewCharge {
        service: service.into(),
        quantity,
        unit_price: price.into(),
        amount_micros,
        credit: false,
    }
}

/// Every claimed event rated with one `msg` charge of 1000 micros.
fn rate_all(events: &[PendingUsage]) -> Vec<RatedUsage> {
    events
        .iter()
        .map(|u| RatedUsage {
            usage: u.clone(),
            currency: "EUR".into(),
            charges: vec![charge("msg", 1, "0.001", 1_000)],
        })
        .collect()
}

async fn final_outcomes_become_usage_events_in_the_same_transaction(db: Db) {
    let s = &db.store;
    let id = finish(
        s,
        "t1",
        &[
            (RecipientState::Delivered, EventKind::Delivered),
            (RecipientState::Failed, EventKind::Bounced),
            (RecipientState::Failed, EventKind::Failed),
            (RecipientState::Deferred, EventKind::Deferred),
            (RecipientState::Expired, EventKind::Expired),
        ],
    )
    .await;
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 100).await.unwrap();
    let got: Vec<(i32, &str)> = usage
        .iter()
        .map(|u| (u.recipient_idx, u.outcome.as_str()))
        .collect();
    // The deferred recipient is not final: no usage yet.
    assert_eq!(
        got,
        [
            (0, "delivered"),
            (1, "bounced"),
            (2, "failed"),
            (4, "expired")
        ]
    );
    let u = &usage[0];
    assert_eq!(
        (
            u.tenant_id.as_str(),
            u.message_id.as_str(),
            u.recipient.as_str()
        ),
        ("t1", id.as_str(), "r0@example.org")
    );
    assert_eq!(
        (u.direction.as_str(), u.relay.as_deref(), u.at_ms),
        ("outbound", Some("relay-a"), T0 + 20)
    );
    assert!(u.size > 0);
    // A recorded outcome that lost its lease writes no usage either.
    assert_eq!(
        s.record(
            "h1",
            vec![outcome(
                &id,
                3,
                RecipientState::Delivered,
                EventKind::Delivered
            )],
            T0 + 40
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(s.list_unrated(100).await.unwrap().len(), 4);
}

async fn a_replayed_batch_never_charges_twice(db: Db) {
    let s = &db.store;
    finish(
        s,
        "t1",
        &[
            (RecipientState::Delivered, EventKind::Delivered),
            (RecipientState::Delivered, EventKind::Delivered),
        ],
    )
    .await;
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 100).await.unwrap();
    let rated = rate_all(&usage);
    assert_eq!(s.write_charges(&rated, T0 + 40).await.unwrap(), 2);
    // The same batch again (a retry after an unknown commit, or another host whose
    // claim expired): nothing new, counters unchanged.
    assert_eq!(s.write_charges(&rated, T0 + 50).await.unwrap(), 0);
    let second = db.second_host().await;
    assert_eq!(second.write_charges(&rated, T0 + 60).await.unwrap(), 0);
    let period = sluice::billing::period_of(T0 + 20);
    assert_eq!(
        s.period_counters("t1", &period).await.unwrap(),
        [("msg".to_string(), 2, 2_000)]
    );
    assert_eq!(s.balance("t1").await.unwrap().charges_micros, 2_000);
    assert_eq!(
        s.list_charges("t1", 0, i64::MAX, 0, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    // Rated events are not claimed again.
    assert!(
        s.claim_usage("rater", T0 + 70, 60_000, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.list_unrated(100).await.unwrap().is_empty());
}

async fn log_transfers_become_usage_once_however_often_they_are_read(db: Db) {
    let s = &db.store;
    let transfer = |key: &str, direction: &str| sluice::store::ExternalUsage {
        tenant_id: "t1".into(),
        message_id: format!("log:qmail:{key}"),
        recipient: "r@example.org".into(),
        direction: direction.into(),
        size: 1234,
        relay: Some("remote".into()),
        at_ms: T0,
        sender: "s@example.com".into(),
    };
    let batch = [transfer("a", "outbound"), transfer("b", "inbound")];
    assert_eq!(s.insert_external_usage(&batch, T0).await.unwrap(), 2);
    // The log read again after a crash, on this host or another.
    assert_eq!(s.insert_external_usage(&batch, T0 + 1).await.unwrap(), 0);
    let second = db.second_host().await;
    assert_eq!(
        second
            .insert_external_usage(
                &[transfer("b", "inbound"), transfer("c", "outbound")],
                T0 + 2
            )
            .await
            .unwrap(),
        1
    );
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 100).await.unwrap();
    let got: Vec<(&str, &str, u64)> = usage
        .iter()
        .map(|u| (u.message_id.as_str(), u.direction.as_str(), u.size))
        .collect();
    assert_eq!(
        got,
        [
            ("log:qmail:a", "outbound", 1234),
            ("log:qmail:b", "inbound", 1234),
            ("log:qmail:c", "outbound", 1234)
        ]
    );
}

async fn concurrent_raters_charge_exactly_once(db: Db) {
    let s = &db.store;
    for tenant in ["t1", "t2", "t3"] {
        for _ in 0..5 {
            finish(
                s,
                tenant,
                &[(RecipientState::Delivered, EventKind::Delivered); 4],
            )
            .await;
        }
    }
    let second = db.second_host().await;
    // Two raters on two hosts claim and rate in small batches at once.
    let rater = |store: Store, owner: &'static str| {
        tokio::spawn(async move {
            let mut written = 0;
            let mut claimed = Vec::new();
            loop {
                let batch = store.claim_usage(owner, T0 + 100, 60_000, 3).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                written += store
                    .write_charges(&rate_all(&batch), T0 + 200)
                    .await
                    .unwrap();
                claimed.extend(batch);
            }
            (written, claimed)
        })
    };
    let (a, b) = tokio::join!(rater(s.clone(), "r1"), rater(second.clone(), "r2"));
    let ((wa, ca), (wb, cb)) = (a.unwrap(), b.unwrap());
    let mut seen = HashSet::new();
    for u in ca.iter().chain(&cb) {
        assert!(seen.insert(u.seq), "usage event {u:?} was claimed twice");
    }
    assert_eq!(seen.len(), 60);
    assert_eq!(wa + wb, 60);
    // Both replay everything at once on both hosts: still one charge per recipient.
    let all: Vec<PendingUsage> = ca.into_iter().chain(cb).collect();
    let replay = rate_all(&all);
    let (ra, rb) = tokio::join!(
        s.write_charges(&replay, T0 + 300),
        second.write_charges(&replay, T0 + 300)
    );
    assert_eq!((ra.unwrap(), rb.unwrap()), (0, 0));
    for tenant in ["t1", "t2", "t3"] {
        assert_eq!(s.balance(tenant).await.unwrap().charges_micros, 20_000);
        let period = sluice::billing::period_of(T0);
        assert_eq!(s.period_counters(tenant, &period).await.unwrap()[0].1, 20);
    }
    // A tenant being rated by one host is not claimed by another meanwhile.
    finish(
        s,
        "t1",
        &[(RecipientState::Delivered, EventKind::Delivered); 2],
    )
    .await;
    finish(
        s,
        "t2",
        &[(RecipientState::Delivered, EventKind::Delivered)],
    )
    .await;
    let first = s.claim_usage("r1", T0 + 400, 60_000, 1).await.unwrap();
    assert_eq!(first[0].tenant_id, "t1");
    let other = second
        .claim_usage("r2", T0 + 400, 60_000, 100)
        .await
        .unwrap();
    assert!(other.iter().all(|u| u.tenant_id != "t1"), "{other:?}");
}

async fn failed_ratings_stay_unrated_and_back_off(db: Db) {
    let s = &db.store;
    finish(
        s,
        "t1",
        &[(RecipientState::Delivered, EventKind::Delivered)],
    )
    .await;
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 100).await.unwrap();
    let seqs: Vec<i64> = usage.iter().map(|u| u.seq).collect();
    s.defer_usage(
        &seqs,
        "rater-tiered: trap (wasm trap: unreachable)",
        T0 + 40,
    )
    .await
    .unwrap();
    let listed = s.list_unrated(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attempts, 1);
    assert_eq!(listed[0].next_try_at_ms, T0 + 40 + 2_000);
    assert!(listed[0].last_error.as_deref().unwrap().contains("trap"));
    // Not due before its retry time, due after; a second failure waits longer.
    assert!(
        s.claim_usage("rater", T0 + 41, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = s
        .claim_usage("rater", T0 + 2_040, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    s.defer_usage(&seqs, "timeout", T0 + 2_050).await.unwrap();
    let listed = s.list_unrated(10).await.unwrap();
    assert_eq!(
        (listed[0].attempts, listed[0].next_try_at_ms),
        (2, T0 + 2_050 + 4_000)
    );
    assert_eq!(s.balance("t1").await.unwrap().charges_micros, 0);
    // When the rater works again, it is charged once and leaves the listing.
    let due = s
        .claim_usage("rater", T0 + 10_000, 60_000, 10)
        .await
        .unwrap();
    assert_eq!(
        s.write_charges(&rate_all(&due), T0 + 10_001).await.unwrap(),
        1
    );
    assert!(s.list_unrated(10).await.unwrap().is_empty());
    // An expired claim (a crashed rater) is taken over by another.
    finish(
        s,
        "t1",
        &[(RecipientState::Delivered, EventKind::Delivered)],
    )
    .await;
    assert_eq!(
        s.claim_usage("dead", T0 + 20_000, 1_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.claim_usage("live", T0 + 20_500, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.claim_usage("live", T0 + 21_000, 1_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn balance_is_credits_minus_charges_exactly(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    let c = s
        .add_credit("t1", 12_500_000, "EUR", "pay-1", T0)
        .await
        .unwrap();
    assert!(c.credited);
    assert!(
        !s.add_credit("t1", 12_500_000, "EUR", "pay-1", T0 + 1)
            .await
            .unwrap()
            .credited
    );
    s.add_credit("t1", 1, "EUR", "pay-2", T0 + 2).await.unwrap();
    for _ in 0..3 {
        finish(
            s,
            "t1",
            &[(RecipientState::Delivered, EventKind::Delivered)],
        )
        .await;
    }
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 100).await.unwrap();
    // Sub-cent amounts that floats would smear: 0.000333 × 3.
    let rated: Vec<RatedUsage> = usage
        .iter()
        .map(|u| RatedUsage {
            usage: u.clone(),
            currency: "EUR".into(),
            charges: vec![
                charge("msg", 1, "0.000333", 333),
                charge("traffic", 2, "0.0000001", 0),
            ],
        })
        .collect();
    s.write_charges(&rated, T0 + 40).await.unwrap();
    let b = s.balance("t1").await.unwrap();
    assert_eq!(b.credits_micros, 12_500_001);
    assert_eq!(b.charges_micros, 999);
    assert_eq!(b.balance_micros(), 12_499_002);
    assert!(matches!(
        s.add_credit("nobody", 1, "EUR", "x", T0).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.add_credit("t1", 0, "EUR", "zero", T0).await,
        Err(StoreError::Invalid(_))
    ));
    // Another tenant's money is its own.
    assert_eq!(s.balance("t2").await.unwrap().balance_micros(), 0);
}

async fn reservations_cover_or_short_and_are_released_by_the_charge(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    s.add_credit("t1", 3_000, "EUR", "pay-1", T0).await.unwrap();
    let id = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap()
        .id;
    let items = vec![(id.clone(), 0, 2_000), (id.clone(), 1, 2_000)];
    assert_eq!(
        s.reserve("t1", &items, T0).await.unwrap(),
        Reservation::Short {
            available_micros: 3_000,
            needed_micros: 4_000
        }
    );
    assert_eq!(s.balance("t1").await.unwrap().reserved_micros, 0);
    assert_eq!(
        s.reserve("t1", &items[..1], T0).await.unwrap(),
        Reservation::Reserved
    );
    // Reserving the same recipient again (a retry after deferral) counts once.
    assert_eq!(
        s.reserve("t1", &items[..1], T0).await.unwrap(),
        Reservation::Reserved
    );
    let b = s.balance("t1").await.unwrap();
    assert_eq!((b.reserved_micros, b.available_micros()), (2_000, 1_000));
    assert!(matches!(
        s.reserve("t1", &items[1..], T0).await.unwrap(),
        Reservation::Short { .. }
    ));
    // Delivered and rated: the reservation gives way to the real charge.
    let leased = s.lease_due("h1", T0 + 10, 60_000, 10).await.unwrap();
    let first = leased.iter().find(|l| l.recipient_idx == 0).unwrap();
    s.record(
        "h1",
        vec![outcome(
            &first.message_id,
            0,
            RecipientState::Delivered,
            EventKind::Delivered,
        )],
        T0 + 20,
    )
    .await
    .unwrap();
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 10).await.unwrap();
    let rated: Vec<RatedUsage> = usage
        .iter()
        .map(|u| RatedUsage {
            usage: u.clone(),
            currency: "EUR".into(),
            charges: vec![charge("msg", 1, "0.0015", 1_500)],
        })
        .collect();
    s.write_charges(&rated, T0 + 40).await.unwrap();
    let b = s.balance("t1").await.unwrap();
    assert_eq!(
        (b.charges_micros, b.reserved_micros, b.available_micros()),
        (1_500, 0, 1_500)
    );
    // Two hosts racing for the last of the balance: one wins.
    let other = db.second_host().await;
    let id2 = s
        .accept(message("t1", &["c@example.org", "d@example.org"]), T0)
        .await
        .unwrap()
        .id;
    let a = vec![(id2.clone(), 0, 1_000)];
    let c = vec![(id2.clone(), 1, 1_000)];
    let (ra, rc) = tokio::join!(s.reserve("t1", &a, T0), other.reserve("t1", &c, T0));
    let won = [ra.unwrap(), rc.unwrap()]
        .iter()
        .filter(|r| **r == Reservation::Reserved)
        .count();
    assert_eq!(won, 1);
}

async fn a_credit_releases_held_recipients_once_per_reference(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    tenant(s, "t2").await;
    let held = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap()
        .id;
    let other = s
        .accept(message("t2", &["c@example.org"]), T0)
        .await
        .unwrap()
        .id;
    let leased = s.lease_due("h1", T0 + 1, 60_000, 10).await.unwrap();
    let hold = |l: &sluice::store::Lease| Outcome {
        message_id: l.message_id.clone(),
        recipient_idx: l.recipient_idx,
        new_state: RecipientState::Held,
        next_attempt_at_ms: None,
        relay: None,
        reply: None,
        event: EventKind::Held,
        detail: json!({"reason": "prepaid balance short"}),
        waiting_for_relay: None,
    };
    s.record("h1", leased.iter().map(hold).collect(), T0 + 2)
        .await
        .unwrap();
    // Held recipients are not leased.
    assert!(
        s.lease_due("h1", T0 + 3, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let c = s
        .add_credit("t1", 5_000_000, "EUR", "pay-1", T0 + 4)
        .await
        .unwrap();
    assert_eq!((c.credited, c.released), (true, 2));
    let m = s.get_message("t1", &held).await.unwrap().unwrap();
    assert!(
        m.recipients
            .iter()
            .all(|r| r.state == RecipientState::Queued)
    );
    assert_eq!(
        m.events
            .iter()
            .filter(|e| e.kind == EventKind::Released)
            .count(),
        2
    );
    // The other tenant's held recipient stays held.
    let o = s.get_message("t2", &other).await.unwrap().unwrap();
    assert_eq!(o.recipients[0].state, RecipientState::Held);
    let again = s
        .add_credit("t1", 5_000_000, "EUR", "pay-1", T0 + 5)
        .await
        .unwrap();
    assert_eq!((again.credited, again.released), (false, 0));
    assert_eq!(s.balance("t1").await.unwrap().credits_micros, 5_000_000);
    assert_eq!(
        s.lease_due("h1", T0 + 6, 60_000, 10).await.unwrap().len(),
        2
    );
}

async fn usage_and_invoice_sums_are_per_tenant(db: Db) {
    let s = &db.store;
    for tenant in ["t1", "t2"] {
        finish(
            s,
            tenant,
            &[(RecipientState::Delivered, EventKind::Delivered); 3],
        )
        .await;
    }
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 100).await.unwrap();
    let rated: Vec<RatedUsage> = usage
        .iter()
        .map(|u| {
            let price = if u.recipient_idx < 2 {
                ("0.0010", 1_000)
            } else {
                ("0.0006", 600)
            };
            RatedUsage {
                usage: u.clone(),
                currency: "EUR".into(),
                charges: vec![
                    charge("outbound-message", 1, price.0, price.1),
                    charge("outbound-traffic", 1, "0.0002", 200),
                ],
            }
        })
        .collect();
    s.write_charges(&rated, T0 + 40).await.unwrap();
    let period = sluice::billing::period_of(T0);
    let (sums, currency) = s.charge_sums("t1", &period).await.unwrap();
    assert_eq!(currency.as_deref(), Some("EUR"));
    let got: Vec<(&str, &str, u64, i64)> = sums
        .iter()
        .map(|x| {
            (
                x.service.as_str(),
                x.unit_price.as_str(),
                x.quantity,
                x.amount_micros,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("outbound-message", "0.0010", 2, 2_000),
            ("outbound-message", "0.0006", 1, 600),
            ("outbound-traffic", "0.0002", 3, 600),
        ]
    );
    assert!(s.charge_sums("t1", "1999-01").await.unwrap().0.is_empty());
    // Paging through t1's charges: 6 rows in pages of 4, none of t2's.
    let page1 = s.list_charges("t1", 0, i64::MAX, 0, 4).await.unwrap();
    let page2 = s
        .list_charges("t1", 0, i64::MAX, page1[3].seq, 4)
        .await
        .unwrap();
    assert_eq!((page1.len(), page2.len()), (4, 2));
    assert!(page1.iter().chain(&page2).all(|r| r.tenant_id == "t1"));
    // The time window is [from, to) on the usage time.
    assert!(
        s.list_charges("t1", 0, T0 + 20, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.list_charges("t1", T0 + 20, T0 + 21, 0, 100)
            .await
            .unwrap()
            .len(),
        6
    );
    assert!(
        s.list_charges("nobody", 0, i64::MAX, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn billing_settings_and_volume_settlement(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    assert_eq!(s.get_billing("t1").await.unwrap(), None);
    let set = s
        .set_billing("t1", BalanceMode::Prepaid, Some("id = \"x\""), T0)
        .await
        .unwrap();
    assert_eq!(s.get_billing("t1").await.unwrap(), Some(set));
    s.set_billing("t1", BalanceMode::Postpaid, None, T0 + 1)
        .await
        .unwrap();
    let b = s.get_billing("t1").await.unwrap().unwrap();
    assert_eq!((b.mode, b.tariff), (BalanceMode::Postpaid, None));
    assert!(matches!(
        s.set_billing("nobody", BalanceMode::Prepaid, None, T0)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // A settlement is written once and counts in the period's amounts.
    let period = sluice::billing::period_of(T0);
    assert!(!s.has_pending_usage("t1", &period).await.unwrap());
    finish(
        s,
        "t1",
        &[(RecipientState::Delivered, EventKind::Delivered)],
    )
    .await;
    assert!(s.has_pending_usage("t1", &period).await.unwrap());
    let u = s.claim_usage("rater", T0 + 30, 60_000, 10).await.unwrap();
    s.write_charges(&rate_all(&u), T0 + 40).await.unwrap();
    assert!(!s.has_pending_usage("t1", &period).await.unwrap());
    let st = Settlement {
        tenant_id: "t1".into(),
        period: period.clone(),
        service: "msg".into(),
        unit_price: "0.0005".into(),
        amount_micros: -500,
        currency: "EUR".into(),
    };
    assert!(s.write_settlement(&st, T0 + 50).await.unwrap());
    assert!(!s.write_settlement(&st, T0 + 60).await.unwrap());
    assert_eq!(
        s.period_counters("t1", &period).await.unwrap(),
        [("msg".to_string(), 1, 500)]
    );
    assert_eq!(s.balance("t1").await.unwrap().charges_micros, 500);
    let (sums, _) = s.charge_sums("t1", &period).await.unwrap();
    assert_eq!(sums.len(), 2);
    assert!(sums[1].settlement && sums[1].amount_micros == -500);
}

/// Issue 17: whatever a rater answered, the store writes no negative charge that the
/// tariff did not declare a credit, and refuses the whole batch holding one: the
/// platform's books stay as they were and the events stay unrated.
async fn a_negative_charge_that_is_not_a_credit_writes_nothing_of_its_batch(db: Db) {
    let s = &db.store;
    finish(
        s,
        "t1",
        &[
            (RecipientState::Delivered, EventKind::Delivered),
            (RecipientState::Delivered, EventKind::Delivered),
        ],
    )
    .await;
    let usage = s.claim_usage("rater", T0 + 30, 60_000, 100).await.unwrap();
    assert_eq!(usage.len(), 2);
    let mut rated = rate_all(&usage);
    rated[1].charges = vec![charge("msg", 1, "-1000", -1_000_000_000)];
    let err = s.write_charges(&rated, T0 + 40).await.unwrap_err();
    assert!(err.to_string().contains("not a credit service"), "{err}");
    let second = db.second_host().await;
    assert!(second.write_charges(&rated, T0 + 41).await.is_err());
    assert_eq!(s.balance("t1").await.unwrap(), Default::default());
    assert!(
        s.list_charges("t1", 0, i64::MAX, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let period = sluice::billing::period_of(T0 + 20);
    assert!(s.period_counters("t1", &period).await.unwrap().is_empty());
    assert_eq!(s.list_unrated(100).await.unwrap().len(), 2);

    // Declared a credit by the tariff, the same amount is written (a refund).
    rated[1].charges[0].credit = true;
    rated[1].charges[0].amount_micros = -500;
    assert_eq!(s.write_charges(&rated, T0 + 50).await.unwrap(), 2);
    assert_eq!(s.balance("t1").await.unwrap().charges_micros, 500);
    assert!(s.list_unrated(100).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- accounts (issue 17)

fn new_account(id: &str, logins: &[&str]) -> NewAccount {
    NewAccount {
        id: id.into(),
        name: format!("Customer {id}"),
        mode: BalanceMode::Postpaid,
        logins: logins.iter().map(|l| l.to_string()).collect(),
    }
}

async fn accounts_and_their_logins_are_per_tenant(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    tenant(s, "t2").await;
    let a = s
        .create_account(
            "t1",
            &new_account("shop", &["Shop.Example", "boss@example.com"]),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(a.logins, ["boss@example.com", "shop.example"]);
    assert!(matches!(
        s.create_account("t1", &new_account("shop", &[]), T0).await,
        Err(StoreError::Conflict(_))
    ));
    // A login names one account of a tenant; another tenant may use it for its own.
    let err = s
        .create_account("t1", &new_account("other", &["shop.example"]), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains("\"shop\"")),
        "{err}"
    );
    assert!(s.get_account("t1", "other").await.unwrap().is_none());
    s.create_account("t2", &new_account("shop", &["shop.example"]), T0)
        .await
        .unwrap();
    for bad in [
        "",
        "a b@example.com",
        "@example.com",
        "<x@example.com>",
        "a@b@c",
    ] {
        assert!(
            matches!(
                s.create_account("t1", &new_account("bad", &[bad]), T0)
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        s.create_account("t1", &new_account("no spaces", &[]), T0)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_account("nobody", &new_account("x", &[]), T0).await,
        Err(StoreError::NotFound(_))
    ));
    // What one account may hold is bounded (and what one tenant may, in all).
    let many: Vec<String> = (0..=sluice::store::MAX_LOGINS)
        .map(|i| format!("u{i}@example.net"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = s
        .create_account("t1", &new_account("big", &refs), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("at most")),
        "{err}"
    );
    s.update_account(
        "t1",
        "shop",
        &AccountUpdate {
            logins: Some(vec!["new.example".into()]),
            mode: Some(BalanceMode::Prepaid),
            ..Default::default()
        },
        T0 + 1,
    )
    .await
    .unwrap();
    let a = s.get_account("t1", "shop").await.unwrap().unwrap();
    assert_eq!(
        (a.logins.as_slice(), a.mode),
        (&["new.example".to_string()][..], BalanceMode::Prepaid)
    );
    assert_eq!(
        s.account_logins("t1").await.unwrap(),
        [("new.example".to_string(), "shop".to_string())]
    );
    // Another tenant's account is not there to change or see.
    assert!(matches!(
        s.update_account("t2", "nope", &AccountUpdate::default(), T0)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.list_accounts("t2").await.unwrap()[0].logins,
        ["shop.example"]
    );
    s.delete_account("t1", "shop", T0 + 2).await.unwrap();
    assert!(s.list_accounts("t1").await.unwrap().is_empty());
    assert!(s.account_logins("t1").await.unwrap().is_empty());
    assert!(matches!(
        s.delete_account("t1", "shop", T0 + 3).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A key issued to one account of a tenant comes back with that account as its scope;
/// it is made, listed and revoked through its account only, counts only while the
/// account exists (deleting the account revokes it for good), and an account holds a
/// bounded number of live keys.
async fn an_account_key_is_scoped_to_its_account_and_dies_with_it(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    tenant(s, "t2").await;
    for (t, a) in [("t1", "shop"), ("t1", "boss"), ("t2", "shop")] {
        s.create_account(t, &new_account(a, &[]), T0).await.unwrap();
    }
    let (info, secret) = s.create_account_key("t1", "shop", T0).await.unwrap();
    assert_eq!(info.account_id.as_deref(), Some("shop"));
    assert!(secret.starts_with(&info.prefix));
    let owner = s.key_owner(&secret).await.unwrap().unwrap();
    assert_eq!(owner.tenant.id, "t1");
    assert_eq!(owner.scope, KeyScope::Account("shop".into()));
    let (_, tenant_secret) = s.create_api_key("t1", T0).await.unwrap();
    assert_eq!(
        s.key_owner(&tenant_secret).await.unwrap().unwrap().scope,
        KeyScope::Tenant
    );
    // The same account id at another tenant is another account.
    let (t2_info, t2_secret) = s.create_account_key("t2", "shop", T0).await.unwrap();
    assert_eq!(
        s.key_owner(&t2_secret).await.unwrap().unwrap().tenant.id,
        "t2"
    );
    for (t, a) in [("t1", "nope"), ("nobody", "shop")] {
        let missing = s.create_account_key(t, a, T0).await;
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{t}/{a}: {missing:?}"
        );
    }
    // Listed with its account, by its account and among all of the tenant's keys.
    let (boss_info, boss_secret) = s.create_account_key("t1", "boss", T0 + 1).await.unwrap();
    assert_eq!(
        s.list_account_keys("t1", "shop").await.unwrap(),
        std::slice::from_ref(&info)
    );
    assert_eq!(
        s.list_account_keys("t1", "boss").await.unwrap(),
        std::slice::from_ref(&boss_info)
    );
    assert_eq!(s.list_api_keys("t1").await.unwrap().len(), 3);
    // Revoked through its own account only.
    assert!(
        !s.revoke_account_key("t1", "boss", &info.id, T0 + 2)
            .await
            .unwrap()
    );
    assert!(
        !s.revoke_account_key("t1", "shop", &t2_info.id, T0 + 2)
            .await
            .unwrap()
    );
    assert!(
        s.revoke_account_key("t1", "shop", &info.id, T0 + 2)
            .await
            .unwrap()
    );
    assert!(
        !s.revoke_account_key("t1", "shop", &info.id, T0 + 3)
            .await
            .unwrap()
    );
    assert!(s.key_owner(&secret).await.unwrap().is_none());
    assert_eq!(
        s.list_account_keys("t1", "shop").await.unwrap()[0].revoked_at_ms,
        Some(T0 + 2)
    );
    // Deleting the account revokes its keys; the account made again does not bring
    // them back.
    s.delete_account("t1", "boss", T0 + 4).await.unwrap();
    assert!(s.key_owner(&boss_secret).await.unwrap().is_none());
    s.create_account("t1", &new_account("boss", &[]), T0 + 5)
        .await
        .unwrap();
    assert!(s.key_owner(&boss_secret).await.unwrap().is_none());
    assert_eq!(
        s.list_account_keys("t1", "boss").await.unwrap()[0].revoked_at_ms,
        Some(T0 + 4)
    );
    assert!(s.key_owner(&tenant_secret).await.unwrap().is_some());
    // At most MAX_ACCOUNT_KEYS live keys an account; a revoked one makes room.
    let mut last = None;
    for i in 0..sluice::store::MAX_ACCOUNT_KEYS {
        last = Some(
            s.create_account_key("t1", "boss", T0 + 10 + i)
                .await
                .unwrap()
                .0,
        );
    }
    let over = s.create_account_key("t1", "boss", T0 + 200).await;
    assert!(
        matches!(&over, Err(StoreError::Invalid(m)) if m.contains("revoke one")),
        "{over:?}"
    );
    assert!(
        s.revoke_account_key("t1", "boss", &last.unwrap().id, T0 + 201)
            .await
            .unwrap()
    );
    s.create_account_key("t1", "boss", T0 + 202).await.unwrap();
}

fn account_charge(account: &str, u: &sluice::store::AccountUsage, amount: i64) -> AccountCharge {
    AccountCharge {
        account_id: account.into(),
        message_id: u.message_id.clone(),
        recipient_idx: u.recipient_idx,
        recipient: u.recipient.clone(),
        outcome: u.outcome.clone(),
        service: "msg".into(),
        quantity: 1,
        unit_price: "0.001".into(),
        amount_micros: amount,
        currency: "EUR".into(),
        credit: false,
        at_ms: u.at_ms,
    }
}

/// Account rating reads a tenant's usage after its cursor; the charges and the cursor's
/// move commit together, so a replay, or a host that lost its claim and writes late,
/// writes nothing again.
async fn account_charges_are_written_once_under_replay_and_a_takeover(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    // Usage before the first account is not the accounts' to pay.
    finish(
        s,
        "t1",
        &[(RecipientState::Delivered, EventKind::Delivered)],
    )
    .await;
    s.create_account("t1", &new_account("shop", &["example.com"]), T0)
        .await
        .unwrap();
    assert_eq!(
        s.account_rating_status("t1")
            .await
            .unwrap()
            .unwrap()
            .waiting,
        0
    );
    finish(
        s,
        "t1",
        &[
            (RecipientState::Delivered, EventKind::Delivered),
            (RecipientState::Delivered, EventKind::Delivered),
        ],
    )
    .await;
    let now = T0 + 60_000;
    let b = s
        .claim_account_batch("h1", now, 30_000, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.tenant_id, "t1");
    assert_eq!(b.events.len(), 2);
    assert_eq!(b.events[0].sender.as_deref(), Some("app@example.com"));
    // Claimed by h1: nobody else gets it until the claim ends.
    let second = db.second_host().await;
    assert!(
        second
            .claim_account_batch("h2", now + 1, 30_000, 100)
            .await
            .unwrap()
            .is_none()
    );
    // h1 is gone; h2 takes the batch over after the claim and writes it.
    let taken = second
        .claim_account_batch("h2", now + 30_001, 30_000, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.after_seq, b.after_seq);
    let through = taken.events.last().unwrap().seq;
    let charges: Vec<_> = taken
        .events
        .iter()
        .map(|u| account_charge("shop", u, 1_000))
        .collect();
    assert_eq!(
        second
            .write_account_charges("t1", taken.after_seq, through, &charges, now + 30_002)
            .await
            .unwrap(),
        2
    );
    // h1 comes back and writes the same batch late; then a plain replay: nothing.
    assert_eq!(
        s.write_account_charges("t1", b.after_seq, through, &charges, now + 30_003)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        second
            .write_account_charges("t1", taken.after_seq, through, &charges, now + 30_004)
            .await
            .unwrap(),
        0
    );
    assert!(
        s.claim_account_batch("h1", now + 30_005, 30_000, 100)
            .await
            .unwrap()
            .is_none()
    );
    let rows = s
        .list_account_charges("t1", "shop", 0, i64::MAX, 0, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        s.account_balance("t1", "shop")
            .await
            .unwrap()
            .charges_micros,
        2_000
    );
    let period = sluice::billing::period_of(T0 + 20);
    let (sums, currency) = s.account_charge_sums("t1", "shop", &period).await.unwrap();
    assert_eq!(
        (sums.len(), sums[0].quantity, sums[0].amount_micros),
        (1, 2, 2_000)
    );
    assert_eq!(currency.as_deref(), Some("EUR"));
    // One read for many accounts: an account without charges in the period is absent,
    // and so is any period but the one asked.
    let quantities = s
        .account_quantities("t1", &period, &["shop", "nobody"])
        .await
        .unwrap();
    assert_eq!(quantities.len(), 1);
    assert_eq!(quantities["shop"], [("msg".to_string(), 2)]);
    assert!(
        s.account_quantities("t1", "2001-01", &["shop"])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.account_quantities("t2", &period, &["shop"])
            .await
            .unwrap()
            .is_empty()
    );
    // A failed try keeps the cursor and says why; a credit counts once per reference.
    finish(
        s,
        "t1",
        &[(RecipientState::Delivered, EventKind::Delivered)],
    )
    .await;
    let b = s
        .claim_account_batch("h1", now + 40_000, 30_000, 100)
        .await
        .unwrap()
        .unwrap();
    s.defer_account_rating("t1", "rater trapped", now + 40_001)
        .await
        .unwrap();
    let st = s.account_rating_status("t1").await.unwrap().unwrap();
    assert_eq!((st.after_seq, st.attempts, st.waiting), (b.after_seq, 1, 1));
    assert_eq!(st.last_error.as_deref(), Some("rater trapped"));
    assert!(
        s.claim_account_batch("h1", now + 40_002, 30_000, 100)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.add_account_credit("t1", "shop", 5_000, "EUR", "pay-1", now)
            .await
            .unwrap()
    );
    assert!(
        !s.add_account_credit("t1", "shop", 5_000, "EUR", "pay-1", now)
            .await
            .unwrap()
    );
    assert_eq!(
        s.account_balance("t1", "shop")
            .await
            .unwrap()
            .balance_micros(),
        3_000
    );
    // None of it is the platform's: the tenant's own balance is untouched.
    assert_eq!(s.balance("t1").await.unwrap(), Default::default());
    // The retried batch, written with a charge the ledger holds already beside its own:
    // the period counters grow by the row inserted only, and equal the ledger's sums.
    let again = [
        account_charge("shop", &b.events[0], 1_000),
        charges[0].clone(),
    ];
    assert_eq!(
        s.write_account_charges(
            "t1",
            b.after_seq,
            b.events.last().unwrap().seq,
            &again,
            now + 40_003
        )
        .await
        .unwrap(),
        1
    );
    let rows = s
        .list_account_charges("t1", "shop", 0, i64::MAX, 0, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let mut sums = std::collections::BTreeMap::<String, u64>::new();
    for r in &rows {
        assert_eq!(r.service, "msg");
        *sums.entry(r.period.clone()).or_default() += r.quantity;
    }
    for (period, quantity) in sums {
        assert_eq!(
            s.account_quantities("t1", &period, &["shop"])
                .await
                .unwrap()["shop"],
            [("msg".to_string(), quantity)]
        );
    }
}

/// Account rating gathers a tenant's usage into fuller batches: a tenant is due when its
/// oldest waiting event (once settled) is `ACCOUNT_GATHER_MS` old, or at once when a full
/// batch waits. A burst gathered so is one batch, each event charged once however often
/// and by whichever host the batch is written, and of two hosts claiming at the same
/// moment one gets it.
async fn account_usage_gathers_into_one_batch_that_is_charged_once(db: Db) {
    use sluice::store::{ACCOUNT_GATHER_MS, ACCOUNT_SETTLE_MS};
    let s = &db.store;
    let second = db.second_host().await;
    tenant(s, "t1").await;
    s.create_account("t1", &new_account("shop", &["example.com"]), T0)
        .await
        .unwrap();
    // A burst: four messages of three recipients, recorded at T0 + 20.
    let three = [(RecipientState::Delivered, EventKind::Delivered); 3];
    for _ in 0..4 {
        finish(s, "t1", &three).await;
    }
    // PostgreSQL reads only events settled; SQLite's seqs are final at commit.
    let settle = if db.url.starts_with("postgres") {
        ACCOUNT_SETTLE_MS
    } else {
        0
    };
    let ready = T0 + 20 + settle;
    // Gathering: not due yet for anyone, unless a full batch waits.
    for (store, owner) in [(s, "h1"), (&second, "h2")] {
        assert!(
            store
                .claim_account_batch(owner, ready + ACCOUNT_GATHER_MS - 1, 30_000, 100)
                .await
                .unwrap()
                .is_none()
        );
    }
    let first_five = s
        .claim_account_batch("h1", ready, 30_000, 5)
        .await
        .unwrap()
        .expect("a full batch waits: due at once");
    assert_eq!(first_five.events.len(), 5);
    // h1 holds the cursor: h2 gets nothing; h1 itself reads the whole burst once gathered.
    assert!(
        second
            .claim_account_batch("h2", ready + ACCOUNT_GATHER_MS, 30_000, 100)
            .await
            .unwrap()
            .is_none()
    );
    let burst = s
        .claim_account_batch("h1", ready + ACCOUNT_GATHER_MS, 30_000, 100)
        .await
        .unwrap()
        .expect("gathered: due");
    assert_eq!(burst.after_seq, first_five.after_seq);
    assert_eq!(burst.events.len(), 12);
    assert_eq!(burst.events[..5], first_five.events[..]);
    let charges: Vec<_> = burst
        .events
        .iter()
        .map(|u| account_charge("shop", u, 1_000))
        .collect();
    let through = burst.events.last().unwrap().seq;
    let at = ready + ACCOUNT_GATHER_MS + 1;
    assert_eq!(
        s.write_account_charges("t1", burst.after_seq, through, &charges, at)
            .await
            .unwrap(),
        12
    );
    // The smaller batch written late, the burst replayed, by either host: nothing.
    assert_eq!(
        s.write_account_charges(
            "t1",
            first_five.after_seq,
            first_five.events.last().unwrap().seq,
            &charges[..5],
            at
        )
        .await
        .unwrap(),
        0
    );
    for store in [s, &second] {
        assert_eq!(
            store
                .write_account_charges("t1", burst.after_seq, through, &charges, at)
                .await
                .unwrap(),
            0
        );
    }
    let st = s.account_rating_status("t1").await.unwrap().unwrap();
    assert_eq!((st.after_seq, st.waiting), (through, 0));
    assert!(
        s.claim_account_batch("h1", at + 60_000, 30_000, 100)
            .await
            .unwrap()
            .is_none()
    );
    // A second burst, two hosts claiming at the same moment: one batch, charged once.
    for _ in 0..2 {
        finish(s, "t1", &three).await;
    }
    let now = at + 60_000;
    let (a, b) = tokio::join!(
        s.claim_account_batch("h1", now, 30_000, 100),
        second.claim_account_batch("h2", now, 30_000, 100)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_some() != b.is_some(), "{a:?} / {b:?}");
    let (writer, batch) = match (a, b) {
        (Some(a), None) => (s, a),
        (None, Some(b)) => (&second, b),
        _ => unreachable!(),
    };
    assert_eq!((batch.after_seq, batch.events.len()), (through, 6));
    let more: Vec<_> = batch
        .events
        .iter()
        .map(|u| account_charge("shop", u, 1_000))
        .collect();
    let last = batch.events.last().unwrap().seq;
    assert_eq!(
        writer
            .write_account_charges("t1", through, last, &more, now + 1)
            .await
            .unwrap(),
        6
    );
    let rows = s
        .list_account_charges("t1", "shop", 0, i64::MAX, 0, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 18);
    let keys: HashSet<_> = rows
        .iter()
        .map(|r| (r.message_id.clone(), r.recipient_idx))
        .collect();
    assert_eq!(keys.len(), 18);
    let period = sluice::billing::period_of(T0 + 20);
    assert_eq!(
        s.account_quantities("t1", &period, &["shop"])
            .await
            .unwrap()["shop"],
        [("msg".to_string(), 18)]
    );
}

/// Issue 17: one batch of 600 events over 150 accounts, two services (past one
/// multi-row statement of ledger rows and of counter upserts each), is written in one
/// transaction, once: a replay from either host writes nothing, and every account's
/// ledger, balance and period counters equal the sums computed here, to the micro-unit.
async fn a_batch_over_many_accounts_is_charged_once_exactly(db: Db) {
    use sluice::store::{ACCOUNT_GATHER_MS, ACCOUNT_SETTLE_MS};
    const ACCOUNTS: usize = 150;
    let s = &db.store;
    let second = db.second_host().await;
    tenant(s, "t1").await;
    for a in 0..ACCOUNTS {
        let login = format!("a{a}.example");
        s.create_account("t1", &new_account(&format!("a{a:03}"), &[&login]), T0)
            .await
            .unwrap();
    }
    let delivered = [(RecipientState::Delivered, EventKind::Delivered); 200];
    for _ in 0..3 {
        finish(s, "t1", &delivered).await;
    }
    let settle = if db.url.starts_with("postgres") {
        ACCOUNT_SETTLE_MS
    } else {
        0
    };
    let now = T0 + 20 + settle + ACCOUNT_GATHER_MS;
    let batch = s
        .claim_account_batch("h1", now, 30_000, 1_000)
        .await
        .unwrap()
        .expect("gathered: due");
    assert_eq!(batch.events.len(), 600);
    // Event j: account j mod 150, a message charge of (j mod 7 + 1) × 1,001 micro-units;
    // every fifth also j mod 3 + 1 KiB at 17 micro-units each.
    let mut charges = Vec::new();
    let mut want: std::collections::HashMap<String, (i64, u64, u64)> = Default::default();
    for (j, u) in batch.events.iter().enumerate() {
        let account = format!("a{:03}", j % ACCOUNTS);
        let amount = (j as i64 % 7 + 1) * 1_001;
        charges.push(AccountCharge {
            amount_micros: amount,
            ..account_charge(&account, u, amount)
        });
        let w = want.entry(account.clone()).or_default();
        w.0 += amount;
        w.1 += 1;
        if j % 5 == 0 {
            let kib = j as u64 % 3 + 1;
            charges.push(AccountCharge {
                service: "kib".into(),
                quantity: kib,
                unit_price: "0.000017".into(),
                amount_micros: 17 * kib as i64,
                ..account_charge(&account, u, 0)
            });
            w.0 += 17 * kib as i64;
            w.2 += kib;
        }
    }
    let through = batch.events.last().unwrap().seq;
    let written = s
        .write_account_charges("t1", batch.after_seq, through, &charges, now + 1)
        .await
        .unwrap();
    assert_eq!(written, 600 + 120);
    for store in [s, &second] {
        let again = store.write_account_charges("t1", batch.after_seq, through, &charges, now + 2);
        assert_eq!(again.await.unwrap(), 0, "a replay writes nothing");
    }
    let period = sluice::billing::period_of(T0 + 20);
    let names: Vec<String> = (0..ACCOUNTS).map(|a| format!("a{a:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let counters = s.account_quantities("t1", &period, &refs).await.unwrap();
    for name in &names {
        let (amount, messages, kib) = want[name];
        let rows = s
            .list_account_charges("t1", name, 0, i64::MAX, 0, 1_000)
            .await
            .unwrap();
        assert_eq!(
            rows.iter().map(|r| r.amount_micros).sum::<i64>(),
            amount,
            "{name}"
        );
        let balance = s.account_balance("t1", name).await.unwrap();
        assert_eq!(balance.charges_micros, amount, "{name}");
        let mut q: Vec<(String, u64)> = vec![("msg".into(), messages)];
        if kib > 0 {
            q.push(("kib".into(), kib));
        }
        q.sort();
        let mut got = counters[name].clone();
        got.sort();
        assert_eq!(got, q, "{name}: the period counters equal the ledger");
    }
}

/// Whatever a tenant's rater answers for its accounts goes to the tenant's books only,
/// and a negative charge that the tariff does not declare a credit writes nothing.
async fn a_tenants_account_rater_cannot_touch_the_platforms_books(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    s.create_account("t1", &new_account("shop", &["example.com"]), T0)
        .await
        .unwrap();
    finish(
        s,
        "t1",
        &[(RecipientState::Delivered, EventKind::Delivered)],
    )
    .await;
    let now = T0 + 60_000;
    let b = s
        .claim_account_batch("h1", now, 30_000, 100)
        .await
        .unwrap()
        .unwrap();
    let through = b.events.last().unwrap().seq;
    let huge_refund = vec![account_charge("shop", &b.events[0], -1_000_000_000_000)];
    let err = s
        .write_account_charges("t1", b.after_seq, through, &huge_refund, now)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a credit service"), "{err}");
    assert_eq!(
        s.account_rating_status("t1")
            .await
            .unwrap()
            .unwrap()
            .after_seq,
        b.after_seq
    );
    assert!(
        s.list_account_charges("t1", "shop", 0, i64::MAX, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A huge charge the checks let through lands in the account's books, never the
    // platform's: its ledger, balance, counters and unrated usage are as they were.
    let huge = vec![account_charge("shop", &b.events[0], i64::MAX / 2)];
    assert_eq!(
        s.write_account_charges("t1", b.after_seq, through, &huge, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.balance("t1").await.unwrap(), Default::default());
    assert!(
        s.list_charges("t1", 0, i64::MAX, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let period = sluice::billing::period_of(T0 + 20);
    assert!(s.period_counters("t1", &period).await.unwrap().is_empty());
    assert_eq!(s.list_unrated(10).await.unwrap().len(), 1);
    // The platform's rating of the same usage is untouched by it.
    let usage = s.claim_usage("rater", now, 60_000, 100).await.unwrap();
    assert_eq!(s.write_charges(&rate_all(&usage), now).await.unwrap(), 1);
    assert_eq!(s.balance("t1").await.unwrap().charges_micros, 1_000);
}

// ---------------------------------------------------------------- nodes

fn node(id: &str, incarnation: &str) -> NodeJoin {
    NodeJoin {
        id: id.to_string(),
        incarnation: incarnation.to_string(),
        address: format!("127.0.0.1:80{}", id.len()),
        started_at_ms: T0,
    }
}

/// How old a heartbeat may be before its node is dead, in these tests.
const DEAD_AFTER: i64 = 5_000;

/// A node id belongs to one live process: a second one is refused while the first
/// beats, and may join once its heartbeat is stale (the first was killed), taking back
/// the leases the id held; the first then learns from its heartbeat that it lost the id.
async fn a_node_id_is_one_processs_and_a_restart_takes_back_its_leases(db: Db) {
    let s = &db.store;
    assert_eq!(
        s.join_node(&node("h1", "run-1"), T0, DEAD_AFTER)
            .await
            .unwrap(),
        Joined::Joined { reclaimed: 0 }
    );
    let acc = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap();
    // Leased for five minutes, far longer than the restart below takes.
    assert_eq!(s.lease_due("h1", T0, 300_000, 10).await.unwrap().len(), 2);
    assert!(s.node_heartbeat("h1", "run-1", T0 + 1_000).await.unwrap());

    // A second process on the id while the first beats: refused, nothing written.
    match s
        .join_node(&node("h1", "run-2"), T0 + 2_000, DEAD_AFTER)
        .await
        .unwrap()
    {
        Joined::InUse {
            heartbeat_at_ms, ..
        } => assert_eq!(heartbeat_at_ms, T0 + 1_000),
        other => panic!("a live node's id was given to a second process: {other:?}"),
    }
    assert!(s.node_heartbeat("h1", "run-1", T0 + 2_000).await.unwrap());

    // The first is killed; once its heartbeat is stale a restart joins and takes back
    // the id's leases, due at once, not after the five minutes.
    let restart = T0 + 2_000 + DEAD_AFTER + 1;
    assert_eq!(
        s.join_node(&node("h1", "run-2"), restart, DEAD_AFTER)
            .await
            .unwrap(),
        Joined::Joined { reclaimed: 2 }
    );
    let again = s.lease_due("h1", restart, 300_000, 10).await.unwrap();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again.iter().all(|l| l.message_id == acc.id));
    // The old process wakes with the id's leases in memory: they carry its id, but
    // under its incarnation none is its own any more, so its check before sending
    // keeps nothing; the new process renews both.
    let keys: Vec<_> = again.iter().map(|l| l.key()).collect();
    assert!(
        s.renew_node_leases_each("h1", "run-1", &keys, restart + 1, 300_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.renew_node_leases_each("h1", "run-2", &keys, restart + 1, 300_000)
            .await
            .unwrap()
            .len(),
        2
    );
    // The old process's heartbeat no longer counts: it must stop.
    assert!(!s.node_heartbeat("h1", "run-1", restart + 1).await.unwrap());
    assert!(s.node_heartbeat("h1", "run-2", restart + 1).await.unwrap());

    // A node that stopped gracefully may be followed at once (its row says stopped).
    s.stop_node("h1", "run-2", restart + 2).await.unwrap();
    assert!(!s.node_heartbeat("h1", "run-2", restart + 3).await.unwrap());
    assert!(matches!(
        s.join_node(&node("h1", "run-3"), restart + 4, DEAD_AFTER)
            .await
            .unwrap(),
        Joined::Joined { .. }
    ));
    let bad = s.join_node(&node("", "x"), T0, DEAD_AFTER).await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
}

/// A node whose heartbeat is older than the dead-after time loses its leases at once
/// to whoever looks (its outcomes are refused from then on); a node that beats never
/// does, however long its leases.
async fn a_dead_nodes_leases_are_taken_over_at_once_and_a_live_nodes_never(db: Db) {
    let s = &db.store;
    let other = db.second_host().await;
    for (store, id) in [(s, "h1"), (&other, "h2")] {
        store
            .join_node(&node(id, id), T0, DEAD_AFTER)
            .await
            .unwrap();
    }
    let acc = s
        .accept(message("t1", &["a@example.org", "b@example.org"]), T0)
        .await
        .unwrap();
    let h1 = s.lease_due("h1", T0, 300_000, 1).await.unwrap();
    let h2 = other.lease_due("h2", T0, 300_000, 1).await.unwrap();
    assert_eq!((h1.len(), h2.len()), (1, 1));

    // Both beat: nobody takes anything.
    let t = T0 + 3_000;
    assert!(s.node_heartbeat("h1", "h1", t).await.unwrap());
    assert!(other.node_heartbeat("h2", "h2", t).await.unwrap());
    assert!(
        s.take_over_dead_nodes("h1", t + DEAD_AFTER - 1, DEAD_AFTER)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.lease_due("h1", t + 100, 300_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // h2 stops beating (killed); h1 goes on. Once h2's heartbeat is stale, h1 takes its
    // lease at once, minutes before it would have run out.
    let t2 = t + DEAD_AFTER + 1;
    assert!(s.node_heartbeat("h1", "h1", t2).await.unwrap());
    let taken = s.take_over_dead_nodes("h1", t2, DEAD_AFTER).await.unwrap();
    assert_eq!(taken, vec![("h2".to_string(), 1)]);
    // A dead node never judges itself, and h1 is alive.
    assert!(
        other
            .take_over_dead_nodes("h2", t2, DEAD_AFTER)
            .await
            .unwrap()
            .is_empty()
    );
    let mine = s.lease_due("h1", t2, 300_000, 10).await.unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].key(), h2[0].key());
    // h2's outcome, had it come back, is refused: the recipient is h1's now.
    let late = other
        .record(
            "h2",
            vec![outcome(
                &acc.id,
                h2[0].recipient_idx,
                RecipientState::Delivered,
                EventKind::Delivered,
            )],
            t2 + 1,
        )
        .await
        .unwrap();
    assert_eq!(late, 0);
    // Nothing is left to take: a second look finds nothing.
    assert!(
        s.take_over_dead_nodes("h1", t2 + 1, DEAD_AFTER)
            .await
            .unwrap()
            .is_empty()
    );

    let nodes = s.list_nodes(t2 + 2).await.unwrap();
    let held: Vec<(String, u64)> = nodes
        .iter()
        .map(|n| (n.id.clone(), n.leases_held))
        .collect();
    assert_eq!(held, vec![("h1".to_string(), 2), ("h2".to_string(), 0)]);
    assert_eq!(nodes[1].heartbeat_at_ms, t);
    assert_eq!(nodes[0].stopped_at_ms, None);
}

/// One node leads at a time; it renews its term with its heartbeat; when it dies its
/// term runs out and another takes over; a leader that stops hands on at once. Two
/// nodes claiming at the same moment: one wins.
async fn one_leader_at_a_time_and_another_takes_over_when_it_dies(db: Db) {
    let s = &db.store;
    let other = db.second_host().await;
    assert_eq!(s.leader(T0).await.unwrap(), None);
    assert!(s.claim_leadership("h1", T0, DEAD_AFTER).await.unwrap());
    assert!(
        !other
            .claim_leadership("h2", T0 + 1_000, DEAD_AFTER)
            .await
            .unwrap()
    );
    assert!(
        s.claim_leadership("h1", T0 + 1_000, DEAD_AFTER)
            .await
            .unwrap()
    );
    let l = s.leader(T0 + 1_000).await.unwrap().expect("a leader");
    assert_eq!((l.node_id.as_str(), l.since_ms), ("h1", T0));
    assert_eq!(l.until_ms, T0 + 1_000 + DEAD_AFTER);

    // h1 dies: until its term runs out h2 cannot lead, then it takes over.
    let end = T0 + 1_000 + DEAD_AFTER;
    assert!(
        !other
            .claim_leadership("h2", end - 1, DEAD_AFTER)
            .await
            .unwrap()
    );
    assert!(other.claim_leadership("h2", end, DEAD_AFTER).await.unwrap());
    assert!(!s.claim_leadership("h1", end + 1, DEAD_AFTER).await.unwrap());
    let l = s.leader(end + 1).await.unwrap().expect("a leader");
    assert_eq!((l.node_id.as_str(), l.since_ms), ("h2", end));

    // h2 stops gracefully: the role is free at once.
    other
        .join_node(&node("h2", "h2"), end, DEAD_AFTER)
        .await
        .unwrap();
    other.stop_node("h2", "h2", end + 2).await.unwrap();
    assert_eq!(s.leader(end + 3).await.unwrap(), None);

    // Many claims at one moment from two hosts: exactly one leads.
    let at = end + 10;
    let mut claims = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        claims.push(tokio::spawn(async move {
            let me = format!("n{i}");
            (
                store.claim_leadership(&me, at, DEAD_AFTER).await.unwrap(),
                me,
            )
        }));
    }
    let mut winners = Vec::new();
    for c in claims {
        let (won, me) = c.await.unwrap();
        if won {
            winners.push(me);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let l = s.leader(at).await.unwrap().expect("a leader");
    assert_eq!(l.node_id, winners[0]);
}

// ---------------------------------------------------------------- the event log

/// Runs sequencer rounds on `s` until one gives no cursor (and no other host's round
/// held the lock).
async fn sequence_all(s: &Store) -> usize {
    let mut total = 0;
    loop {
        let r = s.sequence_events(1000).await.unwrap();
        total += r.events;
        if r.events == 0 && !r.busy {
            return total;
        }
        if r.busy {
            tokio::task::yield_now().await;
        }
    }
}

/// Reads all of a tenant's events after `after`, a page of `page` at a time, checking
/// that every page goes on from the cursor before it with no gap.
async fn read_all(s: &Store, tenant: &str, after: i64, page: u32) -> Vec<TenantEvent> {
    let mut cursor = after;
    let mut out = Vec::new();
    loop {
        let got = s.events_after(tenant, cursor, page, None).await.unwrap();
        if got.is_empty() {
            return out;
        }
        for e in got {
            assert_eq!(
                e.cursor,
                cursor + 1,
                "tenant {tenant}: a gap after {cursor}"
            );
            cursor = e.cursor;
            out.push(e);
        }
    }
}

async fn event_cursors_are_per_tenant_gap_free_and_in_write_order(db: Db) {
    let s = &db.store;
    let a1 = s
        .accept(message("ta", &["x@example.org", "y@example.org"]), T0)
        .await
        .unwrap();
    let b1 = s
        .accept(message("tb", &["z@example.org"]), T0)
        .await
        .unwrap();
    // Not readable before the sequencer gave them cursors.
    assert!(s.events_after("ta", 0, 10, None).await.unwrap().is_empty());
    assert_eq!(sequence_all(s).await, 3);
    let a = read_all(s, "ta", 0, 1).await;
    assert_eq!(a.iter().map(|e| e.cursor).collect::<Vec<_>>(), vec![1, 2]);
    assert!(
        a.iter()
            .all(|e| e.message_id.as_deref() == Some(a1.id.as_str())
                && e.kind == EventKind::Accepted)
    );
    assert_eq!(a[0].recipient.as_deref(), Some("x@example.org"));
    assert_eq!(a[1].recipient.as_deref(), Some("y@example.org"));
    assert_eq!(a[0].tags, vec!["welcome"]);
    assert!(a[0].seq < a[1].seq);
    let b = read_all(s, "tb", 0, 10).await;
    assert_eq!(b.len(), 1);
    assert_eq!(
        (b[0].cursor, b[0].message_id.as_deref()),
        (1, Some(b1.id.as_str()))
    );

    // The message's later events follow its earlier ones.
    let leased = s.lease_due("h1", T0, 60_000, 100).await.unwrap();
    let outcomes: Vec<Outcome> = leased
        .iter()
        .filter(|l| l.tenant_id == "ta")
        .map(|l| {
            outcome(
                &l.message_id,
                l.recipient_idx,
                RecipientState::Delivered,
                EventKind::Delivered,
            )
        })
        .collect();
    assert_eq!(s.record("h1", outcomes, T0 + 1).await.unwrap(), 2);
    assert_eq!(sequence_all(s).await, 2);
    let later = read_all(s, "ta", 2, 100).await;
    assert_eq!(
        later.iter().map(|e| e.cursor).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(later.iter().all(|e| e.kind == EventKind::Delivered));
    assert_eq!(later[0].relay.as_deref(), Some("relay-a"));
    assert_eq!(later[0].detail["latency_ms"], 120);
    // A filter by kind keeps the cursors.
    let delivered = s
        .events_after("ta", 0, 100, Some(&[EventKind::Delivered]))
        .await
        .unwrap();
    assert_eq!(
        delivered.iter().map(|e| e.cursor).collect::<Vec<_>>(),
        vec![3, 4]
    );
    // Tenant b's cursors did not move; nothing is left to sequence.
    assert_eq!(read_all(s, "tb", 0, 10).await.len(), 1);
    assert_eq!(sequence_all(s).await, 0);
    let last = s.last_event_cursors().await.unwrap();
    assert_eq!((last["ta"], last["tb"]), (4, 1));
    assert_eq!(s.last_event_cursor("ta").await.unwrap(), 4);
    assert_eq!(s.last_event_cursor("nobody").await.unwrap(), 0);
}

/// Two hosts accept concurrently for two tenants while both run sequencer rounds and a
/// reader follows each tenant's cursors: no reader ever sees a cursor before the one
/// in front of it is readable, and at the end every event was read exactly once.
async fn concurrent_writers_and_sequencers_on_two_hosts_never_show_a_reader_a_gap(db: Db) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const WRITERS: usize = 4;
    const MESSAGES: usize = 25;
    let hosts = [db.store.clone(), db.second_host().await];
    let done = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = hosts[w % 2].clone();
        writers.push(tokio::spawn(async move {
            for i in 0..MESSAGES {
                let tenant = if (w + i) % 2 == 0 { "ta" } else { "tb" };
                s.accept(message(tenant, &["x@example.org", "y@example.org"]), T0)
                    .await
                    .unwrap();
            }
        }));
    }
    let mut sequencers = Vec::new();
    for s in &hosts {
        let (s, done) = (s.clone(), done.clone());
        sequencers.push(tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                s.sequence_events(7).await.unwrap();
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut readers = Vec::new();
    for (n, tenant) in ["ta", "tb"].into_iter().enumerate() {
        let s = hosts[n].clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut cursor = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = s.events_after(tenant, cursor, 5, None).await.unwrap();
                for e in &page {
                    assert_eq!(
                        e.cursor,
                        cursor + 1,
                        "tenant {tenant}: a gap after {cursor}"
                    );
                    cursor = e.cursor;
                    seen.push(e.seq);
                }
                if page.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    sequence_all(&hosts[0]).await;
    done.store(true, Ordering::SeqCst);
    for s in sequencers {
        s.await.unwrap();
    }
    sequence_all(&hosts[1]).await;
    let mut total = 0;
    for r in readers {
        let seen = r.await.unwrap();
        let distinct: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), seen.len(), "an event read twice");
        total += seen.len();
    }
    // Every message's two accepted events, each tenant half of the messages.
    assert_eq!(total, WRITERS * MESSAGES * 2);
    let last = hosts[1].last_event_cursors().await.unwrap();
    assert_eq!(
        (last["ta"] + last["tb"]) as usize,
        WRITERS * MESSAGES * 2,
        "{last:?}"
    );
}

/// PostgreSQL: an event whose transaction took a sequence number first but commits after
/// a later one was sequenced gets the next cursor, not the gap a reader already passed.
/// (SQLite has one writer at a time: commits cannot overtake one another; the same
/// sequence of calls is checked without the overlap.)
async fn an_event_committed_late_gets_a_later_cursor_and_is_never_skipped(db: Db) {
    use sqlx::Connection;
    let s = &db.store;
    let m = s
        .accept(message("ta", &["x@example.org"]), T0)
        .await
        .unwrap();
    assert_eq!(sequence_all(s).await, 1);
    let event = |detail: serde_json::Value| NewEvent {
        message_id: m.id.clone(),
        recipient_idx: Some(0),
        tenant_id: "ta".to_string(),
        kind: EventKind::Delayed,
        relay: None,
        detail,
        at_ms: T0 + 1,
    };
    let mut held = None;
    if s.backend() == Backend::Postgres {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO events (message_id, recipient_idx, tenant_id, kind, detail, at_ms) \
             VALUES ($1, 0, 'ta', 'delayed', '{\"n\":\"late\"}', $2)",
        )
        .bind(&m.id)
        .bind(T0 + 1)
        .execute(&mut conn)
        .await
        .unwrap();
        held = Some(conn);
    } else {
        s.append_events(vec![event(json!({"n": "late"}))])
            .await
            .unwrap();
        sequence_all(s).await;
    }
    s.append_events(vec![event(json!({"n": "early"}))])
        .await
        .unwrap();
    sequence_all(s).await;
    let first = read_all(s, "ta", 1, 10).await;
    if let Some(mut conn) = held {
        // The late transaction's event has the smaller seq but was not committed.
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].detail["n"], "early");
        sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
        sequence_all(s).await;
        let rest = read_all(s, "ta", first[0].cursor, 10).await;
        assert_eq!(
            rest.len(),
            1,
            "the late event after the cursor already read"
        );
        assert_eq!(rest[0].detail["n"], "late");
        assert!(rest[0].seq < first[0].seq, "it did take its seq first");
    } else {
        assert_eq!(first.len(), 2);
    }
    assert_eq!(read_all(s, "ta", 0, 10).await.len(), 3);
}

async fn old_events_are_pruned_and_cursors_go_on(db: Db) {
    const DAY: i64 = 86_400_000;
    let s = &db.store;
    s.accept(message("ta", &["x@example.org", "y@example.org"]), T0)
        .await
        .unwrap();
    assert_eq!(sequence_all(s).await, 2);
    // Old too, but not sequenced yet: kept until it has its cursors.
    s.accept(message("ta", &["z@example.org"]), T0)
        .await
        .unwrap();
    let now = T0 + 40 * DAY;
    assert_eq!(s.prune_events(now - 30 * DAY, 1).await.unwrap(), 2);
    assert_eq!(sequence_all(s).await, 1);
    let young = s
        .accept(message("ta", &["w@example.org"]), now)
        .await
        .unwrap();
    assert_eq!(sequence_all(s).await, 1);
    // The unsequenced one went first in seq order; once sequenced it is pruned too,
    // and the young one stays.
    assert_eq!(s.prune_events(now - 30 * DAY, 1000).await.unwrap(), 1);
    let left = read_all(s, "ta", 3, 10).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].cursor, left[0].message_id.as_deref()),
        (4, Some(young.id.as_str()))
    );
    assert!(s.events_after("ta", 0, 10, None).await.unwrap()[0].cursor == 4);
    assert_eq!(s.prune_events(now - 30 * DAY, 1000).await.unwrap(), 0);
    // Cursors go on from the last one handed out, whatever was pruned.
    s.accept(message("ta", &["v@example.org"]), now)
        .await
        .unwrap();
    sequence_all(s).await;
    assert_eq!(read_all(s, "ta", 4, 10).await[0].cursor, 5);
}

async fn a_suspension_is_one_tenant_event_about_no_message(db: Db) {
    let s = &db.store;
    tenant(s, "ta").await;
    tenant(s, "tb").await;
    let upload = |tenant: &str| sluice::store::NewPluginVersion {
        tenant_id: tenant.into(),
        stage: sluice::stage::Stage::Route,
        wasm: sluice::builtin::all()[0].wasm.to_vec(),
        config: Vec::new(),
        timeout_ms: None,
        memory_bytes: None,
        calls_in_flight: None,
        on_failure: sluice::store::FailurePolicy::Fallback,
        uploaded_by: "sluice_abc123".into(),
    };
    let v = s.add_plugin_version(upload("ta"), T0).await.unwrap();
    s.add_plugin_version(upload("tb"), T0).await.unwrap();
    let m = s
        .accept(message("ta", &["x@example.org"]), T0)
        .await
        .unwrap();
    let stage = sluice::stage::Stage::Route;
    assert!(
        s.suspend_plugin("ta", stage, v.version, "5 failed calls", T0 + 1)
            .await
            .unwrap()
    );
    // Another host suspending the same version finds it suspended: no second event.
    assert!(
        !s.suspend_plugin("ta", stage, v.version, "again", T0 + 2)
            .await
            .unwrap()
    );
    // No such version: nothing, no event.
    assert!(
        !s.suspend_plugin("ta", stage, 99, "none", T0 + 3)
            .await
            .unwrap()
    );
    sequence_all(s).await;
    let events = read_all(s, "ta", 0, 10).await;
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Accepted, EventKind::PluginSuspended]
    );
    assert_eq!(events[0].message_id.as_deref(), Some(m.id.as_str()));
    let e = &events[1];
    assert_eq!((e.cursor, e.message_id.as_deref()), (2, None));
    assert_eq!((e.recipient.as_deref(), e.tags.len()), (None, 0));
    assert_eq!(e.at_ms, T0 + 1);
    assert_eq!(e.detail["stage"], "route");
    assert_eq!(e.detail["version"], v.version);
    assert_eq!(e.detail["reason"], "5 failed calls");
    // Filtered by its kind; the message's timeline knows nothing of it; other tenants
    // see nothing.
    let only = s
        .events_after("ta", 0, 10, Some(&[EventKind::PluginSuspended]))
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(
        s.get_message("ta", &m.id)
            .await
            .unwrap()
            .unwrap()
            .events
            .len(),
        1
    );
    assert!(read_all(s, "tb", 0, 10).await.is_empty());
    // Pruned by age like any other.
    assert_eq!(s.prune_events(T0 + 10, 1000).await.unwrap(), 2);
    assert!(read_all(s, "ta", 0, 10).await.is_empty());
}

/// Tenant t1's `low_balance` events, once the sequencer gave every event its cursor.
async fn low_balance_events(s: &Store) -> Vec<TenantEvent> {
    sequence_all(s).await;
    read_all(s, "t1", 0, 100)
        .await
        .into_iter()
        .filter(|e| e.kind == EventKind::LowBalance)
        .collect()
}

async fn low_balance_is_one_event_per_crossing(db: Db) {
    let s = &db.store;
    tenant(s, "t1").await;
    s.set_billing("t1", BalanceMode::Prepaid, None, T0)
        .await
        .unwrap();
    s.add_credit("t1", 3_000, "EUR", "pay-1", T0).await.unwrap();
    let id = s
        .accept(
            message("t1", &["a@example.org", "b@example.org", "c@example.org"]),
            T0,
        )
        .await
        .unwrap()
        .id;
    let item = |idx: i32| vec![(id.clone(), idx, 2_000)];
    // Covered: no event.
    assert_eq!(
        s.reserve("t1", &item(0), T0 + 1).await.unwrap(),
        Reservation::Reserved
    );
    assert!(low_balance_events(s).await.is_empty());
    // The first shortfall crosses: one event; the next ones (a retry, another
    // recipient) are the same crossing.
    for (idx, at) in [(1, T0 + 2), (1, T0 + 3), (2, T0 + 4)] {
        assert!(matches!(
            s.reserve("t1", &item(idx), at).await.unwrap(),
            Reservation::Short { .. }
        ));
    }
    let events = low_balance_events(s).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!((e.message_id.as_deref(), e.at_ms), (None, T0 + 2));
    assert_eq!(e.detail["available_micros"], 1_000);
    assert_eq!(e.detail["needed_micros"], 2_000);
    // A shortfall writes nothing else: no reservation was made.
    assert_eq!(s.balance("t1").await.unwrap().reserved_micros, 2_000);
    // Credited and covered again: the next shortfall is a new crossing.
    s.add_credit("t1", 2_000, "EUR", "pay-2", T0 + 5)
        .await
        .unwrap();
    assert_eq!(
        s.reserve("t1", &item(1), T0 + 6).await.unwrap(),
        Reservation::Reserved
    );
    assert!(matches!(
        s.reserve("t1", &item(2), T0 + 7).await.unwrap(),
        Reservation::Short { .. }
    ));
    let events = low_balance_events(s).await;
    assert_eq!(
        events.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        vec![T0 + 2, T0 + 7]
    );
    // Cursors stay gap-free with the message's own events around them.
    let all = read_all(s, "t1", 0, 100).await;
    assert_eq!(all.last().unwrap().kind, EventKind::LowBalance);
}

// ---------------------------------------------------------------- webhooks (issue 21)

fn new_hook(id: &str, tenant: Option<&str>) -> sluice::store::NewWebhook {
    sluice::store::NewWebhook {
        id: id.into(),
        tenant_id: tenant.map(str::to_string),
        url: "https://hooks.example.com/in".into(),
        events: vec!["*".into()],
        description: "orders".into(),
        secret: format!("whsec_{id}"),
    }
}

fn hook_attempt(
    tenant: Option<&str>,
    last: Option<i64>,
    status: Option<u16>,
) -> sluice::store::WebhookAttempt {
    sluice::store::WebhookAttempt {
        at_ms: T0,
        tenant_id: tenant.map(str::to_string),
        first_cursor: last,
        last_cursor: last,
        events: 1,
        status,
        latency_ms: 3,
        error: status
            .filter(|s| *s >= 300)
            .map(|s| format!("answered {s}")),
    }
}

async fn webhooks_are_kept_per_owner_with_cursors_from_now_and_bounded(db: Db) {
    use sluice::store::{WebhookOwner, WebhookState, WebhookUpdate};
    let s = &db.store;
    s.accept(message("ta", &["x@example.org", "y@example.org"]), T0)
        .await
        .unwrap();
    s.accept(message("tb", &["z@example.org"]), T0)
        .await
        .unwrap();
    sequence_all(s).await;
    let a = s
        .create_webhook(new_hook("wh_a", Some("ta")), 2, T0)
        .await
        .unwrap();
    assert_eq!(a.state, WebhookState::Active);
    assert_eq!(a.events, vec!["*".to_string()]);
    // It starts at the end of its tenant's log now.
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 2)]
    );
    // The platform's starts at the end of every tenant's.
    s.create_webhook(new_hook("wh_p", None), 2, T0)
        .await
        .unwrap();
    assert_eq!(
        s.webhook_cursors("wh_p").await.unwrap(),
        vec![("ta".to_string(), 2), ("tb".to_string(), 1)]
    );
    s.create_webhook(new_hook("wh_b", Some("ta")), 2, T0)
        .await
        .unwrap();
    // The owner's bound.
    assert!(matches!(
        s.create_webhook(new_hook("wh_c", Some("ta")), 2, T0).await,
        Err(StoreError::Conflict(_))
    ));
    // Owners apart: a tenant sees its own only, never the platform's or another's.
    let ta = WebhookOwner::Tenant("ta");
    assert_eq!(s.list_webhooks(ta).await.unwrap().len(), 2);
    assert_eq!(
        s.list_webhooks(WebhookOwner::Platform).await.unwrap().len(),
        1
    );
    assert!(
        s.get_webhook(WebhookOwner::Tenant("tb"), "wh_a")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get_webhook(ta, "wh_p").await.unwrap().is_none());
    assert!(
        !s.delete_webhook(WebhookOwner::Tenant("tb"), "wh_a")
            .await
            .unwrap()
    );
    // Rotation: both secrets sign until the overlap ends.
    let r = s
        .rotate_webhook_secret(ta, "wh_a", "whsec_new", T0 + 1000, T0)
        .await
        .unwrap();
    assert_eq!(r.signing_secrets(T0 + 999), vec!["whsec_new", "whsec_wh_a"]);
    assert_eq!(r.signing_secrets(T0 + 1000), vec!["whsec_new"]);
    // Paused by its owner, then resumed with its retry state cleared.
    let p = s
        .update_webhook(
            ta,
            "wh_a",
            WebhookUpdate {
                state: Some(WebhookState::Paused),
                ..Default::default()
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(p.state, WebhookState::Paused);
    assert_eq!(s.list_active_webhooks().await.unwrap().len(), 2);
    let p = s
        .update_webhook(
            ta,
            "wh_a",
            WebhookUpdate {
                state: Some(WebhookState::Active),
                description: Some("x".into()),
                ..Default::default()
            },
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        (p.state, p.paused_reason, p.description.as_str()),
        (WebhookState::Active, None, "x")
    );
    // Attempts are bounded, newest first.
    for i in 0..7 {
        s.record_webhook_attempt("wh_a", &hook_attempt(Some("ta"), Some(i), Some(200)), 5)
            .await
            .unwrap();
    }
    let list = s.webhook_attempts(ta, "wh_a", 100).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|a| a.last_cursor.unwrap())
            .collect::<Vec<_>>(),
        vec![6, 5, 4, 3, 2]
    );
    assert!(matches!(
        s.webhook_attempts(WebhookOwner::Tenant("tb"), "wh_a", 10)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // Deleted with its cursors and attempts.
    assert!(s.delete_webhook(ta, "wh_a").await.unwrap());
    assert!(s.webhook_cursors("wh_a").await.unwrap().is_empty());
    assert!(s.get_webhook(ta, "wh_a").await.unwrap().is_none());
}

async fn a_webhooks_cursor_moves_only_for_the_lease_holder_after_success(db: Db) {
    use sluice::store::WebhookOwner;
    let s = &db.store;
    s.create_webhook(new_hook("wh_a", Some("ta")), 5, T0)
        .await
        .unwrap();
    s.accept(message("ta", &["x@example.org", "y@example.org"]), T0)
        .await
        .unwrap();
    sequence_all(s).await;
    let other = db.second_host().await;
    assert!(s.claim_webhook("wh_a", "n1", T0, 60_000).await.unwrap());
    // Another node cannot take it while the lease runs; the holder renews it.
    assert!(
        !other
            .claim_webhook("wh_a", "n2", T0 + 1, 60_000)
            .await
            .unwrap()
    );
    assert!(s.claim_webhook("wh_a", "n1", T0 + 2, 60_000).await.unwrap());
    // A success moves the cursor from where the batch was read.
    assert!(
        s.webhook_delivered(
            "wh_a",
            "n1",
            0,
            &hook_attempt(Some("ta"), Some(1), Some(200)),
            10
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 1)]
    );
    // A stale batch (read at 0) does not move it again.
    s.webhook_delivered(
        "wh_a",
        "n1",
        0,
        &hook_attempt(Some("ta"), Some(2), Some(200)),
        10,
    )
    .await
    .unwrap();
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 1)]
    );
    // The lease ran out: another node takes it, and the first writes nothing more.
    assert!(
        other
            .claim_webhook("wh_a", "n2", T0 + 70_000, 60_000)
            .await
            .unwrap()
    );
    assert!(
        !s.webhook_delivered(
            "wh_a",
            "n1",
            1,
            &hook_attempt(Some("ta"), Some(2), Some(200)),
            10
        )
        .await
        .unwrap()
    );
    assert!(!s.webhook_skipped("wh_a", "n1", "ta", 1, 2).await.unwrap());
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 1)]
    );
    assert!(
        other
            .webhook_skipped("wh_a", "n2", "ta", 1, 2)
            .await
            .unwrap()
    );
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 2)]
    );
    // A replay sets it back, and a webhook in backoff is not claimed until due.
    let ta = WebhookOwner::Tenant("ta");
    s.replay_webhook(ta, "wh_a", "ta", 0, T0).await.unwrap();
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 0)]
    );
    other
        .webhook_failed(
            "wh_a",
            "n2",
            &hook_attempt(Some("ta"), Some(1), Some(500)),
            T0 + 80_000,
            None,
            10,
        )
        .await
        .unwrap();
    other.release_webhook("wh_a", "n2").await.unwrap();
    assert!(
        !s.claim_webhook("wh_a", "n1", T0 + 79_999, 60_000)
            .await
            .unwrap()
    );
    assert!(
        s.claim_webhook("wh_a", "n1", T0 + 80_000, 60_000)
            .await
            .unwrap()
    );
    let h = s.get_webhook(ta, "wh_a").await.unwrap().unwrap();
    assert_eq!((h.failures, h.failing_since_ms), (1, Some(T0)));
    // A platform webhook gets a cursor from 0 into a tenant whose first event is new.
    s.create_webhook(new_hook("wh_p", None), 5, T0)
        .await
        .unwrap();
    s.accept(message("tc", &["w@example.org"]), T0)
        .await
        .unwrap();
    sequence_all(s).await;
    s.ensure_webhook_cursors("wh_p").await.unwrap();
    assert!(
        s.webhook_cursors("wh_p")
            .await
            .unwrap()
            .contains(&("tc".to_string(), 0))
    );
    let all = s.all_webhook_cursors().await.unwrap();
    assert!(
        all.contains(&("wh_a".to_string(), "ta".to_string(), 0)),
        "{all:?}"
    );
}

async fn a_webhook_failing_past_its_window_is_paused_once_with_an_event(db: Db) {
    use sluice::store::{WebhookOwner, WebhookState};
    let s = &db.store;
    tenant(s, "ta").await;
    s.create_webhook(new_hook("wh_a", Some("ta")), 5, T0)
        .await
        .unwrap();
    s.create_webhook(new_hook("wh_p", None), 5, T0)
        .await
        .unwrap();
    assert!(s.claim_webhook("wh_a", "n1", T0, 60_000).await.unwrap());
    assert!(s.claim_webhook("wh_p", "n1", T0, 60_000).await.unwrap());
    let failed = hook_attempt(Some("ta"), Some(1), Some(503));
    assert!(
        !s.webhook_failed("wh_a", "n1", &failed, T0, None, 10)
            .await
            .unwrap()
    );
    assert!(
        s.webhook_failed("wh_a", "n1", &failed, T0, Some("failing for a day"), 10)
            .await
            .unwrap()
    );
    // A second pause of the same run writes nothing.
    assert!(
        !s.webhook_failed("wh_a", "n1", &failed, T0, Some("failing for a day"), 10)
            .await
            .unwrap()
    );
    // The platform's pauses without a tenant event.
    assert!(
        s.webhook_failed("wh_p", "n1", &failed, T0, Some("failing for a day"), 10)
            .await
            .unwrap()
    );
    let h = s
        .get_webhook(WebhookOwner::Tenant("ta"), "wh_a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.state, WebhookState::Paused);
    assert_eq!(h.paused_reason.as_deref(), Some("failing for a day"));
    // Paused: no lease.
    assert!(!s.claim_webhook("wh_a", "n1", T0 + 1, 60_000).await.unwrap());
    sequence_all(s).await;
    let events = s.events_after("ta", 0, 100, None).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::WebhookPaused);
    assert_eq!(events[0].message_id, None);
    assert_eq!(events[0].detail["webhook_id"], "wh_a");
    assert_eq!(
        s.webhook_attempts(WebhookOwner::Tenant("ta"), "wh_a", 10)
            .await
            .unwrap()
            .len(),
        3
    );
}

/// Issue 22: held work leaves the leased states, work in flight is marked and held by
/// its own deferral, a cancel fails with its reason, a suspended tenant's new mail is
/// stored held without leases, and search and the queue summary see it all.
async fn held_and_suspended_work_is_never_leased_and_work_in_flight_is_held_after_its_attempt(
    db: Db,
) {
    use sluice::store::{MessageQuery, Selector};
    let s = &db.store;
    tenant(s, "t1").await;
    tenant(s, "t2").await;
    let m1 = s
        .accept(message("t1", &["a@x.test", "b@y.test"]), T0)
        .await
        .unwrap();
    let m2 = s
        .accept(message("t2", &["c@x.test"]), T0 + 1)
        .await
        .unwrap();
    assert_eq!(
        s.lease_due("h1", T0 + 2, 60_000, 10).await.unwrap().len(),
        3
    );
    let detail = json!({"reason": "test"});
    let by_message = |id: &str| Selector {
        message: Some(id.to_owned()),
        ..Selector::default()
    };

    // In flight: marked, not taken from its host.
    let held = s.hold(&by_message(&m1.id), &detail, T0 + 3).await.unwrap();
    assert_eq!((held.held, held.in_flight), (0, 2));
    let deferred = Outcome {
        next_attempt_at_ms: Some(T0 + 4),
        ..outcome(&m1.id, 1, RecipientState::Deferred, EventKind::Deferred)
    };
    let done = vec![
        outcome(&m1.id, 0, RecipientState::Delivered, EventKind::Delivered),
        deferred,
    ];
    assert_eq!(s.record("h1", done, T0 + 4).await.unwrap(), 2);
    let v = s.get_message("t1", &m1.id).await.unwrap().unwrap();
    let states: Vec<_> = v.recipients.iter().map(|r| r.state).collect();
    assert_eq!(states, [RecipientState::Delivered, RecipientState::Held]);
    assert!(
        s.lease_due("h2", T0 + 5, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let q = s.queue_summary(10).await.unwrap();
    let held_by: Vec<_> = q
        .held_by
        .iter()
        .map(|g| (g.key.as_str(), g.recipients))
        .collect();
    assert_eq!(held_by, [("hold", 1), ("suspended", 0), ("prepaid", 0)]);

    // Released: due now, and leased again.
    assert_eq!(
        s.release(&by_message(&m1.id), &detail, T0 + 5)
            .await
            .unwrap(),
        1
    );
    let again = s.lease_due("h2", T0 + 6, 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].message_id.as_str(), again[0].recipient_idx),
        (m1.id.as_str(), 1)
    );

    // Cancel: queued work fails with its reason, work in flight is counted.
    let m3 = s
        .accept(message("t1", &["d@z.test"]), T0 + 7)
        .await
        .unwrap();
    let sel = Selector {
        tenant: Some("t1".into()),
        ..Selector::default()
    };
    let c = s
        .cancel(&sel, "spam", &json!({"reason": "spam"}), T0 + 8)
        .await
        .unwrap();
    assert_eq!((c.cancelled, c.in_flight), (1, 1));
    let v = s.get_message("t1", &m3.id).await.unwrap().unwrap();
    assert_eq!(v.recipients[0].state, RecipientState::Failed);
    assert_eq!(
        v.recipients[0].last_reply.as_deref(),
        Some("cancelled: spam")
    );
    assert!(
        v.events
            .iter()
            .any(|e| e.kind == EventKind::Failed && e.detail["reason"] == "spam")
    );

    // Suspended: in-flight work marked, new mail stored held with no lease.
    let h = s
        .suspend_tenant("t2", Some("abuse"), T0 + 9)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((h.held, h.in_flight), (0, 1));
    assert!(
        s.suspend_tenant("nobody", None, T0 + 9)
            .await
            .unwrap()
            .is_none()
    );
    let m4 = s
        .accept_leased(message("t2", &["e@x.test"]), T0 + 10, "h1", 60_000)
        .await
        .unwrap();
    assert_eq!(m4.recipients[0].1, RecipientState::Held);
    assert!(m4.leases.is_empty());
    let deferred = Outcome {
        next_attempt_at_ms: Some(T0 + 11),
        ..outcome(&m2.id, 0, RecipientState::Deferred, EventKind::Deferred)
    };
    assert_eq!(s.record("h1", vec![deferred], T0 + 11).await.unwrap(), 1);
    assert!(
        s.lease_due("h3", T0 + 200_000, 60_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|l| l.tenant_id != "t2")
    );
    let q = s.queue_summary(10).await.unwrap();
    assert_eq!(q.suspended_tenants[0].0, "t2");
    assert_eq!(q.held_by[1].recipients, 2);
    // A hold's release does not lift a suspension; a resume does.
    assert_eq!(
        s.release(
            &Selector {
                tenant: Some("t2".into()),
                ..Selector::default()
            },
            &detail,
            T0 + 12
        )
        .await
        .unwrap(),
        0
    );
    assert_eq!(s.resume_tenant("t2", T0 + 13).await.unwrap(), Some(2));
    let back = s.lease_due("h3", T0 + 14, 60_000, 10).await.unwrap();
    assert_eq!(back.iter().filter(|l| l.tenant_id == "t2").count(), 2);

    // Search: the tenant's own messages, newest first, in pages.
    let q = MessageQuery {
        tenant_id: "t1".into(),
        limit: 1,
        ..MessageQuery::default()
    };
    let p1 = s.search_messages(&q).await.unwrap();
    assert_eq!(p1[0].id, m3.id);
    assert_eq!(p1[0].state(), RecipientState::Failed);
    let p2 = s
        .search_messages(&MessageQuery {
            after: Some(p1[0].id.clone()),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(p2[0].id, m1.id);
    assert_eq!(p2[0].recipients(), 2);
    let to = s
        .search_messages(&MessageQuery {
            to: Some("e@x.test".into()),
            limit: 10,
            ..q.clone()
        })
        .await
        .unwrap();
    assert!(to.is_empty(), "another tenant's recipient: {to:?}");
}

/// Whether a plan reads `recipients` or `messages` whole: PostgreSQL's `Seq Scan`,
/// SQLite's `SCAN` of a table or of a full index (a partial index is its few rows).
fn scans_a_table(backend: Backend, lines: &[String]) -> bool {
    lines.iter().any(|l| match backend {
        Backend::Postgres => {
            l.contains("Seq Scan on recipients") || l.contains("Seq Scan on messages")
        }
        Backend::Sqlite => {
            let l = l.trim();
            [
                "SCAN r",
                "SCAN recipients",
                "SCAN m",
                "SCAN messages",
                "SCAN t",
            ]
            .iter()
            .any(|p| {
                l == *p || (l.starts_with(&format!("{p} ")) && !l.contains("recipients_prepaid"))
            })
        }
    })
}

/// Issue 22: a bulk hold, release and cancel go in batches of at most 1,000, each
/// picked through an index (a state range, `recipients_hold`, `recipients_prepaid`)
/// and changed by primary key; and a release after a hold larger than a batch, with
/// statistics from before the hold (what made PostgreSQL's release take 28 s per 1,000
/// at 1 M messages), releases everything, as does a resume after a suspension.
async fn bulk_controls_go_by_index_and_a_release_after_a_big_hold_releases_everything(db: Db) {
    use sluice::store::Selector;
    let s = &db.store;
    let backend = s.backend();
    // 2,500 queued recipients of `bench-0` over 10 domains; ANALYZEd before the hold.
    assert_eq!(
        s.bench_fill(2_500, 1, 10, 1, T0, 60_000).await.unwrap(),
        2_500
    );
    let all = Selector {
        tenant: Some("bench-0".into()),
        ..Selector::default()
    };
    let detail = json!({"reason": "test"});
    let held = s.hold(&all, &detail, T0 + 1).await.unwrap();
    assert_eq!((held.held, held.in_flight), (2_500, 0));
    assert!(
        s.lease_due("h1", T0 + 2, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.hold(&all, &detail, T0 + 2).await.unwrap().held, 0);

    let one = s
        .search_messages(&sluice::store::MessageQuery {
            tenant_id: "bench-0".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    for sel in [
        all.clone(),
        Selector {
            domain: Some("d3.example".into()),
            ..Selector::default()
        },
        Selector {
            relay: Some("relay-1".into()),
            ..Selector::default()
        },
        Selector {
            message: Some(one[0].id.clone()),
            ..Selector::default()
        },
    ] {
        let plans = s.explain_bulk(&sel).await.unwrap();
        assert_eq!(plans.len(), 10, "{plans:?}");
        for (name, lines) in &plans {
            assert!(!scans_a_table(backend, lines), "{sel:?} {name}: {lines:?}");
            // Every read is a range of an index, not a walk of all of one (but for
            // the prepaid holds' partial index, whose rows are the range).
            if backend == Backend::Postgres {
                assert!(
                    lines.iter().any(|l| l.contains("Index Cond"))
                        || lines.iter().any(|l| l.contains("recipients_prepaid")),
                    "{sel:?} {name}: {lines:?}"
                );
            }
            if name.ends_with("change") {
                // By the primary key, one probe per message id.
                let key = match backend {
                    Backend::Postgres => "Index Cond: (message_id = ANY",
                    Backend::Sqlite => "sqlite_autoindex_recipients_1 (message_id=?)",
                };
                assert!(
                    lines.iter().any(|l| l.contains(key)),
                    "{sel:?} {name}: {lines:?}"
                );
            }
        }
    }

    let released = s.release(&all, &detail, T0 + 3).await.unwrap();
    assert_eq!(released, 2_500);
    let q = s.queue_summary(10).await.unwrap();
    let by_state: Vec<_> = q
        .by_state
        .iter()
        .map(|g| (g.key.as_str(), g.recipients))
        .collect();
    assert_eq!(
        by_state,
        [
            ("queued", 2_500),
            ("delivering", 0),
            ("deferred", 0),
            ("held", 0)
        ]
    );
    assert_eq!(
        s.lease_due("h1", T0 + 4, 60_000, 10).await.unwrap().len(),
        10
    );

    // A domain's 250: cancelled, or counted in flight.
    let d3 = Selector {
        domain: Some("d3.example".into()),
        ..Selector::default()
    };
    let c = s.cancel(&d3, "test", &detail, T0 + 5).await.unwrap();
    assert_eq!(c.cancelled + c.in_flight, 250);

    // A suspension holds the rest in batches, and a resume releases all it held.
    let h = s
        .suspend_tenant("bench-0", None, T0 + 6)
        .await
        .unwrap()
        .unwrap();
    // The 10 leased are marked (the cancel left its in-flight ones leased too).
    assert_eq!((h.held, h.in_flight), (2_240 + c.in_flight, 10));
    assert_eq!(
        s.resume_tenant("bench-0", T0 + 7).await.unwrap(),
        Some(h.held + h.in_flight)
    );
    let q = s.queue_summary(10).await.unwrap();
    assert_eq!(q.by_state[3].recipients, 0, "{q:?}");
}

/// Issue 22: `tag=` is read through `message_tags` (migration 0028): a tag on one
/// message among a thousand is found by the tag's own index range, each tag once per
/// message, never another tenant's; a common tag pages by cursor; too many tags are
/// refused.
async fn a_rare_tag_among_many_messages_is_found_through_the_tag_index(db: Db) {
    use sluice::store::MessageQuery;
    let s = &db.store;
    // 1,000 messages of `bench-0`, tagged `bulk` or (every 10th) `promo`; the first
    // `rare` too.
    assert_eq!(
        s.bench_fill(1_000, 1, 10, 100, T0, 60_000).await.unwrap(),
        1_000
    );
    tenant(s, "t2").await;
    let mut m = message("bench-0", &["a@example.org"]);
    m.tags = vec!["needle".into(), "x".into(), "needle".into()];
    let mine = s.accept(m, T0 + 120_000).await.unwrap();
    let mut m = message("t2", &["a@example.org"]);
    m.tags = vec!["needle".into()];
    s.accept(m, T0 + 120_001).await.unwrap();

    let q = MessageQuery {
        tenant_id: "bench-0".into(),
        tag: Some("needle".into()),
        limit: 10,
        ..MessageQuery::default()
    };
    let found = s.search_messages(&q).await.unwrap();
    let ids: Vec<_> = found.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [mine.id.as_str()]);
    assert_eq!(found[0].tags, ["needle", "x", "needle"]);
    let plan = s.explain_search(&q).await.unwrap();
    assert!(!scans_a_table(s.backend(), &plan), "{plan:?}");
    let index = match s.backend() {
        Backend::Postgres => "message_tags_pkey",
        Backend::Sqlite => "PRIMARY KEY",
    };
    assert!(
        plan.iter().any(|l| l.contains(index)),
        "the tag index: {plan:?}"
    );
    let rare = s
        .search_messages(&MessageQuery {
            tag: Some("rare".into()),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(rare.len(), 1);
    assert!(rare[0].tags.contains(&"rare".to_string()));

    // A common tag: its 100 messages in cursor pages, newest first, with other filters.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .search_messages(&MessageQuery {
                tag: Some("promo".into()),
                limit: 30,
                after: after.clone(),
                ..q.clone()
            })
            .await
            .unwrap();
        assert!(page.iter().all(|m| m.tags.contains(&"promo".to_string())));
        seen.extend(page.iter().map(|m| m.id.clone()));
        if page.len() < 30 {
            break;
        }
        after = page.last().map(|m| m.id.clone());
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");
    let from = s
        .search_messages(&MessageQuery {
            tag: Some("x".into()),
            from: Some("app@example.com".into()),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(from.len(), 1);

    // More tags than a message may carry: refused, nothing written.
    let mut m = message("bench-0", &["a@example.org"]);
    m.tags = (0..=sluice::store::MAX_TAGS)
        .map(|i| format!("t{i}"))
        .collect();
    assert!(matches!(
        s.accept(m, T0 + 130_000).await,
        Err(StoreError::Invalid(_))
    ));
}

/// Issue 21: a webhook checkpoint moves cursors, keeps attempts, renews the lease; a
/// graceful stop gives the leases back.
async fn a_webhook_checkpoint_moves_cursors_keeps_attempts_and_leases_go_back_on_a_stop(db: Db) {
    use sluice::store::{CursorMove, WebhookOwner, WebhookState, WebhookUpdate};
    let s = &db.store;
    let ta = WebhookOwner::Tenant("ta");
    s.create_webhook(new_hook("wh_a", Some("ta")), 5, T0)
        .await
        .unwrap();
    s.create_webhook(new_hook("wh_b", Some("ta")), 5, T0)
        .await
        .unwrap();
    // Nothing behind yet: no lag (only states with webhooks are listed).
    let lag = s.webhook_lag().await.unwrap();
    assert_eq!(lag.len(), 1, "{lag:?}");
    assert_eq!(
        (lag[0].state.as_str(), lag[0].webhooks, lag[0].events),
        ("active", 2, 0)
    );
    assert_eq!(lag[0].oldest_at_ms, None);
    for at in [T0 + 10, T0 + 20] {
        s.accept(message("ta", &["x@example.org"]), at)
            .await
            .unwrap();
    }
    sequence_all(s).await;
    let last = s.last_event_cursor("ta").await.unwrap();
    assert!(last >= 2);
    let lag = s.webhook_lag().await.unwrap();
    assert_eq!(lag[0].events, 2 * last, "{lag:?}");
    let oldest = lag[0].oldest_at_ms.expect("an event behind");
    let first = s.events_after("ta", 0, 1, None).await.unwrap();
    assert_eq!(oldest, first[0].at_ms);

    let other = db.second_host().await;
    assert!(s.claim_webhook("wh_a", "n1", T0, 60_000).await.unwrap());
    // Two successes, one checkpoint: the cursor moves from where it was read, the
    // attempts are kept (the newest `keep`), the lease is renewed.
    let attempts = [
        hook_attempt(Some("ta"), Some(1), Some(204)),
        hook_attempt(Some("ta"), Some(2), Some(204)),
    ];
    let moved = [CursorMove {
        tenant_id: "ta".into(),
        from: 0,
        to: 2,
    }];
    assert!(
        s.webhook_checkpoint("wh_a", "n1", &moved, &attempts, 1, T0 + 500_000)
            .await
            .unwrap()
    );
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 2)]
    );
    let kept = s.webhook_attempts(ta, "wh_a", 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].last_cursor, Some(2));
    // Renewed: still n1's past the first lease's end.
    assert!(
        !other
            .claim_webhook("wh_a", "n2", T0 + 70_000, 60_000)
            .await
            .unwrap()
    );
    // A stale move (a replay set the cursor meanwhile) changes nothing.
    s.replay_webhook(ta, "wh_a", "ta", 1, T0).await.unwrap();
    let stale = [CursorMove {
        tenant_id: "ta".into(),
        from: 2,
        to: 3,
    }];
    assert!(
        s.webhook_checkpoint("wh_a", "n1", &stale, &[], 10, T0 + 500_000)
            .await
            .unwrap()
    );
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 1)]
    );
    // A node that does not hold the lease moves nothing.
    let mine = [CursorMove {
        tenant_id: "ta".into(),
        from: 1,
        to: 2,
    }];
    assert!(
        !other
            .webhook_checkpoint("wh_a", "n2", &mine, &[], 10, T0 + 500_000)
            .await
            .unwrap()
    );
    assert_eq!(
        s.webhook_cursors("wh_a").await.unwrap(),
        vec![("ta".to_string(), 1)]
    );
    // A graceful stop gives every lease of the node back: the other takes it at once.
    assert!(s.claim_webhook("wh_b", "n1", T0, 60_000).await.unwrap());
    assert_eq!(s.release_webhook_leases("n1").await.unwrap(), 2);
    assert_eq!(s.release_webhook_leases("n1").await.unwrap(), 0);
    assert!(
        other
            .claim_webhook("wh_a", "n2", T0 + 1, 60_000)
            .await
            .unwrap()
    );
    assert!(
        other
            .claim_webhook("wh_b", "n2", T0 + 1, 60_000)
            .await
            .unwrap()
    );
    // The lag by state: wh_a one event behind, wh_b all of them, paused.
    s.update_webhook(
        ta,
        "wh_b",
        WebhookUpdate {
            state: Some(WebhookState::Paused),
            ..Default::default()
        },
        T0,
    )
    .await
    .unwrap();
    let mut lag = s.webhook_lag().await.unwrap();
    lag.sort_by(|a, b| a.state.cmp(&b.state));
    assert_eq!(lag.len(), 2, "{lag:?}");
    assert_eq!((lag[0].state.as_str(), lag[0].events), ("active", last - 1));
    assert_eq!((lag[1].state.as_str(), lag[1].events), ("paused", last));
    assert_eq!(lag[1].oldest_at_ms, Some(oldest));
}

// ---------------------------------------------------------------- DKIM keys

/// DKIM keys (issue 23), on both stores: per tenant, bounded, one active per domain.
mod dkim_keys {
    use super::*;
    use sluice::dkim::Algorithm;
    use sluice::store::{MAX_DKIM_DOMAINS, MAX_SELECTORS_PER_DOMAIN, NewDkimKey};

    conformance!(
        dkim_keys_are_per_tenant_with_one_active_per_domain,
        dkim_keys_are_bounded_per_domain_and_per_tenant,
    );

    fn key(tenant: &str, domain: &str, selector: &str, activate: bool) -> NewDkimKey {
        NewDkimKey {
            tenant_id: tenant.to_owned(),
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            algorithm: Algorithm::Ed25519,
            public_key: "cHVibGlj".to_owned(),
            private_key_sealed: format!("v1.sealed-{tenant}-{selector}"),
            activate,
        }
    }

    async fn dkim_keys_are_per_tenant_with_one_active_per_domain(db: Db) {
        let s = &db.store;
        tenant(s, "ta").await;
        tenant(s, "tb").await;
        // A domain's first key is active whatever was asked; the next is not unless asked.
        let first = s
            .create_dkim_key(key("ta", "example.com", "s1", false), T0)
            .await
            .unwrap();
        assert!(first.active);
        assert_eq!(first.activated_at_ms, Some(T0));
        let second = s
            .create_dkim_key(key("ta", "example.com", "s2", false), T0 + 1)
            .await
            .unwrap();
        assert!(!second.active);
        // The same selector twice for a domain: refused.
        assert!(matches!(
            s.create_dkim_key(key("ta", "example.com", "s2", false), T0 + 2)
                .await,
            Err(StoreError::Conflict(_))
        ));
        // Another tenant, same domain and selector: its own key, its own active one.
        let theirs = s
            .create_dkim_key(key("tb", "example.com", "s1", false), T0 + 3)
            .await
            .unwrap();
        assert!(theirs.active);
        let active = s
            .active_dkim_key("ta", "example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(active.key.selector, "s1");
        assert_eq!(active.private_key_sealed, "v1.sealed-ta-s1");
        // Rotation: s2 becomes active, s1 stays listed and inactive.
        let now = s
            .activate_dkim_key("ta", "example.com", "s2", T0 + 10)
            .await
            .unwrap();
        assert!(now.active);
        assert_eq!(now.activated_at_ms, Some(T0 + 10));
        let listed = s.list_dkim_keys("ta", Some("example.com")).await.unwrap();
        let states: Vec<(&str, bool)> = listed
            .iter()
            .map(|k| (k.selector.as_str(), k.active))
            .collect();
        assert_eq!(states, [("s1", false), ("s2", true)]);
        let active = s
            .active_dkim_key("ta", "example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(active.private_key_sealed, "v1.sealed-ta-s2");
        // tb's active key is untouched by ta's rotation.
        let tb = s
            .active_dkim_key("tb", "example.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tb.private_key_sealed, "v1.sealed-tb-s1");
        // A tenant cannot activate, delete or see another's key.
        s.create_dkim_key(key("tb", "example.com", "s9", false), T0 + 11)
            .await
            .unwrap();
        assert!(matches!(
            s.activate_dkim_key("ta", "example.com", "s9", T0 + 12)
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.delete_dkim_key("ta", "example.com", "s9").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            s.list_dkim_keys("ta", None)
                .await
                .unwrap()
                .iter()
                .all(|k| k.tenant_id == "ta")
        );
        // The active key cannot be deleted; an inactive one can.
        assert!(matches!(
            s.delete_dkim_key("ta", "example.com", "s2").await,
            Err(StoreError::Conflict(_))
        ));
        s.delete_dkim_key("ta", "example.com", "s1").await.unwrap();
        assert_eq!(
            s.list_dkim_keys("ta", Some("example.com"))
                .await
                .unwrap()
                .len(),
            1
        );
        // A key asked to be active at once takes over.
        let k3 = s
            .create_dkim_key(key("ta", "example.com", "s3", true), T0 + 20)
            .await
            .unwrap();
        assert!(k3.active);
        assert_eq!(
            s.active_dkim_key("ta", "example.com")
                .await
                .unwrap()
                .unwrap()
                .key
                .selector,
            "s3"
        );
        assert!(
            s.active_dkim_key("ta", "example.net")
                .await
                .unwrap()
                .is_none()
        );
        // An unknown tenant has no keys to make.
        assert!(matches!(
            s.create_dkim_key(key("nobody", "example.com", "s1", false), T0)
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(s.any_dkim_key().await.unwrap().is_some());
    }

    async fn dkim_keys_are_bounded_per_domain_and_per_tenant(db: Db) {
        let s = &db.store;
        tenant(s, "ta").await;
        assert!(s.any_dkim_key().await.unwrap().is_none());
        for i in 0..MAX_SELECTORS_PER_DOMAIN {
            s.create_dkim_key(key("ta", "example.com", &format!("s{i}"), false), T0)
                .await
                .unwrap();
        }
        assert!(matches!(
            s.create_dkim_key(key("ta", "example.com", "sx", false), T0)
                .await,
            Err(StoreError::Conflict(_))
        ));
        // Concurrent creations on two hosts cannot pass the bound together.
        let other = db.second_host().await;
        for i in 1..MAX_DKIM_DOMAINS - 1 {
            s.create_dkim_key(key("ta", &format!("d{i}.example"), "s1", false), T0)
                .await
                .unwrap();
        }
        let (a, b) = tokio::join!(
            s.create_dkim_key(key("ta", "last-a.example", "s1", false), T0),
            other.create_dkim_key(key("ta", "last-b.example", "s1", false), T0),
        );
        assert_eq!(
            [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
            1,
            "{a:?} {b:?}"
        );
        let domains: HashSet<String> = s
            .list_dkim_keys("ta", None)
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.domain)
            .collect();
        assert_eq!(domains.len() as u32, MAX_DKIM_DOMAINS);
        // A new key for a domain it already has is still taken (the bound is on domains).
        s.create_dkim_key(key("ta", "d1.example", "s2", false), T0)
            .await
            .unwrap();
    }
}
