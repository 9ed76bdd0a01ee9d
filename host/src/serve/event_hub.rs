//! This node's event streams: per tenant, a watch of its last cursor that its streams
//! wait on, the count of its open streams (at most `[events] max_streams_per_tenant`,
//! and `max_streams` for all tenants together), the last page of its events read for
//! its streams (shared, so that its streams read the store once between them, not once
//! each), the signal that ends every stream when the server stops, and the signal that
//! this node's sequencer gave events their cursors (which wakes the webhook loop).
//! Plain data over tokio's `watch`: it knows nothing of the store or HTTP
//! (`event_log.rs` feeds it, `events_api.rs` and `webhooks.rs` read it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// The streams of this node and what wakes them.
pub struct EventHub {
    inner: Mutex<Inner>,
    max_streams_per_tenant: u32,
    max_streams: u32,
    /// Becomes true when the server stops: streams end, so a graceful shutdown is not
    /// held up by clients that never hang up.
    closing: watch::Sender<bool>,
    /// Counts this node's sequencer rounds that gave events cursors.
    sequenced: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<String, Slot>,
    /// Streams open on this node, all tenants together.
    total: u32,
}

struct Slot {
    /// The tenant's last cursor this node knows of.
    last: watch::Sender<i64>,
    streams: u32,
    page: SharedSlot,
}

/// The last page read for a tenant's streams; locked while one of them reads the next
/// from the store, so the others wait for it instead of reading it too.
pub type SharedSlot = Arc<tokio::sync::Mutex<Option<SharedPage>>>;

/// A tenant's events after `after`, in cursor order with no gap (read without a type
/// filter), each rendered once for every stream that sends it.
pub struct SharedPage {
    pub after: i64,
    pub events: Arc<[Rendered]>,
}

/// One event as a stream sends it.
pub struct Rendered {
    pub cursor: i64,
    pub kind: &'static str,
    /// Its JSON.
    pub data: String,
}

impl SharedPage {
    /// Whether it holds the events right after `cursor` (and at least one).
    pub fn covers(&self, cursor: i64) -> bool {
        self.after <= cursor && self.events.last().is_some_and(|e| e.cursor > cursor)
    }
}

/// Past a bound on this node's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooManyStreams {
    /// The tenant holds `max_streams_per_tenant`.
    Tenant(u32),
    /// The node holds `max_streams`.
    Node(u32),
}

/// One open stream: wakes when its tenant's last cursor moves; counted until dropped.
pub struct Subscription {
    hub: Arc<EventHub>,
    tenant: String,
    pub last: watch::Receiver<i64>,
    pub closing: watch::Receiver<bool>,
    pub page: SharedSlot,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.hub.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.total = inner.total.saturating_sub(1);
        if let Some(slot) = inner.tenants.get_mut(&self.tenant) {
            slot.streams = slot.streams.saturating_sub(1);
            if slot.streams == 0 {
                inner.tenants.remove(&self.tenant);
            }
        }
    }
}

impl EventHub {
    pub fn new(max_streams_per_tenant: u32, max_streams: u32) -> Arc<EventHub> {
        Arc::new(EventHub {
            inner: Mutex::new(Inner::default()),
            max_streams_per_tenant,
            max_streams,
            closing: watch::channel(false).0,
            sequenced: watch::channel(0).0,
        })
    }

    /// Opens a stream of `tenant`'s, unless it, or this node, holds its limit already.
    pub fn subscribe(self: &Arc<Self>, tenant: &str) -> Result<Subscription, TooManyStreams> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.total >= self.max_streams {
            return Err(TooManyStreams::Node(self.max_streams));
        }
        let slot = inner
            .tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| Slot {
                last: watch::channel(0).0,
                streams: 0,
                page: SharedSlot::default(),
            });
        if slot.streams >= self.max_streams_per_tenant {
            let full = slot.streams == 0;
            if full {
                inner.tenants.remove(tenant);
            }
            return Err(TooManyStreams::Tenant(self.max_streams_per_tenant));
        }
        slot.streams += 1;
        let sub = Subscription {
            hub: Arc::clone(self),
            tenant: tenant.to_owned(),
            last: slot.last.subscribe(),
            closing: self.closing.subscribe(),
            page: slot.page.clone(),
        };
        inner.total += 1;
        Ok(sub)
    }

    /// Whether any stream is open on this node.
    pub fn has_streams(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total > 0
    }

    /// Wakes the streams of tenants whose last cursor moved.
    pub fn publish(&self, last: &HashMap<String, i64>) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (tenant, slot) in inner.tenants.iter() {
            if let Some(&n) = last.get(tenant) {
                slot.last.send_if_modified(|old| {
                    let moved = *old != n;
                    *old = n;
                    moved
                });
            }
        }
    }

    /// This node's sequencer gave events their cursors.
    pub fn note_sequenced(&self) {
        self.sequenced.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever this node's sequencer gives events their cursors.
    pub fn sequenced(&self) -> watch::Receiver<u64> {
        self.sequenced.subscribe()
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_tenant_and_per_node() {
        let hub = EventHub::new(2, 3);
        let a1 = hub.subscribe("a").unwrap();
        let _a2 = hub.subscribe("a").unwrap();
        assert_eq!(hub.subscribe("a").err(), Some(TooManyStreams::Tenant(2)));
        let _b1 = hub.subscribe("b").unwrap();
        assert_eq!(hub.subscribe("c").err(), Some(TooManyStreams::Node(3)));
        drop(a1);
        let _c1 = hub.subscribe("c").unwrap();
        assert!(hub.has_streams());
    }
}
