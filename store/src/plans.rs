//! The plans of the store's hot queries, for the conformance test that says each reads
//! by an index (and for `EXPLAIN` by hand): the queries every message runs through
//! (accept, the look and claim, the outcome, the event cursors) and the reads that run
//! on every tick or scrape (gauges, dead nodes' leases, the sequencer, webhook lag), with
//! the queue search pages.
//!
//! The SQL is the store's own (the same builders and constants the queries run), with
//! each `$n` replaced by a literal: PostgreSQL 15 cannot `EXPLAIN` a statement with
//! parameters and no values, and a literal plans as a bound value does.

use super::StoreError;
use super::connect::{Backend, Pools};
use super::queue::{MessageQuery, explain, search_sql};
use super::types::RecipientState;

/// `sql` with each `$n` replaced by `values[n - 1]` (SQL literals). Marks are replaced
/// from the highest number down so that `$1` never eats the start of `$12`.
fn inline(sql: &str, values: &[String]) -> String {
    let mut out = sql.to_owned();
    for (i, v) in values.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), v);
    }
    debug_assert!(!out.contains('$'), "a mark left in {out}");
    out
}

fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The hot queries, by name, for `tenant` (one with messages in the store) at `now_ms`.
fn hot_queries(backend: Backend, tenant: &str, now_ms: i64) -> Vec<(String, String)> {
    let t = text(tenant);
    let now = now_ms.to_string();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, sql: String, values: Vec<String>| {
        out.push((name.to_owned(), inline(&sql, &values)));
    };
    add(
        "accept: the message with an idempotency key",
        super::accept::FIND_DUPLICATE_SQL.to_owned(),
        vec![t.clone(), text("key-1")],
    );
    add(
        "look: tenants with work",
        super::leases::tenants_with_work_sql(),
        vec![],
    );
    add(
        "claim: two tenants' due work and expired leases",
        super::leases::lease_sql(backend, 2, true, 1),
        vec![
            now.clone(),
            "100".into(),
            text("h1"),
            (now_ms + 60_000).to_string(),
            t.clone(),
            text("other"),
            text("full"),
        ],
    );
    let mut outcome = Vec::new();
    for idx in 0..2 {
        outcome.extend([
            text("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
            idx.to_string(),
            text(RecipientState::Delivered.as_str()),
            "CAST(NULL AS BIGINT)".into(),
            "1".into(),
            text("relay-1"),
            text("250 ok"),
            "NULL".into(),
        ]);
    }
    outcome.extend([now.clone(), text("h1")]);
    add(
        "outcome: two recipients",
        super::events::outcomes_sql(2),
        outcome,
    );
    add(
        "release: an owner's leases",
        super::leases::RELEASE_SQL.to_owned(),
        vec![text("h1"), now.clone()],
    );
    add(
        "nodes: dead nodes' leases",
        super::nodes::dead_leases_count_sql(),
        vec![text("h1"), now.clone(), (now_ms - 30_000).to_string()],
    );
    for state in ["queued", "delivering", "deferred", "held"] {
        add(
            &format!("gauges: {state}"),
            super::stats::GAUGE_SQL.to_owned(),
            vec![text(state)],
        );
    }
    add(
        "events: a page after a cursor",
        super::event_log::after_sql(None),
        vec![t.clone(), "10".into(), "100".into()],
    );
    add(
        "events: the sequencer's next",
        super::event_log::UNSEQUENCED_SQL.to_owned(),
        vec!["1000".into()],
    );
    add("webhooks: lag", super::webhooks::LAG_SQL.to_owned(), vec![]);
    let page = |q: MessageQuery| {
        let (sql, binds) = search_sql(&q);
        let values: Vec<String> = binds.iter().map(|b| text(b)).collect();
        inline(&sql, &values)
    };
    let base = MessageQuery {
        tenant_id: tenant.to_owned(),
        limit: 50,
        ..MessageQuery::default()
    };
    for (name, q) in [
        ("search: newest", base.clone()),
        (
            "search: by sender",
            MessageQuery {
                from: Some("sender1@example.com".into()),
                ..base.clone()
            },
        ),
        (
            "search: by recipient",
            MessageQuery {
                to: Some("user1@d1.example".into()),
                ..base.clone()
            },
        ),
        (
            "search: queued",
            MessageQuery {
                state: Some(RecipientState::Queued),
                ..base.clone()
            },
        ),
    ] {
        out.push((name.to_owned(), page(q)));
    }
    for (name, sql) in super::queue::summary_queries() {
        out.push((format!("summary: {name}"), sql));
    }
    out
}

/// The plan of each hot query (see [`hot_queries`]), by name.
pub(crate) async fn explain_hot(
    pools: &Pools,
    tenant: &str,
    now_ms: i64,
) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    let mut plans = Vec::new();
    for (name, sql) in hot_queries(pools.backend, tenant, now_ms) {
        let plan = explain(pools, &sql, &[]).await?;
        plans.push((name, plan));
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_replaced_whole_and_from_the_highest() {
        let values: Vec<String> = (1..=12).map(|i| format!("v{i}")).collect();
        assert_eq!(
            inline("a = $1 AND b = $12 AND c = $2", &values),
            "a = v1 AND b = v12 AND c = v2"
        );
        assert_eq!(text("it's"), "'it''s'");
    }
}
