//! The store: tenants, API keys, relays, messages, recipients and their events, behind
//! one contract on two databases.
//!
//! SQLite (`sqlite://PATH`) is the embedded default; PostgreSQL (`postgres://...`) is
//! for many hosts sharing one database. Both run the same SQL through sqlx's `Any`
//! driver; where the dialects differ (`FOR UPDATE SKIP LOCKED`, sequences) the code asks
//! [`Backend`]. One conformance suite (`host/tests/it/store_conformance.rs`) runs against
//! both.
//!
//! Architecture invariants:
//! - `accept` returns only after the message, its recipients and their `accepted` events
//!   are committed and fsynced; concurrent accepts, and the outcome batches recorded
//!   meanwhile, share commits ([`group_commit`]).
//! - Work is leased, never owned: a recipient in `delivering` carries an owner and an
//!   expiry, another host takes it over once the lease expires, and an outcome from a
//!   host that lost its lease is refused ([`Store::record`]). A node whose heartbeat went
//!   stale loses its leases at once to the live nodes, and a node joining under its own id
//!   takes back what the id held ([`nodes`]); nothing else cuts a lease short.
//! - Every change of a recipient's state that the pipeline reports is an event; relay
//!   stats are read from events.
//! - A tenant's events carry cursors 1, 2, 3, … with no gap a reader could pass: a cursor
//!   is given only to a committed event, by one sequencer round at a time ([`event_log`]).
//! - Times are `i64` milliseconds since the Unix epoch, always passed in by the caller.

mod accept;
mod accounts;
mod api_keys;
mod books;
mod chain;
mod checkpoint;
mod codec;
mod connect;
mod dkim_keys;
mod error;
mod event_log;
mod events;
mod group_commit;
mod leases;
mod ledger;
mod nodes;
mod plans;
mod portal_sessions;
mod queue;
mod reads;
mod relays;
mod stat_buckets;
mod stats;
mod tenants;
mod types;
mod usage_events;
mod webhooks;

use chain::Chain;
use std::collections::HashMap;
use std::sync::Arc;

pub use accept::{MAX_IDEMPOTENCY_KEY, MAX_TAG_BYTES, MAX_TAGS};
pub use accounts::{
    Account, AccountBatch, AccountCharge, AccountLedgerEntry, AccountRatingStatus, AccountUpdate,
    AccountUsage, MAX_ACCOUNTS, MAX_LOGINS, MAX_TENANT_LOGINS, NewAccount,
};
pub use accounts::{GATHER_MS as ACCOUNT_GATHER_MS, SETTLE_MS as ACCOUNT_SETTLE_MS};
pub use api_keys::MAX_ACCOUNT_KEYS;
pub use connect::Backend;
pub use dkim_keys::{
    DkimAlgorithm, DkimKey, MAX_DKIM_DOMAINS, MAX_SELECTORS_PER_DOMAIN, NewDkimKey, SealedDkimKey,
};
pub use error::StoreError;
pub use event_log::{Sequenced, TenantEvent};
pub use group_commit::CommitObserver;
pub use ledger::{
    Balance, BalanceMode, BillingSettings, ChargeSum, Credited, ExternalUsage, LedgerEntry,
    NewCharge, PendingUsage, RatedUsage, Reservation, Settlement,
};
pub use nodes::{Joined, Leadership, NodeJoin, NodeRecord};
pub use portal_sessions::{MAX_PORTAL_SESSIONS, PortalSession};
pub use queue::{
    Cancelled, Held, MAX_PAGE, MessageQuery, MessageSummary, QueueGroup, QueueSummary, Selector,
    TopGroups,
};
pub use stats::{QueueGauges, RelayStatWindows};
pub use types::{
    ACCOUNT_TAG, ANY_RELAY, Accepted, ApiKeyInfo, Event, EventKind, KeyOwner, KeyScope, Lease,
    LeaseKey, MessageView, NewEvent, NewMessage, NewRelay, NewTenant, Outcome, RecipientState,
    RecipientView, Relay, RelayState, RelayUpdate, RetryFilter, Tenant, TenantUpdate, WindowCounts,
};
pub use webhooks::{
    CursorMove, NewWebhook, Webhook, WebhookAttempt, WebhookLag, WebhookOwner, WebhookState,
    WebhookUpdate,
};

/// How many accepts one group commit takes at most.
pub const GROUP_COMMIT_MAX: usize = 256;

/// A handle on an open store; cheap to clone, all clones share the pools and the
/// group-commit writer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pools: connect::Pools,
    writer: group_commit::Writer,
    lookups: suppression_lookups::Lookups,
    /// Where the busiest writes run on SQLite (`writer_thread.rs`); none on PostgreSQL
    /// or if the thread could not be started.
    thread: Option<writer_thread::WriterThread>,
    /// SQLite's WAL checkpoints, off the write connection (`checkpoint.rs`).
    _checkpointer: Option<checkpoint::Checkpointer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.pools.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if missing) the store at `url` — `sqlite://PATH` or
    /// `postgres://...` — and applies migrations. Must be called inside a tokio runtime:
    /// it starts the group-commit writer task.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let pools = connect::open(url).await?;
        let thread = match pools.backend {
            Backend::Postgres => None,
            Backend::Sqlite => writer_thread::WriterThread::start()
                .map_err(|e| tracing::warn!(error = %Chain(&e), "store writes share the server's runtime"))
                .ok(),
        };
        let writer = group_commit::Writer::start(
            pools.write.clone(),
            pools.backend,
            GROUP_COMMIT_MAX,
            thread.as_ref(),
        );
        let lookups = suppression_lookups::Lookups::start(pools.read.clone());
        let checkpointer = (pools.backend == Backend::Sqlite)
            .then(|| checkpoint::Checkpointer::start(pools.read.clone()));
        Ok(Store {
            inner: Arc::new(Inner {
                pools,
                writer,
                lookups,
                thread,
                _checkpointer: checkpointer,
            }),
        })
    }

    /// Tells `observer` of every group commit that reached the disk (its time, and how
    /// many accepts and outcome batches it wrote): the host's metrics, which the store
    /// does not know. The first observer set stays; false if one was set already.
    pub fn observe_commits(&self, observer: CommitObserver) -> bool {
        self.inner.writer.observe(observer)
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.pools.backend
    }

    fn pools(&self) -> &connect::Pools {
        &self.inner.pools
    }

    /// Runs a write on the writer thread when there is one, else right here.
    async fn on_writer<T, F, W>(&self, write: W) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
        W: FnOnce(Store) -> F,
    {
        let work = write(self.clone());
        match &self.inner.thread {
            Some(t) => t.run(work).await,
            None => work.await,
        }
    }

    // ---- tenants and API keys ----

    /// Creates a tenant; `Conflict` if the id is taken.
    pub async fn create_tenant(&self, new: NewTenant, now_ms: i64) -> Result<Tenant, StoreError> {
        tenants::create(self.pools(), new, now_ms).await
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        tenants::get(self.pools(), id).await
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        tenants::list(self.pools()).await
    }

    /// Changes the given fields; `NotFound` if there is no such tenant.
    pub async fn update_tenant(
        &self,
        id: &str,
        update: TenantUpdate,
    ) -> Result<Tenant, StoreError> {
        tenants::update(self.pools(), id, update).await
    }

    /// Deletes a tenant and its API keys; its messages stay (events are the truth).
    /// Returns whether there was such a tenant.
    pub async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        tenants::delete(self.pools(), id).await
    }

    /// Creates an API key for a tenant; returns its listing and the secret, which is
    /// shown this once: only its SHA-256 is stored.
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        now_ms: i64,
    ) -> Result<(ApiKeyInfo, String), StoreError> {
        api_keys::create(self.pools(), tenant_id, now_ms).await
    }

    /// Whose a (not revoked) secret is: its tenant and its scope. An account's key
    /// counts only while its account exists.
    pub async fn key_owner(&self, secret: &str) -> Result<Option<KeyOwner>, StoreError> {
        api_keys::owner(self.pools(), secret).await
    }

    /// Creates a key of one account of a tenant (its scope: that account's mail and
    /// books); returns its listing and the secret, shown this once. `NotFound` if the
    /// tenant has no such account, `Invalid` past [`MAX_ACCOUNT_KEYS`] live keys.
    pub async fn create_account_key(
        &self,
        tenant_id: &str,
        account_id: &str,
        now_ms: i64,
    ) -> Result<(ApiKeyInfo, String), StoreError> {
        api_keys::create_for_account(self.pools(), tenant_id, account_id, now_ms).await
    }

    /// The keys of one account of a tenant, revoked ones too.
    pub async fn list_account_keys(
        &self,
        tenant_id: &str,
        account_id: &str,
    ) -> Result<Vec<ApiKeyInfo>, StoreError> {
        api_keys::list_for_account(self.pools(), tenant_id, account_id).await
    }

    /// Revokes a key of one account of a tenant; false if that account has no such
    /// live key.
    pub async fn revoke_account_key(
        &self,
        tenant_id: &str,
        account_id: &str,
        key_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        api_keys::revoke_for_account(self.pools(), tenant_id, account_id, key_id, now_ms).await
    }

    /// Revokes a key of a tenant; returns false if the tenant has no such live key.
    pub async fn revoke_api_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        api_keys::revoke(self.pools(), tenant_id, key_id, now_ms).await
    }

    /// Every key of a tenant, its accounts' keys and revoked ones too.
    pub async fn list_api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        api_keys::list(self.pools(), tenant_id).await
    }

    /// Opens a portal session of a tenant signed in with its key `key_id`, live until
    /// `expires_at_ms`; returns the session's secret (only its hash is stored). The
    /// tenant's expired sessions go, and its oldest past [`MAX_PORTAL_SESSIONS`].
    pub async fn open_portal_session(
        &self,
        tenant_id: &str,
        key_id: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<String, StoreError> {
        portal_sessions::open(self.pools(), tenant_id, key_id, now_ms, expires_at_ms).await
    }

    /// The live portal session whose secret this is: not expired, its key not revoked.
    pub async fn portal_session(
        &self,
        secret: &str,
        now_ms: i64,
    ) -> Result<Option<PortalSession>, StoreError> {
        portal_sessions::find(self.pools(), secret, now_ms).await
    }

    /// Ends a portal session (signing out); whether it was there.
    pub async fn close_portal_session(&self, secret: &str) -> Result<bool, StoreError> {
        portal_sessions::close(self.pools(), secret).await
    }

    /// How many portal sessions a tenant has kept.
    pub async fn count_portal_sessions(&self, tenant_id: &str) -> Result<i64, StoreError> {
        portal_sessions::count(self.pools(), tenant_id).await
    }

    /// Creates the schema again if the database answers but has no tables (dropped and
    /// re-created while the server ran). Returns whether it did; the caller seeds what
    /// the pipeline defines. Everything the old database held is gone either way.
    pub async fn recreate_missing_schema(&self) -> Result<bool, StoreError> {
        connect::recreate_missing_schema(self.pools()).await
    }

    /// Whether the store can take work: it answers a query, and the last group of
    /// writes reached it. The error says which, without the database's text.
    pub async fn readiness(&self) -> Result<(), String> {
        let ping = sqlx::query("SELECT 1").execute(&self.pools().read);
        match tokio::time::timeout(std::time::Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %Chain(&e), "readiness: the store does not answer");
                return Err("the store does not answer".into());
            }
            Err(_) => return Err("the store did not answer within 2 s".into()),
        }
        if self.inner.writer.failing() {
            return Err("the last write to the store failed".into());
        }
        Ok(())
    }

    // ---- relays ----

    /// Creates the relay or replaces everything but its creation time.
    pub async fn upsert_relay(&self, relay: NewRelay, now_ms: i64) -> Result<Relay, StoreError> {
        relays::upsert(self.pools(), relay, now_ms).await
    }

    pub async fn get_relay(&self, id: &str) -> Result<Option<Relay>, StoreError> {
        relays::get(self.pools(), id).await
    }

    pub async fn list_relays(&self) -> Result<Vec<Relay>, StoreError> {
        relays::list(self.pools()).await
    }

    /// Changes the given fields; `NotFound` if there is no such relay.
    pub async fn update_relay(&self, id: &str, update: RelayUpdate) -> Result<Relay, StoreError> {
        relays::update(self.pools(), id, update).await
    }

    /// Returns whether there was such a relay.
    pub async fn delete_relay(&self, id: &str) -> Result<bool, StoreError> {
        relays::delete(self.pools(), id).await
    }

    // ---- messages ----

    /// Stores a message durably (committed and fsynced before this returns), one
    /// recipient row per address in `Queued` due at `now_ms`, and an `accepted` event per
    /// recipient. A repeated (tenant, idempotency key) writes nothing and returns the
    /// first message's id with `duplicate: true`. Concurrent calls share commits.
    pub async fn accept(&self, msg: NewMessage, now_ms: i64) -> Result<Accepted, StoreError> {
        let prepared = accept::Prepared::new(msg, now_ms)?;
        self.inner.writer.submit(prepared).await
    }

    /// [`Store::accept`] for a host that will deliver the message at once: the recipients
    /// are written `Delivering`, leased to `owner` until `now + lease_ms`, in the same
    /// commit, and their leases come back in [`Accepted::leases`] (empty for a duplicate),
    /// so the host need not lease them out of the store again. A host that crashes before
    /// delivering loses only the lease: it expires and the recipients are leased again.
    pub async fn accept_leased(
        &self,
        msg: NewMessage,
        now_ms: i64,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Accepted, StoreError> {
        leases::check_terms("accept_leased", owner, lease_ms)?;
        let prepared = accept::Prepared::new(msg, now_ms)?.leased(accept::LeaseTerms {
            owner: owner.to_owned(),
            until_ms: now_ms.saturating_add(lease_ms),
        });
        self.inner.writer.submit(prepared).await
    }

    /// The stored RFC 5322 message.
    pub async fn message_body(&self, message_id: &str) -> Result<Vec<u8>, StoreError> {
        reads::message_body(self.pools(), message_id).await
    }

    /// A message of `tenant_id` with its recipients and events; `None` if there is no
    /// such message or it belongs to another tenant.
    pub async fn get_message(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<MessageView>, StoreError> {
        reads::get_message(self.pools(), tenant_id, id).await
    }

    /// The exception queue: recipients in `Failed` or `Expired`, oldest change first.
    pub async fn list_failed(&self, limit: u32) -> Result<Vec<RecipientView>, StoreError> {
        reads::list_failed(self.pools(), limit).await
    }

    /// Puts a recipient of the exception queue back to `Queued` (due now) with a
    /// `requeued` event; false if it is not in `Failed`/`Expired`.
    pub async fn requeue(
        &self,
        message_id: &str,
        recipient_idx: i32,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        reads::requeue(self.pools(), message_id, recipient_idx, now_ms).await
    }

    // ---- leases and outcomes ----

    /// Leases up to `limit` recipients that are due (`Queued`/`Deferred` with
    /// `next_attempt_at <= now`) or whose lease expired (a crashed host's work) to
    /// `owner` until `now + lease_ms`; they become `Delivering`. Two owners never get
    /// the same recipient (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    pub async fn lease_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Lease>, StoreError> {
        leases::lease_due(self.pools(), owner, now_ms, lease_ms, limit, &[]).await
    }

    /// [`Store::lease_due`], leaving out the due work of `except_tenants` (those that
    /// already hold their share of this host).
    pub async fn lease_due_except(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
        except_tenants: &[String],
    ) -> Result<Vec<Lease>, StoreError> {
        leases::lease_due(self.pools(), owner, now_ms, lease_ms, limit, except_tenants).await
    }

    /// Extends `owner`'s leases on `keys` to `now + lease_ms`; returns how many were
    /// still `owner`'s.
    pub async fn renew_leases(
        &self,
        owner: &str,
        keys: &[LeaseKey],
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<usize, StoreError> {
        leases::renew(self.pools(), owner, keys, now_ms, lease_ms).await
    }

    /// [`Store::renew_leases`], returning the keys that were still `owner`'s (and are
    /// now renewed); the others were taken by another owner or finished.
    pub async fn renew_leases_each(
        &self,
        owner: &str,
        keys: &[LeaseKey],
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<LeaseKey>, StoreError> {
        leases::renew_each(self.pools(), owner, None, keys, now_ms, lease_ms).await
    }

    /// [`Store::renew_leases_each`] for node `node`, renewing only while `incarnation`
    /// is the node's current one in `nodes`: a process that slept while a newer process
    /// joined under its id finds none of its leases still its own.
    pub async fn renew_node_leases_each(
        &self,
        node: &str,
        incarnation: &str,
        keys: &[LeaseKey],
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<LeaseKey>, StoreError> {
        leases::renew_each(
            self.pools(),
            node,
            Some(incarnation),
            keys,
            now_ms,
            lease_ms,
        )
        .await
    }

    /// Gives back everything `owner` holds (on shutdown): recipients go back to
    /// `Queued` (never attempted) or `Deferred`, due at `now_ms`. Returns how many.
    pub async fn release_leases(&self, owner: &str, now_ms: i64) -> Result<usize, StoreError> {
        leases::release(self.pools(), owner, now_ms).await
    }

    /// Makes due now the deferred recipients waiting for `relay`, or for any relay
    /// ([`Outcome::waiting_for_relay`]): called when a relay that was not answering
    /// answers again, so its work does not sit out a retry delay. Returns how many.
    pub async fn wake_waiting_for_relay(
        &self,
        relay: &str,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        leases::wake_waiting_for_relay(self.pools(), relay, now_ms).await
    }

    /// Makes due now the deferred recipients `filter` selects (every field given must
    /// match), so an operator or a tenant need not wait out a retry delay. Returns how many.
    pub async fn retry_deferred(
        &self,
        filter: &RetryFilter,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        leases::retry_deferred(self.pools(), filter, now_ms).await
    }

    // ---- queue inspection and controls (`queue.rs`, issue 22) ----

    /// A page of a tenant's messages, newest first, each with its recipients counted by
    /// state; the query's `after` is the last id of the previous page.
    pub async fn search_messages(
        &self,
        query: &MessageQuery,
    ) -> Result<Vec<MessageSummary>, StoreError> {
        queue::search_messages(self.pools(), query).await
    }

    /// The live queue by state, tenant, relay and domain, the `top_n` largest groups of
    /// each and the rest summed.
    pub async fn queue_summary(&self, top_n: usize) -> Result<QueueSummary, StoreError> {
        queue::queue_summary(self.pools(), top_n).await
    }

    /// Holds what `sel` selects until [`Store::release`]: queued, deferred and held
    /// recipients become `held` with a `held` event carrying `detail`; those in flight
    /// are marked, and held if their attempt does not finish them.
    pub async fn hold(
        &self,
        sel: &Selector,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Held, StoreError> {
        queue::hold(self.pools(), sel, "hold", detail, now_ms).await
    }

    /// Releases what `sel` selects among the recipients held by [`Store::hold`]: due
    /// now, with a `released` event. Those of a suspended tenant stay held until it is
    /// resumed. Returns how many were released or unmarked.
    pub async fn release(
        &self,
        sel: &Selector,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        queue::release(self.pools(), sel, "hold", detail, now_ms).await
    }

    /// Fails the queued, deferred and held recipients `sel` selects, `reason` as their
    /// last reply, with the events and usage of any failure; work in flight is counted
    /// and left to finish.
    pub async fn cancel(
        &self,
        sel: &Selector,
        reason: &str,
        detail: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Cancelled, StoreError> {
        queue::cancel(self.pools(), sel, reason, detail, now_ms).await
    }

    /// Suspends a tenant's sending (its queue held, its new mail stored held, leasing
    /// leaving it out) until [`Store::resume_tenant`]; `None` if there is no such tenant.
    pub async fn suspend_tenant(
        &self,
        tenant_id: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Option<Held>, StoreError> {
        queue::suspend_tenant(self.pools(), tenant_id, reason, now_ms).await
    }

    /// The ids of the tenants whose sending is suspended.
    pub async fn suspended_tenant_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self
            .pools()
            .read
            .acquire()
            .await
            .map_err(StoreError::db("suspended_tenant_ids"))?;
        queue::suspended_tenants(&mut conn, "suspended_tenant_ids").await
    }

    /// Resumes a tenant's sending; returns how many recipients were released, `None`
    /// if there is no such tenant.
    pub async fn resume_tenant(
        &self,
        tenant_id: &str,
        now_ms: i64,
    ) -> Result<Option<usize>, StoreError> {
        queue::resume_tenant(self.pools(), tenant_id, now_ms).await
    }

    /// Writes `messages` messages straight into the store for `sluice bench queue`
    /// (see `queue::bench_fill`); not for a store that serves mail.
    pub async fn bench_fill(
        &self,
        messages: u64,
        tenants: u32,
        domains: u32,
        live_every: u64,
        now_ms: i64,
        span_ms: i64,
    ) -> Result<u64, StoreError> {
        queue::bench_fill(
            self.pools(),
            messages,
            tenants,
            domains,
            live_every,
            now_ms,
            span_ms,
        )
        .await
    }

    /// The plan the database chooses for a search page's query, one line per row of
    /// `EXPLAIN QUERY PLAN` (SQLite) or `EXPLAIN` (PostgreSQL), for `sluice bench queue`.
    pub async fn explain_search(&self, query: &MessageQuery) -> Result<Vec<String>, StoreError> {
        queue::explain_search(self.pools(), query).await
    }

    /// The plans of the statements a bulk hold, release and cancel of `sel` run per
    /// batch (each pick and each change by keys), by name.
    pub async fn explain_bulk(
        &self,
        sel: &Selector,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        queue::explain_bulk(self.pools(), sel).await
    }

    /// The plans of the store's hot queries (those every message runs through, those
    /// run on every tick or scrape, the queue search pages), by name, asked for `tenant`
    /// at `now_ms`: for the check that each reads by an index.
    pub async fn explain_hot_queries(
        &self,
        tenant: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        plans::explain_hot(self.pools(), tenant, now_ms).await
    }

    /// The plans of [`Store::queue_summary`]'s queries, by name.
    pub async fn explain_queue_summary(&self) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        let mut plans = Vec::new();
        for (name, sql) in queue::summary_queries() {
            plans.push((
                name.to_owned(),
                queue::explain(self.pools(), &sql, &[]).await?,
            ));
        }
        Ok(plans)
    }

    /// Applies outcomes in one transaction, each only where the recipient is still
    /// leased to `owner` (a host that lost its lease must not overwrite the new
    /// owner's work). Clears the lease, sets state/next attempt/last relay/last reply,
    /// counts an attempt when the outcome names a relay, and appends the event.
    /// Returns how many were applied; the rest were skipped.
    pub async fn record(
        &self,
        owner: &str,
        outcomes: Vec<Outcome>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        self.record_with_events(owner, Vec::new(), outcomes, now_ms)
            .await
    }

    /// [`Store::record`], appending `events` first in the same transaction: what led to
    /// the outcomes (routing, plugin errors, relays that passed a recipient on). One
    /// commit instead of two, shared with the accepts waiting at the time; since the
    /// outcomes end the attempts in that commit, a `routed` event here does not mark its
    /// recipient in flight as [`Store::append_events`] does.
    pub async fn record_with_events(
        &self,
        owner: &str,
        events: Vec<NewEvent>,
        outcomes: Vec<Outcome>,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        events::check_outcomes(&outcomes)?;
        if outcomes.is_empty() && events.is_empty() {
            return Ok(0);
        }
        let record = group_commit::Record {
            owner: owner.to_owned(),
            events,
            outcomes,
            now_ms,
        };
        self.inner.writer.record(record).await
    }

    /// Appends events in one transaction. A `routed` event that names a relay also
    /// marks the recipient in flight on that relay (see [`Store::in_flight_by_relay`]).
    pub async fn append_events(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        events::append(self.pools(), events).await
    }

    // ---- the tenant-visible event log ----

    /// One sequencer round (`event_log.rs`): gives per-tenant cursors to at most `limit`
    /// committed events that have none, oldest first. On PostgreSQL a round that finds
    /// another node's round running does nothing and says `busy`.
    pub async fn sequence_events(&self, limit: u32) -> Result<Sequenced, StoreError> {
        self.on_writer(move |s| async move { event_log::sequence(s.pools(), limit).await })
            .await
    }

    /// Every tenant's last cursor (a tenant without sequenced events has none).
    pub async fn last_event_cursors(&self) -> Result<HashMap<String, i64>, StoreError> {
        event_log::last_cursors(self.pools()).await
    }

    /// A tenant's last cursor (0 before its first sequenced event).
    pub async fn last_event_cursor(&self, tenant_id: &str) -> Result<i64, StoreError> {
        event_log::last_cursor(self.pools(), tenant_id).await
    }

    /// A tenant's events with a cursor after `after`, in cursor order, at most `limit`,
    /// only of `kinds` when given.
    pub async fn events_after(
        &self,
        tenant_id: &str,
        after: i64,
        limit: u32,
        kinds: Option<&[EventKind]>,
    ) -> Result<Vec<TenantEvent>, StoreError> {
        event_log::after(self.pools(), tenant_id, after, limit, kinds).await
    }

    /// Deletes sequenced events written before `before_ms`, oldest first, `batch` at a
    /// time; returns how many.
    pub async fn prune_events(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError> {
        event_log::prune(self.pools(), before_ms, batch).await
    }

    // ---- relay stats ----

    /// Per relay, counts over each window `[since, now]` (one entry per `since_ms`, in
    /// order), summed from the 10-second buckets attempt events are added to as they are
    /// appended (a window covers the buckets that overlap it: up to 10 s more than
    /// asked); see [`EventKind`] for what is counted.
    pub async fn relay_stats(
        &self,
        since_ms: &[i64],
        now_ms: i64,
    ) -> Result<HashMap<String, Vec<WindowCounts>>, StoreError> {
        Ok(self.relay_stat_windows(since_ms, now_ms).await?.platform)
    }

    /// [`Store::relay_stats`] for the platform and, from the same reads, per tenant:
    /// each tenant's own traffic on each relay it had traffic on in the windows.
    pub async fn relay_stat_windows(
        &self,
        since_ms: &[i64],
        now_ms: i64,
    ) -> Result<RelayStatWindows, StoreError> {
        stats::relay_stat_windows(self.pools(), since_ms, now_ms).await
    }

    /// Forgets the relay stats of traffic before `before_ms` (windows that reach further
    /// back see nothing there); returns how many buckets went.
    pub async fn prune_relay_stats(&self, before_ms: i64) -> Result<u64, StoreError> {
        stats::prune(self.pools(), before_ms).await
    }

    /// Recipients in `Delivering` per relay, from the relay of their last `routed`
    /// event (kept on the recipient row; cleared when the outcome is recorded). Shared
    /// by all hosts on one database.
    pub async fn in_flight_by_relay(&self) -> Result<HashMap<String, u32>, StoreError> {
        stats::in_flight_by_relay(self.pools()).await
    }

    /// Queue depth by state, the oldest message waiting, and unrated usage (for
    /// `GET /metrics`; see [`stats::QueueGauges`]).
    pub async fn queue_gauges(&self) -> Result<QueueGauges, StoreError> {
        stats::queue_gauges(self.pools()).await
    }
}

// ---- nodes (`nodes.rs`) ----

impl Store {
    /// Makes `node.id` this process's (its incarnation's) with a heartbeat at `now_ms`,
    /// unless another process holds the id and beat within `dead_after_ms` (then
    /// [`Joined::InUse`], and nothing is written). Whatever the id still held from an
    /// earlier process is given back, due now, in the same commit.
    pub async fn join_node(
        &self,
        node: &NodeJoin,
        now_ms: i64,
        dead_after_ms: i64,
    ) -> Result<Joined, StoreError> {
        nodes::join(self.pools(), node, now_ms, dead_after_ms).await
    }

    /// Writes a heartbeat for `id` if `incarnation` still holds it; false if a newer
    /// process took the id over (or the node stopped).
    pub async fn node_heartbeat(
        &self,
        id: &str,
        incarnation: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        nodes::heartbeat(self.pools(), id, incarnation, now_ms).await
    }

    /// Marks a node stopped (after it gave its leases back) and hands leadership on.
    pub async fn stop_node(
        &self,
        id: &str,
        incarnation: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        nodes::stop(self.pools(), id, incarnation, now_ms).await
    }

    /// Expires, as of `now_ms`, the leases of every node but `me` whose heartbeat is
    /// older than `dead_after_ms`, so they are leased again at once; per dead node, how
    /// many were cut short.
    pub async fn take_over_dead_nodes(
        &self,
        me: &str,
        now_ms: i64,
        dead_after_ms: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        nodes::take_over_dead(self.pools(), me, now_ms, dead_after_ms).await
    }

    /// Takes or renews leadership until `now + term_ms`: true if `me` leads now (it
    /// led, nobody did, or the leader's term ran out).
    pub async fn claim_leadership(
        &self,
        me: &str,
        now_ms: i64,
        term_ms: i64,
    ) -> Result<bool, StoreError> {
        nodes::claim_leadership(self.pools(), me, now_ms, term_ms).await
    }

    /// The leader whose term has not run out, if any.
    pub async fn leader(&self, now_ms: i64) -> Result<Option<Leadership>, StoreError> {
        nodes::leader(self.pools(), now_ms).await
    }

    /// Every node that ever joined, by id, with the leases each holds now.
    pub async fn list_nodes(&self, now_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
        nodes::list(self.pools(), now_ms).await
    }
}

// ---- bounces and suppressions (methods in their modules) ----

mod bounces;
mod suppression_lookups;
mod suppressions;
mod writer_thread;

pub use bounces::{BounceRecorded, BounceReport, BounceTarget};
pub use suppressions::normalize as normalize_address;
pub use suppressions::{AddedBy, NewSuppression, Removal, Suppression};

// ---- plugins ----

mod plugins;

pub use plugins::{ActivePlugin, FailurePolicy, NewPluginVersion, PluginState, PluginVersion};

impl Store {
    /// Stores an upload as the next version of its (tenant, stage), numbered from 1,
    /// with its SHA-256; `NotFound` if there is no such tenant. Does not activate it.
    pub async fn add_plugin_version(
        &self,
        new: NewPluginVersion,
        now_ms: i64,
    ) -> Result<PluginVersion, StoreError> {
        plugins::add(self.pools(), new, now_ms).await
    }

    /// A tenant's versions (of one stage, or all), by stage then version.
    pub async fn list_plugin_versions(
        &self,
        tenant_id: &str,
        stage: Option<sluice_stage::Stage>,
    ) -> Result<Vec<PluginVersion>, StoreError> {
        plugins::list(self.pools(), tenant_id, stage).await
    }

    /// One version's listing; `None` if the tenant has no such version.
    pub async fn get_plugin_version(
        &self,
        tenant_id: &str,
        stage: sluice_stage::Stage,
        version: u32,
    ) -> Result<Option<PluginVersion>, StoreError> {
        plugins::get(self.pools(), tenant_id, stage, version).await
    }

    /// One version's component bytes.
    pub async fn plugin_wasm(
        &self,
        tenant_id: &str,
        stage: sluice_stage::Stage,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        plugins::wasm(self.pools(), tenant_id, stage, version).await
    }

    /// Makes `version` the active one in one transaction, remembering the one it
    /// replaces for [`Store::rollback_plugin`]; lifts a suspension of `version`.
    /// `NotFound` if the tenant has no such version.
    pub async fn activate_plugin(
        &self,
        tenant_id: &str,
        stage: sluice_stage::Stage,
        version: u32,
        now_ms: i64,
    ) -> Result<ActivePlugin, StoreError> {
        plugins::activate(self.pools(), tenant_id, stage, version, now_ms).await
    }

    /// Makes the previously active version active again (repeatable, back through
    /// the history). `NotFound` if nothing is active, `Invalid` if there is no
    /// previous version.
    pub async fn rollback_plugin(
        &self,
        tenant_id: &str,
        stage: sluice_stage::Stage,
        now_ms: i64,
    ) -> Result<ActivePlugin, StoreError> {
        plugins::rollback(self.pools(), tenant_id, stage, now_ms).await
    }

    /// The active version of a (tenant, stage), suspended or not.
    pub async fn active_plugin(
        &self,
        tenant_id: &str,
        stage: sluice_stage::Stage,
    ) -> Result<Option<ActivePlugin>, StoreError> {
        plugins::active(self.pools(), tenant_id, stage).await
    }

    /// Every active version of every tenant (what hosts poll to pick up switches).
    pub async fn list_active_plugins(&self) -> Result<Vec<ActivePlugin>, StoreError> {
        plugins::list_active(self.pools()).await
    }

    /// Deletes a tenant's oldest versions beyond `keep`, all stages together, sparing
    /// each stage's active version and the last few it would roll back to; what was
    /// pruned, oldest first.
    pub async fn prune_plugin_versions(
        &self,
        tenant_id: &str,
        keep: u32,
    ) -> Result<Vec<(sluice_stage::Stage, u32)>, StoreError> {
        plugins::prune(self.pools(), tenant_id, keep).await
    }

    /// Marks a version suspended with its reason; false if it was not `Ready` (already
    /// suspended, or no such version), so only the first host to suspend reports it.
    pub async fn suspend_plugin(
        &self,
        tenant_id: &str,
        stage: sluice_stage::Stage,
        version: u32,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        plugins::suspend(self.pools(), tenant_id, stage, version, reason, now_ms).await
    }
}

// ---- webhooks (issue 21; `webhooks.rs` says what holds) ----

impl Store {
    /// Creates a webhook whose cursors start at the end of its tenant's (or every
    /// tenant's) log now; `Conflict` when its owner has `max` already.
    pub async fn create_webhook(
        &self,
        new: NewWebhook,
        max: u32,
        now_ms: i64,
    ) -> Result<Webhook, StoreError> {
        webhooks::create(self.pools(), new, max, now_ms).await
    }

    /// An owner's webhooks, oldest first.
    pub async fn list_webhooks(&self, owner: WebhookOwner<'_>) -> Result<Vec<Webhook>, StoreError> {
        webhooks::list(self.pools(), owner).await
    }

    /// Every active webhook of every owner.
    pub async fn list_active_webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        webhooks::list_active(self.pools()).await
    }

    /// One of an owner's webhooks.
    pub async fn get_webhook(
        &self,
        owner: WebhookOwner<'_>,
        id: &str,
    ) -> Result<Option<Webhook>, StoreError> {
        webhooks::get(self.pools(), owner, id).await
    }

    /// Changes an owner's webhook (made active again: its retry state cleared).
    pub async fn update_webhook(
        &self,
        owner: WebhookOwner<'_>,
        id: &str,
        change: WebhookUpdate,
        now_ms: i64,
    ) -> Result<Webhook, StoreError> {
        webhooks::update(self.pools(), owner, id, change, now_ms).await
    }

    /// Deletes an owner's webhook; whether it had one.
    pub async fn delete_webhook(
        &self,
        owner: WebhookOwner<'_>,
        id: &str,
    ) -> Result<bool, StoreError> {
        webhooks::delete(self.pools(), owner, id).await
    }

    /// A new signing secret; the old one signs too until `overlap_until_ms`.
    pub async fn rotate_webhook_secret(
        &self,
        owner: WebhookOwner<'_>,
        id: &str,
        secret: &str,
        overlap_until_ms: i64,
        now_ms: i64,
    ) -> Result<Webhook, StoreError> {
        webhooks::rotate_secret(self.pools(), owner, id, secret, overlap_until_ms, now_ms).await
    }

    /// A webhook's cursor per tenant.
    pub async fn webhook_cursors(&self, id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        webhooks::cursors(self.pools(), id).await
    }

    /// Every webhook's cursors: (webhook, tenant, cursor).
    pub async fn all_webhook_cursors(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        webhooks::all_cursors(self.pools()).await
    }

    /// A platform webhook's cursor (0) into each tenant with events that has none.
    pub async fn ensure_webhook_cursors(&self, id: &str) -> Result<(), StoreError> {
        webhooks::ensure_cursors(self.pools(), id).await
    }

    /// Sends a webhook the events of `tenant_id` after `after` again, now.
    pub async fn replay_webhook(
        &self,
        owner: WebhookOwner<'_>,
        id: &str,
        tenant_id: &str,
        after: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        webhooks::replay(self.pools(), owner, id, tenant_id, after, now_ms).await
    }

    /// Takes or renews the lease of an active, due webhook; whether `node` holds it.
    pub async fn claim_webhook(
        &self,
        id: &str,
        node: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        webhooks::claim(self.pools(), id, node, now_ms, lease_ms).await
    }

    /// Gives a webhook's lease back.
    pub async fn release_webhook(&self, id: &str, node: &str) -> Result<(), StoreError> {
        webhooks::release(self.pools(), id, node).await
    }

    /// Gives back every webhook lease `node` holds (a graceful stop); how many.
    pub async fn release_webhook_leases(&self, node: &str) -> Result<u64, StoreError> {
        webhooks::release_all(self.pools(), node).await
    }

    /// What a delivery task did since its last checkpoint (cursor moves, successful
    /// attempts), with its lease renewed, in one transaction; whether `node` held it.
    #[allow(clippy::too_many_arguments)]
    pub async fn webhook_checkpoint(
        &self,
        id: &str,
        node: &str,
        moves: &[CursorMove],
        attempts: &[WebhookAttempt],
        keep: u32,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        webhooks::checkpoint(
            self.pools(),
            id,
            node,
            moves,
            attempts,
            keep,
            lease_until_ms,
        )
        .await
    }

    /// How far webhooks are behind, summed per state.
    pub async fn webhook_lag(&self) -> Result<Vec<WebhookLag>, StoreError> {
        webhooks::lag(self.pools()).await
    }

    /// Moves a cursor past events the webhook's filter leaves out.
    pub async fn webhook_skipped(
        &self,
        id: &str,
        node: &str,
        tenant_id: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        webhooks::skipped(self.pools(), id, node, tenant_id, from, to).await
    }

    /// After a 2xx: the cursor moved from `from`, the retry state cleared, the attempt kept.
    pub async fn webhook_delivered(
        &self,
        id: &str,
        node: &str,
        from: i64,
        attempt: &WebhookAttempt,
        keep: u32,
    ) -> Result<bool, StoreError> {
        webhooks::delivered(self.pools(), id, node, from, attempt, keep).await
    }

    /// After a failure: backoff, the attempt kept, and a pause (with its tenant event)
    /// when `pause` gives the reason; whether this call paused it.
    #[allow(clippy::too_many_arguments)]
    pub async fn webhook_failed(
        &self,
        id: &str,
        node: &str,
        attempt: &WebhookAttempt,
        next_attempt_ms: i64,
        pause: Option<&str>,
        keep: u32,
    ) -> Result<bool, StoreError> {
        webhooks::failed(
            self.pools(),
            id,
            node,
            attempt,
            next_attempt_ms,
            pause,
            keep,
        )
        .await
    }

    /// Keeps an attempt that moves nothing (a test send).
    pub async fn record_webhook_attempt(
        &self,
        id: &str,
        attempt: &WebhookAttempt,
        keep: u32,
    ) -> Result<(), StoreError> {
        webhooks::record_attempt(self.pools(), id, attempt, keep).await
    }

    /// An owner's webhook's last attempts, newest first.
    pub async fn webhook_attempts(
        &self,
        owner: WebhookOwner<'_>,
        id: &str,
        limit: u32,
    ) -> Result<Vec<WebhookAttempt>, StoreError> {
        webhooks::attempts(self.pools(), owner, id, limit).await
    }
}
