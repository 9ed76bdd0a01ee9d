//! Relay stats kept as they happen: every event that counts toward a relay's windows is
//! added to the relay's 10-second bucket in the transaction that appends the event, so
//! reading a window sums a few hundred small rows whatever the traffic was.
//!
//! A bucket belongs to one tenant on one relay (migration `0010_tenant_stat_buckets`):
//! a tenant's route plugin is shown its own traffic on a shared relay, never another
//! tenant's, and the platform's view is the sum over tenants.
//!
//! What counts is documented on [`super::EventKind`]: attempts' outcomes on a relay;
//! an event with a `source` (a bounce e-mail or complaint that arrived after the
//! attempt) counts as a bounce of the relay that carried the message but not as
//! another attempt.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

use super::StoreError;
use super::codec::{positional, rows_per_statement, value_rows};
use super::types::EventKind;

/// Milliseconds of traffic one bucket holds; windows are whole buckets, so a window
/// covers up to one bucket more than its length.
pub(crate) const BUCKET_MS: i64 = 10_000;

/// The counts of one relay's bucket, or of a window of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub sent: i64,
    pub delivered: i64,
    pub deferred: i64,
    pub hard_bounced: i64,
    pub soft_bounced: i64,
    pub blocked: i64,
    pub latency_sum: i64,
    pub latency_n: i64,
}

/// What of an event the stats read (copied out of its detail when it is appended).
pub(crate) struct Counted<'a> {
    /// The tenant whose message the event is about.
    pub tenant: &'a str,
    pub kind: EventKind,
    pub relay: Option<&'a str>,
    pub latency_ms: Option<i64>,
    pub hard: Option<i64>,
    pub class: Option<&'a str>,
    pub source: Option<&'a str>,
    pub at_ms: i64,
}

/// Events added up per (tenant, relay, bucket), ready to be written.
#[derive(Default)]
pub(crate) struct Tally<'a>(BTreeMap<(&'a str, &'a str, i64), Counts>);

impl<'a> Tally<'a> {
    /// Whether an event of this kind naming this relay counts toward relay stats (and
    /// so whether [`Tally::add`] needs its tenant).
    pub(crate) fn counts(kind: EventKind, relay: Option<&str>) -> bool {
        use EventKind::{Attempted, Bounced, Deferred, Delivered, Failed};
        relay.is_some() && matches!(kind, Attempted | Delivered | Deferred | Bounced | Failed)
    }

    /// Adds `ev` to its bucket if it counts toward relay stats.
    pub(crate) fn add(&mut self, ev: &Counted<'a>) {
        use EventKind::{Attempted, Bounced, Deferred, Delivered, Failed};
        let Some(relay) = ev.relay.filter(|_| Tally::counts(ev.kind, ev.relay)) else {
            return;
        };
        let hard = ev.hard == Some(1);
        let c = self
            .0
            .entry((ev.tenant, relay, ev.at_ms.div_euclid(BUCKET_MS) * BUCKET_MS))
            .or_default();
        let late = ev.source.is_some();
        c.sent += i64::from(!late);
        c.delivered += i64::from(ev.kind == Delivered && !late);
        c.deferred += i64::from(ev.kind == Deferred || (ev.kind == Attempted && !hard));
        c.hard_bounced += i64::from(matches!(ev.kind, Bounced | Failed | Attempted) && hard);
        c.soft_bounced += i64::from(matches!(ev.kind, Bounced | Failed) && !hard);
        c.blocked += i64::from(ev.class == Some("blocked"));
        if let Some(ms) = ev.latency_ms {
            c.latency_sum += ms;
            c.latency_n += 1;
        }
    }

    /// Adds the tally to the stored buckets inside the caller's transaction, in key
    /// order (two hosts adding to the same buckets take their row locks in one order).
    pub(crate) async fn write(self, conn: &mut AnyConnection, op: &str) -> Result<(), StoreError> {
        const COLS: usize = 11;
        let rows: Vec<_> = self.0.into_iter().collect();
        for chunk in rows.chunks(rows_per_statement(COLS)) {
            let sql = format!(
                "INSERT INTO relay_stat_buckets (tenant_id, relay, bucket_ms, sent, delivered, \
                 deferred, hard_bounced, soft_bounced, blocked, latency_sum, latency_n) VALUES {} \
                 ON CONFLICT (bucket_ms, relay, tenant_id) DO UPDATE SET \
                 sent = relay_stat_buckets.sent + excluded.sent, \
                 delivered = relay_stat_buckets.delivered + excluded.delivered, \
                 deferred = relay_stat_buckets.deferred + excluded.deferred, \
                 hard_bounced = relay_stat_buckets.hard_bounced + excluded.hard_bounced, \
                 soft_bounced = relay_stat_buckets.soft_bounced + excluded.soft_bounced, \
                 blocked = relay_stat_buckets.blocked + excluded.blocked, \
                 latency_sum = relay_stat_buckets.latency_sum + excluded.latency_sum, \
                 latency_n = relay_stat_buckets.latency_n + excluded.latency_n",
                value_rows(chunk.len(), COLS)
            );
            let sql = positional(&*conn, sql);
            let mut q = sqlx::query(&sql);
            for ((tenant, relay, bucket), c) in chunk {
                q = q
                    .bind(*tenant)
                    .bind(*relay)
                    .bind(*bucket)
                    .bind(c.sent)
                    .bind(c.delivered)
                    .bind(c.deferred)
                    .bind(c.hard_bounced)
                    .bind(c.soft_bounced)
                    .bind(c.blocked)
                    .bind(c.latency_sum)
                    .bind(c.latency_n);
            }
            q.execute(&mut *conn).await.map_err(StoreError::db(format!(
                "{op}: adding to {} relay stat buckets (first: tenant {:?} relay {:?} at {})",
                chunk.len(),
                chunk[0].0.0,
                chunk[0].0.1,
                chunk[0].0.2
            )))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, relay: Option<&str>, at_ms: i64) -> Counted<'_> {
        Counted {
            tenant: "t",
            kind,
            relay,
            latency_ms: None,
            hard: None,
            class: None,
            source: None,
            at_ms,
        }
    }

    #[test]
    fn events_fall_in_ten_second_buckets_and_only_attempt_outcomes_count() {
        let mut t = Tally::default();
        t.add(&ev(EventKind::Delivered, Some("a"), 19_999));
        t.add(&Counted {
            latency_ms: Some(30),
            ..ev(EventKind::Delivered, Some("a"), 10_000)
        });
        t.add(&ev(EventKind::Routed, Some("a"), 10_000));
        t.add(&ev(EventKind::Delivered, None, 10_000));
        t.add(&ev(EventKind::Deferred, Some("a"), 20_000));
        let b: Vec<_> = t.0.into_iter().collect();
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].0, ("t", "a", 10_000));
        assert_eq!(
            (
                b[0].1.sent,
                b[0].1.delivered,
                b[0].1.latency_sum,
                b[0].1.latency_n
            ),
            (2, 2, 30, 1)
        );
        assert_eq!(
            (b[1].0, b[1].1.sent, b[1].1.deferred),
            (("t", "a", 20_000), 1, 1)
        );
    }

    #[test]
    fn each_tenant_has_its_own_buckets_on_a_shared_relay() {
        let mut t = Tally::default();
        t.add(&ev(EventKind::Delivered, Some("shared"), 5));
        t.add(&Counted {
            tenant: "u",
            ..ev(EventKind::Delivered, Some("shared"), 6)
        });
        t.add(&Counted {
            tenant: "u",
            ..ev(EventKind::Deferred, Some("shared"), 7)
        });
        assert_eq!(t.0[&("t", "shared", 0)].sent, 1);
        assert_eq!(t.0[&("u", "shared", 0)].sent, 2);
    }

    #[test]
    fn a_late_bounce_is_a_bounce_but_not_another_attempt() {
        let mut t = Tally::default();
        t.add(&Counted {
            hard: Some(1),
            class: Some("blocked"),
            source: Some("dsn"),
            ..ev(EventKind::Bounced, Some("a"), 5)
        });
        t.add(&Counted {
            hard: Some(0),
            ..ev(EventKind::Attempted, Some("a"), 6)
        });
        let c = t.0[&("t", "a", 0)];
        assert_eq!(
            (
                c.sent,
                c.hard_bounced,
                c.blocked,
                c.deferred,
                c.soft_bounced
            ),
            (1, 1, 1, 1, 0)
        );
    }
}
