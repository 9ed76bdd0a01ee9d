//! Webhook delivery (issue 21): each webhook reads its tenant's event log (or, the
//! platform's, every tenant's) by cursor and POSTs the events after it, signed as
//! Standard Webhooks says (`webhook_http.rs`), in order, at least once.
//!
//! Every `[webhooks] poll_ms` a node's loop looks at the active webhooks that are due
//! (no backoff running) and have events past their cursor, takes the lease of each it
//! has room for (`Store::claim_webhook`) and starts one task per webhook. The task
//! sends one batch at a time (`batch_size` events) until the webhook is caught up, then
//! gives the lease back; after a 2xx the cursor moves past the batch, after anything
//! else the webhook's backoff is written on its row (first retry after
//! `first_retry_ms`, doubling, ±25 % jitter, at most `max_retry_secs`) and the task
//! ends. A webhook failing for longer than `retry_window_secs` is paused, with a
//! `webhook.paused` event for its tenant; its events stay in the log for a resume or
//! a replay.
//!
//! Why a lease on the webhook row (and not the leader alone): any node may deliver, so
//! webhooks spread over the cluster and no single node's slow receivers hold up all
//! of them; the lease (longer than one request's timeouts, renewed before each
//! batch) makes one node at a time deliver a given webhook, which is what keeps its
//! batches in order; a dead node's lease runs out and another node goes on from the
//! cursor, and a restarted node takes its own leases back at once (they carry its
//! stable node id).
//!
//! Invariants:
//! - One batch of a webhook in flight at a time in the whole cluster (the lease, and
//!   this node's `running` set); so a message's events, whose cursors are in the
//!   order they were written, reach the receiver in that order.
//! - The cursor moves only after a 2xx (or past events the filter leaves out), from
//!   the value the batch was read at: a crash or a lost lease resends, never skips.
//! - A receiver can hold a task for at most connect + response timeout per batch, and
//!   a node runs at most `max_concurrent` deliveries, `max_concurrent_per_tenant` of
//!   one tenant: a slow receiver of one tenant delays neither another tenant's
//!   webhooks nor any mail (deliveries are tasks of their own, apart from dispatch).

use super::events_api::{event_json, public_type};
use super::state::{Server, now_ms};
use crate::logging::Chain;
use crate::store::{EventKind, Webhook, WebhookAttempt};
use crate::webhook_http::{self, Limits};
use std::collections::{HashMap, HashSet};
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

/// Signs and sends one body to a webhook now; what came of it.
pub async fn send(
    server: &Server,
    hook: &Webhook,
    msg_id: &str,
    body: &[u8],
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
    )
    .await
}

/// What this node is delivering now.
#[derive(Default)]
struct Running {
    hooks: HashSet<String>,
    /// Per owner (tenant id, or "" for the platform), its deliveries in flight here.
    per_owner: HashMap<String, u32>,
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

/// The node's webhook loop; runs until the task is aborted.
pub async fn run(server: Arc<Server>) {
    let config = server.pipeline.webhooks.clone();
    let running = Arc::new(Mutex::new(Running::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent as usize));
    loop {
        if server.is_shutting_down() {
            return;
        }
        if let Err(e) = round(&server, &running, &slots).await {
            tracing::warn!(error = %Chain(&e), "webhook round failed; retrying");
        }
        tokio::time::sleep(config.poll).await;
    }
}

async fn round(
    server: &Arc<Server>,
    running: &Arc<Mutex<Running>>,
    slots: &Arc<tokio::sync::Semaphore>,
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
            let r = running.lock().expect("webhook set");
            if r.hooks.contains(&hook.id)
                || r.per_owner.get(&owner).copied().unwrap_or(0) >= per_tenant
            {
                continue;
            }
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            return Ok(());
        };
        if !server
            .store
            .claim_webhook(&hook.id, &server.node.id, now_ms(), lease_ms(server))
            .await?
        {
            continue;
        }
        {
            let mut r = running.lock().expect("webhook set");
            r.hooks.insert(hook.id.clone());
            *r.per_owner.entry(owner.clone()).or_default() += 1;
        }
        let (server, running) = (server.clone(), running.clone());
        tokio::spawn(async move {
            let id = hook.id.clone();
            if let Err(e) = deliver(&server, hook).await {
                tracing::warn!(webhook = %id, error = %Chain(&e), "webhook delivery stopped; it is retried");
            }
            if let Err(e) = server.store.release_webhook(&id, &server.node.id).await {
                tracing::warn!(webhook = %id, error = %Chain(&e), "cannot give a webhook's lease back; it runs out");
            }
            let mut r = running.lock().expect("webhook set");
            r.hooks.remove(&id);
            if let Some(n) = r.per_owner.get_mut(&owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    r.per_owner.remove(&owner);
                }
            }
            drop(permit);
        });
    }
    Ok(())
}

/// Sends a leased webhook's batches until it is caught up, fails, or its lease is lost.
async fn deliver(server: &Server, hook: Webhook) -> Result<(), crate::store::StoreError> {
    let config = &server.pipeline.webhooks;
    let me = server.node.id.as_str();
    let id = hook.id.clone();
    if hook.tenant_id.is_none() {
        server.store.ensure_webhook_cursors(&id).await?;
    }
    let mut hook = hook;
    let mut served: Option<String> = None;
    loop {
        if server.is_shutting_down() {
            return Ok(());
        }
        // Renewed before each batch; refused once paused, deleted or taken over.
        if !server
            .store
            .claim_webhook(&id, me, now_ms(), lease_ms(server))
            .await?
        {
            return Ok(());
        }
        // Re-read: its URL, secrets or filter may have changed.
        let owner = match &hook.tenant_id {
            Some(t) => crate::store::WebhookOwner::Tenant(t),
            None => crate::store::WebhookOwner::Platform,
        };
        match server.store.get_webhook(owner, &id).await? {
            Some(h) => hook = h,
            None => return Ok(()),
        }
        let kinds = kinds_of(&hook.events);
        // The next of its tenants with events past the cursor, after the one served
        // last (a platform webhook takes its tenants in turn: a busy one cannot starve
        // the others).
        let mut next = None;
        let mut cursors = server.store.webhook_cursors(&id).await?;
        if let Some(prev) = &served {
            let at = cursors.partition_point(|(t, _)| t <= prev);
            cursors.rotate_left(at);
        }
        for (tenant, cursor) in cursors {
            let last = server.store.last_event_cursor(&tenant).await?;
            if last > cursor {
                next = Some((tenant, cursor, last));
                break;
            }
        }
        let Some((tenant, from, last)) = next else {
            return Ok(());
        };
        served = Some(tenant.clone());
        let page = server
            .store
            .events_after(&tenant, from, config.batch_size, kinds.as_deref())
            .await?;
        if page.is_empty() {
            // Nothing up to `last` passes the filter (all of it was visible: cursors
            // have no gaps).
            server
                .store
                .webhook_skipped(&id, me, &tenant, from, last)
                .await?;
            continue;
        }
        let (first, end) = (&page[0], &page[page.len() - 1]);
        let msg_id = format!("msg_{}_{}_{}", id, first.seq, end.seq);
        let body = serde_json::json!({
            "type": "events",
            "webhook_id": id,
            "tenant_id": tenant,
            "events": page.iter().map(event_json).collect::<Vec<_>>(),
        })
        .to_string();
        let sent = send(server, &hook, &msg_id, body.as_bytes()).await;
        let attempt = WebhookAttempt {
            at_ms: now_ms(),
            tenant_id: Some(tenant.clone()),
            first_cursor: Some(first.cursor),
            last_cursor: Some(end.cursor),
            events: page.len() as u32,
            status: sent.status,
            latency_ms: i64::try_from(sent.latency.as_millis()).unwrap_or(i64::MAX),
            error: sent.error.clone(),
        };
        if sent.ok() {
            if !server
                .store
                .webhook_delivered(&id, me, from, &attempt, config.attempts_kept)
                .await?
            {
                return Ok(());
            }
            continue;
        }
        let failures = hook.failures.saturating_add(1);
        let now = attempt.at_ms;
        let since = hook.failing_since_ms.unwrap_or(now);
        let window = i64::try_from(config.retry_window.as_millis()).unwrap_or(i64::MAX);
        let pause = (now.saturating_sub(since) >= window).then(|| {
            format!(
                "failed {failures} times in a row over {} s (webhooks.retry_window_secs); last: {}",
                (now - since) / 1000,
                sent.error.as_deref().unwrap_or("")
            )
        });
        let delay = backoff(config.first_retry, config.max_retry, failures);
        let next_at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        let paused = server
            .store
            .webhook_failed(
                &id,
                me,
                &attempt,
                next_at,
                pause.as_deref(),
                config.attempts_kept,
            )
            .await?;
        if paused {
            tracing::warn!(webhook = %id, url = %hook.url, "webhook paused after failing past its retry window");
        }
        return Ok(());
    }
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
