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
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// One accepted message's leased recipients and its body, on their way to the dispatcher.
pub struct Handed {
    pub leases: Vec<Lease>,
    pub body: Arc<Vec<u8>>,
}

/// Recipients this host holds in memory (handed over, waiting at the dispatcher or being
/// delivered), in all and per tenant. Each tenant has its own cap, so one that floods
/// (or whose plugin is slow) cannot take the room the others need, and the total has a
/// cap so memory stays bounded. What does not fit stays queued in the store.
#[derive(Default)]
struct Holding {
    total: usize,
    by_tenant: HashMap<String, usize>,
    /// Tenants whose accepted work went to the store because they were at their cap:
    /// the dispatcher looks for it when one of their groups finishes.
    left_in_store: HashSet<String>,
}

/// Why [`Handoff::reserve`] found no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// The tenant holds its cap: its work waits in the store until its own groups
    /// finish, and nothing else lets it in sooner (no need to wake the dispatcher).
    Tenant,
    /// The host holds its cap in all: any tenant's finished group makes room.
    Host,
}

/// The queue between the API and the dispatcher, and the count of the recipients this
/// host holds in memory.
pub struct Handoff {
    tx: mpsc::UnboundedSender<Handed>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Handed>>>,
    holding: Mutex<Holding>,
    max_held: usize,
    tenant_max_held: usize,
}

impl Handoff {
    /// A handoff holding at most `max_held` recipients, `tenant_max_held` per tenant.
    pub fn new(max_held: usize, tenant_max_held: usize) -> Handoff {
        let (tx, rx) = mpsc::unbounded_channel();
        Handoff {
            tx,
            rx: Mutex::new(Some(rx)),
            holding: Mutex::new(Holding::default()),
            max_held: max_held.max(1),
            tenant_max_held: tenant_max_held.max(1),
        }
    }

    fn holding(&self) -> std::sync::MutexGuard<'_, Holding> {
        self.holding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room for `n` of `tenant`'s recipients, if both the tenant and the host have it.
    /// Without, the caller stores the work as queued; a tenant past its own cap is
    /// remembered, so the dispatcher looks for that work once the tenant has room
    /// ([`Handoff::take_left_in_store`]).
    pub fn reserve(&self, tenant: &str, n: usize) -> Result<Reservation<'_>, NoRoom> {
        let mut h = self.holding();
        let mine = h.by_tenant.get(tenant).copied().unwrap_or(0);
        if mine + n > self.tenant_max_held {
            if !h.left_in_store.contains(tenant) {
                h.left_in_store.insert(tenant.to_owned());
            }
            return Err(NoRoom::Tenant);
        }
        if h.total + n > self.max_held {
            return Err(NoRoom::Host);
        }
        h.total += n;
        *h.by_tenant.entry(tenant.to_owned()).or_default() += n;
        Ok(Reservation {
            handoff: self,
            tenant: tenant.to_owned(),
            n,
        })
    }

    /// Whether work of `tenant`'s went to the store while it was at its cap since the
    /// last call (and forgets it): the dispatcher, finishing one of the tenant's groups,
    /// then looks at the store for it.
    pub fn take_left_in_store(&self, tenant: &str) -> bool {
        self.holding().left_in_store.remove(tenant)
    }

    /// Counts `n` of `tenant`'s recipients leased from the store as held, room or not
    /// (the lease was sized by [`Handoff::lease_room`]).
    pub fn hold(&self, tenant: &str, n: usize) {
        let mut h = self.holding();
        h.total += n;
        *h.by_tenant.entry(tenant.to_owned()).or_default() += n;
    }

    /// `n` of `tenant`'s held recipients are done with (recorded, or given up).
    pub fn release(&self, tenant: &str, n: usize) {
        let mut h = self.holding();
        h.total = h.total.saturating_sub(n);
        if let Some(mine) = h.by_tenant.get_mut(tenant) {
            *mine = mine.saturating_sub(n);
            if *mine == 0 {
                h.by_tenant.remove(tenant);
            }
        }
    }

    /// Recipients this host holds in memory now (for `GET /metrics`).
    pub fn held(&self) -> usize {
        self.holding().total
    }

    /// How many recipients may be leased from the store now, and the tenants that are at
    /// their cap (their due work is left in the store). Which tenants the leased rows
    /// belong to is known only afterwards, so the room is what the busiest tenant not at
    /// its cap still has: no tenant goes over its cap, and nothing is leased only to
    /// wait in memory (and be given back at shutdown).
    pub fn lease_room(&self) -> (usize, Vec<String>) {
        let h = self.holding();
        let cap = self.tenant_max_held;
        let busiest = h
            .by_tenant
            .values()
            .copied()
            .filter(|n| *n < cap)
            .max()
            .unwrap_or(0);
        let room = self.max_held.saturating_sub(h.total).min(cap - busiest);
        let full = h
            .by_tenant
            .iter()
            .filter(|(_, n)| **n >= cap)
            .map(|(t, _)| t.clone())
            .collect();
        (room, full)
    }

    /// The dispatcher's end of the queue; only the first caller gets it.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Handed>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Room reserved for one message's recipients; given back if the message is not handed
/// over (a store error, a duplicate). Once handed over, the room stays held until the
/// dispatcher releases it.
pub struct Reservation<'a> {
    handoff: &'a Handoff,
    tenant: String,
    n: usize,
}

impl Reservation<'_> {
    /// Hands the leases over; with none (a duplicate), only gives the room back. Room
    /// reserved for more recipients than were leased is given back at once.
    pub fn send(mut self, leases: Vec<Lease>, body: Arc<Vec<u8>>) {
        if leases.is_empty() {
            return;
        }
        let extra = self.n.saturating_sub(leases.len());
        self.handoff.release(&self.tenant, extra);
        let held = leases.len().min(self.n);
        self.n = 0;
        if let Err(mpsc::error::SendError(h)) = self.handoff.tx.send(Handed { leases, body }) {
            // The dispatcher is gone (shutting down): the leases are given back with the
            // others, or expire.
            self.handoff.release(&self.tenant, held.min(h.leases.len()));
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            self.handoff.release(&self.tenant, self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(tenant: &str) -> Lease {
        Lease {
            message_id: "m".into(),
            tenant_id: tenant.into(),
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
        }
    }

    #[test]
    fn room_is_reserved_per_tenant_and_in_all_and_given_back() {
        let h = Handoff::new(6, 4);
        let a = h.reserve("a", 3).expect("3 of a's 4");
        assert_eq!(
            h.reserve("a", 2).err(),
            Some(NoRoom::Tenant),
            "3 + 2 > a's 4"
        );
        let b = h.reserve("b", 3).expect("b has its own room");
        assert_eq!(
            h.reserve("c", 1).err(),
            Some(NoRoom::Host),
            "the host holds 6 of 6"
        );
        drop(a);
        assert!(h.reserve("a", 3).is_ok(), "a's room came back");
        // A duplicate hands nothing over and gives its room back too.
        b.send(Vec::new(), Arc::new(Vec::new()));
        assert_eq!(h.holding().total, 0);
        assert!(h.holding().by_tenant.is_empty());
    }

    #[test]
    fn handed_leases_stay_held_until_released() {
        let h = Handoff::new(2, 2);
        let mut rx = h.take_receiver().expect("first taker");
        assert!(h.take_receiver().is_none());
        h.reserve("t", 2)
            .expect("room")
            .send(vec![lease("t")], Arc::new(b"x".to_vec()));
        // One of the two reserved was leased: the other's room is back at once.
        assert!(h.reserve("t", 1).is_ok());
        let got = rx.try_recv().expect("handed over");
        assert_eq!(got.leases.len(), 1);
        let _r = h.reserve("t", 1).expect("room for one more");
        assert!(
            h.reserve("t", 1).is_err(),
            "handed and reserved hold the room"
        );
        h.release("t", 1);
        assert!(h.reserve("t", 1).is_ok());
    }

    #[test]
    fn a_tenant_refused_at_its_cap_is_remembered_until_taken() {
        let h = Handoff::new(4, 2);
        let _a = h.reserve("a", 2).expect("a's 2");
        let _b = h.reserve("b", 2).expect("b's 2");
        assert_eq!(h.reserve("c", 1).err(), Some(NoRoom::Host));
        assert!(!h.take_left_in_store("c"), "c has room of its own");
        assert_eq!(h.reserve("a", 1).err(), Some(NoRoom::Tenant));
        assert_eq!(h.reserve("a", 1).err(), Some(NoRoom::Tenant));
        assert!(h.take_left_in_store("a"));
        assert!(!h.take_left_in_store("a"), "taken once");
        assert!(!h.take_left_in_store("b"));
    }

    #[test]
    fn lease_room_leaves_full_tenants_out() {
        let h = Handoff::new(10, 4);
        h.hold("busy", 4);
        h.hold("quiet", 1);
        let (room, full) = h.lease_room();
        assert_eq!(room, 3, "what quiet, the busiest not at its cap, has left");
        assert_eq!(full, vec!["busy".to_string()]);
        h.release("quiet", 1);
        assert_eq!(
            h.lease_room().0,
            4,
            "a whole cap when no one else holds any"
        );
        h.hold("other", 4);
        h.hold("more", 1);
        assert_eq!(h.lease_room().0, 1, "the host's room: 10 - 9");
    }
}
