//! `sluice bench queue`: fills a store (SQLite or PostgreSQL) with many messages
//! straight through SQL (`Store::bench_fill`, no HTTP, no events), then times each query
//! of issue 22's queue API on it — search pages with each filter, the queue summary,
//! hold and release of a domain and of a tenant's whole queue, a suspension and its
//! resume — and prints the plan the database chose for each (for the bulk controls, of
//! each batch's pick and change), so `BENCHMARKS.md` can show that every one reads an
//! index, not the table.

use crate::store::{MessageQuery, RecipientState, Selector, Store};
use anyhow::{Context, Result};
use clap::Args;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The store: `sqlite://PATH` or `postgres://…` (a fresh one: it is filled).
    #[arg(long)]
    store: String,
    /// Messages to write (one recipient each).
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Tenants they are spread over (`bench-0`, …); the queries read `bench-0`'s.
    #[arg(long, default_value_t = 10)]
    tenants: u32,
    /// Recipient domains they are spread over.
    #[arg(long, default_value_t = 1000)]
    domains: u32,
    /// Every Nth message is still queued (the live queue); the rest delivered.
    #[arg(long, default_value_t = 100)]
    live_every: u64,
    /// Times each query is run; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Query a store filled by an earlier run instead of filling it.
    #[arg(long)]
    skip_fill: bool,
}

pub fn queue(args: QueueArgs) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn median_ms(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The longest a plan line is shown: a batch's change lists its 1,000 keys.
const PLAN_LINE: usize = 200;

fn row(name: &str, ms: f64, rows: usize, plan: &[String]) {
    println!(
        "| {name} | {ms:.2} | {rows} | {} |",
        plan.iter()
            .map(|l| {
                let l = l.trim().replace('|', "/");
                match l.char_indices().nth(PLAN_LINE) {
                    Some((at, _)) => format!("{}…", &l[..at]),
                    None => l,
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
}

async fn run(args: QueueArgs) -> Result<ExitCode> {
    let store = Store::open(&args.store)
        .await
        .with_context(|| format!("opening {}", args.store))?;
    let day = 86_400_000;
    let now = now_ms();
    if !args.skip_fill {
        let started = Instant::now();
        let n = store
            .bench_fill(
                args.messages,
                args.tenants,
                args.domains,
                args.live_every,
                now,
                30 * day,
            )
            .await
            .context("filling the store")?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "filled {n} messages in {secs:.1} s ({:.0} messages/s)",
            n as f64 / secs
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "backend {:?}, load average {}",
        store.backend(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let base = MessageQuery {
        tenant_id: "bench-0".to_owned(),
        limit: 50,
        ..MessageQuery::default()
    };
    let first = store.search_messages(&base).await?;
    let cursor = first.last().map(|m| m.id.clone());
    // A queued message of bench-0's (k = 0 is live and bench-0's), for `to=`.
    let live_to = "user0@d0.example".to_owned();
    let mid = now - 15 * day;
    let queries: Vec<(&str, MessageQuery)> = vec![
        ("newest page (limit 50)", base.clone()),
        (
            "next page (after=)",
            MessageQuery {
                after: cursor,
                ..base.clone()
            },
        ),
        (
            "page 500 (limit 500)",
            MessageQuery {
                limit: 500,
                ..base.clone()
            },
        ),
        (
            "to= one address",
            MessageQuery {
                to: Some(live_to),
                ..base.clone()
            },
        ),
        (
            "from= one sender of 50",
            MessageQuery {
                from: Some("sender10@example.com".to_owned()),
                ..base.clone()
            },
        ),
        (
            "tag= on 10 % of messages",
            MessageQuery {
                tag: Some("promo".to_owned()),
                ..base.clone()
            },
        ),
        (
            "since/until one hour, 15 days back",
            MessageQuery {
                since_ms: Some(mid),
                until_ms: Some(mid + 3_600_000),
                ..base.clone()
            },
        ),
        (
            "state=queued (live)",
            MessageQuery {
                state: Some(RecipientState::Queued),
                ..base.clone()
            },
        ),
        (
            "state=delivered",
            MessageQuery {
                state: Some(RecipientState::Delivered),
                ..base.clone()
            },
        ),
        (
            "tag= on 10 of 1 M messages",
            MessageQuery {
                tag: Some("rare".to_owned()),
                ..base.clone()
            },
        ),
        (
            "tag= with no match",
            MessageQuery {
                tag: Some("none-such".to_owned()),
                ..base.clone()
            },
        ),
    ];
    println!("\n| query | median ms | rows | plan |\n|---|---:|---:|---|");
    for (name, q) in &queries {
        let mut times = Vec::with_capacity(args.runs);
        let mut rows = 0;
        for _ in 0..args.runs.max(1) {
            let started = Instant::now();
            rows = store.search_messages(q).await?.len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let plan = store.explain_search(q).await?;
        row(name, median_ms(times), rows, &plan);
    }
    let mut times = Vec::new();
    let mut groups = 0;
    for _ in 0..args.runs.max(1) {
        let started = Instant::now();
        let s = store.queue_summary(20).await?;
        groups = s.by_domain.groups;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let plans = store.explain_queue_summary().await?;
    let plan: Vec<String> = plans
        .iter()
        .flat_map(|(name, lines)| std::iter::once(format!("[{name}]")).chain(lines.iter().cloned()))
        .collect();
    row(
        "queue summary (4 scans of the live queue)",
        median_ms(times),
        groups,
        &plan,
    );

    let detail = serde_json::json!({"reason": "bench"});
    let sel = Selector {
        // Live mail is every 100th message: domains d0, d100, …, d900.
        domain: Some("d100.example".to_owned()),
        ..Selector::default()
    };
    let started = Instant::now();
    let held = store.hold(&sel, &detail, now_ms()).await?;
    row(
        "hold one domain",
        started.elapsed().as_secs_f64() * 1000.0,
        held.held,
        &[],
    );
    let started = Instant::now();
    let released = store.release(&sel, &detail, now_ms()).await?;
    row(
        "release it",
        started.elapsed().as_secs_f64() * 1000.0,
        released,
        &[],
    );
    let tenant = Selector {
        tenant: Some("bench-0".to_owned()),
        ..Selector::default()
    };
    let started = Instant::now();
    let held = store.hold(&tenant, &detail, now_ms()).await?;
    row(
        "hold tenant bench-0 (its live queue)",
        started.elapsed().as_secs_f64() * 1000.0,
        held.held,
        &[],
    );
    // The plans each batch of a release gets now, with statistics from before the hold
    // (what made PostgreSQL's release slow before the picks went by key).
    for (name, plan) in store.explain_bulk(&tenant).await? {
        row(&format!("(plan) tenant {name}"), 0.0, 0, &plan);
    }
    for (name, plan) in store.explain_bulk(&sel).await? {
        row(&format!("(plan) domain {name}"), 0.0, 0, &plan);
    }
    let started = Instant::now();
    let released = store.release(&tenant, &detail, now_ms()).await?;
    row(
        "release it",
        started.elapsed().as_secs_f64() * 1000.0,
        released,
        &[],
    );
    let started = Instant::now();
    let held = store
        .suspend_tenant("bench-0", Some("bench"), now_ms())
        .await?;
    row(
        "suspend tenant bench-0 (its live queue held)",
        started.elapsed().as_secs_f64() * 1000.0,
        held.map_or(0, |h| h.held),
        &[],
    );
    let started = Instant::now();
    let released = store.resume_tenant("bench-0", now_ms()).await?;
    row(
        "resume it",
        started.elapsed().as_secs_f64() * 1000.0,
        released.unwrap_or(0),
        &[],
    );
    Ok(ExitCode::SUCCESS)
}
