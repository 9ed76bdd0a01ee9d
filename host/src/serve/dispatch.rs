//! The scheduler and the senders: lease due recipients, group them by
//! message and domain, route each group through the route plugin, send it
//! through lettre, and let the send plugin say what each reply means.

use super::bounces;
use super::fair::{FairQueue, Fairness};
use super::state::{Server, now_ms};
use crate::logging::Chain;
use crate::relay::{RelayClient, RelayReply};
use crate::stage::{self, Attempt, RouteDecision, RouteInput, SendDecision, Stage};
use crate::store::{
    ANY_RELAY, EventKind, Lease, LeaseKey, NewEvent, Outcome, RecipientState, Tenant,
};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Most recipients in one SMTP transaction.
const MAX_GROUP: usize = 100;
/// Retry delay when no plugin could decide (both the tenant's and the fallback failed).
const PLUGIN_FAILURE_RETRY_SECS: i64 = 60;
/// Retry delay when the send plugin wants the next relay but none is left.
const NO_RELAY_LEFT_RETRY_SECS: i64 = 300;
/// Work of a suspended tenant that this host already held is tried again after this, if
/// it was not held (the suspension marked it) by then.
const SUSPENDED_RETRY_SECS: i64 = 5;

/// One group's work while it waits at the dispatcher: its leases and, for handed-over
/// work, the message's body.
struct Work {
    leases: Vec<Lease>,
    body: Option<Arc<Vec<u8>>>,
}

/// A group that finished: its tenant and how many recipients it held.
type Finished = (String, usize);

/// Delivers until shutdown what the API hands over and what is due in the store (retries,
/// recipients accepted while this host held its share, a crashed host's expired leases);
/// returns when the last in-flight delivery has finished.
///
/// Work waits in one queue per tenant and starts by deficit round robin within each
/// tenant's budget (`fair.rs`). A started group holds only its tenant's budget while its
/// plugins decide; a delivery slot (`Server::in_flight`) is taken only for the SMTP
/// transaction itself. So a tenant whose plugin is slow holds up only its own work.
pub async fn run(server: Arc<Server>) {
    let node = server.node.id.clone();
    let lease_ms = server.pipeline.delivery.lease.as_millis() as i64;
    let batch = server.pipeline.delivery.batch as usize;
    let fairness = &server.pipeline.delivery.fairness;
    let mut fair = FairQueue::new(
        Fairness {
            quantum: fairness.quantum,
            tenant_max_groups: fairness.tenant_max_groups as usize,
            weights: fairness
                .weights
                .iter()
                .map(|(t, w)| (t.clone(), *w))
                .collect::<HashMap<_, _>>(),
        },
        MAX_GROUP as u32,
    );
    let mut tasks = tokio::task::JoinSet::new();
    let (recorder, records) = mpsc::unbounded_channel();
    let recording = tokio::spawn(record_loop(server.clone(), records));
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<Finished>();
    let mut handed = server.handoff.take_receiver();
    // The store is looked at when woken, on this tick, and first of all (work left by
    // an earlier run); handed-over work needs no look.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut look = Some(Look::Start);
    // Why the last look leased less than it might have: no room at all, or these tenants
    // were at their share (or the API has stored a tenant's work since, because it was
    // at its share). A finished group makes a new look worth its query only then;
    // otherwise the tick and the API's wake-ups are enough. (A look that leaves a tenant
    // at its share out no longer reads its backlog (the look asks each other tenant for
    // its own due work, migration 0024), but it is still a statement on the store's one
    // writer: so neither a finished group of another tenant nor the API storing the
    // work of a tenant at its share starts one.)
    let mut no_room = false;
    let mut left_out: HashSet<String> = HashSet::new();
    let mut last_renewal = now_ms();
    while !server.is_shutting_down() {
        while tasks.try_join_next().is_some() {}
        while let Ok((tenant, n)) = finished.try_recv() {
            if no_room || left_out.contains(&tenant) || server.handoff.take_left_in_store(&tenant) {
                look.get_or_insert(Look::Finished);
            }
            fair.finished(&tenant);
            server.handoff.release(&tenant, n);
        }
        while let Some(h) = handed.as_mut().and_then(|rx| rx.try_recv().ok()) {
            queue(&mut fair, h.leases, Some(h.body));
        }
        if let Some(cause) = look {
            let (room, full) = server.handoff.lease_room();
            let limit = batch.min(room);
            no_room = limit == 0;
            left_out = full.iter().cloned().collect();
            if limit > 0 {
                match server
                    .store
                    .lease_due_except(&node, now_ms(), lease_ms, limit as u32, &full)
                    .await
                {
                    Ok(leases) => {
                        tracing::debug!(
                            ?cause,
                            leased = leases.len(),
                            limit,
                            left_out = full.len(),
                            "looked in the store for due work"
                        );
                        // A full batch: more may be due.
                        look = (leases.len() == limit).then_some(Look::FullBatch);
                        for l in &leases {
                            server.handoff.hold(&l.tenant_id, 1);
                        }
                        queue(&mut fair, leases, None);
                    }
                    Err(e) => {
                        tracing::error!(error = %Chain(&e), "leasing due recipients failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        look = Some(Look::Retry);
                    }
                }
            } else {
                look = None;
            }
        }
        while let Some((tenant, work)) = fair.pop() {
            let n = work.leases.len();
            let (s, recorder, finished_tx) =
                (server.clone(), recorder.clone(), finished_tx.clone());
            tasks.spawn(async move {
                deliver(&s, work.leases, work.body, &recorder).await;
                let _ = finished_tx.send((tenant, n));
            });
        }
        if now_ms() - last_renewal >= lease_ms / 4 {
            last_renewal = now_ms();
            renew_waiting(&server, &mut fair, lease_ms).await;
        }
        if look.is_some() {
            continue;
        }
        tokio::select! {
            Some(h) = next_handed(&mut handed) => {
                queue(&mut fair, h.leases, Some(h.body));
            }
            Some((tenant, n)) = finished.recv() => {
                look = (no_room
                    || left_out.contains(&tenant)
                    || server.handoff.take_left_in_store(&tenant))
                .then_some(Look::Finished);
                fair.finished(&tenant);
                server.handoff.release(&tenant, n);
            }
            () = server.wake.notified() => look = Some(Look::Woken),
            _ = tick.tick() => look = Some(Look::Tick),
        }
    }
    while tasks.join_next().await.is_some() {}
    drop(recorder);
    let _ = recording.await;
}

/// Why the dispatcher looks in the store for due work (logged at debug level with
/// each look).
#[derive(Debug, Clone, Copy)]
enum Look {
    /// Work left by an earlier run.
    Start,
    /// Something made work due (the API stored a message, a retry, a takeover).
    Woken,
    /// The periodic look: deferred work whose time came.
    Tick,
    /// A group of a tenant whose work was left in the store finished.
    Finished,
    /// The last look filled its batch: more may be due.
    FullBatch,
    /// The last look failed.
    Retry,
}

async fn next_handed(
    rx: &mut Option<mpsc::UnboundedReceiver<super::handoff::Handed>>,
) -> Option<super::handoff::Handed> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Queues leased recipients at their tenants, grouped by message and domain.
fn queue(fair: &mut FairQueue<Work>, leases: Vec<Lease>, body: Option<Arc<Vec<u8>>>) {
    for group in group(leases) {
        let tenant = group[0].tenant_id.clone();
        let cost = group.len() as u32;
        let work = Work {
            leases: group,
            body: body.clone(),
        };
        fair.push(&tenant, work, cost);
    }
}

/// Renews the leases of work still waiting whose lease is past half its time, so that
/// work waiting behind its tenant's budget is never taken by another host (or leased
/// again by this one) while it waits. Work whose lease was lost is dropped: its new
/// owner delivers it.
async fn renew_waiting(server: &Server, fair: &mut FairQueue<Work>, lease_ms: i64) {
    let now = now_ms();
    let keys: Vec<LeaseKey> = fair
        .waiting_mut()
        .flat_map(|w| w.leases.iter())
        .filter(|l| l.lease_until_ms - now < lease_ms / 2)
        .map(|l| l.key())
        .collect();
    if keys.is_empty() {
        return;
    }
    match renew(server, &keys, now).await {
        Ok(kept) => {
            let until = now.saturating_add(lease_ms);
            let mut lost: Vec<(String, usize)> = Vec::new();
            for w in fair.waiting_mut() {
                w.leases.retain_mut(|l| {
                    if l.lease_until_ms - now >= lease_ms / 2 {
                        return true;
                    }
                    if kept.contains(&l.key()) {
                        l.lease_until_ms = until;
                        true
                    } else {
                        lost.push((l.tenant_id.clone(), 1));
                        false
                    }
                });
            }
            fair.retain_waiting(|w| !w.leases.is_empty());
            if !lost.is_empty() {
                tracing::warn!(
                    lost = lost.len(),
                    "waiting recipients lost their lease to another owner; it delivers them"
                );
            }
            for (tenant, n) in lost {
                server.handoff.release(&tenant, n);
            }
        }
        Err(e) => {
            tracing::error!(error = %Chain(&e), waiting = keys.len(), "renewing the leases of waiting work failed; retrying");
        }
    }
}

/// Runs `sending` (waiting for a connection to the relay, then the transaction) while
/// renewing `pending`'s leases every quarter lease, so a slow relay never lets them
/// expire and be taken (or leased again by this host) while this host still sends them.
async fn renewing<T>(server: &Server, pending: &[&Lease], sending: impl Future<Output = T>) -> T {
    let lease_ms = server.pipeline.delivery.lease.as_millis() as i64;
    let every = Duration::from_millis((lease_ms / 4).max(1) as u64);
    let keys: Vec<LeaseKey> = pending.iter().map(|l| l.key()).collect();
    tokio::pin!(sending);
    loop {
        tokio::select! {
            done = &mut sending => return done,
            () = tokio::time::sleep(every) => {
                match renew(server, &keys, now_ms()).await {
                    Ok(kept) if kept.len() < keys.len() => tracing::warn!(
                        message = %keys[0].message_id,
                        lost = keys.len() - kept.len(),
                        "leases lost while sending; another owner may send these recipients too"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %Chain(&e), "renewing leases while sending failed; retrying"),
                }
            }
        }
    }
}

/// Renews this host's leases on `keys`; the ones that were still ours (and now are
/// renewed). The others were taken by another owner or are finished.
async fn renew(
    server: &Server,
    keys: &[LeaseKey],
    now: i64,
) -> Result<HashSet<LeaseKey>, crate::store::StoreError> {
    let lease_ms = server.pipeline.delivery.lease.as_millis() as i64;
    let node = &server.node;
    let kept = server
        .store
        .renew_node_leases_each(&node.id, &node.incarnation, keys, now, lease_ms)
        .await?;
    Ok(kept.into_iter().collect())
}

/// Checks, right before an SMTP transaction, that this host still holds `pending`'s
/// leases with at least half their time left, renewing them when not; returns those it
/// may send. A recipient whose lease was lost is left to its new owner.
///
/// The check skips the store only while the node's heartbeat was confirmed recently:
/// a process that was stopped longer than that (and may have been taken for dead, its
/// id joined by a newer process) asks the store, whose answer counts its incarnation.
async fn still_ours<'a>(server: &Server, pending: Vec<&'a Lease>) -> Vec<&'a Lease> {
    let lease_ms = server.pipeline.delivery.lease.as_millis() as i64;
    let now = now_ms();
    if server.node.confirmed_recently()
        && pending
            .iter()
            .all(|l| l.lease_until_ms - now >= lease_ms / 2)
    {
        return pending;
    }
    let keys: Vec<LeaseKey> = pending.iter().map(|l| l.key()).collect();
    match renew(server, &keys, now).await {
        Ok(kept) => {
            let before = pending.len();
            let ours: Vec<&Lease> = pending
                .into_iter()
                .filter(|l| kept.contains(&l.key()))
                .collect();
            if ours.len() < before {
                tracing::warn!(
                    message = %ours.first().map_or("", |l| l.message_id.as_str()),
                    lost = before - ours.len(),
                    "recipients lost their lease before sending; their new owner delivers them"
                );
            }
            ours
        }
        Err(e) => {
            // Unsure whether the leases are still ours: sending could make a second copy.
            tracing::error!(error = %Chain(&e), "cannot renew leases before sending; the recipients are retried when their lease expires");
            Vec::new()
        }
    }
}

/// Recipients of one message in one domain travel together.
fn group(leases: Vec<Lease>) -> Vec<Vec<Lease>> {
    let mut by: BTreeMap<(String, String), Vec<Lease>> = BTreeMap::new();
    for l in leases {
        by.entry((l.message_id.clone(), l.domain.to_ascii_lowercase()))
            .or_default()
            .push(l);
    }
    by.into_values()
        .flat_map(|g| {
            g.chunks(MAX_GROUP)
                .map(<[Lease]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn outcome(
    l: &Lease,
    state: RecipientState,
    event: EventKind,
    relay: Option<&str>,
    reply: Option<String>,
    next_at: Option<i64>,
    detail: serde_json::Value,
) -> Outcome {
    Outcome {
        message_id: l.message_id.clone(),
        recipient_idx: l.recipient_idx,
        new_state: state,
        next_attempt_at_ms: next_at,
        relay: relay.map(str::to_owned),
        reply,
        event,
        detail,
        waiting_for_relay: None,
    }
}

/// `outcomes` marked as waiting for `relay` (see [`Outcome::waiting_for_relay`]).
fn waiting_for(mut outcomes: Vec<Outcome>, relay: &str) -> Vec<Outcome> {
    for o in &mut outcomes {
        o.waiting_for_relay = Some(relay.to_owned());
    }
    outcomes
}

/// The same outcome, without an attempt, for every recipient of a group.
fn all(
    group: &[Lease],
    state: RecipientState,
    event: EventKind,
    next_at: Option<i64>,
    detail: serde_json::Value,
) -> Vec<Outcome> {
    group
        .iter()
        .map(|l| outcome(l, state, event, None, None, next_at, detail.clone()))
        .collect()
}

fn event(l: &Lease, kind: EventKind, relay: Option<&str>, detail: serde_json::Value) -> NewEvent {
    NewEvent {
        message_id: l.message_id.clone(),
        recipient_idx: Some(l.recipient_idx),
        tenant_id: l.tenant_id.clone(),
        kind,
        relay: relay.map(str::to_owned),
        detail,
        at_ms: now_ms(),
    }
}

/// The relays a tenant may use: its own, and platform relays in its pools.
fn allowed_relays(server: &Server, tenant: &Tenant) -> Vec<Arc<RelayClient>> {
    server
        .relays
        .all()
        .into_iter()
        .filter(|r| {
            let s = r.settings();
            !s.draining
                && (s.owner.as_deref() == Some(tenant.id.as_str())
                    || (s.owner.is_none() && s.tags.iter().any(|t| tenant.pools.contains(t))))
        })
        .collect()
}

fn route_input(
    server: &Server,
    first: &Lease,
    group: &[Lease],
    relays: &[Arc<RelayClient>],
) -> RouteInput {
    let now = now_ms();
    RouteInput {
        message: stage::MessageSummary {
            id: first.message_id.clone(),
            tenant: first.tenant_id.clone(),
            sender: first.sender.clone(),
            recipient_domains: vec![first.domain.clone()],
            recipient_count: group.len() as u32,
            size: first.size,
            tags: first.tags.clone(),
            attempt: first.attempts + 1,
            age_secs: ((now - first.created_at_ms).max(0) / 1000) as u64,
        },
        relays: relays
            .iter()
            .map(|r| {
                let s = r.settings();
                stage::Relay {
                    id: s.id.clone(),
                    weight: s.weight,
                    tags: s.tags.clone(),
                    owner: s.owner.clone(),
                    in_flight: r.in_flight(),
                    connection_limit: s.connection_limit,
                    up: r.is_up(),
                    // The tenant's own traffic on the relay; up, in flight and the
                    // connection limit above are the relay's health, shared by all.
                    windows: server.tenant_windows(&first.tenant_id, &s.id),
                }
            })
            .collect(),
        now_ms: now,
    }
}

/// Asks the tenant's router, falling back to the pipeline's on a plugin failure
/// (recorded as a `plugin_error` event) unless the tenant's policy is to fail closed,
/// which defers. `None`: nobody could decide.
async fn route(
    server: &Server,
    tenant: &Tenant,
    group: &[Lease],
    input: RouteInput,
) -> Option<RouteDecision> {
    // The tenant's own uploaded router when one is live, else a default it chose.
    let called = server
        .plugins
        .tenants
        .call_stage(
            &server.store,
            &tenant.id,
            Stage::Route,
            server.plugins.router_for(tenant.route_plugin.as_deref()),
            server.plugins.stage(Stage::Route),
            move |p| p.route(&input),
        )
        .await;
    if !called.failures.is_empty() {
        let events: Vec<NewEvent> = called
            .failures
            .iter()
            .flat_map(|f| {
                group
                    .iter()
                    .map(|l| event(l, EventKind::PluginError, None, f.detail(Stage::Route)))
            })
            .collect();
        if let Err(err) = server.store.append_events(events).await {
            tracing::error!(error = %Chain(&err), "cannot record plugin_error events");
        }
    }
    if let Some(reason) = called.closed {
        return Some(RouteDecision::Defer(stage::Deferral {
            delay_secs: PLUGIN_FAILURE_RETRY_SECS as u32,
            reason,
        }));
    }
    called.result.ok()
}

/// What one delivery leaves to write: its routing events, its outcomes, and whose they
/// are (the group's tenant and recipient domain, for the metrics and the log).
type Written = (Vec<NewEvent>, Vec<Outcome>, Whose);

/// A group's tenant and recipient domain (every lease of a group has the same).
struct Whose {
    tenant: String,
    domain: String,
}

async fn deliver(
    server: &Server,
    group: Vec<Lease>,
    body: Option<Arc<Vec<u8>>>,
    recorder: &mpsc::UnboundedSender<Written>,
) {
    let mut events = Vec::new();
    let first = &group[0];
    let span = tracing::info_span!("deliver", message_id = %first.message_id);
    let outcomes = decide_group(server, &group, body, &mut events)
        .instrument(span)
        .await;
    let whose = Whose {
        tenant: first.tenant_id.clone(),
        domain: first
            .address
            .rsplit_once('@')
            .map_or("", |(_, d)| d)
            .to_owned(),
    };
    if recorder.send((events, outcomes, whose)).is_err() {
        tracing::error!(message = %group[0].message_id, "the recorder is gone; recipients will be retried when their lease expires");
    }
}

/// What is said of outcomes once they are recorded: a counter to add one to per outcome
/// (looked up before the commit, added to only after it), and the log line per final
/// outcome at `info`.
struct Told {
    counters: Vec<crate::metrics::Counter>,
}

impl Told {
    fn new(outcomes: &[Outcome], whose: &[(Whose, usize)]) -> Told {
        let m = crate::metrics::get();
        let mut counters = Vec::with_capacity(outcomes.len());
        let mut i = 0;
        for (w, n) in whose {
            for o in &outcomes[i..i + n] {
                let relay = o.relay.as_deref();
                let family = match o.event {
                    EventKind::Delivered => &m.delivered,
                    EventKind::Deferred => &m.deferred,
                    EventKind::Failed => &m.failed,
                    EventKind::Expired => &m.expired,
                    EventKind::Bounced => {
                        let class = o.detail["reason"].as_str().unwrap_or("unknown");
                        counters.push(
                            m.bounced
                                .get_or_create_owned(&m.bounce(&w.tenant, relay, class)),
                        );
                        continue;
                    }
                    _ => continue,
                };
                counters.push(family.get_or_create_owned(&m.tenant_relay(&w.tenant, relay)));
            }
            i += n;
        }
        Told { counters }
    }

    fn tell(self, outcomes: &[OutcomeLine], whose: &[(Whose, usize)]) {
        for c in self.counters {
            c.inc();
        }
        let mut lines = outcomes.iter();
        for (w, n) in whose {
            for l in lines.by_ref().take(*n).flatten() {
                {
                    tracing::info!(
                        message_id = %l.message,
                        tenant = %w.tenant,
                        domain = %w.domain,
                        relay = l.relay.as_deref().unwrap_or(""),
                        reply = l.reply.as_deref().unwrap_or(""),
                        attempt = l.attempt,
                        latency_ms = l.latency_ms,
                        "{}",
                        l.outcome
                    );
                }
            }
        }
    }
}

/// A final outcome's log line (none for a deferral or a hold), kept only at `info`.
type OutcomeLine = Option<FinalLine>;

struct FinalLine {
    outcome: &'static str,
    message: String,
    relay: Option<String>,
    reply: Option<String>,
    attempt: u64,
    latency_ms: u64,
}

fn final_lines(outcomes: &[Outcome]) -> Vec<OutcomeLine> {
    if !tracing::enabled!(tracing::Level::INFO) {
        return Vec::new();
    }
    outcomes
        .iter()
        .map(|o| {
            let outcome = match o.event {
                EventKind::Delivered => "delivered",
                EventKind::Bounced => "bounced",
                EventKind::Failed => "failed",
                EventKind::Expired => "expired",
                _ => return None,
            };
            Some(FinalLine {
                outcome,
                message: o.message_id.clone(),
                relay: o.relay.clone(),
                reply: o
                    .reply
                    .clone()
                    .or_else(|| o.detail["reason"].as_str().map(str::to_owned)),
                attempt: o.detail["attempt"].as_u64().unwrap_or(0),
                latency_ms: o.detail["latency_ms"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// Writes what deliveries leave behind in batches: one transaction for
/// everything finished meanwhile instead of one per message. Until an
/// outcome is written its recipient stays leased to this node, so a crash
/// in between means a retry after the lease expires, never a loss.
async fn record_loop(server: Arc<Server>, mut rx: mpsc::UnboundedReceiver<Written>) {
    let node = server.node.id.clone();
    while let Some(first) = rx.recv().await {
        let (mut events, mut outcomes, w) = first;
        let mut whose = vec![(w, outcomes.len())];
        while outcomes.len() < 2048 {
            match rx.try_recv() {
                Ok((e, o, w)) => {
                    events.extend(e);
                    whose.push((w, o.len()));
                    outcomes.extend(o);
                }
                Err(_) => break,
            }
        }
        let n = outcomes.len();
        let told = Told::new(&outcomes, &whose);
        let lines = final_lines(&outcomes);
        match server
            .store
            .record_with_events(&node, events, outcomes, now_ms())
            .await
        {
            Ok(_) => told.tell(&lines, &whose),
            // The leases stay ours until they expire; the recipients are retried then.
            Err(e) => {
                tracing::error!(error = %Chain(&e), outcomes = n, "recording outcomes failed; recipients will be retried when their lease expires")
            }
        }
    }
}

/// Why a group of recipients goes no further than a gate before sending: the state and
/// event every recipient gets, when it is due again, and the relay it waits for.
struct Verdict {
    state: RecipientState,
    event: EventKind,
    retry_at: Option<i64>,
    detail: serde_json::Value,
    waiting_for_relay: Option<&'static str>,
}

impl Verdict {
    fn new(state: RecipientState, event: EventKind, detail: serde_json::Value) -> Verdict {
        Verdict {
            state,
            event,
            retry_at: None,
            detail,
            waiting_for_relay: None,
        }
    }

    /// Deferred for `secs` seconds.
    fn deferred(secs: i64, detail: serde_json::Value) -> Verdict {
        Verdict {
            retry_at: Some(now_ms() + secs * 1000),
            ..Verdict::new(RecipientState::Deferred, EventKind::Deferred, detail)
        }
    }

    fn failed(detail: serde_json::Value) -> Verdict {
        Verdict::new(RecipientState::Failed, EventKind::Failed, detail)
    }

    fn held(detail: serde_json::Value) -> Verdict {
        Verdict::new(RecipientState::Held, EventKind::Held, detail)
    }

    /// Woken early when any relay is added or answers again.
    fn waiting_for_any_relay(self) -> Verdict {
        Verdict {
            waiting_for_relay: Some(ANY_RELAY),
            ..self
        }
    }

    fn for_all(self, group: &[Lease]) -> Vec<Outcome> {
        let outcomes = all(group, self.state, self.event, self.retry_at, self.detail);
        match self.waiting_for_relay {
            Some(relay) => waiting_for(outcomes, relay),
            None => outcomes,
        }
    }
}

/// The gates a group passes before any relay is tried, in order: not expired, its tenant
/// still there, a relay it may use, the platform's prepaid check, the tenant's own check
/// of its customer's account, and the route plugin's order of relays. The first gate that
/// stops the group gives its [`Verdict`]; past all of them, the relays and their order.
async fn pass_gates(
    server: &Server,
    group: &[Lease],
) -> Result<(Vec<Arc<RelayClient>>, Vec<String>), Verdict> {
    let first = &group[0];
    not_expired(first)?;
    let tenant = tenant_of(server, first).await?;
    // Suspended since this host took the work (issue 22): not sent. The suspension marked
    // it, so the store keeps this deferral as `held` until the tenant is resumed; were
    // the answer stale (resumed meanwhile), it is only a short deferral.
    if server.tenant_suspended(&tenant.id).await {
        return Err(Verdict::deferred(
            SUSPENDED_RETRY_SECS,
            json!({"reason": "tenant suspended"}),
        ));
    }
    let relays = allowed_relays(server, &tenant);
    if relays.is_empty() {
        // Waiting for any relay: one added (or answering again) makes it due at once.
        return Err(Verdict::deferred(
            NO_RELAY_LEFT_RETRY_SECS,
            json!({"reason": "no relay this tenant may use is configured"}),
        )
        .waiting_for_any_relay());
    }
    // Prepaid tenants: estimate and reserve before the route plugin, or hold.
    match super::billing::authorize(server, &tenant, group).await {
        super::billing::Authorization::Go => {}
        super::billing::Authorization::Hold(reason) => {
            return Err(Verdict::held(json!({"reason": reason, "by": "billing"})));
        }
        super::billing::Authorization::Defer(reason) => {
            return Err(Verdict::deferred(
                PLUGIN_FAILURE_RETRY_SECS,
                json!({"reason": reason, "by": "billing"}),
            ));
        }
    }
    // The tenant's own rule for its prepaid customers (its books, not the platform's).
    match super::account_billing::check_accounts(server, &tenant.id, group).await {
        super::account_billing::AccountCheck::Go => {}
        super::account_billing::AccountCheck::Hold(reason) => {
            return Err(Verdict::held(json!({"reason": reason, "by": "account"})));
        }
        super::account_billing::AccountCheck::Defer(reason) => {
            return Err(Verdict::deferred(
                PLUGIN_FAILURE_RETRY_SECS,
                json!({"reason": reason, "by": "account"}),
            ));
        }
    }
    let order = route_order(server, &tenant, group, &relays).await?;
    Ok((relays, order))
}

/// Older than its message's `max_age_secs`: expired, not tried again.
fn not_expired(first: &Lease) -> Result<(), Verdict> {
    let age_secs = (now_ms() - first.created_at_ms).max(0) / 1000;
    if age_secs > i64::from(first.max_age_secs) {
        return Err(Verdict::new(
            RecipientState::Expired,
            EventKind::Expired,
            json!({"reason": format!("not delivered within {}s", first.max_age_secs)}),
        ));
    }
    Ok(())
}

/// The group's tenant; failed if it was removed, deferred if the store cannot say.
async fn tenant_of(server: &Server, first: &Lease) -> Result<Tenant, Verdict> {
    match server.tenant(&first.tenant_id).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(Verdict::failed(
            json!({"reason": format!("tenant {:?} no longer exists", first.tenant_id)}),
        )),
        Err(e) => Err(Verdict::deferred(
            PLUGIN_FAILURE_RETRY_SECS,
            json!({"reason": format!("store error: {e:#}")}),
        )),
    }
}

/// The relays to try, in the route plugin's order, or what the plugin (or its failure)
/// decided instead.
async fn route_order(
    server: &Server,
    tenant: &Tenant,
    group: &[Lease],
    relays: &[Arc<RelayClient>],
) -> Result<Vec<String>, Verdict> {
    let input = route_input(server, &group[0], group, relays);
    // A deferral while none of its relays is up waits for one to answer again.
    let none_up = input.relays.iter().all(|r| !r.up);
    match route(server, tenant, group, input).await {
        None => Err(Verdict::deferred(
            PLUGIN_FAILURE_RETRY_SECS,
            json!({"reason": "the route plugin and its fallback failed"}),
        )),
        Some(RouteDecision::Defer(d)) => {
            let deferred = Verdict::deferred(
                i64::from(d.delay_secs),
                json!({"reason": d.reason, "by": "route"}),
            );
            Err(if none_up {
                deferred.waiting_for_any_relay()
            } else {
                deferred
            })
        }
        Some(RouteDecision::Reject(reason)) => {
            Err(Verdict::failed(json!({"reason": reason, "by": "route"})))
        }
        Some(RouteDecision::Relays(order)) => Ok(order),
    }
}

async fn decide_group(
    server: &Server,
    group: &[Lease],
    body: Option<Arc<Vec<u8>>>,
    events: &mut Vec<NewEvent>,
) -> Vec<Outcome> {
    let first = &group[0];
    let (relays, order) = match pass_gates(server, group).await {
        Ok(passed) => passed,
        Err(verdict) => return verdict.for_all(group),
    };
    let retry_at = |secs: i64| Some(now_ms() + secs * 1000);

    // A body not handed over is read from the store only once a delivery slot is held:
    // work waiting for a slot holds no message in memory.
    let mut body = body;
    let mut pending: Vec<&Lease> = group.iter().collect();
    let mut outcomes = Vec::with_capacity(group.len());
    // Recipients whose last relay of the route gave no SMTP reply at all.
    let mut unanswered = HashSet::new();
    for (i, relay_id) in order.iter().enumerate() {
        if pending.is_empty() {
            break;
        }
        let Some(client) = relays.iter().find(|r| &r.settings().id == relay_id) else {
            continue;
        };
        // A delivery slot is held for the transaction only, never while a plugin decides.
        let slots = pending
            .len()
            .min(server.pipeline.delivery.max_in_flight as usize) as u32;
        let permits = server
            .in_flight
            .clone()
            .acquire_many_owned(slots)
            .await
            .expect("never closed");
        pending = still_ours(server, pending).await;
        if pending.is_empty() {
            break;
        }
        let body = match &body {
            Some(b) => b.clone(),
            None => match server.store.message_body(&first.message_id).await {
                Ok(b) => body.insert(Arc::new(b)).clone(),
                Err(e) => {
                    let reason = json!({"reason": format!("cannot read the message: {e}")});
                    for l in pending {
                        outcomes.push(outcome(
                            l,
                            RecipientState::Deferred,
                            EventKind::Deferred,
                            None,
                            None,
                            retry_at(PLUGIN_FAILURE_RETRY_SECS),
                            reason.clone(),
                        ));
                    }
                    return outcomes;
                }
            },
        };
        let routed: Vec<NewEvent> = pending
            .iter()
            .map(|l| {
                event(
                    l,
                    EventKind::Routed,
                    Some(relay_id),
                    json!({"attempt": l.attempts + 1}),
                )
            })
            .collect();
        events.extend(routed);
        // VERP: each recipient gets its own return path, so its own transaction. A
        // message from the null sender keeps it: nothing may bounce back to it.
        let sending = async {
            if server.verp.is_some() && !first.sender.is_empty() {
                bounces::send_verp(server, client, &first.sender, &pending, &body).await
            } else {
                let rcpts: Vec<String> = pending.iter().map(|l| l.address.clone()).collect();
                client.send(&first.sender, &rcpts, &body).await
            }
        };
        let replies = renewing(server, &pending, sending).await;
        drop(permits);
        let relays_left = (order.len() - i - 1) as u32;
        let mut still = Vec::new();
        let mut next_relay_events = Vec::new();
        for (l, r) in pending.into_iter().zip(replies) {
            let decision = decide_reply(server, l, relay_id, &r, relays_left, events).await;
            // The bounce stage's reason and hard/soft for a refusal.
            let class = match &r.reply {
                Some(x) => {
                    let (class, failures) =
                        bounces::classify_reply(server, &l.tenant_id, &l.address, x).await;
                    events.extend(failures.iter().map(|f| {
                        event(
                            l,
                            EventKind::PluginError,
                            Some(relay_id),
                            f.detail(Stage::Bounce),
                        )
                    }));
                    class
                }
                None => None,
            };
            let reply_text = r
                .reply
                .as_ref()
                .map(|x| {
                    format!(
                        "{} {}{}",
                        x.code,
                        x.enhanced
                            .as_deref()
                            .map(|e| format!("{e} "))
                            .unwrap_or_default(),
                        x.text
                    )
                })
                .or(r.transport_error.clone());
            let hard = r.reply.as_ref().is_some_and(|x| x.code >= 500);
            // Which attempt of the recipient this was (1 for the first), for its events.
            let attempt = l.attempts + 1;
            let detail = json!({"latency_ms": r.latency_ms, "hard": hard, "reply": reply_text, "attempt": attempt});
            match decision {
                SendDecision::Delivered => outcomes.push(outcome(
                    l,
                    RecipientState::Delivered,
                    EventKind::Delivered,
                    Some(relay_id),
                    reply_text,
                    None,
                    detail,
                )),
                SendDecision::Retry(rt) => {
                    let mut detail = json!({"latency_ms": r.latency_ms, "hard": false, "reply": rt.reason, "attempt": attempt});
                    bounces::annotate(&mut detail, class.as_ref(), false);
                    let mut deferred = outcome(
                        l,
                        RecipientState::Deferred,
                        EventKind::Deferred,
                        Some(relay_id),
                        reply_text,
                        retry_at(i64::from(rt.after_secs)),
                        detail,
                    );
                    // No SMTP reply at all: the relay did not answer; its work is woken
                    // when it answers a probe again.
                    if r.reply.is_none() {
                        deferred.waiting_for_relay = Some(relay_id.clone());
                    }
                    outcomes.push(deferred);
                }
                SendDecision::Fail(reason) => {
                    let kind = if hard {
                        EventKind::Bounced
                    } else {
                        EventKind::Failed
                    };
                    let mut detail = json!({"latency_ms": r.latency_ms, "hard": true, "reason": reason, "attempt": attempt});
                    bounces::annotate(&mut detail, class.as_ref(), true);
                    if let Some(c) = class.as_ref().filter(|c| hard && c.hard) {
                        bounces::suppress_refused(
                            server,
                            l,
                            c,
                            reply_text.as_deref().unwrap_or(""),
                        )
                        .await;
                    }
                    outcomes.push(outcome(
                        l,
                        RecipientState::Failed,
                        kind,
                        Some(relay_id),
                        reply_text,
                        None,
                        detail,
                    ));
                }
                SendDecision::NextRelay(reason) => {
                    let mut detail = json!({"latency_ms": r.latency_ms, "hard": false, "reason": reason, "attempt": attempt});
                    bounces::annotate(&mut detail, class.as_ref(), false);
                    next_relay_events.push(event(l, EventKind::Attempted, Some(relay_id), detail));
                    if r.reply.is_none() {
                        unanswered.insert(l.recipient_idx);
                    } else {
                        unanswered.remove(&l.recipient_idx);
                    }
                    still.push(l);
                }
            }
        }
        events.extend(next_relay_events);
        pending = still;
    }
    for l in pending {
        let mut deferred = outcome(
            l,
            RecipientState::Deferred,
            EventKind::Deferred,
            None,
            None,
            retry_at(NO_RELAY_LEFT_RETRY_SECS),
            json!({"reason": "every relay of the route was tried"}),
        );
        if unanswered.contains(&l.recipient_idx) {
            deferred.waiting_for_relay = Some(ANY_RELAY.to_owned());
        }
        outcomes.push(deferred);
    }
    outcomes
}

/// The send policy's reading of one reply: the tenant's own when it has a live one, else
/// (or after it failed) the pipeline's. If both fail, a conservative reading: 2xx
/// delivered, 5xx failed, anything else retried. Failures become `plugin_error` events.
async fn decide_reply(
    server: &Server,
    l: &Lease,
    relay: &str,
    r: &RelayReply,
    relays_left: u32,
    events: &mut Vec<NewEvent>,
) -> SendDecision {
    let attempt = Attempt {
        message_id: l.message_id.clone(),
        tenant: l.tenant_id.clone(),
        recipient: l.address.clone(),
        relay: relay.to_owned(),
        reply: r.reply.clone(),
        transport_error: r.transport_error.clone(),
        attempt: l.attempts + 1,
        age_secs: ((now_ms() - l.created_at_ms).max(0) / 1000) as u64,
        relays_left,
    };
    let reply = r.reply.clone();
    let pipeline = server.plugins.stage(Stage::Send);
    let called = server
        .plugins
        .tenants
        .call_stage(
            &server.store,
            &l.tenant_id,
            Stage::Send,
            pipeline.clone(),
            pipeline,
            move |p| p.send(&attempt),
        )
        .await;
    events.extend(called.failures.iter().map(|f| {
        event(
            l,
            EventKind::PluginError,
            Some(relay),
            f.detail(Stage::Send),
        )
    }));
    if let Some(reason) = called.closed {
        // Fail closed: a reply that says delivered stays delivered (the mail is out);
        // anything else is retried, never failed, until the tenant's plugin decides.
        return match reply {
            Some(x) if (200..300).contains(&x.code) => SendDecision::Delivered,
            _ => SendDecision::Retry(stage::Retry {
                after_secs: PLUGIN_FAILURE_RETRY_SECS as u32,
                reason,
            }),
        };
    }
    match called.result {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "send plugin failed; reading the reply conservatively");
            match reply {
                Some(x) if (200..300).contains(&x.code) => SendDecision::Delivered,
                Some(x) if x.code >= 500 => SendDecision::Fail(format!("{} {}", x.code, x.text)),
                _ => SendDecision::Retry(stage::Retry {
                    after_secs: 300,
                    reason: "send plugin unavailable".into(),
                }),
            }
        }
    }
}
