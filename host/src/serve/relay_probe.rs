//! Relays come back fast: a relay whose last try got no SMTP reply is probed (connect and
//! EHLO, as its transport would) every `relay_probe_secs`. When it answers, it is marked up
//! at once and the deferred work that waits for it — recipients whose last try it did not
//! answer, and those deferred because no relay they may use was up — is made due, so the
//! dispatcher's next look at the store (within a quarter second) sends it. Without this,
//! such work sat out its retry delay (a minute or more) after the relay was back.
//!
//! Every node probes the relays it uses; waking is idempotent, so several nodes waking the
//! same work do no harm.

use super::state::{Server, now_ms};
use crate::logging::Chain;
use std::sync::Arc;

/// Probes the relays that stopped answering, until shutdown.
pub async fn run(server: Arc<Server>) {
    let mut tick = tokio::time::interval(server.pipeline.delivery.relay_probe);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !server.is_shutting_down() {
        tick.tick().await;
        let suspects: Vec<_> = server
            .relays
            .all()
            .into_iter()
            .filter(|r| r.unanswered())
            .collect();
        // Each probe is bounded by its relay's timeout; they run side by side so one
        // silent relay does not delay finding another one back.
        let mut probes = tokio::task::JoinSet::new();
        for relay in suspects {
            probes.spawn(async move {
                let answer = relay.probe().await;
                (relay.settings().id.clone(), answer)
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((relay, answer)) = done else { continue };
            match answer {
                Ok(()) => match server.store.wake_waiting_for_relay(&relay, now_ms()).await {
                    Ok(woken) => tracing::info!(
                        relay = %relay,
                        woken,
                        "relay answers again; the work waiting for it is due now"
                    ),
                    Err(e) => tracing::warn!(
                        relay = %relay,
                        error = %Chain(&e),
                        "relay answers again, but waking its deferred work failed; it keeps its retry times"
                    ),
                },
                Err(e) => {
                    tracing::debug!(relay = %relay, error = %e, "relay still does not answer")
                }
            }
        }
    }
}
