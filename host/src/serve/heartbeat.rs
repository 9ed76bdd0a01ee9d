//! This node's heartbeat loop (`nodes.rs` says what a node is): every interval it
//! writes the heartbeat, takes over the leases of nodes that stopped beating, and claims
//! or renews leadership.

use super::clock::now_ms;
use super::state::Server;
use crate::logging::Chain;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Whether the store has a row for this node's id (any incarnation's); `None` when the
/// nodes cannot be read (then the node neither stops nor rejoins: the next beat asks
/// again).
async fn id_row(server: &Server, now_ms: i64) -> Option<bool> {
    match server.store.list_nodes(now_ms).await {
        Ok(nodes) => Some(nodes.iter().any(|n| n.id == server.node.id)),
        Err(_) => None,
    }
}

/// Beats until aborted (after the dispatcher has finished: leases are held until then).
pub async fn heartbeat_loop(server: Arc<Server>) {
    let node = &server.node;
    let mut tick = tokio::time::interval(node.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dead_after_ms = node.dead_after_ms();
    let mut last_beat = Instant::now();
    loop {
        tick.tick().await;
        let now = now_ms();
        match server
            .store
            .node_heartbeat(&node.id, &node.incarnation, now)
            .await
        {
            Ok(true) => {
                last_beat = Instant::now();
                node.confirm();
            }
            Ok(false) => match id_row(&server, now).await {
                // No row at all for this id, not another process's: a database made
                // again, its schema being made while this node beats, before the refresh
                // loop rejoins it. Join again rather than stop.
                Some(false) => {
                    tracing::warn!(node = %node.id, "this node's row is not in the store (a database made again?); joining again");
                    if let Err(e) = node.rejoin(&server.store).await {
                        tracing::warn!(error = %format!("{e:#}"), node = %node.id, "joining again failed; retrying");
                    }
                }
                // The nodes cannot be read: neither stop nor join; the next beat asks again.
                None => {
                    tracing::warn!(node = %node.id, "this node's heartbeat found no row of its own and the nodes cannot be read; retrying");
                }
                Some(true) => {
                    // A newer process joined under this id, taking this one for dead: the
                    // two would share leases. Stop at once, as a crash would: what this
                    // process holds was given back when the newer one joined.
                    tracing::error!(node = %node.id, "another process took over this node id; stopping at once");
                    eprintln!(
                        "sluice: another process took over node id {:?}; stopping",
                        node.id
                    );
                    std::process::exit(70);
                }
            },
            Err(e) => {
                tracing::warn!(error = %Chain(&e), node = %node.id, "writing the heartbeat failed; retrying");
            }
        }
        // Without a recent heartbeat of its own, this node may be the one the others
        // take for dead: it neither leads nor judges them.
        if last_beat.elapsed() >= node.dead_after / 2 {
            node.leader.store(false, Ordering::SeqCst);
            continue;
        }
        match server
            .store
            .take_over_dead_nodes(&node.id, now, dead_after_ms)
            .await
        {
            Ok(taken) if !taken.is_empty() => {
                for (dead, n) in &taken {
                    tracing::warn!(node = %node.id, dead = %dead, leases = n, "a node stopped beating; its leases are taken over");
                }
                server.wake.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "taking over dead nodes' leases failed; retrying")
            }
        }
        match server
            .store
            .claim_leadership(&node.id, now, dead_after_ms)
            .await
        {
            Ok(leads) => {
                if node.leader.swap(leads, Ordering::SeqCst) != leads {
                    tracing::info!(node = %node.id, leader = leads, "leadership changed");
                }
            }
            Err(e) => {
                node.leader.store(false, Ordering::SeqCst);
                tracing::warn!(error = %Chain(&e), "claiming leadership failed; retrying");
            }
        }
    }
}
