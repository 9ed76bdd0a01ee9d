//! The event log's work on a node: the sequencer loop that gives committed events
//! their per-tenant cursors (`store/event_log.rs` says why after the commit), the
//! wake-ups of this node's event streams (`event_hub.rs`), and pruning by age.
//!
//! Every node runs the loop. On PostgreSQL one sequencer round runs at a time in the
//! whole cluster (the others skip their turn), and every node learns of new cursors by
//! reading the tenants' last cursors each `[events] poll_ms`, so a stream on any node
//! sees events written on any node. A stream holds at most one page of events in
//! memory; a tenant holds at most `[events] max_streams_per_tenant` streams on a node.

use super::state::{Server, now_ms};
use crate::logging::Chain;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events a sequencer round gives cursors to at most.
const ROUND: u32 = 1000;
/// How often the leader prunes events past their retention.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The node's event-log loop: sequencer rounds, stream wake-ups, and (on the leader)
/// pruning; runs until the task is aborted.
pub async fn run(server: Arc<Server>) {
    let config = server.pipeline.events.clone();
    let mut last_prune: Option<Instant> = None;
    loop {
        // Rounds until one leaves nothing behind (or another node's round runs).
        loop {
            match server.store.sequence_events(ROUND).await {
                Ok(s) if s.events as u64 == u64::from(ROUND) => {
                    server.events.note_sequenced();
                    continue;
                }
                Ok(s) => {
                    if s.events > 0 {
                        // The webhook loop goes on at once, not at its next poll.
                        server.events.note_sequenced();
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "event sequencer round failed; retrying");
                    break;
                }
            }
        }
        if server.events.has_streams() {
            match server.store.last_event_cursors().await {
                Ok(last) => server.events.publish(&last),
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "cannot read tenants' last event cursors")
                }
            }
        }
        if server.node.is_leader() && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            let retention_ms = i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX);
            match server
                .store
                .prune_events(now_ms().saturating_sub(retention_ms), 1000)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned events past their retention"),
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "pruning old events failed; retrying later")
                }
            }
        }
        tokio::time::sleep(config.poll).await;
    }
}
