//! Webhook delivery (issue 21): each webhook reads its tenant's event log (or, the
//! platform's, every tenant's) by cursor and POSTs the events after it, signed as
//! Standard Webhooks says (`webhook_http.rs`), in order per message, at least once.
//!
//! Every `[webhooks] poll_ms`, and whenever this node's sequencer has given new events
//! their cursors, a node's loop looks at the active webhooks that are due (no backoff
//! running) and have events past their cursor, takes the lease of each it has room
//! for (`Store::claim_webhook`) and starts one task per webhook. The task reads up to
//! [`READ_AHEAD`] events at a time and sends them in batches (`batch_size` events), up
//! to `max_in_flight` requests at once, each on a connection of its own kept alive to
//! the receiver (kept between tasks too, in [`Deliveries`]' idle pool), until the
//! webhook is caught up, then gives the lease back.
//!
//! The order promised is per message: a batch takes pending events in cursor order,
//! leaving out every event of a message that has a batch in flight or held for a
//! retry (and that message's later events), so event n+1 of a message is sent only
//! after the request with event n got its 2xx; events of different messages may be in
//! flight together and arrive in any order. A tenant's events about no message
//! (`plugin.suspended`, `billing.low_balance`, `webhook.paused`) are ordered among
//! themselves likewise. `max_in_flight = 1` is one batch at a time: the tenant's whole
//! log in cursor order.
//!
//! Failures: a batch that fails while others succeed is *held*: retried alone after
//! its own backoff (first retry after `first_retry_ms`, doubling, ±25 % jitter, at most
//! `max_retry_secs`), its messages' later events waiting for it while other messages'
//! events go on; the delivery lasts while a batch is held (keeping the lease and its
//! `max_concurrent` slot), taking new events as they come. A failure of another batch
//! right after a failure (no success between), any failure with `max_in_flight = 1`,
//! or one while probing means the receiver is down: no new request goes out, the ones in flight are waited for, and the webhook's
//! backoff is written on its row as for one request in flight; the next delivery
//! starts with one request (probing) until one succeeds. A webhook (or one held batch)
//! failing for longer than `retry_window_secs` is paused, with a `webhook.paused`
//! event for its tenant; its events stay in the log for a resume or a replay.
//!
//! The cursor: what was acknowledged is written at a *checkpoint* — every
//! [`CHECKPOINT_EVERY`], at a failure and at the end — in one transaction: each
//! tenant's cursor moved to just below its lowest event not acknowledged yet (pending,
//! in flight or held), the attempts, the lease renewed (`Store::webhook_checkpoint`).
//! Events acknowledged above that point are not recorded, so a crash (or a delivery
//! ending on a failure, a replay or a lost lease) sends them again: at most what was
//! acknowledged since the last checkpoint plus what lies past the lowest unacknowledged
//! event (a slow or held request lets other messages' events by), which a delivery
//! bounds by reading at most [`max_ahead`] cursors past it (1,000, or twice
//! `batch_size`). Receivers dedupe by the events' `id` (or the request's `webhook-id`).
//!
//! Why checkpoints and not a write per request: with the default batch of one event,
//! a write (and a few reads) per request made the store the bottleneck (~190 events/s
//! per webhook).
//!
//! Why a lease on the webhook row (and not the leader alone): any node may deliver, so
//! webhooks spread over the cluster and no single node's slow receivers hold up all
//! of them; the lease (longer than one request's timeouts, renewed at each
//! checkpoint) makes one node at a time deliver a given webhook, which is what keeps
//! a message's events in order; a dead node's lease runs out and another node goes on
//! from the cursor, a node stopping gracefully gives its leases back
//! ([`Deliveries::stop`]) so another goes on at once, and a restarted node takes its
//! own leases back at once (they carry its stable node id).
//!
//! Invariants:
//! - One delivery of a webhook at a time in the whole cluster (the lease, and this
//!   node's running set), and within it at most one request in flight or held per
//!   message, sent only after the message's earlier events were acknowledged; so a
//!   message's events, whose cursors are in the order they were written, reach the
//!   receiver in that order. A delivery ends only after its requests in flight ended
//!   (or were cut short, at a stop), so the next one cannot overtake them.
//! - A cursor moves only to just below the lowest event not acknowledged (or past
//!   events the filter leaves out), from the value it was read at: a crash, a lost
//!   lease or a replay meanwhile resends, never skips.
//! - A receiver can hold a request for at most connect + response timeout, a webhook
//!   has at most `max_in_flight` requests in flight (and as many connections), a node
//!   runs at most `max_concurrent` deliveries, `max_concurrent_per_tenant` of one
//!   tenant, and keeps at most `max_concurrent` idle connections (`max_in_flight` per
//!   webhook): a slow receiver of one tenant delays neither another tenant's webhooks
//!   nor any mail (deliveries are tasks of their own, apart from dispatch).

use super::events_api::{event_json, public_type};
use super::state::{Server, now_ms};
use crate::logging::Chain;
use crate::store::{CursorMove, EventKind, TenantEvent, Webhook, WebhookAttempt};
use crate::webhook_http::{self, Limits};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// The type that stands for every event type in a webhook's `events`.
pub const ALL_TYPES: &str = "*";

/// The stored kinds a webhook's `events` names; `None` for all.
pub fn kinds_of(events: &[String]) -> Option<Vec<EventKind>> {
    if events.iter().any(|e| e == ALL_TYPES) {
        return None;
    }
    Some(
        EventKind::ALL
            .into_iter()
            .filter(|k| events.iter().any(|e| e == public_type(*k)))
            .collect(),
    )
}

/// The request limits `[webhooks]` sets.
pub fn limits(server: &Server) -> Limits {
    let c = &server.pipeline.webhooks;
    Limits {
        connect_timeout: c.connect_timeout,
        response_timeout: c.response_timeout,
        max_response_bytes: c.max_response_bytes as usize,
        allow_private: c.allow_private,
    }
}

/// Signs and sends one body to a webhook now, on `conn` if it is a live connection to
/// the webhook's receiver (else on a new one, left in `conn` if it may be reused); what
/// came of it.
pub async fn send(
    server: &Server,
    hook: &Webhook,
    msg_id: &str,
    body: &[u8],
    conn: &mut Option<webhook_http::Conn>,
) -> webhook_http::Sent {
    let now = now_ms();
    let timestamp = now / 1000;
    let signature = webhook_http::signature(&hook.signing_secrets(now), msg_id, timestamp, body);
    webhook_http::send(
        &hook.url,
        msg_id,
        timestamp,
        &signature,
        body,
        limits(server),
        conn,
    )
    .await
}

/// How often a busy delivery writes what it sent (cursor moves, attempts) and renews
/// its lease, in one transaction: a crash sends again at most this long's worth of
/// events, and a webhook sending many small batches costs the store a few writes a
/// second instead of one per request.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Events read from the store at a time, and held unsent at most (plus a page); they
/// go out in batches of `batch_size`.
const READ_AHEAD: u32 = 200;
/// How far (in cursors) past its lowest event not acknowledged a delivery reads a
/// tenant's events ([`max_ahead`]; twice `batch_size` when that is more).
const MAX_AHEAD: i64 = 1_000;
/// How long a delivery of a stopping node waits for its requests in flight before it
/// writes what was acknowledged (within [`STOP_GRACE`]).
const STOP_DRAIN: Duration = Duration::from_secs(1);
/// How long a stopping node waits for its deliveries to write what they sent before
/// it cuts them short (what they sent since their last checkpoint is then sent again
/// by whichever node goes on).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What this node is delivering now, and the receivers' connections it keeps between
/// deliveries.
pub struct Deliveries {
    running: Mutex<Running>,
    slots: Arc<tokio::sync::Semaphore>,
    /// At most `max_in_flight` idle connections per webhook, `max_concurrent` in all.
    idle: webhook_http::IdlePool,
}

#[derive(Default)]
struct Running {
    hooks: HashMap<String, tokio::task::AbortHandle>,
    /// Per owner (tenant id, or "" for the platform), its deliveries in flight here.
    per_owner: HashMap<String, u32>,
}

impl Deliveries {
    pub fn new(server: &Server) -> Arc<Deliveries> {
        let c = &server.pipeline.webhooks;
        let max = c.max_concurrent as usize;
        Arc::new(Deliveries {
            running: Mutex::new(Running::default()),
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            idle: webhook_http::IdlePool::new(max, c.max_in_flight as usize),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A graceful stop (the server is shutting down, so no delivery starts another
    /// batch): waits up to [`STOP_GRACE`] for the deliveries to write what they sent,
    /// cuts the rest short, and gives back every webhook lease this node holds, so that
    /// another node delivers them at once rather than after the leases run out.
    pub async fn stop(&self, server: &Server) {
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while !self.running().hooks.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (_, task) in self.running().hooks.drain() {
            task.abort();
        }
        match server.store.release_webhook_leases(&server.node.id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(webhooks = n, "gave webhook leases back"),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "cannot give webhook leases back; they run out")
            }
        }
    }
}

/// The lease of a webhook: long enough for a request's timeouts with room to spare.
fn lease_ms(server: &Server) -> i64 {
    let c = &server.pipeline.webhooks;
    let ms = (c.connect_timeout + c.response_timeout).as_millis() * 2 + 5_000;
    i64::try_from(ms).unwrap_or(i64::MAX).max(10_000)
}

/// The delay before retry number `failures` (1: the first), with ±25 % jitter.
pub fn backoff(first: Duration, max: Duration, failures: u32) -> Duration {
    let doubled = first.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = doubled.min(max);
    let jitter = rand::random_range(0.75..=1.25);
    base.mul_f64(jitter).min(max).max(Duration::from_millis(1))
}

/// The node's webhook loop; runs until the task is aborted. A round starts every
/// `poll_ms`, or sooner when this node's sequencer gave new events their cursors.
pub async fn run(server: Arc<Server>, deliveries: Arc<Deliveries>) {
    let config = server.pipeline.webhooks.clone();
    let mut woken = server.events.sequenced();
    loop {
        if server.is_shutting_down() {
            return;
        }
        if let Err(e) = round(&server, &deliveries).await {
            tracing::warn!(error = %Chain(&e), "webhook round failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(config.poll) => {}
            _ = woken.changed() => {}
        }
    }
}

async fn round(
    server: &Arc<Server>,
    deliveries: &Arc<Deliveries>,
) -> Result<(), crate::store::StoreError> {
    let hooks = server.store.list_active_webhooks().await?;
    if hooks.is_empty() {
        return Ok(());
    }
    let last = server.store.last_event_cursors().await?;
    let mut cursors: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for (id, tenant, cursor) in server.store.all_webhook_cursors().await? {
        cursors.entry(id).or_default().insert(tenant, cursor);
    }
    let now = now_ms();
    let per_tenant = server.pipeline.webhooks.max_concurrent_per_tenant;
    for hook in hooks {
        if hook.next_attempt_ms.is_some_and(|t| t > now) {
            continue;
        }
        let mine = cursors.get(&hook.id);
        let at = |tenant: &str| mine.and_then(|c| c.get(tenant)).copied().unwrap_or(0);
        let pending = match &hook.tenant_id {
            Some(t) => last.get(t).is_some_and(|l| *l > at(t)),
            None => last.iter().any(|(t, l)| *l > at(t)),
        };
        if !pending {
            continue;
        }
        let owner = hook.tenant_id.clone().unwrap_or_default();
        {
            let r = deliveries.running();
            if r.hooks.contains_key(&hook.id)
                || r.per_owner.get(&owner).copied().unwrap_or(0) >= per_tenant
            {
                continue;
            }
        }
        let Ok(permit) = deliveries.slots.clone().try_acquire_owned() else {
            return Ok(());
        };
        if !server
            .store
            .claim_webhook(&hook.id, &server.node.id, now_ms(), lease_ms(server))
            .await?
        {
            continue;
        }
        // Held while spawning: the task's own removal waits for its insertion.
        let mut r = deliveries.running();
        let id = hook.id.clone();
        let (server, deliveries2) = (server.clone(), deliveries.clone());
        let owner2 = owner.clone();
        let task = tokio::spawn(async move {
            let id = hook.id.clone();
            let most = server.pipeline.webhooks.max_in_flight as usize;
            let mut conns: Vec<webhook_http::Conn> =
                std::iter::from_fn(|| deliveries2.idle.take(&id))
                    .take(most)
                    .collect();
            if let Err(e) = deliver(&server, hook, &mut conns).await {
                tracing::warn!(webhook = %id, error = %Chain(&e), "webhook delivery stopped; it is retried");
            }
            for c in conns {
                deliveries2.idle.put(&id, c);
            }
            if let Err(e) = server.store.release_webhook(&id, &server.node.id).await {
                tracing::warn!(webhook = %id, error = %Chain(&e), "cannot give a webhook's lease back; it runs out");
            }
            let mut r = deliveries2.running();
            r.hooks.remove(&id);
            if let Some(n) = r.per_owner.get_mut(&owner2) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    r.per_owner.remove(&owner2);
                }
            }
            drop(permit);
        });
        r.hooks.insert(id, task.abort_handle());
        *r.per_owner.entry(owner).or_default() += 1;
    }
    Ok(())
}

/// One tenant's events in a delivery (a tenant's webhook has one lane, a platform
/// webhook one per tenant).
struct Lane {
    /// The cursor as stored: read at the start, then as this delivery last wrote it.
    stored: i64,
    /// Every event up to here was read: it is pending, in flight, held, acknowledged,
    /// or left out by the webhook's filter.
    read: i64,
    /// The tenant's last cursor, as last read.
    last: i64,
    /// Read and not acknowledged yet (pending, in flight or held).
    unacked: BTreeSet<i64>,
    /// Read and not sent yet, in cursor order.
    pending: VecDeque<TenantEvent>,
}

impl Lane {
    fn new(stored: i64) -> Lane {
        Lane {
            stored,
            read: stored,
            last: stored,
            unacked: BTreeSet::new(),
            pending: VecDeque::new(),
        }
    }

    /// Where the cursor may stand: just below the lowest event not acknowledged, else
    /// past everything read.
    fn low(&self) -> i64 {
        self.unacked.first().map_or(self.read, |c| c - 1)
    }

    /// Up to `size` pending events, in cursor order, of messages with nothing in flight
    /// or held (`busy`) and no earlier event still pending: so a message's events go
    /// out in order, each request after the one before was acknowledged.
    fn take_batch(&mut self, busy: &HashSet<String>, size: usize) -> Vec<TenantEvent> {
        let mut taken = Vec::new();
        {
            let mut waiting: HashSet<&str> = HashSet::new();
            for (i, e) in self.pending.iter().enumerate() {
                if taken.len() == size {
                    break;
                }
                let key = message_key(e);
                if busy.contains(key) || waiting.contains(key) {
                    waiting.insert(key);
                    continue;
                }
                taken.push(i);
            }
        }
        let mut events: Vec<TenantEvent> = taken
            .iter()
            .rev()
            .filter_map(|&i| self.pending.remove(i))
            .collect();
        events.reverse();
        events
    }
}

/// What orders a webhook's events: the message they are about; a tenant's events
/// about no message are ordered among themselves.
fn message_key(e: &TenantEvent) -> &str {
    e.message_id.as_deref().unwrap_or("")
}

/// One request's events, kept for its retries.
struct Batch {
    tenant: String,
    /// The request's `webhook-id`: the same for every retry.
    msg_id: String,
    events: Vec<TenantEvent>,
    /// The messages of its events (see [`message_key`]).
    keys: Vec<String>,
    /// Failed attempts in a row, and when the first of them was.
    failures: u32,
    failing_since_ms: Option<i64>,
}

/// A request's outcome, with its batch and its connection if it may be reused.
type Done = (Batch, webhook_http::Sent, Option<webhook_http::Conn>);

/// Why a delivery ended.
enum End {
    /// Nothing left to send.
    CaughtUp,
    /// The server stops, the lease was lost, the webhook was changed, paused,
    /// deleted or replayed: what was not acknowledged is sent by the next delivery.
    Stop,
    /// The webhook failed as a whole (or one batch failed past the retry window): its
    /// backoff (or its pause) is written with this attempt. `failures` and
    /// `failing_since_ms` are those before this attempt.
    Failed {
        failures: u32,
        failing_since_ms: Option<i64>,
        attempt: WebhookAttempt,
    },
}

/// One webhook's delivery on this node while it holds the lease.
struct Delivery<'a> {
    server: &'a Arc<Server>,
    hook: Arc<Webhook>,
    lanes: BTreeMap<String, Lane>,
    /// Messages with a batch in flight or held: their later events wait.
    busy: HashSet<String>,
    /// Failed batches waiting for their retry.
    held: Vec<(tokio::time::Instant, Batch)>,
    in_flight: JoinSet<Done>,
    /// Connections to the receiver not in use now.
    idle: Vec<webhook_http::Conn>,
    /// Attempts since the last checkpoint, oldest first (the newest `attempts_kept`).
    attempts: Vec<WebhookAttempt>,
    /// The webhook's failures in a row (as its row says until a success resets them).
    failures: u32,
    failing_since_ms: Option<i64>,
    /// After the webhook failed as a whole, one request at a time until one succeeds.
    probing: bool,
    /// The batch whose failure was the last outcome (reset by any success): a failure
    /// of another batch right after it means the receiver is down, not one message.
    last_failed: Option<String>,
    /// The lane last sent from and last read: lanes take turns.
    sent_from: Option<String>,
    read_from: Option<String>,
    checkpointed: std::time::Instant,
    renewed: std::time::Instant,
    last_read: std::time::Instant,
    woken: tokio::sync::watch::Receiver<u64>,
    /// The sequencer gave events cursors since the tenants' last cursors were read.
    sequenced: bool,
}

/// Sends a leased webhook's events until it is caught up, fails, or its lease is
/// lost, up to `max_in_flight` requests at a time, never two of one message at once;
/// what it sent is written at least every [`CHECKPOINT_EVERY`] and when it ends.
async fn deliver(
    server: &Arc<Server>,
    hook: Webhook,
    idle: &mut Vec<webhook_http::Conn>,
) -> Result<(), crate::store::StoreError> {
    let id = hook.id.clone();
    if hook.tenant_id.is_none() {
        server.store.ensure_webhook_cursors(&id).await?;
    }
    let lanes = server
        .store
        .webhook_cursors(&id)
        .await?
        .into_iter()
        .map(|(t, c)| (t, Lane::new(c)))
        .collect();
    let now = std::time::Instant::now();
    let mut d = Delivery {
        server,
        failures: hook.failures,
        failing_since_ms: hook.failing_since_ms,
        probing: hook.failures > 0,
        hook: Arc::new(hook),
        lanes,
        busy: HashSet::new(),
        held: Vec::new(),
        in_flight: JoinSet::new(),
        idle: std::mem::take(idle),
        attempts: Vec::new(),
        last_failed: None,
        sent_from: None,
        read_from: None,
        checkpointed: now,
        renewed: now,
        last_read: now,
        woken: server.events.sequenced(),
        sequenced: false,
    };
    let ended = d.run().await;
    // Cut short what is still in flight (a stop past its grace): not acknowledged, so
    // sent again by whichever delivery goes on.
    d.in_flight.abort_all();
    // What was acknowledged is written whatever ended it (caught up, stopping, a
    // failure, a store error): a failure's backoff comes after the successes before it.
    let written = d.checkpoint().await;
    *idle = std::mem::take(&mut d.idle);
    let ours = written?;
    if let (
        End::Failed {
            failures,
            failing_since_ms,
            attempt,
        },
        true,
    ) = (ended?, ours)
    {
        let mut hook = (*d.hook).clone();
        hook.failures = failures;
        hook.failing_since_ms = failing_since_ms;
        failed(server, &hook, attempt).await?;
    }
    Ok(())
}

impl Delivery<'_> {
    async fn run(&mut self) -> Result<End, crate::store::StoreError> {
        let server = self.server;
        let config = &server.pipeline.webhooks;
        let renew_every =
            Duration::from_millis(u64::try_from(lease_ms(self.server) / 4).unwrap_or(1000));
        let mut end: Option<End> = None;
        let mut drain_until: Option<tokio::time::Instant> = None;
        loop {
            if end.is_none() && self.server.is_shutting_down() {
                end = Some(End::Stop);
            }
            if let Some(e) = end.take() {
                // No new request; the ones in flight are waited for (each bounded by
                // the request timeouts; at a stop by [`STOP_DRAIN`]) so that their
                // acknowledgements are written.
                if self.in_flight.is_empty() {
                    return Ok(e);
                }
                if self.server.is_shutting_down() {
                    let until = *drain_until
                        .get_or_insert_with(|| tokio::time::Instant::now() + STOP_DRAIN);
                    match tokio::time::timeout_at(until, self.in_flight.join_next()).await {
                        Ok(Some(r)) => {
                            self.done(r, true);
                        }
                        Ok(None) | Err(_) => return Ok(e),
                    }
                } else if let Some(r) = self.in_flight.join_next().await {
                    self.done(r, true);
                }
                end = Some(e);
                continue;
            }
            let wrote_any =
                !self.attempts.is_empty() || self.lanes.values().any(|l| l.low() > l.stored);
            let due = (wrote_any && self.checkpointed.elapsed() >= CHECKPOINT_EVERY)
                || self.renewed.elapsed() >= renew_every;
            if due && (!self.checkpoint().await? || !self.reread().await?) {
                end = Some(End::Stop);
                continue;
            }
            let nothing_left = self.in_flight.is_empty()
                && self.held.is_empty()
                && self.lanes.values().all(|l| l.pending.is_empty());
            self.refill(nothing_left).await?;
            self.dispatch();
            if self.in_flight.is_empty()
                && self.held.is_empty()
                && self.lanes.values().all(|l| l.pending.is_empty())
            {
                return Ok(End::CaughtUp);
            }
            // Wait for an answer, a retry's time, a checkpoint's, or new events.
            let now = tokio::time::Instant::now();
            let mut wake = now + renew_every.min(config.poll).max(Duration::from_millis(10));
            if let Some(at) = self.held.iter().map(|(at, _)| *at).min() {
                wake = wake.min(at);
            }
            if wrote_any {
                wake = wake.min(now + CHECKPOINT_EVERY.saturating_sub(self.checkpointed.elapsed()));
            }
            tokio::select! {
                Some(r) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    end = self.done(r, false);
                }
                _ = tokio::time::sleep_until(wake) => {}
                Ok(()) = self.woken.changed() => self.sequenced = true,
            }
        }
    }

    /// Takes a request's outcome; the delivery's end if it ends it. While `draining`
    /// (the delivery ends anyway) a failure changes nothing: its events stay not
    /// acknowledged.
    fn done(
        &mut self,
        joined: Result<Done, tokio::task::JoinError>,
        draining: bool,
    ) -> Option<End> {
        let server = self.server;
        let config = &server.pipeline.webhooks;
        let (mut batch, sent, conn) = match joined {
            Ok(d) => d,
            Err(e) => {
                // A request cut short or panicked: its batch is lost to this delivery,
                // so it ends; the next one sends it again from the cursor.
                tracing::warn!(webhook = %self.hook.id, error = %e, "a webhook request did not finish");
                return Some(End::Stop);
            }
        };
        let (first, end) = (&batch.events[0], &batch.events[batch.events.len() - 1]);
        let attempt = WebhookAttempt {
            at_ms: now_ms(),
            tenant_id: Some(batch.tenant.clone()),
            first_cursor: Some(first.cursor),
            last_cursor: Some(end.cursor),
            events: batch.events.len() as u32,
            status: sent.status,
            latency_ms: i64::try_from(sent.latency.as_millis()).unwrap_or(i64::MAX),
            error: sent.error.clone(),
        };
        if sent.ok() {
            self.idle.extend(conn);
            if let Some(lane) = self.lanes.get_mut(&batch.tenant) {
                for e in &batch.events {
                    lane.unacked.remove(&e.cursor);
                }
            }
            for k in &batch.keys {
                self.busy.remove(k);
            }
            self.keep(attempt);
            // As the checkpoint writes it: a later failure starts a new run.
            self.failures = 0;
            self.failing_since_ms = None;
            self.probing = false;
            self.last_failed = None;
            return None;
        }
        if draining {
            return None;
        }
        let whole = config.max_in_flight <= 1
            || self.probing
            || self
                .last_failed
                .as_ref()
                .is_some_and(|f| *f != batch.msg_id);
        if whole {
            // The receiver fails more than one message: the webhook backs off as a
            // whole, as with one request in flight.
            return Some(End::Failed {
                failures: self.failures,
                failing_since_ms: self.failing_since_ms,
                attempt,
            });
        }
        // One batch fails while others succeed: it alone is retried after its backoff,
        // and only its messages' later events wait for it.
        self.last_failed = Some(batch.msg_id.clone());
        batch.failures += 1;
        let since = *batch.failing_since_ms.get_or_insert(attempt.at_ms);
        let window = i64::try_from(config.retry_window.as_millis()).unwrap_or(i64::MAX);
        if attempt.at_ms.saturating_sub(since) >= window {
            return Some(End::Failed {
                failures: batch.failures - 1,
                failing_since_ms: Some(since),
                attempt,
            });
        }
        self.keep(attempt);
        let delay = backoff(config.first_retry, config.max_retry, batch.failures);
        self.held.push((tokio::time::Instant::now() + delay, batch));
        None
    }

    fn keep(&mut self, a: WebhookAttempt) {
        let keep = self.server.pipeline.webhooks.attempts_kept.max(1) as usize;
        if self.attempts.len() >= keep {
            self.attempts.remove(0);
        }
        self.attempts.push(a);
    }

    /// Sends what may go now: retries that are due first, then new batches, lanes in
    /// turn, up to `max_in_flight` requests (one while probing).
    fn dispatch(&mut self) {
        let server = self.server;
        let config = &server.pipeline.webhooks;
        let limit = if self.probing {
            1
        } else {
            config.max_in_flight.max(1) as usize
        };
        let now = tokio::time::Instant::now();
        while self.in_flight.len() < limit {
            let due = self
                .held
                .iter()
                .enumerate()
                .filter(|(_, (at, _))| *at <= now)
                .min_by_key(|(_, (_, b))| (b.tenant.clone(), b.events[0].cursor))
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let (_, batch) = self.held.swap_remove(i);
            self.send(batch);
        }
        let size = config.batch_size.max(1) as usize;
        while self.in_flight.len() < limit {
            let names = turn(&self.lanes, self.sent_from.as_deref(), |l| {
                !l.pending.is_empty()
            });
            let mut sent = false;
            for tenant in names {
                let lane = self.lanes.get_mut(&tenant).expect("a lane just listed");
                let events = lane.take_batch(&self.busy, size);
                if events.is_empty() {
                    continue;
                }
                let msg_id = batch_id(&self.hook.id, &events);
                let mut keys: Vec<String> =
                    events.iter().map(|e| message_key(e).to_owned()).collect();
                keys.sort_unstable();
                keys.dedup();
                self.sent_from = Some(tenant.clone());
                self.send(Batch {
                    tenant,
                    msg_id,
                    events,
                    keys,
                    failures: 0,
                    failing_since_ms: None,
                });
                sent = true;
                break;
            }
            if !sent {
                break;
            }
        }
    }

    /// Starts one request, on an idle connection if there is one.
    fn send(&mut self, batch: Batch) {
        for k in &batch.keys {
            self.busy.insert(k.clone());
        }
        let body = serde_json::json!({
            "type": "events",
            "webhook_id": self.hook.id,
            "tenant_id": batch.tenant,
            "events": batch.events.iter().map(event_json).collect::<Vec<_>>(),
        })
        .to_string();
        let (server, hook) = (self.server.clone(), self.hook.clone());
        let mut conn = self.idle.pop();
        self.in_flight.spawn(async move {
            let sent = send(&server, &hook, &batch.msg_id, body.as_bytes(), &mut conn).await;
            (batch, sent, conn)
        });
    }

    /// Reads more events while fewer than [`READ_AHEAD`] are pending, lanes in turn,
    /// each at most [`max_ahead`] past its lowest event not acknowledged. The tenants'
    /// last cursors are read again when this node's sequencer gave events cursors,
    /// every `poll_ms`, and (`now`) before the delivery would end as caught up.
    async fn refill(&mut self, now: bool) -> Result<(), crate::store::StoreError> {
        let server = self.server;
        let config = &server.pipeline.webhooks;
        if self.enough_pending() {
            return Ok(());
        }
        if now
            || self.sequenced
            || self.woken.has_changed().unwrap_or(false)
            || self.last_read.elapsed() >= config.poll
        {
            drop(self.woken.borrow_and_update());
            self.sequenced = false;
            let last = self.server.store.last_event_cursors().await?;
            for (tenant, lane) in &mut self.lanes {
                lane.last = last.get(tenant).copied().unwrap_or(0);
            }
            self.last_read = std::time::Instant::now();
        }
        let kinds = kinds_of(&self.hook.events);
        let ahead = max_ahead(config.batch_size);
        for tenant in turn(&self.lanes, self.read_from.as_deref(), |l| l.last > l.read) {
            if self.enough_pending() {
                break;
            }
            let lane = self.lanes.get_mut(&tenant).expect("a lane just listed");
            let room = ahead - (lane.read - lane.low());
            if lane.last <= lane.read || room <= 0 {
                continue;
            }
            let limit = i64::from(READ_AHEAD.max(config.batch_size)).min(room);
            let page = self
                .server
                .store
                .events_after(&tenant, lane.read, limit as u32, kinds.as_deref())
                .await?;
            let full = page.len() as i64 >= limit;
            let page_end = page.last().map_or(lane.read, |e| e.cursor);
            // A page short of the limit read everything up to the last cursor read
            // before it (cursors have no gaps; what is missing the filter left out).
            lane.read = if full {
                page_end
            } else {
                page_end.max(lane.last)
            };
            for e in page {
                lane.unacked.insert(e.cursor);
                lane.pending.push_back(e);
            }
            self.read_from = Some(tenant);
        }
        Ok(())
    }

    /// Whether [`READ_AHEAD`] events are pending that may be sent once requests end;
    /// events of messages held for a retry do not count, so that they hold back only
    /// their own messages (the lanes' read-ahead bound, [`max_ahead`], still holds).
    fn enough_pending(&self) -> bool {
        let enough = READ_AHEAD as usize;
        let all: usize = self.lanes.values().map(|l| l.pending.len()).sum();
        all >= enough
            && self
                .lanes
                .values()
                .flat_map(|l| l.pending.iter())
                .filter(|e| !self.busy.contains(message_key(e)))
                .count()
                >= enough
    }

    /// Writes what was acknowledged (each lane's cursor to just below its lowest event
    /// not acknowledged), the attempts, and the lease renewed, in one transaction;
    /// whether this node still holds the lease.
    async fn checkpoint(&mut self) -> Result<bool, crate::store::StoreError> {
        let moves: Vec<CursorMove> = self
            .lanes
            .iter()
            .filter(|(_, l)| l.low() > l.stored)
            .map(|(t, l)| CursorMove {
                tenant_id: t.clone(),
                from: l.stored,
                to: l.low(),
            })
            .collect();
        let server = self.server;
        let ours = server
            .store
            .webhook_checkpoint(
                &self.hook.id,
                &server.node.id,
                &moves,
                &self.attempts,
                server.pipeline.webhooks.attempts_kept,
                now_ms() + lease_ms(server),
            )
            .await?;
        self.attempts.clear();
        self.checkpointed = std::time::Instant::now();
        self.renewed = self.checkpointed;
        if ours {
            for m in moves {
                if let Some(l) = self.lanes.get_mut(&m.tenant_id) {
                    l.stored = m.to;
                }
            }
        }
        Ok(ours)
    }

    /// After a checkpoint: the webhook read again (its URL, secrets, filter or state may
    /// have changed) and its cursors; whether the delivery goes on. A cursor that is not
    /// where this delivery wrote it was replayed: the replay wins, and the delivery ends
    /// so that the next one starts from there.
    async fn reread(&mut self) -> Result<bool, crate::store::StoreError> {
        let store = &self.server.store;
        let owner = match &self.hook.tenant_id {
            Some(t) => crate::store::WebhookOwner::Tenant(t),
            None => crate::store::WebhookOwner::Platform,
        };
        match store.get_webhook(owner, &self.hook.id).await? {
            Some(h) if h.state == crate::store::WebhookState::Active => self.hook = Arc::new(h),
            _ => return Ok(false),
        }
        for (tenant, cursor) in store.webhook_cursors(&self.hook.id).await? {
            match self.lanes.get(&tenant) {
                Some(l) if l.stored != cursor => return Ok(false),
                Some(_) => {}
                // A tenant new to a platform webhook.
                None => {
                    self.lanes.insert(tenant, Lane::new(cursor));
                }
            }
        }
        Ok(true)
    }
}

/// The lanes' names, starting after `after`: they take turns, so a busy tenant of a
/// platform webhook cannot starve the others.
/// Only lanes `which` picks are named (a platform webhook may have many tenants).
fn turn(
    lanes: &BTreeMap<String, Lane>,
    after: Option<&str>,
    which: impl Fn(&Lane) -> bool,
) -> Vec<String> {
    let mut names: Vec<String> = lanes
        .iter()
        .filter(|(_, l)| which(l))
        .map(|(t, _)| t.clone())
        .collect();
    if let Some(prev) = after {
        let at = names.partition_point(|t| t.as_str() <= prev);
        names.rotate_left(at);
    }
    names
}

/// How far past its lowest event not acknowledged a delivery reads one tenant's
/// events: a batch failing (held for its retries) lets at most this many later events
/// of other messages through, which bounds both the events a delivery holds and what
/// a crash sends again.
fn max_ahead(batch_size: u32) -> i64 {
    MAX_AHEAD.max(2 * i64::from(batch_size))
}

/// A batch's `webhook-id`: its first and last events' sequence numbers, and for a
/// batch of more than two a digest of all of them, since events of a busy message may
/// be left out of the middle: two batches with the same ends and other events between
/// must not share an id (a receiver deduplicating by it would drop events).
fn batch_id(webhook: &str, events: &[TenantEvent]) -> String {
    let (first, end) = (&events[0], &events[events.len() - 1]);
    if events.len() <= 2 {
        return format!("msg_{webhook}_{}_{}", first.seq, end.seq);
    }
    // FNV-1a over the sequence numbers: stable across builds and nodes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for e in events {
        for b in e.seq.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("msg_{webhook}_{}_{}_{:08x}", first.seq, end.seq, h as u32)
}

/// After a failed attempt: the backoff written, and the webhook paused once it has
/// failed for longer than `retry_window_secs`.
async fn failed(
    server: &Server,
    hook: &Webhook,
    attempt: WebhookAttempt,
) -> Result<(), crate::store::StoreError> {
    let config = &server.pipeline.webhooks;
    let failures = hook.failures.saturating_add(1);
    let now = attempt.at_ms;
    let since = hook.failing_since_ms.unwrap_or(now);
    let window = i64::try_from(config.retry_window.as_millis()).unwrap_or(i64::MAX);
    let pause = (now.saturating_sub(since) >= window).then(|| {
        format!(
            "failed {failures} times in a row over {} s (webhooks.retry_window_secs); last: {}",
            (now - since) / 1000,
            attempt.error.as_deref().unwrap_or("")
        )
    });
    let delay = backoff(config.first_retry, config.max_retry, failures);
    let next_at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
    let paused = server
        .store
        .webhook_failed(
            &hook.id,
            &server.node.id,
            &attempt,
            next_at,
            pause.as_deref(),
            config.attempts_kept,
        )
        .await?;
    if paused {
        tracing::warn!(webhook = %hook.id, url = %hook.url, "webhook paused after failing past its retry window");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_within_the_cap() {
        let first = Duration::from_secs(2);
        let max = Duration::from_secs(600);
        for (n, base) in [(1, 2.0), (2, 4.0), (3, 8.0), (9, 512.0)] {
            let d = backoff(first, max, n).as_secs_f64();
            assert!(
                d >= base * 0.75 - 0.01 && d <= base * 1.25 + 0.01,
                "{n}: {d}"
            );
        }
        assert!(backoff(first, max, 30) <= max);
        assert!(backoff(first, max, 10) >= Duration::from_secs(450));
    }

    fn event(cursor: i64, message: Option<&str>) -> TenantEvent {
        TenantEvent {
            cursor,
            seq: cursor + 100,
            kind: EventKind::Delivered,
            message_id: message.map(str::to_owned),
            recipient: None,
            tags: vec![],
            relay: None,
            detail: serde_json::Value::Null,
            at_ms: 0,
        }
    }

    fn lane(events: &[(i64, Option<&str>)]) -> Lane {
        let mut l = Lane::new(0);
        for (c, m) in events {
            l.unacked.insert(*c);
            l.pending.push_back(event(*c, *m));
            l.read = *c;
        }
        l
    }

    fn cursors(events: &[TenantEvent]) -> Vec<i64> {
        events.iter().map(|e| e.cursor).collect()
    }

    #[test]
    fn a_batch_leaves_out_busy_messages_and_everything_after_their_first_waiting_event() {
        let mut l = lane(&[
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("a")),
            (4, Some("c")),
            (5, None),
            (6, Some("b")),
            (7, None),
        ]);
        let mut busy: HashSet<String> = ["b".to_owned()].into();
        // b is in flight: its events 2 and 6 wait; a's two events may share a batch.
        assert_eq!(cursors(&l.take_batch(&busy, 3)), vec![1, 3, 4]);
        busy.extend(["a".to_owned(), "c".to_owned(), String::new()]);
        assert!(l.take_batch(&busy, 3).is_empty());
        // The events about no message are ordered among themselves: 7 waits for 5.
        busy.remove("");
        assert_eq!(cursors(&l.take_batch(&busy, 1)), vec![5]);
        busy.insert(String::new());
        busy.remove("b");
        assert_eq!(cursors(&l.take_batch(&busy, 10)), vec![2, 6]);
        assert_eq!(cursors(l.pending.make_contiguous()), vec![7]);
    }

    #[test]
    fn the_cursor_stands_below_the_lowest_event_not_acknowledged() {
        let mut l = lane(&[(4, Some("a")), (5, Some("b")), (7, Some("c"))]);
        l.read = 9; // 6, 8 and 9 left out by the filter
        assert_eq!(l.low(), 3);
        l.unacked.remove(&5);
        l.unacked.remove(&7);
        assert_eq!(
            l.low(),
            3,
            "4 is not acknowledged: 5 and 7 are sent again after a crash"
        );
        l.unacked.remove(&4);
        assert_eq!(l.low(), 9);
    }

    #[test]
    fn batches_with_the_same_ends_and_other_events_between_have_other_ids() {
        let a = [
            event(1, Some("a")),
            event(2, Some("b")),
            event(4, Some("a")),
        ];
        let b = [
            event(1, Some("a")),
            event(3, Some("c")),
            event(4, Some("a")),
        ];
        assert_ne!(batch_id("wh_1", &a), batch_id("wh_1", &b));
        assert_eq!(batch_id("wh_1", &a), batch_id("wh_1", &a.clone()));
        assert_eq!(batch_id("wh_1", &a[..1]), "msg_wh_1_101_101");
    }

    #[test]
    fn a_webhooks_events_name_public_types_or_all() {
        assert_eq!(kinds_of(&["*".into()]), None);
        assert_eq!(
            kinds_of(&["message.delivered".into(), "webhook.paused".into()]),
            Some(vec![EventKind::Delivered, EventKind::WebhookPaused])
        );
    }
}
