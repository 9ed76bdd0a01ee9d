//! Fair sharing of delivery between tenants.
//!
//! Work waits here, one queue per tenant, until it may start. It leaves by deficit
//! round robin (Shreedhar and Varghese, 1995): each turn a tenant is granted its
//! quantum of recipients (the configured quantum times its weight) and starts groups
//! while that lasts, then the next tenant with work has its turn. A tenant never has
//! more groups in progress than its own budget, so a tenant whose plugin is slow fills
//! only its own budget, and everyone else's work keeps starting.
//!
//! The quantum is at least the largest group, so a tenant whose turn it is and whose
//! budget has room always starts something: a call to [`FairQueue::pop`] looks at each
//! tenant at most twice.
//!
//! This is plain data with no I/O or clock; the dispatcher owns one and tells it when
//! work finishes.

use std::collections::{HashMap, VecDeque};

/// How delivery is shared between tenants (`[delivery.fairness]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fairness {
    /// Recipients a tenant of weight 1 may start per turn; at least the largest group.
    pub quantum: u32,
    /// Groups (one message's recipients in one domain) one tenant may have in progress:
    /// routing, waiting for a delivery slot or sending.
    pub tenant_max_groups: usize,
    /// Weights by tenant id; a tenant not listed weighs 1.
    pub weights: HashMap<String, u32>,
}

impl Fairness {
    fn weight(&self, tenant: &str) -> u64 {
        u64::from(self.weights.get(tenant).copied().unwrap_or(1).max(1))
    }
}

/// One tenant's waiting work and what it has in progress.
struct TenantQueue<W> {
    waiting: VecDeque<(W, u32)>,
    in_progress: usize,
    deficit: u64,
    /// Whether it is this tenant's turn (its quantum was granted and not used up).
    in_turn: bool,
    /// Whether the tenant is in the round-robin ring.
    listed: bool,
}

impl<W> Default for TenantQueue<W> {
    fn default() -> Self {
        TenantQueue {
            waiting: VecDeque::new(),
            in_progress: 0,
            deficit: 0,
            in_turn: false,
            listed: false,
        }
    }
}

/// Work waiting to start, per tenant, taken out fairly.
pub struct FairQueue<W> {
    config: Fairness,
    tenants: HashMap<String, TenantQueue<W>>,
    /// Tenants with waiting work, in turn order; the front one is having its turn.
    ring: VecDeque<String>,
}

impl<W> FairQueue<W> {
    pub fn new(mut config: Fairness, largest_cost: u32) -> FairQueue<W> {
        config.quantum = config.quantum.max(largest_cost).max(1);
        config.tenant_max_groups = config.tenant_max_groups.max(1);
        FairQueue {
            config,
            tenants: HashMap::new(),
            ring: VecDeque::new(),
        }
    }

    /// Queues `work` for `tenant`; `cost` is its number of recipients.
    pub fn push(&mut self, tenant: &str, work: W, cost: u32) {
        let t = self.tenants.entry(tenant.to_owned()).or_default();
        t.waiting.push_back((work, cost.max(1)));
        if !t.listed {
            t.listed = true;
            self.ring.push_back(tenant.to_owned());
        }
    }

    /// The next work that may start, with its tenant, counted as in progress until
    /// [`FairQueue::finished`] is called for that tenant. `None`: nothing waits, or
    /// every tenant with waiting work is at its budget.
    pub fn pop(&mut self) -> Option<(String, W)> {
        let max_groups = self.config.tenant_max_groups;
        // Each listed tenant is looked at most twice: once to be granted its quantum
        // and once more if its turn had to be passed on.
        for _ in 0..self.ring.len().saturating_mul(2).saturating_add(1) {
            let id = self.ring.front()?.clone();
            let quantum = u64::from(self.config.quantum) * self.config.weight(&id);
            let t = self.tenants.get_mut(&id).expect("listed tenants exist");
            let Some(&(_, cost)) = t.waiting.front() else {
                self.unlist_front();
                continue;
            };
            if t.in_progress >= max_groups {
                // At its budget: the turn passes on; what it had left is kept, up to
                // one quantum, so it does not save up turns while blocked.
                t.in_turn = false;
                t.deficit = t.deficit.min(quantum);
                self.ring.rotate_left(1);
                continue;
            }
            if !t.in_turn {
                t.in_turn = true;
                t.deficit = t.deficit.min(quantum) + quantum;
            }
            if t.deficit >= u64::from(cost) {
                t.deficit -= u64::from(cost);
                t.in_progress += 1;
                let (work, _) = t.waiting.pop_front().expect("looked at above");
                if t.waiting.is_empty() {
                    self.unlist_front();
                }
                return Some((id, work));
            }
            t.in_turn = false;
            self.ring.rotate_left(1);
        }
        None
    }

    /// Takes the front tenant off the ring: it has nothing waiting.
    fn unlist_front(&mut self) {
        if let Some(id) = self.ring.pop_front()
            && let Some(t) = self.tenants.get_mut(&id)
        {
            t.listed = false;
            t.in_turn = false;
            t.deficit = 0;
            if t.in_progress == 0 {
                self.tenants.remove(&id);
            }
        }
    }

    /// One of `tenant`'s groups finished.
    pub fn finished(&mut self, tenant: &str) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.in_progress = t.in_progress.saturating_sub(1);
            if t.in_progress == 0 && !t.listed {
                self.tenants.remove(tenant);
            }
        }
    }

    /// Recipients waiting (not yet started), over all tenants.
    #[cfg(test)]
    fn waiting_units(&self) -> usize {
        self.tenants
            .values()
            .flat_map(|t| t.waiting.iter().map(|(_, cost)| *cost as usize))
            .sum()
    }

    /// Every waiting item, to look at (lease renewal).
    pub fn waiting_mut(&mut self) -> impl Iterator<Item = &mut W> {
        self.tenants
            .values_mut()
            .flat_map(|t| t.waiting.iter_mut().map(|(w, _)| w))
    }

    /// Removes waiting items `keep` says no to (their leases were lost).
    pub fn retain_waiting(&mut self, mut keep: impl FnMut(&W) -> bool) {
        for t in self.tenants.values_mut() {
            t.waiting.retain(|(w, _)| keep(w));
        }
        // Emptied tenants leave the ring when their turn comes (`pop` unlists them).
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fairness(quantum: u32, max_groups: usize) -> Fairness {
        Fairness {
            quantum,
            tenant_max_groups: max_groups,
            weights: HashMap::new(),
        }
    }

    fn drain(q: &mut FairQueue<u32>) -> Vec<String> {
        let mut order = Vec::new();
        while let Some((t, _)) = q.pop() {
            q.finished(&t);
            order.push(t);
        }
        order
    }

    #[test]
    fn a_flooding_tenant_does_not_push_a_quiet_one_back() {
        let mut q = FairQueue::new(fairness(1, 100), 1);
        for i in 0..1000 {
            q.push("flood", i, 1);
        }
        q.push("quiet", 0, 1);
        let order = drain(&mut q);
        let pos = order.iter().position(|t| t == "quiet").unwrap();
        assert!(pos <= 1, "the quiet tenant started at {pos}");
        assert_eq!(order.len(), 1001);
        assert_eq!(q.waiting_units(), 0);
    }

    #[test]
    fn turns_are_shared_by_recipients_not_by_groups() {
        // "big" sends groups of 10 recipients, "small" groups of 1; the quantum is 10,
        // so each turn is one big group or ten small ones.
        let mut q = FairQueue::new(fairness(10, 100), 10);
        for i in 0..5 {
            q.push("big", i, 10);
        }
        for i in 0..50 {
            q.push("small", i, 1);
        }
        let order = drain(&mut q);
        let first_big_turns: Vec<&str> = order.iter().take(22).map(String::as_str).collect();
        let bigs = first_big_turns.iter().filter(|t| **t == "big").count();
        assert_eq!(bigs, 2, "two turns each: {first_big_turns:?}");
    }

    #[test]
    fn weights_give_larger_turns() {
        let mut config = fairness(1, 100);
        config.weights.insert("gold".into(), 3);
        let mut q = FairQueue::new(config, 1);
        for i in 0..30 {
            q.push("gold", i, 1);
            q.push("plain", i, 1);
        }
        let order = drain(&mut q);
        let gold_in_first_20 = order[..20].iter().filter(|t| *t == "gold").count();
        assert_eq!(gold_in_first_20, 15, "{order:?}");
    }

    #[test]
    fn a_tenant_at_its_budget_waits_and_others_go_on() {
        let mut q = FairQueue::new(fairness(1, 2), 1);
        for i in 0..5 {
            q.push("slow", i, 1);
        }
        q.push("other", 0, 1);
        q.push("other", 1, 1);
        let mut started = Vec::new();
        while let Some((t, _)) = q.pop() {
            started.push(t);
        }
        // "slow" never finishes anything, so it starts only its two.
        assert_eq!(started.iter().filter(|t| *t == "slow").count(), 2);
        assert_eq!(started.iter().filter(|t| *t == "other").count(), 2);
        assert_eq!(q.waiting_units(), 3);
        q.finished("slow");
        assert_eq!(q.pop().map(|(t, _)| t).as_deref(), Some("slow"));
        assert!(q.pop().is_none(), "back at its budget");
    }

    #[test]
    fn waiting_work_can_be_dropped_and_tenants_are_forgotten_when_idle() {
        let mut q = FairQueue::new(fairness(1, 10), 1);
        q.push("a", 1, 1);
        q.push("a", 2, 1);
        q.push("b", 3, 1);
        q.retain_waiting(|w| *w != 2);
        assert_eq!(q.waiting_units(), 2);
        let order = drain(&mut q);
        assert_eq!(order, vec!["a", "b"]);
        assert!(q.tenants.is_empty() && q.ring.is_empty());
    }
}
