//! This node's event streams: per tenant, a watch of its last cursor that its streams
//! wait on, the count of its open streams (at most `[events] max_streams_per_tenant`),
//! and the signal that ends every stream when the server stops. Plain data over tokio's
//! `watch`: it knows nothing of the store or HTTP (`event_log.rs` feeds it,
//! `events_api.rs` reads it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The streams of this node and what wakes them.
pub struct EventHub {
    tenants: Mutex<HashMap<String, Slot>>,
    max_streams_per_tenant: u32,
    /// Becomes true when the server stops: streams end, so a graceful shutdown is not
    /// held up by clients that never hang up.
    closing: watch::Sender<bool>,
}

struct Slot {
    /// The tenant's last cursor this node knows of.
    last: watch::Sender<i64>,
    streams: u32,
}

/// A tenant past its streams on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyStreams {
    pub limit: u32,
}

/// One open stream: wakes when its tenant's last cursor moves; counted until dropped.
pub struct Subscription {
    hub: Arc<EventHub>,
    tenant: String,
    pub last: watch::Receiver<i64>,
    pub closing: watch::Receiver<bool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut tenants = self.hub.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = tenants.get_mut(&self.tenant) {
            slot.streams = slot.streams.saturating_sub(1);
            if slot.streams == 0 {
                tenants.remove(&self.tenant);
            }
        }
    }
}

impl EventHub {
    pub fn new(max_streams_per_tenant: u32) -> Arc<EventHub> {
        Arc::new(EventHub {
            tenants: Mutex::new(HashMap::new()),
            max_streams_per_tenant,
            closing: watch::channel(false).0,
        })
    }

    /// Opens a stream of `tenant`'s, unless it holds its limit already.
    pub fn subscribe(self: &Arc<Self>, tenant: &str) -> Result<Subscription, TooManyStreams> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let slot = tenants.entry(tenant.to_owned()).or_insert_with(|| Slot {
            last: watch::channel(0).0,
            streams: 0,
        });
        if slot.streams >= self.max_streams_per_tenant {
            return Err(TooManyStreams {
                limit: self.max_streams_per_tenant,
            });
        }
        slot.streams += 1;
        Ok(Subscription {
            hub: Arc::clone(self),
            tenant: tenant.to_owned(),
            last: slot.last.subscribe(),
            closing: self.closing.subscribe(),
        })
    }

    /// Whether any stream is open on this node.
    pub fn has_streams(&self) -> bool {
        !self
            .tenants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Wakes the streams of tenants whose last cursor moved.
    pub fn publish(&self, last: &HashMap<String, i64>) {
        let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        for (tenant, slot) in tenants.iter() {
            if let Some(&n) = last.get(tenant) {
                slot.last.send_if_modified(|old| {
                    let moved = *old != n;
                    *old = n;
                    moved
                });
            }
        }
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}
