//! Accepted recipients handed straight from the API to the dispatcher.
//!
//! When the dispatcher has room, a message is accepted with its recipients already
//! leased to this host (in the same commit as the message), and their leases travel to
//! the dispatcher in memory with the body: no `UPDATE … RETURNING` to lease them back
//! out of the store and no read of the body that was just written. The store stays the
//! truth: if this host dies before delivering, the leases expire and any host takes the
//! recipients again, as with leases taken from the store. When the dispatcher is busy
//! the API accepts as before (`Queued`) and the dispatcher leases from the store.

use crate::store::Lease;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// One accepted message's leased recipients and its body, on their way to the dispatcher.
pub struct Handed {
    pub leases: Vec<Lease>,
    pub body: Arc<Vec<u8>>,
    reserved: usize,
}

impl Handed {
    /// The room it holds until the dispatcher calls [`Handoff::taken`].
    pub fn reserved(&self) -> usize {
        self.reserved
    }
}

/// The queue between the API and the dispatcher, with a count of the recipients it holds
/// or that requests have reserved room for.
pub struct Handoff {
    tx: mpsc::UnboundedSender<Handed>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Handed>>>,
    queued: AtomicUsize,
}

impl Default for Handoff {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Handoff {
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
        }
    }
}

impl Handoff {
    /// Room for `n` recipients if the dispatcher could start on them at once: `free`
    /// delivery slots are free and the queue's recipients fit in them with these.
    pub fn reserve(&self, n: usize, free: usize) -> Option<Reservation<'_>> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= free).then_some(q + n)
            })
            .ok()
            .map(|_| Reservation { handoff: self, n })
    }

    /// The dispatcher's end of the queue; only the first caller gets it.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Handed>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The dispatcher has started on a handed-over message that held `reserved`
    /// recipients' room ([`Handed::reserved`]).
    pub fn taken(&self, reserved: usize) {
        self.queued.fetch_sub(reserved, Ordering::AcqRel);
    }
}

/// Room reserved for one message's recipients; given back if the message is not handed
/// over (a store error, a duplicate).
pub struct Reservation<'a> {
    handoff: &'a Handoff,
    n: usize,
}

impl Reservation<'_> {
    /// Hands the leases over; with none (a duplicate), only gives the room back.
    pub fn send(mut self, leases: Vec<Lease>, body: Arc<Vec<u8>>) {
        if leases.is_empty() {
            return;
        }
        let reserved = std::mem::take(&mut self.n);
        if let Err(mpsc::error::SendError(h)) = self.handoff.tx.send(Handed {
            leases,
            body,
            reserved,
        }) {
            // The dispatcher is gone (shutting down): the leases are given back with the
            // others, or expire.
            self.handoff.taken(h.reserved);
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.handoff.queued.fetch_sub(self.n, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_reserved_up_to_the_free_slots_and_given_back() {
        let h = Handoff::default();
        let a = h.reserve(3, 4).expect("3 of 4 free");
        assert!(h.reserve(2, 4).is_none(), "3 reserved + 2 > 4");
        let b = h.reserve(1, 4).expect("3 + 1 fit");
        drop(a);
        assert!(h.reserve(3, 4).is_some(), "a's room came back");
        // A duplicate hands nothing over and gives its room back too.
        b.send(Vec::new(), Arc::new(Vec::new()));
        assert_eq!(h.queued.load(Ordering::Acquire), 0);
    }

    #[test]
    fn handed_leases_count_until_the_dispatcher_takes_them() {
        let h = Handoff::default();
        let mut rx = h.take_receiver().expect("first taker");
        assert!(h.take_receiver().is_none());
        let lease = Lease {
            message_id: "m".into(),
            tenant_id: "t".into(),
            recipient_idx: 0,
            address: "a@example.com".into(),
            domain: "example.com".into(),
            attempts: 0,
            created_at_ms: 0,
            max_age_secs: 60,
            sender: String::new(),
            size: 1,
            tags: Vec::new(),
            lease_until_ms: 1,
        };
        h.reserve(1, 1)
            .expect("room")
            .send(vec![lease], Arc::new(b"x".to_vec()));
        assert!(h.reserve(1, 1).is_none(), "the handed lease holds its room");
        let got = rx.try_recv().expect("handed over");
        h.taken(got.reserved());
        assert!(h.reserve(1, 1).is_some());
    }
}
