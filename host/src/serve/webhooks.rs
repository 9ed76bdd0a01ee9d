//! Webhook delivery (issue 21): each webhook reads its tenant's event log (or, the
//! platform's, every tenant's) by cursor and POSTs the events after it, signed as
//! Standard Webhooks says (`webhook_http.rs`), in order, at least once.
//!
//! Every `[webhooks] poll_ms`, and whenever this node's sequencer has given new events
//! their cursors, a node's loop looks at the active webhooks that are due (no backoff
//! running) and have events past their cursor, takes the lease of each it has room
//! for (`Store::claim_webhook`) and starts one task per webhook. The task reads up to
//! [`READ_AHEAD`] events at a time and sends them one batch (`batch_size` events) at a
//! time, on a connection kept alive to the receiver (kept between tasks too, in
//! [`Deliveries`]' idle pool), until the webhook is caught up, then gives the lease
//! back. What it sent is written at a *checkpoint* — every [`CHECKPOINT_EVERY`], at a
//! failure and at the end — in one transaction: the cursor moves past the batches that
//! got a 2xx, their attempts, the lease renewed (`Store::webhook_checkpoint`). After
//! anything but a 2xx the webhook's backoff is written on its row (first retry after
//! `first_retry_ms`, doubling, ±25 % jitter, at most `max_retry_secs`) and the task
//! ends. A webhook failing for longer than `retry_window_secs` is paused, with a
//! `webhook.paused` event for its tenant; its events stay in the log for a resume or
//! a replay.
//!
//! Why checkpoints and not a write per request: with the default batch of one event,
//! a write (and a few reads) per request made the store the bottleneck (~190 events/s
//! per webhook); a crash between checkpoints sends at most [`CHECKPOINT_EVERY`]'s worth
//! of events again, which at-least-once allows (receivers dedupe by `webhook-id`).
//!
//! Why a lease on the webhook row (and not the leader alone): any node may deliver, so
//! webhooks spread over the cluster and no single node's slow receivers hold up all
//! of them; the lease (longer than one request's timeouts, renewed at each
//! checkpoint) makes one node at a time deliver a given webhook, which is what keeps
//! its batches in order; a dead node's lease runs out and another node goes on from
//! the cursor, a node stopping gracefully gives its leases back
//! ([`Deliveries::stop`]) so another goes on at once, and a restarted node takes its
//! own leases back at once (they carry its stable node id).
//!
//! Invariants:
//! - One batch of a webhook in flight at a time in the whole cluster (the lease, and
//!   this node's running set); so a message's events, whose cursors are in the
//!   order they were written, reach the receiver in that order.
//! - The cursor moves only past batches that got a 2xx (or past events the filter
//!   leaves out), from the value it was read at: a crash, a lost lease or a replay
//!   meanwhile resends, never skips.
//! - A receiver can hold a task for at most connect + response timeout per batch, and
//!   a node runs at most `max_concurrent` deliveries, `max_concurrent_per_tenant` of
//!   one tenant, and keeps at most `max_concurrent` idle connections: a slow receiver
//!   of one tenant delays neither another tenant's webhooks nor any mail (deliveries
//!   are tasks of their own, apart from dispatch).

use super::events_api::{event_json, public_type};
use super::state::{Server, now_ms};
use crate::logging::Chain;
use crate::store::{CursorMove, EventKind, Webhook, WebhookAttempt};
use crate::webhook_http::{self, Limits};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
/// Events read from the store at a time; they go out in batches of `batch_size`.
const READ_AHEAD: u32 = 200;
/// How long a stopping node waits for its deliveries to write what they sent before
/// it cuts them short (what they sent since their last checkpoint is then sent again
/// by whichever node goes on).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What this node is delivering now, and the receivers' connections it keeps between
/// deliveries.
pub struct Deliveries {
    running: Mutex<Running>,
    slots: Arc<tokio::sync::Semaphore>,
    /// At most one idle connection per webhook, `max_concurrent` in all.
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
        let max = server.pipeline.webhooks.max_concurrent as usize;
        Arc::new(Deliveries {
            running: Mutex::new(Running::default()),
            slots: Arc::new(tokio::sync::Semaphore::new(max)),
            idle: webhook_http::IdlePool::new(max),
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
            let mut conn = deliveries2.idle.take(&id);
            if let Err(e) = deliver(&server, hook, &mut conn).await {
                tracing::warn!(webhook = %id, error = %Chain(&e), "webhook delivery stopped; it is retried");
            }
            if let Some(c) = conn {
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

/// What a delivery sent since its last checkpoint.
struct Progress {
    /// Per tenant, its cursor's move (from the stored value).
    moves: BTreeMap<String, CursorMove>,
    /// Successful attempts, oldest first (the newest `attempts_kept` of them).
    attempts: Vec<WebhookAttempt>,
    since: std::time::Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            moves: BTreeMap::new(),
            attempts: Vec::new(),
            since: std::time::Instant::now(),
        }
    }

    /// Where `tenant`'s cursor stands for this delivery, given the stored one: past what
    /// it sent since its checkpoint, unless the stored cursor moved meanwhile (a replay:
    /// it wins, and what was sent is forgotten).
    fn position(&mut self, tenant: &str, stored: i64) -> i64 {
        match self.moves.get(tenant) {
            Some(m) if m.from == stored => m.to,
            Some(_) => {
                self.moves.remove(tenant);
                stored
            }
            None => stored,
        }
    }

    fn moved(&mut self, tenant: &str, from: i64, to: i64) {
        self.moves
            .entry(tenant.to_owned())
            .or_insert_with(|| CursorMove {
                tenant_id: tenant.to_owned(),
                from,
                to: from,
            })
            .to = to;
    }

    fn attempt(&mut self, a: WebhookAttempt, keep: u32) {
        if self.attempts.len() >= keep.max(1) as usize {
            self.attempts.remove(0);
        }
        self.attempts.push(a);
    }

    /// Writes it (the lease renewed); whether this node still holds the lease.
    async fn write(&mut self, server: &Server, id: &str) -> Result<bool, crate::store::StoreError> {
        let moves: Vec<CursorMove> = self.moves.values().cloned().collect();
        let ours = server
            .store
            .webhook_checkpoint(
                id,
                &server.node.id,
                &moves,
                &self.attempts,
                server.pipeline.webhooks.attempts_kept,
                now_ms() + lease_ms(server),
            )
            .await?;
        self.moves.clear();
        self.attempts.clear();
        self.since = std::time::Instant::now();
        Ok(ours)
    }
}

/// Sends a leased webhook's batches until it is caught up, fails, or its lease is lost;
/// what it sent is written at least every [`CHECKPOINT_EVERY`] and when it ends.
async fn deliver(
    server: &Server,
    hook: Webhook,
    conn: &mut Option<webhook_http::Conn>,
) -> Result<(), crate::store::StoreError> {
    let id = hook.id.clone();
    if hook.tenant_id.is_none() {
        server.store.ensure_webhook_cursors(&id).await?;
    }
    let mut progress = Progress::new();
    let ended = batches(server, hook, conn, &mut progress).await;
    // What was sent is written whatever ended it (caught up, stopping, a failure, a
    // store error): a failure's backoff comes after the successes before it.
    let written = progress.write(server, &id).await;
    let failure = ended?;
    let ours = written?;
    if let (Some((hook, attempt)), true) = (failure, ours) {
        failed(server, &hook, attempt).await?;
    }
    Ok(())
}

/// The batches of one delivery; a failed attempt ends them and is returned.
async fn batches(
    server: &Server,
    mut hook: Webhook,
    conn: &mut Option<webhook_http::Conn>,
    progress: &mut Progress,
) -> Result<Option<(Webhook, WebhookAttempt)>, crate::store::StoreError> {
    let config = &server.pipeline.webhooks;
    let id = hook.id.clone();
    let owner_tenant = hook.tenant_id.clone();
    let owner = || match &owner_tenant {
        Some(t) => crate::store::WebhookOwner::Tenant(t),
        None => crate::store::WebhookOwner::Platform,
    };
    let mut served: Option<String> = None;
    loop {
        if server.is_shutting_down() {
            return Ok(None);
        }
        if progress.since.elapsed() >= CHECKPOINT_EVERY {
            // Renews the lease; refused once taken over. Then re-read: its URL,
            // secrets, filter or state may have changed.
            if !progress.write(server, &id).await? {
                return Ok(None);
            }
            match server.store.get_webhook(owner(), &id).await? {
                Some(h) if h.state == crate::store::WebhookState::Active => hook = h,
                _ => return Ok(None),
            }
        }
        let kinds = kinds_of(&hook.events);
        // The next of its tenants with events past the cursor, after the one served
        // last (a platform webhook takes its tenants in turn: a busy one cannot starve
        // the others).
        let last = server.store.last_event_cursors().await?;
        let mut cursors = server.store.webhook_cursors(&id).await?;
        if let Some(prev) = &served {
            let at = cursors.partition_point(|(t, _)| t <= prev);
            cursors.rotate_left(at);
        }
        let mut next = None;
        for (tenant, stored) in cursors {
            let at = progress.position(&tenant, stored);
            let l = last.get(&tenant).copied().unwrap_or(0);
            if l > at {
                next = Some((tenant, at, l));
                break;
            }
        }
        let Some((tenant, from, last)) = next else {
            return Ok(None);
        };
        served = Some(tenant.clone());
        let page = server
            .store
            .events_after(
                &tenant,
                from,
                READ_AHEAD.max(config.batch_size),
                kinds.as_deref(),
            )
            .await?;
        if page.is_empty() {
            // Nothing up to `last` passes the filter (all of it was visible: cursors
            // have no gaps).
            progress.moved(&tenant, from, last);
            continue;
        }
        for batch in page.chunks(config.batch_size.max(1) as usize) {
            let (first, end) = (&batch[0], &batch[batch.len() - 1]);
            let msg_id = format!("msg_{}_{}_{}", id, first.seq, end.seq);
            let body = serde_json::json!({
                "type": "events",
                "webhook_id": id,
                "tenant_id": tenant,
                "events": batch.iter().map(event_json).collect::<Vec<_>>(),
            })
            .to_string();
            let sent = send(server, &hook, &msg_id, body.as_bytes(), conn).await;
            let attempt = WebhookAttempt {
                at_ms: now_ms(),
                tenant_id: Some(tenant.clone()),
                first_cursor: Some(first.cursor),
                last_cursor: Some(end.cursor),
                events: batch.len() as u32,
                status: sent.status,
                latency_ms: i64::try_from(sent.latency.as_millis()).unwrap_or(i64::MAX),
                error: sent.error.clone(),
            };
            if !sent.ok() {
                *conn = None;
                return Ok(Some((hook, attempt)));
            }
            progress.moved(&tenant, from, end.cursor);
            progress.attempt(attempt, config.attempts_kept);
            // As the checkpoint writes it: a later failure starts a new run.
            hook.failures = 0;
            hook.failing_since_ms = None;
            if server.is_shutting_down() || progress.since.elapsed() >= CHECKPOINT_EVERY {
                break;
            }
        }
    }
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

    #[test]
    fn a_webhooks_events_name_public_types_or_all() {
        assert_eq!(kinds_of(&["*".into()]), None);
        assert_eq!(
            kinds_of(&["message.delivered".into(), "webhook.paused".into()]),
            Some(vec![EventKind::Delivered, EventKind::WebhookPaused])
        );
    }
}
